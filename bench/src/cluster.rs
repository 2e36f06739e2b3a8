//! The benchmark's objects in controlplane-lite, through kube-rs with the lab's kubeconfig
//! (so whatever server, CA and token it names are used): the filler Services with their
//! EndpointSlices for the scale scenarios, endpoint changes, and Services for the control loop.
use std::net::Ipv4Addr;
use std::path::Path;

use futures::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use serde_json::json;

use crate::kproxy::{Svc, SvcPort};

/// Namespace every benchmark object lives in.
pub const NAMESPACE: &str = "default";

/// Concurrent API requests while creating objects in bulk.
const PARALLEL: usize = 32;

/// Errors talking to controlplane-lite.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The kubeconfig is unusable.
    #[error("kubeconfig {0}: {1}")]
    Kubeconfig(String, String),
    /// An API request failed.
    #[error("{0}: {1}")]
    Api(String, kube::Error),
    /// The server answered something unexpected.
    #[error("{0}")]
    Unexpected(String),
}

/// A kube client for the lab.
#[derive(Clone)]
pub struct Cluster {
    client: kube::Client,
}

/// Endpoints of filler service `i`: 2 to 8 (5 on average, so 10,000 Services have 50,000
/// endpoints), at addresses in 10.244.100.0–10.244.249.255 that no pod uses (filler Services
/// never receive traffic).
pub fn filler_endpoints(i: usize) -> Vec<Ipv4Addr> {
    let count = 2 + i % 7;
    (0..count)
        .map(|j| {
            let x = (i * 7 + j) % (150 * 250);
            Ipv4Addr::new(10, 244, 100 + (x / 250) as u8, (x % 250 + 1) as u8)
        })
        .collect()
}

/// Name of filler service `i`.
pub fn filler_name(i: usize) -> String {
    format!("fill-{i}")
}

fn slice_json(name: &str, endpoints: &[Ipv4Addr]) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{name}-manual"), "namespace": NAMESPACE,
                     "labels": {"kubernetes.io/service-name": name}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
        "endpoints": endpoints.iter().map(|ip| json!({
            "addresses": [ip.to_string()],
            "conditions": {"ready": true, "serving": true, "terminating": false}
        })).collect::<Vec<_>>(),
    })
}

fn cluster_ip(svc: &Service) -> Result<Ipv4Addr, ClusterError> {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
        .ok_or_else(|| ClusterError::Unexpected("a created Service got no clusterIP".into()))
}

impl Cluster {
    /// A client from the kubeconfig at `path`.
    pub async fn connect(path: &Path) -> Result<Cluster, ClusterError> {
        let err = |e: String| ClusterError::Kubeconfig(path.display().to_string(), e);
        let kc = Kubeconfig::read_from(path).map_err(|e| err(e.to_string()))?;
        let config = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| err(e.to_string()))?;
        let client = kube::Client::try_from(config).map_err(|e| err(e.to_string()))?;
        Ok(Cluster { client })
    }

    fn services(&self) -> Api<Service> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    fn slices(&self) -> Api<EndpointSlice> {
        Api::namespaced(self.client.clone(), NAMESPACE)
    }

    /// Creates filler Services `range` (selector-less, port 80 → 8080) and one EndpointSlice
    /// each with [`filler_endpoints`]; returns them as kube-proxy would see them.
    pub async fn create_fillers(
        &self,
        range: std::ops::Range<usize>,
    ) -> Result<Vec<Svc>, ClusterError> {
        let svcs = self.services();
        let slices = self.slices();
        let mut out = stream::iter(range)
            .map(|i| {
                let (svcs, slices) = (svcs.clone(), slices.clone());
                async move {
                    let name = filler_name(i);
                    let svc: Service = serde_json::from_value(json!({
                        "apiVersion": "v1", "kind": "Service",
                        "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "filler"}},
                        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}
                    }))
                    .map_err(|e| ClusterError::Unexpected(e.to_string()))?;
                    let created = svcs
                        .create(&PostParams::default(), &svc)
                        .await
                        .map_err(|e| ClusterError::Api(format!("creating service {name}"), e))?;
                    let eps = filler_endpoints(i);
                    let slice: EndpointSlice = serde_json::from_value(slice_json(&name, &eps))
                        .map_err(|e| ClusterError::Unexpected(e.to_string()))?;
                    slices
                        .create(&PostParams::default(), &slice)
                        .await
                        .map_err(|e| ClusterError::Api(format!("creating endpointslice of {name}"), e))?;
                    Ok::<_, ClusterError>((
                        i,
                        Svc {
                            namespace: NAMESPACE.into(),
                            name,
                            cluster_ip: cluster_ip(&created)?,
                            ports: vec![SvcPort {
                                name: "http".into(),
                                port: 80,
                                target: 8080,
                                node_port: None,
                            }],
                            endpoints: eps,
                        },
                    ))
                }
            })
            .buffer_unordered(PARALLEL)
            .try_collect::<Vec<(usize, Svc)>>()
            .await?;
        out.sort_by_key(|(i, _)| *i);
        Ok(out.into_iter().map(|(_, s)| s).collect())
    }

    /// Replaces the endpoints of filler `name`'s slice (one endpoint change).
    pub async fn set_endpoints(
        &self,
        name: &str,
        endpoints: &[Ipv4Addr],
    ) -> Result<(), ClusterError> {
        let patch = json!({"endpoints": slice_json(name, endpoints)["endpoints"]});
        self.slices()
            .patch(
                &format!("{name}-manual"),
                &PatchParams::default(),
                &Patch::Merge(&patch),
            )
            .await
            .map_err(|e| ClusterError::Api(format!("patching endpointslice of {name}"), e))?;
        Ok(())
    }

    /// Creates a ClusterIP Service `name` selecting `app=<app>` on `port` → `target`; its ClusterIP.
    pub async fn create_selecting(
        &self,
        name: &str,
        app: &str,
        port: u16,
        target: u16,
    ) -> Result<Ipv4Addr, ClusterError> {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": {"bench": "control-loop"}},
            "spec": {"selector": {"app": app}, "ports": [{"name": "tcp", "port": port, "targetPort": target}]}
        }))
        .map_err(|e| ClusterError::Unexpected(e.to_string()))?;
        let created = self
            .services()
            .create(&PostParams::default(), &svc)
            .await
            .map_err(|e| ClusterError::Api(format!("creating service {name}"), e))?;
        cluster_ip(&created)
    }

    /// Deletes Service `name` (its slices go with it or stay harmlessly selector-less).
    pub async fn delete_service(&self, name: &str) -> Result<(), ClusterError> {
        self.services()
            .delete(name, &DeleteParams::default())
            .await
            .map_err(|e| ClusterError::Api(format!("deleting service {name}"), e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fillers_have_two_to_eight_endpoints_fifty_thousand_for_ten_thousand() {
        let total: usize = (0..10_000).map(|i| filler_endpoints(i).len()).sum();
        assert!((49_990..=50_010).contains(&total), "{total}");
        assert!((0..100).all(|i| (2..=8).contains(&filler_endpoints(i).len())));
        let e = filler_endpoints(3);
        assert!(e.iter().all(|ip| ip.octets()[2] >= 100));
    }
}
