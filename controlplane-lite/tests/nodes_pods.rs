//! Nodes, pods and endpoints against the switchyard-cp binary, with the test playing the
//! kubelet through kubectl (node and pod status via `--subresource=status`, finishing a
//! deletion with `--grace-period=0 --force`): podCIDRs in registration order, the scheduler
//! binding only to Ready nodes, NotReady after missed heartbeats, graceful pod deletion with the
//! endpoint kept as serving/terminating, and EndpointSlices/Endpoints with named ports resolved
//! per pod.
mod harness;

use harness::{eventually, now, rows, Cp};
use serde_json::Value;

fn register(cp: &Cp, node: &str, ip: &str) {
    cp.apply(&format!(
        "apiVersion: v1\nkind: Node\nmetadata:\n  name: {node}\n  labels: {{kubernetes.io/hostname: {node}}}\n"
    ));
    heartbeat(cp, node, ip);
}

/// What a kubelet posts: Ready with a fresh heartbeat, its address and versions.
/// Merge-patches the status subresource of `kind` `name`, as a kubelet does.
fn patch_status(cp: &Cp, kind: &str, name: &str, status: &str) {
    cp.kubectl(&[
        "patch",
        kind,
        name,
        "--subresource=status",
        "--type=merge",
        "-p",
        status,
    ])
    .ok();
}

fn heartbeat(cp: &Cp, node: &str, ip: &str) {
    let t = now();
    let status = format!(
        r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","reason":"KubeletReady","message":"kubelet is posting ready status","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}],"addresses":[{{"type":"InternalIP","address":"{ip}"}}],"nodeInfo":{{"kubeletVersion":"v1.32.0","osImage":"Debian","kernelVersion":"6.1","containerRuntimeVersion":"switchyard://0.1","machineID":"","systemUUID":"","bootID":"","kubeProxyVersion":"","operatingSystem":"linux","architecture":"amd64"}}}}}}"#
    );
    patch_status(cp, "node", node, &status);
}

fn pod(name: &str, node: Option<&str>, port_name: &str, port: u16) -> String {
    let node = node.map_or(String::new(), |n| format!("  nodeName: {n}\n"));
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels: {{app: web}}\nspec:\n{node}  terminationGracePeriodSeconds: 20\n  containers:\n  - name: c\n    image: echo\n    ports: [{{name: {port_name}, containerPort: {port}}}]\n"
    )
}

/// What a kubelet posts once the pod runs: its IP and Ready.
fn pod_running(cp: &Cp, name: &str, ip: &str) {
    let t = now();
    let status = format!(
        r#"{{"status":{{"phase":"Running","podIP":"{ip}","podIPs":[{{"ip":"{ip}"}}],"conditions":[{{"type":"Ready","status":"True","lastTransitionTime":"{t}"}}],"containerStatuses":[{{"name":"c","ready":true,"restartCount":0,"image":"echo","imageID":"","started":true}}]}}}}"#
    );
    patch_status(cp, "pod", name, &status);
}

