//! `cargo xtask bench --quick` end to end: the driver it runs (`switchyard-bench run --quick`,
//! built by cargo for this test) builds its own three-node lab, measures every mode and
//! scenario, and removes the lab. The report must hold every mode and scenario with non-zero
//! figures from at least three repetitions, ratios where a baseline exists, and one PNG per
//! scenario. About 2.5 minutes.
use std::path::Path;
use std::process::Command;

use serde_json::Value;

const DATA_PATH_MODES: [&str; 11] = [
    "direct",
    "switchyard-clusterip",
    "switchyard-clusterip-per-packet",
    "switchyard-nodeport",
    "host-direct",
    "switchyard-host-clusterip",
    "direct-kernel",
    "iptables-clusterip",
    "iptables-nodeport",
    "nftables-clusterip",
    "nftables-nodeport",
];

fn scenario<'a>(report: &'a Value, id: &str) -> &'a Value {
    report["scenarios"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("report.json has no scenario {id}"))
}

fn figures<'a>(s: &'a Value, mode: &str) -> Vec<&'a Value> {
    s["figures"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["mode"] == mode)
        .collect()
}

#[test]
#[ignore = "needs root and the netns lab (about 2.5 minutes): run with cargo xtask test"]
fn quick_bench_reports_every_mode_and_scenario_with_real_figures() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = root.join("target/bench-test");
    let _ = std::fs::remove_dir_all(&out);
    // The lab lock is held by whoever runs the root-only tests (as for every e2e test).
    let status = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["run", "--quick", "--out"])
        .arg(&out)
        .status()
        .expect("start switchyard-bench");
    assert!(
        status.success(),
        "switchyard-bench run --quick failed: {status}"
    );

    let report: Value =
        serde_json::from_slice(&std::fs::read(out.join("report.json")).expect("report.json"))
            .expect("report.json is JSON");
    assert_eq!(report["quick"], true);
    let mut expect: Vec<(&str, Vec<&str>, Vec<&str>)> = Vec::new();
    for id in ["throughput", "latency_p50", "latency_p99", "conn_rate"] {
        expect.push((
            id,
            DATA_PATH_MODES.to_vec(),
            vec!["same node", "cross node"],
        ));
    }
    for id in [
        "scale_conn_rate",
        "scale_first_packet_p50",
        "scale_first_packet_p99",
        "scale_first_packet_unloaded_p50",
        "scale_first_packet_unloaded_p99",
    ] {
        expect.push((
            id,
            vec!["switchyard", "iptables", "nftables"],
            vec!["N=1", "N=1000"],
        ));
    }
    // The direct control switchyard's ClusterIP turns take in alternating slices.
    for id in ["throughput", "conn_rate"] {
        expect.push((
            id,
            vec!["direct (control)"],
            vec!["same node", "cross node"],
        ));
    }
    // The control switchyard's levels compare through.
    expect.push(("scale_conn_rate", vec!["direct"], vec!["N=1", "N=1000"]));
    for id in ["program_install", "program_update"] {
        expect.push((
            id,
            vec!["switchyard", "iptables", "nftables"],
            vec!["N=1000"],
        ));
    }
    expect.push(("control_loop", vec!["switchyard"], vec!["p50", "p99"]));
    for id in [
        "footprint_rss",
        "footprint_peak_rss",
        "footprint_cpu",
        "footprint_idle_cpu",
    ] {
        expect.push((id, vec!["switchyard"], vec![]));
    }
    for (id, modes, cases) in expect {
        let s = scenario(&report, id);
        for mode in modes {
            let figs = figures(s, mode);
            assert!(!figs.is_empty(), "{id}: no figures for {mode}");
            for case in &cases {
                assert!(
                    figs.iter().any(|f| f["case"] == *case),
                    "{id}: {mode} has no case {case}"
                );
            }
            for f in figs {
                let median = f["median"].as_f64().unwrap_or(0.0);
                let n = f["samples"].as_array().map_or(0, Vec::len);
                // Idle CPU may legitimately round to zero; everything else is a real figure.
                if id != "footprint_idle_cpu" {
                    assert!(
                        median > 0.0,
                        "{id}: {mode} {} has median {median}",
                        f["case"]
                    );
                }
                assert!(n >= 3, "{id}: {mode} {} has {n} samples", f["case"]);
                if !s["baseline"].is_null() {
                    assert!(
                        f["ratio"].as_f64().is_some_and(|r| r > 0.0),
                        "{id}: {mode} {} has no ratio",
                        f["case"]
                    );
                }
            }
        }
        let png = out.join(format!("{id}.png"));
        let bytes = std::fs::read(&png).unwrap_or_else(|_| panic!("{} missing", png.display()));
        assert_eq!(&bytes[1..4], b"PNG", "{} is not a PNG", png.display());
    }
    let md = std::fs::read_to_string(out.join("report.md")).expect("report.md");
    assert!(md.contains("## Headline"), "{md}");
    assert!(md.contains("| switchyard-clusterip |"), "{md}");
    // The modes of one phase take turns, so their ratios are paired round by round.
    let paired = figures(scenario(&report, "conn_rate"), "switchyard-clusterip");
    assert!(
        paired
            .iter()
            .all(|f| f["paired_rounds"].as_u64() >= Some(3)),
        "conn_rate: switchyard-clusterip ratios not paired: {paired:?}"
    );
    assert!(md.contains("(paired, "), "{md}");
    // ClusterIP's targets are paired with the control of their own turns.
    for case in ["same node", "cross node"] {
        let row = format!("| connections/s via ClusterIP, {case} (× direct, alternating) | ");
        let at = md
            .find(&row)
            .unwrap_or_else(|| panic!("no row {row}: {md}"));
        let line = md[at..].lines().next().unwrap_or_default();
        assert!(line.contains("(paired, "), "{line}");
    }
    assert!(
        md.contains("| connections/s at N=1000 (× at N=1, each level × direct in its rounds) | ")
            && !md.contains("in its rounds) | not measured"),
        "{md}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
