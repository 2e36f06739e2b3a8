//! Socket load balancing for clients in the node's own namespace (`hostNetwork` pods, node
//! daemons, the kubelet's probes), as Cilium and Calico do it: the cgroup `connect4` and
//! `sendmsg4` hooks replace a ClusterIP destination by a backend before the socket uses it, so
//! the connection goes straight to the backend with no per-packet NAT at all; `recvmsg4` and
//! `getpeername4` show the frontend again to the application.
//!
//! The hooks sit on a cgroup shared by every network namespace of the machine (in the lab, all
//! nodes), so each node's programs act only on sockets of their own namespace (the netns cookie
//! in `CONFIG`). NodePort frontends are left to the `lo` ingress path; a frontend without
//! backends refuses `connect()` with `ECONNREFUSED`, as kube-proxy's REJECT rule does; one whose
//! `loadBalancerSourceRanges` leave out the node's address refuses it with `EPERM`.
use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use switchyard_abi::{proto, stat, RevNat, SockRevKey, SVC_FLAG_NODEPORT};

use crate::maps::SOCK_REV;
use crate::packet::Flow;
use crate::{lb, overlay, stats};

/// Allow the operation (with whatever address the program left).
const ALLOW: i32 = 1;
/// Refuse it (with the error set by `bpf_set_retval`).
const REFUSE: i32 = 0;
const ECONNREFUSED: i32 = 111;
const EPERM: i32 = 1;

/// Entry point of `connect()`: see the module documentation.
#[cgroup_sock_addr(connect4)]
pub fn sock_connect4(ctx: SockAddrContext) -> i32 {
    balance(&ctx)
}

/// Entry point of `sendmsg()` with an address (unconnected UDP).
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    balance(&ctx)
}

/// Entry point of `recvmsg()` (unconnected UDP): the source shown is the frontend.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    show_frontend(&ctx);
    ALLOW
}

/// Entry point of `getpeername()`: a balanced socket's peer is the frontend.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    show_frontend(&ctx);
    ALLOW
}

/// Whether the socket belongs to this node's network namespace.
#[inline(always)]
fn ours(ctx: &SockAddrContext) -> bool {
    let Some(cfg) = overlay::config() else {
        return false;
    };
    // SAFETY: plain helper call on our context.
    cfg.netns_cookie != 0 && unsafe { bpf_get_netns_cookie(ctx.as_ptr()) } == cfg.netns_cookie
}

#[inline(always)]
fn balance(ctx: &SockAddrContext) -> i32 {
    if !ours(ctx) {
        return ALLOW;
    }
    // SAFETY: the context pointer is valid for this run; the fields read and written are the
    // ones these hooks may access.
    let sa = unsafe { &mut *ctx.sock_addr };
    let l4 = match sa.protocol {
        p if p == u32::from(proto::TCP) => proto::TCP,
        p if p == u32::from(proto::UDP) => proto::UDP,
        _ => return ALLOW,
    };
    let flow = Flow {
        proto: l4,
        saddr: 0,
        daddr: sa.user_ip4,
        sport: 0,
        dport: sa.user_port as u16,
        l4_off: 0,
        ihl_len: 0,
        id: 0,
        frag: 0,
        tcp: 0,
    };
    let Some(svc) = lb::lookup_service(&flow) else {
        return ALLOW;
    };
    if svc.flags & SVC_FLAG_NODEPORT != 0 {
        return ALLOW;
    }
    let Some(cfg) = overlay::config() else {
        return ALLOW;
    };
    let client = Flow {
        saddr: cfg.node_addr,
        ..flow
    };
    if !lb::admitted(&client, &svc) {
        stats::inc(stat::DROP_SOURCE_RANGE);
        // SAFETY: plain helper call.
        unsafe { bpf_set_retval(-EPERM) };
        return REFUSE;
    }
    let Some(front) = lb::scoped(&flow, svc, true) else {
        return ALLOW;
    };
    let svc = front.svc;
    if svc.count == 0 {
        stats::inc(stat::SOCK_REJECT);
        // SAFETY: plain helper call.
        unsafe { bpf_set_retval(-ECONNREFUSED) };
        return REFUSE;
    }
    // The node's sockets have no source yet: affinity goes by the node's address (what
    // kube-proxy would see as their source), and Maglev frontends choose at random.
    let Some((_, backend)) = lb::choose(cfg.node_addr, &flow, &front, None) else {
        // A slot being rewritten by the agent: leave the address alone this once.
        stats::inc(stat::DROP_STALE_SLOT);
        return ALLOW;
    };
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        addr: backend.addr,
        port: backend.port,
        pad: 0,
    };
    let front = RevNat {
        addr: flow.daddr,
        port: flow.dport,
        pad: 0,
    };
    let _ = SOCK_REV.insert(&key, &front, 0);
    sa.user_ip4 = backend.addr;
    sa.user_port = u32::from(backend.port);
    stats::inc(stat::SOCK_LB);
    stats::socket_connection(svc.rev_nat_id);
    ALLOW
}

#[inline(always)]
fn show_frontend(ctx: &SockAddrContext) {
    if !ours(ctx) {
        return;
    }
    // SAFETY: as in `balance`.
    let sa = unsafe { &mut *ctx.sock_addr };
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let key = SockRevKey {
        cookie,
        addr: sa.user_ip4,
        port: sa.user_port as u16,
        pad: 0,
    };
    // SAFETY: copied out at once.
    if let Some(front) = unsafe { SOCK_REV.get(&key) }.copied() {
        sa.user_ip4 = front.addr;
        sa.user_port = u32::from(front.port);
    }
}
