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
    let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) else {
        return;
    };
    for (k, v) in labels {
        let (prefix, name) = k
            .rsplit_once('/')
            .map_or((None, k.as_str()), |(p, n)| (Some(p), n));
        if !qualified_name_part(name) || prefix.is_some_and(|p| !is_dns1123_subdomain(p)) {
            causes.push(Cause::invalid("metadata.labels", format!("{k:?}"), "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"));
        }
        match v.as_str() {
            Some("") => {}
            Some(s) if qualified_name_part(s) => {}
            _ => causes.push(Cause::invalid("metadata.labels", v, "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')")),
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
