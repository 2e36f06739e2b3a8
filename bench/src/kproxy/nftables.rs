//! kube-proxy's nftables mode: table `ip kube-proxy` with a `service-ips` verdict map from
//! (ClusterIP, protocol, port) to a per-service chain that picks an endpoint chain with
//! `numgen random mod N vmap`, and a `service-nodeports` map for NodePorts; loaded with `nft -f`.
//! An endpoint change is a small transaction touching only that service, as kube-proxy sends.
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{chain_hash, Svc, SvcPort};

/// The table's name.
pub const TABLE: &str = "kube-proxy";

fn id(s: &Svc, p: &SvcPort) -> String {
    format!("{}/{}/tcp/{}", s.namespace, s.name, p.name)
}

/// `service-…` chain of a service port.
pub fn svc_chain(s: &Svc, p: &SvcPort) -> String {
    let id = id(s, p);
    format!("service-{}-{id}", &chain_hash(&id)[..8])
}

/// `external-…` chain of a NodePort.
pub fn ext_chain(s: &Svc, p: &SvcPort) -> String {
    let id = id(s, p);
    format!("external-{}-{id}", &chain_hash(&id)[..8])
}

/// `endpoint-…` chain of one endpoint.
pub fn ep_chain(s: &Svc, p: &SvcPort, ep: Ipv4Addr) -> String {
    let id = format!("{}__{ep}/{}", id(s, p), p.target);
    format!("endpoint-{}-{id}", &chain_hash(&id)[..8])
}

fn ep_rules(p: &SvcPort, ep: Ipv4Addr) -> [String; 2] {
    [
        format!("ip saddr {ep} jump mark-for-masquerade"),
        format!("meta l4proto tcp dnat to {ep}:{}", p.target),
    ]
}

fn svc_rules(s: &Svc, p: &SvcPort, cluster_cidr: &str) -> Vec<String> {
    let mut rules = vec![format!(
        "ip daddr {} tcp dport {} ip saddr != {cluster_cidr} jump mark-for-masquerade",
        s.cluster_ip, p.port
    )];
    if !s.endpoints.is_empty() {
        let arms: Vec<String> = s
            .endpoints
            .iter()
            .enumerate()
            .map(|(i, ep)| format!("{i} : goto {}", ep_chain(s, p, *ep)))
            .collect();
        rules.push(format!(
            "numgen random mod {} vmap {{ {} }}",
            s.endpoints.len(),
            arms.join(", ")
        ));
    }
    rules
}

fn chain(out: &mut String, name: &str, rules: &[String]) {
    let _ = writeln!(out, "\tchain {name} {{");
    for r in rules {
        let _ = writeln!(out, "\t\t{r}");
    }
    let _ = writeln!(out, "\t}}");
}

/// The whole table for `services` (`nft -f` into an empty ruleset).
pub fn full(services: &[Svc], cluster_cidr: &str) -> String {
    let mut out = format!("table ip {TABLE} {{\n");
    chain(
        &mut out,
        "mark-for-masquerade",
        &["meta mark set meta mark | 0x4000".into()],
    );
    chain(
        &mut out,
        "masquerading",
        &[
            "meta mark & 0x4000 == 0 return".into(),
            "meta mark set meta mark ^ 0x4000".into(),
            "masquerade fully-random".into(),
        ],
    );
    let (mut ips, mut nodeports) = (Vec::new(), Vec::new());
    for s in services {
        for p in &s.ports {
            for ep in &s.endpoints {
                chain(&mut out, &ep_chain(s, p, *ep), &ep_rules(p, *ep));
            }
            let svc = svc_chain(s, p);
            chain(&mut out, &svc, &svc_rules(s, p, cluster_cidr));
            ips.push(format!("{} . tcp . {} : goto {svc}", s.cluster_ip, p.port));
            if let Some(np) = p.node_port {
                let ext = ext_chain(s, p);
                chain(
                    &mut out,
                    &ext,
                    &["jump mark-for-masquerade".into(), format!("goto {svc}")],
                );
                nodeports.push(format!("tcp . {np} : goto {ext}"));
            }
        }
    }
    for (name, key, elems) in [
        ("service-ips", "ipv4_addr . inet_proto . inet_service", &ips),
        ("service-nodeports", "inet_proto . inet_service", &nodeports),
    ] {
        let _ = writeln!(out, "\tmap {name} {{\n\t\ttype {key} : verdict");
        if !elems.is_empty() {
            let _ = writeln!(out, "\t\telements = {{ {} }}", elems.join(",\n\t\t\t"));
        }
        let _ = writeln!(out, "\t}}");
    }
    chain(
        &mut out,
        "services",
        &[
            "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports".into(),
        ],
    );
    for (name, hook, prio, jump) in [
        ("nat-prerouting", "prerouting", "dstnat", "services"),
        ("nat-output", "output", "-100", "services"),
        ("nat-postrouting", "postrouting", "srcnat", "masquerading"),
    ] {
        let _ = writeln!(
            out,
            "\tchain {name} {{\n\t\ttype nat hook {hook} priority {prio}; policy accept;\n\t\tjump {jump}\n\t}}"
        );
    }
    out.push_str("}\n");
    out
}

