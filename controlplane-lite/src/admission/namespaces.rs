//! Namespaces, as kube-apiserver admits them.
//!
//! Guarantees: an admitted namespace's status is `Active`; its `spec.finalizers` is
//! `["kubernetes"]` when created and never changes through an update (only the finalize
//! subresource, not served, could change it); and it carries its name as the label
//! `kubernetes.io/metadata.name`, as kube-apiserver does since 1.21.
use serde_json::{json, Value};

use super::name_of;

/// Status, finalizers and the name label of a new namespace or a replacement of `old`.
pub(super) fn admit(obj: &mut Value, old: Option<&Value>) {
    obj["status"] = json!({"phase": "Active"});
    obj["spec"] = match old {
        Some(o) if o["spec"].is_object() => o["spec"].clone(),
        _ => json!({"finalizers": ["kubernetes"]}),
    };
    let name = name_of(obj);
    if !obj["metadata"]["labels"].is_object() {
        obj["metadata"]["labels"] = json!({});
    }
    obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
}
