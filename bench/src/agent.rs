//! Watching a node's switchyard agent from outside: its "services synced" log lines (with the
//! `took_us` the agent measures around each sync), its pid, and its RSS and CPU time.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// One "services synced" line of the agent log.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sync {
    /// Frontends in the desired state.
    pub frontends: u64,
    /// Map entries written.
    pub written: u64,
    /// Map entries deleted.
    pub deleted: u64,
    /// Agent work for the sync, microseconds.
    pub took_us: u64,
}

/// Removes ANSI escape sequences (the agent logs in colour).
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Parses a "services synced" log line.
pub fn parse_sync(line: &str) -> Option<Sync> {
    let line = strip_ansi(line);
    if !line.contains("services synced") {
        return None;
    }
    let field = |k: &str| -> u64 {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(k).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Some(Sync {
        frontends: field("frontends"),
        written: field("written"),
        deleted: field("deleted"),
        took_us: field("took_us"),
    })
}

/// A node agent of the lab.
#[derive(Clone, Debug)]
pub struct Agent {
    log: PathBuf,
    pidfile: PathBuf,
}

/// Errors watching the agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No matching sync in time.
    #[error("the agent did not log {what} within {secs} s (see {log})")]
    Timeout {
        /// What was awaited.
        what: String,
        /// Seconds waited.
        secs: u64,
        /// Log path.
        log: String,
    },
    /// No running agent.
    #[error("no running agent process ({0})")]
    NoProcess(String),
}

impl Agent {
    /// The agent of node `n` in the lab at `lab_dir`.
    pub fn of_node(lab_dir: &Path, n: usize) -> Agent {
        Agent {
            log: lab_dir.join(format!("logs/agent-n{n}.log")),
            pidfile: lab_dir.join(format!("pids/agent-n{n}.pid")),
        }
    }

    fn text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Current end of the log (a position to wait after).
    pub fn mark(&self) -> usize {
        self.text().len()
    }

    /// Sync lines after position `mark` (from the start if the log was recreated since).
    pub fn syncs_after(&self, mark: usize) -> Vec<Sync> {
        let text = self.text();
        let from = if mark <= text.len() { mark } else { 0 };
        text.get(from..)
            .unwrap_or("")
            .lines()
            .filter_map(parse_sync)
            .collect()
    }

    /// Waits for the first sync after `mark` satisfying `pred`.
    pub fn wait_sync(
        &self,
        mark: usize,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Sync) -> bool,
    ) -> Result<Sync, AgentError> {
        let start = Instant::now();
        loop {
            if let Some(s) = self.syncs_after(mark).into_iter().find(|s| pred(s)) {
                return Ok(s);
            }
            if start.elapsed() > timeout {
                return Err(AgentError::Timeout {
                    what: what.into(),
                    secs: timeout.as_secs(),
                    log: self.log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until the agent's latest sync programs at least `frontends` and no other sync
    /// follows for half a second.
    pub fn wait_settled(&self, frontends: u64, timeout: Duration) -> Result<(), AgentError> {
        let start = Instant::now();
        let quiet = Duration::from_millis(500);
        let (mut seen, mut since) = (usize::MAX, Instant::now());
        loop {
            let syncs = self.syncs_after(0);
            if syncs.len() != seen {
                seen = syncs.len();
                since = Instant::now();
            }
            let done = syncs.last().is_some_and(|s| s.frontends >= frontends);
            if done && since.elapsed() >= quiet {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(AgentError::Timeout {
                    what: format!("a sync with ≥{frontends} frontends"),
                    secs: timeout.as_secs(),
                    log: self.log.display().to_string(),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The agent's pid.
    pub fn pid(&self) -> Result<u32, AgentError> {
        std::fs::read_to_string(&self.pidfile)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .filter(|p| Path::new(&format!("/proc/{p}")).exists())
            .ok_or_else(|| AgentError::NoProcess(self.pidfile.display().to_string()))
    }

    /// Resident memory (MiB) and CPU time used so far (s, user + system).
    pub fn footprint(&self) -> Result<(f64, f64), AgentError> {
        let pid = self.pid()?;
        let gone = || AgentError::NoProcess(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| gone())?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| gone())?;
        Ok((
            rss_mib(&status).ok_or_else(gone)?,
            cpu_secs(&stat).ok_or_else(gone)?,
        ))
    }
}

/// `VmRSS` of a `/proc/<pid>/status` text, MiB.
pub fn rss_mib(status: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
}

/// utime + stime of a `/proc/<pid>/stat` text, seconds.
pub fn cpu_secs(stat: &str) -> Option<f64> {
    // Fields after the parenthesised command name: state is field 3, utime 14, stime 15.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let (u, s): (f64, f64) = (f.get(11)?.parse().ok()?, f.get(12)?.parse().ok()?);
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some((u + s) / hz)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_agents_coloured_sync_line() {
        let line = "\u{1b}[2m2026-12-01T19:34:58.714548Z\u{1b}[0m \u{1b}[32m INFO\u{1b}[0m \u{1b}[1mreconcile\u{1b}[0m: services synced \u{1b}[3mfrontends\u{1b}[0m\u{1b}[2m=\u{1b}[0m2 \u{1b}[3mwritten\u{1b}[0m\u{1b}[2m=\u{1b}[0m4 \u{1b}[3mdeleted\u{1b}[0m\u{1b}[2m=\u{1b}[0m0 \u{1b}[3mtook_us\u{1b}[0m\u{1b}[2m=\u{1b}[0m812";
        assert_eq!(
            parse_sync(line),
            Some(Sync {
                frontends: 2,
                written: 4,
                deleted: 0,
                took_us: 812
            })
        );
        assert_eq!(parse_sync("overlay routes synced written=1"), None);
    }

    #[test]
    fn reads_rss_and_cpu_time_from_proc() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        assert!(rss_mib(&status).unwrap() > 0.0);
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 200 100 0 0";
        // SAFETY: as above.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_secs(stat), Some(300.0 / hz));
    }
}
