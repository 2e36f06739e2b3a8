//! The agent's copy of one watched kind: every object by `(namespace, name)`, in the form the
//! agent keeps ([`Slim::Kept`]), fed with the watch's events.
//!
//! kube-rs' reflector store would do the same with the watch's own type, which must carry a
//! whole `ObjectMeta` (350 bytes before its strings), under a key that copies the name,
//! namespace, uid and resourceVersion once more: at 100,000 Services that was a fifth of the
//! agent's memory. This cache keeps what [`Slim`] leaves and keys it by [`ObjKey`].
//!
//! Invariant: after the watch's events up to an `InitDone` (a list) and any `Apply`/`Delete`
//! since, the cache holds exactly the objects the API server holds, as a reflector store would:
//! a relist is gathered aside and replaces the whole content at its `InitDone`, so objects
//! deleted while the watch was away disappear, and readers never see a half-listed state.
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use kube::runtime::watcher::Event;
use kube::Resource;
use tokio::sync::watch;

use super::slim::Slim;
use crate::model::ObjKey;

/// Objects by key, shared by the cache's writer and readers.
type Objects<T> = Arc<RwLock<HashMap<ObjKey, Arc<T>>>>;

/// A reader of one kind's objects (cheap to clone; all clones see the same objects).
#[derive(Debug)]
pub struct Cache<T> {
    objects: Objects<T>,
    ready: watch::Receiver<bool>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache {
            objects: self.objects.clone(),
            ready: self.ready.clone(),
        }
    }
}

/// What feeds a [`Cache`]: the one writer of its objects.
#[derive(Debug)]
pub struct Writer<T> {
    objects: Objects<T>,
    ready: watch::Sender<bool>,
    /// The objects of a relist in progress (between `Init` and `InitDone`).
    relist: Option<HashMap<ObjKey, Arc<T>>>,
}

/// An empty cache and its writer.
pub fn cache<T>() -> (Cache<T>, Writer<T>) {
    let objects = Objects::default();
    let (ready, rx) = watch::channel(false);
    (
        Cache {
            objects: Arc::clone(&objects),
            ready: rx,
        },
        Writer {
            objects,
            ready,
            relist: None,
        },
    )
}

/// The key of a watched object: its namespace (empty for cluster-scoped kinds) and name.
pub fn key_of<K: Resource>(obj: &K) -> ObjKey {
    let meta = obj.meta();
    (
        meta.namespace.as_deref().unwrap_or_default().into(),
        meta.name.as_deref().unwrap_or_default().into(),
    )
}

impl<T> Cache<T> {
    /// Every object (in no particular order).
    pub fn state(&self) -> Vec<Arc<T>> {
        self.read().values().cloned().collect()
    }

    /// The keys of every object (in no particular order).
    pub fn keys(&self) -> Vec<ObjKey> {
        self.read().keys().cloned().collect()
    }

    /// The object `key`, if the cache has it.
    pub fn get(&self, key: &ObjKey) -> Option<Arc<T>> {
        self.read().get(key).cloned()
    }

    /// How many objects the cache has.
    pub fn len(&self) -> usize {
        self.read().len()
    }

    /// Whether the cache has no object.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until the first list has arrived (returns at once when it has; never when the
    /// writer is gone before that).
    pub async fn wait_until_ready(&self) {
        let mut ready = self.ready.clone();
        if ready.wait_for(|r| *r).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<ObjKey, Arc<T>>> {
        self.objects.read().unwrap_or_else(|e| e.into_inner())
    }
}

impl<T> Writer<T> {
    /// Takes in one watch event, keeping what [`Slim`] leaves of its object.
    pub fn apply<K>(&mut self, event: Event<K>)
    where
        K: Resource + Slim<Kept = T>,
    {
        match event {
            Event::Init => self.relist = Some(HashMap::new()),
            Event::InitApply(obj) => {
                let key = key_of(&obj);
                self.relist
                    .get_or_insert_with(HashMap::new)
                    .insert(key, Arc::new(obj.slim()));
            }
            Event::InitDone => {
                let mut listed = self.relist.take().unwrap_or_default();
                listed.shrink_to_fit();
                *self.write() = listed;
                self.ready.send_replace(true);
            }
            Event::Apply(obj) => {
                let key = key_of(&obj);
                self.write().insert(key, Arc::new(obj.slim()));
            }
            Event::Delete(obj) => {
                self.write().remove(&key_of(&obj));
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<ObjKey, Arc<T>>> {
        self.objects.write().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::objects::{Service, WatchedService};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    fn svc(name: &str, ip: &str) -> WatchedService {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "managedFields": [{}]},
            "spec": {"clusterIP": ip}
        }))
        .unwrap()
    }

    fn key(name: &str) -> ObjKey {
        ("default".into(), name.into())
    }

    fn ip(s: &Option<Arc<Service>>) -> Option<&str> {
        s.as_ref()?.spec.as_ref()?.cluster_ip.as_deref()
    }

    #[test]
    fn applies_and_deletes_show_at_once_and_keep_the_slimmed_object() {
        let (cache, mut w) = cache::<Service>();
        w.apply(Event::Apply(svc("a", "10.96.0.1")));
        w.apply(Event::Apply(svc("b", "10.96.0.2")));
        w.apply(Event::Apply(svc("a", "10.96.0.3")));
        assert_eq!(ip(&cache.get(&key("a"))), Some("10.96.0.3"));
        assert_eq!(cache.len(), 2);
        w.apply(Event::Delete(svc("b", "10.96.0.2")));
        assert_eq!(cache.get(&key("b")), None);
        assert_eq!(cache.state().len(), 1);
        assert_eq!(cache.keys(), vec![key("a")]);
    }

    #[test]
    fn a_relist_replaces_everything_at_its_end_and_drops_what_it_did_not_list() {
        let (cache, mut w) = cache::<Service>();
        w.apply(Event::<WatchedService>::Init);
        w.apply(Event::InitApply(svc("a", "10.96.0.1")));
        w.apply(Event::InitApply(svc("gone", "10.96.0.9")));
        w.apply(Event::<WatchedService>::InitDone);
        w.apply(Event::<WatchedService>::Init);
        w.apply(Event::InitApply(svc("a", "10.96.0.5")));
        assert_eq!(
            ip(&cache.get(&key("a"))),
            Some("10.96.0.1"),
            "a relist in progress is not seen"
        );
        assert!(cache.get(&key("gone")).is_some());
        w.apply(Event::<WatchedService>::InitDone);
        assert_eq!(ip(&cache.get(&key("a"))), Some("10.96.0.5"));
        assert_eq!(cache.get(&key("gone")), None, "deleted while away");
        assert_eq!(cache.len(), 1);
    }

    #[tokio::test]
    async fn readers_wait_for_the_first_list_only() {
        let (cache, mut w) = cache::<Service>();
        let reader = cache.clone();
        let waiting = tokio::spawn(async move { reader.wait_until_ready().await });
        w.apply(Event::<WatchedService>::Init);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        w.apply(Event::<WatchedService>::InitDone);
        waiting.await.unwrap();
        cache.wait_until_ready().await;
        assert!(cache.is_empty());
    }

    #[test]
    fn cluster_scoped_objects_are_keyed_by_name_alone() {
        let node = k8s_openapi::api::core::v1::Node {
            metadata: ObjectMeta {
                name: Some("n1".into()),
                ..ObjectMeta::default()
            },
            ..Default::default()
        };
        assert_eq!(key_of(&node), ("".into(), "n1".into()));
    }
}
