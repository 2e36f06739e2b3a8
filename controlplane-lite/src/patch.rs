//! The three PATCH flavours kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch (merge patch plus lists of objects merged by their patch merge key and
//! the `$patch` directives).
use serde_json::{Map, Value};

/// Errors applying a patch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch is not of the expected shape.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch `test` failed or a path did not exist.
    #[error("the JSON patch could not be applied: {0}")]
    Failed(String),
}

/// RFC 7386 merge patch.
pub fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            merge(t.entry(k.clone()).or_insert(Value::Null), v);
        }
    }
}

/// The patch merge key of list `field` (as in the Kubernetes API types), if its items merge.
fn merge_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "volumeMounts"
        | "imagePullSecrets" => "name",
        "ports" => "port_auto",
        "conditions" => "type",
        "addresses" => "type",
        "tolerations" | "hostAliases" => return None,
        _ => return None,
    })
}

fn item_key<'a>(item: &'a Value, key: &str) -> Option<&'a Value> {
    if key == "port_auto" {
        // Container ports merge by containerPort, service ports by port.
        item.get("containerPort").or_else(|| item.get("port"))
    } else {
        item.get(key)
    }
}

/// Strategic merge patch, enough for kubectl apply/label/annotate/patch on the served types.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = p.clone();
        p.remove("$patch");
        *target = Value::Object(p);
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with('$') {
            continue; // $setElementOrder/…, $retainKeys, $deleteFromPrimitiveList handled below
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        match (t.get_mut(k), v) {
            (Some(Value::Array(existing)), Value::Array(items)) if merge_key(k).is_some() => {
                let key = merge_key(k).expect("checked");
                merge_list(existing, items, key)?;
            }
            (Some(existing @ Value::Object(_)), Value::Object(_)) => strategic(existing, v)?,
            _ => {
                let mut fresh = Value::Null;
                strategic(&mut fresh, v)?;
                strip_directives(&mut fresh);
                t.insert(k.clone(), fresh);
            }
        }
    }
    for (k, v) in p {
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(list)), Value::Array(del)) = (t.get_mut(field), v) {
                list.retain(|x| !del.contains(x));
            }
        }
    }
    Ok(())
}

fn merge_list(existing: &mut Vec<Value>, items: &[Value], key: &str) -> Result<(), PatchError> {
    for item in items {
        let id = item_key(item, key).cloned().ok_or_else(|| {
            PatchError::Invalid(format!("list item without its merge key: {item}"))
        })?;
        let pos = existing.iter().position(|e| item_key(e, key) == Some(&id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                existing.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic(&mut existing[i], item)?,
            (None, _) => {
                let mut fresh = item.clone();
                strip_directives(&mut fresh);
                existing.push(fresh);
            }
        }
    }
    Ok(())
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|k, _| !k.starts_with('$'));
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

fn parent_and_last<'a>(
    doc: &'a mut Value,
    path: &str,
) -> Result<(&'a mut Value, String), PatchError> {
    let (parent, last) = path
        .rsplit_once('/')
        .ok_or_else(|| PatchError::Invalid(format!("bad path {path:?}")))?;
    let target = if parent.is_empty() {
        Some(doc)
    } else {
        doc.pointer_mut(parent)
    };
    Ok((
        target.ok_or_else(|| PatchError::Failed(format!("path {parent:?} does not exist")))?,
        unescape(last),
    ))
}

fn add(doc: &mut Value, path: &str, value: Value) -> Result<(), PatchError> {
    let (parent, last) = parent_and_last(doc, path)?;
    match parent {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let idx = if last == "-" {
                a.len()
            } else {
                last.parse()
                    .map_err(|_| PatchError::Invalid(format!("bad index {last:?}")))?
            };
            if idx > a.len() {
                return Err(PatchError::Failed(format!("index {idx} out of range")));
            }
            a.insert(idx, value);
        }
        _ => return Err(PatchError::Failed(format!("cannot add at {path:?}"))),
    }
    Ok(())
}

