//! Helpers of the tests that run the programs on crafted frames with BPF_PROG_TEST_RUN: frames
//! with correct checksums, checksum verification, scratch pins (removed on drop, also when the
//! test fails), frontends and local pods written into the maps, and test runs on a pod's veth.
//!
//! Invariant of the test veths: pod `ip` sits behind host veth ifindex [`veth_of`]`(ip)`, and
//! [`run`] feeds a frame to a program as if it arrived on the veth of its IPv4 source (the
//! `from_pod` source validation checks exactly that), [`run_on`] on any ifindex.
use std::net::Ipv4Addr;
use std::path::PathBuf;

use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use switchyard::datapath::loader;
use switchyard::datapath::MapWriter;
use switchyard_abi::{
    addr_be, port_be, proto, Backend, CtKey, LocalPod, RevNat, ServiceKey, ServiceValue,
};

/// TC verdict: continue.
pub const TC_ACT_OK: u32 = 0;
/// TC verdict: drop.
pub const TC_ACT_SHOT: u32 = 2;
/// TC verdict: redirected.
pub const TC_ACT_REDIRECT: u32 = 7;

/// Folds a ones'-complement sum and complements it.
pub fn fold(mut sum: u32) -> u16 {
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Ones'-complement sum of `bytes` as 16-bit big-endian words (odd length padded with 0).
pub fn sum16(bytes: &[u8]) -> u32 {
    bytes
        .chunks(2)
        .map(|c| (u32::from(c[0]) << 8) | u32::from(*c.get(1).unwrap_or(&0)))
        .sum()
}

/// Checksum over an L4 segment with the IPv4 pseudo header.
pub fn l4_checksum(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, segment: &[u8]) -> u16 {
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&src.octets());
    pseudo.extend_from_slice(&dst.octets());
    pseudo.extend_from_slice(&[0, proto]);
    pseudo.extend_from_slice(&(segment.len() as u16).to_be_bytes());
    fold(sum16(&pseudo) + sum16(segment))
}

