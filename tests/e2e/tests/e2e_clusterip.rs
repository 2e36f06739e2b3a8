//! End-to-end: a one-node lab, `examples/echo.yaml` applied with kubectl, real packets from the
//! client pod to the `echo` Service's ClusterIP. Every test builds its own lab (the namespace
//! names are fixed, so they run one at a time: `cargo xtask test` passes `--test-threads=1`).
use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use switchyard_lab::{kube, lab, probe, Lab};

/// A lab with the echo example applied and every pod Ready; returns it and the ClusterIP.
fn echo_lab() -> (Lab, String) {
    let lab = probe::example_lab(1, "echo.yaml", &[("app=echo", 3), ("!app", 1)]).expect("lab up");
    let ip = lab.kubectl.cluster_ip("echo").expect("cluster IP");
    (lab, ip)
}

/// The pod that answered an HTTP request to `url` from the client pod, or the error.
fn ask(lab: &Lab, url: &str) -> Result<String, String> {
    let out = lab
        .exec_in_pod(
            "default",
            "client",
            &["curl", "-sS", "--max-time", "2", url],
        )
        .expect("curl");
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    let body = String::from_utf8_lossy(&out.stdout).to_string();
    body.split_whitespace()
        .next()
        .and_then(|w| w.strip_prefix("pod="))
        .map(str::to_string)
        .ok_or(body)
}

