//! `from_pod` run on crafted packets with BPF_PROG_TEST_RUN: the rewritten bytes and checksums
//! are checked exactly. (Across veth the receiving kernel trusts offloaded checksums, so only this
//! test proves the incremental checksum updates are right for packets that leave the node.)
//!
//! Needs root and bpffs (maps are pinned under a scratch directory): run with `cargo xtask test`.
use std::net::Ipv4Addr;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use switchyard::datapath::{loader, MapWriter};
use switchyard_abi::{addr_be, port_be, proto, Backend, RevNat, ServiceKey, ServiceValue};

const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 2);
const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 3);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 7);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 8);
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 9);
const TC_ACT_OK: u32 = 0;
const TC_ACT_REDIRECT: u32 = 7;

fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

/// Checksum over an L4 segment with the IPv4 pseudo header.
fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    fold(sum16(&pseudo) + sum16(segment))
}

/// An Ethernet + IPv4 + TCP SYN (or UDP datagram) with correct checksums.
fn packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), l4: u8, udp_csum: bool) -> Vec<u8> {
    let mut p = vec![0u8; 14];
    p[0..6].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x01]);
    p[6..12].copy_from_slice(&[0x02, 0, 0, 0, 0, 0x02]);
    p[12..14].copy_from_slice(&[0x08, 0x00]);
    let mut seg = Vec::new();
    seg.extend_from_slice(&src.1.to_be_bytes());
    seg.extend_from_slice(&dst.1.to_be_bytes());
    if l4 == proto::TCP {
        seg.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0]);
    } else {
        seg.extend_from_slice(&[0, 12, 0, 0]);
        seg.extend_from_slice(b"ping");
    }
    let csum_off = if l4 == proto::TCP { 16 } else { 6 };
    if l4 == proto::TCP || udp_csum {
        let c = l4_checksum(src.0, dst.0, l4, &seg);
        seg[csum_off..csum_off + 2].copy_from_slice(&c.to_be_bytes());
    }
    let mut ip = vec![0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, l4, 0, 0];
    ip[2..4].copy_from_slice(&((20 + seg.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.0.octets());
    ip.extend_from_slice(&dst.0.octets());
    let c = fold(sum16(&ip));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&seg);
    p
}

fn addr(p: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[off], p[off + 1], p[off + 2], p[off + 3])
}

fn port(p: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([p[off], p[off + 1]])
}

/// Asserts the IPv4 header and L4 checksums of `p` verify.
fn assert_checksums(p: &[u8]) {
    assert_eq!(fold(sum16(&p[14..34])), 0, "IPv4 header checksum");
    let l4 = p[23];
    let seg = &p[34..];
    if l4 == proto::UDP && seg[6..8] == [0, 0] {
        return; // no checksum, and it must stay that way
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[26..34]);
    pseudo.extend_from_slice(&[0, l4]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    assert_eq!(
        fold(sum16(&pseudo) + sum16(seg)),
        0,
        "L4 checksum (proto {l4})"
    );
}

struct Pins(std::path::PathBuf);
impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn run(prog: &SchedClassifier, input: &[u8]) -> (u32, Vec<u8>) {
    let mut out = vec![0u8; 256];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    (res.return_value, out)
}

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

/// The classifier program `name` of the loaded object.
fn classifier<'a>(loaded: &'a loader::Loaded, name: &str) -> &'a SchedClassifier {
    loaded
        .ebpf
        .program(name)
        .expect("program")
        .try_into()
        .expect("classifier")
}

