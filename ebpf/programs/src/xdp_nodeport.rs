//! `xdp_nodeport`: NodePort acceleration on the uplink (native XDP, as Cilium's
//! `loadBalancer.acceleration=native`), attached with `--nodeport-acceleration native`.
//!
//! A packet to a NodePort of the node address, or to an external IP / load balancer frontend
//! routed to the node, whose backend is on another node (`externalTrafficPolicy: Cluster`) is
//! handled here, before the kernel allocates an skb for it: load-balanced with the same maps and
//! the same [`lb::pick`] as `from_netdev` (both agree on a flow's backend through `CT`), its
//! source translated to the router address with the same [`snat::translate`] (same `NAT` table,
//! so `from_overlay` restores the replies as before), its addresses and ports rewritten, then
//! wrapped in the outer Ethernet/IPv4/UDP/VXLAN headers `vxlan0` would have put around it and
//! sent back out of the uplink (`XDP_TX`, or `XDP_REDIRECT` to the device the FIB names).
//!
//! Invariant: every other packet leaves this program unchanged with `XDP_PASS`, and
//! `from_netdev` handles it exactly as without acceleration: replies to masqueraded flows, local
//! backends, `externalTrafficPolicy: Local`, frontends without backends or whose source ranges
//! refuse the client, fragments, IPv4 options, ICMP, non-IPv4, a FIB lookup that does not
//! succeed (no neighbour entry yet: the TC path through `vxlan0` resolves it), a full SNAT port
//! range, and anything that does not parse. What this program recorded before it passes a
//! packet (a conntrack or NAT entry) is what `from_netdev` finds and decides again, so the
//! packets of one flow may take either path and keep their backend and translated port.
//!
//! Checksums: XDP has no skb and no checksum helpers. The IPv4 and TCP/UDP checksums are
//! updated incrementally by hand (RFC 1624, [`csum_replace4`]): the addresses (part of the
//! L4 pseudo-header) and the port word change, nothing else. That is exact for a packet that
//! carries its full checksum, as every frame from a wire does. (A veth peer with checksum
//! offload hands over `CHECKSUM_PARTIAL` packets whose L4 field holds only the pseudo-header
//! sum; an XDP frame has no room to say so, so such packets cannot be sent by any XDP program:
//! the lab's external client computes its checksums, see `tests/lab`.) The outer UDP checksum
//! is 0, which IPv4 allows and `vxlan0` sends by default.
use aya_ebpf::{
    bindings::{
        bpf_fib_lookup as FibParams,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_TX},
    },
    helpers::{bpf_fib_lookup, bpf_get_prandom_u32, bpf_redirect, bpf_xdp_adjust_head},
    macros::xdp,
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use switchyard_abi::{
    proto, stat, NodeConfig, ServiceValue, OVERLAY_VNI, SCOPE_EXTERNAL, SVC_FLAG_EXTERNAL,
    SVC_FLAG_LOCAL_ONLY, SVC_FLAG_NODEPORT,
};

use crate::lb::{self, Frontend};
use crate::maps::{LOCAL_PODS, TUNNEL, UPLINKS};
use crate::nat::csum_replace4;
use crate::overlay::{self, in_cidr};
use crate::packet::{Flow, ETH_HLEN, ETH_PROTO_OFF, ETH_P_IP_BE, IP_HLEN, IP_MF, IP_OFFSET};
use crate::{snat, stats};

/// UDP header length.
const UDP_HLEN: usize = 8;
/// VXLAN header length.
const VXLAN_HLEN: usize = 8;
/// Bytes put in front of the frame: outer Ethernet, IPv4, UDP and VXLAN headers.
const ENCAP_LEN: usize = ETH_HLEN + IP_HLEN + UDP_HLEN + VXLAN_HLEN;
/// Offset of the L4 header of a frame without IPv4 options (the only ones sent here).
const L4_OFF: usize = ETH_HLEN + IP_HLEN;
/// `AF_INET`.
const AF_INET: u8 = 2;
/// `BPF_FIB_LKUP_RET_SUCCESS`.
const FIB_SUCCESS: i64 = 0;
/// The outer TTL `vxlan0` sends with (the tunnel key the TC path sets, `overlay`).
const OUTER_TTL: u8 = 64;
/// The range `vxlan0` takes its outer UDP source ports from (the kernel's default
/// `ip_local_port_range`), one per inner flow so that receivers spread flows over queues.
const SPORT_MIN: u32 = 32768;
/// Number of ports in that range.
const SPORT_SPAN: u32 = 61000 - 32768;

