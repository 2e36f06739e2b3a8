//! The scheduler: pods without `spec.nodeName` go to the Ready, schedulable node with the fewest
//! pods among those the pod fits: its `nodeSelector`, its required node affinity
//! (`matchExpressions` In/NotIn/Exists/DoesNotExist/Gt/Lt, `matchFields` on `metadata.name`)
//! and the node's NoSchedule/NoExecute taints against its tolerations. A pod no node fits stays
//! Pending with `PodScheduled=False`, reason `Unschedulable`. Pods naming another
//! `schedulerName` are left to it. As kube-scheduler, it reports `Scheduled` ("Successfully
//! assigned NS/POD to NODE") and, when a pod's reason to wait changes, a Warning
//! `FailedScheduling` Event (events.k8s.io style, repeats counted in `series`).
use std::time::Duration;

use serde_json::{json, Value};

use crate::events::{Recorder, Reference};
use crate::store::{Key, Store};

/// Whether a node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn labels(node: &Value) -> &serde_json::Map<String, Value> {
    static EMPTY: std::sync::OnceLock<serde_json::Map<String, Value>> = std::sync::OnceLock::new();
    node.pointer("/metadata/labels")
        .and_then(Value::as_object)
        .unwrap_or_else(|| EMPTY.get_or_init(serde_json::Map::new))
}

fn requirement_holds(r: &Value, got: Option<&str>) -> bool {
    let values: Vec<&str> = r["values"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let number = |s: &str| s.parse::<i64>().ok();
    match r["operator"].as_str().unwrap_or("") {
        "In" => got.is_some_and(|g| values.contains(&g)),
        "NotIn" => got.is_none_or(|g| !values.contains(&g)),
        "Exists" => got.is_some(),
        "DoesNotExist" => got.is_none(),
        "Gt" => got.and_then(number) > values.first().and_then(|v| number(v)),
        "Lt" => {
            let (g, v) = (got.and_then(number), values.first().and_then(|v| number(v)));
            g.is_some() && v.is_some() && g < v
        }
        _ => false,
    }
}

/// Whether `node` satisfies the pod's nodeSelector and required node affinity.
fn selected(pod: &Value, node: &Value) -> bool {
    let l = labels(node);
    let selector_ok = pod
        .pointer("/spec/nodeSelector")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .all(|(k, v)| l.get(k).and_then(Value::as_str) == v.as_str());
    let terms = pod
        .pointer("/spec/affinity/nodeAffinity/requiredDuringSchedulingIgnoredDuringExecution/nodeSelectorTerms")
        .and_then(Value::as_array);
    let affinity_ok = terms.is_none_or(|terms| {
        terms.iter().any(|t| {
            let exprs = t["matchExpressions"]
                .as_array()
                .into_iter()
                .flatten()
                .all(|r| {
                    requirement_holds(
                        r,
                        r["key"]
                            .as_str()
                            .and_then(|k| l.get(k))
                            .and_then(Value::as_str),
                    )
                });
            let fields = t["matchFields"].as_array().into_iter().flatten().all(|r| {
                r["key"] == "metadata.name"
                    && requirement_holds(r, node.pointer("/metadata/name").and_then(Value::as_str))
            });
            exprs && fields
        })
    });
    selector_ok && affinity_ok
}

fn tolerates(toleration: &Value, taint: &Value) -> bool {
    let effect = toleration["effect"].as_str().unwrap_or("");
    if !effect.is_empty() && taint["effect"].as_str() != Some(effect) {
        return false;
    }
    let key = toleration["key"].as_str().unwrap_or("");
    match toleration["operator"].as_str().unwrap_or("Equal") {
        "Exists" => key.is_empty() || Some(key) == taint["key"].as_str(),
        _ => {
            Some(key) == taint["key"].as_str()
                && toleration["value"].as_str().unwrap_or("")
                    == taint["value"].as_str().unwrap_or("")
        }
    }
}

/// The first NoSchedule/NoExecute taint of `node` the pod does not tolerate.
fn untolerated<'a>(pod: &Value, node: &'a Value) -> Option<&'a Value> {
    let tolerations = pod.pointer("/spec/tolerations").and_then(Value::as_array);
    node.pointer("/spec/taints")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|t| matches!(t["effect"].as_str(), Some("NoSchedule") | Some("NoExecute")))
        .find(|t| {
            !tolerations
                .into_iter()
                .flatten()
                .any(|tol| tolerates(tol, t))
        })
}

