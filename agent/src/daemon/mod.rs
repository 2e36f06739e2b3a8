//! `switchyard agent`: the node agent's main loop.
//!
//! 1. Watches Services, EndpointSlices and Nodes ([`crate::watch`]).
//! 2. Waits for its own Node to have a podCIDR and an InternalIP.
//! 3. Creates `cbr0` (first address of the podCIDR; MTU: the uplink's minus 50) and `vxlan0`
//!    (routed the cluster CIDR, so the node reaches every pod), enables forwarding.
//! 4. Loads the datapath (reusing pinned maps), attaches the overlay, uplink and bridge programs
//!    and the socket load balancing of the node's own clients.
//! 5. Reconciles ([`reconcile`]): after every watch event (debounced by 10 ms) the Services the
//!    events name are recomputed by the pure [`crate::model`] and only the differences are written;
//!    a relist and, as a safety net, every 30 s, the whole desired state is recomputed;
//!    every 200 ms the CNI endpoint records are rescanned so new pods are attached at once.
//!
//! SIGTERM/SIGINT stop the loop without detaching anything: programs stay attached through their
//! pinned links and maps stay pinned, so established connections survive an agent restart.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;

use crate::datapath::{Datapath, NodeSettings};
use crate::healthcheck::HealthChecks;
use crate::model::{self, nodes::parse_cidr, NodeInfo};
use crate::netlink::{enable_ip_forward, Netlink};
use crate::paths::BRIDGE;
use crate::watch::{self, Stores};
use events::Events;
use reconcile::Reconciler;

pub mod events;
mod notes;
mod reconcile;
pub mod report;

/// Name of the overlay device.
pub const VXLAN_DEVICE: &str = "vxlan0";

/// Bytes VXLAN adds around a pod's packet: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// Command-line options of `switchyard agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Node name (e.g. `n1`).
    #[arg(long)]
    pub node: String,
    /// Kubeconfig used to reach controlplane-lite.
    #[arg(long)]
    pub kubeconfig: PathBuf,
    /// The cluster's pod CIDR: traffic inside it is never masqueraded.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The service CIDR ClusterIPs come from.
    #[arg(long, default_value = "10.96.0.0/16")]
    pub service_cidr: String,
    /// The node's uplink: NodePorts are served and masquerade applied on it.
    #[arg(long, default_value = "eth0")]
    pub uplink: String,
    /// UDP port of the VXLAN overlay.
    #[arg(long, default_value_t = 8472)]
    pub vxlan_port: u16,
    /// MTU of pod interfaces, `cbr0` and `vxlan0`; default: the uplink's MTU minus the VXLAN
    /// overhead (50 bytes), as flannel does, so that a full-size pod packet crosses the overlay
    /// unfragmented.
    #[arg(long)]
    pub pod_mtu: Option<u32>,
    /// The cgroup v2 directory the socket load balancing programs attach to (clients in the
    /// node's own namespace); default: the root of the cgroup v2 hierarchy (`/sys/fs/cgroup`,
    /// or `/sys/fs/cgroup/unified` on a hybrid layout).
    #[arg(long)]
    pub cgroup_root: Option<PathBuf>,
    /// Start even though kube-proxy's rules are on the node (by default the agent refuses:
    /// both would translate the same Service packets). Remove them with `switchyard cleanup
    /// --kube-proxy` instead where you can.
    #[arg(long)]
    pub allow_kube_proxy: bool,
}

fn cidr(flag: &str, value: &str) -> anyhow::Result<(Ipv4Addr, u8)> {
    parse_cidr(value)
        .with_context(|| format!("--{flag} {value:?} is not an IPv4 CIDR like 10.244.0.0/16"))
}

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    crate::cleanup::guard::check_kube_proxy(opts.allow_kube_proxy)?;
    let cluster_cidr = cidr("cluster-cidr", &opts.cluster_cidr)?;
    let service_cidr = cidr("service-cidr", &opts.service_cidr)?;
    let client = crate::kubeclient::client_from_kubeconfig(&opts.kubeconfig).await?;
    let (stores, tasks) = watch::start(&client);
    let shutdown = crate::signals::shutdown();
    tokio::pin!(shutdown);

    let result = async {
        tokio::select! {
            _ = stores.wait_ready() => {}
            r = &mut shutdown => return r.map(|_| None).context("signal handling"),
        }
        let info = tokio::select! {
            info = own_node(&stores, &opts.node) => info,
            r = &mut shutdown => return r.map(|_| None).context("signal handling"),
        };
        let settings = NodeSettings {
            node: opts.node.clone(),
            node_ip: info.internal_ip,
            pod_cidr: info.pod_cidr,
            cluster_cidr,
            service_cidr,
        };
        Ok(Some(prepare(&opts, &info, &settings).await?))
    }
    .await;

    let mut dp = match result {
        Ok(Some(dp)) => dp,
        Ok(None) => {
            tasks.iter().for_each(|t| t.abort());
            return Ok(());
        }
        Err(e) => {
            tasks.iter().for_each(|t| t.abort());
            return Err(e);
        }
    };
    let mut work = Work {
        reconciler: Reconciler::new(&opts.node, dp.settings().node_ip),
        events: Events::new(client.clone(), &opts.node),
        health: HealthChecks::new(Ipv4Addr::UNSPECIFIED),
    };
    work.reconcile(&mut dp, &stores);
    let mut pods = tokio::time::interval(Duration::from_millis(200));
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    loop {
        tokio::select! {
            r = &mut shutdown => {
                r.context("signal handling")?;
                tracing::info!("stopping; programs and maps stay in place for the next agent");
                break;
            }
            _ = stores.changed.notified() => {
                // Let a burst of events land before recomputing.
                tokio::time::sleep(Duration::from_millis(10)).await;
                work.reconcile(&mut dp, &stores);
            }
            _ = pods.tick() => {
                if let Err(e) = dp.sync_local_pods() {
                    tracing::warn!(error = %e, "attaching local pods failed; retrying");
                }
            }
            _ = resync.tick() => {
                stores.mark_full();
                work.reconcile(&mut dp, &stores);
            }
        }
    }
    tasks.iter().for_each(|t| t.abort());
    Ok(())
}

