//! The three PATCH flavours kubectl sends: JSON merge patch (RFC 7386), JSON patch (RFC 6902) and
//! strategic merge patch (merge patch plus lists of objects merged by their patch merge key and
//! the `$patch` directives).
//!
//! Bounds (kube-apiserver's, against CVE-2019-1002100): a JSON patch has at most
//! [`MAX_JSON_PATCH_OPERATIONS`] operations, its `copy` operations add at most
//! [`MAX_COPY_BYTES`] in all, and no operation nests the document deeper than [`MAX_DEPTH`]; so a
//! patched object is never much larger than the object and the patch together.
use serde_json::{Map, Value};

/// kube-apiserver's `maxJSONPatchOperations`.
pub const MAX_JSON_PATCH_OPERATIONS: usize = 10_000;

/// kube-apiserver's `JSONPatchMaxCopyBytes` (its request body limit, 3 MiB): what the `copy`
/// operations of one patch may add up to, counted as JSON bytes as evanphx/json-patch counts.
pub const MAX_COPY_BYTES: usize = crate::body::MAX_BODY;

/// How deep a patched document may nest: serde_json's own limit when parsing.
pub const MAX_DEPTH: usize = 128;

/// Errors applying a patch.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PatchError {
    /// The patch is not of the expected shape.
    #[error("invalid patch: {0}")]
    Invalid(String),
    /// A JSON patch `test` failed or a path did not exist.
    #[error("the JSON patch could not be applied: {0}")]
    Failed(String),
    /// More operations than [`MAX_JSON_PATCH_OPERATIONS`].
    #[error(
        "The allowed maximum operations in a JSON patch is {MAX_JSON_PATCH_OPERATIONS}, got {0}"
    )]
    TooManyOperations(usize),
}

/// How deeply `v` nests (a scalar is 0, `[]` and `{}` are 1), computed without recursion.
pub fn depth(v: &Value) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(v, 0usize)];
    while let Some((v, d)) = stack.pop() {
        let children: Box<dyn Iterator<Item = &Value>> = match v {
            Value::Array(a) => Box::new(a.iter()),
            Value::Object(m) => Box::new(m.values()),
            _ => {
                deepest = deepest.max(d);
                continue;
            }
        };
        deepest = deepest.max(d + 1);
        stack.extend(children.map(|c| (c, d + 1)));
    }
    deepest
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

/// How a list at `path` (field names from the object's root, `[]` for list items) merges in a
/// strategic merge patch, as the Kubernetes API types declare it (`patchStrategy`,
/// `patchMergeKey`); lists not named here are atomic (replaced whole).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ListStrategy {
    /// Items are objects merged by this key.
    ByKey(&'static str),
    /// A list of scalars merged as a set (`finalizers`, `podCIDRs`).
    Primitives,
}

