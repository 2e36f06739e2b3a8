//! The performance targets (issue #16) read off one run: every figure is a ratio (or an
//! absolute budget) measured in that run, with whether it meets its target. A ratio of two
//! modes measured by turns is the median of their per-round ratios ([`ratio_of`]), else
//! median over median.
//!
//! Invariant: a target whose figures the run did not measure is listed as "not measured",
//! never as met.
use std::fmt::Write as _;

use crate::datapath::{CONTROL, OUTSIDE_CONTROL};
use crate::report::{fmt_num, ratio_of, Ratio, Report};

/// Which way a target bounds its figure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bound {
    /// The figure must be at least the target.
    AtLeast,
    /// The figure must be at most the target.
    AtMost,
    /// The figure must stay below the target.
    Below,
}

/// One line of the targets table.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// What is compared.
    pub figure: String,
    /// The measured value (a ratio, or a figure with its unit); `None`: not measured.
    pub value: Option<f64>,
    /// The unit printed after the value ("×" for ratios).
    pub unit: &'static str,
    /// The bound, as text.
    pub target: String,
    /// Whether the value meets the bound.
    pub met: Option<bool>,
    /// Rounds a ratio was paired over; 0: median over median, or not a ratio.
    pub paired_rounds: usize,
}

fn target(
    figure: String,
    value: Option<f64>,
    unit: &'static str,
    bound: Bound,
    limit: f64,
) -> Target {
    let met = value.map(|v| match bound {
        Bound::AtLeast => v >= limit,
        Bound::AtMost => v <= limit,
        Bound::Below => v < limit,
    });
    let op = match bound {
        Bound::AtLeast => "≥",
        Bound::AtMost => "≤",
        Bound::Below => "<",
    };
    Target {
        figure,
        value,
        unit,
        target: format!("{op} {limit}{unit}"),
        met,
        paired_rounds: 0,
    }
}

/// A ratio target: [`target`] of `r`'s value, keeping how it was taken.
fn ratio_target(figure: String, r: Option<Ratio>, bound: Bound, limit: f64) -> Target {
    Target {
        paired_rounds: r.map_or(0, |r| r.paired_rounds),
        ..target(figure, r.map(|r| r.value), "×", bound, limit)
    }
}

/// The median of `mode` in `case` of scenario `id`.
fn median(r: &Report, id: &str, mode: &str, case: &str) -> Option<f64> {
    r.scenario(id)?.get(mode, case).map(|f| f.summary.median)
}

/// `a / b` of two figures (mode, case) of scenario `id` ([`ratio_of`]).
fn ratio(r: &Report, id: &str, a: (&str, &str), b: (&str, &str)) -> Option<Ratio> {
    let s = r.scenario(id)?;
    ratio_of(s.get(a.0, a.1)?, s.get(b.0, b.1)?)
}

/// switchyard's connections/s at level `n` relative to N=1. Levels run minutes apart, so each
/// is taken as a paired ratio to the direct pod-IP rate measured in the same rounds and the two
/// are divided: the machine's drift between the levels cancels. Median over median when
/// either level lacks paired direct figures.
fn flatness(r: &Report, n: &str) -> Option<Ratio> {
    let to_direct = |lvl| ratio(r, "scale_conn_rate", ("switchyard", lvl), ("direct", lvl));
    match (to_direct(n), to_direct("N=1")) {
        (Some(a), Some(b)) if a.paired_rounds > 0 && b.paired_rounds > 0 && b.value != 0.0 => {
            Some(Ratio {
                value: a.value / b.value,
                paired_rounds: a.paired_rounds.min(b.paired_rounds),
            })
        }
        _ => ratio(
            r,
            "scale_conn_rate",
            ("switchyard", n),
            ("switchyard", "N=1"),
        ),
    }
}

/// The scale levels (`N=…`) of scenario `id` that `mode` was measured at.
fn levels(r: &Report, id: &str, mode: &str) -> Vec<String> {
    r.scenario(id).map_or_else(Vec::new, |s| {
        s.cases()
            .into_iter()
            .filter(|c| s.get(mode, c).is_some())
            .collect()
    })
}

/// The footprint case of level `n` ("N=10000, 50003 endpoints").
fn footprint_case(r: &Report, n: usize) -> Option<String> {
    let prefix = format!("N={n},");
    r.scenario("footprint_rss")?
        .cases()
        .into_iter()
        .find(|c| c.starts_with(&prefix))
}

