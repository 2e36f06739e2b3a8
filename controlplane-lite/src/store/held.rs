//! What the stored Services hold — their ClusterIPs and node ports (`spec.ports[].nodePort` and
//! `spec.healthCheckNodePort`) — indexed by address and by port, the way kube-apiserver's
//! ClusterIP and NodePort allocators keep one bitmap per range, so admission asks "who holds
//! this?" instead of listing every Service on every write.
//!
//! Invariant: the index is exactly what the stored Services say. It is built from the objects
//! when the store opens and changed in the same commit, under the same lock, as each Service
//! write; it is never written anywhere else. So nothing can leak: a refused or failed write never
//! reaches it, and a deleted Service's address and ports are free again the moment the deletion
//! is committed.
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;

use serde_json::Value;

use super::Key;

/// The resource whose objects the index reads.
const SERVICES: &str = "services";

/// Every ClusterIP and node port the stored Services hold, with who holds it
/// (`namespace/name`; more than one only if a log written by an older version had a clash).
#[derive(Debug, Default)]
pub struct Held {
    ips: BTreeMap<Ipv4Addr, BTreeSet<String>>,
    node_ports: BTreeMap<u16, BTreeSet<String>>,
}

impl Held {
    /// The holdings of `objects` (any resources; only Services count).
    pub(super) fn build<'a>(objects: impl IntoIterator<Item = (&'a Key, &'a Value)>) -> Held {
        let mut held = Held::default();
        for (key, obj) in objects {
            held.apply(key, None, Some(obj));
        }
        held
    }

    /// Follows one write to `key`: `prev` stops holding, `next` starts.
    pub(super) fn apply(&mut self, key: &Key, prev: Option<&Value>, next: Option<&Value>) {
        if key.resource != SERVICES {
            return;
        }
        let owner = format!("{}/{}", key.namespace, key.name);
        if let Some(prev) = prev {
            let (ip, ports) = holdings(prev);
            if let Some(ip) = ip {
                release(&mut self.ips, ip, &owner);
            }
            for p in ports {
                release(&mut self.node_ports, p, &owner);
            }
        }
        if let Some(next) = next {
            let (ip, ports) = holdings(next);
            if let Some(ip) = ip {
                self.ips.entry(ip).or_default().insert(owner.clone());
            }
            for p in ports {
                self.node_ports.entry(p).or_default().insert(owner.clone());
            }
        }
    }

    /// Whether a Service other than `except` (`namespace/name`) holds ClusterIP `ip`.
    pub fn ip_held_by_other(&self, ip: Ipv4Addr, except: &str) -> bool {
        self.ips
            .get(&ip)
            .is_some_and(|owners| owners.iter().any(|o| o != except))
    }

    /// Whether a Service other than `except` (`namespace/name`) holds node port `port`.
    pub fn node_port_held_by_other(&self, port: u16, except: &str) -> bool {
        self.node_ports
            .get(&port)
            .is_some_and(|owners| owners.iter().any(|o| o != except))
    }

    /// How many ClusterIPs are held.
    pub fn ips_held(&self) -> usize {
        self.ips.len()
    }

    /// How many node ports are held.
    pub fn node_ports_held(&self) -> usize {
        self.node_ports.len()
    }
}

/// Removes `owner` from the holders of `item`, and the item once nobody holds it.
fn release<T: Ord>(map: &mut BTreeMap<T, BTreeSet<String>>, item: T, owner: &str) {
    if let Some(owners) = map.get_mut(&item) {
        owners.remove(owner);
        if owners.is_empty() {
            map.remove(&item);
        }
    }
}

/// The ClusterIP (an IPv4 one; `None` and empty hold nothing) and the node ports of a Service.
fn holdings(svc: &Value) -> (Option<Ipv4Addr>, BTreeSet<u16>) {
    let ip = svc
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok());
    let ports = svc
        .pointer("/spec/ports")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort"))
        .chain(svc.pointer("/spec/healthCheckNodePort"))
        .filter_map(|n| n.as_u64().and_then(|n| n.try_into().ok()))
        .collect();
    (ip, ports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(resource: &str, name: &str) -> Key {
        Key {
            resource: resource.into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn svc(ip: &str, node_port: u64) -> Value {
        json!({"spec": {"clusterIP": ip, "ports": [{"port": 80, "nodePort": node_port}]}})
    }

    #[test]
    fn a_service_holds_its_address_and_ports_until_it_changes_or_goes() {
        let mut held = Held::default();
        let a = svc("10.96.0.5", 30001);
        held.apply(&key("services", "a"), None, Some(&a));
        let ip = Ipv4Addr::new(10, 96, 0, 5);
        assert!(held.ip_held_by_other(ip, "default/b"));
        assert!(
            !held.ip_held_by_other(ip, "default/a"),
            "a Service does not conflict with itself"
        );
        assert!(held.node_port_held_by_other(30001, "default/b"));
        let a2 = svc("10.96.0.5", 30002);
        held.apply(&key("services", "a"), Some(&a), Some(&a2));
        assert!(
            !held.node_port_held_by_other(30001, "default/b"),
            "released"
        );
        assert!(held.node_port_held_by_other(30002, "default/b"));
        held.apply(&key("services", "a"), Some(&a2), None);
        assert_eq!((held.ips_held(), held.node_ports_held()), (0, 0));
    }

    #[test]
    fn only_services_and_real_addresses_are_held() {
        let pod = json!({"spec": {"clusterIP": "10.96.0.9"}});
        let headless = json!({"spec": {"clusterIP": "None", "healthCheckNodePort": 31000}});
        let mut held = Held::default();
        held.apply(&key("pods", "p"), None, Some(&pod));
        held.apply(&key("services", "h"), None, Some(&headless));
        assert_eq!(held.ips_held(), 0);
        assert!(held.node_port_held_by_other(31000, "default/x"));
    }

    #[test]
    fn an_address_two_services_share_stays_held_until_both_let_go() {
        let a = svc("10.96.0.7", 30007);
        let mut held = Held::build([(&key("services", "a"), &a), (&key("services", "b"), &a)]);
        let ip = Ipv4Addr::new(10, 96, 0, 7);
        held.apply(&key("services", "a"), Some(&a), None);
        assert!(held.ip_held_by_other(ip, "default/x"));
        assert!(!held.ip_held_by_other(ip, "default/b"));
        held.apply(&key("services", "b"), Some(&a), None);
        assert!(!held.ip_held_by_other(ip, "default/x"));
    }
}
