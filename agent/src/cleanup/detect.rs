//! Finding kube-proxy's rules in the caller's network namespace: the netfilter tables of every
//! iptables backend that has any, and kube-proxy's nftables tables. Reads only.
//!
//! kube-proxy counts as *present* when some backend's `nat` table has `KUBE-SERVICES` (its
//! iptables and IPVS modes) or an nftables table `kube-proxy` exists (its nftables mode): then it
//! translates Services on this node, or did and left its rules behind.
use super::chains;
use super::save::{self, Table};
use super::tools::{self, Backend, NftTable, Saved};
use super::CleanupError;

/// What the node's netfilter holds of kube-proxy's, and what could not be looked at.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Each backend's tables kube-proxy uses (`nat`, `filter`, `mangle`), as saved.
    pub iptables: Vec<(Backend, Table)>,
    /// kube-proxy's nftables tables.
    pub nft: Vec<NftTable>,
    /// Tools that are not installed, and other things not looked at.
    pub notes: Vec<String>,
}

impl Snapshot {
    /// Reads every backend and the nftables tables.
    pub fn take() -> Result<Snapshot, CleanupError> {
        let mut snap = Snapshot::default();
        for backend in Backend::ALL {
            let out = match backend.save()? {
                Saved::Output(out) => out,
                Saved::NoTables => continue,
                Saved::NotInstalled => {
                    snap.notes.push(format!(
                        "{}-save is not installed: {} not checked",
                        backend.name(),
                        backend.label()
                    ));
                    continue;
                }
            };
            let tables = save::parse(&out).map_err(|e| CleanupError::Parse {
                tool: format!("{}-save", backend.name()),
                line: e.line,
                reason: e.reason,
                text: e.text,
            })?;
            snap.iptables.extend(
                tables
                    .into_iter()
                    .filter(|t| chains::tables().any(|name| name == t.name))
                    .map(|t| (backend, t)),
            );
        }
        match tools::nft_tables()? {
            Some(tables) => snap.nft = tables.into_iter().filter(is_kube_proxy_table).collect(),
            None => snap
                .notes
                .push("nft is not installed: nftables tables not checked".into()),
        }
        if let Some(n) = ipvs_services() {
            snap.notes.push(format!(
                "{n} IPVS virtual server(s) in this namespace (kube-proxy's IPVS mode?): not \
                 removed by switchyard; `kube-proxy --cleanup` or `ipvsadm -C` removes them"
            ));
        }
        Ok(snap)
    }

    /// What makes kube-proxy present (see the module docs), for people; empty when absent.
    pub fn presence(&self) -> Vec<String> {
        let iptables = self
            .iptables
            .iter()
            .filter(|(_, t)| t.name == "nat" && t.has_chain(chains::SERVICES))
            .map(|(b, _)| format!("{} nat chain {}", b.label(), chains::SERVICES));
        let tables = self.nft.iter().map(|t| format!("nftables {t}"));
        iptables.chain(tables).collect()
    }
}

fn is_kube_proxy_table(t: &NftTable) -> bool {
    t.name == chains::NFT_TABLE && chains::NFT_FAMILIES.contains(&t.family.as_str())
}

/// How many IPVS virtual servers this namespace has (`/proc/net/ip_vs`, present only when the
/// kernel has IPVS loaded); `None` when it has none.
fn ipvs_services() -> Option<usize> {
    let text = std::fs::read_to_string("/proc/net/ip_vs").ok()?;
    Some(count_ipvs_services(&text)).filter(|n| *n > 0)
}

/// The virtual servers of `/proc/net/ip_vs`: lines starting with their protocol.
fn count_ipvs_services(text: &str) -> usize {
    text.lines()
        .filter(|l| {
            ["TCP ", "UDP ", "SCTP ", "FWM "]
                .iter()
                .any(|p| l.starts_with(p))
        })
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nat(chains: &[&str]) -> Table {
        let text = chains
            .iter()
            .map(|c| format!(":{c} - [0:0]\n"))
            .collect::<String>();
        save::parse(&format!("*nat\n:PREROUTING ACCEPT [0:0]\n{text}COMMIT\n"))
            .expect("parses")
            .remove(0)
    }

    #[test]
    fn kube_services_in_nat_or_a_kube_proxy_nft_table_is_presence() {
        let v4 = Backend::ALL[0];
        let snap = Snapshot {
            iptables: vec![(v4, nat(&["KUBE-SERVICES", "KUBE-MARK-MASQ"]))],
            nft: vec![NftTable {
                family: "ip6".into(),
                name: "kube-proxy".into(),
            }],
            notes: vec![],
        };
        assert_eq!(
            snap.presence(),
            [
                "iptables-nft (IPv4) nat chain KUBE-SERVICES",
                "nftables table ip6 kube-proxy"
            ]
        );
    }

    #[test]
    fn leftover_kubelet_chains_alone_are_not_presence() {
        let snap = Snapshot {
            iptables: vec![(
                Backend::ALL[0],
                nat(&["KUBE-MARK-DROP", "KUBE-KUBELET-CANARY"]),
            )],
            ..Snapshot::default()
        };
        assert!(snap.presence().is_empty());
    }

    #[test]
    fn only_kube_proxys_own_nft_tables_count() {
        let t = |family: &str, name: &str| NftTable {
            family: family.into(),
            name: name.into(),
        };
        assert!(is_kube_proxy_table(&t("ip", "kube-proxy")));
        assert!(!is_kube_proxy_table(&t("ip", "nat")));
        assert!(!is_kube_proxy_table(&t("inet", "kube-proxy")));
    }

    #[test]
    fn ipvs_virtual_servers_are_counted_from_proc() {
        let text = "IP Virtual Server version 1.2.1 (size=4096)\n\
                    Prot LocalAddress:Port Scheduler Flags\n  -> RemoteAddress:Port Forward Weight ActiveConn InActConn\n\
                    TCP  0A600001:01BB rr\n  -> C6120001:192B      Masq    1      0          0\n\
                    UDP  0A60000A:0035 rr\n";
        assert_eq!(count_ipvs_services(text), 2);
    }
}
