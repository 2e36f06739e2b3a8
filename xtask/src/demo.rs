//! `cargo xtask demo`: the walking skeleton, end to end, as a user would check it.
//!
//! A one-node lab; `kubectl apply -f examples/echo.yaml` creates three echo pods behind the
//! ClusterIP Service `echo` and a client pod; 30 requests go from the client pod to the Service
//! by name (`kubectl exec client -- curl http://echo/`: the cluster DNS answers the ClusterIP);
//! every answer names the pod that served it; then the client pod lists Services from the API
//! server by name, through `https://kubernetes.default.svc` with its service-account token, as
//! every in-cluster controller does. It passes only if all three pods answered, the datapath
//! counted the new connections, the API server answered, and the node has no NAT rules.
use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use switchyard_lab::{lab, Lab, LabOptions};

/// Requests the client sends.
pub const REQUESTS: usize = 30;

/// The API server as pods name it: the `kubernetes` Service, through the cluster DNS.
const API_BY_NAME: &str = "https://kubernetes.default.svc";

/// Where a pod finds its service-account token and the cluster's CA.
const SA: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Lines of `iptables-save -t nat` and `nft list ruleset` in a node that are actual rules.
fn nat_rules() -> Result<Vec<String>> {
    let mut rules = Vec::new();
    let ipt =
        switchyard_lab::cmd::run(&["ip", "netns", "exec", "sy-n1", "iptables-save", "-t", "nat"])?;
    rules.extend(
        ipt.lines()
            .filter(|l| l.starts_with("-A"))
            .map(str::to_string),
    );
    let nft =
        switchyard_lab::cmd::run(&["ip", "netns", "exec", "sy-n1", "nft", "list", "ruleset"])?;
    rules.extend(
        nft.lines()
            .map(str::trim)
            .filter(|l| {
                !l.is_empty()
                    && !l.starts_with("table")
                    && !l.starts_with("chain")
                    && !l.starts_with("type")
                    && *l != "}"
            })
            .map(str::to_string),
    );
    Ok(rules)
}

/// Runs the demo.
pub fn run() -> Result<()> {
    println!("==> starting a one-node lab");
    let lab = Lab::up(LabOptions::new(1))?;
    let example = lab::workspace_root().join("examples/echo.yaml");
    println!("==> kubectl apply -f {}", example.display());
    print!("{}", lab.kubectl.apply_file(&example)?);
    println!("==> waiting for the pods");
    lab.kubectl
        .wait_pods_ready("app=echo", 3, Duration::from_secs(60))?;
    lab.kubectl
        .wait_pods_ready("!app", 1, Duration::from_secs(60))?;
    print!(
        "{}",
        lab.kubectl
            .run(&["get", "pods,services,endpointslices", "-o", "wide"])?
    );
    let ip = lab.kubectl.cluster_ip("echo")?;
    let before = lab.counter(1, "lb_new")?;

    println!(
        "==> {REQUESTS} times: kubectl exec client -- curl -s http://echo/   (echo is ClusterIP {ip})"
    );
    let mut tally: BTreeMap<String, usize> = BTreeMap::new();
    for i in 1..=REQUESTS {
        let answer = lab
            .kubectl
            .run(&[
                "exec",
                "client",
                "--",
                "curl",
                "-s",
                "--max-time",
                "2",
                "http://echo/",
            ])
            .unwrap_or_default()
            .trim()
            .to_string();
        let pod = answer
            .split_whitespace()
            .next()
            .and_then(|w| w.strip_prefix("pod="))
            .unwrap_or("<no answer>")
            .to_string();
        println!("  request {i:2}: answered by {pod:10} ({answer})");
        *tally.entry(pod).or_default() += 1;
    }
    let after = lab.counter(1, "lb_new")?;
    println!("==> answers per pod");
    for (pod, n) in &tally {
        println!("  {pod:10} {n}");
    }
    println!(
        "==> datapath: lb_new grew by {} (eBPF load-balanced connections)",
        after - before
    );

    let mut failures = Vec::new();
    for pod in ["echo-1", "echo-2", "echo-3"] {
        if !tally.contains_key(pod) {
            failures.push(format!("{pod} never answered"));
        }
    }
    if tally.contains_key("<no answer>") {
        failures.push("some requests got no answer".into());
    }
    if after - before < REQUESTS as u64 {
        failures.push(format!(
            "the eBPF datapath counted {} new connections, expected at least {REQUESTS}",
            after - before
        ));
    }
    println!("==> the client pod asks the API server by name, as in-cluster controllers do:");
    println!("    kubectl exec client -- kubectl --server {API_BY_NAME} --token <its service-account token> --certificate-authority <its CA> get services");
    match lab.kubectl.run(&[
        "exec",
        "client",
        "--",
        "sh",
        "-c",
        &format!("kubectl --server {API_BY_NAME} --token \"$(cat {SA}/token)\" --certificate-authority {SA}/ca.crt get services"),
    ]) {
        Ok(out) if out.contains("echo") && out.contains("kubernetes") => print!("{out}"),
        Ok(out) => failures.push(format!("the API server's answer lacks a Service: {out}")),
        Err(e) => failures.push(format!("the pod could not reach the API server by name: {e}")),
    }
    let rules = nat_rules().context("reading the node's NAT rules")?;
    if rules.is_empty() {
        println!(
            "==> node sy-n1 has no iptables or nftables NAT rules: the service lives in BPF maps"
        );
    } else {
        failures.push(format!("node sy-n1 has NAT rules: {rules:?}"));
    }
    print!(
        "{}",
        switchyard_lab::cmd::run(&[&lab.switchyard(), "inspect", "services", "--node", "n1"])?
    );
    drop(lab);
    println!("==> lab removed");
    if !failures.is_empty() {
        bail!("demo failed: {}", failures.join("; "));
    }
    println!("==> demo passed");
    Ok(())
}
