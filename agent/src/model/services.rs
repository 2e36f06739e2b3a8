//! Services and EndpointSlices → frontends and backends, following kube-proxy's rules:
//! - every port of a Service with an IPv4 ClusterIP is a frontend (TCP and UDP; SCTP is skipped);
//!   `NodePort`/`LoadBalancer` ports with a `nodePort` are also frontends on the node's address;
//! - backends are the endpoints of the Service's EndpointSlices (label
//!   `kubernetes.io/service-name`, same namespace, `addressType: IPv4`) whose slice port has the
//!   same name as the service port;
//! - ready endpoints take new connections; if there are none, serving-but-terminating ones do;
//!   otherwise terminating endpoints are kept only for the flows they already have;
//! - `externalTrafficPolicy: Local` NodePorts use only this node's endpoints;
//! - endpoints on a node that no longer exists are dropped at once (its pods are gone with it);
//! - a frontend without endpoints is still programmed, so clients are rejected, not left hanging;
//! - a Service labelled `service.kubernetes.io/service-proxy-name` belongs to the proxy it names.
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{Node, Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use super::nodes::internal_ip;
use super::{BackendAddr, BackendSpec, Desired, Frontend, FrontendSpec, Proto};

/// Label linking an EndpointSlice to its Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Label handing a Service to another proxy (kube-proxy leaves every Service that has it to the
/// proxy it names; so does switchyard).
pub const SERVICE_PROXY_NAME_LABEL: &str = "service.kubernetes.io/service-proxy-name";

/// Default ClientIP affinity timeout (3 hours), as Kubernetes defaults it.
pub const DEFAULT_AFFINITY_TIMEOUT: u32 = 10_800;

fn proto(p: Option<&str>) -> Option<Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        _ => None,
    }
}

/// One endpoint of a slice, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Endpoint {
    ip: Ipv4Addr,
    port: u16,
    ready: bool,
    serving_terminating: bool,
    node: Option<String>,
}

/// The Service an EndpointSlice belongs to: `(namespace, service name)` from its
/// `kubernetes.io/service-name` label.
pub fn slice_owner(slice: &EndpointSlice) -> Option<(String, String)> {
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice
        .metadata
        .labels
        .as_ref()?
        .get(SERVICE_NAME_LABEL)?
        .clone();
    Some((ns, svc))
}

/// The endpoints of service `ns/name` for the service port named `port_name` and `proto`, from
/// the slices `slices` (those of other services or namespaces are ignored).
fn endpoints(
    slices: &[&EndpointSlice],
    ns: &str,
    name: &str,
    port_name: &str,
    proto_: Proto,
) -> Vec<Endpoint> {
    let mut out = BTreeSet::new();
    let owned = slices.iter().filter(|s| {
        s.address_type == "IPv4"
            && s.metadata.namespace.as_deref() == Some(ns)
            && s.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL))
                .map(String::as_str)
                == Some(name)
    });
    for slice in owned {
        let port = slice.ports.iter().flatten().find(|p| {
            p.name.as_deref().unwrap_or("") == port_name
                && proto(p.protocol.as_deref()) == Some(proto_)
        });
        let Some(port) = port
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for ep in slice.endpoints.iter().flatten() {
            let c = ep.conditions.as_ref();
            // A nil condition means "unknown", which Kubernetes treats as ready/serving.
            let ready = c.and_then(|c| c.ready).unwrap_or(true);
            let serving = c.and_then(|c| c.serving).unwrap_or(ready);
            let terminating = c.and_then(|c| c.terminating).unwrap_or(false);
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                out.insert(Endpoint {
                    ip,
                    port,
                    ready: ready && !terminating,
                    serving_terminating: serving && terminating,
                    node: ep.node_name.clone(),
                });
            }
        }
    }
    // The same address may appear in several slices (e.g. during a slice rebalance): keep the
    // most usable entry of each.
    let mut best: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    for ep in out {
        let better = |old: &Endpoint| {
            (ep.ready, ep.serving_terminating) > (old.ready, old.serving_terminating)
        };
        match best.get(&(ep.ip, ep.port)) {
            Some(old) if !better(old) => {}
            _ => {
                best.insert((ep.ip, ep.port), ep);
            }
        }
    }
    best.into_values().collect()
}

