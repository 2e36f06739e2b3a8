//! A running lab: topology, controlplane-lite, and per node the kubelet and the agent.
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::cmd::{output, run};
use crate::daemonset::DaemonSetRun;
use crate::kube::{self, Kubectl};
use crate::procs::{self, Dirs};
use crate::{cleanup, netns, topology, LabError};

/// How to build the lab.
#[derive(Clone, Debug)]
pub struct LabOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// Workspace root.
    pub root: PathBuf,
    /// Where the binaries are taken from: `target/debug` unless [`LabOptions::release`].
    pub bin_dir: PathBuf,
    /// Extra arguments of every `switchyard agent` (see [`LabOptions::agent_args`]).
    pub agent_args: Vec<String>,
    /// Whether the agents run as `deploy/`'s DaemonSet says ([`LabOptions::from_daemonset`]).
    pub daemonset: bool,
    /// The Service network: [`topology::SERVICE_CIDR`] unless [`LabOptions::service_cidr`].
    pub service_cidr: String,
    /// Whether controlplane-lite keeps its store in memory ([`LabOptions::cp_data_in_memory`]).
    pub cp_data_in_memory: bool,
}

/// Where controlplane-lite's store lives with [`LabOptions::cp_data_in_memory`]: a tmpfs,
/// removed with the lab.
pub const CP_DATA_IN_MEMORY: &str = "/dev/shm/switchyard-lab-cp-data";

impl LabOptions {
    /// `nodes` nodes in the workspace this crate belongs to, running the debug binaries.
    pub fn new(nodes: usize) -> Self {
        let root = workspace_root();
        LabOptions {
            nodes,
            bin_dir: root.join("target/debug"),
            root,
            agent_args: Vec::new(),
            daemonset: false,
            service_cidr: topology::SERVICE_CIDR.into(),
            cp_data_in_memory: false,
        }
    }

    /// Keeps controlplane-lite's store on a tmpfs ([`CP_DATA_IN_MEMORY`]), where its fsync per
    /// acknowledged write costs nothing. The benchmark does: it measures the dataplane, and on
    /// a disk with ~6 ms per fsync its 100,000 Services would take 20 minutes to create, one
    /// fsync after another. Every other lab keeps the store on disk, as a real API server's
    /// etcd does.
    pub fn cp_data_in_memory(mut self) -> Self {
        self.cp_data_in_memory = true;
        self
    }

    /// controlplane-lite's data directory in the lab directory `dir`.
    pub fn cp_data(&self, dir: &Path) -> PathBuf {
        if self.cp_data_in_memory {
            PathBuf::from(CP_DATA_IN_MEMORY)
        } else {
            dir.join("cp-data")
        }
    }

    /// A larger Service network than the lab's (e.g. kubeadm's `10.96.0.0/12`, for more than
    /// 65,000 Services), given to controlplane-lite and to every agent (`--service-cidr`).
    pub fn service_cidr(mut self, cidr: &str) -> Self {
        self.service_cidr = cidr.into();
        self.agent_args
            .extend(["--service-cidr".to_string(), cidr.to_string()]);
        self
    }

    /// Runs each node's agent from `deploy/`'s DaemonSet instead of the lab's own command line
    /// (see [`crate::daemonset`]): its init containers first (install-cni, whose plugin and
    /// configuration list the node's kubelet then uses), then the agent container — command,
    /// arguments and environment (the ConfigMap included) from the manifests, in-cluster
    /// configuration as the service account `kube-system/switchyard`, and only the lab's
    /// documented [`crate::daemonset::overrides`].
    pub fn from_daemonset(mut self) -> Self {
        self.daemonset = true;
        self
    }

    /// Starts every agent with `args` besides the lab's own (e.g. `--log-format json`), after
    /// those given before.
    pub fn agent_args<S: Into<String>>(mut self, args: impl IntoIterator<Item = S>) -> Self {
        self.agent_args.extend(args.into_iter().map(Into::into));
        self
    }

