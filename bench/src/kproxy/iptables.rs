//! kube-proxy's iptables mode: the nat table it writes with `iptables-restore`, for a full
//! sync and for a partial sync after one endpoint changed (kube-proxy ≥ 1.28 rewrites
//! `KUBE-SERVICES` and only the changed service's chains, with `--noflush`).
use std::fmt::Write as _;
use std::net::Ipv4Addr;

use super::{chain_hash, Svc, SvcPort};

/// `KUBE-SVC-…` chain of a service port.
pub fn svc_chain(s: &Svc, p: &SvcPort) -> String {
    format!(
        "KUBE-SVC-{}",
        chain_hash(&format!("{}/tcp", s.port_name(p)))
    )
}

/// `KUBE-EXT-…` chain of a NodePort.
pub fn ext_chain(s: &Svc, p: &SvcPort) -> String {
    format!(
        "KUBE-EXT-{}",
        chain_hash(&format!("{}/tcp", s.port_name(p)))
    )
}

/// `KUBE-SEP-…` chain of one endpoint of a service port.
pub fn sep_chain(s: &Svc, p: &SvcPort, ep: Ipv4Addr) -> String {
    format!(
        "KUBE-SEP-{}",
        chain_hash(&format!("{}/tcp{ep}:{}", s.port_name(p), p.target))
    )
}

const HEADER: &str = "*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-MARK-MASQ - [0:0]
";

const FIXED_RULES: &str = "-A PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A OUTPUT -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment \"kubernetes postrouting rules\" -j KUBE-POSTROUTING
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -j MARK --set-xmark 0x4000/0x0
-A KUBE-POSTROUTING -m comment --comment \"kubernetes service traffic requiring SNAT\" -j MASQUERADE --random-fully
";

/// The `KUBE-SERVICES` and `KUBE-NODEPORTS` rules of every service (the part every sync rewrites).
fn dispatch(services: &[Svc], out: &mut String) {
    for s in services {
        for p in &s.ports {
            let _ = writeln!(
                out,
                "-A KUBE-SERVICES -d {}/32 -p tcp -m comment --comment \"{} cluster IP\" -m tcp --dport {} -j {}",
                s.cluster_ip,
                s.port_name(p),
                p.port,
                svc_chain(s, p)
            );
        }
    }
    let _ = writeln!(out, "-A KUBE-SERVICES -m comment --comment \"kubernetes service nodeports; NOTE: this must be the last rule in this chain\" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS");
    for s in services {
        for p in &s.ports {
            if let Some(np) = p.node_port {
                let _ = writeln!(
                    out,
                    "-A KUBE-NODEPORTS -p tcp -m comment --comment \"{}\" -m tcp --dport {np} -j {}",
                    s.port_name(p),
                    ext_chain(s, p)
                );
            }
        }
    }
}

/// Chain declarations of one service.
fn declare(s: &Svc, out: &mut String) {
    for p in &s.ports {
        let _ = writeln!(out, ":{} - [0:0]", svc_chain(s, p));
        if p.node_port.is_some() {
            let _ = writeln!(out, ":{} - [0:0]", ext_chain(s, p));
        }
        for ep in &s.endpoints {
            let _ = writeln!(out, ":{} - [0:0]", sep_chain(s, p, *ep));
        }
    }
}

/// The rules of one service's own chains.
fn service_rules(s: &Svc, cluster_cidr: &str, out: &mut String) {
    for p in &s.ports {
        let name = s.port_name(p);
        let svc = svc_chain(s, p);
        if p.node_port.is_some() {
            let ext = ext_chain(s, p);
            let _ = writeln!(out, "-A {ext} -m comment --comment \"masquerade traffic for {name} external destinations\" -j KUBE-MARK-MASQ");
            let _ = writeln!(out, "-A {ext} -j {svc}");
        }
        let _ = writeln!(
            out,
            "-A {svc} ! -s {cluster_cidr} -d {}/32 -p tcp -m comment --comment \"{name} cluster IP\" -m tcp --dport {} -j KUBE-MARK-MASQ",
            s.cluster_ip, p.port
        );
        let n = s.endpoints.len();
        for (i, ep) in s.endpoints.iter().enumerate() {
            let sep = sep_chain(s, p, *ep);
            let left = n - i;
            if left > 1 {
                let _ = writeln!(
                    out,
                    "-A {svc} -m comment --comment \"{name} -> {ep}:{}\" -m statistic --mode random --probability {:.11} -j {sep}",
                    p.target,
                    1.0 / left as f64
                );
            } else {
                let _ = writeln!(
                    out,
                    "-A {svc} -m comment --comment \"{name} -> {ep}:{}\" -j {sep}",
                    p.target
                );
            }
            let _ = writeln!(
                out,
                "-A {sep} -s {ep}/32 -m comment --comment \"{name}\" -j KUBE-MARK-MASQ"
            );
            let _ = writeln!(
                out,
                "-A {sep} -p tcp -m comment --comment \"{name}\" -m tcp -j DNAT --to-destination {ep}:{}",
                p.target
            );
        }
    }
}

