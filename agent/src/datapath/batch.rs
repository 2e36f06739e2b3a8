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
use std::mem::size_of;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

use aya::Pod;
use aya_obj::generated::{bpf_attr, bpf_cmd};

/// Entries asked for per call: large enough that a table of a million entries takes a few
/// hundred calls, small enough that the buffers stay a few hundred KiB.
const CHUNK: usize = 4096;

/// Every entry of the hash map `map`. `capacity` bounds the read: a table changing under the
/// walk never keeps it going beyond twice its size.
pub fn lookup_all<K: Pod, V: Pod>(map: BorrowedFd<'_>, capacity: u32) -> io::Result<Vec<(K, V)>> {
    let mut out = Vec::new();
    // Whole batches only: a short batch could end inside a hash bucket, which the kernel refuses.
    let limit = (capacity as usize * 2).next_multiple_of(CHUNK);
    lookup(map, (size_of::<K>(), size_of::<V>()), limit, |k, v| {
        // SAFETY: `Pod`: any bytes of the right length are a valid key or value.
        out.push(unsafe { (read_pod::<K>(k), read_pod::<V>(v)) });
    })?;
    Ok(out)
}

/// The per-CPU values of entries `0..end` of the per-CPU array `map` on `cpus` CPUs (the
/// kernel's possible CPUs), in key order.
pub fn lookup_percpu_prefix<V: Pod>(
    map: BorrowedFd<'_>,
    end: u32,
    cpus: usize,
) -> io::Result<Vec<Vec<V>>> {
    // The kernel lays out a per-CPU value as one 8-byte aligned slot per CPU.
    let stride = size_of::<V>().next_multiple_of(8);
    let mut out = Vec::with_capacity(end as usize);
    lookup(
        map,
        (size_of::<u32>(), stride * cpus),
        end as usize,
        |_, v| {
            // SAFETY: as in `lookup_all`, one `V` at the start of each CPU's slot.
            out.push(
                v.chunks(stride)
                    .map(|c| unsafe { read_pod::<V>(c) })
                    .collect(),
            );
        },
    )?;
    Ok(out)
}

/// Reads a `T` from the start of `bytes` (at least `size_of::<T>()` long).
///
/// # Safety
/// `T` must be valid for any bytes (`Pod`).
unsafe fn read_pod<T: Pod>(bytes: &[u8]) -> T {
    assert!(bytes.len() >= size_of::<T>());
    // SAFETY: length checked; unaligned read of a Pod.
    unsafe { bytes.as_ptr().cast::<T>().read_unaligned() }
}

/// Walks `map` in batches of keys and values of `sizes` bytes, handing each entry to `entry`,
/// until the map ends or `limit` entries were read.
fn lookup(
    map: BorrowedFd<'_>,
    (key_size, value_size): (usize, usize),
    limit: usize,
    mut entry: impl FnMut(&[u8], &[u8]),
) -> io::Result<()> {
    let mut keys = vec![0u8; CHUNK * key_size];
    let mut values = vec![0u8; CHUNK * value_size];
    // The batch token is the next bucket index of a hash map, the last key of an array (a u32
    // either way); 8 bytes leave room.
    let mut token = [0u64; 1];
    let mut first = true;
    let mut read = 0;
    while read < limit {
        let mut next = [0u64; 1];
        let mut attr = zeroed_attr();
        // SAFETY: plain integers into the `batch` variant of a zeroed union; the buffers hold
        // `count` keys and values and outlive the call.
        let (rc, count) = unsafe {
            attr.batch.in_batch = if first { 0 } else { token.as_ptr() as u64 };
            attr.batch.out_batch = next.as_mut_ptr() as u64;
            attr.batch.keys = keys.as_mut_ptr() as u64;
            attr.batch.values = values.as_mut_ptr() as u64;
            attr.batch.count = CHUNK.min(limit - read) as u32;
            attr.batch.map_fd = map.as_raw_fd() as u32;
            let rc = bpf(bpf_cmd::BPF_MAP_LOOKUP_BATCH, &mut attr);
            (rc, (attr.batch.count as usize).min(CHUNK))
        };
        let done = match rc {
            Ok(()) => false,
            // The end of the map; `count` entries came with it.
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => true,
            Err(e) => return Err(e),
        };
        for i in 0..count {
            entry(
                &keys[i * key_size..(i + 1) * key_size],
                &values[i * value_size..(i + 1) * value_size],
            );
        }
        read += count;
        if done || count == 0 {
            return Ok(());
        }
        token = next;
        first = false;
    }
    Ok(())
}

/// Deletes `keys` from the hash map `map`; returns how many are gone (all of them: a key the
/// datapath or LRU eviction removed first counts as removed).
pub fn delete<K: Pod>(map: BorrowedFd<'_>, keys: &[K]) -> io::Result<usize> {
    let mut from = 0;
    while from < keys.len() {
        let rest = &keys[from..];
        let mut attr = zeroed_attr();
        // SAFETY: as in `lookup`; `rest` outlives the call.
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
pub fn fd_of<K: Pod, V, M: aya::maps::IterableMap<K, V>>(map: &M) -> BorrowedFd<'_> {
    map.map().fd().as_fd()
}
