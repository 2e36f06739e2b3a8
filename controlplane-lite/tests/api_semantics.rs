//! Services, validation and optimistic concurrency as kube-apiserver has them, driven with
//! kubectl 1.32 against the switchyard-cp binary: ClusterIP and NodePort allocation (requested or
//! automatic, released on a type change), port names and targetPort defaults, session affinity
//! and traffic policies, 422 Invalid with Kubernetes' own messages, 404, 409 AlreadyExists and
//! Conflict, and the server-owned metadata (uid, creationTimestamp, generation).
mod harness;

use std::net::Ipv4Addr;

use harness::Cp;

fn svc(name: &str, spec: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n{spec}")
}

#[track_caller]
fn invalid(cp: &Cp, yaml: &str) -> String {
    cp.kubectl_stdin(&["apply", "-f", "-"], yaml).fails()
}

#[test]
fn cluster_ips_come_from_the_service_cidr_or_are_taken_as_requested() {
    let cp = Cp::start();
    cp.apply(&svc("auto", "  ports: [{port: 80}]\n"));
    let ip: Ipv4Addr = cp
        .jsonpath(&["svc", "auto"], "{.spec.clusterIP}")
        .parse()
        .unwrap();
    assert_eq!(ip.octets()[..2], [10, 96], "{ip} is in 10.96.0.0/16");
    assert_eq!(
        cp.jsonpath(&["svc", "auto"], "{.spec.clusterIPs[0]}"),
        ip.to_string()
    );
    cp.apply(&svc(
        "asked",
        "  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n",
    ));
    assert_eq!(
        cp.jsonpath(&["svc", "asked"], "{.spec.clusterIP}"),
        "10.96.0.50"
    );
    let err = invalid(
        &cp,
        &svc("taken", "  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n"),
    );
    assert_eq!(
        err.trim(),
        r#"The Service "taken" is invalid: spec.clusterIPs: Invalid value: []string{"10.96.0.50"}: failed to allocate IP 10.96.0.50: provided IP is already allocated"#
    );
    let err = invalid(
        &cp,
        &svc("outside", "  clusterIP: 10.0.0.5\n  ports: [{port: 80}]\n"),
    );
    assert!(
        err.contains("failed to allocate IP 10.0.0.5: provided IP is not in the valid range. The range of valid IPs is 10.96.0.0/16"),
        "{err}"
    );
    let err = cp
        .kubectl(&[
            "patch",
            "svc",
            "asked",
            "-p",
            r#"{"spec":{"clusterIP":"10.96.0.51"}}"#,
        ])
        .fails();
    assert!(
        err.contains("spec.clusterIPs[0]: Invalid value: \"10.96.0.51\": may not change once set"),
        "{err}"
    );
    // Deleting a service releases its address.
    cp.kubectl(&["delete", "svc", "asked"]).ok();
    cp.apply(&svc(
        "again",
        "  clusterIP: 10.96.0.50\n  ports: [{port: 80}]\n",
    ));
    let headless = svc(
        "headless",
        "  clusterIP: None\n  selector: {app: x}\n  ports: [{port: 80}]\n",
    );
    cp.apply(&headless);
    let out = cp.kubectl(&["get", "svc", "headless"]).ok();
    assert!(out.contains("ClusterIP   None"), "{out}");
}

