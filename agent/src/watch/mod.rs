//! kube-rs reflectors for Services, EndpointSlices and Nodes, one change notification, and the
//! list of what changed. Services and EndpointSlices are parsed as the model's own types, which
//! leave out what the model never reads ([`crate::model::objects`]), and every object is stored
//! without what the agent never reads ([`slim`]).
//!
//! Every event wakes the reconcile loop and names its object in [`Dirty`], so the loop can
//! recompute just the Services concerned. A relist (the watch's `InitDone`, also at start)
//! asks for a full recompute from the stores instead: deletes that happened while the watch was
//! disconnected show up only as absence after the relist, so they are never missed.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::reflector::{self, reflector, store::Writer, ObjectRef, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::model::objects::{EndpointSlice, Service};
use crate::model::ObjKey;

pub mod slim;

use slim::Slim;

/// Local caches of the objects the agent programs from.
#[derive(Clone)]
pub struct Stores {
    /// All Services.
    pub services: Store<Service>,
    /// All EndpointSlices.
    pub slices: Store<EndpointSlice>,
    /// All Nodes.
    pub nodes: Store<Node>,
    /// Signalled after every watch event (coalescing: one permit however many events).
    pub changed: Arc<Notify>,
    /// What the events since the last [`Stores::take_dirty`] touched.
    dirty: Arc<Mutex<Dirty>>,
    /// Watches failing now: kind → the last error.
    failing: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

/// What changed since the reconcile loop last looked.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Dirty {
    /// A watch (re)listed: recompute everything from the stores.
    pub full: bool,
    /// Services added, changed or deleted: `(namespace, name)`.
    pub services: BTreeSet<ObjKey>,
    /// EndpointSlices added, changed or deleted.
    pub slices: BTreeSet<ObjKey>,
    /// Some Node changed.
    pub nodes: bool,
    /// When the oldest event of this batch arrived (what a sync's latency is measured from).
    pub since: Option<std::time::Instant>,
}

/// Which of [`Dirty`]'s sets an object kind goes to.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Services,
    Slices,
    Nodes,
}

impl Dirty {
    /// Records one watch event of an object of `kind`.
    fn note<K: Resource>(&mut self, kind: Kind, event: &watcher::Event<K>) {
        self.since.get_or_insert_with(std::time::Instant::now);
        let obj = match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => o,
            watcher::Event::InitDone => {
                self.full = true;
                return;
            }
            watcher::Event::Init | watcher::Event::InitApply(_) => return,
        };
        let meta = obj.meta();
        let key = (
            meta.namespace.clone().unwrap_or_default(),
            meta.name.clone().unwrap_or_default(),
        );
        match kind {
            Kind::Services => {
                self.services.insert(key);
            }
            Kind::Slices => {
                self.slices.insert(key);
            }
            Kind::Nodes => self.nodes = true,
        }
    }
}

impl Stores {
    /// Waits until every store has completed its first list.
    pub async fn wait_ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// Takes what changed since the last call.
    pub fn take_dirty(&self) -> Dirty {
        std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Why the API server is not being followed right now (a failing watch), if it is not.
    pub fn problem(&self) -> Option<String> {
        let failing = self.failing.lock().unwrap_or_else(|e| e.into_inner());
        failing
            .iter()
            .next()
            .map(|(kind, e)| format!("watching {kind} fails: {e}"))
    }

    /// Asks the next reconcile for a full recompute (the periodic safety net, or after a failed
    /// write).
    pub fn mark_full(&self) {
        self.dirty.lock().unwrap_or_else(|e| e.into_inner()).full = true;
    }

    /// The current Service `key`.
    pub fn service(&self, key: &ObjKey) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(&key.1).within(&key.0))
    }

    /// The current EndpointSlice `key`.
    pub fn slice(&self, key: &ObjKey) -> Option<Arc<EndpointSlice>> {
        self.slices.get(&ObjectRef::new(&key.1).within(&key.0))
    }

    /// The node named `name`, if the store has it.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes
            .state()
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(name))
            .map(|n| (**n).clone())
    }
}

/// Starts the three watches; they run (retrying with backoff) until the tasks are aborted.
pub fn start(client: &Client) -> (Stores, Vec<JoinHandle<()>>) {
    let changed = Arc::new(Notify::new());
    let dirty = Arc::new(Mutex::new(Dirty {
        full: true,
        ..Dirty::default()
    }));
    let failing = Arc::default();
    let tap = |kind| Tap {
        kind,
        changed: changed.clone(),
        dirty: dirty.clone(),
        failing: Arc::clone(&failing),
    };
    let (services, t1) = reflect::<Service>(Api::all(client.clone()), tap(Kind::Services));
    let (slices, t2) = reflect::<EndpointSlice>(Api::all(client.clone()), tap(Kind::Slices));
    let (nodes, t3) = reflect::<Node>(Api::all(client.clone()), tap(Kind::Nodes));
    (
        Stores {
            services,
            slices,
            nodes,
            changed,
            dirty,
            failing,
        },
        vec![t1, t2, t3],
    )
}

