//! What the agent's caches keep of each object: what the model reads, nothing else.
//!
//! Services and EndpointSlices are parsed as the model's own types
//! ([`crate::model::objects`]), which have only the fields the model reads; their `ObjectMeta`
//! becomes a [`Meta`] here with what the model and the agent's Events read: name and namespace,
//! the labels and annotations the model looks up (a slice's one label moved to a field of its
//! own), and (Services only, for an Event's reference) the uid. A Node loses
//! `managedFields`, kubectl's last-applied copy and its list of container images (often the
//! largest part of a Node). Applied to every watch event as it reaches the agent's cache
//! ([`super::cache`]), after the watch itself has taken the resourceVersion it resumes from.
//!
//! Invariant: only fields the model never reads are dropped; what is kept is unchanged (its
//! vectors only lose their spare capacity).
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Node;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::model::objects::{EndpointSlice, Meta, Service, Str, WatchedService, WatchedSlice};
use crate::model::services::{
    LB_ALGORITHM_ANNOTATION, SERVICE_NAME_LABEL, SERVICE_PROXY_NAME_LABEL, TOPOLOGY_MODE_ANNOTATION,
};

/// kubectl's copy of the last applied manifest.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The Service labels the model reads.
pub const SERVICE_LABELS: [&str; 1] = [SERVICE_PROXY_NAME_LABEL];

/// The Service annotations the model reads.
pub const SERVICE_ANNOTATIONS: [&str; 2] = [LB_ALGORITHM_ANNOTATION, TOPOLOGY_MODE_ANNOTATION];

/// The EndpointSlice labels the model reads.
pub const SLICE_LABELS: [&str; 1] = [SERVICE_NAME_LABEL];

/// An object as the watch parses it, which becomes what the agent keeps of it.
pub trait Slim {
    /// What the agent's caches keep of it.
    type Kept;
    /// Drops what the agent never reads.
    fn slim(self) -> Self::Kept;
}

