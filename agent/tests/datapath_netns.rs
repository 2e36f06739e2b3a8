//! The eBPF datapath on its own, with real packets: a scratch node namespace with `cbr0`, a client
//! pod and two backend pods wired by hand, the agent's `Datapath` loaded inside the node namespace.
//!
//! Needs root, bpffs and the lab tools: run through `cargo xtask test` (it passes `--ignored`).
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use switchyard::cni::EndpointRecord;
use switchyard::datapath::{Datapath, NodeSettings};
use switchyard::model::{BackendAddr, BackendSpec, Desired, Frontend, FrontendSpec, Proto};
use switchyard::paths;

const NODE_NS: &str = "sy-t-dp-node";
const NODE: &str = "t-dp";
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 11);

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn in_ns(ns: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns]).args(args);
    c
}

/// A pod namespace wired to the scratch node's cbr0.
struct Pod {
    ns: String,
}

/// Removes everything the test made, also when it fails.
struct Lab {
    pods: Vec<Pod>,
    children: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for p in &self.pods {
            let _ = Command::new("ip").args(["netns", "del", &p.ns]).status();
        }
        let _ = Command::new("ip").args(["netns", "del", NODE_NS]).status();
        let _ = std::fs::remove_dir_all(paths::pin_dir(NODE));
        let _ = std::fs::remove_dir_all(paths::state_dir(NODE));
    }
}

