//! The CNI plugin for real: a scratch node namespace with `cbr0`, two pod namespaces wired by
//! the `switchyard` binary as a CNI plugin, traffic between them, then DEL.
//!
//! Needs root; skipped otherwise. Every namespace, process and file it makes is removed by Drop
//! guards (the lab's `Scratch`), also when an assertion fails.
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};
use switchyard::cni::EndpointRecord;
use switchyard::paths;
use switchyard_lab::netns::{self, in_ns, Scratch};

const BIN: &str = env!("CARGO_BIN_EXE_switchyard");
const NODE_NS: &str = "sy-t-node-n";
const POD_A: &str = "sy-t-node-pa";
const POD_B: &str = "sy-t-node-pb";
/// Node name of the test: its state lives in `/run/switchyard/sy-t-node/`.
const NODE: &str = "sy-t-node";

/// The echo workload: `switchyard-labnode echo`, another package's binary (see
/// `switchyard_lab::bins`).
fn echo_bin() -> String {
    switchyard_lab::bins::cargo_bin("switchyard-labnode")
        .expect("switchyard-labnode")
        .to_string_lossy()
        .into_owned()
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(cmd: &mut Command) -> Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn conf(node: &str) -> String {
    format!(
        r#"{{"cniVersion":"1.0.0","name":"switchyard","type":"switchyard","node":"{node}","bridge":"cbr0","mtu":1460,
            "ipam":{{"type":"host-local","subnet":"10.244.1.0/24","gateway":"10.244.1.1"}}}}"#
    )
}

fn container_id(pod: &str) -> String {
    format!("default-{pod}-0123abcd")
}

/// Runs the plugin inside the node namespace; returns (exit ok, parsed stdout).
fn cni(command: &str, pod: &str, netns: Option<&Path>) -> (bool, serde_json::Value) {
    let node = Node {
        ns: NODE_NS.into(),
        name: NODE.into(),
    };
    node.cni(command, &container_id(pod), pod, netns)
}

/// A scratch node: its namespace and its name (state under `/run/switchyard/<name>/`).
struct Node {
    ns: String,
    name: String,
}

impl Node {
    /// Runs the plugin in the node's namespace for container `id` of pod `default/<pod>`;
    /// returns (exit ok, parsed stdout).
    fn cni(
        &self,
        command: &str,
        id: &str,
        pod: &str,
        netns: Option<&Path>,
    ) -> (bool, serde_json::Value) {
        let node_ns = netns::path(&self.ns);
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net={}", node_ns.display()))
            .arg(BIN)
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_IFNAME", "eth0")
            .env("CNI_PATH", "/opt/cni/bin")
            .env(
                "CNI_ARGS",
                format!("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={pod}"),
            )
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match netns {
            Some(p) => cmd.env("CNI_NETNS", p),
            None => cmd.env_remove("CNI_NETNS"),
        };
        let mut child = cmd.spawn().expect("spawn plugin");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(conf(&self.name).as_bytes())
            .expect("write config");
        let out = child.wait_with_output().expect("plugin");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let value = if stdout.trim().is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_str(stdout.trim())
                .unwrap_or_else(|e| panic!("plugin printed non-JSON {stdout:?}: {e}"))
        };
        if !out.status.success() {
            eprintln!(
                "plugin {command} {pod}: {stdout} {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        (out.status.success(), value)
    }
}

fn link_exists(ns: &str, name: &str) -> bool {
    Command::new("ip")
        .args(["-n", ns, "link", "show", name])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// Sends one ICMP echo request from inside namespace `ns` to `dst` and waits up to two seconds
/// for the reply (a raw socket: the machine has no `ping` binary).
fn ping(ns: &str, dst: Ipv4Addr) -> bool {
    netns::run_in(ns, move || {
        // SAFETY: plain socket calls on a descriptor this thread owns; buffers outlive the calls.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP);
            assert!(fd >= 0, "raw socket");
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as u32,
            );
            let id: u16 = 0x5359; // "SY"
            let mut pkt = [8u8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1, b's', b'y'];
            let sum = pkt.chunks(2).fold(0u32, |acc, c| {
                acc + u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))
            });
            let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
            pkt[2..4].copy_from_slice(&sum.to_be_bytes());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from(dst).to_be(),
                },
                sin_zero: [0; 8],
            };
            let sent = libc::sendto(
                fd,
                pkt.as_ptr().cast(),
                pkt.len(),
                0,
                (&addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as u32,
            );
            let mut ok = false;
            if sent == pkt.len() as isize {
                let deadline = Instant::now() + Duration::from_secs(2);
                let mut buf = [0u8; 1500];
                while Instant::now() < deadline {
                    let n = libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0);
                    if n < 28 {
                        break;
                    }
                    let ihl = usize::from(buf[0] & 0x0f) * 4;
                    let src = Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]);
                    let icmp = &buf[ihl..n as usize];
                    if src == dst && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
                        ok = true;
                        break;
                    }
                }
            }
            libc::close(fd);
            ok
        }
    })
    .expect("ping thread")
}

