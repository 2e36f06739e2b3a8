//! The kubelet for real, against the real controlplane-lite run in-process: node registration and
//! heartbeat, a pod run in its own namespace through the real CNI plugin, the readiness gate on
//! the agent's marker, adoption after a kubelet restart, deletion with full cleanup, `hostNetwork`
//! pods, Service environment variables and the service-account directory.
//!
//! Needs root; skipped otherwise. Everything runs in the scratch namespace `sy-t-node-k`: the API
//! server listens on its loopback, and the test's own runtime (server and client) runs inside it.
//! Guards remove namespaces, processes and files, also when an assertion fails.
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, PostParams};
use serde_json::{json, Value};
use switchyard::paths;
use switchyard_lab::netns::{self, Scratch};
use switchyard_labnode::kubelet::logs;

const BIN: &str = env!("CARGO_BIN_EXE_switchyard-labnode");
const NODE: &str = "sy-t-node-k";
const POD_NS: &str = "sy-t-node";
/// The node's address (`--node-ip`), put on the node namespace's loopback so that
/// `hostNetwork` pods listen on it.
const NODE_IP: &str = "198.18.0.250";

/// Removes what the test's node leaves behind, also on failure: the process groups of every pod
/// the kubelet recorded (`hostNetwork` pods included), processes still running in pod namespaces
/// of the test and those namespaces (the node namespace and state directory are the
/// [`Scratch`]'s); and the service-account mount point the kubelet makes on the host, if the
/// host had no `/var/run/secrets` before (empty directories only).
struct Cleanup {
    remove_mount_point: bool,
}

/// The service-account mount point and its parents up to the first that may have existed.
const MOUNT_POINT_CHAIN: [&str; 3] = [
    "/var/run/secrets/kubernetes.io/serviceaccount",
    "/var/run/secrets/kubernetes.io",
    "/var/run/secrets",
];

