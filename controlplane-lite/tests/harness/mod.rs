//! The harness of the client compatibility suites (kubectl_compat.rs, api_semantics.rs,
//! nodes_pods.rs, python_compat.rs): starts the real `switchyard-cp` binary on 127.0.0.1 with a
//! free port and a temporary data directory, and runs kubectl 1.32 and the Python `kubernetes`
//! client against it through a kubeconfig, as a user would.
//!
//! How the server is reached lives in [`Cp::spawn`] only: HTTPS with the CA the server
//! generates, a bearer token from a token file, and the kubeconfig the server writes
//! (`--write-kubeconfig`), as the lab uses it.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The server binary cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard-cp");

/// What a command printed.
#[derive(Debug)]
pub struct Out {
    /// Exit status was 0.
    pub success: bool,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// The command line, for messages.
    pub what: String,
}

impl Out {
    /// Standard output of a command that must have succeeded.
    #[track_caller]
    pub fn ok(self) -> String {
        assert!(
            self.success,
            "`{}` failed:\n{}{}",
            self.what, self.stdout, self.stderr
        );
        self.stdout
    }

    /// Standard error of a command that must have failed.
    #[track_caller]
    pub fn fails(self) -> String {
        assert!(
            !self.success,
            "`{}` should have failed but printed:\n{}",
            self.what, self.stdout
        );
        self.stderr
    }
}

/// One running `switchyard-cp`; killed and its directory removed on drop.
pub struct Cp {
    child: Option<Child>,
    /// Temporary directory: data, kubeconfig, logs, kubectl cache.
    pub dir: PathBuf,
    /// The kubeconfig clients use.
    pub kubeconfig: PathBuf,
    extra: Vec<String>,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Cp {
    /// A server with default flags.
    pub fn start() -> Cp {
        Cp::start_with(&[])
    }

    /// A server with extra flags (e.g. `--node-monitor-grace 3`).
    pub fn start_with(extra: &[&str]) -> Cp {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let dir = std::env::temp_dir().join(format!("sy-cp-compat-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut cp = Cp {
            child: None,
            kubeconfig: dir.join("kubeconfig"),
            dir,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        };
        cp.spawn();
        cp
    }

    /// Starts the binary and waits until it accepts connections.
    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("cp.log"))
            .expect("log file");
        let mut cmd = Command::new(BINARY);
        cmd.arg("--data-dir")
            .arg(self.dir.join("data"))
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        // HTTPS with a bearer token: the kubeconfig the server writes carries both (without
        // credentials kubectl would prompt for a username).
        let tokens = self.dir.join("tokens.csv");
        std::fs::write(&tokens, "compat-suite-token-7d1e4b,compat,1000\n").expect("tokens");
        let _ = std::fs::remove_file(&self.kubeconfig);
        cmd.args(["--listen", "127.0.0.1:0", "--write-kubeconfig"])
            .arg(&self.kubeconfig)
            .arg("--token-file")
            .arg(&tokens);
        self.child = Some(cmd.spawn().expect("start switchyard-cp"));
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self
                .server_addr()
                .is_some_and(|a| TcpStream::connect(a).is_ok())
            {
                return;
            }
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!("switchyard-cp exited with {status}:\n{}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "switchyard-cp did not come up:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// host:port from the kubeconfig the server wrote, once it is complete.
    fn server_addr(&self) -> Option<String> {
        let text = std::fs::read_to_string(&self.kubeconfig).ok()?;
        let doc: serde_yaml::Value = serde_yaml::from_str(&text).ok()?;
        let url = doc["clusters"][0]["cluster"]["server"].as_str()?;
        let rest = url.split_once("://")?.1;
        Some(rest.trim_end_matches('/').to_string())
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cp.log")).unwrap_or_default()
    }

    /// Stops the server (SIGTERM, then SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same data directory.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    fn env(&self, cmd: &mut Command) {
        cmd.env("KUBECONFIG", &self.kubeconfig)
            .env("KUBECACHEDIR", self.dir.join("kube-cache"));
    }

    /// `kubectl ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Out {
        self.kubectl_in(args, None, &[])
    }

    /// `kubectl ARGS` with `input` on standard input (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Out {
        self.kubectl_in(args, Some(input), &[])
    }

    /// `kubectl ARGS` with extra environment variables.
    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.kubectl_in(args, None, env)
    }

    fn kubectl_in(&self, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Out {
        let mut cmd = Command::new("kubectl");
        self.env(&mut cmd);
        cmd.args(args).envs(env.iter().copied());
        run(cmd, input, format!("kubectl {}", args.join(" ")))
    }

    /// A `kubectl` child process with piped output (for `get -w`).
    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        let mut cmd = Command::new("kubectl");
        self.env(&mut cmd);
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("kubectl")
    }

    /// `kubectl apply -f -` of a YAML document; must succeed.
    #[track_caller]
    pub fn apply(&self, yaml: &str) -> String {
        self.kubectl_stdin(&["apply", "-f", "-"], yaml).ok()
    }

    /// `kubectl get ARGS -o jsonpath=PATH`; must succeed.
    #[track_caller]
    pub fn jsonpath(&self, args: &[&str], path: &str) -> String {
        let jp = format!("-o=jsonpath={path}");
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.push(&jp);
        self.kubectl(&all).ok()
    }

    /// `kubectl get ARGS -o json`, parsed; must succeed.
    #[track_caller]
    pub fn get_json(&self, args: &[&str]) -> serde_json::Value {
        let mut all = vec!["get"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["-o", "json"]);
        serde_json::from_str(&self.kubectl(&all).ok()).expect("kubectl -o json prints JSON")
    }

    /// Runs the Python script at `path` with `args` and the kubeconfig.
    pub fn python(&self, path: &Path, args: &[&str]) -> Out {
        let mut cmd = Command::new("python3");
        self.env(&mut cmd);
        cmd.arg(path).args(args);
        run(
            cmd,
            None,
            format!("python3 {} {}", path.display(), args.join(" ")),
        )
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- switchyard-cp log ({}):\n{}",
                self.dir.display(),
                self.log()
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn run(mut cmd: Command, input: Option<&str>, what: String) -> Out {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
    if let Some(text) = input {
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(text.as_bytes()).expect("write stdin");
    }
    let out = child.wait_with_output().expect("wait");
    Out {
        success: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        what,
    }
}

/// Polls `f` every 100 ms until it returns `Some`, for at most `secs` seconds.
#[track_caller]
pub fn eventually<T>(secs: u64, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whitespace-separated words of each line (for table output).
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
