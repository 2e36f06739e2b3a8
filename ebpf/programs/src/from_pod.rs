//! `from_pod`: TC ingress on every pod's host-side veth — every packet a local pod sends.
//!
//! 1. A reply from a backend (reply-direction conntrack hit) gets its source restored to the
//!    frontend the client addressed (reverse NAT).
//! 2. A packet to a frontend in `SERVICES` is DNATed to a backend: the one conntrack remembers for
//!    this flow, or a random one for a new flow. A frontend without backends answers with ICMP
//!    port unreachable.
//! 3. A packet (possibly just rewritten) for a pod on this node is redirected straight to that
//!    pod; one for a pod on another node goes through the overlay. Everything else continues to
//!    `cbr0` and the node's stack.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use switchyard_abi::{stat, ServiceValue};

use crate::forward;
use crate::lb;
use crate::nat::{self, Side};
use crate::overlay;
use crate::packet::{self, Flow, Parsed};
use crate::reject;
use crate::{conntrack, stats};

/// Entry point: see the module documentation.
#[classifier]
pub fn from_pod(mut ctx: TcContext) -> i32 {
    match try_from_pod(&mut ctx) {
        Ok(verdict) => verdict,
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
}

/// `Err` carries the `stat` drop reason.
#[inline(always)]
fn try_from_pod(ctx: &mut TcContext) -> Result<i32, u32> {
    let flow = match packet::parse(ctx).map_err(|_| stat::DROP_MALFORMED)? {
        Parsed::Other => return Ok(TC_ACT_OK),
        Parsed::L3 { daddr, fragment } => {
            if fragment {
                stats::inc(stat::FRAGMENT);
            }
            return Ok(deliver(ctx, daddr));
        }
        Parsed::L4(flow) => flow,
    };
    stats::inc(stat::PACKETS);
    let len = ctx.len();
    if forward::reverse_nat(ctx, &flow, len)? {
        return Ok(deliver(ctx, flow.daddr));
    }
    if let Some(svc) = lb::lookup_service(&flow) {
        return load_balance(ctx, &flow, &svc, len);
    }
    Ok(deliver(ctx, flow.daddr))
}

/// DNATs a packet addressed to a frontend, then delivers it.
#[inline(always)]
fn load_balance(
    ctx: &mut TcContext,
    flow: &Flow,
    svc: &ServiceValue,
    len: u32,
) -> Result<i32, u32> {
    let known = conntrack::touch(&conntrack::forward_key(flow), len)
        .and_then(|ct| lb::backend(ct.backend_id));
    let backend = match known {
        Some(b) => {
            stats::inc(stat::LB_ESTABLISHED);
            b
        }
        None => {
            if svc.count == 0 {
                stats::inc(stat::DROP_NO_BACKEND);
                return reject::port_unreachable(ctx, flow).map_err(|_| stat::DROP_REWRITE);
            }
            let (id, b) = lb::select_backend(flow, svc).ok_or(stat::DROP_STALE_SLOT)?;
            conntrack::create(flow, id, &b, svc.rev_nat_id, len);
            stats::inc(stat::LB_NEW);
            b
        }
    };
    nat::rewrite(ctx, flow, Side::Destination, backend.addr, backend.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    Ok(deliver(ctx, backend.addr))
}

/// A local pod, else another node's pod through the overlay, else the node's stack.
#[inline(always)]
fn deliver(ctx: &mut TcContext, daddr: u32) -> i32 {
    forward::to_local_pod(ctx, daddr)
        .or_else(|| overlay::encap(ctx, daddr))
        .unwrap_or(TC_ACT_OK)
}
