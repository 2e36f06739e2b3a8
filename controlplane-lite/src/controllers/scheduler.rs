//! The scheduler: pods without `spec.nodeName` go to the Ready node with the fewest pods.
use std::time::Duration;

use serde_json::{json, Value};

use crate::store::{Key, Store};

/// Whether a node's Ready condition is True.
pub fn node_ready(node: &Value) -> bool {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

/// The node a new pod should go to, given all nodes and pods.
pub fn choose(nodes: &[&Value], pods: &[&Value]) -> Option<String> {
    nodes
        .iter()
        .filter(|n| node_ready(n) && n.pointer("/spec/unschedulable") != Some(&json!(true)))
        .filter_map(|n| n.pointer("/metadata/name").and_then(Value::as_str))
        .min_by_key(|name| {
            (
                pods.iter()
                    .filter(|p| p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name))
                    .count(),
                name.to_string(),
            )
        })
        .map(str::to_string)
}

fn unscheduled(p: &Value) -> bool {
    p.pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && p.pointer("/metadata/deletionTimestamp").is_none()
}

fn schedule_all(store: &Store) {
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
        let Some(node) = choose(&node_refs, &pod_refs) else {
            tracing::debug!("no Ready node yet");
            return;
        };
        let key = Key {
            resource: "pods".into(),
            namespace: all[i]["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .into(),
            name: all[i]["metadata"]["name"].as_str().unwrap_or("").into(),
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
                all[i]["spec"]["nodeName"] = json!(node);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "binding a pod failed"),
        }
    }
}

/// Runs until the store closes.
pub async fn run(store: Store) {
    let mut rx = store.subscribe();
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.key.resource != "pods" && e.key.resource != "nodes" => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                _ => {}
            },
            _ = tick.tick() => {}
        }
        schedule_all(&store);
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
        assert_eq!(choose(&[&n1, &n2, &n3], &pod_refs).as_deref(), Some("n2"));
        assert_eq!(choose(&[&n3], &pod_refs), None, "never a NotReady node");
    }
}
