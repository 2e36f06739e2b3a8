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
    use crate::cleanup::save::{self, Chain};

    const V4: Backend = Backend::ALL[0];

    /// A table of the fixture the netns tests load: kube-proxy's iptables mode (one NodePort
    /// Service with two endpoints) beside the kubelet's chains and a site's own.
    fn fixture(name: &str) -> Table {
        let text = include_str!("../../tests/fixtures/kube-proxy/iptables.rules");
        save::parse(text)
            .expect("parses")
            .into_iter()
            .find(|t| t.name == name)
            .expect("the table")
    }

    /// `table` with a chain `chain` of someone else's holding `-A <chain> <spec>`.
    fn with_foreign(mut table: Table, chain: &str, spec: &str, target: &str) -> Table {
        table.chains.push(Chain {
            name: chain.into(),
            builtin: false,
        });
        table.rules.push(Rule {
            chain: chain.into(),
            spec: spec.into(),
            target: Some(target.into()),
        });
        table
    }

    #[test]
    fn kube_proxys_chains_and_the_jumps_to_them_go_and_nothing_else() {
        let p = TablePlan::new(V4, &fixture("nat"));
        assert_eq!(
            p.chains,
            [
                "KUBE-EXT-7EJNTS7AENER2WX5",
                "KUBE-MARK-MASQ",
                "KUBE-NODEPORTS",
                "KUBE-POSTROUTING",
                "KUBE-PROXY-CANARY",
                "KUBE-SEP-IT2ZTR26TO4XFPTO",
                "KUBE-SEP-N4G2XR5TDX7PQE7P",
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
        let input = TablePlan::new(V4, &fixture("nat")).restore_input();
        assert!(
            input.starts_with("*nat\n:KUBE-EXT-7EJNTS7AENER2WX5 - [0:0]\n"),
            "{input}"
        );
        assert!(input.contains(
            "-D PREROUTING -m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES\n"
        ));
        let delete_jump = input.find("-D POSTROUTING").expect("jump deleted");
        let delete_chain = input.find("-X KUBE-POSTROUTING").expect("chain deleted");
        assert!(delete_jump < delete_chain);
        assert!(input.ends_with("-X KUBE-SVC-TCOU7JCQXEZGVUNU\nCOMMIT\n"));
        assert!(!input.contains("SITE-SNAT") && !input.contains("KUBE-KUBELET-CANARY"));
    }

    #[test]
    fn a_kube_proxy_chain_another_chain_still_jumps_to_is_kept_with_the_reason() {
        let spec = "-p tcp --dport 8080 -j KUBE-MARK-MASQ";
        let nat = with_foreign(fixture("nat"), "MY-HOSTPORTS", spec, "KUBE-MARK-MASQ");
        let p = TablePlan::new(V4, &nat);
        assert!(!p.chains.iter().any(|c| c == "KUBE-MARK-MASQ"));
        assert_eq!(
            p.kept,
            [(
                "KUBE-MARK-MASQ".to_string(),
                format!("-A MY-HOSTPORTS {spec}")
            )]
        );
        assert!(p.chains.iter().any(|c| c == "KUBE-SERVICES"));
    }

    #[test]
    fn a_kept_chain_keeps_the_chains_it_jumps_to() {
        let svc = "KUBE-SVC-TCOU7JCQXEZGVUNU";
        let nat = with_foreign(fixture("nat"), "MY-CHAIN", &format!("-j {svc}"), svc);
        let p = TablePlan::new(V4, &nat);
        let mut kept: Vec<_> = p.kept.iter().map(|(c, _)| c.as_str()).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            [
                "KUBE-MARK-MASQ",
                "KUBE-SEP-IT2ZTR26TO4XFPTO",
                "KUBE-SEP-N4G2XR5TDX7PQE7P",
                svc
            ]
        );
        assert!(p.chains.iter().any(|c| c == "KUBE-SERVICES"));
    }

    #[test]
    fn a_table_without_kube_proxy_chains_plans_nothing() {
        let text = "*filter\n:INPUT ACCEPT [0:0]\n:KUBE-FIREWALL - [0:0]\n\
                    -A INPUT -j KUBE-FIREWALL\n-A KUBE-FIREWALL -j DROP\nCOMMIT\n";
        let p = TablePlan::new(V4, &save::parse(text).expect("parses")[0]);
        assert!(p.is_empty() && p.kept.is_empty());
    }

    #[test]
    fn the_filter_tables_chains_go_with_their_jumps_and_the_kubelets_stay() {
        let p = TablePlan::new(V4, &fixture("filter"));
        assert_eq!(
            p.chains,
            [
                "KUBE-EXTERNAL-SERVICES",
                "KUBE-FORWARD",
                "KUBE-NODEPORTS",
                "KUBE-PROXY-CANARY",
                "KUBE-PROXY-FIREWALL",
                "KUBE-SERVICES"
            ]
        );
        assert_eq!(p.jumps.len(), 9);
        assert!(p.jumps.iter().all(
            |r| r.text().contains("kubernetes") && r.target.as_deref() != Some("KUBE-FIREWALL")
        ));
    }
}
