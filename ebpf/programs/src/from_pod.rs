//! `from_pod`: TC ingress on every pod's host-side veth — every packet a local pod sends.
//!
//! 0. A packet whose IPv4 source is not the address of the pod owning this veth is dropped
//!    (`drop_source_spoofed`, see [`source`](crate::source)) before anything else looks at it.
//! 1. A reply from a backend (reply-direction conntrack hit) gets its source restored to the
//!    frontend the client addressed (reverse NAT). A packet to the service CIDR is not looked up
//!    as a reply: no client has such an address. It is looked up as a forward flow instead: a
//!    packet of an established TCP flow whose entry is fresh goes straight to the backend the
//!    entry remembers (one conntrack lookup, no `SERVICES` lookup, see [`lb::established`]).
//! 2. A packet to a frontend in `SERVICES` (a ClusterIP, or this node's NodePort) is DNATed to a
//!    backend: the one conntrack remembers for this flow, or a random one for a new flow. A
//!    frontend without backends answers with ICMP port unreachable.
//!    A pod balanced to itself (hairpin) gets the service loopback address as source, so that
//!    its reply comes back here and is translated in both directions.
//! 3. A packet (possibly just rewritten) for a pod on this node is redirected straight to that
//!    pod; one for a pod on another node goes through the overlay; a NodePort reply to an
//!    outside client leaves through the uplink. Everything else continues to `cbr0` and the
//!    node's stack (and is masqueraded on the way out, see `netdev`).
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use switchyard_abi::{ip_be, stat, SERVICE_LOOPBACK};

use crate::forward;
use crate::lb;
use crate::nat::{self, Side};
use crate::overlay::{self, in_cidr};
use crate::packet::{Flow, Parsed};
use crate::reject;
use crate::{conntrack, frag, hook, icmp, snat, source, stats};

/// Entry point: see the module documentation.
#[classifier]
#[inline(always)]
pub fn from_pod(mut ctx: TcContext) -> i32 {
    hook::run(
        &mut ctx,
        #[inline(always)]
        |ctx, parsed| try_from_pod(ctx, parsed),
    )
}

/// `Err` carries the `stat` drop reason.
#[inline(always)]
fn try_from_pod(ctx: &mut TcContext, parsed: &Parsed) -> Result<i32, u32> {
    let saddr = match parsed {
        Parsed::L4(flow) => flow.saddr,
        Parsed::L3(ip) => ip.saddr,
        Parsed::Other => return Ok(TC_ACT_OK),
    };
    if !source::owned_by_ingress(ctx, saddr) {
        return Err(stat::DROP_SOURCE_SPOOFED);
    }
    let loopback = ip_be(SERVICE_LOOPBACK);
    let mut flow = match *parsed {
        Parsed::Other => return Ok(TC_ACT_OK),
        Parsed::L3(mut ip) => {
            if ip.later_fragment() {
                stats::inc(stat::FRAGMENT);
                let daddr = frag::translate(ctx, &mut ip)?;
                return Ok(deliver(ctx, daddr, Some(ip.saddr)));
            }
            if let Some(e) = icmp::translate_error(ctx, &ip, loopback)? {
                return Ok(deliver(ctx, e.daddr, Some(e.saddr)));
            }
            return Ok(deliver(ctx, ip.daddr, None));
        }
        Parsed::L4(flow) => flow,
    };
    stats::inc(stat::PACKETS);
    let len = ctx.len();
    // A pod's answer to its own hairpin connection.
    forward::unsnat(ctx, &mut flow, loopback)?;
    // No client has an address in the service CIDR: a packet to it is never a backend's reply,
    // and its flow needs no reply-direction conntrack lookup. It is looked up as a forward flow
    // instead, before its frontend: a fresh entry of an established TCP flow is all its packets
    // need.
    if to_service_cidr(flow.daddr) {
        if let Some(to) = lb::established(&flow, len, flow.tcp_flags()) {
            return translate(ctx, &flow, to);
        }
    } else if let Some(front) = forward::reverse_nat(ctx, &flow, len, nat::rewrite)? {
        return Ok(deliver(ctx, flow.daddr, Some(front.addr)));
    }
    if let Some(svc) = lb::lookup_service(&flow) {
        if !lb::admitted(&flow, &svc) {
            return Err(stat::DROP_SOURCE_RANGE);
        }
        let front = lb::scoped(&flow, svc, true).ok_or(stat::DROP_STALE_SLOT)?;
        return load_balance(ctx, &flow, &front, len);
    }
    if flow.proto == switchyard_abi::proto::UDP || flow.is_tcp_syn() {
        conntrack::forget_stale_reply(&flow);
    }
    Ok(deliver(ctx, flow.daddr, None))
}

