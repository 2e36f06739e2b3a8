//! End-to-end under faults, with a request loop running through a ClusterIP all along: the agent
//! and controlplane-lite killed with SIGKILL and restarted, the API server away for a minute
//! and the agent started while it is away. The datapath keeps serving what it last knew, the
//! agent catches up when the API server returns, and `/readyz` tells the difference.
use std::io::{BufRead, BufReader, Write};
use std::process::Child;
use std::time::Duration;

use switchyard_lab::{kube, probe, topology, Lab};

/// A one-node lab with `examples/echo.yaml` applied and Ready; the echo Service's ClusterIP.
fn echo_lab() -> (Lab, String) {
    let lab = probe::example_lab(1, "echo.yaml", &[("app=echo", 3), ("!app", 1)]).expect("lab up");
    let ip = lab.kubectl.cluster_ip("echo").expect("cluster IP");
    (lab, ip)
}

/// New connections to `ip:80` from the client pod every 20 ms, each sending a line and reading
/// the answer, until told to stop on stdin; then prints `sent failed [first failures]`.
struct RequestLoop(Child);

impl RequestLoop {
    fn start(ip: &str) -> RequestLoop {
        let script = format!(
            r#"
import socket, sys, threading, time
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
sent, failed = 0, []
while not stop.is_set():
    sent += 1
    try:
        s = socket.create_connection(('{ip}', 80), timeout=2)
        s.sendall(b'r%d\n' % sent)
        got = s.recv(200)
        s.close()
        if b'line=r%d' % sent not in got:
            raise Exception('answer %r' % got)
    except Exception as e:
        failed.append('%.1f: %s' % (time.time(), e))
    time.sleep(0.02)
print(sent, len(failed), failed[:5], flush=True)
"#
        );
        let child = probe::spawn_python(&probe::pod_ns("client"), &script);
        RequestLoop(child)
    }

    /// Stops the loop: (sent, failed, what the loop printed).
    fn finish(mut self) -> (u64, u64, String) {
        let _ = self.0.stdin.take().expect("stdin").write_all(b"stop\n");
        let mut line = String::new();
        BufReader::new(self.0.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the loop's counts");
        let _ = self.0.wait();
        let mut f = line.split_whitespace();
        let mut num = || f.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        (num(), num(), line)
    }
}

impl Drop for RequestLoop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent's `/readyz` on node 1: its HTTP status and body.
fn readyz(lab: &Lab) -> (String, String) {
    let out = lab
        .exec_in(
            &topology::node_ns(1),
            &[
                "curl",
                "-s",
                "--max-time",
                "2",
                "-w",
                "\n%{http_code}",
                "http://127.0.0.1:10249/readyz",
            ],
        )
        .expect("curl /readyz");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.to_string(), body.trim().to_string())
}

