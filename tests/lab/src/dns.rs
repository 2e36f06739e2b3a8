//! The lab's cluster DNS: the `kube-system/kube-dns` Service (ClusterIP [`CLUSTER_IP`], port 53
//! over UDP and TCP) in front of a pod running `switchyard-labnode dns` as service account
//! [`SERVICE_ACCOUNT`], which [`crate::Lab::up`] creates once the nodes are Ready and waits for
//! until a name resolves.
//!
//! Invariant: the kubelets are started with `--cluster-dns` [`CLUSTER_IP`] and
//! `--cluster-domain` [`DOMAIN`] ([`kubelet_args`]), so every pod with the default `dnsPolicy`
//! resolves Service names through it; nothing here or in the DNS touches the host's
//! `/etc/resolv.conf`, and the DNS forwards nothing.
use std::path::Path;
use std::time::Duration;

use crate::cmd::output;
use crate::kube::{self, Kubectl};
use crate::{netns, topology, LabError};

/// The kube-dns Service's ClusterIP, the pods' nameserver.
pub const CLUSTER_IP: &str = "10.96.0.10";
/// The cluster domain.
pub const DOMAIN: &str = "cluster.local";
/// The DNS pod's service account (`namespace/name`): its token may read Services and
/// EndpointSlices ([`crate::kube::token_file_text`]).
pub const SERVICE_ACCOUNT: &str = "kube-system/kube-dns";
/// The name the lab waits for: the API server's Service, which always exists.
pub const PROBE_NAME: &str = "kubernetes.default.svc.cluster.local";
/// [`PROBE_NAME`]'s address.
const PROBE_ADDRESS: &str = "10.96.0.1";

/// The DNS pod and its Service (`dnsPolicy: Default`, as CoreDNS's: the DNS itself keeps the
/// host's resolver; ready once it serves TCP on port 53, which it does after listing the API).
pub const MANIFEST: &str = r#"apiVersion: v1
kind: Pod
metadata:
  name: cluster-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  serviceAccountName: kube-dns
  dnsPolicy: Default
  containers:
    - name: dns
      image: switchyard/labnode
      command: [switchyard-labnode, dns, --cluster-domain, cluster.local]
      ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
      readinessProbe:
        tcpSocket: {port: 53}
        periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: 10.96.0.10
  selector: {k8s-app: kube-dns}
  ports:
    - {name: dns, port: 53, targetPort: 53, protocol: UDP}
    - {name: dns-tcp, port: 53, targetPort: 53, protocol: TCP}
"#;

/// The kubelet arguments that point pods at the cluster DNS and give the DNS pod its token
/// (the first line of `token_file`).
pub fn kubelet_args(token_file: &Path) -> Vec<String> {
    vec![
        "--cluster-dns".into(),
        CLUSTER_IP.into(),
        "--cluster-domain".into(),
        DOMAIN.into(),
        "--service-account-token".into(),
        format!("{SERVICE_ACCOUNT}={}", token_file.display()),
    ]
}

/// `dig` asking the cluster DNS for `name` (type `qtype`, over TCP if `tcp`) from node
/// namespace `node_ns`: the answer lines (`+short`; none for NXDOMAIN, NODATA or no answer).
pub fn dig(node_ns: &str, name: &str, qtype: &str, tcp: bool) -> Result<String, LabError> {
    let server = format!("@{CLUSTER_IP}");
    let mut argv = vec!["dig", &server, "+time=1", "+tries=1", "+short", name, qtype];
    if tcp {
        argv.push("+tcp");
    }
    let out = netns::in_ns(node_ns, &argv)
        .output()
        .map_err(|source| LabError::Spawn {
            cmd: argv.join(" "),
            source,
        })?;
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Creates the DNS pod and Service (the manifest is written to `dir`) and waits until the DNS
/// answers [`PROBE_NAME`] from node 1.
pub fn start(kubectl: &Kubectl, dir: &Path, log_hint: &str) -> Result<(), LabError> {
    // Checked first: without dig the wait below could only time out.
    output(&["dig", "-v"])?;
    let manifest = dir.join("cluster-dns.yaml");
    std::fs::write(&manifest, MANIFEST).map_err(|e| LabError::Io(manifest.clone(), e))?;
    kubectl.apply_file(&manifest)?;
    let node = topology::node_ns(1);
    kube::wait(
        &format!("the cluster DNS ({CLUSTER_IP}) to resolve {PROBE_NAME}"),
        Duration::from_secs(60),
        Some(log_hint),
        || Ok(dig(&node, PROBE_NAME, "A", false)? == PROBE_ADDRESS),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_puts_the_dns_behind_the_address_the_kubelets_hand_out() {
        assert!(MANIFEST.contains(&format!("clusterIP: {CLUSTER_IP}\n")));
        assert!(MANIFEST.contains(&format!("--cluster-domain, {DOMAIN}]")));
        let (ns, name) = SERVICE_ACCOUNT.split_once('/').unwrap();
        assert!(MANIFEST.contains(&format!("namespace: {ns}\n")));
        assert!(MANIFEST.contains(&format!("serviceAccountName: {name}\n")));
        let args = kubelet_args(Path::new("/t"));
        assert_eq!(args[1], CLUSTER_IP);
        assert_eq!(args[5], "kube-system/kube-dns=/t");
    }
}
