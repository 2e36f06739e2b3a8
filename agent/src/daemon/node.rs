//! Preparing the node for the datapath: `cbr0` (first address of the podCIDR; MTU: the uplink's
//! minus VXLAN's 50 bytes), forwarding, `vxlan0` with the cluster CIDR routed to it (so the node
//! reaches every pod), then the datapath loaded onto the overlay, the uplinks, the bridge and
//! the cgroup of the node's own sockets (and, with `--nodeport-acceleration native`, the XDP
//! program onto the uplinks).
//!
//! Invariant: everything here is idempotent — a restarted agent finds the devices, routes and
//! pinned links in place and takes them over without interrupting traffic.
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::options::{Acceleration, Options};
use crate::datapath::devices::Uplink;
use crate::datapath::{Datapath, NodeSettings};
use crate::model::NodeInfo;
use crate::netlink::{enable_ip_forward, Netlink};
use crate::paths::BRIDGE;

/// Name of the overlay device.
pub const VXLAN_DEVICE: &str = "vxlan0";

/// Bytes VXLAN adds around a pod's packet: outer IPv4 (20), UDP (8), VXLAN (8), inner Ethernet (14).
pub const VXLAN_OVERHEAD: u32 = 50;

/// The pod MTU: `requested`, or the uplink's minus the VXLAN overhead.
pub fn pod_mtu(requested: Option<u32>, uplink: u32) -> anyhow::Result<u32> {
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

/// The cgroup v2 directory at `base`: `base` itself on a unified layout, `base/unified` on a
/// hybrid one (as `/sys/fs/cgroup`, or the host's mounted into a DaemonSet's container).
fn cgroup2_root(base: &Path) -> Option<PathBuf> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    [base.to_path_buf(), base.join("unified")]
        .into_iter()
        .find(|p| {
            nix::sys::statfs::statfs(p).is_ok_and(|s| s.filesystem_type().0 == CGROUP2_SUPER_MAGIC)
        })
}

/// The uplinks of `opts`, looked up: each must exist and have an IPv4 address.
async fn uplinks(nl: &Netlink, opts: &Options) -> anyhow::Result<Vec<(Uplink, u32)>> {
    let mut out = Vec::new();
    for (i, name) in opts.uplinks.iter().enumerate() {
        let link = nl.link(name).await?.with_context(|| {
            format!("uplink {name:?} not found in this network namespace (see --uplink)")
        })?;
        let addr = nl
            .ipv4_addresses(link.index)
            .await?
            .first()
            .map(|(ip, _)| *ip)
            .with_context(|| format!("uplink {name:?} has no IPv4 address to masquerade to"))?;
        out.push((
            Uplink {
                name: name.clone(),
                ifindex: link.index,
                addr,
                primary: i == 0,
            },
            link.mtu,
        ));
    }
    anyhow::ensure!(!out.is_empty(), "no uplink given (see --uplink)");
    Ok(out)
}

/// Creates the node's devices and loads the datapath onto them.
pub async fn prepare(
    opts: &Options,
    info: &NodeInfo,
    settings: &NodeSettings,
) -> anyhow::Result<Datapath> {
    let nl = Netlink::connect().context("opening a netlink socket")?;
    let uplinks = uplinks(&nl, opts).await?;
    let uplink_mtu = uplinks.iter().map(|(_, mtu)| *mtu).min().unwrap_or(1500);
    let pod_mtu = pod_mtu(opts.pod_mtu, uplink_mtu)?;
    let base = opts
        .cgroup_root
        .clone()
        .unwrap_or_else(|| PathBuf::from("/sys/fs/cgroup"));
    let cgroup = cgroup2_root(&base).with_context(|| {
        format!(
            "no cgroup v2 hierarchy at {0} or {0}/unified; socket load balancing needs one: \
             mount cgroup2 or pass --cgroup-root (SWITCHYARD_CGROUP_ROOT)",
            base.display()
        )
    })?;
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
    nl.replace_route(settings.cluster_cidr, vxlan.index, info.gateway())
        .await
        .context("routing the cluster CIDR to the overlay")?;
    tracing::info!(uplink_mtu, pod_mtu, "MTU");
    let mut dp = Datapath::open(settings)?;
    dp.attach_overlay(VXLAN_DEVICE, vxlan.index)?;
    for (uplink, _) in &uplinks {
        dp.attach_uplink(uplink)?;
        match opts.nodeport_acceleration {
            Acceleration::Native => dp.attach_xdp(uplink, opts.vxlan_port)?,
            Acceleration::Disabled => dp.detach_xdp(uplink)?,
        }
    }
    dp.attach_bridge(BRIDGE)?;
    dp.attach_sockets(&cgroup)?;
    tracing::info!(node = %settings.node, pod_cidr = ?info.pod_cidr, node_ip = %info.internal_ip, "datapath ready");
    Ok(dp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_without_cgroup2_in_it_or_its_unified_subdirectory_is_no_cgroup_root() {
        let dir = std::env::temp_dir().join(format!("sy-cgroup-root-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("unified")).unwrap();
        let found = cgroup2_root(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(found, None);
    }
}
