//! End-to-end: Service discovery by name. A one-node lab (which runs the cluster DNS behind
//! `kube-system/kube-dns`, 10.96.0.10), `examples/echo.yaml` applied with kubectl, and names
//! looked up as the client pod's containers see the world: the pod's network namespace and its
//! container's mount namespace, where the kubelet mounted the pod's own `/etc/resolv.conf`.
//! Every test builds its own lab and checks the host's `/etc/resolv.conf` is as it was.
use std::collections::BTreeSet;
use std::process::Output;
use std::time::{Duration, Instant};

use switchyard_lab::{cmd, dns, kube, lab, probe, Lab};

/// The host's resolver configuration, which nothing may touch.
const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

fn host_resolv_conf() -> String {
    std::fs::read_to_string(HOST_RESOLV_CONF).expect("read the host's /etc/resolv.conf")
}

/// A lab with the echo example applied and every pod Ready; returns it and the host's
/// resolv.conf as it was before.
fn echo_lab() -> (Lab, String) {
    let host = host_resolv_conf();
    let lab = probe::example_lab(1, "echo.yaml", &[("app=echo", 3), ("!app", 1)]).expect("lab up");
    (lab, host)
}

/// Tears `lab` down and checks the host's resolv.conf is still `before`.
fn finish(lab: Lab, before: &str) {
    drop(lab);
    assert_eq!(
        host_resolv_conf(),
        before,
        "the host's /etc/resolv.conf is unchanged"
    );
}

