//! The EndpointSlice and Endpoints controller: for each Service with a selector, the pods it
//! selects become endpoints, with `targetPort` resolved per pod (a number, or the name of one
//! of the pod's container ports). Pods whose named port resolves differently land in different
//! slices. Ready = Ready condition True and not terminating; terminating pods stay listed with
//! `ready: false, serving: <Ready>, terminating: true`. The Endpoints object, as Kubernetes'
//! endpoints controller writes it, leaves terminating pods out; `publishNotReadyAddresses`
//! makes every endpoint ready in both. Slices hold at most 100 endpoints and change as little as
//! they can ([`slices`]); the Endpoints object at most 1000 addresses ([`legacy`]).
//!
//! The work a change causes is proportional to the change, not to the namespace: a Service write
//! reconciles that Service ([`reconcile_service`]), a pod write the Services whose selector
//! matched its labels before or after it; slice and Endpoints writes cause none (so the Services
//! without a selector, whose slices clients write, cost nothing). Every namespace is reconciled
//! whole ([`reconcile_namespace`]) at start, every 30 s and after missed changes: that also puts
//! back what someone else changed in a slice this controller manages.
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::selectors::{LabelSelector, Requirement};

pub mod legacy;
pub mod slices;

use crate::store::{Event, Key, RecvError, Store, TryRecvError};
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

/// Brings the slices and Endpoints of one selecting Service to what `pods` and `zones` make of
/// it; `existing` are the slices this controller manages for it, `taken` at least the slice
/// names beginning with its [`slices::name_prefix`].
fn apply_service(
    store: &Store,
    svc: &Value,
    pods: &[Arc<Value>],
    zones: &Zones,
    existing: &[&Value],
    taken: &mut BTreeSet<String>,
) {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let name = svc["metadata"]["name"].as_str().unwrap_or("");
    let want = desired(svc, pods, zones);
    let plan = slices::plan(
        svc,
        &want.slices,
        existing,
        &want.placeholder,
        taken,
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

/// Brings the slices and Endpoints of namespace `ns` to their desired state; the Services with
/// a selector found there.
pub fn reconcile_namespace(store: &Store, ns: &str) -> BTreeMap<String, LabelSelector> {
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
    let mut served = BTreeMap::new();
    for svc in &services {
        let Some(sel) = selector(svc) else { continue };
        let name = svc["metadata"]["name"].as_str().unwrap_or("");
        served.insert(name.to_string(), sel);
        let existing: Vec<&Value> = ours
            .iter()
            .copied()
            .filter(|s| labelled(s, SERVICE_NAME_LABEL, name))
            .collect();
        apply_service(store, svc, &pods, &zones, &existing, &mut taken);
    }
    // Slices and Endpoints of Services that are gone or lost their selector.
    for s in &ours {
        let service = s
            .pointer("/metadata/labels")
            .and_then(|l| l.get(SERVICE_NAME_LABEL))
            .and_then(Value::as_str)
            .unwrap_or("");
        if !served.contains_key(service) {
            let n = s["metadata"]["name"].as_str().unwrap_or("");
            let _ = store.delete(key("endpointslices", ns, n));
        }
    }
    for e in store.list("endpoints", Some(ns)).0 {
        let n = e["metadata"]["name"].as_str().unwrap_or("");
        if labelled(&e, SERVICE_NAME_LABEL, n) && !served.contains_key(n) {
            let _ = store.delete(key("endpoints", ns, n));
        }
    }
    served
}

/// Brings the slices and Endpoints of Service `ns/name` to their desired state — it may be gone
/// or have no selector, then what this controller wrote for it goes — at the cost of that
/// Service and its namespace's pods, however many other Services and slices there are. It finds
/// the slices it made by their names ([`slices::name_prefix`]); one it manages under another
/// name waits for the next [`reconcile_namespace`]. The Service's selector, if it has one.
pub fn reconcile_service(store: &Store, ns: &str, name: &str) -> Option<LabelSelector> {
    let span = tracing::info_span!("endpoints", namespace = ns, service = name);
    let _enter = span.enter();
    let svc = store.get(&key("services", ns, name));
    let sel = svc.as_deref().and_then(selector);
    let candidates = store.list_prefixed("endpointslices", ns, &slices::name_prefix(name));
    let existing: Vec<&Value> = candidates
        .iter()
        .map(|s| s.as_ref())
        .filter(|s| {
            labelled(s, MANAGED_BY_LABEL, MANAGED_BY) && labelled(s, SERVICE_NAME_LABEL, name)
        })
        .collect();
    match (&svc, &sel) {
        (Some(svc), Some(_)) => {
            let mut taken: BTreeSet<String> = candidates
                .iter()
                .filter_map(|s| s["metadata"]["name"].as_str().map(str::to_string))
                .collect();
            let (pods, _) = store.list("pods", Some(ns));
            apply_service(store, svc, &pods, &zones(store), &existing, &mut taken);
        }
        _ => {
            for s in existing {
                let n = s["metadata"]["name"].as_str().unwrap_or("");
                let _ = store.delete(key("endpointslices", ns, n));
            }
            let endpoints = key("endpoints", ns, name);
            if store
                .get(&endpoints)
                .is_some_and(|e| labelled(&e, SERVICE_NAME_LABEL, name))
            {
                let _ = store.delete(endpoints);
            }
        }
    }
    sel
}

/// What is left to reconcile, and what decides it.
#[derive(Debug, Default)]
struct Work {
    /// Namespaces to reconcile whole (at start, on the resync tick, after missed writes, when
    /// the nodes' zones changed).
    namespaces: BTreeSet<String>,
    /// Single Services to reconcile, `(namespace, name)`.
    services: BTreeSet<(String, String)>,
    /// The Services with a selector, per namespace: those a pod change may concern.
    selecting: BTreeMap<String, BTreeMap<String, LabelSelector>>,
}

impl Work {
    /// Notes what the change `e` concerns: a Service write that Service; a pod write the Services
    /// of its namespace whose selector matches its labels before or after. Slices and Endpoints
    /// concern nothing (the resync puts back what someone else changed).
    fn note(&mut self, e: &Event) {
        let ns = &e.key.namespace;
        match e.key.resource.as_str() {
            "services" => {
                self.services.insert((ns.clone(), e.key.name.clone()));
            }
            "pods" => {
                let Some(selecting) = self.selecting.get(ns) else {
                    return;
                };
                let empty = serde_json::Map::new();
                let labels = |o: &Value| -> serde_json::Map<String, Value> {
                    o.pointer("/metadata/labels")
                        .and_then(Value::as_object)
                        .unwrap_or(&empty)
                        .clone()
                };
                let sets: Vec<_> = [Some(&e.object), e.prev.as_ref()]
                    .into_iter()
                    .flatten()
                    .map(|o| labels(o))
                    .collect();
                for (name, sel) in selecting {
                    if sets.iter().any(|l| sel.matches(l)) {
                        self.services.insert((ns.clone(), name.clone()));
                    }
                }
            }
            _ => {}
        }
    }

    /// Reconciles everything noted, then forgets it.
    fn drain(&mut self, store: &Store) {
        let whole = std::mem::take(&mut self.namespaces);
        for ns in &whole {
            let served = reconcile_namespace(store, ns);
            self.selecting.insert(ns.clone(), served);
        }
        let services = std::mem::take(&mut self.services);
        // A namespace reconciled whole just now needs none of its Services done again.
        for (ns, name) in services.into_iter().filter(|(ns, _)| !whole.contains(ns)) {
            let sel = reconcile_service(store, &ns, &name);
            let selecting = self.selecting.entry(ns).or_default();
            match sel {
                Some(sel) => selecting.insert(name, sel),
                None => selecting.remove(&name),
            };
        }
    }

    /// Marks every namespace for a whole reconcile.
    fn everything(&mut self, store: &Store) {
        self.namespaces.extend(
            store
                .list("namespaces", None)
                .0
                .iter()
                .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string)),
        );
    }
}

