//! End-to-end on three nodes: every client and every backend a real cluster has reaches
//! Services through the eBPF datapath — the node's own namespace as a client (socket load
//! balancing) and as a backend, the API server through the `kubernetes` Service, a pod reaching
//! itself (hairpin), the node reaching any pod, Services left to other proxies, and a standard
//! 1500-byte underlay with full-size TCP, fragmented UDP and ICMP errors through a ClusterIP.
use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchyard_lab::probe::{self, Echo};
use switchyard_lab::{cmd, kube, lab, topology, Lab};

/// A three-node lab with the multi-node example applied and every pod Ready.
fn cluster() -> Lab {
    probe::example_lab(3, "multinode.yaml", &[("app=echo", 3), ("!app", 2)]).expect("lab up")
}

fn vip(lab: &Lab, svc: &str) -> String {
    kube::wait(
        &format!("a ClusterIP for {svc}"),
        Duration::from_secs(10),
        None,
        || Ok(lab.kubectl.cluster_ip(svc).is_ok()),
    )
    .expect("ClusterIP");
    lab.kubectl.cluster_ip(svc).expect("ClusterIP")
}

/// Waits until `netns` gets an echo answer from `url` (the agents program within milliseconds).
fn reachable(lab: &Lab, netns: &str, url: &str) -> Echo {
    let mut last = String::new();
    for _ in 0..50 {
        match probe::echo(lab, netns, url) {
            Ok(e) => return e,
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{url} from {netns}: {last}\n{}", lab.logs_tail());
}

/// The pods that answered `n` requests to `url` from `netns`, with the peer each saw.
fn answers(lab: &Lab, netns: &str, url: &str, n: usize) -> BTreeSet<(String, String)> {
    reachable(lab, netns, url);
    (0..n)
        .map(|_| {
            let e = probe::echo(lab, netns, url).expect("answer");
            (e.pod, e.peer)
        })
        .collect()
}

/// What `getpeername()` shows in `netns` for a TCP connection to `ip:80`.
fn peer_name(lab: &Lab, netns: &str, ip: &str) -> String {
    let script = format!(
        "import socket\ns=socket.create_connection(('{ip}',80),timeout=3); print(s.getpeername())\n"
    );
    let out = probe::python(lab, netns, &script).expect("python");
    out.lines().next().unwrap_or_default().to_string()
}

/// `(source, answer)` of an echo reply to an unconnected UDP datagram sent from `netns` to
/// `udp:5353`, as Python prints it.
fn udp_reply(lab: &Lab, netns: &str, udp: &str) -> String {
    let script = format!(
        "import socket\n\
         u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(3)\n\
         u.sendto(b'ping\\n',('{udp}',5353)); data,src=u.recvfrom(2000); print(src, data.decode().strip())\n"
    );
    probe::python(lab, netns, &script).expect("python")
}

/// Echo servers started in node namespaces (as a `hostNetwork` workload would run); stopped on
/// drop.
struct HostEchoes(Vec<Child>);

impl HostEchoes {
    fn start(lab: &Lab, nodes: &[usize], port: u16) -> HostEchoes {
        let exe = lab.opts.bin_dir.join("switchyard-labnode");
        let children = nodes
            .iter()
            .map(|n| {
                Command::new("nsenter")
                    .arg(format!("--net=/run/netns/{}", topology::node_ns(*n)))
                    .arg("--")
                    .arg(&exe)
                    .args(["echo", "--port", &port.to_string()])
                    .env("HOSTNAME", format!("host-n{n}"))
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("echo in the node namespace")
            })
            .collect();
        HostEchoes(children)
    }
}

impl Drop for HostEchoes {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn the_node_namespace_reaches_every_pod_and_is_balanced_over_a_clusterip_without_nat() {
    let lab = cluster();
    // Any pod IP, on this node and on the others, from the node's own namespace.
    for pod in ["echo-n1", "echo-n2", "echo-n3"] {
        let ip = probe::pod_ip(&lab, pod).expect("podIP");
        let e = reachable(&lab, "sy-n1", &format!("http://{ip}:8080/"));
        assert_eq!(e.pod, pod);
        assert_eq!(e.peer, "10.244.1.1", "the node talks from its cbr0 address");
    }
    // A ClusterIP from the node's namespace: every backend, and each sees the node itself as the
    // client (the socket was pointed at the backend; no packet was translated).
    let ip = vip(&lab, "echo");
    let before = lab.counter(1, "sock_lb").expect("stats");
    let seen = answers(&lab, "sy-n1", &format!("http://{ip}/"), 40);
    let pods: BTreeSet<String> = seen.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(pods.len(), 3, "every backend answered the node: {seen:?}");
    assert!(
        seen.iter().all(|(_, peer)| peer == "10.244.1.1"),
        "{seen:?}"
    );
    assert!(lab.counter(1, "sock_lb").expect("stats") >= before + 40);
    // The application still sees the frontend: getpeername, and UDP replies' source.
    assert_eq!(peer_name(&lab, "sy-n1", &ip), format!("('{ip}', 80)"));
    let udp = vip(&lab, "echo-np");
    let out = udp_reply(&lab, "sy-n2", &udp);
    assert!(
        out.starts_with(&format!("('{udp}', 5353)")) && out.contains("line=ping"),
        "an unconnected UDP socket sees the reply come from the frontend: {out}"
    );
    // A Service without endpoints refuses the node's connect() at once.
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: nobody}\nspec:\n  selector: {app: nobody}\n  ports: [{port: 80}]\n",
    )
    .expect("apply");
    let empty = vip(&lab, "nobody");
    std::thread::sleep(Duration::from_millis(300));
    let script = format!(
        "import socket\ntry:\n  socket.create_connection(('{empty}',80),timeout=3); print('connected')\nexcept Exception as e:\n  print(type(e).__name__)\n"
    );
    assert_eq!(
        probe::python(&lab, "sy-n3", &script).expect("python"),
        "ConnectionRefusedError"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_pods_tcp_connection_to_a_clusterip_goes_straight_to_a_backend() {
    let lab = cluster();
    let client = probe::pod_ns("client-n1");
    let client_ip = probe::pod_ip(&lab, "client-n1").expect("podIP");
    let ip = vip(&lab, "echo");
    let pods = cmd::run(&[
        &lab.switchyard(),
        "inspect",
        "pods",
        "--node",
        "n1",
        "-o",
        "json",
    ])
    .expect("inspect pods");
    let rows: serde_json::Value = serde_json::from_str(&pods).expect("JSON");
    assert!(
        rows.as_array()
            .expect("rows")
            .iter()
            .any(|r| r["ip"] == client_ip.as_str() && r["socket_lb"] == true),
        "inspect pods shows the client pod socket-balanced: {pods}"
    );
    // Socket load balancing (the default, `--socket-lb all`): connect() was pointed at a
    // backend on any node, each backend sees the pod's own address, and no packet of the
    // connection was translated.
    let sock_before = lab.counter(1, "sock_lb").expect("stats");
    let lb_before = lab.counter(1, "lb_new").expect("stats");
    let seen = answers(&lab, &client, &format!("http://{ip}/"), 40);
    let pods: BTreeSet<String> = seen.iter().map(|(p, _)| p.clone()).collect();
    assert_eq!(pods.len(), 3, "every backend answered the pod: {seen:?}");
    assert!(
        seen.iter().all(|(_, peer)| *peer == client_ip),
        "backends see the pod's address {client_ip}: {seen:?}"
    );
    assert!(lab.counter(1, "sock_lb").expect("stats") >= sock_before + 40);
    assert_eq!(
        lab.counter(1, "lb_new").expect("stats"),
        lb_before,
        "no connection took the per-packet path"
    );
    // The application still sees the frontend it asked for.
    assert_eq!(peer_name(&lab, &client, &ip), format!("('{ip}', 80)"));
    // A pod's UDP stays on the per-packet path (a removed backend re-balances the next
    // datagram), and its answer still comes from the frontend.
    let udp = vip(&lab, "echo-np");
    let lb_before = lab.counter(1, "lb_new").expect("stats");
    let out = udp_reply(&lab, &client, &udp);
    assert!(
        out.starts_with(&format!("('{udp}', 5353)")) && out.contains("line=ping"),
        "{out}"
    );
    assert!(lab.counter(1, "lb_new").expect("stats") > lb_before);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_pod_balanced_to_itself_through_its_own_service_gets_an_answer() {
    let lab = cluster();
    lab.kubectl
        .run(&["label", "pod", "echo-n1", "only=n1"])
        .expect("label");
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: self}\nspec:\n  selector: {only: n1}\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .expect("apply");
    let ip = vip(&lab, "self");
    let seen = answers(&lab, &probe::pod_ns("echo-n1"), &format!("http://{ip}/"), 5);
    assert_eq!(
        seen,
        BTreeSet::from([("echo-n1".to_string(), "169.254.42.1".to_string())]),
        "the pod answers itself, seeing the service loopback address"
    );
    assert!(lab.counter(1, "hairpin").expect("stats") >= 5);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn endpoints_on_node_addresses_and_the_api_server_answer_through_clusterips() {
    let lab = cluster();
    let _hosts = HostEchoes::start(&lab, &[1, 2], 9090);
    // A selector-less Service with a hand-made EndpointSlice naming two nodes' addresses.
    probe::apply(
        &lab,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: hosts}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 9090}}]\n---\n\
             apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: hosts-1\n  labels: {{kubernetes.io/service-name: hosts}}\naddressType: IPv4\n\
             ports: [{{name: http, port: 9090, protocol: TCP}}]\nendpoints:\n\
             - {{addresses: [\"{}\"], nodeName: n1, conditions: {{ready: true}}}}\n\
             - {{addresses: [\"{}\"], nodeName: n2, conditions: {{ready: true}}}}\n",
            topology::node_addr(1),
            topology::node_addr(2)
        ),
    )
    .expect("apply");
    let ip = vip(&lab, "hosts");
    let client = probe::pod_ip(&lab, "client-n1").expect("podIP");
    for (netns, node) in [
        (probe::pod_ns("client-n1"), 1),
        (probe::pod_ns("client-n2"), 2),
    ] {
        let seen = answers(&lab, &netns, &format!("http://{ip}/"), 30);
        let pods: BTreeSet<String> = seen.iter().map(|(p, _)| p.clone()).collect();
        assert_eq!(
            pods,
            BTreeSet::from(["host-n1".to_string(), "host-n2".to_string()]),
            "both node-address endpoints answered a pod on n{node}: {seen:?}"
        );
        for (host, peer) in &seen {
            if host == &format!("host-n{node}") {
                if node == 1 {
                    assert_eq!(peer, &client, "the pod's own node sees the pod");
                }
            } else {
                assert_eq!(
                    peer,
                    &topology::node_addr(node),
                    "another node sees the client's node (masquerade)"
                );
            }
        }
    }
    // The API server through the `kubernetes` Service, from a pod and from a node.
    let ca = lab::lab_dir(&lab.opts.root).join("cp-data/pki/ca.crt");
    for netns in [probe::pod_ns("client-n2"), "sy-n3".to_string()] {
        let out = lab
            .exec_in(
                &netns,
                &[
                    "curl",
                    "-sS",
                    "--max-time",
                    "3",
                    "--cacert",
                    &ca.to_string_lossy(),
                    "https://10.96.0.1/healthz",
                ],
            )
            .expect("curl");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "ok",
            "the API server answered {netns} through 10.96.0.1, its certificate valid for it: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn services_of_other_proxies_and_external_names_get_no_frontend() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: theirs\n  labels: {service.kubernetes.io/service-proxy-name: other-proxy}\nspec:\n  selector: {app: echo}\n  ports: [{port: 80, targetPort: http}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: outside}\nspec:\n  type: ExternalName\n  externalName: example.invalid\n",
    )
    .expect("apply");
    let theirs = vip(&lab, "theirs");
    let ours = vip(&lab, "echo");
    reachable(
        &lab,
        &probe::pod_ns("client-n1"),
        &format!("http://{ours}/"),
    );
    let programmed =
        cmd::run(&[&lab.switchyard(), "inspect", "services", "--node", "n1"]).expect("inspect");
    assert!(
        programmed.contains(&format!("{ours}:80/tcp")),
        "{programmed}"
    );
    assert!(
        !programmed.contains(&format!("{theirs}:")),
        "a Service of another proxy is left alone: {programmed}"
    );
    assert!(
        probe::curl(
            &lab,
            &probe::pod_ns("client-n1"),
            &format!("http://{theirs}/")
        )
        .is_err(),
        "nothing answers for the other proxy's Service"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_1500_byte_underlay_carries_full_size_tcp_fragmented_udp_and_icmp_errors_through_a_clusterip() {
    let lab = cluster();
    // echo-n2 is the only backend, on another node than the client.
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: far}\nspec:\n  selector: {local: \"yes\"}\n  ports:\n  - {name: bulk, port: 5201, targetPort: 5201}\n  - {name: udp, port: 5353, targetPort: udp, protocol: UDP}\n  - {name: closed, port: 7777, targetPort: 7777, protocol: UDP}\n",
    )
    .expect("apply");
    let ip = vip(&lab, "far");
    let mut iperf = Command::new("ip")
        .args([
            "netns",
            "exec",
            &probe::pod_ns("echo-n2"),
            "iperf3",
            "-s",
            "-1",
            "-p",
            "5201",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
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
    let before = (frag("sy-n1"), frag("sy-n2"));
    let out = lab
        .exec_in(
            &probe::pod_ns("client-n1"),
            &["iperf3", "-c", &ip, "-p", "5201", "-t", "2", "-J"],
        )
        .expect("iperf3");
    let _ = iperf.wait();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("iperf3 JSON");
    let bytes = report
        .pointer("/end/sum_received/bytes")
        .and_then(serde_json::Value::as_u64)
        .unwrap_or(0);
    assert!(
        bytes > 1_000_000,
        "full-size TCP through the ClusterIP: {bytes} bytes"
    );
    assert_eq!(
        (frag("sy-n1"), frag("sy-n2")),
        before,
        "no node fragmented anything: pods' full-size packets fit the underlay with VXLAN"
    );
    // A 3,000-byte UDP request and its larger reply: both fragmented by the pods themselves,
    // every fragment translated like the first.
    let translated = lab.counter(1, "frag_translated").expect("stats");
    let script = format!(
        "import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(3)\n\
         u.connect(('{ip}',5353)); u.send(b'x'*3000+b'\\n'); data=u.recv(65536)\n\
         print(len(data), data[:12].decode())\n"
    );
    let out = probe::python(&lab, &probe::pod_ns("client-n1"), &script).expect("3,000-byte UDP");
    let (len, head) = out.split_once(' ').expect("python output");
    assert!(len.parse::<usize>().unwrap_or(0) > 3000, "{out}");
    assert_eq!(head.trim(), "pod=echo-n2", "{out}");
    assert!(
        lab.counter(1, "frag_translated").expect("stats") >= translated + 2,
        "later fragments were translated on the client's node, both ways"
    );
    // ICMP port unreachable from the backend comes back as an error about the frontend.
    let script = format!(
        "import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(3)\n\
         u.connect(('{ip}',7777)); u.send(b'hello')\n\
         try:\n  u.recv(100); print('answered')\nexcept Exception as e:\n  print(type(e).__name__)\n"
    );
    assert_eq!(
        probe::python(&lab, &probe::pod_ns("client-n1"), &script).expect("python"),
        "ConnectionRefusedError",
        "the client's socket got the backend's port unreachable"
    );
    assert!(lab.counter(1, "icmp_translated").expect("stats") >= 1);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_pod_lists_services_through_the_kubernetes_service_with_in_cluster_settings() {
    let lab = cluster();
    // The pod runs from the host filesystem, so what it writes lands in the lab directory.
    let out = lab::lab_dir(&lab.opts.root).join("incluster.txt");
    let _ = std::fs::remove_file(&out);
    probe::apply(
        &lab,
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: incluster}}\nspec:\n  nodeName: n2\n  restartPolicy: Never\n  containers:\n  - {{name: kubectl, image: kubectl, command: [sh, -c, 'env | grep ^KUBERNETES_SERVICE > {0}.tmp; kubectl get svc -A -o wide >> {0}.tmp 2>&1; mv {0}.tmp {0}']}}\n",
            out.display()
        ),
    )
    .expect("apply");
    kube::wait(
        "the in-cluster kubectl",
        Duration::from_secs(30),
        None,
        || Ok(out.exists()),
    )
    .expect("kubectl ran");
    let text = std::fs::read_to_string(&out).expect("output");
    let _ = std::fs::remove_file(&out);
    assert!(text.contains("KUBERNETES_SERVICE_HOST=10.96.0.1"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("default")
            && l.contains("kubernetes")
            && l.contains("10.96.0.1")),
        "kubectl with in-cluster config listed the Services through 10.96.0.1:\n{text}"
    );
    assert!(text.contains("echo-np"), "{text}");
}
