//! Field validation with Kubernetes' own messages.
use serde_json::Value;

use crate::status::Cause;

/// The message kube-apiserver gives for a bad DNS-1123 subdomain.
pub const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
/// The message for a bad DNS-1123 label.
pub const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
/// The message for a bad DNS-1035 label.
pub const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";
/// The message for a port out of range.
pub const PORT_RANGE_MSG: &str = "must be between 1 and 65535, inclusive";

fn label_chars(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns1123_label(s: &str) -> bool {
    s.len() <= 63 && label_chars(s)
}

/// Dot-separated DNS-1123 labels, at most 253.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(label_chars)
}

/// `[a-z]([-a-z0-9]*[a-z0-9])?`, at most 63.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn qualified_name_part(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

/// Validates `metadata.labels` keys and values.
pub fn labels(obj: &Value, causes: &mut Vec<Cause>) {
    label_map(obj.pointer("/metadata/labels"), "metadata.labels", causes);
}

/// Validates a map of label keys and values at `field` (labels, a Service's `spec.selector`).
pub fn label_map(map: Option<&Value>, field: &str, causes: &mut Vec<Cause>) {
    let Some(labels) = map.and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
        if !qualified_name_part(name) || prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
            causes.push(Cause::invalid(field, format!("{k:?}"), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        match v.as_str() {
            Some("") => {}
            Some(s) if qualified_name_part(s) => {}
            _ => causes.push(Cause::invalid(field, v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")),
        }
    }
}

/// Validates `metadata.name` with the rule of the resource.
pub fn name(kind: &str, name: &str, causes: &mut Vec<Cause>) {
    let (ok, msg) = match kind {
        "Service" => (is_dns1035_label(name), DNS1035_LABEL_MSG),
        "Namespace" => (is_dns1123_label(name), DNS1123_LABEL_MSG),
        _ => (is_dns1123_subdomain(name), DNS1123_SUBDOMAIN_MSG),
    };
    if name.is_empty() {
        causes.push(Cause {
            reason: "FieldValueRequired",
            field: "metadata.name".into(),
            message: "Required value: name or generateName is required".into(),
        });
    } else if !ok {
        causes.push(Cause::invalid("metadata.name", format!("{name:?}"), msg));
    }
}

/// How a request wants unknown fields treated (`?fieldValidation=`), as kube-apiserver does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FieldValidation {
    /// Reject the request (`400 BadRequest`, "strict decoding error").
    Strict,
    /// Accept, with a `Warning` header per unknown field (the server's default).
    Warn,
    /// Accept silently.
    Ignore,
}

impl FieldValidation {
    /// Parses the query parameter; `None` is the server default, `Warn`.
    pub fn parse(v: Option<&str>) -> Result<Self, String> {
        match v {
            None | Some("") | Some("Warn") => Ok(Self::Warn),
            Some("Strict") => Ok(Self::Strict),
            Some("Ignore") => Ok(Self::Ignore),
            Some(other) => Err(format!(
                "fieldValidation parameter unsupported: {other}; valid values are: Ignore, Warn, Strict"
            )),
        }
    }
}

/// One step of a field path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An object key.
    Key(String),
    /// A list index.
    Index(usize),
}

/// Where a field is, e.g. `spec.ports[0].colour`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldPath(pub Vec<Step>);

impl std::fmt::Display for FieldPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, step) in self.0.iter().enumerate() {
            match step {
                Step::Key(k) if i == 0 => write!(f, "{k}")?,
                Step::Key(k) => write!(f, ".{k}")?,
                Step::Index(n) => write!(f, "[{n}]")?,
            }
        }
        Ok(())
    }
}

impl FieldPath {
    /// Removes the field from `obj` (kube-apiserver drops the unknown fields it does not refuse).
    pub fn remove_from(&self, obj: &mut Value) {
        let Some((last, parents)) = self.0.split_last() else {
            return;
        };
        let mut cur = obj;
        for step in parents {
            let next = match step {
                Step::Key(k) => cur.get_mut(k.as_str()),
                Step::Index(n) => cur.get_mut(*n),
            };
            match next {
                Some(v) => cur = v,
                None => return,
            }
        }
        if let (Step::Key(k), Some(m)) = (last, cur.as_object_mut()) {
            m.remove(k);
        }
    }
}

