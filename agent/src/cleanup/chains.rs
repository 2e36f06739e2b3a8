//! Which iptables chains and nftables tables are kube-proxy's. Nothing outside this list is ever
//! removed by `switchyard cleanup --kube-proxy`.
//!
//! The list is the one `kube-proxy --cleanup` removes (kubernetes `pkg/proxy/iptables/proxier.go`,
//! `CleanupLeftovers` and `isServiceChainName`; `pkg/proxy/nftables`, `CleanupLeftovers`):
//! - nat: `KUBE-SERVICES`, `KUBE-NODEPORTS`, `KUBE-POSTROUTING` and every per-service chain
//!   (`KUBE-SVC-`, `KUBE-SVL-`, `KUBE-SEP-`, `KUBE-FW-`, `KUBE-EXT-`; `KUBE-XLB-` of releases
//!   before 1.24);
//! - filter: `KUBE-SERVICES`, `KUBE-EXTERNAL-SERVICES`, `KUBE-FORWARD`, `KUBE-NODEPORTS`;
//! - the jump rules to them from the built-in chains;
//! - nftables: the tables `ip kube-proxy` and `ip6 kube-proxy`.
//!
//! Plus three chains kube-proxy creates and its clean-up leaves behind, so that no `KUBE-PROXY-*`
//! chain survives: `KUBE-PROXY-FIREWALL` (filter; kube-proxy removes only its jumps),
//! `KUBE-PROXY-CANARY` (mangle, nat, filter) and `KUBE-MARK-MASQ` (nat). The kubelet's chains
//! (`KUBE-FIREWALL`, `KUBE-KUBELET-CANARY`, `KUBE-MARK-DROP`) are not kube-proxy's and stay, as
//! with `kube-proxy --cleanup`.

/// The nftables table kube-proxy's nftables mode writes, in the `ip` and `ip6` families.
pub const NFT_TABLE: &str = "kube-proxy";

/// The nftables families kube-proxy writes [`NFT_TABLE`] in.
pub const NFT_FAMILIES: [&str; 2] = ["ip", "ip6"];

/// The chain whose presence in `nat` means kube-proxy's iptables mode is (or was) programming
/// Services on this node.
pub const SERVICES: &str = "KUBE-SERVICES";

/// kube-proxy's fixed chains, per table.
const FIXED: &[(&str, &[&str])] = &[
    (
        "nat",
        &[
            "KUBE-SERVICES",
            "KUBE-NODEPORTS",
            "KUBE-POSTROUTING",
            "KUBE-MARK-MASQ",
            "KUBE-PROXY-CANARY",
        ],
    ),
    (
        "filter",
        &[
            "KUBE-SERVICES",
            "KUBE-EXTERNAL-SERVICES",
            "KUBE-FORWARD",
            "KUBE-NODEPORTS",
            "KUBE-PROXY-FIREWALL",
            "KUBE-PROXY-CANARY",
        ],
    ),
    ("mangle", &["KUBE-PROXY-CANARY"]),
];

/// Prefixes of kube-proxy's per-service chains (nat only).
const SERVICE_PREFIXES: &[&str] = &[
    "KUBE-SVC-",
    "KUBE-SVL-",
    "KUBE-SEP-",
    "KUBE-FW-",
    "KUBE-EXT-",
    "KUBE-XLB-",
];

/// The tables kube-proxy has chains in.
pub fn tables() -> impl Iterator<Item = &'static str> {
    FIXED.iter().map(|(t, _)| *t)
}

/// Whether chain `chain` of table `table` is kube-proxy's.
pub fn is_kube_proxy_chain(table: &str, chain: &str) -> bool {
    let fixed = FIXED
        .iter()
        .any(|(t, chains)| *t == table && chains.contains(&chain));
    fixed || (table == "nat" && SERVICE_PREFIXES.iter().any(|p| chain.starts_with(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_proxys_fixed_and_per_service_chains_are_recognised() {
        for (table, chain) in [
            ("nat", "KUBE-SERVICES"),
            ("nat", "KUBE-POSTROUTING"),
            ("nat", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
            ("nat", "KUBE-SEP-IT2ZTR26TO4XFPTO"),
            ("nat", "KUBE-EXT-7EJNTS7AENER2WX5"),
            ("filter", "KUBE-FORWARD"),
            ("filter", "KUBE-PROXY-FIREWALL"),
            ("mangle", "KUBE-PROXY-CANARY"),
        ] {
            assert!(is_kube_proxy_chain(table, chain), "{table} {chain}");
        }
    }

    #[test]
    fn the_kubelets_chains_and_everyone_elses_are_not_kube_proxys() {
        for (table, chain) in [
            ("filter", "KUBE-FIREWALL"),
            ("nat", "KUBE-KUBELET-CANARY"),
            ("nat", "KUBE-MARK-DROP"),
            ("nat", "KUBE-EXTERNAL-SERVICES"),
            ("filter", "KUBE-SVC-TCOU7JCQXEZGVUNU"),
            ("nat", "DOCKER"),
            ("nat", "CNI-HOSTPORT-DNAT"),
            ("nat", "PREROUTING"),
            ("raw", "KUBE-SERVICES"),
        ] {
            assert!(!is_kube_proxy_chain(table, chain), "{table} {chain}");
        }
    }
}
