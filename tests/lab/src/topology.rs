//! The lab's network: an underlay bridge in `sy-underlay`, the root namespace on it as
//! 198.18.0.1 (where controlplane-lite listens and kubectl runs), node namespaces `sy-nN` at
//! 198.18.0.(10+N), and an external client `sy-ext` (198.18.0.100) that also holds the
//! "outside the cluster" address 203.0.113.10. Made with iproute2.
use crate::cmd::run;
use crate::LabError;
use crate::{ethtool, netns, xdp_pass};

/// Underlay namespace.
pub const UNDERLAY: &str = "sy-underlay";
/// Root-namespace end of the underlay link.
pub const ROOT_LINK: &str = "sy-cp";
/// controlplane-lite's address.
pub const CP_ADDR: &str = "198.18.0.1";
/// controlplane-lite's port.
pub const CP_PORT: &str = "6443";
/// The Service network (controlplane-lite's `--service-cidr`).
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// External client namespace.
pub const EXT: &str = "sy-ext";
/// External client address.
pub const EXT_ADDR: &str = "198.18.0.100";
/// The "outside the cluster" server address, held by `sy-ext`.
pub const OUTSIDE_ADDR: &str = "203.0.113.10";
/// The pool controlplane-lite gives `type: LoadBalancer` Services their addresses from (as
/// MetalLB would); the external host routes it to a node (tests choose which).
pub const LB_POOL: &str = "198.18.100.0/24";
/// MTU of the underlay: what real networks have. The agents give pods 50 bytes less, so their
/// full-size packets plus VXLAN's 50 bytes cross it unfragmented.
pub const UNDERLAY_MTU: &str = "1500";

/// Namespace of node `n` (1-based).
pub fn node_ns(n: usize) -> String {
    format!("sy-n{n}")
}

/// Name of node `n`.
pub fn node_name(n: usize) -> String {
    format!("n{n}")
}

/// Underlay address of node `n`.
pub fn node_addr(n: usize) -> String {
    format!("198.18.0.{}", 10 + n)
}

/// A veth from `ns` (`ifname`, `addr/24`) to the underlay bridge (port `port`).
fn attach(ns: Option<&str>, ifname: &str, port: &str, addr: &str) -> Result<(), LabError> {
    let mut add = vec!["ip"];
    if let Some(ns) = ns {
        add.extend(["-n", ns]);
    }
    add.extend([
        "link",
        "add",
        ifname,
        "mtu",
        UNDERLAY_MTU,
        "type",
        "veth",
        "peer",
        "name",
        port,
        "mtu",
        UNDERLAY_MTU,
        "netns",
        UNDERLAY,
    ]);
    run(&add)?;
    run(&[
        "ip", "-n", UNDERLAY, "link", "set", port, "master", "br0", "up",
    ])?;
    let on = |args: &[&str]| -> Result<String, LabError> {
        let mut v = vec!["ip"];
        if let Some(ns) = ns {
            v.extend(["-n", ns]);
        }
        v.extend_from_slice(args);
        run(&v)
    };
    on(&["addr", "add", &format!("{addr}/24"), "dev", ifname])?;
    on(&["link", "set", ifname, "up"])?;
    Ok(())
}

/// Creates the underlay, the root link, `nodes` node namespaces and the external client.
pub fn create(nodes: usize) -> Result<(), LabError> {
    netns::add(UNDERLAY)?;
    run(&[
        "ip",
        "-n",
        UNDERLAY,
        "link",
        "add",
        "br0",
        "mtu",
        UNDERLAY_MTU,
        "type",
        "bridge",
    ])?;
    run(&["ip", "-n", UNDERLAY, "link", "set", "br0", "up"])?;
    attach(None, ROOT_LINK, "cp", CP_ADDR)?;
    for n in 1..=nodes {
        let ns = node_ns(n);
        netns::add(&ns)?;
        attach(Some(&ns), "eth0", &node_name(n), &node_addr(n))?;
        run(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "203.0.113.0/24",
            "via",
            EXT_ADDR,
        ])?;
        netns::sysctl(&ns, &["net.ipv4.ip_forward=1"])?;
    }
    netns::add(EXT)?;
    attach(Some(EXT), "eth0", "ext", EXT_ADDR)?;
    run(&[
        "ip",
        "-n",
        EXT,
        "addr",
        "add",
        &format!("{OUTSIDE_ADDR}/32"),
        "dev",
        "lo",
    ])?;
    Ok(())
}

/// Makes the nodes' uplinks able to run native XDP that sends packets back out
/// (`switchyard agent --nodeport-acceleration native`): the underlay end of every node's `eth0`
/// (its bridge port) gets an `XDP_PASS` program, without which a veth never delivers what its
/// peer's XDP transmits ([`xdp_pass`]).
///
/// And the external client computes its own checksums: through a veth its packets arrive with
/// checksum offload pending (`CHECKSUM_PARTIAL`: the TCP/UDP field holds only the
/// pseudo-header's sum, the skb says so), which an XDP program cannot see and which a frame it
/// sends on has no way to carry — the backend would get a bad checksum. Frames from a wire,
/// which native XDP is for, always carry the full checksum; the client now sends those too.
pub fn native_xdp_peers(nodes: usize) -> Result<(), LabError> {
    for n in 1..=nodes {
        xdp_pass::attach(UNDERLAY, &node_name(n))?;
    }
    ethtool::tx_checksum(EXT, "eth0", false)
}
