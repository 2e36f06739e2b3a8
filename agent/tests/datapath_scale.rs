//! The benchmark's scale in the kernel's maps: 100,000 single-port ClusterIP Services with 2–8
//! endpoints each (500,000 endpoints, every one a distinct pod address) are planned and written
//! into freshly loaded pinned maps by the agent's own service sync, and all of them fit: one
//! rev-NAT id per frontend (most beyond 16 bits), one `BACKENDS` entry per endpoint, a header and
//! a slot per endpoint in `SERVICES`. Prints how long the first (full) sync and a resync took and
//! what `bpftool` says the maps take in kernel memory.
//!
//! Needs root and bpffs; slow in a debug build (a full sync takes ~15 s, ~4 s in release): run
//! alone with
//! `flock /tmp/switchyard-lab.lock cargo test -p switchyard --test datapath_scale -- --ignored --nocapture`.
use std::net::Ipv4Addr;
use std::time::Instant;

mod common;

use common::prog::Pins;
use switchyard::datapath::services::{ServiceMaps, ServiceSync};
use switchyard::datapath::{loader, plan::MAX_REV_NAT_ID, KernelServices};
use switchyard::model::{BackendAddr, BackendSpec, Desired, Frontend, FrontendSpec, Proto};
use switchyard_abi::names;

const SERVICES: u32 = 100_000;

/// The benchmark's Services: `fill-i` at 10.96.0.0/12 with `2 + i % 7` endpoints, each at its
/// own address from 10.128.0.1 on (500,000 of them need more than 10.244.0.0/16).
fn desired() -> (Desired, usize) {
    let mut d = Desired::default();
    let mut next_pod = u32::from(Ipv4Addr::new(10, 128, 0, 1));
    let mut endpoints = 0;
    for i in 0..SERVICES {
        let vip = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 0, 10)) + i);
        let backends: Vec<BackendSpec> = (0..2 + i % 7)
            .map(|_| {
                next_pod += 1;
                BackendSpec {
                    addr: BackendAddr {
                        ip: Ipv4Addr::from(next_pod),
                        port: 8080,
                        proto: Proto::Tcp,
                    },
                    terminating: false,
                    node_ip: None,
                }
            })
            .collect();
        endpoints += backends.len();
        d.frontends.insert(
            Frontend {
                ip: vip,
                port: 80,
                proto: Proto::Tcp,
            },
            FrontendSpec {
                backends,
                service: format!("bench/fill-{i}:http"),
                ..Default::default()
            },
        );
    }
    (d, endpoints)
}

/// `bpftool map show pinned` of map `name` in `pins`.
fn bpftool(pins: &Pins, name: &str) -> String {
    let out = std::process::Command::new("bpftool")
        .args(["map", "show", "pinned"])
        .arg(pins.0.join(name))
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_else(|e| format!("bpftool: {e}"));
    out.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The memlock bytes `bpftool` reports in one of its lines.
fn memlock(line: &str) -> u64 {
    line.split_whitespace()
        .skip_while(|w| *w != "memlock")
        .nth(1)
        .and_then(|b| b.trim_end_matches('B').parse().ok())
        .unwrap_or(0)
}

#[test]
#[ignore = "needs root and bpffs; slow: run alone with --ignored --nocapture"]
fn a_hundred_thousand_services_with_half_a_million_endpoints_fit_the_maps() {
    let pins = Pins::new("scale");
    let loaded = loader::load(&pins.0).expect("load the eBPF object");
    let total =
        |pins: &Pins| -> u64 { names::ALL.iter().map(|n| memlock(&bpftool(pins, n))).sum() };
    let empty = total(&pins);
    let mut sync: KernelServices = ServiceSync::open(ServiceMaps {
        backends: loaded.backends,
        rev_nat: loaded.rev_nat,
        services: loaded.services,
        affinity_match: loaded.affinity_match,
        source_ranges: loaded.source_ranges,
    })
    .expect("open the service maps");
    let (d, endpoints) = desired();
    assert!((499_000..=501_000).contains(&endpoints), "{endpoints}");

    let started = Instant::now();
    let report = sync.sync_all(&d).expect("plan");
    let first = started.elapsed();
    assert!(report.complete(), "everything fits: {report:?}");
    let p = sync.programmed();
    assert_eq!(p.rev_nat.len(), SERVICES as usize);
    assert_eq!(p.backends.len(), endpoints);
    assert_eq!(p.services.len(), SERVICES as usize + endpoints);
    let highest = *p.rev_nat.keys().max().expect("ids");
    assert!(highest > u32::from(u16::MAX) && highest <= MAX_REV_NAT_ID);

    let started = Instant::now();
    let report = sync.sync_all(&d).expect("plan again");
    let resync = started.elapsed();
    assert!(report.complete());

    eprintln!("{SERVICES} Services, {endpoints} endpoints, highest rev-NAT id {highest}");
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    eprintln!("first full sync {first:?}, unchanged full resync {resync:?} ({build} build)");
    for name in names::ALL {
        eprintln!("  {}", bpftool(&pins, name));
    }
    eprintln!(
        "memlock of all maps: {} MiB empty, {} MiB holding the Services",
        empty >> 20,
        total(&pins) >> 20
    );
    drop(sync);
    drop(loaded.ebpf);
}
