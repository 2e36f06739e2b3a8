//! Packing a Service's endpoints into EndpointSlices as Kubernetes' EndpointSlice controller
//! does (its reconciler's per-port-set steps), so that a change touches as few slices as it can.
//!
//! Invariant of a [`plan`]: every desired endpoint is in exactly one slice whose ports are its
//! port set; no slice holds more than `max` endpoints (100, kube-controller-manager's
//! `--max-endpoints-per-slice` default); a kept slice keeps its name and the order of the
//! endpoints it still holds; an unchanged slice is not rewritten; new slices get
//! `generateName`-style names `<service>-<5 random characters>`; a slice left empty is deleted,
//! except that a Service with no endpoints at all keeps one (empty) placeholder slice.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use super::{PortSet, MANAGED_BY, MANAGED_BY_LABEL, SERVICE_NAME_LABEL};

/// Endpoints per slice, as kube-controller-manager's default `--max-endpoints-per-slice`.
pub const MAX_ENDPOINTS_PER_SLICE: usize = 100;

/// What to write and delete to bring one Service's slices to the desired endpoints.
#[derive(Debug, Default)]
pub struct Plan {
    /// Slices to create or replace (full objects without server metadata).
    pub write: Vec<Value>,
    /// Names of slices to delete.
    pub delete: Vec<String>,
}

/// The characters `generateName` suffixes are made of (no vowels, no look-alikes).
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// `<service>-` cut to 58 characters, as kube-apiserver cuts a `generateName`: how the names of
/// the slices this controller makes for `service` begin.
pub fn name_prefix(service: &str) -> String {
    let mut prefix = format!("{service}-");
    prefix.truncate(58);
    prefix
}

/// A name `<name_prefix><5 random characters>` that is not in `taken`; it is added to `taken`.
fn new_name(service: &str, taken: &mut BTreeSet<String>) -> String {
    let prefix = name_prefix(service);
    loop {
        let suffix: String = (0..5)
            .map(|_| SUFFIX_ALPHABET[rand::random::<usize>() % SUFFIX_ALPHABET.len()] as char)
            .collect();
        let name = format!("{prefix}{suffix}");
        if taken.insert(name.clone()) {
            return name;
        }
    }
}

/// The port set a stored slice serves.
fn ports_of(slice: &Value) -> PortSet {
    slice["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p["name"].as_str().unwrap_or("").to_string(),
                p["port"].as_i64().unwrap_or(0),
                p["protocol"].as_str().unwrap_or("TCP").to_string(),
            )
        })
        .collect()
}

/// What identifies an endpoint across updates: the pod it stands for, else its addresses.
fn identity(ep: &Value) -> String {
    match ep.pointer("/targetRef/name").and_then(Value::as_str) {
        Some(pod) => format!("pod/{pod}"),
        None => format!("addr/{}", ep["addresses"]),
    }
}

/// One slice being planned.
struct Draft {
    name: String,
    endpoints: Vec<Value>,
    /// Differs from what is stored (or is new).
    changed: bool,
}

/// The stored slice's JSON with `endpoints` and `ports` of the plan.
fn render(svc: &Value, name: &str, ports: &PortSet, endpoints: Vec<Value>) -> Value {
    let ns = svc["metadata"]["namespace"].as_str().unwrap_or("");
    let svc_name = svc["metadata"]["name"].as_str().unwrap_or("");
    let owner = json!([{"apiVersion": "v1", "kind": "Service", "name": svc_name,
        "uid": svc["metadata"]["uid"], "controller": true, "blockOwnerDeletion": true}]);
    let prefix = name_prefix(svc_name);
    json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {
            "name": name, "generateName": prefix, "namespace": ns,
            "labels": {SERVICE_NAME_LABEL: svc_name, MANAGED_BY_LABEL: MANAGED_BY},
            "ownerReferences": owner,
        },
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": ports.iter()
            .map(|(n, p, pr)| json!({"name": n, "port": p, "protocol": pr}))
            .collect::<Vec<_>>(),
    })
}

