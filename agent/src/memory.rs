//! Keeping the agent's resident memory close to what it holds.
//!
//! glibc's malloc gives each thread that allocates under contention its own arena and keeps
//! what the program frees for reuse. The agent's large, short-lived allocations (a relist of
//! every Service and EndpointSlice, a full recompute of the desired maps) are freed right after
//! a sync, but without help their pages stay resident — measured on the benchmark's lab at
//! 10,000 Services: three arenas of 30–40 MiB each. Invariant: at most [`ARENAS`] arenas, and
//! after a sync that changed the maps the free pages of every arena go back to the kernel
//! (`malloc_trim`, which also releases pages inside arenas): at most every [`TRIM_EVERY`], and
//! a sync that came sooner is trimmed after on a later tick, never skipped.
//! Other C libraries (musl) are left alone.
use std::time::{Duration, Instant};

use crate::throttle::Throttle;

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

/// Returns freed memory to the kernel after syncs: at most every [`TRIM_EVERY`], and a sync
/// that came too soon after the last trim is trimmed after on a later [`Trimmer::poll`].
#[derive(Debug)]
pub struct Trimmer(Throttle);

impl Default for Trimmer {
    fn default() -> Self {
        Trimmer(Throttle::new(TRIM_EVERY))
    }
}

impl Trimmer {
    /// Notes that a sync freed memory.
    pub fn after_sync(&mut self) {
        self.0.request();
    }

    /// Trims when a sync freed memory since the last trim and [`TRIM_EVERY`] passed.
    pub fn poll(&mut self, now: Instant) {
        if self.0.due(now) {
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
