//! The kernel side of the agent: loads the eBPF object, pins and reuses maps, attaches the
//! programs and keeps the maps equal to the model's desired state, writing only what differs.
//!
//! One concern per module:
//! - [`loader`]: object loading with maps pinned under `paths::pin_dir(node)`.
//! - [`attach`]: TCX attachment with pinned links that survive agent restarts.
//! - [`maps`]: [`MapWriter`], the seam between bookkeeping and the kernel (aya maps, or
//!   [`maps::MemMap`] in tests).
//! - [`plan`] and [`partial`]: pure — desired state → map content with stable ids, the ordered
//!   diff, and the same for a few changed frontends; [`maglev`]: consistent-hashing tables.
//! - [`services`]: `SERVICES`/`BACKENDS`/`REV_NAT` kept equal to the desired state;
//!   [`apply`]: writing a planned change frontend by frontend, skipping one the maps refuse.
//! - [`tunnels`]: `TUNNEL` kept equal to the overlay routes.
//! - [`local_pods`]: CNI endpoint records → `LOCAL_PODS` and attached pod veths.
//! - [`devices`]: the overlay and uplink programs and `CONFIG`.
//! - [`inspect`]: read-only views of the pinned maps for the `inspect` CLI and tests.
pub mod aging;
pub mod apply;
pub mod attach;
pub mod batch;
pub mod devices;
mod error;
pub mod flows;
pub mod inspect;
pub mod loader;
pub mod local_pods;
pub mod maglev;
pub mod maps;
pub mod partial;
pub mod plan;
pub mod services;
pub mod tables;
pub mod tunnels;

use std::net::Ipv4Addr;

use aya::maps::lpm_trie::LpmTrie;
use aya::maps::{HashMap, MapData};
use aya::Ebpf;
use switchyard_abi::{
    AffinityMatchKey, Backend, LocalPod, RevNat, ServiceKey, ServiceValue, SourceRangeKey,
};

use crate::paths;
pub use error::{AttachError, DatapathError};
pub use maps::MapWriter;
use maps::Named;
use services::{ServiceMaps, ServiceSync, ServiceWriters};
use tunnels::TunnelSync;

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
    /// NodePort range, inclusive.
    pub nodeport_range: (u16, u16),
    /// Ports SNAT allocates, inclusive.
    pub masquerade_ports: (u16, u16),
    /// Ports SNAT tries per new flow.
    pub masquerade_attempts: u16,
    /// Sizes of the maps the node decides.
    pub map_sizes: loader::MapSizes,
    /// Whether the socket programs balance for the node's pods too (`--socket-lb all`), not
    /// only for its own namespace.
    pub pod_socket_lb: bool,
}

impl NodeSettings {
    /// Settings of a lab node `n0` at 198.18.0.10 with the defaults of `switchyard agent`; the
    /// base for tests (`..NodeSettings::defaults()`).
    pub fn defaults() -> Self {
        NodeSettings {
            node: "n0".into(),
            node_ip: Ipv4Addr::new(198, 18, 0, 10),
            pod_cidr: (Ipv4Addr::new(10, 244, 0, 0), 24),
            cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            nodeport_range: (30000, 32767),
            masquerade_ports: (switchyard_abi::SNAT_PORT_MIN, switchyard_abi::SNAT_PORT_MAX),
            masquerade_attempts: 16,
            map_sizes: loader::MapSizes::default(),
            pod_socket_lb: true,
        }
    }
}

/// What one sync changed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SyncReport {
    /// Map entries written (created or changed).
    pub written: usize,
    /// Map entries deleted.
    pub deleted: usize,
    /// Items that could not be applied and will be retried.
    pub failed: usize,
}

/// The pinned service maps.
pub struct Kernel;

impl ServiceWriters for Kernel {
    type Backends = Named<HashMap<MapData, u32, Backend>>;
    type RevNat = Named<HashMap<MapData, u32, RevNat>>;
    type Services = Named<HashMap<MapData, ServiceKey, ServiceValue>>;
    type Affinity = Named<HashMap<MapData, AffinityMatchKey, u8>>;
    type Ranges = Named<LpmTrie<MapData, SourceRangeKey, u8>>;
}

