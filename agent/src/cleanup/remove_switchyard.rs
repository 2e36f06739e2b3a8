//! Removing what switchyard installed for one node, in the caller's network namespace: the
//! pinned maps and links (`/sys/fs/bpf/switchyard/<node>/`: unpinning the links detaches every
//! TCX, XDP and cgroup program), the overlay device `vxlan0` with its cluster-CIDR route, the pod bridge
//! `cbr0` with its podCIDR route, and the runtime state (`/run/switchyard/<node>/`: CNI records,
//! IPAM allocations, attach markers).
//!
//! Invariant: nothing else goes. A device named `cbr0` or `vxlan0` of another kind stays, and so
//! do the pods' host veths (`syv…`, the CNI's): deleting `cbr0` leaves them unbridged, so pods
//! still running lose their network until the next CNI recreates them. The sysctls the agent set
//! (`net.ipv4.ip_forward`, `lo`'s `accept_local`) stay too: kube-proxy's datapath needs
//! forwarding as well. The node's agent must be stopped first: it holds the links open.
use std::path::{Path, PathBuf};

use super::report::Report;
use super::{procs, CleanupError};
use crate::daemon::node::VXLAN_DEVICE;
use crate::netlink::Netlink;
use crate::paths;

/// The node devices, each with the kind it must have and what goes with it.
const DEVICES: [(&str, &str, &str); 2] = [
    (VXLAN_DEVICE, "vxlan", "the cluster-CIDR route through it"),
    (
        paths::BRIDGE,
        "bridge",
        "the podCIDR route; pods' veths stay, unbridged",
    ),
];

/// Removes node `node`'s datapath, devices and state (unless the report is a dry run).
pub fn remove(node: &str, report: &mut Report) -> Result<(), CleanupError> {
    let pids = procs::agents_of(node);
    if !pids.is_empty() {
        return Err(CleanupError::AgentRunning {
            node: node.to_string(),
            pids,
        });
    }
    let pins = paths::pin_dir(node);
    if pins.exists() {
        let what = format!("BPF pins {} ({})", pins.display(), count_pins(&pins));
        remove_dir(&pins, &what, report);
    }
    remove_devices(report)?;
    let state = paths::state_dir(node);
    if state.exists() {
        remove_dir(&state, &format!("state {}", state.display()), report);
    }
    if !report.dry_run() {
        // The roots go once no node has anything left under them.
        let _ = std::fs::remove_dir(paths::BPF_PIN_ROOT);
        let _ = std::fs::remove_dir(paths::STATE_ROOT);
    }
    Ok(())
}

fn remove_dir(dir: &Path, what: &str, report: &mut Report) {
    if report.dry_run() {
        return report.removed(what);
    }
    match std::fs::remove_dir_all(dir).map_err(CleanupError::io(dir)) {
        Ok(()) => report.removed(what),
        Err(e) => report.failed(what, &e),
    }
}

/// `N maps, M links` under a pin directory (links live under `links/`).
fn count_pins(dir: &Path) -> String {
    let maps = files(dir).len();
    let links: usize = ["pods", "dev", "cgroup"]
        .iter()
        .map(|d| files(&dir.join("links").join(d)).len())
        .sum();
    format!("{maps} maps, {links} links")
}

fn files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

fn remove_devices(report: &mut Report) -> Result<(), CleanupError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(CleanupError::Runtime)?;
    rt.block_on(async {
        let nl = Netlink::connect()?;
        for (name, kind, with) in DEVICES {
            let Some(link) = nl.link(name).await? else {
                continue;
            };
            let found = link.kind.as_deref().unwrap_or("device without a kind");
            let what = format!("link {name} ({kind}) and {with}");
            if found != kind {
                report.kept(
                    &format!("link {name}"),
                    &format!("it is a {found}, not switchyard's {kind}"),
                );
            } else if report.dry_run() {
                report.removed(&what);
            } else {
                match nl.delete_link(name).await {
                    Ok(_) => report.removed(&what),
                    Err(e) => report.failed(&what, &CleanupError::from(e)),
                }
            }
        }
        Ok(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_are_counted_as_maps_and_links() {
        let dir = std::env::temp_dir().join(format!("sy-cleanup-pins-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for f in [
            "SERVICES",
            "BACKENDS",
            "links/pods/c1",
            "links/pods/c2",
            "links/dev/eth0",
        ] {
            let path = dir.join(f);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("dir");
            std::fs::write(path, b"").expect("file");
        }
        let counted = count_pins(&dir);
        std::fs::remove_dir_all(&dir).expect("clean up");
        assert_eq!(counted, "2 maps, 3 links");
    }
}
