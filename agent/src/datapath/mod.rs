//! The kernel side of the agent: loads the eBPF object, pins and reuses maps, attaches `from_pod`
//! to pod veths and writes the model's desired state into the maps, changing only what differs.
//!
//! - [`loader`]: object loading with maps pinned under `paths::pin_dir(node)`.
//! - [`attach`]: TCX attachment with pinned links that survive agent restarts.
//! - [`plan`]: pure — desired state → map content with stable ids, and the ordered diff.
//! - [`partial`]: pure — the same for a few changed frontends, without replanning the rest.
//! - [`local_pods`]: CNI endpoint records → `LOCAL_PODS`.
//! - [`inspect`]: read-only views of the pinned maps for the `inspect` CLI and tests.
pub mod attach;
pub mod inspect;
pub mod loader;
pub mod local_pods;
pub mod partial;
pub mod plan;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use aya::maps::MapError;
use aya::programs::TcAttachType;
use switchyard_abi::programs;
use switchyard_abi::NodeConfig;

use crate::cni::EndpointRecord;
use crate::model::{Desired, Frontend};
use crate::paths;
use partial::Usage;
use plan::{IdCursor, Op, Programmed};

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
    /// bpffs is not mounted.
    #[error("no BPF file system at /sys/fs/bpf ({0}); mount it with `mount -t bpf bpf /sys/fs/bpf` (cargo xtask setup does)")]
    NoBpffs(String),
    /// The object or a program failed to load.
    #[error("loading the eBPF object failed: {0} (needs root / CAP_BPF and a kernel with BTF)")]
    Load(String),
    /// A map operation failed.
    #[error("BPF map {0}: {1}")]
    Map(String, String),
    /// Attaching a program to an interface failed.
    #[error("attaching {0}: {1}")]
    Attach(String, String),
    /// A CNI endpoint record is unusable.
    #[error("CNI endpoint record {0}: {1}")]
    BadRecord(String, String),
    /// The model produced something the maps cannot hold.
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    /// File-system error.
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

fn map_err(name: &str) -> impl Fn(MapError) -> DatapathError + '_ {
    move |e| DatapathError::Map(name.to_string(), e.to_string())
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

impl SyncReport {
    fn count(&mut self, op: &Op) {
        match op {
            Op::PutBackend(..) | Op::PutRevNat(..) | Op::PutService(..) => self.written += 1,
            _ => self.deleted += 1,
        }
    }
}

/// The loaded datapath of one node.
pub struct Datapath {
    settings: NodeSettings,
    maps: loader::Loaded,
    programmed: Programmed,
    cursor: IdCursor,
    /// Which frontend uses which id; `None` until the first full sync (a previous agent's maps
    /// say nothing about terminating backends).
    usage: Option<Usage>,
    /// Container id → record, for the pods handled so far.
    pods: BTreeMap<String, EndpointRecord>,
    /// What `TUNNEL` holds.
    tunnels: BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
    /// What `CONFIG[0]` holds.
    config: NodeConfig,
    /// Whether leftovers of pods deleted while no agent ran were removed.
    pods_pruned: bool,
}

impl Datapath {
    /// Loads the programs, opens or creates the pinned maps, reads what a previous agent
    /// programmed and writes the node config.
    pub fn open(settings: &NodeSettings) -> Result<Self, DatapathError> {
        let mut maps = loader::load(&paths::pin_dir(&settings.node))?;
        let programmed = read_programmed(&maps)?;
        let cursor = IdCursor::after(&programmed);
        // Keep the overlay and uplink a previous agent enabled until attach_overlay/attach_uplink
        // confirm or replace them, so flows are not interrupted by a restart.
        let mut config = node_config(settings);
        if let Ok(old) = maps.config.get(&0, 0) {
            config.vxlan_ifindex = old.vxlan_ifindex;
            config.uplink_ifindex = old.uplink_ifindex;
        }
        maps.config
            .set(0, config, 0)
            .map_err(map_err(switchyard_abi::names::CONFIG))?;
        tracing::info!(
            node = %settings.node,
            frontends = programmed.rev_nat.len(),
            backends = programmed.backends.len(),
            "datapath loaded; pinned maps reused"
        );
        let tunnels = read_tunnels(&maps)?;
        Ok(Datapath {
            settings: settings.clone(),
            maps,
            programmed,
            cursor,
            usage: None,
            pods: BTreeMap::new(),
            tunnels,
            config,
            pods_pruned: false,
        })
    }

