//! What can go wrong in the lab, with what to look at.
use std::path::PathBuf;

/// Errors of the lab harness.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A command could not be started.
    #[error(
        "cannot run {cmd}: {source} (is it installed? `cargo xtask setup` installs the lab tools)"
    )]
    Spawn {
        /// The command line.
        cmd: String,
        /// Why.
        source: std::io::Error,
    },
    /// A command failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Command {
        /// The command line.
        cmd: String,
        /// Exit status.
        status: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// Something did not happen in time.
    #[error("timed out after {secs}s waiting for {what}{}", hint.as_ref().map(|h| format!("; {h}")).unwrap_or_default())]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        secs: u64,
        /// Where to look.
        hint: Option<String>,
    },
    /// A binary the lab runs is missing.
    #[error("{0} not found: build the workspace first (`cargo build --workspace`, done by `cargo xtask lab up`)")]
    MissingBinary(PathBuf),
    /// The lab needs root.
    #[error("the lab creates network namespaces and loads eBPF programs: run it as root")]
    NotRoot,
    /// File-system error.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// Unexpected output.
    #[error("{0}")]
    Unexpected(String),
    /// Refused: only the project's own `sy-*` network namespaces are made or entered.
    #[error("refusing to use network namespace {0:?}: only the lab's sy-* namespaces are used")]
    NotLabNamespace(String),
    /// setns into a network namespace failed.
    #[error("setns into {0}: {1} (needs root)")]
    Setns(String, std::io::Error),
    /// A closure run inside a network namespace panicked.
    #[error("the thread run in network namespace {0} panicked")]
    Panicked(String),
    /// `deploy/`'s manifests cannot be read or run.
    #[error(transparent)]
    Deploy(#[from] crate::deploy::DeployError),
}
