//! Authorization of authenticated users, as kube-apiserver's `Node,RBAC` authorizers would
//! decide for the identities a switchyard lab has.
//!
//! Invariant: a request reaches a verb only when [`authorize`] allows it; otherwise it gets
//! kube-apiserver's 403 `Forbidden` Status (`<resource> "<name>" is forbidden: User "<user>"
//! cannot <verb> resource "<resource>" in API group "<group>" …`). The rules, in order:
//! - administrators — members of `system:masters`, and (compatibility with token files written
//!   before authorization existed) users of a token-file line without groups, unless their name
//!   is a node's (`system:node:…`) or a service account's (`system:serviceaccount:…`) — may do
//!   anything;
//! - nodes — user `system:node:<name>` in group `system:nodes` — may get/list/watch nodes,
//!   pods, services, endpoints, endpointslices and namespaces; create, update and patch their
//!   own Node and its status; update and patch the status of pods bound to them
//!   (`spec.nodeName`) and delete those pods; create events;
//! - the switchyard agent — group `switchyard:agents` or user
//!   `system:serviceaccount:kube-system:switchyard` — may do exactly what `deploy/`'s
//!   ClusterRole grants ([`AGENT_RULES`]: list/watch services and endpointslices
//!   (discovery.k8s.io), get/list/watch nodes, create and patch events (events.k8s.io)), so the
//!   lab exercises the permissions a real cluster gives it;
//! - viewers — group `switchyard:viewers`, what a ClusterRoleBinding to the `view` ClusterRole
//!   gives on a cluster (controlplane-lite has no RBAC objects) — may get/list/watch every
//!   resource;
//! - everybody else authenticated: discovery, health checks and access reviews only;
//! - subresources other than `status` (`pods/log`, `pods/exec`, `pods/attach`,
//!   `pods/portforward`): administrators only.
use serde_json::Value;

use crate::auth::User;
use crate::status::ApiError;

/// The group whose members may do anything.
pub const MASTERS: &str = "system:masters";
/// The group of node identities.
pub const NODES: &str = "system:nodes";
/// The prefix of a node's user name.
pub const NODE_PREFIX: &str = "system:node:";
/// The group of switchyard agents.
pub const AGENTS: &str = "switchyard:agents";
/// The group that may read everything (the `view` ClusterRole's stand-in).
pub const VIEWERS: &str = "switchyard:viewers";
/// The service account switchyard agents run as in a cluster.
pub const AGENT_ACCOUNT: &str = "system:serviceaccount:kube-system:switchyard";

/// What a request asks to do, in kube-apiserver's authorization terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Resource plural.
    pub resource: String,
    /// Subresource (`status`) or "".
    pub subresource: String,
    /// Namespace or "".
    pub namespace: String,
    /// Object name or "" (collections; a create's is its object's).
    pub name: String,
}

/// What the node rules need to know about the object a request touches.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Facts {
    /// For pods: the node the stored pod is bound to.
    pub pod_node: Option<String>,
}

/// A refusal: kube-apiserver's reason text (may be empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Denied(pub String);

const READ: [&str; 3] = ["get", "list", "watch"];

/// What the switchyard agent may do, as `(group, resource, verbs)`: `deploy/01-rbac.yaml`'s
/// ClusterRole `switchyard`, rule for rule (tests/deploy_rbac.rs checks that they are equal;
/// the agent's own tests check that the role is what it uses). Subresources are not included.
pub const AGENT_RULES: [(&str, &str, &[&str]); 4] = [
    ("", "services", &["list", "watch"]),
    ("", "nodes", &["get", "list", "watch"]),
    ("discovery.k8s.io", "endpointslices", &["list", "watch"]),
    ("events.k8s.io", "events", &["create", "patch"]),
];

fn is_admin(user: &User) -> bool {
    user.groups.iter().any(|g| g == MASTERS)
        || (user.groups.is_empty()
            && !user.name.starts_with(NODE_PREFIX)
            && !user.name.starts_with("system:serviceaccount:"))
}

/// The node a user is, if a node identity.
pub fn node_of(user: &User) -> Option<&str> {
    let name = user.name.strip_prefix(NODE_PREFIX)?;
    (user.groups.iter().any(|g| g == NODES) && !name.is_empty()).then_some(name)
}

fn is_agent(user: &User) -> bool {
    user.groups.iter().any(|g| g == AGENTS) || user.name == AGENT_ACCOUNT
}

fn is_events(a: &Attributes) -> bool {
    a.resource == "events" && (a.group.is_empty() || a.group == "events.k8s.io")
}

