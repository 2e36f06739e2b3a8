//! In-process controllers, each reacting to store changes (and a slow timer as a safety net):
//! - [`bootstrap`]: the system namespaces and the `kubernetes` Service, Endpoints and slice;
//! - [`scheduler`]: binds pods without `spec.nodeName` to a Ready node;
//! - [`endpoints`]: keeps EndpointSlices and Endpoints equal to the ready pods behind each Service;
//! - [`loadbalancer`]: LoadBalancer Services get addresses from `--loadbalancer-pool`;
//! - [`crate::events::ttl`]: Events expire after `--event-ttl`;
//! - [`lifecycle`]: marks silent nodes NotReady and finishes pod deletions nobody finished.
pub mod bootstrap;
pub mod endpoints;
pub mod lifecycle;
pub mod loadbalancer;
pub mod scheduler;

use std::time::Duration;

use serde_json::{json, Value};

use crate::admission::Ranges;
use crate::clock;
use crate::store::{Key, Store, StoreError};

/// What the controllers are configured with.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Allocation ranges (the `kubernetes` Service's ClusterIP comes from the service CIDR).
    pub ranges: Ranges,
    /// How long a node may stay silent before it is NotReady.
    pub node_monitor_grace: Duration,
    /// The endpoint the `kubernetes` Service publishes.
    pub api_endpoint: bootstrap::ApiEndpoint,
    /// LoadBalancer address pools.
    pub loadbalancer_pool: loadbalancer::Pool,
    /// How long an Event lives after its last write.
    pub event_ttl: Duration,
}

/// Starts every controller.
pub fn spawn_all(store: &Store, settings: &Settings) -> Vec<tokio::task::JoinHandle<()>> {
    let node_monitor_grace = settings.node_monitor_grace;
    vec![
        tokio::spawn(bootstrap::run(
            store.clone(),
            settings.ranges,
            settings.api_endpoint,
        )),
        tokio::spawn(scheduler::run(store.clone())),
        tokio::spawn(endpoints::run(store.clone())),
        tokio::spawn(loadbalancer::run(
            store.clone(),
            settings.loadbalancer_pool.clone(),
            crate::events::Recorder::new(store, loadbalancer::CONTROLLER),
        )),
        tokio::spawn(crate::events::ttl::run(store.clone(), settings.event_ttl)),
        tokio::spawn(lifecycle::run(store.clone(), node_monitor_grace)),
    ]
}

/// Waits until a change to a key that `concerns` the caller arrives (or writes were missed), or
/// `resync` ticks: `true`; `false` once the store is gone.
pub async fn next_pass(
    rx: &mut crate::store::Subscription,
    resync: &mut tokio::time::Interval,
    concerns: impl Fn(&Key) -> bool,
) -> bool {
    use crate::store::RecvError;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if concerns(&e.key) => return true,
                Ok(_) => {}
                Err(RecvError::Lagged) => return true,
                Err(RecvError::Closed) => return false,
            },
            _ = resync.tick() => return true,
        }
    }
}

/// Creates or replaces a controller-owned object (`want` without server metadata), writing
/// only when its content differs from what is stored.
pub fn apply_owned(store: &Store, key: Key, mut want: Value) -> Result<bool, StoreError> {
    match store.get(&key) {
        Some(cur) => {
            let strip = |v: &Value| {
                let mut v = v.clone();
                if let Some(m) = v["metadata"].as_object_mut() {
                    for k in ["uid", "resourceVersion", "creationTimestamp", "generation"] {
                        m.remove(k);
                    }
                }
                v
            };
            if strip(&cur) == strip(&want) {
                return Ok(false);
            }
            for k in ["uid", "creationTimestamp"] {
                want["metadata"][k] = cur["metadata"][k].clone();
            }
            if key.resource == "endpointslices" {
                let g = cur["metadata"]["generation"].as_i64().unwrap_or(1);
                let bump = crate::admission::generation_changes(&cur, &want);
                want["metadata"]["generation"] = json!(if bump { g.saturating_add(1) } else { g });
            }
            store.update(key, want, None)?;
        }
        None => {
            want["metadata"]["uid"] = json!(clock::uid());
            want["metadata"]["creationTimestamp"] = json!(clock::now());
            if key.resource == "endpointslices" {
                want["metadata"]["generation"] = json!(1);
            }
            store.create(key, want)?;
        }
    }
    Ok(true)
}
