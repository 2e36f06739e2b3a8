//! The source NAT table shared by masquerade and NodePort: a forward entry per translated flow
//! (original tuple → translated source) and a reply entry (reply tuple → original source).
//!
//! A new flow's translated port is claimed atomically with `BPF_NOEXIST` on the reply entry, so
//! two live flows never share a translated tuple. Callers may ask to keep the client's own port
//! first (as netfilter does) where that cannot clash with the node's own sockets; otherwise
//! ports come from `SNAT_PORT_MIN..=SNAT_PORT_MAX` (outside the node's own ephemeral range) at
//! random. Every packet refreshes its entry and
//! records a FIN or RST, so a reply tuple whose flow is over — closed and quiet for netfilter's
//! timeouts, idle for longer, or whose forward entry is gone — is handed to a new flow instead
//! of exhausting the port range. A TCP SYN reuses a remembered translation only while its reply
//! entry still belongs to it (the client may reuse a port after its reply entry was reclaimed).
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use switchyard_abi::{
    proto, stat, NatEntry, NatKey, NodeConfig, CT_DIR_FORWARD, CT_DIR_REPLY, NAT_FLAG_FIN,
    NAT_FLAG_RST, NAT_TIMEOUT_FIN_NS, NAT_TIMEOUT_RST_NS, NAT_TIMEOUT_TCP_NS, NAT_TIMEOUT_UDP_NS,
    SNAT_MAX_ATTEMPTS, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::conntrack::key;
use crate::maps::NAT;
use crate::packet::{Flow, TCP_SYN};
use crate::stats;

const BPF_NOEXIST: u64 = 1;

/// Looks up `key`; on a hit refreshes it and records FIN/RST from `tcp`.
#[inline(always)]
fn touch(key: &NatKey, tcp: u8) -> Option<NatEntry> {
    let entry = NAT.get_ptr_mut(key)?;
    // SAFETY: valid for this program run; a racing update on another CPU only loses a refresh.
    unsafe {
        (*entry).last_seen = bpf_ktime_get_ns();
        (*entry).flags |= Flow::closing(tcp);
        Some(*entry)
    }
}

/// The reply tuple of `flow` translated to `addr:port`.
#[inline(always)]
fn reply_key(flow: &Flow, addr: u32, port: u16) -> NatKey {
    NatKey {
        saddr: flow.daddr,
        daddr: addr,
        sport: flow.dport,
        dport: port,
        proto: flow.proto,
        dir: CT_DIR_REPLY,
        pad: [0; 2],
    }
}

/// The original source a reply must be sent back to, if `flow` (TCP flags `tcp`) answers a
/// translated flow.
#[inline(always)]
pub fn reverse(flow: &Flow, tcp: u8) -> Option<NatEntry> {
    touch(&key(flow, CT_DIR_REPLY), tcp)
}

/// Whether `flow` answers a translated flow (its reply entry exists), without refreshing the
/// entry: `xdp_nodeport` leaves such packets to `from_netdev`, which [`reverse`]s them.
#[inline(always)]
pub fn answers(flow: &Flow) -> bool {
    // SAFETY: only presence is read.
    unsafe { NAT.get(&key(flow, CT_DIR_REPLY)) }.is_some()
}

/// The translated source of `flow` (TCP flags `tcp`): the one it already has, else a new one
/// with address `to_addr` (keeping the flow's own source port when `keep_port` and it is free;
/// counted as `SNAT_NEW`). `None` when no port was free.
#[inline(always)]
pub fn translate(
    flow: &Flow,
    to_addr: u32,
    keep_port: bool,
    tcp: u8,
    cfg: &NodeConfig,
) -> Option<NatEntry> {
    if let Some(to) = touch(&key(flow, CT_DIR_FORWARD), tcp) {
        if tcp & TCP_SYN == 0 || owns(flow, &to) {
            return Some(to);
        }
    }
    let to = allocate(flow, to_addr, keep_port, cfg)?;
    stats::inc(stat::SNAT_NEW);
    Some(to)
}

/// Remembers `flow`, from outside the cluster to a pod's own address (its podCIDR routed to
/// this node), as a flow translated to itself: a reply entry (this direction) and a forward
/// entry (the pod's) that both name the pod's own address and port. Masquerade ([`translate`])
/// then finds the pod's answers already translated — to themselves — and leaves their source
/// alone, as netfilter's MASQUERADE leaves the replies of connections it did not start. A SYN
/// (a new connection, perhaps on the tuple of an older masqueraded one) writes both entries
/// again; any other packet refreshes its entry and writes them only when they are missing.
#[inline(always)]
pub fn inbound(flow: &Flow, tcp: u8) {
    let reply = key(flow, CT_DIR_REPLY);
    if tcp & TCP_SYN == 0 && touch(&reply, tcp).is_some() {
        return;
    }
    let pod = NatEntry {
        addr: flow.daddr,
        port: flow.dport,
        flags: Flow::closing(tcp),
        pad: 0,
        // SAFETY: plain helper call.
        last_seen: unsafe { bpf_ktime_get_ns() },
    };
    let out = Flow {
        saddr: flow.daddr,
        daddr: flow.saddr,
        sport: flow.dport,
        dport: flow.sport,
        ..*flow
    };
    let _ = NAT.insert(&reply, &pod, 0);
    let _ = NAT.insert(&key(&out, CT_DIR_FORWARD), &NatEntry { flags: 0, ..pod }, 0);
}

/// Whether `to`, the translation [`translate`] gave `flow`, is `flow`'s own source (an answer
/// of an [`inbound`] flow): nothing to rewrite.
#[inline(always)]
pub fn is_identity(flow: &Flow, to: &NatEntry) -> bool {
    to.addr == flow.saddr && to.port == flow.sport
}

/// Whether NodePort SNAT to the router address may keep `flow`'s source port: only when it lies
/// in the SNAT range. The router address is also the source of the node's own connections to
/// other nodes' pods, whose ports come from below that range; keeping one of those could make a
/// NodePort flow and a node connection share a reply tuple.
#[inline(always)]
pub fn may_keep(flow: &Flow, cfg: &NodeConfig) -> bool {
    (cfg.snat_port_min..=cfg.snat_port_max).contains(&u16::from_be(flow.sport))
}

/// Whether the reply tuple of `flow` translated to `to` still leads back to `flow`'s source.
#[inline(always)]
fn owns(flow: &Flow, to: &NatEntry) -> bool {
    // SAFETY: copied out at once.
    unsafe { NAT.get(&reply_key(flow, to.addr, to.port)) }
        .is_some_and(|o| o.addr == flow.saddr && o.port == flow.sport)
}

#[inline(always)]
fn allocate(flow: &Flow, to_addr: u32, keep_port: bool, cfg: &NodeConfig) -> Option<NatEntry> {
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let (lo, hi) = if cfg.snat_port_min != 0 && cfg.snat_port_min <= cfg.snat_port_max {
        (cfg.snat_port_min, cfg.snat_port_max)
    } else {
        (SNAT_PORT_MIN, SNAT_PORT_MAX)
    };
    let span = u32::from(hi - lo) + 1;
    let attempts = u32::from(cfg.snat_attempts.clamp(1, SNAT_MAX_ATTEMPTS));
    let original = NatEntry {
        addr: flow.saddr,
        port: flow.sport,
        flags: 0,
        pad: 0,
        last_seen: now,
    };
    for attempt in 0..u32::from(SNAT_MAX_ATTEMPTS) {
        if attempt >= attempts {
            break;
        }
        let port = if attempt == 0 && keep_port {
            flow.sport
        } else {
            // SAFETY: plain helper call.
            (lo + (unsafe { bpf_get_prandom_u32() } % span) as u16).to_be()
        };
        if claim(flow, to_addr, port, &original, now) {
            let translated = NatEntry {
                addr: to_addr,
                port,
                ..original
            };
            let _ = NAT.insert(&key(flow, CT_DIR_FORWARD), &translated, 0);
            return Some(translated);
        }
    }
    None
}

/// Claims the reply tuple of `flow` translated to `to_addr:port` for `original`: when free,
/// when it already leads to `original`, or when the flow holding it is over.
#[inline(always)]
fn claim(flow: &Flow, to_addr: u32, port: u16, original: &NatEntry, now: u64) -> bool {
    let reply = reply_key(flow, to_addr, port);
    if NAT.insert(&reply, original, BPF_NOEXIST).is_ok() {
        return true;
    }
    // SAFETY: copied out at once.
    let Some(owner) = (unsafe { NAT.get(&reply) }).copied() else {
        return false;
    };
    let owner_forward = NatKey {
        saddr: owner.addr,
        sport: owner.port,
        daddr: flow.daddr,
        dport: flow.dport,
        proto: flow.proto,
        dir: CT_DIR_FORWARD,
        pad: [0; 2],
    };
    let same = owner.addr == original.addr && owner.port == original.port;
    if !same {
        // SAFETY: copied out at once.
        let forward = unsafe { NAT.get(&owner_forward) }.copied();
        if !over(&owner, forward.as_ref(), to_addr, port, flow.proto, now) {
            return false;
        }
        let _ = NAT.remove(&owner_forward);
    }
    // Remove and re-claim, so that of two CPUs taking over the same tuple only one wins.
    let _ = NAT.remove(&reply);
    NAT.insert(&reply, original, BPF_NOEXIST).is_ok()
}

/// Whether the flow holding a reply tuple (its reply entry `reply`, its forward entry `forward`)
/// is over: its forward entry is gone or points elsewhere, or both directions have been quiet
/// for longer than the timeout of the state they reached.
#[inline(always)]
fn over(
    reply: &NatEntry,
    forward: Option<&NatEntry>,
    to_addr: u32,
    port: u16,
    proto_: u8,
    now: u64,
) -> bool {
    let Some(fwd) = forward else {
        return true;
    };
    if fwd.addr != to_addr || fwd.port != port {
        return true;
    }
    let last = if reply.last_seen > fwd.last_seen {
        reply.last_seen
    } else {
        fwd.last_seen
    };
    // Both ends sent FIN: the flow is over, and a new one may take its tuple at once, as a SYN
    // may reopen a TIME_WAIT connection in netfilter.
    if reply.flags & fwd.flags & NAT_FLAG_FIN != 0 {
        return true;
    }
    let flags = reply.flags | fwd.flags;
    let timeout = if flags & NAT_FLAG_RST != 0 {
        NAT_TIMEOUT_RST_NS
    } else if flags & NAT_FLAG_FIN != 0 {
        NAT_TIMEOUT_FIN_NS
    } else if proto_ == proto::TCP {
        NAT_TIMEOUT_TCP_NS
    } else {
        NAT_TIMEOUT_UDP_NS
    };
    now.saturating_sub(last) > timeout
}
