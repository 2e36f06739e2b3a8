//! Connection tracking for load-balanced flows.
//!
//! A new flow gets two entries: the forward one keyed by the packet as the client sent it
//! (client → frontend), remembering the backend so every later packet skips the service lookup and
//! a backend change never re-balances it; and the reply one keyed by the backend's answer
//! (backend → client), remembering the rev-NAT id that restores the frontend address.
//!
//! Entries are stamped with `bpf_ktime_get_coarse_ns` (`CLOCK_MONOTONIC_COARSE`: the clock the
//! agent ages them by, `CLOCK_MONOTONIC`, at most a tick behind) — idle timeouts are seconds, and
//! the coarse clock costs a fraction of the precise one on every tracked packet. The stamp is
//! rewritten at most once per `CT_REFRESH_NS` ([`Hit::due`]), and that refresh is also when a
//! forward entry's remembered backend address is checked against `BACKENDS` again: the packets
//! in between cost one conntrack lookup, not two map lookups and a write.
use aya_ebpf::helpers::bpf_ktime_get_coarse_ns;
use switchyard_abi::{Backend, CtKey, CtValue, CT_DIR_FORWARD, CT_DIR_REPLY, CT_REFRESH_NS};

use crate::maps::{CT, REV_NAT};
use crate::packet::{Flow, TCP_SYN};

/// The key of `flow` in direction `dir` (also the key layout of the SNAT table).
#[inline(always)]
pub fn key(flow: &Flow, dir: u8) -> CtKey {
    CtKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        sport: flow.sport,
        dport: flow.dport,
        proto: flow.proto,
        dir,
        pad: [0; 2],
    }
}

/// Key of the forward entry of `flow` (as the client sent it).
#[inline(always)]
pub fn forward_key(flow: &Flow) -> CtKey {
    key(flow, CT_DIR_FORWARD)
}

/// Key under which a packet is looked up as a reply (backend → client).
#[inline(always)]
pub fn reply_key(flow: &Flow) -> CtKey {
    key(flow, CT_DIR_REPLY)
}

/// The conntrack clock's time (`bpf_ktime_get_coarse_ns`).
#[inline(always)]
fn now() -> u64 {
    // SAFETY: plain helper call.
    unsafe { bpf_ktime_get_coarse_ns() }
}

/// A conntrack hit.
#[derive(Clone, Copy)]
pub struct Hit {
    /// The entry, this packet counted.
    pub entry: CtValue,
    /// The entry was due for a refresh (its `last_seen` was `CT_REFRESH_NS` or more old): what
    /// it remembers is to be checked again.
    pub due: bool,
}

/// Looks up `key` and, on a hit, counts the packet, records the closing flags of TCP flags `tcp`
/// (a SYN starts over: the tuple begins a new connection) and refreshes the timestamp when it is
/// due or the packet is a SYN. The agent's sweeper expires entries by these flags and the
/// timestamp.
#[inline(always)]
pub fn touch(key: &CtKey, len: u32, tcp: u8) -> Option<Hit> {
    let entry = CT.get_ptr_mut(key)?;
    let now = now();
    // SAFETY: the pointer is valid for this program run; racing updates of counters on other CPUs
    // only lose increments, never corrupt the entry.
    unsafe {
        let due = due(&*entry, now);
        let syn = tcp & TCP_SYN != 0;
        if syn || due {
            (*entry).last_seen = now;
        }
        count(&mut *entry, len, tcp);
        Some(Hit { entry: *entry, due })
    }
}

/// Looks up `key` as the forward entry of an established flow that can be used as it is: it is
/// there, not due for a refresh, and remembers its backend's address (`nat_addr`). On such a hit
/// counts the packet (of TCP flags `tcp`, no SYN: the caller checks) and records its closing
/// flags, as [`touch`] does, and returns the entry. Otherwise leaves the entry alone (`None`):
/// [`touch`] then counts the packet and refreshes what is due.
#[inline(always)]
pub fn fresh(key: &CtKey, len: u32, tcp: u8) -> Option<&'static CtValue> {
    let entry = CT.get_ptr_mut(key)?;
    // SAFETY: as in `touch`; the reference is read within this program run.
    unsafe {
        if (*entry).nat_addr == 0 || due(&*entry, now()) {
            return None;
        }
        count(&mut *entry, len, tcp);
        Some(&*entry)
    }
}