/// The node `pod` should go to, given all nodes and pods, or why none fits.
pub fn choose(pod: &Value, nodes: &[&Value], pods: &[&Value]) -> Result<String, String> {
    let (mut not_ready, mut unschedulable, mut unselected, mut tainted) = (0, 0, 0, 0);
    let mut fitting = Vec::new();
    for n in nodes {
        if !node_ready(n) {
            not_ready += 1;
        } else if n.pointer("/spec/unschedulable") == Some(&json!(true)) {
            unschedulable += 1;
        } else if !selected(pod, n) {
            unselected += 1;
        } else if untolerated(pod, n).is_some() {
            tainted += 1;
        } else if let Some(name) = n.pointer("/metadata/name").and_then(Value::as_str) {
            fitting.push(name);
        }
    }
    let best = fitting.into_iter().min_by_key(|name| {
        (
            pods.iter()
                .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name))
                .count(),
            name.to_string(),
        )
    });
    if let Some(name) = best {
        return Ok(name.to_string());
    }
    let mut why = Vec::new();
    for (n, what) in [
        (unselected, "didn't match Pod's node affinity/selector"),
        (tainted, "had untolerated taints"),
        (unschedulable, "were unschedulable"),
        (not_ready, "were not ready"),
    ] {
        if n > 0 {
            why.push(format!("{n} node(s) {what}"));
        }
    }
    if nodes.is_empty() {
        return Err("no nodes available to schedule pods".into());
    }
    let reasons = if why.is_empty() {
        String::new()
    } else {
        format!(" {}", why.join(", "))
    };
    Err(format!("0/{} nodes are available:{reasons}.", nodes.len()))
}

/// The `schedulerName` this scheduler answers to, as kube-scheduler's.
pub const SCHEDULER_NAME: &str = "default-scheduler";

/// Unbound, not being deleted, and meant for this scheduler.
fn unscheduled(p: &Value) -> bool {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && p.pointer("/metadata/deletionTimestamp").is_none()
        && p.pointer("/spec/schedulerName")
            .and_then(Value::as_str)
            .is_none_or(|s| s == SCHEDULER_NAME)
}

fn schedule_all(store: &Store, events: &Recorder) {
    let (pods, _) = store.list("pods", None);
    if !pods.iter().any(|p| unscheduled(p)) {
        return;
    }
    let (nodes, _) = store.list("nodes", None);
    let span = tracing::info_span!("schedule");
    let _enter = span.enter();
    let mut all: Vec<Value> = pods.iter().map(|p| (**p).clone()).collect();
    for i in 0..all.len() {
        if !unscheduled(&all[i]) {
            continue;
        }
        let node_refs: Vec<&Value> = nodes.iter().map(|n| n.as_ref()).collect();
        let pod_refs: Vec<&Value> = all.iter().collect();
        let key = Key {
            resource: "pods".into(),
            namespace: all[i]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .into(),
            name: all[i]["metadata"]["name"].as_str().unwrap_or("").into(),
        };
        let node = match choose(&all[i], &node_refs, &pod_refs) {
            Ok(node) => node,
            Err(why) => {
                if mark_unschedulable(store, &key, &why) {
                    events.warning(
                        &Reference::to(&all[i]),
                        "FailedScheduling",
                        "Scheduling",
                        &why,
                    );
                }
                continue;
            }
        };
        let bound = store.modify(&key, |p| {
            unscheduled(p).then(|| {
                let mut p = p.clone();
                p["spec"]["nodeName"] = json!(node);
                p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "True", "lastTransitionTime": crate::clock::now()}]);
                p
            })
        });
        match bound {
            Ok(Some(_)) => {
                tracing::info!(pod = %format!("{}/{}", key.namespace, key.name), %node, "scheduled");
                events.normal(
                    &Reference::to(&all[i]),
                    "Scheduled",
                    "Binding",
                    &format!(
                        "Successfully assigned {}/{} to {node}",
                        key.namespace, key.name
                    ),
                );
                all[i]["spec"]["nodeName"] = json!(node);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "binding a pod failed"),
        }
    }
}

