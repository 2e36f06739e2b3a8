//! Whole-table reads and bulk deletes of a hash map in one system call per few thousand entries
//! (`BPF_MAP_LOOKUP_BATCH`, `BPF_MAP_DELETE_BATCH`, kernel 5.6+).
//!
//! Why by hand: aya 0.14 offers per-key iteration only — a key walk and a lookup, two system
//! calls per entry — and a conntrack table of a busy node holds hundreds of thousands of
//! entries every sweep reads. The attribute layout and command numbers come from aya-obj's
//! kernel bindings; only the calls are here.
//!
//! Invariant: a read returns each entry the table held for the whole read exactly once (the
//! kernel walks bucket by bucket, so an entry added or removed during the read may or may not be
//! in it — as with a key walk); a delete removes every listed key still present and counts a key
//! already gone as removed.
use std::io;
use std::mem::{size_of, MaybeUninit};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Pod;
use aya_obj::generated::{bpf_attr, bpf_cmd};

/// Entries asked for per call: large enough that a table of a million entries takes a few
/// hundred calls, small enough that the buffers stay a few hundred KiB.
const CHUNK: usize = 4096;

/// Every entry of the hash map `map`. `capacity` bounds the read: a table changing under the
/// walk never keeps it going beyond twice its size.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>, capacity: u32) -> io::Result<Vec<(K, V)>> {
    let limit = capacity as usize * 2;
    let mut out = Vec::new();
    let mut keys: Vec<MaybeUninit<K>> = Vec::with_capacity(CHUNK);
    let mut values: Vec<MaybeUninit<V>> = Vec::with_capacity(CHUNK);
    // The hash map's batch token is its next bucket index (a u32); 8 bytes leave room.
    let mut token = [0u64; 1];
    let mut first = true;
    loop {
        let mut next = [0u64; 1];
        let mut attr = zeroed_attr();
        // SAFETY: writing plain integers into the `batch` variant of a zeroed union.
        let got = unsafe {
            attr.batch.in_batch = if first { 0 } else { token.as_ptr() as u64 };
            attr.batch.out_batch = next.as_mut_ptr() as u64;
            attr.batch.keys = keys.as_mut_ptr() as u64;
            attr.batch.values = values.as_mut_ptr() as u64;
            attr.batch.count = CHUNK as u32;
            attr.batch.map_fd = map.as_raw_fd() as u32;
            let rc = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
            let count = attr.batch.count as usize;
            match rc {
                Ok(()) => Ok((count, false)),
                // The end of the table; `count` entries came with it.
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok((count, true)),
                Err(e) => Err(e),
            }
        };
        let (count, done) = got?;
        let count = count.min(CHUNK);
        // SAFETY: the kernel filled the first `count` slots of each buffer with whole keys and
        // values (`Pod`: any bytes are a valid value).
        out.extend((0..count).map(|i| unsafe {
            (
                keys.as_ptr().add(i).cast::<K>().read(),
                values.as_ptr().add(i).cast::<V>().read(),
            )
        }));
        if done || out.len() >= limit {
            return Ok(out);
        }
        token = next;
        first = false;
    }
}

/// Deletes `keys` from the hash map `map`; returns how many are gone (all of them: a key the
/// datapath or LRU eviction removed first counts as removed).
pub fn delete<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut from = 0;
    while from < keys.len() {
        let rest = &keys[from..];
        let mut attr = zeroed_attr();
        // SAFETY: as in `lookup_all`; `rest` outlives the call.
        let (rc, done) = unsafe {
            attr.batch.keys = rest.as_ptr() as u64;
            attr.batch.count = rest.len().min(u32::MAX as usize) as u32;
            attr.batch.map_fd = map.as_raw_fd() as u32;
            let rc = bpf(bpf_cmd::BPF_MAP_DELETE_BATCH, &mut attr);
            (rc, attr.batch.count as usize)
        };
        match rc {
            // A success that deleted nothing would loop forever; the kernel never answers so,
            // but the loop must not depend on it.
            Ok(()) if done == 0 => break,
            Ok(()) => from += done,
            // The key at `done` is gone already: skip it and go on with the rest.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => from += done + 1,
            Err(e) => return Err(e),
        }
    }
    Ok(keys.len())
}

fn zeroed_attr() -> bpf_attr {
    // SAFETY: bpf_attr is a plain C union of integers; all-zero is what the kernel expects for
    // every field not set.
    unsafe { std::mem::zeroed() }
}

/// The bpf(2) system call with the size of the `batch` variant (the kernel checks that any
/// bytes beyond what it reads are zero).
///
/// # Safety
/// `attr`'s pointers must point at buffers as large as `count` entries of the map.
unsafe fn bpf(cmd: bpf_cmd, attr: &mut bpf_attr) -> io::Result<()> {
    // SAFETY: per the caller.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd as libc::c_long,
            attr as *mut bpf_attr,
            size_of::<bpf_attr>() as libc::c_uint,
        )
    };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The file descriptor of an aya map, for the calls above.
pub fn fd_of<K: Pod, V: Pod, M: aya::maps::IterableMap<K, V>>(map: &M) -> BorrowedFd<'_> {
    map.map().fd().as_fd()
}
