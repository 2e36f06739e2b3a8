//! End-to-end on three nodes: what an operator monitors and what a busy node must survive. A
//! real Prometheus server (Debian's package) scrapes every agent and its HTTP API shows the
//! per-Service counters move by exactly the traffic sent; `promtool check metrics` accepts every
//! agent's `/metrics`; thousands of short masqueraded connections to one outside destination go
//! through a small port range without a drop, because closed flows hand their ports on.
use std::time::Duration;

use switchyard_lab::prometheus::{Prometheus, METRICS_PORT};
use switchyard_lab::{cmd, kube, probe, topology, Lab, LabOptions};

/// A three-node lab with the multi-node example applied and every pod Ready.
fn cluster(opts: LabOptions) -> Lab {
    probe::example_lab_with(opts, "multinode.yaml", &[("app=echo", 3), ("!app", 2)])
        .expect("lab up")
}

fn cluster_ip(lab: &Lab, service: &str) -> String {
    lab.kubectl
        .get_json(&["service", service])
        .expect("service")
        .pointer("/spec/clusterIP")
        .and_then(|v| v.as_str())
        .expect("clusterIP")
        .to_string()
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn prometheus_sees_service_counters_move_by_exactly_the_traffic_sent() {
    // Pods' packets are counted per Service where they are translated: with the default
    // `--socket-lb all` their TCP connections are pointed at a backend instead (counted as
    // connections only, see e2e_reachability), so this lab translates them per packet.
    let lab = cluster(LabOptions::new(3).agent_args(["--socket-lb", "host-only"]));
    let sock_before = [1, 2].map(|n| lab.counter(n, "sock_lb").expect("stats"));
    let pods = cmd::run(&[&lab.switchyard(), "inspect", "pods", "--node", "n1"]).expect("inspect");
    assert!(
        pods.contains("services: per-packet") && !pods.contains("services: socket"),
        "{pods}"
    );
    let prom = Prometheus::start(&lab).expect("prometheus scraping the agents");
    let ip = cluster_ip(&lab, "echo");
    let frontend = format!("{ip}:80");
    let connections =
        format!("sum(switchyard_service_connections_total{{service=\"default/echo:http\",frontend=\"{frontend}\"}})");
    let packets = format!(
        "sum(switchyard_service_packets_total{{service=\"default/echo:http\",frontend=\"{frontend}\"}})"
    );
    // The series exist (at 0 or what the readiness checks left) once the Service is programmed.
    let mut before = (0.0, 0.0);
    kube::wait(
        "the echo Service's series in Prometheus",
        Duration::from_secs(20),
        None,
        || {
            let c = prom.value(&connections)?;
            let p = prom.value(&packets)?;
            before = (c.unwrap_or(0.0), p.unwrap_or(0.0));
            Ok(c.is_some() && p.is_some())
        },
    )
    .expect("series");

    const SENT: usize = 40;
    for i in 0..SENT {
        let client = if i % 2 == 0 { "client-n1" } else { "client-n2" };
        probe::echo(&lab, &probe::pod_ns(client), &format!("http://{ip}/"))
            .unwrap_or_else(|e| panic!("request {i} from {client}: {e}"));
    }
    assert_eq!(
        [1, 2].map(|n| lab.counter(n, "sock_lb").expect("stats")),
        sock_before,
        "with --socket-lb host-only no pod connection is socket-balanced"
    );
    // A couple of scrapes later Prometheus has every connection: exactly SENT more, summed
    // over the two client nodes; each carried at least SYN, ACK, request and FIN one way and
    // SYN-ACK, answer and FIN back.
    let mut after = before;
    let waited = kube::wait(
        "Prometheus to see the connections sent",
        Duration::from_secs(15),
        None,
        || {
            after = (
                prom.value(&connections)?.unwrap_or(0.0),
                prom.value(&packets)?.unwrap_or(0.0),
            );
            Ok(after.0 >= before.0 + SENT as f64)
        },
    );
    assert!(
        waited.is_ok(),
        "connections went from {} to {}, {SENT} sent",
        before.0,
        after.0
    );
    // One more scrape interval: nothing beyond what was sent shows up.
    std::thread::sleep(Duration::from_secs(3));
    let settled = prom.value(&connections).unwrap().unwrap_or(0.0);
    assert_eq!(
        settled - before.0,
        SENT as f64,
        "new connections counted once each"
    );
    let per_node = prom
        .query(&format!(
            "switchyard_service_connections_total{{service=\"default/echo:http\",frontend=\"{frontend}\"}}"
        ))
        .unwrap();
    assert_eq!(
        per_node.len(),
        3,
        "every agent exports the Service: {per_node:?}"
    );
    assert!(
        after.1 - before.1 >= (7 * SENT) as f64,
        "packets went from {} to {} for {SENT} connections",
        before.1,
        after.1
    );
    // The other families an operator alerts on are there, for every node.
    for family in [
        "switchyard_datapath_drops_total",
        "switchyard_sync_duration_seconds_count",
        "switchyard_table_entries",
        "switchyard_table_capacity",
    ] {
        let nodes = prom
            .query(&format!("count by (instance) ({family})"))
            .unwrap()
            .len();
        assert_eq!(nodes, 3, "{family} is scraped from every agent");
    }

    // promtool accepts each agent's exposition as it is served.
    for n in 1..=3 {
        let url = format!("http://{}:{METRICS_PORT}/metrics", topology::node_addr(n));
        let out = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("curl -sSf --max-time 5 {url} | promtool check metrics"),
            ])
            .output()
            .expect("curl | promtool");
        assert!(
            out.status.success(),
            "promtool check metrics on n{n}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Short connections one pod opens to the outside host, each sending a line and reading the
/// answer before closing, from 8 threads; prints `ok failed seconds`.
fn short_connections_script(total: usize, deadline_secs: u64) -> String {
    format!(
        r#"
import socket, threading, time
total, dst = {total}, ('{addr}', 8080)
start = time.monotonic()
deadline = start + {deadline_secs}
ok = [0]; failed = []; lock = threading.Lock(); nxt = [0]
def work():
    while True:
        with lock:
            i = nxt[0]; nxt[0] += 1
        if i >= total or time.monotonic() > deadline:
            return
        try:
            s = socket.create_connection(dst, timeout=5)
            s.sendall(b'n%d\n' % i)
            got = b''
            while not got.endswith(b'\n'):
                chunk = s.recv(200)
                if not chunk:
                    break
                got += chunk
            s.close()
            if (b'line=n%d' % i) not in got:
                raise Exception('answer %r' % got)
            with lock:
                ok[0] += 1
        except Exception as e:
            with lock:
                failed.append('%d: %s' % (i, e))
threads = [threading.Thread(target=work) for _ in range(8)]
for t in threads: t.start()
for t in threads: t.join()
print(ok[0], len(failed), round(time.monotonic() - start, 1), failed[:5])
"#,
        addr = topology::OUTSIDE_ADDR
    )
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn five_thousand_short_connections_to_one_outside_host_pass_through_512_masquerade_ports() {
    // 512 translated ports for 5,000 connections to one destination: each port is handed on
    // about ten times, so only closed flows giving their tuple up at once lets all through.
    const TOTAL: usize = 5000;
    let lab = cluster(LabOptions::new(3).agent_args(["--masquerade-ports", "61000-61511"]));
    let exhausted_before = lab.counter(1, "drop_snat_exhausted").expect("stats");
    let snat_before = lab.counter(1, "snat_new").expect("stats");
    let out = probe::python(
        &lab,
        &probe::pod_ns("client-n1"),
        &short_connections_script(TOTAL, 60),
    )
    .expect("python3");
    let fields: Vec<&str> = out.splitn(4, ' ').collect();
    let (ok, failed) = (fields[0], fields[1]);
    println!("{TOTAL} short connections: {out}");
    assert_eq!(
        (ok, failed),
        (TOTAL.to_string().as_str(), "0"),
        "every connection completed within a minute (ok failed seconds first-failures): {out}"
    );
    let snat = lab.counter(1, "snat_new").expect("stats") - snat_before;
    assert!(
        snat >= TOTAL as u64,
        "each connection got its own translation: {snat}"
    );
    assert_eq!(
        lab.counter(1, "drop_snat_exhausted").expect("stats"),
        exhausted_before,
        "no packet found the port range exhausted"
    );
    // The node's NAT table holds at most the range's worth of reply tuples for that host.
    let nat = cmd::run(&[
        &lab.switchyard(),
        "inspect",
        "nat",
        "--node",
        "n1",
        "--addr",
        topology::OUTSIDE_ADDR,
        "-o",
        "json",
    ])
    .expect("inspect nat");
    let entries: serde_json::Value = serde_json::from_str(&nat).expect("inspect nat -o json");
    let count = entries.as_array().map_or(0, Vec::len);
    assert!(
        count <= 2 * 512,
        "forward and reply entries for at most 512 ports: {count}"
    );
}
