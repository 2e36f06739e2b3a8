//! kubectl 1.32 against switchyard-cp, verb by verb as issue 5 lists them: apply (create, then a
//! strategic-merge PATCH), create, replace, patch (strategic, merge, json), edit, label,
//! annotate, delete (name, -f, -l), get -o wide|yaml|json|jsonpath|name, label and field
//! selectors, -A, get -w, describe, explain, api-resources, and server-side field validation.
//! Each test runs its own server; the assertions are on what kubectl prints.
mod harness;

use harness::{eventually, rows, Cp};

const WEB: &str = r#"
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - {name: http, port: 80, targetPort: 8080}
"#;

fn pod(name: &str, labels: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\nspec:\n  containers:\n  - {{name: c, image: echo}}\n"
    )
}

#[test]
fn api_resources_lists_exactly_the_served_resources_and_others_are_clean_errors() {
    let cp = Cp::start();
    let names = cp.kubectl(&["api-resources", "-o", "name"]).ok();
    let mut names: Vec<&str> = names.lines().collect();
    names.sort();
    assert_eq!(
        names,
        [
            "endpoints",
            "endpointslices.discovery.k8s.io",
            "events",
            "events.events.k8s.io",
            "namespaces",
            "nodes",
            "pods",
            "services"
        ]
    );
    let table = cp.kubectl(&["api-resources"]).ok();
    let svc = rows(&table)
        .into_iter()
        .find(|r| r[0] == "services")
        .expect("services row");
    assert_eq!(svc, ["services", "svc", "v1", "true", "Service"]);
    let err = cp.kubectl(&["get", "deployments"]).fails();
    assert!(
        err.contains(r#"the server doesn't have a resource type "deployments""#),
        "{err}"
    );
    // Requests outside the subset get a Kubernetes Status, never a hang.
    for args in [
        &["get", "--raw", "/apis/apps/v1/deployments"][..],
        &[
            "get",
            "--raw",
            "/api/v1/namespaces/default/services/s/proxy",
        ][..],
    ] {
        let err = cp.kubectl(args).fails();
        assert_eq!(
            err.trim(),
            "Error from server (NotFound): the server could not find the requested resource"
        );
    }
    let err = cp
        .kubectl_stdin(&["apply", "--server-side", "-f", "-"], WEB)
        .fails();
    assert!(
        err.starts_with("error: Server-side apply not available on the server: (the body of the request was in an unknown format"),
        "{err}"
    );
    // explain walks the fields and their types; the documentation itself is not served.
    let pod = cp.kubectl(&["explain", "pods"]).ok();
    assert!(
        pod.contains("KIND:       Pod")
            && pod.contains("their documentation is not served")
            && pod.contains("spec\t<PodSpec>"),
        "{pod}"
    );
    let ports = cp.kubectl(&["explain", "pods.spec.containers.ports"]).ok();
    assert!(
        ports.contains("FIELD: ports <[]ContainerPort>")
            && ports.contains("containerPort\t<integer>"),
        "{ports}"
    );
    let target = cp.kubectl(&["explain", "svc.spec.ports.targetPort"]).ok();
    assert!(
        target.contains("FIELD: targetPort <IntOrString>"),
        "{target}"
    );
    let err = cp.kubectl(&["explain", "pods.spec.colour"]).fails();
    assert!(err.contains(r#"field "colour" does not exist"#), "{err}");
}

#[test]
fn apply_creates_then_a_changed_field_is_a_strategic_merge_patch() {
    let cp = Cp::start();
    assert_eq!(cp.apply(WEB).trim(), "service/web created");
    let changed = WEB.replace("targetPort: 8080", "targetPort: 9090");
    let out = cp
        .kubectl_stdin(&["apply", "-f", "-", "-v=8"], &changed)
        .ok();
    assert!(out.contains("service/web configured"), "{out}");
    assert_eq!(cp.apply(&changed).trim(), "service/web unchanged");
    assert_eq!(
        cp.jsonpath(&["svc", "web"], "{.spec.ports[0].targetPort}"),
        "9090"
    );
    // The second apply sent a strategic merge patch (kubectl logs its requests at -v=8).
    let log = cp
        .kubectl_stdin(
            &["apply", "-f", "-", "-v=8"],
            &changed.replace("9090", "9191"),
        )
        .ok()
        .to_string();
    let stderr = cp
        .kubectl_stdin(
            &["apply", "-f", "-", "-v=8"],
            &changed.replace("9090", "9292"),
        )
        .stderr;
    assert!(log.contains("configured"));
    assert!(
        stderr.contains("PATCH") && stderr.contains("application/strategic-merge-patch+json"),
        "{stderr}"
    );
    assert_eq!(
        cp.jsonpath(&["svc", "web"], "{.spec.ports[0].targetPort}"),
        "9292"
    );
}

#[test]
fn create_replace_and_the_three_patch_types() {
    let cp = Cp::start();
    assert_eq!(
        cp.kubectl_stdin(&["create", "-f", "-"], WEB).ok().trim(),
        "service/web created"
    );
    let err = cp.kubectl_stdin(&["create", "-f", "-"], WEB).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (AlreadyExists): error when creating "STDIN": services "web" already exists"#
    );
    let replaced = WEB.replace("app: web}\nspec", "app: web, v: \"2\"}\nspec");
    assert_eq!(
        cp.kubectl_stdin(&["replace", "-f", "-"], &replaced)
            .ok()
            .trim(),
        "service/web replaced"
    );
    assert_eq!(cp.jsonpath(&["svc", "web"], "{.metadata.labels.v}"), "2");
    for (ty, patch, want) in [
        (
            "strategic",
            r#"{"spec":{"ports":[{"port":81,"name":"alt"}]}}"#,
            "80 81",
        ),
        (
            "merge",
            r#"{"spec":{"ports":[{"port":82,"name":"only"}]}}"#,
            "82",
        ),
        (
            "json",
            r#"[{"op":"add","path":"/spec/ports/-","value":{"port":83,"name":"extra"}}]"#,
            "82 83",
        ),
    ] {
        let out = cp
            .kubectl(&["patch", "svc", "web", "--type", ty, "-p", patch])
            .ok();
        assert_eq!(out.trim(), "service/web patched", "{ty}");
        assert_eq!(
            cp.jsonpath(&["svc", "web"], "{.spec.ports[*].port}"),
            want,
            "after the {ty} patch"
        );
    }
    let err = cp
        .kubectl(&[
            "patch",
            "svc",
            "web",
            "--type",
            "json",
            "-p",
            r#"[{"op":"test","path":"/spec/type","value":"NodePort"}]"#,
        ])
        .fails();
    assert!(
        err.contains(r#"The Service "web" is invalid: patch: Invalid value"#)
            && err.contains(r#"test of "/spec/type" failed"#),
        "{err}"
    );
    let err = cp
        .kubectl(&["patch", "svc", "nope", "-p", r#"{"metadata":{}}"#])
        .fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): services "nope" not found"#
    );
}

#[test]
fn edit_with_an_editor_script() {
    let cp = Cp::start();
    cp.apply(WEB);
    let editor = cp.dir.join("editor.sh");
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/sessionAffinity: None/sessionAffinity: ClientIP/' \"$1\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .args(["+x", editor.to_str().unwrap()])
        .status()
        .unwrap();
    let out = cp
        .kubectl_env(
            &["edit", "svc", "web"],
            &[("EDITOR", editor.to_str().unwrap())],
        )
        .ok();
    assert_eq!(out.trim(), "service/web edited");
    assert_eq!(
        cp.jsonpath(
            &["svc", "web"],
            "{.spec.sessionAffinity} {.spec.sessionAffinityConfig.clientIP.timeoutSeconds}"
        ),
        "ClientIP 10800"
    );
    // An edit that makes the object invalid is refused with the server's message.
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/sessionAffinity: ClientIP/sessionAffinity: Sticky/' \"$1\"\n",
    )
    .unwrap();
    let err = cp
        .kubectl_env(
            &["edit", "svc", "web"],
            &[("EDITOR", editor.to_str().unwrap())],
        )
        .fails();
    assert!(err.contains(r#"error: services "web" is invalid"#), "{err}");
    // kubectl keeps the edited copy with the server's causes as comments.
    let copy = err
        .split('"')
        .find(|s| s.starts_with("/tmp/kubectl-edit-"))
        .expect("kubectl names the saved copy");
    let saved = std::fs::read_to_string(copy).unwrap();
    let _ = std::fs::remove_file(copy);
    assert!(
        saved.contains(r#"spec.sessionAffinity: Unsupported value: "Sticky": supported values: "ClientIP", "None""#),
        "{saved}"
    );
    assert_eq!(
        cp.jsonpath(&["svc", "web"], "{.spec.sessionAffinity}"),
        "ClientIP"
    );
    // Back to None: the defaulting drops sessionAffinityConfig, as kube-apiserver's does.
    std::fs::write(
        &editor,
        "#!/bin/sh\nsed -i 's/sessionAffinity: ClientIP/sessionAffinity: None/' \"$1\"\n",
    )
    .unwrap();
    cp.kubectl_env(
        &["edit", "svc", "web"],
        &[("EDITOR", editor.to_str().unwrap())],
    )
    .ok();
    assert_eq!(
        cp.jsonpath(
            &["svc", "web"],
            "{.spec.sessionAffinity}:{.spec.sessionAffinityConfig}"
        ),
        "None:"
    );
}

#[test]
fn label_annotate_and_delete_by_name_file_and_selector() {
    let cp = Cp::start();
    cp.apply(WEB);
    assert_eq!(
        cp.kubectl(&["label", "svc", "web", "tier=front"])
            .ok()
            .trim(),
        "service/web labeled"
    );
    assert_eq!(
        cp.kubectl(&["annotate", "svc", "web", "owner=netops"])
            .ok()
            .trim(),
        "service/web annotated"
    );
    let err = cp.kubectl(&["label", "svc", "web", "tier=back"]).fails();
    assert!(err.contains("'tier' already has a value (front)"), "{err}");
    cp.kubectl(&["label", "svc", "web", "tier=back", "--overwrite"])
        .ok();
    assert_eq!(
        cp.jsonpath(
            &["svc", "web"],
            "{.metadata.labels.tier} {.metadata.annotations.owner}"
        ),
        "back netops"
    );
    cp.kubectl(&["label", "svc", "web", "tier-"]).ok();
    assert_eq!(
        cp.jsonpath(&["svc", "web"], "{.metadata.labels}"),
        r#"{"app":"web"}"#
    );
    let err = cp.kubectl(&["label", "svc", "web", "bad key=x"]).fails();
    assert!(
        err.contains(r#"The Service "web" is invalid: metadata.labels: Invalid value: "bad key": name part must consist of alphanumeric characters"#),
        "{err}"
    );

    // delete by name
    assert_eq!(
        cp.kubectl(&["delete", "svc", "web"]).ok().trim(),
        r#"service "web" deleted"#
    );
    let err = cp.kubectl(&["get", "svc", "web"]).fails();
    assert_eq!(
        err.trim(),
        r#"Error from server (NotFound): services "web" not found"#
    );
    // delete -f
    let file = cp.dir.join("web.yaml");
    std::fs::write(&file, WEB).unwrap();
    cp.kubectl(&["apply", "-f", file.to_str().unwrap()]).ok();
    assert_eq!(
        cp.kubectl(&["delete", "-f", file.to_str().unwrap()])
            .ok()
            .trim(),
        r#"service "web" deleted"#
    );
    // delete -l
    for (name, labels) in [("a", "app: ax"), ("b", "app: ax"), ("c", "app: cx")] {
        cp.apply(&pod(name, labels));
    }
    let out = cp.kubectl(&["delete", "pods", "-l", "app=ax"]).ok();
    assert_eq!(out.trim(), "pod \"a\" deleted\npod \"b\" deleted");
    assert_eq!(
        cp.kubectl(&["get", "pods", "-o", "name"]).ok().trim(),
        "pod/c"
    );
}

#[test]
fn get_prints_wide_yaml_json_jsonpath_and_name() {
    let cp = Cp::start();
    cp.apply(WEB);
    let wide = cp.kubectl(&["get", "svc", "web", "-o", "wide"]).ok();
    let r = rows(&wide);
    assert_eq!(
        r[0],
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE",
            "SELECTOR"
        ]
    );
    let ip = cp.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    assert_eq!(
        r[1][..5],
        ["web", "ClusterIP", ip.as_str(), "<none>", "80/TCP"]
    );
    assert_eq!(r[1][6], "app=web");
    let plain = rows(&cp.kubectl(&["get", "svc"]).ok())[0].clone();
    assert_eq!(
        plain,
        [
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    let yaml = cp.kubectl(&["get", "svc", "web", "-o", "yaml"]).ok();
    let doc: serde_yaml::Value = serde_yaml::from_str(&yaml).unwrap();
    assert_eq!(doc["kind"].as_str(), Some("Service"));
    assert_eq!(doc["spec"]["ports"][0]["targetPort"].as_u64(), Some(8080));
    let list = cp.get_json(&["svc"]);
    assert_eq!(list["kind"], "List");
    // The kubernetes Service is listed too, as in every cluster.
    assert_eq!(list["items"][0]["metadata"]["name"], "kubernetes");
    assert_eq!(list["items"][1]["metadata"]["name"], "web");
    assert_eq!(
        cp.kubectl(&["get", "svc", "-o", "name"]).ok().trim(),
        "service/kubernetes\nservice/web"
    );
    assert_eq!(
        cp.jsonpath(
            &["svc"],
            "{range .items[*]}{.metadata.name}:{.spec.ports[0].port}{end}"
        ),
        "kubernetes:443web:80"
    );
    let ns = cp.kubectl(&["get", "ns"]).ok();
    assert!(
        rows(&ns).iter().any(|r| r[..2] == ["default", "Active"]),
        "{ns}"
    );
    let pods = cp.kubectl(&["get", "pods"]).ok();
    assert!(pods.is_empty(), "{pods}");
    // `get all` lists the `all` category: pods and services.
    cp.apply(&pod("web-1", "app: web"));
    let all = cp.kubectl(&["get", "all", "-o", "name"]).ok();
    assert_eq!(all.trim(), "pod/web-1\nservice/kubernetes\nservice/web");
}

#[test]
fn equality_and_set_based_label_selectors() {
    let cp = Cp::start();
    for (name, labels) in [
        ("p1", "env: prod, tier: web"),
        ("p2", "env: qa, tier: cache"),
        ("p3", "env: dev, tier: web, canary: \"true\""),
        ("p4", "env: prod, tier: db, canary: \"false\""),
    ] {
        cp.apply(&pod(name, labels));
    }
    let names = |sel: &str| {
        let out = cp.kubectl(&["get", "pods", "-l", sel, "-o", "name"]).ok();
        out.lines()
            .map(|l| l.trim_start_matches("pod/").to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    assert_eq!(names("env=prod"), "p1,p4");
    assert_eq!(names("env==prod,tier=web"), "p1");
    assert_eq!(names("env!=prod"), "p2,p3");
    assert_eq!(names("env in (prod,qa)"), "p1,p2,p4");
    assert_eq!(names("tier notin (cache)"), "p1,p3,p4");
    assert_eq!(names("!canary"), "p1,p2");
    assert_eq!(names("canary"), "p3,p4");
    assert_eq!(names("env in (prod,qa),tier notin (cache),!canary"), "p1");
    let err = cp.kubectl(&["get", "pods", "-l", "env in prod"]).fails();
    assert!(err.contains("unable to parse requirement"), "{err}");
}

#[test]
fn field_selector_on_the_node_and_all_namespaces() {
    let cp = Cp::start();
    cp.apply("apiVersion: v1\nkind: Namespace\nmetadata: {name: lab}\n");
    // The nodes exist, or the pod lifecycle controller removes the pods bound to them.
    for node in ["n1", "n2"] {
        cp.apply(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\n"
        ));
    }
    for (ns, name, node) in [
        ("default", "a", "n1"),
        ("default", "b", "n2"),
        ("lab", "c", "n1"),
    ] {
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}}}\nspec:\n  nodeName: {node}\n  containers: [{{name: c, image: x}}]\n"
        );
        cp.apply(&yaml);
    }
    let out = cp
        .kubectl(&["get", "pods", "-A", "--field-selector", "spec.nodeName=n1"])
        .ok();
    let r = rows(&out);
    assert_eq!(r[0][..3], ["NAMESPACE", "NAME", "READY"]);
    let found: Vec<String> = r[1..]
        .iter()
        .map(|r| format!("{}/{}", r[0], r[1]))
        .collect();
    assert_eq!(found, ["default/a", "lab/c"]);
    let all = cp
        .kubectl(&["get", "pods", "--all-namespaces", "-o", "name"])
        .ok();
    assert_eq!(all.lines().count(), 3, "{all}");
    let wide = cp
        .kubectl(&[
            "get",
            "pods",
            "-o",
            "wide",
            "--field-selector",
            "spec.nodeName=n2",
        ])
        .ok();
    let r = rows(&wide);
    assert_eq!(
        r[0][..7],
        ["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP", "NODE"]
    );
    assert_eq!((r[1][0].as_str(), r[1][6].as_str()), ("b", "n2"));
    let err = cp
        .kubectl(&["get", "pods", "--field-selector", "spec.colour=red"])
        .fails();
    assert!(
        err.contains("field label not supported: spec.colour"),
        "{err}"
    );
}

#[test]
fn get_watch_streams_changes() {
    let cp = Cp::start();
    // Pods for a scheduler that is not running: the only changes are the test's.
    let pod = |name: &str, labels: &str| {
        pod(name, labels).replace("spec:\n", "spec:\n  schedulerName: manual\n")
    };
    cp.apply(&pod("w1", "app: w"));
    let mut child = cp.kubectl_spawn(&["get", "pods", "-w", "--output-watch-events"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = Vec::new();
    let wait_for = |want: &str, lines: &mut Vec<String>| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !lines.iter().any(|l: &String| l.contains(want)) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) => lines.push(l),
                Err(_) => panic!("no {want:?} from kubectl get -w; got {lines:?}"),
            }
        }
    };
    wait_for("ADDED", &mut lines);
    cp.apply(&pod("w2", "app: w"));
    wait_for("w2", &mut lines);
    cp.kubectl(&["label", "pod", "w1", "x=y"]).ok();
    wait_for("MODIFIED", &mut lines);
    cp.kubectl(&["delete", "pod", "w2"]).ok();
    wait_for("DELETED", &mut lines);
    let _ = child.kill();
    let _ = child.wait();
    let events: Vec<(String, String)> = lines
        .iter()
        .map(|l| rows(l).remove(0))
        .filter(|r| r[0] != "EVENT")
        .map(|r| (r[0].clone(), r[1].clone()))
        .collect();
    let pair = |e: &str, n: &str| (e.to_string(), n.to_string());
    assert_eq!(
        events,
        [
            pair("ADDED", "w1"),
            pair("ADDED", "w2"),
            pair("MODIFIED", "w1"),
            pair("DELETED", "w2")
        ],
        "{lines:?}"
    );
    assert_eq!(rows(&lines[0])[0][..3], ["EVENT", "NAME", "READY"]);
}

#[test]
fn describe_pods_and_services() {
    let cp = Cp::start();
    cp.apply(WEB);
    cp.apply(&pod("web-1", "app: web"));
    // "Key:   value" lines, whitespace collapsed.
    let fields = |text: &str| -> Vec<String> {
        text.lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect()
    };
    let svc = fields(&cp.kubectl(&["describe", "service", "web"]).ok());
    let ip = cp.jsonpath(&["svc", "web"], "{.spec.clusterIP}");
    for want in [
        "Name: web".to_string(),
        "Namespace: default".into(),
        "Labels: app=web".into(),
        "Selector: app=web".into(),
        "Type: ClusterIP".into(),
        format!("IP: {ip}"),
        "Port: http 80/TCP".into(),
        "TargetPort: 8080/TCP".into(),
        "Session Affinity: None".into(),
        "Internal Traffic Policy: Cluster".into(),
        "Events: <none>".into(),
    ] {
        assert!(svc.contains(&want), "missing {want:?} in:\n{svc:#?}");
    }
    let pod = fields(&cp.kubectl(&["describe", "pod", "web-1"]).ok());
    for want in [
        "Name: web-1",
        "Namespace: default",
        "Labels: app=web",
        "Status: Pending",
        "Image: echo",
        "QoS Class: BestEffort",
    ] {
        assert!(
            pod.iter().any(|l| l == want),
            "missing {want:?} in:\n{pod:#?}"
        );
    }
    // No node: the scheduler's Warning is the pod's one Event, as describe lists it.
    eventually(10, "describe shows the FailedScheduling event", || {
        let pod = fields(&cp.kubectl(&["describe", "pod", "web-1"]).ok());
        pod.iter()
            .any(|l| {
                l.starts_with("Warning FailedScheduling ")
                    && l.ends_with(" default-scheduler no nodes available to schedule pods")
            })
            .then_some(())
    });
    // Defaults and the QoS class as kube-apiserver computes them.
    let burstable = "apiVersion: v1\nkind: Pod\nmetadata: {name: web-2}\nspec:\n  containers:\n  - {name: c, image: echo:1.0, resources: {requests: {cpu: 100m}}}\n";
    cp.apply(burstable);
    assert_eq!(
        cp.jsonpath(
            &["pod", "web-2"],
            "{.status.qosClass} {.spec.containers[0].imagePullPolicy} {.spec.containers[0].terminationMessagePath}"
        ),
        "Burstable IfNotPresent /dev/termination-log"
    );
    let described = fields(&cp.kubectl(&["describe", "pod", "web-2"]).ok());
    assert!(
        described.iter().any(|l| l == "QoS Class: Burstable"),
        "{described:#?}"
    );
}

#[test]
fn unknown_fields_are_rejected_as_kube_apiserver_does() {
    let cp = Cp::start();
    let bad = WEB
        .replace("spec:\n", "spec:\n  bogus: 1\n")
        .replace("targetPort: 8080}", "targetPort: 8080, colour: red}");
    let expect = r#"Service in version "v1" cannot be handled as a Service: strict decoding error: unknown field "spec.bogus", unknown field "spec.ports[0].colour""#;
    let err = cp.kubectl_stdin(&["apply", "-f", "-"], &bad).fails();
    assert_eq!(
        err.trim(),
        format!(r#"Error from server (BadRequest): error when creating "STDIN": {expect}"#)
    );
    let err = cp.kubectl_stdin(&["create", "-f", "-"], &bad).fails();
    assert!(err.contains(expect), "{err}");
    cp.kubectl(&["get", "svc", "web"]).fails();
    // --validate=warn: accepted, the unknown fields dropped, one warning each.
    let out = cp.kubectl_stdin(&["apply", "-f", "-", "--validate=warn"], &bad);
    assert!(out.success, "{out:?}");
    assert!(
        out.stderr
            .contains(r#"Warning: unknown field "spec.bogus""#)
            && out
                .stderr
                .contains(r#"Warning: unknown field "spec.ports[0].colour""#),
        "{}",
        out.stderr
    );
    let stored = cp.get_json(&["svc", "web"]);
    assert!(stored["spec"].get("bogus").is_none(), "{stored}");
    // A later strict apply with an unknown field is refused on the patch path too.
    let err = cp.kubectl_stdin(&["apply", "-f", "-"], &bad).fails();
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.bogus""#),
        "{err}"
    );
    // Without the parameter (a raw request) the server's default is Warn.
    cp.kubectl(&["delete", "svc", "web"]).ok();
    let file = cp.dir.join("bad.json");
    let json: serde_json::Value = serde_yaml::from_str(&bad).unwrap();
    std::fs::write(&file, json.to_string()).unwrap();
    let out = cp.kubectl(&[
        "create",
        "--raw",
        "/api/v1/namespaces/default/services",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(
        out.success
            && out
                .stderr
                .contains(r#"Warning: unknown field "spec.bogus""#),
        "{out:?}"
    );
    // --validate=false sends Ignore: accepted silently.
    let out = cp.kubectl_stdin(&["apply", "-f", "-", "--validate=false"], &bad);
    assert!(
        out.success && !out.stderr.contains("unknown field"),
        "{out:?}"
    );
    // Unknown fields deeper down and on pods.
    let pod_bad = pod("p", "app: p").replace("image: echo}", "image: echo, imagePolicy: x}");
    let err = cp.kubectl_stdin(&["apply", "-f", "-"], &pod_bad).fails();
    assert!(
        err.contains(r#"Pod in version "v1" cannot be handled as a Pod: strict decoding error: unknown field "spec.containers[0].imagePolicy""#),
        "{err}"
    );
    // A field of the wrong type is refused whatever the directive.
    let wrong = WEB.replace("port: 80,", "port: eighty,");
    let err = cp
        .kubectl_stdin(&["create", "-f", "-", "--validate=false"], &wrong)
        .fails();
    assert!(err.contains("BadRequest"), "{err}");
}

#[test]
fn server_side_dry_runs_and_diff_change_nothing() {
    let cp = Cp::start();
    cp.apply(WEB);
    let rv = cp.jsonpath(&["svc", "web"], "{.metadata.resourceVersion}");
    let changed = WEB.replace("targetPort: 8080", "targetPort: 9090");
    let diff = cp.kubectl_stdin(&["diff", "-f", "-"], &changed);
    assert!(!diff.success, "kubectl diff exits 1 on differences");
    assert!(
        diff.stdout.contains("-    targetPort: 8080")
            && diff.stdout.contains("+    targetPort: 9090"),
        "{}{}",
        diff.stdout,
        diff.stderr
    );
    let out = cp
        .kubectl_stdin(&["apply", "-f", "-", "--dry-run=server"], &changed)
        .ok();
    assert_eq!(out.trim(), "service/web configured (server dry run)");
    let other = WEB.replace("name: web\n", "name: other\n");
    let out = cp
        .kubectl_stdin(&["create", "-f", "-", "--dry-run=server"], &other)
        .ok();
    assert_eq!(out.trim(), "service/other created (server dry run)");
    let out = cp
        .kubectl(&["delete", "svc", "web", "--dry-run=server"])
        .ok();
    assert_eq!(out.trim(), r#"service "web" deleted (server dry run)"#);
    cp.kubectl(&["get", "svc", "other"]).fails();
    assert_eq!(
        cp.jsonpath(
            &["svc", "web"],
            "{.metadata.resourceVersion} {.spec.ports[0].targetPort}"
        ),
        format!("{rv} 8080")
    );
}
