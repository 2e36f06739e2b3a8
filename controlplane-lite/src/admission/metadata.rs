//! The metadata the server owns, as kube-apiserver sets it.
//!
//! Guarantees: every object leaves here with the served `apiVersion` and `kind` and an object
//! `metadata`. A new object gets a fresh `uid` and `creationTimestamp`, a name from
//! `generateName` when it has none, its request's namespace (none when cluster-scoped), and loses
//! what only the server writes (`resourceVersion`, deletion fields, `managedFields`). A
//! replacement keeps the stored identity (`uid`, `creationTimestamp`, deletion fields, namespace,
//! name) and, for kinds with a status subresource, the stored status. `metadata.generation` is
//! present only on kinds that [`tracks_generation`]: 1 on create, +1 on each update that
//! [`generation_changes`].
use serde_json::{json, Value};

use super::{copy_or_remove, remove_keys, str_field};
use crate::clock;
use crate::resources::Resource;

/// Fields of `metadata` a replacement keeps from the stored object.
const KEPT_ON_UPDATE: [&str; 6] = [
    "uid",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "namespace",
    "name",
];

/// Fields of `metadata` only the server writes, dropped from a new object.
const SERVER_WRITTEN: [&str; 4] = [
    "resourceVersion",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
];

/// Whether kube-apiserver 1.32 keeps `metadata.generation` for the kind: of the served kinds only
/// EndpointSlices (pods got one in 1.33; services, nodes, namespaces and Endpoints never had).
pub fn tracks_generation(res: &Resource) -> bool {
    res.kind == "EndpointSlice"
}

/// An EndpointSlice's generation moves when anything but its metadata changes, or its labels.
pub fn generation_changes(old: &Value, new: &Value) -> bool {
    let body = |v: &Value| {
        let mut v = v.clone();
        remove_keys(&mut v, &["metadata"]);
        v
    };
    body(old) != body(new) || old.pointer("/metadata/labels") != new.pointer("/metadata/labels")
}

/// Sets `apiVersion` and `kind` to the served ones and makes `metadata` an object.
fn stamp_type(res: &Resource, obj: &mut Value) {
    obj["apiVersion"] = json!(res.api_version());
    obj["kind"] = json!(res.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
}

/// The metadata of a new object in namespace `ns`.
pub(super) fn on_create(res: &Resource, ns: &str, obj: &mut Value) {
    stamp_type(res, obj);
    let meta = &mut obj["metadata"];
    if str_field(meta, "name").is_empty() {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
            meta["name"] = json!(format!("{prefix}{}", random_suffix()));
        }
    }
    if res.namespaced {
        meta["namespace"] = json!(ns);
    } else {
        remove_keys(meta, &["namespace"]);
    }
    meta["uid"] = json!(clock::uid());
    meta["creationTimestamp"] = json!(clock::now());
    remove_keys(meta, &["generation"]);
    if tracks_generation(res) {
        meta["generation"] = json!(1);
    }
    remove_keys(meta, &SERVER_WRITTEN);
}

/// Five random lowercase letters, as `generateName` appends.
fn random_suffix() -> String {
    (0..5)
        .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
        .collect()
}

/// The metadata (and, with a status subresource, the status) of a replacement of `old`.
pub(super) fn on_update(res: &Resource, old: &Value, obj: &mut Value) {
    stamp_type(res, obj);
    for k in KEPT_ON_UPDATE {
        copy_or_remove(&mut obj["metadata"], &old["metadata"], k);
    }
    // The main resource never changes status for kinds that have a status subresource.
    if res.status {
        copy_or_remove(obj, old, "status");
    }
    match old.pointer("/metadata/generation").and_then(Value::as_i64) {
        Some(g) if tracks_generation(res) => {
            let bump = i64::from(generation_changes(old, obj));
            obj["metadata"]["generation"] = json!(g.saturating_add(bump));
        }
        _ => remove_keys(&mut obj["metadata"], &["generation"]),
    }
}
