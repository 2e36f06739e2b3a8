//! The core/v1 Endpoints object of a Service, as Kubernetes' endpoints controller writes it.
//!
//! Invariant: one subset per resolved port set, ready addresses in `addresses`, the others in
//! `notReadyAddresses`; at most [`MAX_CAPACITY`] addresses in all — beyond that the object is cut
//! down as the endpoints controller's `truncateEndpoints` cuts it (not-ready addresses go first;
//! each subset keeps its share, rounded up) and carries the annotation
//! `endpoints.kubernetes.io/over-capacity: truncated`.
use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::{port_json, PortSet, SERVICE_NAME_LABEL};

/// Addresses an Endpoints object holds at most.
pub const MAX_CAPACITY: usize = 1000;
/// The annotation marking a truncated Endpoints object.
pub const OVER_CAPACITY_ANNOTATION: &str = "endpoints.kubernetes.io/over-capacity";

/// Ready and not-ready addresses of one port set.
#[derive(Debug, Default)]
pub struct Subset {
    /// Ready addresses.
    pub ready: Vec<Value>,
    /// Not-ready addresses.
    pub not_ready: Vec<Value>,
}

/// Cuts `subsets` down to [`MAX_CAPACITY`] addresses; whether anything was cut.
fn truncate(subsets: &mut BTreeMap<PortSet, Subset>) -> bool {
    let ready: usize = subsets.values().map(|s| s.ready.len()).sum();
    let not_ready: usize = subsets.values().map(|s| s.not_ready.len()).sum();
    if ready + not_ready <= MAX_CAPACITY {
        return false;
    }
    let cut_ready = ready > MAX_CAPACITY;
    let (max, total) = if cut_ready {
        (MAX_CAPACITY, ready)
    } else {
        (MAX_CAPACITY - ready, not_ready)
    };
    let mut room = max;
    for s in subsets.values_mut() {
        let list = if cut_ready {
            s.not_ready.clear();
            &mut s.ready
        } else {
            &mut s.not_ready
        };
        let share = (list.len() * max).div_ceil(total).min(room);
        list.truncate(share);
        room -= list.len();
    }
    true
}

/// The Endpoints object named `name` in `ns` for these subsets.
pub fn endpoints(ns: &str, name: &str, mut subsets: BTreeMap<PortSet, Subset>) -> Value {
    let truncated = truncate(&mut subsets);
    let subsets: Vec<Value> = subsets
        .into_iter()
        .filter(|(_, s)| !s.ready.is_empty() || !s.not_ready.is_empty())
        .map(|(ports, s)| {
            let mut out = json!({"ports": port_json(&ports)});
            if !s.ready.is_empty() {
                out["addresses"] = json!(s.ready);
            }
            if !s.not_ready.is_empty() {
                out["notReadyAddresses"] = json!(s.not_ready);
            }
            out
        })
        .collect();
    let mut obj = json!({"apiVersion": "v1", "kind": "Endpoints",
        "metadata": {"name": name, "namespace": ns, "labels": {SERVICE_NAME_LABEL: name}}});
    if truncated {
        obj["metadata"]["annotations"] = json!({OVER_CAPACITY_ANNOTATION: "truncated"});
    }
    if !subsets.is_empty() {
        obj["subsets"] = json!(subsets);
    }
    obj
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addrs(prefix: &str, n: usize) -> Vec<Value> {
        (0..n)
            .map(|i| json!({"ip": format!("{prefix}.{i}")}))
            .collect()
    }

    fn ports(port: i64) -> PortSet {
        vec![("http".into(), port, "TCP".into())]
    }

    #[test]
    fn more_than_a_thousand_addresses_are_cut_and_annotated() {
        let mut subsets = BTreeMap::new();
        subsets.insert(
            ports(80),
            Subset {
                ready: addrs("r80", 900),
                not_ready: addrs("n80", 100),
            },
        );
        subsets.insert(
            ports(81),
            Subset {
                ready: addrs("r81", 50),
                not_ready: addrs("n81", 100),
            },
        );
        let eps = endpoints("default", "web", subsets);
        assert_eq!(
            eps["metadata"]["annotations"][OVER_CAPACITY_ANNOTATION],
            "truncated"
        );
        let count = |k: &str| -> usize {
            eps["subsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| s[k].as_array().map_or(0, Vec::len))
                .sum()
        };
        assert_eq!(count("addresses"), 950, "every ready address is kept");
        assert_eq!(
            count("notReadyAddresses"),
            50,
            "not-ready ones fill the rest"
        );

        let mut subsets = BTreeMap::new();
        subsets.insert(
            ports(80),
            Subset {
                ready: addrs("r", 1200),
                not_ready: addrs("n", 5),
            },
        );
        let eps = endpoints("default", "web", subsets);
        assert_eq!(
            eps["subsets"][0]["addresses"].as_array().unwrap().len(),
            1000
        );
        assert!(eps["subsets"][0].get("notReadyAddresses").is_none());
    }

    #[test]
    fn a_thousand_addresses_are_kept_whole_without_the_annotation() {
        let mut subsets = BTreeMap::new();
        subsets.insert(
            ports(80),
            Subset {
                ready: addrs("r", 1000),
                not_ready: Vec::new(),
            },
        );
        let eps = endpoints("default", "web", subsets);
        assert!(eps["metadata"].get("annotations").is_none());
        assert_eq!(
            eps["subsets"][0]["addresses"].as_array().unwrap().len(),
            1000
        );
    }
}
