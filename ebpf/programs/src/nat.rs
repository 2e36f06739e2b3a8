//! Address and port rewrites with incremental checksum updates.
//!
//! The IPv4 header checksum is fixed with `bpf_l3_csum_replace`; the TCP/UDP checksum with
//! `bpf_l4_csum_replace`, flagged as a pseudo-header change for addresses. UDP packets with no
//! checksum (0) keep none (`BPF_F_MARK_MANGLED_0`). This is correct for CHECKSUM_PARTIAL skbs
//! (offloaded checksums on veth) as well.
use aya_ebpf::programs::TcContext;
use switchyard_abi::proto;

use crate::packet::{Flow, IP_CSUM_OFF, IP_DADDR_OFF, IP_SADDR_OFF};

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
    let (addr_off, port_off, old_addr, old_port) = match side {
        Side::Destination => (IP_DADDR_OFF, flow.dport_off(), flow.daddr, flow.dport),
        Side::Source => (IP_SADDR_OFF, flow.sport_off(), flow.saddr, flow.sport),
    };
    let l4_csum = flow.l4_csum_off();
    let udp_flag = if flow.proto == proto::UDP {
        BPF_F_MARK_MANGLED_0
    } else {
        0
    };
    if old_addr != addr {
        ctx.l4_csum_replace(
            l4_csum,
            old_addr as u64,
            addr as u64,
            BPF_F_PSEUDO_HDR | udp_flag | 4,
        )
        .map_err(|_| ())?;
        ctx.l3_csum_replace(IP_CSUM_OFF, old_addr as u64, addr as u64, 4)
            .map_err(|_| ())?;
        ctx.store(addr_off, &addr, 0).map_err(|_| ())?;
    }
    if old_port != port {
        ctx.l4_csum_replace(l4_csum, old_port as u64, port as u64, udp_flag | 2)
            .map_err(|_| ())?;
        ctx.store(port_off, &port, 0).map_err(|_| ())?;
    }
    Ok(())
}
