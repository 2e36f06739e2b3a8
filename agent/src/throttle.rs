//! Work that follows changes but runs at most once per interval, and is never dropped.
//!
//! Invariant: after [`Throttle::request`], [`Throttle::due`] answers `true` exactly once, at the
//! first poll at least `every` after the last time it answered `true` (at once if it never did);
//! requests in between fold into that one run. The caller polls on a tick, so a request that
//! came too soon runs on a later tick instead of waiting for the next change.
use std::time::{Duration, Instant};

/// See the module documentation.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    pending: bool,
    last: Option<Instant>,
}

impl Throttle {
    /// A throttle that runs its work at most once per `every`.
    pub fn new(every: Duration) -> Throttle {
        Throttle {
            every,
            pending: false,
            last: None,
        }
    }

    /// Asks for the work to run.
    pub fn request(&mut self) {
        self.pending = true;
    }

    /// Whether the work is to run at `now` (and records it as run).
    pub fn due(&mut self, now: Instant) -> bool {
        if !self.pending
            || self
                .last
                .is_some_and(|l| now.duration_since(l) < self.every)
        {
            return false;
        }
        self.pending = false;
        self.last = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_runs_after_a_request_at_most_once_per_interval_and_is_never_dropped() {
        let every = Duration::from_secs(1);
        let t0 = Instant::now();
        let mut t = Throttle::new(every);
        assert!(!t.due(t0), "nothing asked");
        t.request();
        assert!(t.due(t0), "the first request runs at once");
        t.request();
        t.request();
        assert!(!t.due(t0 + every / 2), "too soon after the last run");
        assert!(
            t.due(t0 + every),
            "the requests run together a second later"
        );
        assert!(!t.due(t0 + every * 3), "and only once");
    }
}
