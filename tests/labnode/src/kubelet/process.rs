//! Container processes: started from the host filesystem inside the pod's network namespace and
//! a mount namespace of their own, each in its own session and process group, and stopped by
//! signalling that group.
use super::error::Error;
use k8s_openapi::api::core::v1::{Container, Pod};
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// Everything needed to start one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launch {
    /// Container name.
    pub name: String,
    /// `command` + `args`.
    pub argv: Vec<String>,
    /// Full environment.
    pub env: Vec<(String, String)>,
    /// Working directory.
    pub working_dir: PathBuf,
}

/// A file or directory of the host bind-mounted read-only into a container's mount namespace
/// (the target must exist on the host: a bind mount needs a mount point).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: PathBuf,
    /// Where the container sees it.
    pub target: PathBuf,
}

/// Values the environment of a container may refer to.
#[derive(Clone, Debug)]
pub struct PodContext<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its address.
    pub pod_ip: Ipv4Addr,
    /// The node's address.
    pub host_ip: Ipv4Addr,
    /// Node name.
    pub node: &'a str,
    /// Directory of the `switchyard-labnode` executable, put first on `PATH`.
    pub exe_dir: &'a Path,
    /// The Service variables of the pod ([`super::envvars::service_env`]).
    pub service_env: &'a [(String, String)],
}

/// Default `PATH` after the executable's directory.
const BASE_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Works out how to start `container`: its argv (images are not pulled, so `command` is
/// required), and its environment, later entries winning: a `PATH` that starts with the
/// directory of the `switchyard-labnode` executable, `HOSTNAME`, `POD_NAME`, `POD_NAMESPACE`,
/// `POD_IP`, `NODE_NAME`; the Service variables; the container's `env` (plain values, with
/// `$(VAR)` references to variables defined before expanded, and the common `fieldRef`s).
pub fn launch(container: &Container, ctx: &PodContext<'_>) -> Result<Launch, String> {
    let meta = &ctx.pod.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_else(|| "default".into());
    let mut argv: Vec<String> = container.command.clone().unwrap_or_default();
    argv.extend(container.args.clone().unwrap_or_default());
    if container.command.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(format!(
            "container {} has no command; switchyard runs commands from the host filesystem and never pulls image {:?}",
            container.name,
            container.image.clone().unwrap_or_default()
        ));
    }
    let mut env: Vec<(String, String)> = vec![
        (
            "PATH".into(),
            format!("{}:{BASE_PATH}", ctx.exe_dir.display()),
        ),
        ("HOSTNAME".into(), name.clone()),
        ("POD_NAME".into(), name.clone()),
        ("POD_NAMESPACE".into(), namespace.clone()),
        ("POD_IP".into(), ctx.pod_ip.to_string()),
        ("NODE_NAME".into(), ctx.node.to_string()),
    ];
    for (k, v) in ctx.service_env {
        env.retain(|(n, _)| n != k);
        env.push((k.clone(), v.clone()));
    }
    for var in container.env.clone().unwrap_or_default() {
        let value = match (&var.value, &var.value_from) {
            (Some(v), _) => expand(v, &env),
            (None, Some(from)) => match from.field_ref.as_ref().map(|f| f.field_path.as_str()) {
                Some("metadata.name") => name.clone(),
                Some("metadata.namespace") => namespace.clone(),
                Some("metadata.uid") => meta.uid.clone().unwrap_or_default(),
                Some("spec.nodeName") => ctx.node.to_string(),
                Some("status.podIP") => ctx.pod_ip.to_string(),
                Some("status.hostIP") => ctx.host_ip.to_string(),
                _ => {
                    tracing::warn!(var = %var.name, "unsupported valueFrom; leaving it empty");
                    String::new()
                }
            },
            (None, None) => String::new(),
        };
        env.retain(|(k, _)| *k != var.name);
        env.push((var.name, value));
    }
    let argv = argv.iter().map(|a| expand(a, &env)).collect();
    Ok(Launch {
        name: container.name.clone(),
        argv,
        env,
        working_dir: container
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .map_or_else(|| PathBuf::from("/"), PathBuf::from),
    })
}