fn link_json(ns: &str, ifname: &str) -> serde_json::Value {
    let out = sh(&["ip", "-n", ns, "-j", "link", "show", "dev", ifname]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j output");
    v[0].clone()
}

fn add_pod(lab: &mut Lab, name: &str, last: u8) -> EndpointRecord {
    let ns = format!("sy-t-dp-{name}");
    let host_if = format!("sytdp{name}");
    let ip = Ipv4Addr::new(10, 244, 9, last);
    let _ = Command::new("ip").args(["netns", "del", &ns]).status();
    sh(&["ip", "netns", "add", &ns]);
    lab.pods.push(Pod { ns: ns.clone() });
    sh(&[
        "ip", "-n", NODE_NS, "link", "add", &host_if, "type", "veth", "peer", "name", "eth0",
        "netns", &ns,
    ]);
    sh(&[
        "ip", "-n", NODE_NS, "link", "set", &host_if, "master", "cbr0", "up",
    ]);
    sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", &ns, "link", "set", "eth0", "mtu", "1460", "up"]);
    sh(&[
        "ip",
        "-n",
        &ns,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        "eth0",
    ]);
    sh(&[
        "ip",
        "-n",
        &ns,
        "route",
        "add",
        "default",
        "via",
        "10.244.9.1",
    ]);
    let host = link_json(NODE_NS, &host_if);
    let pod = link_json(&ns, "eth0");
    EndpointRecord {
        container_id: format!("t-dp-{name}"),
        pod_namespace: "default".into(),
        pod_name: name.into(),
        netns: format!("/run/netns/{ns}"),
        ip,
        prefix_len: 24,
        gateway: Ipv4Addr::new(10, 244, 9, 1),
        host_ifname: host_if,
        host_ifindex: host["ifindex"].as_u64().expect("ifindex") as u32,
        host_mac: host["address"].as_str().expect("mac").into(),
        pod_mac: pod["address"].as_str().expect("mac").into(),
    }
}

/// An echo server in a pod: TCP and UDP on 8080, answering with the pod's name.
fn serve(lab: &mut Lab, ns: &str, name: &str) {
    let reply = format!("SYSTEM:echo pod={name}");
    for spec in ["TCP-LISTEN:8080,fork,reuseaddr", "UDP-RECVFROM:8080,fork"] {
        let child = in_ns(ns, &["socat", spec, &reply])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("socat");
        lab.children.push(child);
    }
}

fn frontend(ip: Ipv4Addr, proto: Proto, backends: &[Ipv4Addr]) -> (Frontend, FrontendSpec) {
    (
        Frontend {
            ip,
            port: 80,
            proto,
        },
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

/// Runs `f` on a thread that has entered the scratch node's network namespace.
fn in_node_ns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        let ns = std::fs::File::open(format!("/run/netns/{NODE_NS}")).expect("node netns");
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("thread")
}

fn curl(ns: &str, url: &str) -> Result<String, String> {
    let out = in_ns(ns, &["curl", "-sS", "--http0.9", "--max-time", "2", url])
        .output()
        .expect("curl");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
    }
}

fn udp(ns: &str, ip: Ipv4Addr) -> String {
    let out = in_ns(ns, &["socat", "-T", "2", "-", &format!("UDP:{ip}:80")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().expect("stdin").write_all(b"hi\n")?;
            c.wait_with_output()
        })
        .expect("socat udp");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn clusterip_load_balances_rejects_and_forwards_through_ebpf() {
    let _ = Command::new("ip").args(["netns", "del", NODE_NS]).status();
    let _ = std::fs::remove_dir_all(paths::pin_dir(NODE));
    let _ = std::fs::remove_dir_all(paths::state_dir(NODE));
    let mut lab = Lab {
        pods: Vec::new(),
        children: Vec::new(),
    };
    sh(&["ip", "netns", "add", NODE_NS]);
    sh(&["ip", "-n", NODE_NS, "link", "set", "lo", "up"]);
    sh(&["ip", "-n", NODE_NS, "link", "add", "cbr0", "type", "bridge"]);
    sh(&[
        "ip",
        "-n",
        NODE_NS,
        "addr",
        "add",
        "10.244.9.1/24",
        "dev",
        "cbr0",
    ]);
    sh(&["ip", "-n", NODE_NS, "link", "set", "cbr0", "up"]);

    let records = vec![
        add_pod(&mut lab, "a", 2),
        add_pod(&mut lab, "b", 3),
        add_pod(&mut lab, "c", 4),
    ];
    serve(&mut lab, "sy-t-dp-b", "b");
    serve(&mut lab, "sy-t-dp-c", "c");
    let dir = paths::endpoints_dir(NODE);
    std::fs::create_dir_all(&dir).expect("endpoints dir");
    for r in &records {
        std::fs::write(
            dir.join(format!("{}.json", r.container_id)),
            serde_json::to_vec(r).expect("json"),
        )
        .expect("record");
    }
    let (b, c) = (records[1].ip, records[2].ip);

    let settings = NodeSettings {
        node: NODE.into(),
        node_ip: Ipv4Addr::new(198, 18, 0, 99),
        pod_cidr: (Ipv4Addr::new(10, 244, 9, 0), 24),
        cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
        service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
    };
    let mut desired = Desired::default();
    for (f, s) in [
        frontend(VIP, Proto::Tcp, &[b, c]),
        frontend(VIP, Proto::Udp, &[b, c]),
        frontend(EMPTY_VIP, Proto::Tcp, &[]),
    ] {
        desired.frontends.insert(f, s);
    }
    let d = desired.clone();
    let s = settings.clone();
    in_node_ns(move || {
        let mut dp = Datapath::open(&s).expect("open datapath");
        let pods = dp.sync_local_pods().expect("local pods");
        assert_eq!(pods.written, 3);
        let r = dp.sync_services(&d).expect("sync");
        assert!(r.written > 0);
        assert_eq!(
            dp.sync_services(&d).expect("resync").written,
            0,
            "an unchanged state writes nothing"
        );
        for r in ["a", "b", "c"] {
            assert!(
                paths::attached_dir(NODE).join(format!("t-dp-{r}")).exists(),
                "attached marker for {r}"
            );
        }
    });

    // TCP through the ClusterIP reaches both backends; replies come from the VIP (curl would
    // otherwise never complete the handshake).
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        seen.insert(
            curl("sy-t-dp-a", &format!("http://{VIP}/")).expect("curl through the ClusterIP"),
        );
    }
    assert_eq!(
        seen,
        BTreeSet::from(["pod=b".to_string(), "pod=c".to_string()]),
        "both backends answer"
    );

    // UDP too.
    let mut udp_seen = BTreeSet::new();
    for _ in 0..20 {
        udp_seen.insert(udp("sy-t-dp-a", VIP));
    }
    assert!(
        udp_seen.contains("pod=b") && udp_seen.contains("pod=c"),
        "UDP answers: {udp_seen:?}"
    );

    // A service without backends is refused at once, not left to time out.
    let start = Instant::now();
    let probe = format!(
        "import socket; s=socket.socket(); s.settimeout(3); s.connect(('{EMPTY_VIP}', 80))"
    );
    let out = in_ns("sy-t-dp-a", &["python3", "-c", &probe])
        .output()
        .expect("python3");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("ConnectionRefusedError"),
        "expected ECONNREFUSED, got: {err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "rejection took {:?}",
        start.elapsed()
    );

    // The counters show the datapath did it.
    let stats: std::collections::BTreeMap<_, _> = switchyard::datapath::inspect::stats(NODE)
        .expect("stats")
        .into_iter()
        .collect();
    assert!(stats["lb_new"] >= 30, "{stats:?}");
    assert!(stats["rev_nat"] >= 30, "{stats:?}");
    assert!(stats["drop_no_backend"] >= 1, "{stats:?}");

    // Removing a backend: new connections avoid it; a restarted datapath reuses the pinned state.
    let mut only_b = Desired::default();
    let (f, s) = frontend(VIP, Proto::Tcp, &[b]);
    only_b.frontends.insert(f, s);
    let st = settings.clone();
    in_node_ns(move || {
        let mut dp = Datapath::open(&st).expect("reopen datapath");
        dp.sync_local_pods().expect("local pods after restart");
        dp.sync_services(&only_b).expect("sync");
    });
    for _ in 0..15 {
        assert_eq!(
            curl("sy-t-dp-a", &format!("http://{VIP}/")).expect("curl"),
            "pod=b"
        );
    }
}
