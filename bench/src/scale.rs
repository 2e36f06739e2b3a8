//! Scale, programming and footprint: 1, 1,000 and 10,000 Services (2–8 endpoints each)
//! installed, the connection rate and first-packet latency to one Service, the time to
//! install everything from empty and to apply one endpoint change, and the agent's RSS and CPU.
//!
//! At every level kube-proxy's modes reach, their rule sets are installed beside switchyard's
//! maps and the three take turns at the probes ([`interleave`]): the ratios between them come
//! from runs seconds apart, not from phases minutes apart.
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_lab::netns;

use crate::interleave::{self, Plane, Turns};
use crate::kproxy::{apply, iptables, nftables, Svc};
use crate::report::{Better, Part, Round, Scenario};
use crate::run::Ctx;
use crate::workload::{Via, CLIENT_NS, RR_PORT};
use crate::{agent, cluster, datapath, load, stats, switch};

/// The node every scale figure is taken on (client pod, server pod and rules all on n1).
pub const NODE_NS: &str = "sy-n1";

/// Levels from which the agent's footprint is recorded (and always at the largest).
const FOOTPRINT_FROM: usize = 10_000;

/// Filler whose endpoints change in the update measurements.
const CHANGED: usize = 7;

/// The scenarios this module fills.
pub fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario::new("scale_conn_rate", "Connections/s to one Service with N Services installed", "conn/s", Better::Higher, Some("iptables"))
            .method("As the connection-rate test, to the same-node ClusterIP, while N-1 other Services (2–8 endpoints each) are installed. direct: the same server's pod IP, measured in each of switchyard's turns as the control that levels compare through."),
        Scenario::new("scale_first_packet_p50", "First-packet latency (connect) p50 with N Services, under load", "µs", Better::Lower, Some("iptables"))
            .method("Duration of connect() (SYN to SYN-ACK through the service translation) in the connection-rate runs (4 loops on 2 CPUs: includes waiting for a CPU), median of each run."),
        Scenario::new("scale_first_packet_p99", "First-packet latency (connect) p99 with N Services, under load", "µs", Better::Lower, Some("iptables"))
            .method("As above, 99th percentile of each run."),
        Scenario::new("scale_first_packet_unloaded_p50", "First-packet latency (connect) p50 with N Services, unloaded", "µs", Better::Lower, Some("iptables"))
            .method("Duration of connect() from one loop of connect, one request and answer, close, right after each connection-rate run (no other connection competes for the CPUs: the SYN's path alone), median of each run."),
        Scenario::new("scale_first_packet_unloaded_p99", "First-packet latency (connect) p99 with N Services, unloaded", "µs", Better::Lower, Some("iptables"))
            .method("As above, 99th percentile of each run."),
        Scenario::new("program_install", "Programming: install N Services from empty", "ms", Better::Lower, Some("iptables"))
            .method("switchyard: the agent's first sync after a start on empty maps (took_us in its log: model + every map write). iptables: iptables-restore of the whole nat table. nftables: nft -f of the whole kube-proxy table. Wall time of the tool, process start included."),
        Scenario::new("program_update", "Programming: one endpoint change at N Services", "ms", Better::Lower, Some("iptables"))
            .method("One endpoint of one Service replaced. switchyard: the agent's sync after the EndpointSlice patch (took_us). iptables: kube-proxy's partial restore (--noflush; KUBE-SERVICES rewritten plus the service's chains). nftables: kube-proxy's transaction (new endpoint chain, service chain rewritten, old chain deleted)."),
        Scenario::new("footprint_rss", "Agent resident memory", "MiB", Better::Lower, None)
            .method("VmRSS of the n1 agent once it programmed N Services from empty and its syncs went quiet for 0.5 s (once per repetition): what it keeps while it runs."),
        Scenario::new("footprint_peak_rss", "Agent peak resident memory", "MiB", Better::Lower, None)
            .method("VmHWM of the n1 agent at the same moment: the most it held since its start, i.e. during the relist of every object and the first full recompute."),
        Scenario::new("footprint_cpu", "Agent CPU time to start and program N Services", "s", Better::Lower, None)
            .method("utime+stime of the n1 agent from its start until the first sync of the largest N is done."),
        Scenario::new("footprint_idle_cpu", "Agent CPU use while idle at N Services", "% of a CPU", Better::Lower, None)
            .method("CPU time of the n1 agent over a quiet interval (its safety resync included when it falls in: every 30 s, or 60 × the last full recompute when that is longer)."),
    ]
}