/// Backends from endpoints: ready ones active; serving-terminating ones active only when no
/// endpoint is ready, otherwise kept as terminating.
fn backends(eps: &[Endpoint], proto_: Proto, view: &NodeView) -> Vec<BackendSpec> {
    let alive = |e: &&Endpoint| {
        e.node
            .as_ref()
            .is_none_or(|n| view.known.is_empty() || view.known.contains(n))
    };
    let eps: Vec<&Endpoint> = eps.iter().filter(alive).collect();
    let any_ready = eps.iter().any(|e| e.ready);
    let mut out: Vec<BackendSpec> = eps
        .iter()
        .filter(|e| e.ready || e.serving_terminating)
        .map(|e| BackendSpec {
            addr: BackendAddr {
                ip: e.ip,
                port: e.port,
                proto: proto_,
            },
            terminating: !e.ready && any_ready,
            node_ip: e.node.as_ref().and_then(|n| view.node_ips.get(n)).copied(),
        })
        .collect();
    out.sort();
    out
}

fn affinity(svc: &Service) -> Option<u32> {
    let spec = svc.spec.as_ref()?;
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
    /// Its address (NodePorts listen on it).
    pub node_ip: Ipv4Addr,
}

impl NodeView {
    /// The view of node `node_name` (address `node_ip`) on `nodes`.
    pub fn new<N: Borrow<Node>>(nodes: &[N], node_name: &str, node_ip: Ipv4Addr) -> Self {
        let nodes = nodes.iter().map(Borrow::borrow);
        NodeView {
            node_ips: nodes
                .clone()
                .filter_map(|n| Some((n.metadata.name.clone()?, internal_ip(n)?)))
                .collect(),
            known: nodes.filter_map(|n| n.metadata.name.clone()).collect(),
            node_name: node_name.to_string(),
            node_ip,
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
    let mut by_service: HashMap<(String, String), Vec<&EndpointSlice>> = HashMap::new();
    for slice in slices.iter().map(Borrow::borrow) {
        if let Some(owner) = slice_owner(slice) {
            by_service.entry(owner).or_default().push(slice);
        }
    }
    let mut d = Desired::default();
    for svc in services.iter().map(Borrow::borrow) {
        let owner = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        let owned = by_service.get(&owner).map_or(&[][..], Vec::as_slice);
        d.frontends.extend(service_frontends(svc, owned, &view));
    }
    d
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
    if svc
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(SERVICE_PROXY_NAME_LABEL))
    {
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
    let local_only = spec.external_traffic_policy.as_deref() == Some("Local");
    for port in spec.ports.iter().flatten() {
        let Some(p) = proto(port.protocol.as_deref()) else {
            tracing::debug!(service = %format!("{ns}/{name}"), protocol = ?port.protocol, "skipping a port with an unsupported protocol");
            continue;
        };
        let port_name = port.name.clone().unwrap_or_default();
        let eps = endpoints(slices, ns, name, &port_name, p);
        let all = backends(&eps, p, view);
        let base = FrontendSpec {
            backends: all.clone(),
            affinity_timeout: affinity(svc),
            local_only: false,
            nodeport: false,
            service: format!("{ns}/{name}:{port_name}"),
        };
        if let (Some(ip), Some(fport)) = (cluster_ip, u16::try_from(port.port).ok()) {
            let front = Frontend {
                ip,
                port: fport,
                proto: p,
            };
            out.push((front, base.clone()));
        }
        if let Some(np) = node_port(port).filter(|_| node_ports) {
            let backends = if local_only {
                let local: Vec<Endpoint> = eps
                    .iter()
                    .filter(|e| e.node.as_deref() == Some(view.node_name.as_str()))
                    .cloned()
                    .collect();
                backends(&local, p, view)
            } else {
                all
            };
            let front = Frontend {
                ip: view.node_ip,
                port: np,
                proto: p,
            };
            out.push((
                front,
                FrontendSpec {
                    backends,
                    local_only,
                    nodeport: true,
                    ..base
                },
            ));
        }
    }
    out
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
    use k8s_openapi::api::core::v1::{ClientIPConfig, ServiceSpec, SessionAffinityConfig};
    use k8s_openapi::api::discovery::v1::{
        Endpoint as SliceEndpoint, EndpointConditions, EndpointPort,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
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
            ..Default::default()
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
                        addresses: vec![ip.to_string()],
                        conditions: Some(EndpointConditions {
                            ready: *ready,
                            serving: *serving,
                            terminating: *terminating,
                        }),
                        node_name: Some(node.to_string()),
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
                        protocol: Some(proto.to_string()),
                        ..Default::default()
                    })
                    .collect(),
            ),
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
}