/// Runs `argv` in the `default/client` pod as its container sees the world: the pod's network
/// namespace and the container's mount namespace (the process `ip netns pids` finds there).
fn in_client(argv: &[&str]) -> Output {
    let netns = "sy-pod-default-client";
    let pids = cmd::run(&["ip", "netns", "pids", netns]).expect("ip netns pids");
    let pid = pids
        .split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no process in {netns}"));
    let net = format!("--net=/run/netns/{netns}");
    let mnt = format!("--mount=/proc/{pid}/ns/mnt");
    let mut all = vec!["nsenter", &net, &mnt];
    all.extend_from_slice(argv);
    cmd::output(&all).expect("nsenter")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// What `dig` in the client pod got for `name` (type `qtype`, over TCP with `+tcp` in
/// `extra`): the status (`NOERROR`, `NXDOMAIN`, `REFUSED`…) and the answers' data.
fn dig(name: &str, qtype: &str, extra: &[&str]) -> (String, Vec<String>) {
    let mut argv = vec![
        "dig",
        "+time=2",
        "+tries=1",
        "+noall",
        "+comments",
        "+answer",
        name,
        qtype,
    ];
    argv.extend_from_slice(extra);
    let out = stdout(&in_client(&argv));
    let status = out
        .split("status: ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .unwrap_or_else(|| panic!("dig printed no status: {out}"))
        .to_string();
    let answers = out
        .lines()
        .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
        // `NAME TTL IN TYPE DATA…`
        .map(|l| l.split_whitespace().skip(4).collect::<Vec<_>>().join(" "))
        .collect();
    (status, answers)
}

/// Applies `yaml` (written into the lab directory as `file`).
fn apply(lab: &Lab, file: &str, yaml: &str) {
    let path = lab::lab_dir(&lab::workspace_root()).join(file);
    std::fs::write(&path, yaml).expect("write manifest");
    lab.kubectl.apply_file(&path).expect("apply");
}

/// How long until `dig` in the client pod gets `status` for `name`, polling every 50 ms (at
/// most 10 s).
fn time_until_status(name: &str, status: &str) -> Duration {
    let start = Instant::now();
    loop {
        if dig(name, "A", &[]).0 == status {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "{name} never got {status}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn pods_reach_services_by_short_and_qualified_names() {
    let (lab, host) = echo_lab();
    let ip = lab.kubectl.cluster_ip("echo").expect("cluster IP");
    assert_eq!(
        stdout(&in_client(&["cat", "/etc/resolv.conf"])),
        "search default.svc.cluster.local svc.cluster.local cluster.local\n\
         nameserver 10.96.0.10\n\
         options ndots:5",
        "the kubelet's resolver configuration, in the container only"
    );
    let pod_ip = lab
        .kubectl
        .get_json(&["pod", "client"])
        .expect("client pod")["status"]["podIP"]
        .as_str()
        .expect("podIP")
        .to_string();
    let hosts = stdout(&in_client(&["cat", "/etc/hosts"]));
    assert!(
        hosts.ends_with(&format!("\n{pod_ip}\tclient")),
        "the pod's own /etc/hosts: {hosts}"
    );

    let body = stdout(&in_client(&[
        "curl",
        "-sS",
        "--max-time",
        "3",
        "http://echo/",
    ]));
    assert!(body.starts_with("pod=echo-"), "curl http://echo/: {body:?}");

    for name in [
        "echo",
        "echo.default",
        "echo.default.svc",
        "echo.default.svc.cluster.local",
    ] {
        let out = stdout(&in_client(&["getent", "hosts", name]));
        assert_eq!(
            out.split_whitespace().collect::<Vec<_>>(),
            [ip.as_str(), "echo.default.svc.cluster.local"],
            "getent hosts {name}"
        );
    }
    assert_eq!(
        dig("kubernetes.default.svc.cluster.local", "A", &[]),
        ("NOERROR".into(), vec!["10.96.0.1".to_string()])
    );
    finish(lab, &host);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn dig_finds_srv_records_and_headless_endpoints_over_udp_and_tcp() {
    let (lab, host) = echo_lab();
    let ip = lab.kubectl.cluster_ip("echo").expect("cluster IP");
    apply(
        &lab,
        "echo-headless.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: echo-headless}\nspec:\n  clusterIP: None\n  selector: {app: echo}\n  ports: [{name: http, port: 8080}]\n",
    );
    let pods = lab
        .kubectl
        .get_json(&["pods", "-l", "app=echo"])
        .expect("pods");
    let pod_ips: BTreeSet<String> = pods["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
        .collect();
    assert_eq!(pod_ips.len(), 3);
    kube::wait(
        "the headless Service's endpoints",
        Duration::from_secs(10),
        None,
        || {
            Ok(dig("echo-headless.default.svc.cluster.local", "A", &[])
                .1
                .len()
                == 3)
        },
    )
    .expect("headless endpoints published");

    for transport in [&[][..], &["+tcp"][..]] {
        assert_eq!(
            dig(
                "_http._tcp.echo.default.svc.cluster.local",
                "SRV",
                transport
            ),
            (
                "NOERROR".into(),
                vec!["0 100 80 echo.default.svc.cluster.local.".to_string()]
            ),
            "SRV {transport:?}"
        );
        assert_eq!(
            dig("_udp._udp.echo.default.svc.cluster.local", "SRV", transport),
            (
                "NOERROR".into(),
                vec!["0 100 5353 echo.default.svc.cluster.local.".to_string()]
            ),
            "SRV of the UDP port {transport:?}"
        );
        assert_eq!(
            dig("echo.default.svc.cluster.local", "A", transport),
            ("NOERROR".into(), vec![ip.clone()]),
            "A {transport:?}"
        );
        let (status, answers) = dig("echo-headless.default.svc.cluster.local", "A", transport);
        assert_eq!(status, "NOERROR");
        assert_eq!(
            answers.into_iter().collect::<BTreeSet<_>>(),
            pod_ips,
            "a headless Service's name gives its ready pods {transport:?}"
        );
    }
    let (_, srv) = dig(
        "_http._tcp.echo-headless.default.svc.cluster.local",
        "SRV",
        &[],
    );
    let targets: BTreeSet<String> = srv
        .iter()
        .map(|s| s.split_whitespace().last().unwrap_or_default().to_string())
        .collect();
    let want: BTreeSet<String> = pod_ips
        .iter()
        .map(|ip| {
            format!(
                "{}.echo-headless.default.svc.cluster.local.",
                ip.replace('.', "-")
            )
        })
        .collect();
    assert_eq!(targets, want, "headless SRV names every endpoint: {srv:?}");
    finish(lab, &host);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn names_outside_the_cluster_are_refused_over_udp_and_tcp() {
    let (lab, host) = echo_lab();
    for transport in [&[][..], &["+tcp"][..]] {
        assert_eq!(
            dig("example.com", "A", transport),
            ("REFUSED".into(), vec![]),
            "{transport:?}"
        );
        assert_eq!(
            dig("nope.default.svc.cluster.local", "A", transport),
            ("NXDOMAIN".into(), vec![]),
            "an unknown name inside the cluster domain {transport:?}"
        );
    }
    let out = in_client(&["getent", "hosts", "example.com"]);
    assert!(
        !out.status.success() && out.stdout.is_empty(),
        "getent hosts example.com: {out:?}"
    );
    let out = in_client(&["curl", "-sS", "--max-time", "3", "http://example.com/"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Could not resolve host"),
        "curl to an outside name: {out:?}"
    );
    finish(lab, &host);
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn names_follow_a_services_creation_and_deletion_within_two_seconds() {
    let (lab, host) = echo_lab();
    let name = "late.default.svc.cluster.local";
    assert_eq!(dig(name, "A", &[]).0, "NXDOMAIN");
    apply(
        &lab,
        "late.yaml",
        "apiVersion: v1\nkind: Service\nmetadata: {name: late}\nspec:\n  selector: {app: echo}\n  ports: [{port: 80, targetPort: 8080}]\n",
    );
    let created = time_until_status(name, "NOERROR");
    let ip = lab.kubectl.cluster_ip("late").expect("cluster IP");
    assert_eq!(dig(name, "A", &[]).1, [ip]);

    lab.kubectl
        .run(&["delete", "service", "late", "--wait=false"])
        .expect("delete");
    let deleted = time_until_status(name, "NXDOMAIN");
    let out = in_client(&["getent", "hosts", "late"]);
    assert!(
        !out.status.success(),
        "getent hosts late after the deletion"
    );
    assert!(
        created < Duration::from_secs(2) && deleted < Duration::from_secs(2),
        "created after {created:?}, deleted after {deleted:?}"
    );
    assert_eq!(
        dig(dns::PROBE_NAME, "A", &[]).0,
        "NOERROR",
        "other names still resolve"
    );
    finish(lab, &host);
}