/// What follows each reconcile: Events about what the datapath does not serve, and the health
/// check ports.
struct Work {
    reconciler: Reconciler,
    events: Events,
    health: HealthChecks,
}

impl Work {
    fn reconcile(&mut self, dp: &mut Datapath, stores: &Stores) {
        let found = self
            .reconciler
            .run(&mut dp.services, &mut dp.tunnels, stores);
        for (svc, note) in found.unsupported {
            self.events.unsupported(&svc, note);
        }
        if let Some(checks) = self.reconciler.health_checks() {
            self.health.sync(checks);
        }
    }
}

/// Waits until the agent's own Node has a podCIDR and an InternalIP.
async fn own_node(stores: &Stores, name: &str) -> NodeInfo {
    let mut last = String::new();
    loop {
        let why = match stores.node(name).map(|n| model::node_info(&n)) {
            Some(Ok(info)) => return info,
            Some(Err(e)) => e.to_string(),
            None => format!("node {name} is not registered yet (the kubelet registers it)"),
        };
        if why != last {
            tracing::info!(reason = %why, "waiting for the node");
            last = why;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stores.changed.notified()).await;
    }
}

/// The pod MTU: `requested`, or the uplink's minus the VXLAN overhead.
fn pod_mtu(requested: Option<u32>, uplink: u32) -> anyhow::Result<u32> {
    let mtu = requested.unwrap_or(uplink.saturating_sub(VXLAN_OVERHEAD));
    if mtu < 576 {
        anyhow::bail!(
            "pod MTU {mtu} is below IPv4's minimum of 576 (uplink MTU {uplink}; see --pod-mtu)"
        );
    }
    if mtu + VXLAN_OVERHEAD > uplink {
        tracing::warn!(
            pod_mtu = mtu,
            uplink_mtu = uplink,
            "full-size pod packets will be fragmented on the overlay: lower --pod-mtu"
        );
    }
    Ok(mtu)
}

/// The root of the cgroup v2 hierarchy: `/sys/fs/cgroup` on a unified layout,
/// `/sys/fs/cgroup/unified` on a hybrid one.
fn cgroup2_root() -> Option<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        })
}

/// Creates the node's devices and loads the datapath onto them.
async fn prepare(
    opts: &Options,
    info: &NodeInfo,
    settings: &NodeSettings,
) -> anyhow::Result<Datapath> {
    let nl = Netlink::connect().context("opening a netlink socket")?;
    let uplink = nl.link(&opts.uplink).await?.with_context(|| {
        format!(
            "uplink {:?} not found in this network namespace (see --uplink)",
            opts.uplink
        )
    })?;
    let pod_mtu = pod_mtu(opts.pod_mtu, uplink.mtu)?;
    let cgroup = match &opts.cgroup_root {
        Some(path) => path.clone(),
        None => cgroup2_root().context(
            "no cgroup v2 hierarchy at /sys/fs/cgroup or /sys/fs/cgroup/unified; socket load \
             balancing needs one: mount cgroup2 or pass --cgroup-root",
        )?,
    };
    nl.ensure_bridge(BRIDGE, pod_mtu, info.gateway(), info.pod_cidr.1)
        .await
        .context("creating the pod bridge")?;
    enable_ip_forward().context("enabling IPv4 forwarding")?;
    let vxlan = nl
        .ensure_vxlan(VXLAN_DEVICE, opts.vxlan_port)
        .await
        .context("creating the overlay device")?;
    // The node's own traffic to other nodes' pods: routed to the overlay device without
    // neighbour resolution (`to_overlay` picks the remote node), from the bridge's address so
    // that replies come back through the overlay; the node's own podCIDR stays on cbr0.
    nl.set_mtu(vxlan.index, pod_mtu).await?;
    nl.set_noarp(vxlan.index).await?;
    let cluster = (settings.cluster_cidr.0, settings.cluster_cidr.1);
    nl.replace_route(cluster, vxlan.index, info.gateway())
        .await
        .context("routing the cluster CIDR to the overlay")?;
    tracing::info!(uplink_mtu = uplink.mtu, pod_mtu, "MTU");
    let mut dp = Datapath::open(settings)?;
    dp.attach_overlay(VXLAN_DEVICE, vxlan.index)?;
    dp.attach_uplink(&opts.uplink, uplink.index)?;
    dp.attach_bridge(BRIDGE)?;
    dp.attach_sockets(&cgroup)?;
    tracing::info!(node = %settings.node, pod_cidr = ?info.pod_cidr, node_ip = %info.internal_ip, "datapath ready");
    Ok(dp)
}
