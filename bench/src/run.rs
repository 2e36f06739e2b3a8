//! One benchmark run: a three-node lab, the workload, every scenario in order, the report.
//!
//! Order: switchyard attached — per-packet (direct, ClusterIP, NodePort; then NodePort with n1's
//! agent accelerated by XDP), control loop, scale
//! with programming and footprint; then switchyard detached — iptables (with `direct-kernel`,
//! pod IPs through the plain kernel path) and nftables, each per-packet at N=1 and at every N.
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context, Result};
use switchyard_lab::{cmd, lab, netns, Lab, LabOptions};

use crate::agent::Agent;
use crate::cluster::Cluster;
use crate::kproxy::Svc;
use crate::plan::Plan;
use crate::progress::Progress;
use crate::report::{Host, Part, Report, Scenario};
use crate::workload::{self, Via, Workload};
use crate::{bpfstats, control, datapath, load, plot, scale, switch};

/// The benchmark lab's Service network: kubeadm's default, room for more than 100,000
/// Services (the lab's own /16 holds 65,534).
pub const SERVICE_CIDR: &str = "10.96.0.0/12";

/// Everything a scenario needs while the run goes on.
pub struct Ctx {
    /// The plan.
    pub plan: Plan,
    /// The lab.
    pub lab: Lab,
    /// Runtime for API calls.
    pub rt: tokio::runtime::Runtime,
    /// API client.
    pub cluster: Cluster,
    /// The deployed workload.
    pub workload: Workload,
    /// n1's agent.
    pub agent: Agent,
    /// Frontends n1's agent programs for the workload alone.
    pub base_frontends: u64,
    /// Filler Services created so far.
    pub fillers: Vec<Svc>,
    /// The scenarios being filled.
    pub scenarios: Vec<Scenario>,
    /// Non-fatal problems.
    pub warnings: Vec<String>,
    /// Where the run's time went so far.
    pub parts: Vec<Part>,
    /// Progress bar.
    pub progress: Progress,
}

impl Ctx {
    /// Records a non-fatal problem.
    pub fn warn(&mut self, msg: String) {
        self.progress.say(&format!("warning: {msg}"));
        self.warnings.push(msg);
    }

    /// The scenario `id` (all are created up front).
    pub fn scenario_mut(&mut self, id: &str) -> &mut Scenario {
        self.scenarios
            .iter_mut()
            .find(|s| s.id == id)
            .expect("scenario created up front")
    }
}

