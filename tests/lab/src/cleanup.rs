//! `lab down`: removes everything a lab (or a half-made one) left — processes, every `sy-*`
//! network namespace (nodes, pods, underlay, external client), root links named `sy-*`, BPF pins (switchyard's and the lab's own XDP links),
//! runtime state, the (empty) service-account mount point, and in the lab directory the
//! DaemonSet mode's redirected host directories and service-account files. Idempotent.
use std::time::Duration;

use crate::cmd::{output, quiet};
use crate::procs::{self, Dirs};

/// Every network namespace whose name starts with `sy-`.
pub fn lab_namespaces() -> Vec<String> {
    let Ok(out) = output(&["ip", "netns", "list"]) else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|n| n.starts_with("sy-"))
        .map(str::to_string)
        .collect()
}

/// Tears the lab down; `dirs` locates the pid files of the processes it started.
pub fn down(dirs: Option<&Dirs>) {
    if let Some(d) = dirs {
        procs::stop_all(d);
        if let Some(lab_dir) = d.logs.parent() {
            let _ = std::fs::remove_dir_all(crate::daemonset::host_root(lab_dir));
            let _ = std::fs::remove_dir_all(crate::daemonset::service_account_dir(lab_dir));
        }
    }
    let namespaces = lab_namespaces();
    // Processes still inside lab namespaces (pods, or lab processes whose pid file is gone)
    // were started by the lab.
    for ns in &namespaces {
        if let Ok(out) = output(&["ip", "netns", "pids", ns]) {
            for pid in String::from_utf8_lossy(&out.stdout)
                .split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
            {
                procs::stop_pid(pid, Duration::from_millis(500));
            }
        }
    }
    for ns in &namespaces {
        quiet(&["ip", "netns", "del", ns]);
    }
    if let Ok(out) = output(&["ip", "-o", "link", "show"]) {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line
                .split(": ")
                .nth(1)
                .unwrap_or("")
                .split('@')
                .next()
                .unwrap_or("");
            if name.starts_with("sy-") {
                quiet(&["ip", "link", "del", name]);
            }
        }
    }
    let _ = std::fs::remove_dir_all("/sys/fs/bpf/switchyard");
    let _ = std::fs::remove_dir_all(crate::xdp_pass::PIN_DIR);
    let _ = std::fs::remove_dir_all("/run/switchyard");
    let _ = std::fs::remove_dir_all(crate::lab::CP_DATA_IN_MEMORY);
    // The kubelets' mount point for pods' service-account directories (made on the host when
    // missing); removed only while empty, so nothing of anyone else's goes.
    for dir in [
        "/var/run/secrets/kubernetes.io/serviceaccount",
        "/var/run/secrets/kubernetes.io",
        "/var/run/secrets",
    ] {
        let _ = std::fs::remove_dir(dir);
    }
}