/// Expands `$(VAR)` references to variables of `env` as Kubernetes does in `command`/`args`;
/// `$$` escapes a `$`, unknown references stay as written.
pub fn expand(s: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(stripped) = after.strip_prefix('$') {
            out.push('$');
            rest = stripped;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) => {
                    let var = &inner[..end];
                    match env.iter().rev().find(|(k, _)| k == var) {
                        Some((_, v)) => out.push_str(v),
                        None => {
                            out.push_str("$(");
                            out.push_str(var);
                            out.push(')');
                        }
                    }
                    rest = &inner[end + 1..];
                }
                None => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// Starts `launch` inside the network namespace at `netns`, in a new session (so its process
/// group id is its pid), with stdout and stderr going to a log shim that writes `log`
/// ([`super::logs::shim`]).
///
/// The process also gets a mount namespace of its own, whose mounts are made slaves of the
/// host's: mounts made on the host (pod network namespaces under `/run/netns`…) still appear in
/// it, nothing mounted in it reaches the host. `mounts` are made there, read-only, in order (the
/// service-account directory at [`super::serviceaccount::MOUNT_PATH`], the pod's
/// `/etc/resolv.conf` and `/etc/hosts`: [`super::etc`]). `/sys` stays the host's (as before):
/// the process sees its own interfaces through netlink, not through `/sys/class/net`.
pub fn spawn(
    launch: &Launch,
    netns: &Path,
    mounts: &[Mount],
    log: &Path,
) -> Result<tokio::process::Child, Error> {
    let start_err = |message: String| Error::Start {
        container: launch.name.clone(),
        message,
    };
    let c_path = |p: &Path| {
        CString::new(p.as_os_str().as_bytes())
            .map_err(|_| start_err(format!("{} contains a NUL byte", p.display())))
    };
    let binds = mounts
        .iter()
        .map(|m| Ok((c_path(&m.source)?, c_path(&m.target)?)))
        .collect::<Result<Vec<_>, Error>>()?;
    let ns = File::open(netns)
        .map_err(|e| start_err(format!("cannot open {}: {e}", netns.display())))?;
    let (out, err) = super::logs::shim::start(log).map_err(Error::io(log))?;
    let Some((program, args)) = launch.argv.split_first() else {
        return Err(start_err("empty command".into()));
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(launch.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&launch.working_dir)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(false);
    let ns_fd = ns.as_raw_fd();
    // SAFETY: runs in the forked child before exec; only async-signal-safe syscalls are made
    // (setns, unshare, mount, setsid), on a descriptor kept open by `ns` until spawn returns and
    // on strings allocated before the fork.
    unsafe {
        cmd.pre_exec(move || {
            check(libc::setns(ns_fd, libc::CLONE_NEWNET))?;
            check(libc::unshare(libc::CLONE_NEWNS))?;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            ))?;
            for (src, dst) in &binds {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND,
                    std::ptr::null(),
                ))?;
                check(libc::mount(
                    std::ptr::null(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_RDONLY
                        | libc::MS_NOSUID
                        | libc::MS_NODEV
                        | libc::MS_NOEXEC,
                    std::ptr::null(),
                ))?;
            }
            check(libc::setsid())?;
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| start_err(format!("{program}: {e}")))?;
    drop(ns);
    Ok(child)
}

/// How a container process ended.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Exit {
    /// Exit code; `128 + signal` for a process killed by a signal; -1 if unknown.
    pub code: i32,
    /// The signal that killed it.
    pub signal: Option<i32>,
}

impl Exit {
    /// From a wait status.
    pub fn from_status(status: std::process::ExitStatus) -> Exit {
        match (status.code(), status.signal()) {
            (Some(code), _) => Exit { code, signal: None },
            (None, Some(sig)) => Exit {
                code: 128 + sig,
                signal: Some(sig),
            },
            (None, None) => Exit {
                code: -1,
                signal: None,
            },
        }
    }
}

/// A running container process: our child, or one adopted from an earlier kubelet run.
#[derive(Debug)]
pub enum Proc {
    /// Started by this kubelet; its exit status is known.
    Child(tokio::process::Child, i32),
    /// Found alive after a kubelet restart: identified by pid and start time.
    Adopted {
        /// Process id (= process group id).
        pid: i32,
        /// Start time in clock ticks since boot (`/proc/<pid>/stat` field 22).
        start_ticks: u64,
    },
}

impl Proc {
    /// Wraps a freshly spawned child.
    pub fn child(child: tokio::process::Child) -> Option<Proc> {
        let pid = i32::try_from(child.id()?).ok()?;
        Some(Proc::Child(child, pid))
    }

    /// Process id, which is also the process group id.
    pub fn pid(&self) -> i32 {
        match self {
            Proc::Child(_, pid) => *pid,
            Proc::Adopted { pid, .. } => *pid,
        }
    }

    /// Returns the exit if the process has ended (reaping our own children).
    pub fn poll_exit(&mut self) -> Option<Exit> {
        match self {
            Proc::Child(child, _) => match child.try_wait() {
                Ok(Some(status)) => Some(Exit::from_status(status)),
                Ok(None) => None,
                Err(_) => Some(Exit {
                    code: -1,
                    signal: None,
                }),
            },
            Proc::Adopted { pid, start_ticks } => {
                if start_ticks_of(*pid) == Some(*start_ticks) {
                    None
                } else {
                    Some(Exit {
                        code: -1,
                        signal: None,
                    })
                }
            }
        }
    }

    /// Sends `signal` to the process group.
    pub fn signal_group(&self, signal: nix::sys::signal::Signal) {
        let pgid = nix::unistd::Pid::from_raw(self.pid());
        if let Err(e) = nix::sys::signal::killpg(pgid, signal) {
            if e != nix::errno::Errno::ESRCH {
                tracing::warn!(pid = self.pid(), ?signal, error = %e, "cannot signal process group");
            }
        }
    }
}

