//! The benchmark's pods and Services: a server pod on n1 and one on n2 (each running the
//! benchmark's echo server on 9000 and `iperf3 -s` on 5201), a client pod on n1, and two
//! NodePort Services, `bench-same` (backend on n1) and `bench-cross` (backend on n2).
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use switchyard_lab::{topology, Lab, LabError};

use crate::kproxy::{Svc, SvcPort};

/// The namespace of node 1, where host clients (`hostNetwork` pods, node daemons) run.
pub const HOST_NS: &str = "sy-n1";

/// Port of the echo server.
pub const RR_PORT: u16 = 9000;
/// Port of iperf3.
pub const IPERF_PORT: u16 = 5201;

/// The manifest `kubectl apply`s; `BENCH` stands for the path of this very binary (the lab's
/// kubelets may run from another directory than the benchmark's, so no `PATH` lookup).
pub const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: bsrv-n1, labels: {app: bsrv-n1}}
spec:
  nodeName: n1
  containers:
    - {name: echo, image: switchyard/bench, command: [BENCH, serve, --port, "9000"]}
    - {name: iperf, image: switchyard/iperf3, command: [iperf3, -s, -p, "5201"]}
---
apiVersion: v1
kind: Pod
metadata: {name: bsrv-n2, labels: {app: bsrv-n2}}
spec:
  nodeName: n2
  containers:
    - {name: echo, image: switchyard/bench, command: [BENCH, serve, --port, "9000"]}
    - {name: iperf, image: switchyard/iperf3, command: [iperf3, -s, -p, "5201"]}
---
apiVersion: v1
kind: Pod
metadata: {name: bcli-n1}
spec:
  nodeName: n1
  containers:
    - {name: client, image: switchyard/client, command: [sleep, infinity]}
---
apiVersion: v1
kind: Service
metadata: {name: bench-same}
spec:
  type: NodePort
  selector: {app: bsrv-n1}
  ports:
    - {name: rr, port: 9000, targetPort: 9000, nodePort: 31900}
    - {name: iperf, port: 5201, targetPort: 5201, nodePort: 31901}
---
apiVersion: v1
kind: Service
metadata: {name: bench-cross}
spec:
  type: NodePort
  selector: {app: bsrv-n2}
  ports:
    - {name: rr, port: 9000, targetPort: 9000, nodePort: 31910}
    - {name: iperf, port: 5201, targetPort: 5201, nodePort: 31911}
"#;

/// Addresses of one backend (same node or across nodes) in every mode.
#[derive(Clone, Debug)]
pub struct Backend {
    /// "same node" or "cross node".
    pub case: &'static str,
    /// The pod's IP.
    pub pod_ip: Ipv4Addr,
    /// Its Service's ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// NodePort of the echo server port.
    pub np_rr: u16,
    /// NodePort of the iperf3 port.
    pub np_iperf: u16,
}

/// The deployed workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// Backend on n1 and on n2.
    pub backends: Vec<Backend>,
    /// The two Services as kube-proxy sees them.
    pub services: Vec<Svc>,
    /// The client pod's IP.
    pub client_ip: Ipv4Addr,
}

/// The node of the client pod.
pub const CLIENT_NODE: &str = "n1";

/// The client pod (on n1).
pub const CLIENT_POD: &str = "bcli-n1";

/// Network namespace of the client pod.
pub const CLIENT_NS: &str = "sy-pod-default-bcli-n1";

/// Underlay address of node 1 (NodePort target from `sy-ext`).
pub fn node1() -> Ipv4Addr {
    topology::node_addr(1).parse().expect("node address")
}

fn ip_at(v: &Value, ptr: &str, what: &str) -> Result<Ipv4Addr, LabError> {
    v.pointer(ptr)
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| LabError::Unexpected(format!("{what} has no {ptr}")))
}