fn ip_of(result: &serde_json::Value) -> Ipv4Addr {
    let cidr = result["ips"][0]["address"]
        .as_str()
        .expect("ips[0].address");
    cidr.split('/').next().unwrap().parse().expect("ipv4")
}

#[test]
fn cni_add_wires_pods_that_talk_through_the_bridge_and_del_removes_everything() {
    if !switchyard_lab::lab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let mut scratch = Scratch::default();
    scratch.dir(paths::state_dir(NODE));
    // As `ip netns add` makes them (lo down): the plugin brings the pods' lo up.
    for ns in [NODE_NS, POD_A, POD_B] {
        scratch.bare_netns(ns);
    }

    // Without cbr0 the plugin asks to be called again later.
    let (ok, err) = cni("ADD", "pa", Some(&netns::path(POD_A)));
    assert!(!ok);
    assert_eq!(err["code"], 11, "{err}");
    assert!(!paths::endpoints_dir(NODE)
        .join(format!("{}.json", container_id("pa")))
        .exists());

    // cbr0 made by the same function the agent calls, run inside the node namespace; twice, to
    // show it is idempotent.
    for _ in 0..2 {
        let link = switchyard::netlink::block_on_in_netns(&netns::path(NODE_NS), || async {
            switchyard::netlink::ensure_bridge("cbr0", 1460, Ipv4Addr::new(10, 244, 1, 1), 24).await
        })
        .expect("enter node netns")
        .expect("ensure_bridge");
        assert_eq!(
            (link.name.as_str(), link.mtu, link.up),
            ("cbr0", 1460, true)
        );
    }
    let addrs = run(&mut in_ns(
        NODE_NS,
        &["ip", "-4", "-o", "addr", "show", "dev", "cbr0"],
    ));
    let addrs = String::from_utf8_lossy(&addrs.stdout);
    assert_eq!(addrs.matches("inet ").count(), 1, "{addrs}");
    assert!(addrs.contains("inet 10.244.1.1/24"), "{addrs}");
    switchyard::netlink::block_on_in_netns(&netns::path(NODE_NS), || async {
        switchyard::netlink::enable_ip_forward()
    })
    .expect("enter node netns")
    .expect("ip_forward");
    let fwd = run(&mut in_ns(
        NODE_NS,
        &["cat", "/proc/sys/net/ipv4/ip_forward"],
    ));
    assert_eq!(String::from_utf8_lossy(&fwd.stdout).trim(), "1");

    // ADD both pods.
    let (ok, ra) = cni("ADD", "pa", Some(&netns::path(POD_A)));
    assert!(ok, "{ra}");
    let (ok, rb) = cni("ADD", "pb", Some(&netns::path(POD_B)));
    assert!(ok, "{rb}");
    let (ip_a, ip_b) = (ip_of(&ra), ip_of(&rb));
    assert_ne!(ip_a, ip_b);
    for (r, ip, ns) in [(&ra, ip_a, POD_A), (&rb, ip_b, POD_B)] {
        assert_eq!(r["cniVersion"], "1.0.0");
        assert_eq!(r["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(r["ips"][0]["interface"], 1);
        assert_eq!(r["interfaces"][1]["name"], "eth0");
        assert_eq!(
            r["interfaces"][1]["sandbox"],
            netns::path(ns).display().to_string()
        );
        assert_eq!(r["routes"][0]["dst"], "0.0.0.0/0");
        let subnet: switchyard::cni::Subnet = "10.244.1.0/24".parse().unwrap();
        assert!(subnet.contains(ip) && ip != Ipv4Addr::new(10, 244, 1, 1));
        assert!(paths::ipam_dir(NODE).join(ip.to_string()).exists());
        // Pod side: eth0 with MTU 1460, the address, default route via the gateway, lo up.
        let eth = run(&mut in_ns(ns, &["ip", "-o", "addr", "show", "dev", "eth0"]));
        let eth = String::from_utf8_lossy(&eth.stdout);
        assert!(eth.contains(&format!("inet {ip}/24")), "{eth}");
        let link = run(&mut in_ns(ns, &["ip", "-o", "link", "show", "dev", "eth0"]));
        assert!(String::from_utf8_lossy(&link.stdout).contains("mtu 1460"));
        let route = run(&mut in_ns(ns, &["ip", "route", "show", "default"]));
        assert!(String::from_utf8_lossy(&route.stdout).contains("default via 10.244.1.1 dev eth0"));
        let lo = run(&mut in_ns(ns, &["ip", "-o", "link", "show", "dev", "lo"]));
        assert!(
            String::from_utf8_lossy(&lo.stdout).contains("UP"),
            "lo is up"
        );
    }

    // The record the agent reads.
    let rec_path = paths::endpoints_dir(NODE).join(format!("{}.json", container_id("pa")));
    let rec: EndpointRecord =
        serde_json::from_slice(&std::fs::read(&rec_path).expect("record")).expect("record json");
    assert_eq!(rec.ip, ip_a);
    assert_eq!(rec.pod_name, "pa");
    assert_eq!(rec.pod_namespace, "default");
    assert_eq!(rec.host_ifname, paths::host_veth_name(&container_id("pa")));
    assert_eq!(rec.gateway, Ipv4Addr::new(10, 244, 1, 1));
    assert_eq!(rec.prefix_len, 24);
    assert_eq!(rec.host_mac, ra["interfaces"][0]["mac"].as_str().unwrap());
    assert_eq!(rec.pod_mac, ra["interfaces"][1]["mac"].as_str().unwrap());
    // The socket programs know the pod's sockets by its namespace's cookie.
    let cookie = netns::run_in(POD_A, switchyard::datapath::devices::netns_cookie)
        .expect("enter the pod namespace")
        .expect("SO_NETNS_COOKIE");
    assert_eq!(
        rec.netns_cookie, cookie,
        "the record names the pod's namespace"
    );
    let host = run(&mut in_ns(
        NODE_NS,
        &["ip", "-o", "link", "show", "dev", &rec.host_ifname],
    ));
    let host = String::from_utf8_lossy(&host.stdout);
    assert!(
        host.starts_with(&format!("{}:", rec.host_ifindex)),
        "{host}"
    );
    assert!(
        host.contains("master cbr0") && host.contains("mtu 1460"),
        "{host}"
    );

    // ADD again for the same container: same address, still one record.
    let (ok, ra2) = cni("ADD", "pa", Some(&netns::path(POD_A)));
    assert!(ok, "{ra2}");
    assert_eq!(ip_of(&ra2), ip_a);
    let (ok, chk) = cni("CHECK", "pa", Some(&netns::path(POD_A)));
    assert!(ok, "CHECK: {chk}");

    // Pod A reaches pod B through cbr0.
    assert!(ping(POD_A, ip_b), "pod A pings pod B");
    assert!(
        !ping(POD_A, Ipv4Addr::new(10, 244, 1, 250)),
        "no answer from an unused address"
    );

    // echo in pod B, curl from pod A: the echo sees pod A's address.
    let _echo = Proc(
        in_ns(POD_B, &[&echo_bin(), "echo", "--port", "8080"])
            .env("HOSTNAME", "pb")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start echo"),
    );
    let url = format!("http://{ip_b}:8080/");
    let deadline = Instant::now() + Duration::from_secs(10);
    let body = loop {
        let out = in_ns(POD_A, &["curl", "-s", "--max-time", "2", &url])
            .output()
            .expect("curl");
        if out.status.success() {
            break String::from_utf8_lossy(&out.stdout).to_string();
        }
        assert!(Instant::now() < deadline, "echo in pod B never answered");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(body.starts_with(&format!("pod=pb peer={ip_a}:")), "{body}");

    // DEL both (pod B with its namespace already gone), then again.
    let marker = paths::attached_dir(NODE).join(container_id("pa"));
    std::fs::create_dir_all(marker.parent().unwrap()).unwrap();
    std::fs::write(&marker, b"").unwrap();
    let (ok, out) = cni("DEL", "pa", Some(&netns::path(POD_A)));
    assert!(ok, "{out}");
    drop(_echo);
    scratch.del_netns(POD_B);
    let (ok, out) = cni("DEL", "pb", None);
    assert!(ok, "{out}");
    for pod in ["pa", "pb"] {
        let id = container_id(pod);
        assert!(
            !link_exists(NODE_NS, &paths::host_veth_name(&id)),
            "host veth of {pod} is gone"
        );
        assert!(!paths::endpoints_dir(NODE)
            .join(format!("{id}.json"))
            .exists());
    }
    assert!(!marker.exists(), "DEL removes the attached marker");
    assert!(
        !link_exists(POD_A, "eth0"),
        "pod A's eth0 went with its veth"
    );
    for ip in [ip_a, ip_b] {
        assert!(
            !paths::ipam_dir(NODE).join(ip.to_string()).exists(),
            "{ip} released"
        );
    }
    let (ok, out) = cni("DEL", "pa", Some(&netns::path(POD_A)));
    assert!(ok, "repeated DEL: {out}");
    let (ok, out) = cni("DEL", "pb", Some(Path::new("/run/netns/sy-t-node-gone")));
    assert!(ok, "DEL with a vanished netns: {out}");
}

/// Two container ids whose host veth names are the same (a birthday search over the 32-bit
/// name hash: about 80,000 ids).
fn colliding_container_ids() -> (String, String) {
    let mut seen = std::collections::HashMap::new();
    for n in 0u64.. {
        let id = format!("sy-collide-{n:016x}");
        if let Some(first) = seen.insert(paths::host_veth_name(&id), id.clone()) {
            return (first, id);
        }
    }
    unreachable!("the search is unbounded")
}

/// The link index of `name` in namespace `ns`, if it exists.
fn link_index(ns: &str, name: &str) -> Option<u64> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "link", "show", name])
        .output()
        .ok()?;
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v[0]["ifindex"].as_u64()
}

