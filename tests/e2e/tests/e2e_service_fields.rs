//! End-to-end on three nodes: every Service field kube-proxy honours, with real traffic —
//! session affinity, both traffic policies, external IPs and load balancer addresses (with
//! source ranges and health check node ports), graceful drain and rolling replacement, UDP after
//! its backend went away, topology hints, Maglev, a thousand endpoints, and what the datapath
//! cannot serve reported as an Event.
use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use switchyard_lab::probe::{self, Echo};
use switchyard_lab::{kube, topology, Lab};

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

/// The load balancer address the pool gave `svc`.
fn ingress_ip(lab: &Lab, svc: &str) -> String {
    let mut ip = String::new();
    kube::wait(
        &format!("a load balancer address for {svc}"),
        Duration::from_secs(10),
        None,
        || {
            ip = lab
                .kubectl
                .run(&[
                    "get",
                    "svc",
                    svc,
                    "-o",
                    "jsonpath={.status.loadBalancer.ingress[0].ip}",
                ])
                .unwrap_or_default()
                .trim()
                .to_string();
            Ok(!ip.is_empty())
        },
    )
    .expect("ingress IP");
    ip
}

/// Waits until `netns` gets an echo answer from `url`.
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

/// The pods that answered `n` requests to `url` from `netns`.
fn pods(lab: &Lab, netns: &str, url: &str, n: usize) -> BTreeSet<String> {
    reachable(lab, netns, url);
    (0..n)
        .map(|_| probe::echo(lab, netns, url).expect("answer").pod)
        .collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

/// Routes `net` from the external host through node `n` (as a router or ECMP would).
fn route_via(lab: &Lab, net: &str, n: usize) {
    lab.exec_in(
        topology::EXT,
        &[
            "ip",
            "route",
            "replace",
            net,
            "via",
            &topology::node_addr(n),
        ],
    )
    .expect("ip route");
}

fn ext(n: usize) -> String {
    topology::node_addr(n)
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn client_ip_affinity_keeps_a_client_on_one_backend_until_the_timeout_and_a_removed_one_lets_go() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: sticky}\nspec:\n  selector: {app: echo}\n  sessionAffinity: ClientIP\n  sessionAffinityConfig: {clientIP: {timeoutSeconds: 2}}\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .expect("apply");
    let url = format!("http://{}/", vip(&lab, "sticky"));
    let client = probe::pod_ns("client-n1");
    let first = pods(&lab, &client, &url, 20);
    assert_eq!(first.len(), 1, "20 connections, one backend: {first:?}");
    let from_node = pods(&lab, "sy-n2", &url, 10);
    assert_eq!(
        from_node.len(),
        1,
        "the node's own sockets stick too: {from_node:?}"
    );
    // After the timeout without new connections, a new choice is made (and sticks again).
    let mut chosen = BTreeSet::new();
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(2_300));
        chosen.extend(pods(&lab, &client, &url, 3));
    }
    assert!(chosen.len() > 1, "choices after each timeout: {chosen:?}");
    // The backend the client sticks to goes away: the client moves on, and sticks again.
    let current = pods(&lab, &client, &url, 1);
    let gone = current.iter().next().unwrap().clone();
    lab.kubectl
        .run(&["delete", "pod", &gone, "--grace-period=0", "--force"])
        .expect("delete");
    std::thread::sleep(Duration::from_millis(500));
    let after = pods(&lab, &client, &url, 20);
    assert_eq!(after.len(), 1, "{after:?}");
    assert!(!after.contains(&gone), "released from the removed backend");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn internal_traffic_policy_local_serves_this_nodes_endpoints_and_refuses_without_one() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: near}\nspec:\n  selector: {app: echo}\n  internalTrafficPolicy: Local\n  ports: [{port: 80, targetPort: http}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: only-n2}\nspec:\n  selector: {local: \"yes\"}\n  internalTrafficPolicy: Local\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .expect("apply");
    let near = format!("http://{}/", vip(&lab, "near"));
    assert_eq!(
        pods(&lab, &probe::pod_ns("client-n1"), &near, 15),
        set(&["echo-n1"])
    );
    assert_eq!(
        pods(&lab, &probe::pod_ns("client-n2"), &near, 15),
        set(&["echo-n2"])
    );
    let only = vip(&lab, "only-n2");
    assert_eq!(
        pods(
            &lab,
            &probe::pod_ns("client-n2"),
            &format!("http://{only}/"),
            5
        ),
        set(&["echo-n2"])
    );
    let script = format!(
        "import socket\ntry:\n  socket.create_connection(('{only}',80),timeout=3); print('connected')\nexcept Exception as e:\n  print(type(e).__name__)\n"
    );
    assert_eq!(
        probe::python(&lab, &probe::pod_ns("client-n1"), &script).expect("python"),
        "ConnectionRefusedError",
        "no local endpoint on n1: refused, not sent to n2"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn external_ips_and_load_balancer_addresses_follow_both_traffic_policies_and_source_ranges() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: lb}\nspec:\n  type: LoadBalancer\n  allocateLoadBalancerNodePorts: false\n  selector: {app: echo}\n  ports: [{port: 80, targetPort: http}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: lb-local}\nspec:\n  type: LoadBalancer\n  externalTrafficPolicy: Local\n  selector: {app: echo}\n  ports: [{port: 80, targetPort: http}]\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {name: eip}\nspec:\n  selector: {local: \"yes\"}\n  externalIPs: [198.18.200.10]\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .expect("apply");
    let lb = ingress_ip(&lab, "lb");
    let spec = lab.kubectl.get_json(&["svc", "lb"]).expect("svc");
    assert!(
        spec.pointer("/spec/ports/0/nodePort").is_none(),
        "allocateLoadBalancerNodePorts: false means no node port: {spec}"
    );
    // Cluster policy through n1: every backend; remote ones see n1's router address.
    route_via(&lab, "198.18.100.0/24", 1);
    let mut seen = BTreeMap::new();
    reachable(&lab, topology::EXT, &format!("http://{lb}/"));
    for _ in 0..40 {
        let e = probe::echo(&lab, topology::EXT, &format!("http://{lb}/")).expect("answer");
        seen.insert(e.pod, e.peer);
    }
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(
        seen["echo-n1"],
        topology::EXT_ADDR,
        "local backend sees the client"
    );
    assert_eq!(
        seen["echo-n2"], "10.244.1.1",
        "remote backends see n1's router address"
    );
    // An external IP routed to n3, to a backend on n2.
    route_via(&lab, "198.18.200.0/24", 3);
    assert_eq!(
        reachable(&lab, topology::EXT, "http://198.18.200.10/"),
        Echo {
            pod: "echo-n2".into(),
            peer: "10.244.3.1".into()
        }
    );
    // Local policy: only the node the traffic reaches serves it, keeping the client address;
    // pods reaching the same address get every endpoint.
    let local = ingress_ip(&lab, "lb-local");
    for n in 1..=3 {
        route_via(&lab, &format!("{local}/32"), n);
        let e = reachable(&lab, topology::EXT, &format!("http://{local}/"));
        assert_eq!(
            e,
            Echo {
                pod: format!("echo-n{n}"),
                peer: topology::EXT_ADDR.into()
            },
            "via n{n}"
        );
    }
    assert_eq!(
        pods(
            &lab,
            &probe::pod_ns("client-n1"),
            &format!("http://{local}/"),
            40
        )
        .len(),
        3,
        "pods are sent to every endpoint"
    );
    // The health check node port tells an outside load balancer which nodes to use.
    lab.kubectl
        .run(&["delete", "pod", "echo-n3", "--grace-period=0", "--force"])
        .expect("delete");
    let hc = lab
        .kubectl
        .run(&[
            "get",
            "svc",
            "lb-local",
            "-o",
            "jsonpath={.spec.healthCheckNodePort}",
        ])
        .expect("healthCheckNodePort");
    let check = |n: usize| {
        let out = lab
            .exec_in(
                topology::EXT,
                &[
                    "curl",
                    "-s",
                    "--max-time",
                    "2",
                    "-w",
                    " %{http_code}",
                    &format!("http://{}:{}/healthz", ext(n), hc.trim()),
                ],
            )
            .expect("curl");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let mut last = String::new();
    for _ in 0..30 {
        last = check(3);
        if last.ends_with(" 503") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        last.ends_with(" 503") && last.contains("\"localEndpoints\": 0"),
        "n3: {last}"
    );
    let ok = check(2);
    assert!(ok.ends_with(" 200"), "n2: {ok}");
    let body: Value = serde_json::from_str(ok.rsplit_once(' ').unwrap().0).expect("JSON");
    assert_eq!(body["service"]["name"], "lb-local");
    assert_eq!(body["localEndpoints"], 1);
    // Source ranges: outside clients not listed are dropped, listed ones get through.
    lab.kubectl
        .run(&[
            "patch",
            "svc",
            "lb",
            "-p",
            r#"{"spec":{"loadBalancerSourceRanges":["10.0.0.0/8"]}}"#,
        ])
        .expect("patch");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        probe::curl(&lab, topology::EXT, &format!("http://{lb}/")).is_err(),
        "a client outside the ranges gets no answer"
    );
    assert!(lab.counter(1, "drop_source_range").expect("stats") > 0);
    lab.kubectl
        .run(&[
            "patch",
            "svc",
            "lb",
            "-p",
            r#"{"spec":{"loadBalancerSourceRanges":["198.18.0.0/24"]}}"#,
        ])
        .expect("patch");
    reachable(&lab, topology::EXT, &format!("http://{lb}/"));
}

/// Three `web` pods, one per node, whose echo servers drain on SIGTERM.
fn web_pods(lab: &Lab, suffix: &str) {
    let mut yaml = String::new();
    for n in 1..=3 {
        yaml.push_str(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: web-n{n}{suffix}, labels: {{app: web}}}}\nspec:\n  nodeName: n{n}\n  terminationGracePeriodSeconds: 30\n  containers:\n  - {{name: echo, image: x, command: [switchyard-labnode, echo, --port, \"8080\", --drain-seconds, \"2\"], readinessProbe: {{tcpSocket: {{port: 8080}}, periodSeconds: 1}}}}\n---\n"
        ));
    }
    probe::apply(lab, &yaml).expect("apply");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_long_lived_connection_survives_its_backends_graceful_deletion_and_a_rollout_loses_nothing() {
    let lab = cluster();
    web_pods(&lab, "");
    lab.kubectl
        .wait_pods_ready("app=web", 3, Duration::from_secs(60))
        .expect("web pods");
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  selector: {app: web}\n  ports: [{port: 80, targetPort: 8080}]\n",
    )
    .expect("apply");
    let ip = vip(&lab, "web");
    reachable(&lab, &probe::pod_ns("client-n1"), &format!("http://{ip}/"));
    // A line-mode connection held open while its backend is deleted with a grace period.
    let script = format!(
        "import socket,sys,time,subprocess\n\
         s=socket.create_connection(('{ip}',80),timeout=3); f=s.makefile('rw')\n\
         f.write('hello\\n'); f.flush(); first=f.readline().split()[0]; print(first, flush=True)\n\
         sys.stdin.readline()\n\
         ok=0\n\
         for i in range(30):\n  f.write('line%d\\n' % i); f.flush(); r=f.readline()\n  ok += r.startswith(first+' ')\n  time.sleep(0.1)\n\
         print(ok, flush=True)\n"
    );
    let mut held = probe::spawn_python(&probe::pod_ns("client-n1"), &script);
    let mut out = std::io::BufReader::new(held.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("first answer");
    let pod = line.trim().strip_prefix("pod=").expect("pod=").to_string();
    lab.kubectl
        .run(&["delete", "pod", &pod, "--wait=false"])
        .expect("delete");
    std::thread::sleep(Duration::from_millis(500));
    // New connections avoid the terminating pod; the open one keeps flowing to it.
    let fresh = pods(
        &lab,
        &probe::pod_ns("client-n2"),
        &format!("http://{ip}/"),
        15,
    );
    assert!(
        !fresh.contains(&pod),
        "new connections avoid {pod}: {fresh:?}"
    );
    std::io::Write::write_all(held.stdin.as_mut().unwrap(), b"go\n").expect("stdin");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("count");
    assert_eq!(
        line.trim(),
        "30",
        "every line of the held connection answered by {pod}"
    );
    let _ = held.wait();
    // A rolling replacement of every backend under a request loop: nothing fails.
    let script = format!(
        "import socket,time\nfail=0\nend=time.time()+22\nn=0\n\
         while time.time()<end:\n  n+=1\n  try:\n    s=socket.create_connection(('{ip}',80),timeout=2); s.sendall(b'GET / HTTP/1.0\\r\\n\\r\\n'); d=s.recv(200); s.close()\n    fail += not d.startswith(b'HTTP/1')\n  except Exception:\n    fail+=1\n  time.sleep(0.02)\n\
         print(n, fail)\n"
    );
    let looping = probe::spawn_python(&probe::pod_ns("client-n2"), &script);
    std::thread::sleep(Duration::from_secs(1));
    web_pods(&lab, "-b");
    let start = Instant::now();
    kube::wait(
        "the replacement pods",
        Duration::from_secs(60),
        None,
        || {
            Ok(lab
                .kubectl
                .run(&["get", "pods", "-l", "app=web", "-o", "name"])
                .unwrap_or_default()
                .lines()
                .filter(|l| l.ends_with("-b"))
                .count()
                == 3)
        },
    )
    .expect("created");
    lab.kubectl
        .wait_pods_ready("app=web", 5, Duration::from_secs(60))
        .expect("replacements Ready");
    for n in 1..=3 {
        let old = format!("web-n{n}");
        if old != pod {
            lab.kubectl
                .run(&["delete", "pod", &old, "--wait=false"])
                .expect("delete");
        }
        std::thread::sleep(Duration::from_secs(3));
    }
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "the rollout ran inside the loop"
    );
    let out = looping.wait_with_output().expect("loop");
    let text = String::from_utf8_lossy(&out.stdout);
    let (n, fail) = text.trim().split_once(' ').expect("counts");
    assert!(n.parse::<u32>().unwrap_or(0) > 200, "requests: {text}");
    assert_eq!(fail, "0", "no request failed during the rollout ({n} sent)");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn udp_clients_move_to_a_live_backend_when_theirs_goes_away() {
    let lab = cluster();
    let ip = vip(&lab, "echo-np");
    let script = format!(
        "import socket,sys,time\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(0.3)\n\
         def ask():\n  try:\n    u.sendto(b'ping',('{ip}',5353)); return u.recvfrom(500)[0].split()[0].decode()\n  except Exception:\n    return '-'\n\
         print(ask(), flush=True)\nsys.stdin.readline()\n\
         print(' '.join(ask() for _ in range(20)), flush=True)\n"
    );
    let mut client = probe::spawn_python(&probe::pod_ns("client-n1"), &script);
    let mut out = std::io::BufReader::new(client.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).expect("first");
    let pod = line.trim().strip_prefix("pod=").expect("pod=").to_string();
    lab.kubectl
        .run(&["delete", "pod", &pod, "--grace-period=0", "--force"])
        .expect("delete");
    kube::wait("the pod to be gone", Duration::from_secs(20), None, || {
        Ok(!lab.kubectl.exists(&["pod", &pod]).unwrap_or(true))
    })
    .expect("deleted");
    std::thread::sleep(Duration::from_millis(300));
    std::io::Write::write_all(client.stdin.as_mut().unwrap(), b"go\n").expect("stdin");
    line.clear();
    std::io::BufRead::read_line(&mut out, &mut line).expect("answers");
    let _ = client.wait();
    let answers: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(answers.len(), 20);
    assert!(
        answers
            .iter()
            .all(|a| a.starts_with("pod=") && *a != format!("pod={pod}")),
        "every datagram after the removal was answered by a live backend: {answers:?}"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn topology_hints_keep_traffic_in_the_clients_zone_and_fall_back_to_all() {
    let lab = cluster();
    for (n, zone) in [(1, "zone-a"), (2, "zone-a"), (3, "zone-b")] {
        lab.kubectl
            .run(&[
                "label",
                "node",
                &format!("n{n}"),
                &format!("topology.kubernetes.io/zone={zone}"),
            ])
            .expect("label");
    }
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: zoned}\nspec:\n  selector: {app: echo}\n  trafficDistribution: PreferClose\n  ports: [{port: 80, targetPort: http}]\n",
    )
    .expect("apply");
    let url = format!("http://{}/", vip(&lab, "zoned"));
    kube::wait("zone hints", Duration::from_secs(10), None, || {
        Ok(lab
            .kubectl
            .run(&[
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=zoned",
                "-o",
                "json",
            ])
            .unwrap_or_default()
            .contains("forZones"))
    })
    .expect("hints");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        pods(&lab, &probe::pod_ns("client-n1"), &url, 30),
        set(&["echo-n1", "echo-n2"]),
        "zone-a stays in zone-a"
    );
    assert_eq!(
        pods(&lab, "sy-n3", &url, 15),
        set(&["echo-n3"]),
        "zone-b stays in zone-b"
    );
    lab.kubectl
        .run(&["delete", "pod", "echo-n3", "--grace-period=0", "--force"])
        .expect("delete");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        pods(&lab, "sy-n3", &url, 30),
        set(&["echo-n1", "echo-n2"]),
        "no endpoint left in zone-b: all of them"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn maglev_services_pick_the_same_backend_for_a_flow_through_every_node() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: mag\n  annotations: {service.switchyard.io/lb-algorithm: maglev}\nspec:\n  type: LoadBalancer\n  selector: {app: echo}\n  ports: [{name: udp, port: 5353, targetPort: udp, protocol: UDP}]\n",
    )
    .expect("apply");
    let lb = ingress_ip(&lab, "mag");
    let ask = |port: u16| {
        let script = format!(
            "import socket\nu=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.settimeout(1)\nu.bind(('',{port}))\n\
             for i in range(10):\n  try:\n    u.sendto(b'x',('{lb}',5353)); print(u.recvfrom(500)[0].split()[0].decode()); break\n  except Exception:\n    pass\n"
        );
        probe::python(&lab, topology::EXT, &script).expect("python")
    };
    let mut owners = BTreeSet::new();
    for port in 41000..41012 {
        let mut via = Vec::new();
        for n in 1..=3 {
            route_via(&lab, &format!("{lb}/32"), n);
            via.push(ask(port));
        }
        assert!(via[0].starts_with("pod="), "{via:?}");
        assert!(
            via.iter().all(|p| p == &via[0]),
            "client port {port}: every node chose the same backend: {via:?}"
        );
        owners.insert(via[0].clone());
    }
    assert!(owners.len() > 1, "flows spread over backends: {owners:?}");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn a_service_with_a_thousand_endpoints_in_ten_slices_balances_over_all_of_them() {
    let lab = cluster();
    let pod = probe::pod_ns("echo-n2");
    // A hundred more addresses on the pod, and a server on ten ports that says which
    // address and port it was reached at.
    for i in 0..100 {
        lab.exec_in(
            &pod,
            &[
                "ip",
                "addr",
                "add",
                &format!("10.244.2.{}/32", 100 + i),
                "dev",
                "eth0",
            ],
        )
        .expect("ip addr");
    }
    // They are the pod's own, as a CNI giving a pod several addresses would record them: the
    // datapath accepts a pod's packets only from addresses its LOCAL_PODS entries give it.
    let mut owned: aya::maps::HashMap<aya::maps::MapData, u32, switchyard_abi::LocalPod> =
        switchyard::datapath::tables::open_pinned(
            &switchyard::paths::pin_dir("n2"),
            switchyard_abi::names::LOCAL_PODS,
        )
        .expect("LOCAL_PODS of n2");
    let own: std::net::Ipv4Addr = probe::pod_ip(&lab, "echo-n2")
        .expect("podIP")
        .parse()
        .expect("an IPv4 address");
    let entry = owned
        .get(&switchyard_abi::addr_be(own), 0)
        .expect("echo-n2's LOCAL_PODS entry");
    for i in 0..100u8 {
        let extra = std::net::Ipv4Addr::new(10, 244, 2, 100 + i);
        owned
            .insert(switchyard_abi::addr_be(extra), entry, 0)
            .expect("LOCAL_PODS entry");
    }
    let server = "import socket,selectors\nsel=selectors.DefaultSelector()\n\
                  for p in range(20000,20010):\n  s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1); s.bind(('',p)); s.listen(512); s.setblocking(False); sel.register(s,selectors.EVENT_READ)\n\
                  while True:\n  for k,_ in sel.select():\n    c,_=k.fileobj.accept(); a=c.getsockname(); c.sendall(('%s:%d\\n' % a).encode()); c.close()\n";
    let mut srv = Command::new("ip")
        .args(["netns", "exec", &pod, "python3", "-c", server])
        .spawn()
        .expect("server");
    let mut yaml = String::from(
        "apiVersion: v1\nkind: Service\nmetadata: {name: big}\nspec:\n  ports: [{name: p, port: 80}]\n",
    );
    for j in 0..10 {
        yaml.push_str(&format!(
            "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: big-{j}\n  labels: {{kubernetes.io/service-name: big}}\naddressType: IPv4\nports: [{{name: p, port: {}, protocol: TCP}}]\nendpoints:\n",
            20000 + j
        ));
        for i in 0..100 {
            yaml.push_str(&format!(
                "- {{addresses: [\"10.244.2.{}\"], nodeName: n2, conditions: {{ready: true}}}}\n",
                100 + i
            ));
        }
    }
    probe::apply(&lab, &yaml).expect("apply");
    let ip = vip(&lab, "big");
    let client = format!(
        "import socket,time\nseen=set(); fail=0\n\
         for i in range(3000):\n  try:\n    s=socket.create_connection(('{ip}',80),timeout=2); seen.add(s.recv(100)); s.close()\n  except Exception:\n    fail+=1\n\
         print(len(seen), fail)\n"
    );
    let mut out = String::new();
    for _ in 0..20 {
        out = probe::python(&lab, &probe::pod_ns("client-n1"), &client).unwrap_or_default();
        if out
            .split_whitespace()
            .next()
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or(0)
            > 900
        {
            break;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = srv.kill();
    let _ = srv.wait();
    let (distinct, fail) = out.split_once(' ').expect("counts");
    assert_eq!(fail, "0", "{out}");
    assert!(
        distinct.parse::<u32>().unwrap_or(0) > 900,
        "3,000 connections reached {distinct} of the 1,000 endpoints (≈950 expected)"
    );
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn what_the_datapath_cannot_serve_is_reported_on_the_service() {
    let lab = cluster();
    probe::apply(
        &lab,
        "apiVersion: v1\nkind: Service\nmetadata: {name: mixed}\nspec:\n  selector: {app: echo}\n  ports:\n  - {name: http, port: 80, targetPort: http}\n  - {name: sctp, port: 9999, protocol: SCTP}\n",
    )
    .expect("apply");
    let url = format!("http://{}/", vip(&lab, "mixed"));
    reachable(&lab, &probe::pod_ns("client-n1"), &url);
    let mut described = String::new();
    kube::wait("the agent's Event", Duration::from_secs(10), None, || {
        described = lab
            .kubectl
            .run(&["describe", "svc", "mixed"])
            .unwrap_or_default();
        Ok(described.contains("Unsupported"))
    })
    .unwrap_or_else(|e| panic!("{e}: {described}"));
    assert!(described.contains("SCTP"), "{described}");
    assert!(described.contains("Warning"), "{described}");
}
