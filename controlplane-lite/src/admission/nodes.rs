//! Nodes: the podCIDR, allocated as kube-controller-manager's node IPAM would, but synchronously.
//!
//! Guarantees: an admitted node has `spec.podCIDR` and `spec.podCIDRs` (the same one CIDR). One
//! the client set is kept as it is; otherwise the node gets the lowest `/node_prefix` block of
//! the cluster CIDR, after the first, that no other node holds, so nodes registered one after
//! another get consecutive blocks. When none is left the request fails with a 500.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{name_of, Ranges};
use crate::status::ApiError;
use crate::store::Store;

/// Gives the node a podCIDR unless it has one.
pub(super) fn admit(obj: &mut Value, store: &Store, ranges: &Ranges) -> Result<(), ApiError> {
    let has_cidr = obj
        .pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if has_cidr {
        return Ok(());
    }
    let cidr = free_pod_cidr(&taken_by_others(store, &name_of(obj)), ranges)
        .ok_or_else(|| ApiError::internal("no podCIDR left in the cluster CIDR"))?;
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    obj["spec"]["podCIDR"] = json!(cidr);
    obj["spec"]["podCIDRs"] = json!([cidr]);
    Ok(())
}

/// The podCIDRs of every node but `name`.
fn taken_by_others(store: &Store, name: &str) -> BTreeSet<String> {
    store
        .list("nodes", None)
        .0
        .iter()
        .filter(|n| n["metadata"]["name"].as_str() != Some(name))
        .filter_map(|n| {
            n.pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect()
}

/// The lowest node block of the cluster CIDR, skipping the first, that is not `taken`.
fn free_pod_cidr(taken: &BTreeSet<String>, ranges: &Ranges) -> Option<String> {
    let (net, prefix) = ranges.cluster_cidr;
    let count = 1u32 << (ranges.node_prefix - prefix);
    let step = 1u32 << (32 - ranges.node_prefix);
    (1..count)
        .map(|i| {
            format!(
                "{}/{}",
                Ipv4Addr::from(u32::from(net) + i * step),
                ranges.node_prefix
            )
        })
        .find(|c| !taken.contains(c))
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
}
