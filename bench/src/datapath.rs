//! Per-packet cost: iperf3 throughput, request/response latency and new connections per
//! second, same node and across nodes, for the modes of one phase, repetitions interleaved so
//! that drift of the shared machine hits every mode alike.
use std::time::Duration;

use switchyard_lab::netns;

use crate::bpfstats::Stats;
use crate::iperf;
use crate::load;
use crate::perpacket::PerPacket;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::{Better, Round, Scenario};
use crate::stats::percentile;
use crate::workload::{Backend, Via, Workload, CLIENT_NODE};

/// The scenarios this module fills.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("throughput", "Bulk TCP throughput (iperf3, one stream)", "Gbit/s", Better::Higher, Some("direct"))
            .method("iperf3 -c for the configured seconds from the client pod on n1 (NodePort: from sy-ext to n1), received rate. In switchyard-clusterip's turn the ClusterIP and the pod IP (direct (control)) take turns of one second each, as many as the configured seconds, and each figure is the mean of its turns; likewise in switchyard-nodeport's turn to the same-node backend its NodePort and the pod IP from sy-ext, which routes the podCIDRs to their nodes (direct from outside (control))."),
        Scenario::new("latency_p50", "Request/response latency p50", "µs", Better::Lower, Some("direct"))
            .method("One TCP connection, back-to-back 64-byte request and answer; median round trip of each run."),
        Scenario::new("latency_p99", "Request/response latency p99", "µs", Better::Lower, Some("direct"))
            .method("As p50, 99th percentile of each run."),
        Scenario::new("conn_rate", "New connections per second", "conn/s", Better::Higher, Some("direct"))
            .method("4 parallel loops of connect, one 64-byte request and answer, close (client first; tcp_tw_reuse=1 in the client namespace); completions per second. Failed connections are listed under Warnings. In switchyard-clusterip's turn the ClusterIP run and the pod IP (direct (control)) alternate in slices (A B A B …), each target for the configured time in all; likewise the same-node NodePort and the pod IP from sy-ext (direct from outside (control))."),
        Scenario::new("from_pod_ns_rr", "from_pod cost per packet, request/response on one connection", "ns", Better::Lower, Some("direct"))
            .method("The kernel's run-time accounting of the from_pod tc program (bpf_stats: run_time_ns / run_cnt, summed over the three nodes' programs) across the request/response run: established packets, both directions (the client's requests and the backend's replies each cross one from_pod). switchyard modes only."),
        Scenario::new("from_pod_ns_conn", "from_pod cost per packet, new connections", "ns", Better::Lower, Some("direct"))
            .method("As above across the connection-rate run: SYN, handshake, one request and answer, FIN/RST of each connection (for ClusterIP per packet: conntrack creation, backend choice and the reply's reverse NAT; switchyard-clusterip's TCP is socket-balanced, so its packets are direct ones, as are those of the direct control that alternates with it in that run)."),
    ]
}

/// Steps one [`measure`] call makes.
pub fn steps(modes: usize, plan: &Plan) -> u64 {
    (modes * 2 * plan.reps) as u64
}

/// What one [`measure`] call measures with and where its figures go.
pub struct Measure<'a> {
    /// The plan.
    pub plan: &'a Plan,
    /// The pods and Services.
    pub workload: &'a Workload,
    /// The run-time accounting of the BPF programs, when switchyard is attached.
    pub stats: Option<&'a Stats>,
    /// Progress output.
    pub progress: &'a Progress,
    /// Whether a ClusterIP turn ([`Via::ClusterIp`]) also measures the direct pod-IP path as
    /// its control, alternating with it, under the mode [`CONTROL`]; and a NodePort turn to the
    /// same-node backend the outside client's direct path ([`OUTSIDE_CONTROL`]).
    pub control: bool,
}