/// An Ethernet + IPv4 + TCP SYN (or UDP datagram) with correct checksums.
pub fn packet(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), l4: u8, udp_csum: bool) -> Vec<u8> {
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

/// The IPv4 address at byte `off` of `p`.
pub fn addr(p: &[u8], off: usize) -> Ipv4Addr {
    Ipv4Addr::new(p[off], p[off + 1], p[off + 2], p[off + 3])
}

/// The port at byte `off` of `p`.
pub fn port(p: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([p[off], p[off + 1]])
}

/// Recomputes the IPv4 header checksum of frame `p` (a 20-byte header).
pub fn fix_ip_checksum(p: &mut [u8]) {
    p[24..26].copy_from_slice(&[0, 0]);
    let c = fold(sum16(&p[14..34]));
    p[24..26].copy_from_slice(&c.to_be_bytes());
}

/// The IPv4 header length and total length of frame `p`, if they are consistent with each
/// other and with the frame.
pub fn ip_lengths(p: &[u8]) -> Option<(usize, usize)> {
    if p.len() < 34 {
        return None;
    }
    let ihl = usize::from(p[14] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([p[16], p[17]]));
    (ihl >= 20 && total >= ihl && p.len() >= 14 + total).then_some((ihl, total))
}

/// Whether the IPv4 header checksum of frame `p` verifies (`None`: no consistent header).
pub fn ip_checksum_ok(p: &[u8]) -> Option<bool> {
    let (ihl, _) = ip_lengths(p)?;
    Some(fold(sum16(&p[14..14 + ihl])) == 0)
}

/// Whether the TCP, UDP or ICMP checksum of frame `p` verifies over the whole datagram
/// (`None`: no consistent header, another protocol, a fragment, or a header cut short). A UDP
/// checksum of 0 means none and verifies.
pub fn l4_checksum_ok(p: &[u8]) -> Option<bool> {
    let (ihl, total) = ip_lengths(p)?;
    if u16::from_be_bytes([p[20], p[21]]) & 0x3fff != 0 {
        return None;
    }
    let l4 = p[23];
    let seg = &p[14 + ihl..14 + total];
    let min = match l4 {
        proto::TCP => 20,
        proto::UDP => 8,
        proto::ICMP => 8,
        _ => return None,
    };
    if seg.len() < min {
        return None;
    }
    if l4 == proto::ICMP {
        return Some(fold(sum16(seg)) == 0);
    }
    if l4 == proto::UDP && seg[6..8] == [0, 0] {
        return Some(true);
    }
    let mut pseudo = Vec::new();
    pseudo.extend_from_slice(&p[26..34]);
    pseudo.extend_from_slice(&[0, l4]);
    pseudo.extend_from_slice(&(seg.len() as u16).to_be_bytes());
    Some(fold(sum16(&pseudo) + sum16(seg)) == 0)
}

/// What is wrong with the checksums of IPv4 frame `p` (header of any length, TCP or UDP
/// segment up to the IP total length), or `None` if they verify.
pub fn checksum_problem(p: &[u8]) -> Option<String> {
    match (ip_checksum_ok(p), l4_checksum_ok(p)) {
        (None, _) => Some("inconsistent IPv4 lengths".into()),
        (Some(false), _) => Some("IPv4 header checksum".into()),
        (_, Some(false)) => Some(format!("L4 checksum (proto {})", p[23])),
        _ => None,
    }
}

/// An ICMP error (`kind`/`code`) from `src` to `dst` quoting the IP header and first 8 bytes of
/// frame `quoted`, with valid checksums.
pub fn icmp_error(src: Ipv4Addr, dst: Ipv4Addr, kind: u8, code: u8, quoted: &[u8]) -> Vec<u8> {
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

/// Asserts the IPv4 header and L4 checksums of `p` verify.
pub fn assert_checksums(p: &[u8]) {
    if let Some(problem) = checksum_problem(p) {
        panic!("{problem}");
    }
}

/// Scratch pins of one test (`/sys/fs/bpf/switchyard/<node>`), removed on drop.
pub struct Pins(pub PathBuf);

impl Pins {
    /// Pins for node `t-<name>-<pid>`.
    pub fn new(name: &str) -> Self {
        Pins(switchyard::paths::pin_dir(&Self::node(name)))
    }

    /// The node name of [`Pins::new`]`(name)` (what `inspect` takes).
    pub fn node(name: &str) -> String {
        format!("t-{name}-{}", std::process::id())
    }
}

impl Drop for Pins {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The ifindex the tests give the host veth of pod `ip`.
pub fn veth_of(ip: Ipv4Addr) -> u32 {
    1_000 + (u32::from(ip) & 0xffff)
}

/// Puts pod `ip` into `LOCAL_PODS` behind veth [`veth_of`]`(ip)`. Its MACs are the ones
/// [`packet`] writes, so a frame redirected to it keeps its Ethernet header.
pub fn local_pod(loaded: &mut loader::Loaded, ip: Ipv4Addr) {
    local_pod_on(loaded, ip, veth_of(ip));
}

/// Puts pod `ip` into `LOCAL_PODS` behind veth `ifindex` (several pods may share one, so that
/// frames from any of them pass `from_pod`'s source check on it), MACs as in [`local_pod`].
pub fn local_pod_on(loaded: &mut loader::Loaded, ip: Ipv4Addr, ifindex: u32) {
    let pod = LocalPod {
        ifindex,
        pod_mac: [0x02, 0, 0, 0, 0, 0x01],
        host_mac: [0x02, 0, 0, 0, 0, 0x02],
    };
    loaded.local_pods.put(addr_be(ip), pod).expect("local pod");
}

/// Runs `prog` on `input` as if it arrived on the veth of its IPv4 source ([`veth_of`]; ifindex
/// 0 for a frame too short to have one): the verdict and the frame as the program left it.
pub fn run(prog: &SchedClassifier, input: &[u8]) -> (u32, Vec<u8>) {
    run_on(prog, input, ingress_of(input))
}

/// The veth frame `input` arrives on in [`run`]: its IPv4 source's ([`veth_of`]), 0 for a
/// frame too short to have one.
pub fn ingress_of(input: &[u8]) -> u32 {
    if input.len() >= 30 {
        veth_of(addr(input, 26))
    } else {
        0
    }
}

/// Runs `prog` on `input` arriving on ifindex `ingress` (`__sk_buff.ingress_ifindex`).
pub fn run_on(prog: &SchedClassifier, input: &[u8], ingress: u32) -> (u32, Vec<u8>) {
    try_run_on(prog, input, ingress).expect("BPF_PROG_TEST_RUN")
}

/// [`run_on`], with the kernel's refusal to run (a frame it deems too short) as `Err`.
pub fn try_run_on(
    prog: &SchedClassifier,
    input: &[u8],
    ingress: u32,
) -> Result<(u32, Vec<u8>), aya::programs::ProgramError> {
    // `struct __sk_buff` up to `cb`: the kernel takes `ingress_ifindex` (offset 36) from it.
    let mut ctx = [0u8; 48];
    ctx[36..40].copy_from_slice(&ingress.to_ne_bytes());
    let mut out = vec![0u8; input.len().max(256) + 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    let res = prog.test_run(opts)?;
    out.truncate(res.data_size_out as usize);
    Ok((res.return_value, out))
}

/// The classifier program `name` of the loaded object.
pub fn classifier<'a>(loaded: &'a loader::Loaded, name: &str) -> &'a SchedClassifier {
    loaded
        .ebpf
        .program(name)
        .expect("program")
        .try_into()
        .expect("classifier")
}

/// Programs frontend `front` (protocol `p`, service flags `flags`) with the single backend
/// `backend` under backend id `id` and rev-NAT id `rev_nat_id`.
pub fn install(
    loaded: &mut loader::Loaded,
    front: (Ipv4Addr, u16),
    p: u8,
    backend: (u32, Backend),
    rev_nat_id: u32,
    flags: u8,
) {
    install_backends(loaded, front, p, &[backend], rev_nat_id, flags);
}

/// Programs frontend `front` (protocol `p`, service flags `flags`) with `backends` (id,
/// backend) in slots 1..=n under rev-NAT id `rev_nat_id`, as the agent lays it out: rev-NAT
/// entry, backends, slots, then the header (slot 0).
pub fn install_backends(
    loaded: &mut loader::Loaded,
    front: (Ipv4Addr, u16),
    p: u8,
    backends: &[(u32, Backend)],
    rev_nat_id: u32,
    flags: u8,
) {
    let rev = RevNat {
        addr: addr_be(front.0),
        port: port_be(front.1),
        pad: 0,
    };
    loaded.rev_nat.put(rev_nat_id, rev).expect("rev nat");
    let key = |slot| ServiceKey::new(addr_be(front.0), port_be(front.1), p, slot);
    for (slot, &(id, backend)) in (1u16..).zip(backends) {
        loaded.backends.put(id, backend).expect("backend");
        let value = ServiceValue {
            backend_id: id,
            rev_nat_id,
            ..Default::default()
        };
        loaded.services.put(key(slot), value).expect("slot");
    }
    let header = ServiceValue {
        count: backends.len() as u16,
        rev_nat_id,
        flags,
        ..Default::default()
    };
    loaded.services.put(key(0), header).expect("header");
}

/// Backend `ip:port` for protocol `p`, on this node.
pub fn backend(ip: Ipv4Addr, port: u16, p: u8) -> Backend {
    Backend {
        addr: addr_be(ip),
        port: port_be(port),
        proto: p,
        state: 0,
        node_addr: 0,
    }
}

/// Counter `name` of the datapath pinned for node `node`, summed over CPUs.
pub fn counter(node: &str, name: &str) -> u64 {
    switchyard::datapath::inspect::stats(node)
        .expect("read STATS")
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| v)
        .unwrap_or_else(|| panic!("no counter {name}"))
}

/// The keys of the flow tables a packet may create entries in: conntrack, source NAT, and
/// translated fragmented datagrams.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct FlowKeys {
    /// `CT` keys.
    pub ct: std::collections::HashSet<switchyard_abi::CtKey>,
    /// `NAT` keys.
    pub nat: std::collections::HashSet<switchyard_abi::NatKey>,
    /// `FRAGS` keys.
    pub frags: std::collections::HashSet<switchyard_abi::FragKey>,
}