    /// Whether the agents run with native NodePort acceleration (`--nodeport-acceleration
    /// native`, or the variable the agents inherit), which the lab's veths must be prepared for
    /// ([`topology::native_xdp_peers`]).
    pub fn native_xdp(&self) -> bool {
        std::env::var("SWITCHYARD_NODEPORT_ACCELERATION").is_ok_and(|v| v == "native")
            || self
                .agent_args
                .windows(2)
                .any(|w| w[0] == "--nodeport-acceleration" && w[1] == "native")
            || self
                .agent_args
                .iter()
                .any(|a| a == "--nodeport-acceleration=native")
    }

    /// Runs the optimised binaries of `target/release` instead (the benchmark does: the
    /// agent's and controlplane-lite's own work is measured there).
    pub fn release(mut self) -> Self {
        self.bin_dir = self.root.join("target/release");
        self
    }
}

/// The workspace root (this crate is `tests/lab/`, two levels below it).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// The lab directory: `target/lab`.
pub fn lab_dir(root: &Path) -> PathBuf {
    root.join("target").join("lab")
}

/// A running lab. Dropping it tears everything down.
pub struct Lab {
    /// Options it was built with.
    pub opts: LabOptions,
    /// kubectl for it.
    pub kubectl: Kubectl,
    /// `deploy/`'s DaemonSet, when the agents run from it.
    pub daemonset: Option<DaemonSetRun>,
    dirs: Dirs,
    keep: bool,
}

