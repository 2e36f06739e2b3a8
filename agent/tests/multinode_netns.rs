//! Two scratch nodes with real packets: each has `cbr0`, an external-mode `vxlan0`, an uplink
//! `eth0` on a shared underlay bridge and one pod; an external client (`ext`, which also holds
//! the "outside" address 203.0.113.10) sits on the underlay.
//!
//! Proves the overlay (pod to pod across nodes keeps source addresses; a ClusterIP reaches a
//! remote backend), NodePort with both traffic policies and local or remote backends (checking
//! the source address the backend saw), and masquerade of pod traffic leaving the cluster.
//!
//! Needs root and bpffs: run through `cargo xtask test` (it passes `--ignored`).
mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::{curl, frontend, frontend_at, in_netns, link_json, sh, udp, Scratch};
use switchyard::cni::EndpointRecord;
use switchyard::datapath::{Datapath, NodeSettings};
use switchyard::model::{Desired, Frontend, FrontendSpec, Proto};
use switchyard_lab::netns;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 10);
const EXT: Ipv4Addr = Ipv4Addr::new(198, 18, 99, 100);
const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);

fn node_ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(198, 18, 99, n)
}

fn pod_gw(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 80 + n, 1)
}

/// Two nodes, their pods (`p1` on node 1, `p2` on node 2, both serving on 8080), the underlay and
/// the external client, all named `sy-t-<tag>-…`.
struct Cluster {
    lab: Scratch,
    tag: String,
    pods: Vec<EndpointRecord>,
}

impl Cluster {
    fn ns(&self, what: &str) -> String {
        format!("sy-t-{}-{what}", self.tag)
    }

    fn node(&self, n: u8) -> String {
        format!("t-{}{n}", self.tag)
    }

    fn new(tag: &str) -> Self {
        let mut c = Cluster {
            lab: Scratch::default(),
            tag: tag.into(),
            pods: Vec::new(),
        };
        let ul = c.ns("ul");
        c.lab.netns(&ul);
        sh(&["ip", "-n", &ul, "link", "add", "br0", "type", "bridge"]);
        sh(&["ip", "-n", &ul, "link", "set", "br0", "up"]);
        for n in [1u8, 2] {
            let (ns, node) = (c.ns(&format!("n{n}")), c.node(n));
            c.lab.node(&ns, &node, pod_gw(n));
            let pod = c.lab.pod(
                &ns,
                &node,
                &c.ns(&format!("p{n}")),
                &format!("sy{tag}p{n}"),
                Ipv4Addr::new(10, 244, 80 + n, 2),
                pod_gw(n),
            );
            c.pods.push(pod);
            uplink(&ul, &ns, &format!("n{n}"), node_ip(n));
            sh(&[
                "ip",
                "-n",
                &ns,
                "route",
                "add",
                "203.0.113.0/24",
                "via",
                &EXT.to_string(),
            ]);
            sh(&[
                "ip", "-n", &ns, "link", "add", "vxlan0", "type", "vxlan", "external", "dstport",
                "8472",
            ]);
            sh(&["ip", "-n", &ns, "link", "set", "vxlan0", "up"]);
            netns::sysctl(&ns, &["net.ipv4.ip_forward=1"]).expect("ip_forward");
        }
        let ext = c.ns("ext");
        c.lab.netns(&ext);
        uplink(&ul, &ext, "ext", EXT);
        sh(&[
            "ip",
            "-n",
            &ext,
            "addr",
            "add",
            &format!("{OUTSIDE}/32"),
            "dev",
            "lo",
        ]);
        for n in [1u8, 2] {
            let p = c.ns(&format!("p{n}"));
            c.lab.serve(&p, &format!("p{n}"));
        }
        c.lab.serve(&ext, "outside");
        c
    }

