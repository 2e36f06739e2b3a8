//! `from_pod`: TC ingress on every pod's host-side veth — every packet a local pod sends.
//!
//! 1. A reply from a backend (reply-direction conntrack hit) gets its source restored to the
//!    frontend the client addressed (reverse NAT).
//! 2. A packet to a frontend in `SERVICES` is DNATed to a backend: the one conntrack remembers for
//!    this flow, or a random one for a new flow. A frontend without backends answers with ICMP
//!    port unreachable.
//! 3. A packet (possibly just rewritten) for a pod on this node is redirected straight to that
//!    pod's veth. Everything else continues to `cbr0` and the node's stack.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    helpers::bpf_redirect_peer,
    macros::classifier,
    programs::TcContext,
};
use switchyard_abi::{stat, ServiceValue};

use crate::conntrack;
use crate::lb;
use crate::maps::{LOCAL_PODS, REV_NAT};
use crate::nat::{self, Side};
use crate::packet::{self, Flow, Parsed};
use crate::reject;
use crate::stats;

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
            return Ok(forward_local(ctx, daddr));
        }
        Parsed::L4(flow) => flow,
    };
    stats::inc(stat::PACKETS);
    let len = ctx.len();

    if let Some(ct) = conntrack::touch(&conntrack::reply_key(&flow), len) {
        // SAFETY: copied out at once.
        if let Some(front) = unsafe { REV_NAT.get(&ct.rev_nat_id) }.copied() {
            nat::rewrite(ctx, &flow, Side::Source, front.addr, front.port)
                .map_err(|_| stat::DROP_REWRITE)?;
            stats::inc(stat::REV_NAT);
        }
        return Ok(forward_local(ctx, flow.daddr));
    }

    if let Some(svc) = lb::lookup_service(&flow) {
        return load_balance(ctx, &flow, &svc, len);
    }
    Ok(forward_local(ctx, flow.daddr))
}

/// DNATs a packet addressed to a frontend, then forwards it.
#[inline(always)]
fn load_balance(
    ctx: &mut TcContext,
    flow: &Flow,
    svc: &ServiceValue,
    len: u32,
) -> Result<i32, u32> {
    let known = conntrack::touch(&conntrack::forward_key(flow), len)
        .and_then(|ct| lb::backend(ct.backend_id).map(|b| (ct.backend_id, b)));
    let backend = match known {
        Some((_, b)) => {
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
    Ok(forward_local(ctx, backend.addr))
}

/// Redirects to a local pod (fixing the MACs), or lets the packet continue. `bpf_redirect_peer`
/// hands the packet straight to the ingress of the pod's `eth0` in its namespace, skipping the
/// host veth's transmit path and the backlog queue.
#[inline(always)]
fn forward_local(ctx: &mut TcContext, daddr: u32) -> i32 {
    // SAFETY: copied out at once.
    let Some(pod) = (unsafe { LOCAL_PODS.get(&daddr) }).copied() else {
        return TC_ACT_OK;
    };
    let mut macs = [0u8; 12];
    macs[0..6].copy_from_slice(&pod.pod_mac);
    macs[6..12].copy_from_slice(&pod.host_mac);
    if ctx.store(0, &macs, 0).is_err() {
        stats::inc(stat::DROP_REWRITE);
        return TC_ACT_SHOT;
    }
    stats::inc(stat::REDIRECT_LOCAL);
    // SAFETY: plain helper call.
    unsafe { bpf_redirect_peer(pod.ifindex, 0) as i32 }
}
