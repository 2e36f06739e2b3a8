//! `cargo xtask bench [--quick] [--levels N,…]`: builds, then runs the benchmark driver
//! (`switchyard-bench run`, crate `bench/`) under the lab lock `/tmp/switchyard-lab.lock`, so
//! it never shares the fixed lab names with another lab. When the caller already holds the
//! lock (`cargo xtask test` under `flock`, or CI which runs alone) it sets
//! `SWITCHYARD_LAB_LOCK_HELD=1` and the lock is not taken again (that would wait forever).
use std::path::PathBuf;
use std::process::Command;

use anyhow::{bail, Context, Result};
use switchyard_lab::lab;

/// The lock every lab user holds.
pub const LAB_LOCK: &str = "/tmp/switchyard-lab.lock";

/// Set when the lab lock is already held by an ancestor process.
pub const LOCK_HELD_ENV: &str = "SWITCHYARD_LAB_LOCK_HELD";

/// Runs the benchmark driver (the workspace must be built).
pub fn run(quick: bool, out: Option<PathBuf>, levels: Option<String>) -> Result<()> {
    let bin = lab::workspace_root().join("target/debug/switchyard-bench");
    if !bin.exists() {
        bail!("{} is missing: cargo build --workspace", bin.display());
    }
    let mut cmd = if std::env::var_os(LOCK_HELD_ENV).is_some() {
        Command::new(&bin)
    } else {
        println!("==> waiting for the lab lock {LAB_LOCK}");
        // -o: the lab processes the driver starts must not inherit the lock's descriptor (they
        // would hold the lock after the run, and a later `flock … lab down` would wait forever).
        let mut c = Command::new("flock");
        c.arg("-o").arg(LAB_LOCK).arg(&bin);
        c
    };
    cmd.arg("run").env(LOCK_HELD_ENV, "1");
    if quick {
        cmd.arg("--quick");
    }
    if let Some(out) = out {
        cmd.arg("--out").arg(out);
    }
    if let Some(levels) = levels {
        cmd.arg("--levels").arg(levels);
    }
    println!(
        "==> switchyard-bench run{}",
        if quick { " --quick" } else { "" }
    );
    let status = cmd.status().context("starting the benchmark driver")?;
    if !status.success() {
        bail!("the benchmark failed ({status}); the lab logs are in target/lab/logs");
    }
    Ok(())
}
