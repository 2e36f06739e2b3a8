//! kubectl's typed subcommands (`create namespace`, `run`, `create service`, `expose`) send
//! protobuf bodies (`application/vnd.kubernetes.protobuf`); switchyard-cp must accept them.
mod harness;

use harness::{eventually, Cp};

#[test]
fn kubectl_create_run_and_expose_subcommands() {
    let cp = Cp::start();
    assert_eq!(
        cp.kubectl(&["create", "namespace", "team"]).ok().trim(),
        "namespace/team created"
    );
    assert_eq!(
        cp.jsonpath(
            &["ns", "team"],
            "{.metadata.labels.kubernetes\\.io/metadata\\.name}"
        ),
        "team"
    );
    assert_eq!(
        cp.kubectl(&["-n", "team", "run", "p", "--image=echo", "--labels=app=p"])
            .ok()
            .trim(),
        "pod/p created"
    );
    assert_eq!(
        cp.jsonpath(&["-n", "team", "pod", "p"], "{.status.phase}"),
        "Pending"
    );
    assert_eq!(
        cp.kubectl(&[
            "-n",
            "team",
            "create",
            "service",
            "nodeport",
            "np",
            "--tcp=80:8080",
            "--node-port=31002"
        ])
        .ok()
        .trim(),
        "service/np created"
    );
    assert_eq!(
        cp.jsonpath(
            &["-n", "team", "svc", "np"],
            "{.spec.type} {.spec.ports[0].nodePort} {.spec.ports[0].targetPort}"
        ),
        "NodePort 31002 8080"
    );
    assert_eq!(
        cp.kubectl(&[
            "-n",
            "team",
            "expose",
            "pod",
            "p",
            "--port=80",
            "--target-port=8080",
            "--name=exposed"
        ])
        .ok()
        .trim(),
        "service/exposed exposed"
    );
    assert_eq!(
        cp.jsonpath(&["-n", "team", "svc", "exposed"], "{.spec.selector.app}"),
        "p"
    );
    assert_eq!(
        cp.kubectl(&["delete", "namespace", "team"]).ok().trim(),
        r#"namespace "team" deleted"#
    );
    eventually(5, "the deleted namespace is gone", || {
        (!cp.kubectl(&["get", "ns", "-o", "name"])
            .ok()
            .contains("team"))
        .then_some(())
    });
}
