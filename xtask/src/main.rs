//! `cargo xtask`: the project's commands.
//!
//! - `setup`: machine set-up (apt packages, nightly rust-src, bpf-linker, bpffs), idempotent.
//! - `build`: setup + `cargo build --workspace` (the agent's build script builds the eBPF object).
//! - `test`: build + fmt/clippy + unit tests + the root-only netns tests, serially.
//! - `demo`: build + a one-node lab, three echo pods behind a ClusterIP, traffic from a client pod;
//!   then a three-node tour of the overlay, NodePort and masquerade (`--nodes 1|3` for one part).
//! - `lab up --nodes N` / `lab down`: a lab to use with `kubectl --kubeconfig target/lab/kubeconfig`.
//! - `bench [--quick] [--levels N,…]`: build + the benchmark (switchyard vs iptables vs nftables vs direct) in
//!   its own three-node lab; report in `target/bench`.
//! - `image [--out PATH]`: the agent's container image as an OCI archive, without a container
//!   daemon (`target/image/switchyard.oci.tar`; see `deploy/`).
mod bench;
mod demo;
mod image;
mod setup;
mod tour;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use switchyard_lab::{lab, Lab, LabOptions};

#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install and prepare everything the project needs on this machine.
    Setup,
    /// Set up and build the workspace, eBPF programs included.
    Build,
    /// Set up, build, check formatting and lints, run unit and netns end-to-end tests.
    Test,
    /// Run the demo: a one-node ClusterIP walk-through, then a three-node tour (overlay,
    /// NodePort, masquerade).
    Demo {
        /// Run only the part with this many nodes (1 or 3).
        #[arg(long)]
        nodes: Option<usize>,
    },
    /// Benchmark switchyard against kube-proxy's iptables and nftables modes and direct pod
    /// IPs; writes target/bench/report.md, report.json and one PNG per scenario.
    Bench {
        /// Short runs, up to 1,000 Services (under five minutes).
        #[arg(long)]
        quick: bool,
        /// Report directory (default target/bench).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
        /// switchyard's scale levels instead of the plan's, comma-separated (e.g. `--quick
        /// --levels 1,100000`: one large N in a few minutes).
        #[arg(long)]
        levels: Option<String>,
    },
    /// Build the agent's container image as an OCI archive (no container daemon needed); push
    /// it with `skopeo copy oci-archive:PATH docker://REGISTRY/switchyard:TAG`.
    Image {
        /// Where to write it (default target/image/switchyard.oci.tar).
        #[arg(long)]
        out: Option<std::path::PathBuf>,
    },
    /// Start or stop a lab.
    Lab {
        #[command(subcommand)]
        action: LabCmd,
    },
}

#[derive(Subcommand)]
enum LabCmd {
    /// Start a lab and leave it running.
    Up {
        /// Number of nodes.
        #[arg(long, default_value_t = 1)]
        nodes: usize,
        /// Run the release binaries (as the benchmark does).
        #[arg(long)]
        release: bool,
        /// The Service network (default: the lab's 10.96.0.0/16; 10.96.0.0/12 holds more
        /// than 65,000 Services).
        #[arg(long)]
        service_cidr: Option<String>,
    },
    /// Remove every namespace, link, process and pin a lab made.
    Down,
}

fn cargo(args: &[&str]) -> Result<()> {
    println!("==> cargo {}", args.join(" "));
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(lab::workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("cargo {} failed", args.join(" "));
    }
    Ok(())
}

fn build() -> Result<()> {
    setup::setup()?;
    cargo(&["build", "--workspace"])
}

/// The optimised lab binaries the benchmark runs: the agent's and the API server's own work is
/// part of what it measures.
fn build_lab_release() -> Result<()> {
    cargo(&[
        "build",
        "--release",
        "-p",
        "switchyard",
        "-p",
        "switchyard-cp",
        "-p",
        "switchyard-labnode",
    ])
}

/// Tears a lab down on Ctrl-C / SIGTERM so nothing is left behind.
fn clean_up_on_signals() -> Result<()> {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone())?;
    signal_hook::flag::register(signal_hook::consts::SIGTERM, flag.clone())?;
    std::thread::spawn(move || loop {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            eprintln!("\ninterrupted: removing the lab");
            lab::down(&lab::workspace_root());
            std::process::exit(130);
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    });
    Ok(())
}

fn test() -> Result<()> {
    build()?;
    build_lab_release()?;
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    cargo(&["test", "--workspace"])?;
    // Root-only tests: netns labs with fixed names, so one at a time. They include
    // bench/tests/quick.rs, the quick benchmark end to end (about 2.5 minutes, on the release
    // lab binaries built above), and xtask's own image test (the release agent in an OCI
    // archive, inspected with skopeo and run in a chroot).
    cargo(&["test", "--workspace", "--", "--ignored", "--test-threads=1"])?;
    println!("==> all tests passed");
    Ok(())
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Setup => setup::setup(),
        Cmd::Build => build(),
        Cmd::Test => test(),
        Cmd::Demo { nodes } => {
            if nodes.is_some_and(|n| n != 1 && n != 3) {
                bail!("--nodes takes 1 (ClusterIP walk-through) or 3 (multi-node tour)");
            }
            build()?;
            clean_up_on_signals()?;
            if nodes != Some(3) {
                demo::run()?;
            }
            if nodes != Some(1) {
                tour::run()?;
            }
            Ok(())
        }
        Cmd::Bench { quick, out, levels } => {
            build()?;
            build_lab_release()?;
            clean_up_on_signals()?;
            bench::run(quick, out, levels)
        }
        Cmd::Image { out } => image::run(out),
        Cmd::Lab {
            action:
                LabCmd::Up {
                    nodes,
                    release,
                    service_cidr,
                },
        } => {
            if nodes == 0 {
                bail!("--nodes must be at least 1");
            }
            build()?;
            let mut opts = LabOptions::new(nodes);
            if release {
                build_lab_release()?;
                opts = opts.release();
            }
            if let Some(cidr) = service_cidr {
                opts = opts.service_cidr(&cidr);
            }
            clean_up_on_signals()?;
            println!("==> lab up ({nodes} node(s))");
            let lab = Lab::up(opts)?;
            println!("lab running. Try:\n  kubectl --kubeconfig {} get nodes -o wide\n  kubectl --kubeconfig {0} apply -f examples/echo.yaml\nStop it with: cargo xtask lab down", lab.kubectl.kubeconfig.display());
            lab.keep_running();
            Ok(())
        }
        Cmd::Lab {
            action: LabCmd::Down,
        } => {
            lab::down(&lab::workspace_root());
            println!("lab removed");
            Ok(())
        }
    }
}
