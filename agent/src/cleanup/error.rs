//! What can go wrong finding and removing kube-proxy's rules and switchyard's own state. Every
//! variant keeps the tool's, the kernel's or the file system's answer, so `{:#}` chains show it.
use std::path::PathBuf;

use crate::netlink::NetlinkError;

/// Errors of `switchyard cleanup` and of the agent's kube-proxy check.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    /// A tool (`iptables-nft-save`, `nft`, …) could not be started.
    #[error("cannot run {tool}")]
    Spawn {
        /// The command line.
        tool: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// The command line.
        tool: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// What it printed on stderr (first lines).
        stderr: String,
    },
    /// `iptables-save` printed something this parser does not know.
    #[error("{tool}: line {line}: {reason}: {text:?}")]
    Parse {
        /// The tool whose output it was.
        tool: String,
        /// Line number, from 1.
        line: usize,
        /// What is wrong with it.
        reason: &'static str,
        /// The line.
        text: String,
    },
    /// kube-proxy's rules are present and the agent was not told to start beside them.
    #[error(
        "kube-proxy's rules are on this node: {}. kube-proxy and switchyard would both translate \
         the same Service packets (switchyard in eBPF, kube-proxy in netfilter): a connection can \
         be load-balanced or masqueraded twice, and a Service removed from one stays in the \
         other. Stop kube-proxy on this node, then remove its rules with `switchyard cleanup \
         --kube-proxy`; or start the agent with --allow-kube-proxy to run beside them anyway",
        found.join("; ")
    )]
    KubeProxyPresent {
        /// What was found, e.g. `iptables-nft (IPv4) nat chain KUBE-SERVICES`.
        found: Vec<String>,
    },
    /// kube-proxy's rules could not be looked for at the agent's start.
    #[error("cannot check for kube-proxy's rules (--allow-kube-proxy starts the agent without the check)")]
    Check(#[source] Box<CleanupError>),
    /// The node's agent still runs: removing its pins would not detach what it holds open.
    #[error(
        "the agent of node {node} is running (pid {}): stop it first — it holds the datapath's \
         links open, so they would stay attached, and it would recreate cbr0 and vxlan0",
        pids.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ")
    )]
    AgentRunning {
        /// Node name.
        node: String,
        /// Its processes.
        pids: Vec<i32>,
    },
    /// A file or directory could not be read or removed.
    #[error("{}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A link could not be looked up or deleted.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// The single-threaded runtime for the netlink requests could not start.
    #[error("cannot start the async runtime for netlink")]
    Runtime(#[source] std::io::Error),
    /// Some removals failed (each was reported as it failed); the rest were done.
    #[error("{0} removal(s) failed; see above")]
    Incomplete(usize),
}

impl CleanupError {
    /// An I/O error about `path`.
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> CleanupError {
        let path = path.into();
        move |source| CleanupError::Io { path, source }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    #[test]
    fn the_refusal_names_what_was_found_and_both_ways_forward() {
        let e = CleanupError::KubeProxyPresent {
            found: vec![
                "iptables-nft (IPv4) nat chain KUBE-SERVICES".into(),
                "nftables table ip kube-proxy".into(),
            ],
        };
        let msg = e.to_string();
        assert!(msg
            .contains("iptables-nft (IPv4) nat chain KUBE-SERVICES; nftables table ip kube-proxy"));
        assert!(msg.contains("switchyard cleanup --kube-proxy"));
        assert!(msg.contains("--allow-kube-proxy"));
    }

    #[test]
    fn an_io_error_keeps_the_file_systems_answer_as_its_source() {
        let e =
            CleanupError::io("/run/switchyard/n1")(std::io::Error::from_raw_os_error(libc::EBUSY));
        assert_eq!(e.to_string(), "/run/switchyard/n1");
        assert!(e.source().is_some());
    }
}