#[test]
fn nodes_get_pod_cidrs_and_pods_are_scheduled_only_to_ready_nodes() {
    let cp = Cp::start();
    register(&cp, "n1", "198.18.0.11");
    cp.kubectl(&[
        "label",
        "node",
        "n1",
        "node-role.kubernetes.io/control-plane=",
    ])
    .ok();
    cp.apply("apiVersion: v1\nkind: Node\nmetadata: {name: n2}\n");
    assert_eq!(
        cp.jsonpath(&["node", "n1"], "{.spec.podCIDR} {.spec.podCIDRs[0]}"),
        "10.244.1.0/24 10.244.1.0/24"
    );
    assert_eq!(
        cp.jsonpath(&["node", "n2"], "{.spec.podCIDR}"),
        "10.244.2.0/24"
    );
    let nodes = rows(&cp.kubectl(&["get", "nodes", "-o", "wide"]).ok());
    assert_eq!(
        nodes[0][..6],
        ["NAME", "STATUS", "ROLES", "AGE", "VERSION", "INTERNAL-IP"]
    );
    assert_eq!(nodes[1][..3], ["n1", "Ready", "control-plane"]);
    assert_eq!(
        (nodes[1][4].as_str(), nodes[1][5].as_str()),
        ("v1.32.0", "198.18.0.11")
    );
    assert_eq!(nodes[2][..2], ["n2", "NotReady"]);
    let described: Vec<String> = cp
        .kubectl(&["describe", "node", "n1"])
        .ok()
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    for want in [
        "Name: n1",
        "PodCIDR: 10.244.1.0/24",
        "InternalIP: 198.18.0.11",
    ] {
        assert!(
            described.iter().any(|l| l == want),
            "missing {want:?} in:\n{described:#?}"
        );
    }
    assert!(
        described
            .iter()
            .any(|l| l.starts_with("Ready True ") && l.contains("KubeletReady")),
        "{described:#?}"
    );

    // n2 is not Ready: every pod goes to n1.
    for i in 0..3 {
        cp.apply(&pod(&format!("a{i}"), None, "http", 8080));
    }
    let placed = |cp: &Cp| -> Vec<String> {
        cp.jsonpath(&["pods"], "{range .items[*]}{.spec.nodeName},{end}")
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };
    let nodes = eventually(10, "three pods bound", || {
        let p = placed(&cp);
        (p.len() == 3).then_some(p)
    });
    assert_eq!(nodes, ["n1", "n1", "n1"]);
    assert_eq!(
        cp.jsonpath(
            &["pod", "a0"],
            "{.status.conditions[0].type}={.status.conditions[0].status}"
        ),
        "PodScheduled=True"
    );
    // Once n2 is Ready it gets the next pods (it has the fewest).
    heartbeat(&cp, "n2", "198.18.0.12");
    cp.apply(&pod("b0", None, "http", 8080));
    let node = eventually(10, "b0 bound", || {
        Some(cp.jsonpath(&["pod", "b0"], "{.spec.nodeName}")).filter(|n| !n.is_empty())
    });
    assert_eq!(node, "n2");
    let wide = cp.kubectl(&["get", "pod", "b0", "-o", "wide"]).ok();
    assert_eq!(rows(&wide)[1][6], "n2", "{wide}");
    // A cordoned node gets no new pods.
    assert_eq!(
        cp.kubectl(&["cordon", "n2"]).ok().trim(),
        "node/n2 cordoned"
    );
    assert_eq!(
        rows(&cp.kubectl(&["get", "node", "n2"]).ok())[1][1],
        "Ready,SchedulingDisabled"
    );
    cp.apply(&pod("b1", None, "http", 8080));
    let node = eventually(10, "b1 bound", || {
        Some(cp.jsonpath(&["pod", "b1"], "{.spec.nodeName}")).filter(|n| !n.is_empty())
    });
    assert_eq!(node, "n1");
    cp.kubectl(&["uncordon", "n2"]).ok();
    // nodeSelector, taints and tolerations: a pod pinned to a tainted node waits, Unschedulable,
    // until it tolerates the taint.
    assert_eq!(
        cp.kubectl(&["taint", "node", "n1", "dedicated=net:NoSchedule"])
            .ok()
            .trim(),
        "node/n1 tainted"
    );
    let pinned = |name: &str, tolerations: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  nodeSelector: {{kubernetes.io/hostname: n1}}\n{tolerations}  containers: [{{name: c, image: x}}]\n"
        )
    };
    cp.apply(&pinned("sel", ""));
    let why = eventually(10, "sel marked unschedulable", || {
        let r = cp.jsonpath(
            &["pod", "sel"],
            "{.status.conditions[0].reason}: {.status.conditions[0].message}",
        );
        r.starts_with("Unschedulable").then_some(r)
    });
    assert_eq!(
        why,
        "Unschedulable: 0/2 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, 1 node(s) had untolerated taints."
    );
    assert_eq!(
        rows(&cp.kubectl(&["get", "pod", "sel"]).ok())[1][2],
        "Pending"
    );
    cp.apply(&pinned(
        "tol",
        "  tolerations: [{key: dedicated, operator: Equal, value: net, effect: NoSchedule}]\n",
    ));
    eventually(10, "tol bound to n1", || {
        (cp.jsonpath(&["pod", "tol"], "{.spec.nodeName}") == "n1").then_some(())
    });
    assert_eq!(cp.jsonpath(&["pod", "sel"], "{.spec.nodeName}"), "");
    cp.kubectl(&["taint", "node", "n1", "dedicated-"]).ok();
    eventually(10, "sel bound once the taint is gone", || {
        (cp.jsonpath(&["pod", "sel"], "{.spec.nodeName}") == "n1").then_some(())
    });
    // A pod that names its node is not moved, and its binding cannot change.
    cp.apply(&pod("pinned", Some("n1"), "http", 8080));
    let err = cp
        .kubectl(&[
            "patch",
            "pod",
            "pinned",
            "-p",
            r#"{"spec":{"nodeName":"n2"}}"#,
        ])
        .fails();
    assert_eq!(
        err.trim(),
        "The Pod \"pinned\" is invalid: spec: Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)"
    );
    assert_eq!(cp.jsonpath(&["pod", "pinned"], "{.spec.nodeName}"), "n1");
    // A second apply changing a container port is refused the same way; one changing the
    // image goes through.
    let err = cp
        .kubectl_stdin(
            &["apply", "-f", "-"],
            &pod("pinned", Some("n1"), "http", 9999),
        )
        .fails();
    assert!(
        err.contains("spec: Forbidden: pod updates may not change fields"),
        "{err}"
    );
    let image = pod("pinned", Some("n1"), "http", 8080).replace("image: echo", "image: echo:2");
    assert_eq!(cp.apply(&image).trim(), "pod/pinned configured");
    assert_eq!(
        cp.jsonpath(&["pod", "pinned"], "{.spec.containers[0].image}"),
        "echo:2"
    );
}