/// Every target of the issue, read off `r`.
pub fn targets(r: &Report) -> Vec<Target> {
    use Bound::*;
    let mut out = Vec::new();
    // switchyard's ClusterIP turns carry their own direct control, taken in alternating
    // slices (datapath::CONTROL): the ClusterIP figures are paired with it.
    for case in ["same node", "cross node"] {
        let d = (CONTROL, case);
        out.push(ratio_target(
            format!("connections/s via ClusterIP, {case} (× direct, alternating)"),
            ratio(r, "conn_rate", ("switchyard-clusterip", case), d),
            AtLeast,
            0.95,
        ));
    }
    for n in levels(r, "scale_conn_rate", "nftables") {
        let sy = ("switchyard", n.as_str());
        out.push(ratio_target(
            format!("connections/s at {n} (× nftables mode)"),
            ratio(r, "scale_conn_rate", sy, ("nftables", &n)),
            AtLeast,
            1.2,
        ));
        out.push(ratio_target(
            format!("connections/s at {n} (× iptables mode)"),
            ratio(r, "scale_conn_rate", sy, ("iptables", &n)),
            AtLeast,
            2.0,
        ));
    }
    // The figure is the loaded one (connect time in the connection-rate runs); the
    // unloaded one is the SYN's path alone.
    for (p50, how) in [
        ("scale_first_packet_p50", "under load"),
        ("scale_first_packet_unloaded_p50", "unloaded"),
    ] {
        if let Some(n) = levels(r, p50, "nftables").last() {
            out.push(ratio_target(
                format!("first-packet p50 at {n}, {how} (× nftables mode)"),
                ratio(r, p50, ("switchyard", n), ("nftables", n)),
                AtMost,
                0.8,
            ));
        }
    }
    for (mode, label) in [
        ("switchyard-clusterip", "ClusterIP"),
        ("switchyard-nodeport", "NodePort"),
    ] {
        // NodePort's client is sy-ext: the baseline is the client pod's direct
        // figure, taken in its own turn (the outside client's own path follows below).
        let (base, how) = match mode {
            "switchyard-clusterip" => (CONTROL, "direct, alternating"),
            _ => ("direct", "direct"),
        };
        for case in ["same node", "cross node"] {
            out.push(ratio_target(
                format!("TCP throughput via {label}, {case} (× {how})"),
                ratio(r, "throughput", (mode, case), (base, case)),
                AtLeast,
                0.95,
            ));
        }
    }
    // The same figure against the outside client's own path to the pod, taken in alternating
    // turns (datapath::OUTSIDE_CONTROL): what the NodePort translation costs that client.
    out.push(ratio_target(
        "TCP throughput via NodePort, same node (× direct from outside, alternating)".into(),
        ratio(
            r,
            "throughput",
            ("switchyard-nodeport", "same node"),
            (OUTSIDE_CONTROL, "same node"),
        ),
        AtLeast,
        0.95,
    ));
    // The default (pods' TCP socket-balanced) and the per-packet path a pod's UDP, hairpin
    // and `--socket-lb host-only` take.
    for (mode, path) in [
        ("switchyard-clusterip", ""),
        ("switchyard-clusterip-per-packet", " (per-packet path)"),
    ] {
        for (id, what) in [
            ("from_pod_ns_rr", "established"),
            ("from_pod_ns_conn", "new connections"),
        ] {
            for case in ["same node", "cross node"] {
                out.push(ratio_target(
                    format!("from_pod ns/packet, ClusterIP{path} vs direct flow, {what}, {case}"),
                    ratio(r, id, (mode, case), ("direct", case)),
                    AtMost,
                    1.2,
                ));
            }
        }
    }
    let sy_levels = levels(r, "scale_conn_rate", "switchyard");
    for n in sy_levels.iter().filter(|n| n.as_str() != "N=1") {
        out.push(ratio_target(
            format!("connections/s at {n} (× at N=1, each level × direct in its rounds)"),
            flatness(r, n),
            AtLeast,
            0.95,
        ));
    }
    if let Some(n) = levels(r, "program_update", "switchyard").last() {
        out.push(target(
            format!("one endpoint change at {n}, agent work"),
            median(r, "program_update", "switchyard", n),
            " ms",
            Below,
            1.0,
        ));
    }
    for (n, limit) in [(10_000, 64.0), (100_000, 400.0)] {
        let case = footprint_case(r, n);
        out.push(target(
            format!(
                "agent RSS at {}",
                case.clone().unwrap_or_else(|| format!("N={n}"))
            ),
            case.and_then(|c| median(r, "footprint_rss", "switchyard", &c)),
            " MiB",
            Below,
            limit,
        ));
    }
    out
}

