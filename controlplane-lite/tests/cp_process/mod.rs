//! A `switchyard-cp` process for tests: started on 127.0.0.1 with a token file and a written
//! kubeconfig, reached with curl and kubectl as a user would, stopped (or killed) on demand.
#![allow(dead_code)]
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The token tests authenticate with.
pub const TOKEN: &str = "test-token-5f2a9c";

/// A scratch directory under the system temp dir, removed when dropped.
pub struct Scratch(pub PathBuf);

impl Scratch {
    /// A fresh directory named after `name` and this process.
    pub fn new(name: &str) -> Scratch {
        let d = std::env::temp_dir().join(format!("sy-cp-{name}-{}", std::process::id()));
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

/// A running server.
pub struct Cp {
    child: Option<Child>,
    /// `--data-dir`.
    pub data: PathBuf,
    /// The kubeconfig it wrote.
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// Its log (stderr).
    pub log: PathBuf,
}

/// The CA the server generated.
pub fn ca_file(data: &Path) -> PathBuf {
    data.join("pki").join("ca.crt")
}

impl Cp {
    /// Starts `switchyard-cp` on 127.0.0.1:`port` with data in `dir/data`, tokens from
    /// `dir/tokens.csv` (written with [`TOKEN`] if missing) and the kubeconfig at
    /// `dir/kubeconfig`; waits until `/healthz` answers over verified HTTPS.
    pub fn start(dir: &Path, port: u16) -> Cp {
        let tokens = dir.join("tokens.csv");
        if !tokens.exists() {
            std::fs::write(
                &tokens,
                format!("{TOKEN},admin,admin-uid,\"system:masters\"\n"),
            )
            .expect("token file");
        }
        let (data, kubeconfig) = (dir.join("data"), dir.join("kubeconfig"));
        let _ = std::fs::remove_file(&kubeconfig);
        let log = dir.join("cp.log");
        let logf = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_switchyard-cp"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--data-dir"])
            .arg(&data)
            .arg("--token-file")
            .arg(&tokens)
            .arg("--write-kubeconfig")
            .arg(&kubeconfig)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(logf)
            .spawn()
            .expect("start switchyard-cp");
        let cp = Cp {
            child: Some(child),
            url: format!("https://127.0.0.1:{port}"),
            data,
            kubeconfig,
            log,
        };
        cp.wait_healthy();
        cp
    }

    fn wait_healthy(&self) {
        let start = Instant::now();
        loop {
            let ok = ca_file(&self.data).exists()
                && self.kubeconfig.exists()
                && self
                    .curl(&["-f", &format!("{}/healthz", self.url)])
                    .status
                    .success();
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "switchyard-cp did not become healthy:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The server's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// curl verifying the server with its CA (`-s`, 5 s limit), plus `args`.
    pub fn curl(&self, args: &[&str]) -> Output {
        let ca = ca_file(&self.data);
        Command::new("curl")
            .args(["-sS", "--max-time", "5", "--cacert"])
            .arg(&ca)
            .args(args)
            .output()
            .expect("curl")
    }

    /// curl with the token: `method` `path` with an optional JSON body; (HTTP code, body).
    pub fn request(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        Client::new(&self.url, &self.data).request(method, path, body)
    }

    /// kubectl with the written kubeconfig.
    pub fn kubectl(&self, args: &[&str]) -> Output {
        kubectl(&self.kubeconfig, args)
    }

    /// Stops with SIGTERM and waits for the exit.
    pub fn stop(&mut self) {
        self.signal(libc::SIGTERM);
    }

    /// Kills with SIGKILL (no chance to clean up) and waits for the exit.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
    }

    fn signal(&mut self, sig: i32) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: signalling the child this test started.
            unsafe { libc::kill(c.id() as i32, sig) };
            let _ = c.wait();
        }
    }
}

impl Drop for Cp {
    fn drop(&mut self) {
        self.kill9();
    }
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

/// kubectl with `kubeconfig` (and a 10 s request limit), its discovery cache in a `kubecache`
/// directory beside the kubeconfig.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Output {
    let cache = kubeconfig.with_file_name("kubecache");
    kubectl_with_cache(kubeconfig, &cache, args)
}

/// kubectl with a fresh, empty discovery cache.
pub fn kubectl_cold(kubeconfig: &Path, args: &[&str]) -> Output {
    let cache = kubeconfig.with_file_name("kubecache-cold");
    let _ = std::fs::remove_dir_all(&cache);
    kubectl_with_cache(kubeconfig, &cache, args)
}

fn kubectl_with_cache(kubeconfig: &Path, cache: &Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .arg("--cache-dir")
        .arg(cache)
        .arg("--request-timeout=10s")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("kubectl")
}

/// stdout of a successful command; panics with stderr otherwise.
pub fn stdout_ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