impl Drop for Cleanup {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = paths::state_dir(NODE).join("test").join("kubelet.log");
            eprintln!(
                "--- kubelet log ---\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        for (pid, ticks) in recorded_processes() {
            if switchyard_labnode::kubelet::process::start_ticks_of(pid) == Some(ticks) {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
        for pod in [
            "echo", "orphan", "quits", "envs", "nolinks", "sa-ns", "sa-all", "sa-off",
        ] {
            let ns = paths::pod_netns(POD_NS, pod);
            if let Ok(out) = Command::new("ip").args(["netns", "pids", &ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            netns::del(&ns);
        }
        if self.remove_mount_point {
            for dir in MOUNT_POINT_CHAIN {
                let _ = std::fs::remove_dir(dir);
            }
        }
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

/// How the kubelets of the test start.
struct Kubelet {
    kubeconfig: PathBuf,
    log: PathBuf,
    cni_plugin: PathBuf,
    token_file: PathBuf,
}

impl Kubelet {
    fn start(&self) -> Proc {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        Proc(
            Command::new("nsenter")
                .arg(format!("--net={}", netns::path(NODE).display()))
                .args([
                    BIN,
                    "kubelet",
                    "--node",
                    NODE,
                    "--node-ip",
                    NODE_IP,
                    "--heartbeat-seconds",
                    "1",
                ])
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .arg("--cni-plugin")
                .arg(&self.cni_plugin)
                .arg("--service-account-token-file")
                .arg(&self.token_file)
                .env("RUST_LOG", "info")
                .stdout(log.try_clone().unwrap())
                .stderr(log)
                .spawn()
                .expect("start kubelet"),
        )
    }
}

/// The test's view of the API: objects as the server returns them (raw JSON).
struct Cluster {
    nodes: Api<DynamicObject>,
    pods: Api<DynamicObject>,
    services: Api<DynamicObject>,
}

fn json_of(obj: DynamicObject) -> Value {
    serde_json::to_value(obj).expect("object as JSON")
}

impl Cluster {
    async fn node(&self) -> Option<Value> {
        self.nodes
            .get_opt(NODE)
            .await
            .expect("get node")
            .map(json_of)
    }

    async fn pod(&self, name: &str) -> Option<Value> {
        self.pods.get_opt(name).await.expect("get pod").map(json_of)
    }

    /// Creates a pod; its uid (the server assigns it).
    async fn create_pod(&self, pod: Value) -> String {
        let pod: DynamicObject = serde_json::from_value(pod).expect("pod");
        let created = self
            .pods
            .create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        created.metadata.uid.expect("uid")
    }

    async fn delete_pod(&self, name: &str, grace_seconds: u32) {
        self.pods
            .delete(name, &DeleteParams::default().grace_period(grace_seconds))
            .await
            .expect("delete pod");
    }
}

async fn wait_for<T>(what: &str, secs: u64, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
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

fn curl_in(ns: &str, url: &str) -> Option<String> {
    let out = netns::in_ns(ns, &["curl", "-s", "--max-time", "2", url])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).to_string())
}

/// The kubelet's pod records.
fn records() -> Vec<Value> {
    let dir = paths::state_dir(NODE).join("kubelet");
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    rd.filter_map(|e| std::fs::read(e.ok()?.path()).ok())
        .filter_map(|raw| serde_json::from_slice::<Value>(&raw).ok())
        .collect()
}

/// Pid and start time of every container process the kubelet recorded.
fn recorded_processes() -> Vec<(i32, u64)> {
    records()
        .iter()
        .flat_map(|rec| rec["containers"].as_array().cloned().unwrap_or_default())
        .filter_map(|c| Some((c["pid"].as_i64()? as i32, c["start_ticks"].as_u64()?)))
        .collect()
}

fn pod_pids(container_id_prefix: &str) -> Vec<i32> {
    records()
        .into_iter()
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

/// The container id the kubelet gives a pod: `<namespace>-<name>-<first 8 hex digits of uid>`.
fn container_id_of(name: &str, uid: &str) -> String {
    format!("{POD_NS}-{name}-{}", &uid.replace('-', "")[..8])
}

#[test]
fn kubelet_runs_reports_adopts_and_deletes_a_pod() {
    if !switchyard_lab::lab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut scratch = Scratch::default();
    scratch.dir(paths::state_dir(NODE));
    scratch.netns(NODE);
    let _cleanup = Cleanup {
        remove_mount_point: !std::path::Path::new(MOUNT_POINT_CHAIN[2]).exists(),
    };
    switchyard::netlink::block_on_in_netns(&netns::path(NODE), || async {
        switchyard::netlink::ensure_bridge("cbr0", 1460, Ipv4Addr::new(10, 244, 1, 1), 24).await
    })
    .unwrap()
    .unwrap();
    netns::sh(&[
        "ip",
        "-n",
        NODE,
        "addr",
        "add",
        &format!("{NODE_IP}/32"),
        "dev",
        "lo",
    ]);
    let cni_plugin = switchyard_lab::bins::cargo_bin("switchyard").expect("the CNI plugin");
    // The kubelet reaches the API server on the node namespace's loopback, so the server and the
    // test's client run on a runtime whose threads are in that namespace.
    netns::run_in(NODE, move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(scenario(cni_plugin))
    })
    .expect("the test, run in the node namespace");
}

async fn scenario(cni_plugin: PathBuf) {
    // controlplane-lite: in memory, plain HTTP, no authentication, with its scheduler and
    // controllers; a node stays Ready for 40 s without a heartbeat, longer than the kubelet is
    // ever down here.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(switchyard_cp::run(
        listener,
        switchyard_cp::Config::default(),
        std::future::pending(),
    ));
    let dir = paths::state_dir(NODE).join("test");
    std::fs::create_dir_all(&dir).unwrap();
    let kubeconfig = dir.join("kubeconfig");
    let server = switchyard_cp::kubeconfig::server_url(addr, false);
    // The server speaks plain HTTP, so the CA is never used to verify it; the kubelet still
    // hands it to the pods (any certificate will do: one of the machine's).
    let ca = some_ca_certificate();
    switchyard_cp::kubeconfig::write(
        &kubeconfig,
        &switchyard_cp::kubeconfig::render(&server, Some(&ca), None),
    )
    .unwrap();
    let token_file = dir.join("sa-token");
    std::fs::write(&token_file, "sy-test-sa-token\n").unwrap();
    // The test reads the API through the same kubeconfig and client code the kubelet uses.
    let client = switchyard::kubeclient::client_from_kubeconfig(&kubeconfig)
        .await
        .expect("client");
    let namespace: Namespace =
        serde_json::from_value(json!({"metadata": {"name": POD_NS}})).unwrap();
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &namespace)
        .await
        .expect("create namespace");
    let api = Cluster {
        nodes: Api::all_with(client.clone(), &ApiResource::erase::<Node>(&())),
        pods: Api::namespaced_with(client.clone(), POD_NS, &ApiResource::erase::<Pod>(&())),
        services: Api::namespaced_with(client, POD_NS, &ApiResource::erase::<Service>(&())),
    };
    let log = dir.join("kubelet.log");
    let show_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let kubelets = Kubelet {
        kubeconfig,
        log: log.clone(),
        cni_plugin,
        token_file,
    };
    let kubelet = kubelets.start();
    // The agent's part: every other pod's veth is marked attached as soon as CNI wired it.
    let agent = fake_agent(format!("{POD_NS}-echo-"));

    // Registration and heartbeat; the server allocates the node's podCIDR (the first one,
    // 10.244.1.0/24, whose gateway cbr0 holds).
    let node = wait_for("node registration", 20, async || {
        api.node().await.filter(|n| condition(n, "Ready").is_some())
    })
    .await;
    assert_eq!(condition(&node, "Ready").as_deref(), Some("True"));
    let addrs = node["status"]["addresses"].as_array().unwrap();
    assert!(
        addrs.contains(&json!({"type": "InternalIP", "address": NODE_IP})),
        "{node}"
    );
    assert_eq!(
        node["status"]["nodeInfo"]["kubeletVersion"],
        "v1.32.0-switchyard"
    );
    assert_eq!(node["spec"]["podCIDR"], "10.244.1.0/24", "{node}");
    let beat = |n: &Value| n["status"]["conditions"][0]["lastHeartbeatTime"].clone();
    let first = beat(&node);
    wait_for("a heartbeat", 10, async || {
        api.node().await.filter(|n| beat(n) != first)
    })
    .await;

    // A pod running `switchyard-labnode echo`; the test plays the agent for it.
    let uid = api
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "echo", "namespace": POD_NS},
            "spec": {
                "nodeName": NODE,
                "terminationGracePeriodSeconds": 5,
                "containers": [{"name": "echo", "image": "switchyard", "command": ["switchyard-labnode", "echo"], "args": ["--port", "8080"]}]
            }
        }))
        .await;
    // Wired by CNI, but its containers wait for the agent's marker: their first packets are
    // load-balanced already.
    let pod = wait_for("pod network set up", 30, async || {
        api.pod("echo")
            .await
            .filter(|p| p["status"]["podIP"].is_string())
    })
    .await;
    let container_id = container_id_of("echo", &uid);
    let record = paths::endpoints_dir(NODE).join(format!("{container_id}.json"));
    assert!(record.exists(), "CNI left the endpoint record");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pod = api.pod("echo").await.unwrap_or(pod);
    assert_eq!(pod["status"]["phase"], "Pending", "{pod}");
    assert_eq!(condition(&pod, "Ready").as_deref(), Some("False"));
    assert_eq!(
        pod["status"]["containerStatuses"][0]["state"]["waiting"]["reason"], "DatapathNotAttached",
        "{pod}"
    );
    assert!(
        pod_pids(&container_id).is_empty(),
        "no container started before the datapath marker"
    );

    // The agent's marker starts the containers and makes the pod Ready.
    let marker = paths::attached_dir(NODE).join(&container_id);
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();
    let pod = wait_for("pod running and ready", 10, async || {
        api.pod("echo").await.filter(|p| {
            p["status"]["phase"] == "Running" && condition(p, "Ready").as_deref() == Some("True")
        })
    })
    .await;
    let ip: Ipv4Addr = pod["status"]["podIP"].as_str().unwrap().parse().unwrap();
    assert_eq!(pod["status"]["podIPs"][0]["ip"], ip.to_string());
    assert_eq!(pod["status"]["hostIP"], NODE_IP);
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
    let body = curl_in(NODE, &format!("http://{ip}:8080/")).unwrap_or_default();
    assert!(
        body.starts_with("pod=echo peer=10.244.1.1:"),
        "echo answers as the pod: {body:?}\n{}",
        show_log()
    );
    let log_file = logs::container_log(NODE, POD_NS, "echo", &uid, "echo", 0);
    assert!(
        logs::read::text(&log_file).is_ok_and(|t| t.contains("echo listening")),
        "container log at {}",
        log_file.display()
    );

    // Kubelet restart: the pod keeps running and is adopted, not started again.
    let pids = pod_pids(&container_id);
    assert_eq!(pids.len(), 1);
    kubelet.terminate();
    assert!(alive(pids[0]), "the pod outlives the kubelet");
    let kubelet = kubelets.start();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        pod_pids(&container_id),
        pids,
        "same process after the restart"
    );
    let pod = api.pod("echo").await.unwrap();
    assert_eq!(
        condition(&pod, "Ready").as_deref(),
        Some("True"),
        "{pod}\n{}",
        show_log()
    );
    assert!(curl_in(NODE, &format!("http://{ip}:8080/")).is_some());

    // Deletion: the API marks the pod terminating (a graceful delete, as `kubectl delete`
    // does); the kubelet stops it, cleans up and removes the object.
    api.delete_pod("echo", 5).await;
    let deleting = api.pod("echo").await;
    assert!(
        deleting.is_none()
            || deleting.as_ref().unwrap()["metadata"]["deletionTimestamp"].is_string(),
        "a graceful delete only marks the pod: {deleting:?}"
    );
    wait_for("pod object deleted", 20, async || {
        api.pod("echo").await.is_none().then_some(())
    })
    .await;
    assert!(!alive(pids[0]), "the echo process was stopped");
    assert!(
        !netns::path(&paths::pod_netns(POD_NS, "echo")).exists(),
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

    host_network_pod(&api).await;
    service_variables(&api).await;
    service_account(&api, &ca).await;

    // A pod deleted while the kubelet is down is cleaned up when it comes back; a container
    // that exits ends its pod.
    let orphan_uid = api
        .create_pod(pod_spec("orphan", &["switchyard-labnode", "echo"]))
        .await;
    api.create_pod(pod_spec("quits", &["sh", "-c", "exit 3"]))
        .await;
    wait_for("orphan running", 30, async || {
        api.pod("orphan")
            .await
            .filter(|p| p["status"]["phase"] == "Running")
    })
    .await;
    let failed = wait_for("quits failed", 30, async || {
        api.pod("quits")
            .await
            .filter(|p| p["status"]["phase"] == "Failed")
    })
    .await;
    let term = &failed["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(term["exitCode"], 3, "{failed}");
    assert_eq!(condition(&failed, "Ready").as_deref(), Some("False"));
    let orphan_id = container_id_of("orphan", &orphan_uid);
    let orphan_pids = pod_pids(&orphan_id);
    assert_eq!(orphan_pids.len(), 1);
    kubelet.terminate();
    // Gone from the API at once (a forced delete, grace period 0): only the kubelet's own
    // records still know the pod.
    api.delete_pod("orphan", 0).await;
    assert!(api.pod("orphan").await.is_none(), "forced delete");
    let kubelet = kubelets.start();
    let orphan_ns = netns::path(&paths::pod_netns(POD_NS, "orphan"));
    wait_for("orphan cleaned up", 20, async || {
        (!orphan_ns.exists()).then_some(())
    })
    .await;
    wait_for("orphan process stopped", 10, async || {
        (!alive(orphan_pids[0])).then_some(())
    })
    .await;
    assert!(pod_pids(&orphan_id).is_empty());
    assert!(!paths::endpoints_dir(NODE)
        .join(format!("{orphan_id}.json"))
        .exists());
    // The finished pod is left alone (not started again) until deleted.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(api.pod("quits").await.unwrap()["status"]["phase"], "Failed");
    drop(kubelet);
    agent.abort();
}

/// Stands in for the agent: marks every pod CNI wired (its endpoint record exists) as attached,
/// once, except those whose container id starts with `hold`.
fn fake_agent(hold: String) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut marked = std::collections::HashSet::new();
        loop {
            let records = std::fs::read_dir(paths::endpoints_dir(NODE));
            for entry in records.into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let Some(id) = name.strip_suffix(".json") else {
                    continue;
                };
                if id.starts_with(&hold) || !marked.insert(id.to_string()) {
                    continue;
                }
                let marker = paths::attached_dir(NODE).join(id);
                let _ = std::fs::create_dir_all(paths::attached_dir(NODE));
                let _ = std::fs::write(marker, b"");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}

fn pod_spec(name: &str, command: &[&str]) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": POD_NS},
        "spec": {
            "nodeName": NODE,
            "terminationGracePeriodSeconds": 2,
            "restartPolicy": "Never",
            "containers": [{"name": "main", "image": "switchyard", "command": command}]
        }
    })
}

