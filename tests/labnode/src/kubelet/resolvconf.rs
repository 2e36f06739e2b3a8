//! The resolver configuration a pod's containers get, as kube's kubelet works it out
//! (`pkg/kubelet/network/dns`) from the pod's `dnsPolicy` and `dnsConfig`, the cluster DNS the
//! kubelet was given (`--cluster-dns`, `--cluster-domain`) and the host's resolv.conf.
//!
//! Invariant: the host's resolv.conf is only ever read. [`Resolver::Host`] leaves a container
//! the host's file; [`Resolver::File`] is the text the kubelet mounts over `/etc/resolv.conf` in
//! the container's own mount namespace ([`super::etc`]). The policies:
//! - `ClusterFirst` (the default): the cluster DNS — `nameserver 10.96.0.10`, `search
//!   NS.svc.DOMAIN svc.DOMAIN DOMAIN` (then the host's search domains), `options ndots:5`; for a
//!   `hostNetwork` pod, and when the kubelet has no `--cluster-dns`, `Default` instead;
//! - `ClusterFirstWithHostNet`: the cluster DNS, `hostNetwork` or not;
//! - `Default`: the host's configuration;
//! - `None`: nothing but the pod's `dnsConfig`.
//!
//! A `dnsConfig` is appended to what the policy gives (nameservers and search domains added
//! without duplicates, options replaced by name), then the kubelet's limits apply: three
//! nameservers, 32 search domains.
use k8s_openapi::api::core::v1::{Pod, PodDNSConfig};
use std::net::Ipv4Addr;

/// At most this many nameservers (glibc's `MAXNS`).
pub const MAX_NAMESERVERS: usize = 3;
/// At most this many search domains.
pub const MAX_SEARCHES: usize = 32;

/// The kubelet's cluster DNS settings.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterDns {
    /// `--cluster-dns`: the cluster DNS's addresses (none: `ClusterFirst` pods get the host's).
    pub servers: Vec<Ipv4Addr>,
    /// `--cluster-domain`, e.g. `cluster.local`.
    pub domain: String,
}

/// A resolver configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Config {
    /// `nameserver` lines.
    pub nameservers: Vec<String>,
    /// The `search` line.
    pub searches: Vec<String>,
    /// The `options` line: `(name, value)`.
    pub options: Vec<(String, Option<String>)>,
}

/// What a pod's containers see at `/etc/resolv.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolver {
    /// The host's own file, untouched.
    Host,
    /// A file of the pod's own with this text.
    File(String),
}

impl Config {
    /// Reads resolv.conf `text` as the kubelet does: `nameserver` lines, the last `search` (or
    /// `domain`) line, `options`; comments (`#`, `;`) and anything else ignored.
    pub fn parse(text: &str) -> Config {
        let mut c = Config::default();
        for line in text.lines() {
            let line = line.split(['#', ';']).next().unwrap_or("");
            let mut words = line.split_whitespace();
            match words.next() {
                Some("nameserver") => c.nameservers.extend(words.next().map(str::to_string)),
                Some("search") | Some("domain") => {
                    c.searches = words.map(|w| w.trim_end_matches('.').to_string()).collect()
                }
                Some("options") => {
                    for w in words {
                        merge_option(&mut c.options, option(w));
                    }
                }
                _ => {}
            }
        }
        c
    }

    /// The file's text: `search`, `nameserver` and `options` lines, as container runtimes
    /// write it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if !self.searches.is_empty() {
            out.push_str(&format!("search {}\n", self.searches.join(" ")));
        }
        for ns in &self.nameservers {
            out.push_str(&format!("nameserver {ns}\n"));
        }
        if !self.options.is_empty() {
            let opts: Vec<String> = self
                .options
                .iter()
                .map(|(n, v)| match v {
                    Some(v) => format!("{n}:{v}"),
                    None => n.clone(),
                })
                .collect();
            out.push_str(&format!("options {}\n", opts.join(" ")));
        }
        out
    }

    /// Adds `extra` (a pod's `dnsConfig`).
    fn append(&mut self, extra: &PodDNSConfig) {
        for ns in extra.nameservers.iter().flatten() {
            push_new(&mut self.nameservers, ns);
        }
        for s in extra.searches.iter().flatten() {
            push_new(&mut self.searches, s);
        }
        for o in extra.options.iter().flatten() {
            if let Some(name) = o.name.as_ref().filter(|n| !n.is_empty()) {
                merge_option(&mut self.options, (name.clone(), o.value.clone()));
            }
        }
    }

    /// Applies the kubelet's limits.
    fn fit(&mut self) {
        if self.nameservers.len() > MAX_NAMESERVERS {
            tracing::warn!(nameservers = ?self.nameservers, "more than {MAX_NAMESERVERS} nameservers; the rest are left out");
            self.nameservers.truncate(MAX_NAMESERVERS);
        }
        self.searches.truncate(MAX_SEARCHES);
    }
}

fn push_new(list: &mut Vec<String>, item: &str) {
    if !list.iter().any(|x| x == item) {
        list.push(item.to_string());
    }
}

/// `ndots:5` → (`ndots`, `5`).
fn option(word: &str) -> (String, Option<String>) {
    match word.split_once(':') {
        Some((n, v)) => (n.to_string(), Some(v.to_string())),
        None => (word.to_string(), None),
    }
}