fn case(n: usize) -> String {
    format!("N={n}")
}

/// The rule set for `level` Services: the measured pair in the middle of the fillers
/// (kube-proxy's order is arbitrary; the middle is the typical position).
fn rule_set(ctx: &Ctx, level: usize) -> Vec<Svc> {
    let fillers = &ctx.fillers[..level.saturating_sub(1).min(ctx.fillers.len())];
    let mid = fillers.len() / 2;
    let mut v: Vec<Svc> = fillers[..mid].to_vec();
    v.extend(ctx.workload.services.iter().cloned());
    v.extend(fillers[mid..].iter().cloned());
    v
}

/// One run of connection rate with its connect latency (loaded: [`Plan::conn_threads`]
/// loops), then one of connect latency alone (unloaded: one loop, so a connect's time is the
/// SYN's path and not the wait for a CPU), to the same-node ClusterIP, in `round`.
///
/// With `control` (switchyard's turns), the connection-rate run alternates in
/// [`Plan::slices`] slices with the same run to the server's pod IP, no Service involved
/// (mode `direct`): a level's rate relative to it does not move with the machine's drift
/// between levels (minutes apart) nor within the turn, so levels compare through it
/// (`targets`: connections/s at N × at N=1). Without it the run is cut in the same slices,
/// back to back, so every mode is measured alike.
///
/// [`Plan::conn_threads`]: crate::plan::Plan::conn_threads
/// [`Plan::slices`]: crate::plan::Plan::slices
fn probe_once(ctx: &mut Ctx, mode: &str, level: usize, rep: usize, round: Round, control: bool) {
    ctx.progress.doing(&format!(
        "scale: {mode}, N={level} (run {}/{})",
        rep + 1,
        ctx.plan.reps
    ));
    let n = &case(level);
    let loaded = (ctx.plan.conn, ctx.plan.conn_threads);
    let server = &ctx.workload.backends[0];
    let mut to = vec![(mode, server.cluster_ip)];
    if control {
        to.push(("direct", server.pod_ip));
    }
    let Some(runs) = connect_run(ctx, level, &to, loaded, ctx.plan.slices) else {
        return;
    };
    let out = &mut ctx.scenarios;
    for ((m, _), c) in to.iter().zip(&runs) {
        datapath::add_in_round(out, "scale_conn_rate", m, n, round, c.per_sec());
    }
    add_percentiles(
        out,
        "scale_first_packet",
        mode,
        n,
        round,
        &runs[0].connect_us,
    );
    let unloaded = (ctx.plan.first_packet, 1);
    let Some(runs) = connect_run(ctx, level, &to[..1], unloaded, 1) else {
        return;
    };
    let out = &mut ctx.scenarios;
    add_percentiles(
        out,
        "scale_first_packet_unloaded",
        mode,
        n,
        round,
        &runs[0].connect_us,
    );
}

/// `<prefix>_p50` and `<prefix>_p99` of `us`, to their scenarios.
fn add_percentiles(out: &mut [Scenario], prefix: &str, mode: &str, n: &str, r: Round, us: &[f64]) {
    for p in [50, 99] {
        let v = stats::percentile(us, f64::from(p));
        datapath::add_in_round(out, &format!("{prefix}_p{p}"), mode, n, r, v);
    }
}

