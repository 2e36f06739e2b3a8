//! Agent-specific helpers of the datapath tests: nodes with `cbr0` and pods wired to it by hand in
//! scratch namespaces ([`Scratch`], around the lab's guard, which removes everything the test made,
//! also when it fails), the echo workload, and frontend builders.
//!
//! The generic network-namespace helpers live in `switchyard_lab::netns` (a dev-dependency).
#![allow(dead_code)] // each test binary uses a different subset

pub mod prog;

use std::net::Ipv4Addr;
use std::process::Stdio;

use switchyard::cni::EndpointRecord;
use switchyard::model::{BackendAddr, BackendSpec, Frontend, FrontendSpec, Proto};
use switchyard::paths;
use switchyard_lab::netns::Scratch as LabScratch;
pub use switchyard_lab::netns::{in_ns, sh};

/// `ip -j link show` of one interface.
pub fn link_json(ns: &str, ifname: &str) -> serde_json::Value {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0].clone()
}

/// The lab's [`Scratch`](LabScratch) guard with what the datapath tests add: nodes with `cbr0`,
/// pods wired to them by hand, the echo workload. Everything is removed on drop.
#[derive(Default)]
pub struct Scratch(LabScratch);

impl std::ops::Deref for Scratch {
    type Target = LabScratch;
    fn deref(&self) -> &LabScratch {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut LabScratch {
        &mut self.0
    }
}

impl Scratch {
    /// A node namespace with `cbr0` holding `gateway/24`; `node` names its pins and state (both
    /// removed now and on drop).
    pub fn node(&mut self, ns: &str, node: &str, gateway: Ipv4Addr) {
        self.dir(paths::pin_dir(node));
        self.dir(paths::state_dir(node));
        self.netns(ns);
        sh(&["ip", "-n", ns, "link", "add", "cbr0", "type", "bridge"]);
        sh(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("{gateway}/24"),
            "dev",
            "cbr0",
        ]);
        sh(&["ip", "-n", ns, "link", "set", "cbr0", "up"]);
    }

    /// A pod namespace `pod_ns` with `eth0` = `ip/24` on node `node_ns`'s `cbr0` through host veth
    /// `host_if`; records it for node `node` as the CNI plugin would.
    pub fn pod(
        &mut self,
        node_ns: &str,
        node: &str,
        pod_ns: &str,
        host_if: &str,
        ip: Ipv4Addr,
        gateway: Ipv4Addr,
    ) -> EndpointRecord {
        self.netns(pod_ns);
        sh(&[
            "ip", "-n", node_ns, "link", "add", host_if, "type", "veth", "peer", "name", "eth0",
            "netns", pod_ns,
        ]);
        sh(&[
            "ip", "-n", node_ns, "link", "set", host_if, "master", "cbr0", "up",
        ]);
        sh(&[
            "ip", "-n", pod_ns, "link", "set", "eth0", "mtu", "1400", "up",
        ]);
        sh(&[
            "ip",
            "-n",
            pod_ns,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "eth0",
        ]);
        sh(&[
            "ip",
            "-n",
            pod_ns,
            "route",
            "add",
            "default",
            "via",
            &gateway.to_string(),
        ]);
        let host = link_json(node_ns, host_if);
        let pod = link_json(pod_ns, "eth0");
        let rec = EndpointRecord {
            container_id: format!("{node}-{pod_ns}"),
            pod_namespace: "default".into(),
            pod_name: pod_ns.into(),
            netns: format!("/run/netns/{pod_ns}"),
            ip,
            prefix_len: 24,
            gateway,
            host_ifname: host_if.into(),
            host_ifindex: host["ifindex"].as_u64().expect("ifindex") as u32,
            host_mac: host["address"].as_str().expect("mac").into(),
            pod_mac: pod["address"].as_str().expect("mac").into(),
            // No cookie: these pods exercise the per-packet path (no socket programs attached).
            netns_cookie: 0,
        };
        let dir = paths::endpoints_dir(node);
        std::fs::create_dir_all(&dir).expect("endpoints dir");
        let file = dir.join(format!("{}.json", rec.container_id));
        std::fs::write(file, serde_json::to_vec(&rec).expect("json")).expect("record");
        rec
    }

    /// Starts `switchyard-labnode echo` on port 8080 (TCP and UDP) in `ns`, answering as pod
    /// `name`: `pod=<name> peer=<ip>:<port>` (HTTP) or `… line=<line>` (TCP lines, UDP).
    pub fn serve(&mut self, ns: &str, name: &str) {
        let child = in_ns(ns, &[&echo_bin(), "echo", "--port", "8080"])
            .env("HOSTNAME", name)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("switchyard-labnode echo");
        self.child(child);
        // Wait until it listens, so the first request of a test never races its start.
        for _ in 0..100 {
            if in_ns(ns, &["ss", "-Hltn", "sport = :8080"])
                .output()
                .is_ok_and(|o| !o.stdout.is_empty())
            {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        panic!("switchyard-labnode echo did not start listening in {ns}");
    }
}

/// The echo workload's executable: the lab node runtime's binary. It belongs to another package,
/// so cargo does not hand it to this test; `switchyard_lab::bins` builds it (a no-op after
/// `cargo build --workspace`) in this test's profile.
pub fn echo_bin() -> String {
    switchyard_lab::bins::cargo_bin("switchyard-labnode")
        .expect("switchyard-labnode")
        .to_string_lossy()
        .into_owned()
}

/// Runs `f` on a thread that has entered network namespace `ns`.
pub fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    switchyard_lab::netns::run_in(ns, f).unwrap_or_else(|e| panic!("{e}"))
}

/// An HTTP GET from `ns`; the answer body, or curl's error.
pub fn curl(ns: &str, url: &str) -> Result<String, String> {
    let out = in_ns(ns, &["curl", "-sS", "--max-time", "2", url])
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

/// One UDP datagram from `ns` to `ip:port`; the answer, or "" after 2 s.
pub fn udp(ns: &str, ip: Ipv4Addr, port: u16) -> String {
    use std::io::Write;
    let mut child = in_ns(ns, &["socat", "-T", "2", "-", &format!("UDP:{ip}:{port}")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("socat udp");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"hi\n")
        .expect("write");
    let out = child.wait_with_output().expect("socat udp");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}
/// A frontend on port 80 with backends on port 8080.
pub fn frontend(ip: Ipv4Addr, proto: Proto, backends: &[Ipv4Addr]) -> (Frontend, FrontendSpec) {
    frontend_at(ip, 80, proto, backends)
}

/// A frontend on `ip:port` with backends on port 8080.
pub fn frontend_at(
    ip: Ipv4Addr,
    port: u16,
    proto: Proto,
    backends: &[Ipv4Addr],
) -> (Frontend, FrontendSpec) {
    (
        Frontend { ip, port, proto },
        FrontendSpec {
            backends: backends
                .iter()
                .map(|b| BackendSpec {
                    addr: BackendAddr {
                        ip: *b,
                        port: 8080,
                        proto,
                    },
                    terminating: false,
                    node_ip: None,
                })
                .collect(),
            service: "default/echo:".into(),
            ..Default::default()
        },
    )
}

/// The pod name in an echo answer (`pod=<name> peer=…`).
pub fn pod_of(answer: &str) -> String {
    answer
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}
