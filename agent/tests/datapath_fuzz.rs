//! The programs on thousands of random and malformed frames through BPF_PROG_TEST_RUN, built
//! from valid TCP, UDP and ICMP packets to a ClusterIP (and replies and ICMP errors about its
//! flows) by mutations: bad IHL, truncated IP and L4 headers, fragments, IP options, zero and
//! odd checksums, wrong total lengths, random bytes, foreign sources.
//!
//! Invariants checked on every frame: the verdict is a TC action the programs use (OK, SHOT,
//! REDIRECT); a dropped frame created no conntrack, NAT or fragment entry; a translated frame
//! (an address changed) keeps every checksum that verified on the way in verified on the way
//! out. The cases come from a fixed seed, so a failure repeats.
//!
//! Needs root and bpffs (maps are pinned under a scratch directory): run with `cargo xtask test`.
mod common;

use std::cell::Cell;
use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use aya::Pod;
use common::prog::*;
use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use switchyard::datapath::{loader, tables};
use switchyard_abi::{names, proto, CtKey, CtValue, FragKey, FragValue, NatEntry, NatKey};

/// Frames fed to `from_pod`.
const CASES: u32 = 3_000;
/// The flow tables are emptied every so many cases, so they stay small to compare.
const CLEAR_EVERY: u32 = 64;

/// The valid packet a case starts from.
#[derive(Clone, Debug)]
enum Base {
    /// Client → ClusterIP, TCP SYN or UDP (with or without checksum).
    ToVip { l4: u8, udp_csum: bool },
    /// Backend → client: the reply of a flow to the ClusterIP.
    Reply { l4: u8 },
    /// ICMP echo request client → ClusterIP.
    Echo,
    /// ICMP port unreachable backend → client about a UDP datagram client → backend.
    Unreachable,
}

/// One change to the frame.
#[derive(Clone, Debug)]
enum Mutation {
    /// Sets the IHL nibble.
    Ihl(u8),
    /// Sets the version nibble.
    Version(u8),
    /// Cuts the frame to this many bytes (at least the Ethernet header).
    Truncate(usize),
    /// Sets the flags and fragment offset.
    Fragment { mf: bool, df: bool, offset: u16 },
    /// Inserts IP options (length rounded down to words, at most 40 bytes), fixing IHL and
    /// total length.
    Options(Vec<u8>),
    /// Zeroes the IPv4 header checksum.
    ZeroIpChecksum,
    /// Zeroes the L4 checksum.
    ZeroL4Checksum,
    /// Flips bits of a checksum byte (IPv4 header or L4).
    FlipChecksum { l4: bool, bits: u8 },
    /// Sets the total length.
    TotalLength(u16),
    /// Overwrites bytes at an offset.
    Overwrite { at: usize, bytes: Vec<u8> },
    /// Appends bytes past the datagram.
    Append(Vec<u8>),
    /// Sets the IP protocol.
    Proto(u8),
    /// Sets the source address.
    Source([u8; 4]),
    /// Sets the TCP data offset nibble.
    TcpDataOffset(u8),
}

/// One fuzz case.
#[derive(Clone, Debug)]
enum Case {
    /// A base packet (client port `40000 + port`), mutated, checksums recomputed if `refresh`.
    Mutated {
        base: Base,
        port: u16,
        mutations: Vec<Mutation>,
        refresh: bool,
    },
    /// Random bytes after an Ethernet header (IPv4 ethertype if `ipv4`).
    Random { ipv4: bool, bytes: Vec<u8> },
}

