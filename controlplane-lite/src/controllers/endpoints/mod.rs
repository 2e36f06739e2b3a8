//! The EndpointSlice and Endpoints controller: for each Service with a selector, the pods it
//! selects become endpoints, with `targetPort` resolved per pod (a number, or the name of one
//! of the pod's container ports). Pods whose named port resolves differently land in different
//! slices. Ready = Ready condition True and not terminating; terminating pods stay listed with
//! `ready: false, serving: <Ready>, terminating: true`. The Endpoints object, as Kubernetes'
//! endpoints controller writes it, leaves terminating pods out; `publishNotReadyAddresses`
//! makes every endpoint ready in both. Slices hold at most 100 endpoints and change as little as
//! they can ([`slices`]); the Endpoints object at most 1000 addresses ([`legacy`]).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::selectors::{LabelSelector, Requirement};

pub mod legacy;
pub mod slices;

use crate::store::{Key, Store};
use legacy::Subset;

/// Label naming the Service a slice belongs to.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
/// Label naming the controller managing a slice.
pub const MANAGED_BY_LABEL: &str = "endpointslice.kubernetes.io/managed-by";
/// Our value of [`MANAGED_BY_LABEL`], as kube-controller-manager's.
pub const MANAGED_BY: &str = "endpointslice-controller.k8s.io";

/// (name, port, protocol) of each service port, resolved for one pod.
pub type PortSet = Vec<(String, i64, String)>;

fn pod_ready(pod: &Value) -> bool {
    pod.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The service's ports resolved against `pod`; ports whose named target the pod lacks are left out.
fn resolve(svc: &Value, pod: &Value) -> PortSet {
    let mut out = Vec::new();
    for p in svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let name = p["name"].as_str().unwrap_or("").to_string();
        let proto = p["protocol"].as_str().unwrap_or("TCP").to_string();
        let port = match &p["targetPort"] {
            Value::Number(n) => n.as_i64(),
            Value::String(s) => s.parse::<i64>().ok().or_else(|| {
                pod.pointer("/spec/containers")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .flat_map(|c| c["ports"].as_array().cloned().unwrap_or_default())
                    .find(|cp| {
                        cp["name"].as_str() == Some(s.as_str())
                            && cp["protocol"].as_str().unwrap_or("TCP") == proto
                    })
                    .and_then(|cp| cp["containerPort"].as_i64())
            }),
            _ => p["port"].as_i64(),
        };
        if let Some(port) = port {
            out.push((name, port, proto));
        }
    }
    out
}

fn selector(svc: &Value) -> Option<LabelSelector> {
    let sel = svc.pointer("/spec/selector")?.as_object()?;
    if sel.is_empty() {
        return None;
    }
    Some(LabelSelector(
        sel.iter()
            .map(|(k, v)| Requirement::Eq(k.clone(), v.as_str().unwrap_or("").to_string()))
            .collect(),
    ))
}

/// `ports` as EndpointSlice and Endpoints ports.
fn port_json(ports: &PortSet) -> Vec<Value> {
    ports
        .iter()
        .map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr}))
        .collect()
}

/// What a Service's pods make of it.
#[derive(Debug)]
pub struct Desired {
    /// Slice endpoints per resolved port set, in pod-name order.
    pub slices: BTreeMap<PortSet, Vec<Value>>,
    /// The ports of the placeholder slice a Service without endpoints keeps.
    pub placeholder: PortSet,
    /// The Endpoints object.
    pub endpoints: Value,
}

/// Label naming a node's zone.
pub const ZONE_LABEL: &str = "topology.kubernetes.io/zone";

/// Node name → zone, for the nodes that have one.
pub type Zones = BTreeMap<String, String>;

/// The zones of the stored nodes.
pub fn zones(store: &Store) -> Zones {
    store
        .list("nodes", None)
        .0
        .iter()
        .filter_map(|n| {
            Some((
                n["metadata"]["name"].as_str()?.to_string(),
                n.pointer("/metadata/labels")?
                    .get(ZONE_LABEL)?
                    .as_str()?
                    .to_string(),
            ))
        })
        .collect()
}

