//! kube-rs reflectors for Services, EndpointSlices and Nodes, and one change notification.
//!
//! The agent never applies watch events one by one: every event only wakes the reconcile loop,
//! which recomputes the whole desired state from the stores. Deletes that happened while the
//! watch was disconnected show up as absence after the relist, so they are never missed.
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::runtime::reflector::{self, reflector, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

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
}

/// A consistent-enough copy of the stores for one reconcile.
pub struct Snapshot {
    /// Services.
    pub services: Vec<Service>,
    /// EndpointSlices.
    pub slices: Vec<EndpointSlice>,
    /// Nodes.
    pub nodes: Vec<Node>,
}

impl Stores {
    /// Waits until every store has completed its first list.
    pub async fn wait_ready(&self) {
        let _ = self.services.wait_until_ready().await;
        let _ = self.slices.wait_until_ready().await;
        let _ = self.nodes.wait_until_ready().await;
    }

    /// Copies the current content of the stores.
    pub fn snapshot(&self) -> Snapshot {
        fn copy<K: Clone + Resource<DynamicType = ()>>(s: &Store<K>) -> Vec<K> {
            s.state().iter().map(|o| (**o).clone()).collect()
        }
        Snapshot {
            services: copy(&self.services),
            slices: copy(&self.slices),
            nodes: copy(&self.nodes),
        }
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
    let (services, t1) = reflect::<Service>(Api::all(client.clone()), "services", changed.clone());
    let (slices, t2) =
        reflect::<EndpointSlice>(Api::all(client.clone()), "endpointslices", changed.clone());
    let (nodes, t3) = reflect::<Node>(Api::all(client.clone()), "nodes", changed.clone());
    (
        Stores {
            services,
            slices,
            nodes,
            changed,
        },
        vec![t1, t2, t3],
    )
}

fn reflect<K>(api: Api<K>, kind: &'static str, changed: Arc<Notify>) -> (Store<K>, JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store::<K>();
    let task = tokio::spawn(async move {
        let stream = reflector(writer, watcher(api, watcher::Config::default())).default_backoff();
        futures::pin_mut!(stream);
        while let Some(event) = stream.next().await {
            match event {
                Ok(_) => changed.notify_one(),
                Err(e) => tracing::warn!(%kind, error = %e, "watch failed; retrying with backoff"),
            }
        }
        tracing::error!(%kind, "watch stream ended");
    });
    (reader, task)
}
