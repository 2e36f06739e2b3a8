//! `from_overlay`: TC ingress on `vxlan0` — packets other nodes' pods sent to this node's pods,
//! already decapsulated by the kernel.
//!
//! A backend's reply to a client on this node is reverse-NATed here (the conntrack entry lives on
//! the client's node); then the packet is handed straight to the local pod. Nothing is sent back
//! into the overlay from here, so no packet can loop between nodes.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use switchyard_abi::stat;

use crate::forward;
use crate::packet::{self, Parsed};
use crate::stats;

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
    let daddr = match packet::parse(ctx).map_err(|_| stat::DROP_MALFORMED)? {
        Parsed::Other => return Ok(TC_ACT_OK),
        Parsed::L3 { daddr, .. } => daddr,
        Parsed::L4(flow) => {
            let len = ctx.len();
            forward::reverse_nat(ctx, &flow, len)?;
            flow.daddr
        }
    };
    Ok(forward::to_local_pod(ctx, daddr).unwrap_or(TC_ACT_OK))
}
