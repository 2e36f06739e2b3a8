//! `from_overlay`: TC ingress on `vxlan0` — packets other nodes' pods sent to this node's pods,
//! already decapsulated by the kernel.
//!
//! A reply to a NodePort flow this node translated for a remote backend is addressed to this
//! node's router address: its original client is restored from the SNAT table. A backend's reply
//! to a client on this node is reverse-NATed here (the conntrack entry lives on the client's
//! node). Then the packet goes straight to the local pod, or — a NodePort reply — out of the
//! uplink. Later fragments and ICMP errors of those flows are translated the same way. Nothing
//! is sent back into the overlay from here, so no packet can loop between nodes.
use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::bpf_skb_change_type, macros::classifier, programs::TcContext,
};
use switchyard_abi::stat;

use crate::overlay;
use crate::packet::Parsed;
use crate::{forward, frag, hook, icmp, nat, stats};

/// Entry point: see the module documentation.
#[classifier]
#[inline(always)]
pub fn from_overlay(mut ctx: TcContext) -> i32 {
    stats::inc(stat::TUNNEL_RX);
    hook::run(
        &mut ctx,
        #[inline(always)]
        |ctx, parsed| try_from_overlay(ctx, parsed),
    )
}

#[inline(always)]
fn try_from_overlay(ctx: &mut TcContext, parsed: &Parsed) -> Result<i32, u32> {
    let cfg = overlay::config();
    let router = cfg.as_ref().map_or(0, overlay::router_addr);
    let (daddr, saddr) = match *parsed {
        Parsed::Other => return Ok(TC_ACT_OK),
        Parsed::L3(mut ip) => {
            if ip.later_fragment() {
                let daddr = frag::translate(ctx, &mut ip)?;
                (daddr, ip.saddr)
            } else if let Some(e) = icmp::translate_error(ctx, &ip, router)? {
                (e.daddr, e.saddr)
            } else {
                (ip.daddr, ip.saddr)
            }
        }
        Parsed::L4(mut flow) => {
            forward::unsnat(ctx, &mut flow, router)?;
            let len = ctx.len();
            let front = forward::reverse_nat(ctx, &flow, len, nat::rewrite)?;
            (flow.daddr, front.map_or(flow.saddr, |f| f.addr))
        }
    };
    if let Some(v) = forward::to_local_pod(ctx, daddr) {
        return Ok(v);
    }
    // A NodePort reply (its source restored to the node's address) goes out of the uplink.
    if let Some(cfg) = cfg {
        if saddr == cfg.node_addr {
            return Ok(forward::node_reply(ctx, &cfg, daddr).unwrap_or(TC_ACT_OK));
        }
    }
    // For the node itself (e.g. a pod's answer to the node's own connection): the inner frame
    // still carries the sending node's MACs, so the stack would drop it as another host's.
    // SAFETY: plain helper call on our own skb.
    unsafe { bpf_skb_change_type(ctx.skb.skb, PACKET_HOST) };
    Ok(TC_ACT_OK)
}

/// `skb->pkt_type` of a frame addressed to this host.
const PACKET_HOST: u32 = 0;
