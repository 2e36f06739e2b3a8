//! The `/etc/hosts` a pod's containers get, as kube's kubelet writes it
//! (`managedHostsFileContent`, `nodeHostsFileContent`).
//!
//! Invariant: the host's `/etc/hosts` is only ever read. A pod with a network namespace of its
//! own gets the kubelet's managed file: localhost lines, then its address with its hostname
//! (`spec.hostname`, else the pod's name; with `spec.subdomain` also the fully qualified
//! `HOSTNAME.SUBDOMAIN.NS.svc.DOMAIN`), then `hostAliases`. A `hostNetwork` pod keeps the
//! host's file, copied with its `hostAliases` appended if it has any.
use k8s_openapi::api::core::v1::Pod;
use std::net::Ipv4Addr;

/// The localhost part of every managed file.
const MANAGED_HEADER: &str = "# Kubernetes-managed hosts file.\n\
127.0.0.1\tlocalhost\n\
::1\tlocalhost ip6-localhost ip6-loopback\n\
fe00::0\tip6-localnet\n\
fe00::0\tip6-mcastprefix\n\
fe00::1\tip6-allnodes\n\
fe00::2\tip6-allrouters\n";

/// The `/etc/hosts` text of `pod` at address `ip` in cluster domain `domain`; `None` to keep
/// the host's file. `host` reads the host's file (only for `hostNetwork` pods with aliases).
pub fn for_pod(
    pod: &Pod,
    ip: Ipv4Addr,
    domain: &str,
    host: impl FnOnce() -> String,
) -> Option<String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let aliases = aliases(pod);
    if spec.host_network.unwrap_or(false) {
        if aliases.is_empty() {
            return None;
        }
        let mut text = host();
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        return Some(text + &aliases);
    }
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let hostname = spec
        .hostname
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| name.chars().take(63).collect());
    let mut text = MANAGED_HEADER.to_string();
    match spec.subdomain.filter(|s| !s.is_empty()) {
        Some(sub) => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let domain = domain.trim_end_matches('.');
            text.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{ns}.svc.{domain}\t{hostname}\n"
            ));
        }
        None => text.push_str(&format!("{ip}\t{hostname}\n")),
    }
    Some(text + &aliases)
}

/// The `hostAliases` section ("" without aliases).
fn aliases(pod: &Pod) -> String {
    let list = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_aliases.clone())
        .unwrap_or_default();
    if list.is_empty() {
        return String::new();
    }
    let mut out = "\n# Entries added by HostAliases.\n".to_string();
    for a in list {
        let names = a.hostnames.unwrap_or_default();
        if !names.is_empty() {
            out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pod;
    use super::*;
    use serde_json::json;

    fn hosts(spec: serde_json::Value) -> Option<String> {
        for_pod(
            &pod("shop", "web-1", spec),
            Ipv4Addr::new(10, 244, 1, 5),
            "cluster.local",
            || "127.0.0.1\tlocalhost\n198.18.0.11\tn1".into(),
        )
    }

    #[test]
    fn a_pod_finds_its_own_address_under_its_name() {
        let text = hosts(json!({})).unwrap();
        assert!(text.starts_with(MANAGED_HEADER), "{text}");
        assert!(text.ends_with("\n10.244.1.5\tweb-1\n"), "{text}");
    }

    #[test]
    fn hostname_and_subdomain_give_the_fully_qualified_name() {
        let text = hosts(json!({"hostname": "db-0", "subdomain": "db"})).unwrap();
        assert!(
            text.ends_with("\n10.244.1.5\tdb-0.db.shop.svc.cluster.local\tdb-0\n"),
            "{text}"
        );
    }

    #[test]
    fn host_aliases_are_appended_and_host_network_pods_keep_the_hosts_file() {
        let aliases = json!([{"ip": "192.0.2.7", "hostnames": ["foo.local", "bar.local"]}]);
        let text = hosts(json!({"hostAliases": aliases})).unwrap();
        assert!(
            text.ends_with(
                "10.244.1.5\tweb-1\n\n# Entries added by HostAliases.\n192.0.2.7\tfoo.local\tbar.local\n"
            ),
            "{text}"
        );
        assert_eq!(hosts(json!({"hostNetwork": true})), None);
        assert_eq!(
            hosts(json!({"hostNetwork": true, "hostAliases": aliases})).unwrap(),
            "127.0.0.1\tlocalhost\n198.18.0.11\tn1\n\n# Entries added by HostAliases.\n192.0.2.7\tfoo.local\tbar.local\n"
        );
    }
}
