//! Persistence of the real `switchyard-cp` binary: a restart keeps every object, the
//! resourceVersion sequence and the allocations (ClusterIPs, nodePorts, podCIDRs); a SIGKILL in
//! the middle of concurrent writes loses none that was acknowledged, and a torn last record in
//! the log is skipped with a warning instead of failing the start. No root needed.
mod harness;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use harness::{Client, Cp, TOKEN};

const LISTS: [(&str, &str); 6] = [
    ("namespaces", "/api/v1/namespaces"),
    ("nodes", "/api/v1/nodes"),
    ("pods", "/api/v1/pods"),
    ("services", "/api/v1/services"),
    ("endpoints", "/api/v1/endpoints"),
    ("endpointslices", "/apis/discovery.k8s.io/v1/endpointslices"),
];

fn post(cp: &Cp, path: &str, body: &Value) -> Value {
    let (code, text) = cp.request("POST", path, Some(&body.to_string()));
    assert_eq!(code, 201, "POST {path} {body}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

fn get(cp: &Cp, path: &str) -> Value {
    let (code, text) = cp.request("GET", path, None);
    assert_eq!(code, 200, "GET {path}: {text}");
    serde_json::from_str(&text).expect("JSON")
}

fn rv(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .expect("a resourceVersion")
}

fn service(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "labels": {"app": name}}, "spec": spec})
}

fn pod(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": "web"}},
           "spec": {"containers": [{"name": "c", "image": "x", "command": ["sleep", "100"]}]}})
}

/// Every object of every resource, keyed by resource/namespace/name.
fn snapshot(cp: &Cp) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for (res, path) in LISTS {
        for item in get(cp, path)["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
        {
            let m = &item["metadata"];
            let id = format!(
                "{res}/{}/{}",
                m["namespace"].as_str().unwrap_or(""),
                m["name"].as_str().unwrap_or("")
            );
            out.insert(id, item);
        }
    }
    out
}

/// What must not change across a restart: identity, labels, annotations and spec (status is
/// the controllers' to keep current).
fn identity(v: &Value) -> Value {
    let m = &v["metadata"];
    json!({"uid": m["uid"], "created": m["creationTimestamp"], "labels": m["labels"],
           "annotations": m["annotations"], "spec": v["spec"], "subsets": v["subsets"],
           "endpoints": v["endpoints"], "ports": v["ports"]})
}

fn cluster_ips_and_node_ports(snap: &BTreeMap<String, Value>) -> (Vec<String>, Vec<u64>) {
    let (mut ips, mut ports) = (Vec::new(), Vec::new());
    for (id, v) in snap {
        if !id.starts_with("services/") {
            continue;
        }
        if let Some(ip) = v.pointer("/spec/clusterIP").and_then(Value::as_str) {
            ips.push(ip.to_string());
        }
        for p in v
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            ports.extend(p["nodePort"].as_u64());
        }
    }
    (ips, ports)
}