/// A `hostNetwork` pod: no namespace and no CNI, the node's address as podIP and hostIP, Ready
/// without the agent's marker once its readiness probe (on the node address) passes, its
/// process in the node's namespace serving on the node address, stopped on deletion.
async fn host_network_pod(api: &Cluster) {
    let uid = api
        .create_pod(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "hostnet", "namespace": POD_NS},
            "spec": {
                "nodeName": NODE,
                "hostNetwork": true,
                "terminationGracePeriodSeconds": 2,
                "containers": [{
                    "name": "echo", "image": "switchyard",
                    "command": ["switchyard-labnode", "echo", "--port", "8081"],
                    "ports": [{"name": "echo", "containerPort": 8081}],
                    "readinessProbe": {"tcpSocket": {"port": "echo"}, "periodSeconds": 1}
                }]
            }
        }))
        .await;
    let pod = wait_for("hostNetwork pod ready", 30, async || {
        api.pod("hostnet")
            .await
            .filter(|p| condition(p, "Ready").as_deref() == Some("True"))
    })
    .await;
    assert_eq!(pod["status"]["podIP"], NODE_IP, "{pod}");
    assert_eq!(pod["status"]["podIPs"], json!([{"ip": NODE_IP}]));
    assert_eq!(pod["status"]["hostIP"], NODE_IP);
    assert!(
        !netns::path(&paths::pod_netns(POD_NS, "hostnet")).exists(),
        "no pod namespace"
    );
    let id = container_id_of("hostnet", &uid);
    assert!(
        !paths::endpoints_dir(NODE)
            .join(format!("{id}.json"))
            .exists(),
        "no CNI ADD"
    );
    let pids = pod_pids(&id);
    assert_eq!(pids.len(), 1);
    let node_ns = std::fs::metadata(netns::path(NODE)).unwrap();
    assert_eq!(
        std::fs::read_link(format!("/proc/{}/ns/net", pids[0]))
            .unwrap()
            .to_string_lossy(),
        format!("net:[{}]", std::os::unix::fs::MetadataExt::ino(&node_ns)),
        "the container runs in the node's network namespace"
    );
    let body = curl_in(NODE, &format!("http://{NODE_IP}:8081/")).unwrap_or_default();
    assert!(
        body.starts_with(&format!("pod=hostnet peer={NODE_IP}:")),
        "the pod answers on the node address: {body:?}"
    );
    api.delete_pod("hostnet", 2).await;
    wait_for("hostNetwork pod deleted", 20, async || {
        api.pod("hostnet").await.is_none().then_some(())
    })
    .await;
    assert!(!alive(pids[0]), "the process was stopped");
    assert!(pod_pids(&id).is_empty(), "kubelet record removed");
}