/// Programs frontend `front` (protocol `p`, service flags `flags`) with the single backend
/// `backend` under backend id `id` and rev-NAT id `rev_nat_id`.
fn install(
    loaded: &mut loader::Loaded,
    front: (Ipv4Addr, u16),
    p: u8,
    (id, backend): (u32, Backend),
    rev_nat_id: u16,
    flags: u8,
) {
    let rev = RevNat {
        addr: addr_be(front.0),
        port: port_be(front.1),
        pad: 0,
    };
    loaded.rev_nat.put(rev_nat_id, rev).expect("rev nat");
    loaded.backends.put(id, backend).expect("backend");
    let key = |slot| ServiceKey::new(addr_be(front.0), port_be(front.1), p, slot);
    let slot = ServiceValue {
        backend_id: id,
        rev_nat_id,
        ..Default::default()
    };
    loaded.services.put(key(1), slot).expect("slot");
    let header = ServiceValue {
        count: 1,
        rev_nat_id,
        flags,
        ..Default::default()
    };
    loaded.services.put(key(0), header).expect("header");
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn from_pod_rewrites_packets_with_valid_checksums() {
    let pins = Pins(switchyard::paths::pin_dir(&format!(
        "t-prog-{}",
        std::process::id()
    )));
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
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);

    // Client → VIP: DNAT to the backend.
    let (verdict, out) = run(prog, &packet((CLIENT, 40000), (VIP, 80), proto::TCP, true));
    assert_eq!(verdict, TC_ACT_OK, "not a local pod: continue to the stack");
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
    assert_eq!(verdict, TC_ACT_OK);
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

/// NodePort SNAT for a backend on another node keeps the client's port when it lies in the SNAT
/// range and the reply tuple is free, takes a port of the SNAT range when it is not (or when the
/// client's port is one the node's own sockets may use), and hands a reply tuple whose flow is
/// over (reset, quiet past the timeout) to the next flow instead of running out of ports.
#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn nodeport_snat_keeps_a_client_port_of_its_range_and_reclaims_finished_flows() {
    use aya::maps::HashMap;
    use switchyard_abi::{
        NatEntry, NatKey, NodeConfig, CT_DIR_FORWARD, CT_DIR_REPLY, NAT_FLAG_RST,
    };

    const NODE: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);
    const ROUTER: Ipv4Addr = Ipv4Addr::new(10, 244, 1, 1);
    const REMOTE: Ipv4Addr = Ipv4Addr::new(10, 244, 2, 5);
    let pins = Pins(switchyard::paths::pin_dir(&format!(
        "t-snat-{}",
        std::process::id()
    )));
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    let config = NodeConfig {
        node_addr: addr_be(NODE),
        pod_cidr: addr_be(Ipv4Addr::new(10, 244, 1, 0)),
        cluster_cidr: addr_be(Ipv4Addr::new(10, 244, 0, 0)),
        service_cidr: addr_be(Ipv4Addr::new(10, 96, 0, 0)),
        pod_prefix: 24,
        cluster_prefix: 16,
        service_prefix: 16,
        pad: 0,
        vxlan_ifindex: 1,
        uplink_ifindex: 1,
        nodeport_min: 30000,
        nodeport_max: 32767,
        netns_cookie: 0,
        snat_port_min: switchyard_abi::SNAT_PORT_MIN,
        snat_port_max: switchyard_abi::SNAT_PORT_MAX,
        snat_attempts: 16,
        pad2: 0,
    };
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
    let reply = NatKey {
        saddr: addr_be(REMOTE),
        daddr: addr_be(ROUTER),
        sport: port_be(8080),
        dport: port_be(62000),
        proto: proto::TCP,
        dir: CT_DIR_REPLY,
        pad: [0; 2],
    };
    let forward = NatKey {
        saddr: addr_be(first),
        daddr: addr_be(REMOTE),
        sport: port_be(62000),
        dport: port_be(8080),
        proto: proto::TCP,
        dir: CT_DIR_FORWARD,
        pad: [0; 2],
    };
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

/// Recomputes the IPv4 header checksum of frame `p`.
fn fix_ip_checksum(p: &mut [u8]) {
    p[24..26].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&p[14..34]));
    p[24..26].copy_from_slice(&c.to_be_bytes());
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

/// An ICMP error (`kind`/`code`) from `src` to `dst` quoting the IP header and first 8 bytes of
/// frame `quoted`, with valid checksums.
fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
    let mut icmp = vec![kind, code, 0, 0, 0, 0, 0x05, 0xaa];
    icmp.extend_from_slice(&quoted[14..42]);
    let c = fold(sum16(&icmp));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());
    let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
    let mut ip = vec![0x45, 0xc0, 0, 0, 0, 0, 0, 0, 64, proto::ICMP, 0, 0];
    ip[2..4].copy_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    p.extend_from_slice(&ip);
    p.extend_from_slice(&icmp);
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
    let pins = Pins(switchyard::paths::pin_dir(&format!(
        "t-icmp-{}",
        std::process::id()
    )));
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
    let router = Ipv4Addr::new(10, 244, 9, 1);
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
    use switchyard_abi::CtKey;

    const CAPACITY: u32 = 1024;
    const ROUND: u16 = 150;
    const SYN: u8 = 0x02;
    const ACK: u8 = 0x10;
    const FIN_ACK: u8 = 0x11;
    let pins = Pins(switchyard::paths::pin_dir(&format!(
        "t-age-{}",
        std::process::id()
    )));
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
    let forward = CtKey {
        saddr: addr_be(CLIENT),
        daddr: addr_be(VIP),
        sport: port_be(idle.1),
        dport: port_be(80),
        proto: proto::TCP,
        dir: switchyard_abi::CT_DIR_FORWARD,
        pad: [0; 2],
    };
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