/// The whole nat table for `services` (a full `iptables-restore`, which replaces the table).
pub fn full(services: &[Svc], cluster_cidr: &str) -> String {
    let mut out = String::from(HEADER);
    for s in services {
        declare(s, &mut out);
    }
    out.push_str(FIXED_RULES);
    dispatch(services, &mut out);
    for s in services {
        service_rules(s, cluster_cidr, &mut out);
    }
    out.push_str("COMMIT\n");
    out
}

/// kube-proxy's partial sync after service `before` became `after` (for
/// `iptables-restore --noflush`): `KUBE-SERVICES`/`KUBE-NODEPORTS` in full, the changed
/// service's chains, and the removal of endpoint chains that are gone.
pub fn update(services: &[Svc], before: &Svc, after: &Svc, cluster_cidr: &str) -> String {
    let mut out = String::from("*nat\n:KUBE-SERVICES - [0:0]\n:KUBE-NODEPORTS - [0:0]\n");
    declare(after, &mut out);
    let mut stale = Vec::new();
    for p in &before.ports {
        for ep in before
            .endpoints
            .iter()
            .filter(|e| !after.endpoints.contains(e))
        {
            let c = sep_chain(before, p, *ep);
            let _ = writeln!(out, ":{c} - [0:0]");
            stale.push(c);
        }
    }
    dispatch(services, &mut out);
    service_rules(after, cluster_cidr, &mut out);
    for c in stale {
        let _ = writeln!(out, "-X {c}");
    }
    out.push_str("COMMIT\n");
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn svc() -> Svc {
        Svc {
            namespace: "default".into(),
            name: "echo".into(),
            cluster_ip: Ipv4Addr::new(10, 96, 0, 10),
            ports: vec![SvcPort {
                name: "http".into(),
                port: 80,
                target: 8080,
                node_port: Some(31002),
            }],
            endpoints: vec![Ipv4Addr::new(10, 244, 1, 5), Ipv4Addr::new(10, 244, 2, 5)],
        }
    }

    #[test]
    fn full_sync_has_kube_proxys_chain_structure() {
        let s = svc();
        let t = full(std::slice::from_ref(&s), "10.244.0.0/16");
        let p = &s.ports[0];
        let (svc, sep1, sep2) = (
            svc_chain(&s, p),
            sep_chain(&s, p, s.endpoints[0]),
            sep_chain(&s, p, s.endpoints[1]),
        );
        assert!(t.contains(&format!("-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment \"default/echo:http cluster IP\" -m tcp --dport 80 -j {svc}")), "{t}");
        assert!(t.contains(&format!("-A {svc} -m comment --comment \"default/echo:http -> 10.244.1.5:8080\" -m statistic --mode random --probability 0.50000000000 -j {sep1}")), "{t}");
        assert!(
            t.contains(&format!(
                "-A {svc} -m comment --comment \"default/echo:http -> 10.244.2.5:8080\" -j {sep2}"
            )),
            "{t}"
        );
        assert!(t.contains(&format!("-A {sep2} -p tcp -m comment --comment \"default/echo:http\" -m tcp -j DNAT --to-destination 10.244.2.5:8080")));
        assert!(t.contains("--dport 31002 -j KUBE-EXT-"));
        assert!(t.contains("-j MASQUERADE --random-fully"));
        assert!(t.ends_with("COMMIT\n"));
    }

    #[test]
    fn partial_sync_rewrites_dispatch_and_the_changed_service_and_deletes_stale_endpoints() {
        let before = svc();
        let mut after = svc();
        after.endpoints[1] = Ipv4Addr::new(10, 244, 3, 9);
        let t = update(
            std::slice::from_ref(&after),
            &before,
            &after,
            "10.244.0.0/16",
        );
        let p = &before.ports[0];
        assert!(t.starts_with("*nat\n:KUBE-SERVICES - [0:0]\n"));
        assert!(t.contains(&format!(
            "-X {}",
            sep_chain(&before, p, before.endpoints[1])
        )));
        assert!(t.contains("--to-destination 10.244.3.9:8080"));
        assert!(!t.contains(":PREROUTING"));
    }
}