/// Each endpoint's `zone`, and with `trafficDistribution: PreferClose` its hint for its own
/// zone, as kube-controller-manager writes them — hints only when every endpoint's zone is
/// known (a consumer ignores hints unless all endpoints have them).
fn zone_endpoints(svc: &Value, endpoints: &mut [Value], zones: &Zones) {
    let zone_of = |ep: &Value| ep["nodeName"].as_str().and_then(|n| zones.get(n)).cloned();
    let all_known = endpoints.iter().all(|ep| zone_of(ep).is_some());
    let prefer_close = svc.pointer("/spec/trafficDistribution") == Some(&json!("PreferClose"));
    for ep in endpoints.iter_mut() {
        if let Some(zone) = zone_of(ep) {
            ep["zone"] = json!(zone);
            if prefer_close && all_known {
                ep["hints"] = json!({"forZones": [{"name": zone}]});
            }
        }
    }
}

/// The endpoints `svc` should have, given the pods of its namespace and the nodes' zones.
pub fn desired(svc: &Value, pods: &[Arc<Value>], zones: &Zones) -> Desired {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let mut groups: BTreeMap<PortSet, Vec<Value>> = BTreeMap::new();
    let mut subsets: BTreeMap<PortSet, Subset> = BTreeMap::new();
    if let Some(sel) = selector(svc) {
        let empty = serde_json::Map::new();
        let mut selected: Vec<&Arc<Value>> = pods
            .iter()
            .filter(|p| p["metadata"]["namespace"] == ns)
            .filter(|p| {
                sel.matches(
                    p.pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .unwrap_or(&empty),
                )
            })
            .filter(|p| {
                p.pointer("/status/podIP")
                    .and_then(Value::as_str)
                    .is_some_and(|ip| !ip.is_empty())
            })
            .filter(|p| {
                !matches!(
                    p.pointer("/status/phase").and_then(Value::as_str),
                    Some("Succeeded") | Some("Failed")
                )
            })
            .collect();
        selected.sort_by_key(|p| p["metadata"]["name"].as_str().unwrap_or("").to_string());
        let publish = svc.pointer("/spec/publishNotReadyAddresses") == Some(&json!(true));
        for pod in selected {
            let ports = resolve(svc, pod);
            let terminating = pod.pointer("/metadata/deletionTimestamp").is_some();
            let serving = pod_ready(pod);
            let ready = publish || (serving && !terminating);
            let ip = pod["status"]["podIP"].clone();
            let target = json!({"kind": "Pod", "name": pod["metadata"]["name"], "namespace": ns, "uid": pod["metadata"]["uid"]});
            let mut ep = json!({"addresses": [ip], "conditions": {"ready": ready, "serving": serving, "terminating": terminating}, "targetRef": target});
            let mut addr = json!({"ip": ip, "targetRef": target});
            if let Some(node) = pod.pointer("/spec/nodeName").and_then(Value::as_str) {
                ep["nodeName"] = json!(node);
                addr["nodeName"] = json!(node);
            }
            groups.entry(ports.clone()).or_default().push(ep);
            if terminating && !publish {
                continue;
            }
            let s = subsets.entry(ports).or_default();
            if ready {
                s.ready.push(addr);
            } else {
                s.not_ready.push(addr);
            }
        }
    }
    for eps in groups.values_mut() {
        zone_endpoints(svc, eps, zones);
    }
    Desired {
        slices: groups,
        placeholder: resolve(svc, &json!({})),
        endpoints: legacy::endpoints(ns, name, subsets),
    }
}

fn key(resource: &str, ns: &str, name: &str) -> Key {
    Key {
        resource: resource.into(),
        namespace: ns.into(),
        name: name.into(),
    }
}

/// Whether `labels` of a stored object say `key: value`.
fn labelled(obj: &Value, key: &str, value: &str) -> bool {
    obj.pointer("/metadata/labels")
        .and_then(|l| l.get(key))
        .and_then(Value::as_str)
        == Some(value)
}

