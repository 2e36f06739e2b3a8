//! The one harness of the integration tests: starts the real `switchyard-cp` binary on 127.0.0.1
//! and reaches it as a user would, with kubectl 1.32, curl and the Python `kubernetes` client.
//!
//! Every server serves HTTPS with the CA it generates, takes bearer tokens from a token file
//! holding [`TOKEN`], and writes the kubeconfig clients use (`--write-kubeconfig`), as the lab
//! uses it. Its directory holds `data/`, `tokens.csv`, `kubeconfig`, `cp.log` and kubectl's
//! discovery cache. [`Cp::start`] picks a temporary directory and lets the server pick a free
//! port; [`Cp::start_in`] takes both, for tests that restart a server on its data or kill it.
#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// The server binary cargo built for these tests.
pub const BINARY: &str = env!("CARGO_BIN_EXE_switchyard-cp");

/// The token every server accepts (user `admin`, group `system:masters`).
pub const TOKEN: &str = "test-token-5f2a9c";

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

/// A fresh directory under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

static COUNTER: AtomicUsize = AtomicUsize::new(0);

impl Scratch {
    /// A fresh directory named after `name`, this process and a counter.
    pub fn new(name: &str) -> Scratch {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let d = std::env::temp_dir().join(format!("sy-cp-{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("scratch dir");
        Scratch(d)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free TCP port on 127.0.0.1 (bound and released: a restart can reuse it).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// The CA the server with data directory `data` generated.
pub fn ca_file(data: &Path) -> PathBuf {
    data.join("pki").join("ca.crt")
}

/// One running `switchyard-cp`; killed on drop (and its directory removed if the harness made
/// it), printing its log when the test failed.
pub struct Cp {
    child: Option<Child>,
    /// Its directory.
    pub dir: PathBuf,
    /// `--data-dir`: the object log and `pki/`.
    pub data: PathBuf,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`, from the kubeconfig.
    pub url: String,
    /// `--listen`.
    listen: String,
    /// More flags.
    extra: Vec<String>,
    /// The temporary directory, when the harness made it.
    _scratch: Option<Scratch>,
}

impl Cp {
    /// A server with default flags.
    pub fn start() -> Cp {
        Cp::start_with(&[])
    }

    /// A server with extra flags (e.g. `--node-monitor-grace 3`).
    pub fn start_with(extra: &[&str]) -> Cp {
        let scratch = Scratch::new("cp");
        Cp::launch(
            scratch.0.clone(),
            "127.0.0.1:0".into(),
            extra,
            Some(scratch),
        )
    }

    /// A server on 127.0.0.1:`port` in `dir`, which outlives it: a later `start_in` with the same
    /// directory and port finds the same data, CA and token, and its clients' kubeconfigs work.
    pub fn start_in(dir: &Path, port: u16) -> Cp {
        Cp::launch(dir.to_path_buf(), format!("127.0.0.1:{port}"), &[], None)
    }

    fn launch(dir: PathBuf, listen: String, extra: &[&str], scratch: Option<Scratch>) -> Cp {
        let mut cp = Cp {
            child: None,
            data: dir.join("data"),
            kubeconfig: dir.join("kubeconfig"),
            url: String::new(),
            dir,
            listen,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            _scratch: scratch,
        };
        cp.spawn();
        cp
    }

    /// Starts the binary and waits until `/healthz` answers over HTTPS verified with its CA.
    fn spawn(&mut self) {
        let tokens = self.dir.join("tokens.csv");
        if !tokens.exists() {
            std::fs::write(
                &tokens,
                format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
            )
            .expect("token file");
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("cp.log"))
            .expect("log file");
        let _ = std::fs::remove_file(&self.kubeconfig);
        let child = Command::new(BINARY)
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(&self.data)
            .arg("--token-file")
            .arg(&tokens)
            .arg("--write-kubeconfig")
            .arg(&self.kubeconfig)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start switchyard-cp");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = self.server_addr() {
                self.url = format!("https://{addr}");
                if TcpStream::connect(&addr).is_ok()
                    && self.curl(&["-f", &format!("{}/healthz", self.url)]).success
                {
                    return;
                }
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

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// `method` `path` with the token, `content_type` and `body` sent from a file (bodies of any
    /// size); (HTTP code, body).
    pub fn send(&self, method: &str, path: &str, content_type: &str, body: &[u8]) -> (u16, String) {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let file = self.dir.join(format!("body-{n}"));
        std::fs::write(&file, body).expect("body file");
        let auth = format!("Authorization: Bearer {TOKEN}");
        let ct = format!("Content-Type: {content_type}");
        let data = format!("@{}", file.display());
        let out = self.curl(&[
            "-X",
            method,
            "-H",
            &auth,
            "-H",
            &ct,
            "--data-binary",
            &data,
            "-w",
            "\n%{http_code}",
            &format!("{}{path}", self.url),
        ]);
        let _ = std::fs::remove_file(&file);
        let (body, code) = out.stdout.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }

    /// The server's log so far (all of its lives).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("cp.log")).unwrap_or_default()
    }

    /// Stops the server: SIGTERM, then SIGKILL if it is still running after 10 s.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGTERM);
            let deadline = Instant::now() + Duration::from_secs(10);
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

    /// Kills the server with SIGKILL (no chance to clean up) and waits for the exit.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops and starts the server on the same directory and `--listen` address (with
    /// [`Cp::start`] the new port may differ: the kubeconfig and [`Cp::url`] follow it).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }

    /// curl verifying the server with its CA (5 s limit), plus `args`.
    pub fn curl(&self, args: &[&str]) -> Out {
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(ca_file(&self.data))
            .args(args);
        run(cmd, None, format!("curl {}", args.join(" ")))
    }

    /// A [`Client`] of this server.
    pub fn client(&self) -> Client {
        Client::new(&self.url, &self.data)
    }

    /// `method` `path` with the token and an optional JSON body; (HTTP code, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        self.client().request(method, path, body)
    }

    /// `kubectl ARGS`.
    pub fn kubectl(&self, args: &[&str]) -> Out {
        kubectl_in(&self.kubeconfig, args, None, &[])
    }

    /// `kubectl ARGS` with `input` on standard input (for `-f -`).
    pub fn kubectl_stdin(&self, args: &[&str], input: &str) -> Out {
        kubectl_in(&self.kubeconfig, args, Some(input), &[])
    }

    /// `kubectl ARGS` with extra environment variables.
    pub fn kubectl_env(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        kubectl_in(&self.kubeconfig, args, None, env)
    }

    /// A `kubectl` child process with piped standard output (for `get -w`), without the
    /// request time limit.
    pub fn kubectl_spawn(&self, args: &[&str]) -> Child {
        kubectl_command(&self.kubeconfig, &kube_cache(&self.kubeconfig))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
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
        python(&self.kubeconfig, path, args)
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        self.kill9();
        if std::thread::panicking() {
            eprintln!(
                "--- switchyard-cp log ({}):\n{}",
                self.dir.display(),
                self.log()
            );
        }
    }
}

/// Sends `sig` to `child`.
fn signal(child: &Child, sig: i32) {
    // SAFETY: signalling the child process this test started and has not waited for yet.
    unsafe { libc::kill(child.id() as i32, sig) };
}

/// Requests with the token through curl, verified with the CA (usable from any thread).
pub struct Client {
    url: String,
    ca: PathBuf,
}

impl Client {
    /// A client of the server at `url` whose data directory is `data`.
    pub fn new(url: &str, data: &Path) -> Client {
        Client {
            url: url.to_string(),
            ca: ca_file(data),
        }
    }

    /// `method` `path` with an optional JSON body (merge patch for PATCH); (HTTP code, body).
    /// The code is 0 when no answer came.
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let url = format!("{}{path}", self.url);
        let auth = format!("Authorization: Bearer {TOKEN}");
        let ct = if method == "PATCH" {
            "Content-Type: application/merge-patch+json"
        } else {
            "Content-Type: application/json"
        };
        let mut cmd = Command::new("curl");
        cmd.args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&self.ca)
            .args(["-X", method, "-H", &auth, "-w", "\n%{http_code}"]);
        if let Some(b) = body {
            cmd.args(["-H", ct, "--data-binary", b]);
        }
        let out = cmd.arg(&url).output().expect("curl");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (code.trim().parse().unwrap_or(0), body.to_string())
    }
}

/// kubectl's discovery cache for `kubeconfig`: a `kube-cache` directory beside it.
fn kube_cache(kubeconfig: &Path) -> PathBuf {
    kubeconfig.with_file_name("kube-cache")
}

/// A `kubectl` command with `kubeconfig` and the discovery cache `cache`.
fn kubectl_command(kubeconfig: &Path, cache: &Path) -> Command {
    let mut cmd = Command::new("kubectl");
    cmd.env("KUBECONFIG", kubeconfig).env("KUBECACHEDIR", cache);
    cmd
}

/// `kubectl ARGS` with `kubeconfig`, its discovery cache beside it (shared by every
/// kubeconfig in one directory).
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Out {
    kubectl_in(kubeconfig, args, None, &[])
}

/// `kubectl ARGS` with `kubeconfig` and `input` on standard input (for `-f -`).
pub fn kubectl_stdin_as(kubeconfig: &Path, args: &[&str], input: &str) -> Out {
    kubectl_in(kubeconfig, args, Some(input), &[])
}

/// `kubectl ARGS` with `kubeconfig` and a fresh, empty discovery cache.
pub fn kubectl_cold(kubeconfig: &Path, args: &[&str]) -> Out {
    let cache = kubeconfig.with_file_name("kube-cache-cold");
    let _ = std::fs::remove_dir_all(&cache);
    kubectl_with(kubeconfig, &cache, args, None, &[])
}

fn kubectl_in(kubeconfig: &Path, args: &[&str], input: Option<&str>, env: &[(&str, &str)]) -> Out {
    kubectl_with(kubeconfig, &kube_cache(kubeconfig), args, input, env)
}

/// `kubectl --request-timeout=10s ARGS`, with `input` on standard input and `env` set.
fn kubectl_with(
    kubeconfig: &Path,
    cache: &Path,
    args: &[&str],
    input: Option<&str>,
    env: &[(&str, &str)],
) -> Out {
    let mut cmd = kubectl_command(kubeconfig, cache);
    cmd.arg("--request-timeout=10s")
        .args(args)
        .envs(env.iter().copied());
    run(cmd, input, format!("kubectl {}", args.join(" ")))
}

/// `python3 PATH ARGS` with `KUBECONFIG` set to `kubeconfig`.
pub fn python(kubeconfig: &Path, path: &Path, args: &[&str]) -> Out {
    let mut cmd = Command::new("python3");
    cmd.env("KUBECONFIG", kubeconfig).arg(path).args(args);
    run(
        cmd,
        None,
        format!("python3 {} {}", path.display(), args.join(" ")),
    )
}

/// Runs `cmd` (described as `what`) with `input` on standard input; what it printed.
pub fn run(mut cmd: Command, input: Option<&str>, what: String) -> Out {
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

/// The resident set size of process `pid` in bytes (VmRSS of /proc/PID/status), if it runs.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Runs `f` while sampling the RSS of `pid` every 5 ms; `f`'s result and the largest sample.
pub fn peak_rss_during<T>(pid: u32, f: impl FnOnce() -> T) -> (T, u64) {
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let sampler = std::thread::spawn(move || {
        let mut peak = 0;
        while !flag.load(Ordering::SeqCst) {
            peak = peak.max(rss_bytes(pid).unwrap_or(0));
            std::thread::sleep(Duration::from_millis(5));
        }
        peak.max(rss_bytes(pid).unwrap_or(0))
    });
    let out = f();
    done.store(true, Ordering::SeqCst);
    (out, sampler.join().expect("sampler"))
}

/// Now, as RFC 3339 UTC with seconds (what a kubelet writes in heartbeats).
pub fn now() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output()
        .expect("date");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// `text` with each line's words joined by single spaces (for `describe` output).
pub fn fields(text: &str) -> Vec<String> {
    text.lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// Whitespace-separated words of each line (for table output).
pub fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .map(|l| l.split_whitespace().map(str::to_string).collect())
        .collect()
}
