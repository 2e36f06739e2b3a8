//! The per-packet cost of `from_pod`, measured with BPF_PROG_TEST_RUN: the kernel runs the
//! program `repeat` times on one skb and returns the mean duration of a run in ns. It prints
//!
//! `from_pod ns/packet: direct X, clusterip-established Y (Y/X = r), clusterip-reply ...`
//!
//! and asserts only what must hold whatever the timings: the verdicts, and that the frames the
//! program leaves behind are translated correctly with valid checksums. Performance goals are not
//! asserted (the numbers are noisy on shared cores); run it a few times to compare builds:
//!
//! `flock /tmp/switchyard-lab.lock cargo test -p switchyard --test datapath_cost -- --ignored --nocapture`
//!
//! The kernel runs the program again and again on the *same* skb, so a frame the program rewrites
//! is fed back as rewritten. The measured frames are chosen so that every run takes the path
//! being measured:
//! - direct: `CLIENT → BACKEND` (established TCP) is only redirected, it stays the same frame;
//! - clusterip-established: two frontends whose backends are each other (`VIP:80 → VIP2:80`,
//!   `VIP2:80 → VIP:80`, both "pods" on this node): every run is an established ClusterIP packet
//!   (conntrack hit, DNAT of address and port, redirect to a local pod), alternating frontends;
//! - clusterip-reply: a backend's reply, source restored to the frontend. Two reply entries whose
//!   frontends are each other's backends (`R1:8000 → CLIENT`, restored to `R2:8000`, and back),
//!   both "pods" on one veth: every run is a reply-direction conntrack hit and a source rewrite.
//!   Measured twice: with the frontend in the reply entry (as the datapath records it), and
//!   without it (`nat_addr` 0, as an older datapath left it: a `REV_NAT` lookup per packet);
//! - clusterip-syn: fresh SYNs (one per client port, so each creates its conntrack entries), each
//!   timed in its own single run, averaged. A repeated SYN would hit the entry the first one
//!   created: it would measure a conntrack hit plus the reply-entry check, not a new flow.
//!   Their baseline, direct-syn, is a fresh SYN to the backend's address (one per client port,
//!   interleaved with them): single runs cost more than repeated ones (cold caches, the timer).
//! - established, one run per flow: an ACK of each of those flows (ClusterIP and direct,
//!   interleaved), each in a single run: every run meets other map entries, closer to what a
//!   packet of real traffic pays than the repeated runs on one skb.
//!
//! Needs root and bpffs: run with `cargo xtask test` or the command above.
use std::net::Ipv4Addr;

mod common;

use aya::maps::{HashMap, MapData};
use aya::programs::{SchedClassifier, TestRun, TestRunOptions};
use common::prog::*;
use switchyard::datapath::loader;
use switchyard::datapath::tables;
use switchyard::datapath::MapWriter;
use switchyard_abi::{
    addr_be, names, port_be, proto, Backend, CtKey, CtValue, RevNat, CT_DIR_REPLY,
};

/// The second frontend of the established ClusterIP measurement.
const VIP2: Ipv4Addr = Ipv4Addr::new(10, 96, 7, 9);
/// The ping-pong "backends" of the reply measurement (one veth, see [`reply_cost`]).
const R1: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 21);
/// See [`R1`].
const R2: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 22);
/// Runs of the repeated measurements.
const REPEAT: u32 = 200_000;
/// Filler Services of the scale measurement (the benchmark's largest level), 5 backends each.
const FILLERS: u32 = 100_000;
/// Rounds of the repeated measurements; each figure is its fastest round.
const ROUNDS: u32 = 7;
/// Fresh SYNs of the new-flow measurement.
const SYNS: u16 = 20_000;
/// Offset of the TCP flags in a frame of [`packet`].
const TCP_FLAGS_OFF: usize = 14 + 20 + 13;
/// Offset of the TCP checksum in a frame of [`packet`].
const TCP_CSUM_OFF: usize = 14 + 20 + 16;

/// The TCP frame of [`packet`] as an established connection's ACK, with a valid checksum.
fn ack(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16)) -> Vec<u8> {
    let mut p = packet(src, dst, proto::TCP, true);
    p[TCP_FLAGS_OFF] = 0x10;
    p[TCP_CSUM_OFF..TCP_CSUM_OFF + 2].copy_from_slice(&[0, 0]);
    let c = l4_checksum(src.0, dst.0, proto::TCP, &p[34..]);
    p[TCP_CSUM_OFF..TCP_CSUM_OFF + 2].copy_from_slice(&c.to_be_bytes());
    p
}