#[test]
fn cni_add_refuses_a_host_veth_name_that_is_another_pods_link_and_leaves_it_alone() {
    if !switchyard_lab::lab::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    // Names of this process only, so the test never meets another run's namespaces.
    let pid = std::process::id();
    let node = Node {
        ns: format!("sy-t-clash{pid}-n"),
        name: format!("sy-t-clash{pid}"),
    };
    let (ns_owner, ns_other) = (format!("sy-t-clash{pid}-a"), format!("sy-t-clash{pid}-b"));
    let mut scratch = Scratch::default();
    scratch.dir(paths::state_dir(&node.name));
    for ns in [&node.ns, &ns_owner, &ns_other] {
        scratch.netns(ns);
    }
    switchyard::netlink::block_on_in_netns(&netns::path(&node.ns), || async {
        switchyard::netlink::ensure_bridge("cbr0", 1460, Ipv4Addr::new(10, 244, 1, 1), 24).await
    })
    .expect("enter node netns")
    .expect("ensure_bridge");

    let (owner_id, other_id) = colliding_container_ids();
    let host = paths::host_veth_name(&owner_id);
    assert_eq!(host, paths::host_veth_name(&other_id));
    let (ok, r) = node.cni("ADD", &owner_id, "owner", Some(&netns::path(&ns_owner)));
    assert!(ok, "{r}");
    let owner_ip = ip_of(&r);
    let index = link_index(&node.ns, &host).expect("the owner's host veth");

    // Another container with the same host veth name: refused, naming the pod that has it.
    let (ok, err) = node.cni("ADD", &other_id, "other", Some(&netns::path(&ns_other)));
    assert!(!ok, "{err}");
    assert_eq!(
        err["code"],
        switchyard::cni::error::code::HOST_LINK_TAKEN,
        "{err}"
    );
    let msg = err["msg"].as_str().expect("msg");
    assert!(
        msg.contains("default/owner") && msg.contains(&owner_id) && msg.contains(&host),
        "the error names the owner: {msg}"
    );
    assert_eq!(
        link_index(&node.ns, &host),
        Some(index),
        "the owner's veth is untouched"
    );
    assert!(ping(&ns_owner, Ipv4Addr::new(10, 244, 1, 1)), "and works");
    assert!(
        !link_exists(&ns_other, "eth0"),
        "nothing wired for the other"
    );
    assert!(!switchyard::cni::plugin::record_path(&node.name, &other_id).exists());
    let allocated: Vec<_> = std::fs::read_dir(paths::ipam_dir(&node.name))
        .expect("IPAM dir")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<Ipv4Addr>().ok())
        .collect();
    assert_eq!(
        allocated,
        vec![owner_ip],
        "no address taken for the refused ADD"
    );

    // DEL of the other container succeeds and still leaves the owner's veth alone.
    let (ok, out) = node.cni("DEL", &other_id, "other", Some(&netns::path(&ns_other)));
    assert!(ok, "{out}");
    assert_eq!(link_index(&node.ns, &host), Some(index));

    // The owner's own retried ADD starts from scratch as before: a new veth, the same address.
    let (ok, r) = node.cni("ADD", &owner_id, "owner", Some(&netns::path(&ns_owner)));
    assert!(ok, "{r}");
    assert_eq!(ip_of(&r), owner_ip);
    assert_ne!(link_index(&node.ns, &host), Some(index), "recreated");
    let (ok, out) = node.cni("DEL", &owner_id, "owner", Some(&netns::path(&ns_owner)));
    assert!(ok, "{out}");
    assert!(!link_exists(&node.ns, &host));
}