/// Decides whether `user` may do `a`.
pub fn decide(user: &User, a: &Attributes, facts: &Facts) -> Result<(), Denied> {
    if is_admin(user) {
        return Ok(());
    }
    // Logs, exec, attach, port-forward and every other subresource but status: administrators
    // only (none of the rules below grants them).
    if !a.subresource.is_empty() && a.subresource != "status" {
        return Err(Denied(String::new()));
    }
    if let Some(node) = node_of(user) {
        return decide_node(node, a, facts);
    }
    if user.groups.iter().any(|g| g == VIEWERS) && READ.contains(&a.verb.as_str()) {
        return Ok(());
    }
    if is_agent(user)
        && a.subresource.is_empty()
        && AGENT_RULES.iter().any(|(group, resource, verbs)| {
            a.group == *group && a.resource == *resource && verbs.contains(&a.verb.as_str())
        })
    {
        return Ok(());
    }
    Err(Denied(String::new()))
}

/// What nodes may get, list and watch.
pub const NODE_READS: [&str; 6] = [
    "nodes",
    "pods",
    "services",
    "endpoints",
    "endpointslices",
    "namespaces",
];

fn decide_node(node: &str, a: &Attributes, facts: &Facts) -> Result<(), Denied> {
    let verb = a.verb.as_str();
    if READ.contains(&verb) && NODE_READS.contains(&a.resource.as_str()) {
        return Ok(());
    }
    if is_events(a) && verb == "create" {
        return Ok(());
    }
    match (a.resource.as_str(), verb) {
        ("nodes", "create" | "update" | "patch") => {
            if a.name == node {
                Ok(())
            } else {
                Err(Denied(format!(
                    "node '{node}' cannot modify node '{}'",
                    a.name
                )))
            }
        }
        ("pods", "update" | "patch" | "delete")
            if verb == "delete" || a.subresource == "status" =>
        {
            match facts.pod_node.as_deref() {
                Some(bound) if bound == node => Ok(()),
                _ => Err(Denied(format!(
                    "node '{node}' can only {verb} pods bound to it"
                ))),
            }
        }
        _ => Err(Denied(String::new())),
    }
}

/// `pods` or `endpointslices.discovery.k8s.io`.
fn qualified(resource: &str, group: &str) -> String {
    if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    }
}

/// The 403 kube-apiserver answers (`responsewriters.Forbidden`, `apierrors.NewForbidden`).
pub fn forbidden(user: &User, a: &Attributes, denied: &Denied) -> ApiError {
    let resource = if a.subresource.is_empty() {
        a.resource.clone()
    } else {
        format!("{}/{}", a.resource, a.subresource)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {:?}", a.namespace)
    };
    let mut why = format!(
        "User {:?} cannot {} resource {resource:?} in API group {:?} {scope}",
        user.name, a.verb, a.group
    );
    if !denied.0.is_empty() {
        why = format!("{why}: {}", denied.0);
    }
    let what = qualified(&a.resource, &a.group);
    let message = if a.name.is_empty() {
        format!("{what} is forbidden: {why}")
    } else {
        format!("{what} {:?} is forbidden: {why}", a.name)
    };
    ApiError {
        code: 403,
        reason: "Forbidden",
        message,
        details: Some(serde_json::json!({"name": a.name, "group": a.group, "kind": a.resource})),
    }
}

/// Answers a `SelfSubjectAccessReview` (`kubectl auth can-i`) for `user`: the review with its
/// `status.allowed` (and `status.reason` when refused with one).
pub fn self_review(user: &User, mut review: Value) -> Result<Value, ApiError> {
    let spec = review.get("spec").cloned().unwrap_or(Value::Null);
    let field = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
    let allowed = if let Some(ra) = spec.get("resourceAttributes") {
        let a = Attributes {
            verb: field(ra, "verb"),
            group: field(ra, "group"),
            resource: field(ra, "resource"),
            subresource: field(ra, "subresource"),
            namespace: field(ra, "namespace"),
            name: field(ra, "name"),
        };
        // Access reviews name no object: the node rules that look at one say no.
        decide(user, &a, &Facts::default())
    } else if let Some(na) = spec.get("nonResourceAttributes") {
        let path = field(na, "path");
        if is_admin(user) || (field(na, "verb") == "get" && is_public_path(&path)) {
            Ok(())
        } else {
            Err(Denied(String::new()))
        }
    } else {
        return Err(ApiError::invalid(
            "SelfSubjectAccessReview",
            "authorization.k8s.io",
            "",
            &[crate::status::Cause {
                reason: "FieldValueRequired",
                field: "spec.resourceAttributes".into(),
                message: "Required value: exactly one of nonResourceAttributes or resourceAttributes must be specified".into(),
            }],
        ));
    };
    if !review.is_object() {
        review = serde_json::json!({});
    }
    review["apiVersion"] = "authorization.k8s.io/v1".into();
    review["kind"] = "SelfSubjectAccessReview".into();
    review["metadata"] = serde_json::json!({"creationTimestamp": null});
    review["status"] = match allowed {
        Ok(()) => serde_json::json!({"allowed": true}),
        Err(Denied(r)) if r.is_empty() => serde_json::json!({"allowed": false}),
        Err(Denied(r)) => serde_json::json!({"allowed": false, "reason": r}),
    };
    Ok(review)
}

