//! A local copy of every object of one kind: a kube-rs reflector over a watch of the whole
//! cluster, for the kubelet's Service variables and the cluster DNS.
//!
//! Invariant: until its task is aborted, the store follows the API — the watch relists (with
//! backoff) after errors, and a relist drops what was deleted meanwhile.
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use std::fmt::Debug;

/// Keeps a store of every `K` of the cluster until the returned task is aborted; watch errors
/// are logged.
pub fn all<K>(client: kube::Client) -> (Store<K>, tokio::task::JoinHandle<()>)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client), watcher::Config::default()).default_backoff(),
    );
    let task = tokio::spawn(stream.for_each(|ev| async move {
        if let Err(e) = ev {
            tracing::warn!(error = %e, kind = %K::kind(&()), "watch failed; retrying");
        }
    }));
    (store, task)
}
