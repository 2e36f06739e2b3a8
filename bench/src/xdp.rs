//! NodePort acceleration against the TC path ("report tc vs XDP NodePort throughput and
//! connections/s"). Native XDP on the lab's veths needs the external client to compute its own
//! checksums (see `switchyard_lab::topology::native_xdp_peers`), which changes the client's
//! cost, so both are measured that way: the per-packet runs of the NodePort route as mode
//! [`TC_MODE`] (TC path), then with n1's agent restarted with `--nodeport-acceleration native`
//! as [`MODE`], into the same scenarios — their ratios against `direct` come out as for every
//! other mode. Then n1's agent and the client are restored. These repetitions run after the
//! other modes', not interleaved with them: switching costs an agent restart each way.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use switchyard_lab::{ethtool, topology, xdp_pass};

use crate::datapath;
use crate::run::Ctx;
use crate::workload::Via;

/// The mode name of accelerated NodePort in the report.
pub const MODE: &str = "switchyard-nodeport-xdp";
/// The TC path's NodePort with the client computing its checksums, the baseline of [`MODE`].
pub const TC_MODE: &str = "switchyard-nodeport-tc";

/// The agent flag that turns acceleration on.
const FLAG: [&str; 2] = ["--nodeport-acceleration", "native"];

/// The pin of n1's XDP link: present while the accelerated agent has attached it.
fn xdp_pin() -> PathBuf {
    switchyard::paths::pin_dir(&topology::node_name(1)).join("links/dev/eth0-xdp")
}

/// Restarts n1's agent with acceleration `on` and waits until its XDP link is (or is no
/// longer) attached.
fn switch_n1(ctx: &mut Ctx, on: bool) -> Result<()> {
    if on {
        xdp_pass::attach(topology::UNDERLAY, &topology::node_name(1))?;
        ctx.lab.opts.agent_args.extend(FLAG.map(String::from));
    } else {
        let args = &mut ctx.lab.opts.agent_args;
        if let Some(i) = args.windows(2).position(|w| w == FLAG) {
            args.drain(i..i + 2);
        }
    }
    ctx.lab.restart_agent(1).context("restarting n1's agent")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while xdp_pin().exists() != on {
        if Instant::now() > deadline {
            bail!(
                "n1's agent did not {} NodePort acceleration within 30 s: see {}",
                if on { "attach" } else { "detach" },
                ctx.lab.agent_log(1).display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    if !on {
        xdp_pass::detach(topology::UNDERLAY, &topology::node_name(1))?;
    }
    Ok(())
}

/// Measures the NodePort route on the TC path and with n1's agent accelerated, the client
/// computing its checksums for both, into `ctx.scenarios`.
pub fn measure(ctx: &mut Ctx) -> Result<()> {
    ethtool::tx_checksum(topology::EXT, "eth0", false)?;
    let mut warnings = Vec::new();
    measure_mode(ctx, TC_MODE, &mut warnings);
    ctx.progress
        .doing("restarting n1's agent with --nodeport-acceleration native");
    switch_n1(ctx, true)?;
    let sent_before = ctx.lab.counter(1, "xdp_tx").unwrap_or(0);
    measure_mode(ctx, MODE, &mut warnings);
    let sent = ctx.lab.counter(1, "xdp_tx").unwrap_or(0) - sent_before;
    ctx.warnings.extend(warnings);
    if sent == 0 {
        ctx.warn(format!(
            "{MODE}: xdp_nodeport sent no packet (xdp_tx did not move)"
        ));
    } else {
        ctx.progress.say(&format!(
            "{MODE}: xdp_nodeport sent {sent} packets (xdp_tx)"
        ));
    }
    ctx.progress
        .doing("restarting n1's agent without acceleration");
    switch_n1(ctx, false)?;
    ethtool::tx_checksum(topology::EXT, "eth0", true)?;
    Ok(())
}

/// The per-packet runs of the NodePort route as `mode`.
fn measure_mode(ctx: &mut Ctx, mode: &str, warnings: &mut Vec<String>) {
    let m = datapath::Measure {
        plan: &ctx.plan,
        workload: &ctx.workload,
        stats: None,
        progress: &ctx.progress,
        control: false,
    };
    datapath::measure(&m, &[(mode, Via::NodePort)], &mut ctx.scenarios, warnings);
}