/// Paths every authenticated user may read: discovery, OpenAPI, version and health checks.
pub fn is_public_path(path: &str) -> bool {
    let p = path.trim_end_matches('/');
    ["/healthz", "/livez", "/readyz", "/version", "/openapi"]
        .iter()
        .any(|x| p == *x || p.starts_with(&format!("{x}/")))
        || p == "/api"
        || p == "/apis"
        || is_discovery(p)
}

/// `/api/v1`, `/apis/<group>`, `/apis/<group>/<version>`.
fn is_discovery(p: &str) -> bool {
    let parts: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
    matches!(parts.as_slice(), ["api", _] | ["apis", _] | ["apis", _, _])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, groups: &[&str]) -> User {
        User {
            name: name.into(),
            uid: "u".into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    fn attrs(verb: &str, resource: &str, ns: &str, name: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn a_node_may_modify_only_its_own_node_with_kube_apiservers_message() {
        let n1 = user("system:node:n1", &[NODES]);
        let none = Facts::default();
        assert!(decide(&n1, &attrs("patch", "nodes", "", "n1"), &none).is_ok());
        let a = attrs("patch", "nodes", "", "n2");
        let denied = decide(&n1, &a, &none).unwrap_err();
        assert_eq!(
            forbidden(&n1, &a, &denied).message,
            "nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot modify node 'n2'"
        );
        assert!(decide(&n1, &attrs("delete", "nodes", "", "n1"), &none).is_err());
    }

    #[test]
    fn only_administrators_get_logs_exec_and_port_forward() {
        let none = Facts::default();
        let on_pod = |verb: &str, sub: &str| Attributes {
            subresource: sub.into(),
            ..attrs(verb, "pods", "default", "web")
        };
        let node = user("system:node:n1", &[NODES]);
        let agent = user(AGENT_ACCOUNT, &[]);
        for (verb, sub) in [
            ("get", "log"),
            ("create", "exec"),
            ("create", "portforward"),
        ] {
            assert!(decide(&user("admin", &[MASTERS]), &on_pod(verb, sub), &none).is_ok());
            assert!(decide(&node, &on_pod(verb, sub), &none).is_err(), "{sub}");
            assert!(decide(&agent, &on_pod(verb, sub), &none).is_err(), "{sub}");
        }
        let a = on_pod("get", "log");
        let d = decide(&node, &a, &none).unwrap_err();
        assert_eq!(
            forbidden(&node, &a, &d).message,
            "pods \"web\" is forbidden: User \"system:node:n1\" cannot get resource \"pods/log\" in API group \"\" in the namespace \"default\""
        );
        assert!(decide(&node, &on_pod("get", "status"), &none).is_ok());
    }

    #[test]
    fn who_is_an_administrator() {
        assert!(is_admin(&user("admin", &[MASTERS])));
        assert!(is_admin(&user("lab", &[])), "a line without groups");
        assert!(!is_admin(&user("system:node:n1", &[])));
        assert!(!is_admin(&user(AGENT_ACCOUNT, &[])));
        assert!(!is_admin(&user("bob", &["devs"])));
        let bob = user("bob", &["devs"]);
        let a = attrs("list", "pods", "default", "");
        let d = decide(&bob, &a, &Facts::default()).unwrap_err();
        assert_eq!(
            forbidden(&bob, &a, &d).message,
            "pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""
        );
    }

    #[test]
    fn a_viewer_reads_everything_and_writes_nothing() {
        let sa = user("system:serviceaccount:default:default", &[VIEWERS]);
        let none = Facts::default();
        for verb in READ {
            assert!(decide(&sa, &attrs(verb, "services", "", ""), &none).is_ok());
        }
        assert!(decide(&sa, &attrs("create", "services", "default", "x"), &none).is_err());
        assert!(decide(&sa, &attrs("delete", "pods", "default", "x"), &none).is_err());
    }
}
