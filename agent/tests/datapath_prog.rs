//! `from_pod` run on crafted packets with BPF_PROG_TEST_RUN: the rewritten bytes and checksums
//! are checked exactly. (Across veth the receiving kernel trusts offloaded checksums, so only this
//! test proves the incremental checksum updates are right for packets that leave the node.)
//!
//! Needs root and bpffs (maps are pinned under a scratch directory): run with `cargo xtask test`.
use std::net::Ipv4Addr;

mod common;

use aya::maps::{HashMap, MapData};
use aya::programs::SchedClassifier;
use common::prog::*;
use switchyard::datapath::{loader, tables, MapWriter};
use switchyard_abi::{
    addr_be, names, port_be, proto, Backend, CtKey, CtValue, RevNat, ServiceKey, ServiceValue,
    CT_DIR_FORWARD, CT_REFRESH_NS,
};

const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 8);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 9);
/// A SYN from `CLIENT:40000` to `front` reaches `BACKEND:8080`, and the backend's answer
/// comes back from `front`, with valid checksums.
fn syn_and_reply(prog: &SchedClassifier, front: (Ipv4Addr, u16)) {
    let (_, out) = run(prog, &packet((CLIENT, 40000), front, proto::TCP, true));
    assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080), "DNAT");
    let (_, out) = run(
        prog,
        &packet((BACKEND, 8080), (CLIENT, 40000), proto::TCP, true),
    );
    assert_eq!(
        (addr(&out, 26), port(&out, 34)),
        front,
        "the reply comes from the frontend the client port was last sent to"
    );
    assert_checksums(&out);
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn from_pod_rewrites_packets_with_valid_checksums() {
    let pins = Pins::new("prog");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    for (id, p) in [(1u32, proto::TCP), (2, proto::UDP)] {
        let b = Backend {
            addr: addr_be(BACKEND),
            port: port_be(8080),
            proto: p,
            state: 0,
            node_addr: 0,
        };
        install(&mut loaded, (VIP, 80), p, (id, b), 1, 0);
    }
    let empty = ServiceKey::new(addr_be(EMPTY_VIP), port_be(80), proto::TCP, 0);
    loaded
        .services
        .put(
            empty,
            ServiceValue {
                rev_nat_id: 2,
                ..Default::default()
            },
        )
        .expect("empty");
    for pod in [CLIENT, BACKEND] {
        local_pod(&mut loaded, pod);
    }
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);

    // Client → VIP: DNAT to the backend.
    let (verdict, out) = run(prog, &packet((CLIENT, 40000), (VIP, 80), proto::TCP, true));
    assert_eq!(
        verdict, TC_ACT_REDIRECT,
        "the backend is a pod on this node: straight to its veth"
    );
    assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080));
    assert_eq!(
        (addr(&out, 26), port(&out, 34)),
        (CLIENT, 40000),
        "source untouched"
    );
    assert_checksums(&out);

    // Backend → client reply: source restored to the VIP.
    let (verdict, out) = run(
        prog,
        &packet((BACKEND, 8080), (CLIENT, 40000), proto::TCP, true),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((addr(&out, 26), port(&out, 34)), (VIP, 80));
    assert_checksums(&out);

    // UDP with a checksum, and UDP without one (it must stay 0).
    for with_csum in [true, false] {
        let (_, out) = run(
            prog,
            &packet(
                (CLIENT, 40001 + u16::from(with_csum)),
                (VIP, 80),
                proto::UDP,
                with_csum,
            ),
        );
        assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080));
        assert_eq!(
            out[40..42] == [0, 0],
            !with_csum,
            "UDP checksum presence kept"
        );
        assert_checksums(&out);
    }

    // No backends: ICMP port unreachable back to the client, quoting the original headers.
    let syn = packet((CLIENT, 40100), (EMPTY_VIP, 80), proto::TCP, true);
    let (verdict, out) = run(prog, &syn);
    assert_eq!(verdict, TC_ACT_REDIRECT, "sent back out of the pod's veth");
    assert_eq!(out.len(), 70);
    assert_eq!(&out[0..6], &syn[6..12], "back to the client's MAC");
    assert_eq!(out[23], proto::ICMP);
    assert_eq!((addr(&out, 26), addr(&out, 30)), (EMPTY_VIP, CLIENT));
    assert_eq!(
        (out[34], out[35]),
        (3, 3),
        "destination unreachable / port unreachable"
    );
    assert_eq!(
        &out[42..70],
        &syn[14..42],
        "quotes the original IP header and 8 bytes"
    );
    assert_eq!(fold(sum16(&out[14..34])), 0, "IPv4 header checksum");
    assert_eq!(fold(sum16(&out[34..70])), 0, "ICMP checksum");

    // A client port reused by a direct connection to the backend, then again for the VIP: the
    // direct SYN retires the old load-balanced flow, and the new VIP connection's replies are
    // reverse-NATed again (they used not to be: its forward entry outlived its reply entry).
    let direct = packet((CLIENT, 40000), (BACKEND, 8080), proto::TCP, true);
    let (_, out) = run(prog, &direct);
    assert_eq!(out, direct, "a direct connection is not translated");
    syn_and_reply(prog, (VIP, 80));

    // Two frontends sending the same client port to the same backend share its reply tuple:
    // when the port comes back to the first frontend, its replies must come from that frontend
    // again, not from the one that used the port last (as after a Service was deleted).
    let b = Backend {
        addr: addr_be(BACKEND),
        port: port_be(8080),
        proto: proto::TCP,
        state: 0,
        node_addr: 0,
    };
    install(&mut loaded, (VIP2, 81), proto::TCP, (3, b), 3, 0);
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    for front in [(VIP2, 81), (VIP, 80)] {
        syn_and_reply(prog, front);
    }

    // Unrelated traffic passes untouched.
    let other = packet(
        (CLIENT, 40200),
        (Ipv4Addr::new(10, 244, 9, 50), 80),
        proto::TCP,
        true,
    );
    let (verdict, out) = run(prog, &other);
    assert_eq!(verdict, TC_ACT_OK);
    assert_eq!(out, other);
}