/// A PEM certificate of the machine's trust store.
fn some_ca_certificate() -> String {
    let dir = std::fs::read_dir("/etc/ssl/certs").expect("/etc/ssl/certs");
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".pem"))
        .find_map(|e| std::fs::read_to_string(e.path()).ok())
        .expect("a certificate in /etc/ssl/certs")
}

/// What the container `main` of `pod` (JSON) printed, from its CRI log file.
fn main_output(pod: &Value) -> String {
    let name = pod["metadata"]["name"].as_str().unwrap_or_default();
    let uid = pod["metadata"]["uid"].as_str().unwrap_or_default();
    logs::read::text(&logs::container_log(NODE, POD_NS, name, uid, "main", 0)).unwrap_or_default()
}

/// What a finished pod's container printed.
async fn output_of(api: &Cluster, name: &str) -> String {
    let pod = wait_for(&format!("pod {name} to finish"), 30, async || {
        api.pod(name)
            .await
            .filter(|p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed")
    })
    .await;
    let out = main_output(&pod);
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}\n{out}");
    out
}

/// Mount points of this (the host's) mount namespace under `dir`.
fn host_mounts_under(dir: &str) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// The service-account directory: namespace, token and CA at the usual path, read-only, in a
/// mount namespace of the container's own (the host sees none of it), not for pods that opt
/// out.
async fn service_account(api: &Cluster, ca: &str) {
    const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
    let listing = || -> Option<Vec<String>> {
        let mut v: Vec<String> = std::fs::read_dir(SA)
            .ok()?
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .collect();
        v.sort();
        Some(v)
    };
    let before = listing();
    api.create_pod(pod_spec("sa-ns", &["cat", &format!("{SA}/namespace")]))
        .await;
    let script = format!(
        "cd {SA} && ls && cat token && echo && cmp -s ca.crt $CA_FILE && echo ca-ok; \
         touch x 2>/dev/null && echo writable || echo read-only"
    );
    let mut all = pod_spec("sa-all", &["sh", "-c", &script]);
    let ca_file = paths::state_dir(NODE).join("test").join("ca.pem");
    std::fs::write(&ca_file, ca).unwrap();
    all["spec"]["containers"][0]["env"] =
        json!([{"name": "CA_FILE", "value": ca_file.to_string_lossy()}]);
    api.create_pod(all).await;
    let mut off = pod_spec("sa-off", &["sh", "-c", &format!("test ! -e {SA}/token")]);
    off["spec"]["automountServiceAccountToken"] = json!(false);
    api.create_pod(off).await;

    // The log ends a last line without a newline with one, as containerd's does.
    assert_eq!(output_of(api, "sa-ns").await, format!("{POD_NS}\n"));
    assert_eq!(
        output_of(api, "sa-all").await,
        "ca.crt\nnamespace\ntoken\nsy-test-sa-token\nca-ok\nread-only\n"
    );
    output_of(api, "sa-off").await;
    for name in ["sa-ns", "sa-all", "sa-off"] {
        api.delete_pod(name, 0).await;
    }
    for name in ["sa-ns", "sa-all", "sa-off"] {
        wait_for(&format!("pod {name} deleted"), 20, async || {
            api.pod(name).await.is_none().then_some(())
        })
        .await;
    }
    // The host keeps at most the (empty) mount point, and no mount.
    let after = listing();
    assert!(
        after == before || after == Some(vec![]),
        "the host's {SA} changed: {before:?} -> {after:?}"
    );
    assert_eq!(host_mounts_under("/run/secrets"), Vec::<String>::new());
    assert_eq!(host_mounts_under("/var/run/secrets"), Vec::<String>::new());
    // A forced delete removes the object at once; the kubelet tears the pod down after.
    let pods_dir = paths::state_dir(NODE).join("pods");
    wait_for("the pods' directories removed", 20, async || {
        std::fs::read_dir(&pods_dir)
            .map_or(true, |mut d| d.next().is_none())
            .then_some(())
    })
    .await;
}

