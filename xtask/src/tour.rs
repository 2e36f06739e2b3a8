//! The three-node part of `cargo xtask demo`: the overlay, ClusterIP across nodes, NodePort with
//! both traffic policies, masquerade — each shown with the addresses the other end saw.
use std::time::Duration;

use anyhow::{bail, Result};
use switchyard_lab::{cmd, lab, topology, Lab, LabOptions};

/// `curl URL` from the lab's external host (not a pod: entered with `ip netns exec`).
fn curl(lab: &Lab, netns: &str, url: &str) -> String {
    match lab.exec_in(netns, &["curl", "-sS", "--max-time", "2", url]) {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).trim().to_string(),
        Ok(out) => format!(
            "<no answer: {}>",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => format!("<{e}>"),
    }
}

/// `kubectl exec POD -- curl URL`, as a user checks a Service from inside a pod.
fn exec_curl(lab: &Lab, pod: &str, url: &str) -> String {
    match lab
        .kubectl
        .run(&["exec", pod, "--", "curl", "-sS", "--max-time", "2", url])
    {
        Ok(out) => out.trim().to_string(),
        Err(e) => format!("<no answer: {e}>"),
    }
}

/// Packets node n1's `vxlan0` has sent.
fn vxlan_tx() -> u64 {
    cmd::run(&[
        "ip",
        "netns",
        "exec",
        "sy-n1",
        "cat",
        "/sys/class/net/vxlan0/statistics/tx_packets",
    ])
    .ok()
    .and_then(|s| s.trim().parse().ok())
    .unwrap_or(0)
}

fn field(answer: &str, key: &str) -> String {
    answer
        .split_whitespace()
        .find_map(|w| w.strip_prefix(key))
        .unwrap_or("")
        .split(':')
        .next()
        .unwrap_or("")
        .to_string()
}

/// Runs the tour; every check that fails is collected and reported at the end.
pub fn run() -> Result<()> {
    println!("==> starting a three-node lab");
    let lab = Lab::up(LabOptions::new(3))?;
    let example = lab::workspace_root().join("examples/multinode.yaml");
    println!("==> kubectl apply -f {}", example.display());
    print!("{}", lab.kubectl.apply_file(&example)?);
    lab.kubectl
        .wait_pods_ready("app=echo", 3, Duration::from_secs(60))?;
    lab.kubectl
        .wait_pods_ready("!app", 2, Duration::from_secs(60))?;
    print!(
        "{}",
        lab.kubectl
            .run(&["get", "nodes,pods,services", "-o", "wide"])?
    );
    let mut failures = Vec::new();
    let mut check = |ok: bool, what: String| {
        println!("  [{}] {what}", if ok { "ok" } else { "FAIL" });
        if !ok {
            failures.push(what);
        }
    };
    let ip_of = |pod: &str| {
        lab.kubectl
            .run(&["get", "pod", pod, "-o", "jsonpath={.status.podIP}"])
            .unwrap_or_default()
    };
    let client = ip_of("client-n1");

    println!(
        "==> pod to pod across nodes (VXLAN overlay): client-n1 ({client}) -> echo-n2, echo-n3"
    );
    let before = vxlan_tx();
    for target in ["echo-n2", "echo-n3"] {
        let answer = exec_curl(
            &lab,
            "client-n1",
            &format!("http://{}:8080/", ip_of(target)),
        );
        check(
            field(&answer, "peer=") == client,
            format!("{target} saw the client pod's own address: {answer}"),
        );
    }
    let after = vxlan_tx();
    check(
        after > before,
        format!("vxlan0 on n1 sent packets ({before} -> {after})"),
    );

    let cip = lab.kubectl.cluster_ip("echo")?;
    println!(
        "==> kubectl exec client-n1 -- curl http://echo/ (ClusterIP {cip}): backends on every node"
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..30 {
        seen.insert(field(&exec_curl(&lab, "client-n1", "http://echo/"), "pod="));
    }
    check(
        ["echo-n1", "echo-n2", "echo-n3"]
            .iter()
            .all(|p| seen.contains(*p)),
        format!("answers came from {seen:?}"),
    );

    println!(
        "==> NodePort 31002 (externalTrafficPolicy: Cluster) from the external client {}",
        topology::EXT_ADDR
    );
    for n in 1..=3 {
        let answer = curl(
            &lab,
            topology::EXT,
            &format!("http://{}:31002/", topology::node_addr(n)),
        );
        check(
            answer.starts_with("pod="),
            format!("via n{n} ({}): {answer}", topology::node_addr(n)),
        );
    }
    println!("==> NodePort 31004 (externalTrafficPolicy: Local, backend only on n2)");
    for n in 1..=3 {
        let answer = curl(
            &lab,
            topology::EXT,
            &format!("http://{}:31004/", topology::node_addr(n)),
        );
        if n == 2 {
            check(
                field(&answer, "peer=") == topology::EXT_ADDR,
                format!("via n2 the backend sees the client's address: {answer}"),
            );
        } else {
            check(
                answer.starts_with("<no answer"),
                format!("via n{n} (no local backend) nothing answers"),
            );
        }
    }
    println!(
        "==> masquerade: client-n1 -> {} (outside the cluster)",
        topology::OUTSIDE_ADDR
    );
    let answer = exec_curl(
        &lab,
        "client-n1",
        &format!("http://{}:8080/", topology::OUTSIDE_ADDR),
    );
    check(
        field(&answer, "peer=") == topology::node_addr(1),
        format!("the outside server saw node n1's address: {answer}"),
    );

    println!("==> no iptables or nftables NAT rules on any node");
    for n in 1..=3 {
        let ns = topology::node_ns(n);
        let ipt = cmd::run(&["ip", "netns", "exec", &ns, "iptables-save"]).unwrap_or_default();
        let nft =
            cmd::run(&["ip", "netns", "exec", &ns, "nft", "list", "ruleset"]).unwrap_or_default();
        check(
            !ipt.lines().any(|l| l.starts_with("-A")) && !nft.contains("nat"),
            format!("{ns} has no rules"),
        );
    }
    drop(lab);
    println!("==> lab removed");
    if !failures.is_empty() {
        bail!("three-node tour failed: {}", failures.join("; "));
    }
    println!("==> three-node tour passed");
    Ok(())
}
