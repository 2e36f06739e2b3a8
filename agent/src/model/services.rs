//! Services and EndpointSlices → frontends and backends, following kube-proxy's rules:
//! - every port of a Service with an IPv4 ClusterIP is a frontend (TCP and UDP); with
//!   `internalTrafficPolicy: Local` only this node's endpoints take its new connections, and
//!   none means clients are refused, never sent elsewhere;
//! - `NodePort`/`LoadBalancer` ports with a `nodePort` are also frontends on the node's address,
//!   and `externalIPs` and (for `LoadBalancer`) `status.loadBalancer.ingress[].ip` are frontends
//!   on the service port, with `loadBalancerSourceRanges` on the latter; with
//!   `externalTrafficPolicy: Local` these take only this node's endpoints from outside, while
//!   pods keep reaching every endpoint through them (kube-proxy's short-circuit);
//! - backends come from the Service's EndpointSlices ([`super::endpoints`]: readiness,
//!   terminating endpoints, topology hints);
//! - `sessionAffinity: ClientIP` and the backend choice (`service.switchyard.io/lb-algorithm:
//!   maglev` for consistent hashing) are carried to the datapath;
//! - a frontend without endpoints is still programmed, so clients are rejected, not left hanging;
//! - a Service labelled `service.kubernetes.io/service-proxy-name` belongs to the proxy it names;
//! - what the datapath cannot serve (SCTP, IPv6, unknown annotations…) is listed by
//!   [`service_notes`] so the agent can report it.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use super::endpoints::{backends, endpoints, is_local, proto, Endpoint};
use super::nodes::{internal_ip, parse_cidr};
use super::objects::{EndpointSlice, Service, ServicePort, ServiceSpec};
use super::{Desired, Frontend, FrontendSpec, HealthCheck, ObjKey};

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Label handing a Service to another proxy (kube-proxy leaves every Service that has it to the
/// proxy it names; so does switchyard).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Annotation choosing how new connections pick a backend: `random` (the default) or `maglev`
/// (consistent hashing: every node picks the same backend for a flow, and a backend change moves
/// few flows).
pub const LB_ALGORITHM_ANNOTATION: &str = "service.switchyard.io/lb-algorithm";

/// Annotation asking for topology-aware routing (value `Auto`), as the EndpointSlice
/// controller and kube-proxy read it.
pub const TOPOLOGY_MODE_ANNOTATION: &str = "service.kubernetes.io/topology-mode";

/// Node label naming its zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Default ClientIP affinity timeout (3 hours), as Kubernetes defaults it.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

/// The Service an EndpointSlice belongs to: `(namespace, service name)` from its
/// `kubernetes.io/service-name` label.
pub fn slice_owner(slice: &EndpointSlice) -> Option<ObjKey> {
    let ns = slice.metadata.namespace.clone()?;
    Some((ns, slice.service_name()?.into()))
}

fn affinity(spec: &ServiceSpec) -> Option<u32> {
    if spec.session_affinity.as_deref() != Some("ClientIP") {
        return None;
    }
    let timeout = spec
        .session_affinity_config
        .as_ref()
        .and_then(|c| c.client_ip.as_ref())
        .and_then(|c| c.timeout_seconds)
        .and_then(|t| u32::try_from(t).ok())
        .unwrap_or(DEFAULT_AFFINITY_TIMEOUT);
    Some(timeout)
}

/// What the model needs to know about the cluster's nodes, from the point of view of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    /// InternalIP of every node that has one.
    pub node_ips: BTreeMap<String, Ipv4Addr>,
    /// Names of every node that exists.
    pub known: BTreeSet<String>,
    /// The node the datapath runs on.
    pub node_name: String,
    /// Its address.
    pub node_ip: Ipv4Addr,
    /// The addresses its NodePorts listen on: its InternalIP and ExternalIPs, those of them in
    /// the `--nodeport-addresses` networks when any are given.
    pub nodeport_ips: Vec<Ipv4Addr>,
    /// Its zone (`topology.kubernetes.io/zone`), if labelled.
    pub zone: Option<String>,
}

impl NodeView {
    /// The view of node `node_name` (address `node_ip`) on `nodes`.
    pub fn new<N: Borrow<Node>>(nodes: &[N], node_name: &str, node_ip: Ipv4Addr) -> Self {
        Self::with_nodeport_networks(nodes, node_name, node_ip, &[])
    }