/// The mode of the direct control measured inside switchyard's ClusterIP turns.
///
/// Why: modes taken one after the other in blocks of a second or two see different moments
/// of the shared machine, and a ratio of two such blocks moves by ±10–20% from one round to
/// the next though the paths are the same (socket load balancing makes a pod's ClusterIP
/// connection the direct one). Alternating the ClusterIP run and the direct one in short
/// slices within the turn makes both see the same moments, as at the scale levels.
pub const CONTROL: &str = "direct (control)";

/// The mode of the control measured inside switchyard's NodePort turn to the same-node backend:
/// the same outside client (`sy-ext`) to the pod IP, routed to the node
/// ([`Via::OutsideDirect`]). The pod-IP path from the client pod is one veth hop on the node;
/// an outside client's also crosses the underlay bridge and the node's uplink, as its NodePort
/// connections do. (To a backend on another node the NodePort path crosses two nodes, which a
/// client routed to the pod never does: no control there.)
pub const OUTSIDE_CONTROL: &str = "direct from outside (control)";

/// The control of a `via` turn to backend `b`, if it has one (see [`Measure::control`]): its
/// mode name and its route.
fn control_of(b: &Backend, via: Via) -> Option<(&'static str, Via)> {
    match via {
        Via::ClusterIp => Some((CONTROL, Via::Direct)),
        Via::NodePort if b.case == "same node" => Some((OUTSIDE_CONTROL, Via::OutsideDirect)),
        _ => None,
    }
}

/// The program [`Measure::stats`] follows.
const PROGRAM: &str = "from_pod";

/// Runs `f`, and adds the mean cost per packet of [`PROGRAM`] during it to scenario `id` in
/// `round`; also says why that figure is missing when the accounting was on and gave none.
fn costed<T>(
    stats: Option<&Stats>,
    out: &mut [Scenario],
    (id, mode, case, round): (&str, &str, &str, Round),
    f: impl FnOnce() -> T,
) -> (T, Option<String>) {
    let Some(stats) = stats else {
        return (f(), None);
    };
    let before = stats.sample(PROGRAM);
    let r = f();
    let after = stats.sample(PROGRAM);
    let missing = match (before, after) {
        (Ok(b), Ok(a)) => match a.ns_per_run_since(&b) {
            Some(ns) => {
                add_in_round(out, id, mode, case, round, ns);
                None
            }
            None => Some(format!(
                "{id}: {PROGRAM} did not run (or its counters went back)"
            )),
        },
        (Err(e), _) | (_, Err(e)) => Some(format!("{id}: reading the bpf_stats of {PROGRAM}: {e}")),
    };
    (r, missing)
}

