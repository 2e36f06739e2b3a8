//! Where a packet goes once its addresses are final: straight into a local pod, or (from pods
//! only) through the overlay to another node; otherwise it continues to the node's stack.
use aya_ebpf::{bindings::TC_ACT_SHOT, helpers::bpf_redirect_peer, programs::TcContext};
use switchyard_abi::stat;

use crate::maps::{LOCAL_PODS, REV_NAT};
use crate::nat::{self, Side};
use crate::packet::Flow;
use crate::{conntrack, stats};

/// Redirects to a local pod, fixing the MACs. `bpf_redirect_peer` hands the packet straight to
/// the ingress of the pod's `eth0` in its namespace, skipping the host veth's transmit path and
/// the backlog queue. `None` when `daddr` is not a pod on this node.
#[inline(always)]
pub fn to_local_pod(ctx: &mut TcContext, daddr: u32) -> Option<i32> {
    // SAFETY: copied out at once.
    let pod = unsafe { LOCAL_PODS.get(&daddr) }.copied()?;
    let mut macs = [0u8; 12];
    macs[0..6].copy_from_slice(&pod.pod_mac);
    macs[6..12].copy_from_slice(&pod.host_mac);
    if ctx.store(0, &macs, 0).is_err() {
        stats::inc(stat::DROP_REWRITE);
        return Some(TC_ACT_SHOT);
    }
    stats::inc(stat::REDIRECT_LOCAL);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect_peer(pod.ifindex, 0) } as i32)
}

/// If `flow` is a backend's reply to a load-balanced flow, restores the frontend as its source.
/// Returns whether it was one. `Err` carries the drop reason.
#[inline(always)]
pub fn reverse_nat(ctx: &mut TcContext, flow: &Flow, len: u32) -> Result<bool, u32> {
    let Some(ct) = conntrack::touch(&conntrack::reply_key(flow), len) else {
        return Ok(false);
    };
    // SAFETY: copied out at once.
    if let Some(front) = unsafe { REV_NAT.get(&ct.rev_nat_id) }.copied() {
        nat::rewrite(ctx, flow, Side::Source, front.addr, front.port)
            .map_err(|_| stat::DROP_REWRITE)?;
        stats::inc(stat::REV_NAT);
    }
    Ok(true)
}