#[test]
fn a_restart_keeps_objects_the_sequence_and_allocations() {
    let mut cp = Cp::start();
    post(
        &cp,
        "/api/v1/namespaces",
        &json!({"metadata": {"name": "shop", "labels": {"team": "a"}}}),
    );
    for n in ["n1", "n2"] {
        post(&cp, "/api/v1/nodes", &json!({"metadata": {"name": n}}));
    }
    let web = post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service(
            "web",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    );
    post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service(
            "np",
            json!({"type": "NodePort", "selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    );
    post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service(
            "np-fixed",
            json!({"type": "NodePort", "selector": {"app": "x"},
            "ports": [{"name": "a", "port": 80, "nodePort": 31002}, {"name": "b", "port": 81, "protocol": "UDP"}]}),
        ),
    );
    let gone = post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service("gone", json!({"ports": [{"port": 80}]})),
    );
    for p in ["p1", "p2"] {
        post(&cp, "/api/v1/namespaces/shop/pods", &pod(p));
    }
    post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service("manual", json!({"ports": [{"port": 5432}]})),
    );
    post(
        &cp,
        "/api/v1/namespaces/shop/endpoints",
        &json!({"metadata": {"name": "manual"}, "subsets": [{"addresses": [{"ip": "192.0.2.7"}], "ports": [{"port": 5432}]}]}),
    );
    // A deletion moves the sequence too; the newest change before the restart is a deletion.
    let (code, text) = cp.request("DELETE", "/api/v1/namespaces/shop/services/gone", None);
    assert_eq!(code, 200, "{text}");
    let before = snapshot(&cp);
    let last_rv = rv(&get(&cp, "/api/v1/namespaces"));
    assert!(last_rv > rv(&gone), "the list RV includes the deletion");
    assert!(before.contains_key("nodes//n1") && before.contains_key("endpoints/shop/manual"));
    let (ips, ports) = cluster_ips_and_node_ports(&before);
    let cidrs: Vec<Value> = ["n1", "n2"]
        .iter()
        .map(|n| before[&format!("nodes//{n}")]["spec"]["podCIDR"].clone())
        .collect();
    assert!(
        cidrs.iter().all(Value::is_string) && cidrs[0] != cidrs[1],
        "{cidrs:?}"
    );
    cp.restart();
    let after = snapshot(&cp);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "the same objects after the restart"
    );
    for (id, v) in &before {
        // The API server's own Service, Endpoints and slice follow its port, new after the
        // restart (checked below); everything else is as it was.
        if id.ends_with("/default/kubernetes") {
            continue;
        }
        assert_eq!(
            identity(v),
            identity(&after[id]),
            "{id} changed across the restart"
        );
        if id.starts_with("services/") || id.starts_with("namespaces/") {
            assert_eq!(v, &after[id], "{id} changed across the restart");
        }
    }
    let port: u64 = cp.url.rsplit(':').next().unwrap().parse().unwrap();
    assert_eq!(
        after["endpoints/default/kubernetes"]["subsets"][0]["ports"][0]["port"],
        port
    );
    assert_eq!(
        after["services/default/kubernetes"]["metadata"]["uid"],
        before["services/default/kubernetes"]["metadata"]["uid"]
    );
    let list_rv = rv(&get(&cp, "/api/v1/namespaces"));
    assert!(
        list_rv >= last_rv,
        "a list after the restart is at RV {list_rv}, before {last_rv}"
    );

    // The sequence continues: the next write gets a higher resourceVersion than any before.
    let next = post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service(
            "after",
            json!({"selector": {"app": "web"}, "ports": [{"port": 80}]}),
        ),
    );
    assert!(
        rv(&next) > last_rv,
        "RV {} after a restart at {last_rv}",
        rv(&next)
    );
    let ip = next["spec"]["clusterIP"].as_str().unwrap().to_string();
    assert!(!ips.contains(&ip), "{ip} was already allocated: {ips:?}");
    let np = post(
        &cp,
        "/api/v1/namespaces/shop/services",
        &service(
            "after-np",
            json!({"type": "NodePort", "ports": [{"port": 80}]}),
        ),
    );
    let port_now = np["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
    assert!(
        !ports.contains(&port_now),
        "{port_now} was already allocated: {ports:?}"
    );
    // Requesting what is taken is refused as kube-apiserver does.
    let (code, text) = cp.request(
        "POST",
        "/api/v1/namespaces/shop/services",
        Some(
            &service(
                "dup-np",
                json!({"type": "NodePort", "ports": [{"port": 80, "nodePort": 31002}]}),
            )
            .to_string(),
        ),
    );
    assert!(
        code == 422 && text.contains("provided port is already allocated"),
        "{code} {text}"
    );
    let taken = web["spec"]["clusterIP"].as_str().unwrap();
    let (code, text) = cp.request(
        "POST",
        "/api/v1/namespaces/shop/services",
        Some(
            &service(
                "dup-ip",
                json!({"clusterIP": taken, "ports": [{"port": 80}]}),
            )
            .to_string(),
        ),
    );
    assert!(
        code == 422 && text.contains("provided IP is already allocated"),
        "{code} {text}"
    );
    let n3 = post(&cp, "/api/v1/nodes", &json!({"metadata": {"name": "n3"}}));
    assert!(
        !cidrs.contains(&n3["spec"]["podCIDR"]),
        "{} reused",
        n3["spec"]["podCIDR"]
    );
}

