//! Events through both APIs, as kubectl 1.32 and the Python client see them: one created
//! through core v1 read through events.k8s.io/v1 and the other way round, the `kubectl get
//! events` table and `-w`, field selectors, the Events the scheduler, the LoadBalancer allocator
//! and the node lifecycle controller write (listed by `kubectl describe`), and expiry after
//! `--event-ttl`.
mod harness;

use std::io::{BufRead, BufReader};
use std::time::{Duration, Instant};

use harness::{eventually, fields, now, rows, Cp, Scratch};

const CORE_EVENT: &str = "apiVersion: v1
kind: Event
metadata: {name: web.1, namespace: default}
involvedObject: {kind: Service, name: web, namespace: default}
reason: Unhealthy
message: no ready endpoints
type: Warning
source: {component: switchyard-agent, host: n1}
firstTimestamp: \"2026-01-01T00:00:00Z\"
lastTimestamp: \"2026-01-01T00:00:00Z\"
count: 1
";

const NEW_EVENT: &str = "apiVersion: events.k8s.io/v1
kind: Event
metadata: {name: web.2, namespace: default}
eventTime: \"2026-01-01T00:00:00.000001Z\"
reportingController: switchyard.io/agent
reportingInstance: agent-n1
action: Probe
reason: BackendDown
regarding: {kind: Service, name: web, namespace: default}
note: backend 10.244.1.5 stopped answering
type: Warning
";

/// Waits until `kubectl describe KIND NAME` lists an Event line starting with `start` and
/// ending with `end`.
#[track_caller]
fn describe_lists(cp: &Cp, kind: &str, name: &str, start: &str, end: &str) {
    eventually(
        15,
        &format!("describe {kind} {name} lists {start}…{end}"),
        || {
            let text = fields(&cp.kubectl(&["describe", kind, name]).ok());
            text.iter()
                .any(|l| l.starts_with(start) && l.ends_with(end))
                .then_some(())
        },
    );
}

