//! Where a packet goes once its addresses are final: straight into a local pod, out of the
//! uplink (NodePort replies), or — decided by the callers — through the overlay or on to the
//! node's stack. Also the reverse NAT of backend replies, shared by every hook that sees them.
use aya_ebpf::{
    bindings::{BPF_F_INGRESS, TC_ACT_SHOT},
    helpers::{bpf_redirect, bpf_redirect_neigh, bpf_redirect_peer},
    programs::TcContext,
};
use switchyard_abi::{stat, NodeConfig, RevNat};

use crate::maps::{LOCAL_PODS, REV_NAT};
use crate::nat::{self, Side};
use crate::packet::Flow;
use crate::{conntrack, snat, stats};

/// Redirects to a local pod, fixing the MACs (written directly, no helper). `bpf_redirect_peer`
/// hands the packet straight to the ingress of the pod's `eth0` in its namespace, skipping the
/// host veth's transmit path and the backlog queue. `None` when `daddr` is not a pod on this node.
#[inline(always)]
pub fn to_local_pod(ctx: &mut TcContext, daddr: u32) -> Option<i32> {
    // SAFETY: copied out at once.
    let pod = unsafe { LOCAL_PODS.get(&daddr) }.copied()?;
    // Direct packet access: the Ethernet header is linear since `parse`.
    let data = ctx.data();
    if data + 12 > ctx.data_end() {
        stats::inc(stat::DROP_REWRITE);
        return Some(TC_ACT_SHOT);
    }
    // SAFETY: within the 12 bytes checked just above.
    unsafe {
        (data as *mut [u8; 6]).write_unaligned(pod.pod_mac);
        ((data + 6) as *mut [u8; 6]).write_unaligned(pod.host_mac);
    }
    stats::inc(stat::REDIRECT_LOCAL);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect_peer(pod.ifindex, 0) } as i32)
}

/// If `flow` is a backend's reply to a load-balanced flow, restores the frontend as its source
/// (written by `write`: [`nat::rewrite`], or [`nat::rewrite_stored`] in programs at the verifier's
/// limit) and returns it. The reply entry names the frontend; entries from a datapath that did
/// not record it there look its rev-NAT id up. `Err` carries the drop reason.
#[inline(always)]
pub fn reverse_nat<W>(
    ctx: &mut TcContext,
    flow: &Flow,
    len: u32,
    write: W,
) -> Result<Option<RevNat>, u32>
where
    W: FnOnce(&mut TcContext, &Flow, Side, u32, u16) -> Result<(), ()>,
{
    let Some(hit) = conntrack::touch(&conntrack::reply_key(flow), len, flow.tcp_flags()) else {
        return Ok(None);
    };
    let ct = hit.entry;
    let front = if ct.nat_addr != 0 {
        RevNat {
            addr: ct.nat_addr,
            port: ct.nat_port,
            pad: 0,
        }
    } else {
        // SAFETY: copied out at once.
        let Some(front) = (unsafe { REV_NAT.get(&ct.rev_nat_id) }).copied() else {
            return Ok(None);
        };
        front
    };
    write(ctx, flow, Side::Source, front.addr, front.port).map_err(|_| stat::DROP_REWRITE)?;
    stats::inc(stat::REV_NAT);
    stats::service(ct.rev_nat_id, len, false);
    Ok(Some(front))
}

/// If `flow` answers a flow whose source was translated to `translated` (the router address of
/// NodePort SNAT, the service loopback address of hairpin connections, the node address of
/// masquerade), restores the original source as its destination and updates `flow`. `Err`
/// carries the drop reason.
#[inline(always)]
pub fn unsnat(ctx: &mut TcContext, flow: &mut Flow, translated: u32) -> Result<bool, u32> {
    if flow.daddr != translated {
        return Ok(false);
    }
    let Some(orig) = snat::reverse(flow, flow.tcp_flags()) else {
        return Ok(false);
    };
    nat::rewrite_stored(ctx, flow, Side::Destination, orig.addr, orig.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    stats::inc(stat::SNAT_REVERSE);
    flow.daddr = orig.addr;
    flow.dport = orig.port;
    Ok(true)
}

/// The loopback device is ifindex 1 in every network namespace.
const LOOPBACK_IFINDEX: u32 = 1;

/// Sends a NodePort reply — its source is now the node's own address — towards its client: out
/// of the uplink, letting the kernel's FIB pick the next hop and fill in the MACs; or, when the
/// client is a process on this node (it connected to its own address), into the loopback's
/// ingress. Going through the node's stack from `cbr0` instead would drop it: a packet arriving
/// with a local source address is a martian. `None` when the uplink is not known yet.
#[inline(always)]
pub fn node_reply(ctx: &mut TcContext, cfg: &NodeConfig, daddr: u32) -> Option<i32> {
    if daddr == cfg.node_addr {
        // The loopback's address is all zeroes: any other destination MAC makes the frame
        // PACKET_OTHERHOST there, and IP drops it.
        if ctx.store(0, &[0u8; 12], 0).is_err() {
            stats::inc(stat::DROP_REWRITE);
            return Some(TC_ACT_SHOT);
        }
        // SAFETY: plain helper call.
        return Some(unsafe { bpf_redirect(LOOPBACK_IFINDEX, u64::from(BPF_F_INGRESS)) } as i32);
    }
    if cfg.uplink_ifindex == 0 {
        return None;
    }
    // SAFETY: plain helper call; no explicit neighbour parameters.
    Some(unsafe { bpf_redirect_neigh(cfg.uplink_ifindex, core::ptr::null_mut(), 0, 0) } as i32)
}
