//! Pod network namespaces, made and removed like `ip netns add` / `ip netns delete`.
//!
//! The namespace is bind-mounted at `/run/netns/<name>` so the CNI plugin, the tests and an
//! operator can all open it by name. Bind mounts live in a mount namespace: run the kubelet in the
//! machine's mount namespace (`nsenter --net=/run/netns/sy-nN switchyard-labnode kubelet …`), not under
//! `ip netns exec`, whose private mount namespace would hide the pod namespaces from everyone
//! else. [`mount_namespace_warning`] detects that case.
use super::error::Error;
use std::path::PathBuf;

/// Where `ip netns` keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

/// Path of the named namespace `name`.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from(NETNS_DIR).join(name)
}

async fn ip(args: &[&str]) -> Result<(), Error> {
    let out = tokio::process::Command::new("ip")
        .args(args)
        .output()
        .await
        .map_err(|e| Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::Command {
            command: format!("ip {}", args.join(" ")),
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Creates the named namespace, replacing a stale one of the same name. Returns its path.
pub async fn create(name: &str) -> Result<PathBuf, Error> {
    let p = path(name);
    if p.exists() {
        tracing::info!(netns = name, "removing stale pod namespace");
        delete(name).await?;
    }
    ip(&["netns", "add", name]).await?;
    Ok(p)
}

/// Removes the named namespace (unmount + remove the file); a missing one is fine.
pub async fn delete(name: &str) -> Result<(), Error> {
    if !path(name).exists() {
        return Ok(());
    }
    ip(&["netns", "delete", name]).await
}

/// A warning when this process cannot publish namespaces to the rest of the machine: its
/// `/run/netns` is a mount that only receives propagation (a slave, as `ip netns exec` leaves
/// it) without sharing its own mounts.
pub fn mount_namespace_warning() -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    slave_only_netns_mount(&info).then(|| {
        "/run/netns is a slave mount here (kubelet started with `ip netns exec`?): pod namespaces \
         will be invisible outside this process; start it with `nsenter --net=/run/netns/<node-ns>`"
            .to_string()
    })
}

/// Whether the `/run/netns` entry of a mountinfo text is a slave without its own peer group.
fn slave_only_netns_mount(mountinfo: &str) -> bool {
    mountinfo
        .lines()
        .rfind(|l| l.split(' ').nth(4) == Some(NETNS_DIR))
        .is_some_and(|l| {
            let fields: Vec<&str> = l.split(' ').take_while(|f| *f != "-").skip(6).collect();
            fields.iter().any(|f| f.starts_with("master:"))
                && !fields.iter().any(|f| f.starts_with("shared:"))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_slave_only_run_netns() {
        let host = "36 25 0:23 / /run/netns rw,nosuid shared:5 - tmpfs tmpfs rw\n";
        let exec = "36 25 0:23 / /run/netns rw,nosuid master:5 - tmpfs tmpfs rw\n";
        let none = "25 1 8:1 / / rw,relatime - ext4 /dev/vda rw\n";
        assert!(!slave_only_netns_mount(host));
        assert!(slave_only_netns_mount(exec));
        assert!(!slave_only_netns_mount(none));
    }
}
