//! controlplane-lite grants the switchyard agent's service account exactly `deploy/`'s
//! ClusterRole: for every resource it serves (and its `status` subresource) and every verb, the
//! authorizer allows the agent exactly what a rule of the role names. With the agent's own test
//! (agent/tests/deploy_rbac.rs: the role is what the agent uses), the lab's permissions cannot
//! drift from a real cluster's.
use switchyard_cp::auth::User;
use switchyard_cp::authz::{decide, Attributes, Facts, AGENTS, AGENT_ACCOUNT};
use switchyard_cp::resources::RESOURCES;
use switchyard_lab::deploy::{deploy_dir, grants, Grant, Manifests};
use switchyard_lab::lab::workspace_root;

const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

#[test]
fn the_agents_service_account_may_do_exactly_what_the_cluster_role_grants() {
    let role = grants(
        Manifests::load(&deploy_dir(&workspace_root()))
            .unwrap()
            .cluster_role("switchyard")
            .unwrap(),
    );
    let identities = [
        User {
            name: AGENT_ACCOUNT.into(),
            uid: "uid-sa".into(),
            groups: vec![
                "system:serviceaccounts".into(),
                "system:serviceaccounts:kube-system".into(),
            ],
        },
        User {
            name: "agent".into(),
            uid: "uid-agent".into(),
            groups: vec![AGENTS.into()],
        },
    ];
    let mut checked = 0;
    let mut wrong = Vec::new();
    for user in &identities {
        for r in RESOURCES {
            for sub in ["", "status"] {
                for verb in VERBS {
                    let resource = if sub.is_empty() {
                        r.plural.to_string()
                    } else {
                        format!("{}/{sub}", r.plural)
                    };
                    let granted = role.contains(&Grant::new(r.group, &resource, verb));
                    let a = Attributes {
                        verb: verb.into(),
                        group: r.group.into(),
                        resource: r.plural.into(),
                        subresource: sub.into(),
                        namespace: if r.namespaced {
                            "default".into()
                        } else {
                            String::new()
                        },
                        name: if matches!(verb, "list" | "watch" | "create" | "deletecollection") {
                            String::new()
                        } else {
                            "x".into()
                        },
                    };
                    let allowed = decide(user, &a, &Facts::default()).is_ok();
                    checked += 1;
                    if allowed != granted {
                        wrong.push(format!(
                            "{}: {verb} {resource} ({:?}): controlplane-lite {}, deploy/ {}",
                            user.name,
                            r.group,
                            if allowed { "allows" } else { "refuses" },
                            if granted { "grants" } else { "does not grant" },
                        ));
                    }
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // Every rule of the role names something controlplane-lite serves (else it was not checked).
    for g in &role {
        assert!(
            RESOURCES
                .iter()
                .any(|r| r.group == g.group && r.plural == g.resource),
            "deploy/ grants {g}, which controlplane-lite does not serve"
        );
    }
    assert_eq!(checked, 2 * RESOURCES.len() * 2 * VERBS.len());
}
