//! Address and port rewrites with incremental checksum updates.
//!
//! The TCP/UDP checksum is fixed with `bpf_l4_csum_replace`, flagged as a pseudo-header change
//! for addresses: only the kernel knows whether the skb is CHECKSUM_PARTIAL (offloaded checksums
//! on veth: the field then holds the pseudo-header sum, and a port change must not touch it), so
//! this stays a helper. UDP packets with no checksum (0) keep none (`BPF_F_MARK_MANGLED_0`). The
//! address, the port and the IPv4 header checksum (never offloaded; its update leaves the sum of
//! the header, hence a CHECKSUM_COMPLETE `skb->csum`, unchanged) are written with direct packet
//! access, after the helpers: no helper call per field ([`rewrite`]). [`rewrite_stored`] writes
//! them with helpers instead, for programs at the verifier's complexity limit (`from_netdev`):
//! packet pointers add verifier states, helper calls do not.
use aya_ebpf::programs::TcContext;
use switchyard_abi::proto;

use crate::packet::{Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_HLEN, IP_OFF, IP_SADDR_OFF};

const BPF_F_PSEUDO_HDR: u64 = 1 << 4;
const BPF_F_MARK_MANGLED_0: u64 = 1 << 5;

/// Which end of the flow a rewrite changes.
#[derive(Clone, Copy)]
pub enum Side {
    /// Destination address and port (DNAT).
    Destination,
    /// Source address and port (SNAT, reverse NAT of replies).
    Source,
}

/// Checksum `check` after a 32-bit word of the data it covers changed from `from` to `to`
/// (RFC 1624; all three as they are in memory: ones'-complement sums do not depend on the byte
/// order).
#[inline(always)]
pub fn csum_replace4(check: u16, from: u32, to: u32) -> u16 {
    let nf = !from;
    let mut sum = u32::from(!check) + (nf >> 16) + (nf & 0xffff) + (to >> 16) + (to & 0xffff);
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Where a rewrite of one side of a flow writes, and what it replaces.
struct Target {
    addr_off: usize,
    port_off: usize,
    old_addr: u32,
    old_port: u16,
    l4_csum: usize,
    udp_flag: u64,
}

impl Target {
    #[inline(always)]
    fn of(flow: &Flow, side: Side) -> Target {
        let (addr_off, port_off, old_addr, old_port) = match side {
            Side::Destination => (IP_DADDR_OFF, flow.dport_off(), flow.daddr, flow.dport),
            Side::Source => (IP_SADDR_OFF, flow.sport_off(), flow.saddr, flow.sport),
        };
        let udp_flag = if flow.proto == proto::UDP {
            BPF_F_MARK_MANGLED_0
        } else {
            0
        };
        Target {
            addr_off,
            port_off,
            old_addr,
            old_port,
            l4_csum: flow.l4_csum_off(),
            udp_flag,
        }
    }
}

/// Folds the address and port changes of `t` into the L4 checksum (the address as a
/// pseudo-header field): the part of a rewrite that stays a helper in both [`rewrite`] and
/// [`rewrite_stored`].
#[inline(always)]
fn l4_csums(ctx: &mut TcContext, t: &Target, addr: u32, port: u16) -> Result<(), ()> {
    if t.old_addr != addr {
        ctx.l4_csum_replace(
            t.l4_csum,
            t.old_addr as u64,
            addr as u64,
            BPF_F_PSEUDO_HDR | t.udp_flag | 4,
        )
        .map_err(|_| ())?;
    }
    if t.old_port != port {
        ctx.l4_csum_replace(t.l4_csum, t.old_port as u64, port as u64, t.udp_flag | 2)
            .map_err(|_| ())?;
    }
    Ok(())
}

/// Rewrites one side of `flow` to `addr:port` (network order). `Err` if a helper failed; the
/// packet must then be dropped, it may be half-written.
#[inline(always)]
pub fn rewrite(
    ctx: &mut TcContext,
    flow: &Flow,
    side: Side,
    addr: u32,
    port: u16,
) -> Result<(), ()> {
    let t = Target::of(flow, side);
    l4_csums(ctx, &t, addr, port)?;
    // The helpers may have moved the data: fresh pointers, checked again for the verifier (the
    // headers are linear since `parse`).
    let data = ctx.data();
    if data + IP_OFF + IP_HLEN > ctx.data_end() {
        return Err(());
    }
    if t.old_addr != addr {
        // SAFETY: within the IPv4 header checked above.
        unsafe {
            let check = (data + IP_CSUM_OFF) as *mut u16;
            check.write_unaligned(csum_replace4(check.read_unaligned(), t.old_addr, addr));
            ((data + t.addr_off) as *mut u32).write_unaligned(addr);
        }
    }
    if t.old_port != port {
        let at = data + t.port_off;
        if at + 2 > ctx.data_end() {
            return Err(());
        }
        // SAFETY: within the port checked just above.
        unsafe { (at as *mut u16).write_unaligned(port) };
    }
    Ok(())
}

/// [`rewrite`] with helpers only: `bpf_l3_csum_replace` and `bpf_skb_store_bytes` instead of
/// direct writes (five helper calls instead of two, no packet pointers).
#[inline(always)]
pub fn rewrite_stored(
    ctx: &mut TcContext,
    flow: &Flow,
    side: Side,
    addr: u32,
    port: u16,
) -> Result<(), ()> {
    let t = Target::of(flow, side);
    l4_csums(ctx, &t, addr, port)?;
    if t.old_addr != addr {
        ctx.l3_csum_replace(IP_CSUM_OFF, t.old_addr as u64, addr as u64, 4)
            .map_err(|_| ())?;
        ctx.store(t.addr_off, &addr, 0).map_err(|_| ())?;
    }
    if t.old_port != port {
        ctx.store(t.port_off, &port, 0).map_err(|_| ())?;
    }
    Ok(())
}