    /// Loads the datapath of node `n` with `desired`, overlay and uplink attached.
    fn program(&self, n: u8, desired: Desired) {
        let ns = self.ns(&format!("n{n}"));
        let other = 3 - n;
        let routes =
            BTreeMap::from([((Ipv4Addr::new(10, 244, 80 + other, 0), 24), node_ip(other))]);
        let vxlan = link_json(&ns, "vxlan0")["ifindex"]
            .as_u64()
            .expect("ifindex") as u32;
        let eth0 = link_json(&ns, "eth0")["ifindex"].as_u64().expect("ifindex") as u32;
        let settings = NodeSettings {
            node: self.node(n),
            node_ip: node_ip(n),
            pod_cidr: (Ipv4Addr::new(10, 244, 80 + n, 0), 24),
            cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            ..NodeSettings::defaults()
        };
        in_netns(&ns, move || {
            let mut dp = Datapath::open(&settings).expect("open datapath");
            dp.sync_local_pods().expect("local pods");
            dp.attach_overlay("vxlan0", vxlan).expect("overlay");
            let uplink = switchyard::datapath::devices::Uplink {
                name: "eth0".into(),
                ifindex: eth0,
                addr: node_ip(n),
                primary: true,
            };
            dp.attach_uplink(&uplink).expect("uplink");
            assert_eq!(dp.tunnels.sync(&routes).expect("tunnels").written, 1);
            assert_eq!(dp.tunnels.sync(&routes).expect("tunnels again").written, 0);
            dp.services.sync_all(&desired).expect("services");
        });
    }
}

/// A veth from namespace `ns` (`eth0`, `ip/24`) to the underlay bridge.
fn uplink(ul: &str, ns: &str, peer: &str, ip: Ipv4Addr) {
    sh(&[
        "ip", "-n", ul, "link", "add", peer, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ]);
    sh(&["ip", "-n", ul, "link", "set", peer, "master", "br0", "up"]);
    sh(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        &format!("{ip}/24"),
        "dev",
        "eth0",
    ]);
    sh(&["ip", "-n", ns, "link", "set", "eth0", "up"]);
}

/// A NodePort frontend on `node`'s address.
fn nodeport(
    node: Ipv4Addr,
    port: u16,
    proto: Proto,
    backends: &[Ipv4Addr],
    local_only: bool,
) -> (Frontend, FrontendSpec) {
    let (f, spec) = frontend_at(node, port, proto, backends);
    (
        f,
        FrontendSpec {
            nodeport: true,
            local_only,
            service: format!("default/np{port}:"),
            ..spec
        },
    )
}

