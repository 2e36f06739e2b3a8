//! The one sysctl the node needs: IPv4 forwarding.
use super::NetlinkError;
use std::path::PathBuf;

/// Sysctl file of `net.ipv4.ip_forward`.
const IP_FORWARD: &str = "/proc/sys/net/ipv4/ip_forward";

/// Enables `net.ipv4.ip_forward` in the network namespace of the calling thread (writes `1` to
/// `/proc/sys/net/ipv4/ip_forward`; the kernel resolves `/proc/sys/net` against the namespace of
/// the task that opens it, so this also works on a thread that entered a namespace with setns).
pub fn enable_ip_forward() -> Result<(), NetlinkError> {
    std::fs::write(IP_FORWARD, b"1\n").map_err(|source| NetlinkError::Sysctl {
        path: PathBuf::from(IP_FORWARD),
        source,
    })
}