/// Records why a pod waits (`PodScheduled=False`, `Unschedulable`), writing only on change;
/// whether it wrote.
fn mark_unschedulable(store: &Store, key: &Key, why: &str) -> bool {
    let result = store.modify(key, |p| {
        let current = p
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .and_then(|cs| cs.iter().find(|c| c["type"] == "PodScheduled"));
        if current.is_some_and(|c| c["message"] == why) || !unscheduled(p) {
            return None;
        }
        let mut p = p.clone();
        p["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False",
            "reason": "Unschedulable", "message": why, "lastTransitionTime": crate::clock::now()}]);
        Some(p)
    });
    match result {
        Ok(written) => written.is_some(),
        Err(e) => {
            tracing::warn!(error = %e, "recording an unschedulable pod failed");
            false
        }
    }
}

/// Runs until the store closes.
pub async fn run(store: Store) {
    let events = Recorder::new(&store, SCHEDULER_NAME);
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.key.resource != "pods" && e.key.resource != "nodes" => continue,
                Err(crate::store::RecvError::Closed) => return,
                _ => {}
            },
            _ = tick.tick() => {}
        }
        schedule_all(&store, &events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, ready: &str) -> Value {
        json!({"metadata": {"name": name}, "status": {"conditions": [{"type": "Ready", "status": ready}]}})
    }

    #[test]
    fn pods_go_to_the_ready_node_with_the_fewest_pods() {
        let (n1, n2, n3) = (node("n1", "True"), node("n2", "True"), node("n3", "False"));
        let pods = [json!({"spec": {"nodeName": "n1"}})];
        let pod_refs: Vec<&Value> = pods.iter().collect();
        let new = json!({"spec": {}});
        assert_eq!(
            choose(&new, &[&n1, &n2, &n3], &pod_refs).as_deref(),
            Ok("n2")
        );
        assert_eq!(
            choose(&new, &[&n3], &pod_refs),
            Err("0/1 nodes are available: 1 node(s) were not ready.".into()),
            "never a NotReady node"
        );
    }

    #[test]
    fn pods_for_another_scheduler_and_empty_clusters() {
        assert!(unscheduled(
            &json!({"spec": {"schedulerName": "default-scheduler"}})
        ));
        assert!(!unscheduled(&json!({"spec": {"schedulerName": "manual"}})));
        assert_eq!(
            choose(&json!({"spec": {}}), &[], &[]),
            Err("no nodes available to schedule pods".into())
        );
    }

    #[test]
    fn selectors_affinity_and_taints_narrow_the_choice() {
        let mut n1 = node("n1", "True");
        n1["metadata"]["labels"] = json!({"zone": "a", "rank": "5"});
        n1["spec"] =
            json!({"taints": [{"key": "dedicated", "value": "net", "effect": "NoSchedule"}]});
        let mut n2 = node("n2", "True");
        n2["metadata"]["labels"] = json!({"zone": "b", "rank": "1"});
        let nodes = [&n1, &n2];
        let pick = |spec: Value| choose(&json!({"spec": spec}), &nodes, &[]);
        assert_eq!(
            pick(json!({})).as_deref(),
            Ok("n2"),
            "the taint keeps n1 out"
        );
        let tolerate = json!([{"key": "dedicated", "operator": "Equal", "value": "net", "effect": "NoSchedule"}]);
        assert_eq!(
            pick(json!({"tolerations": tolerate, "nodeSelector": {"zone": "a"}})).as_deref(),
            Ok("n1")
        );
        assert_eq!(
            pick(json!({"nodeSelector": {"zone": "a"}})),
            Err("0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taints.".into())
        );
        let affinity = |op: &str, values: Value| json!({"tolerations": [{"operator": "Exists"}], "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "rank", "operator": op, "values": values}]}]}}}});
        assert_eq!(pick(affinity("Gt", json!(["3"]))).as_deref(), Ok("n1"));
        assert_eq!(pick(affinity("NotIn", json!(["1"]))).as_deref(), Ok("n1"));
        assert_eq!(pick(affinity("In", json!(["1", "2"]))).as_deref(), Ok("n2"));
    }
}