/// A pod's veth carries only that pod's own address: a packet with another source (a pod behind
/// another veth, a pod of another node, an outside address), TCP, a UDP first fragment or a
/// later fragment alike, is dropped and counted as `drop_source_spoofed` before it creates a
/// conntrack, NAT or fragment entry. The pod's own packets are balanced as before, and ARP
/// passes untouched.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn from_pod_drops_a_packet_whose_source_is_not_the_pod_behind_the_veth() {
    let pins = Pins::new("spoof");
    let node = Pins::node("spoof");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    clusterip_to_backend(&mut loaded);
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    let remote_pod = Ipv4Addr::new(10, 244, 2, 5);
    let outside = Ipv4Addr::new(203, 0, 113, 10);
    let spoofs = [
        (
            "another local pod's address",
            packet((CLIENT, 40000), (VIP, 80), proto::TCP, true),
            veth_of(BACKEND),
        ),
        (
            "a pod of another node",
            packet((remote_pod, 40000), (VIP, 80), proto::TCP, true),
            veth_of(CLIENT),
        ),
        (
            "an outside address, first fragment",
            first_fragment(packet((outside, 40000), (VIP, 80), proto::UDP, true), 7),
            veth_of(CLIENT),
        ),
        (
            "an outside address, later fragment",
            later_fragment(outside, VIP, proto::UDP, 7),
            veth_of(CLIENT),
        ),
        (
            "a reply as if from the backend",
            packet((BACKEND, 8080), (CLIENT, 40000), proto::TCP, true),
            veth_of(CLIENT),
        ),
    ];
    let before = FlowKeys::read(&pins.0);
    for (what, frame, veth) in &spoofs {
        let (verdict, out) = run_on(prog, frame, *veth);
        assert_eq!(verdict, TC_ACT_SHOT, "{what}: dropped");
        assert_eq!(&out, frame, "{what}: untouched");
    }
    assert_eq!(
        counter(&node, "drop_source_spoofed"),
        spoofs.len() as u64,
        "every spoof is counted"
    );
    assert_eq!(counter(&node, "packets"), 0, "nothing else looked at them");
    assert_eq!(
        FlowKeys::read(&pins.0),
        before,
        "no conntrack, NAT or fragment entry for a spoofed packet"
    );

    // The pod itself, on its own veth: balanced to the backend as before.
    let (verdict, out) = run(prog, &packet((CLIENT, 40000), (VIP, 80), proto::TCP, true));
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!(
        (addr(&out, 26), addr(&out, 30), port(&out, 36)),
        (CLIENT, BACKEND, 8080)
    );
    assert_checksums(&out);
    let (verdict, out) = run(
        prog,
        &packet((BACKEND, 8080), (CLIENT, 40000), proto::TCP, true),
    );
    assert_eq!(verdict, TC_ACT_REDIRECT);
    assert_eq!((addr(&out, 26), port(&out, 34)), (VIP, 80), "reverse NAT");
    assert_eq!(
        FlowKeys::read(&pins.0).ct.len(),
        before.ct.len() + 2,
        "the flow is tracked both ways"
    );
    assert_eq!(counter(&node, "drop_source_spoofed"), spoofs.len() as u64);

    // ARP (not IPv4: who has the gateway?) is none of the check's business.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1, 0x02, 0, 0, 0, 0, 0x02]);
    arp.extend_from_slice(&CLIENT.octets());
    arp.extend_from_slice(&[0; 6]);
    arp.extend_from_slice(&[10, 244, 9, 1]);
    let (verdict, out) = run_on(prog, &arp, veth_of(CLIENT));
    assert_eq!((verdict, out), (TC_ACT_OK, arp), "ARP passes untouched");
}