impl FlowKeys {
    /// The keys in the tables pinned in `pin_dir`.
    pub fn read(pin_dir: &std::path::Path) -> Self {
        use aya::maps::{HashMap, MapData};
        use switchyard::datapath::tables;
        use switchyard_abi::{capacity, names, FragKey, FragValue};

        let frags: HashMap<MapData, FragKey, FragValue> =
            tables::open_pinned(pin_dir, names::FRAGS).expect("open FRAGS");
        FlowKeys {
            ct: tables::conntrack(pin_dir)
                .expect("read CT")
                .into_keys()
                .collect(),
            nat: tables::nat(pin_dir)
                .expect("read NAT")
                .into_keys()
                .collect(),
            frags: tables::read(&frags, names::FRAGS, capacity::FRAGS)
                .expect("read FRAGS")
                .into_keys()
                .collect(),
        }
    }

    /// Whether every key of `self` is in `other`: no entry was created between them.
    pub fn within(&self, other: &FlowKeys) -> bool {
        self.ct.is_subset(&other.ct)
            && self.nat.is_subset(&other.nat)
            && self.frags.is_subset(&other.frags)
    }
}

/// The client pod of the crafted flows.
pub const CLIENT: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 2);
/// The backend pod, on the same node.
pub const BACKEND: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 3);
/// The ClusterIP [`clusterip_to_backend`] programs.
pub const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 7);

