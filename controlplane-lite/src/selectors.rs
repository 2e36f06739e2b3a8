//! Label selectors (equality- and set-based, as `kubectl -l` sends them) and field selectors.
use serde_json::Value;

use crate::resources::Resource;

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Requirement {
    /// `key=value`, `key==value`.
    Eq(String, String),
    /// `key!=value`.
    NotEq(String, String),
    /// `key in (a,b)`.
    In(String, Vec<String>),
    /// `key notin (a,b)`.
    NotIn(String, Vec<String>),
    /// `key`.
    Exists(String),
    /// `!key`.
    NotExists(String),
}

/// A parsed label selector: all requirements must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LabelSelector(pub Vec<Requirement>);

/// Splits at commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<&str> {
    let (mut parts, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&s[start..]);
    parts
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let inner = rest
        .trim()
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a (value,…) list, found {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

impl LabelSelector {
    /// Parses `kubectl -l` syntax. Errors name the offending part.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        for part in split_top(s)
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let words: Vec<&str> = part.split_whitespace().collect();
            let req = if let Some(key) = part.strip_prefix('!') {
                Requirement::NotExists(key.trim().to_string())
            } else if words.len() >= 2 && words[1] == "in" {
                Requirement::In(
                    words[0].to_string(),
                    set_values(part.split_once(" in ").map_or("", |(_, v)| v))?,
                )
            } else if words.len() >= 2 && words[1] == "notin" {
                Requirement::NotIn(
                    words[0].to_string(),
                    set_values(part.split_once(" notin ").map_or("", |(_, v)| v))?,
                )
            } else if let Some((k, v)) = part.split_once("!=") {
                Requirement::NotEq(k.trim().into(), v.trim().into())
            } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement::Eq(k.trim().into(), v.trim().into())
            } else if words.len() == 1 {
                Requirement::Exists(part.to_string())
            } else {
                return Err(format!("unable to parse requirement: {part:?}"));
            };
            reqs.push(req);
        }
        Ok(LabelSelector(reqs))
    }

    /// Whether an object with these labels matches.
    pub fn matches(&self, labels: &serde_json::Map<String, Value>) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Requirement::Eq(k, v) => get(k) == Some(v.as_str()),
            Requirement::NotEq(k, v) => get(k) != Some(v.as_str()),
            Requirement::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Requirement::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Requirement::Exists(k) => get(k).is_some(),
            Requirement::NotExists(k) => get(k).is_none(),
        })
    }
}

/// The `field=value` / `field!=value` requirements of a field selector, trimmed.
fn split_fields(s: &str) -> Result<Vec<(String, bool, String)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
            (k, false, v)
        } else if let Some((k, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
            (k, true, v)
        } else {
            return Err(format!("invalid field selector: {part:?}"));
        };
        out.push((k.trim().to_string(), eq, v.trim().to_string()));
    }
    Ok(out)
}

/// A field selector: `path=value` / `path!=value` pairs on dotted paths.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FieldSelector(pub Vec<(String, bool, String)>);

/// The fields a field selector may name (kube-apiserver refuses others too).
pub const SUPPORTED_FIELDS: [&str; 4] = [
    "metadata.name",
    "metadata.namespace",
    "spec.nodeName",
    "status.phase",
];

/// The fields an Event field selector may name, as kube-apiserver's event registry has them
/// (`source` is `source.component`).
pub const EVENT_FIELDS: [&str; 13] = [
    "metadata.name",
    "metadata.namespace",
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

impl FieldSelector {
    /// Parses `a.b=c,d!=e` for objects of `res`: Events take [`EVENT_FIELDS`] (through
    /// events.k8s.io also under their names there, `regarding.name`…), everything else
    /// [`SUPPORTED_FIELDS`]. Fields are kept as paths into the stored object.
    pub fn parse_for(res: &Resource, s: &str) -> Result<Self, String> {
        if res.kind != "Event" {
            return Self::parse(s);
        }
        let mut out = Vec::new();
        for (field, eq, value) in split_fields(s)? {
            let core = if res.group == crate::events::GROUP {
                crate::events::convert::core_field(&field)
            } else {
                field.clone()
            };
            if !EVENT_FIELDS.contains(&core.as_str()) {
                return Err(format!("field label not supported: {field}"));
            }
            let path = if core == "source" {
                "source.component".to_string()
            } else {
                core
            };
            out.push((path, eq, value));
        }
        Ok(FieldSelector(out))
    }

    /// Parses `a.b=c,d!=e`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let fields = split_fields(s)?;
        if let Some((k, _, _)) = fields
            .iter()
            .find(|(k, _, _)| !SUPPORTED_FIELDS.contains(&k.as_str()))
        {
            return Err(format!("field label not supported: {k}"));
        }
        Ok(FieldSelector(fields))
    }

    /// Whether `obj` matches.
    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(path, eq, want)| {
            let ptr = format!("/{}", path.replace('.', "/"));
            let got = obj.pointer(&ptr).and_then(Value::as_str).unwrap_or("");
            (got == want) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn labels(v: Value) -> serde_json::Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn equality_and_set_based_selectors_match_as_kubectl_means_them() {
        let l = labels(json!({"app": "echo", "env": "prod", "tier": "web"}));
        for (sel, want) in [
            ("app=echo", true),
            ("app==echo,env=prod", true),
            ("app!=echo", false),
            ("env in (prod,qa)", true),
            ("env in (qa)", false),
            ("tier notin (cache)", true),
            ("tier notin (web, cache)", false),
            ("!canary", true),
            ("canary", false),
            ("app", true),
            ("env in (prod,qa),!canary,tier notin (cache)", true),
        ] {
            assert_eq!(
                LabelSelector::parse(sel).unwrap().matches(&l),
                want,
                "{sel}"
            );
        }
        assert!(LabelSelector::parse("env in prod").is_err());
        assert!(
            LabelSelector::parse("").unwrap().matches(&l),
            "the empty selector matches everything"
        );
    }

    #[test]
    fn field_selectors_match_dotted_paths_and_refuse_unknown_fields() {
        let pod =
            json!({"metadata": {"name": "a", "namespace": "default"}, "spec": {"nodeName": "n1"}});
        assert!(FieldSelector::parse("spec.nodeName=n1")
            .unwrap()
            .matches(&pod));
        assert!(!FieldSelector::parse("spec.nodeName=n2")
            .unwrap()
            .matches(&pod));
        assert!(
            FieldSelector::parse("metadata.name!=b,metadata.namespace=default")
                .unwrap()
                .matches(&pod)
        );
        assert!(FieldSelector::parse("spec.foo=x").is_err());
        let event = json!({"involvedObject": {"kind": "Pod", "name": "p", "uid": "u"},
            "source": {"component": "kubelet"}, "type": "Warning"});
        let core = crate::resources::find("", "v1", "events").unwrap();
        let newer = crate::resources::find("events.k8s.io", "v1", "events").unwrap();
        let sel = "involvedObject.name=p,involvedObject.kind=Pod,involvedObject.uid=u,involvedObject.namespace=,source=kubelet,type=Warning";
        assert!(FieldSelector::parse_for(core, sel).unwrap().matches(&event));
        assert!(FieldSelector::parse_for(newer, "regarding.name=p")
            .unwrap()
            .matches(&event));
        assert!(!FieldSelector::parse_for(core, "reason=Scheduled")
            .unwrap()
            .matches(&event));
        assert!(FieldSelector::parse_for(core, "spec.nodeName=n1").is_err());
    }
}
