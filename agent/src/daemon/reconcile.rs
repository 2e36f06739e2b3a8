//! One reconcile: what the watches report changed becomes map writes.
//!
//! A relist, a changed node (its address or the set of nodes, which decide backends' node
//! addresses and which endpoints are alive), a failed write or the periodic safety net recompute
//! everything from the stores ([`DesiredCache::rebuild`] and a full map sync). Anything else —
//! the common case of one Service or EndpointSlice changing — recomputes only the Services it
//! names and writes only the frontends whose spec changed.
//!
//! A frontend the maps cannot take (a full map) is left out of a sync while the rest is written;
//! it is named in the [`Findings`] (as an Event once per distinct failure, see [`Failing`]) and
//! the next run is a full one, which tries it again.
//!
//! The loop only decides; the maps are [`MapWriter`]s, so the tests below run it against
//! in-memory maps.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Instant;

use super::failing::{self, Failing, Unprogrammed};
use super::notes::Notes;
use super::report::ServicesSynced;
use crate::datapath::apply::ServiceReport;
use crate::datapath::services::{ServiceSync, ServiceWriters};
use crate::datapath::tunnels::{Cidr, TunnelSync};
use crate::datapath::MapWriter;
use crate::model::objects::Service;
use crate::model::{self, DesiredCache, HealthCheck, NodeView, ObjKey};
use crate::watch::{Dirty, Stores};

/// The reconcile loop's memory between runs.
pub struct Reconciler {
    node: String,
    node_ip: Ipv4Addr,
    nodeport_networks: Vec<(Ipv4Addr, u8)>,
    cache: Option<DesiredCache>,
    notes: Notes,
    failing: Failing,
    /// Whether a sync was logged since the start (the first is logged even without writes).
    logged_first: bool,
}

/// What a run found that the agent must tell users about.
#[derive(Default)]
pub struct Findings {
    /// Services asking for something the datapath does not do, each note new since last said.
    pub unsupported: Vec<(Arc<Service>, String)>,
    /// Time from the oldest watch event of this run to its service maps written, when they were.
    pub synced_after: Option<std::time::Duration>,
    /// Steps that failed and will be retried: `services`, `tunnels`.
    pub errors: Vec<&'static str>,
    /// Every frontend the service maps could not take as of this run (retried by the next).
    pub unprogrammed: Vec<Unprogrammed>,
    /// Of those, the ones failing anew, with their Service: `(service, frontend, error)`.
    pub sync_failed: Vec<(Arc<Service>, String, String)>,
    /// How long this run took when it recomputed every Service (a relist, a resync, a change of
    /// node), whether or not it wrote anything.
    pub full_took: Option<std::time::Duration>,
    /// Whether this run wrote or deleted map entries.
    pub wrote: bool,
}

impl Reconciler {
    /// For node `node` whose address is `node_ip`, serving NodePorts on its addresses inside
    /// `nodeport_networks` (all when empty).
    pub fn new(node: &str, node_ip: Ipv4Addr, nodeport_networks: Vec<(Ipv4Addr, u8)>) -> Self {
        Reconciler {
            node: node.to_string(),
            node_ip,
            nodeport_networks,
            cache: None,
            notes: Notes::default(),
            failing: Failing::default(),
            logged_first: false,
        }
    }

    /// The last computed desired state, if the last run wrote it.
    pub fn desired(&self) -> Option<&model::Desired> {
        self.cache.as_ref().map(|c| c.desired())
    }

    /// The health check ports of the last computed desired state.
    pub fn health_checks(&self) -> Option<&BTreeMap<u16, HealthCheck>> {
        self.cache.as_ref().map(|c| &c.desired().health_checks)
    }

