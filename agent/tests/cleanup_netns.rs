//! `switchyard cleanup` and the agent's kube-proxy check, run as a user runs them (the binary, in
//! a scratch network namespace through `nsenter --net=`): kube-proxy's rules as its iptables
//! mode (nf_tables and legacy backends, IPv4 and IPv6) and nftables mode write them, beside rules
//! of others; and a node's switchyard state built as the datapath tests build it.
//!
//! Needs root, bpffs, cgroup v2 and the netfilter tools: run through `cargo xtask test` (it
//! passes `--ignored`).
mod common;

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{in_netns, link_json, sh, Scratch};
use switchyard::datapath::{Datapath, NodeSettings};
use switchyard::paths;

/// kube-proxy's iptables mode beside the kubelet's chains and a site's own (see the file).
const IPTABLES: &str = include_str!("fixtures/kube-proxy/iptables.rules");

/// The IPv6 half of a dual-stack kube-proxy.
const IP6TABLES: &str = include_str!("fixtures/kube-proxy/ip6tables.rules");

/// kube-proxy's nftables mode (both families) beside a site's own table.
const NFTABLES: &str = include_str!("fixtures/kube-proxy/nftables.nft");

/// What is not kube-proxy's and must survive: chains, and rules (as saved) jumping to them.
const OTHERS_CHAINS: [&str; 4] = [
    ":KUBE-FIREWALL - [0:0]",
    ":KUBE-KUBELET-CANARY - [0:0]",
    ":SITE-INPUT - [0:0]",
    ":SITE-SNAT - [0:0]",
];
const OTHERS_RULES: [&str; 4] = [
    "-A INPUT -j KUBE-FIREWALL",
    "-A INPUT -p tcp -m tcp --dport 22 -j SITE-INPUT",
    "-A POSTROUTING -j SITE-SNAT",
    "-A SITE-SNAT -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE",
];

/// Runs `argv` inside `ns` (`nsenter --net=`, which keeps this mount namespace and so bpffs),
/// with `input` on stdin and `env` set.
fn run_in(ns: &str, argv: &[&str], input: &str, env: &[(&str, &str)]) -> Output {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{ns}"))
        .args(argv)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("nsenter");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("stdin");
    child.wait_with_output().expect("wait")
}

/// Loads rules with `tool` (`iptables-nft-restore`, `nft -f -`, …); panics if it fails.
fn load(ns: &str, tool: &[&str], rules: &str) {
    let out = run_in(ns, tool, rules, &[]);
    assert!(out.status.success(), "{tool:?}: {}", text(&out.stderr));
}