/// Where one watch reports its events.
struct Tap {
    kind: Kind,
    changed: Arc<Notify>,
    dirty: Arc<Mutex<Dirty>>,
    failing: Arc<Mutex<std::collections::BTreeMap<String, String>>>,
}

impl Tap {
    /// Notes `event` in the dirty list and wakes the reconcile loop.
    fn record<K: Resource>(&self, event: &watcher::Event<K>) {
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{:?}", self.kind));
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(self.kind, event);
        self.changed.notify_one();
    }
}

/// Stores fed by hand instead of by watches: the reconcile loop's tests drive it with the
/// events a watch would deliver.
pub struct Feed {
    services: (Writer<Service>, Tap),
    slices: (Writer<EndpointSlice>, Tap),
    nodes: (Writer<Node>, Tap),
}

impl Feed {
    /// Empty stores and the feed that fills them. Nothing is dirty until an event arrives.
    pub fn new() -> (Stores, Feed) {
        let changed = Arc::new(Notify::new());
        let dirty = Arc::new(Mutex::new(Dirty::default()));
        let failing: Arc<Mutex<std::collections::BTreeMap<String, String>>> = Arc::default();
        let tap = |kind| Tap {
            kind,
            changed: changed.clone(),
            dirty: dirty.clone(),
            failing: failing.clone(),
        };
        let (services, ws) = reflector::store();
        let (slices, wl) = reflector::store();
        let (nodes, wn) = reflector::store();
        (
            Stores {
                services,
                slices,
                nodes,
                changed: changed.clone(),
                dirty: dirty.clone(),
                failing: failing.clone(),
            },
            Feed {
                services: (ws, tap(Kind::Services)),
                slices: (wl, tap(Kind::Slices)),
                nodes: (wn, tap(Kind::Nodes)),
            },
        )
    }

    /// A Service was added or changed.
    pub fn service(&mut self, obj: Service) {
        deliver(&mut self.services, watcher::Event::Apply(obj));
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, obj: Service) {
        deliver(&mut self.services, watcher::Event::Delete(obj));
    }

    /// An EndpointSlice was added or changed.
    pub fn slice(&mut self, obj: EndpointSlice) {
        deliver(&mut self.slices, watcher::Event::Apply(obj));
    }

    /// A Node was added or changed.
    pub fn node(&mut self, obj: Node) {
        deliver(&mut self.nodes, watcher::Event::Apply(obj));
    }
}

fn deliver<K>(target: &mut (Writer<K>, Tap), event: watcher::Event<K>)
where
    K: Resource<DynamicType = ()> + Clone + 'static,
{
    target.0.apply_watcher_event(&event);
    target.1.record(&event);
}

fn reflect<K>(api: Api<K>, tap: Tap) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Slim
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let task = tokio::spawn(async move {
        let events = watcher(api, watcher::Config::default()).modify(K::slim);
        let stream = reflector(writer, events).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(ev) => tap.record(&ev),
                Err(e) => {
                    tracing::warn!(kind = ?tap.kind, error = %e, "watch failed; retrying with backoff");
                    tap.failing
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(format!("{:?}", tap.kind), e.to_string());
                    tap.changed.notify_one();
                }
            }
        }
        tracing::error!(kind = ?tap.kind, "watch stream ended");
    });
    (reader, task)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str) -> Service {
        Service {
            metadata: ObjectMeta {
                namespace: Some("default".into()),
                name: Some(name.into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn events_name_their_objects_and_a_relist_asks_for_everything() {
        let mut d = Dirty::default();
        d.note(Kind::Services, &watcher::Event::Apply(svc("a")));
        d.note(Kind::Slices, &watcher::Event::Delete(svc("a-1")));
        d.note(Kind::Services, &watcher::Event::InitApply(svc("b")));
        assert!(!d.full && !d.nodes);
        assert_eq!(d.services, [("default".into(), "a".into())].into());
        assert_eq!(d.slices, [("default".into(), "a-1".into())].into());
        d.note(Kind::Services, &watcher::Event::<Service>::InitDone);
        d.note(Kind::Nodes, &watcher::Event::Apply(svc("n1")));
        assert!(d.full && d.nodes);
    }
}