/// Entry point: see the module documentation.
#[xdp]
pub fn xdp_nodeport(ctx: XdpContext) -> u32 {
    match try_xdp_nodeport(&ctx) {
        Ok(action) => action,
        Err(reason) => {
            stats::inc(reason);
            XDP_DROP
        }
    }
}

/// Reads a `T` at address `at` of the packet, which the caller checked against `data_end`.
#[inline(always)]
unsafe fn read<T: Copy>(at: usize) -> T {
    core::ptr::read_unaligned(at as *const T)
}

/// Writes `v` at address `at` of the packet, which the caller checked against `data_end`.
#[inline(always)]
unsafe fn write<T: Copy>(at: usize, v: T) {
    core::ptr::write_unaligned(at as *mut T, v)
}

/// The flow of an unfragmented IPv4 TCP/UDP packet without IP options, whole L4 header
/// present: the only packets this program may send. `None` for everything else.
#[inline(always)]
fn parse(ctx: &XdpContext) -> Option<Flow> {
    let (data, end) = (ctx.data(), ctx.data_end());
    if data + L4_OFF + UDP_HLEN > end {
        return None;
    }
    // SAFETY: within the bytes checked just above.
    let (eth_proto, ver_ihl, id, frag, ip_proto, saddr, daddr, sport, dport) = unsafe {
        (
            read::<u16>(data + ETH_PROTO_OFF),
            read::<u8>(data + ETH_HLEN),
            read::<u16>(data + ETH_HLEN + 4),
            u16::from_be(read::<u16>(data + ETH_HLEN + 6)),
            read::<u8>(data + ETH_HLEN + 9),
            read::<u32>(data + ETH_HLEN + 12),
            read::<u32>(data + ETH_HLEN + 16),
            read::<u16>(data + L4_OFF),
            read::<u16>(data + L4_OFF + 2),
        )
    };
    if eth_proto != ETH_P_IP_BE || ver_ihl != 0x45 || frag & (IP_MF | IP_OFFSET) != 0 {
        return None;
    }
    let tcp = match ip_proto {
        proto::TCP => {
            if data + L4_OFF + 20 > end {
                return None;
            }
            // SAFETY: within the TCP header checked just above.
            unsafe { read::<u8>(data + L4_OFF + 13) }
        }
        proto::UDP => 0,
        _ => return None,
    };
    Some(Flow {
        proto: ip_proto,
        saddr,
        daddr,
        sport,
        dport,
        l4_off: L4_OFF,
        ihl_len: IP_HLEN,
        id,
        frag,
        tcp,
    })
}

/// The frontend header of a packet `from_netdev` would load-balance for an outside client to
/// all of the frontend's backends, with the counter `from_netdev` counts it under (`NODEPORT`
/// or `EXTERNAL`). `None` for everything `from_netdev` treats otherwise.
#[inline(always)]
fn frontend(flow: &Flow, cfg: &NodeConfig, ingress: u32) -> Option<(ServiceValue, u32)> {
    if flow.saddr == cfg.node_addr {
        return None;
    }
    // SAFETY: copied out at once.
    let local = unsafe { UPLINKS.get(&ingress) }
        .copied()
        .unwrap_or(cfg.node_addr);
    if flow.daddr == local && snat::answers(flow) {
        return None;
    }
    let counter = if flow.daddr == cfg.node_addr {
        let port = u16::from_be(flow.dport);
        if port < cfg.nodeport_min || port > cfg.nodeport_max {
            return None;
        }
        stat::NODEPORT
    } else {
        stat::EXTERNAL
    };
    let svc = lb::lookup_service(flow)?;
    if counter == stat::EXTERNAL && svc.flags & (SVC_FLAG_EXTERNAL | SVC_FLAG_NODEPORT) == 0 {
        return None;
    }
    if svc.flags & SVC_FLAG_LOCAL_ONLY != 0 || svc.count == 0 || !lb::admitted(flow, &svc) {
        return None;
    }
    Some((svc, counter))
}

/// The underlay address of the node `backend` (a pod address) lives on, when that is another
/// node reached through the overlay.
#[inline(always)]
fn remote_node(backend: u32, cfg: &NodeConfig) -> Option<u32> {
    // SAFETY: only presence is read.
    if unsafe { LOCAL_PODS.get(&backend) }.is_some()
        || !in_cidr(backend, cfg.cluster_cidr, cfg.cluster_prefix)
    {
        return None;
    }
    let node = *TUNNEL.get(&Key::new(32, backend))?;
    (node != cfg.node_addr).then_some(node)
}

