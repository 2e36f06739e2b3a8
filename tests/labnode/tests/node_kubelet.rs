//! The kubelet for real, against a small in-test Kubernetes API double: node registration and
//! heartbeat, a pod run in its own namespace through the real CNI plugin, the readiness gate on
//! the agent's marker, adoption after a kubelet restart, and deletion with full cleanup.
//!
//! Needs root; skipped otherwise. Everything runs in the scratch namespace `sy-t-node-k`
//! (the API double listens on its loopback); Drop guards remove namespaces, processes and files.
use serde_json::{json, Value};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use switchyard::paths;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-labnode");
const NODE: &str = "sy-t-node-k";
const POD_NS: &str = "sy-t-node";
const POD_UID: &str = "5ee1a1b2-c3d4-4e5f-8a9b-0c1d2e3f4a5b";

/// A minimal Kubernetes API: nodes (create/get/patch/status) and pods (list/watch by
/// `spec.nodeName`, status patch, delete), HTTP/1.1 with one request per connection.
mod fake_api {
    use serde_json::{json, Value};
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::broadcast;

    #[derive(Default)]
    pub struct Store {
        rv: u64,
        pub nodes: BTreeMap<String, Value>,
        pub pods: BTreeMap<(String, String), Value>,
        log: Vec<(u64, &'static str, Value)>,
    }

    #[derive(Clone)]
    pub struct Api {
        pub store: Arc<Mutex<Store>>,
        events: broadcast::Sender<(u64, &'static str, Value)>,
        pub pod_cidr: &'static str,
    }

    /// RFC 7386 JSON merge patch.
    pub fn merge(target: &mut Value, patch: &Value) {
        match (target.as_object_mut(), patch.as_object()) {
            (Some(t), Some(p)) => {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
            (_, Some(p)) => {
                *target = json!({});
                merge(target, &Value::Object(p.clone()));
            }
            _ => *target = patch.clone(),
        }
    }

    impl Api {
        pub fn new(pod_cidr: &'static str) -> Api {
            Api {
                store: Arc::default(),
                events: broadcast::channel(1024).0,
                pod_cidr,
            }
        }

        fn bump(s: &mut Store, obj: &mut Value) -> u64 {
            s.rv += 1;
            obj["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            s.rv
        }

        /// Stores a pod and tells the watchers (`ADDED` / `MODIFIED` / `DELETED`).
        pub fn put_pod(&self, mut pod: Value, kind: &'static str) {
            let mut s = self.store.lock().unwrap();
            let rv = Self::bump(&mut s, &mut pod);
            let key = (
                pod["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("default")
                    .to_string(),
                pod["metadata"]["name"].as_str().unwrap().to_string(),
            );
            if kind == "DELETED" {
                s.pods.remove(&key);
            } else {
                s.pods.insert(key, pod.clone());
            }
            s.log.push((rv, kind, pod.clone()));
            let _ = self.events.send((rv, kind, pod));
        }

        pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
            self.store
                .lock()
                .unwrap()
                .pods
                .get(&(ns.into(), name.into()))
                .cloned()
        }

        pub fn node(&self, name: &str) -> Option<Value> {
            self.store.lock().unwrap().nodes.get(name).cloned()
        }

        pub async fn serve(self, listener: TcpListener) {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let api = self.clone();
                tokio::spawn(async move {
                    let _ = api.handle(stream).await;
                });
            }
        }

        async fn handle(&self, stream: TcpStream) -> std::io::Result<()> {
            let mut r = BufReader::new(stream);
            let mut line = String::new();
            r.read_line(&mut line).await?;
            let mut parts = line.split_whitespace();
            let method = parts.next().unwrap_or("").to_string();
            let target = parts.next().unwrap_or("").to_string();
            let mut len = 0usize;
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).await? == 0 || h == "\r\n" {
                    break;
                }
                if let Some((k, v)) = h.split_once(':') {
                    if k.eq_ignore_ascii_case("content-length") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
            }
            let mut body = vec![0u8; len];
            r.read_exact(&mut body).await?;
            let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let q = |k: &str| {
                query.split('&').find_map(|kv| {
                    let (a, b) = kv.split_once('=')?;
                    (a == k).then(|| {
                        b.replace("%3D", "=")
                            .replace("%3d", "=")
                            .replace("%2F", "/")
                    })
                })
            };
            let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
            let mut stream = r.into_inner();
            if method == "GET"
                && segs == ["api", "v1", "pods"]
                && q("watch").as_deref() == Some("true")
            {
                return self
                    .watch(&mut stream, q("resourceVersion"), q("fieldSelector"))
                    .await;
            }
            let (code, out) = self.route(&method, &segs, q("fieldSelector"), body);
            let out = out.to_string();
            let head = format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                out.len()
            );
            stream.write_all(head.as_bytes()).await?;
            stream.write_all(out.as_bytes()).await?;
            stream.shutdown().await
        }

