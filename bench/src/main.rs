//! # switchyard-bench
//!
//! `switchyard-bench run [--quick]` (what `cargo xtask bench` runs): starts a three-node lab,
//! measures switchyard against direct pod IPs and kube-proxy's iptables and nftables modes on
//! the same pods, and writes `target/bench/report.md`, `report.json` and one PNG per scenario.
//! `switchyard-bench serve --port P` is the workload server the benchmark's pods run.
//! All traffic stays inside the lab's `sy-*` namespaces.
//!
//! # Layout
//! - [`run`]: the order of a run, the shared context.
//! - [`workload`]: pods and Services measured. [`datapath`], [`control`], [`scale`]: scenarios.
//! - [`load`], [`iperf`]: traffic, run in lab namespaces with `switchyard_lab::netns`.
//!   [`kproxy`]: kube-proxy's rules. [`switch`]: attaching and detaching dataplanes. [`agent`]: the
//!   agent's log and footprint. [`bpfstats`]: the kernel's per-program run-time accounting.
//!   [`perpacket`]: the client pod's ClusterIP traffic on the per-packet path.
//!   [`interleave`]: switchyard and kube-proxy's modes taking turns at the scale probes.
//! - [`report`], [`targets`], [`stats`], [`plot`], [`progress`]: output.
mod agent;
mod bpfstats;
mod cluster;
mod control;
mod datapath;
mod interleave;
mod iperf;
mod kproxy;
mod load;
mod maglev;
mod perpacket;
mod plan;
mod plot;
mod progress;
mod report;
mod run;
mod scale;
mod stats;
mod switch;
mod targets;
mod workload;
mod xdp;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "switchyard-bench")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the benchmark (needs root; builds and removes its own lab).
    Run {
        /// Short runs and N up to 1,000 only (under five minutes).
        #[arg(long)]
        quick: bool,
        /// Where the report goes.
        #[arg(long)]
        out: Option<PathBuf>,
        /// switchyard's scale levels instead of the plan's (e.g. `--levels 1,100000` with
        /// `--quick` measures one large N in a few minutes); kube-proxy's modes keep theirs.
        #[arg(long, value_delimiter = ',')]
        levels: Option<Vec<usize>>,
    },
    /// Print the kube-proxy rule set the benchmark loads for N Services (synthetic ClusterIPs):
    /// `iptables` (iptables-restore input) or `nftables` (nft -f input).
    Render {
        /// iptables or nftables.
        mode: String,
        /// Number of Services.
        #[arg(long, default_value_t = 1000)]
        services: usize,
        /// Print the update for one endpoint change after the full set instead.
        #[arg(long)]
        update: bool,
    },
    /// Measure new connections per second to ADDR (connect, one request, close with RST), as
    /// the benchmark does; run it inside a lab namespace (`ip netns exec sy-pod-default-client`).
    ConnRate {
        /// Server address, e.g. 10.96.0.10:9000 (a `switchyard-bench serve`).
        addr: std::net::SocketAddr,
        /// Seconds to run.
        #[arg(long, default_value_t = 3.0)]
        secs: f64,
        /// Parallel connecting threads.
        #[arg(long, default_value_t = 4)]
        threads: usize,
    },
    /// Create filler Services `from..to` (with their EndpointSlices) as the scale scenarios
    /// do, through the API server of `kubeconfig`; prints the rate.
    Fill {
        /// Kubeconfig of the API server (e.g. target/lab/kubeconfig).
        #[arg(long)]
        kubeconfig: PathBuf,
        /// First filler index.
        #[arg(long, default_value_t = 0)]
        from: usize,
        /// One past the last filler index.
        #[arg(long)]
        to: usize,
    },
    /// Serve the benchmark's request/response protocol (run inside pods).
    Serve {
        /// TCP port.
        #[arg(long, default_value_t = 9000)]
        port: u16,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Cmd::Serve { port } => Ok(load::serve(port)?),
        Cmd::ConnRate {
            addr,
            secs,
            threads,
        } => {
            let r = load::connection_rate(addr, std::time::Duration::from_secs_f64(secs), threads)?;
            println!("{:.0} conn/s, {} failed", r.per_sec(), r.errors);
            Ok(())
        }
        Cmd::Fill {
            kubeconfig,
            from,
            to,
        } => {
            let rt = tokio::runtime::Runtime::new()?;
            let started = std::time::Instant::now();
            rt.block_on(async {
                let c = cluster::Cluster::connect(&kubeconfig).await?;
                c.create_fillers(from..to).await
            })?;
            let secs = started.elapsed().as_secs_f64();
            let n = to.saturating_sub(from);
            println!("{n} Services in {secs:.1} s ({:.0}/s)", n as f64 / secs);
            Ok(())
        }
        Cmd::Render {
            mode,
            services,
            update,
        } => {
            let mut svcs = kproxy::synthetic(services.max(1));
            let before = svcs[0].clone();
            let mut after = before.clone();
            after.endpoints[0] = std::net::Ipv4Addr::new(10, 244, 250, 1);
            let cidr = scale::CLUSTER_CIDR;
            let text = match (mode.as_str(), update) {
                ("iptables", false) => kproxy::iptables::full(&svcs, cidr),
                ("iptables", true) => {
                    svcs[0] = after.clone();
                    kproxy::iptables::update(&svcs, &before, &after, cidr)
                }
                ("nftables", false) => kproxy::nftables::full(&svcs, cidr),
                ("nftables", true) => kproxy::nftables::update(&before, &after, cidr),
                (other, _) => anyhow::bail!("unknown mode {other:?}: iptables or nftables"),
            };
            print!("{text}");
            Ok(())
        }
        Cmd::Run { quick, out, levels } => {
            let out = out.unwrap_or_else(run::default_out);
            let mut plan = plan::Plan::new(quick);
            if let Some(levels) = levels {
                plan = plan.with_levels(levels).map_err(anyhow::Error::msg)?;
            }
            let report = run::run(plan, &out)?;
            println!("{}", report.headline());
            println!("{}", targets::markdown(&report));
            println!(
                "report: {} (and report.json, one PNG per scenario), {:.0} s",
                out.join("report.md").display(),
                report.duration_s
            );
            Ok(())
        }
    }
}
