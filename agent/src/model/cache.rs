//! The desired state kept up to date one Service at a time.
//!
//! Recomputing every frontend on every watch event costs time linear in the cluster (10,000
//! Services are tens of milliseconds); a change to one EndpointSlice only concerns its Service.
//! [`DesiredCache`] remembers which frontends each Service produced and which slices belong to
//! which Service, so [`DesiredCache::update`] recomputes just the Services named by the changed
//! objects and reports the frontends whose spec really changed. It stays a pure function of the
//! objects: after any sequence of updates, [`DesiredCache::desired`] equals
//! [`super::desired`] of the same objects (the unit tests check exactly that).
use std::borrow::Borrow;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::objects::{EndpointSlice, Service, Str};
use super::services::{health_check, service_frontends, slice_owner, NodeView};
use super::{Desired, Frontend, FrontendSpec};

/// `(namespace, name)` of an object.
pub type ObjKey = (Str, Str);

/// The desired state plus the indexes that let it change one Service at a time.
#[derive(Clone, Debug)]
pub struct DesiredCache {
    view: NodeView,
    desired: Desired,
    /// Frontends each Service produced.
    fronts_of: HashMap<ObjKey, Vec<Frontend>>,
    /// The health check port each Service produced.
    health_of: HashMap<ObjKey, u16>,
    /// Slice names (same namespace) of each Service, sorted (a set; a `BTreeSet` of one name
    /// would take a whole B-tree node).
    slices_of: HashMap<ObjKey, Vec<Str>>,
    /// Owner Service of each slice.
    owner_of: HashMap<ObjKey, ObjKey>,
}

/// Adds `name` to the sorted set `names`.
fn add_name(names: &mut Vec<Str>, name: &str) {
    if let Err(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
        names.insert(at, name.into());
    }
}

/// Removes `name` from the sorted set `names`.
fn remove_name(names: &mut Vec<Str>, name: &str) {
    if let Ok(at) = names.binary_search_by(|n| n.as_str().cmp(name)) {
        names.remove(at);
    }
}