#[test]
fn node_ports_are_allocated_requested_checked_and_released() {
    let cp = Cp::start();
    cp.apply(&svc(
        "np",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 31002}]\n",
    ));
    let out = cp.kubectl(&["get", "svc", "np"]).ok();
    assert!(out.contains("80:31002/TCP"), "{out}");
    assert_eq!(
        cp.jsonpath(&["svc", "np"], "{.spec.externalTrafficPolicy}"),
        "Cluster"
    );
    let err = invalid(
        &cp,
        &svc(
            "dup",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 31002}]\n",
        ),
    );
    assert_eq!(
        err.trim(),
        r#"The Service "dup" is invalid: spec.ports[0].nodePort: Invalid value: 31002: provided port is already allocated"#
    );
    let err = invalid(
        &cp,
        &svc(
            "low",
            "  type: NodePort\n  ports: [{port: 80, nodePort: 8080}]\n",
        ),
    );
    assert_eq!(
        err.trim(),
        r#"The Service "low" is invalid: spec.ports[0].nodePort: Invalid value: 8080: provided port is not in the valid range. The range of valid ports is 30000-32767"#
    );
    // ClusterIP -> NodePort allocates a port, NodePort -> ClusterIP releases it.
    cp.apply(&svc("flip", "  ports: [{port: 80}]\n"));
    assert_eq!(
        cp.jsonpath(&["svc", "flip"], "{.spec.ports[0].nodePort}"),
        ""
    );
    cp.kubectl(&[
        "patch",
        "svc",
        "flip",
        "-p",
        r#"{"spec":{"type":"NodePort"}}"#,
    ])
    .ok();
    let port: u16 = cp
        .jsonpath(&["svc", "flip"], "{.spec.ports[0].nodePort}")
        .parse()
        .unwrap();
    assert!((30000..=32767).contains(&port) && port != 31002, "{port}");
    cp.kubectl(&[
        "patch",
        "svc",
        "flip",
        "-p",
        r#"{"spec":{"type":"ClusterIP"}}"#,
    ])
    .ok();
    assert_eq!(
        cp.jsonpath(
            &["svc", "flip"],
            "{.spec.type}:{.spec.ports[0].nodePort}:{.spec.externalTrafficPolicy}"
        ),
        "ClusterIP::"
    );
    // The released port can be requested by another service.
    cp.apply(&svc(
        "reuse",
        &format!("  type: NodePort\n  ports: [{{port: 80, nodePort: {port}}}]\n"),
    ));
    // A nodePort on a ClusterIP service is refused.
    let err = cp
        .kubectl(&[
            "patch",
            "svc",
            "flip",
            "-p",
            r#"{"spec":{"ports":[{"port":80,"nodePort":30500}]}}"#,
        ])
        .fails();
    assert_eq!(
        err.trim(),
        r#"The Service "flip" is invalid: spec.ports[0].nodePort: Forbidden: may not be used when `type` is 'ClusterIP'"#
    );
    // Deleting a NodePort service releases its port.
    cp.kubectl(&["delete", "svc", "np"]).ok();
    cp.apply(&svc(
        "np2",
        "  type: NodePort\n  ports: [{port: 80, nodePort: 31002}]\n",
    ));
}

#[test]
fn multi_port_services_need_unique_names_and_target_port_defaults_to_port() {
    let cp = Cp::start();
    cp.apply(&svc(
        "multi",
        "  ports:\n  - {name: http, port: 80}\n  - {name: dns, port: 53, protocol: UDP, targetPort: 5353}\n  - {name: admin, port: 8443, targetPort: admin-port}\n",
    ));
    assert_eq!(
        cp.jsonpath(
            &["svc", "multi"],
            "{range .spec.ports[*]}{.name}={.port}>{.targetPort}/{.protocol} {end}"
        )
        .trim(),
        "http=80>80/TCP dns=53>5353/UDP admin=8443>admin-port/TCP"
    );
    let err = invalid(
        &cp,
        &svc(
            "noname",
            "  ports:\n  - {port: 80}\n  - {name: b, port: 81}\n",
        ),
    );
    assert_eq!(
        err.trim(),
        r#"The Service "noname" is invalid: spec.ports[0].name: Required value"#
    );
    let err = invalid(
        &cp,
        &svc(
            "dupname",
            "  ports:\n  - {name: a, port: 80}\n  - {name: a, port: 81}\n",
        ),
    );
    assert_eq!(
        err.trim(),
        r#"The Service "dupname" is invalid: spec.ports[1].name: Duplicate value: "a""#
    );
    let err = invalid(
        &cp,
        &svc(
            "range",
            "  ports:\n  - {name: a, port: 70000}\n  - {name: b, port: 0}\n",
        ),
    );
    assert_eq!(
        err.trim(),
        "The Service \"range\" is invalid: \n* spec.ports[0].port: Invalid value: 70000: must be between 1 and 65535, inclusive\n* spec.ports[1].port: Invalid value: 0: must be between 1 and 65535, inclusive"
    );
    let err = invalid(&cp, &svc("noports", "  selector: {app: x}\n"));
    assert_eq!(
        err.trim(),
        r#"The Service "noports" is invalid: spec.ports: Required value"#
    );
}