/// One connection-rate run of `threads` loops for `dur` to each of `to` (mode, address: the
/// same-node server by its ClusterIP or its pod IP) in `slices` alternating slices; one
/// result per target, or none when a run failed (a warning); failed connections are warnings.
fn connect_run(
    ctx: &mut Ctx,
    level: usize,
    to: &[(&str, Ipv4Addr)],
    (dur, threads): (Duration, usize),
    slices: usize,
) -> Option<Vec<load::ConnRate>> {
    let targets: Vec<SocketAddr> = to
        .iter()
        .map(|&(_, ip)| SocketAddr::from((ip, RR_PORT)))
        .collect();
    let run = netns::run_in(CLIENT_NS, move || {
        load::connection_rate_sliced(&targets, dur, threads, slices)
    });
    std::thread::sleep(Duration::from_millis(50));
    let modes: Vec<&str> = to.iter().map(|&(m, _)| m).collect();
    let modes = modes.join(" + ");
    let runs = match run.map_err(anyhow::Error::from).and_then(|r| Ok(r?)) {
        Ok(runs) => runs,
        Err(e) => {
            ctx.warn(format!("scale {modes} N={level}: {e:#}"));
            return None;
        }
    };
    for ((mode, _), c) in to.iter().zip(&runs) {
        if c.errors > 0 {
            ctx.warn(format!(
                "scale {mode} N={level}, {threads} loop(s): {} connections failed ({})",
                c.errors, c.last_error
            ));
        }
    }
    Some(runs)
}

/// [`probe_once`] with its control, `reps` rounds, switchyard alone (levels kube-proxy's
/// modes do not reach).
fn probe(ctx: &mut Ctx, level: usize) {
    for rep in 0..ctx.plan.reps {
        let round = Round::next();
        probe_once(ctx, "switchyard", level, rep, round, true);
    }
    ctx.progress.tick();
}

/// The probes at a level every mode reaches: kube-proxy's rule sets for `level` installed
/// (each install and update timed from an empty ruleset first), then switchyard (with
/// its control in its turn), iptables and nftables by turns, `reps` rounds
/// ([`interleave`]).
fn probe_interleaved(ctx: &mut Ctx, level: usize, frontends: u64) -> Result<()> {
    let tools = [Tool::Iptables, Tool::Nftables];
    for tool in tools {
        kernel_programming(ctx, tool, level)?;
    }
    // The timed installs each start from an empty ruleset; iptables' set is loaded again
    // (untimed) beside nftables' for the turns.
    ctx.progress.doing(&format!(
        "scale: loading iptables' rules for N={level} beside nftables'"
    ));
    Tool::Iptables.install(&rule_set(ctx, level))?;
    let mut turns = Turns::new(&tools, frontends);
    let planes: Vec<Plane> = std::iter::once(Plane::Switchyard)
        .chain(tools.iter().map(|&t| Plane::Kernel(t)))
        .collect();
    for rep in 0..ctx.plan.reps {
        let round = Round::next();
        for plane in interleave::order(&planes, rep) {
            turns.activate(ctx, plane)?;
            let control = plane == Plane::Switchyard;
            probe_once(ctx, plane.name(), level, rep, round, control);
        }
    }
    turns.finish(ctx)?;
    for _ in &planes {
        ctx.progress.tick();
    }
    Ok(())
}

/// The endpoints of the changed filler in repetition `rep` (alternating, one address differs).
fn changed(ctx: &Ctx, rep: usize) -> (Svc, Svc) {
    let orig = ctx.fillers[CHANGED].clone();
    let mut alt = orig.clone();
    if let Some(last) = alt.endpoints.last_mut() {
        *last = Ipv4Addr::new(10, 244, 250, 1 + (rep / 2) as u8);
    }
    if rep.is_multiple_of(2) {
        (orig, alt)
    } else {
        (alt, orig)
    }
}