    /// The settings the datapath was opened with.
    pub fn settings(&self) -> &NodeSettings {
        &self.settings
    }

    /// Makes `SERVICES`/`BACKENDS`/`REV_NAT` equal to `desired`, writing only what differs, in an
    /// order that never exposes a half-written service.
    pub fn sync_services(&mut self, desired: &Desired) -> Result<SyncReport, DatapathError> {
        let next = plan::plan(desired, &self.programmed, &mut self.cursor)?;
        let ops = plan::diff(&self.programmed, &next);
        self.usage = None;
        let report = self.apply_all(&ops)?;
        self.usage = Some(Usage::build(desired, &next));
        self.programmed = next;
        Ok(report)
    }

    /// Like [`Datapath::sync_services`] when only the frontends in `changed` differ from what
    /// was last synced: plans and writes just those (and the backends they touch). Before the
    /// first full sync it does a full one.
    pub fn sync_changes(
        &mut self,
        desired: &Desired,
        changed: &std::collections::BTreeSet<Frontend>,
    ) -> Result<SyncReport, DatapathError> {
        // Taken out while the maps change: if a write fails they are between two states, and
        // the next sync is a full one that rewrites whatever differs.
        let Some(mut usage) = self.usage.take() else {
            return self.sync_services(desired);
        };
        let change =
            partial::plan_changes(desired, changed, &self.programmed, &usage, &mut self.cursor)?;
        let report = self.apply_all(&plan::diff(&change.before, &change.after))?;
        change.commit(&mut self.programmed, &mut usage);
        self.usage = Some(usage);
        Ok(report)
    }

    fn apply_all(&mut self, ops: &[Op]) -> Result<SyncReport, DatapathError> {
        let mut report = SyncReport::default();
        for op in ops {
            self.apply(op)?;
            report.count(op);
        }
        Ok(report)
    }

    fn apply(&mut self, op: &Op) -> Result<(), DatapathError> {
        use switchyard_abi::names;
        let m = &mut self.maps;
        match *op {
            Op::PutBackend(id, b) => m
                .backends
                .insert(id, b, 0)
                .map_err(map_err(names::BACKENDS)),
            Op::PutRevNat(id, r) => m.rev_nat.insert(id, r, 0).map_err(map_err(names::REV_NAT)),
            Op::PutService(k, v) => m.services.insert(k, v, 0).map_err(map_err(names::SERVICES)),
            Op::DeleteService(k) => {
                ignore_missing(m.services.remove(&k)).map_err(map_err(names::SERVICES))
            }
            Op::DeleteRevNat(id) => {
                ignore_missing(m.rev_nat.remove(&id)).map_err(map_err(names::REV_NAT))
            }
            Op::DeleteBackend(id) => {
                ignore_missing(m.backends.remove(&id)).map_err(map_err(names::BACKENDS))
            }
        }
    }