    /// Takes the changes the watches recorded and writes what differs into `services` and
    /// `tunnels`.
    pub fn run<W, T>(
        &mut self,
        services: &mut ServiceSync<W>,
        tunnels: &mut TunnelSync<T>,
        stores: &Stores,
    ) -> Findings
    where
        W: ServiceWriters,
        T: MapWriter<Cidr, Ipv4Addr>,
    {
        let span = tracing::info_span!("reconcile", node = %self.node);
        let _enter = span.enter();
        // The agent's work for a change, from reading the stores to the last map write
        // (reported as `took_us`, the benchmark's programming-time figure).
        let started = Instant::now();
        let dirty = stores.take_dirty();
        let nodes = stores.nodes.state();
        let view = NodeView::with_nodeport_networks(
            &nodes,
            &self.node,
            self.node_ip,
            &self.nodeport_networks,
        );
        let stale = self.cache.as_ref().is_none_or(|c| c.view() != &view);
        let mut findings = self.findings(&dirty, stale, stores);
        let (mode, result) = match self.cache.as_mut() {
            Some(cache) if !dirty.full && !stale => {
                let changed = cache.update(
                    dirty.services,
                    dirty.slices,
                    |k| stores.service(k),
                    |k| stores.slice(k),
                );
                if changed.is_empty() {
                    ("incremental", Ok(ServiceReport::default()))
                } else {
                    (
                        "incremental",
                        services.sync_changes(cache.desired(), &changed),
                    )
                }
            }
            _ => {
                let cache =
                    DesiredCache::rebuild(&stores.services.state(), &stores.slices.state(), view);
                let result = services.sync_all(cache.desired());
                self.cache = Some(cache);
                ("full", result)
            }
        };
        let frontends = self
            .cache
            .as_ref()
            .map_or(0, |c| c.desired().frontends.len());
        if result.is_ok() {
            findings.synced_after = dirty.since.map(|t| t.elapsed());
        }
        if mode == "full" {
            findings.full_took = Some(started.elapsed());
        }
        match result {
            Ok(r) => {
                findings.wrote = r.written + r.deleted > 0;
                if findings.wrote || !self.logged_first {
                    self.logged_first = true;
                    ServicesSynced {
                        mode: mode.to_string(),
                        frontends: frontends as u64,
                        written: r.written as u64,
                        deleted: r.deleted as u64,
                        took_us: started.elapsed().as_micros() as u64,
                    }
                    .log();
                }
                if !r.complete() {
                    // Try again with everything: the next sync is a full one anyway.
                    stores.mark_full();
                }
                let now = r.unprogrammed.iter().map(failing::describe).collect();
                for (service, frontend, error) in self.failing.update(now) {
                    tracing::warn!(%service, %frontend, %error, "frontend not programmed; retrying with every change and resync");
                    let svc = failing::service_key(&service).and_then(|k| stores.service(&k));
                    if let Some(svc) = svc {
                        findings.sync_failed.push((svc, frontend, error));
                    }
                }
            }
            Err(e) => {
                // Recompute everything next time.
                self.cache = None;
                stores.mark_full();
                findings.errors.push("services");
                tracing::warn!(error = %e, "programming services failed; retrying on the next change")
            }
        }
        findings.unprogrammed = self.failing.current();
        if dirty.full || dirty.nodes || stale {
            match tunnels.sync(&model::tunnels(&nodes, &self.node)) {
                Ok(r) if r.written + r.deleted > 0 => tracing::info!(
                    written = r.written,
                    deleted = r.deleted,
                    "overlay routes synced"
                ),
                Ok(_) => {}
                Err(e) => {
                    stores.mark_full();
                    findings.errors.push("tunnels");
                    tracing::warn!(error = %e, "programming overlay routes failed; retrying on the next change")
                }
            }
        }
        findings
    }

