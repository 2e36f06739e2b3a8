//! Keeping the agent's resident memory close to what it holds.
//!
//! glibc's malloc gives each thread that allocates under contention its own arena and keeps
//! what the program frees for reuse. The agent's large, short-lived allocations (a relist of
//! every Service and EndpointSlice, a full recompute of the desired maps) are freed right after
//! a sync, but without help their pages stay resident — measured on the benchmark's lab at
//! 10,000 Services: three arenas of 30–40 MiB each. Invariant: at most [`ARENAS`] arenas, and
//! after a sync that changed the maps (at most every [`TRIM_EVERY`]) the free pages of every
//! arena go back to the kernel (`malloc_trim`, which also releases pages inside arenas).
//! Other C libraries (musl) are left alone.
use std::time::{Duration, Instant};

/// The most malloc arenas the agent uses (glibc's default is 8 per CPU).
pub const ARENAS: i32 = 2;

/// The shortest time between two trims: a trim walks every arena (milliseconds at 100 MiB).
pub const TRIM_EVERY: Duration = Duration::from_secs(2);

/// Limits the number of malloc arenas; call once at start, before threads exist.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, ARENAS);
    }
}

/// Returns freed memory to the kernel after syncs, at most every [`TRIM_EVERY`].
#[derive(Debug, Default)]
pub struct Trimmer {
    last: Option<Instant>,
}

impl Trimmer {
    /// Whether a trim is due at `now` (and records it as done).
    pub fn due(&mut self, now: Instant) -> bool {
        if self
            .last
            .is_some_and(|l| now.duration_since(l) < TRIM_EVERY)
        {
            return false;
        }
        self.last = Some(now);
        true
    }

    /// After a sync: trims when due.
    pub fn after_sync(&mut self) {
        if self.due(Instant::now()) {
            release_freed();
        }
    }
}

/// Gives every arena's free pages back to the kernel.
pub fn release_freed() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases memory the allocator holds unused.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trim_is_due_at_most_once_per_interval() {
        let mut t = Trimmer::default();
        let start = Instant::now();
        assert!(t.due(start));
        assert!(!t.due(start + Duration::from_millis(500)));
        assert!(t.due(start + TRIM_EVERY + Duration::from_millis(1)));
    }
}