#[test]
fn session_affinity_and_traffic_policies_are_stored_and_validated() {
    let cp = Cp::start();
    cp.apply(&svc(
        "sticky",
        "  type: NodePort\n  sessionAffinity: ClientIP\n  externalTrafficPolicy: Local\n  internalTrafficPolicy: Local\n  ports: [{port: 80}]\n",
    ));
    assert_eq!(
        cp.jsonpath(
            &["svc", "sticky"],
            "{.spec.sessionAffinity} {.spec.sessionAffinityConfig.clientIP.timeoutSeconds} {.spec.externalTrafficPolicy} {.spec.internalTrafficPolicy}"
        ),
        "ClientIP 10800 Local Local"
    );
    cp.apply(&svc("plain", "  ports: [{port: 80}]\n"));
    assert_eq!(
        cp.jsonpath(
            &["svc", "plain"],
            "{.spec.sessionAffinity} {.spec.internalTrafficPolicy}"
        ),
        "None Cluster"
    );
    for (spec, want) in [
        (
            "  sessionAffinity: Sticky\n  ports: [{port: 80}]\n",
            r#"spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None""#,
        ),
        (
            "  type: NodePort\n  externalTrafficPolicy: Nearest\n  ports: [{port: 80}]\n",
            r#"spec.externalTrafficPolicy: Unsupported value: "Nearest": supported values: "Cluster", "Local""#,
        ),
        (
            "  internalTrafficPolicy: Node\n  ports: [{port: 80}]\n",
            r#"spec.internalTrafficPolicy: Unsupported value: "Node": supported values: "Cluster", "Local""#,
        ),
        (
            "  externalTrafficPolicy: Local\n  ports: [{port: 80}]\n",
            r#"spec.externalTrafficPolicy: Invalid value: "Local": may only be set for externally-accessible services"#,
        ),
        (
            "  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 0}}\n  ports: [{port: 80}]\n",
            "spec.sessionAffinityConfig.clientIP.timeoutSeconds: Invalid value: 0: must be greater than 0 and less than 86400",
        ),
        (
            "  type: Magic\n  ports: [{port: 80}]\n",
            r#"spec.type: Unsupported value: "Magic": supported values: "ClusterIP", "ExternalName", "LoadBalancer", "NodePort""#,
        ),
    ] {
        let err = invalid(&cp, &svc("bad", spec));
        assert_eq!(
            err.trim(),
            format!(r#"The Service "bad" is invalid: {want}"#)
        );
    }
}

#[test]
fn names_labels_and_selectors_are_validated_with_kubernetes_messages() {
    let cp = Cp::start();
    let err = invalid(&cp, &svc("Web_1", "  ports: [{port: 80}]\n"));
    assert_eq!(
        err.trim(),
        r#"The Service "Web_1" is invalid: metadata.name: Invalid value: "Web_1": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"#
    );
    let err = invalid(&cp, &svc("1web", "  ports: [{port: 80}]\n"));
    assert!(err.contains("a DNS-1035 label must consist"), "{err}");
    let pod = "apiVersion: v1\nkind: Pod\nmetadata: {name: Echo.1}\nspec:\n  containers: [{name: c, image: x}]\n";
    let err = invalid(&cp, pod);
    assert_eq!(
        err.trim(),
        r#"The Pod "Echo.1" is invalid: metadata.name: Invalid value: "Echo.1": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"#
    );
    let labelled = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  labels: {tier: -web}\nspec:\n  containers: [{name: c, image: x}]\n";
    let err = invalid(&cp, labelled);
    assert!(
        err.contains(r#"metadata.labels: Invalid value: "-web": a valid label must be an empty string or consist of alphanumeric characters"#),
        "{err}"
    );
    let err = invalid(
        &cp,
        &svc(
            "sel",
            "  selector: {app: \"web app\"}\n  ports: [{port: 80}]\n",
        ),
    );
    assert!(
        err.contains(r#"The Service "sel" is invalid: spec.selector: Invalid value: "web app": a valid label must be an empty string"#),
        "{err}"
    );
    let err = invalid(
        &cp,
        "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{image: x}]\n",
    );
    assert_eq!(
        err.trim(),
        r#"The Pod "p" is invalid: spec.containers[0].name: Required value"#
    );
    let err = cp.kubectl(&["get", "pods", "-l", "tier in web"]).fails();
    assert!(err.contains("unable to parse requirement"), "{err}");
    let err = cp.kubectl(&["get", "svc", "missing"]).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): services "missing" not found"#
    );
    let err = cp.kubectl(&["get", "endpointslices", "missing"]).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): endpointslices.discovery.k8s.io "missing" not found"#
    );
    // kubectl looks the namespace up after a 404, as against kube-apiserver.
    let err = cp.kubectl(&["get", "pods", "-n", "nowhere", "x"]).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): namespaces "nowhere" not found"#
    );
}