/// Runs `prog` `repeat` times on one skb made of `input` (arriving on the veth of its source):
/// the verdict of the last run, the frame as the last run left it, and the mean ns per run.
fn run_repeated(prog: &SchedClassifier, input: &[u8], repeat: u32) -> (u32, Vec<u8>, f64) {
    let mut ctx = [0u8; 48];
    ctx[36..40].copy_from_slice(&ingress_of(input).to_ne_bytes());
    let mut out = vec![0u8; input.len().max(256) + 64];
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(input);
    opts.data_out = Some(&mut out);
    opts.ctx_in = Some(&ctx);
    opts.repeat = repeat;
    let res = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
    out.truncate(res.data_size_out as usize);
    // The kernel reports the mean duration of one run.
    let ns = res.duration.as_nanos() as f64;
    (res.return_value, out, ns)
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn from_pod_cost_per_packet_is_measured_on_direct_and_clusterip_flows() {
    let pins = Pins::new("cost");
    let mut loaded = loader::load(&pins.0).expect("load the eBPF object");
    // The node's configuration, as the agent writes it (the service CIDR holds VIP and VIP2).
    let config = lab_node_config(Ipv4Addr::new(198, 18, 0, 11), Ipv4Addr::new(10, 244, 9, 0));
    loaded.config.set(0, config, 0).expect("config");
    clusterip_to_backend(&mut loaded);
    // The ping-pong frontends of the established measurement (rev-NAT ids 2 and 3).
    install(
        &mut loaded,
        (VIP, 8000),
        proto::TCP,
        (3, backend(VIP2, 8000, proto::TCP)),
        2,
        0,
    );
    install(
        &mut loaded,
        (VIP2, 8000),
        proto::TCP,
        (4, backend(VIP, 8000, proto::TCP)),
        3,
        0,
    );
    for front in [VIP, VIP2] {
        local_pod(&mut loaded, front);
    }
    // The ping-pong "backends" of the reply measurement: R2 sends from R1's veth too, so both
    // sources are owned by the veth the runs arrive on; rev-NAT ids 5 and 6 name each other.
    for (id, (from, to)) in [(5u32, (R1, R2)), (6, (R2, R1))] {
        local_pod_on(&mut loaded, from, veth_of(R1));
        let front = RevNat {
            addr: addr_be(to),
            port: port_be(8000),
            pad: 0,
        };
        loaded.rev_nat.put(id, front).expect("rev nat");
    }
    let mut ct: HashMap<MapData, CtKey, CtValue> =
        tables::open_pinned(&pins.0, names::CT).expect("open CT");
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);

    // The real thing first, once: a SYN and an ACK to VIP:80 reach BACKEND:8080.
    for frame in [
        packet((CLIENT, 41000), (VIP, 80), proto::TCP, true),
        ack((CLIENT, 41000), (VIP, 80)),
    ] {
        let (verdict, out) = run(prog, &frame);
        assert_eq!(verdict, TC_ACT_REDIRECT, "to the backend pod");
        assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080), "DNAT");
        assert_eq!((addr(&out, 26), port(&out, 34)), (CLIENT, 41000));
        assert_checksums(&out);
    }

    // (a) Direct established flow.
    let direct = ack((CLIENT, 42000), (BACKEND, 8080));
    let (verdict, out, direct_ns) = run_repeated(prog, &direct, REPEAT);
    assert_eq!(verdict, TC_ACT_REDIRECT, "direct: redirected to the pod");
    assert_eq!(out, direct, "a direct packet is not translated");

    // (b) Established ClusterIP flow: the SYNs create both frontends' conntrack entries, then
    // every run of the ACK is translated to the other frontend.
    for front in [VIP, VIP2] {
        let (verdict, out) = run(
            prog,
            &packet((CLIENT, 43000), (front, 8000), proto::TCP, true),
        );
        assert_eq!(verdict, TC_ACT_REDIRECT);
        assert_checksums(&out);
    }
    let est = ack((CLIENT, 43000), (VIP, 8000));
    let est_ns = ping_pong(prog, &est, Side::Destination, (VIP2, 8000));

    // (c) Replies, with the frontend in the reply entry and with a rev-NAT lookup.
    let mut reply_ns = reply_cost(&mut ct, prog, true);
    let mut reply_revnat_ns = reply_cost(&mut ct, prog, false);

    // Shared cores: the fastest of several interleaved rounds is each figure's cost with the
    // least interference, and every figure gets the same chances.
    let mut direct_ns = direct_ns;
    let mut est_ns = est_ns;
    for _ in 1..ROUNDS {
        direct_ns = direct_ns.min(run_repeated(prog, &direct, REPEAT).2);
        est_ns = est_ns.min(run_repeated(prog, &est, REPEAT).2);
        reply_ns = reply_ns.min(reply_cost(&mut ct, prog, true));
        reply_revnat_ns = reply_revnat_ns.min(reply_cost(&mut ct, prog, false));
    }

    // (d) New flows: fresh SYNs to VIP:80 and, as their baseline, to BACKEND:8080 directly,
    // one single run each, interleaved.
    let (mut syn_total, mut direct_syn_total) = (0.0, 0.0);
    for sport in 0..SYNS {
        let syn = packet((CLIENT, 20000 + sport), (VIP, 80), proto::TCP, true);
        let (verdict, out, ns) = run_repeated(prog, &syn, 1);
        assert_eq!(verdict, TC_ACT_REDIRECT, "new flow: redirected");
        assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080));
        if sport % 1000 == 0 {
            assert_checksums(&out);
        }
        syn_total += ns;
        let direct_syn = packet((CLIENT, 20000 + sport), (BACKEND, 9090), proto::TCP, true);
        let (verdict, out, ns) = run_repeated(prog, &direct_syn, 1);
        assert_eq!(verdict, TC_ACT_REDIRECT, "new direct flow: redirected");
        assert_eq!(out, direct_syn, "a direct SYN is not translated");
        direct_syn_total += ns;
    }
    let syn_ns = syn_total / f64::from(SYNS);
    let direct_syn_ns = direct_syn_total / f64::from(SYNS);

    // (d') The same flows' next packets: an ACK of each, one single run each, interleaved. Each
    // run meets another flow's entries, so it pays for the map entries it touches as a packet
    // of real traffic does (the repeated runs above find them in the cache).
    let (mut spread_total, mut direct_spread_total) = (0.0, 0.0);
    for sport in 0..SYNS {
        let (verdict, out, ns) = run_repeated(prog, &ack((CLIENT, 20000 + sport), (VIP, 80)), 1);
        assert_eq!(verdict, TC_ACT_REDIRECT, "established flow: redirected");
        assert_eq!((addr(&out, 30), port(&out, 36)), (BACKEND, 8080));
        spread_total += ns;
        let direct_ack = ack((CLIENT, 20000 + sport), (BACKEND, 9090));
        let (verdict, out, ns) = run_repeated(prog, &direct_ack, 1);
        assert_eq!(
            verdict, TC_ACT_REDIRECT,
            "established direct flow: redirected"
        );
        assert_eq!(out, direct_ack, "a direct packet is not translated");
        direct_spread_total += ns;
    }
    let spread_ns = spread_total / f64::from(SYNS);
    let direct_spread_ns = direct_spread_total / f64::from(SYNS);

    // (e) The established flows again with the benchmark's largest scale installed: the
    // program's work does not depend on how many Services the maps hold.
    fill(&mut loaded, FILLERS);
    let prog = classifier(&loaded, switchyard_abi::programs::FROM_POD);
    let (mut big_direct_ns, mut big_est_ns) = (f64::MAX, f64::MAX);
    for _ in 0..ROUNDS {
        big_direct_ns = big_direct_ns.min(run_repeated(prog, &direct, REPEAT).2);
        big_est_ns = big_est_ns.min(ping_pong(prog, &est, Side::Destination, (VIP2, 8000)));
    }

    println!(
        "from_pod ns/packet: direct {direct_ns:.0}, clusterip-established {est_ns:.0} \
         (Y/X = {:.2}), clusterip-reply {reply_ns:.0} ({:.2}), clusterip-reply via REV_NAT \
         {reply_revnat_ns:.0} ({:.2}); new flows: direct-syn {direct_syn_ns:.0}, clusterip-syn \
         {syn_ns:.0} ({:.2}); established, one run per flow: direct {direct_spread_ns:.0}, \
         clusterip {spread_ns:.0} ({:.2})",
        est_ns / direct_ns,
        reply_ns / direct_ns,
        reply_revnat_ns / direct_ns,
        syn_ns / direct_syn_ns,
        spread_ns / direct_spread_ns,
    );
    println!(
        "  with {FILLERS} more Services ({} endpoints): direct {big_direct_ns:.0} ({:.2} × before), \
         clusterip-established {big_est_ns:.0} ({:.2} × before)",
        FILLERS * 5,
        big_direct_ns / direct_ns,
        big_est_ns / est_ns,
    );
    println!(
        "  direct, clusterip-established and -reply: fastest of {ROUNDS} means of {REPEAT} runs on one skb; clusterip-syn: \
         means of {SYNS} fresh SYNs each (ClusterIP: new conntrack entries each), each timed in a \
         single run (includes the test timer's own overhead, ~tens of ns)"
    );
}