    /// Rescans the CNI endpoint records: fills `LOCAL_PODS`, attaches `from_pod` to new veths,
    /// forgets removed ones, and marks attached containers in `paths::attached_dir`.
    pub fn sync_local_pods(&mut self) -> Result<SyncReport, DatapathError> {
        let node = self.settings.node.clone();
        let (records, problems) = local_pods::read_records(&paths::endpoints_dir(&node));
        for p in problems {
            tracing::warn!(problem = %p, "skipping unreadable CNI endpoint record");
        }
        let mut report = SyncReport::default();
        if !self.pods_pruned {
            // Pods deleted while no agent ran left map entries and link pins behind.
            report.deleted += self.prune_stale(&records)?;
            self.pods_pruned = true;
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|id| !records.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(rec) = self.pods.remove(&id) {
                // Only remove the entry if no newer pod took the IP meanwhile.
                if records.values().all(|r| r.ip != rec.ip) {
                    let key = u32::from_ne_bytes(rec.ip.octets());
                    ignore_missing(self.maps.local_pods.remove(&key))
                        .map_err(map_err(switchyard_abi::names::LOCAL_PODS))?;
                }
                attach::detach(&loader::pod_link_pin(&paths::pin_dir(&node), &id))?;
                let _ = std::fs::remove_file(paths::attached_dir(&node).join(&id));
                report.deleted += 1;
                tracing::info!(container = %id, pod = %rec.pod_name, ip = %rec.ip, "pod left the node datapath");
            }
        }
        for (id, rec) in records {
            if self.pods.get(&id) == Some(&rec) {
                continue;
            }
            let span = tracing::info_span!("local_pod", container = %id, pod = %rec.pod_name, ip = %rec.ip);
            let _enter = span.enter();
            match self.add_pod(&id, &rec) {
                Ok(()) => {
                    tracing::info!(ifname = %rec.host_ifname, "pod attached to the datapath");
                    self.pods.insert(id, rec);
                    report.written += 1;
                }
                // One broken pod must not keep the others out; it is retried on the next scan.
                Err(e) => {
                    tracing::warn!(error = %e, "attaching the pod failed; retrying");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    /// Puts one pod into `LOCAL_PODS`, attaches `from_pod` to its veth and marks it attached.
    fn add_pod(&mut self, id: &str, rec: &EndpointRecord) -> Result<(), DatapathError> {
        let node = &self.settings.node;
        let (key, value) = local_pods::to_local_pod(rec)?;
        self.maps
            .local_pods
            .insert(key, value, 0)
            .map_err(map_err(switchyard_abi::names::LOCAL_PODS))?;
        let pin = loader::pod_link_pin(&paths::pin_dir(node), id);
        attach::attach(
            &mut self.maps.ebpf,
            programs::FROM_POD,
            &rec.host_ifname,
            TcAttachType::Ingress,
            &pin,
        )?;
        let attached = paths::attached_dir(node);
        std::fs::create_dir_all(&attached).map_err(|e| DatapathError::Io(attached.clone(), e))?;
        let marker = attached.join(id);
        std::fs::write(&marker, b"").map_err(|e| DatapathError::Io(marker.clone(), e))
    }

    /// Removes `LOCAL_PODS` entries and pod link pins that no current record accounts for.
    fn prune_stale(
        &mut self,
        records: &BTreeMap<String, EndpointRecord>,
    ) -> Result<usize, DatapathError> {
        let name = switchyard_abi::names::LOCAL_PODS;
        let live_ips: std::collections::BTreeSet<u32> = records
            .values()
            .map(|r| u32::from_ne_bytes(r.ip.octets()))
            .collect();
        let stale: Vec<u32> = self
            .maps
            .local_pods
            .keys()
            .collect::<Result<Vec<_>, _>>()
            .map_err(map_err(name))?
            .into_iter()
            .filter(|ip| !live_ips.contains(ip))
            .collect();
        for ip in &stale {
            ignore_missing(self.maps.local_pods.remove(ip)).map_err(map_err(name))?;
        }
        let pins = loader::pod_link_pin(&paths::pin_dir(&self.settings.node), "");
        let mut removed = stale.len();
        if let Ok(entries) = std::fs::read_dir(&pins) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !records.contains_key(&id) {
                    attach::detach(&entry.path())?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "pruned datapath state of pods deleted while no agent ran"
            );
        }
        Ok(removed)
    }
}

impl Datapath {
    /// Turns on the overlay: `from_overlay` on the ingress of `ifname` (the external-mode VXLAN
    /// device, ifindex `ifindex`), and `from_pod` starts encapsulating packets for other nodes.
    pub fn attach_overlay(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        let pin = self.link_pin(ifname);
        attach::attach(
            &mut self.maps.ebpf,
            programs::FROM_OVERLAY,
            ifname,
            TcAttachType::Ingress,
            &pin,
        )?;
        self.config.vxlan_ifindex = ifindex;
        self.write_config()?;
        tracing::info!(%ifname, ifindex, "overlay attached");
        Ok(())
    }

    /// Turns on NodePort and masquerade on the node's uplink `ifname` (ifindex `ifindex`):
    /// `from_netdev` on its ingress and on `lo`'s (NodePorts for the node's own processes),
    /// `to_netdev` on its egress.
    pub fn attach_uplink(&mut self, ifname: &str, ifindex: u32) -> Result<(), DatapathError> {
        let hooks = [
            (
                programs::FROM_NETDEV,
                ifname,
                TcAttachType::Ingress,
                format!("{ifname}-ingress"),
            ),
            (
                programs::TO_NETDEV,
                ifname,
                TcAttachType::Egress,
                format!("{ifname}-egress"),
            ),
            (
                programs::FROM_NETDEV,
                "lo",
                TcAttachType::Ingress,
                "lo-ingress".to_string(),
            ),
        ];
        for (program, dev, direction, pin) in hooks {
            let pin = self.link_pin(&pin);
            attach::attach(&mut self.maps.ebpf, program, dev, direction, &pin)?;
        }
        // NodePort replies to the node's own processes are redirected into lo's ingress without a
        // cached route; their source is the node's address, which route input rejects as a
        // martian unless lo accepts local sources.
        let sysctl = PathBuf::from("/proc/sys/net/ipv4/conf/lo/accept_local");
        std::fs::write(&sysctl, b"1").map_err(|e| DatapathError::Io(sysctl, e))?;
        self.config.uplink_ifindex = ifindex;
        self.write_config()?;
        tracing::info!(%ifname, ifindex, "uplink attached: NodePort and masquerade active");
        Ok(())
    }

    fn link_pin(&self, name: &str) -> PathBuf {
        loader::device_link_pin(&paths::pin_dir(&self.settings.node), name)
    }

    fn write_config(&mut self) -> Result<(), DatapathError> {
        self.maps
            .config
            .set(0, self.config, 0)
            .map_err(map_err(switchyard_abi::names::CONFIG))
    }

    /// Makes `TUNNEL` hold exactly `routes` (podCIDR → node underlay address), writing only what
    /// differs: new and changed routes first, then removals.
    pub fn sync_tunnels(
        &mut self,
        routes: &BTreeMap<(Ipv4Addr, u8), Ipv4Addr>,
    ) -> Result<SyncReport, DatapathError> {
        use aya::maps::lpm_trie::Key;
        let name = switchyard_abi::names::TUNNEL;
        let mut report = SyncReport::default();
        for (&(net, prefix), &node) in routes {
            if self.tunnels.get(&(net, prefix)) != Some(&node) {
                let key = Key::new(u32::from(prefix), u32::from_ne_bytes(net.octets()));
                self.maps
                    .tunnel
                    .insert(&key, u32::from_ne_bytes(node.octets()), 0)
                    .map_err(map_err(name))?;
                report.written += 1;
            }
        }
        for &(net, prefix) in self.tunnels.keys().filter(|k| !routes.contains_key(k)) {
            let key = Key::new(u32::from(prefix), u32::from_ne_bytes(net.octets()));
            ignore_missing(self.maps.tunnel.remove(&key)).map_err(map_err(name))?;
            report.deleted += 1;
        }
        self.tunnels = routes.clone();
        Ok(report)
    }
}

fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(ref e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

fn node_config(s: &NodeSettings) -> NodeConfig {
    let be = |ip: Ipv4Addr| u32::from_ne_bytes(ip.octets());
    NodeConfig {
        node_addr: be(s.node_ip),
        pod_cidr: be(s.pod_cidr.0),
        cluster_cidr: be(s.cluster_cidr.0),
        service_cidr: be(s.service_cidr.0),
        pod_prefix: s.pod_cidr.1,
        cluster_prefix: s.cluster_cidr.1,
        service_prefix: s.service_cidr.1,
        pad: 0,
        vxlan_ifindex: 0,
        uplink_ifindex: 0,
        nodeport_min: 30000,
        nodeport_max: 32767,
    }
}

/// Reads the overlay routes a previous agent left.
fn read_tunnels(
    maps: &loader::Loaded,
) -> Result<BTreeMap<(Ipv4Addr, u8), Ipv4Addr>, DatapathError> {
    let mut out = BTreeMap::new();
    for item in maps.tunnel.iter() {
        let (k, v) = item.map_err(map_err(switchyard_abi::names::TUNNEL))?;
        let prefix = u8::try_from(k.prefix_len()).unwrap_or(32);
        out.insert(
            (Ipv4Addr::from(k.data().to_ne_bytes()), prefix),
            Ipv4Addr::from(v.to_ne_bytes()),
        );
    }
    Ok(out)
}

/// Reads the service maps as a previous agent left them.
fn read_programmed(maps: &loader::Loaded) -> Result<Programmed, DatapathError> {
    use switchyard_abi::names;
    let mut p = Programmed::default();
    for item in maps.backends.iter() {
        let (k, v) = item.map_err(map_err(names::BACKENDS))?;
        p.backends.insert(k, v);
    }
    for item in maps.rev_nat.iter() {
        let (k, v) = item.map_err(map_err(names::REV_NAT))?;
        p.rev_nat.insert(k, v);
    }
    for item in maps.services.iter() {
        let (k, v) = item.map_err(map_err(names::SERVICES))?;
        p.services.insert(k, v);
    }
    Ok(p)
}