/// The service sync of the pinned maps.
pub type KernelServices = ServiceSync<Kernel>;

/// The pinned overlay route map.
pub type KernelTunnels = TunnelSync<Named<LpmTrie<MapData, u32, u32>>>;

/// The pinned local pod maps (`LOCAL_PODS`, `POD_NETNS`).
type KernelPods = local_pods::LocalPods<
    Named<HashMap<MapData, u32, LocalPod>>,
    Named<HashMap<MapData, u64, u32>>,
>;

/// The loaded datapath of one node.
pub struct Datapath {
    settings: NodeSettings,
    ebpf: Ebpf,
    /// The service maps.
    pub services: KernelServices,
    /// The overlay routes.
    pub tunnels: KernelTunnels,
    pods: KernelPods,
    devices: devices::Devices,
}

impl Datapath {
    /// Loads the programs, opens or creates the pinned maps, reads what a previous agent
    /// programmed and writes the node config.
    pub fn open(settings: &NodeSettings) -> Result<Self, DatapathError> {
        let pin_dir = paths::pin_dir(&settings.node);
        let loaded = loader::load_sized(&pin_dir, &settings.map_sizes)?;
        let services = ServiceSync::open(ServiceMaps {
            backends: loaded.backends,
            rev_nat: loaded.rev_nat,
            services: loaded.services,
            affinity_match: loaded.affinity_match,
            source_ranges: loaded.source_ranges,
        })?;
        let tunnels = TunnelSync::open(loaded.tunnel)?;
        let devices = devices::Devices::open(settings, loaded.config, loaded.uplinks, pin_dir)?;
        tracing::info!(
            node = %settings.node,
            frontends = services.programmed().rev_nat.len(),
            backends = services.programmed().backends.len(),
            "datapath loaded; pinned maps reused"
        );
        Ok(Datapath {
            settings: settings.clone(),
            ebpf: loaded.ebpf,
            services,
            tunnels,
            pods: local_pods::LocalPods::new(
                &settings.node,
                loaded.local_pods,
                loaded.pod_netns,
                settings.pod_socket_lb,
            ),
            devices,
        })
    }

    /// The settings the datapath was opened with.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Rescans the CNI endpoint records (see [`local_pods::LocalPods::sync`]).
    pub fn sync_local_pods(&mut self) -> Result<SyncReport, DatapathError> {
        self.pods.sync(&mut self.ebpf)
    }

    /// Turns on the overlay on `ifname` (see [`devices::Devices::attach_overlay`]).
    pub fn attach_overlay(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        self.devices.attach_overlay(&mut self.ebpf, ifname, ifindex)
    }

    /// Reverse NAT towards local pods on the bridge `ifname` (see
    /// [`devices::Devices::attach_bridge`]).
    pub fn attach_bridge(&mut self, ifname: &str) -> Result<(), DatapathError> {
        self.devices.attach_bridge(&mut self.ebpf, ifname)
    }

    /// Socket load balancing on the cgroup `cgroup` (see [`devices::Devices::attach_sockets`]).
    pub fn attach_sockets(&mut self, cgroup: &std::path::Path) -> Result<(), DatapathError> {
        self.devices.attach_sockets(&mut self.ebpf, cgroup)
    }

    /// Turns on NodePort and masquerade on the uplink `ifname` (see
    /// [`devices::Devices::attach_uplink`]).
    pub fn attach_uplink(&mut self, uplink: &devices::Uplink) -> Result<(), DatapathError> {
        self.devices.attach_uplink(&mut self.ebpf, uplink)
    }

    /// NodePort acceleration on `uplink` (see [`devices::Devices::attach_xdp`]).
    pub fn attach_xdp(
        &mut self,
        uplink: &devices::Uplink,
        vxlan_port: u16,
    ) -> Result<(), DatapathError> {
        self.devices.attach_xdp(&mut self.ebpf, uplink, vxlan_port)
    }

    /// No NodePort acceleration on `uplink` (see [`devices::Devices::detach_xdp`]).
    pub fn detach_xdp(&mut self, uplink: &devices::Uplink) -> Result<(), DatapathError> {
        self.devices.detach_xdp(uplink)
    }
}
