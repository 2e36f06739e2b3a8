//! End-to-end: what a network engineer types first to debug a Service — `kubectl logs`,
//! `exec`, `attach` and `port-forward` — against a one-node lab, with kubectl 1.32 itself: its
//! WebSocket protocols (`v5.channel.k8s.io`, SPDY tunnelled in a WebSocket) and plain SPDY,
//! through controlplane-lite to the node runtime. Every test builds its own lab (fixed namespace
//! names: one at a time, `--test-threads=1`).
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use switchyard_lab::{kube, probe, topology, Lab};

/// The echo example (three echo pods, the `echo` Service, a client pod) with everything Ready.
fn echo_lab() -> Lab {
    probe::example_lab(1, "echo.yaml", &[("app=echo", 3), ("!app", 1)]).expect("lab up")
}

/// kubectl against the lab, with `env` set; its whole output whatever the exit status.
fn kubectl_env(lab: &Lab, env: &[(&str, &str)], args: &[&str], stdin: &[u8]) -> Output {
    let mut child = kubectl_command(lab, env, args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("kubectl output")
}

/// `kubectl --kubeconfig <the lab's> ARGS` with `env` set, not started.
fn kubectl_command(lab: &Lab, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.arg("--kubeconfig")
        .arg(&lab.kubectl.kubeconfig)
        .args(args)
        .envs(env.iter().copied());
    cmd
}

fn kubectl(lab: &Lab, args: &[&str]) -> Output {
    kubectl_env(lab, &[], args, b"")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A background kubectl, killed when dropped; its stdout lines arrive on `lines`.
struct Background {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Background {
    fn start(lab: &Lab, env: &[(&str, &str)], args: &[&str]) -> Background {
        let mut child = kubectl_command(lab, env, args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("kubectl");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Background { child, lines }
    }

    /// The next line within `timeout`.
    fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until pod `name` satisfies `check` (its JSON).
fn wait_pod(lab: &Lab, name: &str, what: &str, check: impl Fn(&serde_json::Value) -> bool) {
    kube::wait(what, Duration::from_secs(60), None, || {
        Ok(lab
            .kubectl
            .get_json(&["pod", name])
            .is_ok_and(|p| check(&p)))
    })
    .expect(what);
}

const TALKER: &str = r#"apiVersion: v1
kind: Pod
metadata: {name: talker}
spec:
  containers:
  - name: talker
    image: switchyard/shell
    command: [sh, -c, 'i=0; while true; do echo "out $i"; echo "err $i" >&2; i=$((i+1)); sleep 0.2; done']
---
apiVersion: v1
kind: Pod
metadata: {name: pair}
spec:
  containers:
  - {name: first, image: switchyard/shell, command: [sh, -c, 'printf "one\ntwo\nthree\n"; sleep infinity']}
  - {name: second, image: switchyard/shell, command: [sh, -c, 'echo from-second; sleep infinity']}
---
apiVersion: v1
kind: Pod
metadata: {name: crashy}
spec:
  containers:
  - name: crashy
    image: switchyard/shell
    command: [sh, -c, 'm=/run/switchyard/n1/e2e-crashy; if [ -e $m ]; then echo second run; sleep infinity; fi; touch $m; echo first run; sleep 0.2; echo dying >&2; exit 1']
"#;

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn kubectl_logs_shows_stdout_and_stderr_tails_follows_and_keeps_the_previous_run() {
    let lab = echo_lab();
    probe::apply(&lab, TALKER).expect("apply");
    lab.kubectl
        .wait_pods_ready("!app", 4, Duration::from_secs(60))
        .expect("pods Ready");
    std::thread::sleep(Duration::from_secs(2));

    let all = kubectl(&lab, &["logs", "talker"]);
    assert!(all.status.success(), "{}", text(&all.stderr));
    let all = text(&all.stdout);
    assert!(
        all.starts_with("out 0\nerr 0\n") || all.starts_with("err 0\nout 0\n"),
        "both streams, from the first line: {all:?}"
    );

    let stamped = kubectl(&lab, &["logs", "talker", "--tail=1", "--timestamps"]);
    let stamped = text(&stamped.stdout);
    let (time, line) = stamped.trim_end().split_once(' ').expect("time and line");
    assert!(
        time.len() == "2026-12-02T01:02:03.123456789Z".len() && time.ends_with('Z'),
        "RFC 3339 with nanoseconds: {stamped:?}"
    );
    assert!(
        line.starts_with("out ") || line.starts_with("err "),
        "{stamped:?}"
    );

    // -f goes on with what the container writes after kubectl started.
    let last: u64 = all
        .lines()
        .filter_map(|l| l.strip_prefix("out "))
        .filter_map(|n| n.parse().ok())
        .max()
        .expect("a numbered line");
    let follow = Background::start(&lab, &[], &["logs", "-f", "talker", "--tail=1"]);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut later = None;
    while later.is_none() && Instant::now() < deadline {
        let Some(line) = follow.line(Duration::from_secs(2)) else {
            break;
        };
        later = line
            .strip_prefix("out ")
            .and_then(|n| n.parse::<u64>().ok())
            .filter(|n| *n > last + 5);
    }
    assert!(later.is_some(), "kubectl logs -f shows new lines");
    drop(follow);

    let second = kubectl(&lab, &["logs", "pair", "-c", "second"]);
    assert_eq!(text(&second.stdout), "from-second\n");
    let defaulted = kubectl(&lab, &["logs", "pair"]);
    assert_eq!(text(&defaulted.stdout), "one\ntwo\nthree\n");
    let tail = kubectl(&lab, &["logs", "pair", "--tail=2"]);
    assert_eq!(text(&tail.stdout), "two\nthree\n");
    assert!(
        text(&defaulted.stderr).contains("Defaulted container \"first\" out of: first, second"),
        "{}",
        text(&defaulted.stderr)
    );
    let raw = kubectl(
        &lab,
        &["get", "--raw", "/api/v1/namespaces/default/pods/pair/log"],
    );
    assert!(!raw.status.success());
    assert!(
        text(&raw.stderr).contains(
            "a container name must be specified for pod pair, choose one of: [first second]"
        ),
        "{}",
        text(&raw.stderr)
    );

    wait_pod(&lab, "crashy", "crashy to run again", |p| {
        let cs = &p["status"]["containerStatuses"][0];
        cs["restartCount"] == 1 && cs["state"]["running"].is_object()
    });
    let current = kubectl(&lab, &["logs", "crashy"]);
    assert_eq!(text(&current.stdout), "second run\n");
    let previous = kubectl(&lab, &["logs", "crashy", "--previous"]);
    // stdout and stderr are two pipes, so lines are ordered as they arrive (as the kubelet's
    // CRI logs are); the container pauses between them.
    assert_eq!(text(&previous.stdout), "first run\ndying\n");
    let none = kubectl(&lab, &["logs", "talker", "--previous"]);
    assert_eq!(none.status.code(), Some(1));
    assert_eq!(
        text(&none.stderr).trim(),
        "Error from server (BadRequest): previous terminated container \"talker\" in pod \"talker\" not found"
    );

    // attach shows what the running container writes from now on.
    let attach = Background::start(&lab, &[], &["attach", "talker"]);
    let line = attach.line(Duration::from_secs(10)).unwrap_or_default();
    assert!(line.starts_with("out "), "kubectl attach: {line:?}");
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn kubectl_exec_runs_in_the_pod_with_its_output_input_terminal_and_exit_code() {
    let lab = echo_lab();
    let out = kubectl(
        &lab,
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(
        text(&out.stderr).starts_with("err\n"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "kubectl exits with the command's code"
    );

    let cat = kubectl_env(&lab, &[], &["exec", "-i", "client", "--", "cat"], b"hi\n");
    assert!(cat.status.success(), "{}", text(&cat.stderr));
    assert_eq!(text(&cat.stdout), "hi\n");

    let ip = lab.kubectl.cluster_ip("echo").expect("ClusterIP");
    let url = format!("http://{ip}/");
    let curl = kubectl(
        &lab,
        &[
            "exec",
            "client",
            "--",
            "curl",
            "-s",
            "--max-time",
            "5",
            &url,
        ],
    );
    assert!(
        text(&curl.stdout).starts_with("pod=echo-"),
        "the ClusterIP answers from inside the pod: {} {}",
        text(&curl.stdout),
        text(&curl.stderr)
    );

    // The container's environment, directory and mount namespace (the service-account volume).
    let inside = kubectl(
        &lab,
        &[
            "exec",
            "client",
            "--",
            "sh",
            "-c",
            "echo $POD_NAME; pwd; cat /var/run/secrets/kubernetes.io/serviceaccount/namespace",
        ],
    );
    assert_eq!(text(&inside.stdout), "client\n/\ndefault");

    let tty = Command::new("script")
        .args(["-qec"])
        .arg(format!(
            "kubectl --kubeconfig {} exec -it client -- sh -c 'tty; stty size'",
            lab.kubectl.kubeconfig.display()
        ))
        .arg("/dev/null")
        .stdin(Stdio::null())
        .output()
        .expect("script");
    let tty_out = text(&tty.stdout);
    assert!(tty_out.contains("/dev/pts/"), "a terminal: {tty_out:?}");

    let missing = kubectl(&lab, &["exec", "client", "--", "no-such-command"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        text(&missing.stderr).contains("executable file not found in $PATH"),
        "{}",
        text(&missing.stderr)
    );
}

/// The local port `kubectl port-forward` chose, from its first line.
fn forwarded_port(pf: &Background) -> u16 {
    let first = pf
        .line(Duration::from_secs(20))
        .expect("port-forward started");
    // "Forwarding from 127.0.0.1:38473 -> 8080"
    first
        .strip_prefix("Forwarding from 127.0.0.1:")
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("unexpected first line: {first:?}"))
}

fn curl_local(port: u16) -> String {
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5"])
        .arg(format!("http://127.0.0.1:{port}/"))
        .output()
        .expect("curl");
    text(&out.stdout)
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn kubectl_port_forward_reaches_the_pod_over_websockets_and_spdy_and_only_the_api_server_may_call_the_node(
) {
    let lab = echo_lab();
    for env in [&[][..], &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]] {
        let pf = Background::start(&lab, env, &["port-forward", "pod/echo-1", ":8080"]);
        let port = forwarded_port(&pf);
        for _ in 0..3 {
            let answer = curl_local(port);
            assert!(
                answer.starts_with("pod=echo-1 peer=127.0.0.1:"),
                "{env:?}: {answer:?}"
            );
        }
    }
    let pf = Background::start(&lab, &[], &["port-forward", "pod/echo-1", ":9"]);
    let port = forwarded_port(&pf);
    assert_eq!(curl_local(port), "", "nothing listens on port 9 in the pod");

    // The node runtime's API: 401 without the API server's client certificate, even with the
    // administrator's bearer token.
    let token = std::fs::read_to_string(lab.opts.root.join("target/lab/token.csv"))
        .expect("token file")
        .split(',')
        .next()
        .unwrap_or_default()
        .to_string();
    let url = format!(
        "https://{}:10250/containerLogs/default/echo-1/echo",
        topology::node_addr(1)
    );
    let bearer = format!("Authorization: Bearer {token}");
    for auth in [&[][..], &["-H", bearer.as_str()][..]] {
        let code = Command::new("curl")
            .args([
                "-sk",
                "--max-time",
                "5",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
            ])
            .args(auth)
            .arg(&url)
            .output()
            .expect("curl");
        assert_eq!(text(&code.stdout), "401", "{auth:?}");
    }
}

#[test]
#[ignore = "needs root and the netns lab: run with cargo xtask test"]
fn kubectl_get_events_and_describe_show_what_the_scheduler_and_the_node_runtime_did() {
    let lab = echo_lab();
    let reasons = |pod: &str| -> Vec<String> {
        let out = kubectl(
            &lab,
            &[
                "get",
                "events",
                "--field-selector",
                &format!("involvedObject.name={pod}"),
                "-o",
                "jsonpath={range .items[*]}{.reason}{\"\\n\"}{end}",
            ],
        );
        text(&out.stdout).lines().map(str::to_string).collect()
    };
    let mut seen = Vec::new();
    kube::wait(
        "the scheduler's and the node runtime's Events on echo-1",
        Duration::from_secs(15),
        None,
        || {
            seen = reasons("echo-1");
            Ok(["Scheduled", "Pulled", "Created", "Started"]
                .iter()
                .all(|r| seen.iter().any(|s| s == r)))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
    let described = text(&kubectl(&lab, &["describe", "pod", "echo-1"]).stdout);
    assert!(
        described.contains("Started container echo") && described.contains("kubelet"),
        "kubectl describe lists the node runtime's Events: {described}"
    );
    // Deleting a pod: the node runtime says it stops the container.
    let out = kubectl(&lab, &["delete", "pod", "echo-2", "--wait=false"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    kube::wait(
        "a Killing Event on echo-2",
        Duration::from_secs(15),
        None,
        || {
            seen = reasons("echo-2");
            Ok(seen.iter().any(|s| s == "Killing"))
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {seen:?}"));
}