fn base() -> impl Strategy<Value = Base> {
    let l4 = prop_oneof![Just(proto::TCP), Just(proto::UDP)];
    prop_oneof![
        4 => (l4.clone(), any::<bool>()).prop_map(|(l4, udp_csum)| Base::ToVip { l4, udp_csum }),
        2 => l4.prop_map(|l4| Base::Reply { l4 }),
        1 => Just(Base::Echo),
        1 => Just(Base::Unreachable),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let bytes = |n| proptest::collection::vec(any::<u8>(), 0..n);
    prop_oneof![
        (0u8..16).prop_map(Mutation::Ihl),
        (0u8..16).prop_map(Mutation::Version),
        (0usize..80).prop_map(Mutation::Truncate),
        (
            any::<bool>(),
            any::<bool>(),
            prop_oneof![Just(0u16), 1u16..0x2000]
        )
            .prop_map(|(mf, df, offset)| Mutation::Fragment { mf, df, offset }),
        bytes(48).prop_map(Mutation::Options),
        Just(Mutation::ZeroIpChecksum),
        Just(Mutation::ZeroL4Checksum),
        (any::<bool>(), 1u8..=255).prop_map(|(l4, bits)| Mutation::FlipChecksum { l4, bits }),
        any::<u16>().prop_map(Mutation::TotalLength),
        (0usize..80, bytes(8)).prop_map(|(at, bytes)| Mutation::Overwrite { at, bytes }),
        bytes(32).prop_map(Mutation::Append),
        prop_oneof![
            Just(proto::TCP),
            Just(proto::UDP),
            Just(proto::ICMP),
            any::<u8>()
        ]
        .prop_map(Mutation::Proto),
        prop_oneof![
            Just(CLIENT.octets()),
            Just(BACKEND.octets()),
            any::<[u8; 4]>()
        ]
        .prop_map(Mutation::Source),
        (0u8..16).prop_map(Mutation::TcpDataOffset),
    ]
}

fn case() -> impl Strategy<Value = Case> {
    prop_oneof![
        9 => (
            base(),
            0u16..4,
            proptest::collection::vec(mutation(), 0..4),
            any::<bool>()
        )
            .prop_map(|(base, port, mutations, refresh)| Case::Mutated {
                base,
                port,
                mutations,
                refresh
            }),
        1 => (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..120))
            .prop_map(|(ipv4, bytes)| Case::Random { ipv4, bytes }),
    ]
}

/// The frame of `case`.
fn frame(case: &Case) -> Vec<u8> {
    match case {
        Case::Random { ipv4, bytes } => {
            let mut p = vec![0x02, 0, 0, 0, 0, 0x01, 0x02, 0, 0, 0, 0, 0x02, 0x08, 0x00];
            if !ipv4 {
                p[12..14].copy_from_slice(&[0x86, 0xdd]);
            }
            p.extend_from_slice(bytes);
            p
        }
        Case::Mutated {
            base,
            port,
            mutations,
            refresh,
        } => {
            let client = (CLIENT, 40000 + port);
            let mut p = match *base {
                Base::ToVip { l4, udp_csum } => packet(client, (VIP, 80), l4, udp_csum),
                Base::Reply { l4 } => packet((BACKEND, 8080), client, l4, true),
                Base::Echo => echo(CLIENT, VIP),
                Base::Unreachable => icmp_error(
                    BACKEND,
                    CLIENT,
                    3,
                    3,
                    &packet(client, (BACKEND, 8080), proto::UDP, true),
                ),
            };
            for m in mutations {
                mutate(&mut p, m);
            }
            if *refresh {
                refresh_checksums(&mut p);
            }
            p
        }
    }
}

/// An ICMP echo request with valid checksums.
fn echo(src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut p = packet((src, 0), (dst, 0), proto::UDP, false);
    p[23] = proto::ICMP;
    p[34..42].copy_from_slice(&[8, 0, 0, 0, 0x53, 0x59, 0, 1]);
    refresh_checksums(&mut p);
    p
}

/// The IPv4 header length the frame claims, clamped to the frame.
fn ihl_of(p: &[u8]) -> usize {
    (usize::from(p.get(14).copied().unwrap_or(0x45) & 0x0f) * 4)
        .max(20)
        .min(p.len().saturating_sub(14))
}

