//! How controlplane-lite's controllers report Events, as client-go's two recorders do: the
//! events.k8s.io one (kube-scheduler: `eventTime`, `reportingController`, `action`, repeats
//! counted in `series`) and the legacy core one (kube-controller-manager's node lifecycle
//! controller: `source`, `firstTimestamp`, repeats counted in `count` / `lastTimestamp`).
//!
//! Invariant: an Event identical to one already stored (same object, type, reason, action,
//! message, reporter) is never written twice: the stored one is bumped instead. Failing to
//! write an Event is logged, never an error of the caller.
use serde_json::{json, Value};

use super::convert::normalize_core;
use super::RESOURCE;
use crate::clock;
use crate::store::{Key, Store, StoreError};

/// What an Event is about (an ObjectReference).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reference(pub Value);

impl Reference {
    /// A reference to the stored object `obj` (kind, apiVersion, namespace, name, uid,
    /// resourceVersion).
    pub fn to(obj: &Value) -> Reference {
        let mut r = json!({});
        for (field, value) in [
            ("kind", &obj["kind"]),
            ("apiVersion", &obj["apiVersion"]),
            ("namespace", &obj["metadata"]["namespace"]),
            ("name", &obj["metadata"]["name"]),
            ("uid", &obj["metadata"]["uid"]),
            ("resourceVersion", &obj["metadata"]["resourceVersion"]),
        ] {
            if value.as_str().is_some_and(|s| !s.is_empty()) {
                r[field] = value.clone();
            }
        }
        Reference(r)
    }

    /// A reference to node `name` as the node lifecycle controller makes it (and `kubectl
    /// describe node` looks for it): the node's name as its uid.
    pub fn node(name: &str) -> Reference {
        Reference(json!({"kind": "Node", "name": name, "uid": name}))
    }

    fn field(&self, f: &str) -> &str {
        self.0[f].as_str().unwrap_or("")
    }
}

/// Which of client-go's recorders this one writes like.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Style {
    /// events.k8s.io/v1.
    Series,
    /// core/v1 with `source` and `count`.
    Legacy,
}

/// Writes Events for one controller.
#[derive(Clone)]
pub struct Recorder {
    store: Store,
    controller: String,
    instance: String,
    style: Style,
}

impl Recorder {
    /// A recorder writing as an events.k8s.io client named `controller` (`reportingController`).
    pub fn new(store: &Store, controller: &str) -> Recorder {
        Recorder {
            store: store.clone(),
            controller: controller.into(),
            instance: format!("{controller}-switchyard-cp"),
            style: Style::Series,
        }
    }

    /// A recorder writing as a legacy core/v1 client with `source.component` `component`.
    pub fn legacy(store: &Store, component: &str) -> Recorder {
        Recorder {
            store: store.clone(),
            controller: component.into(),
            instance: String::new(),
            style: Style::Legacy,
        }
    }

    /// Reports a `Normal` Event.
    pub fn normal(&self, regarding: &Reference, reason: &str, action: &str, note: &str) {
        self.report(regarding, "Normal", reason, action, note);
    }

    /// Reports a `Warning` Event.
    pub fn warning(&self, regarding: &Reference, reason: &str, action: &str, note: &str) {
        self.report(regarding, "Warning", reason, action, note);
    }

    fn report(&self, regarding: &Reference, ty: &str, reason: &str, action: &str, note: &str) {
        if let Err(e) = self.write(regarding, ty, reason, action, note) {
            tracing::warn!(error = %e, reason, "writing an Event failed");
        }
    }

    /// Whether the stored Event `e` is the one this report repeats.
    fn same(&self, e: &Value, regarding: &Reference, ty: &str, reason: &str, note: &str) -> bool {
        let r = &e["involvedObject"];
        ["kind", "namespace", "name", "uid"]
            .iter()
            .all(|f| r[f].as_str().unwrap_or("") == regarding.field(f))
            && e["type"] == ty
            && e["reason"] == reason
            && e["message"] == note
            && (e["reportingComponent"] == self.controller.as_str()
                || e["source"]["component"] == self.controller.as_str())
    }