/// Creates fillers until there are `count`.
fn ensure_fillers(ctx: &mut Ctx, count: usize) -> Result<()> {
    let have = ctx.fillers.len();
    if count <= have {
        return Ok(());
    }
    ctx.progress.doing(&format!(
        "creating Services {have}..{count} in controlplane-lite"
    ));
    let start = Instant::now();
    let more = ctx
        .rt
        .block_on(ctx.cluster.create_fillers(have..count))
        .context("creating filler services")?;
    ctx.fillers.extend(more);
    ctx.progress.say(&format!(
        "created {} Services with EndpointSlices in {:.1} s",
        count - have,
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// switchyard at every level: rate, latency, update, install from empty, footprint.
pub fn switchyard(ctx: &mut Ctx) -> Result<()> {
    let a = ctx.agent.clone();
    let levels = ctx.plan.levels.clone();
    for &level in &levels {
        let started = Instant::now();
        ensure_fillers(ctx, level - 1)?;
        ctx.progress.doing(&format!(
            "scale: waiting for the agent to program N={level}"
        ));
        let programmed = Instant::now();
        if level > 1 {
            ctx.parts.push(Part {
                name: format!("creating fillers up to N={level} (the agents following)"),
                seconds: programmed.duration_since(started).as_secs_f64(),
            });
        }
        switchyard_level(ctx, &a, level)?;
        let name = if ctx.plan.kernel_levels.contains(&level) {
            format!("switchyard, iptables and nftables at N={level}")
        } else {
            format!("switchyard at N={level}")
        };
        ctx.parts.push(Part::since(name, programmed));
    }
    Ok(())
}

/// One level of [`switchyard`] once its fillers exist: update, install from empty,
/// footprint, then rate and latency (interleaved with kube-proxy's modes where they reach).
fn switchyard_level(ctx: &mut Ctx, a: &agent::Agent, level: usize) -> Result<()> {
    let want = ctx.base_frontends + (level as u64 - 1);
    a.wait_settled(want, Duration::from_secs(600))?;
    if level >= 1_000 {
        switchyard_programming(ctx, a, level, want)?;
    }
    if ctx.plan.kernel_levels.contains(&level) {
        probe_interleaved(ctx, level, want)
    } else {
        probe(ctx, level);
        Ok(())
    }
}

/// switchyard's programming figures at `level`: endpoint changes, installs from empty,
/// footprint (and idle CPU at the largest level).
fn switchyard_programming(ctx: &mut Ctx, a: &agent::Agent, level: usize, want: u64) -> Result<()> {
    for rep in 0..ctx.plan.reps {
        ctx.progress.doing(&format!(
            "programming: switchyard endpoint change at N={level}"
        ));
        let (_, after) = changed(ctx, rep);
        let mark = a.mark();
        ctx.rt.block_on(
            ctx.cluster
                .set_endpoints(&cluster::filler_name(CHANGED), &after.endpoints),
        )?;
        let s = a.wait_sync(
            mark,
            "the sync of an endpoint change",
            Duration::from_secs(30),
            |s| s.written + s.deleted > 0,
        )?;
        let took = Duration::from_micros(s.took_us);
        add_ms(ctx, "program_update", "switchyard", level, took);
    }
    // Leave the filler as created (an odd number of changes left it changed), so every
    // mode programs the same set.
    if !ctx.plan.reps.is_multiple_of(2) {
        let orig = ctx.fillers[CHANGED].endpoints.clone();
        let mark = a.mark();
        ctx.rt.block_on(
            ctx.cluster
                .set_endpoints(&cluster::filler_name(CHANGED), &orig),
        )?;
        a.wait_sync(mark, "the endpoint reset", Duration::from_secs(30), |s| {
            s.written + s.deleted > 0
        })?;
    }
    ctx.progress.tick();
    for run in ctx.plan.install_runs() {
        ctx.progress.doing(&format!(
            "programming: switchyard from empty at N={level} ({run})"
        ));
        switch::restart_from_empty(&ctx.lab, 1)?;
        let first = a.wait_sync(
            0,
            &format!("its first sync of {want} frontends"),
            Duration::from_secs(600),
            |s| s.frontends >= want,
        )?;
        let took = Duration::from_micros(first.took_us);
        add_ms(ctx, "program_install", "switchyard", level, took);
        let footprint = level >= FOOTPRINT_FROM || level == ctx.plan.max_level();
        let c = format!("N={level}, {} endpoints", endpoints(ctx, level));
        if footprint {
            let cpu = a.footprint()?.cpu_s;
            datapath::add(&mut ctx.scenarios, "footprint_cpu", "switchyard", &c, cpu);
        }
        a.wait_settled(want, Duration::from_secs(120))?;
        if footprint {
            // What it holds once its syncs went quiet (what it keeps while it runs), and
            // the most it held on the way (the relist and the first full recompute).
            let f = a.footprint()?;
            datapath::add(
                &mut ctx.scenarios,
                "footprint_rss",
                "switchyard",
                &c,
                f.rss_mib,
            );
            datapath::add(
                &mut ctx.scenarios,
                "footprint_peak_rss",
                "switchyard",
                &c,
                f.peak_mib,
            );
        }
    }
    ctx.progress.tick();
    if level == ctx.plan.max_level() {
        idle_cpu(ctx, a, level)?;
    }
    // The pods of n1 are re-attached by the restarted agent; be sure before measuring on.
    wait_reachable(ctx)?;
    Ok(())
}

fn endpoints(ctx: &Ctx, level: usize) -> usize {
    ctx.fillers[..level.saturating_sub(1)]
        .iter()
        .map(|s| s.endpoints.len())
        .sum::<usize>()
        + ctx.workload.services.len()
}

fn idle_cpu(ctx: &mut Ctx, a: &agent::Agent, level: usize) -> Result<()> {
    let c = format!("N={level}, {} endpoints", endpoints(ctx, level));
    for rep in 0..ctx.plan.reps {
        ctx.progress.doing(&format!(
            "footprint: idle agent CPU (run {}/{})",
            rep + 1,
            ctx.plan.reps
        ));
        let c0 = a.footprint()?.cpu_s;
        let t = Instant::now();
        std::thread::sleep(Duration::from_secs(ctx.plan.idle_secs));
        let c1 = a.footprint()?.cpu_s;
        let pct = (c1 - c0) / t.elapsed().as_secs_f64() * 100.0;
        datapath::add(
            &mut ctx.scenarios,
            "footprint_idle_cpu",
            "switchyard",
            &c,
            pct,
        );
    }
    ctx.progress.tick();
    Ok(())
}

/// Waits until the same-node ClusterIP answers from the client pod.
pub fn wait_reachable(ctx: &Ctx) -> Result<()> {
    let target = SocketAddr::from((ctx.workload.backends[0].cluster_ip, RR_PORT));
    let ok = netns::run_in(CLIENT_NS, move || {
        load::first_success(target, Duration::from_secs(30))
    })?;
    if ok.is_none() {
        bail!("{target} does not answer from the client pod (see target/lab/logs)");
    }
    Ok(())
}

/// A kube-proxy mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tool {
    /// iptables-restore.
    Iptables,
    /// nft -f.
    Nftables,
}

impl Tool {
    /// The mode's name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Tool::Iptables => "iptables",
            Tool::Nftables => "nftables",
        }
    }

    /// Its nftables table (iptables here is the nf_tables backend).
    pub fn table(self) -> &'static str {
        match self {
            Tool::Iptables => "nat",
            Tool::Nftables => nftables::TABLE,
        }
    }

    /// Installs `services` into an empty table of its own (other tables stay).
    fn install(self, services: &[Svc]) -> Result<Duration> {
        apply::delete_table(NODE_NS, self.table())?;
        Ok(match self {
            Tool::Iptables => {
                apply::iptables_restore(NODE_NS, &iptables::full(services, CLUSTER_CIDR), false)?
            }
            Tool::Nftables => apply::nft(NODE_NS, &nftables::full(services, CLUSTER_CIDR))?,
        })
    }

    fn update(self, services: &[Svc], before: &Svc, after: &Svc) -> Result<Duration> {
        Ok(match self {
            Tool::Iptables => apply::iptables_restore(
                NODE_NS,
                &iptables::update(services, before, after, CLUSTER_CIDR),
                true,
            )?,
            Tool::Nftables => apply::nft(NODE_NS, &nftables::update(before, after, CLUSTER_CIDR))?,
        })
    }
}

