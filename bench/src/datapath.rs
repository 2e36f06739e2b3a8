//! Per-packet cost: iperf3 throughput, request/response latency and new connections per
//! second, same node and across nodes, for the modes of one phase, repetitions interleaved so
//! that drift of the shared machine hits every mode alike.
use std::time::Duration;

use switchyard_lab::netns;

use crate::iperf;
use crate::load;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::{Better, Scenario};
use crate::stats::percentile;
use crate::workload::{Via, Workload};

/// The scenarios this module fills.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("throughput", "Bulk TCP throughput (iperf3, one stream)", "Gbit/s", Better::Higher, Some("direct"))
            .method("iperf3 -c for the configured seconds from the client pod on n1 (NodePort: from sy-ext to n1), received rate."),
        Scenario::new("latency_p50", "Request/response latency p50", "µs", Better::Lower, Some("direct"))
            .method("One TCP connection, back-to-back 64-byte request and answer; median round trip of each run."),
        Scenario::new("latency_p99", "Request/response latency p99", "µs", Better::Lower, Some("direct"))
            .method("As p50, 99th percentile of each run."),
        Scenario::new("conn_rate", "New connections per second", "conn/s", Better::Higher, Some("direct"))
            .method("4 parallel loops of connect, one 64-byte request and answer, close (client first; tcp_tw_reuse=1 in the client namespace); completions per second. Failed connections are listed under Warnings."),
    ]
}

/// Steps one [`measure`] call makes.
pub fn steps(modes: usize, plan: &Plan) -> u64 {
    (modes * 2 * plan.reps) as u64
}

/// Measures `modes` (name and how it reaches the backends) into `out`.
pub fn measure(
    plan: &Plan,
    w: &Workload,
    modes: &[(&str, Via)],
    out: &mut [Scenario],
    progress: &Progress,
    warnings: &mut Vec<String>,
) {
    for rep in 0..plan.reps {
        for (mode, via) in modes {
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
                match iperf::throughput(ns, ip, plan.iperf_secs) {
                    Ok(g) => add(out, "throughput", mode, b.case, g),
                    Err(e) => note(e.to_string()),
                }
                let dur = plan.rr;
                match netns::run_in(ns, move || load::request_response(rr, dur)) {
                    Ok(Ok(lat)) => {
                        add(out, "latency_p50", mode, b.case, percentile(&lat, 50.0));
                        add(out, "latency_p99", mode, b.case, percentile(&lat, 99.0));
                    }
                    Ok(Err(e)) => note(e.to_string()),
                    Err(e) => note(e.to_string()),
                }
                let (dur, threads) = (plan.conn, plan.conn_threads);
                match netns::run_in(ns, move || load::connection_rate(rr, dur, threads)) {
                    Ok(Ok(c)) => {
                        add(out, "conn_rate", mode, b.case, c.per_sec);
                        if c.errors > 0 {
                            note(format!(
                                "{} connections failed ({})",
                                c.errors, c.last_error
                            ));
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

/// Adds one sample to scenario `id` in `out`.
pub fn add(out: &mut [Scenario], id: &str, mode: &str, case: &str, v: f64) {
    if let Some(s) = out.iter_mut().find(|s| s.id == id) {
        s.add(mode, case, &[v]);
    }
}