fn mutate(p: &mut Vec<u8>, m: &Mutation) {
    let set = |p: &mut Vec<u8>, at: usize, b: &[u8]| {
        for (i, v) in b.iter().enumerate() {
            if let Some(x) = p.get_mut(at + i) {
                *x = *v;
            }
        }
    };
    let l4_csum_at = |p: &Vec<u8>| {
        let l4 = 14 + ihl_of(p);
        match p.get(23).copied() {
            Some(proto::TCP) => l4 + 16,
            Some(proto::UDP) => l4 + 6,
            _ => l4 + 2,
        }
    };
    match m {
        Mutation::Ihl(v) => {
            if let Some(x) = p.get_mut(14) {
                *x = (*x & 0xf0) | v;
            }
        }
        Mutation::Version(v) => {
            if let Some(x) = p.get_mut(14) {
                *x = (*x & 0x0f) | (v << 4);
            }
        }
        Mutation::Truncate(n) => p.truncate((*n).max(14)),
        Mutation::Fragment { mf, df, offset } => {
            let v = (u16::from(*df) << 14) | (u16::from(*mf) << 13) | offset;
            set(p, 20, &v.to_be_bytes());
        }
        Mutation::Options(opts) => {
            let len = (opts.len() / 4 * 4).min(40);
            let at = (14 + ihl_of(p)).min(p.len());
            let room = 60usize.saturating_sub(ihl_of(p)) / 4 * 4;
            let len = len.min(room);
            p.splice(at..at, opts[..len].iter().copied());
            if p.len() >= 18 {
                p[14] = (p[14] & 0xf0) | ((ihl_of(p) + len) / 4).min(15) as u8;
                let total = u16::from_be_bytes([p[16], p[17]]).wrapping_add(len as u16);
                p[16..18].copy_from_slice(&total.to_be_bytes());
            }
        }
        Mutation::ZeroIpChecksum => set(p, 24, &[0, 0]),
        Mutation::ZeroL4Checksum => {
            let at = l4_csum_at(p);
            set(p, at, &[0, 0]);
        }
        Mutation::FlipChecksum { l4, bits } => {
            let at = if *l4 { l4_csum_at(p) } else { 24 };
            if let Some(x) = p.get_mut(at + 1) {
                *x ^= bits;
            }
        }
        Mutation::TotalLength(v) => set(p, 16, &v.to_be_bytes()),
        Mutation::Overwrite { at, bytes } => set(p, 14 + at, bytes),
        Mutation::Append(bytes) => p.extend_from_slice(bytes),
        Mutation::Proto(v) => set(p, 23, &[*v]),
        Mutation::Source(a) => set(p, 26, a),
        Mutation::TcpDataOffset(v) => {
            let at = 14 + ihl_of(p) + 12;
            if let Some(x) = p.get_mut(at) {
                *x = (*x & 0x0f) | (v << 4);
            }
        }
    }
}

/// Recomputes the IPv4 header checksum and the TCP/UDP/ICMP checksum where the frame holds
/// them (best effort on a malformed frame).
fn refresh_checksums(p: &mut [u8]) {
    if p.len() < 34 {
        return;
    }
    let ihl = usize::from(p[14] & 0x0f) * 4;
    if ihl >= 20 && p.len() >= 14 + ihl {
        p[24..26].copy_from_slice(&[0, 0]);
        let c = fold(sum16(&p[14..14 + ihl]));
        p[24..26].copy_from_slice(&c.to_be_bytes());
    }
    let Some((ihl, total)) = ip_lengths(p) else {
        return;
    };
    let (start, end) = (14 + ihl, 14 + total);
    let off = match p[23] {
        proto::TCP => 16,
        proto::UDP => 6,
        proto::ICMP => 2,
        _ => return,
    };
    if end < start + off + 2 {
        return;
    }
    if p[23] == proto::UDP && p[start + off..start + off + 2] == [0, 0] {
        return; // no checksum stays no checksum
    }
    p[start + off..start + off + 2].copy_from_slice(&[0, 0]);
    let c = if p[23] == proto::ICMP {
        fold(sum16(&p[start..end]))
    } else {
        l4_checksum(addr(p, 26), addr(p, 30), p[23], &p[start..end])
    };
    p[start + off..start + off + 2].copy_from_slice(&c.to_be_bytes());
}

/// Removes every entry of the hash map pinned as `name`.
fn clear<K: Pod + Eq + std::hash::Hash, V: Pod>(pins: &Pins, name: &'static str) {
    let mut map: HashMap<MapData, K, V> = tables::open_pinned(&pins.0, name).expect("open map");
    let keys: Vec<K> = map.keys().filter_map(Result::ok).collect();
    for k in keys {
        let _ = map.remove(&k);
    }
}

/// What the run saw, for the summary line.
#[derive(Default)]
struct Tally {
    cases: Cell<u32>,
    refused: Cell<u32>,
    ok: Cell<u32>,
    shot: Cell<u32>,
    redirect: Cell<u32>,
    translated: Cell<u32>,
    translated_verified: Cell<u32>,
}

fn bump(c: &Cell<u32>) {
    c.set(c.get() + 1);
}