    /// [`NodeView::new`], NodePorts only on the node's addresses inside `networks` (all when
    /// empty).
    pub fn with_nodeport_networks<N: Borrow<Node>>(
        nodes: &[N],
        node_name: &str,
        node_ip: Ipv4Addr,
        networks: &[(Ipv4Addr, u8)],
    ) -> Self {
        let nodes = nodes.iter().map(Borrow::borrow);
        let own = nodes
            .clone()
            .find(|n| n.metadata.name.as_deref() == Some(node_name));
        let zone = own.and_then(|n| n.metadata.labels.as_ref()?.get(ZONE_LABEL).cloned());
        let mut addrs: Vec<Ipv4Addr> = vec![node_ip];
        addrs.extend(
            own.and_then(|n| n.status.as_ref()?.addresses.as_ref())
                .into_iter()
                .flatten()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| a.address.parse::<Ipv4Addr>().ok()),
        );
        addrs.sort();
        addrs.dedup();
        let inside = |ip: &Ipv4Addr| {
            networks.is_empty()
                || networks.iter().any(|(net, prefix)| {
                    let mask = u32::MAX.checked_shl(32 - u32::from(*prefix)).unwrap_or(0);
                    u32::from(*ip) & mask == u32::from(*net) & mask
                })
        };
        let nodeport_ips = addrs.into_iter().filter(inside).collect();
        NodeView {
            node_ips: nodes
                .clone()
                .filter_map(|n| Some((n.metadata.name.clone()?, internal_ip(n)?)))
                .collect(),
            known: nodes.filter_map(|n| n.metadata.name.clone()).collect(),
            node_name: node_name.to_string(),
            node_ip,
            nodeport_ips,
            zone,
        }
    }
}

/// The whole desired state of node `node_name` (whose address is `node_ip`). Linear in the
/// number of objects: slices are grouped by their Service first.
pub fn desired<S, E, N>(
    services: &[S],
    slices: &[E],
    nodes: &[N],
    node_name: &str,
    node_ip: Ipv4Addr,
) -> Desired
where
    S: Borrow<Service>,
    E: Borrow<EndpointSlice>,
    N: Borrow<Node>,
{
    let view = NodeView::new(nodes, node_name, node_ip);
    let mut by_service: HashMap<ObjKey, Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices.iter().map(Borrow::borrow) {
        if let Some(owner) = slice_owner(slice) {
            by_service.entry(owner).or_default().push(slice);
        }
    }
    let mut d = Desired::default();
    for svc in services.iter().map(Borrow::borrow) {
        let owner = svc.metadata.key();
        let owned = by_service.get(&owner).map_or(&[][..], Vec::as_slice);
        d.frontends.extend(service_frontends(svc, owned, &view));
        d.health_checks.extend(health_check(svc, owned, &view));
    }
    d
}

/// The `healthCheckNodePort` of a Service with `externalTrafficPolicy: Local` and what it
/// answers on this node: the count of local endpoints taking new connections (for any port;
/// kube-proxy's contract: 200 when there is one, 503 otherwise).
pub fn health_check(
    svc: &Service,
    slices: &[&EndpointSlice],
    view: &NodeView,
) -> Option<(u16, HealthCheck)> {
    let (ns, name, spec) = (
        svc.metadata.namespace.as_deref()?,
        svc.metadata.name.as_deref()?,
        svc.spec.as_ref()?,
    );
    if !ours(svc) || spec.external_traffic_policy.as_deref() != Some("Local") {
        return None;
    }
    let port = spec
        .health_check_node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    let mut local = BTreeSet::new();
    for sp in spec.ports.iter().flatten() {
        let Some(p) = proto(sp.protocol.as_deref()) else {
            continue;
        };
        let eps = endpoints(slices, ns, name, sp.name.as_deref().unwrap_or(""), p);
        let here = |e: &Endpoint| is_local(e, view);
        local.extend(
            backends(&eps, p, view, false, here)
                .iter()
                .filter(|b| !b.terminating)
                .map(|b| b.addr.ip),
        );
    }
    Some((
        port,
        HealthCheck {
            namespace: ns.to_string(),
            name: name.to_string(),
            local_endpoints: local.len(),
        },
    ))
}

/// Whether switchyard programs this Service at all (kube-proxy's rules: an IPv4 ClusterIP, not
/// headless, not handed to another proxy).
fn ours(svc: &Service) -> bool {
    !svc.metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
}

fn annotation<'a>(svc: &'a Service, key: &str) -> Option<&'a str> {
    svc.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

/// Whether new connections use Maglev consistent hashing.
fn maglev(svc: &Service) -> bool {
    annotation(svc, LB_ALGORITHM_ANNOTATION) == Some("maglev")
}

