//! Container restarts as the kubelet decides them: by the pod's `restartPolicy` (`Always`, the
//! default; `OnFailure`: after a non-zero exit; `Never`), after a back-off that starts at nothing
//! for the first restart, then 10 s, doubling up to 5 minutes, and starts over once a run lasted
//! 10 minutes; while it waits the container is `CrashLoopBackOff`.
//!
//! In the record ([`ContainerRecord`]) a container waiting to start again has no process, no
//! exit and a last run ([`pending`]); its restart count already counts the coming run, whose
//! log file is `<restart_count>.log`. The worker applies these rules ([`super::worker`]).
use super::state::{ContainerRecord, LastRun};
use super::status::ContainerPhase;
use k8s_openapi::jiff::Timestamp;
use std::time::Duration;

/// The first non-zero back-off.
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(10);
/// The longest back-off.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A run this long resets the back-off.
pub const STABLE_RUN: Duration = Duration::from_secs(600);

/// Whether a container that exited with `code` runs again under `policy` (the spec's value,
/// `None` meaning the default `Always`).
pub fn wanted(policy: Option<&str>, code: i32) -> bool {
    match policy.unwrap_or("Always") {
        "Never" => false,
        "OnFailure" => code != 0,
        _ => true,
    }
}

/// How long to wait before restart number `restarts + 1`, after a run that lasted `ran`.
pub fn backoff(restarts: u32, ran: Duration) -> Duration {
    if restarts == 0 || ran >= STABLE_RUN {
        return Duration::ZERO;
    }
    let doublings = (restarts - 1).min(16);
    (INITIAL_BACKOFF * 2u32.pow(doublings)).min(MAX_BACKOFF)
}

/// The kubelet's message while a container waits for its restart.
pub fn waiting_message(
    delay: Duration,
    container: &str,
    pod: &str,
    namespace: &str,
    uid: &str,
) -> String {
    format!(
        "back-off {}s restarting failed container={container} pod={pod}_{namespace}({uid})",
        delay.as_secs()
    )
}

/// Whether the container of `rec` waits to be started again.
pub fn pending(rec: &ContainerRecord) -> bool {
    rec.pid.is_none() && rec.exit.is_none() && rec.error.is_none() && rec.last.is_some()
}

/// Turns the run of `rec` that just ended into its last run: the container waits to be started
/// again (as run `restart_count`). Returns how long that run lasted.
pub fn schedule(rec: &mut ContainerRecord) -> Duration {
    let started = rec.started_at.take();
    let finished = rec.finished_at.take();
    let ran = match (parse(&started), parse(&finished)) {
        (Some(s), Some(f)) => f.duration_since(s).try_into().unwrap_or_default(),
        _ => Duration::ZERO,
    };
    if let Some(exit) = rec.exit.take() {
        rec.last = Some(LastRun {
            exit,
            started_at: started,
            finished_at: finished,
        });
    }
    rec.pid = None;
    rec.start_ticks = None;
    rec.restart_count += 1;
    ran
}

fn parse(t: &Option<String>) -> Option<Timestamp> {
    t.as_deref().and_then(|s| s.parse().ok())
}

/// The state of a run that ended with `code` (and `signal`); `-1` is an end nobody saw.
pub fn exited(
    code: i32,
    signal: Option<i32>,
    started_at: &Option<String>,
    finished_at: &Option<String>,
) -> ContainerPhase {
    ContainerPhase::Exited {
        code,
        signal,
        started_at: parse(started_at),
        finished_at: parse(finished_at).unwrap_or_else(Timestamp::now),
        reason: (code == -1).then(|| "Unknown".to_string()),
        message: (code == -1)
            .then(|| "the process ended while the kubelet was not watching".to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restart_policy_decides_which_exits_restart() {
        assert!(wanted(None, 0) && wanted(Some("Always"), 0) && wanted(Some("Always"), 1));
        assert!(wanted(Some("OnFailure"), 3) && !wanted(Some("OnFailure"), 0));
        assert!(!wanted(Some("Never"), 1));
    }

    #[test]
    fn the_first_restart_is_immediate_then_the_wait_doubles_to_five_minutes() {
        let short = Duration::from_secs(1);
        let waits: Vec<u64> = (0..8).map(|n| backoff(n, short).as_secs()).collect();
        assert_eq!(waits, vec![0, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            backoff(5, STABLE_RUN),
            Duration::ZERO,
            "a long run starts over"
        );
    }

    #[test]
    fn a_scheduled_restart_keeps_the_ended_run_as_the_last_one() {
        let mut rec = ContainerRecord {
            name: "a".into(),
            image: "x".into(),
            pid: Some(42),
            start_ticks: Some(7),
            started_at: Some("2026-12-02T01:00:00Z".into()),
            exit: Some(crate::kubelet::process::Exit {
                code: 1,
                signal: None,
            }),
            finished_at: Some("2026-12-02T01:00:05Z".into()),
            error: None,
            restart_count: 0,
            last: None,
        };
        assert!(!pending(&rec));
        assert_eq!(schedule(&mut rec), Duration::from_secs(5));
        assert!(pending(&rec));
        assert_eq!(rec.restart_count, 1, "the next run writes 1.log");
        let last = rec.last.as_ref().unwrap();
        assert_eq!(last.exit.code, 1);
        assert_eq!(last.finished_at.as_deref(), Some("2026-12-02T01:00:05Z"));
    }
}
