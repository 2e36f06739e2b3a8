//! The control loop: time from creating a Service in controlplane-lite until the first
//! connection through its ClusterIP succeeds from a pod (API admission, EndpointSlice
//! controller, the agent's watch and sync, the map write — everything a user waits for).
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use switchyard_lab::netns;

use crate::report::{Better, Scenario};
use crate::run::Ctx;
use crate::workload::{CLIENT_NS, RR_PORT};
use crate::{load, stats};

/// The scenario this module fills.
pub fn scenario() -> Scenario {
    Scenario::new("control_loop", "Control loop: Service created → first connection", "ms", Better::Lower, None)
        .method("Services created one at a time (selecting the n1 server pod); the client pod retries connect + one request to the new ClusterIP every millisecond, each attempt waiting at most 5 ms for the SYN-ACK. p50 and p99 per group of Services; one group per repetition.")
}

/// Creates `plan.control_services` Services one by one, timing each, then deletes them.
pub fn run(ctx: &mut Ctx) -> Result<()> {
    let count = ctx.plan.control_services;
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        ctx.progress
            .doing(&format!("control loop: service {}/{count}", i + 1));
        let name = format!("cl-{i}");
        let start = Instant::now();
        let ip = ctx
            .rt
            .block_on(ctx.cluster.create_selecting(&name, "bsrv-n1", 80, RR_PORT))
            .with_context(|| format!("creating {name}"))?;
        let addr = SocketAddr::from((ip, 80));
        let ok = netns::run_in(CLIENT_NS, move || {
            load::first_success(addr, Duration::from_secs(15))
        })?;
        match ok {
            Some(_) => times.push(start.elapsed().as_secs_f64() * 1000.0),
            None => ctx.warn(format!(
                "control loop: {name} ({ip}) never answered within 15 s"
            )),
        }
    }
    for i in 0..count {
        let _ = ctx
            .rt
            .block_on(ctx.cluster.delete_service(&format!("cl-{i}")));
    }
    ctx.progress.tick();
    let groups = ctx.plan.reps.max(1);
    let per = times.len().div_ceil(groups).max(1);
    let s = ctx.scenario_mut("control_loop");
    for chunk in times.chunks(per) {
        s.add("switchyard", "p50", &[stats::percentile(chunk, 50.0)]);
        s.add("switchyard", "p99", &[stats::percentile(chunk, 99.0)]);
    }
    let (p50, p99) = (
        stats::percentile(&times, 50.0),
        stats::percentile(&times, 99.0),
    );
    ctx.progress.say(&format!(
        "control loop over {} services: p50 {p50:.1} ms, p99 {p99:.1} ms",
        times.len()
    ));
    Ok(())
}
