//! What kube-apiserver's bootstrap controller and endpoint reconciler keep in place: the system
//! namespaces, and `default/kubernetes` — the Service in-cluster clients dial to reach the API —
//! with its Endpoints and EndpointSlice naming the address the server advertises.
//!
//! Invariant: after every [`reconcile`], `default/kubernetes` is a selector-less ClusterIP
//! Service holding the first address of the service CIDR, labelled `component: apiserver`,
//! `provider: kubernetes`, with the one port `https` 443/TCP -> the server's port; its Endpoints
//! (labelled `endpointslice.kubernetes.io/skip-mirror: "true"`) and EndpointSlice (labelled
//! `kubernetes.io/service-name: kubernetes`, no managed-by label, so the selector-based
//! controller leaves it alone) list exactly the advertised address and port. Whatever a client
//! deletes or changes is put back within a second (on the change) or ten (the periodic pass).
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{json, Value};

use crate::admission::{self, Ranges};
use crate::resources;
use crate::status::ApiError;
use crate::store::{Key, Store, StoreError};

/// The namespaces kube-apiserver creates and re-creates.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["default", "kube-system", "kube-public"];
/// Namespace and name of the API server's Service, Endpoints and EndpointSlice.
pub const NAMESPACE: &str = "default";
/// See [`NAMESPACE`].
pub const NAME: &str = "kubernetes";
/// The label kube-apiserver puts on its Endpoints so the mirroring controller skips them.
pub const SKIP_MIRROR_LABEL: &str = "endpointslice.kubernetes.io/skip-mirror";
/// How often everything is checked even when nothing changed.
const RESYNC: Duration = Duration::from_secs(10);

/// Errors keeping the objects in place.
#[derive(Debug, thiserror::Error)]
pub enum BootstrapError {
    /// Admission refused the object (a bug, or a service CIDR without room).
    #[error("admitting {0}: {1:?}")]
    Admission(&'static str, ApiError),
    /// The store refused the write.
    #[error("writing {0}: {1}")]
    Store(&'static str, #[source] StoreError),
}

/// What the server publishes as its own endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiEndpoint {
    /// The advertised address and the port the server listens on.
    pub address: SocketAddr,
}

fn key(resource: &str, namespace: &str, name: &str) -> Key {
    Key {
        resource: resource.into(),
        namespace: namespace.into(),
        name: name.into(),
    }
}

fn port_json(endpoint: ApiEndpoint) -> Value {
    json!({"name": "https", "port": endpoint.address.port(), "protocol": "TCP"})
}

/// The Service as kube-apiserver writes it (before defaults).
fn desired_service(ranges: &Ranges, endpoint: ApiEndpoint) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"component": "apiserver", "provider": "kubernetes"}},
        "spec": {
            "type": "ClusterIP",
            "clusterIP": ranges.first_service_ip().to_string(),
            "ports": [{"name": "https", "port": 443, "protocol": "TCP",
                       "targetPort": endpoint.address.port()}],
            "sessionAffinity": "None",
        },
    })
}

/// The Endpoints object kube-apiserver's endpoint reconciler writes.
pub fn desired_endpoints(endpoint: ApiEndpoint) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": NAME, "namespace": NAMESPACE, "labels": {SKIP_MIRROR_LABEL: "true"}},
        "subsets": [{"addresses": [{"ip": endpoint.address.ip().to_string()}],
                     "ports": [port_json(endpoint)]}],
    })
}

/// The EndpointSlice kube-apiserver writes beside its Endpoints.
pub fn desired_slice(endpoint: ApiEndpoint) -> Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {super::endpoints::SERVICE_NAME_LABEL: NAME}},
        "addressType": if endpoint.address.is_ipv4() { "IPv4" } else { "IPv6" },
        "endpoints": [{"addresses": [endpoint.address.ip().to_string()], "conditions": {"ready": true}}],
        "ports": [port_json(endpoint)],
    })
}

/// Whether the stored Service still has what the reconciler owns: type, ports, no selector,
/// its two labels.
fn service_intact(cur: &Value, want: &Value) -> bool {
    let labels_kept = ["component", "provider"]
        .iter()
        .all(|l| cur["metadata"]["labels"][l] == want["metadata"]["labels"][l]);
    let ports = |v: &Value| -> Vec<Value> {
        v["spec"]["ports"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|p| {
                json!([
                    p["name"],
                    p["port"],
                    p["protocol"],
                    p["targetPort"],
                    p["nodePort"]
                ])
            })
            .collect()
    };
    labels_kept
        && cur["spec"]["type"] == want["spec"]["type"]
        && cur["spec"].get("selector").is_none()
        && ports(cur) == ports(want)
}

/// Creates what is missing of the system namespaces.
fn ensure_namespaces(store: &Store, ranges: &Ranges) -> Result<(), BootstrapError> {
    let res = resources::find("", "v1", "namespaces").expect("namespaces are served");
    for ns in SYSTEM_NAMESPACES {
        let k = key("namespaces", "", ns);
        if store.get(&k).is_some() {
            continue;
        }
        let mut obj = json!({"metadata": {"name": ns}});
        admission::on_create(res, "", &mut obj, store, ranges)
            .map_err(|e| BootstrapError::Admission("a system namespace", e))?;
        match store.create(k, obj) {
            Ok(_) | Err(StoreError::AlreadyExists) => {}
            Err(e) => return Err(BootstrapError::Store("a system namespace", e)),
        }
    }
    Ok(())
}