/// Mean ns of a reply translated on every run: `R1:8000 → CLIENT:44000` is restored to come from
/// `R2:8000` and the other way round (rev-NAT ids 5 and 6 name them), alternating. With `cached`
/// the reply entries (written into `ct` here) carry the frontend; without, they carry only the
/// rev-NAT id. Asserts the translation of both directions of the ping-pong and the checksums.
fn reply_cost(
    ct: &mut HashMap<MapData, CtKey, CtValue>,
    prog: &SchedClassifier,
    cached: bool,
) -> f64 {
    for (id, (from, to)) in [(5u32, (R1, R2)), (6, (R2, R1))] {
        let key = tcp_key((from, 8000), (CLIENT, 44000), CT_DIR_REPLY);
        let value = CtValue {
            rev_nat_id: id,
            nat_addr: if cached { addr_be(to) } else { 0 },
            nat_port: if cached { port_be(8000) } else { 0 },
            ..CtValue::default()
        };
        ct.insert(key, value, 0).expect("reply entry");
    }
    ping_pong(
        prog,
        &ack((R1, 8000), (CLIENT, 44000)),
        Side::Source,
        (R2, 8000),
    )
}

/// Which end of a ping-pong frame the program rewrites.
#[derive(Clone, Copy, Debug)]
enum Side {
    Source,
    Destination,
}