/// Runs until the store closes: reacts to pod and service changes within ~20 ms, reconciling
/// only the Services a change concerns, and every namespace whole every 30 s.
pub async fn run(store: Store) {
    let mut rx = store.subscribe();
    let mut work = Work::default();
    work.everything(&store);
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    // The first tick is now, and the namespaces are already marked.
    resync.tick().await;
    let mut known_zones = zones(&store);
    loop {
        work.drain(&store);
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.key.resource == "pods" || e.key.resource == "services" => {
                    work.note(&e);
                    // Let a burst land before recomputing.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    loop {
                        match rx.try_recv() {
                            Ok(e) => work.note(&e),
                            Err(TryRecvError::Failed(RecvError::Lagged)) => {
                                work.everything(&store);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                }
                Ok(e) if e.key.resource == "nodes" => {
                    // Heartbeats are frequent: only a change of zones concerns the slices.
                    let now = zones(&store);
                    if now != known_zones {
                        known_zones = now;
                        work.everything(&store);
                    }
                }
                Ok(_) => {}
                Err(RecvError::Lagged) => work.everything(&store),
                Err(RecvError::Closed) => return,
            },
            _ = resync.tick() => work.everything(&store),
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

    fn stored_service(name: &str, selector: Option<Value>) -> Value {
        let mut svc = json!({"metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": {"ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}});
        if let Some(sel) = selector {
            svc["spec"]["selector"] = sel;
        }
        svc
    }

    /// The slice a client (not this controller) writes for Service `service`.
    fn manual_slice(name: &str, service: &str) -> Value {
        json!({"metadata": {"name": name, "namespace": "default",
            "labels": {SERVICE_NAME_LABEL: service}},
            "addressType": "IPv4", "endpoints": [{"addresses": ["10.244.9.9"]}]})
    }

    /// Two echo pods, Services `echo` (selecting them), `other` (selecting none) and `filler`
    /// (no selector) with its hand-written slice.
    fn namespace() -> Store {
        let s = Store::in_memory();
        for p in [
            pod("a", "10.244.1.2", true, "http", 8080),
            pod("b", "10.244.1.3", true, "http", 8080),
        ] {
            let name = p["metadata"]["name"].as_str().unwrap().to_string();
            s.create(key("pods", "default", &name), (*p).clone())
                .unwrap();
        }
        s.create(
            key("services", "default", "echo"),
            stored_service("echo", Some(json!({"app": "echo"}))),
        )
        .unwrap();
        s.create(
            key("services", "default", "other"),
            stored_service("other", Some(json!({"app": "other"}))),
        )
        .unwrap();
        s.create(
            key("services", "default", "filler"),
            stored_service("filler", None),
        )
        .unwrap();
        s.create(
            key("endpointslices", "default", "filler-manual"),
            manual_slice("filler-manual", "filler"),
        )
        .unwrap();
        s
    }

    /// The slices this controller manages for `service`.
    fn managed(s: &Store, service: &str) -> Vec<Arc<Value>> {
        s.list("endpointslices", Some("default"))
            .0
            .into_iter()
            .filter(|v| {
                labelled(v, MANAGED_BY_LABEL, MANAGED_BY)
                    && labelled(v, SERVICE_NAME_LABEL, service)
            })
            .collect()
    }

    #[test]
    fn reconciling_each_service_leaves_the_namespace_as_a_whole_pass_would() {
        let s = namespace();
        assert_eq!(
            reconcile_service(&s, "default", "echo"),
            Some(LabelSelector(vec![Requirement::Eq(
                "app".into(),
                "echo".into()
            )]))
        );
        assert!(reconcile_service(&s, "default", "other").is_some());
        let echo = managed(&s, "echo");
        assert_eq!(echo.len(), 1);
        assert_eq!(echo[0]["endpoints"].as_array().unwrap().len(), 2);
        assert_eq!(managed(&s, "other").len(), 1, "a placeholder slice");
        assert!(s.get(&key("endpoints", "default", "echo")).is_some());
        let rv = s.rv();
        let served = reconcile_namespace(&s, "default");
        assert_eq!(s.rv(), rv, "the whole pass finds nothing left to do");
        assert_eq!(
            served.keys().map(String::as_str).collect::<Vec<_>>(),
            ["echo", "other"]
        );
    }

    #[test]
    fn a_service_without_a_selector_gets_no_writes_and_its_slices_are_left_alone() {
        let s = namespace();
        let rv = s.rv();
        assert_eq!(reconcile_service(&s, "default", "filler"), None);
        assert_eq!(reconcile_service(&s, "default", "gone"), None);
        assert_eq!(s.rv(), rv);
        assert!(s
            .get(&key("endpointslices", "default", "filler-manual"))
            .is_some());
    }

    #[test]
    fn a_service_that_loses_its_selector_loses_what_the_controller_wrote_for_it() {
        let s = namespace();
        reconcile_service(&s, "default", "echo");
        s.create(
            key("endpointslices", "default", "echo-manual"),
            manual_slice("echo-manual", "echo"),
        )
        .unwrap();
        s.update(
            key("services", "default", "echo"),
            stored_service("echo", None),
            None,
        )
        .unwrap();
        assert_eq!(reconcile_service(&s, "default", "echo"), None);
        assert!(managed(&s, "echo").is_empty());
        assert!(s.get(&key("endpoints", "default", "echo")).is_none());
        assert!(
            s.get(&key("endpointslices", "default", "echo-manual"))
                .is_some(),
            "a slice someone else wrote stays"
        );
    }

    #[test]
    fn a_pod_change_concerns_only_the_services_selecting_it_before_or_after() {
        let sel = |app: &str| LabelSelector(vec![Requirement::Eq("app".into(), app.into())]);
        let mut work = Work::default();
        work.selecting.insert(
            "default".into(),
            [("a", sel("a")), ("b", sel("b")), ("c", sel("c"))]
                .into_iter()
                .map(|(n, s)| (n.to_string(), s))
                .collect(),
        );
        let labelled_pod = |app: &str| {
            Arc::new(
                json!({"metadata": {"name": "p", "namespace": "default", "labels": {"app": app}}}),
            )
        };
        let event = |resource: &str, object: Arc<Value>, prev: Option<Arc<Value>>| Event {
            rv: 1,
            kind: crate::store::EventType::Modified,
            key: key(resource, "default", "p"),
            object,
            prev,
            size: 0,
        };
        work.note(&event("pods", labelled_pod("b"), Some(labelled_pod("a"))));
        let noted =
            |w: &Work| -> Vec<String> { w.services.iter().map(|(_, n)| n.clone()).collect() };
        assert_eq!(noted(&work), ["a", "b"]);
        work.services.clear();
        work.note(&event("endpointslices", labelled_pod("c"), None));
        work.note(&event("endpoints", labelled_pod("c"), None));
        assert!(
            work.services.is_empty(),
            "slices and Endpoints concern no Service"
        );
        work.note(&event("services", labelled_pod("x"), None));
        assert_eq!(noted(&work), ["p"], "a Service write concerns that Service");
    }
}
