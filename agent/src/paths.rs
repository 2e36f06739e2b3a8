//! Names and paths shared by the agent, the CNI plugin, the node runtime and the lab.
//!
//! Everything switchyard creates on a machine is findable from here, so that `lab down`
//! (and a careful operator) can remove exactly what was made.
use std::path::PathBuf;

/// Root of all BPF pins: `/sys/fs/bpf/switchyard`.
pub const BPF_PIN_ROOT: &str = "/sys/fs/bpf/switchyard";

/// Root of all runtime state: `/run/switchyard`.
pub const STATE_ROOT: &str = "/run/switchyard";

/// Name of the per-node pod bridge.
pub const BRIDGE: &str = "cbr0";

/// Name of the pod's interface inside its namespace.
pub const POD_IFNAME: &str = "eth0";

/// Directory where this node's maps are pinned: `/sys/fs/bpf/switchyard/<node>`.
pub fn pin_dir(node: &str) -> PathBuf {
    PathBuf::from(BPF_PIN_ROOT).join(node)
}

/// Runtime state of one node: `/run/switchyard/<node>`.
pub fn state_dir(node: &str) -> PathBuf {
    PathBuf::from(STATE_ROOT).join(node)
}

/// Directory where the CNI plugin records each pod interface it wired
/// (`<containerID>.json`, see [`crate::cni::EndpointRecord`]); the agent watches it.
pub fn endpoints_dir(node: &str) -> PathBuf {
    state_dir(node).join("endpoints")
}

/// Directory where the agent marks each container whose veth has the datapath attached
/// (an empty file named `<containerID>`). The kubelet reports a pod Ready only once its marker
/// exists, so no pod sends traffic before its packets are load-balanced.
pub fn attached_dir(node: &str) -> PathBuf {
    state_dir(node).join("attached")
}

/// Directory of the host-local IPAM allocations of one node.
pub fn ipam_dir(node: &str) -> PathBuf {
    state_dir(node).join("ipam")
}

/// Network namespace name of a pod: `sy-pod-<namespace>-<name>`.
pub fn pod_netns(namespace: &str, name: &str) -> String {
    format!("sy-pod-{namespace}-{name}")
}

/// Host-side veth name for a container: `syv` + 8 hex digits of a stable hash of the id
/// (11 characters, under the 15-character interface name limit).
pub fn host_veth_name(container_id: &str) -> String {
    // FNV-1a: stable across builds and machines, unlike std's RandomState.
    let mut h: u32 = 0x811c_9dc5;
    for b in container_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("syv{h:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_are_stable_short_and_distinct() {
        let a = host_veth_name("default-echo-1-uid");
        assert_eq!(a, host_veth_name("default-echo-1-uid"));
        assert_ne!(a, host_veth_name("default-echo-2-uid"));
        assert!(a.len() <= 15 && a.starts_with("syv"));
    }

    #[test]
    fn pod_netns_follows_the_documented_pattern() {
        assert_eq!(pod_netns("default", "client"), "sy-pod-default-client");
    }
}