/// Applies the manifest (written to `dir`), waits for the pods and reads their addresses.
pub fn deploy(lab: &Lab, dir: &Path) -> Result<Workload, LabError> {
    let path = dir.join("workload.yaml");
    let exe = std::env::current_exe().map_err(|e| LabError::Io("/proc/self/exe".into(), e))?;
    let manifest = MANIFEST.replace("BENCH", &format!("{:?}", exe.to_string_lossy()));
    std::fs::write(&path, manifest).map_err(|e| LabError::Io(path.clone(), e))?;
    lab.kubectl.apply_file(&path)?;
    for app in ["bsrv-n1", "bsrv-n2"] {
        lab.kubectl
            .wait_pods_ready(&format!("app={app}"), 1, Duration::from_secs(60))?;
    }
    lab.kubectl
        .wait_pods_ready("!app", 1, Duration::from_secs(60))?;
    let mut backends = Vec::new();
    let mut services = Vec::new();
    for (case, pod, svc) in [
        ("same node", "bsrv-n1", "bench-same"),
        ("cross node", "bsrv-n2", "bench-cross"),
    ] {
        let p = lab.kubectl.get_json(&["pod", pod])?;
        let s = lab.kubectl.get_json(&["service", svc])?;
        let pod_ip = ip_at(&p, "/status/podIP", pod)?;
        let cluster_ip = ip_at(&s, "/spec/clusterIP", svc)?;
        let ports: Vec<SvcPort> = s
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .map(|p| SvcPort {
                name: p["name"].as_str().unwrap_or("").into(),
                port: p["port"].as_u64().unwrap_or(0) as u16,
                target: p["targetPort"].as_u64().unwrap_or(0) as u16,
                node_port: p["nodePort"].as_u64().map(|n| n as u16),
            })
            .collect();
        let np = |port: u16| {
            ports
                .iter()
                .find(|p| p.port == port)
                .and_then(|p| p.node_port)
                .ok_or_else(|| LabError::Unexpected(format!("{svc} has no NodePort for {port}")))
        };
        backends.push(Backend {
            case,
            pod_ip,
            cluster_ip,
            np_rr: np(RR_PORT)?,
            np_iperf: np(IPERF_PORT)?,
        });
        services.push(Svc {
            namespace: "default".into(),
            name: svc.into(),
            cluster_ip,
            ports,
            endpoints: vec![pod_ip],
        });
    }
    let client = lab.kubectl.get_json(&["pod", CLIENT_POD])?;
    let client_ip = ip_at(&client, "/status/podIP", CLIENT_POD)?;
    Ok(Workload {
        backends,
        services,
        client_ip,
    })
}

/// Which way a measurement reaches the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// The pod IP from the client pod.
    Direct,
    /// The ClusterIP from the client pod (socket load balancing, the agent's default).
    ClusterIp,
    /// The ClusterIP from the client pod, translated per packet (`from_pod`), as every pod's
    /// traffic is with `--socket-lb host-only`: see [`crate::perpacket`].
    ClusterIpPerPacket,
    /// Node 1's NodePort from `sy-ext`.
    NodePort,
    /// The pod IP from `sy-ext`, which routes each node's podCIDR to that node
    /// ([`route_podcidrs_from_outside`]): an outside client's own path to the pod, the limit
    /// for its NodePort connections to a backend on the node it reaches.
    OutsideDirect,
    /// The pod IP from node 1's own namespace (the limit for clients on the node).
    HostDirect,
    /// The ClusterIP from node 1's own namespace (socket load balancing).
    HostClusterIp,
}

impl Backend {
    /// (client namespace, echo address, iperf3 address) for `path`.
    pub fn route(&self, path: Via) -> (&'static str, SocketAddr, SocketAddr) {
        match path {
            Via::Direct => (
                CLIENT_NS,
                SocketAddr::from((self.pod_ip, RR_PORT)),
                SocketAddr::from((self.pod_ip, IPERF_PORT)),
            ),
            Via::ClusterIp | Via::ClusterIpPerPacket => (
                CLIENT_NS,
                SocketAddr::from((self.cluster_ip, RR_PORT)),
                SocketAddr::from((self.cluster_ip, IPERF_PORT)),
            ),
            Via::NodePort => (
                topology::EXT,
                SocketAddr::from((node1(), self.np_rr)),
                SocketAddr::from((node1(), self.np_iperf)),
            ),
            Via::OutsideDirect => (
                topology::EXT,
                SocketAddr::from((self.pod_ip, RR_PORT)),
                SocketAddr::from((self.pod_ip, IPERF_PORT)),
            ),
            Via::HostDirect => (
                HOST_NS,
                SocketAddr::from((self.pod_ip, RR_PORT)),
                SocketAddr::from((self.pod_ip, IPERF_PORT)),
            ),
            Via::HostClusterIp => (
                HOST_NS,
                SocketAddr::from((self.cluster_ip, RR_PORT)),
                SocketAddr::from((self.cluster_ip, IPERF_PORT)),
            ),
        }
    }
}

/// Routes each node's podCIDR (`10.244.<n>.0/24`) from `sy-ext` to that node, as a router that
/// learned the podCIDRs would ([`Via::OutsideDirect`]); the namespace goes with the lab.
pub fn route_podcidrs_from_outside(lab: &Lab) -> Result<(), LabError> {
    for n in 1..=lab.opts.nodes {
        switchyard_lab::cmd::run(&[
            "ip",
            "-n",
            topology::EXT,
            "route",
            "replace",
            &format!("10.244.{n}.0/24"),
            "via",
            &topology::node_addr(n),
        ])?;
    }
    Ok(())
}