#[test]
fn a_node_that_stops_heartbeating_turns_not_ready() {
    let cp = Cp::start_with(&["--node-monitor-grace", "2"]);
    register(&cp, "n1", "198.18.0.11");
    assert_eq!(
        rows(&cp.kubectl(&["get", "node", "n1"]).ok())[1][1],
        "Ready"
    );
    // Heartbeats keep it Ready past the grace period.
    for _ in 0..3 {
        std::thread::sleep(std::time::Duration::from_millis(1000));
        heartbeat(&cp, "n1", "198.18.0.11");
    }
    assert_eq!(
        rows(&cp.kubectl(&["get", "node", "n1"]).ok())[1][1],
        "Ready"
    );
    // Then the kubelet goes silent.
    eventually(10, "n1 NotReady", || {
        (rows(&cp.kubectl(&["get", "node", "n1"]).ok())[1][1] == "NotReady").then_some(())
    });
    assert_eq!(
        cp.jsonpath(
            &["node", "n1"],
            "{.status.conditions[0].status} {.status.conditions[0].reason}"
        ),
        "Unknown NodeStatusUnknown"
    );
    // A NotReady node gets no new pods.
    cp.apply(&pod("late", None, "http", 8080));
    std::thread::sleep(std::time::Duration::from_millis(2500));
    assert_eq!(cp.jsonpath(&["pod", "late"], "{.spec.nodeName}"), "");
    // It comes back with the next heartbeat and the pod is scheduled.
    heartbeat(&cp, "n1", "198.18.0.11");
    eventually(10, "late bound to n1", || {
        (cp.jsonpath(&["pod", "late"], "{.spec.nodeName}") == "n1").then_some(())
    });
}

fn slices(cp: &Cp) -> Vec<Value> {
    let list = cp.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    list["items"].as_array().cloned().unwrap_or_default()
}

/// (ip, port, ready, serving, terminating) of every endpoint in the slices, sorted.
fn endpoints(cp: &Cp) -> Vec<(String, i64, bool, bool, bool)> {
    let mut out = Vec::new();
    for s in slices(cp) {
        let port = s["ports"][0]["port"].as_i64().unwrap_or(0);
        for e in s["endpoints"].as_array().into_iter().flatten() {
            let c = &e["conditions"];
            out.push((
                e["addresses"][0].as_str().unwrap_or("").to_string(),
                port,
                c["ready"].as_bool().unwrap_or(false),
                c["serving"].as_bool().unwrap_or(false),
                c["terminating"].as_bool().unwrap_or(false),
            ));
        }
    }
    out.sort();
    out
}

