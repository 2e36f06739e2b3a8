//! The VXLAN overlay: packets for pods on other nodes get a tunnel key naming the remote node
//! (from the `TUNNEL` LPM trie, podCIDR → node address) and are redirected to `vxlan0`, which
//! runs in external (collect_md) mode and encapsulates them. Pod source addresses are kept.
use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::{bpf_redirect, bpf_skb_set_tunnel_key},
    maps::lpm_trie::Key,
    programs::TcContext,
};
use switchyard_abi::{stat, NodeConfig, OVERLAY_VNI};

use crate::maps::{CONFIG, TUNNEL};
use crate::stats;

/// The node configuration the agent wrote, if any.
#[inline(always)]
pub fn config() -> Option<NodeConfig> {
    CONFIG.get(0).copied()
}

/// The node's address on the pod network (the first address of its podCIDR, held by `cbr0`):
/// the source NodePort traffic gets when its backend is on another node, so that the backend's
/// reply comes back through the overlay.
#[inline(always)]
pub fn router_addr(cfg: &NodeConfig) -> u32 {
    (u32::from_be(cfg.pod_cidr).wrapping_add(1)).to_be()
}

/// Whether `addr` (network order) is inside `net/prefix` (network order).
#[inline(always)]
pub fn in_cidr(addr: u32, net: u32, prefix: u8) -> bool {
    if prefix == 0 {
        return true;
    }
    if prefix >= 32 {
        return addr == net;
    }
    let mask = (u32::MAX << (32 - u32::from(prefix))).to_be();
    addr & mask == net & mask
}

/// Sends the packet to the node owning `daddr`'s podCIDR through `vxlan0`. `None` when `daddr`
/// is not a pod on another node (or there is no overlay): the caller decides.
#[inline(always)]
pub fn encap(ctx: &mut TcContext, daddr: u32) -> Option<i32> {
    let cfg = config()?;
    if cfg.vxlan_ifindex == 0 {
        return None;
    }
    if let Err(verdict) = set_tunnel_key(ctx, &cfg, daddr)? {
        return Some(verdict);
    }
    stats::inc(stat::TUNNEL_TX);
    // SAFETY: plain helper call.
    Some(unsafe { bpf_redirect(cfg.vxlan_ifindex, 0) } as i32)
}

/// Gives the packet the tunnel key of the node owning `daddr`'s podCIDR. `None` when `daddr` is
/// not a pod on another node; `Some(Err(verdict))` when the helper failed (counted).
#[inline(always)]
pub fn set_tunnel_key(
    ctx: &mut TcContext,
    cfg: &NodeConfig,
    daddr: u32,
) -> Option<Result<(), i32>> {
    if !in_cidr(daddr, cfg.cluster_cidr, cfg.cluster_prefix) {
        return None;
    }
    let node = *TUNNEL.get(&Key::new(32, daddr))?;
    if node == cfg.node_addr {
        return None;
    }
    // SAFETY: an all-zero bpf_tunnel_key is valid; the union is written as remote_ipv4.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    key.tunnel_id = OVERLAY_VNI;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be(node);
    key.tunnel_ttl = 64;
    // SAFETY: helper call with a key on our stack and its exact size.
    let rc = unsafe {
        bpf_skb_set_tunnel_key(
            ctx.skb.skb,
            &mut key,
            core::mem::size_of::<bpf_tunnel_key>() as u32,
            0,
        )
    };
    if rc != 0 {
        stats::inc(stat::DROP_REWRITE);
        return Some(Err(aya_ebpf::bindings::TC_ACT_SHOT));
    }
    Some(Ok(()))
}