/// NodePort SNAT for a backend on another node keeps the client's port when it lies in the SNAT
/// range and the reply tuple is free, takes a port of the SNAT range when it is not (or when the
/// client's port is one the node's own sockets may use), and hands a reply tuple whose flow is
/// over (reset, quiet past the timeout) to the next flow instead of running out of ports.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn nodeport_snat_keeps_a_client_port_of_its_range_and_reclaims_finished_flows() {
    use aya::maps::HashMap;
    use switchyard_abi::{NatEntry, NatKey, CT_DIR_FORWARD, CT_DIR_REPLY, NAT_FLAG_RST};

    const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
    let pins = Pins::new("snat");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    let config = lab_node_config(NODE, Ipv4Addr::new(10, 244, 1, 0));
    loaded.config.set(0, config, 0).expect("config");
    loaded
        .tunnel
        .put(
            (Ipv4Addr::new(10, 244, 2, 0), 24),
            Ipv4Addr::new(198, 18, 0, 12),
        )
        .expect("tunnel");
    let b = Backend {
        addr: addr_be(REMOTE),
        port: port_be(8080),
        proto: proto::TCP,
        state: 0,
        node_addr: addr_be(Ipv4Addr::new(198, 18, 0, 12)),
    };
    install(
        &mut loaded,
        (NODE, 31002),
        proto::TCP,
        (1, b),
        1,
        switchyard_abi::SVC_FLAG_NODEPORT,
    );
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_NETDEV);
    let syn_from = |client: Ipv4Addr| {
        let (_, out) = run(
            prog,
            &packet((client, 62000), (NODE, 31002), proto::TCP, true),
        );
        assert_eq!((addr(&out, 30), port(&out, 36)), (REMOTE, 8080), "DNAT");
        assert_eq!(addr(&out, 26), ROUTER, "SNAT to the router address");
        assert_checksums(&out);
        port(&out, 34)
    };

    let first = Ipv4Addr::new(198, 18, 0, 100);
    assert_eq!(syn_from(first), 62000, "the client's own port is kept");
    assert_eq!(
        syn_from(first),
        62000,
        "a retransmitted SYN keeps its translation"
    );
    let second = syn_from(Ipv4Addr::new(198, 18, 0, 101));
    assert!(
        second >= switchyard_abi::SNAT_PORT_MIN && second != 62000,
        "port 62000 is taken: another one from the SNAT range, got {second}"
    );
    let (_, out) = run(
        prog,
        &packet(
            (Ipv4Addr::new(198, 18, 0, 103), 40000),
            (NODE, 31002),
            proto::TCP,
            true,
        ),
    );
    assert!(
        port(&out, 34) >= switchyard_abi::SNAT_PORT_MIN,
        "a port of the node's own range is never kept: got {}",
        port(&out, 34)
    );

    // The first flow was reset long ago: its reply tuple goes to the next client.
    let mut nat: HashMap<_, NatKey, NatEntry> = HashMap::try_from(
        loaded
            .ebpf
            .map_mut(switchyard_abi::names::NAT)
            .expect("NAT"),
    )
    .expect("NAT map");
    let reply: NatKey = tcp_key((REMOTE, 8080), (ROUTER, 62000), CT_DIR_REPLY);
    let forward: NatKey = tcp_key((first, 62000), (REMOTE, 8080), CT_DIR_FORWARD);
    for k in [reply, forward] {
        let mut e = nat.get(&k, 0).expect("the first flow's entries");
        e.flags |= NAT_FLAG_RST;
        e.last_seen = 1;
        nat.insert(k, e, 0).expect("age the entry");
    }
    let third = Ipv4Addr::new(198, 18, 0, 102);
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_NETDEV);
    let (_, out) = run(
        prog,
        &packet((third, 62000), (NODE, 31002), proto::TCP, true),
    );
    assert_eq!(
        (addr(&out, 26), port(&out, 34)),
        (ROUTER, 62000),
        "the finished flow's port is reused"
    );
    let nat: HashMap<_, NatKey, NatEntry> =
        HashMap::try_from(loaded.ebpf.map(switchyard_abi::names::NAT).expect("NAT"))
            .expect("NAT map");
    assert!(
        nat.get(&forward, 0).is_err(),
        "the finished flow's forward entry is gone"
    );
    assert_eq!(
        nat.get(&reply, 0).expect("reply entry").addr,
        addr_be(third)
    );
}

