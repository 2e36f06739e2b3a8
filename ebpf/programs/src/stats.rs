//! Per-CPU counters: every decision and every drop reason is counted (`switchyard_abi::stat`).
use crate::maps::STATS;

/// Adds one to counter `id`.
#[inline(always)]
pub fn inc(id: u32) {
    if let Some(ptr) = STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, no other writer runs on this CPU while we hold it.
        unsafe { *ptr += 1 };
    }
}
