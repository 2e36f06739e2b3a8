//! The record the agent logs after every services sync that changed the maps, and after its
//! first sync since it started even when that wrote nothing (an agent restarted on pinned maps
//! converges without a write, and its log says when) — a declared
//! interface, not log text: with `--log-format json` each one is a line whose `fields` object
//! holds `message: "services synced"` and the fields of [`ServicesSynced`]. The benchmark reads
//! its programming-time figures from these lines; the test below pins the format.
use serde::{Deserialize, Serialize};

/// One services sync that wrote or deleted map entries, or the agent's first.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServicesSynced {
    /// `full` (everything recomputed) or `incremental` (only the Services events named).
    pub mode: String,
    /// Frontends in the desired state after the sync.
    pub frontends: u64,
    /// Map entries written.
    pub written: u64,
    /// Map entries deleted.
    pub deleted: u64,
    /// The agent's work for the sync in microseconds, from reading the stores to the last write.
    pub took_us: u64,
}

/// The log message that marks a [`ServicesSynced`] record.
pub const MESSAGE: &str = "services synced";

#[derive(Deserialize)]
struct Line {
    fields: Fields,
}

#[derive(Deserialize)]
struct Fields {
    message: String,
    #[serde(flatten)]
    record: ServicesSynced,
}

impl ServicesSynced {
    /// Logs the record at INFO.
    pub fn log(&self) {
        tracing::info!(
            mode = %self.mode,
            frontends = self.frontends,
            written = self.written,
            deleted = self.deleted,
            took_us = self.took_us,
            "services synced"
        );
    }

    /// The record in one line of the agent's JSON log, if the line is one.
    pub fn from_json_line(line: &str) -> Option<ServicesSynced> {
        let line: Line = serde_json::from_str(line).ok()?;
        (line.fields.message == MESSAGE).then_some(line.fields.record)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_logged_record_reads_back_from_the_json_log_line() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = crate::logging::json_subscriber(move || writer.clone());
        let record = ServicesSynced {
            mode: "incremental".into(),
            frontends: 10_000,
            written: 3,
            deleted: 1,
            took_us: 170,
        };
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("reconcile", node = "n1");
            let _enter = span.enter();
            tracing::info!(other = 1, "something else");
            record.log();
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let found: Vec<ServicesSynced> = text
            .lines()
            .filter_map(ServicesSynced::from_json_line)
            .collect();
        assert_eq!(found, vec![record], "log was:\n{text}");
    }
}