/// Whether this process runs as root (the lab and the netns tests need it).
pub fn is_root() -> bool {
    // SAFETY: no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Lab {
    /// Builds the lab: removes leftovers, creates the network, starts controlplane-lite, the
    /// kubelets and agents, waits for every node to be Ready, then starts the cluster DNS
    /// ([`crate::dns`]) and waits until it resolves a name.
    pub fn up(opts: LabOptions) -> Result<Lab, LabError> {
        if !is_root() {
            return Err(LabError::NotRoot);
        }
        let dir = lab_dir(&opts.root);
        let dirs = Dirs::new(&dir)?;
        cleanup::down(Some(&dirs));
        let bin = |name: &str| -> Result<String, LabError> {
            let p = opts.bin_dir.join(name);
            if !p.exists() {
                return Err(LabError::MissingBinary(p));
            }
            Ok(p.to_string_lossy().into_owned())
        };
        // Checked before anything starts: a missing binary is a clear error, not a dead process.
        bin("switchyard")?;
        bin("switchyard-cp")?;
        let labnode = bin("switchyard-labnode")?;
        let kubeconfig = dir.join("kubeconfig");
        let mut lab = Lab {
            kubectl: Kubectl {
                kubeconfig: kubeconfig.clone(),
            },
            daemonset: None,
            dirs: dirs.clone(),
            opts: opts.clone(),
            keep: false,
        };
        topology::create(opts.nodes)?;
        if opts.native_xdp() {
            topology::native_xdp_peers(opts.nodes)?;
        }
        let data = opts.cp_data(&dir);
        let _ = std::fs::remove_dir_all(&data);
        let _ = std::fs::remove_file(&kubeconfig);
        // Fresh random tokens per lab: switchyard-cp writes the first (admin) into the kubeconfig
        // together with the CA it generates (the serving certificate covers 198.18.0.1 and the
        // kubernetes Service's ClusterIP and names); the second, a service account's, is what
        // the kubelets give every pod; the third, the agents' service account's, is used when
        // they run from the DaemonSet.
        let token_file = dir.join("token.csv");
        let tokens = kube::write_token_file(&token_file)?;
        let sa_token_file = dir.join("sa-token");
        kube::write_private(&sa_token_file, &format!("{}\n", tokens.service_account))?;
        let sa_token_file = sa_token_file.to_string_lossy().into_owned();
        let dns_token_file = dir.join("dns-token");
        kube::write_private(&dns_token_file, &format!("{}\n", tokens.dns))?;
        let dns_args = crate::dns::kubelet_args(&dns_token_file);
        lab.start_cp()?;
        let ca = data
            .join("pki")
            .join("ca.crt")
            .to_string_lossy()
            .into_owned();
        if opts.daemonset {
            lab.daemonset = Some(DaemonSetRun::prepare(
                &opts.root,
                &opts.bin_dir,
                &dir,
                &tokens.agent,
                std::path::Path::new(&ca),
            )?);
        }
        let kc = kubeconfig.to_string_lossy().into_owned();
        for n in 1..=opts.nodes {
            let (ns, name, addr) = (
                topology::node_ns(n),
                topology::node_name(n),
                topology::node_addr(n),
            );
            let mut kubelet: Vec<String> = [
                labnode.as_str(),
                "kubelet",
                "--node",
                &name,
                "--kubeconfig",
                &kc,
                "--node-ip",
                &addr,
                "--service-account-token-file",
                &sa_token_file,
                // Only controlplane-lite (its kubelet client certificate) may call the
                // node runtime's API for logs, exec and port-forward.
                "--client-ca-file",
                &ca,
            ]
            .map(String::from)
            .to_vec();
            kubelet.extend(dns_args.iter().cloned());
            if let Some(ds) = &lab.daemonset {
                // The plugin and configuration list install-cni leaves, as a kubelet's
                // container runtime finds them.
                let (plugin, conf_dir) = ds.cni_paths(n)?;
                kubelet.extend([
                    "--cni-plugin".into(),
                    plugin.to_string_lossy().into_owned(),
                    "--cni-conf-dir".into(),
                    conf_dir.to_string_lossy().into_owned(),
                ]);
            }
            let kubelet: Vec<&str> = kubelet.iter().map(String::as_str).collect();
            procs::start(&dirs, &format!("kubelet-{name}"), Some(&ns), &kubelet)?;
            // One registration at a time: podCIDRs go out in registration order, so node N gets
            // 10.244.N.0/24 as the lab's address plan says.
            let hint = format!("see {}", dirs.log(&format!("kubelet-{name}")).display());
            kube::wait(
                &format!("node {name} to register"),
                Duration::from_secs(30),
                Some(&hint),
                || {
                    Ok(lab
                        .kubectl
                        .run(&["get", "node", &name, "-o", "jsonpath={.spec.podCIDR}"])
                        .is_ok_and(|c| !c.trim().is_empty()))
                },
            )?;
            if let Some(ds) = &lab.daemonset {
                ds.run_init(&dirs, n)?;
            }
            lab.start_agent(n)?;
        }
        // The "outside the cluster" server masquerade checks talk to (203.0.113.10:8080).
        procs::start(
            &dirs,
            "outside",
            Some(topology::EXT),
            &[
                "env",
                "HOSTNAME=outside",
                &labnode,
                "echo",
                "--port",
                "8080",
            ],
        )?;
        for n in 1..=opts.nodes {
            lab.kubectl
                .wait_node_ready(&topology::node_name(n), Duration::from_secs(60))?;
            lab.wait_datapath(n)?;
        }
        crate::dns::start(
            &lab.kubectl,
            &dir,
            "see `kubectl -n kube-system logs cluster-dns` and target/lab/logs/kubelet-n*.log",
        )?;
        Ok(lab)
    }

    /// Waits until node `n`'s agent has its datapath attached and programmed: its counters are
    /// readable, and its log says `datapath ready` (every program attached, socket load
    /// balancing included) and then `services synced` (its first sync: a fresh lab always has
    /// the `kubernetes` Service to write). Counters alone come too early: the maps are pinned
    /// before the programs are attached, and a pod or node process started then could not yet
    /// reach a ClusterIP.
    pub fn wait_datapath(&self, n: usize) -> Result<(), LabError> {
        let path = self.dirs.log(&format!("agent-n{n}"));
        let log = format!("see {}", path.display());
        kube::wait(
            &format!("the datapath of node n{n}"),
            Duration::from_secs(60),
            Some(&log),
            || {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let synced = text
                    .find("datapath ready")
                    .is_some_and(|at| text[at..].contains("services synced"));
                Ok(synced && self.stats(n).is_ok())
            },
        )
    }

    /// Starts controlplane-lite (`cp`) on the lab's data directory and token file, and waits
    /// until it answers `/healthz`. Its state survives a restart: the data directory is kept.
    pub fn start_cp(&self) -> Result<(), LabError> {
        let dir = self.dir();
        let cp = self.opts.bin_dir.join("switchyard-cp");
        let data = self.opts.cp_data(&dir);
        let listen = format!("{}:6443", topology::CP_ADDR);
        procs::start(
            &self.dirs,
            "cp",
            None,
            &[
                &cp.to_string_lossy(),
                "--listen",
                &listen,
                "--data-dir",
                &data.to_string_lossy(),
                "--token-file",
                &dir.join("token.csv").to_string_lossy(),
                "--tls-san",
                topology::CP_ADDR,
                "--service-cidr",
                &self.opts.service_cidr,
                "--loadbalancer-pool",
                topology::LB_POOL,
                // default/kubernetes (10.96.0.1:443) leads pods here.
                "--advertise-address",
                topology::CP_ADDR,
                "--write-kubeconfig",
                &self.kubectl.kubeconfig.to_string_lossy(),
            ],
        )?;
        let health = format!("https://{listen}/healthz");
        let ca = data
            .join("pki")
            .join("ca.crt")
            .to_string_lossy()
            .into_owned();
        kube::wait(
            &format!("switchyard-cp to answer {health} (verified with {ca})"),
            Duration::from_secs(15),
            Some("see target/lab/logs/cp.log"),
            || {
                Ok(
                    output(&["curl", "-sf", "--max-time", "1", "--cacert", &ca, &health])?
                        .status
                        .success(),
                )
            },
        )
    }

    /// Kills the lab's background process `name` with SIGKILL, as a crash would (no clean-up
    /// of its own); false if it was not running.
    pub fn kill(&self, name: &str) -> bool {
        procs::stop_within(&self.dirs, name, Duration::ZERO)
    }

    /// Starts node `n`'s agent again after [`Lab::kill`] (a fresh log) and waits until it says
    /// `datapath ready`.
    pub fn start_agent_again(&self, n: usize) -> Result<(), LabError> {
        let log = self.dirs.log(&format!("agent-n{n}"));
        self.start_agent(n)?;
        kube::wait(
            &format!("the restarted agent of {}", topology::node_name(n)),
            Duration::from_secs(60),
            Some(&format!("see {}", log.display())),
            || {
                Ok(std::fs::read_to_string(&log)
                    .unwrap_or_default()
                    .contains("datapath ready"))
            },
        )
    }

    /// The lab's directory (`target/lab`).
    pub fn dir(&self) -> PathBuf {
        lab_dir(&self.opts.root)
    }

    /// Starts `argv` as one of the lab's background processes, `name`, inside network namespace
    /// `netns` if given: logged in [`Lab::log_of`], stopped by `lab down` and when the lab is
    /// dropped.
    pub fn start_process(
        &self,
        name: &str,
        netns: Option<&str>,
        argv: &[&str],
    ) -> Result<u32, LabError> {
        procs::start(&self.dirs, name, netns, argv)
    }

    /// The log file of the lab's background process `name`.
    pub fn log_of(&self, name: &str) -> PathBuf {
        self.dirs.log(name)
    }

    /// Leaves the lab running when dropped (for `lab up`).
    pub fn keep_running(mut self) {
        self.keep = true;
    }

    /// The `switchyard` binary.
    pub fn switchyard(&self) -> String {
        self.opts
            .bin_dir
            .join("switchyard")
            .to_string_lossy()
            .into_owned()
    }

    /// The datapath counters of node `n` (`switchyard inspect stats`).
    pub fn stats(&self, n: usize) -> Result<Value, LabError> {
        let out = run(&[
            &self.switchyard(),
            "inspect",
            "stats",
            "-o",
            "json",
            "--node",
            &topology::node_name(n),
        ])?;
        serde_json::from_str(&out)
            .map_err(|e| LabError::Unexpected(format!("inspect stats printed no JSON: {e}")))
    }

    /// One counter of node `n`.
    pub fn counter(&self, n: usize, name: &str) -> Result<u64, LabError> {
        self.stats(n)?[name]
            .as_u64()
            .ok_or_else(|| LabError::Unexpected(format!("no counter {name}")))
    }

    /// Runs `argv` inside pod `ns/name`'s network namespace.
    pub fn exec_in_pod(&self, ns: &str, name: &str, argv: &[&str]) -> Result<Output, LabError> {
        self.exec_in(&format!("sy-pod-{ns}-{name}"), argv)
    }

    /// Runs `argv` inside network namespace `netns`.
    pub fn exec_in(&self, netns: &str, argv: &[&str]) -> Result<Output, LabError> {
        netns::in_ns(netns, argv)
            .stdin(Stdio::null())
            .output()
            .map_err(|source| LabError::Spawn {
                cmd: format!("ip netns exec {netns} {}", argv.join(" ")),
                source,
            })
    }

    /// Stops node `n`'s kubelet (its pods keep running; the node stops heartbeating).
    pub fn stop_kubelet(&self, n: usize) {
        procs::stop(&self.dirs, &format!("kubelet-n{n}"));
    }

    /// The command line of node `n`'s agent: the lab's own (`--node`, `--kubeconfig`), or the
    /// DaemonSet's agent container as [`crate::daemonset`] runs it; then
    /// [`LabOptions::agent_args`]. Also the header of its log: the lab's overrides of
    /// `deploy/`, if any.
    pub fn agent_command(&self, n: usize) -> Result<(Vec<String>, String), LabError> {
        let (mut argv, header) = match &self.daemonset {
            Some(ds) => {
                let launch = ds.launch(n, crate::daemonset::AGENT_CONTAINER)?;
                ds.make_dirs(&launch)?;
                let header = format!(
                    "lab: started from deploy/'s DaemonSet; the lab's overrides:\n{}",
                    launch.describe_overrides()
                );
                (ds.command(&launch), header)
            }
            None => (
                vec![
                    self.switchyard(),
                    "agent".into(),
                    "--node".into(),
                    topology::node_name(n),
                    "--kubeconfig".into(),
                    self.kubectl.kubeconfig.to_string_lossy().into_owned(),
                ],
                String::new(),
            ),
        };
        argv.extend(self.opts.agent_args.iter().cloned());
        Ok((argv, header))
    }

    /// Starts node `n`'s agent ([`Lab::agent_command`]) with a fresh log, without waiting.
    pub fn start_agent(&self, n: usize) -> Result<u32, LabError> {
        let (argv, header) = self.agent_command(n)?;
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        procs::start_logged(
            &self.dirs,
            &format!("agent-n{n}"),
            Some(&topology::node_ns(n)),
            &header,
            &argv,
        )
    }

    /// Node `n`'s agent's log.
    pub fn agent_log(&self, n: usize) -> PathBuf {
        self.dirs.log(&format!("agent-n{n}"))
    }

    /// Node `n`'s agent's process id (from its pid file).
    pub fn agent_pid(&self, n: usize) -> Option<u32> {
        procs::pid_of(&self.dirs, &format!("agent-n{n}")).and_then(|p| u32::try_from(p).ok())
    }

    /// Restarts node `n`'s agent (SIGTERM, then start again) and waits for its datapath.
    pub fn restart_agent(&self, n: usize) -> Result<(), LabError> {
        procs::stop(&self.dirs, &format!("agent-n{n}"));
        self.start_agent_again(n)
    }

    /// The tails of every log, for a failing test's output.
    pub fn logs_tail(&self) -> String {
        let mut out = String::new();
        if let Ok(entries) = std::fs::read_dir(&self.dirs.logs) {
            let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
            paths.sort();
            for p in paths {
                out.push_str(&format!(
                    "==> {} <==\n{}\n",
                    p.display(),
                    procs::tail(&p, 15)
                ));
            }
        }
        out
    }

    /// Tears the lab down.
    pub fn down(&self) {
        cleanup::down(Some(&self.dirs));
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if !self.keep {
            if std::thread::panicking() {
                eprintln!("{}", self.logs_tail());
            }
            self.down();
        }
    }
}

/// `lab down` without a `Lab` value (another process started it).
pub fn down(root: &Path) {
    let dirs = Dirs::new(&lab_dir(root)).ok();
    cleanup::down(dirs.as_ref());
}
