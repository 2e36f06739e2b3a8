//! `cargo xtask setup`: everything a fresh Debian 12 machine needs, idempotently.
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};

/// Debian packages the lab, the tests and the benchmarks use.
pub const PACKAGES: &[&str] = &[
    "iproute2",
    "bpftool",
    "iperf3",
    "wrk",
    "sockperf",
    "nftables",
    "iptables",
    "conntrack",
    "curl",
    "socat",
    // dig: the lab waits for its cluster DNS with it, the DNS tests ask it for SRV records.
    "dnsutils",
    "tcpdump",
    "clang-19",
    "python3-pip",
    "util-linux",
    // The benchmark plots draw their text with DejaVu Sans.
    "fonts-dejavu-core",
    // `cargo xtask image`'s test inspects the archive; users push it with `skopeo copy`.
    "skopeo",
    // The metrics test scrapes the agents with a real Prometheus and checks /metrics with promtool.
    "prometheus",
];

fn ok(cmd: &mut Command) -> bool {
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn run(what: &str, cmd: &mut Command) -> Result<()> {
    println!("  $ {what}");
    let status = cmd.status().with_context(|| format!("cannot run {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

fn installed(pkg: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", pkg])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn packages() -> Result<()> {
    let missing: Vec<&str> = PACKAGES.iter().copied().filter(|p| !installed(p)).collect();
    if missing.is_empty() {
        println!("  apt packages: all present");
        return Ok(());
    }
    run(
        "apt-get update",
        Command::new("apt-get").args(["update", "-qq"]),
    )?;
    run(
        &format!("apt-get install -y {}", missing.join(" ")),
        Command::new("apt-get")
            .args(["install", "-y", "-qq"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn toolchain() -> Result<()> {
    if !ok(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        run(
            "rustup toolchain install nightly --profile minimal",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    run(
        "rustup component add rust-src --toolchain nightly",
        Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]),
    )
}

/// bpf-linker built against the nightly toolchain's own LLVM (the default features download
/// an LLVM, which fails here).
fn bpf_linker() -> Result<()> {
    if ok(Command::new("bpf-linker").arg("--version")) {
        println!("  bpf-linker: present");
        return Ok(());
    }
    let sysroot = Command::new("rustc")
        .args(["+nightly", "--print", "sysroot"])
        .output()
        .context("rustc +nightly --print sysroot")?;
    let libdir = Path::new(String::from_utf8_lossy(&sysroot.stdout).trim()).join("lib");
    let llvm = std::fs::read_dir(&libdir)
        .with_context(|| format!("reading {}", libdir.display()))?
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .find(|n| n.starts_with("libLLVM") && n.ends_with(".so"))
        .with_context(|| {
            format!(
                "no libLLVM-*.so in {}: is the nightly toolchain complete?",
                libdir.display()
            )
        })?;
    let name = llvm.trim_start_matches("lib").trim_end_matches(".so");
    let major = name.split(['-', '.']).nth(1).unwrap_or("22");
    let lib = libdir.display();
    let flags = format!("-L {lib} -l dylib={name} -C link-arg=-Wl,-rpath,{lib}");
    run(
        &format!("RUSTFLAGS=\"{flags}\" cargo +nightly install bpf-linker --no-default-features --features llvm-{major},no-llvm-linking"),
        Command::new("cargo")
            .args(["+nightly", "install", "bpf-linker", "--no-default-features", "--features", &format!("llvm-{major},no-llvm-linking")])
            .env("RUSTFLAGS", flags),
    )
}

/// The Python `kubernetes` client, for the API compatibility tests.
fn python_client() -> Result<()> {
    if ok(Command::new("python3").args(["-c", "import kubernetes"])) {
        println!("  python kubernetes client: present");
        return Ok(());
    }
    run(
        "python3 -m pip install kubernetes",
        Command::new("python3").args(["-m", "pip", "install", "-q", "kubernetes"]),
    )
}

fn bpffs() -> Result<()> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T", "/sys/fs/bpf"])
        .output()
        .context("stat -f /sys/fs/bpf")?;
    if String::from_utf8_lossy(&out.stdout).trim() == "bpf_fs" {
        println!("  bpffs: mounted");
        return Ok(());
    }
    run(
        "mount -t bpf bpf /sys/fs/bpf",
        Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]),
    )
}

/// Runs every step.
pub fn setup() -> Result<()> {
    println!("==> setup (idempotent)");
    packages()?;
    toolchain()?;
    bpf_linker()?;
    python_client()?;
    bpffs()?;
    Ok(())
}
