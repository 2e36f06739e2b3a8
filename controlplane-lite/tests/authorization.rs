//! Authorization through kubectl with one kubeconfig per identity of the token file: the
//! administrator (`system:masters`, and a line without groups), a node (`system:node:n1` in
//! `system:nodes`), the switchyard agent and an ordinary user, each getting exactly what
//! docs/api.md promises and kube-apiserver's 403 message otherwise; podCIDRs validated for all.
mod harness;

use std::path::{Path, PathBuf};

use harness::{free_port, kubectl, Cp, Scratch, TOKEN};

const TOKENS: &str = concat!(
    "test-token-5f2a9c,admin,admin-uid,\"system:masters\"\n",
    "node1-token,system:node:n1,uid-n1,\"system:nodes\"\n",
    "agent-token,system:serviceaccount:kube-system:switchyard,uid-agent\n",
    "bob-token,bob,uid-bob,\"devs\"\n",
    "legacy-token,lab,uid-lab\n",
);

/// A server with the identities of [`TOKENS`], and a kubeconfig for `token` beside its own.
struct Cluster {
    cp: Cp,
    _dir: Scratch,
}

impl Cluster {
    fn start() -> Cluster {
        let dir = Scratch::new("authz");
        std::fs::write(dir.0.join("tokens.csv"), TOKENS).unwrap();
        let cp = Cp::start_in(&dir.0, free_port());
        Cluster { cp, _dir: dir }
    }

    /// A kubeconfig like the server's, with `token`.
    fn as_user(&self, who: &str, token: &str) -> PathBuf {
        let text = std::fs::read_to_string(&self.cp.kubeconfig).unwrap();
        let path = self.cp.dir.join(format!("kubeconfig-{who}"));
        std::fs::write(&path, text.replace(TOKEN, token)).unwrap();
        path
    }
}

#[track_caller]
fn ok(kc: &Path, args: &[&str]) -> String {
    kubectl(kc, args).ok()
}

#[track_caller]
fn refused(kc: &Path, args: &[&str]) -> String {
    kubectl(kc, args).fails()
}

const NODE: &str = "apiVersion: v1\nkind: Node\nmetadata:\n  name: NAME\n";

fn pod_on(name: &str, node: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\nspec:\n  nodeName: {node}\n  containers:\n  - name: c\n    image: x\n")
}