/// Python in the client pod: connect to `ip:port`, report the outcome.
fn connect_outcome(lab: &Lab, ip: &str, port: u16) -> (String, Duration) {
    let script = format!(
        "import socket\ns=socket.socket(); s.settimeout(5)\ntry:\n  s.connect(('{ip}', {port})); print('connected')\nexcept Exception as e:\n  print(type(e).__name__)"
    );
    let start = Instant::now();
    let out = lab
        .exec_in_pod("default", "client", &["python3", "-c", &script])
        .expect("python3");
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        start.elapsed(),
    )
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn clusterip_reaches_every_ready_backend_over_tcp_and_udp() {
    let (lab, ip) = echo_lab();
    let mut seen = BTreeSet::new();
    for _ in 0..60 {
        seen.insert(ask(&lab, &format!("http://{ip}/")).expect("HTTP through the ClusterIP"));
        if seen.len() == 3 {
            break;
        }
    }
    assert_eq!(
        seen,
        BTreeSet::from(["echo-1".into(), "echo-2".into(), "echo-3".into()]),
        "every backend answers"
    );

    let mut udp = BTreeSet::new();
    for _ in 0..60 {
        let out = lab
            .exec_in_pod(
                "default",
                "client",
                &[
                    "sh",
                    "-c",
                    &format!("echo ping | socat -T 2 - UDP:{ip}:5353"),
                ],
            )
            .expect("socat");
        let answer = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(answer.contains("line=ping"), "UDP answer: {answer:?}");
        udp.insert(
            answer
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string(),
        );
        if udp.len() == 3 {
            break;
        }
    }
    assert_eq!(udp.len(), 3, "every backend answers UDP: {udp:?}");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_removed_endpoint_gets_no_new_connections() {
    let (lab, ip) = echo_lab();
    // Relabel echo-3: it leaves the Service's selector but keeps running.
    lab.kubectl
        .run(&["label", "pod", "echo-3", "app=retired", "--overwrite"])
        .expect("relabel");
    kube::wait(
        "echo-3 to leave the EndpointSlice",
        Duration::from_secs(10),
        None,
        || {
            let slices = lab.kubectl.get_json(&[
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=echo",
            ])?;
            Ok(!slices.to_string().contains("\"echo-3\""))
        },
    )
    .expect("endpoint removed");
    // The agent writes the change within a second.
    std::thread::sleep(Duration::from_secs(1));
    for _ in 0..30 {
        let pod = ask(&lab, &format!("http://{ip}/")).expect("the remaining backends answer");
        assert_ne!(pod, "echo-3", "a removed endpoint got a new connection");
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_deleted_service_stops_answering() {
    let (lab, ip) = echo_lab();
    ask(&lab, &format!("http://{ip}/")).expect("answers before the deletion");
    lab.kubectl
        .run(&["delete", "service", "echo"])
        .expect("delete");
    kube::wait(
        "the ClusterIP to stop answering",
        Duration::from_secs(5),
        None,
        || Ok(ask(&lab, &format!("http://{ip}/")).is_err()),
    )
    .expect("stops answering");
    let start = Instant::now();
    assert!(ask(&lab, &format!("http://{ip}/")).is_err());
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "failing took {:?}",
        start.elapsed()
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_service_without_ready_endpoints_refuses_at_once() {
    let (lab, _) = echo_lab();
    let svc = "apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80, targetPort: 8080}]\n";
    let path = lab::lab_dir(&lab::workspace_root()).join("nobody.yaml");
    std::fs::write(&path, svc).expect("write manifest");
    lab.kubectl.apply_file(&path).expect("apply");
    let ip = lab.kubectl.cluster_ip("nobody").expect("cluster IP");
    // Pods' connections are refused by the socket program (sock_reject); with
    // `--socket-lb host-only` by the per-packet path (drop_no_backend).
    let refused = || {
        lab.counter(1, "drop_no_backend").expect("stats")
            + lab.counter(1, "sock_reject").expect("stats")
    };
    let before = refused();
    kube::wait(
        "the empty service to be programmed",
        Duration::from_secs(5),
        None,
        || Ok(connect_outcome(&lab, &ip, 80).0 == "ConnectionRefusedError"),
    )
    .expect("programmed");
    let (outcome, took) = connect_outcome(&lab, &ip, 80);
    assert_eq!(outcome, "ConnectionRefusedError");
    assert!(took < Duration::from_secs(1), "refusal took {took:?}");
    assert!(refused() > before, "the datapath rejected it");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn an_established_connection_survives_an_agent_restart() {
    let (lab, ip) = echo_lab();
    let script = format!(
        "import socket,sys\ns=socket.create_connection(('{ip}', 80), timeout=10)\ns.sendall(b'first\\n'); print(s.recv(200).decode().strip(), flush=True)\nsys.stdin.readline()\ns.sendall(b'second\\n'); print(s.recv(200).decode().strip(), flush=True)\n"
    );
    let mut client = probe::spawn_python("sy-pod-default-client", &script);
    let mut lines = BufReader::new(client.stdout.take().expect("stdout")).lines();
    let first = lines.next().expect("first answer").expect("read");
    assert!(first.contains("line=first"), "{first}");

    lab.restart_agent(1).expect("agent restart");

    client
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"go\n")
        .expect("signal the client");
    let second = lines
        .next()
        .expect("second answer after the restart")
        .expect("read");
    let _ = client.wait();
    assert!(second.contains("line=second"), "{second}");
    let pod = |l: &str| l.split_whitespace().next().unwrap_or_default().to_string();
    assert_eq!(
        pod(&first),
        pod(&second),
        "the same backend answered on the same connection"
    );
    // New connections work after the restart too.
    ask(&lab, &format!("http://{ip}/")).expect("new connection after the restart");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn service_rules_are_in_bpf_maps_not_in_iptables_or_nftables() {
    let (lab, ip) = echo_lab();
    // The client pod's connections are balanced by the socket program (`--socket-lb all`).
    let before = lab.counter(1, "sock_lb").expect("stats");
    for _ in 0..5 {
        ask(&lab, &format!("http://{ip}/")).expect("answer");
    }
    assert!(
        lab.counter(1, "sock_lb").expect("stats") >= before + 5,
        "the eBPF datapath balanced the connections"
    );
    let ipt =
        switchyard_lab::cmd::run(&["ip", "netns", "exec", "sy-n1", "iptables-save", "-t", "nat"])
            .expect("iptables-save");
    assert!(
        !ipt.lines().any(|l| l.starts_with("-A")),
        "no iptables NAT rules: {ipt}"
    );
    let nft = switchyard_lab::cmd::run(&["ip", "netns", "exec", "sy-n1", "nft", "list", "ruleset"])
        .expect("nft");
    assert!(
        !nft.contains("dnat") && !nft.contains("masquerade") && !nft.contains("snat"),
        "no nftables NAT rules: {nft}"
    );
    let services =
        switchyard_lab::cmd::run(&[&lab.switchyard(), "inspect", "services", "--node", "n1"])
            .expect("inspect");
    assert!(
        services.contains(&format!("{ip}:80/tcp")),
        "the ClusterIP is a BPF map entry: {services}"
    );
}