/// The targets as a markdown table.
pub fn markdown(r: &Report) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "| figure | measured | target | met |");
    let _ = writeln!(md, "|---|---|---|---|");
    for t in targets(r) {
        let paired = match t.paired_rounds {
            0 => String::new(),
            n => format!(" (paired, {n} rounds)"),
        };
        let value = t.value.map_or("not measured".into(), |v| {
            format!("{}{}{paired}", fmt_num(v), t.unit)
        });
        let met = match t.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "–",
        };
        let _ = writeln!(md, "| {} | {value} | {} | {met} |", t.figure, t.target);
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::{Better, Host, Scenario};

    fn report(scenarios: Vec<Scenario>) -> Report {
        Report {
            quick: true,
            started_unix: 0,
            duration_s: 1.0,
            host: Host::default(),
            repetitions: 1,
            scenarios,
            warnings: vec![],
            parts: vec![],
        }
    }

    #[test]
    fn clusterip_connections_compare_with_the_control_of_their_own_turns() {
        let mut s = Scenario::new("conn_rate", "c", "conn/s", Better::Higher, Some("direct"));
        // The direct mode's own turns are not the baseline; the control in the ClusterIP turn is.
        s.add("direct", "same node", &[50.0, 50.0, 50.0]);
        s.add(CONTROL, "same node", &[100.0, 100.0, 100.0]);
        s.add("switchyard-clusterip", "same node", &[90.0, 97.0, 99.0]);
        let t = targets(&report(vec![s]));
        let same = &t[0];
        assert_eq!(same.value, Some(0.97));
        assert_eq!(same.met, Some(true));
        assert_eq!(same.target, "≥ 0.95×");
    }

    #[test]
    fn a_ratio_of_modes_taken_by_turns_is_paired_round_by_round() {
        use crate::report::Round;
        let mut s = Scenario::new("scale_conn_rate", "s", "conn/s", Better::Higher, None);
        // nftables drifts upward; each round switchyard leads it by 1.25.
        for (r, v) in [100.0, 110.0, 130.0].into_iter().enumerate() {
            s.add_in_round("nftables", "N=1", Round(r as u64), v);
            s.add_in_round("iptables", "N=1", Round(r as u64), v / 2.0);
            s.add_in_round("switchyard", "N=1", Round(r as u64), v * 1.25);
        }
        let r = report(vec![s]);
        let t = targets(&r);
        let nft = t
            .iter()
            .find(|t| t.figure == "connections/s at N=1 (× nftables mode)")
            .unwrap();
        assert_eq!((nft.value, nft.paired_rounds), (Some(1.25), 3));
        assert!(markdown(&r).contains("| 1.25× (paired, 3 rounds) | ≥ 1.2× | yes |"));
    }

    #[test]
    fn levels_compare_through_the_direct_rate_of_their_own_rounds() {
        use crate::report::Round;
        let mut s = Scenario::new("scale_conn_rate", "s", "conn/s", Better::Higher, None);
        // The machine is 20% slower by the time N=10000 runs; switchyard keeps pace with
        // direct at both levels.
        for (lvl, speed, first) in [("N=1", 1.0, 0), ("N=10000", 0.8, 10)] {
            for r in 0..3u64 {
                let v = speed * (100.0 + r as f64);
                s.add_in_round("direct", lvl, Round(first + r), v);
                s.add_in_round("switchyard", lvl, Round(first + r), v);
            }
        }
        let t = targets(&report(vec![s]));
        let flat = t
            .iter()
            .find(|t| t.figure.starts_with("connections/s at N=10000 (× at N=1"))
            .unwrap();
        assert_eq!(
            (flat.value, flat.met, flat.paired_rounds),
            (Some(1.0), Some(true), 3)
        );
    }

    #[test]
    fn a_target_without_figures_is_not_measured_and_not_met() {
        let t = targets(&report(vec![]));
        assert!(t.iter().all(|t| t.value.is_none() && t.met.is_none()));
        assert!(markdown(&report(vec![])).contains("| not measured |"));
    }

    #[test]
    fn scale_targets_follow_the_levels_each_mode_reached() {
        let mut s = Scenario::new("scale_conn_rate", "s", "conn/s", Better::Higher, None);
        for n in ["N=1", "N=10000"] {
            s.add("nftables", n, &[100.0]);
            s.add("iptables", n, &[50.0]);
        }
        for n in ["N=1", "N=10000", "N=100000"] {
            s.add("switchyard", n, &[130.0]);
        }
        let t = targets(&report(vec![s]));
        let names: Vec<&str> = t.iter().map(|t| t.figure.as_str()).collect();
        assert!(names.contains(&"connections/s at N=10000 (× nftables mode)"));
        assert!(!names.contains(&"connections/s at N=100000 (× nftables mode)"));
        assert!(names
            .contains(&"connections/s at N=100000 (× at N=1, each level × direct in its rounds)"));
        let vs_ipt = t
            .iter()
            .find(|t| t.figure == "connections/s at N=1 (× iptables mode)")
            .unwrap();
        assert_eq!((vs_ipt.value, vs_ipt.met), (Some(2.6), Some(true)));
    }
}
