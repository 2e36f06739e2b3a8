//! End-to-end: the agents run as `deploy/`'s DaemonSet says (`LabOptions::from_daemonset`):
//! install-cni first, whose plugin and configuration list the lab kubelet then uses; the agent
//! container's command and ConfigMap settings; in-cluster configuration as the service account
//! `kube-system/switchyard`, which controlplane-lite authorizes with `deploy/`'s ClusterRole.
//! A pod reaches a Service's ClusterIP, the agent writes an Event, and the probes' `/readyz`
//! answers 200 in the node.
use std::time::Duration;

use switchyard_lab::daemonset::SERVICE_ACCOUNT_MOUNT;
use switchyard_lab::kube::{self, AGENT_ACCOUNT_USER};
use switchyard_lab::{lab, probe, topology, Lab, LabOptions};

const WORKLOAD: &str = "\
apiVersion: v1
kind: Pod
metadata: {name: web, labels: {app: web}}
spec:
  containers:
    - name: web
      image: switchyard/echo
      command: [switchyard-labnode, echo, --port, \"8080\"]
      ports: [{name: http, containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports:
    - {name: http, port: 80, targetPort: http}
    - {name: sctp, port: 9999, protocol: SCTP}
---
apiVersion: v1
kind: Pod
metadata: {name: client}
spec:
  containers:
    - name: client
      image: switchyard/client
      command: [sleep, infinity]
";

/// The NUL-separated `/proc/<pid>/<file>` of a process, as strings.
fn proc_strings(pid: u32, file: &str) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/{file}"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn the_daemonset_serves_a_clusterip_with_in_cluster_credentials_and_answers_its_probes() {
    let lab = Lab::up(LabOptions::new(1).from_daemonset()).expect("lab up from deploy/");
    let dir = lab::lab_dir(&lab.opts.root);

    // The agent process is the DaemonSet's container: no kubeconfig, the service account's
    // token in its own mount namespace, the API server from the lab's documented override.
    let pid = lab.agent_pid(1).expect("agent pid");
    let argv = proc_strings(pid, "cmdline");
    assert!(
        argv[0].ends_with("/switchyard") && argv[1] == "agent",
        "{argv:?}"
    );
    assert!(!argv.iter().any(|a| a.contains("kubeconfig")), "{argv:?}");
    let env = proc_strings(pid, "environ");
    assert!(!env.iter().any(|e| e.starts_with("KUBECONFIG=")), "{env:?}");
    assert!(env.contains(&"NODE_NAME=n1".to_string()), "{env:?}");
    assert!(
        env.contains(&format!("KUBERNETES_SERVICE_HOST={}", topology::CP_ADDR)),
        "{env:?}"
    );
    // (Through /proc/<pid>/root an absolute symlink such as /var/run -> /run would resolve in
    // this process's root: the path goes resolved.)
    let mount = std::fs::canonicalize(SERVICE_ACCOUNT_MOUNT).expect("the mount point");
    let token = std::fs::read_to_string(format!("/proc/{pid}/root{}/token", mount.display()))
        .expect("the agent sees a service-account token");
    let tokens = std::fs::read_to_string(dir.join("token.csv")).unwrap();
    let line = tokens
        .lines()
        .find(|l| l.starts_with(&format!("{},", token.trim())))
        .expect("the token is in controlplane-lite's token file");
    assert!(
        line.contains(&format!(",{AGENT_ACCOUNT_USER},")),
        "the agent authenticates as the DaemonSet's service account: {line}"
    );
    assert!(
        !std::path::Path::new(SERVICE_ACCOUNT_MOUNT)
            .join("token")
            .exists(),
        "the host's mount point stays empty"
    );

    // install-cni left this node's list and a copy of the plugin, which the kubelet uses.
    let (plugin, conf_dir) = lab.daemonset.as_ref().unwrap().cni_paths(1).unwrap();
    assert_eq!(
        std::fs::read(&plugin).unwrap(),
        std::fs::read(lab.switchyard()).unwrap()
    );
    let list: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(conf_dir.join("05-switchyard.conflist")).unwrap(),
    )
    .unwrap();
    let pod_cidr = lab
        .kubectl
        .run(&["get", "node", "n1", "-o", "jsonpath={.spec.podCIDR}"])
        .unwrap();
    assert_eq!(list["plugins"][0]["node"], "n1");
    assert_eq!(list["plugins"][0]["ipam"]["subnet"], pod_cidr.trim());

    // Traffic: a pod to a ClusterIP.
    probe::apply(&lab, WORKLOAD).expect("kubectl apply");
    lab.kubectl
        .wait_pods_ready("app=web", 1, Duration::from_secs(60))
        .expect("web Ready");
    lab.kubectl
        .wait_pods_ready("!app", 1, Duration::from_secs(60))
        .expect("client Ready");
    let kubelet_log = std::fs::read_to_string(dir.join("logs/kubelet-n1.log")).unwrap_or_default();
    assert!(
        kubelet_log.contains("CNI configuration found"),
        "the kubelet wired pods with install-cni's list: {kubelet_log}"
    );
    let ip = lab.kubectl.cluster_ip("web").unwrap();
    let answer = probe::echo(&lab, &probe::pod_ns("client"), &format!("http://{ip}/"))
        .expect("HTTP through the ClusterIP");
    assert_eq!(answer.pod, "web");

    // The service account may write Events: the SCTP port is reported on the Service.
    let mut described = String::new();
    kube::wait("the agent's Event", Duration::from_secs(10), None, || {
        described = lab
            .kubectl
            .run(&["describe", "svc", "web"])
            .unwrap_or_default();
        Ok(described.contains("Unsupported"))
    })
    .unwrap_or_else(|e| panic!("{e}: {described}"));

    // The probes' endpoints, where the kubelet would ask them (127.0.0.1:10249 in the node).
    for path in ["/readyz", "/healthz"] {
        let out = lab
            .exec_in(
                &topology::node_ns(1),
                &[
                    "curl",
                    "-s",
                    "-o",
                    "/dev/null",
                    "-w",
                    "%{http_code}",
                    "--max-time",
                    "2",
                    &format!("http://127.0.0.1:10249{path}"),
                ],
            )
            .expect("curl");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "200", "{path}");
    }
    let log = std::fs::read_to_string(lab.agent_log(1)).unwrap();
    assert!(
        log.contains("SWITCHYARD_SERVICE_CIDR=10.96.0.0/16 (deploy/ says 10.96.0.0/12)"),
        "the lab's overrides are logged: {log}"
    );
    assert!(!log.contains("forbidden"), "{log}");
}