/// Checks one case; see the module documentation.
fn check(
    prog: &aya::programs::SchedClassifier,
    pins: &Pins,
    case: &Case,
    tally: &Tally,
) -> Result<(), TestCaseError> {
    let n = tally.cases.get();
    bump(&tally.cases);
    if n.is_multiple_of(CLEAR_EVERY) {
        clear::<CtKey, CtValue>(pins, names::CT);
        clear::<NatKey, NatEntry>(pins, names::NAT);
        clear::<FragKey, FragValue>(pins, names::FRAGS);
    }
    let input = frame(case);
    let before = FlowKeys::read(&pins.0);
    let (verdict, out) = match try_run_on(prog, &input, ingress_of(&input)) {
        Ok(v) => v,
        Err(e) => {
            // The kernel runs no TC program on an IPv4 (IPv6) frame shorter than its fixed
            // header, and neither does the stack: nothing to test there.
            let l3 = match input[12..14] {
                [0x08, 0x00] => 20,
                [0x86, 0xdd] => 40,
                _ => 0,
            };
            prop_assert!(
                input.len() < 14 + l3,
                "BPF_PROG_TEST_RUN refused {input:02x?}: {e}"
            );
            bump(&tally.refused);
            return Ok(());
        }
    };
    match verdict {
        TC_ACT_OK => bump(&tally.ok),
        TC_ACT_SHOT => bump(&tally.shot),
        TC_ACT_REDIRECT => bump(&tally.redirect),
        v => prop_assert!(false, "verdict {v} is no TC action the programs use"),
    }
    if verdict == TC_ACT_SHOT {
        let after = FlowKeys::read(&pins.0);
        prop_assert!(
            after.within(&before),
            "a dropped frame created entries: {:?}",
            (
                after.ct.difference(&before.ct).collect::<Vec<_>>(),
                after.nat.difference(&before.nat).collect::<Vec<_>>(),
                after.frags.difference(&before.frags).collect::<Vec<_>>()
            )
        );
        return Ok(());
    }
    let translated = input.len() >= 34
        && out.len() >= 34
        && input[12..14] == [0x08, 0x00]
        && (input[26..34] != out[26..34]);
    if !translated {
        return Ok(());
    }
    bump(&tally.translated);
    let (ip_in, l4_in) = (ip_checksum_ok(&input), l4_checksum_ok(&input));
    if ip_in == Some(true) {
        prop_assert_eq!(
            ip_checksum_ok(&out),
            Some(true),
            "IPv4 header checksum of {:02x?}",
            out
        );
    }
    if l4_in == Some(true) {
        prop_assert_eq!(
            l4_checksum_ok(&out),
            Some(true),
            "L4 checksum of {:02x?}",
            out
        );
        if input[23] == proto::UDP && ip_lengths(&input).is_some() {
            let at = 14 + usize::from(input[14] & 0x0f) * 4 + 6;
            prop_assert_eq!(
                input[at..at + 2] == [0, 0],
                out[at..at + 2] == [0, 0],
                "a UDP checksum stays absent or present"
            );
        }
        if ip_in == Some(true) {
            bump(&tally.translated_verified);
        }
    }
    Ok(())
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn from_pod_survives_random_and_malformed_frames_and_keeps_its_tables_and_checksums_right() {
    let pins = Pins::new("fuzz");
    let sizes = loader::MapSizes {
        ct: 4096,
        nat: 4096,
        ..loader::MapSizes::default()
    };
    let mut loaded = loader::load_sized(&pins.0, &sizes).expect("load the eBPF object");
    clusterip_to_backend(&mut loaded);
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    let config = Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    };
    let mut runner =
        TestRunner::new_with_rng(config, TestRng::deterministic_rng(RngAlgorithm::ChaCha));
    let tally = Tally::default();
    let result = runner.run(&case(), |c| check(prog, &pins, &c, &tally));
    println!(
        "from_pod: {} frames ({} shorter than an IP header, refused by the kernel; {} OK, {} SHOT, \
         {} REDIRECT); {} translated, {} of them with every checksum verified before and after",
        tally.cases.get(),
        tally.refused.get(),
        tally.ok.get(),
        tally.shot.get(),
        tally.redirect.get(),
        tally.translated.get(),
        tally.translated_verified.get()
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(
        tally.translated_verified.get() >= CASES / 10,
        "enough translated frames had valid checksums to prove something"
    );
}
