//! Fragmented datagrams through a translation: only the first fragment carries ports, so each
//! hook that rewrites a first fragment remembers the addresses it left with (keyed by the
//! datagram's addresses, IP id and protocol as it arrived), and gives its later fragments the
//! same addresses — Cilium tracks fragments by IP id the same way. A later fragment whose first
//! was never seen (reordered, or its entry evicted) passes unchanged.
use aya_ebpf::programs::TcContext;
use switchyard_abi::{stat, FragKey, FragValue};

use crate::maps::FRAGS;
use crate::packet::{Flow, Ip, IP_CSUM_OFF, IP_DADDR_OFF, IP_PROTO_OFF, IP_SADDR_OFF};
use crate::stats;

/// The key of the datagram `flow` starts, if it is a first fragment.
#[inline(always)]
pub fn first(flow: &Flow) -> Option<FragKey> {
    if !flow.first_fragment() {
        return None;
    }
    Some(FragKey {
        saddr: flow.saddr,
        daddr: flow.daddr,
        id: flow.id,
        proto: flow.proto,
        pad: 0,
    })
}

/// After a hook handled the first fragment `key`: remembers the addresses the packet now has,
/// if the hook changed them.
#[inline(always)]
pub fn remember(ctx: &TcContext, key: &FragKey) {
    let (Ok(saddr), Ok(daddr), Ok(proto)) = (
        ctx.load::<u32>(IP_SADDR_OFF),
        ctx.load::<u32>(IP_DADDR_OFF),
        ctx.load::<u8>(IP_PROTO_OFF),
    ) else {
        return;
    };
    // A first fragment turned into an ICMP error (a frontend without backends) says nothing
    // about where the rest of the datagram goes.
    if proto == key.proto && (saddr != key.saddr || daddr != key.daddr) {
        let _ = FRAGS.insert(key, &FragValue { saddr, daddr }, 0);
    }
}

/// Gives a later fragment the addresses its first fragment left with; returns the packet's
/// (possibly new) destination. `Err` carries a drop reason.
#[inline(always)]
pub fn translate(ctx: &mut TcContext, ip: &mut Ip) -> Result<u32, u32> {
    let key = FragKey {
        saddr: ip.saddr,
        daddr: ip.daddr,
        id: ip.id,
        proto: ip.proto,
        pad: 0,
    };
    // SAFETY: copied out at once.
    let Some(to) = (unsafe { FRAGS.get(&key) }).copied() else {
        return Ok(ip.daddr);
    };
    for (off, old, new) in [
        (IP_SADDR_OFF, ip.saddr, to.saddr),
        (IP_DADDR_OFF, ip.daddr, to.daddr),
    ] {
        if old != new {
            ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
                .map_err(|_| stat::DROP_REWRITE)?;
            ctx.store(off, &new, 0).map_err(|_| stat::DROP_REWRITE)?;
        }
    }
    ip.saddr = to.saddr;
    ip.daddr = to.daddr;
    stats::inc(stat::FRAG_TRANSLATED);
    Ok(to.daddr)
}