        fn status(code: u16, reason: &str) -> (u16, Value) {
            (
                code,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": reason}),
            )
        }

        fn selected(pod: &Value, selector: &Option<String>) -> bool {
            match selector
                .as_deref()
                .and_then(|s| s.strip_prefix("spec.nodeName="))
            {
                Some(node) => pod["spec"]["nodeName"] == json!(node),
                None => true,
            }
        }

        fn route(
            &self,
            method: &str,
            segs: &[&str],
            selector: Option<String>,
            body: Value,
        ) -> (u16, Value) {
            let mut s = self.store.lock().unwrap();
            match (method, segs) {
                ("POST", ["api", "v1", "nodes"]) => {
                    let name = body["metadata"]["name"].as_str().unwrap_or("").to_string();
                    if s.nodes.contains_key(&name) {
                        return Self::status(409, "AlreadyExists");
                    }
                    let mut node = body;
                    node["metadata"]["uid"] = json!(format!("node-{name}"));
                    node["spec"] = json!({"podCIDR": self.pod_cidr, "podCIDRs": [self.pod_cidr]});
                    Self::bump(&mut s, &mut node);
                    s.nodes.insert(name, node.clone());
                    (201, node)
                }
                ("GET", ["api", "v1", "nodes", name]) => match s.nodes.get(*name) {
                    Some(n) => (200, n.clone()),
                    None => Self::status(404, "NotFound"),
                },
                ("PATCH", ["api", "v1", "nodes", name, ..]) => {
                    let Some(mut node) = s.nodes.get(*name).cloned() else {
                        return Self::status(404, "NotFound");
                    };
                    merge(&mut node, &body);
                    Self::bump(&mut s, &mut node);
                    s.nodes.insert(name.to_string(), node.clone());
                    (200, node)
                }
                ("GET", ["api", "v1", "pods"]) => {
                    let items: Vec<Value> = s
                        .pods
                        .values()
                        .filter(|p| Self::selected(p, &selector))
                        .cloned()
                        .collect();
                    (
                        200,
                        json!({"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": s.rv.to_string()}, "items": items}),
                    )
                }
                ("PATCH", ["api", "v1", "namespaces", ns, "pods", name, "status"]) => {
                    let key = (ns.to_string(), name.to_string());
                    let Some(mut pod) = s.pods.get(&key).cloned() else {
                        return Self::status(404, "NotFound");
                    };
                    merge(&mut pod, &json!({"status": body["status"]}));
                    drop(s);
                    self.put_pod(pod.clone(), "MODIFIED");
                    (200, self.pod(ns, name).unwrap_or(pod))
                }
                ("DELETE", ["api", "v1", "namespaces", ns, "pods", name]) => {
                    let key = (ns.to_string(), name.to_string());
                    let Some(pod) = s.pods.get(&key).cloned() else {
                        return Self::status(404, "NotFound");
                    };
                    if body["gracePeriodSeconds"] != json!(0) {
                        return Self::status(400, "TestOnlyAcceptsGracePeriodZero");
                    }
                    if let Some(uid) = body["preconditions"]["uid"].as_str() {
                        if pod["metadata"]["uid"] != json!(uid) {
                            return Self::status(409, "Conflict");
                        }
                    }
                    drop(s);
                    self.put_pod(pod.clone(), "DELETED");
                    (200, pod)
                }
                _ => Self::status(404, "NotFound"),
            }
        }