/// Sets option `o`, replacing one of the same name.
fn merge_option(options: &mut Vec<(String, Option<String>)>, o: (String, Option<String>)) {
    match options.iter_mut().find(|(n, _)| *n == o.0) {
        Some(existing) => *existing = o,
        None => options.push(o),
    }
}

/// The resolver `pod` gets, given the kubelet's `cluster` settings and the host's resolv.conf
/// (`host`, read only when the policy needs it).
pub fn for_pod(pod: &Pod, cluster: &ClusterDns, host: impl FnOnce() -> String) -> Resolver {
    let spec = pod.spec.clone().unwrap_or_default();
    let host_network = spec.host_network.unwrap_or(false);
    let policy = spec.dns_policy.as_deref().unwrap_or("ClusterFirst");
    let cluster_first = match policy {
        "ClusterFirstWithHostNet" => true,
        "ClusterFirst" => !host_network,
        _ => false,
    };
    let mut config = match policy {
        "None" => Config::default(),
        _ if cluster_first && !cluster.servers.is_empty() => {
            let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
            let d = cluster.domain.trim_end_matches('.');
            let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.to_string()];
            for s in Config::parse(&host()).searches {
                push_new(&mut searches, &s);
            }
            Config {
                nameservers: cluster.servers.iter().map(ToString::to_string).collect(),
                searches,
                options: vec![("ndots".into(), Some("5".into()))],
            }
        }
        _ => match &spec.dns_config {
            // The host's file as it is: nothing to add.
            None => return Resolver::Host,
            Some(_) => Config::parse(&host()),
        },
    };
    if let Some(extra) = &spec.dns_config {
        config.append(extra);
    }
    config.fit();
    Resolver::File(config.render())
}

#[cfg(test)]
mod tests {
    use super::super::fixtures::pod;
    use super::*;
    use serde_json::json;

    fn lab() -> ClusterDns {
        ClusterDns {
            servers: vec![Ipv4Addr::new(10, 96, 0, 10)],
            domain: "cluster.local".into(),
        }
    }

    const HOST: &str = "# generated\nnameserver 192.0.2.53\nsearch corp.example\noptions edns0\n";

    fn resolver(spec: serde_json::Value, cluster: &ClusterDns) -> Resolver {
        for_pod(&pod("shop", "p", spec), cluster, || HOST.to_string())
    }

    #[test]
    fn a_pod_gets_the_cluster_dns_with_its_namespace_first_in_the_search_list() {
        assert_eq!(
            resolver(json!({}), &lab()),
            Resolver::File(
                "search shop.svc.cluster.local svc.cluster.local cluster.local corp.example\n\
                 nameserver 10.96.0.10\n\
                 options ndots:5\n"
                    .into()
            )
        );
    }

    #[test]
    fn host_network_pods_keep_the_hosts_resolver_unless_cluster_first_with_host_net() {
        assert_eq!(
            resolver(json!({"hostNetwork": true}), &lab()),
            Resolver::Host
        );
        let Resolver::File(text) = resolver(
            json!({"hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet"}),
            &lab(),
        ) else {
            panic!("the cluster DNS expected");
        };
        assert!(text.contains("nameserver 10.96.0.10\n"), "{text}");
    }

    #[test]
    fn default_keeps_the_hosts_resolver_and_so_does_a_kubelet_without_cluster_dns() {
        assert_eq!(
            resolver(json!({"dnsPolicy": "Default"}), &lab()),
            Resolver::Host
        );
        assert_eq!(resolver(json!({}), &ClusterDns::default()), Resolver::Host);
    }

    #[test]
    fn dns_config_is_appended_and_none_uses_nothing_else() {
        let config = json!({"nameservers": ["192.0.2.1"], "searches": ["x.example"],
                            "options": [{"name": "ndots", "value": "2"}, {"name": "rotate"}]});
        assert_eq!(
            resolver(json!({"dnsPolicy": "None", "dnsConfig": config}), &lab()),
            Resolver::File(
                "search x.example\nnameserver 192.0.2.1\noptions ndots:2 rotate\n".into()
            )
        );
        assert_eq!(
            resolver(json!({"dnsPolicy": "Default", "dnsConfig": config}), &lab()),
            Resolver::File(
                "search corp.example x.example\n\
                 nameserver 192.0.2.53\nnameserver 192.0.2.1\n\
                 options edns0 ndots:2 rotate\n"
                    .into()
            )
        );
        let Resolver::File(text) = resolver(json!({"dnsConfig": config}), &lab()) else {
            panic!("a file expected");
        };
        assert!(
            text.ends_with("nameserver 10.96.0.10\nnameserver 192.0.2.1\noptions ndots:2 rotate\n"),
            "{text}"
        );
    }

    #[test]
    fn at_most_three_nameservers() {
        let config = json!({"nameservers": ["192.0.2.1", "192.0.2.2", "192.0.2.3"]});
        let Resolver::File(text) = resolver(json!({"dnsConfig": config}), &lab()) else {
            panic!("a file expected");
        };
        assert_eq!(text.matches("nameserver").count(), 3, "{text}");
        assert!(!text.contains("192.0.2.3"), "{text}");
    }
}