/// One write a worker made, and what came of it.
#[derive(Clone, Debug)]
struct Write {
    /// `services/name` or `pods/name`.
    object: String,
    /// The label `v` it set.
    v: u64,
    /// The resourceVersion of the answer, if it was a 2xx.
    acked_rv: Option<u64>,
}

fn worker(
    client: Client,
    id: usize,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<Write>>>,
) {
    let mut j = 0;
    while !stop.load(Ordering::Relaxed) {
        let (res, name) = if id.is_multiple_of(2) {
            ("services", format!("w{id}-{j}"))
        } else {
            ("pods", format!("w{id}-{j}"))
        };
        let object = format!("{res}/{name}");
        let path = format!("/api/v1/namespaces/default/{res}");
        let mut body = if res == "services" {
            service(
                &name,
                json!({"selector": {"app": "w"}, "ports": [{"port": 80}]}),
            )
        } else {
            pod(&name)
        };
        body["metadata"]["labels"]["v"] = json!("0");
        // Create, then two merge patches of the label, then a full replace (PUT).
        let mut steps: Vec<(String, String, String, u64)> =
            vec![("POST".into(), path.clone(), body.to_string(), 0)];
        for v in 1..=2 {
            steps.push((
                "PATCH".into(),
                format!("{path}/{name}"),
                json!({"metadata": {"labels": {"v": v.to_string()}}}).to_string(),
                v,
            ));
        }
        for (method, p, b, v) in steps {
            let (code, text) = client.request(&method, &p, Some(&b));
            let acked_rv = (200..300)
                .contains(&code)
                .then(|| serde_json::from_str::<Value>(&text).ok().map(|o| rv(&o)))
                .flatten();
            log.lock().unwrap().push(Write {
                object: object.clone(),
                v,
                acked_rv,
            });
            if acked_rv.is_none() {
                return;
            }
            acked.fetch_add(1, Ordering::Relaxed);
        }
        j += 1;
    }
}