        async fn watch(
            &self,
            stream: &mut TcpStream,
            rv: Option<String>,
            selector: Option<String>,
        ) -> std::io::Result<()> {
            let mut rx = self.events.subscribe();
            let from: u64 = rv.and_then(|v| v.parse().ok()).unwrap_or(0);
            let backlog: Vec<_> = self
                .store
                .lock()
                .unwrap()
                .log
                .iter()
                .filter(|(rv, ..)| *rv > from)
                .cloned()
                .collect();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n")
                .await?;
            let mut last = from;
            let send =
                |kind: &str, obj: &Value| format!("{}\n", json!({"type": kind, "object": obj}));
            for (rv, kind, obj) in backlog {
                if Self::selected(&obj, &selector) {
                    stream.write_all(send(kind, &obj).as_bytes()).await?;
                }
                last = rv;
            }
            loop {
                let Ok((rv, kind, obj)) = rx.recv().await else {
                    return Ok(());
                };
                if rv > last && Self::selected(&obj, &selector) {
                    stream.write_all(send(kind, &obj).as_bytes()).await?;
                    last = rv;
                }
            }
        }
    }

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut t = json!({"a": 1, "b": {"c": 2, "d": 3}, "l": [1, 2]});
        merge(&mut t, &json!({"a": null, "b": {"c": 5}, "l": [9]}));
        assert_eq!(t, json!({"b": {"c": 5, "d": 3}, "l": [9]}));
    }
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A scratch network namespace, deleted on drop.
struct Netns(&'static str);

impl Netns {
    fn new(name: &'static str) -> Netns {
        let _ = Command::new("ip")
            .args(["netns", "del", name])
            .stderr(Stdio::null())
            .status();
        assert!(Command::new("ip")
            .args(["netns", "add", name])
            .status()
            .unwrap()
            .success());
        assert!(Command::new("ip")
            .args(["-n", name, "link", "set", "lo", "up"])
            .status()
            .unwrap()
            .success());
        Netns(name)
    }

    fn path(&self) -> PathBuf {
        PathBuf::from("/run/netns").join(self.0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", self.0]).status();
    }
}

/// Removes what the test's node leaves behind, also on failure: processes still running in
/// pod namespaces of the test, those namespaces, and the node's state directory.
struct Cleanup;

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = paths::state_dir(NODE).join("test").join("kubelet.log");
            eprintln!(
                "--- kubelet log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        for pod in ["echo", "orphan", "quits"] {
            let ns = paths::pod_netns(POD_NS, pod);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip")
                .args(["netns", "del", &ns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = std::fs::remove_dir_all(paths::state_dir(NODE));
    }
}

/// A child process, SIGKILLed on drop.
struct Proc(Child);

impl Proc {
    fn terminate(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.0.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_kubelet(node_ns: &Netns, kubeconfig: &Path, log: &Path) -> Proc {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Proc(
        Command::new("nsenter")
            .arg(format!("--net={}", node_ns.path().display()))
            .args([
                BIN,
                "kubelet",
                "--node",
                NODE,
                "--node-ip",
                "198.18.0.250",
                "--heartbeat-seconds",
                "1",
            ])
            .arg("--cni-plugin")
            .arg(switchyard_lab::bins::cargo_bin("switchyard").expect("the CNI plugin"))
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start kubelet"),
    )
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn condition(obj: &Value, kind: &str) -> Option<String> {
    obj["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind)?["status"]
        .as_str()
        .map(str::to_string)
}

fn curl_in(ns: &Netns, url: &str) -> Option<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns.0, "curl", "-s", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

fn pod_pids(container_id_prefix: &str) -> Vec<i32> {
    let dir = paths::state_dir(NODE).join("kubelet");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .filter(|rec| {
            rec["container_id"]
                .as_str()
                .is_some_and(|c| c.starts_with(container_id_prefix))
        })
        .flat_map(|rec| {
            rec["containers"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter_map(|c| c["pid"].as_i64().map(|p| p as i32))
        })
        .collect()
}

fn alive(pid: i32) -> bool {
    switchyard_labnode::kubelet::process::start_ticks_of(pid).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubelet_runs_reports_adopts_and_deletes_a_pod() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let _cleanup = Cleanup;
    let _ = std::fs::remove_dir_all(paths::state_dir(NODE));
    let node_ns = Netns::new(NODE);
    switchyard::netlink::block_on_in_netns(&node_ns.path(), || async {
        switchyard::netlink::ensure_bridge("cbr0", 1460, Ipv4Addr::new(10, 244, 1, 1), 24).await
    })
    .unwrap()
    .unwrap();

    // The API double listens on the node namespace's loopback.
    let std_listener = {
        let ns = std::fs::File::open(node_ns.path()).unwrap();
        std::thread::spawn(move || {
            nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            std::net::TcpListener::bind("127.0.0.1:0").unwrap()
        })
        .join()
        .unwrap()
    };
    std_listener.set_nonblocking(true).unwrap();
    let port = std_listener.local_addr().unwrap().port();
    let api = fake_api::Api::new("10.244.1.0/24");
    tokio::spawn(
        api.clone()
            .serve(tokio::net::TcpListener::from_std(std_listener).unwrap()),
    );

    let dir = paths::state_dir(NODE).join("test");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: http://127.0.0.1:{port}\n\
             users:\n- name: t\n  user: {{}}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    user: t\ncurrent-context: t\n"
        ),
    )
    .unwrap();
    let log = dir.join("kubelet.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let kubelet = start_kubelet(&node_ns, &kubeconfig, &log);

    // Registration and heartbeat.
    let node = wait_for("node registration", 20, || {
        api.node(NODE).filter(|n| condition(n, "Ready").is_some())
    })
    .await;
    assert_eq!(condition(&node, "Ready").as_deref(), Some("True"));
    let addrs = node["status"]["addresses"].as_array().unwrap();
    assert!(
        addrs.contains(&json!({"type": "InternalIP", "address": "198.18.0.250"})),
        "{node}"
    );
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        "v1.32.0-switchyard"
    );
    let beat = |n: &Value| n["status"]["conditions"][0]["lastHeartbeatTime"].clone();
    let first = beat(&node);
    wait_for("a heartbeat", 10, || {
        api.node(NODE).filter(|n| beat(n) != first)
    })
    .await;

    // A pod running `switchyard-labnode echo`.
    api.put_pod(
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "echo", "namespace": POD_NS, "uid": POD_UID},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "echo", "image": "switchyard", "command": ["switchyard-labnode", "echo"], "args": ["--port", "8080"]}]
            }
        }),
        "ADDED",
    );
    let pod = wait_for("pod running", 30, || {
        api.pod(POD_NS, "echo").filter(|p| {
            p["status"]["phase"] == "Running"
                && condition(p, "ContainersReady").as_deref() == Some("True")
        })
    })
    .await;
    assert_eq!(
        condition(&pod, "Ready").as_deref(),
        Some("False"),
        "not Ready before the datapath marker: {pod}"
    );
    let ip: Ipv4Addr = pod["status"]["podIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(pod["status"]["podIPs"][0]["ip"], ip.to_string());
    assert_eq!(pod["status"]["hostIP"], "198.18.0.250");
    assert!(pod["status"]["startTime"].is_string());
    let cs = &pod["status"]["containerStatuses"][0];
    assert_eq!(
        (
            cs["name"].as_str(),
            cs["started"].as_bool(),
            cs["restartCount"].as_i64()
        ),
        (Some("echo"), Some(true), Some(0))
    );
    assert!(cs["state"]["running"]["startedAt"].is_string(), "{cs}");
    let container_id = format!("{POD_NS}-echo-{}", &POD_UID.replace('-', "")[..8]);
    let record = paths::endpoints_dir(NODE).join(format!("{container_id}.json"));
    assert!(record.exists(), "CNI left the endpoint record");

    // The agent's marker makes it Ready.
    let marker = paths::attached_dir(NODE).join(&container_id);
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();
    wait_for("pod ready", 10, || {
        api.pod(POD_NS, "echo")
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    let body = curl_in(&node_ns, &format!("http://{ip}:8080/")).unwrap_or_default();
    assert!(
        body.starts_with("pod=echo peer=10.244.1.1:"),
        "echo answers as the pod: {body:?}\n{}",
        show_log()
    );
    let log_file = paths::state_dir(NODE)
        .join("logs")
        .join(format!("{POD_NS}_echo_echo.log"));
    assert!(log_file.exists(), "container log at {}", log_file.display());

    // Kubelet restart: the pod keeps running and is adopted, not started again.
    let pids = pod_pids(&container_id);
    assert_eq!(pids.len(), 1);
    kubelet.terminate();
    assert!(alive(pids[0]), "the pod outlives the kubelet");
    let kubelet = start_kubelet(&node_ns, &kubeconfig, &log);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pod_pids(&container_id),
        pids,
        "same process after the restart"
    );
    let pod = api.pod(POD_NS, "echo").unwrap();
    assert_eq!(
        condition(&pod, "Ready").as_deref(),
        Some("True"),
        "{pod}\n{}",
        show_log()
    );
    assert!(curl_in(&node_ns, &format!("http://{ip}:8080/")).is_some());

    // Deletion: the API marks the pod; the kubelet stops it, cleans up and removes the object.
    let mut deleting = api.pod(POD_NS, "echo").unwrap();
    deleting["metadata"]["deletionTimestamp"] = json!("2030-01-01T00:00:00Z");
    deleting["metadata"]["deletionGracePeriodSeconds"] = json!(5);
    api.put_pod(deleting, "MODIFIED");
    wait_for("pod object deleted", 20, || {
        api.pod(POD_NS, "echo").is_none().then_some(())
    })
    .await;
    assert!(!alive(pids[0]), "the echo process was stopped");
    assert!(
        !PathBuf::from("/run/netns")
            .join(paths::pod_netns(POD_NS, "echo"))
            .exists(),
        "pod netns removed"
    );
    assert!(!record.exists(), "endpoint record removed");
    assert!(!marker.exists(), "attached marker removed");
    let veth = paths::host_veth_name(&container_id);
    let veth_left = Command::new("ip")
        .args(["-n", NODE, "link", "show", &veth])
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success();
    assert!(!veth_left, "host veth removed");
    assert!(
        !paths::ipam_dir(NODE).join(ip.to_string()).exists(),
        "address released"
    );
    assert!(pod_pids(&container_id).is_empty(), "kubelet record removed");

    // A pod deleted while the kubelet is down is cleaned up when it comes back; a container
    // that exits ends its pod.
    api.put_pod(
        pod_spec(
            "orphan",
            "0rphan00-0000-4000-8000-000000000001",
            &["switchyard-labnode", "echo"],
        ),
        "ADDED",
    );
    api.put_pod(
        pod_spec(
            "quits",
            "9017500a-0000-4000-8000-000000000002",
            &["sh", "-c", "exit 3"],
        ),
        "ADDED",
    );
    wait_for("orphan running", 30, || {
        api.pod(POD_NS, "orphan")
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let failed = wait_for("quits failed", 30, || {
        api.pod(POD_NS, "quits")
            .filter(|p| p["status"]["phase"] == "Failed")
    })
    .await;
    let term = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{failed}");
    assert_eq!(condition(&failed, "Ready").as_deref(), Some("False"));
    let orphan_id = format!("{POD_NS}-orphan-0rphan00");
    let orphan_pids = pod_pids(&orphan_id);
    assert_eq!(orphan_pids.len(), 1);
    kubelet.terminate();
    let gone = api.pod(POD_NS, "orphan").unwrap();
    api.put_pod(gone, "DELETED");
    let kubelet = start_kubelet(&node_ns, &kubeconfig, &log);
    let orphan_ns = PathBuf::from("/run/netns").join(paths::pod_netns(POD_NS, "orphan"));
    wait_for("orphan cleaned up", 20, || {
        (!orphan_ns.exists()).then_some(())
    })
    .await;
    wait_for("orphan process stopped", 10, || {
        (!alive(orphan_pids[0])).then_some(())
    })
    .await;
    assert!(pod_pids(&orphan_id).is_empty());
    assert!(!paths::endpoints_dir(NODE)
        .join(format!("{orphan_id}.json"))
        .exists());
    // The finished pod is left alone (not started again) until deleted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        api.pod(POD_NS, "quits").unwrap()["status"]["phase"],
        "Failed"
    );
    drop(kubelet);
}

fn pod_spec(name: &str, uid: &str, command: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": POD_NS, "uid": uid},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 2,
            "containers": [{"name": "main", "image": "switchyard", "command": command}]
        }
    })
}