#[test]
fn endpoints_follow_pods_with_named_ports_and_graceful_deletion() {
    let cp = Cp::start();
    register(&cp, "n1", "198.18.0.11");
    cp.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{name: http, port: 80, targetPort: http}]\n",
    );
    // Before any pod: one empty slice, an Endpoints object without subsets.
    eventually(5, "an empty slice", || {
        (slices(&cp).len() == 1).then_some(())
    });
    assert_eq!(cp.jsonpath(&["endpoints", "web"], "{.subsets}"), "");
    cp.apply(&pod("p1", Some("n1"), "http", 8080));
    cp.apply(&pod("p2", Some("n1"), "http", 9090));
    cp.apply(&pod("p3", Some("n1"), "http", 8080));
    pod_running(&cp, "p1", "10.244.1.11");
    pod_running(&cp, "p2", "10.244.1.12");
    // p3's container is still being created: kubectl shows the waiting reason.
    patch_status(
        &cp,
        "pod",
        "p3",
        r#"{"status":{"containerStatuses":[{"name":"c","ready":false,"restartCount":0,"image":"echo","imageID":"","state":{"waiting":{"reason":"ContainerCreating"}}}]}}"#,
    );
    assert_eq!(
        rows(&cp.kubectl(&["get", "pod", "p3"]).ok())[1][2],
        "ContainerCreating"
    );
    // p3 has an IP but is not Ready yet.
    patch_status(
        &cp,
        "pod",
        "p3",
        r#"{"status":{"phase":"Running","podIP":"10.244.1.13","conditions":[{"type":"Ready","status":"False"}]}}"#,
    );
    let want = vec![
        ("10.244.1.11".to_string(), 8080, true, true, false),
        ("10.244.1.12".to_string(), 9090, true, true, false),
        ("10.244.1.13".to_string(), 8080, false, false, false),
    ];
    eventually(5, "three endpoints", || {
        (endpoints(&cp) == want).then_some(())
    });
    // The named targetPort resolved per pod: 8080 and 9090 pods are in different slices.
    let s = slices(&cp);
    assert_eq!(s.len(), 2, "{s:?}");
    for slice in &s {
        assert_eq!(slice["addressType"], "IPv4");
        assert_eq!(slice["ports"][0]["name"], "http");
        assert_eq!(slice["metadata"]["ownerReferences"][0]["kind"], "Service");
        assert_eq!(
            slice["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"],
            "endpointslice-controller.k8s.io"
        );
    }
    let table = cp.kubectl(&["get", "endpoints", "web"]).ok();
    let r = rows(&table);
    assert_eq!(r[0], ["NAME", "ENDPOINTS", "AGE"]);
    let mut eps: Vec<&str> = r[1][1].split(',').collect();
    eps.sort();
    assert_eq!(eps, ["10.244.1.11:8080", "10.244.1.12:9090"]);
    assert_eq!(
        cp.jsonpath(
            &["endpoints", "web"],
            "{range .subsets[*]}{.notReadyAddresses[*].ip}{end}"
        ),
        "10.244.1.13"
    );
    let described = cp.kubectl(&["describe", "svc", "web"]).ok();
    assert!(described.contains("10.244.1.11:8080"), "{described}");

    // Graceful deletion: the pod stays Terminating, its endpoint serving and terminating.
    let out = cp.kubectl(&["delete", "pod", "p1", "--wait=false"]).ok();
    assert_eq!(out.trim(), r#"pod "p1" deleted"#);
    let r = rows(&cp.kubectl(&["get", "pod", "p1"]).ok());
    assert_eq!(r[1][2], "Terminating");
    assert_eq!(
        cp.jsonpath(&["pod", "p1"], "{.metadata.deletionGracePeriodSeconds}"),
        "20"
    );
    assert!(!cp
        .jsonpath(&["pod", "p1"], "{.metadata.deletionTimestamp}")
        .is_empty());
    let want = vec![
        ("10.244.1.11".to_string(), 8080, false, true, true),
        ("10.244.1.12".to_string(), 9090, true, true, false),
        ("10.244.1.13".to_string(), 8080, false, false, false),
    ];
    eventually(5, "p1 serving and terminating", || {
        (endpoints(&cp) == want).then_some(())
    });
    // The Endpoints object drops terminating pods, as Kubernetes' endpoints controller does.
    let ready = cp.jsonpath(
        &["endpoints", "web"],
        "{range .subsets[*]}{.addresses[*].ip} {end}",
    );
    assert_eq!(ready.trim(), "10.244.1.12");
    // Deleting again does not restart the grace period.
    cp.kubectl(&["delete", "pod", "p1", "--wait=false"]).ok();
    assert_eq!(
        cp.jsonpath(&["pod", "p1"], "{.metadata.deletionGracePeriodSeconds}"),
        "20"
    );
    // The kubelet finishes: the pod and its endpoint are gone.
    cp.kubectl(&["delete", "pod", "p1", "--grace-period=0", "--force"])
        .ok();
    cp.kubectl(&["get", "pod", "p1"]).fails();
    let want = vec![
        ("10.244.1.12".to_string(), 9090, true, true, false),
        ("10.244.1.13".to_string(), 8080, false, false, false),
    ];
    eventually(5, "p1 gone from the slices", || {
        (endpoints(&cp) == want).then_some(())
    });
    // p3 turns Ready: it becomes a ready endpoint in both objects.
    pod_running(&cp, "p3", "10.244.1.13");
    eventually(5, "p3 ready", || {
        let e = endpoints(&cp);
        (e.len() == 2 && e.iter().all(|e| e.2)).then_some(())
    });
    eventually(5, "Endpoints lists p3", || {
        (cp.jsonpath(
            &["endpoints", "web"],
            "{range .subsets[*]}{.addresses[*].ip} {end}",
        )
        .contains("10.244.1.13"))
        .then_some(())
    });
    // Deleting the service removes its slices and Endpoints.
    cp.kubectl(&["delete", "svc", "web"]).ok();
    eventually(5, "slices removed", || slices(&cp).is_empty().then_some(()));
    cp.kubectl(&["get", "endpoints", "web"]).fails();
}