/// Creates the Service, or puts back what was changed of it.
fn ensure_service(
    store: &Store,
    ranges: &Ranges,
    endpoint: ApiEndpoint,
) -> Result<(), BootstrapError> {
    let res = resources::find("", "v1", "services").expect("services are served");
    let want = desired_service(ranges, endpoint);
    let k = key("services", NAMESPACE, NAME);
    let _admission = store.admission_lock();
    match store.get(&k) {
        None => {
            let mut obj = want;
            admission::on_create(res, NAMESPACE, &mut obj, store, ranges)
                .map_err(|e| BootstrapError::Admission("the kubernetes Service", e))?;
            store
                .create(k, obj)
                .map_err(|e| BootstrapError::Store("the kubernetes Service", e))?;
            tracing::info!(cluster_ip = %ranges.first_service_ip(), "created the kubernetes Service");
        }
        Some(cur) if !service_intact(&cur, &want) => {
            let mut obj = (*cur).clone();
            obj["spec"]["type"] = want["spec"]["type"].clone();
            obj["spec"]["ports"] = want["spec"]["ports"].clone();
            if let Some(spec) = obj["spec"].as_object_mut() {
                spec.remove("selector");
            }
            for l in ["component", "provider"] {
                obj["metadata"]["labels"][l] = want["metadata"]["labels"][l].clone();
            }
            admission::on_update(res, &cur, &mut obj, false, store, ranges)
                .map_err(|e| BootstrapError::Admission("the kubernetes Service", e))?;
            store
                .update(k, obj, None)
                .map_err(|e| BootstrapError::Store("the kubernetes Service", e))?;
            tracing::info!("put the kubernetes Service back as it must be");
        }
        Some(_) => {}
    }
    Ok(())
}

/// One pass: namespaces, the Service, its Endpoints and EndpointSlice.
pub fn reconcile(
    store: &Store,
    ranges: &Ranges,
    endpoint: ApiEndpoint,
) -> Result<(), BootstrapError> {
    ensure_namespaces(store, ranges)?;
    ensure_service(store, ranges, endpoint)?;
    super::apply_owned(
        store,
        key("endpoints", NAMESPACE, NAME),
        desired_endpoints(endpoint),
    )
    .map_err(|e| BootstrapError::Store("the kubernetes Endpoints", e))?;
    super::apply_owned(
        store,
        key("endpointslices", NAMESPACE, NAME),
        desired_slice(endpoint),
    )
    .map_err(|e| BootstrapError::Store("the kubernetes EndpointSlice", e))?;
    Ok(())
}

/// Whether a change to `key` may have undone what [`reconcile`] keeps.
fn concerns(key: &Key) -> bool {
    match key.resource.as_str() {
        "namespaces" => SYSTEM_NAMESPACES.contains(&key.name.as_str()),
        "services" | "endpoints" | "endpointslices" => {
            key.namespace == NAMESPACE && key.name == NAME
        }
        _ => false,
    }
}

/// Runs until the store closes: on every change to what it keeps, and every ten seconds.
pub async fn run(store: Store, ranges: Ranges, endpoint: ApiEndpoint) {
    let mut rx = store.subscribe();
    let mut resync = tokio::time::interval(RESYNC);
    loop {
        if let Err(e) = reconcile(&store, &ranges, endpoint) {
            tracing::warn!(error = %e, "keeping the kubernetes Service failed");
        }
        if !super::next_pass(&mut rx, &mut resync, concerns).await {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint() -> ApiEndpoint {
        ApiEndpoint {
            address: "198.18.0.1:6443".parse().unwrap(),
        }
    }

    fn get(store: &Store, resource: &str) -> Value {
        (*store.get(&key(resource, NAMESPACE, NAME)).unwrap()).clone()
    }

    #[test]
    fn a_fresh_store_gets_the_kubernetes_service_endpoints_and_slice() {
        let store = Store::in_memory();
        reconcile(&store, &Ranges::default(), endpoint()).unwrap();
        let svc = get(&store, "services");
        assert_eq!(svc["spec"]["clusterIP"], "10.96.0.1");
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}])
        );
        assert_eq!(svc["metadata"]["labels"]["component"], "apiserver");
        assert!(svc["spec"].get("selector").is_none());
        let eps = get(&store, "endpoints");
        assert_eq!(eps["subsets"][0]["addresses"][0]["ip"], "198.18.0.1");
        assert_eq!(eps["subsets"][0]["ports"][0]["port"], 6443);
        let slice = get(&store, "endpointslices");
        assert_eq!(slice["endpoints"][0]["addresses"][0], "198.18.0.1");
        assert_eq!(slice["metadata"]["generation"], 1);
        for ns in SYSTEM_NAMESPACES {
            assert!(store.get(&key("namespaces", "", ns)).is_some(), "{ns}");
        }
    }

    #[test]
    fn changes_are_put_back_and_a_second_pass_writes_nothing() {
        let store = Store::in_memory();
        reconcile(&store, &Ranges::default(), endpoint()).unwrap();
        let k = key("services", NAMESPACE, NAME);
        store
            .modify(&k, |s| {
                let mut s = s.clone();
                s["spec"]["ports"][0]["port"] = json!(8443);
                s["spec"]["selector"] = json!({"app": "x"});
                Some(s)
            })
            .unwrap();
        store.delete(key("endpoints", NAMESPACE, NAME)).unwrap();
        reconcile(&store, &Ranges::default(), endpoint()).unwrap();
        let svc = get(&store, "services");
        assert_eq!(svc["spec"]["ports"][0]["port"], 443);
        assert!(svc["spec"].get("selector").is_none());
        assert!(store.get(&key("endpoints", NAMESPACE, NAME)).is_some());
        let rv = store.rv();
        reconcile(&store, &Ranges::default(), endpoint()).unwrap();
        assert_eq!(store.rv(), rv, "nothing to fix, nothing written");
    }
}
