//! What a node needs to be told: `switchyard agent`'s flags, each also an environment variable
//! (so a DaemonSet can take them from a ConfigMap with `envFrom`), checked into [`Settings`]
//! before anything touches the node.
//!
//! Invariant: every setting has a working default for a kubeadm-style node; a value that cannot
//! be used is an error naming the flag and its environment variable, never silently replaced.
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use switchyard_abi::{capacity, SNAT_MAX_ATTEMPTS, SNAT_PORT_MAX, SNAT_PORT_MIN};

use crate::datapath::loader::MapSizes;
use crate::model::nodes::parse_cidr;

/// Command-line options of `switchyard agent`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Node name; in a DaemonSet, from the downward API (`spec.nodeName`).
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// Kubeconfig to reach the API server; without it, the in-cluster configuration of a pod
    /// (service-account token, `KUBERNETES_SERVICE_HOST`/`_PORT`).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The cluster's pod CIDR: traffic inside it is never masqueraded.
    #[arg(long, env = "SWITCHYARD_CLUSTER_CIDR", default_value = "10.244.0.0/16")]
    pub cluster_cidr: String,
    /// The service CIDR ClusterIPs come from.
    #[arg(long, env = "SWITCHYARD_SERVICE_CIDR", default_value = "10.96.0.0/16")]
    pub service_cidr: String,
    /// The node's uplinks (comma-separated): NodePorts, external and load balancer addresses
    /// are served on them and pod traffic leaving the cluster is masqueraded to each one's own
    /// address. The first is also where replies to outside clients leave.
    #[arg(
        long = "uplink",
        env = "SWITCHYARD_UPLINKS",
        value_delimiter = ',',
        default_value = "eth0"
    )]
    pub uplinks: Vec<String>,
    /// Which of the node's addresses (InternalIP, ExternalIP) serve NodePorts, as CIDRs
    /// (comma-separated; kube-proxy's `--nodeport-addresses`); empty: all of them.
    #[arg(long, env = "SWITCHYARD_NODEPORT_ADDRESSES", value_delimiter = ',')]
    pub nodeport_addresses: Vec<String>,
    /// The NodePort range, as the API server's `--service-node-port-range`.
    #[arg(long, env = "SWITCHYARD_NODEPORT_RANGE", default_value = "30000-32767")]
    pub nodeport_range: String,
    /// Ports masquerade and NodePort SNAT give translated flows; keep them out of the node's
    /// own ephemeral range (`net.ipv4.ip_local_port_range`).
    #[arg(
        long,
        env = "SWITCHYARD_MASQUERADE_PORTS",
        default_value = "61000-65535"
    )]
    pub masquerade_ports: String,
    /// Ports tried for a new translated flow before it is dropped (1-64).
    #[arg(long, env = "SWITCHYARD_MASQUERADE_ATTEMPTS", default_value_t = 16)]
    pub masquerade_attempts: u16,
    /// UDP port of the VXLAN overlay.
    #[arg(long, env = "SWITCHYARD_VXLAN_PORT", default_value_t = 8472)]
    pub vxlan_port: u16,
    /// NodePort acceleration, named after Cilium's `loadBalancer.acceleration`. `native`: an
    /// XDP program in the uplinks' drivers balances, translates and encapsulates traffic to
    /// NodePorts (and external/load balancer addresses) whose backend is on another node before
    /// the kernel builds a socket buffer for it; everything else still goes through the TC
    /// programs. An uplink whose driver has no native XDP support is an error, never a silent
    /// fallback to generic XDP. `disabled`: the TC programs handle all of it.
    #[arg(
        long,
        env = "SWITCHYARD_NODEPORT_ACCELERATION",
        value_enum,
        default_value_t = Acceleration::Disabled
    )]
    pub nodeport_acceleration: Acceleration,
    /// MTU of pod interfaces, `cbr0` and `vxlan0`; default: the uplink's MTU minus the VXLAN
    /// overhead (50 bytes), as flannel does, so that a full-size pod packet crosses the overlay
    /// unfragmented.
    #[arg(long, env = "SWITCHYARD_POD_MTU")]
    pub pod_mtu: Option<u32>,
    /// Socket load balancing, named after Cilium's `socketLB.hostNamespaceOnly`. `all`: the
    /// cgroup programs point TCP sockets of the node's pods, and TCP and UDP sockets of the
    /// node's own namespace, at a backend when they connect to a Service, so their packets need
    /// no translation. A pod's UDP stays on the per-packet path. `host-only`: pods' traffic is
    /// translated per packet (for service meshes whose sidecars must see the ClusterIP, or to
    /// keep per-Service packet and byte counters for pod clients: socket-balanced connections
    /// are counted as connections only).
    #[arg(
        long,
        env = "SWITCHYARD_SOCKET_LB",
        value_enum,
        default_value_t = SocketLb::All
    )]
    pub socket_lb: SocketLb,
    /// The cgroup v2 directory the socket load balancing programs attach to (clients in the
    /// node's own namespace and its pods), or a directory whose `unified/` is one (a hybrid
    /// layout); default: `/sys/fs/cgroup`, the root of the hierarchy.
    #[arg(long, env = "SWITCHYARD_CGROUP_ROOT")]
    pub cgroup_root: Option<PathBuf>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        env = "SWITCHYARD_METRICS_ADDRESS",
        default_value = "0.0.0.0:10249"
    )]
    pub metrics_address: SocketAddr,
    /// Entries of the connection-tracking table (two per load-balanced connection).
    #[arg(long, env = "SWITCHYARD_CT_MAX", default_value_t = capacity::CT)]
    pub ct_max: u32,
    /// Entries of the source NAT table (two per translated flow).
    #[arg(long, env = "SWITCHYARD_NAT_MAX", default_value_t = capacity::NAT)]
    pub nat_max: u32,
    /// Entries of the service table (a header and a slot per backend of each frontend).
    #[arg(long, env = "SWITCHYARD_SERVICES_MAX", default_value_t = capacity::SERVICES)]
    pub services_max: u32,
    /// Entries of the backend table.
    #[arg(long, env = "SWITCHYARD_BACKENDS_MAX", default_value_t = capacity::BACKENDS)]
    pub backends_max: u32,
    /// Start without checking for kube-proxy's rules (by default the agent refuses to start
    /// beside them: both would translate the same Service packets). Remove them with
    /// `switchyard cleanup --kube-proxy` instead where you can.
    #[arg(long, env = "SWITCHYARD_ALLOW_KUBE_PROXY")]
    pub allow_kube_proxy: bool,
}

