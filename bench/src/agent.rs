//! Watching a node's switchyard agent from outside: its services-synced records (with the
//! `took_us` the agent measures around each sync; a declared interface of the agent, see
//! `switchyard::daemon::report`), its pid, and its RSS and CPU time.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use switchyard::daemon::report::ServicesSynced;

/// One services sync, as the agent declares it in its JSON log (`--log-format json`, which the
/// benchmark's lab turns on): [`ServicesSynced`].
pub type Sync = ServicesSynced;

/// The benchmark's agent arguments: a JSON log that carries [`Sync`] records, and no check for
/// kube-proxy's rules at the start (the scale levels load them beside switchyard's maps and
/// restart the agent between turns, and the check's `iptables-save` alone takes ~25 s at
/// 10,000 Services; only one dataplane translates at a time, see `interleave.rs`).
pub const AGENT_ARGS: [&str; 3] = ["--log-format", "json", "--allow-kube-proxy"];

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
            .filter_map(ServicesSynced::from_json_line)
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
            if let Some(s) = self.syncs_after(mark).into_iter().find(&pred) {
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

    /// Resident memory now and at its peak, and CPU time used so far.
    pub fn footprint(&self) -> Result<Footprint, AgentError> {
        let pid = self.pid()?;
        let gone = || AgentError::NoProcess(format!("/proc/{pid}"));
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|_| gone())?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|_| gone())?;
        Ok(Footprint {
            rss_mib: status_mib(&status, "VmRSS:").ok_or_else(gone)?,
            peak_mib: status_mib(&status, "VmHWM:").ok_or_else(gone)?,
            cpu_s: cpu_secs(&stat).ok_or_else(gone)?,
        })
    }
}

/// What the agent process uses, read from `/proc`.
#[derive(Clone, Copy, Debug)]
pub struct Footprint {
    /// Resident memory now (`VmRSS`), MiB.
    pub rss_mib: f64,
    /// The most resident memory since the process started (`VmHWM`), MiB.
    pub peak_mib: f64,
    /// CPU time since the process started (user + system), seconds.
    pub cpu_s: f64,
}

/// The kB figure of a `/proc/<pid>/status` line starting with `field` (e.g. `VmRSS:`), in MiB.
pub fn status_mib(status: &str, field: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
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
    fn reads_rss_and_cpu_time_from_proc() {
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let rss = status_mib(&status, "VmRSS:").unwrap();
        assert!(rss > 0.0);
        assert!(status_mib(&status, "VmHWM:").unwrap() >= rss);
        assert_eq!(status_mib(&status, "VmNoSuchField:"), None);
        let stat = "1234 (a (weird) name) S 1 2 3 4 5 6 7 8 9 10 200 100 0 0";
        // SAFETY: as above.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        assert_eq!(cpu_secs(stat), Some(300.0 / hz));
    }
}