fn vxlan_packets(ns: &str) -> (u64, u64) {
    let out = sh(&["ip", "-n", ns, "-j", "-s", "link", "show", "dev", "vxlan0"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("ip -j -s");
    let s = &v[0]["stats64"];
    (
        s["tx"]["packets"].as_u64().unwrap_or(0),
        s["rx"]["packets"].as_u64().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn pods_on_two_nodes_talk_through_the_overlay_with_their_own_addresses() {
    let c = Cluster::new("ov");
    let (p1, p2) = (c.pods[0].ip, c.pods[1].ip);
    let mut d1 = Desired::default();
    d1.frontends.extend([
        frontend(VIP, Proto::Tcp, &[p2]),
        frontend(VIP, Proto::Udp, &[p2]),
    ]);
    c.program(1, d1);
    c.program(2, Desired::default());
    let client = c.ns("p1");
    let before = vxlan_packets(&c.ns("n1"));

    let answer = curl(&client, &format!("http://{p2}:8080/")).expect("pod to pod across nodes");
    assert!(
        answer.contains(&format!("peer={p1}:")),
        "source kept: {answer}"
    );
    for _ in 0..5 {
        let answer =
            curl(&client, &format!("http://{VIP}/")).expect("ClusterIP to a remote backend");
        assert!(
            answer.starts_with("pod=p2") && answer.contains(&format!("peer={p1}:")),
            "{answer}"
        );
    }
    assert!(
        udp(&client, VIP, 80).starts_with("pod=p2"),
        "UDP through the overlay"
    );

    let after = vxlan_packets(&c.ns("n1"));
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "vxlan0 carried the traffic: {before:?} -> {after:?}"
    );
    let stats: BTreeMap<_, _> = switchyard::datapath::inspect::stats(&c.node(1))
        .expect("stats")
        .into_iter()
        .collect();
    assert!(
        stats["tunnel_tx"] > 0 && stats["tunnel_rx"] > 0 && stats["rev_nat"] > 0,
        "{stats:?}"
    );
    drop(c.lab);
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn nodeport_and_masquerade_translate_as_kubernetes_does() {
    let c = Cluster::new("np");
    let (p1, p2) = (c.pods[0].ip, c.pods[1].ip);
    let mut d1 = Desired::default();
    d1.frontends.extend([
        nodeport(node_ip(1), 30080, Proto::Tcp, &[p1], false),
        nodeport(node_ip(1), 30082, Proto::Tcp, &[p2], false),
        nodeport(node_ip(1), 30082, Proto::Udp, &[p2], false),
        nodeport(node_ip(1), 30081, Proto::Tcp, &[], true),
    ]);
    let mut d2 = Desired::default();
    d2.frontends
        .extend([nodeport(node_ip(2), 30081, Proto::Tcp, &[p2], true)]);
    c.program(1, d1);
    c.program(2, d2);
    let ext = c.ns("ext");
    let url = |n: u8, port: u16| format!("http://{}:{port}/", node_ip(n));

    // Local backend: the client's own address reaches the pod.
    let answer = curl(&ext, &url(1, 30080)).expect("NodePort to a local backend");
    assert!(
        answer.starts_with("pod=p1") && answer.contains(&format!("peer={EXT}:")),
        "{answer}"
    );
    // Remote backend (externalTrafficPolicy: Cluster): the pod sees node 1's address on the pod
    // network, and the reply finds its way back through node 1.
    for _ in 0..3 {
        let answer = curl(&ext, &url(1, 30082)).expect("NodePort to a remote backend");
        assert!(
            answer.starts_with("pod=p2") && answer.contains(&format!("peer={}:", pod_gw(1))),
            "{answer}"
        );
    }
    assert!(
        udp(&ext, node_ip(1), 30082).starts_with("pod=p2"),
        "UDP NodePort to a remote backend"
    );
    // externalTrafficPolicy: Local — a node without a local backend drops; one with it keeps the
    // client address.
    assert!(
        curl(&ext, &url(1, 30081)).is_err(),
        "Local policy without a local backend must not answer"
    );
    let answer = curl(&ext, &url(2, 30081)).expect("Local policy with a local backend");
    assert!(
        answer.starts_with("pod=p2") && answer.contains(&format!("peer={EXT}:")),
        "{answer}"
    );

    // A process on node 1 reaching its own address: local and remote backends.
    let node1 = c.ns("n1");
    let answer =
        curl(&node1, &url(1, 30080)).expect("NodePort from the node itself, local backend");
    assert!(answer.starts_with("pod=p1"), "{answer}");
    let answer =
        curl(&node1, &url(1, 30082)).expect("NodePort from the node itself, remote backend");
    assert!(answer.starts_with("pod=p2"), "{answer}");

    // Masquerade: pod traffic leaving the cluster carries the node's address.
    let answer =
        curl(&c.ns("p1"), &format!("http://{OUTSIDE}:8080/")).expect("egress to the outside");
    assert!(
        answer.starts_with("pod=outside") && answer.contains(&format!("peer={}:", node_ip(1))),
        "{answer}"
    );
    let stats: BTreeMap<_, _> = switchyard::datapath::inspect::stats(&c.node(1))
        .expect("stats")
        .into_iter()
        .collect();
    assert!(
        stats["snat_new"] >= 1 && stats["snat_reverse"] >= 1,
        "{stats:?}"
    );
    assert!(
        stats["nodeport"] >= 5 && stats["drop_no_local_backend"] >= 1,
        "{stats:?}"
    );
    drop(c.lab);
}