/// The cluster's pod CIDR (traffic from outside it is masqueraded, as kube-proxy's --cluster-cidr).
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";

/// One kube-proxy mode's per-packet scenarios (switchyard detached everywhere, the kernel
/// overlay up): its rules for the workload alone, then the datapath modes.
pub fn kernel_datapath(ctx: &mut Ctx, tool: Tool) -> Result<()> {
    let mode = tool.name();
    let started = Instant::now();
    ctx.progress
        .doing(&format!("{mode}: rules for the workload alone"));
    apply::flush_all(NODE_NS)?;
    tool.install(&rule_set(ctx, 1))?;
    wait_reachable(ctx).with_context(|| format!("{mode} rules for N=1 loaded"))?;
    let mut modes = vec![
        (format!("{mode}-clusterip"), Via::ClusterIp),
        (format!("{mode}-nodeport"), Via::NodePort),
    ];
    if tool == Tool::Iptables {
        modes.insert(0, ("direct-kernel".into(), Via::Direct));
    }
    let modes: Vec<(&str, Via)> = modes.iter().map(|(m, v)| (m.as_str(), *v)).collect();
    let mut warnings = Vec::new();
    let m = datapath::Measure {
        plan: &ctx.plan,
        workload: &ctx.workload,
        stats: None,
        progress: &ctx.progress,
        control: false,
    };
    datapath::measure(&m, &modes, &mut ctx.scenarios, &mut warnings);
    ctx.warnings.extend(warnings);
    apply::flush_all(NODE_NS)?;
    ctx.parts
        .push(Part::since(format!("{mode} per-packet modes"), started));
    Ok(())
}

