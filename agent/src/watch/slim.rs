//! What the agent's caches keep of each object: everything the model reads, without the parts
//! that only make objects heavy — `managedFields`, kubectl's last-applied copy of the whole
//! object, and a Node's list of container images (often the largest part of a Node). Applied to
//! every watch event before it reaches the store, as kube-rs' `modify` allows.
//!
//! Invariant: only fields the model never reads are dropped; what is kept is unchanged.
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// kubectl's copy of the last applied manifest.
pub const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// An object that can drop what the agent never reads.
pub trait Slim {
    /// Drops what the agent never reads.
    fn slim(&mut self);
}

fn slim_meta(meta: &mut ObjectMeta) {
    meta.managed_fields = None;
    if let Some(a) = meta.annotations.as_mut() {
        a.remove(LAST_APPLIED);
    }
}

impl Slim for Service {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

impl Slim for EndpointSlice {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
    }
}

impl Slim for Node {
    fn slim(&mut self) {
        slim_meta(&mut self.metadata);
        if let Some(status) = self.status.as_mut() {
            status.images = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ContainerImage, NodeStatus, ServiceSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
    use std::collections::BTreeMap;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            name: Some("web".into()),
            managed_fields: Some(vec![ManagedFieldsEntry::default()]),
            annotations: Some(BTreeMap::from([
                (LAST_APPLIED.to_string(), "{...}".to_string()),
                (
                    "service.kubernetes.io/topology-mode".to_string(),
                    "Auto".to_string(),
                ),
            ])),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn a_service_loses_managed_fields_and_the_applied_copy_and_keeps_the_rest() {
        let mut svc = Service {
            metadata: meta(),
            spec: Some(ServiceSpec {
                cluster_ip: Some("10.96.0.5".into()),
                ..ServiceSpec::default()
            }),
            ..Service::default()
        };
        let before = svc.clone();
        svc.slim();
        assert_eq!(svc.metadata.managed_fields, None);
        let annotations = svc.metadata.annotations.as_ref().unwrap();
        assert!(!annotations.contains_key(LAST_APPLIED));
        assert_eq!(annotations["service.kubernetes.io/topology-mode"], "Auto");
        assert_eq!(svc.spec, before.spec);
        assert_eq!(svc.metadata.name, before.metadata.name);
    }

    #[test]
    fn a_node_loses_its_image_list_and_keeps_its_addresses() {
        let mut node = Node {
            metadata: meta(),
            status: Some(NodeStatus {
                images: Some(vec![ContainerImage::default()]),
                addresses: Some(vec![]),
                ..NodeStatus::default()
            }),
            ..Node::default()
        };
        node.slim();
        let status = node.status.unwrap();
        assert_eq!(status.images, None);
        assert_eq!(status.addresses, Some(vec![]));
    }
}
