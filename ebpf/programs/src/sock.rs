//! Socket load balancing, as Cilium and Calico do it: the cgroup `connect4` and `sendmsg4` hooks
//! replace a ClusterIP destination by a backend before the socket uses it, so the connection
//! goes straight to the backend with no per-packet NAT at all; `recvmsg4` and `getpeername4`
//! show the frontend again to the application.
//!
//! Invariant: a hook acts only for a client it knows, and knows it by the socket's network
//! namespace cookie: the node's own namespace (`hostNetwork` pods, node daemons, the kubelet's
//! probes; the cookie in `CONFIG`) and, unless the agent runs with `--socket-lb host-only`, this
//! node's pods (`POD_NETNS`, from their CNI records). The hooks sit on a cgroup shared by every
//! network namespace of the machine (in the lab, all nodes), so any other socket is left alone.
//! A pod's TCP connections are balanced here; its UDP stays on the per-packet path, where a
//! removed backend re-balances the next datagram (a connected UDP socket pointed here would
//! keep sending to it), and a pod that would be balanced to itself is left to the per-packet
//! hairpin path, which shows it the service loopback address as kube-proxy's masquerade does.
//! NodePort frontends are left to the `lo` ingress path; a frontend without backends refuses
//! `connect()` with `ECONNREFUSED`, as kube-proxy's REJECT rule does; one whose
//! `loadBalancerSourceRanges` leave out the client refuses it with `EPERM`.
use aya_ebpf::{
    helpers::{bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_set_retval},
    macros::cgroup_sock_addr,
    programs::SockAddrContext,
    EbpfContext,
};
use switchyard_abi::{proto, stat, RevNat, SockRevKey, SVC_FLAG_NODEPORT};

use crate::maps::{POD_NETNS, SOCK_REV};
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
    balance(&ctx, true)
}

/// Entry point of `sendmsg()` with an address (unconnected UDP; pods' UDP is not
/// socket-balanced, so their datagrams skip the `POD_NETNS` lookup).
#[cgroup_sock_addr(sendmsg4)]
pub fn sock_sendmsg4(ctx: SockAddrContext) -> i32 {
    balance(&ctx, false)
}

/// Entry point of `recvmsg()` (unconnected UDP): the source shown is the frontend. Pods' UDP
/// is not socket-balanced, so their datagrams (a DNS server's, say) skip the `POD_NETNS` lookup.
#[cgroup_sock_addr(recvmsg4)]
pub fn sock_recvmsg4(ctx: SockAddrContext) -> i32 {
    show_frontend(&ctx, false);
    ALLOW
}

/// Entry point of `getpeername()`: a balanced socket's peer is the frontend.
#[cgroup_sock_addr(getpeername4)]
pub fn sock_getpeername4(ctx: SockAddrContext) -> i32 {
    show_frontend(&ctx, true);
    ALLOW
}

/// A client this node balances for, as balancing decisions (session affinity, source ranges)
/// see it.
#[derive(Clone, Copy)]
struct Client {
    /// The node's address, or the pod's.
    addr: u32,
    /// Whether the socket is in one of the node's pods.
    pod: bool,
}

/// The client behind the socket, if it is the node's own namespace or (if `pods`) one of its
/// pods.
#[inline(always)]
fn client(ctx: &SockAddrContext, pods: bool) -> Option<Client> {
    let cfg = overlay::config()?;
    // SAFETY: plain helper call on our context.
    let cookie = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if cfg.netns_cookie != 0 && cookie == cfg.netns_cookie {
        return Some(Client {
            addr: cfg.node_addr,
            pod: false,
        });
    }
    if !pods {
        return None;
    }
    // SAFETY: copied out at once.
    let addr = unsafe { POD_NETNS.get(&cookie) }.copied()?;
    Some(Client { addr, pod: true })
}

#[inline(always)]
fn balance(ctx: &SockAddrContext, pods: bool) -> i32 {
    let Some(me) = client(ctx, pods) else {
        return ALLOW;
    };
    // SAFETY: the context pointer is valid for this run; the fields read and written are the
    // ones these hooks may access.
    let sa = unsafe { &mut *ctx.sock_addr };
    let l4 = match sa.protocol {
        p if p == u32::from(proto::TCP) => proto::TCP,
        p if p == u32::from(proto::UDP) => proto::UDP,
        _ => return ALLOW,
    };
    if me.pod && l4 != proto::TCP {
        return ALLOW;
    }
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
    let client = Flow {
        saddr: me.addr,
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
    // The socket has no source yet: affinity goes by the client's address (what kube-proxy
    // would see as its source), and Maglev frontends choose at random.
    let Some((_, backend)) = lb::choose(me.addr, &flow, &front, None) else {
        // A slot being rewritten by the agent: leave the address alone this once.
        stats::inc(stat::DROP_STALE_SLOT);
        return ALLOW;
    };
    if me.pod && backend.addr == me.addr {
        // Hairpin: the per-packet path balances again and masquerades (see the module doc).
        return ALLOW;
    }
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
fn show_frontend(ctx: &SockAddrContext, pods: bool) {
    if client(ctx, pods).is_none() {
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