/// `--socket-lb`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum SocketLb {
    /// The node's own namespace and its pods (pods: TCP).
    #[default]
    All,
    /// The node's own namespace only.
    HostOnly,
}

/// `--nodeport-acceleration`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Acceleration {
    /// NodePort traffic is handled by the TC programs only.
    #[default]
    Disabled,
    /// `xdp_nodeport` in the uplinks' drivers (native XDP) sends NodePort traffic to remote
    /// backends itself.
    Native,
}

/// The options, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster's pod CIDR.
    pub cluster_cidr: (Ipv4Addr, u8),
    /// The service CIDR.
    pub service_cidr: (Ipv4Addr, u8),
    /// Networks whose node addresses serve NodePorts (empty: all).
    pub nodeport_addresses: Vec<(Ipv4Addr, u8)>,
    /// NodePort range, inclusive.
    pub nodeport_range: (u16, u16),
    /// SNAT port range, inclusive.
    pub masquerade_ports: (u16, u16),
    /// SNAT ports tried per new flow.
    pub masquerade_attempts: u16,
    /// Map sizes.
    pub map_sizes: MapSizes,
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("--{flag} ({env}) {value:?}: {problem}")]
pub struct OptionsError {
    /// The flag.
    pub flag: &'static str,
    /// Its environment variable.
    pub env: &'static str,
    /// The value given.
    pub value: String,
    /// What is wrong and what is expected.
    pub problem: String,
}

fn bad(flag: &'static str, env: &'static str, value: &str, problem: &str) -> OptionsError {
    OptionsError {
        flag,
        env,
        value: value.to_string(),
        problem: problem.to_string(),
    }
}

fn cidr(flag: &'static str, env: &'static str, v: &str) -> Result<(Ipv4Addr, u8), OptionsError> {
    parse_cidr(v.trim()).ok_or_else(|| bad(flag, env, v, "not an IPv4 CIDR like 10.244.0.0/16"))
}

fn range(flag: &'static str, env: &'static str, v: &str) -> Result<(u16, u16), OptionsError> {
    let parsed = v
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u16>().ok()?, b.trim().parse::<u16>().ok()?)));
    match parsed {
        Some((lo, hi)) if lo >= 1 && lo <= hi => Ok((lo, hi)),
        _ => Err(bad(flag, env, v, "not a port range like 30000-32767")),
    }
}

