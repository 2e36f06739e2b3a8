//! Nodes: the podCIDR, allocated as kube-controller-manager's node IPAM would, but
//! synchronously, and validated as kube-apiserver validates it.
//!
//! Guarantees: an admitted node has `spec.podCIDR` and `spec.podCIDRs` (the same one CIDR).
//! One the client sets must be a CIDR inside the cluster CIDR (`--cluster-cidr`) overlapping no
//! other node's; otherwise the node gets the lowest `/node_prefix` block of the cluster CIDR,
//! after the first, that overlaps no other node's, so nodes registered one after another get
//! consecutive blocks (none left: a 500). Once set, the podCIDR never changes (kube-apiserver's
//! `spec.podCIDRs: Forbidden: node updates may not change podCIDR except from "" to valid`).
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{invalid, name_of, Ranges};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::store::Store;

/// kube-apiserver's words for a changed podCIDR.
pub const POD_CIDR_IMMUTABLE: &str =
    "Forbidden: node updates may not change podCIDR except from \"\" to valid";

/// A parsed IPv4 CIDR: network address (host bits cleared) and prefix.
type Cidr = (u32, u8);

fn mask(prefix: u8) -> u32 {
    u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0)
}

fn parse(s: &str) -> Option<Cidr> {
    let (ip, prefix) = s.split_once('/')?;
    let ip: Ipv4Addr = ip.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    Some((u32::from(ip) & mask(prefix), prefix))
}

/// Whether two CIDRs share an address.
fn overlap(a: Cidr, b: Cidr) -> bool {
    let m = mask(a.1.min(b.1));
    a.0 & m == b.0 & m
}

/// `spec.podCIDRs`, else `[spec.podCIDR]`, else nothing.
fn pod_cidrs(node: &Value) -> Vec<String> {
    let list: Vec<String> = node
        .pointer("/spec/podCIDRs")
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    if !list.is_empty() {
        return list;
    }
    node.pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(|s| vec![s.to_string()])
        .unwrap_or_default()
}

/// Validates the node's podCIDR (or gives it one); `old` is the stored node of an update.
pub(super) fn admit(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    let cidrs = pod_cidrs(obj);
    let before = old.map(pod_cidrs).unwrap_or_default();
    if !before.is_empty() {
        if cidrs != before {
            let cause = Cause {
                reason: "FieldValueForbidden",
                field: "spec.podCIDRs".into(),
                message: POD_CIDR_IMMUTABLE.into(),
            };
            return Err(invalid(res, obj, &[cause]));
        }
        return Ok(());
    }
    let others = taken_by_others(store, &name_of(obj));
    let cidrs = if cidrs.is_empty() {
        let cidr = free_pod_cidr(&others, ranges)
            .ok_or_else(|| ApiError::internal("no podCIDR left in the cluster CIDR"))?;
        vec![cidr]
    } else {
        let causes = check(&cidrs, &others, ranges);
        if !causes.is_empty() {
            return Err(invalid(res, obj, &causes));
        }
        cidrs
    };
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    obj["spec"]["podCIDR"] = json!(cidrs[0]);
    obj["spec"]["podCIDRs"] = json!(cidrs);
    Ok(())
}

/// What is wrong with podCIDRs a client chose.
fn check(cidrs: &[String], others: &[(String, Cidr)], ranges: &Ranges) -> Vec<Cause> {
    let cluster = (
        u32::from(ranges.cluster_cidr.0) & mask(ranges.cluster_cidr.1),
        ranges.cluster_cidr.1,
    );
    let mut causes = Vec::new();
    if cidrs.len() > 1 {
        causes.push(Cause::invalid(
            "spec.podCIDRs",
            format!("{cidrs:?}"),
            "may specify no more than one CIDR for each IP family",
        ));
    }
    for (i, c) in cidrs.iter().enumerate().take(1) {
        let field = format!("spec.podCIDRs[{i}]");
        let Some(parsed) = parse(c) else {
            causes.push(Cause::invalid(
                &field,
                format!("{c:?}"),
                "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)",
            ));
            continue;
        };
        if parsed.1 < cluster.1 || !overlap(parsed, cluster) {
            causes.push(Cause::invalid(
                &field,
                format!("{c:?}"),
                &format!(
                    "must be inside the cluster CIDR {}/{}",
                    ranges.cluster_cidr.0, ranges.cluster_cidr.1
                ),
            ));
        } else if let Some((node, theirs)) = others.iter().find(|(_, o)| overlap(*o, parsed)) {
            causes.push(Cause::invalid(
                &field,
                format!("{c:?}"),
                &format!(
                    "overlaps the podCIDR {}/{} of node {node:?}",
                    Ipv4Addr::from(theirs.0),
                    theirs.1
                ),
            ));
        }
    }
    causes
}