#[test]
fn an_event_written_through_one_api_reads_through_the_other() {
    let cp = Cp::start();
    cp.kubectl_stdin(&["create", "-f", "-"], CORE_EVENT).ok();
    cp.kubectl_stdin(&["create", "-f", "-"], NEW_EVENT).ok();
    let seen_new = cp.get_json(&["events.v1.events.k8s.io", "web.1"]);
    assert_eq!(seen_new["apiVersion"], "events.k8s.io/v1");
    assert_eq!(seen_new["note"], "no ready endpoints");
    assert_eq!(seen_new["regarding"]["name"], "web");
    assert_eq!(
        seen_new["deprecatedSource"]["component"],
        "switchyard-agent"
    );
    assert_eq!(seen_new["deprecatedCount"], 1);
    let seen_core = cp.get_json(&["events.v1.", "web.2"]);
    assert_eq!(seen_core["apiVersion"], "v1");
    assert_eq!(seen_core["message"], "backend 10.244.1.5 stopped answering");
    assert_eq!(seen_core["involvedObject"]["kind"], "Service");
    assert_eq!(seen_core["reportingComponent"], "switchyard.io/agent");
    assert_eq!(seen_core["action"], "Probe");
    assert_eq!(seen_core["source"], serde_json::json!({}));
    let table = rows(&cp.kubectl(&["get", "events"]).ok());
    assert_eq!(
        table[0],
        ["LAST", "SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    );
    let row = table
        .iter()
        .find(|r| r.contains(&"BackendDown".into()))
        .unwrap();
    assert_eq!(row[1..4], ["Warning", "BackendDown", "service/web"]);
    let selected = cp
        .kubectl(&[
            "get",
            "events",
            "--field-selector",
            "involvedObject.kind=Service,involvedObject.name=web,reason=Unhealthy,type=Warning,source=switchyard-agent",
            "-o",
            "name",
        ])
        .ok();
    assert_eq!(selected.trim(), "event/web.1");
    let described = fields(&cp.kubectl(&["describe", "svc", "kubernetes"]).ok());
    assert!(described.contains(&"Events: <none>".to_string()));
    // events.k8s.io/v1 refuses what kube-apiserver refuses.
    let err = cp
        .kubectl_stdin(
            &["create", "-f", "-"],
            "apiVersion: events.k8s.io/v1\nkind: Event\nmetadata: {name: bad}\nregarding: {kind: Pod, name: p}\ntype: Info\n",
        )
        .fails();
    assert!(err.contains("eventTime: Required value"), "{err}");
    assert!(err.contains("type: Invalid value"), "{err}");
}

#[test]
fn describe_lists_the_scheduler_allocator_and_node_events() {
    let cp = Cp::start_with(&["--node-monitor-grace", "2"]);
    let t = now();
    cp.apply("apiVersion: v1\nkind: Node\nmetadata: {name: n1}\n");
    cp.kubectl(&[
        "patch", "node", "n1", "--subresource=status", "--type=merge", "-p",
        &format!(r#"{{"status":{{"conditions":[{{"type":"Ready","status":"True","lastHeartbeatTime":"{t}","lastTransitionTime":"{t}"}}]}}}}"#),
    ])
    .ok();
    cp.apply("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: echo}]\n");
    describe_lists(
        &cp,
        "pod",
        "p",
        "Normal Scheduled ",
        " default-scheduler Successfully assigned default/p to n1",
    );
    cp.apply("apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n");
    describe_lists(
        &cp,
        "svc",
        "lb",
        "Warning AllocationFailed ",
        "no LoadBalancer address pool is configured (switchyard-cp --loadbalancer-pool)",
    );
    // No more heartbeats: NotReady after the 2 s grace.
    describe_lists(
        &cp,
        "node",
        "n1",
        "Normal NodeNotReady ",
        " node-controller Node n1 status is now: NodeNotReady",
    );
}

#[test]
fn the_allocator_reports_the_address_it_gave() {
    let cp = Cp::start_with(&["--loadbalancer-pool", "198.18.100.0/24"]);
    cp.apply("apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  ports: [{port: 80}]\n");
    eventually(10, "an IPAllocated event", || {
        let out = cp
            .kubectl(&[
                "get",
                "events",
                "--field-selector",
                "reason=IPAllocated",
                "-o",
                "jsonpath={.items[*].message}",
            ])
            .ok();
        (out == r#"Assigned IP ["198.18.100.1"]"#).then_some(())
    });
}

#[test]
fn get_events_watch_streams_new_events() {
    let cp = Cp::start();
    let mut child = cp.kubectl_spawn(&["get", "events", "-w"]);
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    cp.kubectl_stdin(&["create", "-f", "-"], NEW_EVENT).ok();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            if line.contains("BackendDown") {
                let _ = child.kill();
                let _ = child.wait();
                assert!(line.contains("service/web"), "{line}");
                return;
            }
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the watch never showed the event; saw {seen:?}");
}

#[test]
fn the_python_client_lists_events_through_both_apis() {
    let cp = Cp::start();
    cp.kubectl_stdin(&["create", "-f", "-"], CORE_EVENT).ok();
    cp.kubectl_stdin(&["create", "-f", "-"], NEW_EVENT).ok();
    let dir = Scratch::new("py-events");
    let script = dir.0.join("events.py");
    std::fs::write(
        &script,
        "from kubernetes import client, config\n\
         config.load_kube_config()\n\
         core = client.CoreV1Api().list_namespaced_event('default', field_selector='involvedObject.name=web')\n\
         new = client.EventsV1Api().list_namespaced_event('default', field_selector='metadata.name=web.2')\n\
         print(core.items[0].message, core.items[0].involved_object.kind, new.items[0].note)\n",
    )
    .unwrap();
    let out = cp.python(&script, &[]).ok();
    // (A legacy Event has no eventTime, which this client's EventsV1Event refuses, against
    // kube-apiserver too: the newer API is read for an Event written through it.)
    assert_eq!(
        out.trim(),
        "no ready endpoints Service backend 10.244.1.5 stopped answering"
    );
}

#[test]
fn events_expire_after_the_event_ttl() {
    let cp = Cp::start_with(&["--event-ttl", "2s"]);
    cp.kubectl_stdin(&["create", "-f", "-"], CORE_EVENT).ok();
    assert!(cp.kubectl(&["get", "event", "web.1"]).success);
    eventually(15, "the event expired", || {
        (!cp.kubectl(&["get", "event", "web.1"]).success).then_some(())
    });
}