#[test]
fn stale_resource_versions_conflict_and_metadata_is_server_owned() {
    let cp = Cp::start();
    cp.apply(&svc(
        "web",
        "  selector: {app: web}\n  ports: [{port: 80}]\n",
    ));
    let first = cp.get_json(&["svc", "web"]);
    let meta = &first["metadata"];
    // kube-apiserver 1.32 keeps no generation for Services (only EndpointSlices have one here).
    assert!(meta.get("generation").is_none(), "{meta}");
    let uid = meta["uid"].as_str().unwrap().to_string();
    let created = meta["creationTimestamp"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 36, "{uid}");
    assert!(created.ends_with('Z') && created.len() == 20, "{created}");

    // A replace from a fresh read succeeds; the same stale read then conflicts.
    let mut edited = first.clone();
    edited["metadata"]["labels"] = serde_json::json!({"v": "1"});
    let text = edited.to_string();
    cp.kubectl_stdin(&["replace", "-f", "-"], &text).ok();
    let err = cp.kubectl_stdin(&["replace", "-f", "-"], &text).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (Conflict): error when replacing "STDIN": Operation cannot be fulfilled on services "web": the object has been modified; please apply your changes to the latest version and try again"#
    );
    // A patch carrying a stale resourceVersion is a precondition that fails the same way.
    let stale = first["metadata"]["resourceVersion"].as_str().unwrap();
    let err = cp
        .kubectl(&[
            "patch",
            "svc",
            "web",
            "--type",
            "merge",
            "-p",
            &format!(r#"{{"metadata":{{"resourceVersion":"{stale}","labels":{{"v":"2"}}}}}}"#),
        ])
        .fails();
    assert!(err.contains("Error from server (Conflict)"), "{err}");

    // Every write moves the resourceVersion; uid and creationTimestamp stay.
    let after_label = cp.get_json(&["svc", "web"]);
    assert_ne!(
        after_label["metadata"]["resourceVersion"],
        first["metadata"]["resourceVersion"]
    );
    cp.kubectl(&[
        "patch",
        "svc",
        "web",
        "-p",
        r#"{"spec":{"selector":{"app":"web2"}}}"#,
    ])
    .ok();
    cp.kubectl(&["annotate", "svc", "web", "a=b"]).ok();
    let after_spec = cp.get_json(&["svc", "web"]);
    assert!(after_spec["metadata"].get("generation").is_none());
    assert_eq!(after_spec["metadata"]["uid"], uid.as_str());
    assert_eq!(
        after_spec["metadata"]["creationTimestamp"],
        created.as_str()
    );
    // A client cannot set uid or creationTimestamp.
    let mut forged = after_spec.clone();
    forged["metadata"]["uid"] = serde_json::json!("00000000-0000-0000-0000-000000000000");
    forged["metadata"]["creationTimestamp"] = serde_json::json!("2000-01-01T00:00:00Z");
    cp.kubectl_stdin(&["replace", "-f", "-"], &forged.to_string())
        .ok();
    let kept = cp.get_json(&["svc", "web"]);
    assert_eq!(kept["metadata"]["uid"], uid.as_str());
    assert_eq!(kept["metadata"]["creationTimestamp"], created.as_str());
    // resourceVersions increase with every write.
    let rv = |v: &serde_json::Value| -> u64 {
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(rv(&kept) > rv(&after_spec) && rv(&after_spec) > rv(&first));
    // Recreating a deleted object gives it a new uid.
    cp.kubectl(&["delete", "svc", "web"]).ok();
    cp.apply(&svc("web", "  ports: [{port: 80}]\n"));
    assert_ne!(cp.jsonpath(&["svc", "web"], "{.metadata.uid}"), uid);
    let err = cp
        .kubectl_stdin(
            &["create", "-f", "-"],
            &svc("web", "  ports: [{port: 80}]\n"),
        )
        .fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (AlreadyExists): error when creating "STDIN": services "web" already exists"#
    );
}

