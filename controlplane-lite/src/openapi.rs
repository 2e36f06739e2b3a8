//! OpenAPI v3 component schemas of the served kinds, built from the field structure in
//! `protobuf_schema.txt` (names, types, lists, maps): enough for `kubectl explain` to walk the
//! fields and show their types. Kubernetes' field documentation is not included.
//!
//! The documents' PATCH operations declare no request body, so kubectl keeps computing
//! strategic merge patches from its built-in types rather than from these schemas.
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

use crate::protobuf::{schema, Ty};
use crate::resources::{Resource, RESOURCES};

/// What `kubectl explain` shows for each kind.
pub const KIND_DESCRIPTION: &str = "Served by controlplane-lite: the fields and their types are those of Kubernetes; their documentation is not served (see https://kubernetes.io/docs/reference/kubernetes-api/).";

/// `core.Pod` -> `io.k8s.api.core.v1.Pod`, as kube-apiserver names its schemas.
fn openapi_name(message: &str) -> String {
    let (pkg, name) = message.split_once('.').unwrap_or(("", message));
    let prefix = match pkg {
        "core" => "io.k8s.api.core.v1",
        "disc" => "io.k8s.api.discovery.v1",
        "events" => "io.k8s.api.events.v1",
        "meta" => "io.k8s.apimachinery.pkg.apis.meta.v1",
        "intstr" => "io.k8s.apimachinery.pkg.util.intstr",
        "res" => "io.k8s.apimachinery.pkg.api.resource",
        other => other,
    };
    format!("{prefix}.{name}")
}

fn root_message(r: &Resource) -> String {
    let pkg = match r.group {
        "" => "core",
        "events.k8s.io" => "events",
        _ => "disc",
    };
    format!("{pkg}.{}", r.kind)
}

fn reference(name: &str) -> Value {
    json!({"allOf": [{"$ref": format!("#/components/schemas/{name}")}]})
}

/// The named string types kube-apiserver's documents have (kubectl explain shows their names).
const STRING_TYPES: [(&str, &str); 3] = [
    ("io.k8s.apimachinery.pkg.apis.meta.v1.Time", "date-time"),
    ("io.k8s.apimachinery.pkg.api.resource.Quantity", ""),
    (
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString",
        "int-or-string",
    ),
];

fn type_schema(ty: &Ty) -> Value {
    match ty {
        Ty::Str => json!({"type": "string"}),
        Ty::Int => json!({"type": "integer"}),
        Ty::Bool => json!({"type": "boolean"}),
        Ty::Double => json!({"type": "number", "format": "double"}),
        Ty::Bytes => json!({"type": "string", "format": "byte"}),
        Ty::Time => reference(STRING_TYPES[0].0),
        Ty::Quantity => reference(STRING_TYPES[1].0),
        Ty::IntOrStr => reference(STRING_TYPES[2].0),
        Ty::Msg(m) => reference(&openapi_name(m)),
    }
}

/// The component schemas of the kinds served at `group/version` and every type they use.
pub fn components(group: &str, version: &str) -> Value {
    let all = schema();
    let roots: BTreeMap<String, &Resource> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .map(|r| (root_message(r), r))
        .collect();
    let mut todo: Vec<String> = roots.keys().cloned().collect();
    let mut seen = BTreeSet::new();
    let mut out = serde_json::Map::new();
    for (name, format) in STRING_TYPES {
        // Without a "type", kubectl explain names them (<Time>, <IntOrString>) as it does
        // against kube-apiserver.
        let s = if format.is_empty() {
            json!({})
        } else {
            json!({"format": format})
        };
        out.insert(name.to_string(), s);
    }
    while let Some(m) = todo.pop() {
        if !seen.insert(m.clone()) {
            continue;
        }
        let Some(fields) = all.get(&m) else {
            continue;
        };
        let mut props = serde_json::Map::new();
        let mut numbered: Vec<_> = fields.iter().collect();
        numbered.sort_by_key(|(n, _)| **n);
        for (_, f) in numbered {
            if let Ty::Msg(inner) = &f.ty {
                todo.push(inner.clone());
            }
            let item = type_schema(&f.ty);
            let prop = if f.map {
                json!({"type": "object", "additionalProperties": item})
            } else if f.repeated {
                json!({"type": "array", "items": item})
            } else {
                item
            };
            props.insert(f.name.clone(), prop);
        }
        let mut s = json!({"type": "object", "properties": props});
        if let Some(r) = roots.get(&m) {
            s["description"] = json!(KIND_DESCRIPTION);
            s["properties"]["apiVersion"] = json!({"type": "string"});
            s["properties"]["kind"] = json!({"type": "string"});
            s["x-kubernetes-group-version-kind"] =
                json!([{"group": r.group, "version": r.version, "kind": r.kind}]);
        }
        out.insert(openapi_name(&m), s);
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_core_document_describes_pods_down_to_container_ports() {
        let c = components("", "v1");
        let pod = &c["io.k8s.api.core.v1.Pod"];
        assert_eq!(pod["x-kubernetes-group-version-kind"][0]["kind"], "Pod");
        assert_eq!(
            pod["properties"]["spec"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.api.core.v1.PodSpec"
        );
        let port = &c["io.k8s.api.core.v1.ContainerPort"]["properties"];
        assert_eq!(port["containerPort"]["type"], "integer");
        let meta = &c["io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"]["properties"];
        assert_eq!(meta["labels"]["additionalProperties"]["type"], "string");
        assert_eq!(
            meta["creationTimestamp"]["allOf"][0]["$ref"],
            "#/components/schemas/io.k8s.apimachinery.pkg.apis.meta.v1.Time"
        );
        assert!(components("discovery.k8s.io", "v1")
            .get("io.k8s.api.discovery.v1.EndpointSlice")
            .is_some());
    }
}
