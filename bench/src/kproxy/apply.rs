//! Loading rule sets into a node namespace with the real tools, timed.
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use switchyard_lab::netns::in_ns;

/// Errors loading rules.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Refused: rules only go into the lab's node namespaces.
    #[error("refusing to load rules into {0:?}: only sy-n* lab node namespaces")]
    NotLab(String),
    /// The tool failed.
    #[error("{tool} in {netns} failed: {stderr}")]
    Tool {
        /// Command.
        tool: String,
        /// Namespace.
        netns: String,
        /// What it printed.
        stderr: String,
    },
}

/// Runs `argv` inside `netns` with `input` on stdin; how long it took.
pub fn load(netns: &str, argv: &[&str], input: &str) -> Result<Duration, ApplyError> {
    if !netns.starts_with("sy-n") {
        return Err(ApplyError::NotLab(netns.into()));
    }
    let fail = |stderr: String| ApplyError::Tool {
        tool: argv.join(" "),
        netns: netns.into(),
        stderr,
    };
    let start = Instant::now();
    let mut child = in_ns(netns, argv)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| fail(e.to_string()))?;
    }
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let took = start.elapsed();
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.lines().take(5).collect::<Vec<_>>().join(" / ")));
    }
    Ok(took)
}

/// `iptables-restore` (full: replaces the nat table; `noflush`: kube-proxy's partial sync).
pub fn iptables_restore(netns: &str, rules: &str, noflush: bool) -> Result<Duration, ApplyError> {
    if noflush {
        load(netns, &["iptables-restore", "--noflush"], rules)
    } else {
        load(netns, &["iptables-restore"], rules)
    }
}

/// `nft -f -`.
pub fn nft(netns: &str, rules: &str) -> Result<Duration, ApplyError> {
    load(netns, &["nft", "-f", "-"], rules)
}

/// Removes every iptables and nftables rule of `netns` (iptables here is the nf_tables
/// backend, so flushing the nftables ruleset covers both).
pub fn flush_all(netns: &str) -> Result<(), ApplyError> {
    load(netns, &["nft", "flush", "ruleset"], "").map(|_| ())
}

/// Removes table `ip <table>` of `netns` if it is there (declaring it first makes the delete
/// succeed on an empty ruleset).
pub fn delete_table(netns: &str, table: &str) -> Result<(), ApplyError> {
    let script = format!("table ip {table}\ndelete table ip {table}\n");
    load(netns, &["nft", "-f", "-"], &script).map(|_| ())
}

/// Unhooks (`dormant`) or hooks again table `ip <table>` of `netns`. A dormant table's base
/// chains leave the netfilter hooks and its rules stay loaded, so a mode is switched off and
/// on in milliseconds whatever its size (`nft add table` without flags clears the flag).
pub fn set_dormant(netns: &str, table: &str, dormant: bool) -> Result<(), ApplyError> {
    let script = if dormant {
        format!("add table ip {table} {{ flags dormant; }}\n")
    } else {
        format!("add table ip {table}\n")
    };
    load(netns, &["nft", "-f", "-"], &script).map(|_| ())
}
