//! Removing kube-proxy's rules, as `kube-proxy --cleanup` does: per backend and table, the rules
//! of the built-in chains that jump to kube-proxy's chains, then those chains (flushed and
//! deleted in one `iptables-restore --noflush` transaction per table); and kube-proxy's nftables
//! tables (`nft delete table`).
//!
//! Invariant: only chains [`chains::is_kube_proxy_chain`] names are deleted, and the only other
//! rules touched are jumps to them from built-in chains. A rule in any other chain is never
//! touched; a kube-proxy chain that such a rule still jumps to is kept (deleting it would fail
//! the whole transaction, and the rule would dangle), and said so.
use std::collections::BTreeSet;

use super::chains;
use super::detect::Snapshot;
use super::report::Report;
use super::save::{Rule, Table};
use super::tools::{self, Backend, NftTable};

/// What goes from one table of one backend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TablePlan {
    /// The backend.
    pub backend: Backend,
    /// The table (`nat`, `filter`, `mangle`).
    pub table: String,
    /// Rules of built-in chains that jump to a chain being deleted.
    pub jumps: Vec<Rule>,
    /// kube-proxy's chains to flush and delete.
    pub chains: Vec<String>,
    /// kube-proxy's chains that stay, with the rule that still jumps to each.
    pub kept: Vec<(String, String)>,
}

impl TablePlan {
    /// Plans the removal of kube-proxy's chains from `table` (see the module's invariant).
    pub fn new(backend: Backend, table: &Table) -> TablePlan {
        let mut doomed: BTreeSet<&str> = table
            .chains
            .iter()
            .filter(|c| !c.builtin && chains::is_kube_proxy_chain(&table.name, &c.name))
            .map(|c| c.name.as_str())
            .collect();
        let mut kept = Vec::new();
        // A chain that a surviving rule jumps to survives too; that may keep the chains its own
        // rules jump to, hence the loop.
        loop {
            let blocked: Vec<(&str, &Rule)> = table
                .rules
                .iter()
                .filter_map(|r| Some((r.target.as_deref()?, r)))
                .filter(|(target, r)| {
                    doomed.contains(target)
                        && !doomed.contains(r.chain.as_str())
                        && !table.is_builtin(&r.chain)
                })
                .collect();
            if blocked.is_empty() {
                break;
            }
            for (target, rule) in blocked {
                if doomed.remove(target) {
                    kept.push((target.to_string(), rule.text()));
                }
            }
        }
        let jumps = table
            .rules
            .iter()
            .filter(|r| table.is_builtin(&r.chain))
            .filter(|r| r.target.as_deref().is_some_and(|t| doomed.contains(t)))
            .cloned()
            .collect();
        TablePlan {
            backend,
            table: table.name.clone(),
            jumps,
            chains: table
                .chains
                .iter()
                .map(|c| c.name.as_str())
                .filter(|c| doomed.contains(c))
                .map(str::to_string)
                .collect(),
            kept,
        }
    }

    /// The `iptables-restore --noflush` input: declaring a chain flushes it, then the jumps are
    /// deleted (`-D` with the rule exactly as saved), then the chains.
    pub fn restore_input(&self) -> String {
        let mut out = format!("*{}\n", self.table);
        for c in &self.chains {
            out.push_str(&format!(":{c} - [0:0]\n"));
        }
        for r in &self.jumps {
            out.push_str(&format!("-D {} {}\n", r.chain, r.spec));
        }
        for c in &self.chains {
            out.push_str(&format!("-X {c}\n"));
        }
        out.push_str("COMMIT\n");
        out
    }

    /// Whether nothing goes from this table.
    pub fn is_empty(&self) -> bool {
        self.jumps.is_empty() && self.chains.is_empty()
    }

    fn place(&self) -> String {
        format!("{} {}", self.backend.label(), self.table)
    }

    /// One line per rule and chain that goes, for people.
    pub fn items(&self) -> Vec<String> {
        let place = self.place();
        let rules = self
            .jumps
            .iter()
            .map(|r| format!("{place} rule {}", r.text()));
        let chains = self.chains.iter().map(|c| format!("{place} chain {c}"));
        rules.chain(chains).collect()
    }
}