/// Creates Service `name` (port 81 → the echo pods' 8080) and waits until the client pod
/// reaches it: the agent programs what is created after the faults.
fn new_service_is_programmed(lab: &Lab, name: &str) {
    probe::apply(
        lab,
        &format!(
            "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\nspec:\n  selector: {{app: echo}}\n  ports: [{{port: 81, targetPort: 8080}}]\n"
        ),
    )
    .expect("apply the new Service");
    let ip = lab.kubectl.cluster_ip(name).expect("its ClusterIP");
    let url = format!("http://{ip}:81/");
    kube::wait(
        &format!("Service {name} ({url}) to answer"),
        Duration::from_secs(20),
        None,
        || Ok(probe::echo(lab, &probe::pod_ns("client"), &url).is_ok()),
    )
    .expect("a Service created after the faults is programmed");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn no_request_fails_while_the_agent_and_the_api_server_are_killed_and_restarted() {
    let (lab, ip) = echo_lab();
    let requests = RequestLoop::start(&ip);
    std::thread::sleep(Duration::from_secs(2));

    assert!(lab.kill("agent-n1"), "the agent was running");
    std::thread::sleep(Duration::from_secs(2));
    lab.start_agent_again(1).expect("agent back");

    assert!(lab.kill("cp"), "controlplane-lite was running");
    std::thread::sleep(Duration::from_secs(2));
    lab.start_cp().expect("controlplane-lite back");
    // What was acknowledged before the kill is still there.
    lab.kubectl
        .wait_pods_ready("app=echo", 3, Duration::from_secs(30))
        .expect("the pods are still there");
    new_service_is_programmed(&lab, "after-kills");
    std::thread::sleep(Duration::from_secs(1));

    let (sent, failed, printed) = requests.finish();
    println!("request loop: {printed}");
    assert!(sent > 150, "the loop ran throughout: {printed}");
    assert_eq!(failed, 0, "no request failed: {printed}");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn the_datapath_serves_while_the_api_server_is_away_for_a_minute_and_readyz_says_so() {
    let (lab, ip) = echo_lab();
    assert_eq!(readyz(&lab).0, "200", "ready before the outage");
    let requests = RequestLoop::start(&ip);
    std::thread::sleep(Duration::from_secs(1));

    assert!(lab.kill("cp"), "controlplane-lite was running");
    let away = std::time::Instant::now();
    let mut seen = (String::new(), String::new());
    kube::wait(
        "the agent's /readyz to report the lost API server",
        Duration::from_secs(30),
        None,
        || {
            seen = readyz(&lab);
            Ok(seen.0 == "503")
        },
    )
    .unwrap_or_else(|e| panic!("{e}: last /readyz {seen:?}"));
    println!("/readyz while the API server is away: {seen:?}");

    // The agent restarted while the API server is away: it keeps the datapath as pinned and
    // says it is waiting.
    assert!(lab.kill("agent-n1"), "the agent was running");
    lab.start_agent(1).expect("start the agent");
    kube::wait(
        "the restarted agent's /readyz to answer 503",
        Duration::from_secs(20),
        None,
        || {
            seen = readyz(&lab);
            Ok(seen.0 == "503")
        },
    )
    .unwrap_or_else(|e| panic!("{e}: last /readyz {seen:?}"));
    println!("/readyz of an agent started without the API server: {seen:?}");
    assert!(
        seen.1.contains("API server"),
        "it says what it waits for: {seen:?}"
    );

    let rest = Duration::from_secs(60).saturating_sub(away.elapsed());
    std::thread::sleep(rest);
    lab.start_cp().expect("controlplane-lite back");
    kube::wait(
        "the agent's /readyz to answer 200 again",
        Duration::from_secs(60),
        Some(&format!("see {}", lab.agent_log(1).display())),
        || Ok(readyz(&lab).0 == "200"),
    )
    .expect("ready again");
    new_service_is_programmed(&lab, "after-outage");

    let (sent, failed, printed) = requests.finish();
    println!("request loop: {printed}");
    assert!(sent > 1000, "the loop ran throughout the minute: {printed}");
    assert_eq!(failed, 0, "no request failed: {printed}");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn an_agent_started_without_its_program_links_attaches_every_local_pod_before_its_first_sync() {
    let (lab, ip) = echo_lab();
    assert!(lab.kill("agent-n1"), "the agent was running");
    // The maps stay pinned; the programs detach with their link pins (links removed by hand,
    // or the benchmark's turns with kube-proxy): the kernel's bridge carries the pods' packets
    // until the agent attaches them again.
    std::fs::remove_dir_all("/sys/fs/bpf/switchyard/n1/links").expect("remove the link pins");
    lab.start_agent_again(1).expect("agent back");
    let log = lab.log_of("agent-n1");
    let text = || std::fs::read_to_string(&log).unwrap_or_default();
    kube::wait(
        "the restarted agent's first services sync",
        Duration::from_secs(60),
        Some(&format!("see {}", log.display())),
        || Ok(text().contains("services synced")),
    )
    .expect("first sync");
    let text = text();
    let (before, after) = text.split_once("services synced").expect("the sync line");
    let attached = |t: &str| t.matches("pod attached to the datapath").count();
    assert!(
        attached(before) >= 4 && attached(after) == 0,
        "every pod on n1 (the three echo pods and the client among them) is attached before the \
         first sync, which makes the agent ready:\n{text}"
    );
    probe::echo(&lab, &probe::pod_ns("client"), &format!("http://{ip}/"))
        .expect("the ClusterIP answers through the restarted agent");
}