/// Whether `entry`'s `last_seen` is `CT_REFRESH_NS` or more before `now`: what it remembers is
/// to be checked again, and its timestamp refreshed.
#[inline(always)]
fn due(entry: &CtValue, now: u64) -> bool {
    now.saturating_sub(entry.last_seen) >= CT_REFRESH_NS
}

/// Counts a packet of `len` bytes and TCP flags `tcp` in `entry` and records its closing flags
/// (a SYN starts over: the tuple begins a new connection).
#[inline(always)]
fn count(entry: &mut CtValue, len: u32, tcp: u8) {
    if tcp & TCP_SYN != 0 {
        entry.flags = Flow::closing(tcp);
    } else {
        entry.flags |= Flow::closing(tcp);
    }
    entry.packets += 1;
    entry.bytes += u64::from(len);
}

/// Key of the reply entry of `flow` load-balanced to `addr:port` (backend → client).
#[inline(always)]
fn backend_reply_key(flow: &Flow, addr: u32, port: u16) -> CtKey {
    CtKey {
        saddr: addr,
        daddr: flow.saddr,
        sport: port,
        dport: flow.sport,
        proto: flow.proto,
        dir: CT_DIR_REPLY,
        pad: [0; 2],
    }
}

/// Whether the reply entry of `flow` load-balanced to `addr:port` still belongs to it (names the
/// same frontend, `rev_nat_id`). Forward and reply entries age out of the LRU table
/// independently; a plain flow reusing the tuple removes the reply entry; and the reply tuple
/// `backend → client:port` is shared by every frontend that sends that client port to that
/// backend, so a flow to another frontend from the same port takes it over. A forward entry
/// whose reply entry is gone or taken must not be reused.
#[inline(always)]
pub fn reply_matches(flow: &Flow, addr: u32, port: u16, rev_nat_id: u32) -> bool {
    // SAFETY: copied out at once.
    unsafe { CT.get(&backend_reply_key(flow, addr, port)) }
        .is_some_and(|r| r.rev_nat_id == rev_nat_id)
}

/// Records a new flow from `flow`'s client to backend `backend_id` of frontend `rev_nat_id`.
#[inline(always)]
pub fn create(flow: &Flow, backend_id: u32, backend: &Backend, rev_nat_id: u32, len: u32) {
    let now = now();
    let value = CtValue {
        backend_id,
        rev_nat_id,
        flags: 0,
        pad: 0,
        nat_port: backend.port,
        nat_addr: backend.addr,
        last_seen: now,
        packets: 1,
        bytes: u64::from(len),
    };
    let reply = backend_reply_key(flow, backend.addr, backend.port);
    // The frontend is what the client addressed: `SERVICES` is keyed by it.
    let reply_value = CtValue {
        nat_port: flow.dport,
        nat_addr: flow.daddr,
        packets: 0,
        bytes: 0,
        ..value
    };
    // Reply entry first: a reply can never arrive before the forward packet is sent.
    let _ = CT.insert(&reply, &reply_value, 0);
    let _ = CT.insert(&forward_key(flow), &value, 0);
}

/// A new flow that is not load-balanced (a TCP SYN or any UDP datagram to a plain address)
/// supersedes the earlier load-balanced flow whose reply tuple it reuses: the client's kernel
/// sees `client → VIP` and `client → backend` as different tuples and may reuse a source port.
/// Without this the stale reply entry would rewrite the new flow's replies. The old flow's
/// forward entry goes too, so that a later packet to the frontend from that port starts a new
/// load-balanced flow instead of reusing a half-forgotten one.
#[inline(always)]
pub fn forget_stale_reply(flow: &Flow) {
    let reverse = Flow {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        ..*flow
    };
    let reply = key(&reverse, CT_DIR_REPLY);
    // SAFETY: copied out at once.
    let Some(old) = (unsafe { CT.get(&reply) }).copied() else {
        return;
    };
    // SAFETY: copied out at once.
    if let Some(front) = unsafe { REV_NAT.get(&old.rev_nat_id) }.copied() {
        let forward = Flow {
            daddr: front.addr,
            dport: front.port,
            ..*flow
        };
        let _ = CT.remove(&forward_key(&forward));
    }
    let _ = CT.remove(&reply);
}