/// Whether `daddr` is in the node's service CIDR (`false` while it is not configured).
#[inline(always)]
fn to_service_cidr(daddr: u32) -> bool {
    overlay::config()
        .is_some_and(|c| c.service_prefix != 0 && in_cidr(daddr, c.service_cidr, c.service_prefix))
}

/// DNATs a packet addressed to a frontend, then delivers it.
#[inline(always)]
fn load_balance(
    ctx: &mut TcContext,
    flow: &Flow,
    front: &lb::Frontend,
    len: u32,
) -> Result<i32, u32> {
    let Some(to) = lb::pick(flow, front, len, flow.tcp_flags())? else {
        stats::inc(stat::DROP_NO_BACKEND);
        return reject::port_unreachable(ctx, flow).map_err(|_| stat::DROP_REWRITE);
    };
    translate(ctx, flow, to)
}

/// Rewrites the destination to the flow's backend `to`, then delivers the packet.
#[inline(always)]
fn translate(ctx: &mut TcContext, flow: &Flow, to: lb::Dest) -> Result<i32, u32> {
    nat::rewrite(ctx, flow, Side::Destination, to.addr, to.port).map_err(|_| stat::DROP_REWRITE)?;
    if to.addr == flow.saddr {
        hairpin(ctx, flow, to.addr, to.port)?;
    }
    Ok(deliver(ctx, to.addr, None))
}

/// A pod balanced to itself would receive a packet from its own address, which its stack drops
/// as a martian: the source becomes the service loopback address (a port of it per flow), and
/// the reply comes back through [`forward::unsnat`].
#[inline(always)]
fn hairpin(ctx: &mut TcContext, flow: &Flow, addr: u32, port: u16) -> Result<(), u32> {
    let dnat = Flow {
        daddr: addr,
        dport: port,
        ..*flow
    };
    let cfg = overlay::config().unwrap_or_default();
    let to = snat::translate(&dnat, ip_be(SERVICE_LOOPBACK), true, flow.tcp_flags(), &cfg)
        .ok_or(stat::DROP_SNAT_EXHAUSTED)?;
    nat::rewrite_stored(ctx, &dnat, Side::Source, to.addr, to.port)
        .map_err(|_| stat::DROP_REWRITE)?;
    stats::inc(stat::HAIRPIN);
    Ok(())
}

/// A local pod, else another node's pod through the overlay, else (for a NodePort reply, whose
/// source `translated_src` is now the node address) the uplink, else the node's stack.
#[inline(always)]
fn deliver(ctx: &mut TcContext, daddr: u32, translated_src: Option<u32>) -> i32 {
    if let Some(v) = forward::to_local_pod(ctx, daddr).or_else(|| overlay::encap(ctx, daddr)) {
        return v;
    }
    if let (Some(saddr), Some(cfg)) = (translated_src, overlay::config()) {
        if saddr == cfg.node_addr || !in_cidr(daddr, cfg.cluster_cidr, cfg.cluster_prefix) {
            if let Some(v) = forward::node_reply(ctx, &cfg, daddr) {
                return v;
            }
        }
    }
    TC_ACT_OK
}