/// One kube-proxy mode's programming figures at `level`, from a ruleset without its table:
/// installs (timed from 1,000 Services on), then endpoint changes. iptables' table is removed
/// afterwards (the next mode's installs start from an empty ruleset too); nftables' stays.
fn kernel_programming(ctx: &mut Ctx, tool: Tool, level: usize) -> Result<()> {
    let mode = tool.name();
    let mut set = rule_set(ctx, level);
    for run in ctx.plan.install_runs() {
        ctx.progress
            .doing(&format!("programming: {mode} install N={level} ({run})"));
        let took = tool.install(&set)?;
        if level >= 1_000 {
            add_ms(ctx, "program_install", mode, level, took);
        }
    }
    ctx.progress.tick();
    if level >= 1_000 {
        for rep in 0..ctx.plan.reps {
            ctx.progress
                .doing(&format!("programming: {mode} endpoint change at N={level}"));
            let (before, after) = changed(ctx, rep);
            let idx = set
                .iter()
                .position(|s| s.name == before.name)
                .context("changed filler in the rule set")?;
            set[idx] = after.clone();
            let took = tool.update(&set, &before, &after)?;
            add_ms(ctx, "program_update", mode, level, took);
        }
        ctx.progress.tick();
    }
    if tool == Tool::Iptables {
        apply::delete_table(NODE_NS, tool.table())?;
    }
    Ok(())
}

/// Files `took` in milliseconds under scenario `id`, mode `mode`, case N=`level`.
fn add_ms(ctx: &mut Ctx, id: &str, mode: &str, level: usize, took: Duration) {
    let ms = took.as_secs_f64() * 1000.0;
    datapath::add(&mut ctx.scenarios, id, mode, &case(level), ms);
}

/// Progress steps of [`switchyard`] (with the kube-proxy modes' turns and programming).
pub fn steps(plan: &crate::plan::Plan) -> u64 {
    let big = |levels: &[usize]| levels.iter().filter(|l| **l >= 1_000).count() as u64;
    // switchyard: probe per level, update + install per big level, idle once.
    let sy = plan.levels.len() as u64 + 2 * big(&plan.levels) + 1;
    // each kernel mode: install + probe per level, update per big level.
    let k = 2 * plan.kernel_levels.len() as u64 + big(&plan.kernel_levels);
    sy + 2 * k
}
