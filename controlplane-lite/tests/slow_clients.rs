//! Slow and silent clients cannot hold the server: half a header or an idle keep-alive
//! connection is closed after the header timeout, connections past the cap wait for a free slot,
//! and a watcher that stops reading is closed without slowing anybody else
//! (`slow_clients.py` plays the clients over TLS).
mod harness;

use std::path::Path;

use serde_json::Value;

use harness::{ca_file, Cp, TOKEN};

fn clients(cp: &Cp, mode: &str) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/slow_clients.py");
    let ca = ca_file(&cp.data);
    let out = cp
        .python(&script, &[mode, &cp.url, &ca.to_string_lossy(), TOKEN])
        .ok();
    eprintln!("{mode}: {out}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{out}: {e}"))
}

fn seconds(v: &Value) -> f64 {
    v.as_f64()
        .unwrap_or_else(|| panic!("the connection stayed open: {v}"))
}

#[test]
fn half_a_header_and_an_idle_connection_are_closed_after_the_header_timeout() {
    let cp = Cp::start_with(&["--header-timeout", "2s"]);
    let r = clients(&cp, "half-header");
    let half = seconds(&r["half_header_closed_after"]);
    assert!((1.5..8.0).contains(&half), "{r}");
    assert_eq!(r["answered"], "HTTP/1.1 200 OK", "{r}");
    let idle = seconds(&r["idle_closed_after"]);
    assert!((1.5..8.0).contains(&idle), "{r}");
}

#[test]
fn connections_past_the_cap_wait_until_one_closes() {
    let cp = Cp::start_with(&["--max-connections", "2"]);
    // The harness' own health check may still hold a slot for a moment.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let r = clients(&cp, "cap");
    assert_eq!(r["third_waited"], true, "{r}");
    assert!(seconds(&r["admitted_after_close"]) < 2.0, "{r}");
    cp.kubectl(&["get", "namespace", "default"]).ok();
}

#[test]
fn a_watcher_that_never_reads_is_closed_and_holds_back_no_one() {
    let cp = Cp::start();
    let r = clients(&cp, "stalled-watch");
    assert_eq!(
        r["reader_behind_after_10s"], 0,
        "the reading watcher got every change promptly: {r}"
    );
    assert_eq!(
        r["stalled_ended"], true,
        "the stalled watch was closed: {r}"
    );
    let stalled = r["stalled_events"].as_u64().unwrap();
    assert!(
        stalled < 10_000,
        "the stalled watch ended before it got every change: {r}"
    );
    cp.kubectl(&["get", "namespace", "churn"]).ok();
}