fn remove(doc: &mut Value, path: &str) -> Result<Value, PatchError> {
    let (parent, last) = parent_and_last(doc, path)?;
    match parent {
        Value::Object(m) => m
            .remove(&last)
            .ok_or_else(|| PatchError::Failed(format!("{path:?} does not exist"))),
        Value::Array(a) => {
            let idx: usize = last
                .parse()
                .map_err(|_| PatchError::Invalid(format!("bad index {last:?}")))?;
            if idx >= a.len() {
                return Err(PatchError::Failed(format!("index {idx} out of range")));
            }
            Ok(a.remove(idx))
        }
        _ => Err(PatchError::Failed(format!("cannot remove {path:?}"))),
    }
}

/// RFC 6902 JSON patch.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError::Invalid("a JSON patch must be an array of operations".into()))?;
    for op in ops {
        let name = op["op"]
            .as_str()
            .ok_or_else(|| PatchError::Invalid(format!("operation without \"op\": {op}")))?;
        let path = op["path"]
            .as_str()
            .ok_or_else(|| PatchError::Invalid(format!("operation without \"path\": {op}")))?;
        match name {
            "add" => add(doc, path, op["value"].clone())?,
            "remove" => {
                remove(doc, path)?;
            }
            "replace" => {
                remove(doc, path)?;
                add(doc, path, op["value"].clone())?;
            }
            "test" => {
                if doc.pointer(path) != Some(&op["value"]) {
                    return Err(PatchError::Failed(format!("test of {path:?} failed")));
                }
            }
            "move" | "copy" => {
                let from = op["from"]
                    .as_str()
                    .ok_or_else(|| PatchError::Invalid(format!("{name} without \"from\"")))?;
                let v = if name == "move" {
                    remove(doc, from)?
                } else {
                    doc.pointer(from)
                        .cloned()
                        .ok_or_else(|| PatchError::Failed(format!("{from:?} does not exist")))?
                };
                add(doc, path, v)?;
            }
            other => return Err(PatchError::Invalid(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_sets_and_removes_keys() {
        let mut v = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"x": 1}});
        merge(
            &mut v,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        assert_eq!(v["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(v["spec"]["x"], 1);
    }

    #[test]
    fn strategic_patch_merges_lists_by_key_and_honours_directives() {
        let mut pod = json!({"spec": {"containers": [
            {"name": "a", "image": "x", "ports": [{"containerPort": 80, "name": "http"}]},
            {"name": "b", "image": "y"}
        ]}});
        let patch = json!({"spec": {
            "$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "a", "image": "x2"}, {"name": "b", "$patch": "delete"}, {"name": "c", "image": "z"}]
        }});
        strategic(&mut pod, &patch).unwrap();
        let names: Vec<_> = pod["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].clone())
            .collect();
        assert_eq!(names, [json!("a"), json!("c")]);
        assert_eq!(pod["spec"]["containers"][0]["image"], "x2");
        assert_eq!(
            pod["spec"]["containers"][0]["ports"][0]["containerPort"], 80,
            "untouched fields stay"
        );
        assert!(pod["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn strategic_patch_of_service_ports_merges_by_port() {
        let mut svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}]}});
        strategic(
            &mut svc,
            &json!({"spec": {"ports": [{"port": 80, "name": "http"}, {"port": 81}]}}),
        )
        .unwrap();
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80, "targetPort": 8080, "name": "http"}, {"port": 81}])
        );
    }

    #[test]
    fn json_patch_applies_operations_in_order_and_checks_tests() {
        let mut v = json!({"metadata": {"labels": {"a": "1"}}, "list": [1, 2]});
        json_patch(
            &mut v,
            &json!([
                {"op": "add", "path": "/metadata/labels/b", "value": "2"},
                {"op": "replace", "path": "/metadata/labels/a", "value": "9"},
                {"op": "add", "path": "/list/-", "value": 3},
                {"op": "remove", "path": "/list/0"},
                {"op": "test", "path": "/list/0", "value": 2}
            ]),
        )
        .unwrap();
        assert_eq!(
            v,
            json!({"metadata": {"labels": {"a": "9", "b": "2"}}, "list": [2, 3]})
        );
        assert!(json_patch(
            &mut v,
            &json!([{"op": "test", "path": "/list/0", "value": 7}])
        )
        .is_err());
        assert!(json_patch(&mut v, &json!([{"op": "remove", "path": "/nope"}])).is_err());
    }
}
