//! Per-CPU counters: every decision and every drop reason is counted (`switchyard_abi::stat`).
use crate::maps::{STATS, SVC_STATS};

/// Adds one to counter `id`.
#[inline(always)]
pub fn inc(id: u32) {
    if let Some(ptr) = STATS.get_ptr_mut(id) {
        // SAFETY: per-CPU slot, no other writer runs on this CPU while we hold it.
        unsafe { *ptr += 1 };
    }
}

/// Counts a packet of `len` bytes (and a new connection, if `new`) for frontend `rev_nat_id`.
#[inline(always)]
pub fn service(rev_nat_id: u32, len: u32, new: bool) {
    if let Some(ptr) = SVC_STATS.get_ptr_mut(rev_nat_id) {
        // SAFETY: per-CPU slot, as in `inc`.
        unsafe {
            (*ptr).packets += 1;
            (*ptr).bytes += u64::from(len);
            if new {
                (*ptr).connections += 1;
            }
        }
    }
}

/// Counts a connection balanced at connect time for frontend `rev_nat_id`.
#[inline(always)]
pub fn socket_connection(rev_nat_id: u32) {
    if let Some(ptr) = SVC_STATS.get_ptr_mut(rev_nat_id) {
        // SAFETY: per-CPU slot, as in `inc`.
        unsafe { (*ptr).connections += 1 };
    }
}
