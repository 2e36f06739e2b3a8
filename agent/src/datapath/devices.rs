//! The node's own devices: `from_overlay` on `vxlan0`, `from_netdev`/`to_netdev` on the uplink
//! (and `from_netdev` on `lo` for the node's own NodePort clients), and `CONFIG[0]`, which tells
//! the programs the node's addresses and which devices are live.
//!
//! Invariant: a restarted agent keeps the overlay and uplink ifindexes a previous agent enabled
//! until it has re-attached them, so established flows are not cut by the restart.
use std::path::{Path, PathBuf};

use std::net::Ipv4Addr;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::TcAttachType;
use aya::Ebpf;
use switchyard_abi::{addr_be, names, programs, NodeConfig};

use super::maps::{MapWriter, Named};
use super::{attach, loader, DatapathError, NodeSettings};

/// `CONFIG[0]`, `UPLINKS` and the pinned device links.
pub struct Devices {
    pin_dir: PathBuf,
    map: Array<MapData, NodeConfig>,
    uplinks: Named<HashMap<MapData, u32, u32>>,
    config: NodeConfig,
}

/// An uplink device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Uplink {
    /// Its name.
    pub name: String,
    /// Its ifindex.
    pub ifindex: u32,
    /// The address traffic leaving through it is masqueraded to (its own).
    pub addr: Ipv4Addr,
    /// Whether replies to outside clients leave through it (the first uplink).
    pub primary: bool,
}

impl Devices {
    /// Writes the node's config into `map`, keeping a previous agent's device ifindexes.
    pub fn open(
        settings: &NodeSettings,
        map: Array<MapData, NodeConfig>,
        uplinks: Named<HashMap<MapData, u32, u32>>,
        pin_dir: PathBuf,
    ) -> Result<Self, DatapathError> {
        let mut config = node_config(settings);
        if let Ok(old) = map.get(&0, 0) {
            config.vxlan_ifindex = old.vxlan_ifindex;
            config.uplink_ifindex = old.uplink_ifindex;
        }
        let mut devices = Devices {
            pin_dir,
            map,
            uplinks,
            config,
        };
        devices.write()?;
        Ok(devices)
    }

    /// Turns on the overlay: `from_overlay` on the ingress of `ifname` (the external-mode VXLAN
    /// device, ifindex `ifindex`), and `from_pod` starts encapsulating packets for other nodes.
    pub fn attach_overlay(
        &mut self,
        ebpf: &mut Ebpf,
        ifname: &str,
        ifindex: u32,
    ) -> Result<(), DatapathError> {
        let pin = loader::device_link_pin(&self.pin_dir, ifname);
        attach::attach(
            ebpf,
            programs::FROM_OVERLAY,
            ifname,
            TcAttachType::Ingress,
            &pin,
        )?;
        // The node's own packets to other nodes' pods (routed to the device) get their tunnel
        // key on the way out.
        let pin = loader::device_link_pin(&self.pin_dir, &format!("{ifname}-egress"));
        attach::attach(
            ebpf,
            programs::TO_OVERLAY,
            ifname,
            TcAttachType::Egress,
            &pin,
        )?;
        self.config.vxlan_ifindex = ifindex;
        self.write()?;
        tracing::info!(%ifname, ifindex, "overlay attached");
        Ok(())
    }