fn list_strategy(path: &str) -> Option<ListStrategy> {
    use ListStrategy::{ByKey, Primitives};
    let container = |rest: &str| {
        [
            "spec.containers[].",
            "spec.initContainers[].",
            "spec.ephemeralContainers[].",
        ]
        .iter()
        .any(|c| path.strip_prefix(c) == Some(rest))
    };
    Some(match path {
        "metadata.finalizers" | "spec.podCIDRs" | "spec.finalizers" => Primitives,
        "metadata.ownerReferences" => ByKey("uid"),
        "spec.containers" | "spec.initContainers" | "spec.ephemeralContainers" => ByKey("name"),
        "spec.volumes" | "spec.imagePullSecrets" | "spec.resourceClaims" => ByKey("name"),
        "spec.hostAliases" => ByKey("ip"),
        "spec.topologySpreadConstraints" => ByKey("topologyKey"),
        "spec.ports" => ByKey("port"),
        "status.conditions" | "status.addresses" => ByKey("type"),
        _ if container("ports") => ByKey("containerPort"),
        _ if container("env") => ByKey("name"),
        _ if container("volumeMounts") => ByKey("mountPath"),
        _ if container("volumeDevices") => ByKey("devicePath"),
        _ if container("resizePolicy") => ByKey("resourceName"),
        _ => return None,
    })
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Strategic merge patch as kube-apiserver applies it to the served types: maps merge, lists
/// merge by their patch merge key (or as sets of scalars) or are replaced, and the directives
/// `$patch` (replace, delete), `$retainKeys`, `$setElementOrder/<list>` and
/// `$deleteFromPrimitiveList/<list>` are honoured.
pub fn strategic(target: &mut Value, patch: &Value) -> Result<(), PatchError> {
    strategic_at(target, patch, "")
}

fn strategic_at(target: &mut Value, patch: &Value, path: &str) -> Result<(), PatchError> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut fresh = Value::Object(p.clone());
        strip_directives(&mut fresh);
        *target = fresh;
        return Ok(());
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let t = target.as_object_mut().expect("made an object above");
    for (k, v) in p {
        if k.starts_with('$') {
            continue; // directives, applied below
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let at = child(path, k);
        match (t.get_mut(k), v, list_strategy(&at)) {
            (Some(Value::Array(existing)), Value::Array(items), Some(ListStrategy::ByKey(key))) => {
                merge_list(existing, items, key, &format!("{at}[]"))?;
            }
            (Some(Value::Array(existing)), Value::Array(items), Some(ListStrategy::Primitives)) => {
                for item in items {
                    if !existing.contains(item) {
                        existing.push(item.clone());
                    }
                }
            }
            (Some(existing @ Value::Object(_)), Value::Object(_), _) => {
                strategic_at(existing, v, &at)?
            }
            _ => {
                let mut fresh = Value::Null;
                strategic_at(&mut fresh, v, &at)?;
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
        if let Some(field) = k.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(list)), Value::Array(order)) = (t.get_mut(field), v) {
                let key = match list_strategy(&child(path, field)) {
                    Some(ListStrategy::ByKey(key)) => Some(key),
                    _ => None,
                };
                set_order(list, order, key);
            }
        }
    }
    if let Some(Value::Array(keep)) = p.get("$retainKeys") {
        t.retain(|k, _| keep.iter().any(|r| r.as_str() == Some(k)));
    }
    Ok(())
}

/// Reorders the items of `list` named in `order` into that order; the others keep their places.
fn set_order(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Value {
        match key {
            Some(k) => v.get(k).cloned().unwrap_or(Value::Null),
            None => v.clone(),
        }
    };
    let wanted: Vec<Value> = order.iter().map(&id).collect();
    let listed: Vec<usize> = (0..list.len())
        .filter(|i| wanted.contains(&id(&list[*i])))
        .collect();
    let mut items: Vec<Value> = listed.iter().map(|i| list[*i].clone()).collect();
    items.sort_by_key(|v| wanted.iter().position(|w| *w == id(v)));
    for (slot, item) in listed.into_iter().zip(items) {
        list[slot] = item;
    }
}

fn merge_list(
    existing: &mut Vec<Value>,
    items: &[Value],
    key: &str,
    path: &str,
) -> Result<(), PatchError> {
    for item in items {
        let id = item.get(key).cloned().ok_or_else(|| {
            PatchError::Invalid(format!("list item without its merge key {key:?}: {item}"))
        })?;
        let pos = existing.iter().position(|e| e.get(key) == Some(&id));
        let directive = item.get("$patch").and_then(Value::as_str);
        match (pos, directive) {
            (Some(i), Some("delete")) => {
                existing.remove(i);
            }
            (None, Some("delete")) => {}
            (Some(i), _) => strategic_at(&mut existing[i], item, path)?,
            (None, _) => {
                let mut fresh = Value::Null;
                strategic_at(&mut fresh, item, path)?;
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
    // The new value sits one level below each of the path's tokens.
    let at = path.matches('/').count();
    if at.saturating_add(depth(&value)) > MAX_DEPTH {
        return Err(PatchError::Failed(format!(
            "adding at {path:?} would nest the object deeper than {MAX_DEPTH} levels"
        )));
    }
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

/// RFC 6902 JSON patch, within the bounds of the module doc.
pub fn json_patch(doc: &mut Value, ops: &Value) -> Result<(), PatchError> {
    let ops = ops
        .as_array()
        .ok_or_else(|| PatchError::Invalid("a JSON patch must be an array of operations".into()))?;
    if ops.len() > MAX_JSON_PATCH_OPERATIONS {
        return Err(PatchError::TooManyOperations(ops.len()));
    }
    let mut copied = 0usize;
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
                    let v = doc
                        .pointer(from)
                        .ok_or_else(|| PatchError::Failed(format!("{from:?} does not exist")))?;
                    // evanphx/json-patch's words, which kube-apiserver returns (422).
                    copied = copied.saturating_add(json_len(v));
                    if copied > MAX_COPY_BYTES {
                        return Err(PatchError::Failed(format!("Unable to complete the copy, the accumulated size increase of copy is {copied}, exceeding the limit {MAX_COPY_BYTES}")));
                    }
                    v.clone()
                };
                add(doc, path, v)?;
            }
            other => return Err(PatchError::Invalid(format!("unknown operation {other:?}"))),
        }
    }
    Ok(())
}