#[test]
fn kill_9_during_concurrent_writes_loses_nothing_acknowledged() {
    let mut cp = Cp::start();
    let (stop, acked) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicUsize::new(0)),
    );
    let log = Arc::new(Mutex::new(Vec::new()));
    let workers: Vec<_> = (0..8)
        .map(|id| {
            let (client, stop, acked, log) =
                (cp.client(), stop.clone(), acked.clone(), log.clone());
            std::thread::spawn(move || worker(client, id, stop, acked, log))
        })
        .collect();
    let start = Instant::now();
    while acked.load(Ordering::Relaxed) < 150 {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the writers made no progress:\n{}",
            cp.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    cp.kill9();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.join().expect("worker");
    }
    let writes = log.lock().unwrap().clone();
    let acked: Vec<&Write> = writes.iter().filter(|w| w.acked_rv.is_some()).collect();
    assert!(acked.len() >= 150);
    let rvs: BTreeSet<u64> = acked.iter().filter_map(|w| w.acked_rv).collect();
    assert_eq!(
        rvs.len(),
        acked.len(),
        "every acknowledged write got its own resourceVersion"
    );

    // A crash of the machine could also have torn the record being written: add one.
    let objects_log = cp.data.join("objects.log");
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&objects_log)
        .expect("log");
    std::io::Write::write_all(
        &mut f,
        br#"{"rv":999999,"key":{"resource":"services","namesp"#,
    )
    .unwrap();
    drop(f);

    cp.restart();
    assert!(
        cp.log().contains("skipping a torn last record"),
        "{}",
        cp.log()
    );
    let mut stored = BTreeMap::new();
    for res in ["services", "pods"] {
        for item in get(&cp, &format!("/api/v1/namespaces/default/{res}"))["items"]
            .as_array()
            .unwrap()
        {
            stored.insert(
                format!("{res}/{}", item["metadata"]["name"].as_str().unwrap()),
                item.clone(),
            );
        }
    }
    // Per object: the last acknowledged label and the last attempted one.
    let mut expect: BTreeMap<&str, (u64, u64, u64)> = BTreeMap::new();
    for w in &writes {
        let e = expect.entry(&w.object).or_insert((0, 0, 0));
        e.1 = e.1.max(w.v);
        if let Some(r) = w.acked_rv {
            e.0 = e.0.max(w.v);
            e.2 = e.2.max(r);
        }
    }
    let mut checked = 0;
    for w in &acked {
        let (min_v, max_v, min_rv) = expect[w.object.as_str()];
        let Some(obj) = stored.get(&w.object) else {
            panic!(
                "{} was acknowledged (RV {:?}) but is gone after kill -9",
                w.object, w.acked_rv
            );
        };
        let v: u64 = obj["metadata"]["labels"]["v"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            (min_v..=max_v).contains(&v) && rv(obj) >= min_rv,
            "{}: label v={v} RV {} after kill -9, acknowledged v={min_v} at RV {min_rv}",
            w.object,
            rv(obj)
        );
        checked += 1;
    }
    // Allocations stayed unique through the concurrency and the crash.
    let ips: Vec<&str> = stored
        .iter()
        .filter(|(k, _)| k.starts_with("services/"))
        .filter_map(|(_, v)| v["spec"]["clusterIP"].as_str())
        .collect();
    let unique: BTreeSet<&&str> = ips.iter().collect();
    assert_eq!(unique.len(), ips.len(), "duplicate ClusterIPs: {ips:?}");
    // And the sequence goes on past every acknowledged write.
    let next = post(
        &cp,
        "/api/v1/namespaces/default/services",
        &service("after-kill", json!({"ports": [{"port": 80}]})),
    );
    assert!(rv(&next) > *rvs.iter().max().unwrap());
    eprintln!(
        "{checked} acknowledged writes checked after kill -9 ({} attempted)",
        writes.len()
    );
}

#[test]
fn concurrent_creates_never_share_a_cluster_ip_or_node_port() {
    let cp = Cp::start();
    // One curl, 64 transfers at a time: as concurrent as the server can be asked.
    let entries: Vec<String> = (0..300)
        .map(|i| {
            let body = service(&format!("c{i}"), json!({"type": "NodePort", "ports": [{"port": 80}]}));
            format!(
                "url = \"{}/api/v1/namespaces/default/services\"\ndata = {}\nheader = \"Content-Type: application/json\"\nheader = \"Authorization: Bearer {}\"\ncacert = {:?}\noutput = \"/dev/null\"\nwrite-out = \"%{{http_code}}\\n\"\n",
                cp.url,
                serde_json::to_string(&body.to_string()).unwrap(),
                TOKEN,
                harness::ca_file(&cp.data)
            )
        })
        .collect();
    let config = cp.dir.join("curl.cfg");
    std::fs::write(&config, entries.join("next\n")).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--parallel", "--parallel-max", "64", "-K"])
        .arg(&config)
        .output()
        .expect("curl");
    let codes = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        codes.lines().filter(|c| *c == "201").count(),
        300,
        "{codes}"
    );
    let snap = snapshot(&cp);
    let (ips, ports) = cluster_ips_and_node_ports(&snap);
    let (uips, uports): (BTreeSet<_>, BTreeSet<_>) = (ips.iter().collect(), ports.iter().collect());
    assert_eq!(
        (uips.len(), uports.len()),
        (ips.len(), ports.len()),
        "an allocation was handed out twice"
    );
    assert_eq!(ports.len(), 300);
}