/// Labels or annotations with only the `keep` keys (`None` when none is left).
fn only(map: Option<BTreeMap<String, String>>, keep: &[&str]) -> Option<BTreeMap<String, String>> {
    let kept: BTreeMap<String, String> = map?
        .into_iter()
        .filter(|(k, _)| keep.contains(&k.as_str()))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// `meta`'s name and namespace, the `labels` and `annotations` named, and, when `identity`,
/// its uid.
fn thin_meta(meta: ObjectMeta, labels: &[&str], annotations: &[&str], identity: bool) -> Meta {
    let meta = Meta::from(meta);
    Meta {
        labels: only(meta.labels, labels),
        annotations: only(meta.annotations, annotations),
        uid: meta.uid.filter(|_| identity),
        ..meta
    }
}

/// A vector's spare capacity given back. serde grows a vector it parses by doubling from four,
/// so a one-address endpoint kept room for four addresses and a slice of five endpoints room
/// for eight: at 100,000 Services a tenth of the stores' bytes held nothing.
fn fit<T>(v: &mut Option<Vec<T>>) {
    if let Some(v) = v {
        v.shrink_to_fit();
    }
}

impl Slim for WatchedService {
    type Kept = Service;

    fn slim(self) -> Service {
        let mut svc = Service {
            metadata: thin_meta(self.metadata, &SERVICE_LABELS, &SERVICE_ANNOTATIONS, true),
            spec: self.spec,
            status: self.status,
        };
        if let Some(spec) = svc.spec.as_mut() {
            fit(&mut spec.cluster_ips);
            fit(&mut spec.external_ips);
            fit(&mut spec.load_balancer_source_ranges);
            fit(&mut spec.ports);
        }
        if let Some(lb) = svc.status.as_mut().and_then(|s| s.load_balancer.as_mut()) {
            fit(&mut lb.ingress);
        }
        svc
    }
}

impl Slim for WatchedSlice {
    type Kept = EndpointSlice;

    fn slim(self) -> EndpointSlice {
        let mut metadata = thin_meta(self.metadata, &SLICE_LABELS, &[], false);
        let service_label = metadata
            .labels
            .take()
            .and_then(|mut l| l.remove(SERVICE_NAME_LABEL))
            .map(Str::from)
            .or(self.service_label);
        let mut slice = EndpointSlice {
            metadata,
            address_type: self.address_type,
            endpoints: self.endpoints,
            ports: self.ports,
            service_label,
        };
        fit(&mut slice.ports);
        fit(&mut slice.endpoints);
        for e in slice.endpoints.iter_mut().flatten() {
            e.addresses.shrink_to_fit();
            if let Some(h) = e.hints.as_mut() {
                fit(&mut h.for_zones);
            }
        }
        slice
    }
}

impl Slim for Node {
    type Kept = Node;

    fn slim(mut self) -> Node {
        self.metadata.managed_fields = None;
        if let Some(a) = self.metadata.annotations.as_mut() {
            a.remove(LAST_APPLIED);
        }
        if let Some(status) = self.status.as_mut() {
            status.images = None;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{desired, Desired};
    use k8s_openapi::api::core::v1::{ContainerImage, NodeStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use serde_json::json;
    use std::net::Ipv4Addr;

    fn node(name: &str, n: u8, zone: &str) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone}},
            "spec": {"podCIDR": format!("10.244.{n}.0/24")},
            "status": {"addresses": [{"type": "InternalIP", "address": format!("198.18.0.{}", 10 + n)}]}
        }))
        .unwrap()
    }

    /// A Service as an API server sends it, using every feature the model reads, with the
    /// fields it does not read around them.
    fn service_json(name: &str, ty: &str, policy: &str) -> serde_json::Value {
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {
                "name": name, "namespace": "default", "uid": format!("uid-{name}"),
                "resourceVersion": "42", "generation": 3,
                "creationTimestamp": "2026-12-02T11:00:00Z",
                "labels": {"app": name, "team": "x"},
                "annotations": {
                    LAST_APPLIED: "{...}",
                    "service.switchyard.io/lb-algorithm": "maglev",
                    "service.kubernetes.io/topology-mode": "Auto",
                    "other": "y"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Apply"}],
                "finalizers": ["service.kubernetes.io/load-balancer-cleanup"]
            },
            "spec": {
                "type": ty, "clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::7"],
                "ipFamilies": ["IPv4", "IPv6"], "ipFamilyPolicy": "PreferDualStack",
                "selector": {"app": name},
                "ports": [
                    {"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP",
                     "nodePort": 30080, "appProtocol": "http"},
                    {"name": "dns", "port": 53, "targetPort": "dns", "protocol": "UDP",
                     "nodePort": 30053},
                    {"name": "sctp", "port": 9, "protocol": "SCTP"}
                ],
                "externalIPs": ["192.0.2.9"],
                "externalTrafficPolicy": policy, "internalTrafficPolicy": "Cluster",
                "healthCheckNodePort": if policy == "Local" { json!(32000) } else { json!(null) },
                "sessionAffinity": "ClientIP",
                "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 600}},
                "loadBalancerSourceRanges": ["203.0.113.0/24", "bogus"],
                "allocateLoadBalancerNodePorts": true, "loadBalancerClass": "x"
            },
            "status": {"loadBalancer": {"ingress": [
                {"ip": "198.51.100.1", "ports": [{"port": 80, "protocol": "TCP"}]},
                {"ip": "198.51.100.2", "ipMode": "Proxy"},
                {"hostname": "lb.example"}
            ]}, "conditions": []}
        })
    }

    /// An EndpointSlice as the EndpointSlice controller writes it.
    fn slice_json(service: &str, name: &str) -> serde_json::Value {
        let ep = |ip: &str, node: &str, ready: bool, terminating: bool, zone: &str| {
            json!({
                "addresses": [ip], "nodeName": node, "zone": zone, "hostname": "h",
                "conditions": {"ready": ready, "serving": true, "terminating": terminating},
                "hints": {"forZones": [{"name": zone}], "forNodes": [{"name": node}]},
                "targetRef": {"kind": "Pod", "name": format!("pod-{ip}"),
                              "namespace": "default", "uid": "u"},
                "deprecatedTopology": {"k": "v"}
            })
        };
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {
                "name": name, "namespace": "default", "uid": "u", "resourceVersion": "7",
                "generation": 2, "generateName": format!("{service}-"),
                "labels": {"kubernetes.io/service-name": service,
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io",
                           "app": service},
                "annotations": {"endpoints.kubernetes.io/last-change-trigger-time": "2026-12-02T11:00:00Z"},
                "ownerReferences": [{"apiVersion": "v1", "kind": "Service", "name": service,
                                     "uid": "u", "controller": true}]
            },
            "addressType": "IPv4",
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP", "appProtocol": "http"},
                {"name": "dns", "port": 5353, "protocol": "UDP"}
            ],
            "endpoints": [
                ep("10.244.1.5", "n1", true, false, "a"),
                ep("10.244.2.5", "n2", true, false, "b"),
                ep("10.244.1.6", "n1", false, true, "a"),
                ep("10.244.2.7", "gone", true, false, "a")
            ]
        })
    }

    /// The desired state of `services` and `slices` (JSON), parsed as k8s-openapi objects and
    /// taken over whole, or parsed straight into the agent's types and slimmed.
    fn both_ways(services: &[serde_json::Value], slices: &[serde_json::Value]) -> [Desired; 2] {
        let nodes = [node("n1", 1, "a"), node("n2", 2, "b")];
        let whole_svcs: Vec<Service> = services
            .iter()
            .map(|v| {
                let full: k8s_openapi::api::core::v1::Service =
                    serde_json::from_value(v.clone()).unwrap();
                Service::from(full)
            })
            .collect();
        let whole_slices: Vec<EndpointSlice> = slices
            .iter()
            .map(|v| {
                let full: k8s_openapi::api::discovery::v1::EndpointSlice =
                    serde_json::from_value(v.clone()).unwrap();
                EndpointSlice::from(full)
            })
            .collect();
        let slim_svcs: Vec<Service> = services
            .iter()
            .map(|v| {
                serde_json::from_value::<WatchedService>(v.clone())
                    .unwrap()
                    .slim()
            })
            .collect();
        let slim_slices: Vec<EndpointSlice> = slices
            .iter()
            .map(|v| {
                serde_json::from_value::<WatchedSlice>(v.clone())
                    .unwrap()
                    .slim()
            })
            .collect();
        let ip = Ipv4Addr::new(198, 18, 0, 11);
        [
            desired(&whole_svcs, &whole_slices, &nodes, "n1", ip),
            desired(&slim_svcs, &slim_slices, &nodes, "n1", ip),
        ]
    }

    #[test]
    fn slimmed_objects_give_the_model_the_same_desired_state_as_whole_ones() {
        let services = [
            service_json("web", "LoadBalancer", "Local"),
            service_json("api", "NodePort", "Cluster"),
        ];
        let slices = [slice_json("web", "web-abc"), slice_json("api", "api-abc")];
        let [whole, slim] = both_ways(&services, &slices);
        assert!(whole.frontends.len() >= 8, "{whole:?}");
        assert_eq!(whole.health_checks.len(), 1);
        assert_eq!(slim, whole);
    }

    #[test]
    fn slimmed_services_give_the_same_notes_as_whole_ones() {
        let v = service_json("web", "LoadBalancer", "Local");
        let full: k8s_openapi::api::core::v1::Service = serde_json::from_value(v.clone()).unwrap();
        let slim = serde_json::from_value::<WatchedService>(v).unwrap().slim();
        let notes = crate::model::service_notes(&slim);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert_eq!(notes, crate::model::service_notes(&Service::from(full)));
    }

    #[test]
    fn a_service_keeps_its_identity_and_the_labels_and_annotations_the_model_reads() {
        let mut svc: WatchedService =
            serde_json::from_value(service_json("web", "ClusterIP", "Cluster")).unwrap();
        svc.metadata.labels = Some(BTreeMap::from([
            ("app".to_string(), "web".to_string()),
            (SERVICE_PROXY_NAME_LABEL.to_string(), "other".to_string()),
        ]));
        let spec = svc.spec.clone();
        let svc = svc.slim();
        let m = &svc.metadata;
        assert_eq!(
            (m.name.as_deref(), m.namespace.as_deref()),
            (Some("web"), Some("default"))
        );
        assert_eq!(m.uid.as_deref(), Some("uid-web"), "an Event refers to it");
        assert_eq!(
            m.labels,
            Some(BTreeMap::from([(
                SERVICE_PROXY_NAME_LABEL.to_string(),
                "other".to_string()
            )]))
        );
        let annotations = m.annotations.as_ref().unwrap();
        assert_eq!(annotations.len(), 2);
        assert_eq!(annotations[TOPOLOGY_MODE_ANNOTATION], "Auto");
        assert_eq!(annotations[LB_ALGORITHM_ANNOTATION], "maglev");
        assert_eq!(svc.spec, spec);
    }

    #[test]
    fn a_slice_keeps_only_its_name_namespace_and_service_name() {
        let slice = serde_json::from_value::<WatchedSlice>(slice_json("web", "web-abc"))
            .unwrap()
            .slim();
        assert_eq!(
            slice.metadata,
            Meta {
                name: Some("web-abc".into()),
                namespace: Some("default".into()),
                ..Meta::default()
            }
        );
        assert_eq!(slice.service_name(), Some("web"));
        assert_eq!(slice.endpoints.as_ref().map(Vec::len), Some(4));
    }

    #[test]
    fn a_slice_and_a_service_keep_no_spare_room_in_their_lists() {
        // Parsed from text, as the watch receives them (a `Value` would tell serde the lengths).
        let slice: WatchedSlice =
            serde_json::from_str(&slice_json("web", "web-abc").to_string()).unwrap();
        let before = slice.clone();
        fn spare<M>(s: &EndpointSlice<M>) -> bool {
            s.endpoints
                .iter()
                .flatten()
                .any(|e| e.addresses.capacity() > e.addresses.len())
        }
        assert!(spare(&slice), "parsing leaves room to spare");
        let svc: WatchedService =
            serde_json::from_str(&service_json("web", "ClusterIP", "Cluster").to_string()).unwrap();
        let spec = svc.spec.clone();
        let slice = slice.slim();
        let svc = svc.slim();
        let endpoints = slice.endpoints.as_ref().unwrap();
        assert_eq!(endpoints, before.endpoints.as_ref().unwrap());
        assert_eq!(endpoints.capacity(), endpoints.len());
        assert!(!spare(&slice));
        let ports = svc.spec.as_ref().unwrap().ports.as_ref().unwrap();
        assert_eq!(ports.capacity(), ports.len());
        assert_eq!(svc.spec, spec);
    }

    #[test]
    fn a_node_loses_managed_fields_the_applied_copy_and_its_image_list_and_keeps_the_rest() {
        let node = Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                managed_fields: Some(vec![ManagedFieldsEntry::default()]),
                annotations: Some(BTreeMap::from([
                    (LAST_APPLIED.to_string(), "{...}".to_string()),
                    ("a".to_string(), "b".to_string()),
                ])),
                ..ObjectMeta::default()
            },
            status: Some(NodeStatus {
                images: Some(vec![ContainerImage::default()]),
                addresses: Some(vec![]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        let node = node.slim();
        assert_eq!(node.metadata.managed_fields, None);
        assert_eq!(
            node.metadata.annotations,
            Some(BTreeMap::from([("a".to_string(), "b".to_string())]))
        );
        let status = node.status.unwrap();
        assert_eq!(status.images, None);
        assert_eq!(status.addresses, Some(vec![]));
    }
}
