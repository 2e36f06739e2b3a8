//! Watches of Services, EndpointSlices and Nodes into the agent's caches ([`cache`]), one change
//! notification, and the list of what changed. Services and EndpointSlices are parsed as the
//! model's own types, which leave out what the model never reads ([`crate::model::objects`]),
//! and every object is kept without what the agent never reads ([`slim`]).
//!
//! Every event wakes the reconcile loop and names its object in [`Dirty`], so the loop can
//! recompute just the Services concerned. A relist (the watch's `InitDone`, also at start)
//! asks for a full recompute from the stores instead: deletes that happened while the watch was
//! disconnected show up only as absence after the relist, so they are never missed.
use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::model::objects::{EndpointSlice, Service, WatchedService, WatchedSlice};
use crate::model::ObjKey;

pub mod cache;
pub mod slim;

use cache::{Cache, Writer};
use slim::Slim;

/// Local caches of the objects the agent programs from.
#[derive(Clone)]
pub struct Stores {
    /// All Services.
    pub services: Cache<Service>,
    /// All EndpointSlices.
    pub slices: Cache<EndpointSlice>,
    /// All Nodes.
    pub nodes: Cache<Node>,
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

/// What one watch event tells the reconcile loop.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Mark {
    /// A (re)list ended: everything may have changed.
    Relisted,
    /// This object was added, changed or deleted.
    Changed(ObjKey),
    /// Part of a relist in progress: nothing to do before it ends.
    Listing,
}

impl Mark {
    fn of<K: Resource>(event: &watcher::Event<K>) -> Mark {
        match event {
            watcher::Event::Apply(o) | watcher::Event::Delete(o) => Mark::Changed(cache::key_of(o)),
            watcher::Event::InitDone => Mark::Relisted,
            watcher::Event::Init | watcher::Event::InitApply(_) => Mark::Listing,
        }
    }
}

impl Dirty {
    /// Records one watch event of an object of `kind`.
    fn note(&mut self, kind: Kind, mark: Mark) {
        self.since.get_or_insert_with(std::time::Instant::now);
        let key = match mark {
            Mark::Changed(key) => key,
            Mark::Relisted => {
                self.full = true;
                return;
            }
            Mark::Listing => return,
        };
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
        self.services.wait_until_ready().await;
        self.slices.wait_until_ready().await;
        self.nodes.wait_until_ready().await;
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
        self.services.get(key)
    }

    /// The current EndpointSlice `key`.
    pub fn slice(&self, key: &ObjKey) -> Option<Arc<EndpointSlice>> {
        self.slices.get(key)
    }

    /// The node named `name`, if the store has it.
    pub fn node(&self, name: &str) -> Option<Node> {
        self.nodes
            .get(&(Default::default(), name.into()))
            .map(|n| (*n).clone())
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
    let (services, t1) = follow::<WatchedService>(Api::all(client.clone()), tap(Kind::Services));
    let (slices, t2) = follow::<WatchedSlice>(Api::all(client.clone()), tap(Kind::Slices));
    let (nodes, t3) = follow::<Node>(Api::all(client.clone()), tap(Kind::Nodes));
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
    /// Takes `event` into `cache`, then notes it in the dirty list and wakes the reconcile loop
    /// (in that order: the loop must find the object when it looks).
    fn deliver<K: Resource + Slim>(&self, cache: &mut Writer<K::Kept>, event: watcher::Event<K>) {
        let mark = Mark::of(&event);
        cache.apply(event);
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&format!("{:?}", self.kind));
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .note(self.kind, mark);
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
        let (services, ws) = cache::cache();
        let (slices, wl) = cache::cache();
        let (nodes, wn) = cache::cache();
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
    pub fn service(&mut self, obj: WatchedService) {
        feed(&mut self.services, watcher::Event::Apply(obj));
    }

    /// A Service was deleted.
    pub fn delete_service(&mut self, obj: WatchedService) {
        feed(&mut self.services, watcher::Event::Delete(obj));
    }

    /// An EndpointSlice was added or changed.
    pub fn slice(&mut self, obj: WatchedSlice) {
        feed(&mut self.slices, watcher::Event::Apply(obj));
    }

    /// A Node was added or changed.
    pub fn node(&mut self, obj: Node) {
        feed(&mut self.nodes, watcher::Event::Apply(obj));
    }
}

/// Hands `event` to the cache and tap of `target`.
fn feed<K: Resource + Slim>(target: &mut (Writer<K::Kept>, Tap), event: watcher::Event<K>) {
    let (cache, tap) = target;
    tap.deliver(cache, event);
}

/// Watches every object of `K` (retrying with backoff) into a new cache.
fn follow<K>(api: Api<K>, tap: Tap) -> (Cache<K::Kept>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Slim
        + Send
        + 'static,
    K::Kept: Send + Sync + 'static,
{
    let (reader, mut writer) = cache::cache::<K::Kept>();
    let task = tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default()).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(ev) => tap.deliver(&mut writer, ev),
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

    fn svc(name: &str) -> WatchedService {
        WatchedService {
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
        let mut note = |kind, event: watcher::Event<WatchedService>| d.note(kind, Mark::of(&event));
        note(Kind::Services, watcher::Event::Apply(svc("a")));
        note(Kind::Slices, watcher::Event::Delete(svc("a-1")));
        note(Kind::Services, watcher::Event::InitApply(svc("b")));
        assert!(!d.full && !d.nodes);
        assert_eq!(d.services, [("default".into(), "a".into())].into());
        assert_eq!(d.slices, [("default".into(), "a-1".into())].into());
        d.note(
            Kind::Services,
            Mark::of(&watcher::Event::<WatchedService>::InitDone),
        );
        d.note(Kind::Nodes, Mark::of(&watcher::Event::Apply(svc("n1"))));
        assert!(d.full && d.nodes);
    }
}