    /// The new notes of the Services this run recomputes (all of them on a full run).
    fn findings(&mut self, dirty: &Dirty, full: bool, stores: &Stores) -> Findings {
        let keys: Vec<ObjKey> = if dirty.full || full || self.cache.is_none() {
            stores.services.keys()
        } else {
            dirty.services.iter().cloned().collect()
        };
        let mut out = Findings::default();
        for key in keys {
            let svc = stores.service(&key);
            for note in self.notes.update(&key, svc.as_deref()) {
                tracing::warn!(service = %format!("{}/{}", key.0, key.1), "{note}");
                if let Some(svc) = &svc {
                    out.unsupported.push((svc.clone(), note));
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::MemMap;
    use crate::datapath::services::{read_map, MemServiceMaps};
    use crate::model::objects::{WatchedService, WatchedSlice};
    use crate::watch::Feed;
    use k8s_openapi::api::core::v1::Node;
    use serde_json::json;

    type MemSync = ServiceSync<crate::datapath::services::InMemory>;

    struct World {
        stores: Stores,
        feed: Feed,
        services: MemSync,
        tunnels: TunnelSync<MemMap<Cidr, Ipv4Addr>>,
        reconciler: Reconciler,
    }

    fn node(name: &str, n: u8) -> Node {
        serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {"podCIDR": format!("10.244.{n}.0/24")},
            "status": {
                "addresses": [{"type": "InternalIP", "address": format!("198.18.0.{}", 10 + n)}],
                "conditions": [{"type": "Ready", "status": "True"}]
            }
        }))
        .unwrap()
    }

    fn service(name: &str, ip: &str) -> WatchedService {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
        }))
        .unwrap()
    }

    fn slice(service: &str, pods: &[u8]) -> WatchedSlice {
        let endpoints: Vec<_> = pods
            .iter()
            .map(|p| {
                json!({"addresses": [format!("10.244.1.{p}")], "nodeName": "n1",
                       "conditions": {"ready": true, "serving": true, "terminating": false}})
            })
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{service}-abc"), "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "addressType": "IPv4",
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]
        }))
        .unwrap()
    }

    impl World {
        fn new() -> World {
            let (stores, mut feed) = Feed::new();
            feed.node(node("n1", 1));
            feed.node(node("n2", 2));
            World {
                stores,
                feed,
                services: ServiceSync::open(MemServiceMaps::in_memory()).unwrap(),
                tunnels: TunnelSync::open(MemMap::new("TUNNEL_V1", 64)).unwrap(),
                reconciler: Reconciler::new("n1", Ipv4Addr::new(198, 18, 0, 11), Vec::new()),
            }
        }

        fn run(&mut self) -> Findings {
            self.reconciler
                .run(&mut self.services, &mut self.tunnels, &self.stores)
        }

        fn map_ops(&self) -> usize {
            let m = self.services.maps();
            m.services.ops + m.backends.ops + m.rev_nat.ops
        }

        /// The backend addresses (last octet) of frontend `ip`:80, in slot order.
        fn backends_of(&self, ip: [u8; 4]) -> Vec<u8> {
            let m = self.services.maps();
            let services = read_map(&m.services).unwrap();
            let backends = read_map(&m.backends).unwrap();
            let addr = switchyard_abi::ip_be(ip);
            services
                .iter()
                .filter(|(k, _)| k.addr == addr && k.slot != 0)
                .map(|(_, v)| backends[&v.backend_id].addr.to_ne_bytes()[3])
                .collect()
        }
    }

    #[test]
    fn the_first_run_programs_every_service_and_the_overlay() {
        let mut w = World::new();
        w.feed.service(service("a", "10.96.0.10"));
        w.feed.slice(slice("a", &[2, 3]));
        w.run();
        assert_eq!(w.backends_of([10, 96, 0, 10]), vec![2, 3]);
        assert_eq!(
            w.tunnels.routes().keys().collect::<Vec<_>>(),
            vec![&(Ipv4Addr::new(10, 244, 2, 0), 24)],
            "a route to the other node's podCIDR"
        );
    }

    #[test]
    fn an_endpoint_change_writes_only_its_service() {
        let mut w = World::new();
        for (name, ip) in [("a", "10.96.0.10"), ("b", "10.96.0.11")] {
            w.feed.service(service(name, ip));
            w.feed.slice(slice(name, &[2, 3]));
        }
        w.run();
        let before = w.map_ops();
        w.feed.slice(slice("b", &[2, 3, 4]));
        w.run();
        assert_eq!(w.backends_of([10, 96, 0, 11]), vec![2, 3, 4]);
        assert_eq!(
            w.map_ops() - before,
            3,
            "one backend, one slot, one header of b; nothing of a"
        );
        w.run();
        assert_eq!(w.map_ops() - before, 3, "nothing new: nothing written");
    }

    #[test]
    fn a_failed_write_is_repaired_by_a_full_sync_on_the_next_run() {
        let mut w = World::new();
        w.feed.service(service("a", "10.96.0.10"));
        w.feed.slice(slice("a", &[2, 3]));
        w.run();
        w.services.maps_mut().services.fail_after(1);
        w.feed.slice(slice("a", &[4, 5, 6]));
        w.run();
        assert_ne!(w.backends_of([10, 96, 0, 10]), vec![4, 5, 6]);
        w.services.maps_mut().services.heal();
        // No new event: the failure alone must bring the next run to a full sync.
        w.run();
        assert_eq!(w.backends_of([10, 96, 0, 10]), vec![4, 5, 6]);
        assert_eq!(
            w.services.programmed(),
            &w.services.maps().read().unwrap(),
            "the bookkeeping matches the maps"
        );
    }

    #[test]
    fn a_service_the_maps_cannot_take_is_named_once_and_retried_and_the_others_are_programmed() {
        let mut w = World::new();
        w.services.maps_mut().backends.set_capacity(6);
        for (name, ip, pods) in [
            ("a", "10.96.0.10", vec![2, 3]),
            ("b", "10.96.0.11", (10..15).collect()),
            ("c", "10.96.0.12", vec![4]),
        ] {
            w.feed.service(service(name, ip));
            w.feed.slice(slice(name, &pods));
        }
        let found = w.run();
        let [(svc, frontend, error)] = &found.unprogrammed[..] else {
            panic!("b is left out: {:?}", found.unprogrammed);
        };
        assert_eq!(
            (svc.as_str(), frontend.as_str()),
            ("default/b:http", "10.96.0.11:80/TCP")
        );
        assert!(error.contains("--backends-max"), "{error}");
        let [(event_on, _, _)] = &found.sync_failed[..] else {
            panic!("one Event: {:?}", found.sync_failed.len());
        };
        assert_eq!(event_on.metadata.name.as_deref(), Some("b"));
        assert!(found.errors.is_empty(), "the rest was programmed");
        assert_eq!(w.backends_of([10, 96, 0, 10]), vec![2, 3]);
        assert_eq!(w.backends_of([10, 96, 0, 12]), vec![4]);
        assert!(w.backends_of([10, 96, 0, 11]).is_empty());
        assert_eq!(
            w.services.programmed(),
            &w.services.maps().read().unwrap(),
            "the bookkeeping matches the maps"
        );

        let again = w.run();
        assert_eq!(again.unprogrammed.len(), 1, "tried again, still failing");
        assert!(again.sync_failed.is_empty(), "and not said again");

        // No new event: the failure alone brings the next run to try b again.
        w.services.maps_mut().backends.set_capacity(64);
        let healed = w.run();
        assert!(healed.unprogrammed.is_empty());
        assert_eq!(w.backends_of([10, 96, 0, 11]), vec![10, 11, 12, 13, 14]);
    }

    #[test]
    fn a_deleted_service_leaves_the_maps_and_its_backends_go_with_it() {
        let mut w = World::new();
        w.feed.service(service("a", "10.96.0.10"));
        w.feed.slice(slice("a", &[2]));
        w.run();
        w.feed.delete_service(service("a", "10.96.0.10"));
        w.run();
        let m = w.services.maps();
        assert!(m.services.content().is_empty());
        assert!(m.backends.content().is_empty());
        assert!(m.rev_nat.content().is_empty());
    }

    #[test]
    fn a_new_node_adds_its_overlay_route() {
        let mut w = World::new();
        w.run();
        w.feed.node(node("n3", 3));
        w.run();
        assert!(w
            .tunnels
            .routes()
            .contains_key(&(Ipv4Addr::new(10, 244, 3, 0), 24)));
    }

    #[test]
    fn an_unsupported_port_is_reported_once_and_the_rest_is_programmed() {
        let mut w = World::new();
        let mut svc = service("a", "10.96.0.10");
        svc.spec.as_mut().unwrap().ports.as_mut().unwrap().push(
            serde_json::from_value(json!({"name": "sctp", "port": 9, "protocol": "SCTP"})).unwrap(),
        );
        w.feed.service(svc.clone());
        w.feed.slice(slice("a", &[2]));
        let found = w.run();
        assert_eq!(found.unsupported.len(), 1);
        assert!(found.unsupported[0].1.contains("SCTP"));
        assert_eq!(
            w.backends_of([10, 96, 0, 10]),
            vec![2],
            "the TCP port works"
        );
        w.feed.service(svc);
        assert!(w.run().unsupported.is_empty(), "said once");
    }
}