/// Brings the slices and Endpoints of namespace `ns` to their desired state.
pub fn reconcile_namespace(store: &Store, ns: &str) {
    let span = tracing::info_span!("endpoints", namespace = ns);
    let _enter = span.enter();
    let zones = zones(store);
    let (services, _) = store.list("services", Some(ns));
    let (pods, _) = store.list("pods", Some(ns));
    let (stored_slices, _) = store.list("endpointslices", Some(ns));
    let ours: Vec<&Value> = stored_slices
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| labelled(s, MANAGED_BY_LABEL, MANAGED_BY))
        .collect();
    let mut taken: BTreeSet<String> = stored_slices
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let mut served = BTreeSet::new();
    for svc in services.iter().filter(|s| selector(s).is_some()) {
        let name = svc["metadata"]["name"].as_str().unwrap_or("");
        served.insert(name.to_string());
        let want = desired(svc, &pods, &zones);
        let existing: Vec<&Value> = ours
            .iter()
            .copied()
            .filter(|s| labelled(s, SERVICE_NAME_LABEL, name))
            .collect();
        let plan = slices::plan(
            svc,
            &want.slices,
            &existing,
            &want.placeholder,
            &mut taken,
            slices::MAX_ENDPOINTS_PER_SLICE,
        );
        for s in plan.write {
            let n = s["metadata"]["name"].as_str().unwrap_or("").to_string();
            if let Err(e) = super::apply_owned(store, key("endpointslices", ns, &n), s) {
                tracing::warn!(error = %e, slice = %n, "writing an EndpointSlice failed");
            }
        }
        for n in plan.delete {
            let _ = store.delete(key("endpointslices", ns, &n));
        }
        if let Err(e) = super::apply_owned(store, key("endpoints", ns, name), want.endpoints) {
            tracing::warn!(error = %e, endpoints = %name, "writing Endpoints failed");
        }
    }
    // Slices and Endpoints of Services that are gone or lost their selector.
    for s in &ours {
        let service = s
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !served.contains(service) {
            let n = s["metadata"]["name"].as_str().unwrap_or("");
            let _ = store.delete(key("endpointslices", ns, n));
        }
    }
    for e in store.list("endpoints", Some(ns)).0 {
        let n = e["metadata"]["name"].as_str().unwrap_or("");
        if labelled(&e, SERVICE_NAME_LABEL, n) && !served.contains(n) {
            let _ = store.delete(key("endpoints", ns, n));
        }
    }
}