    /// Turns on NodePort and masquerade on an uplink: `from_netdev` on its ingress and on `lo`'s
    /// (NodePorts for the node's own processes), `to_netdev` on its egress, and its address in
    /// `UPLINKS`.
    pub fn attach_uplink(&mut self, ebpf: &mut Ebpf, uplink: &Uplink) -> Result<(), DatapathError> {
        let (ifname, ifindex) = (uplink.name.as_str(), uplink.ifindex);
        self.uplinks
            .put(ifindex, addr_be(uplink.addr))
            .map_err(DatapathError::map(names::UPLINKS))?;
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
            let pin = loader::device_link_pin(&self.pin_dir, &pin);
            attach::attach(ebpf, program, dev, direction, &pin)?;
        }
        // NodePort replies to the node's own processes are redirected into lo's ingress without a
        // cached route; their source is the node's address, which route input rejects as a
        // martian unless lo accepts local sources.
        let sysctl = PathBuf::from("/proc/sys/net/ipv4/conf/lo/accept_local");
        std::fs::write(&sysctl, b"1").map_err(DatapathError::io(&sysctl))?;
        if uplink.primary {
            self.config.uplink_ifindex = ifindex;
            self.write()?;
        }
        tracing::info!(%ifname, ifindex, addr = %uplink.addr, "uplink attached: NodePort and masquerade active");
        Ok(())
    }

    /// NodePort acceleration on an uplink (already attached with [`Devices::attach_uplink`]):
    /// `xdp_nodeport` in its driver (native XDP), told `vxlan0`'s UDP port `vxlan_port`.
    pub fn attach_xdp(
        &mut self,
        ebpf: &mut Ebpf,
        uplink: &Uplink,
        vxlan_port: u16,
    ) -> Result<(), DatapathError> {
        // The port first: the program passes everything while it is 0.
        self.config.vxlan_port = vxlan_port.to_be();
        self.write()?;
        let pin = xdp_pin(&self.pin_dir, &uplink.name);
        attach::attach_xdp(ebpf, programs::XDP_NODEPORT, &uplink.name, &pin)?;
        tracing::info!(ifname = %uplink.name, "NodePort acceleration attached (native XDP)");
        Ok(())
    }

    /// No NodePort acceleration on `uplink`: detaches an `xdp_nodeport` a previous agent
    /// attached, if any.
    pub fn detach_xdp(&mut self, uplink: &Uplink) -> Result<(), DatapathError> {
        let pin = xdp_pin(&self.pin_dir, &uplink.name);
        if pin.exists() {
            attach::detach(&pin)?;
            tracing::info!(ifname = %uplink.name, "NodePort acceleration detached");
        }
        Ok(())
    }

    /// Reverse NAT of the node stack's replies to local pods: `to_pods` on the egress of the
    /// pod bridge `ifname`.
    pub fn attach_bridge(&mut self, ebpf: &mut Ebpf, ifname: &str) -> Result<(), DatapathError> {
        let pin = loader::device_link_pin(&self.pin_dir, &format!("{ifname}-egress"));
        attach::attach(ebpf, programs::TO_PODS, ifname, TcAttachType::Egress, &pin)?;
        tracing::info!(%ifname, "pod bridge attached");
        Ok(())
    }

    /// Socket load balancing for the node's own namespace: the socket programs on the cgroup
    /// (v2) directory `cgroup` (shared with other namespaces: the programs act only on sockets
    /// whose network namespace has this process's cookie).
    pub fn attach_sockets(&mut self, ebpf: &mut Ebpf, cgroup: &Path) -> Result<(), DatapathError> {
        self.config.netns_cookie = netns_cookie().map_err(DatapathError::io("SO_NETNS_COOKIE"))?;
        self.write()?;
        for program in programs::SOCKET {
            let pin = loader::cgroup_link_pin(&self.pin_dir, program);
            attach::attach_cgroup(ebpf, program, cgroup, &pin)?;
        }
        tracing::info!(cgroup = %cgroup.display(), "socket load balancing attached");
        Ok(())
    }

    fn write(&mut self) -> Result<(), DatapathError> {
        self.map
            .set(0, self.config, 0)
            .map_err(DatapathError::map(names::CONFIG))
    }
}

/// The pin of the XDP link of uplink `ifname`.
fn xdp_pin(pin_dir: &Path, ifname: &str) -> PathBuf {
    loader::device_link_pin(pin_dir, &format!("{ifname}-xdp"))
}

/// `CONFIG[0]` for a node, before any device is attached.
pub fn node_config(s: &NodeSettings) -> NodeConfig {
    NodeConfig {
        node_addr: addr_be(s.node_ip),
        pod_cidr: addr_be(s.pod_cidr.0),
        cluster_cidr: addr_be(s.cluster_cidr.0),
        service_cidr: addr_be(s.service_cidr.0),
        pod_prefix: s.pod_cidr.1,
        cluster_prefix: s.cluster_cidr.1,
        service_prefix: s.service_cidr.1,
        pad: 0,
        vxlan_ifindex: 0,
        uplink_ifindex: 0,
        nodeport_min: s.nodeport_range.0,
        nodeport_max: s.nodeport_range.1,
        netns_cookie: 0,
        snat_port_min: s.masquerade_ports.0,
        snat_port_max: s.masquerade_ports.1,
        snat_attempts: s.masquerade_attempts,
        vxlan_port: 0,
    }
}

/// The cookie of the calling thread's network namespace (`SO_NETNS_COOKIE`).
pub fn netns_cookie() -> std::io::Result<u64> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    // SAFETY: plain socket(2); the descriptor is owned and closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `len` bytes into `cookie`.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_network_namespace_has_a_cookie() {
        assert_ne!(netns_cookie().unwrap(), 0);
    }

    #[test]
    fn the_node_config_carries_addresses_in_map_byte_order_and_no_devices() {
        let c = node_config(&NodeSettings {
            node: "n1".into(),
            node_ip: Ipv4Addr::new(198, 18, 0, 11),
            pod_cidr: (Ipv4Addr::new(10, 244, 1, 0), 24),
            ..NodeSettings::defaults()
        });
        assert_eq!(c.node_addr.to_ne_bytes(), [198, 18, 0, 11]);
        assert_eq!(
            (c.pod_prefix, c.cluster_prefix, c.service_prefix),
            (24, 16, 16)
        );
        assert_eq!((c.vxlan_ifindex, c.uplink_ifindex), (0, 0));
        assert_eq!((c.nodeport_min, c.nodeport_max), (30000, 32767));
        assert_eq!(
            (c.snat_port_min, c.snat_port_max, c.snat_attempts),
            (61000, 65535, 16)
        );
    }
}