/// Places the endpoints of one port set into `existing` slices (those with these ports) and
/// new ones, as the EndpointSlice controller's three steps do.
fn pack(
    existing: &[&Value],
    want: &[Value],
    max: usize,
    service: &str,
    taken: &mut BTreeSet<String>,
) -> Vec<Draft> {
    let wanted: BTreeMap<String, &Value> = want.iter().map(|e| (identity(e), e)).collect();
    let mut placed = BTreeSet::new();
    // 1. Existing slices drop endpoints no longer wanted and take the new form of changed ones.
    let mut drafts: Vec<Draft> = existing
        .iter()
        .map(|slice| {
            let stored: Vec<Value> = slice["endpoints"].as_array().cloned().unwrap_or_default();
            let mut endpoints = Vec::new();
            for ep in &stored {
                let id = identity(ep);
                if let Some(w) = wanted.get(&id).filter(|_| !placed.contains(&id)) {
                    endpoints.push((*w).clone());
                    placed.insert(id);
                }
            }
            Draft {
                name: slice["metadata"]["name"].as_str().unwrap_or("").to_string(),
                changed: endpoints != stored,
                endpoints,
            }
        })
        .collect();
    let mut rest: Vec<&Value> = want
        .iter()
        .filter(|e| !placed.contains(&identity(e)))
        .collect();
    rest.reverse();
    // 2. Slices being rewritten anyway are filled up first.
    for d in drafts.iter_mut().filter(|d| d.changed) {
        while d.endpoints.len() < max {
            match rest.pop() {
                Some(e) => d.endpoints.push(e.clone()),
                None => break,
            }
        }
    }
    // 3. What is left goes into the fullest unchanged slice it fits in whole, else new slices.
    while !rest.is_empty() {
        let fits = drafts
            .iter_mut()
            .filter(|d| !d.changed && d.endpoints.len() + rest.len() <= max)
            .max_by_key(|d| d.endpoints.len());
        let target = match fits {
            Some(d) => d,
            None => {
                drafts.push(Draft {
                    name: new_name(service, taken),
                    endpoints: Vec::new(),
                    changed: true,
                });
                drafts.last_mut().expect("just pushed")
            }
        };
        target.changed = true;
        while target.endpoints.len() < max {
            match rest.pop() {
                Some(e) => target.endpoints.push(e.clone()),
                None => break,
            }
        }
    }
    drafts
}

