//! What kube-apiserver guarantees under concurrency and odd numbers: chunked lists from one
//! snapshot (and 410 once it is gone), resourceVersions from the future refused with a 504,
//! unconditional updates that never resurrect a deleted object, a slow disk that stalls no
//! watch, and client numbers too large for any arithmetic.
mod harness;

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::{Cp, TOKEN};

fn get(cp: &Cp, path: &str) -> (u16, Value) {
    let (code, text) = cp.request("GET", path, None);
    (code, serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn create_namespaces(cp: &Cp, n: usize) {
    for i in 0..n {
        let body = json!({"metadata": {"name": format!("ns-{i:02}")}}).to_string();
        let (code, text) = cp.request("POST", "/api/v1/namespaces", Some(&body));
        assert_eq!(code, 201, "{text}");
    }
}

#[test]
fn chunked_lists_come_from_the_first_pages_snapshot_as_kubectl_chunk_size_reads_them() {
    let cp = Cp::start();
    create_namespaces(&cp, 12);
    let (code, first) = get(&cp, "/api/v1/namespaces?limit=5");
    assert_eq!(code, 200, "{first}");
    assert_eq!(names(&first).len(), 5);
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    // 12 + default, kube-system, kube-public.
    assert_eq!(first["metadata"]["remainingItemCount"], 10);
    // Changes after the first page are not seen by the later ones.
    cp.kubectl(&["delete", "namespace", "ns-11"]).ok();
    cp.kubectl(&["create", "namespace", "zz-late"]).ok();
    let mut seen = names(&first);
    let mut token = Some(token);
    while let Some(t) = token {
        let (code, page) = get(&cp, &format!("/api/v1/namespaces?limit=5&continue={t}"));
        assert_eq!(code, 200, "{page}");
        assert_eq!(
            page["metadata"]["resourceVersion"],
            first["metadata"]["resourceVersion"]
        );
        seen.extend(names(&page));
        token = page["metadata"]["continue"].as_str().map(str::to_string);
    }
    assert_eq!(seen.len(), 15, "{seen:?}");
    assert!(seen.contains(&"ns-11".to_string()) && !seen.contains(&"zz-late".to_string()));
    // kubectl --chunk-size pages the same way.
    let out = cp
        .kubectl(&["get", "namespaces", "--chunk-size=3", "-o", "name"])
        .ok();
    assert_eq!(out.lines().count(), 15, "{out}");
    assert!(out.contains("namespace/zz-late"));
    let (code, bad) = get(&cp, "/api/v1/namespaces?limit=2&continue=not-a-token");
    assert_eq!(code, 400, "{bad}");
}

#[test]
fn a_continue_token_older_than_the_history_is_a_410_with_a_token_to_go_on() {
    let cp = Cp::start_with(&["--test-history-events", "5"]);
    create_namespaces(&cp, 4);
    let (_, first) = get(&cp, "/api/v1/namespaces?limit=2");
    let token = first["metadata"]["continue"].as_str().unwrap().to_string();
    for i in 0..10 {
        cp.kubectl(&[
            "label",
            "namespace",
            "ns-00",
            &format!("n={i}"),
            "--overwrite",
        ])
        .ok();
    }
    let (code, status) = get(&cp, &format!("/api/v1/namespaces?limit=2&continue={token}"));
    assert_eq!(code, 410, "{status}");
    assert_eq!(status["reason"], "Expired");
    assert!(
        status["message"].as_str().unwrap().starts_with(
            "The provided continue parameter is too old to display a consistent list result."
        ),
        "{status}"
    );
    let again = status["metadata"]["continue"].as_str().unwrap();
    let (code, rest) = get(
        &cp,
        &format!("/api/v1/namespaces?limit=100&continue={again}"),
    );
    assert_eq!(code, 200, "{rest}");
    assert_eq!(
        names(&rest).len(),
        5,
        "the remainder, from the current state: {rest}"
    );
}

#[test]
fn a_resource_version_from_the_future_is_a_504_too_large_resource_version() {
    let cp = Cp::start();
    for path in [
        "/api/v1/namespaces?resourceVersion=99999999",
        "/api/v1/namespaces/default?resourceVersion=99999999",
        "/api/v1/namespaces?watch=1&resourceVersion=99999999",
    ] {
        let start = Instant::now();
        let (code, status) = get(&cp, path);
        assert_eq!(code, 504, "{path}: {status}");
        assert!(start.elapsed() >= Duration::from_secs(2), "it waited first");
        let message = status["message"].as_str().unwrap();
        assert!(
            message.starts_with("Timeout: Too large resource version: 99999999, current: "),
            "{message}"
        );
        assert_eq!(
            status["details"]["causes"][0]["reason"],
            "ResourceVersionTooLarge"
        );
        assert_eq!(status["details"]["retryAfterSeconds"], 1);
    }
}

#[test]
fn an_unconditional_update_racing_a_delete_never_resurrects_the_object() {
    let cp = Cp::start();
    for round in 0..5 {
        let name = format!("racer-{round}");
        cp.kubectl(&["create", "namespace", &name]).ok();
        let client = cp.client();
        let path = format!("/api/v1/namespaces/{name}");
        let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": {"x": "y"}}}).to_string();
        let writer = std::thread::spawn(move || {
            // PUT without a resourceVersion until the namespace is gone.
            let mut codes = Vec::new();
            loop {
                let (code, _) = client.request("PUT", &path, Some(&body));
                codes.push(code);
                if code == 404 || codes.len() > 200 {
                    return codes;
                }
            }
        });
        std::thread::sleep(Duration::from_millis(50));
        cp.kubectl(&["delete", "namespace", &name, "--wait=false"])
            .ok();
        let codes = writer.join().unwrap();
        assert_eq!(codes.last(), Some(&404), "{codes:?}");
        assert!(codes.iter().all(|c| *c == 200 || *c == 404), "{codes:?}");
        let (code, _) = get(&cp, &format!("/api/v1/namespaces/{name}"));
        assert_eq!(
            code, 404,
            "round {round}: the deleted namespace stayed deleted"
        );
    }
}

#[test]
fn a_slow_fsync_stalls_no_watch() {
    let cp = Cp::start_with(&["--test-fsync-delay", "2s"]);
    // Two writes at two seconds each, one in its fsync, one queued behind the writer lock:
    // as many as the server has async workers.
    let writers: Vec<_> = (0..2)
        .map(|i| {
            let client = cp.client();
            std::thread::spawn(move || {
                let body = json!({"metadata": {"name": format!("slow-{i}")}}).to_string();
                client.request("POST", "/api/v1/namespaces", Some(&body)).0
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start = Instant::now();
    let out = cp.curl(&[
        "--max-time",
        "2",
        "-H",
        &format!("Authorization: Bearer {TOKEN}"),
        &format!("{}/api/v1/namespaces?watch=1&timeoutSeconds=1", cp.url),
    ]);
    assert!(
        out.stdout.contains("\"name\":\"default\""),
        "the watch answered at once: {out:?}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    let (code, _) = get(&cp, "/api/v1/namespaces/default");
    assert_eq!(code, 200);
    assert!(start.elapsed() < Duration::from_secs(3));
    for w in writers {
        assert_eq!(w.join().unwrap(), 201);
    }
}

#[test]
fn client_numbers_too_large_for_arithmetic_are_answered_not_crashed_on() {
    let cp = Cp::start();
    let huge = "18446744073709551615";
    for path in [
        format!("/api/v1/namespaces?limit={huge}"),
        "/api/v1/namespaces?limit=-5".to_string(),
        format!("/api/v1/namespaces?watch=1&timeoutSeconds={huge}&resourceVersion=1"),
    ] {
        let out = cp.curl(&[
            "--max-time",
            "1",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            &format!("Authorization: Bearer {TOKEN}"),
            &format!("{}{path}", cp.url),
        ]);
        assert_eq!(out.stdout, "200", "{path}");
    }
    cp.kubectl(&["create", "namespace", "g"]).ok();
    cp.kubectl(&["create", "node", "n1"]).fails();
    let node = json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"}}).to_string();
    assert_eq!(cp.request("POST", "/api/v1/nodes", Some(&node)).0, 201);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"nodeName": "n1",
        "terminationGracePeriodSeconds": i64::MAX, "containers": [{"name": "c", "image": "x"}]}})
    .to_string();
    assert_eq!(
        cp.request("POST", "/api/v1/namespaces/g/pods", Some(&pod))
            .0,
        201
    );
    let (code, text) = cp.request(
        "DELETE",
        &format!(
            "/api/v1/namespaces/g/pods/p?gracePeriodSeconds={}",
            i64::MAX
        ),
        None,
    );
    assert_eq!(code, 200, "{text}");
    let port = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"},
        "spec": {"ports": [{"port": huge.parse::<f64>().unwrap(), "nodePort": -1}]}})
    .to_string();
    assert_eq!(
        cp.request("POST", "/api/v1/namespaces/g/services", Some(&port))
            .0,
        400
    );
    cp.kubectl(&["get", "namespace", "g"]).ok();
}
