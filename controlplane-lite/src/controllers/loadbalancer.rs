//! LoadBalancer addresses from configured pools, as MetalLB or k3s' ServiceLB give them on bare
//! metal: a `type: LoadBalancer` Service without `spec.loadBalancerClass` gets
//! `status.loadBalancer.ingress: [{ip, ipMode: VIP}]`.
//!
//! Invariant after a [`reconcile`]: no two Services hold the same pool address; a Service keeps
//! the pool address it holds (the older Service wins a duplicate) unless it asks for another
//! one with `spec.loadBalancerIP`; a requested address inside the pool is given when free,
//! otherwise the lowest free address (never a network or broadcast address of a pool wider than
//! /31); a Service that stopped being LoadBalancer loses its pool address. Assignments live only
//! in the Services' status, so they survive restarts and a deleted Service frees its address.
//! What cannot be given is reported as a Warning Event `AllocationFailed`, what is given as
//! `IPAllocated`.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::events::{Recorder, Reference};
use crate::store::{Key, Store};

/// The controller's name in the Events it writes.
pub const CONTROLLER: &str = "switchyard-cp/loadbalancer-controller";

/// The address pools (`--loadbalancer-pool`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Pool(pub Vec<(Ipv4Addr, u8)>);

impl Pool {
    /// Whether `ip` is one of the pools' assignable addresses.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.0.iter().any(|&cidr| assignable(cidr).any(|a| a == ip))
    }

    /// Every assignable address, pool by pool, lowest first.
    fn addresses(&self) -> impl Iterator<Item = Ipv4Addr> + '_ {
        self.0.iter().flat_map(|&cidr| assignable(cidr))
    }
}

/// The addresses of `net/prefix` that may be given: all but the network and broadcast address
/// when the prefix is shorter than /31.
fn assignable((net, prefix): (Ipv4Addr, u8)) -> impl Iterator<Item = Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(prefix.min(32)));
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    let base = u64::from(u32::from(net) & mask);
    let (first, last) = if size > 2 {
        (1, size - 2)
    } else {
        (0, size - 1)
    };
    (first..=last).map(move |off| Ipv4Addr::from((base + off) as u32))
}

/// Whether the Service asks this controller for an address.
fn wants_address(svc: &Value) -> bool {
    svc.pointer("/spec/type").and_then(Value::as_str) == Some("LoadBalancer")
        && svc.pointer("/spec/loadBalancerClass").is_none()
}

/// The IPv4 ingress addresses of the Service's status.
fn ingress_ips(svc: &Value) -> Vec<Ipv4Addr> {
    svc.pointer("/status/loadBalancer/ingress")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|i| i["ip"].as_str()?.parse().ok())
        .collect()
}

fn requested(svc: &Value) -> Option<String> {
    svc.pointer("/spec/loadBalancerIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn key_of(svc: &Value) -> Key {
    Key {
        resource: "services".into(),
        namespace: svc["metadata"]["namespace"].as_str().unwrap_or("").into(),
        name: svc["metadata"]["name"].as_str().unwrap_or("").into(),
    }
}

/// Whether a pass looks at the Service: it wants an address or holds one.
fn concerned(svc: &Value) -> bool {
    wants_address(svc) || !ingress_ips(svc).is_empty()
}

/// What to do with one Service.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Its status is right.
    Keep,
    /// Give it this address.
    Assign(Ipv4Addr),
    /// Take its pool address away.
    Release,
    /// It wants an address and cannot have one, for this reason.
    Fail(String),
}

