//! The node's uplink (`eth0`): NodePort on the way in, masquerade on the way out.
//!
//! `from_netdev` (TC ingress of the uplink, and of `lo` so that NodePorts also answer processes
//! on the node that connect to the node's own address):
//! 1. A reply to a masqueraded flow (addressed to the node with a port in the SNAT table) gets
//!    its pod destination back — and, when it answers a Service whose endpoint is outside the
//!    pod network (a node address, the API server), its frontend as source — and goes straight
//!    to the pod.
//! 2. A packet to the node address on a NodePort, or to an external IP or load balancer address
//!    routed to the node (only from `loadBalancerSourceRanges`, if any), is load-balanced like a
//!    ClusterIP. A local
//!    backend gets it with the client's address intact. A remote backend
//!    (`externalTrafficPolicy: Cluster`) gets it through the overlay with the source translated to
//!    this node's router address, so the reply comes back here; with `Local` only local backends
//!    are used and a node without one drops the packet, as kube-proxy does.
//! 3. A packet from outside the cluster to a pod's address (its podCIDR routed to this node) is
//!    remembered as an inbound flow and left to the kernel to forward.
//!
//! Later fragments of translated datagrams and ICMP errors about translated flows follow their
//! datagram or flow ([`frag`](crate::frag), [`icmp`](crate::icmp)).
//!
//! `to_netdev` (TC egress): the seed rule
//! `POSTROUTING ! -d CLUSTER_SUBNET -m addrtype ! --dst-type LOCAL -j MASQUERADE` — pod traffic
//! leaving the cluster CIDR gets the node address and a port of its own as source. As with
//! netfilter, whose MASQUERADE only translates the connections pods start, the answers of an
//! inbound flow (3.) keep the pod's address. (Traffic to the node's own addresses never reaches
//! the uplink's egress.)
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use switchyard_abi::{
    proto, stat, NodeConfig, ServiceValue, SVC_FLAG_EXTERNAL, SVC_FLAG_LOCAL_ONLY,
    SVC_FLAG_NODEPORT,
};

use crate::maps::UPLINKS;
use crate::nat::{self, Side};
use crate::overlay::{self, in_cidr};
use crate::packet::{Flow, Ip, Parsed};
use crate::{conntrack, forward, frag, hook, icmp, lb, reject, snat, stats};

/// Entry point of the uplink's ingress: see the module documentation.
#[classifier]
#[inline(always)]
pub fn from_netdev(mut ctx: TcContext) -> i32 {
    hook::run(
        &mut ctx,
        #[inline(always)]
        |ctx, parsed| try_from_netdev(ctx, parsed),
    )
}

/// Entry point of the uplink's egress: see the module documentation.
#[classifier]
#[inline(always)]
pub fn to_netdev(mut ctx: TcContext) -> i32 {
    hook::run(
        &mut ctx,
        #[inline(always)]
        |ctx, parsed| try_to_netdev(ctx, parsed),
    )
}

#[inline(always)]
fn try_from_netdev(ctx: &mut TcContext, parsed: &Parsed) -> Result<i32, u32> {
    let Some(cfg) = overlay::config() else {
        return Ok(TC_ACT_OK);
    };
    let local = uplink_addr(ctx, &cfg);
    let flow = match *parsed {
        Parsed::L4(flow) => flow,
        Parsed::L3(ip) if ip.daddr == local => return no_ports(ctx, ip, local),
        _ => return Ok(TC_ACT_OK),
    };
    let mut flow = flow;
    if flow.daddr == local && forward::unsnat(ctx, &mut flow, local)? {
        // A reply from a Service endpoint outside the pod network (another node's address, the
        // API server) came back through masquerade: restore the frontend too.
        let len = ctx.len();
        forward::reverse_nat(ctx, &flow, len, nat::rewrite_stored)?;
        return Ok(forward::to_local_pod(ctx, flow.daddr).unwrap_or(TC_ACT_OK));
    }
    if flow.daddr != cfg.node_addr {
        // An external IP or a load balancer's address routed to this node, or a NodePort on
        // another of the node's addresses.
        return match lb::lookup_service(&flow) {
            Some(svc) if svc.flags & (SVC_FLAG_EXTERNAL | SVC_FLAG_NODEPORT) != 0 => {
                stats::inc(stat::EXTERNAL);
                frontend(ctx, &flow, svc, &cfg)
            }
            _ => {
                inbound(&flow, &cfg);
                Ok(TC_ACT_OK)
            }
        };
    }
    let port = u16::from_be(flow.dport);
    if port < cfg.nodeport_min || port > cfg.nodeport_max {
        return Ok(TC_ACT_OK);
    }
    match lb::lookup_service(&flow) {
        Some(svc) => {
            stats::inc(stat::NODEPORT);
            frontend(ctx, &flow, svc, &cfg)
        }
        None => Ok(TC_ACT_OK),
    }
}