/// Mean ns of `frame` rewritten on every run between its `side` and `other`: asserts that every
/// run is redirected, that an even number of runs brings the frame back (the other end
/// untouched) and an odd number leaves it at `other`, with valid checksums both times.
fn ping_pong(prog: &SchedClassifier, frame: &[u8], side: Side, other: (Ipv4Addr, u16)) -> f64 {
    // Offsets of the rewritten end's address and port, and of the other end's.
    let ((a, p), (ka, kp)) = match side {
        Side::Source => ((26, 34), (30, 36)),
        Side::Destination => ((30, 36), (26, 34)),
    };
    let end = |out: &[u8], a, p| (addr(out, a), port(out, p));
    assert_eq!(REPEAT % 2, 0);
    let (verdict, out, ns) = run_repeated(prog, frame, REPEAT);
    assert_eq!(verdict, TC_ACT_REDIRECT, "{side:?} ping-pong: redirected");
    assert_eq!(
        end(&out, a, p),
        end(frame, a, p),
        "an even number of rewrites"
    );
    assert_eq!(
        end(&out, ka, kp),
        end(frame, ka, kp),
        "the other end untouched"
    );
    assert_checksums(&out);
    let (_, out, _) = run_repeated(prog, frame, REPEAT + 1);
    assert_eq!(end(&out, a, p), other, "an odd number of rewrites");
    assert_checksums(&out);
    ns
}

/// Installs `count` filler ClusterIP Services (10.100.0.0/16 and up, port 80, TCP), five
/// backends each (distinct addresses from 10.128.0.1), as the agent lays them out
/// ([`install_backends`]). Ids start above those of the measured frontends.
fn fill(loaded: &mut loader::Loaded, count: u32) {
    let first_vip = u32::from(Ipv4Addr::new(10, 100, 0, 1));
    let first_pod = u32::from(Ipv4Addr::new(10, 128, 0, 1));
    for i in 0..count {
        let vip = Ipv4Addr::from(first_vip + i);
        let backends: Vec<(u32, Backend)> = (1..=5)
            .map(|slot| {
                let pod = Ipv4Addr::from(first_pod + i * 5 + slot);
                (1_000 + i * 5 + slot, backend(pod, 8080, proto::TCP))
            })
            .collect();
        install_backends(loaded, (vip, 80), proto::TCP, &backends, 1_000 + i, 0);
    }
}
