//! The values the model produces and the datapath consumes.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// L4 protocol of a frontend or backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// IP protocol number as used in BPF map keys.
    pub fn ip_proto(self) -> u8 {
        match self {
            Proto::Tcp => switchyard_abi::proto::TCP,
            Proto::Udp => switchyard_abi::proto::UDP,
        }
    }
}

/// Where clients connect: a ClusterIP (or later a NodePort) address, port and protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    /// Virtual IP (ClusterIP) or node address.
    pub ip: Ipv4Addr,
    /// Frontend port.
    pub port: u16,
    /// Protocol.
    pub proto: Proto,
}

/// One endpoint a frontend can send to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendAddr {
    /// Pod IP.
    pub ip: Ipv4Addr,
    /// Resolved target port.
    pub port: u16,
    /// Protocol (same as the frontend's).
    pub proto: Proto,
}

/// A backend together with its state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BackendSpec {
    /// Address of the backend.
    pub addr: BackendAddr,
    /// The endpoint is terminating: keep existing flows, give it no new ones.
    pub terminating: bool,
    /// Underlay IP of the node the backend runs on, when known.
    pub node_ip: Option<Ipv4Addr>,
}

/// Everything the datapath needs to know about one frontend.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FrontendSpec {
    /// Backends that take new connections come first in the slot list; terminating ones are
    /// kept only so existing flows survive. Sorted, so the same objects give the same slots.
    pub backends: Vec<BackendSpec>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Only node-local backends take new connections (`externalTrafficPolicy: Local` on
    /// NodePorts and external addresses, `internalTrafficPolicy: Local` on a ClusterIP).
    pub local_only: bool,
    /// The frontend is a NodePort.
    pub nodeport: bool,
    /// The frontend is an external IP or a load balancer's ingress IP.
    pub external: bool,
    /// For a `local_only` NodePort or external frontend: the backends clients inside the cluster
    /// get instead (kube-proxy short-circuits pods to every endpoint).
    pub internal: Option<Vec<BackendSpec>>,
    /// New connections choose by Maglev consistent hashing instead of at random.
    pub maglev: bool,
    /// `loadBalancerSourceRanges`: only these client networks may connect (empty: everyone).
    pub source_ranges: Vec<(Ipv4Addr, u8)>,
    /// `namespace/name:portname` of the Service, for logs and the inspect CLI.
    pub service: String,
}

/// What a Service's `healthCheckNodePort` answers on this node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthCheck {
    /// Namespace of the Service.
    pub namespace: String,
    /// Name of the Service.
    pub name: String,
    /// Endpoints on this node taking new connections.
    pub local_endpoints: usize,
}

/// The whole desired state of one node's service datapath.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Desired {
    /// Every frontend this node must load-balance, in a stable order.
    pub frontends: BTreeMap<Frontend, FrontendSpec>,
    /// `healthCheckNodePort` → what it answers (`externalTrafficPolicy: Local` Services).
    pub health_checks: BTreeMap<u16, HealthCheck>,
}
