//! The eBPF datapath on its own, with real packets: a scratch node namespace with `cbr0`, a client
//! pod and two backend pods wired by hand, the agent's `Datapath` loaded inside the node namespace.
//!
//! Needs root, bpffs and the lab tools: run through `cargo xtask test` (it passes `--ignored`).
mod common;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use common::{curl, frontend, in_netns, in_ns, pod_of, udp, Scratch};
use switchyard::datapath::{Datapath, NodeSettings};
use switchyard::model::{Desired, Proto};
use switchyard::paths;

const NODE_NS: &str = "sy-t-dp-node";
const NODE: &str = "t-dp";
const GW: Ipv4Addr = Ipv4Addr::new(10, 244, 9, 1);
const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 10);
const EMPTY_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 9, 11);

fn settings() -> NodeSettings {
    NodeSettings {
        node: NODE.into(),
        node_ip: Ipv4Addr::new(198, 18, 0, 99),
        pod_cidr: (Ipv4Addr::new(10, 244, 9, 0), 24),
        cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
        service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
        ..NodeSettings::defaults()
    }
}

#[test]
#[ignore = "needs root and bpffs: run with cargo xtask test"]
fn clusterip_load_balances_rejects_and_forwards_through_ebpf() {
    let mut lab = Scratch::default();
    lab.node(NODE_NS, NODE, GW);
    let [a, b, c] = [("a", 2), ("b", 3), ("c", 4)].map(|(name, last)| {
        let (ns, host_if) = (format!("sy-t-dp-{name}"), format!("sytdp{name}"));
        lab.pod(
            NODE_NS,
            NODE,
            &ns,
            &host_if,
            Ipv4Addr::new(10, 244, 9, last),
            GW,
        )
    });
    lab.serve("sy-t-dp-b", "b");
    lab.serve("sy-t-dp-c", "c");

    let mut desired = Desired::default();
    for (f, s) in [
        frontend(VIP, Proto::Tcp, &[b.ip, c.ip]),
        frontend(VIP, Proto::Udp, &[b.ip, c.ip]),
        frontend(EMPTY_VIP, Proto::Tcp, &[]),
    ] {
        desired.frontends.insert(f, s);
    }
    let d = desired.clone();
    let ids = [
        a.container_id.clone(),
        b.container_id.clone(),
        c.container_id.clone(),
    ];
    in_netns(NODE_NS, move || {
        let mut dp = Datapath::open(&settings()).expect("open datapath");
        let pods = dp.sync_local_pods().expect("local pods");
        assert_eq!(pods.written, 3);
        let r = dp.services.sync_all(&d).expect("sync");
        assert!(r.written > 0);
        assert_eq!(
            dp.services.sync_all(&d).expect("resync").written,
            0,
            "an unchanged state writes nothing"
        );
        for id in ids {
            assert!(
                paths::attached_dir(NODE).join(&id).exists(),
                "attached marker for {id}"
            );
        }
    });

    // TCP through the ClusterIP reaches both backends, which see the client's own address; the
    // replies come from the VIP (curl would otherwise never complete the handshake).
    let mut seen = BTreeSet::new();
    for _ in 0..30 {
        let answer =
            curl("sy-t-dp-a", &format!("http://{VIP}/")).expect("curl through the ClusterIP");
        assert!(
            answer.contains(&format!("peer={}:", a.ip)),
            "client address kept: {answer}"
        );
        seen.insert(pod_of(&answer));
    }
    assert_eq!(
        seen,
        BTreeSet::from(["pod=b".to_string(), "pod=c".to_string()]),
        "both backends answer"
    );

    // UDP too.
    let udp_seen: BTreeSet<String> = (0..20)
        .map(|_| pod_of(&udp("sy-t-dp-a", VIP, 80)))
        .collect();
    assert!(
        udp_seen.contains("pod=b") && udp_seen.contains("pod=c"),
        "UDP answers: {udp_seen:?}"
    );

    // A direct flow that reuses the tuple of an earlier ClusterIP flow to the same backend (the
    // client's kernel sees two different tuples and may pick the same source port) is not
    // mistaken for that flow's reply.
    // UDP from a fixed port through a connected socket, which drops answers from any other
    // source: a reply rewritten by a stale entry never arrives.
    let pinned = |ip: Ipv4Addr, port: u16| {
        let script = format!(
            "import socket\ns=socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\ns.bind(('', 40123)); s.connect(('{ip}', {port})); s.settimeout(2)\ns.send(b'pinned')\ntry:\n  print(s.recv(200).decode().strip())\nexcept socket.timeout:\n  print('timeout')"
        );
        let out = in_ns("sy-t-dp-a", &["python3", "-c", &script])
            .output()
            .expect("python3");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let via_vip = pinned(VIP, 80);
    assert!(
        via_vip.starts_with("pod="),
        "a ClusterIP flow from port 40123: {via_vip:?}"
    );
    let chosen = if via_vip.starts_with("pod=b") {
        b.ip
    } else {
        c.ip
    };
    let direct = pinned(chosen, 8080);
    assert_eq!(
        pod_of(&direct),
        pod_of(&via_vip),
        "the direct flow on the same tuple answers: {direct:?}"
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

    // Removing a backend: new connections avoid it; a restarted datapath reuses the pinned state
    // and clears what belonged to a pod deleted while it was down.
    let mut only_b = Desired::default();
    let (f, s) = frontend(VIP, Proto::Tcp, &[b.ip]);
    only_b.frontends.insert(f, s);
    let c_id = c.container_id.clone();
    std::fs::remove_file(paths::endpoints_dir(NODE).join(format!("{c_id}.json")))
        .expect("remove record");
    in_netns(NODE_NS, move || {
        let mut dp = Datapath::open(&settings()).expect("reopen datapath");
        let pods = dp.sync_local_pods().expect("local pods after restart");
        assert_eq!(
            (pods.written, pods.failed),
            (2, 0),
            "the two remaining pods are re-taken"
        );
        assert!(
            pods.deleted >= 2,
            "the deleted pod's map entry and link pin are pruned: {pods:?}"
        );
        dp.services.sync_all(&only_b).expect("sync");
    });
    let pin = paths::pin_dir(NODE)
        .join("links/pods")
        .join(&c.container_id);
    assert!(!pin.exists(), "{} should be gone", pin.display());
    for _ in 0..15 {
        assert_eq!(
            pod_of(&curl("sy-t-dp-a", &format!("http://{VIP}/")).expect("curl")),
            "pod=b"
        );
    }
}
