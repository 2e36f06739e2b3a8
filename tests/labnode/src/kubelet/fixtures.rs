//! Pods for the kubelet's tests.
use k8s_openapi::api::core::v1::Pod;
use serde_json::{json, Value};

/// Pod `namespace/name` with `spec` (given no containers unless it names some).
pub fn pod(namespace: &str, name: &str, spec: Value) -> Pod {
    let mut spec = spec;
    if spec.get("containers").is_none() {
        spec["containers"] = json!([]);
    }
    serde_json::from_value(
        json!({"metadata": {"name": name, "namespace": namespace}, "spec": spec}),
    )
    .expect("a valid pod")
}