/// Where the encapsulated packet goes: the device, its MAC and the next hop's.
struct NextHop {
    ifindex: u32,
    smac: [u8; 6],
    dmac: [u8; 6],
}

/// The kernel's route and neighbour for an outer packet of `tot_len` bytes from `saddr` to
/// `daddr`, looked up as if it arrived on `ingress`. `None` unless the lookup succeeded (no
/// route, no neighbour entry yet, or the packet needs fragmenting).
#[inline(always)]
fn next_hop(
    ctx: &XdpContext,
    ingress: u32,
    saddr: u32,
    daddr: u32,
    tot_len: u16,
) -> Option<NextHop> {
    // SAFETY: an all-zero bpf_fib_lookup is a valid input.
    let mut p: FibParams = unsafe { core::mem::zeroed() };
    p.family = AF_INET;
    p.l4_protocol = proto::UDP;
    p.__bindgen_anon_1.tot_len = tot_len;
    p.ifindex = ingress;
    p.__bindgen_anon_3.ipv4_src = saddr;
    p.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: helper call with parameters on our stack and their exact size.
    let rc = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &mut p,
            core::mem::size_of::<FibParams>() as i32,
            0,
        )
    };
    (rc == FIB_SUCCESS).then_some(NextHop {
        ifindex: p.ifindex,
        smac: p.smac,
        dmac: p.dmac,
    })
}

#[inline(always)]
fn try_xdp_nodeport(ctx: &XdpContext) -> Result<u32, u32> {
    let Some(flow) = parse(ctx) else {
        return Ok(XDP_PASS);
    };
    let Some(cfg) = overlay::config() else {
        return Ok(XDP_PASS);
    };
    if cfg.vxlan_port == 0 || cfg.vxlan_ifindex == 0 {
        return Ok(XDP_PASS);
    }
    // SAFETY: reading the ingress ifindex of the packet we run on.
    let ingress = unsafe { (*ctx.ctx).ingress_ifindex };
    let Some((svc, counter)) = frontend(&flow, &cfg, ingress) else {
        return Ok(XDP_PASS);
    };
    let front = Frontend {
        svc,
        scope: SCOPE_EXTERNAL,
    };
    let len = (ctx.data_end() - ctx.data()) as u32;
    let Ok(Some(backend)) = lb::pick(&flow, &front, len, flow.tcp) else {
        return Ok(XDP_PASS);
    };
    let Some(node) = remote_node(backend.addr, &cfg) else {
        return Ok(XDP_PASS);
    };
    let outer_len = len as usize - ETH_HLEN + ENCAP_LEN;
    let Some(hop) = next_hop(ctx, ingress, cfg.node_addr, node, outer_len as u16) else {
        stats::inc(stat::XDP_PASS_FIB);
        return Ok(XDP_PASS);
    };
    // SAFETY: copied out at once.
    let outer_src = unsafe { UPLINKS.get(&hop.ifindex) }
        .copied()
        .unwrap_or(cfg.node_addr);
    let dnat = Flow {
        daddr: backend.addr,
        dport: backend.port,
        ..flow
    };
    let Some(to) = snat::translate(
        &dnat,
        overlay::router_addr(&cfg),
        snat::may_keep(&flow, &cfg),
        flow.tcp,
        &cfg,
    ) else {
        return Ok(XDP_PASS);
    };
    // SAFETY: plain helper call on our own context. On failure the packet is unchanged.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ENCAP_LEN as i32)) } != 0 {
        return Ok(XDP_PASS);
    }
    let (data, end) = (ctx.data(), ctx.data_end());
    let inner = data + ENCAP_LEN;
    let l4 = inner + L4_OFF;
    // From here on the packet is half-built: a failed check (which the parse above rules out)
    // can only drop it.
    let csum = if flow.proto == proto::TCP {
        if l4 + 20 > end {
            return Err(stat::DROP_REWRITE);
        }
        l4 + 16
    } else {
        if l4 + UDP_HLEN > end {
            return Err(stat::DROP_REWRITE);
        }
        l4 + 6
    };
    if csum + 2 > end {
        return Err(stat::DROP_REWRITE);
    }
    let hash = lb::flow_hash(&flow);
    // SAFETY: every access below is within the bytes checked just above.
    unsafe {
        // The inner packet: DNAT to the backend and SNAT to the router address.
        let ip = inner + ETH_HLEN;
        let check: u16 = read(ip + 10);
        let check = csum_replace4(
            csum_replace4(check, flow.saddr, to.addr),
            flow.daddr,
            dnat.daddr,
        );
        write(ip + 10, check);
        write(ip + 12, to.addr);
        write(ip + 16, dnat.daddr);
        let old_ports: u32 = read(l4);
        write(l4, to.port);
        write(l4 + 2, dnat.dport);
        let new_ports: u32 = read(l4);
        let l4_check: u16 = read(csum);
        // A UDP datagram without a checksum (0) keeps none; a computed 0 is sent as 0xffff.
        if flow.proto == proto::TCP || l4_check != 0 {
            let c = csum_replace4(l4_check, flow.saddr, to.addr);
            let c = csum_replace4(c, flow.daddr, dnat.daddr);
            let c = csum_replace4(c, old_ports, new_ports);
            let c = if c == 0 && flow.proto == proto::UDP {
                0xffff
            } else {
                c
            };
            write(csum, c);
        }
        let tos: u8 = read(ip + 1);
        let headers = outer_headers(
            &hop,
            outer_src,
            node,
            outer_len as u16,
            tos,
            hash,
            cfg.vxlan_port,
        );
        write(data, headers);
    }
    stats::inc(counter);
    stats::inc(stat::TUNNEL_TX);
    if hop.ifindex == ingress {
        stats::inc(stat::XDP_TX);
        return Ok(XDP_TX);
    }
    stats::inc(stat::XDP_REDIRECT);
    // SAFETY: plain helper call.
    Ok(unsafe { bpf_redirect(hop.ifindex, 0) } as u32)
}