/// Fields of `obj` that the schema of `kind` does not declare (the typed structs of
/// k8s-openapi), named as kube-apiserver names them: `spec.ports[0].colour`. `Err` when a
/// declared field has the wrong type (kube-apiserver refuses those whatever the directive).
pub fn unknown_fields(group: &str, kind: &str, obj: &Value) -> Result<Vec<FieldPath>, String> {
    use k8s_openapi::api::core::v1 as core;
    use k8s_openapi::api::discovery::v1 as discovery;
    use k8s_openapi::api::events::v1 as events;
    match kind {
        "Event" if group == crate::events::GROUP => unknown::<events::Event>(obj),
        "Event" => unknown::<core::Event>(obj),
        "Namespace" => unknown::<core::Namespace>(obj),
        "Node" => unknown::<core::Node>(obj),
        "Pod" => unknown::<core::Pod>(obj),
        "Service" => unknown::<core::Service>(obj),
        #[allow(deprecated)]
        "Endpoints" => unknown::<core::Endpoints>(obj),
        "EndpointSlice" => unknown::<discovery::EndpointSlice>(obj),
        _ => Ok(Vec::new()),
    }
}

fn unknown<T: serde::de::DeserializeOwned>(obj: &Value) -> Result<Vec<FieldPath>, String> {
    let mut found = Vec::new();
    let decoded: Result<T, _> =
        serde_ignored::deserialize(obj.clone(), |path| found.push(field_path(&path)));
    match decoded {
        Ok(_) => Ok(found),
        // A required field left out is for validation to name (a 422), not a decoding error.
        Err(e) if e.to_string().starts_with("missing field") => Ok(found),
        Err(e) => Err(e.to_string()),
    }
}

fn field_path(p: &serde_ignored::Path<'_>) -> FieldPath {
    use serde_ignored::Path;
    match p {
        Path::Root => FieldPath(Vec::new()),
        Path::Seq { parent, index } => {
            let mut f = field_path(parent);
            f.0.push(Step::Index(*index));
            f
        }
        Path::Map { parent, key } => {
            let mut f = field_path(parent);
            f.0.push(Step::Key(key.clone()));
            f
        }
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// `strict decoding error: unknown field "a", unknown field "b"`, kube-apiserver's wording.
pub fn strict_decoding_error(fields: &[FieldPath]) -> String {
    let list: Vec<String> = fields
        .iter()
        .map(|f| format!("unknown field \"{f}\""))
        .collect();
    format!("strict decoding error: {}", list.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_fields_are_named_by_their_path_and_can_be_dropped() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "colour": 1},
            "spec": {"bogus": true, "ports": [{"port": 80}, {"port": 81, "nodeport": 3}], "selector": {"any-key": "x"}}});
        let found = unknown_fields("", "Service", &svc).unwrap();
        let names: Vec<String> = found.iter().map(ToString::to_string).collect();
        assert_eq!(
            names,
            ["metadata.colour", "spec.bogus", "spec.ports[1].nodeport"]
        );
        let mut pruned = svc.clone();
        found.iter().for_each(|f| f.remove_from(&mut pruned));
        assert!(unknown_fields("", "Service", &pruned).unwrap().is_empty());
        assert_eq!(pruned["spec"]["ports"][1], json!({"port": 81}));
        let ok = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
            "spec": {"containers": [{"name": "c", "image": "x", "ports": [{"containerPort": 80}]}]}, "status": {}});
        assert!(unknown_fields("", "Pod", &ok).unwrap().is_empty());
        let wrong_type =
            json!({"apiVersion": "v1", "kind": "Service", "spec": {"ports": [{"port": "x"}]}});
        assert!(unknown_fields("", "Service", &wrong_type).is_err());
        let path = |k: &str| FieldPath(vec![Step::Key("spec".into()), Step::Key(k.into())]);
        assert_eq!(
            strict_decoding_error(&[path("a"), path("b")]),
            r#"strict decoding error: unknown field "spec.a", unknown field "spec.b""#
        );
    }

    #[test]
    fn names_follow_the_dns_rules_of_their_kind() {
        assert!(is_dns1123_subdomain("echo-1.example"));
        assert!(!is_dns1123_subdomain("Echo"));
        assert!(!is_dns1123_subdomain("-a"));
        assert!(is_dns1035_label("web"));
        assert!(
            !is_dns1035_label("1web"),
            "services must start with a letter"
        );
        let mut causes = Vec::new();
        name("Service", "My_Svc", &mut causes);
        assert_eq!(causes[0].field, "metadata.name");
        assert!(causes[0].message.contains("DNS-1035"));
    }

    #[test]
    fn label_keys_and_values_are_checked() {
        let mut causes = Vec::new();
        labels(
            &json!({"metadata": {"labels": {"app": "ok", "example.com/tier": "web", "bad key": "x", "v": "-bad"}}}),
            &mut causes,
        );
        assert_eq!(causes.len(), 2);
    }
}