/// Decides for every Service that wants an address or holds one (in creation order), given
/// the pools. The others (most Services of a large cluster) are kept as they are: they neither
/// claim nor free an address, so a pass costs what the LoadBalancer Services cost.
fn decide(services: &[Arc<Value>], pool: &Pool) -> Vec<(Arc<Value>, Decision)> {
    let mut ordered: Vec<Arc<Value>> = services.iter().filter(|s| concerned(s)).cloned().collect();
    ordered.sort_by_key(|s| {
        (
            s["metadata"]["creationTimestamp"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            s["metadata"]["namespace"]
                .as_str()
                .unwrap_or("")
                .to_string(),
            s["metadata"]["name"].as_str().unwrap_or("").to_string(),
        )
    });
    // Pass 1: who keeps what they hold.
    let mut used = BTreeSet::new();
    let mut keeps = Vec::new();
    for s in &ordered {
        let held: Vec<Ipv4Addr> = ingress_ips(s)
            .into_iter()
            .filter(|ip| pool.contains(*ip))
            .collect();
        let ok = wants_address(s)
            && held.len() == 1
            && requested(s).is_none_or(|r| r == held[0].to_string())
            && used.insert(held[0]);
        keeps.push(ok);
    }
    // Pass 2: everyone else.
    let mut out = Vec::new();
    for (s, keep) in ordered.into_iter().zip(keeps) {
        let held_pool = ingress_ips(&s).iter().any(|ip| pool.contains(*ip));
        let decision = if keep {
            Decision::Keep
        } else if !wants_address(&s) {
            if held_pool && s["spec"]["type"] != "LoadBalancer" {
                Decision::Release
            } else {
                Decision::Keep
            }
        } else if pool.0.is_empty() {
            Decision::Fail(
                "no LoadBalancer address pool is configured (switchyard-cp --loadbalancer-pool)"
                    .into(),
            )
        } else if let Some(r) = requested(&s) {
            match r.parse::<Ipv4Addr>() {
                Ok(ip) if !pool.contains(ip) => Decision::Fail(format!(
                    "requested loadBalancerIP {r} is not in any LoadBalancer address pool"
                )),
                Ok(ip) if !used.insert(ip) => Decision::Fail(format!(
                    "requested loadBalancerIP {r} is already in use by another Service"
                )),
                Ok(ip) => Decision::Assign(ip),
                Err(_) => Decision::Fail(format!(
                    "requested loadBalancerIP {r:?} is not an IPv4 address"
                )),
            }
        } else {
            match pool.addresses().find(|ip| !used.contains(ip)) {
                Some(ip) => {
                    used.insert(ip);
                    Decision::Assign(ip)
                }
                None => Decision::Fail("no available IPs in the LoadBalancer address pools".into()),
            }
        };
        out.push((s, decision));
    }
    out
}

/// One pass over every Service.
pub fn reconcile(store: &Store, pool: &Pool, events: &Recorder) {
    let (services, _) = store.list("services", None);
    pass(store, &services, pool, events);
}

/// One pass over `services`, which must include every Service that wants or holds an address
/// (the others are left as they are anyway).
fn pass(store: &Store, services: &[Arc<Value>], pool: &Pool, events: &Recorder) {
    for (svc, decision) in decide(services, pool) {
        let key = key_of(&svc);
        let regarding = Reference::to(&svc);
        match decision {
            Decision::Keep => {}
            Decision::Assign(ip) => {
                let written = store.modify(&key, |s| {
                    let mut s = s.clone();
                    s["status"]["loadBalancer"] =
                        json!({"ingress": [{"ip": ip.to_string(), "ipMode": "VIP"}]});
                    Some(s)
                });
                if written.is_ok() {
                    tracing::info!(service = %format!("{}/{}", key.namespace, key.name), %ip, "assigned a LoadBalancer address");
                    events.normal(
                        &regarding,
                        "IPAllocated",
                        "Allocate",
                        &format!("Assigned IP [\"{ip}\"]"),
                    );
                }
            }
            Decision::Release => {
                let _ = store.modify(&key, |s| {
                    let mut s = s.clone();
                    s["status"]["loadBalancer"] = json!({});
                    Some(s)
                });
            }
            Decision::Fail(why) => {
                events.warning(
                    &regarding,
                    "AllocationFailed",
                    "Allocate",
                    &format!(
                        "Failed to allocate IP for \"{}/{}\": {why}",
                        key.namespace, key.name
                    ),
                );
            }
        }
    }
}

/// Runs until the store closes: on every change of a Service that wants or holds an address
/// (a pass over those only), and over every Service every 30 s and after missed writes.
pub async fn run(store: Store, pool: Pool, events: Recorder) {
    let mut rx = store.subscribe();
    let mut resync = tokio::time::interval(Duration::from_secs(30));
    // The keys of the Services a pass looks at, as of the last event seen.
    let mut watched: BTreeSet<Key> = BTreeSet::new();
    let mut whole = true;
    loop {
        if whole {
            let (services, _) = store.list("services", None);
            watched = services
                .iter()
                .filter(|s| concerned(s))
                .map(|s| key_of(s))
                .collect();
            pass(&store, &services, &pool, &events);
        } else {
            let services: Vec<Arc<Value>> = watched.iter().filter_map(|k| store.get(k)).collect();
            pass(&store, &services, &pool, &events);
        }
        whole = loop {
            tokio::select! {
                ev = rx.recv() => match ev {
                    Ok(e) if e.key.resource == "services" => {
                        // A pass when the Service is concerned now, or was until this change.
                        if store.get(&e.key).is_some_and(|s| concerned(&s)) {
                            watched.insert(e.key);
                            break false;
                        } else if watched.remove(&e.key) {
                            break false;
                        }
                    }
                    Ok(_) => {}
                    Err(crate::store::RecvError::Lagged) => break true,
                    Err(crate::store::RecvError::Closed) => return,
                },
                _ = resync.tick() => break true,
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(name: &str, created: &str, spec: Value, status_ip: Option<&str>) -> Arc<Value> {
        let mut s = json!({"metadata": {"name": name, "namespace": "default", "creationTimestamp": created},
            "spec": spec, "status": {"loadBalancer": {}}});
        if let Some(ip) = status_ip {
            s["status"]["loadBalancer"] = json!({"ingress": [{"ip": ip, "ipMode": "VIP"}]});
        }
        Arc::new(s)
    }

    fn pool() -> Pool {
        Pool(vec![(Ipv4Addr::new(198, 18, 100, 0), 30)])
    }

    #[test]
    fn a_slash_thirty_pool_gives_its_two_host_addresses() {
        let got: Vec<String> = pool().addresses().map(|a| a.to_string()).collect();
        assert_eq!(got, ["198.18.100.1", "198.18.100.2"]);
        let one = Pool(vec![(Ipv4Addr::new(198, 18, 100, 7), 32)]);
        assert!(one.contains(Ipv4Addr::new(198, 18, 100, 7)));
    }

    #[test]
    fn requests_holders_and_the_lowest_free_address_decide_who_gets_what() {
        let lb = |ip: Option<&str>| match ip {
            Some(ip) => json!({"type": "LoadBalancer", "loadBalancerIP": ip}),
            None => json!({"type": "LoadBalancer"}),
        };
        let services = [
            svc(
                "holder",
                "2026-01-01T00:00:01Z",
                lb(None),
                Some("198.18.100.2"),
            ),
            svc(
                "asks",
                "2026-01-01T00:00:02Z",
                lb(Some("198.18.100.2")),
                None,
            ),
            svc("new", "2026-01-01T00:00:03Z", lb(None), None),
            svc("late", "2026-01-01T00:00:04Z", lb(None), None),
            svc(
                "was-lb",
                "2026-01-01T00:00:05Z",
                json!({"type": "ClusterIP"}),
                Some("198.18.100.1"),
            ),
            svc(
                "classy",
                "2026-01-01T00:00:06Z",
                json!({"type": "LoadBalancer", "loadBalancerClass": "x"}),
                None,
            ),
        ];
        let got: Vec<(String, Decision)> = decide(&services, &pool())
            .into_iter()
            .map(|(s, d)| (s["metadata"]["name"].as_str().unwrap().to_string(), d))
            .collect();
        let of = |n: &str| &got.iter().find(|(name, _)| name == n).unwrap().1;
        assert_eq!(of("holder"), &Decision::Keep);
        assert!(matches!(of("asks"), Decision::Fail(m) if m.contains("already in use")));
        assert_eq!(of("new"), &Decision::Assign(Ipv4Addr::new(198, 18, 100, 1)));
        assert!(matches!(of("late"), Decision::Fail(m) if m.contains("no available IPs")));
        assert_eq!(of("was-lb"), &Decision::Release);
        assert!(
            got.iter().all(|(name, _)| name != "classy"),
            "a Service that neither wants nor holds a pool address is left as it is"
        );
        let none = decide(&services[2..3], &Pool::default());
        assert!(matches!(&none[0].1, Decision::Fail(m) if m.contains("--loadbalancer-pool")));
    }
}
