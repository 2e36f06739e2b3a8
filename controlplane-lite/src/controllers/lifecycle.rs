//! Node and pod lifecycle: a node whose kubelet stopped heartbeating becomes NotReady (Ready
//! condition `Unknown`, and a `NodeNotReady` Event from `node-controller`, as
//! kube-controller-manager's node lifecycle controller reports it); pods bound to a node that no longer exists are removed (as
//! kube-controller-manager's pod GC does), and a pod deletion its kubelet did not finish within
//! the grace period plus 30 s is completed here.
use std::time::Duration;

use serde_json::{json, Value};

use crate::clock;
use crate::events::{Recorder, Reference};
use crate::store::{Key, Store};

/// Extra time a kubelet gets past a pod's grace period before the deletion is forced.
pub const FORCE_AFTER: i64 = 30;

fn ready_condition(node: &Value) -> Option<&Value> {
    node.pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == "Ready")
}

/// Whether a node's Ready heartbeat is older than `grace` at time `now`.
pub fn silent(node: &Value, now: i64, grace: i64) -> bool {
    let Some(c) = ready_condition(node) else {
        return false;
    };
    if c["status"] != "True" {
        return false;
    }
    let beat = c["lastHeartbeatTime"]
        .as_str()
        .or_else(|| c["lastTransitionTime"].as_str())
        .and_then(clock::parse);
    beat.is_some_and(|t| now - t > grace)
}

fn tick(store: &Store, grace: i64, events: &Recorder) {
    let now = clock::now_secs();
    let (nodes, _) = store.list("nodes", None);
    for node in nodes.iter().filter(|n| silent(n, now, grace)) {
        let name = node["metadata"]["name"].as_str().unwrap_or("").to_string();
        let key = Key {
            resource: "nodes".into(),
            namespace: String::new(),
            name: name.clone(),
        };
        let _ = store.modify(&key, |n| {
            let mut n = n.clone();
            for c in n["status"]["conditions"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                if c["type"] == "Ready" {
                    c["status"] = json!("Unknown");
                    c["reason"] = json!("NodeStatusUnknown");
                    c["message"] = json!("Kubelet stopped posting node status.");
                    c["lastTransitionTime"] = json!(clock::now());
                }
            }
            Some(n)
        });
        tracing::warn!(node = %name, "node stopped heartbeating: NotReady");
        events.normal(
            &Reference::node(&name),
            "NodeNotReady",
            "",
            &format!("Node {name} status is now: NodeNotReady"),
        );
    }
    let names: std::collections::BTreeSet<String> = nodes
        .iter()
        .filter_map(|n| n["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    for pod in store.list("pods", None).0 {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let orphaned = !node.is_empty() && !names.contains(node);
        let deadline = pod
            .pointer("/metadata/deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(clock::parse);
        if orphaned || deadline.is_some_and(|d| now > d + FORCE_AFTER) {
            let key = Key {
                resource: "pods".into(),
                namespace: pod["metadata"]["namespace"].as_str().unwrap_or("").into(),
                name: pod["metadata"]["name"].as_str().unwrap_or("").into(),
            };
            if store.delete(key.clone()).is_ok() {
                tracing::warn!(pod = %format!("{}/{}", key.namespace, key.name), %node, orphaned, "removed a pod nobody will finish");
            }
        }
    }
}

/// Runs until the task is aborted.
pub async fn run(store: Store, grace: Duration) {
    let events = Recorder::legacy(&store, "node-controller");
    let mut every = tokio::time::interval(Duration::from_secs(2));
    loop {
        every.tick().await;
        tick(&store, grace.as_secs() as i64, &events);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ready_nodes_with_an_old_heartbeat_are_silent() {
        let node = |status: &str, beat: i64| json!({"status": {"conditions": [{"type": "Ready", "status": status, "lastHeartbeatTime": clock::format(beat)}]}});
        assert!(silent(&node("True", 1000), 1100, 40));
        assert!(!silent(&node("True", 1080), 1100, 40));
        assert!(!silent(&node("Unknown", 1000), 1100, 40));
    }
}
