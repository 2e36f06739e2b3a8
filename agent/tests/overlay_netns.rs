//! The VXLAN overlay with real packets: two scratch nodes joined by an underlay link, each with
//! `cbr0`, an external-mode `vxlan0` and one pod. Pod-to-pod across nodes keeps the source
//! address, and a ClusterIP on node 1 reaches a backend on node 2 (its reply is reverse-NATed by
//! `from_overlay` on node 1).
//!
//! Needs root and bpffs: run through `cargo xtask test` (it passes `--ignored`).
mod common;

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use common::{curl, frontend, in_netns, link_json, sh, udp, Scratch};
use switchyard::datapath::{Datapath, NodeSettings};
use switchyard::model::{Desired, Proto};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 8, 10);

fn settings(n: u8) -> NodeSettings {
    NodeSettings {
        node: format!("t-ov{n}"),
        node_ip: Ipv4Addr::new(198, 18, 99, n),
        pod_cidr: (Ipv4Addr::new(10, 244, 80 + n, 0), 24),
        cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
        service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
    }
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
    let mut lab = Scratch::default();
    let ns = |n: u8| format!("sy-t-ov-n{n}");
    let mut pods = Vec::new();
    for n in [1u8, 2] {
        let gw = Ipv4Addr::new(10, 244, 80 + n, 1);
        lab.node(&ns(n), &format!("t-ov{n}"), gw);
        pods.push(lab.pod(
            &ns(n),
            &format!("t-ov{n}"),
            &format!("sy-t-ov-p{n}"),
            &format!("sytovp{n}"),
            Ipv4Addr::new(10, 244, 80 + n, 2),
            gw,
        ));
    }
    // The underlay: one veth between the two node namespaces.
    sh(&[
        "ip",
        "-n",
        &ns(1),
        "link",
        "add",
        "eth0",
        "type",
        "veth",
        "peer",
        "name",
        "eth0",
        "netns",
        &ns(2),
    ]);
    for n in [1u8, 2] {
        sh(&[
            "ip",
            "-n",
            &ns(n),
            "addr",
            "add",
            &format!("198.18.99.{n}/24"),
            "dev",
            "eth0",
        ]);
        sh(&["ip", "-n", &ns(n), "link", "set", "eth0", "up"]);
        sh(&[
            "ip",
            "-n",
            &ns(n),
            "link",
            "add",
            "vxlan0",
            "type",
            "vxlan",
            "external",
            "dstport",
            "8472",
        ]);
        sh(&["ip", "-n", &ns(n), "link", "set", "vxlan0", "up"]);
    }
    lab.serve("sy-t-ov-p2", "p2");

    for n in [1u8, 2] {
        let other = 3 - n;
        let routes = BTreeMap::from([(
            (Ipv4Addr::new(10, 244, 80 + other, 0), 24),
            Ipv4Addr::new(198, 18, 99, other),
        )]);
        let ifindex = link_json(&ns(n), "vxlan0")["ifindex"]
            .as_u64()
            .expect("ifindex") as u32;
        let mut desired = Desired::default();
        if n == 1 {
            let (f, s) = frontend(VIP, Proto::Tcp, &[pods[1].ip]);
            desired.frontends.insert(f, s);
            let (f, s) = frontend(VIP, Proto::Udp, &[pods[1].ip]);
            desired.frontends.insert(f, s);
        }
        in_netns(&ns(n), move || {
            let mut dp = Datapath::open(&settings(n)).expect("open datapath");
            dp.sync_local_pods().expect("local pods");
            dp.attach_overlay("vxlan0", ifindex).expect("overlay");
            assert_eq!(dp.sync_tunnels(&routes).expect("tunnels").written, 1);
            assert_eq!(dp.sync_tunnels(&routes).expect("tunnels again").written, 0);
            dp.sync_services(&desired).expect("services");
        });
    }
    let before = vxlan_packets(&ns(1));

    // Pod to pod across nodes: the server sees the client pod's own address.
    let answer = curl("sy-t-ov-p1", &format!("http://{}:8080/", pods[1].ip))
        .expect("pod to pod across nodes");
    assert!(
        answer.contains(&format!("peer={} ", pods[0].ip)),
        "source kept: {answer}"
    );

    // ClusterIP on node 1, backend on node 2, TCP and UDP.
    for _ in 0..5 {
        let answer =
            curl("sy-t-ov-p1", &format!("http://{VIP}/")).expect("ClusterIP to a remote backend");
        assert!(
            answer.starts_with("pod=p2") && answer.contains(&format!("peer={} ", pods[0].ip)),
            "{answer}"
        );
    }
    assert!(
        udp("sy-t-ov-p1", VIP, 80).starts_with("pod=p2"),
        "UDP through the overlay"
    );

    let after = vxlan_packets(&ns(1));
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "vxlan0 carried the traffic: {before:?} -> {after:?}"
    );
    let stats: BTreeMap<_, _> = switchyard::datapath::inspect::stats("t-ov1")
        .expect("stats")
        .into_iter()
        .collect();
    assert!(
        stats["tunnel_tx"] > 0 && stats["tunnel_rx"] > 0 && stats["rev_nat"] > 0,
        "{stats:?}"
    );
}