#[test]
fn endpointslice_generation_moves_with_its_content_and_labels_only() {
    let cp = Cp::start();
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: manual\n  labels: {owner: me}\naddressType: IPv4\nendpoints: [{addresses: [10.0.0.1]}]\nports: [{name: http, port: 80, protocol: TCP}]\n";
    cp.apply(slice);
    let generation = || cp.jsonpath(&["endpointslice", "manual"], "{.metadata.generation}");
    assert_eq!(generation(), "1");
    cp.kubectl(&["annotate", "endpointslice", "manual", "note=x"])
        .ok();
    assert_eq!(generation(), "1", "annotations leave it");
    cp.kubectl(&["label", "endpointslice", "manual", "tier=web"])
        .ok();
    assert_eq!(generation(), "2", "labels move it");
    cp.apply(&slice.replace("10.0.0.1", "10.0.0.2"));
    assert_eq!(generation(), "3", "endpoints move it");
    // Its ports are an atomic list: a second apply replaces them rather than merging by port.
    let two = slice.replace(
        "ports: [{name: http, port: 80, protocol: TCP}]",
        "ports: [{name: a, port: 81, protocol: TCP}, {name: b, port: 82, protocol: TCP}]",
    );
    cp.apply(&two);
    cp.apply(&two.replace(", {name: b, port: 82, protocol: TCP}", ""));
    assert_eq!(
        cp.jsonpath(&["endpointslice", "manual"], "{.ports[*].name}"),
        "a"
    );
    let created = cp.get_json(&["ns", "default"]);
    assert!(created["metadata"].get("generation").is_none());
    assert_eq!(created["spec"]["finalizers"][0], "kubernetes");
}

#[test]
fn every_service_type_prints_as_kubectl_shows_it() {
    let cp = Cp::start();
    cp.apply(&svc(
        "lb",
        "  type: LoadBalancer\n  ports: [{port: 80, nodePort: 30080}]\n",
    ));
    cp.apply(&svc(
        "ext",
        "  externalIPs: [203.0.113.7]\n  ports: [{port: 80}]\n",
    ));
    cp.apply(&svc(
        "alias",
        "  type: ExternalName\n  externalName: echo.example.com\n",
    ));
    assert_eq!(
        cp.jsonpath(
            &["svc", "lb"],
            "{.spec.allocateLoadBalancerNodePorts} {.spec.externalTrafficPolicy}"
        ),
        "true Cluster"
    );
    let table = harness::rows(&cp.kubectl(&["get", "svc"]).ok());
    let row = |name: &str| {
        table
            .iter()
            .find(|r| r[0] == name)
            .unwrap_or_else(|| panic!("no {name} in {table:?}"))
            .clone()
    };
    let lb = row("lb");
    assert_eq!(
        (lb[1].as_str(), lb[3].as_str(), lb[4].as_str()),
        ("LoadBalancer", "<pending>", "80:30080/TCP")
    );
    let ext = row("ext");
    assert_eq!(
        (ext[1].as_str(), ext[3].as_str()),
        ("ClusterIP", "203.0.113.7")
    );
    let alias = row("alias");
    assert_eq!(
        alias[1..5],
        ["ExternalName", "<none>", "echo.example.com", "<none>"]
    );
}
