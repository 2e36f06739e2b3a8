//! Fast failure for services without backends: the packet is turned, in place, into an ICMP
//! "port unreachable" from the frontend back to the client, as kube-proxy's REJECT rule does, so
//! `connect()` fails with ECONNREFUSED (and UDP clients see the error) instead of hanging.
use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    helpers::{bpf_redirect, bpf_skb_change_tail},
    programs::TcContext,
};

use crate::packet::{Flow, ETH_HLEN, IP_HLEN, IP_OFF};

/// ICMP header (8) plus the quoted original IP header (20) and first 8 bytes of L4.
const ICMP_LEN: usize = 8 + IP_HLEN + 8;
/// Length of the whole reply frame.
const REPLY_LEN: u32 = (ETH_HLEN + IP_HLEN + ICMP_LEN) as u32;

/// One's-complement sum of `bytes` (big-endian 16-bit words), folded and inverted.
#[inline(always)]
fn checksum<const N: usize>(bytes: &[u8; N]) -> u16 {
    let mut sum: u32 = 0;
    let mut i = 0;
    while i + 1 < N {
        sum += (u32::from(bytes[i]) << 8) | u32::from(bytes[i + 1]);
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    !(sum as u16)
}

/// Rewrites the packet into an ICMP port unreachable for `flow`'s client and sends it back out
/// of the interface it came in on. Returns the TC verdict.
#[inline(always)]
pub fn port_unreachable(ctx: &mut TcContext, flow: &Flow) -> Result<i32, ()> {
    if flow.ihl_len != IP_HLEN {
        // IP options: not worth quoting correctly; drop instead.
        return Ok(TC_ACT_SHOT);
    }
    let macs: [u8; 12] = ctx.load(0).map_err(|_| ())?;
    let mut icmp = [0u8; ICMP_LEN];
    {
        let quoted: [u8; IP_HLEN + 8] = ctx.load(IP_OFF).map_err(|_| ())?;
        icmp[0] = 3; // destination unreachable
        icmp[1] = 3; // port unreachable
        let mut i = 0;
        while i < IP_HLEN + 8 {
            icmp[8 + i] = quoted[i];
            i += 1;
        }
    }
    let sum = checksum(&icmp).to_be_bytes();
    icmp[2] = sum[0];
    icmp[3] = sum[1];

    let mut ip = [0u8; IP_HLEN];
    ip[0] = 0x45;
    ip[1] = 0xc0; // precedence: internetwork control, as the kernel sends ICMP errors
    let tot = ((IP_HLEN + ICMP_LEN) as u16).to_be_bytes();
    ip[2] = tot[0];
    ip[3] = tot[1];
    ip[8] = 64; // ttl
    ip[9] = 1; // ICMP
    let src = flow.daddr.to_ne_bytes(); // from the frontend the client addressed
    let dst = flow.saddr.to_ne_bytes();
    ip[12..16].copy_from_slice(&src);
    ip[16..20].copy_from_slice(&dst);
    let sum = checksum(&ip).to_be_bytes();
    ip[10] = sum[0];
    ip[11] = sum[1];

    let mut eth = [0u8; ETH_HLEN];
    eth[0..6].copy_from_slice(&macs[6..12]);
    eth[6..12].copy_from_slice(&macs[0..6]);
    eth[12] = 0x08;
    eth[13] = 0x00;

    // SAFETY: plain helper calls on our own skb.
    unsafe {
        if bpf_skb_change_tail(ctx.skb.skb, REPLY_LEN, 0) != 0 {
            return Err(());
        }
    }
    ctx.store(0, &eth, 0).map_err(|_| ())?;
    ctx.store(IP_OFF, &ip, 0).map_err(|_| ())?;
    ctx.store(IP_OFF + IP_HLEN, &icmp, 0).map_err(|_| ())?;
    // SAFETY: reading the ifindex of the skb we run on.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: plain helper call; back out of the device the packet arrived on.
    Ok(unsafe { bpf_redirect(ifindex, 0) } as i32)
}