impl Options {
    /// Checks every setting.
    pub fn settings(&self) -> Result<Settings, OptionsError> {
        let masquerade_ports = range(
            "masquerade-ports",
            "SWITCHYARD_MASQUERADE_PORTS",
            &self.masquerade_ports,
        )?;
        if masquerade_ports.1 - masquerade_ports.0 < 255 {
            return Err(bad(
                "masquerade-ports",
                "SWITCHYARD_MASQUERADE_PORTS",
                &self.masquerade_ports,
                "fewer than 256 ports: flows to one destination would run out",
            ));
        }
        if !(1..=SNAT_MAX_ATTEMPTS).contains(&self.masquerade_attempts) {
            return Err(bad(
                "masquerade-attempts",
                "SWITCHYARD_MASQUERADE_ATTEMPTS",
                &self.masquerade_attempts.to_string(),
                &format!("must be 1 to {SNAT_MAX_ATTEMPTS}"),
            ));
        }
        let sizes = [
            ("ct-max", "SWITCHYARD_CT_MAX", self.ct_max),
            ("nat-max", "SWITCHYARD_NAT_MAX", self.nat_max),
            ("services-max", "SWITCHYARD_SERVICES_MAX", self.services_max),
            ("backends-max", "SWITCHYARD_BACKENDS_MAX", self.backends_max),
        ];
        for (flag, env, n) in sizes {
            if !(1024..=1 << 24).contains(&n) {
                return Err(bad(
                    flag,
                    env,
                    &n.to_string(),
                    "must be 1024 to 16777216 entries",
                ));
            }
        }
        Ok(Settings {
            cluster_cidr: cidr(
                "cluster-cidr",
                "SWITCHYARD_CLUSTER_CIDR",
                &self.cluster_cidr,
            )?,
            service_cidr: cidr(
                "service-cidr",
                "SWITCHYARD_SERVICE_CIDR",
                &self.service_cidr,
            )?,
            nodeport_addresses: self
                .nodeport_addresses
                .iter()
                .filter(|v| !v.trim().is_empty())
                .map(|v| cidr("nodeport-addresses", "SWITCHYARD_NODEPORT_ADDRESSES", v))
                .collect::<Result<_, _>>()?,
            nodeport_range: range(
                "nodeport-range",
                "SWITCHYARD_NODEPORT_RANGE",
                &self.nodeport_range,
            )?,
            masquerade_ports,
            masquerade_attempts: self.masquerade_attempts,
            map_sizes: MapSizes {
                ct: self.ct_max,
                nat: self.nat_max,
                services: self.services_max,
                backends: self.backends_max,
            },
        })
    }
}

/// The defaults, for tests and documentation.
pub const DEFAULT_MASQUERADE_PORTS: (u16, u16) = (SNAT_PORT_MIN, SNAT_PORT_MAX);

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        opts: Options,
    }

    fn parse(args: &[&str]) -> Options {
        Cli::parse_from(std::iter::once("agent").chain(args.iter().copied())).opts
    }

    #[test]
    fn the_defaults_fit_a_kubeadm_node() {
        let s = parse(&["--node", "n1"]).settings().unwrap();
        assert_eq!(s.nodeport_range, (30000, 32767));
        assert_eq!(s.masquerade_ports, DEFAULT_MASQUERADE_PORTS);
        assert!(s.nodeport_addresses.is_empty());
        assert_eq!(s.map_sizes.ct, capacity::CT);
    }

    #[test]
    fn bad_values_name_their_flag_and_variable() {
        let e = parse(&["--node", "n1", "--nodeport-range", "32767-30000"])
            .settings()
            .unwrap_err();
        assert_eq!(e.flag, "nodeport-range");
        assert!(e.to_string().contains("SWITCHYARD_NODEPORT_RANGE"), "{e}");
        let e = parse(&["--node", "n1", "--masquerade-ports", "61000-61010"])
            .settings()
            .unwrap_err();
        assert!(e.problem.contains("fewer than 256"), "{e}");
        let e = parse(&["--node", "n1", "--ct-max", "10"])
            .settings()
            .unwrap_err();
        assert_eq!(e.flag, "ct-max");
        let e = parse(&["--node", "n1", "--nodeport-addresses", "10.0.0.0/40"])
            .settings()
            .unwrap_err();
        assert_eq!(e.flag, "nodeport-addresses");
    }

    #[test]
    fn lists_take_commas() {
        let o = parse(&[
            "--node",
            "n1",
            "--uplink",
            "eth0,eth1",
            "--nodeport-addresses",
            "198.18.0.0/24,10.0.0.0/8",
        ]);
        assert_eq!(o.uplinks, ["eth0", "eth1"]);
        assert_eq!(o.settings().unwrap().nodeport_addresses.len(), 2);
    }
}