/// Frame `p` as the first fragment (more fragments follow) of datagram `id`.
fn first_fragment(mut p: Vec<u8>, id: u16) -> Vec<u8> {
    p[18..20].copy_from_slice(&id.to_be_bytes());
    p[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    fix_ip_checksum(&mut p);
    p
}

/// A later fragment (offset 8 bytes, the last one) of datagram `id` with a 16-byte payload.
fn later_fragment(src: Ipv4Addr, dst: Ipv4Addr, l4: u8, id: u16) -> Vec<u8> {
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let mut ip = vec![0x45, 0, 0, 36, 0, 0, 0, 1, 64, l4, 0, 0];
    ip[4..6].copy_from_slice(&id.to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    p.extend_from_slice(&ip);
    p.extend_from_slice(b"0123456789abcdef");
    fix_ip_checksum(&mut p);
    p
}

/// Asserts an ICMP error's own and quoted IPv4 checksums and its ICMP checksum verify.
fn assert_icmp_checksums(p: &[u8]) {
    assert_eq!(fold(sum16(&p[14..34])), 0, "outer IPv4 header checksum");
    assert_eq!(fold(sum16(&p[34..])), 0, "ICMP checksum");
    assert_eq!(fold(sum16(&p[42..62])), 0, "quoted IPv4 header checksum");
}

/// Errors about a load-balanced flow reach its client as errors about the frontend it
/// addressed (so `ECONNREFUSED` and path-MTU discovery work through a ClusterIP); later
/// fragments of a datagram follow its first; a pod balanced to itself talks to itself through
/// the service loopback address.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn icmp_errors_fragments_and_hairpin_follow_their_translated_flow() {
    let pins = Pins::new("icmp");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    for (id, p) in [(1u32, proto::TCP), (2, proto::UDP)] {
        let b = Backend {
            addr: addr_be(BACKEND),
            port: port_be(8080),
            proto: p,
            state: 0,
            node_addr: 0,
        };
        install(&mut loaded, (VIP, 80), p, (id, b), 1, 0);
    }
    let me = Backend {
        addr: addr_be(CLIENT),
        port: port_be(8080),
        proto: proto::TCP,
        state: 0,
        node_addr: 0,
    };
    install(&mut loaded, (VIP2, 80), proto::TCP, (3, me), 2, 0);
    // A router on the way: a pod on this node that forwards the client's traffic.
    let router = Ipv4Addr::new(10, 244, 9, 1);
    for pod in [CLIENT, BACKEND, router] {
        local_pod(&mut loaded, pod);
    }
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);

    // Port unreachable for a UDP datagram and fragmentation needed for a TCP segment, from the
    // backend, quoting the packet as the backend got it.
    for (l4, sport, kind, code) in [(proto::UDP, 41000, 3, 3), (proto::TCP, 41001, 3, 4)] {
        let (_, sent) = run(prog, &packet((CLIENT, sport), (VIP, 80), l4, true));
        assert_eq!(addr(&sent, 30), BACKEND);
        let error = icmp_error(BACKEND, CLIENT, kind, code, &sent);
        let (_, out) = run(prog, &error);
        assert_eq!(addr(&out, 26), VIP, "the error comes from the frontend");
        assert_eq!(addr(&out, 30), CLIENT);
        assert_eq!(
            (
                addr(&out, 42 + 12),
                addr(&out, 42 + 16),
                port(&out, 62),
                port(&out, 64)
            ),
            (CLIENT, VIP, sport, 80),
            "it quotes the packet the client sent"
        );
        assert_icmp_checksums(&out);
    }
    // TTL exceeded from a router on the way quotes the same packet; its source stays the router.
    let (_, sent) = run(prog, &packet((CLIENT, 41002), (VIP, 80), proto::UDP, true));
    let (_, out) = run(prog, &icmp_error(router, CLIENT, 11, 0, &sent));
    assert_eq!((addr(&out, 26), addr(&out, 42 + 16)), (router, VIP));
    assert_icmp_checksums(&out);
    // An error about a flow nobody translated passes unchanged.
    let plain = packet((CLIENT, 41003), (BACKEND, 8080), proto::UDP, true);
    let error = icmp_error(BACKEND, CLIENT, 3, 3, &plain);
    assert_eq!(run(prog, &error).1, error);

    // A fragmented datagram to the frontend: its later fragment goes to the same backend.
    let first = first_fragment(packet((CLIENT, 41004), (VIP, 80), proto::UDP, true), 0x4242);
    let (_, out) = run(prog, &first);
    assert_eq!(addr(&out, 30), BACKEND);
    let later = later_fragment(CLIENT, VIP, proto::UDP, 0x4242);
    let (_, out) = run(prog, &later);
    assert_eq!((addr(&out, 26), addr(&out, 30)), (CLIENT, BACKEND));
    assert_eq!(&out[34..], &later[34..], "the payload is untouched");
    assert_eq!(fold(sum16(&out[14..34])), 0, "IPv4 header checksum");
    // The reply's later fragment comes from the frontend like its first.
    let (_, out) = run(
        prog,
        &first_fragment(
            packet((BACKEND, 8080), (CLIENT, 41004), proto::UDP, true),
            0x99,
        ),
    );
    assert_eq!(addr(&out, 26), VIP);
    let (_, out) = run(prog, &later_fragment(BACKEND, CLIENT, proto::UDP, 0x99));
    assert_eq!((addr(&out, 26), addr(&out, 30)), (VIP, CLIENT));

    // Hairpin: the client reaches its own Service and is its only backend.
    let loopback = Ipv4Addr::from(switchyard_abi::SERVICE_LOOPBACK);
    let (_, out) = run(prog, &packet((CLIENT, 41005), (VIP2, 80), proto::TCP, true));
    assert_eq!(
        (
            addr(&out, 26),
            port(&out, 34),
            addr(&out, 30),
            port(&out, 36)
        ),
        (loopback, 41005, CLIENT, 8080),
        "from the service loopback address, keeping the port"
    );
    assert_checksums(&out);
    let (_, out) = run(
        prog,
        &packet((CLIENT, 8080), (loopback, 41005), proto::TCP, true),
    );
    assert_eq!(
        (
            addr(&out, 26),
            port(&out, 34),
            addr(&out, 30),
            port(&out, 36)
        ),
        (VIP2, 80, CLIENT, 41005),
        "the answer comes from the frontend, back to the client's port"
    );
    assert_checksums(&out);
}