impl DesiredCache {
    /// Computes everything from scratch.
    pub fn rebuild<S, E>(services: &[S], slices: &[E], view: NodeView) -> Self
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let mut cache = DesiredCache {
            view,
            desired: Desired::default(),
            fronts_of: HashMap::new(),
            health_of: HashMap::new(),
            slices_of: HashMap::new(),
            owner_of: HashMap::new(),
        };
        let mut owned: HashMap<ObjKey, Vec<&EndpointSlice>> = HashMap::new();
        for slice in slices.iter().map(Borrow::borrow) {
            if let Some(owner) = slice_owner(slice) {
                let key = slice.metadata.key();
                add_name(cache.slices_of.entry(owner.clone()).or_default(), &key.1);
                cache.owner_of.insert(key, owner.clone());
                owned.entry(owner).or_default().push(slice);
            }
        }
        for svc in services.iter().map(Borrow::borrow) {
            let key = svc.metadata.key();
            let slices = owned.get(&key).map_or(&[][..], Vec::as_slice);
            let fronts = service_frontends(svc, slices, &cache.view);
            if let Some((port, hc)) = health_check(svc, slices, &cache.view) {
                cache.health_of.insert(key.clone(), port);
                cache.desired.health_checks.insert(port, hc);
            }
            cache
                .fronts_of
                .insert(key, fronts.iter().map(|(f, _)| *f).collect());
            cache.desired.frontends.extend(fronts);
        }
        // Built in Service order, the B-tree's nodes are about half full; rebuilt from sorted
        // entries they are full.
        cache.desired.frontends = std::mem::take(&mut cache.desired.frontends)
            .into_iter()
            .collect();
        cache
    }

    /// The current desired state.
    pub fn desired(&self) -> &Desired {
        &self.desired
    }

    /// The node view it was computed with (a different one needs a [`DesiredCache::rebuild`]).
    pub fn view(&self) -> &NodeView {
        &self.view
    }

    /// Takes in the Services and slices named in `services` / `slices` (added, changed or
    /// deleted: `service` and `slice` look up their current version, `None` when gone) and
    /// returns the frontends whose spec changed, appeared or disappeared.
    pub fn update<S, E>(
        &mut self,
        services: impl IntoIterator<Item = ObjKey>,
        slices: impl IntoIterator<Item = ObjKey>,
        service: impl Fn(&ObjKey) -> Option<S>,
        slice: impl Fn(&ObjKey) -> Option<E>,
    ) -> BTreeSet<Frontend>
    where
        S: Borrow<Service>,
        E: Borrow<EndpointSlice>,
    {
        let mut dirty: BTreeSet<ObjKey> = services.into_iter().collect();
        for key in slices {
            if let Some(old) = self.owner_of.remove(&key) {
                if let Some(names) = self.slices_of.get_mut(&old) {
                    remove_name(names, &key.1);
                    if names.is_empty() {
                        self.slices_of.remove(&old);
                    }
                }
                dirty.insert(old);
            }
            if let Some(owner) = slice(&key).and_then(|s| slice_owner(s.borrow())) {
                add_name(self.slices_of.entry(owner.clone()).or_default(), &key.1);
                self.owner_of.insert(key, owner.clone());
                dirty.insert(owner);
            }
        }
        let mut before: BTreeMap<Frontend, Option<FrontendSpec>> = BTreeMap::new();
        for key in &dirty {
            if let Some(port) = self.health_of.remove(key) {
                self.desired.health_checks.remove(&port);
            }
            for f in self.fronts_of.remove(key).unwrap_or_default() {
                let old = self.desired.frontends.remove(&f);
                before.entry(f).or_insert(old);
            }
        }
        for key in &dirty {
            let Some(svc) = service(key) else { continue };
            let owned: Vec<E> = self
                .slices_of
                .get(key)
                .into_iter()
                .flatten()
                .filter_map(|name| slice(&(key.0.clone(), name.clone())))
                .collect();
            let refs: Vec<&EndpointSlice> = owned.iter().map(Borrow::borrow).collect();
            let fronts = service_frontends(svc.borrow(), &refs, &self.view);
            if let Some((port, hc)) = health_check(svc.borrow(), &refs, &self.view) {
                self.health_of.insert(key.clone(), port);
                self.desired.health_checks.insert(port, hc);
            }
            for (f, _) in &fronts {
                before.entry(*f).or_insert(None);
            }
            self.fronts_of
                .insert(key.clone(), fronts.iter().map(|(f, _)| *f).collect());
            self.desired.frontends.extend(fronts);
        }
        before
            .into_iter()
            .filter(|(f, old)| self.desired.frontends.get(f) != old.as_ref())
            .map(|(f, _)| f)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::desired;
    use crate::model::nodes::tests::node;
    use crate::model::objects::Meta;
    use crate::model::objects::{Endpoint, EndpointPort, ServicePort, ServiceSpec};
    use k8s_openapi::api::core::v1::Node;
    use std::net::Ipv4Addr;

    const NODE_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 0, 11);

    fn nodes() -> Vec<Node> {
        vec![node("n1", Some("10.244.1.0/24"), Some("198.18.0.11"))]
    }

    fn service(name: &str, ip: &str, node_port: Option<i32>) -> Service {
        Service {
            metadata: Meta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(ServiceSpec {
                cluster_ip: Some(ip.into()),
                type_: Some(
                    if node_port.is_some() {
                        "NodePort"
                    } else {
                        "ClusterIP"
                    }
                    .into(),
                ),
                ports: Some(vec![ServicePort {
                    port: 80,
                    node_port,
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            status: None,
        }
    }

    fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        EndpointSlice {
            metadata: Meta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                labels: Some(
                    [(
                        crate::model::services::SERVICE_NAME_LABEL.to_string(),
                        svc.to_string(),
                    )]
                    .into(),
                ),
                ..Default::default()
            },
            address_type: "IPv4".into(),
            endpoints: Some(
                ips.iter()
                    .map(|ip| Endpoint {
                        addresses: vec![ip.to_string().into()],
                        node_name: Some("n1".into()),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ports: Some(vec![EndpointPort {
                port: Some(8080),
                ..Default::default()
            }]),
            ..Default::default()
        }
    }

    /// The objects of a little cluster, changed step by step.
    #[derive(Default)]
    struct World {
        services: BTreeMap<ObjKey, Service>,
        slices: BTreeMap<ObjKey, EndpointSlice>,
    }

    impl World {
        fn key(name: &str) -> ObjKey {
            ("default".into(), name.into())
        }
        fn full(&self) -> Desired {
            let s: Vec<&Service> = self.services.values().collect();
            let e: Vec<&EndpointSlice> = self.slices.values().collect();
            desired(&s, &e, &nodes(), "n1", NODE_IP)
        }
        fn update(
            &self,
            cache: &mut DesiredCache,
            svcs: &[&str],
            slices: &[&str],
        ) -> BTreeSet<Frontend> {
            cache.update(
                svcs.iter().map(|n| Self::key(n)),
                slices.iter().map(|n| Self::key(n)),
                |k| self.services.get(k).cloned(),
                |k| self.slices.get(k).cloned(),
            )
        }
    }

    fn front(ip: [u8; 4], port: u16) -> Frontend {
        Frontend {
            ip: Ipv4Addr::from(ip),
            port,
            proto: crate::model::Proto::Tcp,
        }
    }

    #[test]
    fn updates_one_service_at_a_time_and_match_a_full_recompute() {
        let mut w = World::default();
        w.services
            .insert(World::key("a"), service("a", "10.96.0.1", None));
        w.services
            .insert(World::key("b"), service("b", "10.96.0.2", Some(31002)));
        w.slices
            .insert(World::key("a-1"), slice("a-1", "a", &["10.244.1.2"]));
        let view = NodeView::new(&nodes(), "n1", NODE_IP);
        let mut cache = DesiredCache::rebuild(
            &w.services.values().collect::<Vec<_>>(),
            &w.slices.values().collect::<Vec<_>>(),
            view,
        );
        assert_eq!(cache.desired(), &w.full());

        // An endpoint appears in b's new slice: b's ClusterIP and NodePort frontends change.
        w.slices
            .insert(World::key("b-1"), slice("b-1", "b", &["10.244.1.3"]));
        let changed = w.update(&mut cache, &[], &["b-1"]);
        assert_eq!(
            changed,
            [front([10, 96, 0, 2], 80), front([198, 18, 0, 11], 31002)].into()
        );
        assert_eq!(cache.desired(), &w.full());

        // A second slice of a: only a's frontend changes.
        w.slices
            .insert(World::key("a-2"), slice("a-2", "a", &["10.244.1.4"]));
        let changed = w.update(&mut cache, &[], &["a-2"]);
        assert_eq!(changed, [front([10, 96, 0, 1], 80)].into());
        assert_eq!(
            cache.desired().frontends[&front([10, 96, 0, 1], 80)]
                .backends
                .len(),
            2
        );
        assert_eq!(cache.desired(), &w.full());

        // A slice moves from a to b (relabelled): both change.
        w.slices
            .insert(World::key("a-2"), slice("a-2", "b", &["10.244.1.4"]));
        let changed = w.update(&mut cache, &[], &["a-2"]);
        assert!(changed.contains(&front([10, 96, 0, 1], 80)));
        assert!(changed.contains(&front([10, 96, 0, 2], 80)));
        assert_eq!(cache.desired(), &w.full());

        // b becomes ClusterIP only: its NodePort frontend goes.
        w.services
            .insert(World::key("b"), service("b", "10.96.0.2", None));
        let changed = w.update(&mut cache, &["b"], &[]);
        assert_eq!(changed, [front([198, 18, 0, 11], 31002)].into());
        assert_eq!(cache.desired(), &w.full());

        // A change that changes nothing reports nothing.
        assert!(w.update(&mut cache, &["a", "b"], &["a-1"]).is_empty());

        // Deleting a service and its slice removes its frontend; a slice of an unknown
        // service is remembered and used once the service appears.
        w.services.remove(&World::key("a"));
        w.slices.remove(&World::key("a-1"));
        let changed = w.update(&mut cache, &["a"], &["a-1"]);
        assert_eq!(changed, [front([10, 96, 0, 1], 80)].into());
        w.slices
            .insert(World::key("c-1"), slice("c-1", "c", &["10.244.1.9"]));
        assert!(w.update(&mut cache, &[], &["c-1"]).is_empty());
        w.services
            .insert(World::key("c"), service("c", "10.96.0.3", None));
        let changed = w.update(&mut cache, &["c"], &[]);
        assert_eq!(changed, [front([10, 96, 0, 3], 80)].into());
        assert_eq!(
            cache.desired().frontends[&front([10, 96, 0, 3], 80)]
                .backends
                .len(),
            1
        );
        assert_eq!(cache.desired(), &w.full());
    }
}