/// `switchyard <args>` inside `ns`: (success, stdout, stderr).
fn switchyard(ns: &str, args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut argv = vec![env!("CARGO_BIN_EXE_switchyard")];
    argv.extend_from_slice(args);
    let out = run_in(ns, &argv, "", env);
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// What a tool prints in `ns` (`iptables-legacy-save`, `nft list tables`, …).
fn show(ns: &str, tool: &[&str]) -> String {
    let out = run_in(ns, tool, "", &[]);
    assert!(out.status.success(), "{tool:?}: {}", text(&out.stderr));
    text(&out.stdout)
}

/// The chain declarations of a save output that name kube-proxy's chains.
fn kube_proxy_chains(saved: &str) -> Vec<String> {
    const OWN: [&str; 11] = [
        ":KUBE-SERVICES ",
        ":KUBE-NODEPORTS ",
        ":KUBE-POSTROUTING ",
        ":KUBE-MARK-MASQ ",
        ":KUBE-PROXY-CANARY ",
        ":KUBE-EXTERNAL-SERVICES ",
        ":KUBE-FORWARD ",
        ":KUBE-PROXY-FIREWALL ",
        ":KUBE-SVC-",
        ":KUBE-SEP-",
        ":KUBE-EXT-",
    ];
    saved
        .lines()
        .filter(|l| OWN.iter().any(|p| l.starts_with(p)))
        .map(str::to_string)
        .collect()
}

/// A save output without its comment lines (which carry the time).
fn without_comments(saved: &str) -> Vec<&str> {
    saved.lines().filter(|l| !l.starts_with('#')).collect()
}

/// kube-proxy's rules in every backend and mode, and a site's own, in a fresh namespace `ns`.
fn kube_proxy_node(lab: &mut Scratch, ns: &str) {
    lab.netns(ns);
    load(ns, &["iptables-nft-restore"], IPTABLES);
    load(ns, &["iptables-legacy-restore"], IPTABLES);
    load(ns, &["ip6tables-nft-restore"], IP6TABLES);
    load(ns, &["nft", "-f", "-"], NFTABLES);
}

const SAVES: [&str; 3] = [
    "iptables-nft-save",
    "iptables-legacy-save",
    "ip6tables-nft-save",
];

#[test]
#[ignore = "needs root and the netfilter tools: run with cargo xtask test"]
fn cleanup_kube_proxy_removes_its_chains_and_tables_in_every_backend_and_keeps_the_rest() {
    const NS: &str = "sy-t-clkp";
    let mut lab = Scratch::default();
    kube_proxy_node(&mut lab, NS);
    let before: Vec<String> = SAVES.iter().map(|t| show(NS, &[t])).collect();

    let (ok, out, err) = switchyard(NS, &["cleanup", "--kube-proxy", "--dry-run"], &[]);
    assert!(ok, "dry run failed: {err}");
    for line in [
        "would remove: iptables-nft (IPv4) nat chain KUBE-SERVICES",
        "would remove: iptables-legacy (IPv4) filter chain KUBE-FORWARD",
        "would remove: ip6tables-nft (IPv6) nat chain KUBE-POSTROUTING",
        "would remove: iptables-nft (IPv4) nat rule -A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES",
        "would remove: nftables table ip kube-proxy",
        "would remove: nftables table ip6 kube-proxy",
    ] {
        assert!(out.lines().any(|l| l == line), "{line:?} missing from:\n{out}");
    }
    assert!(
        !out.contains("KUBE-FIREWALL") && !out.contains("SITE-"),
        "{out}"
    );
    for (tool, saved) in SAVES.iter().zip(&before) {
        assert_eq!(
            without_comments(&show(NS, &[tool])),
            without_comments(saved),
            "a dry run changed {tool}"
        );
    }

    let (ok, out, err) = switchyard(NS, &["cleanup", "--kube-proxy"], &[]);
    assert!(ok, "cleanup failed: {err}\n{out}");
    assert!(out.contains("removed: iptables-nft (IPv4) nat chain KUBE-SVC-TCOU7JCQXEZGVUNU"));
    for tool in SAVES {
        let saved = show(NS, &[tool]);
        assert_eq!(
            kube_proxy_chains(&saved),
            Vec::<String>::new(),
            "{tool}:\n{saved}"
        );
        assert!(
            !saved.contains("kubernetes"),
            "a kube-proxy rule is left in {tool}:\n{saved}"
        );
    }
    for tool in ["iptables-nft-save", "iptables-legacy-save"] {
        let saved = show(NS, &[tool]);
        for line in OTHERS_CHAINS.iter().chain(&OTHERS_RULES) {
            assert!(
                saved.lines().any(|l| l == *line),
                "{tool} lost {line:?}:\n{saved}"
            );
        }
    }
    let tables = show(NS, &["nft", "list", "tables"]);
    assert!(!tables.contains("kube-proxy"), "{tables}");
    assert!(tables.contains("table inet site"), "{tables}");

    let (ok, out, _) = switchyard(NS, &["cleanup", "--kube-proxy"], &[]);
    assert!(
        ok && out.contains("nothing to remove"),
        "a second run: {out}"
    );
}

#[test]
#[ignore = "needs root and the netfilter tools: run with cargo xtask test"]
fn cleanup_without_a_scope_is_a_usage_error_and_removes_nothing() {
    const NS: &str = "sy-t-clus";
    let mut lab = Scratch::default();
    kube_proxy_node(&mut lab, NS);
    let (ok, _, err) = switchyard(NS, &["cleanup"], &[]);
    assert!(!ok);
    assert!(
        err.contains("--kube-proxy") && err.contains("--switchyard"),
        "{err}"
    );
    let (ok, _, err) = switchyard(NS, &["cleanup", "--switchyard"], &[]);
    assert!(!ok && err.contains("--node"), "{err}");
    assert!(show(NS, &["iptables-nft-save"]).contains(":KUBE-SERVICES "));
    assert!(show(NS, &["nft", "list", "tables"]).contains("table ip kube-proxy"));
}

#[test]
#[ignore = "needs root and the netfilter tools: run with cargo xtask test"]
fn the_agent_refuses_to_start_beside_kube_proxys_rules_unless_told_to() {
    const NS: &str = "sy-t-clag";
    let mut lab = Scratch::default();
    lab.netns(NS);
    load(NS, &["iptables-nft-restore"], IPTABLES);
    load(NS, &["nft", "-f", "-"], NFTABLES);
    let agent = |extra: &[&str]| {
        let mut args = vec![
            "agent",
            "--node",
            "t-clag",
            "--kubeconfig",
            "/nonexistent/sy-t-clag-kubeconfig",
        ];
        args.extend_from_slice(extra);
        switchyard(NS, &args, &[])
    };

    let (ok, _, err) = agent(&[]);
    assert!(!ok);
    assert!(
        err.contains(
            "kube-proxy's rules are on this node: iptables-nft (IPv4) nat chain KUBE-SERVICES; \
             nftables table ip kube-proxy; nftables table ip6 kube-proxy."
        ),
        "{err}"
    );
    assert!(err.contains("switchyard cleanup --kube-proxy") && err.contains("--allow-kube-proxy"));
    assert!(
        !err.contains("nonexistent"),
        "refused before reading the kubeconfig: {err}"
    );

    // With the override the check is skipped (it would read every table); the agent then
    // fails for lack of a kubeconfig.
    let (ok, _, err) = agent(&["--allow-kube-proxy"]);
    assert!(!ok);
    assert!(
        err.contains("kube-proxy check skipped (--allow-kube-proxy)"),
        "{err}"
    );
    assert!(
        !err.contains("kube-proxy's rules are on this node:"),
        "{err}"
    );
    assert!(err.contains("nonexistent"), "{err}");

    let (ok, _, err) = switchyard(NS, &["cleanup", "--kube-proxy"], &[]);
    assert!(ok, "{err}");
    let (_, _, err) = agent(&[]);
    assert!(
        err.contains("kube-proxy check passed: no kube-proxy rules"),
        "{err}"
    );
    assert!(err.contains("nonexistent"), "{err}");
}

/// A process killed (and reaped) on drop.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A scratch cgroup for the socket programs, removed on drop.
struct Cgroup(PathBuf);

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

/// The cgroup v2 root (`/sys/fs/cgroup` or, on a hybrid layout, `/sys/fs/cgroup/unified`).
fn cgroup2_root() -> PathBuf {
    ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists())
        .expect("a cgroup v2 hierarchy")
}

