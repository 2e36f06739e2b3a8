//! Builds the eBPF programs (`ebpf/programs`, nightly, `bpfel-unknown-none`) so that a plain
//! `cargo build` of the agent is the only command a user needs. The object is embedded by
//! `datapath::loader` from `$OUT_DIR/switchyard.bpf.o`.
use std::{
    env,
    path::{Path, PathBuf},
    process::Command,
};

fn main() {
    let manifest =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let ebpf_dir = manifest.join("../ebpf/programs");
    let abi_dir = manifest.join("../ebpf/abi");
    for p in [
        "src",
        "Cargo.toml",
        ".cargo/config.toml",
        "rust-toolchain.toml",
    ] {
        println!("cargo:rerun-if-changed={}", ebpf_dir.join(p).display());
    }
    for p in ["src", "Cargo.toml"] {
        println!("cargo:rerun-if-changed={}", abi_dir.join(p).display());
    }
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    // One target dir for every profile of the agent, so the nightly build runs once, not per profile.
    let target_dir = manifest.join("../target/ebpf");

    let mut cmd = Command::new("rustup");
    cmd.current_dir(&ebpf_dir).args([
        "run",
        "nightly",
        "cargo",
        "build",
        "--release",
        "--target",
        "bpfel-unknown-none",
        "-Z",
        "build-std=core",
        "--target-dir",
    ]);
    cmd.arg(&target_dir);
    // The outer cargo's settings (toolchain, wrappers such as clippy-driver, host RUSTFLAGS) must
    // not leak into the nightly BPF build.
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        let keep = matches!(key, "CARGO_HOME" | "RUSTUP_HOME");
        if !keep
            && (key.starts_with("CARGO")
                || key.starts_with("RUSTC")
                || key.starts_with("RUSTUP_TOOLCHAIN")
                || key == "RUSTFLAGS"
                || key == "RUSTDOC")
        {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run `rustup run nightly cargo` to build the eBPF programs: {e}. Run `cargo xtask setup` first.")
    });
    if !status.success() {
        panic!(
            "building the eBPF programs in {} failed ({status}). They need the nightly toolchain with \
             rust-src and bpf-linker: run `cargo xtask setup`.",
            ebpf_dir.display()
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/switchyard");
    copy(&object, &out_dir.join("switchyard.bpf.o"));
}

fn copy(from: &Path, to: &Path) {
    std::fs::copy(from, to)
        .unwrap_or_else(|e| panic!("copying {} to {}: {e}", from.display(), to.display()));
}