/// `p` (a TCP packet from [`packet`]) with TCP flags `flags`, checksum recomputed.
fn with_tcp_flags(mut p: Vec<u8>, flags: u8) -> Vec<u8> {
    p[47] = flags;
    p[50..52].copy_from_slice(&[0, 0]);
    let c = l4_checksum(addr(&p, 26), addr(&p, 30), proto::TCP, &p[34..]);
    p[50..52].copy_from_slice(&c.to_be_bytes());
    p
}

/// The conntrack table is an LRU map: full, it evicts the least recently used entry, and an
/// idle connection is exactly that. The agent's sweeper removes flows that are over, so a table
/// through which many more short connections pass than it can hold never reaches the idle one;
/// the same load without the sweeper evicts it.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn an_idle_open_flow_keeps_its_backend_while_more_closed_flows_than_the_table_holds_pass() {
    use switchyard::datapath::aging::Timeouts;
    use switchyard::datapath::tables;

    const CAPACITY: u32 = 1024;
    const ROUND: u16 = 150;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    let pins = Pins::new("age");
    let sizes = loader::MapSizes {
        ct: CAPACITY,
        ..loader::MapSizes::default()
    };
    let mut loaded = loader::load_sized(&pins.0, &sizes).expect("load the eBPF object");
    // One frontend, eight backends: a flow that lost its entry would be balanced anew.
    let rev = RevNat {
        addr: addr_be(VIP),
        port: port_be(80),
        pad: 0,
    };
    loaded.rev_nat.put(1, rev).expect("rev nat");
    let key = |slot| ServiceKey::new(addr_be(VIP), port_be(80), proto::TCP, slot);
    for id in 1..=8u16 {
        let b = Backend {
            addr: addr_be(Ipv4Addr::new(10, 244, 9, 10 + id as u8)),
            port: port_be(8080),
            proto: proto::TCP,
            state: 0,
            node_addr: 0,
        };
        loaded.backends.put(u32::from(id), b).expect("backend");
        let slot = ServiceValue {
            backend_id: u32::from(id),
            rev_nat_id: 1,
            ..Default::default()
        };
        loaded.services.put(key(id), slot).expect("slot");
    }
    let header = ServiceValue {
        count: 8,
        rev_nat_id: 1,
        ..Default::default()
    };
    loaded.services.put(key(0), header).expect("header");
    local_pod(&mut loaded, CLIENT);
    for id in 1..=8u8 {
        local_pod(&mut loaded, Ipv4Addr::new(10, 244, 9, 10 + id));
    }
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    let tcp = |src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), flags| {
        with_tcp_flags(packet(src, dst, proto::TCP, true), flags)
    };

    // The idle connection: opened, answered, then quiet.
    let idle = (CLIENT, 20000);
    let (_, out) = run(prog, &tcp(idle, (VIP, 80), SYN));
    let chosen = addr(&out, 30);
    let (_, out) = run(prog, &tcp((chosen, 8080), idle, SYN | ACK));
    assert_eq!(addr(&out, 26), VIP, "the answer comes from the frontend");

    // Short connections, each opened and closed both ways.
    let mut next_port = 30000u16;
    let mut closed_flows = |count: u16| {
        for _ in 0..count {
            let client = (CLIENT, next_port);
            next_port += 1;
            let (_, out) = run(prog, &tcp(client, (VIP, 80), SYN));
            let backend = (addr(&out, 30), 8080);
            run(prog, &tcp(backend, client, SYN | ACK));
            run(prog, &tcp(client, (VIP, 80), FIN_ACK));
            run(prog, &tcp(backend, client, FIN_ACK));
        }
    };
    let forward = tcp_key((CLIENT, idle.1), (VIP, 80), switchyard_abi::CT_DIR_FORWARD);
    let rounds = 4 * CAPACITY / u32::from(ROUND) / 2;
    for _ in 0..rounds {
        closed_flows(ROUND);
        // The sweeper's turn, 11 s later: closed flows are over, the idle one is not.
        let swept = tables::sweep(
            &pins.0,
            tables::monotonic_now() + 11_000_000_000,
            &Timeouts::default(),
        )
        .expect("sweep");
        assert!(
            swept.conntrack.removed >= 2 * usize::from(ROUND),
            "every closed flow's two entries go: {swept:?}"
        );
    }
    let ct = tables::conntrack(&pins.0).expect("read CT");
    assert!(
        ct.contains_key(&forward),
        "{} short flows later the idle connection is still tracked",
        u32::from(ROUND) * rounds
    );
    let (_, out) = run(prog, &tcp(idle, (VIP, 80), ACK));
    assert_eq!(addr(&out, 30), chosen, "and keeps its backend");

    // The same load without sweeps: the idle connection is what the LRU map evicts.
    closed_flows(CAPACITY as u16);
    let ct = tables::conntrack(&pins.0).expect("read CT");
    assert!(
        !ct.contains_key(&forward),
        "without the sweeper the load is enough to evict it"
    );
}

