//! EndpointSlices of a large Service as kubectl sees them: 250 ready pods (created through the
//! API, the test playing their kubelet) make three slices of at most 100 endpoints with
//! `generateName`-style names, and one pod turning unready rewrites only the slice holding it.
mod harness;

use std::collections::BTreeMap;

use harness::{eventually, Cp};
use serde_json::{json, Value};

const PODS: usize = 250;

/// name -> (resourceVersion, endpoint count) of the Service `web`'s slices.
fn slices(cp: &Cp) -> BTreeMap<String, (String, usize)> {
    let list = cp.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["metadata"]["name"].as_str().unwrap().to_string(),
                (
                    s["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_string(),
                    s["endpoints"].as_array().map_or(0, Vec::len),
                ),
            )
        })
        .collect()
}

/// Creates pod `i` on node n1 and reports it running and Ready (`ready`) with its IP.
fn pod(client: &harness::Client, i: usize) {
    let name = format!("web-{i:03}");
    let body = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "web"}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "echo"}]}});
    let (code, text) = client.request(
        "POST",
        "/api/v1/namespaces/default/pods",
        Some(&body.to_string()),
    );
    assert_eq!(code, 201, "{text}");
    set_ready(client, &name, i, true);
}

fn set_ready(client: &harness::Client, name: &str, i: usize, ready: bool) {
    let status = json!({"status": {"phase": "Running",
        "podIP": format!("10.244.{}.{}", 1 + i / 200, 2 + i % 200),
        "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}});
    let (code, text) = client.request(
        "PATCH",
        &format!("/api/v1/namespaces/default/pods/{name}/status"),
        Some(&status.to_string()),
    );
    assert_eq!(code, 200, "{text}");
}

#[test]
fn two_hundred_fifty_ready_pods_make_three_slices_that_change_one_at_a_time() {
    let cp = Cp::start();
    cp.apply("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n");
    cp.apply(
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    std::thread::scope(|s| {
        for t in 0..4 {
            let client = cp.client();
            s.spawn(move || (t..PODS).step_by(4).for_each(|i| pod(&client, i)));
        }
    });
    let before = eventually(20, "250 endpoints in the slices", || {
        let got = slices(&cp);
        (got.values().map(|(_, n)| n).sum::<usize>() == PODS).then_some(got)
    });
    // As kube-controller-manager: the fewest slices of at most 100 endpoints; how the 250 are
    // spread depends on the order the pods' changes arrive in (four writers here).
    let sizes: Vec<usize> = before.values().map(|(_, n)| *n).collect();
    assert_eq!(sizes.len(), 3, "{sizes:?}");
    assert!(sizes.iter().all(|n| *n <= 100), "{sizes:?}");
    for name in before.keys() {
        let suffix = name
            .strip_prefix("web-")
            .unwrap_or_else(|| panic!("{name}"));
        assert!(
            suffix.len() == 5 && suffix.bytes().all(|b| b.is_ascii_alphanumeric()),
            "{name} is <service>-<5 random characters>"
        );
    }
    let addresses = cp.jsonpath(&["endpoints", "web"], "{.subsets[0].addresses[*].ip}");
    assert_eq!(addresses.split_whitespace().count(), PODS);
    assert_eq!(
        cp.jsonpath(&["endpoints", "web"], "{.metadata.annotations}"),
        "",
        "250 addresses fit in one Endpoints object"
    );

    set_ready(&cp.client(), "web-120", 120, false);
    let after = eventually(10, "web-120 is not ready in its slice", || {
        let list = cp.get_json(&["endpointslices", "-l", "kubernetes.io/service-name=web"]);
        let unready = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|s| s["endpoints"].as_array().cloned().unwrap_or_default())
            .any(|e: Value| {
                e["targetRef"]["name"] == "web-120" && e["conditions"]["ready"] == false
            });
        unready.then(|| slices(&cp))
    });
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>(),
        "the slices keep their names"
    );
    let rewritten = after.iter().filter(|(n, v)| before[*n] != **v).count();
    assert_eq!(rewritten, 1, "only the slice holding web-120 was written");
}
