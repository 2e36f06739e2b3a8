//! Switching a node between dataplanes.
//!
//! - [`detach_switchyard`]: stops the agents and removes their BPF pins, which detaches every
//!   TCX program (pod veths, uplink, overlay) — the kernel's bridge and routing take over.
//! - [`kernel_overlay`]: what flannel's VXLAN backend sets up without eBPF (a plain `vxlan`
//!   device, a route, neighbour and FDB entry per remote podCIDR), so pods reach each other
//!   across nodes in the iptables and nftables modes, plus `bridge-nf-call-iptables=1` (per
//!   namespace on this kernel), which kube-proxy needs for same-node pod traffic on `cbr0`.
//! - [`restart_from_empty`]: one agent started on empty maps (programming from scratch).
//! - [`pause`] / [`resume`]: one node's programs detached and attached again around its
//!   pinned maps, for probes where switchyard and kube-proxy's modes take turns.
use std::time::Duration;

use switchyard_lab::cmd::run;
use switchyard_lab::procs::{self, Dirs};
use switchyard_lab::{lab, netns, topology, Lab, LabError};

/// Where node `n`'s agent pins its maps and links.
pub fn pin_dir(n: usize) -> String {
    format!("/sys/fs/bpf/switchyard/n{n}")
}

fn dirs(lab: &Lab) -> Result<Dirs, LabError> {
    Dirs::new(&lab::lab_dir(&lab.opts.root))
}

/// Removes `dir` and everything in it, if it is there.
fn remove_dir(dir: String) -> Result<(), LabError> {
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(LabError::Io(dir.into(), e)),
    }
}

/// Stops node `n`'s agent and removes its pins (detaching its programs).
pub fn stop_and_unpin(lab: &Lab, n: usize) -> Result<(), LabError> {
    procs::stop(&dirs(lab)?, &format!("agent-n{n}"));
    remove_dir(pin_dir(n))
}

/// Stops node `n`'s agent and removes its link pins only: every program of the node detaches
/// (the kernel's bridge and routing take over) while its maps stay pinned with everything
/// programmed, so [`resume`] has nothing to reprogram.
pub fn pause(lab: &Lab, n: usize) -> Result<(), LabError> {
    procs::stop(&dirs(lab)?, &format!("agent-n{n}"));
    remove_dir(format!("{}/links", pin_dir(n)))?;
    // Let in-flight packets of the old programs drain.
    std::thread::sleep(Duration::from_millis(100));
    Ok(())
}

/// Starts node `n`'s agent again after [`pause`]: it opens its pinned maps and attaches every
/// program again (the caller waits for its sync).
pub fn resume(lab: &Lab, n: usize) -> Result<(), LabError> {
    lab.restart_agent(n)
}

/// Restarts node `n`'s agent on empty maps; it programs everything in its first sync.
pub fn restart_from_empty(lab: &Lab, n: usize) -> Result<(), LabError> {
    stop_and_unpin(lab, n)?;
    lab.restart_agent(n)
}

/// Stops every agent and removes every pin.
pub fn detach_switchyard(lab: &Lab) -> Result<(), LabError> {
    for n in 1..=lab.opts.nodes {
        stop_and_unpin(lab, n)?;
    }
    // Let in-flight packets of the old programs drain.
    std::thread::sleep(Duration::from_millis(200));
    Ok(())
}

fn mac(n: usize) -> String {
    format!("02:5b:00:00:00:{n:02x}")
}

/// Turns on the bridge's netfilter hooks in node namespace `ns`: kube-proxy needs them for
/// same-node pods (the backend's reply is bridged to the client and must be un-DNATed);
/// switchyard's redirects do not cross the bridge.
pub fn bridge_netfilter(ns: &str) -> Result<(), LabError> {
    netns::sysctl(ns, &["net.bridge.bridge-nf-call-iptables=1"])
}

/// Sets up the flannel-style kernel overlay and br_netfilter on every node.
pub fn kernel_overlay(lab: &Lab) -> Result<(), LabError> {
    let nodes = lab.opts.nodes;
    for n in 1..=nodes {
        let ns = topology::node_ns(n);
        let ip = |args: &[&str]| -> Result<String, LabError> {
            let mut v = vec!["ip", "-n", ns.as_str()];
            v.extend_from_slice(args);
            run(&v)
        };
        let local = topology::node_addr(n);
        let m = mac(n);
        ip(&[
            "link",
            "add",
            "flannel.1",
            "address",
            &m,
            "type",
            "vxlan",
            "id",
            "1",
            "local",
            &local,
            "dev",
            "eth0",
            "dstport",
            "8473",
            "nolearning",
        ])?;
        // As flannel: the underlay's MTU minus VXLAN's 50 bytes (what the pods already have).
        let mtu = topology::UNDERLAY_MTU.parse::<u32>().unwrap_or(1500) - 50;
        ip(&["link", "set", "flannel.1", "mtu", &mtu.to_string(), "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("10.244.{n}.0/32"),
            "dev",
            "flannel.1",
        ])?;
        for r in (1..=nodes).filter(|r| *r != n) {
            let gw = format!("10.244.{r}.0");
            ip(&[
                "route",
                "replace",
                &format!("10.244.{r}.0/24"),
                "via",
                &gw,
                "dev",
                "flannel.1",
                "onlink",
            ])?;
            ip(&[
                "neigh",
                "replace",
                &gw,
                "lladdr",
                &mac(r),
                "dev",
                "flannel.1",
                "nud",
                "permanent",
            ])?;
            run(&[
                "bridge",
                "-n",
                &ns,
                "fdb",
                "append",
                &mac(r),
                "dev",
                "flannel.1",
                "dst",
                &topology::node_addr(r),
            ])?;
        }
        bridge_netfilter(&ns)?;
    }
    Ok(())
}
