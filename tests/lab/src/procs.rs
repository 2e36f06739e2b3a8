//! Background processes of the lab: started with their output in `target/lab/logs/<name>.log`
//! and their pid in `target/lab/pids/<name>.pid`, so `lab down` can stop exactly them.
//!
//! Node processes enter the node's network namespace with `nsenter --net=` (not `ip netns exec`,
//! which would also give them a private mount namespace: a fresh /sys without bpffs, and a
//! /run/netns in which the pod namespaces they create are invisible to everyone else).
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::LabError;

/// Where the lab keeps logs and pid files.
#[derive(Clone, Debug)]
pub struct Dirs {
    /// `target/lab/logs`.
    pub logs: PathBuf,
    /// `target/lab/pids`.
    pub pids: PathBuf,
}

impl Dirs {
    /// Under `lab_dir`, created if missing.
    pub fn new(lab_dir: &Path) -> Result<Dirs, LabError> {
        let d = Dirs {
            logs: lab_dir.join("logs"),
            pids: lab_dir.join("pids"),
        };
        for p in [&d.logs, &d.pids] {
            std::fs::create_dir_all(p).map_err(|e| LabError::Io(p.clone(), e))?;
        }
        Ok(d)
    }

    /// Log file of process `name`.
    pub fn log(&self, name: &str) -> PathBuf {
        self.logs.join(format!("{name}.log"))
    }
}

/// Starts `argv` in the background as `name`, inside network namespace `netns` if given.
pub fn start(dirs: &Dirs, name: &str, netns: Option<&str>, argv: &[&str]) -> Result<u32, LabError> {
    start_logged(dirs, name, netns, "", argv)
}

/// [`start`], with `header` (if not empty) written at the top of the log.
pub fn start_logged(
    dirs: &Dirs,
    name: &str,
    netns: Option<&str>,
    header: &str,
    argv: &[&str],
) -> Result<u32, LabError> {
    let mut cmd = command(dirs, name, netns, header, argv)?;
    let child = cmd.spawn().map_err(|source| LabError::Spawn {
        cmd: argv.join(" "),
        source,
    })?;
    let pid = child.id();
    let pidfile = dirs.pids.join(format!("{name}.pid"));
    std::fs::write(&pidfile, pid.to_string()).map_err(|e| LabError::Io(pidfile, e))?;
    // The child is reaped by whoever stops it (kill + waitpid below), not by Drop.
    std::mem::forget(child);
    Ok(pid)
}

/// Runs `argv` as `name` (log and network namespace as [`start_logged`]) and waits for it to
/// exit successfully; killed after `timeout`. A failure carries the log's tail.
pub fn run_to_completion(
    dirs: &Dirs,
    name: &str,
    netns: Option<&str>,
    header: &str,
    argv: &[&str],
    timeout: Duration,
) -> Result<(), LabError> {
    let log = dirs.log(name);
    let mut child = command(dirs, name, netns, header, argv)?
        .spawn()
        .map_err(|source| LabError::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                return Err(LabError::Command {
                    cmd: argv.join(" "),
                    status: status.to_string(),
                    stderr: format!("{} (log: {})", tail(&log, 10), log.display()),
                })
            }
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(50)),
            Ok(None) | Err(_) => {
                stop_pid(child.id() as i32, Duration::from_secs(1));
                let _ = child.wait();
                return Err(LabError::Timeout {
                    what: format!("{name} to finish"),
                    secs: timeout.as_secs(),
                    hint: Some(format!("see {}", log.display())),
                });
            }
        }
    }
}