/// A packet from outside the cluster to an address in the cluster CIDR (a pod's podCIDR routed
/// to this node): its flow is remembered ([`snat::inbound`]) so that masquerade leaves the
/// answers with the pod's own address, which is what the client connected to. A new flow (a
/// TCP SYN, any UDP datagram) first supersedes a load-balanced flow whose reply tuple it
/// reuses, as a pod's direct flow does in `from_pod`: a client that reached the pod through a
/// NodePort (its address kept) may connect to the pod's own address from the same port, and
/// the old reply entry would give the answers the NodePort's address. The kernel forwards the
/// packet itself.
#[inline(always)]
fn inbound(flow: &Flow, cfg: &NodeConfig) {
    if in_cidr(flow.daddr, cfg.cluster_cidr, cfg.cluster_prefix)
        && !in_cidr(flow.saddr, cfg.cluster_cidr, cfg.cluster_prefix)
    {
        if flow.proto == proto::UDP || flow.is_tcp_syn() {
            conntrack::forget_stale_reply(flow);
        }
        snat::inbound(flow, flow.tcp_flags());
    }
}

/// The address masquerade gives traffic leaving through the device this packet is on (the
/// uplink's own address), else the node's.
#[inline(always)]
fn uplink_addr(ctx: &TcContext, cfg: &NodeConfig) -> u32 {
    // SAFETY: reading the ifindex of the skb we run on.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: copied out at once.
    unsafe { UPLINKS.get(&ifindex) }
        .copied()
        .unwrap_or(cfg.node_addr)
}

/// A later fragment or an ICMP error addressed to the node: translated like the datagram or flow
/// it belongs to, then sent where that went.
#[inline(always)]
fn no_ports(ctx: &mut TcContext, mut ip: Ip, local: u32) -> Result<i32, u32> {
    let daddr = if ip.later_fragment() {
        frag::translate(ctx, &mut ip)?
    } else if let Some(e) = icmp::translate_error(ctx, &ip, local)? {
        e.daddr
    } else {
        return Ok(TC_ACT_OK);
    };
    Ok(forward::to_local_pod(ctx, daddr)
        .or_else(|| overlay::encap(ctx, daddr))
        .unwrap_or(TC_ACT_OK))
}

/// A NodePort, external IP or load balancer frontend reached from outside (or, through `lo`,
/// by the node itself, which counts as inside the cluster).
#[inline(always)]
fn frontend(
    ctx: &mut TcContext,
    flow: &Flow,
    svc: ServiceValue,
    cfg: &NodeConfig,
) -> Result<i32, u32> {
    if !lb::admitted(flow, &svc) {
        return Err(stat::DROP_SOURCE_RANGE);
    }
    let inside = flow.saddr == cfg.node_addr;
    let front = lb::scoped(flow, svc, inside).ok_or(stat::DROP_STALE_SLOT)?;
    let local_only = front.svc.flags & SVC_FLAG_LOCAL_ONLY != 0;
    let len = ctx.len();
    let Some(backend) = lb::pick(flow, &front, len, flow.tcp_flags())? else {
        if local_only {
            return Err(stat::DROP_NO_LOCAL_BACKEND);
        }
        stats::inc(stat::DROP_NO_BACKEND);
        return reject::port_unreachable(ctx, flow).map_err(|_| stat::DROP_REWRITE);
    };
    nat::rewrite_stored(ctx, flow, Side::Destination, backend.addr, backend.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    if let Some(v) = forward::to_local_pod(ctx, backend.addr) {
        return Ok(v);
    }
    if local_only {
        return Err(stat::DROP_NO_LOCAL_BACKEND);
    }
    let dnat = Flow {
        daddr: backend.addr,
        dport: backend.port,
        ..*flow
    };
    let router = overlay::router_addr(cfg);
    let to = snat::translate(
        &dnat,
        router,
        snat::may_keep(flow, cfg),
        flow.tcp_flags(),
        cfg,
    )
    .ok_or(stat::DROP_SNAT_EXHAUSTED)?;
    nat::rewrite_stored(ctx, &dnat, Side::Source, to.addr, to.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    overlay::encap(ctx, backend.addr).ok_or(stat::DROP_NO_ROUTE)
}

#[inline(always)]
fn try_to_netdev(ctx: &mut TcContext, parsed: &Parsed) -> Result<i32, u32> {
    let flow = match *parsed {
        Parsed::L4(flow) => flow,
        Parsed::L3(mut ip) if ip.later_fragment() => {
            frag::translate(ctx, &mut ip)?;
            return Ok(TC_ACT_OK);
        }
        _ => return Ok(TC_ACT_OK),
    };
    let Some(cfg) = overlay::config() else {
        return Ok(TC_ACT_OK);
    };
    if !in_cidr(flow.saddr, cfg.cluster_cidr, cfg.cluster_prefix)
        || in_cidr(flow.daddr, cfg.cluster_cidr, cfg.cluster_prefix)
    {
        return Ok(TC_ACT_OK);
    }
    let to = snat::translate(&flow, uplink_addr(ctx, &cfg), false, flow.tcp_flags(), &cfg)
        .ok_or(stat::DROP_SNAT_EXHAUSTED)?;
    if snat::is_identity(&flow, &to) {
        return Ok(TC_ACT_OK);
    }
    nat::rewrite_stored(ctx, &flow, Side::Source, to.addr, to.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    Ok(TC_ACT_OK)
}