/// Rev-NAT ids beyond the 16 bits Cilium keeps: frontends with ids 65,536, 200,000 and the
/// highest one are balanced and their replies reverse-NATed to the right frontend, each counts
/// in its own `SVC_STATS` slot, and the source ranges of two frontends whose ids differ only
/// above 16 bits stay apart. Loading again after an upgrade removes the pins of the maps' older
/// versions and reuses the current ones.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn rev_nat_ids_beyond_16_bits_translate_count_and_filter() {
    use aya::maps::{Map, MapData, PerCpuArray};
    use switchyard::datapath::plan::MAX_REV_NAT_ID;
    use switchyard_abi::{names, SourceRangeKey, SvcCounters, SVC_FLAG_SOURCE_RANGES};

    let pins = Pins::new("wide");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    let b = backend(BACKEND, 8080, proto::TCP);
    let fronts = [
        (Ipv4Addr::new(10, 96, 8, 1), 65_536u32),
        (Ipv4Addr::new(10, 96, 8, 2), 200_000),
        (Ipv4Addr::new(10, 96, 8, 3), MAX_REV_NAT_ID),
    ];
    for (vip, id) in fronts {
        install(&mut loaded, (vip, 80), proto::TCP, (1, b), id, 0);
    }
    // 131,072 and 131,073 are 0 and 1 in their low 16 bits.
    let (open, closed) = (
        (Ipv4Addr::new(10, 96, 8, 4), 131_072u32),
        (Ipv4Addr::new(10, 96, 8, 5), 131_073u32),
    );
    for ((vip, id), net) in [
        (open, Ipv4Addr::new(10, 244, 9, 0)),
        (closed, Ipv4Addr::new(192, 0, 2, 0)),
    ] {
        install(
            &mut loaded,
            (vip, 80),
            proto::TCP,
            (1, b),
            id,
            SVC_FLAG_SOURCE_RANGES,
        );
        let key = SourceRangeKey {
            rev_nat_id: id.to_be(),
            proto: proto::TCP,
            pad: [0; 3],
            addr: addr_be(net),
        };
        loaded.source_ranges.put((key, 24), 0).expect("range");
    }
    for pod in [CLIENT, BACKEND] {
        local_pod(&mut loaded, pod);
    }
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    for (vip, _) in fronts {
        syn_and_reply(prog, (vip, 80));
    }
    syn_and_reply(prog, (open.0, 80));
    let (verdict, _) = run(
        prog,
        &packet((CLIENT, 40000), (closed.0, 80), proto::TCP, true),
    );
    assert_eq!(verdict, TC_ACT_SHOT, "the client is outside the range");
    assert_eq!(counter(&Pins::node("wide"), "drop_source_range"), 1);

    let data = MapData::from_pin(pins.0.join(names::SVC_STATS)).expect("SVC_STATS pin");
    let stats: PerCpuArray<MapData, SvcCounters> =
        PerCpuArray::try_from(Map::from_map_data(data).expect("map")).expect("per-CPU array");
    let total = |id: u32| {
        stats
            .get(&id, 0)
            .expect("slot")
            .iter()
            .fold((0, 0), |a, c| (a.0 + c.packets, a.1 + c.connections))
    };
    for (_, id) in fronts.iter().chain([&open]) {
        assert_eq!(
            total(*id),
            (2, 1),
            "SYN and reply of one connection, id {id}"
        );
    }
    assert_eq!(total(0), (0, 0), "nothing lands in 65,536's low 16 bits");
    assert_eq!(total(closed.1), (0, 0), "a refused client is not counted");
    drop(loaded);

    // An upgrade: the maps pinned under an older version's names go, the current ones stay.
    let old = pins.0.join("REV_NAT_V1");
    std::fs::rename(pins.0.join(names::REV_NAT), &old).expect("rename a pin on bpffs");
    let loaded = loader::load(&pins.0).expect("load again");
    assert!(!old.exists(), "the superseded pin is removed");
    assert!(pins.0.join(names::REV_NAT).exists());
    assert!(pins.0.join(names::SERVICES).exists());
    drop(loaded);
}

