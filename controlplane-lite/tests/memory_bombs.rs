//! Request bodies built to exhaust memory (both were kube-apiserver CVEs) get a 4xx `Status`
//! while the server's resident memory stays under 200 MiB, and the server keeps serving.
mod harness;

use serde_json::{json, Value};

use harness::{peak_rss_during, Cp};

/// The most resident memory the server may use while refusing a bomb.
const RSS_CEILING: u64 = 200 * 1024 * 1024;

fn status(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("a Status object, not {text:?}: {e}"))
}

#[track_caller]
fn assert_still_serving(cp: &Cp) {
    let out = cp
        .kubectl(&["get", "namespace", "default", "-o", "name"])
        .ok();
    assert_eq!(out.trim(), "namespace/default");
}

#[test]
fn a_billion_laughs_yaml_body_is_a_400_and_memory_stays_bounded() {
    let cp = Cp::start();
    // 2.6 KB whose aliases expand to 10^9 scalars (CVE-2019-11253).
    let a = vec!["x"; 1000].join(",");
    let b = vec!["*a"; 100].join(",");
    let c = vec!["*b"; 100].join(",");
    let d = vec!["*c"; 100].join(",");
    let body = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: laughs}}\na: &a [{a}]\nb: &b [{b}]\nc: &c [{c}]\nd: [{d}]\n"
    );
    assert!(body.len() < 4096);
    let pid = cp.pid().expect("running");
    let ((code, text), peak) = peak_rss_during(pid, || {
        cp.send(
            "POST",
            "/api/v1/namespaces",
            "application/yaml",
            body.as_bytes(),
        )
    });
    assert_eq!(code, 400, "{text}");
    let s = status(&text);
    assert_eq!(s["reason"], "BadRequest");
    assert!(
        s["message"]
            .as_str()
            .unwrap()
            .ends_with("yaml: document contains excessive aliasing"),
        "{s}"
    );
    assert!(peak < RSS_CEILING, "peak RSS {peak} bytes");
    assert_still_serving(&cp);
}

#[test]
fn chained_json_patch_copies_are_a_422_and_memory_stays_bounded() {
    let cp = Cp::start();
    cp.kubectl(&["create", "namespace", "doubling"]).ok();
    cp.kubectl(&[
        "annotate",
        "namespace",
        "doubling",
        &format!("a={}", "x".repeat(4096)),
    ])
    .ok();
    // Each copy doubles metadata: 2^40 times its size if nothing stopped it (CVE-2019-1002100).
    let ops: Vec<Value> = (0..40)
        .map(|i| json!({"op": "copy", "from": "/metadata/annotations", "path": format!("/metadata/annotations/c{i}")}))
        .collect();
    let pid = cp.pid().expect("running");
    let ((code, text), peak) = peak_rss_during(pid, || {
        cp.send(
            "PATCH",
            "/api/v1/namespaces/doubling",
            "application/json-patch+json",
            Value::Array(ops).to_string().as_bytes(),
        )
    });
    assert_eq!(code, 422, "{text}");
    assert!(
        text.contains("Unable to complete the copy, the accumulated size increase of copy is"),
        "{text}"
    );
    assert!(peak < RSS_CEILING, "peak RSS {peak} bytes");
    // More than 10,000 operations: 413, as kube-apiserver.
    let ops = vec![json!({"op": "test", "path": "/kind", "value": "Namespace"}); 10_001];
    let (code, text) = cp.send(
        "PATCH",
        "/api/v1/namespaces/doubling",
        "application/json-patch+json",
        Value::Array(ops).to_string().as_bytes(),
    );
    assert_eq!(code, 413, "{text}");
    assert_eq!(
        status(&text)["message"],
        "Request entity too large: The allowed maximum operations in a JSON patch is 10000, got 10001"
    );
    assert_still_serving(&cp);
}

#[test]
fn a_body_over_three_mebibytes_is_a_413_status_not_a_bare_error() {
    let cp = Cp::start();
    let body = format!(
        "{{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{{\"name\":\"big\",\"annotations\":{{\"a\":\"{}\"}}}}}}",
        "x".repeat(3 * 1024 * 1024)
    );
    let (code, text) = cp.send(
        "POST",
        "/api/v1/namespaces",
        "application/json",
        body.as_bytes(),
    );
    assert_eq!(code, 413, "{text}");
    let s = status(&text);
    assert_eq!(
        (
            s["kind"].as_str(),
            s["reason"].as_str(),
            s["message"].as_str()
        ),
        (
            Some("Status"),
            Some("RequestEntityTooLarge"),
            Some("Request entity too large: limit is 3145728")
        )
    );
    assert_still_serving(&cp);
}
