//! End-to-end on three nodes (`examples/multinode.yaml`): the VXLAN overlay, ClusterIP to remote
//! backends, NodePort with both traffic policies, masquerade, node removal — with real packets,
//! and no iptables or nftables rules anywhere.
use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_lab::probe::{self, Echo};
use switchyard_lab::{cmd, kube, topology, Lab};

/// A three-node lab with the multi-node example applied and every pod Ready.
fn cluster() -> Lab {
    probe::example_lab(3, "multinode.yaml", &[("app=echo", 3), ("!app", 2)]).expect("lab up")
}

fn pod_ip(lab: &Lab, name: &str) -> String {
    probe::pod_ip(lab, name).expect("podIP")
}

fn curl_from(lab: &Lab, netns: &str, url: &str) -> Result<String, String> {
    probe::curl(lab, netns, url)
}

fn pod_and_peer(answer: &str) -> (String, String) {
    let e = Echo::parse(answer).unwrap_or_else(|| panic!("not an echo answer: {answer}"));
    (e.pod, e.peer)
}

fn packets(lab: &Lab, netns: &str, dev: &str) -> (u64, u64) {
    let out = lab
        .exec_in(netns, &["ip", "-j", "-s", "link", "show", "dev", dev])
        .expect("ip -s");
    let v: Value = serde_json::from_slice(&out.stdout).expect("ip -j");
    let s = &v[0]["stats64"];
    (
        s["tx"]["packets"].as_u64().unwrap_or(0),
        s["rx"]["packets"].as_u64().unwrap_or(0),
    )
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn pods_across_nodes_keep_their_addresses_and_the_underlay_carries_only_vxlan() {
    let lab = cluster();
    let client = pod_ip(&lab, "client-n1");
    // Watch the underlay port of node 1 while traffic flows: pod addresses must appear only
    // inside VXLAN, and VXLAN must be seen (so the capture itself is known to work).
    let capture = |filter: &str| {
        std::process::Command::new("ip")
            .args([
                "netns",
                "exec",
                topology::UNDERLAY,
                "timeout",
                "4",
                "tcpdump",
                "-nn",
                "-i",
                "n1",
                "-c",
                "1",
                filter,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("tcpdump")
    };
    let leak = capture("net 10.244.0.0/16 and not udp port 8472");
    let vxlan = capture("udp port 8472");
    std::thread::sleep(Duration::from_millis(500));
    let before = packets(&lab, "sy-n1", "vxlan0");
    for target in ["echo-n2", "echo-n3"] {
        let answer = curl_from(
            &lab,
            "sy-pod-default-client-n1",
            &format!("http://{}:8080/", pod_ip(&lab, target)),
        )
        .expect("pod to pod across nodes");
        assert_eq!(
            pod_and_peer(&answer),
            (target.to_string(), client.clone()),
            "the remote pod sees the client pod's own address"
        );
    }
    let after = packets(&lab, "sy-n1", "vxlan0");
    assert!(
        after.0 > before.0 && after.1 > before.1,
        "vxlan0 counters moved: {before:?} -> {after:?}"
    );
    let leaked = leak.wait_with_output().expect("tcpdump");
    assert!(
        String::from_utf8_lossy(&leaked.stdout).trim().is_empty(),
        "pod traffic on the underlay outside VXLAN: {}",
        String::from_utf8_lossy(&leaked.stdout)
    );
    let tunnelled = vxlan.wait_with_output().expect("tcpdump");
    assert!(
        String::from_utf8_lossy(&tunnelled.stdout).contains("8472"),
        "VXLAN packets on the underlay"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn clusterip_reaches_backends_on_other_nodes() {
    let lab = cluster();
    let ip = lab.kubectl.cluster_ip("echo").expect("cluster IP");
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        let answer = curl_from(&lab, "sy-pod-default-client-n1", &format!("http://{ip}/"))
            .expect("ClusterIP");
        seen.insert(pod_and_peer(&answer).0);
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["echo-n1".into(), "echo-n2".into(), "echo-n3".into()])
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn nodeport_works_through_every_node_with_both_traffic_policies() {
    let lab = cluster();
    for n in 1..=3 {
        let node = topology::node_addr(n);
        // externalTrafficPolicy: Cluster — any backend; a local one sees the client, a remote
        // one sees this node's address on the pod network (its cbr0), and replies come back.
        let mut seen = BTreeSet::new();
        for _ in 0..40 {
            let answer = curl_from(&lab, topology::EXT, &format!("http://{node}:31002/"))
                .expect("NodePort (Cluster)");
            let (pod, peer) = pod_and_peer(&answer);
            let expected_peer = if pod == format!("echo-n{n}") {
                topology::EXT_ADDR.to_string()
            } else {
                format!("10.244.{n}.1")
            };
            assert_eq!(peer, expected_peer, "source seen by {pod} via node {n}");
            seen.insert(pod);
            if seen.len() == 3 {
                break;
            }
        }
        assert_eq!(
            seen.len(),
            3,
            "NodePort via n{n} reaches every backend: {seen:?}"
        );
        let out = lab
            .exec_in(
                topology::EXT,
                &[
                    "sh",
                    "-c",
                    &format!("echo ping | socat -T 2 - UDP:{node}:31003"),
                ],
            )
            .expect("socat");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("line=ping"),
            "UDP NodePort via n{n}"
        );
        // externalTrafficPolicy: Local — only n2 has the backend; it sees the client's address.
        let local = curl_from(&lab, topology::EXT, &format!("http://{node}:31004/"));
        if n == 2 {
            assert_eq!(
                pod_and_peer(&local.expect("Local policy on the backend's node")),
                ("echo-n2".into(), topology::EXT_ADDR.into())
            );
        } else {
            assert!(
                local.is_err(),
                "Local policy without a local backend must not answer via n{n}"
            );
        }
    }
    // From a process on the node itself, to its own address: local and remote backends.
    let mut from_node = BTreeSet::new();
    for _ in 0..60 {
        let answer = curl_from(
            &lab,
            "sy-n1",
            &format!("http://{}:31002/", topology::node_addr(1)),
        )
        .expect("NodePort from the node itself");
        from_node.insert(pod_and_peer(&answer).0 == "echo-n1");
        if from_node.len() == 2 {
            break;
        }
    }
    assert_eq!(
        from_node.len(),
        2,
        "both a local and a remote backend answered the node's own process"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn egress_is_masqueraded_and_200_concurrent_connections_complete() {
    let lab = cluster();
    let outside = format!("http://{}:8080/", topology::OUTSIDE_ADDR);
    for (pod, node) in [("client-n1", 1), ("client-n2", 2)] {
        let answer = curl_from(&lab, &format!("sy-pod-default-{pod}"), &outside)
            .expect("egress to the outside");
        assert_eq!(
            pod_and_peer(&answer).1,
            topology::node_addr(node),
            "{pod} leaves with its node's address"
        );
    }
    // 50 concurrent connections from each of four pods on three nodes, all held open at once.
    let script = format!(
        "import socket\nsocks=[socket.create_connection(('{}', 8080), timeout=10) for _ in range(50)]\nfor i,s in enumerate(socks): s.sendall(b'c%d\\n' % i)\nok=sum(1 for i,s in enumerate(socks) if (b'line=c%d' % i) in s.recv(200))\nprint(ok)\n",
        topology::OUTSIDE_ADDR
    );
    let clients: Vec<_> = ["client-n1", "client-n2", "echo-n1", "echo-n3"]
        .iter()
        .map(|pod| {
            std::process::Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &format!("sy-pod-default-{pod}"),
                    "python3",
                    "-c",
                    &script,
                ])
                .stdout(std::process::Stdio::piped())
                .spawn()
                .expect("python3")
        })
        .collect();
    let mut total = 0;
    for c in clients {
        let out = c.wait_with_output().expect("python3");
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<u32>()
            .unwrap_or(0);
    }
    assert_eq!(total, 200, "every concurrent egress connection completed");
    for (n, flows) in [(1, 100), (2, 50), (3, 50)] {
        let snat = lab.counter(n, "snat_new").expect("stats");
        assert!(
            snat >= flows,
            "node n{n} translated its pods' flows: {snat}"
        );
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn an_outside_client_routed_to_a_podcidr_is_answered_from_the_pod_address_not_masqueraded() {
    let lab = cluster();
    // The outside host routes each node's podCIDR to that node (as a router that learned the
    // podCIDRs would); the namespace goes with the lab.
    for n in 1..=3 {
        lab.exec_in(
            topology::EXT,
            &[
                "ip",
                "route",
                "replace",
                &format!("10.244.{n}.0/24"),
                "via",
                &topology::node_addr(n),
            ],
        )
        .expect("route a podCIDR");
    }
    for pod in ["echo-n1", "echo-n2"] {
        let ip = pod_ip(&lab, pod);
        let answer = curl_from(&lab, topology::EXT, &format!("http://{ip}:8080/"))
            .unwrap_or_else(|e| panic!("TCP from outside to {pod} at {ip}: {e}"));
        assert_eq!(
            pod_and_peer(&answer),
            (pod.to_string(), topology::EXT_ADDR.to_string()),
            "{pod} answers and sees the outside client's own address"
        );
        // A connected UDP socket takes answers from the address it sent to only.
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.settimeout(3)\ns.connect(('{ip}', 8080))\ns.send(b'dgram')\nprint(s.recv(200).decode().strip())\n"
        );
        let answer = probe::python(&lab, topology::EXT, &script)
            .unwrap_or_else(|e| panic!("UDP from outside to {pod} at {ip}: {e}"));
        assert!(
            answer.contains(&format!("pod={pod} ")) && answer.contains("line=dgram"),
            "{answer}"
        );
    }
    // The same client port first through echo-n2's NodePort (externalTrafficPolicy: Local, so
    // the pod sees the client's own address), then to the pod's address: the second connection
    // has the first one's reply tuple, which must no longer be translated back to the NodePort.
    let script = format!(
        "import socket, time\ndef ask(addr):\n    s=socket.socket()\n    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n    s.bind(('0.0.0.0', 40123))\n    s.settimeout(3)\n    s.connect(addr)\n    s.sendall(b'again\\n')\n    got=s.recv(200).decode().strip()\n    s.close()\n    return got\nprint(ask(('{}', 31004)))\ntime.sleep(0.5)\nprint(ask(('{}', 8080)))\n",
        topology::node_addr(2),
        pod_ip(&lab, "echo-n2")
    );
    let answers = probe::python(&lab, topology::EXT, &script)
        .unwrap_or_else(|e| panic!("NodePort, then the pod's address from one port: {e}"));
    assert_eq!(
        answers
            .lines()
            .filter(|l| l.contains("pod=echo-n2 "))
            .count(),
        2,
        "both connections answered by echo-n2:\n{answers}"
    );
    // The pods' own connections to the outside are still masqueraded.
    let answer = curl_from(
        &lab,
        "sy-pod-default-client-n1",
        &format!("http://{}:8080/", topology::OUTSIDE_ADDR),
    )
    .expect("egress to the outside");
    assert_eq!(pod_and_peer(&answer).1, topology::node_addr(1));
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_full_size_bulk_transfer_crosses_the_overlay_unfragmented() {
    let lab = cluster();
    let server = pod_ip(&lab, "echo-n2");
    let mut iperf = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            "sy-pod-default-echo-n2",
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let frag = |ns: &str| {
        let out = cmd::run(&["ip", "netns", "exec", ns, "nstat", "-az", "IpFragCreates"])
            .unwrap_or_default();
        out.lines()
            .find_map(|l| l.strip_prefix("IpFragCreates"))
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let before = frag("sy-n1");
    let out = lab
        .exec_in(
            "sy-pod-default-client-n1",
            &["iperf3", "-c", &server, "-p", "5201", "-t", "2", "-J"],
        )
        .expect("iperf3");
    let _ = iperf.wait();
    let report: Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let bytes = report
        .pointer("/end/sum_received/bytes")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    assert!(
        bytes > 1_000_000,
        "the bulk transfer moved data: {bytes} bytes"
    );
    let mtu = lab
        .exec_in(
            "sy-pod-default-client-n1",
            &["cat", "/sys/class/net/eth0/mtu"],
        )
        .expect("mtu");
    assert_eq!(
        String::from_utf8_lossy(&mtu.stdout).trim(),
        "1450",
        "pods get the 1500-byte underlay's MTU minus VXLAN's 50 bytes"
    );
    assert_eq!(
        frag("sy-n1"),
        before,
        "no fragmentation on the node during the transfer"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn deleting_a_node_removes_its_routes_and_endpoints_within_a_second() {
    let lab = cluster();
    let routes =
        || cmd::run(&[&lab.switchyard(), "inspect", "tunnels", "--node", "n1"]).unwrap_or_default();
    let services = || {
        cmd::run(&[&lab.switchyard(), "inspect", "services", "--node", "n1"]).unwrap_or_default()
    };
    let n3_pod = pod_ip(&lab, "echo-n3");
    assert!(routes().contains("10.244.3.0/24"), "{}", routes());
    assert!(services().contains(&n3_pod));
    lab.stop_kubelet(3);
    lab.kubectl
        .run(&["delete", "node", "n3"])
        .expect("delete node");
    let start = Instant::now();
    kube::wait(
        "node n3's route and endpoints to leave n1's datapath",
        Duration::from_secs(3),
        None,
        || Ok(!routes().contains("10.244.3.0/24") && !services().contains(&n3_pod)),
    )
    .expect("node removal reaches the datapath");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn no_node_has_service_or_masquerade_rules_in_iptables_or_nftables() {
    let lab = cluster();
    for n in 1..=3 {
        let ns = topology::node_ns(n);
        let ipt = cmd::run(&["ip", "netns", "exec", &ns, "iptables-save"]).expect("iptables-save");
        assert!(
            !ipt.lines().any(|l| l.starts_with("-A")),
            "iptables rules in {ns}: {ipt}"
        );
        let nft = cmd::run(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"]).expect("nft");
        assert!(
            !nft.contains("dnat") && !nft.contains("masquerade") && !nft.contains("snat"),
            "nftables rules in {ns}: {nft}"
        );
    }
    drop(lab);
}