/// The outer Ethernet, IPv4, UDP and VXLAN headers `vxlan0` puts around a frame: from
/// `saddr` to the remote node `daddr` (IPv4 total length `tot_len`), ECN copied from the inner
/// TOS `inner_tos` (CE as ECT(0), as the kernel's tunnels do), UDP source port from the inner
/// flow's hash, destination port `port` (network order), checksum 0, VNI `OVERLAY_VNI`.
#[inline(always)]
fn outer_headers(
    hop: &NextHop,
    saddr: u32,
    daddr: u32,
    tot_len: u16,
    inner_tos: u8,
    hash: u32,
    port: u16,
) -> [u8; ENCAP_LEN] {
    let mut h = [0u8; ENCAP_LEN];
    h[0..6].copy_from_slice(&hop.dmac);
    h[6..12].copy_from_slice(&hop.smac);
    h[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    let ecn = inner_tos & 0x03;
    // SAFETY: plain helper call.
    let id = unsafe { bpf_get_prandom_u32() } as u16;
    let ip = ipv4_header(
        saddr,
        daddr,
        tot_len,
        if ecn == 0x03 { 0x02 } else { ecn },
        id,
    );
    h[14..34].copy_from_slice(&ip);
    let sport = (SPORT_MIN + hash % SPORT_SPAN) as u16;
    h[34..36].copy_from_slice(&sport.to_be_bytes());
    h[36..38].copy_from_slice(&port.to_ne_bytes());
    h[38..40].copy_from_slice(&(tot_len - IP_HLEN as u16).to_be_bytes());
    // h[40..42]: UDP checksum 0.
    h[42] = 0x08; // VXLAN flags: the VNI is valid.
    h[46..49].copy_from_slice(&OVERLAY_VNI.to_be_bytes()[1..4]);
    h
}

/// An IPv4 header without options (protocol UDP, TTL [`OUTER_TTL`], no DF, as `vxlan0`
/// sends) with its checksum. Addresses in network order, as stored in maps.
#[inline(always)]
fn ipv4_header(saddr: u32, daddr: u32, tot_len: u16, tos: u8, id: u16) -> [u8; IP_HLEN] {
    let mut h = [0u8; IP_HLEN];
    h[0] = 0x45;
    h[1] = tos;
    h[2..4].copy_from_slice(&tot_len.to_be_bytes());
    h[4..6].copy_from_slice(&id.to_be_bytes());
    h[8] = OUTER_TTL;
    h[9] = proto::UDP;
    h[12..16].copy_from_slice(&saddr.to_ne_bytes());
    h[16..20].copy_from_slice(&daddr.to_ne_bytes());
    let mut sum = 0u32;
    let mut i = 0;
    while i < IP_HLEN {
        sum += u32::from(u16::from_be_bytes([h[i], h[i + 1]]));
        i += 2;
    }
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    h[10..12].copy_from_slice(&(!(sum as u16)).to_be_bytes());
    h
}
