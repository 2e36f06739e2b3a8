//! The pod's own `/etc/resolv.conf` and `/etc/hosts` ([`super::resolvconf`], [`super::hosts`]):
//! written into the pod's directory on the host (`/run/switchyard/<node>/pods/<uid>/etc/`) and
//! bind-mounted over the host's files in each container's mount namespace
//! ([`super::process::spawn`]).
//!
//! Invariant: the host's `/etc/resolv.conf` and `/etc/hosts` are only ever read; a pod that
//! keeps the host's file gets no mount for it.
use super::error::Error;
use super::process::Mount;
use super::resolvconf::{self, ClusterDns, Resolver};
use k8s_openapi::api::core::v1::Pod;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Where containers look for their resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// Where containers look for static host names.
pub const HOSTS: &str = "/etc/hosts";

/// The kubelet's settings the files are made of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// The cluster DNS (`--cluster-dns`, `--cluster-domain`).
    pub cluster: ClusterDns,
    /// The host's resolver configuration (`--resolv-conf`).
    pub host_resolv_conf: PathBuf,
}

/// The directory of pod `uid`'s files: `/run/switchyard/<node>/pods/<uid>/etc`.
pub fn pod_dir(node: &str, uid: &str) -> PathBuf {
    super::serviceaccount::pod_root(node, uid).join("etc")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| {
        tracing::warn!(path = %path.display(), error = %e, "cannot read; taking it as empty");
        String::new()
    })
}

/// Writes `pod`'s (at `ip`) resolv.conf and hosts files into `dir` afresh, as far as it gets
/// files of its own; the mounts that put them in place.
pub fn write(
    dir: &Path,
    pod: &Pod,
    ip: Ipv4Addr,
    settings: &Settings,
) -> Result<Vec<Mount>, Error> {
    let _ = std::fs::remove_dir_all(dir);
    let resolver = resolvconf::for_pod(pod, &settings.cluster, || read(&settings.host_resolv_conf));
    let hosts = super::hosts::for_pod(pod, ip, &settings.cluster.domain, || read(Path::new(HOSTS)));
    let files = [
        (
            "resolv.conf",
            RESOLV_CONF,
            match resolver {
                Resolver::File(text) => Some(text),
                Resolver::Host => None,
            },
        ),
        ("hosts", HOSTS, hosts),
    ];
    let mut mounts = Vec::new();
    for (name, target, text) in files {
        let Some(text) = text else { continue };
        std::fs::create_dir_all(dir).map_err(Error::io(dir))?;
        let source = dir.join(name);
        std::fs::write(&source, text).map_err(Error::io(&source))?;
        mounts.push(Mount {
            source,
            target: PathBuf::from(target),
        });
    }
    Ok(mounts)
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pod;
    use super::*;

    #[test]
    fn writes_the_files_a_pod_gets_and_mounts_them_over_etc() {
        let dir = std::env::temp_dir().join(format!("sy-etc-test-{}", std::process::id()));
        let pod = pod("default", "client", serde_json::json!({}));
        let settings = Settings {
            cluster: ClusterDns {
                servers: vec![Ipv4Addr::new(10, 96, 0, 10)],
                domain: "cluster.local".into(),
            },
            host_resolv_conf: dir.join("no-such-file"),
        };
        let ip = Ipv4Addr::new(10, 244, 1, 9);
        let result = write(&dir, &pod, ip, &settings);
        let resolv = std::fs::read_to_string(dir.join("resolv.conf")).unwrap_or_default();
        let hosts = std::fs::read_to_string(dir.join("hosts")).unwrap_or_default();
        let host_network = Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                host_network: Some(true),
                ..Default::default()
            }),
            ..pod.clone()
        };
        let again = write(&dir, &host_network, ip, &settings);
        let left = dir.exists();
        let _ = std::fs::remove_dir_all(&dir);
        let targets: Vec<PathBuf> = result.unwrap().into_iter().map(|m| m.target).collect();
        assert_eq!(targets, [PathBuf::from(RESOLV_CONF), PathBuf::from(HOSTS)]);
        assert_eq!(
            resolv,
            "search default.svc.cluster.local svc.cluster.local cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n"
        );
        assert!(hosts.ends_with("10.244.1.9\tclient\n"), "{hosts}");
        assert_eq!(
            again.unwrap(),
            [],
            "a hostNetwork pod keeps the host's files"
        );
        assert!(!left, "nothing written for it");
    }
}