/// Whether topology hints decide which endpoints take new connections.
fn topology(svc: &Service, spec: &ServiceSpec) -> bool {
    spec.traffic_distribution.as_deref() == Some("PreferClose")
        || annotation(svc, TOPOLOGY_MODE_ANNOTATION).is_some_and(|v| v.eq_ignore_ascii_case("auto"))
}

/// The addresses external clients reach the Service on besides NodePorts: `externalIPs`, and
/// the load balancer's ingress IPs (the second element says which: true for ingress IPs, which
/// `loadBalancerSourceRanges` apply to). An ingress in `ipMode: Proxy` is the load balancer's
/// own address, not one traffic arrives on.
fn external_ips(svc: &Service) -> Vec<(Ipv4Addr, bool)> {
    let spec = svc.spec.as_ref();
    let mut out: Vec<(Ipv4Addr, bool)> = spec
        .and_then(|s| s.external_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|ip| ip.parse().ok())
        .map(|ip| (ip, false))
        .collect();
    if spec.and_then(|s| s.type_.as_deref()) == Some("LoadBalancer") {
        let ingress = svc
            .status
            .as_ref()
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref());
        for i in ingress.into_iter().flatten() {
            if i.ip_mode.as_deref() == Some("Proxy") {
                continue;
            }
            if let Some(ip) = i.ip.as_deref().and_then(|ip| ip.parse().ok()) {
                out.push((ip, true));
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// `loadBalancerSourceRanges` that parse as IPv4 CIDRs.
fn source_ranges(spec: &ServiceSpec) -> Vec<(Ipv4Addr, u8)> {
    spec.load_balancer_source_ranges
        .iter()
        .flatten()
        .filter_map(|r| parse_cidr(r.trim()))
        .collect()
}

/// The frontends of one Service with their backends, from its EndpointSlices `slices`.
pub fn service_frontends(
    svc: &Service,
    slices: &[&EndpointSlice],
    view: &NodeView,
) -> Vec<(Frontend, FrontendSpec)> {
    let mut out = Vec::new();
    let (Some(ns), Some(name), Some(spec)) = (
        svc.metadata.namespace.as_deref(),
        svc.metadata.name.as_deref(),
        svc.spec.as_ref(),
    ) else {
        return out;
    };
    if !ours(svc) {
        return out;
    }
    let cluster_ip = spec
        .cluster_ip
        .as_deref()
        .and_then(|ip| ip.parse::<Ipv4Addr>().ok());
    let node_ports = matches!(
        spec.type_.as_deref(),
        Some("NodePort") | Some("LoadBalancer")
    );
    let external_local = spec.external_traffic_policy.as_deref() == Some("Local");
    let internal_local = spec.internal_traffic_policy.as_deref() == Some("Local");
    let topology = topology(svc, spec);
    let externals = external_ips(svc);
    let ranges = source_ranges(spec);
    for port in spec.ports.iter().flatten() {
        let Some(p) = proto(port.protocol.as_deref()) else {
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let eps = endpoints(slices, ns, name, &port_name, p);
        let everywhere = |_: &Endpoint| true;
        let here = |e: &Endpoint| is_local(e, view);
        let internal = if internal_local {
            backends(&eps, p, view, false, here)
        } else {
            backends(&eps, p, view, topology, everywhere)
        };
        let base = FrontendSpec {
            backends: internal.clone(),
            affinity_timeout: affinity(spec),
            local_only: internal_local,
            maglev: maglev(svc),
            service: format!("{ns}/{name}:{port_name}"),
            ..FrontendSpec::default()
        };
        if let (Some(ip), Ok(fport)) = (cluster_ip, u16::try_from(port.port)) {
            out.push((
                Frontend {
                    ip,
                    port: fport,
                    proto: p,
                },
                base.clone(),
            ));
        }
        // NodePorts and external addresses: the external policy decides for outside clients;
        // pods reaching them are served like ClusterIP clients.
        let outside = FrontendSpec {
            backends: if external_local {
                backends(&eps, p, view, false, here)
            } else {
                backends(&eps, p, view, topology, everywhere)
            },
            local_only: external_local,
            internal: external_local.then(|| internal.clone()),
            ..base.clone()
        };
        if let Some(np) = node_port(port).filter(|_| node_ports) {
            for ip in &view.nodeport_ips {
                let front = Frontend {
                    ip: *ip,
                    port: np,
                    proto: p,
                };
                out.push((
                    front,
                    FrontendSpec {
                        nodeport: true,
                        ..outside.clone()
                    },
                ));
            }
        }
        let Ok(sport) = u16::try_from(port.port) else {
            continue;
        };
        for (ip, ingress) in &externals {
            let front = Frontend {
                ip: *ip,
                port: sport,
                proto: p,
            };
            out.push((
                front,
                FrontendSpec {
                    external: true,
                    source_ranges: if *ingress { ranges.clone() } else { Vec::new() },
                    ..outside.clone()
                },
            ));
        }
    }
    out
}

/// What the datapath cannot do of a Service, in words for a log line and an Event on it; empty
/// when everything it asks for is served.
pub fn service_notes(svc: &Service) -> Vec<String> {
    let mut notes = Vec::new();
    let Some(spec) = svc.spec.as_ref() else {
        return notes;
    };
    if !ours(svc) {
        return notes;
    }
    for port in spec.ports.iter().flatten() {
        if proto(port.protocol.as_deref()).is_none() {
            notes.push(format!(
                "port {} uses protocol {}, which switchyard does not load-balance (TCP and UDP only); clients of that port get no answer",
                port.port,
                port.protocol.as_deref().unwrap_or("?")
            ));
        }
    }
    let cluster_ips = spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.as_ref());
    let mut v6 = BTreeSet::new();
    for ip in cluster_ips {
        if ip != "None" && !ip.is_empty() && ip.parse::<Ipv4Addr>().is_err() {
            v6.insert(ip.clone());
        }
    }
    for ip in v6 {
        notes.push(format!(
            "clusterIP {ip} is not IPv4; switchyard serves IPv4 only (the Service's IPv4 address, if any, works)"
        ));
    }
    for ip in spec.external_ips.iter().flatten() {
        if ip.parse::<Ipv4Addr>().is_err() {
            notes.push(format!(
                "externalIP {ip} is not IPv4; switchyard serves IPv4 only"
            ));
        }
    }
    for r in spec.load_balancer_source_ranges.iter().flatten() {
        if parse_cidr(r.trim()).is_none() {
            notes.push(format!(
                "loadBalancerSourceRanges entry {r:?} is not an IPv4 CIDR; it admits nobody"
            ));
        }
    }
    if let Some(v) = annotation(svc, LB_ALGORITHM_ANNOTATION) {
        if v != "maglev" && v != "random" {
            notes.push(format!(
                "annotation {LB_ALGORITHM_ANNOTATION}={v:?} is not one of random, maglev; using random"
            ));
        }
    }
    if let Some(td) = spec.traffic_distribution.as_deref() {
        if td != "PreferClose" {
            notes.push(format!(
                "trafficDistribution {td:?} is not known to switchyard (PreferClose is); endpoints are used without topology"
            ));
        }
    }
    notes
}

fn node_port(port: &ServicePort) -> Option<u16> {
    port.node_port
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::nodes::tests::node;
    use crate::model::objects::Meta;
    use crate::model::objects::{
        ClientIPConfig, Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, ServiceSpec,
        SessionAffinityConfig,
    };
    use crate::model::Proto;

    const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> Meta {
        Meta {
            namespace: Some(ns.into()),
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn port(name: Option<&str>, port: i32, proto: &str, node_port: Option<i32>) -> ServicePort {
        ServicePort {
            name: name.map(Into::into),
            port,
            protocol: Some(proto.into()),
            node_port,
        }
    }

    fn service(ns: &str, name: &str, ip: &str, ports: Vec<ServicePort>) -> Service {
        Service {
            metadata: meta(ns, name, &[]),
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                ports: Some(ports),
                type_: Some("ClusterIP".into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    /// (ip, ready, serving, terminating, node)
    type Ep<'a> = (&'a str, Option<bool>, Option<bool>, Option<bool>, &'a str);

    fn slice(
        ns: &str,
        svc: &str,
        suffix: &str,
        ports: &[(Option<&str>, i32, &str)],
        eps: &[Ep],
    ) -> EndpointSlice {
        EndpointSlice {
            metadata: meta(ns, &format!("{svc}-{suffix}"), &[(SERVICE_NAME_LABEL, svc)]),
            address_type: "IPv4".into(),
            endpoints: Some(
                eps.iter()
                    .map(|(ip, ready, serving, terminating, node)| SliceEndpoint {
                        addresses: vec![ip.to_string().into()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            serving: *serving,
                            terminating: *terminating,
                        }),
                        node_name: Some((*node).into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port, proto)| EndpointPort {
                        name: name.map(Into::into),
                        port: Some(*port),
                        protocol: Some((*proto).into()),
                    })
                    .collect(),
            ),
            ..Default::default()
        }
    }

    fn front(ip: [u8; 4], port: u16, proto: Proto) -> Frontend {
        Frontend {
            ip: Ipv4Addr::from(ip),
            port,
            proto,
        }
    }

    fn ips(spec: &FrontendSpec, terminating: bool) -> Vec<String> {
        spec.backends
            .iter()
            .filter(|b| b.terminating == terminating)
            .map(|b| format!("{}:{}", b.addr.ip, b.addr.port))
            .collect()
    }

    fn nodes() -> Vec<Node> {
        vec![
            node("n1", Some("10.244.1.0/24"), Some("198.18.0.11")),
            node("n2", Some("10.244.2.0/24"), Some("198.18.0.12")),
        ]
    }

    #[test]
    fn a_clusterip_service_gets_its_ready_endpoints_on_the_target_port() {
        let svcs = [service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(Some("http"), 80, "TCP", None)],
        )];
        let slices = [slice(
            "default",
            "echo",
            "abc",
            &[(Some("http"), 8080, "TCP")],
            &[
                ("10.244.1.3", Some(true), Some(true), Some(false), "n1"),
                ("10.244.2.4", Some(true), Some(true), Some(false), "n2"),
                ("10.244.1.5", Some(false), Some(false), Some(false), "n1"),
            ],
        )];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        let spec = &d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)];
        assert_eq!(
            ips(spec, false),
            ["10.244.1.3:8080", "10.244.2.4:8080"],
            "not-ready endpoints get nothing"
        );
        assert_eq!(spec.service, "default/echo:http");
        let remote = spec
            .backends
            .iter()
            .find(|b| b.addr.ip == Ipv4Addr::new(10, 244, 2, 4))
            .unwrap();
        assert_eq!(remote.node_ip, Some(Ipv4Addr::new(198, 18, 0, 12)));
    }

    #[test]
    fn multi_port_services_match_slice_ports_by_name_and_protocol() {
        let svcs = [service(
            "default",
            "dns",
            "10.96.0.53",
            vec![
                port(Some("dns"), 53, "UDP", None),
                port(Some("dns-tcp"), 53, "TCP", None),
            ],
        )];
        let slices = [slice(
            "default",
            "dns",
            "x",
            &[(Some("dns"), 5353, "UDP"), (Some("dns-tcp"), 5354, "TCP")],
            &[("10.244.1.9", None, None, None, "n1")],
        )];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        assert_eq!(
            ips(&d.frontends[&front([10, 96, 0, 53], 53, Proto::Udp)], false),
            ["10.244.1.9:5353"]
        );
        assert_eq!(
            ips(&d.frontends[&front([10, 96, 0, 53], 53, Proto::Tcp)], false),
            ["10.244.1.9:5354"]
        );
    }

    #[test]
    fn a_service_without_endpoints_is_still_programmed_so_clients_are_rejected() {
        let svcs = [service(
            "default",
            "empty",
            "10.96.0.11",
            vec![port(None, 80, "TCP", None)],
        )];
        let d = desired(&svcs, &[] as &[EndpointSlice], &nodes(), "n1", NODE_IP);
        assert!(d.frontends[&front([10, 96, 0, 11], 80, Proto::Tcp)]
            .backends
            .is_empty());
    }

    #[test]
    fn headless_and_sctp_are_skipped_and_slices_of_other_namespaces_ignored() {
        let svcs = [
            service(
                "default",
                "headless",
                "None",
                vec![port(None, 80, "TCP", None)],
            ),
            service(
                "default",
                "sctp",
                "10.96.0.12",
                vec![port(None, 80, "SCTP", None)],
            ),
            service(
                "default",
                "echo",
                "10.96.0.13",
                vec![port(None, 80, "TCP", None)],
            ),
        ];
        let slices = [slice(
            "other",
            "echo",
            "x",
            &[(None, 8080, "TCP")],
            &[("10.244.1.3", Some(true), None, None, "n1")],
        )];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        assert_eq!(d.frontends.len(), 1);
        assert!(d.frontends[&front([10, 96, 0, 13], 80, Proto::Tcp)]
            .backends
            .is_empty());
    }

    #[test]
    fn a_service_handed_to_another_proxy_is_left_alone() {
        let mut svc = service(
            "default",
            "other",
            "10.96.0.14",
            vec![port(None, 80, "TCP", None)],
        );
        svc.metadata.labels =
            Some([(SERVICE_PROXY_NAME_LABEL.to_string(), "x".to_string())].into());
        let d = desired(&[svc], &[] as &[EndpointSlice], &nodes(), "n1", NODE_IP);
        assert!(d.frontends.is_empty());
    }

    #[test]
    fn terminating_endpoints_keep_flows_and_serve_only_when_nothing_is_ready() {
        let svcs = [service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(None, 80, "TCP", None)],
        )];
        let terminating = ("10.244.1.3", Some(false), Some(true), Some(true), "n1");
        let with_ready = [slice(
            "default",
            "echo",
            "a",
            &[(None, 8080, "TCP")],
            &[
                terminating,
                ("10.244.1.4", Some(true), Some(true), Some(false), "n1"),
            ],
        )];
        let d = desired(&svcs, &with_ready, &nodes(), "n1", NODE_IP);
        let spec = &d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)];
        assert_eq!(ips(spec, false), ["10.244.1.4:8080"]);
        assert_eq!(ips(spec, true), ["10.244.1.3:8080"]);
        let only_terminating = [slice(
            "default",
            "echo",
            "a",
            &[(None, 8080, "TCP")],
            &[terminating],
        )];
        let d = desired(&svcs, &only_terminating, &nodes(), "n1", NODE_IP);
        assert_eq!(
            ips(&d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)], false),
            ["10.244.1.3:8080"]
        );
    }

    #[test]
    fn duplicate_endpoints_across_slices_count_once() {
        let svcs = [service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(None, 80, "TCP", None)],
        )];
        let ep = ("10.244.1.3", Some(true), None, None, "n1");
        let slices = [
            slice("default", "echo", "a", &[(None, 8080, "TCP")], &[ep]),
            slice("default", "echo", "b", &[(None, 8080, "TCP")], &[ep]),
        ];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        assert_eq!(
            d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)]
                .backends
                .len(),
            1
        );
    }

    #[test]
    fn nodeports_listen_on_the_node_address_and_local_policy_keeps_local_endpoints() {
        let mut svc = service(
            "default",
            "web",
            "10.96.0.20",
            vec![port(None, 80, "TCP", Some(31002))],
        );
        svc.spec.as_mut().unwrap().type_ = Some("NodePort".into());
        let slices = [slice(
            "default",
            "web",
            "a",
            &[(None, 8080, "TCP")],
            &[
                ("10.244.1.3", Some(true), None, None, "n1"),
                ("10.244.2.3", Some(true), None, None, "n2"),
            ],
        )];
        let d = desired(std::slice::from_ref(&svc), &slices, &nodes(), "n1", NODE_IP);
        let np = &d.frontends[&front([198, 18, 0, 11], 31002, Proto::Tcp)];
        assert!(np.nodeport && !np.local_only);
        assert_eq!(np.backends.len(), 2);
        assert_eq!(
            d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)]
                .backends
                .len(),
            2,
            "ClusterIP unaffected"
        );

        svc.spec.as_mut().unwrap().external_traffic_policy = Some("Local".into());
        let d = desired(&[svc], &slices, &nodes(), "n1", NODE_IP);
        let np = &d.frontends[&front([198, 18, 0, 11], 31002, Proto::Tcp)];
        assert!(np.local_only);
        assert_eq!(ips(np, false), ["10.244.1.3:8080"]);
        assert_eq!(
            d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)]
                .backends
                .len(),
            2,
            "ClusterIP ignores the external policy"
        );
    }

    #[test]
    fn a_clusterip_service_with_a_stale_nodeport_field_gets_no_nodeport() {
        let svcs = [service(
            "default",
            "web",
            "10.96.0.20",
            vec![port(None, 80, "TCP", Some(31002))],
        )];
        let d = desired(&svcs, &[] as &[EndpointSlice], &nodes(), "n1", NODE_IP);
        assert_eq!(d.frontends.len(), 1);
    }

    #[test]
    fn endpoints_on_a_deleted_node_are_dropped() {
        let svcs = [service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(None, 80, "TCP", None)],
        )];
        let slices = [slice(
            "default",
            "echo",
            "a",
            &[(None, 8080, "TCP")],
            &[
                ("10.244.1.3", Some(true), None, None, "n1"),
                ("10.244.3.3", Some(true), None, None, "n3"),
            ],
        )];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        assert_eq!(
            ips(&d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)], false),
            ["10.244.1.3:8080"],
            "n3 is not a node"
        );
    }

    #[test]
    fn client_ip_affinity_uses_the_configured_or_default_timeout() {
        let mut svc = service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(None, 80, "TCP", None)],
        );
        svc.spec.as_mut().unwrap().session_affinity = Some("ClientIP".into());
        let d = desired(
            std::slice::from_ref(&svc),
            &[] as &[EndpointSlice],
            &nodes(),
            "n1",
            NODE_IP,
        );
        assert_eq!(
            d.frontends.values().next().unwrap().affinity_timeout,
            Some(DEFAULT_AFFINITY_TIMEOUT)
        );
        svc.spec.as_mut().unwrap().session_affinity_config = Some(SessionAffinityConfig {
            client_ip: Some(ClientIPConfig {
                timeout_seconds: Some(60),
            }),
        });
        let d = desired(&[svc], &[] as &[EndpointSlice], &nodes(), "n1", NODE_IP);
        assert_eq!(
            d.frontends.values().next().unwrap().affinity_timeout,
            Some(60)
        );
    }

    fn with_spec(mut svc: Service, f: impl FnOnce(&mut ServiceSpec)) -> Service {
        f(svc.spec.as_mut().unwrap());
        svc
    }

    fn two_node_slice(svc: &str) -> EndpointSlice {
        slice(
            "default",
            svc,
            "a",
            &[(None, 8080, "TCP")],
            &[
                ("10.244.1.3", Some(true), None, None, "n1"),
                ("10.244.2.3", Some(true), None, None, "n2"),
            ],
        )
    }

    #[test]
    fn internal_traffic_policy_local_keeps_only_this_nodes_endpoints_for_the_cluster_ip() {
        let svc = with_spec(
            service(
                "default",
                "web",
                "10.96.0.20",
                vec![port(None, 80, "TCP", None)],
            ),
            |s| s.internal_traffic_policy = Some("Local".into()),
        );
        let d = desired(
            std::slice::from_ref(&svc),
            &[two_node_slice("web")],
            &nodes(),
            "n1",
            NODE_IP,
        );
        let spec = &d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)];
        assert!(spec.local_only);
        assert_eq!(ips(spec, false), ["10.244.1.3:8080"]);
        let only_remote = slice(
            "default",
            "web",
            "a",
            &[(None, 8080, "TCP")],
            &[("10.244.2.3", Some(true), None, None, "n2")],
        );
        let d = desired(&[svc], &[only_remote], &nodes(), "n1", NODE_IP);
        let spec = &d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)];
        assert!(
            ips(spec, false).is_empty(),
            "nothing local: clients are refused"
        );
    }

    #[test]
    fn external_ips_and_load_balancer_ingress_are_frontends_on_the_service_port() {
        use crate::model::objects::{LoadBalancerIngress, LoadBalancerStatus, ServiceStatus};
        let mut svc = with_spec(
            service(
                "default",
                "web",
                "10.96.0.20",
                vec![port(None, 80, "TCP", Some(31000))],
            ),
            |s| {
                s.type_ = Some("LoadBalancer".into());
                s.external_ips = Some(vec!["203.0.113.7".into()]);
                s.load_balancer_source_ranges = Some(vec!["198.18.0.0/24".into()]);
                s.external_traffic_policy = Some("Local".into());
            },
        );
        svc.status = Some(ServiceStatus {
            load_balancer: Some(LoadBalancerStatus {
                ingress: Some(vec![
                    LoadBalancerIngress {
                        ip: Some("198.18.100.1".into()),
                        ..Default::default()
                    },
                    LoadBalancerIngress {
                        ip: Some("198.18.100.9".into()),
                        ip_mode: Some("Proxy".into()),
                    },
                ]),
            }),
        });
        let d = desired(&[svc], &[two_node_slice("web")], &nodes(), "n1", NODE_IP);
        let lb = &d.frontends[&front([198, 18, 100, 1], 80, Proto::Tcp)];
        assert!(lb.external && lb.local_only);
        assert_eq!(
            ips(lb, false),
            ["10.244.1.3:8080"],
            "outside clients: local only"
        );
        let inside = lb.internal.as_ref().expect("pods get every endpoint");
        assert_eq!(inside.iter().filter(|b| !b.terminating).count(), 2);
        assert_eq!(lb.source_ranges, vec![(Ipv4Addr::new(198, 18, 0, 0), 24)]);
        let eip = &d.frontends[&front([203, 0, 113, 7], 80, Proto::Tcp)];
        assert!(
            eip.external && eip.source_ranges.is_empty(),
            "ranges apply to LB IPs"
        );
        assert!(!d
            .frontends
            .contains_key(&front([198, 18, 100, 9], 80, Proto::Tcp)));
        assert!(d
            .frontends
            .contains_key(&front([198, 18, 0, 11], 31000, Proto::Tcp)));
    }

    #[test]
    fn endpoints_that_are_not_ready_keep_their_flows_but_get_no_new_ones() {
        let svcs = [service(
            "default",
            "echo",
            "10.96.0.10",
            vec![port(None, 80, "TCP", None)],
        )];
        let slices = [slice(
            "default",
            "echo",
            "a",
            &[(None, 8080, "TCP")],
            &[
                ("10.244.1.3", Some(true), None, None, "n1"),
                ("10.244.1.4", Some(false), Some(false), Some(true), "n1"),
                ("10.244.1.5", Some(false), Some(false), Some(false), "n1"),
            ],
        )];
        let d = desired(&svcs, &slices, &nodes(), "n1", NODE_IP);
        let spec = &d.frontends[&front([10, 96, 0, 10], 80, Proto::Tcp)];
        assert_eq!(ips(spec, false), ["10.244.1.3:8080"]);
        assert_eq!(ips(spec, true), ["10.244.1.4:8080", "10.244.1.5:8080"]);
    }

    #[test]
    fn topology_hints_prefer_this_zone_and_fall_back_to_all() {
        use crate::model::objects::{EndpointHints, ForZone};
        let svc = with_spec(
            service(
                "default",
                "web",
                "10.96.0.20",
                vec![port(None, 80, "TCP", None)],
            ),
            |s| s.traffic_distribution = Some("PreferClose".into()),
        );
        let mut hinted = two_node_slice("web");
        for (ep, zone) in hinted
            .endpoints
            .as_mut()
            .unwrap()
            .iter_mut()
            .zip(["a", "b"])
        {
            ep.hints = Some(EndpointHints {
                for_zones: Some(vec![ForZone { name: zone.into() }]),
            });
        }
        let mut zoned = nodes();
        zoned[0].metadata.labels = Some([(ZONE_LABEL.to_string(), "a".to_string())].into());
        let d = desired(
            std::slice::from_ref(&svc),
            std::slice::from_ref(&hinted),
            &zoned,
            "n1",
            NODE_IP,
        );
        let spec = &d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)];
        assert_eq!(ips(spec, false), ["10.244.1.3:8080"], "zone a only");
        zoned[0].metadata.labels = Some([(ZONE_LABEL.to_string(), "c".to_string())].into());
        let d = desired(&[svc], &[hinted], &zoned, "n1", NODE_IP);
        let spec = &d.frontends[&front([10, 96, 0, 20], 80, Proto::Tcp)];
        assert_eq!(
            ips(spec, false).len(),
            2,
            "no endpoint for zone c: all of them"
        );
    }

    #[test]
    fn what_the_datapath_cannot_serve_is_noted() {
        let mut svc = service(
            "default",
            "odd",
            "10.96.0.30",
            vec![port(None, 80, "SCTP", None)],
        );
        svc.metadata.annotations =
            Some([(LB_ALGORITHM_ANNOTATION.to_string(), "ring".to_string())].into());
        let notes = service_notes(&svc);
        assert_eq!(notes.len(), 2, "{notes:?}");
        assert!(notes[0].contains("SCTP"));
        assert!(notes[1].contains("ring"));
        let fine = service(
            "default",
            "ok",
            "10.96.0.31",
            vec![port(None, 80, "TCP", None)],
        );
        assert!(service_notes(&fine).is_empty());
    }

    #[test]
    fn nodeports_listen_on_every_node_address_or_those_the_networks_pick() {
        use k8s_openapi::api::core::v1::NodeAddress;
        let mut ns = nodes();
        ns[0]
            .status
            .as_mut()
            .unwrap()
            .addresses
            .as_mut()
            .unwrap()
            .push(NodeAddress {
                type_: "ExternalIP".into(),
                address: "203.0.113.50".into(),
            });
        let svc = with_spec(
            service(
                "default",
                "web",
                "10.96.0.20",
                vec![port(None, 80, "TCP", Some(31002))],
            ),
            |s| s.type_ = Some("NodePort".into()),
        );
        let both = NodeView::new(&ns, "n1", NODE_IP);
        let fronts = service_frontends(&svc, &[], &both);
        let ips: BTreeSet<Ipv4Addr> = fronts
            .iter()
            .filter(|(_, s)| s.nodeport)
            .map(|(f, _)| f.ip)
            .collect();
        assert_eq!(ips, [NODE_IP, Ipv4Addr::new(203, 0, 113, 50)].into());
        let picked = NodeView::with_nodeport_networks(
            &ns,
            "n1",
            NODE_IP,
            &[(Ipv4Addr::new(198, 18, 0, 0), 24)],
        );
        let fronts = service_frontends(&svc, &[], &picked);
        assert_eq!(fronts.iter().filter(|(_, s)| s.nodeport).count(), 1);
    }
}