fn host() -> Host {
    let first = |argv: &[&str]| {
        cmd::run(argv)
            .map(|s| s.lines().next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    };
    Host {
        kernel: first(&["uname", "-r"]),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        iptables: first(&["iptables", "-V"]),
        nft: first(&["nft", "-v"]),
    }
}

/// Checks every route of the workload answers before anything is measured.
fn check_routes(w: &Workload, vias: &[Via]) -> Result<()> {
    for b in &w.backends {
        for via in vias {
            let (ns, rr, _) = b.route(*via);
            let ok = netns::run_in(ns, move || {
                load::first_success(rr, std::time::Duration::from_secs(20))
            })?;
            if ok.is_none() {
                bail!(
                    "{rr} ({via:?}, {}) does not answer from {ns}: see target/lab/logs",
                    b.case
                );
            }
        }
    }
    Ok(())
}

/// Runs the benchmark and writes the report into `out`.
pub fn run(plan: Plan, out: &Path) -> Result<Report> {
    let started = Instant::now();
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let host = host();
    eprintln!("==> starting a three-node lab");
    let lab = Lab::up(
        LabOptions::new(3)
            .release()
            .cp_data_in_memory()
            .agent_args(crate::agent::AGENT_ARGS)
            .service_cidr(SERVICE_CIDR),
    )
    .context("lab up")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let cluster = rt.block_on(Cluster::connect(&lab.kubectl.kubeconfig))?;
    eprintln!("==> deploying the benchmark pods and Services");
    let workload = workload::deploy(&lab, out)?;
    let agent = Agent::of_node(&lab::lab_dir(&lab.opts.root), 1);
    for ns in [workload::CLIENT_NS, switchyard_lab::topology::EXT] {
        load::tune_client(ns).with_context(|| format!("tuning the client namespace {ns}"))?;
    }
    // The node's own namespace only reuses TIME_WAIT ports: its port range stays below the
    // masquerade range.
    switchyard_lab::netns::sysctl(workload::HOST_NS, &["net.ipv4.tcp_tw_reuse=1"])
        .context("tuning the node namespace")?;
    workload::route_podcidrs_from_outside(&lab).context("routing the podCIDRs from sy-ext")?;
    let switchyard_vias = [
        Via::Direct,
        Via::ClusterIp,
        Via::NodePort,
        Via::OutsideDirect,
        Via::HostDirect,
        Via::HostClusterIp,
    ];
    check_routes(&workload, &switchyard_vias)?;
    let base_frontends = agent
        .syncs_after(0)
        .last()
        .map(|s| s.frontends)
        .context("the n1 agent logged no services sync")?;
    let mut scenarios = datapath::scenarios();
    scenarios.push(control::scenario());
    scenarios.push(crate::maglev::scenario());
    scenarios.extend(scale::scenarios());
    let steps = datapath::steps(6, &plan)
        + datapath::steps(2, &plan)
        + datapath::steps(5, &plan)
        + 1
        + scale::steps(&plan);
    let mut ctx = Ctx {
        plan: plan.clone(),
        lab,
        rt,
        cluster,
        workload,
        agent,
        base_frontends,
        fillers: Vec::new(),
        scenarios,
        warnings: Vec::new(),
        parts: vec![Part::since("lab up, benchmark pods and Services", started)],
        progress: Progress::new(steps),
    };

    let modes = [
        ("direct", Via::Direct),
        ("switchyard-clusterip", Via::ClusterIp),
        ("switchyard-clusterip-per-packet", Via::ClusterIpPerPacket),
        ("switchyard-nodeport", Via::NodePort),
        ("host-direct", Via::HostDirect),
        ("switchyard-host-clusterip", Via::HostClusterIp),
    ];
    let stats = match bpfstats::Stats::enable() {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.warn(format!("no per-packet program cost: {e}"));
            None
        }
    };
    let mut warnings = Vec::new();
    let m = datapath::Measure {
        plan: &plan,
        workload: &ctx.workload,
        stats: stats.as_ref(),
        progress: &ctx.progress,
        control: true,
    };
    let part = Instant::now();
    datapath::measure(&m, &modes, &mut ctx.scenarios, &mut warnings);
    drop(stats);
    ctx.warnings.extend(warnings);
    ctx.parts
        .push(Part::since("direct and switchyard datapath", part));
    let part = Instant::now();
    crate::xdp::measure(&mut ctx)?;
    ctx.parts.push(Part::since("NodePort on tc vs XDP", part));
    let part = Instant::now();
    control::run(&mut ctx)?;
    ctx.parts.push(Part::since("control loop", part));
    // Set once for the turns of the scale levels (kube-proxy's same-node replies need it).
    switch::bridge_netfilter(scale::NODE_NS).context("bridge netfilter hooks on n1")?;
    // A level that fails (e.g. a sync that never comes at the largest N) is reported and the
    // run goes on with the kube-proxy modes' per-packet figures: the figures already taken
    // stay in the report.
    if let Err(e) = scale::switchyard(&mut ctx) {
        ctx.warn(format!("switchyard's scale run stopped: {e:#}"));
    }
    // The datapath's counters (every drop named) after all switchyard runs, for diagnosis.
    for n in 1..=ctx.lab.opts.nodes {
        match ctx.lab.stats(n) {
            Ok(v) => {
                let path = out.join(format!("switchyard-stats-n{n}.json"));
                let _ = std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap_or_default());
            }
            Err(e) => ctx.warn(format!("reading the datapath counters of n{n}: {e}")),
        }
    }

    ctx.progress
        .doing("detaching switchyard; kernel overlay for the kube-proxy modes");
    let part = Instant::now();
    switch::detach_switchyard(&ctx.lab)?;
    switch::kernel_overlay(&ctx.lab)?;
    check_routes(&ctx.workload, &[Via::Direct]).context("pod-to-pod without switchyard")?;
    ctx.parts
        .push(Part::since("switchyard detached, kernel overlay", part));
    scale::kernel_datapath(&mut ctx, scale::Tool::Iptables)?;
    scale::kernel_datapath(&mut ctx, scale::Tool::Nftables)?;
    ctx.progress.finish();

    for s in &mut ctx.scenarios {
        s.compute_ratios();
    }
    let report = Report {
        quick: plan.quick,
        started_unix: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(started.elapsed().as_secs()),
        duration_s: started.elapsed().as_secs_f64(),
        host,
        repetitions: plan.reps,
        scenarios: ctx.scenarios.clone(),
        warnings: ctx.warnings.clone(),
        parts: ctx.parts.clone(),
    };
    report.write(out)?;
    for s in &report.scenarios {
        if let Err(e) = plot::scenario(s, &out.join(format!("{}.png", s.id))) {
            eprintln!("warning: plot {}: {e}", s.id);
        }
    }
    drop(ctx);
    Ok(report)
}

/// `target/bench` of the workspace.
pub fn default_out() -> PathBuf {
    lab::workspace_root().join("target").join("bench")
}
