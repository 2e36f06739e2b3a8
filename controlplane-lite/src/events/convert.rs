//! The core/v1 <-> events.k8s.io/v1 mapping of an Event, as kube-apiserver converts between the
//! two versions: `involvedObject` <-> `regarding`, `message` <-> `note`, `reportingComponent`
//! <-> `reportingController`, `source` <-> `deprecatedSource`, `firstTimestamp` /
//! `lastTimestamp` / `count` <-> `deprecatedFirstTimestamp` / `deprecatedLastTimestamp` /
//! `deprecatedCount`; `eventTime`, `series`, `action`, `reason`, `related`, `type`,
//! `reportingInstance` and `metadata` are the same in both.
//!
//! Invariant: `to_core(to_events(x)) == x` for every normalised core Event `x`, and both
//! directions print the fields Go's encoding of the two types always prints (zero times as
//! `null`, empty structs as `{}`, the core form's reporting fields as `""`).
use serde_json::{json, Map, Value};

use super::GROUP;
use crate::resources::Resource;

/// (core field, events.k8s.io field) pairs that only change name.
const RENAMED: [(&str, &str); 6] = [
    ("involvedObject", "regarding"),
    ("message", "note"),
    ("reportingComponent", "reportingController"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

/// The count field pair.
const COUNT: (&str, &str) = ("count", "deprecatedCount");

/// Fields with the same name in both versions.
const SHARED: [&str; 8] = [
    "metadata",
    "eventTime",
    "series",
    "action",
    "reason",
    "related",
    "type",
    "reportingInstance",
];

/// Copies the fields of `from` to `to` under their other name (`forward`: core -> events).
fn rename(from: &Map<String, Value>, to: &mut Map<String, Value>, forward: bool) {
    for (core, events) in RENAMED.iter().chain(std::iter::once(&COUNT)) {
        let (src, dst) = if forward {
            (core, events)
        } else {
            (events, core)
        };
        if let Some(v) = from.get(*src) {
            to.insert((*dst).to_string(), v.clone());
        }
    }
    for f in SHARED {
        if let Some(v) = from.get(f) {
            to.insert(f.to_string(), v.clone());
        }
    }
}

/// Drops `null`s, `""`s, `{}`s and zero counts: what Go leaves zero (so that normalising
/// starts from the same place whichever version a client wrote).
fn drop_zero(m: &mut Map<String, Value>) {
    m.retain(|k, v| {
        k == "metadata"
            || !(v.is_null()
                || v.as_str() == Some("")
                || v.as_object().is_some_and(Map::is_empty)
                || v.as_i64() == Some(0))
    });
}

/// A core/v1 Event as kube-apiserver prints it: `source` and `involvedObject` always objects,
/// `firstTimestamp`, `lastTimestamp` and `eventTime` `null` when unset, `reportingComponent` and
/// `reportingInstance` `""` when unset.
pub fn normalize_core(mut event: Value) -> Value {
    let Some(m) = event.as_object_mut() else {
        return event;
    };
    drop_zero(m);
    for (k, zero) in [
        ("involvedObject", json!({})),
        ("source", json!({})),
        ("firstTimestamp", Value::Null),
        ("lastTimestamp", Value::Null),
        ("eventTime", Value::Null),
        ("reportingComponent", json!("")),
        ("reportingInstance", json!("")),
    ] {
        m.entry(k).or_insert(zero);
    }
    m.insert("apiVersion".into(), json!("v1"));
    m.insert("kind".into(), json!("Event"));
    event
}

/// The events.k8s.io/v1 view of a (normalised) core Event.
pub fn to_events(core: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = core.as_object() {
        let mut m = m.clone();
        drop_zero(&mut m);
        rename(&m, &mut out, true);
    }
    for (k, zero) in [
        ("eventTime", Value::Null),
        ("regarding", json!({})),
        ("deprecatedSource", json!({})),
        ("deprecatedFirstTimestamp", Value::Null),
        ("deprecatedLastTimestamp", Value::Null),
    ] {
        out.entry(k).or_insert(zero);
    }
    out.insert("apiVersion".into(), json!("events.k8s.io/v1"));
    out.insert("kind".into(), json!("Event"));
    Value::Object(out)
}

/// The normalised core form of an events.k8s.io/v1 Event.
pub fn to_core(events: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = events.as_object() {
        let mut m = m.clone();
        drop_zero(&mut m);
        rename(&m, &mut out, false);
    }
    normalize_core(Value::Object(out))
}

/// Whether objects of `res` are stored in another form than the one its clients see.
fn converted(res: &Resource) -> bool {
    res.kind == "Event" && res.group == GROUP
}

/// The stored form of an object a client sent through `res`.
pub fn inward(res: &Resource, obj: Value) -> Value {
    if converted(res) {
        to_core(&obj)
    } else {
        obj
    }
}

/// The form the clients of `res` see of a stored object.
pub fn outward(res: &Resource, obj: &Value) -> Value {
    if converted(res) {
        to_events(obj)
    } else {
        obj.clone()
    }
}

/// An events.k8s.io field selector's field as the stored (core) object names it.
pub fn core_field(events_field: &str) -> String {
    for (core, events) in RENAMED.iter().chain(std::iter::once(&COUNT)) {
        if let Some(rest) = events_field.strip_prefix(events) {
            if rest.is_empty() || rest.starts_with('.') {
                return format!("{core}{rest}");
            }
        }
    }
    events_field.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_style_event_reads_the_same_through_both_apis() {
        let v1 = json!({"apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": "p.1", "namespace": "default"},
            "eventTime": "2026-01-01T00:00:00.000001Z", "reportingController": "agent",
            "reportingInstance": "agent-n1", "action": "Probe", "reason": "Unhealthy",
            "regarding": {"kind": "Pod", "name": "p", "namespace": "default"},
            "note": "probe failed", "type": "Warning",
            "series": {"count": 2, "lastObservedTime": "2026-01-01T00:00:05.000000Z"}});
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "p");
        assert_eq!(core["message"], "probe failed");
        assert_eq!(core["reportingComponent"], "agent");
        assert_eq!(core["source"], json!({}));
        assert_eq!(core["firstTimestamp"], Value::Null);
        assert_eq!(core["series"]["count"], 2);
        assert_eq!(to_events(&core), {
            let mut want = v1.clone();
            want["deprecatedSource"] = json!({});
            want["deprecatedFirstTimestamp"] = Value::Null;
            want["deprecatedLastTimestamp"] = Value::Null;
            want
        });
    }

    #[test]
    fn a_legacy_event_maps_to_the_deprecated_fields_and_back() {
        let core = normalize_core(json!({"metadata": {"name": "n1.1", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "n1", "uid": "n1"}, "reason": "NodeNotReady",
            "message": "Node n1 status is now: NodeNotReady", "source": {"component": "node-controller"},
            "firstTimestamp": "2026-01-01T00:00:00Z", "lastTimestamp": "2026-01-01T00:01:00Z",
            "count": 3, "type": "Normal"}));
        assert_eq!(core["eventTime"], Value::Null);
        assert_eq!(core["reportingInstance"], "");
        let ev = to_events(&core);
        assert_eq!(ev["deprecatedCount"], 3);
        assert_eq!(ev["deprecatedSource"]["component"], "node-controller");
        assert_eq!(ev["regarding"]["kind"], "Node");
        assert_eq!(ev["eventTime"], Value::Null);
        assert!(ev.get("reportingController").is_none());
        assert_eq!(to_core(&ev), core);
        assert_eq!(core_field("regarding.name"), "involvedObject.name");
        assert_eq!(core_field("reason"), "reason");
    }
}
