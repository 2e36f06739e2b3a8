//! EndpointSlices → the backends of one service port, as kube-proxy categorises endpoints:
//! - an endpoint is *ready* when `ready` is true (a nil condition counts as true) and it is not
//!   terminating; *serving-terminating* when it is terminating but still serving;
//! - ready endpoints take new connections; when none is ready, serving-terminating ones do
//!   (KEP-1669); every other endpoint — terminating, or not ready — is kept only for the
//!   connections it already has (kube-proxy leaves their conntrack entries alone), so a pod that
//!   is being replaced finishes what it serves;
//! - topology: when the Service asks for it (`trafficDistribution: PreferClose`, or the
//!   `service.kubernetes.io/topology-mode: Auto` annotation) and every ready endpoint carries
//!   zone hints, only endpoints hinted for this node's zone take new connections — unless none
//!   is, then all do;
//! - endpoints on a node that no longer exists are dropped at once (its pods are gone with it).
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use super::objects::EndpointSlice;
use super::services::NodeView;
use super::{BackendAddr, BackendSpec, Proto};

/// One endpoint of a slice, as the model sees it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Endpoint {
    /// Address.
    pub ip: Ipv4Addr,
    /// Port of the matching slice port.
    pub port: u16,
    /// Ready and not terminating.
    pub ready: bool,
    /// Terminating but still serving.
    pub serving_terminating: bool,
    /// Node it runs on.
    pub node: Option<String>,
    /// Zones its hints name (`None`: no hints).
    pub zones: Option<BTreeSet<String>>,
}

/// The IP protocol of a Kubernetes protocol name; `None` for SCTP and anything else.
pub fn proto(p: Option<&str>) -> Option<Proto> {
    match p.unwrap_or("TCP") {
        "TCP" => Some(Proto::Tcp),
        "UDP" => Some(Proto::Udp),
        _ => None,
    }
}

/// The endpoints of service `ns/name` for the service port named `port_name` and `proto_`, from
/// `slices` (those of other services or namespaces are ignored). An address listed in several
/// slices counts once, in its most usable state.
pub fn endpoints(
    slices: &[&EndpointSlice],
    ns: &str,
    name: &str,
    port_name: &str,
    proto_: Proto,
) -> Vec<Endpoint> {
    let mut best: BTreeMap<(Ipv4Addr, u16), Endpoint> = BTreeMap::new();
    let owned = slices.iter().filter(|s| {
        s.address_type == "IPv4"
            && s.metadata.namespace.as_deref() == Some(ns)
            && s.service_name() == Some(name)
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
            let zones = ep
                .hints
                .as_ref()
                .and_then(|h| h.for_zones.as_ref())
                .map(|z| {
                    z.iter()
                        .map(|z| z.name.to_string())
                        .collect::<BTreeSet<String>>()
                });
            for addr in &ep.addresses {
                let Ok(ip) = addr.parse::<Ipv4Addr>() else {
                    continue;
                };
                let e = Endpoint {
                    ip,
                    port,
                    ready: ready && !terminating,
                    serving_terminating: serving && terminating,
                    node: ep.node_name.as_ref().map(|n| n.to_string()),
                    zones: zones.clone(),
                };
                let rank = |e: &Endpoint| (e.ready, e.serving_terminating);
                match best.get(&(ip, port)) {
                    Some(old) if rank(old) >= rank(&e) => {}
                    _ => {
                        best.insert((ip, port), e);
                    }
                }
            }
        }
    }
    best.into_values().collect()
}

/// Whether the endpoint is on this node.
pub fn is_local(e: &Endpoint, view: &NodeView) -> bool {
    e.node.as_deref() == Some(view.node_name.as_str())
}

/// Backends from `eps` for a frontend whose new connections may go only to endpoints that
/// `eligible` accepts (this node's for a Local traffic policy; all otherwise). Endpoints that
/// take no new connections stay as terminating backends, so their flows continue.
pub fn backends(
    eps: &[Endpoint],
    proto_: Proto,
    view: &NodeView,
    topology: bool,
    eligible: impl Fn(&Endpoint) -> bool,
) -> Vec<BackendSpec> {
    let alive: Vec<&Endpoint> = eps
        .iter()
        .filter(|e| {
            e.node
                .as_ref()
                .is_none_or(|n| view.known.is_empty() || view.known.contains(n))
        })
        .collect();
    let candidates: Vec<&Endpoint> = alive.iter().copied().filter(|e| eligible(e)).collect();
    let ready: Vec<&Endpoint> = candidates.iter().copied().filter(|e| e.ready).collect();
    let mut active: Vec<&Endpoint> = if ready.is_empty() {
        candidates
            .iter()
            .copied()
            .filter(|e| e.serving_terminating)
            .collect()
    } else {
        ready
    };
    if topology {
        active = by_zone(active, view);
    }
    let mut out: Vec<BackendSpec> = alive
        .iter()
        .map(|e| BackendSpec {
            addr: BackendAddr {
                ip: e.ip,
                port: e.port,
                proto: proto_,
            },
            terminating: !active.contains(e),
            node_ip: e.node.as_ref().and_then(|n| view.node_ips.get(n)).copied(),
        })
        .collect();
    out.sort();
    out
}

/// The endpoints hinted for this node's zone, when every endpoint has hints and some match;
/// otherwise all of them (kube-proxy's fallback).
fn by_zone<'a>(eps: Vec<&'a Endpoint>, view: &NodeView) -> Vec<&'a Endpoint> {
    let Some(zone) = view.zone.as_deref() else {
        return eps;
    };
    if eps.iter().any(|e| e.zones.is_none()) {
        return eps;
    }
    let near: Vec<&Endpoint> = eps
        .iter()
        .copied()
        .filter(|e| e.zones.as_ref().is_some_and(|z| z.contains(zone)))
        .collect();
    if near.is_empty() {
        eps
    } else {
        near
    }
}
