//! ICMP errors about translated flows. An error quotes the packet that caused it (IP header and
//! the first 8 bytes of TCP/UDP) as that packet left the translation: to a backend instead of the
//! frontend, from the node's or router's address instead of the pod's. The client's socket only
//! matches errors that quote its own tuple, so without this, path-MTU discovery (fragmentation
//! needed), `ECONNREFUSED` (port unreachable) and TTL-exceeded never reach it.
//!
//! The quoted source is restored from the source NAT table when it carries the hook's translated
//! address, and the quoted destination from conntrack's reply entry (the error's quoted tuple,
//! reversed, is the flow's reply tuple); the outer source follows when the backend itself
//! answered, the outer destination when the source was translated. Checksums: the quoted IP
//! header's is updated with its addresses, which leaves the ICMP checksum unchanged (a valid
//! header sums to zero); port changes update the ICMP checksum. The quoted TCP/UDP checksum is
//! left as it is: no receiver checks it.
use aya_ebpf::programs::TcContext;
use switchyard_abi::{proto, stat, RevNat};

use crate::maps::{CT, REV_NAT};
use crate::packet::{Flow, Ip, IP_CSUM_OFF, IP_DADDR_OFF, IP_HLEN, IP_OFF, IP_SADDR_OFF};
use crate::{conntrack, snat, stats};

/// Offset of the ICMP header (the error's own IP header has no options).
const ICMP_OFF: usize = IP_OFF + IP_HLEN;
/// Offset of the ICMP checksum.
const ICMP_CSUM_OFF: usize = ICMP_OFF + 2;
/// Offset of the quoted IP header.
const INNER_IP: usize = ICMP_OFF + 8;
/// Offset of the quoted TCP/UDP header (the quoted IP header has no options).
const INNER_L4: usize = INNER_IP + IP_HLEN;
/// ICMP destination unreachable (port unreachable, fragmentation needed, …).
const ICMP_DEST_UNREACH: u8 = 3;
/// ICMP time exceeded.
const ICMP_TIME_EXCEEDED: u8 = 11;

/// A translated error: where it goes now, and the frontend restored as its quoted destination.
pub struct Translated {
    /// The error's destination (the client).
    pub daddr: u32,
    /// The error's source.
    pub saddr: u32,
    /// The frontend the client addressed, if the quoted flow was load-balanced.
    pub front: Option<RevNat>,
}

/// Translates an ICMP error in `ip` back for its client. `snat_addr` is the address this hook's
/// source NAT gives flows (node address, router address, service loopback), or 0. `Ok(None)`:
/// not an error about a translated flow.
#[inline(always)]
pub fn translate_error(
    ctx: &mut TcContext,
    ip: &Ip,
    snat_addr: u32,
) -> Result<Option<Translated>, u32> {
    if ip.proto != proto::ICMP || ip.ihl_len != IP_HLEN || ip.later_fragment() {
        return Ok(None);
    }
    let Ok(kind) = ctx.load::<u8>(ICMP_OFF) else {
        return Ok(None);
    };
    if kind != ICMP_DEST_UNREACH && kind != ICMP_TIME_EXCEEDED {
        return Ok(None);
    }
    let (Ok(ver_ihl), Ok(inner_proto)) = (ctx.load::<u8>(INNER_IP), ctx.load::<u8>(INNER_IP + 9))
    else {
        return Ok(None);
    };
    if ver_ihl != 0x45 || (inner_proto != proto::TCP && inner_proto != proto::UDP) {
        return Ok(None);
    }
    let (Ok(isaddr), Ok(idaddr), Ok(isport), Ok(idport)) = (
        ctx.load::<u32>(INNER_IP + 12),
        ctx.load::<u32>(INNER_IP + 16),
        ctx.load::<u16>(INNER_L4),
        ctx.load::<u16>(INNER_L4 + 2),
    ) else {
        return Ok(None);
    };
    // The quoted packet's reply tuple.
    let mut reply = Flow {
        proto: inner_proto,
        saddr: idaddr,
        daddr: isaddr,
        sport: idport,
        dport: isport,
        l4_off: 0,
        ihl_len: IP_HLEN,
        id: 0,
        frag: 0,
        tcp: 0,
    };
    let mut out = Translated {
        daddr: ip.daddr,
        saddr: ip.saddr,
        front: None,
    };
    let mut changed = false;
    if snat_addr != 0 && ip.daddr == snat_addr && isaddr == snat_addr {
        if let Some(orig) = snat::reverse(&reply, 0) {
            quoted(
                ctx,
                INNER_IP + 12,
                isaddr,
                orig.addr,
                INNER_L4,
                isport,
                orig.port,
            )?;
            outer(ctx, IP_DADDR_OFF, ip.daddr, orig.addr)?;
            reply.daddr = orig.addr;
            reply.dport = orig.port;
            out.daddr = orig.addr;
            changed = true;
        }
    }
    // SAFETY: copied out at once.
    if let Some(ct) = unsafe { CT.get(&conntrack::reply_key(&reply)) }.copied() {
        // SAFETY: copied out at once.
        if let Some(front) = unsafe { REV_NAT.get(&ct.rev_nat_id) }.copied() {
            quoted(
                ctx,
                INNER_IP + 16,
                idaddr,
                front.addr,
                INNER_L4 + 2,
                idport,
                front.port,
            )?;
            if ip.saddr == idaddr {
                outer(ctx, IP_SADDR_OFF, ip.saddr, front.addr)?;
                out.saddr = front.addr;
            }
            out.front = Some(front);
            changed = true;
        }
    }
    if !changed {
        return Ok(None);
    }
    stats::inc(stat::ICMP_TRANSLATED);
    Ok(Some(out))
}

/// Rewrites one end of the quoted packet.
#[inline(always)]
fn quoted(
    ctx: &mut TcContext,
    addr_off: usize,
    old_addr: u32,
    new_addr: u32,
    port_off: usize,
    old_port: u16,
    new_port: u16,
) -> Result<(), u32> {
    if old_addr != new_addr {
        ctx.l3_csum_replace(INNER_IP + 10, u64::from(old_addr), u64::from(new_addr), 4)
            .map_err(|_| stat::DROP_REWRITE)?;
        ctx.store(addr_off, &new_addr, 0)
            .map_err(|_| stat::DROP_REWRITE)?;
    }
    if old_port != new_port {
        ctx.l4_csum_replace(ICMP_CSUM_OFF, u64::from(old_port), u64::from(new_port), 2)
            .map_err(|_| stat::DROP_REWRITE)?;
        ctx.store(port_off, &new_port, 0)
            .map_err(|_| stat::DROP_REWRITE)?;
    }
    Ok(())
}

/// Rewrites an address of the error's own IP header.
#[inline(always)]
fn outer(ctx: &mut TcContext, off: usize, old: u32, new: u32) -> Result<(), u32> {
    if old == new {
        return Ok(());
    }
    ctx.l3_csum_replace(IP_CSUM_OFF, u64::from(old), u64::from(new), 4)
        .map_err(|_| stat::DROP_REWRITE)?;
    ctx.store(off, &new, 0).map_err(|_| stat::DROP_REWRITE)
}
