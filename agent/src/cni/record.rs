//! The record the CNI plugin leaves for the agent about each pod interface it wired.
//!
//! Written atomically (write to a temp file, rename) to
//! `paths::endpoints_dir(node)/<containerID>.json` on ADD, removed on DEL. The agent watches that
//! directory: it puts the pod into `LOCAL_PODS` and attaches the `from_pod` program to `host_ifname`.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;

/// One wired pod interface, as seen from the node's network namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointRecord {
    /// CNI container id.
    pub container_id: String,
    /// Pod namespace (from `CNI_ARGS` `K8S_POD_NAMESPACE`), empty if not given.
    pub pod_namespace: String,
    /// Pod name (from `CNI_ARGS` `K8S_POD_NAME`), empty if not given.
    pub pod_name: String,
    /// Path of the pod's network namespace (`CNI_NETNS`).
    pub netns: String,
    /// Pod IPv4 address.
    pub ip: Ipv4Addr,
    /// Prefix length of the pod address (the podCIDR's).
    pub prefix_len: u8,
    /// Gateway (the `cbr0` address).
    pub gateway: Ipv4Addr,
    /// Host-side veth name, in the node namespace.
    pub host_ifname: String,
    /// Host-side veth ifindex, in the node namespace.
    pub host_ifindex: u32,
    /// Host-side veth MAC, `aa:bb:cc:dd:ee:ff`.
    pub host_mac: String,
    /// MAC of the pod's interface, `aa:bb:cc:dd:ee:ff`.
    pub pod_mac: String,
    /// Cookie of the pod's network namespace (`SO_NETNS_COOKIE`), by which the socket load
    /// balancing programs know the pod's sockets; 0 in records of plugins that predate it.
    #[serde(default)]
    pub netns_cookie: u64,
}

/// Reads every record in `dir` (a missing directory means no pods). Unreadable or malformed
/// records are reported in the second list and skipped.
pub fn read_records(dir: &Path) -> (BTreeMap<String, EndpointRecord>, Vec<String>) {
    let mut records = BTreeMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, problems);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(rec) => {
                records.insert(rec.container_id.clone(), rec);
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (records, problems)
}