/// The environment a pod's command saw (it runs `env`), once the pod has finished.
async fn env_of(api: &Cluster, name: &str) -> Vec<String> {
    let pod = wait_for(&format!("pod {name} to finish"), 30, async || {
        api.pod(name)
            .await
            .filter(|p| p["status"]["phase"] == "Succeeded" || p["status"]["phase"] == "Failed")
    })
    .await;
    assert_eq!(pod["status"]["phase"], "Succeeded", "{pod}");
    main_output(&pod).lines().map(str::to_string).collect()
}

/// Service variables: `default/kubernetes` always; the Services of the pod's namespace unless
/// `enableServiceLinks: false`; the container's own `env` wins.
async fn service_variables(api: &Cluster) {
    let svc: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "my-web", "namespace": POD_NS},
        "spec": {"selector": {"app": "none"}, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    }))
    .unwrap();
    let svc = api
        .services
        .create(&PostParams::default(), &svc)
        .await
        .expect("create service");
    let ip = json_of(svc)["spec"]["clusterIP"]
        .as_str()
        .expect("a ClusterIP")
        .to_string();
    let mut envs = pod_spec("envs", &["env"]);
    envs["spec"]["containers"][0]["env"] =
        json!([{"name": "MY_WEB_SERVICE_PORT", "value": "8080"}]);
    api.create_pod(envs).await;
    let mut nolinks = pod_spec("nolinks", &["env"]);
    nolinks["spec"]["enableServiceLinks"] = json!(false);
    api.create_pod(nolinks).await;

    let env = env_of(api, "envs").await;
    for var in [
        "KUBERNETES_SERVICE_HOST=10.96.0.1",
        "KUBERNETES_SERVICE_PORT=443",
        "KUBERNETES_SERVICE_PORT_HTTPS=443",
        "KUBERNETES_PORT=tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP=tcp://10.96.0.1:443",
        "KUBERNETES_PORT_443_TCP_PROTO=tcp",
        "KUBERNETES_PORT_443_TCP_PORT=443",
        "KUBERNETES_PORT_443_TCP_ADDR=10.96.0.1",
        &format!("MY_WEB_SERVICE_HOST={ip}"),
        "MY_WEB_SERVICE_PORT=8080",
        "MY_WEB_SERVICE_PORT_HTTP=80",
        &format!("MY_WEB_PORT_80_TCP_ADDR={ip}"),
        &format!("POD_NAMESPACE={POD_NS}"),
    ] {
        assert!(env.iter().any(|l| l == var), "{var} missing from {env:#?}");
    }
    let env = env_of(api, "nolinks").await;
    assert!(env.iter().any(|l| l == "KUBERNETES_SERVICE_HOST=10.96.0.1"));
    assert!(
        !env.iter().any(|l| l.starts_with("MY_WEB_")),
        "no links: {env:#?}"
    );
    for name in ["envs", "nolinks"] {
        api.delete_pod(name, 0).await;
    }
    for name in ["envs", "nolinks"] {
        wait_for(&format!("pod {name} deleted"), 20, async || {
            api.pod(name).await.is_none().then_some(())
        })
        .await;
    }
}
