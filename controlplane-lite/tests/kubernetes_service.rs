//! The `default/kubernetes` Service as kube-apiserver keeps it, seen with kubectl 1.32: the
//! first address of the service CIDR, 443 -> the server's port, Endpoints and an EndpointSlice
//! naming the advertised address, put back when deleted or changed, and its ClusterIP refused to
//! everyone else.
mod harness;

use harness::{eventually, rows, Cp};

/// The port the server listens on, from its URL.
fn port(cp: &Cp) -> String {
    cp.url.rsplit(':').next().unwrap_or_default().to_string()
}

#[test]
fn kubectl_shows_the_kubernetes_service_with_the_advertised_endpoint() {
    let cp = Cp::start_with(&["--advertise-address", "198.18.0.1"]);
    let port = port(&cp);
    let svc = rows(&cp.kubectl(&["get", "svc", "kubernetes"]).ok());
    assert_eq!(
        svc[1][..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    assert_eq!(
        cp.jsonpath(
            &["svc", "kubernetes"],
            "{.spec.ports[0].name} {.spec.ports[0].targetPort} {.metadata.labels.component} {.metadata.labels.provider} [{.spec.selector}]"
        ),
        format!("https {port} apiserver kubernetes []")
    );
    let eps = rows(&cp.kubectl(&["get", "endpoints", "kubernetes"]).ok());
    assert_eq!(eps[1][..2], ["kubernetes", &format!("198.18.0.1:{port}")]);
    let slices = rows(&cp.kubectl(&["get", "endpointslices", "kubernetes"]).ok());
    assert_eq!(
        slices[1][..4],
        ["kubernetes", "IPv4", port.as_str(), "198.18.0.1"]
    );
    assert_eq!(
        cp.jsonpath(
            &["endpointslice", "kubernetes"],
            "{.metadata.labels} {.ports[0].name}"
        ),
        r#"{"kubernetes.io/service-name":"kubernetes"} https"#
    );
    let all = rows(&cp.kubectl(&["get", "svc", "-A"]).ok());
    assert_eq!(all.len(), 2, "only the kubernetes Service: {all:?}");
}

#[test]
fn a_loopback_listen_address_is_published_with_a_warning() {
    let cp = Cp::start();
    let eps = rows(&cp.kubectl(&["get", "endpoints", "kubernetes"]).ok());
    assert_eq!(eps[1][1], format!("127.0.0.1:{}", port(&cp)));
    assert!(
        cp.log().contains("loopback address that pods cannot reach"),
        "{}",
        cp.log()
    );
}

#[test]
fn the_kubernetes_service_comes_back_when_deleted_or_changed() {
    let cp = Cp::start();
    cp.kubectl(&["delete", "svc", "kubernetes"]).ok();
    cp.kubectl(&["delete", "endpointslice", "kubernetes"]).ok();
    eventually(10, "the Service and its slice are back", || {
        let ip = cp
            .kubectl(&["get", "svc", "kubernetes", "-o=jsonpath={.spec.clusterIP}"])
            .stdout;
        let slice = cp.kubectl(&["get", "endpointslice", "kubernetes"]).success;
        (ip == "10.96.0.1" && slice).then_some(())
    });
    cp.kubectl(&[
        "patch",
        "svc",
        "kubernetes",
        "--type=merge",
        "-p",
        r#"{"spec":{"selector":{"app":"x"},"ports":[{"name":"https","port":8443,"targetPort":1}]}}"#,
    ])
    .ok();
    eventually(10, "the Service is put back", || {
        let got = cp.jsonpath(
            &["svc", "kubernetes"],
            "{.spec.ports[0].port} [{.spec.selector}]",
        );
        (got == "443 []").then_some(())
    });
}

#[test]
fn no_other_service_may_take_the_first_service_address() {
    let cp = Cp::start();
    let err = cp
        .kubectl_stdin(
            &["apply", "-f", "-"],
            "apiVersion: v1\nkind: Service\nmetadata: {name: thief}\nspec:\n  clusterIP: 10.96.0.1\n  ports: [{port: 80}]\n",
        )
        .fails();
    assert_eq!(
        err.trim(),
        r#"The Service "thief" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.1"}: failed to allocate IP 10.96.0.1: provided IP is already allocated"#
    );
}
