//! When the agent recomputes every Service unprompted (the safety resync that repairs whatever
//! an earlier sync could not write or anything else changed in the maps).
//!
//! Invariant: a full recompute never takes more than `1 / COST_FACTOR` of the agent's time, and
//! the next one is never due before the last one ended. A fixed period does not scale: at
//! 100,000 Services a full recompute takes seconds (more on a busy machine), and a period
//! shorter than the recompute itself kept the agent recomputing back to back, an endpoint
//! change waiting behind each one. kube-proxy, for the same reason, resyncs in full hourly and
//! applies changes in between.
use std::time::{Duration, Instant};

/// The shortest period between two safety resyncs.
pub const MIN_PERIOD: Duration = Duration::from_secs(30);

/// The period is at least this many times the last full recompute's duration.
pub const COST_FACTOR: u32 = 60;

/// When the next safety resync is due.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resync {
    next: Instant,
}

impl Resync {
    /// The first resync, [`MIN_PERIOD`] after `now`.
    pub fn starting(now: Instant) -> Self {
        Resync {
            next: now + MIN_PERIOD,
        }
    }

    /// When the next resync is due.
    pub fn due(&self) -> Instant {
        self.next
    }

    /// A full recompute (resync or relist) ended at `now` after `took`: the next resync comes
    /// one period later.
    pub fn after_full(&mut self, now: Instant, took: Duration) {
        self.next = now + period(took);
    }
}

/// The period after a full recompute that took `took`.
pub fn period(took: Duration) -> Duration {
    MIN_PERIOD.max(took.saturating_mul(COST_FACTOR))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_recompute_keeps_the_thirty_second_period() {
        assert_eq!(period(Duration::from_millis(300)), MIN_PERIOD);
    }

    #[test]
    fn a_slow_recompute_stretches_the_period_so_it_stays_a_small_share_of_the_agents_time() {
        assert_eq!(period(Duration::from_secs(3)), Duration::from_secs(180));
    }

    #[test]
    fn the_next_resync_is_counted_from_the_end_of_the_last_full_recompute() {
        let start = Instant::now();
        let mut r = Resync::starting(start);
        assert_eq!(r.due(), start + MIN_PERIOD);
        let end = start + Duration::from_secs(40);
        r.after_full(end, Duration::from_secs(25));
        assert_eq!(r.due(), end + Duration::from_secs(25 * 60));
    }
}