/// Runs until the store closes: reacts to pod and service changes within ~20 ms.
pub async fn run(store: Store) {
    let mut rx = store.subscribe();
    let mut dirty: BTreeSet<String> = store
        .list("namespaces", None)
        .0
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    let mut known_zones = zones(&store);
    loop {
        for ns in std::mem::take(&mut dirty) {
            reconcile_namespace(&store, &ns);
        }
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.key.resource == "pods" || e.key.resource == "services" => {
                    dirty.insert(e.key.namespace);
                    // Let a burst land before recomputing.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    while let Ok(e) = rx.try_recv() {
                        if e.key.resource == "pods" || e.key.resource == "services" {
                            dirty.insert(e.key.namespace);
                        }
                    }
                }
                Ok(e) if e.key.resource == "nodes" => {
                    // Heartbeats are frequent: only a change of zones concerns the slices.
                    let now = zones(&store);
                    if now != known_zones {
                        known_zones = now;
                        dirty.extend(store.list("namespaces", None).0.iter().filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string)));
                    }
                }
                Ok(_) => {}
                Err(crate::store::RecvError::Lagged) => {
                    dirty.extend(store.list("namespaces", None).0.iter().filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string)));
                }
                Err(crate::store::RecvError::Closed) => return,
            },
            _ = resync.tick() => {
                dirty.extend(store.list("namespaces", None).0.iter().filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string)));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, ip: &str, ready: bool, port_name: &str, port: i64) -> Arc<Value> {
        Arc::new(json!({
            "metadata": {"name": name, "namespace": "default", "uid": name, "labels": {"app": "echo"}},
            "spec": {"nodeName": "n1", "containers": [{"name": "c", "ports": [{"name": port_name, "containerPort": port, "protocol": "TCP"}]}]},
            "status": {"podIP": ip, "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
        }))
    }

    /// The slices (planned from none) and the Endpoints object for `pods`.
    fn fresh(svc: &Value, pods: &[Arc<Value>]) -> (Vec<Value>, Value) {
        let d = desired(svc, pods, &Zones::new());
        let plan = slices::plan(
            svc,
            &d.slices,
            &[],
            &d.placeholder,
            &mut BTreeSet::new(),
            slices::MAX_ENDPOINTS_PER_SLICE,
        );
        (plan.write, d.endpoints)
    }

    fn svc(target: Value) -> Value {
        json!({"metadata": {"name": "echo", "namespace": "default", "uid": "s1"},
               "spec": {"selector": {"app": "echo"}, "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": target}]}})
    }

    #[test]
    fn named_target_ports_resolve_per_pod_and_split_slices() {
        let pods = [
            pod("a", "10.244.1.2", true, "http", 8080),
            pod("b", "10.244.1.3", true, "http", 9090),
            pod("c", "10.244.1.4", false, "http", 8080),
        ];
        let (slices, eps) = fresh(&svc(json!("http")), &pods);
        assert_eq!(slices.len(), 2, "8080 and 9090 pods in different slices");
        let s8080 = slices
            .iter()
            .find(|s| s["ports"][0]["port"] == 8080)
            .unwrap();
        assert_eq!(s8080["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(s8080["metadata"]["labels"][SERVICE_NAME_LABEL], "echo");
        let ready: Vec<bool> = s8080["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["conditions"]["ready"].as_bool().unwrap())
            .collect();
        assert_eq!(ready, [true, false]);
        let subset = eps["subsets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["ports"][0]["port"] == 8080)
            .unwrap();
        assert_eq!(subset["addresses"].as_array().unwrap().len(), 1);
        assert_eq!(subset["notReadyAddresses"].as_array().unwrap().len(), 1);
    }

    #[test]
    fn numeric_targets_and_terminating_pods() {
        let mut p = (*pod("a", "10.244.1.2", true, "http", 8080)).clone();
        p["metadata"]["deletionTimestamp"] = json!("2026-01-01T00:00:00Z");
        let (slices, _) = fresh(&svc(json!(8080)), &[Arc::new(p)]);
        let c = &slices[0]["endpoints"][0]["conditions"];
        assert_eq!(
            (
                c["ready"].as_bool(),
                c["serving"].as_bool(),
                c["terminating"].as_bool()
            ),
            (Some(false), Some(true), Some(true))
        );
        assert_eq!(slices[0]["ports"][0]["port"], 8080);
    }

    #[test]
    fn pods_without_ips_are_left_out_and_a_placeholder_slice_remains() {
        let pods = [pod("a", "", true, "http", 8080)];
        let (slices, eps) = fresh(&svc(json!(8080)), &pods);
        assert_eq!(slices.len(), 1);
        assert!(slices[0]["endpoints"].as_array().unwrap().is_empty());
        assert_eq!(slices[0]["ports"][0]["port"], 8080);
        assert!(slices[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("echo-"));
        assert!(eps.get("subsets").is_none());
    }

    #[test]
    fn prefer_close_hints_each_endpoint_for_its_zone_when_every_zone_is_known() {
        let mut service = svc(json!(8080));
        service["spec"]["trafficDistribution"] = json!("PreferClose");
        let pods = [pod("a", "10.244.1.5", true, "http", 8080)];
        let zones: Zones = [("n1".to_string(), "zone-a".to_string())].into();
        let d = desired(&service, &pods, &zones);
        let ep = &d.slices.values().next().unwrap()[0];
        assert_eq!(ep["zone"], "zone-a");
        assert_eq!(ep["hints"]["forZones"][0]["name"], "zone-a");
        let d = desired(&service, &pods, &Zones::new());
        let ep = &d.slices.values().next().unwrap()[0];
        assert!(ep.get("hints").is_none(), "no zone, no hint: {ep}");
        let plain = desired(&svc(json!(8080)), &pods, &zones);
        let ep = &plain.slices.values().next().unwrap()[0];
        assert_eq!(ep["zone"], "zone-a");
        assert!(ep.get("hints").is_none(), "hints only for PreferClose");
    }
}