/// The ids of the BPF links pinned under `pins/links/<kind>/` (`kind`: pods, dev, cgroup).
fn pinned_links(pins: &Path, kind: &str) -> Vec<u64> {
    let dir = pins.join("links").join(kind);
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("entry").path();
        let out = sh(&[
            "bpftool",
            "-j",
            "link",
            "show",
            "pinned",
            &path.to_string_lossy(),
        ]);
        let link: serde_json::Value = serde_json::from_str(&out).expect("bpftool json");
        ids.push(link["id"].as_u64().expect("link id"));
    }
    ids
}

/// Whether the kernel still has BPF link `id` (attached, or held by anyone).
fn link_exists(id: u64) -> bool {
    Command::new("bpftool")
        .args(["link", "show", "id", &id.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("bpftool")
        .success()
}

#[test]
#[ignore = "needs root, bpffs and cgroup v2: run with cargo xtask test"]
fn cleanup_switchyard_removes_the_nodes_pins_devices_routes_and_state() {
    const NS: &str = "sy-t-clsy";
    const NODE: &str = "t-clsy";
    const VETH: &str = "syclsyp";
    let gw = Ipv4Addr::new(10, 244, 77, 1);
    let mut lab = Scratch::default();
    lab.node(NS, NODE, gw);
    lab.pod(
        NS,
        NODE,
        "sy-t-clsy-p",
        VETH,
        Ipv4Addr::new(10, 244, 77, 2),
        gw,
    );
    sh(&[
        "ip", "-n", NS, "link", "add", "vxlan0", "type", "vxlan", "external", "dstport", "8472",
    ]);
    sh(&["ip", "-n", NS, "link", "set", "vxlan0", "up"]);
    sh(&[
        "ip",
        "-n",
        NS,
        "route",
        "replace",
        "10.244.0.0/16",
        "dev",
        "vxlan0",
        "scope",
        "link",
        "src",
        "10.244.77.1",
    ]);
    let cgroup = Cgroup(cgroup2_root().join("sy-t-clsy"));
    std::fs::create_dir_all(&cgroup.0).expect("scratch cgroup");
    let vxlan = link_json(NS, "vxlan0")["ifindex"]
        .as_u64()
        .expect("ifindex") as u32;
    let cg = cgroup.0.clone();
    in_netns(NS, move || {
        let mut dp = Datapath::open(&NodeSettings {
            node: NODE.into(),
            node_ip: Ipv4Addr::new(198, 18, 0, 77),
            pod_cidr: (Ipv4Addr::new(10, 244, 77, 0), 24),
            cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            ..NodeSettings::defaults()
        })
        .expect("open datapath");
        assert_eq!(dp.sync_local_pods().expect("local pods").written, 1);
        dp.attach_overlay("vxlan0", vxlan).expect("overlay");
        dp.attach_bridge(paths::BRIDGE).expect("bridge");
        dp.attach_sockets(&cg).expect("sockets");
    });
    let pins = paths::pin_dir(NODE);
    let link_ids: Vec<u64> = ["pods", "dev", "cgroup"]
        .iter()
        .flat_map(|kind| {
            let ids = pinned_links(&pins, kind);
            assert!(!ids.is_empty(), "no {kind} link pinned");
            ids
        })
        .collect();
    assert!(link_ids.iter().all(|id| link_exists(*id)));

    // The node's agent holds the links open: cleanup refuses while it runs.
    let fake_agent = Command::new("bash")
        .args([
            "-c",
            "exec -a switchyard perl -e 'sleep 60' agent --node t-clsy",
        ])
        .spawn()
        .expect("a process that looks like the node's agent");
    let fake_pid = fake_agent.id();
    let fake_agent = Killed(fake_agent);
    std::thread::sleep(std::time::Duration::from_millis(200));
    let (ok, _, err) = switchyard(NS, &["cleanup", "--switchyard", "--node", NODE], &[]);
    assert!(!ok);
    assert!(
        err.contains(&format!(
            "the agent of node {NODE} is running (pid {fake_pid})"
        )),
        "{err}"
    );
    assert!(
        paths::pin_dir(NODE).exists(),
        "nothing removed while the agent runs"
    );
    drop(fake_agent);

    // NODE_NAME names the node as --node does.
    let (ok, out, err) = switchyard(
        NS,
        &["cleanup", "--switchyard", "--dry-run"],
        &[("NODE_NAME", NODE)],
    );
    assert!(ok, "{err}");
    for line in [
        format!("would remove: BPF pins {}", paths::pin_dir(NODE).display()),
        "would remove: link vxlan0 (vxlan)".to_string(),
        "would remove: link cbr0 (bridge)".to_string(),
        format!("would remove: state {}", paths::state_dir(NODE).display()),
    ] {
        assert!(
            out.lines().any(|l| l.starts_with(&line)),
            "{line:?} missing from:\n{out}"
        );
    }
    assert!(paths::pin_dir(NODE).exists(), "a dry run removes nothing");

    let (ok, out, err) = switchyard(NS, &["cleanup", "--switchyard", "--node", NODE], &[]);
    assert!(ok, "cleanup failed: {err}\n{out}");
    assert!(!paths::pin_dir(NODE).exists(), "pins left");
    assert!(!paths::state_dir(NODE).exists(), "state left");
    let links = show(NS, &["ip", "-o", "link", "show"]);
    assert!(
        !links.contains(" cbr0:") && !links.contains(" vxlan0:"),
        "{links}"
    );
    assert!(
        links.contains(&format!(" {VETH}@")),
        "the pod's veth stays: {links}"
    );
    let routes = show(NS, &["ip", "route", "show"]);
    assert!(!routes.contains("10.244.0.0/16"), "{routes}");
    let left: Vec<_> = link_ids.iter().filter(|id| link_exists(**id)).collect();
    assert!(
        left.is_empty(),
        "BPF links {left:?} of {link_ids:?} are still there"
    );
}
