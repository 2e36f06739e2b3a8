//! NodePort acceleration (`switchyard agent --nodeport-acceleration native`) on three nodes
//! running `examples/multinode.yaml`: the external client's connections to node 1's NodePort
//! whose backend is on another node are balanced, translated and encapsulated by
//! `xdp_nodeport` (its counters move, `vxlan0` does not carry them), and everything XDP passes —
//! a local backend, `externalTrafficPolicy: Local`, a flow whose first packets found no
//! neighbour entry — still works through the TC programs.
use std::collections::BTreeSet;

use serde_json::Value;
use switchyard_lab::probe::{self, Echo};
use switchyard_lab::{cmd, topology, Lab, LabOptions};

/// A three-node lab with native NodePort acceleration, the multi-node example applied and
/// every pod Ready.
fn cluster() -> Lab {
    probe::example_lab_with(
        LabOptions::new(3).agent_args(["--nodeport-acceleration", "native"]),
        "multinode.yaml",
        &[("app=echo", 3), ("!app", 2)],
    )
    .expect("lab up")
}

/// Packets `dev` in namespace `netns` has sent.
fn tx_packets(netns: &str, dev: &str) -> u64 {
    let out =
        cmd::run(&["ip", "-n", netns, "-j", "-s", "link", "show", "dev", dev]).expect("ip -s");
    let v: Value = serde_json::from_str(&out).expect("ip -j");
    v[0]["stats64"]["tx"]["packets"].as_u64().unwrap_or(0)
}

fn counter(lab: &Lab, name: &str) -> u64 {
    lab.counter(1, name).expect("inspect stats")
}

/// `n` requests to `url` from the external client; each must be answered, by a pod that saw
/// the client as Kubernetes says (itself from a local backend, node 1's router address from a
/// remote one). Returns the answering pods.
fn requests(lab: &Lab, url: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let Echo { pod, peer } = probe::echo(lab, topology::EXT, url)
                .unwrap_or_else(|e| panic!("request {i} to {url}: {e}"));
            let expected = if pod == "echo-n1" {
                topology::EXT_ADDR
            } else {
                "10.244.1.1"
            };
            assert_eq!(peer, expected, "source seen by {pod}");
            pod
        })
        .collect()
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn accelerated_nodeport_sends_remote_backends_traffic_from_xdp_and_leaves_the_rest_to_tc() {
    let lab = cluster();
    let url = format!("http://{}:31002/", topology::node_addr(1));
    // The first connections also teach node 1 its neighbours' MACs (until then XDP passes).
    let warm: BTreeSet<String> = requests(&lab, &url, 20).into_iter().collect();
    assert_eq!(warm.len(), 3, "every backend answered: {warm:?}");

    let (xdp0, vxlan0) = (counter(&lab, "xdp_tx"), tx_packets("sy-n1", "vxlan0"));
    let pods = requests(&lab, &url, 30);
    let remote = pods.iter().filter(|p| *p != "echo-n1").count();
    let local = pods.len() - remote;
    let (xdp, vxlan) = (
        counter(&lab, "xdp_tx") - xdp0,
        tx_packets("sy-n1", "vxlan0") - vxlan0,
    );
    // A curl connection sends at least SYN, ACK, the request and a FIN to its backend.
    assert!(remote > 0 && local > 0, "both kinds of backend: {pods:?}");
    assert!(
        xdp >= 4 * remote as u64,
        "xdp_nodeport sent {xdp} packets for {remote} remote connections"
    );
    assert!(
        vxlan < xdp / 4,
        "vxlan0 sent {vxlan} packets while XDP sent {xdp}: the TC path is still carrying them"
    );

    // UDP through the same NodePort Service: answered, whichever backend.
    for _ in 0..5 {
        let out = lab
            .exec_in(
                topology::EXT,
                &[
                    "sh",
                    "-c",
                    &format!(
                        "echo ping | socat -T 2 - UDP:{}:31003",
                        topology::node_addr(1)
                    ),
                ],
            )
            .expect("socat");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("line=ping"),
            "UDP NodePort via n1"
        );
    }

    // externalTrafficPolicy: Local — XDP passes it: the backend's node answers with the
    // client's address intact, another node does not answer at all.
    let on_n2 = probe::echo(
        &lab,
        topology::EXT,
        &format!("http://{}:31004/", topology::node_addr(2)),
    )
    .expect("Local policy on the backend's node");
    assert_eq!(
        (on_n2.pod.as_str(), on_n2.peer.as_str()),
        ("echo-n2", topology::EXT_ADDR)
    );
    assert!(
        probe::curl(
            &lab,
            topology::EXT,
            &format!("http://{}:31004/", topology::node_addr(1))
        )
        .is_err(),
        "Local policy without a local backend must not answer via n1"
    );

    // Without neighbour entries a flow's first packets take the TC path (which resolves them)
    // and its later ones XDP: both find the same conntrack and NAT entries.
    let passed = counter(&lab, "xdp_pass_fib");
    cmd::run(&["ip", "-n", "sy-n1", "neigh", "flush", "dev", "eth0"]).expect("neigh flush");
    let pods = requests(&lab, &url, 10);
    assert!(
        pods.iter().all(|p| !p.is_empty()),
        "every request after the flush was answered"
    );
    assert!(
        counter(&lab, "xdp_pass_fib") > passed,
        "packets without a neighbour entry were passed to TC"
    );
}