/// The sweeper reads and deletes conntrack in batches: a table of several batches is read whole,
/// each entry once, and a bulk delete whose keys the datapath partly removed first removes the
/// rest and leaves every other entry in place.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn a_table_of_many_batches_is_read_whole_and_deleted_in_bulk() {
    use aya::maps::{HashMap, MapData};
    use switchyard::datapath::{batch, tables};
    use switchyard_abi::{names, CtKey, CtValue, CT_DIR_FORWARD};

    let pins = Pins::new("batch");
    let sizes = loader::MapSizes {
        ct: 32_768,
        ..loader::MapSizes::default()
    };
    let _loaded = loader::load_sized(&pins.0, &sizes).expect("load the eBPF object");
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        tables::open_pinned(&pins.0, names::CT).expect("open CT");
    let key = |i: u32| CtKey {
        saddr: addr_be(Ipv4Addr::from(0x0af4_0000 + i)),
        daddr: addr_be(VIP2),
        sport: port_be(40_000 + (i % 20_000) as u16),
        dport: port_be(80),
        proto: proto::TCP,
        dir: CT_DIR_FORWARD,
        pad: [0; 2],
    };
    let value = |i: u32| CtValue {
        backend_id: i,
        ..CtValue::default()
    };
    const FLOWS: u32 = 10_000;
    for i in 0..FLOWS {
        ct.insert(key(i), value(i), 0).expect("insert");
    }

    let read = tables::conntrack(&pins.0).expect("read CT");
    assert_eq!(read.len(), FLOWS as usize, "every entry, once");
    assert!((0..FLOWS).all(|i| read.get(&key(i)).map(|v| v.backend_id) == Some(i)));

    // The datapath (or LRU eviction) removed some of the flows the sweep is about to delete.
    for i in (0..5_000).step_by(50) {
        ct.remove(&key(i)).expect("remove");
    }
    let doomed: Vec<CtKey> = (0..5_000).map(key).collect();
    let removed = batch::delete(batch::fd_of(&ct), &doomed).expect("bulk delete");
    assert_eq!(removed, doomed.len(), "keys already gone count as removed");

    let left = tables::conntrack(&pins.0).expect("read CT again");
    assert_eq!(left.len(), 5_000);
    assert!((5_000..FLOWS).all(|i| left.contains_key(&key(i))));
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn an_open_flow_keeps_a_removed_backend_until_its_entry_is_due_for_a_refresh_then_moves() {
    let pins = Pins::new("moved");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    configure_pod_node(&mut loaded);
    clusterip_to_backend(&mut loaded);
    let other = Ipv4Addr::new(10, 244, 9, 4);
    local_pod(&mut loaded, other);
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        tables::open_pinned(&pins.0, names::CT).expect("open CT");
    let client = (CLIENT, 41000);
    let ack = with_tcp_flags(packet(client, (VIP, 80), proto::TCP, true), 0x10);
    let to = |out: &[u8]| (addr(out, 30), port(out, 36));

    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    let (_, out) = run(prog, &packet(client, (VIP, 80), proto::TCP, true));
    assert_eq!(
        to(&out),
        (BACKEND, 8080),
        "the SYN is balanced to the only backend"
    );

    // The endpoint goes: the agent removes its backend and puts another in the slot.
    loaded.backends.remove(&1).expect("remove the backend");
    install(
        &mut loaded,
        (VIP, 80),
        proto::TCP,
        (7, backend(other, 8080, proto::TCP)),
        1,
        0,
    );
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    // The flow's next packet: redirected to a local pod, and where it went.
    let next = || {
        let (verdict, out) = run(prog, &ack);
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_checksums(&out);
        to(&out)
    };
    assert_eq!(
        next(),
        (BACKEND, 8080),
        "within a refresh interval the flow keeps the backend its entry remembers"
    );

    // A refresh interval later (the entry's last packet put back by that much), the next
    // packet checks the backend, finds it gone and balances the flow anew.
    let key = tcp_key(client, (VIP, 80), CT_DIR_FORWARD);
    age_by_a_refresh_interval(&mut ct, key);
    assert_eq!(
        next(),
        (other, 8080),
        "the flow moved to the backend in the slot now"
    );
    let entry = ct.get(&key, 0).expect("the forward entry");
    assert_eq!(entry.backend_id, 7, "conntrack remembers the new backend");
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn an_open_flow_to_a_deleted_service_is_translated_until_its_entry_is_due_for_a_refresh() {
    let pins = Pins::new("gone");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    configure_pod_node(&mut loaded);
    clusterip_to_backend(&mut loaded);
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        tables::open_pinned(&pins.0, names::CT).expect("open CT");
    let client = (CLIENT, 41001);
    let ack = with_tcp_flags(packet(client, (VIP, 80), proto::TCP, true), 0x10);
    // Where `from_pod` sends `input`.
    let to = |loaded: &loader::Loaded, input: &[u8]| {
        let (_, out) = run(
            classifier(loaded, switchyard_abi::programs::FROM_POD),
            input,
        );
        assert_checksums(&out);
        (addr(&out, 30), port(&out, 36))
    };
    assert_eq!(
        to(&loaded, &packet(client, (VIP, 80), proto::TCP, true)),
        (BACKEND, 8080),
        "the SYN is balanced to the only backend"
    );
    assert_eq!(
        to(&loaded, &ack),
        (BACKEND, 8080),
        "the flow's next packet follows"
    );

    // The Service goes: the agent removes its frontend (header and slot) from SERVICES.
    for slot in [0, 1] {
        let key = ServiceKey::new(addr_be(VIP), port_be(80), proto::TCP, slot);
        loaded.services.remove(&key).expect("remove the frontend");
    }
    assert_eq!(
        to(&loaded, &ack),
        (BACKEND, 8080),
        "within a refresh interval the open flow keeps its backend, as with kube-proxy's conntrack"
    );
    let key = tcp_key(client, (VIP, 80), CT_DIR_FORWARD);
    age_by_a_refresh_interval(&mut ct, key);
    assert_eq!(
        to(&loaded, &ack),
        (VIP, 80),
        "once the entry is due, the packet finds no frontend and is not translated"
    );
}

/// Gives the datapath the configuration of a lab node whose pods (`CLIENT`, `BACKEND`) are in
/// 10.244.9.0/24, with the lab's service CIDR: a packet to a ClusterIP takes the whole
/// `from_pod` path, the conntrack-first lookup of an established flow included.
fn configure_pod_node(loaded: &mut loader::Loaded) {
    let config = lab_node_config(Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(10, 244, 9, 0));
    loaded.config.set(0, config, 0).expect("config");
}

/// Puts the last packet of conntrack entry `key` back by `CT_REFRESH_NS`: its next packet finds
/// it due for a refresh.
fn age_by_a_refresh_interval(ct: &mut HashMap<MapData, CtKey, CtValue>, key: CtKey) {
    let mut entry = ct.get(&key, 0).expect("the conntrack entry");
    entry.last_seen = entry.last_seen.saturating_sub(CT_REFRESH_NS);
    ct.insert(key, entry, 0).expect("age the entry");
}