/// Measures `modes` (name and how it reaches the backends) into `out`.
pub fn measure(
    m: &Measure<'_>,
    modes: &[(&str, Via)],
    out: &mut [Scenario],
    warnings: &mut Vec<String>,
) {
    let (plan, w, progress) = (m.plan, m.workload, m.progress);
    for rep in 0..plan.reps {
        let round = Round::next();
        for (mode, via) in modes {
            let _per_packet = match via {
                Via::ClusterIpPerPacket => match PerPacket::enter(CLIENT_NODE, w.client_ip) {
                    Ok(guard) => Some(guard),
                    Err(e) => {
                        let msg = format!("{mode}: {e}");
                        progress.say(&format!("warning: {msg}"));
                        warnings.push(msg);
                        continue;
                    }
                },
                _ => None,
            };
            for b in &w.backends {
                progress.doing(&format!(
                    "data path: {mode}, {} (run {}/{})",
                    b.case,
                    rep + 1,
                    plan.reps
                ));
                let (ns, rr, ip) = b.route(*via);
                let mut note = |e: String| {
                    let msg = format!("{mode} {}: {e}", b.case);
                    progress.say(&format!("warning: {msg}"));
                    warnings.push(msg);
                };
                let control = control_of(b, *via).filter(|_| m.control);
                let direct = control.map(|(c, route)| (c, b.route(route)));
                match direct {
                    Some((c, direct)) => {
                        match throughput_sliced(ns, [ip, direct.2], plan.iperf_secs) {
                            Ok([g, d]) => {
                                add_in_round(out, "throughput", mode, b.case, round, g);
                                add_in_round(out, "throughput", c, b.case, round, d);
                            }
                            Err(e) => note(e.to_string()),
                        }
                    }
                    None => match iperf::throughput(ns, ip, plan.iperf_secs) {
                        Ok(g) => add_in_round(out, "throughput", mode, b.case, round, g),
                        Err(e) => note(e.to_string()),
                    },
                }
                let dur = plan.rr;
                let ids = ("from_pod_ns_rr", *mode, b.case, round);
                let (rr_run, missing) = costed(m.stats, out, ids, || {
                    netns::run_in(ns, move || load::request_response(rr, dur))
                });
                missing.into_iter().for_each(&mut note);
                match rr_run {
                    Ok(Ok(lat)) => {
                        let p50 = percentile(&lat, 50.0);
                        let p99 = percentile(&lat, 99.0);
                        add_in_round(out, "latency_p50", mode, b.case, round, p50);
                        add_in_round(out, "latency_p99", mode, b.case, round, p99);
                    }
                    Ok(Err(e)) => note(e.to_string()),
                    Err(e) => note(e.to_string()),
                }
                // The targets of the connection-rate run: the mode's address, and in a turn with
                // a control the direct one alternating with it in slices.
                let mut to = vec![(*mode, rr)];
                to.extend(direct.map(|(c, direct)| (c, direct.1)));
                let (dur, threads, slices) = (plan.conn, plan.conn_threads, plan.slices);
                let addrs: Vec<_> = to.iter().map(|&(_, a)| a).collect();
                let ids = ("from_pod_ns_conn", *mode, b.case, round);
                let (conn_run, missing) = costed(m.stats, out, ids, || {
                    netns::run_in(ns, move || match addrs.as_slice() {
                        [one] => load::connection_rate(*one, dur, threads).map(|c| vec![c]),
                        many => load::connection_rate_sliced(many, dur, threads, slices),
                    })
                });
                missing.into_iter().for_each(&mut note);
                match conn_run {
                    Ok(Ok(runs)) => {
                        for ((m, a), c) in to.iter().zip(runs) {
                            add_in_round(out, "conn_rate", m, b.case, round, c.per_sec());
                            if c.errors > 0 {
                                note(format!(
                                    "to {a}: {} connections failed ({})",
                                    c.errors, c.last_error
                                ));
                            }
                        }
                    }
                    Ok(Err(e)) => note(e.to_string()),
                    Err(e) => note(e.to_string()),
                }
                // Let sockets of the last run close before the next mode starts.
                std::thread::sleep(Duration::from_millis(50));
                progress.tick();
            }
        }
    }
}

/// iperf3 to each of `to` in turns, one second each, `secs` turns per target (A B A B …):
/// the mean received Gbit/s of each.
fn throughput_sliced(
    ns: &str,
    to: [std::net::SocketAddr; 2],
    secs: u32,
) -> Result<[f64; 2], iperf::IperfError> {
    let turns = secs.max(1);
    let mut sum = [0.0; 2];
    for _ in 0..turns {
        for (addr, acc) in to.iter().zip(sum.iter_mut()) {
            *acc += iperf::throughput(ns, *addr, 1)?;
        }
    }
    Ok(sum.map(|g| g / f64::from(turns)))
}

/// Adds one sample, measured outside any round, to scenario `id` in `out`.
pub fn add(out: &mut [Scenario], id: &str, mode: &str, case: &str, v: f64) {
    if let Some(s) = scenario(out, id) {
        s.add(mode, case, &[v]);
    }
}

/// Adds one sample measured in `round` to scenario `id` in `out`.
pub fn add_in_round(out: &mut [Scenario], id: &str, mode: &str, case: &str, round: Round, v: f64) {
    if let Some(s) = scenario(out, id) {
        s.add_in_round(mode, case, round, v);
    }
}

/// Scenario `id` of `out`.
fn scenario<'a>(out: &'a mut [Scenario], id: &str) -> Option<&'a mut Scenario> {
    out.iter_mut().find(|s| s.id == id)
}