/// The podCIDRs of every node but `name`.
fn taken_by_others(store: &Store, name: &str) -> Vec<(String, Cidr)> {
    store
        .list("nodes", None)
        .0
        .iter()
        .filter(|n| n["metadata"]["name"].as_str() != Some(name))
        .flat_map(|n| {
            let node = n["metadata"]["name"].as_str().unwrap_or("").to_string();
            pod_cidrs(n)
                .into_iter()
                .filter_map(move |c| parse(&c).map(|p| (node.clone(), p)))
        })
        .collect()
}

/// The lowest node block of the cluster CIDR, skipping the first, that overlaps nothing `taken`.
fn free_pod_cidr(taken: &[(String, Cidr)], ranges: &Ranges) -> Option<String> {
    let (net, prefix) = ranges.cluster_cidr;
    let bits = ranges.node_prefix.checked_sub(prefix)?;
    let count = 1u64 << bits.min(32);
    let step = 1u64 << (32 - u32::from(ranges.node_prefix.min(32)));
    let base = u64::from(u32::from(net) & mask(prefix));
    (1..count)
        .filter_map(|i| u32::try_from(base + i * step).ok())
        .map(|n| (n, ranges.node_prefix))
        .find(|c| !taken.iter().any(|(_, t)| overlap(*t, *c)))
        .map(|(n, p)| format!("{}/{p}", Ipv4Addr::from(n)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::testing::create;
    use crate::store::Store;

    #[test]
    fn nodes_get_the_lowest_free_pod_cidr_in_registration_order() {
        let s = Store::in_memory();
        let n1 = create(&s, "nodes", json!({"metadata": {"name": "n1"}})).unwrap();
        let n2 = create(&s, "nodes", json!({"metadata": {"name": "n2"}})).unwrap();
        assert_eq!(n1["spec"]["podCIDR"], "10.244.1.0/24");
        assert_eq!(n2["spec"]["podCIDR"], "10.244.2.0/24");
    }

    #[test]
    fn chosen_pod_cidrs_must_be_inside_the_cluster_cidr_and_overlap_no_other_node() {
        let s = Store::in_memory();
        create(&s, "nodes", json!({"metadata": {"name": "n1"}})).unwrap();
        let node =
            |name: &str, cidr: &str| json!({"metadata": {"name": name}, "spec": {"podCIDR": cidr}});
        let e = create(&s, "nodes", node("n2", "10.1.0.0/24")).unwrap_err();
        assert_eq!(e.message, "Node \"n2\" is invalid: spec.podCIDRs[0]: Invalid value: \"10.1.0.0/24\": must be inside the cluster CIDR 10.244.0.0/16");
        let e = create(&s, "nodes", node("n2", "10.244.1.128/25")).unwrap_err();
        assert_eq!(e.message, "Node \"n2\" is invalid: spec.podCIDRs[0]: Invalid value: \"10.244.1.128/25\": overlaps the podCIDR 10.244.1.0/24 of node \"n1\"");
        let n2 = create(&s, "nodes", node("n2", "10.244.9.0/24")).unwrap();
        assert_eq!(n2["spec"]["podCIDRs"], json!(["10.244.9.0/24"]));
        let n3 = create(&s, "nodes", json!({"metadata": {"name": "n3"}})).unwrap();
        assert_eq!(n3["spec"]["podCIDR"], "10.244.2.0/24");
    }
}