/// Start time (clock ticks since boot) of a live, non-zombie process.
pub fn start_ticks_of(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Field 2 (comm) may contain spaces; everything after its closing parenthesis is regular.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    // rest starts at field 3 (state); starttime is field 22.
    if fields.first() == Some(&"Z") {
        return None;
    }
    fields.get(19)?.parse().ok()
}

/// A libc return code as a `Result`: negative is the thread's `errno`. Async-signal-safe (used
/// between fork and exec).
pub fn check(rc: libc::c_int) -> io::Result<()> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{EnvVar, EnvVarSource, ObjectFieldSelector};

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "echo-1", "namespace": "demo", "uid": "u-1"},
            "spec": {"containers": [{"name": "echo", "image": "switchyard"}]}
        }))
        .unwrap()
    }

    fn ctx(pod: &Pod) -> PodContext<'_> {
        PodContext {
            pod,
            pod_ip: Ipv4Addr::new(10, 244, 1, 5),
            host_ip: Ipv4Addr::new(198, 18, 0, 11),
            node: "n1",
            exe_dir: Path::new("/opt/sy/bin"),
            service_env: &[],
        }
    }

    fn get<'a>(l: &'a Launch, k: &str) -> Option<&'a str> {
        l.env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    #[test]
    fn builds_argv_and_environment() {
        let pod = pod();
        let c = Container {
            name: "echo".into(),
            command: Some(vec!["switchyard-labnode".into(), "echo".into()]),
            args: Some(vec!["--port".into(), "$(PORT)".into(), "$$(PORT)".into()]),
            env: Some(vec![
                EnvVar {
                    name: "PORT".into(),
                    value: Some("9090".into()),
                    value_from: None,
                },
                EnvVar {
                    name: "MY_IP".into(),
                    value: None,
                    value_from: Some(EnvVarSource {
                        field_ref: Some(ObjectFieldSelector {
                            field_path: "status.podIP".into(),
                            api_version: None,
                        }),
                        ..Default::default()
                    }),
                },
            ]),
            ..Default::default()
        };
        let l = launch(&c, &ctx(&pod)).unwrap();
        assert_eq!(
            l.argv,
            vec!["switchyard-labnode", "echo", "--port", "9090", "$(PORT)"]
        );
        assert_eq!(get(&l, "HOSTNAME"), Some("echo-1"));
        assert_eq!(get(&l, "POD_NAME"), Some("echo-1"));
        assert_eq!(get(&l, "POD_NAMESPACE"), Some("demo"));
        assert_eq!(get(&l, "POD_IP"), Some("10.244.1.5"));
        assert_eq!(get(&l, "MY_IP"), Some("10.244.1.5"));
        assert!(get(&l, "PATH").unwrap().starts_with("/opt/sy/bin:"));
        assert_eq!(l.working_dir, PathBuf::from("/"));
    }

    #[test]
    fn service_variables_yield_to_the_containers_env() {
        let pod = pod();
        let service_env = vec![
            (
                "KUBERNETES_SERVICE_HOST".to_string(),
                "10.96.0.1".to_string(),
            ),
            ("KUBERNETES_SERVICE_PORT".to_string(), "443".to_string()),
        ];
        let ctx = PodContext {
            service_env: &service_env,
            ..ctx(&pod)
        };
        let var = |name: &str, value: &str| EnvVar {
            name: name.into(),
            value: Some(value.into()),
            value_from: None,
        };
        let c = Container {
            name: "c".into(),
            command: Some(vec!["env".into()]),
            env: Some(vec![
                var("KUBERNETES_SERVICE_PORT", "6443"),
                var(
                    "API",
                    "https://$(KUBERNETES_SERVICE_HOST):$(KUBERNETES_SERVICE_PORT)",
                ),
            ]),
            ..Default::default()
        };
        let l = launch(&c, &ctx).unwrap();
        assert_eq!(get(&l, "KUBERNETES_SERVICE_HOST"), Some("10.96.0.1"));
        assert_eq!(get(&l, "KUBERNETES_SERVICE_PORT"), Some("6443"));
        assert_eq!(get(&l, "API"), Some("https://10.96.0.1:6443"));
        assert_eq!(
            l.env
                .iter()
                .filter(|(k, _)| k == "KUBERNETES_SERVICE_PORT")
                .count(),
            1
        );
    }

    #[test]
    fn a_container_without_command_cannot_start() {
        let pod = pod();
        let c = Container {
            name: "nginx".into(),
            image: Some("nginx".into()),
            ..Default::default()
        };
        assert!(launch(&c, &ctx(&pod)).unwrap_err().contains("no command"));
    }

    #[test]
    fn expansion_leaves_unknown_references() {
        let env = vec![("A".to_string(), "1".to_string())];
        assert_eq!(expand("x$(A)y$(B)$", &env), "x1y$(B)$");
        assert_eq!(expand("$(A", &env), "$(A");
    }

    #[test]
    fn reads_own_start_time_and_rejects_missing_processes() {
        assert!(start_ticks_of(std::process::id() as i32).is_some());
        assert_eq!(start_ticks_of(i32::MAX), None);
    }
}