/// The length of `v` as compact JSON, counted without building the text.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(b.len());
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut n = Count(0);
    let _ = serde_json::to_writer(&mut n, v);
    n.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chained_copies_that_double_the_object_stop_at_the_copy_limit() {
        let mut v = json!({"spec": {"a": "x".repeat(1000)}});
        let ops: Vec<Value> = (0..40)
            .map(|i| json!({"op": "copy", "from": "/spec", "path": format!("/spec/c{i}")}))
            .collect();
        let e = json_patch(&mut v, &Value::Array(ops)).unwrap_err();
        assert!(e.to_string().contains("exceeding the limit 3145728"), "{e}");
        assert!(json_len(&v) < 2 * MAX_COPY_BYTES);
    }

    #[test]
    fn too_many_operations_and_too_deep_nesting_are_refused() {
        let ops = Value::Array(vec![json!({"op": "test", "path": "", "value": 1}); 10_001]);
        assert_eq!(
            json_patch(&mut json!({}), &ops).unwrap_err().to_string(),
            "The allowed maximum operations in a JSON patch is 10000, got 10001"
        );
        let mut v = json!({"a": {"b": {}}});
        let copy_root = json!({"op": "copy", "from": "", "path": "/a/b/c"});
        let ops = Value::Array(vec![copy_root; 100]);
        let e = json_patch(&mut v, &ops).unwrap_err();
        assert!(e.to_string().contains("deeper than 128"), "{e}");
        assert!(depth(&v) <= MAX_DEPTH);
    }

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
    fn strategic_patch_knows_each_list_by_its_path() {
        // EndpointSlice ports and endpoints are atomic: replaced, never merged.
        let mut slice =
            json!({"ports": [{"port": 80}, {"port": 81}], "endpoints": [{"addresses": ["a"]}]});
        strategic(&mut slice, &json!({"ports": [{"port": 82}]})).unwrap();
        assert_eq!(slice["ports"], json!([{"port": 82}]));
        // Container env merges by name, volumeMounts by mountPath, finalizers as a set.
        let mut pod = json!({"metadata": {"finalizers": ["a"]}, "spec": {"containers": [{"name": "c",
            "env": [{"name": "A", "value": "1"}], "volumeMounts": [{"name": "v", "mountPath": "/x"}]}]}});
        let patch = json!({"metadata": {"finalizers": ["b"], "$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {"containers": [{"name": "c", "env": [{"name": "B", "value": "2"}],
            "volumeMounts": [{"name": "w", "mountPath": "/x"}]}]}});
        strategic(&mut pod, &patch).unwrap();
        assert_eq!(pod["metadata"]["finalizers"], json!(["b"]));
        let c = &pod["spec"]["containers"][0];
        assert_eq!(c["env"].as_array().unwrap().len(), 2);
        assert_eq!(c["volumeMounts"], json!([{"name": "w", "mountPath": "/x"}]));
        // $setElementOrder reorders; $retainKeys drops the keys it does not list.
        let mut svc = json!({"spec": {"ports": [{"port": 80}, {"port": 81}, {"port": 82}]}});
        strategic(
            &mut svc,
            &json!({"spec": {"$setElementOrder/ports": [{"port": 82}, {"port": 80}]}}),
        )
        .unwrap();
        let order: Vec<_> = svc["spec"]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["port"].clone())
            .collect();
        assert_eq!(order, [json!(82), json!(81), json!(80)]);
        let mut vol = json!({"spec": {"volumes": [{"name": "v", "emptyDir": {}}]}});
        strategic(&mut vol, &json!({"spec": {"volumes": [{"name": "v", "hostPath": {"path": "/d"}, "$retainKeys": ["hostPath", "name"]}]}})).unwrap();
        assert_eq!(
            vol["spec"]["volumes"],
            json!([{"name": "v", "hostPath": {"path": "/d"}}])
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