/// The transaction kube-proxy sends when service `before` became `after`: new endpoint
/// chains, the service chain rewritten, stale endpoint chains deleted.
pub fn update(before: &Svc, after: &Svc, cluster_cidr: &str) -> String {
    let mut out = String::new();
    for p in &after.ports {
        for ep in after
            .endpoints
            .iter()
            .filter(|e| !before.endpoints.contains(e))
        {
            let c = ep_chain(after, p, *ep);
            let _ = writeln!(out, "add chain ip {TABLE} {c}");
            for r in ep_rules(p, *ep) {
                let _ = writeln!(out, "add rule ip {TABLE} {c} {r}");
            }
        }
        let svc = svc_chain(after, p);
        let _ = writeln!(out, "flush chain ip {TABLE} {svc}");
        for r in svc_rules(after, p, cluster_cidr) {
            let _ = writeln!(out, "add rule ip {TABLE} {svc} {r}");
        }
        for ep in before
            .endpoints
            .iter()
            .filter(|e| !after.endpoints.contains(e))
        {
            let _ = writeln!(out, "delete chain ip {TABLE} {}", ep_chain(before, p, *ep));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kproxy::iptables::tests::svc;

    #[test]
    fn full_table_maps_service_ips_to_service_chains_with_numgen() {
        let s = svc();
        let t = full(std::slice::from_ref(&s), "10.244.0.0/16");
        let p = &s.ports[0];
        let c = svc_chain(&s, p);
        assert!(
            c.starts_with("service-") && c.ends_with("-default/echo/tcp/http"),
            "{c}"
        );
        assert!(
            t.contains(&format!("10.96.0.10 . tcp . 80 : goto {c}")),
            "{t}"
        );
        assert!(t.contains(&format!(
            "numgen random mod 2 vmap {{ 0 : goto {}, 1 : goto {} }}",
            ep_chain(&s, p, s.endpoints[0]),
            ep_chain(&s, p, s.endpoints[1])
        )));
        assert!(t.contains("meta l4proto tcp dnat to 10.244.2.5:8080"));
        assert!(t.contains("tcp . 31002 : goto external-"));
        assert!(t.contains("type nat hook prerouting priority dstnat; policy accept;"));
    }

    #[test]
    fn update_touches_only_the_changed_service() {
        let before = svc();
        let mut after = svc();
        after.endpoints[1] = Ipv4Addr::new(10, 244, 3, 9);
        let t = update(&before, &after, "10.244.0.0/16");
        let p = &before.ports[0];
        assert!(t.contains(&format!(
            "flush chain ip kube-proxy {}",
            svc_chain(&after, p)
        )));
        assert!(t.contains(&format!(
            "delete chain ip kube-proxy {}",
            ep_chain(&before, p, before.endpoints[1])
        )));
        assert!(t.contains("dnat to 10.244.3.9:8080"));
        assert_eq!(t.lines().filter(|l| l.starts_with("add chain")).count(), 1);
    }
}