/// Everything of kube-proxy's that goes.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// Per backend and table.
    pub tables: Vec<TablePlan>,
    /// kube-proxy's nftables tables.
    pub nft: Vec<NftTable>,
}

impl Plan {
    /// Plans the removal of what `snap` found.
    pub fn new(snap: &Snapshot) -> Plan {
        Plan {
            tables: snap
                .iptables
                .iter()
                .map(|(b, t)| TablePlan::new(*b, t))
                .filter(|p| !p.is_empty() || !p.kept.is_empty())
                .collect(),
            nft: snap.nft.clone(),
        }
    }

    /// Removes it (unless the report is a dry run), reporting each thing.
    pub fn apply(&self, report: &mut Report) {
        for t in &self.tables {
            for (chain, rule) in &t.kept {
                report.kept(
                    &format!("{} chain {chain}", t.place()),
                    &format!("`{rule}` still jumps to it, and that rule stays"),
                );
            }
            if t.is_empty() {
                continue;
            }
            let result = if report.dry_run() {
                Ok(true)
            } else {
                t.backend.restore(&t.restore_input())
            };
            match result {
                Ok(true) => t.items().iter().for_each(|i| report.removed(i)),
                Ok(false) => report.note(&format!(
                    "{}-restore is not installed: {} left as it is",
                    t.backend.name(),
                    t.place()
                )),
                Err(e) => report.failed(&t.place(), &e),
            }
        }
        for table in &self.nft {
            let what = format!("nftables {table}");
            if report.dry_run() {
                report.removed(&what);
                continue;
            }
            match tools::nft_delete(table) {
                Ok(()) => report.removed(&what),
                Err(e) => report.failed(&what, &e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cleanup::save;

    const V4: Backend = Backend::ALL[0];

    /// A kube-proxy nat table (as its iptables mode writes it) beside rules of others.
    const NAT: &str = r#"*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:CNI-HOSTPORT-DNAT - [0:0]
:KUBE-KUBELET-CANARY - [0:0]
:KUBE-MARK-MASQ - [0:0]
:KUBE-NODEPORTS - [0:0]
:KUBE-POSTROUTING - [0:0]
:KUBE-SEP-IT2ZTR26TO4XFPTO - [0:0]
:KUBE-SERVICES - [0:0]
:KUBE-SVC-TCOU7JCQXEZGVUNU - [0:0]
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING
-A POSTROUTING -s 10.244.0.0/16 ! -d 10.244.0.0/16 -j MASQUERADE
-A KUBE-MARK-MASQ -j MARK --set-xmark 0x4000/0x4000
-A KUBE-POSTROUTING -m mark ! --mark 0x4000/0x4000 -j RETURN
-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE --random-fully
-A KUBE-SEP-IT2ZTR26TO4XFPTO -s 10.244.1.5/32 -m comment --comment "default/echo:http" -j KUBE-MARK-MASQ
-A KUBE-SEP-IT2ZTR26TO4XFPTO -p tcp -m comment --comment "default/echo:http" -m tcp -j DNAT --to-destination 10.244.1.5:8080
-A KUBE-SERVICES -d 10.96.0.10/32 -p tcp -m comment --comment "default/echo:http cluster IP" -m tcp --dport 80 -j KUBE-SVC-TCOU7JCQXEZGVUNU
-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS
-A KUBE-SVC-TCOU7JCQXEZGVUNU -m comment --comment "default/echo:http -> 10.244.1.5:8080" -j KUBE-SEP-IT2ZTR26TO4XFPTO
COMMIT
"#;

    fn plan_of(text: &str) -> TablePlan {
        TablePlan::new(V4, &save::parse(text).expect("parses")[0])
    }

    #[test]
    fn kube_proxys_chains_and_the_jumps_to_them_go_and_nothing_else() {
        let p = plan_of(NAT);
        assert_eq!(
            p.chains,
            [
                "KUBE-MARK-MASQ",
                "KUBE-NODEPORTS",
                "KUBE-POSTROUTING",
                "KUBE-SEP-IT2ZTR26TO4XFPTO",
                "KUBE-SERVICES",
                "KUBE-SVC-TCOU7JCQXEZGVUNU"
            ]
        );
        let jumps: Vec<_> = p.jumps.iter().map(|r| r.text()).collect();
        assert_eq!(
            jumps,
            [
                r#"-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#,
                r#"-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES"#,
                r#"-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING"#,
            ]
        );
        assert!(p.kept.is_empty());
    }

    #[test]
    fn the_restore_input_flushes_then_unlinks_then_deletes() {
        let p = plan_of(NAT);
        let input = p.restore_input();
        assert!(
            input.starts_with("*nat\n:KUBE-MARK-MASQ - [0:0]\n"),
            "{input}"
        );
        assert!(input.contains(
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
        let delete_jump = input.find("-D POSTROUTING").expect("jump deleted");
        let delete_chain = input.find("-X KUBE-POSTROUTING").expect("chain deleted");
        assert!(delete_jump < delete_chain);
        assert!(input.ends_with("-X KUBE-SVC-TCOU7JCQXEZGVUNU\nCOMMIT\n"));
        assert!(!input.contains("CNI-HOSTPORT-DNAT") && !input.contains("MASQUERADE\n"));
    }

    #[test]
    fn a_kube_proxy_chain_another_chain_still_jumps_to_is_kept_with_the_reason() {
        let text = NAT.replace(
            ":KUBE-SERVICES - [0:0]\n",
            ":KUBE-SERVICES - [0:0]\n:MY-HOSTPORTS - [0:0]\n",
        );
        let text = text.replace(
            "COMMIT\n",
            "-A MY-HOSTPORTS -p tcp --dport 8080 -j KUBE-MARK-MASQ\nCOMMIT\n",
        );
        let p = plan_of(&text);
        assert!(!p.chains.iter().any(|c| c == "KUBE-MARK-MASQ"));
        assert_eq!(
            p.kept,
            [(
                "KUBE-MARK-MASQ".to_string(),
                "-A MY-HOSTPORTS -p tcp --dport 8080 -j KUBE-MARK-MASQ".to_string()
            )]
        );
        assert!(p.chains.iter().any(|c| c == "KUBE-SERVICES"));
    }

    #[test]
    fn a_kept_chain_keeps_the_chains_it_jumps_to() {
        let text = NAT.replace(
            ":KUBE-SERVICES - [0:0]\n",
            ":KUBE-SERVICES - [0:0]\n:MY-CHAIN - [0:0]\n",
        );
        let text = text.replace(
            "COMMIT\n",
            "-A MY-CHAIN -j KUBE-SVC-TCOU7JCQXEZGVUNU\nCOMMIT\n",
        );
        let p = plan_of(&text);
        let kept: Vec<_> = p.kept.iter().map(|(c, _)| c.as_str()).collect();
        assert_eq!(
            kept,
            [
                "KUBE-SVC-TCOU7JCQXEZGVUNU",
                "KUBE-SEP-IT2ZTR26TO4XFPTO",
                "KUBE-MARK-MASQ"
            ]
        );
        assert!(p.chains.iter().any(|c| c == "KUBE-SERVICES"));
    }

    #[test]
    fn a_table_without_kube_proxy_chains_plans_nothing() {
        let p = plan_of(
            "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n\
             -A INPUT -j KUBE-FIREWALL\n-A KUBE-FIREWALL -j DROP\nCOMMIT\n",
        );
        assert!(p.is_empty() && p.kept.is_empty());
    }

    #[test]
    fn the_filter_tables_forward_and_firewall_chains_go_with_their_jumps() {
        let p = plan_of(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:KUBE-FORWARD - [0:0]\n\
             :KUBE-PROXY-FIREWALL - [0:0]\n:KUBE-FIREWALL - [0:0]\n\
             -A INPUT -m conntrack --ctstate NEW -m comment --comment \"kubernetes load balancer firewall\" -j KUBE-PROXY-FIREWALL\n\
             -A INPUT -j KUBE-FIREWALL\n\
             -A FORWARD -m comment --comment \"kubernetes forwarding rules\" -j KUBE-FORWARD\n\
             COMMIT\n",
        );
        assert_eq!(p.chains, ["KUBE-FORWARD", "KUBE-PROXY-FIREWALL"]);
        assert_eq!(p.jumps.len(), 2);
        assert!(p
            .jumps
            .iter()
            .all(|r| r.target.as_deref() != Some("KUBE-FIREWALL")));
    }
}
