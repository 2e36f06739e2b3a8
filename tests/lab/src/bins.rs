//! The workspace's binaries, for tests of other packages.
//!
//! Cargo sets `CARGO_BIN_EXE_<name>` only for the binaries of the package under test, so a test
//! that needs another package's binary (the agent's tests run `switchyard-labnode echo` as a
//! workload; the lab node runtime's tests run `switchyard` as the CNI plugin) asks [`cargo_bin`].
//! It runs `cargo build --workspace --bin <name>` once per test process, in the profile the
//! running test was built in (`target/<profile>/deps/<test>` → `target/<profile>/<name>`): a
//! binary is never stale, and since `--workspace` resolves features as `cargo build --workspace`
//! does, after that build it is a no-op.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;

use crate::lab::workspace_root;
use crate::LabError;

/// The path of workspace binary `name`, built (or found up to date) in the running test's
/// profile first.
pub fn cargo_bin(name: &str) -> Result<PathBuf, LabError> {
    static BUILT: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());
    let exe = std::env::current_exe().map_err(|e| LabError::Io("/proc/self/exe".into(), e))?;
    // target/<profile>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .ok_or_else(|| LabError::Unexpected(format!("{} is not in a target dir", exe.display())))?
        .to_path_buf();
    let path = profile_dir.join(name);
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.contains(name) {
        return Ok(path);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.args(["build", "--quiet", "--workspace", "--bin", name])
        .current_dir(workspace_root());
    // What cargo sets for the running test's own package must not reach the nested build: build
    // scripts that watch such variables (ring's watches CARGO_MANIFEST_DIR) would run again and
    // rebuild everything above them.
    for (key, _) in std::env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if key.starts_with("CARGO_PKG_")
            || key.starts_with("CARGO_MANIFEST_")
            || key.starts_with("CARGO_BIN_")
            || matches!(
                key,
                "CARGO_CRATE_NAME" | "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
        {
            cmd.env_remove(key);
        }
    }
    match profile_dir.file_name().and_then(|p| p.to_str()) {
        Some("debug") | None => {}
        Some("release") => {
            cmd.arg("--release");
        }
        Some(other) => {
            cmd.args(["--profile", other]);
        }
    }
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|source| LabError::Spawn {
        cmd: what.clone(),
        source,
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            cmd: what,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    if !path.exists() {
        return Err(LabError::MissingBinary(path));
    }
    built.insert(name.to_string());
    Ok(path)
}