#[test]
fn a_node_may_register_and_modify_only_itself_and_its_pods() {
    let c = Cluster::start();
    let n1 = c.as_user("n1", "node1-token");
    let admin = &c.cp.kubeconfig;
    let out = harness::kubectl_stdin_as(&n1, &["create", "-f", "-"], &NODE.replace("NAME", "n1"));
    assert!(out.success, "{}", out.stderr);
    let e =
        harness::kubectl_stdin_as(&n1, &["create", "-f", "-"], &NODE.replace("NAME", "n2")).fails();
    assert!(
        e.contains("nodes \"n2\" is forbidden: User \"system:node:n1\" cannot create resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot modify node 'n2'"),
        "{e}"
    );
    harness::kubectl_stdin_as(admin, &["create", "-f", "-"], &NODE.replace("NAME", "n2")).ok();
    ok(&n1, &["label", "node", "n1", "zone=a"]);
    let e = refused(&n1, &["label", "node", "n2", "zone=a"]);
    assert!(
        e.contains("nodes \"n2\" is forbidden: User \"system:node:n1\" cannot patch resource \"nodes\" in API group \"\" at the cluster scope: node 'n1' cannot modify node 'n2'"),
        "{e}"
    );
    // Another node's podCIDR, through the status subresource too.
    let e = refused(
        &n1,
        &[
            "patch",
            "node",
            "n2",
            "--subresource=status",
            "--type=merge",
            "-p",
            "{\"status\":{\"phase\":\"x\"}}",
        ],
    );
    assert!(e.contains("cannot patch resource \"nodes/status\""), "{e}");
    // Its own podCIDR is immutable, for nodes and administrators alike.
    for kc in [&n1, admin] {
        let e = refused(
            kc,
            &[
                "patch",
                "node",
                "n1",
                "--type=merge",
                "-p",
                "{\"spec\":{\"podCIDR\":\"10.244.77.0/24\",\"podCIDRs\":[\"10.244.77.0/24\"]}}",
            ],
        );
        assert!(
            e.contains("Node \"n1\" is invalid: spec.podCIDRs: Forbidden: node updates may not change podCIDR except from \"\" to valid"),
            "{e}"
        );
    }
    // Reads.
    for what in switchyard_cp::authz::NODE_READS {
        ok(&n1, &["get", what, "-A"]);
    }
    let e = refused(&n1, &["create", "service", "clusterip", "web", "--tcp=80"]);
    assert!(
        e.contains("services is forbidden: User \"system:node:n1\" cannot create resource \"services\" in API group \"\" in the namespace \"default\""),
        "{e}"
    );
    // Pods: the status and deletion of its own only.
    harness::kubectl_stdin_as(admin, &["create", "-f", "-"], &pod_on("mine", "n1")).ok();
    harness::kubectl_stdin_as(admin, &["create", "-f", "-"], &pod_on("theirs", "n2")).ok();
    let status = "{\"status\":{\"phase\":\"Running\"}}";
    ok(
        &n1,
        &[
            "patch",
            "pod",
            "mine",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    );
    let e = refused(
        &n1,
        &[
            "patch",
            "pod",
            "theirs",
            "--subresource=status",
            "--type=merge",
            "-p",
            status,
        ],
    );
    assert!(e.contains("pods \"theirs\" is forbidden: User \"system:node:n1\" cannot patch resource \"pods/status\" in API group \"\" in the namespace \"default\""), "{e}");
    let e = refused(&n1, &["label", "pod", "mine", "x=y"]);
    assert!(e.contains("cannot patch resource \"pods\""), "{e}");
    let e = refused(&n1, &["delete", "pod", "theirs", "--wait=false"]);
    assert!(e.contains("cannot delete resource \"pods\""), "{e}");
    ok(&n1, &["delete", "pod", "mine", "--wait=false"]);
    // Events.
    let event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\ninvolvedObject:\n  kind: Node\n  name: n1\nreason: Started\nmessage: up\ntype: Normal\n";
    harness::kubectl_stdin_as(&n1, &["create", "-f", "-"], event).ok();
    refused(&n1, &["delete", "event", "e1"]);
    refused(&n1, &["delete", "node", "n1"]);
}

#[test]
fn the_agent_reads_what_it_serves_and_writes_only_events() {
    let c = Cluster::start();
    let agent = c.as_user("agent", "agent-token");
    for what in ["services", "endpointslices", "nodes"] {
        ok(&agent, &["get", what, "-A"]);
    }
    let e = refused(&agent, &["get", "pods", "-A"]);
    assert!(
        e.contains("cannot list resource \"pods\" in API group \"\""),
        "{e}"
    );
    let e = refused(&agent, &["get", "namespaces"]);
    assert!(
        e.contains("namespaces is forbidden: User \"system:serviceaccount:kube-system:switchyard\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope"),
        "{e}"
    );
    let out = kubectl(
        &agent,
        &[
            "get",
            "endpointslices",
            "-n",
            "default",
            "-w",
            "--request-timeout=1s",
            "-l",
            "x",
        ],
    );
    assert!(
        !out.stderr.contains("forbidden"),
        "watching is allowed: {}",
        out.stderr
    );
    refused(
        &agent,
        &["create", "service", "clusterip", "web", "--tcp=80"],
    );
    refused(&agent, &["label", "service", "kubernetes", "x=y"]);
    // Events as kube-runtime's recorder writes them: events.k8s.io/v1 only.
    let core_event = "apiVersion: v1\nkind: Event\nmetadata:\n  name: e1\ninvolvedObject:\n  kind: Service\n  name: kubernetes\n  namespace: default\nreason: Synced\nmessage: ok\ntype: Normal\n";
    harness::kubectl_stdin_as(&agent, &["create", "-f", "-"], core_event).fails();
    let event = "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata:\n  name: e2\nregarding:\n  kind: Service\n  name: kubernetes\n  namespace: default\nreason: Synced\nnote: ok\ntype: Normal\naction: Programming\nreportingController: switchyard\nreportingInstance: n1\neventTime: \"2024-01-01T00:00:00.000000Z\"\n";
    harness::kubectl_stdin_as(&agent, &["create", "-f", "-"], event).ok();
    // (kubectl patch reads the object first; the agent patches events directly, as kube-rs does.)
    let mut curl = std::process::Command::new("curl");
    curl.args([
        "-sS",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "-X",
        "PATCH",
        "--cacert",
    ])
    .arg(harness::ca_file(&c.cp.data))
    .args([
        "-H",
        "Authorization: Bearer agent-token",
        "-H",
        "Content-Type: application/merge-patch+json",
    ])
    .args(["--data-binary", "{\"note\":\"again\"}"])
    .arg(format!(
        "{}/apis/events.k8s.io/v1/namespaces/default/events/e2",
        c.cp.url
    ));
    let code = harness::run(curl, None, "curl PATCH event".into()).ok();
    assert_eq!(code, "200");
    refused(&agent, &["delete", "event", "e2"]);
}

#[test]
fn other_users_get_only_discovery_and_can_ask_what_they_may_do() {
    let c = Cluster::start();
    let bob = c.as_user("bob", "bob-token");
    let e = refused(&bob, &["get", "pods"]);
    assert!(
        e.contains("pods is forbidden: User \"bob\" cannot list resource \"pods\" in API group \"\" in the namespace \"default\""),
        "{e}"
    );
    assert!(ok(&bob, &["api-resources", "-o", "name"]).contains("pods"));
    assert_eq!(
        kubectl(&bob, &["auth", "can-i", "list", "pods"])
            .stdout
            .trim(),
        "no"
    );
    let n1 = c.as_user("n1", "node1-token");
    assert_eq!(
        ok(&n1, &["auth", "can-i", "watch", "services"]).trim(),
        "yes"
    );
    assert_eq!(
        kubectl(&n1, &["auth", "can-i", "create", "services"])
            .stdout
            .trim(),
        "no"
    );
    assert_eq!(
        ok(&c.cp.kubeconfig, &["auth", "can-i", "delete", "nodes"]).trim(),
        "yes"
    );
}

#[test]
fn a_single_token_line_without_groups_is_still_an_administrator() {
    let c = Cluster::start();
    let lab = c.as_user("lab", "legacy-token");
    ok(&lab, &["create", "namespace", "lab"]);
    ok(
        &lab,
        &[
            "create",
            "service",
            "clusterip",
            "web",
            "--tcp=80",
            "-n",
            "lab",
        ],
    );
    ok(&lab, &["delete", "namespace", "lab"]);
    // And a server whose token file has just the one administrator line, as the lab writes it.
    let solo = Cp::start();
    solo.kubectl(&["create", "namespace", "solo"]).ok();
    solo.kubectl(&["delete", "namespace", "solo"]).ok();
}
