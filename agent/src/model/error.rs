//! What can be wrong with the objects the model reads.

/// Errors of the model: the objects do not (yet) say what the agent needs.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ModelError {
    /// The node has no podCIDR yet.
    #[error(
        "node {0} has no spec.podCIDR yet (controlplane-lite assigns one when the node registers)"
    )]
    NoPodCidr(String),
    /// The podCIDR is not an IPv4 CIDR.
    #[error("node {node}: spec.podCIDR {value:?} is not an IPv4 CIDR like 10.244.1.0/24")]
    BadPodCidr {
        /// Node name.
        node: String,
        /// The value found.
        value: String,
    },
    /// The node reports no IPv4 InternalIP.
    #[error("node {0} reports no IPv4 InternalIP in status.addresses (the kubelet sets it from --node-ip)")]
    NoInternalIp(String),
}
