//! The kernel side of the agent: loads the eBPF object, pins and reuses maps, attaches programs to
//! pod veths and writes the model's desired state into the maps. (Stub: being written.)
use crate::model::Desired;
use std::net::Ipv4Addr;

/// What the datapath must know about its node before it can load.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeSettings {
    /// Node name; maps are pinned under `paths::pin_dir(node)`.
    pub node: String,
    /// Underlay address of the node.
    pub node_ip: Ipv4Addr,
    /// This node's podCIDR.
    pub pod_cidr: (Ipv4Addr, u8),
    /// The cluster's pod CIDR (10.244.0.0/16 in the lab).
    pub cluster_cidr: (Ipv4Addr, u8),
    /// The service CIDR (10.96.0.0/16 in the lab).
    pub service_cidr: (Ipv4Addr, u8),
}

/// Errors of the datapath.
#[derive(Debug, thiserror::Error)]
pub enum DatapathError {
    /// Placeholder until the datapath lands.
    #[error("the eBPF datapath is not implemented yet")]
    NotImplemented,
}

/// What one sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Map entries written (created or changed).
    pub written: usize,
    /// Map entries deleted.
    pub deleted: usize,
}

/// The loaded datapath of one node.
pub struct Datapath {
    _settings: NodeSettings,
}

impl Datapath {
    /// Loads the programs, opens or creates the pinned maps and writes the node config.
    pub fn open(settings: &NodeSettings) -> Result<Self, DatapathError> {
        let _ = settings;
        Err(DatapathError::NotImplemented)
    }

    /// Makes `SERVICES`/`BACKENDS`/`REV_NAT` equal to `desired`, writing only what differs.
    pub fn sync_services(&mut self, desired: &Desired) -> Result<SyncReport, DatapathError> {
        let _ = desired;
        Err(DatapathError::NotImplemented)
    }

    /// Rescans the CNI endpoint records: fills `LOCAL_PODS`, attaches `from_pod` to new veths,
    /// forgets removed ones, and marks attached containers in `paths::attached_dir`.
    pub fn sync_local_pods(&mut self) -> Result<SyncReport, DatapathError> {
        Err(DatapathError::NotImplemented)
    }
}