/// The writes and deletions that bring the slices of `svc` from `existing` (the slices this
/// controller manages for it) to `desired` (endpoints per port set, sorted); `taken` holds at
/// least every slice name of the namespace that begins with the Service's [`name_prefix`] (new
/// names avoid them); `placeholder` are the ports of the empty
/// slice a Service without endpoints keeps.
pub fn plan(
    svc: &Value,
    desired: &BTreeMap<PortSet, Vec<Value>>,
    existing: &[&Value],
    placeholder: &PortSet,
    taken: &mut BTreeSet<String>,
    max: usize,
) -> Plan {
    let service = svc["metadata"]["name"].as_str().unwrap_or("");
    let mut out = Plan::default();
    let mut keep = BTreeSet::new();
    let mut by_ports: BTreeMap<PortSet, Vec<&Value>> = BTreeMap::new();
    for s in existing {
        by_ports.entry(ports_of(s)).or_default().push(s);
    }
    for (ports, want) in desired.iter().filter(|(_, w)| !w.is_empty()) {
        let mut mine = by_ports.get(ports).cloned().unwrap_or_default();
        mine.sort_by_key(|s| s["metadata"]["name"].as_str().unwrap_or("").to_string());
        for d in pack(&mine, want, max, service, taken) {
            if d.endpoints.is_empty() {
                continue;
            }
            keep.insert(d.name.clone());
            // Written only where it differs from what is stored (see `apply_owned`).
            out.write.push(render(svc, &d.name, ports, d.endpoints));
        }
    }
    if keep.is_empty() {
        // No endpoints at all: one empty placeholder, an existing one if there is.
        let reuse = existing
            .iter()
            .find(|s| {
                ports_of(s) == *placeholder && s["endpoints"].as_array().is_none_or(Vec::is_empty)
            })
            .and_then(|s| s["metadata"]["name"].as_str())
            .map(str::to_string);
        let name = reuse.unwrap_or_else(|| new_name(service, taken));
        out.write.push(render(svc, &name, placeholder, Vec::new()));
        keep.insert(name);
    }
    out.delete = existing
        .iter()
        .filter_map(|s| s["metadata"]["name"].as_str())
        .filter(|n| !keep.contains(*n))
        .map(str::to_string)
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc() -> Value {
        json!({"metadata": {"name": "web", "namespace": "default", "uid": "s1"}})
    }

    fn ports() -> PortSet {
        vec![("http".into(), 8080, "TCP".into())]
    }

    fn ep(i: usize, ready: bool) -> Value {
        json!({"addresses": [format!("10.244.{}.{}", i / 200, i % 200)],
               "conditions": {"ready": ready}, "targetRef": {"kind": "Pod", "name": format!("p{i:04}")}})
    }

    /// Plans `n` ready endpoints (`changed` ones not ready) over `existing`; the plan and the
    /// slices as they are afterwards.
    fn run(existing: &[Value], eps: Vec<Value>) -> (Plan, Vec<Value>) {
        let mut desired = BTreeMap::new();
        desired.insert(ports(), eps);
        let refs: Vec<&Value> = existing.iter().collect();
        let mut taken = existing
            .iter()
            .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
            .collect();
        let plan = plan(
            &svc(),
            &desired,
            &refs,
            &ports(),
            &mut taken,
            MAX_ENDPOINTS_PER_SLICE,
        );
        let mut after: BTreeMap<String, Value> = existing
            .iter()
            .map(|s| {
                (
                    s["metadata"]["name"].as_str().unwrap().to_string(),
                    s.clone(),
                )
            })
            .collect();
        for w in &plan.write {
            after.insert(
                w["metadata"]["name"].as_str().unwrap().to_string(),
                w.clone(),
            );
        }
        for d in &plan.delete {
            after.remove(d);
        }
        (plan, after.into_values().collect())
    }

    fn sizes(slices: &[Value]) -> Vec<usize> {
        let mut s: Vec<usize> = slices
            .iter()
            .map(|s| s["endpoints"].as_array().unwrap().len())
            .collect();
        s.sort();
        s
    }

    #[test]
    fn two_hundred_fifty_endpoints_fill_three_slices_of_at_most_a_hundred() {
        let (plan, slices) = run(&[], (0..250).map(|i| ep(i, true)).collect());
        assert!(plan.delete.is_empty());
        assert_eq!(sizes(&slices), [50, 100, 100]);
        for s in &slices {
            let name = s["metadata"]["name"].as_str().unwrap();
            assert!(name.starts_with("web-") && name.len() == 9, "{name}");
            assert_eq!(s["metadata"]["generateName"], "web-");
            assert_eq!(s["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
        }
    }

    #[test]
    fn one_changed_endpoint_rewrites_only_its_slice() {
        let (_, before) = run(&[], (0..250).map(|i| ep(i, true)).collect());
        let mut eps: Vec<Value> = (0..250).map(|i| ep(i, true)).collect();
        eps[120] = ep(120, false);
        let (plan, after) = run(&before, eps);
        let changed: Vec<&Value> = after.iter().filter(|s| !before.contains(s)).collect();
        assert_eq!(changed.len(), 1, "only the slice holding p0120 differs");
        assert!(plan.delete.is_empty());
        let names = |v: &[Value]| -> BTreeSet<String> {
            v.iter()
                .map(|s| s["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(names(&before), names(&after), "every slice keeps its name");
        // A new pod goes into a slice with room rather than a new one; removing pods empties
        // and deletes slices.
        let mut eps: Vec<Value> = (0..251).map(|i| ep(i, true)).collect();
        eps[120] = ep(120, false);
        let (_, grown) = run(&after, eps);
        assert_eq!(sizes(&grown), [51, 100, 100]);
        let (plan, shrunk) = run(&grown, (0..40).map(|i| ep(i, true)).collect());
        assert_eq!(sizes(&shrunk), [40]);
        assert_eq!(plan.delete.len(), 2);
    }

    #[test]
    fn no_endpoints_leave_one_placeholder_slice() {
        let (_, before) = run(&[], (0..3).map(|i| ep(i, true)).collect());
        let (plan, after) = run(&before, Vec::new());
        assert_eq!(sizes(&after), [0]);
        assert_eq!(plan.write.len(), 1);
        let (plan, again) = run(&after, Vec::new());
        assert_eq!(again, after, "the placeholder is kept as it is");
        assert!(plan.delete.is_empty());
    }
}