    fn write(
        &self,
        regarding: &Reference,
        ty: &str,
        reason: &str,
        action: &str,
        note: &str,
    ) -> Result<(), StoreError> {
        let ns = match regarding.field("namespace") {
            "" => "default",
            ns => ns,
        };
        let (events, _) = self.store.list(RESOURCE, Some(ns));
        if let Some(old) = events
            .iter()
            .find(|e| self.same(e, regarding, ty, reason, note))
        {
            let key = Key {
                resource: RESOURCE.into(),
                namespace: ns.into(),
                name: old["metadata"]["name"].as_str().unwrap_or("").into(),
            };
            let style = self.style;
            self.store.modify(&key, |e| {
                let mut e = e.clone();
                match style {
                    Style::Series => {
                        let count = e["series"]["count"].as_i64().unwrap_or(1);
                        e["series"] =
                            json!({"count": count + 1, "lastObservedTime": clock::now_micro()});
                    }
                    Style::Legacy => {
                        e["count"] = json!(e["count"].as_i64().unwrap_or(1) + 1);
                        e["lastTimestamp"] = json!(clock::now());
                    }
                }
                Some(e)
            })?;
            return Ok(());
        }
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!("{}.{nanos:x}", regarding.field("name"));
        let mut event = json!({
            "metadata": {"name": name, "namespace": ns, "uid": clock::uid(),
                         "creationTimestamp": clock::now()},
            "involvedObject": regarding.0, "type": ty, "reason": reason, "message": note,
        });
        match self.style {
            Style::Series => {
                event["eventTime"] = json!(clock::now_micro());
                event["action"] = json!(action);
                event["reportingComponent"] = json!(self.controller);
                event["reportingInstance"] = json!(self.instance);
            }
            Style::Legacy => {
                let now = clock::now();
                event["source"] = json!({"component": self.controller});
                event["firstTimestamp"] = json!(now);
                event["lastTimestamp"] = json!(now);
                event["count"] = json!(1);
                event["reportingComponent"] = json!(self.controller);
            }
        }
        let key = Key {
            resource: RESOURCE.into(),
            namespace: ns.into(),
            name,
        };
        self.store.create(key, normalize_core(event))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({"kind": "Pod", "apiVersion": "v1",
               "metadata": {"name": "p", "namespace": "shop", "uid": "u1", "resourceVersion": "7"}})
    }

    #[test]
    fn repeats_bump_the_series_instead_of_adding_events() {
        let store = Store::in_memory();
        let r = Recorder::new(&store, "default-scheduler");
        let pod = Reference::to(&pod());
        r.warning(
            &pod,
            "FailedScheduling",
            "Scheduling",
            "0/1 nodes are available.",
        );
        r.warning(
            &pod,
            "FailedScheduling",
            "Scheduling",
            "0/1 nodes are available.",
        );
        r.warning(
            &pod,
            "FailedScheduling",
            "Scheduling",
            "0/1 nodes are available.",
        );
        r.normal(
            &pod,
            "Scheduled",
            "Binding",
            "Successfully assigned shop/p to n1",
        );
        let (events, _) = store.list(RESOURCE, Some("shop"));
        assert_eq!(events.len(), 2);
        let failed = events
            .iter()
            .find(|e| e["reason"] == "FailedScheduling")
            .unwrap();
        assert_eq!(failed["series"]["count"], 3);
        assert_eq!(failed["involvedObject"]["uid"], "u1");
        assert_eq!(failed["reportingComponent"], "default-scheduler");
        assert_eq!(failed["action"], "Scheduling");
        assert_eq!(failed["source"], json!({}));
        assert!(failed["eventTime"].is_string());
    }

    #[test]
    fn legacy_repeats_bump_count_and_land_in_default_for_nodes() {
        let store = Store::in_memory();
        let r = Recorder::legacy(&store, "node-controller");
        let node = Reference::node("n1");
        r.normal(
            &node,
            "NodeNotReady",
            "",
            "Node n1 status is now: NodeNotReady",
        );
        r.normal(
            &node,
            "NodeNotReady",
            "",
            "Node n1 status is now: NodeNotReady",
        );
        let (events, _) = store.list(RESOURCE, Some("default"));
        assert_eq!(events.len(), 1);
        assert_eq!(events[0]["count"], 2);
        assert_eq!(events[0]["source"]["component"], "node-controller");
        assert_eq!(events[0]["involvedObject"]["uid"], "n1");
        assert_eq!(events[0]["eventTime"], Value::Null);
        assert!(events[0]["metadata"]["name"]
            .as_str()
            .unwrap()
            .starts_with("n1."));
    }
}