/// Programs `VIP:80` for TCP (backend id 1) and UDP (id 2), rev-NAT id 1, to
/// `BACKEND:8080`, and registers `CLIENT` and `BACKEND` as local pods behind their veths.
pub fn clusterip_to_backend(loaded: &mut loader::Loaded) {
    for (id, p) in [(1u32, proto::TCP), (2, proto::UDP)] {
        install(loaded, (VIP, 80), p, (id, backend(BACKEND, 8080, p)), 1, 0);
    }
    for pod in [CLIENT, BACKEND] {
        local_pod(loaded, pod);
    }
}

/// The configuration the agent writes for a lab node at `node_addr` with pod CIDR
/// `pod_cidr`/24: cluster 10.244.0.0/16, services 10.96.0.0/16, NodePorts 30000–32767, the
/// default masquerade ports, `vxlan_ifindex` and `uplink_ifindex` 1.
pub fn lab_node_config(node_addr: Ipv4Addr, pod_cidr: Ipv4Addr) -> switchyard_abi::NodeConfig {
    switchyard_abi::NodeConfig {
        node_addr: addr_be(node_addr),
        pod_cidr: addr_be(pod_cidr),
        cluster_cidr: addr_be(Ipv4Addr::new(10, 244, 0, 0)),
        service_cidr: addr_be(Ipv4Addr::new(10, 96, 0, 0)),
        pod_prefix: 24,
        cluster_prefix: 16,
        service_prefix: 16,
        vxlan_ifindex: 1,
        uplink_ifindex: 1,
        nodeport_min: 30000,
        nodeport_max: 32767,
        snat_port_min: switchyard_abi::SNAT_PORT_MIN,
        snat_port_max: switchyard_abi::SNAT_PORT_MAX,
        snat_attempts: 16,
        ..Default::default()
    }
}

/// The `CT` (or `NAT`) key of a TCP packet `src → dst` in direction `dir` (`CT_DIR_*`).
pub fn tcp_key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), dir: u8) -> CtKey {
    CtKey {
        saddr: addr_be(src.0),
        daddr: addr_be(dst.0),
        sport: port_be(src.1),
        dport: port_be(dst.1),
        proto: proto::TCP,
        dir,
        pad: [0; 2],
    }
}
