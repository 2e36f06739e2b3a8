//! `from_overlay`: TC ingress on `vxlan0` — packets other nodes' pods sent to this node's pods,
//! already decapsulated by the kernel.
//!
//! A reply to a NodePort flow this node translated for a remote backend is addressed to this
//! node's router address: its original client is restored from the SNAT table. A backend's reply
//! to a client on this node is reverse-NATed here (the conntrack entry lives on the client's
//! node). Then the packet goes straight to the local pod, or — a NodePort reply — out of the
//! uplink. Nothing is sent back into the overlay from here, so no packet can loop between nodes.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use switchyard_abi::stat;

use crate::overlay;
use crate::packet::{self, Parsed};
use crate::{forward, stats};

/// Entry point: see the module documentation.
#[classifier]
pub fn from_overlay(mut ctx: TcContext) -> i32 {
    match try_from_overlay(&mut ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
}

#[inline(always)]
fn try_from_overlay(ctx: &mut TcContext) -> Result<i32, u32> {
    stats::inc(stat::TUNNEL_RX);
    let mut flow = match packet::parse(ctx).map_err(|_| stat::DROP_MALFORMED)? {
        Parsed::Other => return Ok(TC_ACT_OK),
        Parsed::L3 { daddr, .. } => {
            return Ok(forward::to_local_pod(ctx, daddr).unwrap_or(TC_ACT_OK))
        }
        Parsed::L4(flow) => flow,
    };
    let cfg = overlay::config();
    if let Some(cfg) = &cfg {
        forward::unsnat(ctx, &mut flow, overlay::router_addr(cfg))?;
    }
    let len = ctx.len();
    let front = forward::reverse_nat(ctx, &flow, len)?;
    if let Some(v) = forward::to_local_pod(ctx, flow.daddr) {
        return Ok(v);
    }
    if let (Some(front), Some(cfg)) = (front, cfg) {
        if front.addr == cfg.node_addr {
            return Ok(forward::node_reply(ctx, &cfg, flow.daddr).unwrap_or(TC_ACT_OK));
        }
    }
    Ok(TC_ACT_OK)
}