/// The command of a lab process: in `netns` (if given), output to its log after `header`.
fn command(
    dirs: &Dirs,
    name: &str,
    netns: Option<&str>,
    header: &str,
    argv: &[&str],
) -> Result<Command, LabError> {
    let log = dirs.log(name);
    let mut out = File::create(&log).map_err(|e| LabError::Io(log.clone(), e))?;
    if !header.is_empty() {
        use std::io::Write;
        writeln!(out, "{header}").map_err(|e| LabError::Io(log.clone(), e))?;
    }
    let err = out.try_clone().map_err(|e| LabError::Io(log.clone(), e))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{ns}")).arg("--").args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // Its own process group: a Ctrl-C of the lab command does not kill it half-way.
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    // Lab processes outlive the command that started them: they must not inherit its open
    // descriptors — above all the lab lock of `flock /tmp/switchyard-lab.lock cargo xtask lab up`,
    // which they would hold until `lab down`, so that `flock … lab down` waits forever.
    // SAFETY: close_range is async-signal-safe; marking descriptors close-on-exec (rather than
    // closing them) keeps std's own exec-error pipe working.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            );
            Ok(())
        });
    }
    Ok(cmd)
}

fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

fn reap(pid: i32) {
    let mut status = 0;
    // SAFETY: non-blocking wait for a child we may have started; fails harmlessly otherwise.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// SIGTERM to `pid`, SIGKILL after `grace`.
pub fn stop_pid(pid: i32, grace: Duration) {
    if pid <= 1 {
        return;
    }
    // SAFETY: plain signal delivery to a process we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        reap(pid);
        if !alive(pid) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    std::thread::sleep(Duration::from_millis(20));
    reap(pid);
}

/// The pid in process `name`'s pid file, if it has one.
pub fn pid_of(dirs: &Dirs, name: &str) -> Option<i32> {
    std::fs::read_to_string(dirs.pids.join(format!("{name}.pid")))
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// Stops process `name` (SIGTERM, SIGKILL after `grace`) and removes its pid file; false if it
/// had none. Missing is fine.
pub fn stop_within(dirs: &Dirs, name: &str, grace: Duration) -> bool {
    let pid = pid_of(dirs, name);
    if let Some(pid) = pid {
        stop_pid(pid, grace);
    }
    let _ = std::fs::remove_file(dirs.pids.join(format!("{name}.pid")));
    pid.is_some()
}

/// Stops process `name` (from its pid file) and removes the pid file. Missing is fine.
pub fn stop(dirs: &Dirs, name: &str) {
    stop_within(dirs, name, Duration::from_secs(5));
}

/// Stops every process with a pid file.
pub fn stop_all(dirs: &Dirs) {
    let Ok(entries) = std::fs::read_dir(&dirs.pids) else {
        return;
    };
    for e in entries.flatten() {
        if let Some(name) = e.file_name().to_str().and_then(|n| n.strip_suffix(".pid")) {
            stop(dirs, name);
        }
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn started_processes_do_not_inherit_open_descriptors() {
        let dir = std::env::temp_dir().join(format!("sy-procs-test-{}", std::process::id()));
        let dirs = Dirs::new(&dir).unwrap();
        // An inheritable descriptor, as flock(1) hands its lock to the command it runs.
        let path = std::ffi::CString::new(dir.join("lock").to_string_lossy().as_bytes()).unwrap();
        // SAFETY: a valid path; the descriptor is closed below.
        let opened = unsafe { libc::open(path.as_ptr(), libc::O_CREAT | libc::O_RDWR, 0o600) };
        // A number the listing process does not use for itself.
        // SAFETY: both descriptors are ours.
        let fd = unsafe { libc::dup2(opened, 57) };
        unsafe { libc::close(opened) };
        assert_eq!(fd, 57);
        let pid = start(&dirs, "fds", None, &["sh", "-c", "ls /proc/self/fd"]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while alive(pid as i32) && Instant::now() < deadline {
            reap(pid as i32);
            std::thread::sleep(Duration::from_millis(10));
        }
        let listed = std::fs::read_to_string(dirs.log("fds")).unwrap();
        // SAFETY: our own descriptor.
        unsafe { libc::close(fd) };
        let fds: Vec<&str> = listed.split_whitespace().collect();
        assert!(fds.contains(&"1"), "{listed}");
        assert!(
            !fds.contains(&fd.to_string().as_str()),
            "fd {fd} leaked: {listed}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
