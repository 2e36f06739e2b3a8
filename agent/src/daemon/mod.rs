//! `switchyard agent`: the node agent's main loop.
//!
//! 1. Watches Services, EndpointSlices and Nodes ([`crate::watch`]).
//! 2. Waits for its own Node to have a podCIDR and an InternalIP.
//! 3. Prepares the node and loads the datapath ([`node`]).
//! 4. Attaches the pods already on the node (before the first sync, so that a ready agent
//!    serves every local pod).
//! 5. Reconciles ([`reconcile`]): after every watch event (debounced by 10 ms) the Services the
//!    events name are recomputed by the pure [`crate::model`] and only the differences are written;
//!    a relist and, as a safety net, every 30 s, the whole desired state is recomputed;
//!    every 200 ms the CNI endpoint records are rescanned so new pods are attached at once.
//!
//! Every 10 s the conntrack and NAT tables are swept of flows that are over ([`sweeper`]).
//!
//! From the start, `/metrics`, `/healthz` and `/readyz` are served ([`crate::metrics`]); the
//! agent is ready once its first full sync is written and while every watch is followed.
//!
//! SIGTERM/SIGINT stop the loop without detaching anything: programs stay attached through their
//! pinned links and maps stay pinned, so established connections survive an agent restart.
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::datapath::{Datapath, NodeSettings};
use crate::healthcheck::HealthChecks;
use crate::memory::Trimmer;
use crate::metrics::{self, datapath::DatapathCollector};
use crate::model::{self, NodeInfo};
use crate::throttle::Throttle;
use crate::watch::{self, Stores};
use events::Events;
pub use options::{Options, Settings, SocketLb};
use reconcile::Reconciler;

pub mod events;
mod failing;
pub mod node;
mod notes;
pub mod options;
mod reconcile;
pub mod report;
pub mod resync;
pub mod sweeper;

/// Runs the agent until SIGTERM/SIGINT.
pub async fn run(opts: Options) -> anyhow::Result<()> {
    let checked = opts.settings()?;
    crate::cleanup::guard::check_kube_proxy(opts.allow_kube_proxy)?;
    let client = match &opts.kubeconfig {
        Some(path) => crate::kubeclient::client_from_kubeconfig(path).await?,
        None => crate::kubeclient::in_cluster().await?,
    };
    let mut registry = prometheus_client::registry::Registry::with_prefix("switchyard");
    let measured = metrics::Agent::new(&mut registry);
    registry.register_collector(Box::new(DatapathCollector::new(
        &opts.node,
        measured.frontends.clone(),
    )));
    let listener = metrics::http::bind(opts.metrics_address).await?;
    let server = tokio::spawn(metrics::http::serve(
        listener,
        Arc::new(registry),
        measured.clone(),
    ));
    measured.set_ready(Some("waiting for the API server's first lists"));
    let (stores, mut tasks) = watch::start(&client);
    tasks.push(tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "the metrics endpoint stopped");
        }
    }));
    let shutdown = crate::signals::shutdown();
    tokio::pin!(shutdown);

    let result = async {
        tokio::select! {
            _ = stores.wait_ready() => {}
            r = &mut shutdown => return r.map(|_| None).context("signal handling"),
        }
        measured.set_ready(Some(&format!(
            "waiting for node {} to have a podCIDR and an InternalIP",
            opts.node
        )));
        let info = tokio::select! {
            info = own_node(&stores, &opts.node) => info,
            r = &mut shutdown => return r.map(|_| None).context("signal handling"),
        };
        let settings = NodeSettings {
            node: opts.node.clone(),
            node_ip: info.internal_ip,
            pod_cidr: info.pod_cidr,
            cluster_cidr: checked.cluster_cidr,
            service_cidr: checked.service_cidr,
            nodeport_range: checked.nodeport_range,
            masquerade_ports: checked.masquerade_ports,
            masquerade_attempts: checked.masquerade_attempts,
            map_sizes: checked.map_sizes,
            pod_socket_lb: opts.socket_lb == SocketLb::All,
        };
        Ok(Some(node::prepare(&opts, &info, &settings).await?))
    }
    .await;

    let mut dp = match result {
        Ok(Some(dp)) => dp,
        Ok(None) => {
            tasks.iter().for_each(|t| t.abort());
            return Ok(());
        }
        Err(e) => {
            tasks.iter().for_each(|t| t.abort());
            return Err(e);
        }
    };
    tasks.push(tokio::spawn(sweeper::run(
        crate::paths::pin_dir(&opts.node),
        measured.clone(),
    )));
    let mut work = Work {
        reconciler: Reconciler::new(
            &opts.node,
            dp.settings().node_ip,
            checked.nodeport_addresses.clone(),
        ),
        events: Events::new(client.clone(), &opts.node),
        health: HealthChecks::new(Ipv4Addr::UNSPECIFIED),
        measured,
        names: Throttle::new(NAMES_EVERY),
        trimmer: Trimmer::default(),
        resync: resync::Resync::starting(Instant::now()),
    };
    // The pods already on the node are attached before the first sync: once that sync is
    // logged and `/readyz` answers, every local pod's packets go through `from_pod` (an agent
    // started on pinned maps without link pins would otherwise leave them to the kernel's
    // bridge until its first pods tick).
    if let Err(e) = dp.sync_local_pods() {
        tracing::warn!(error = %e, "attaching local pods failed; retrying");
    }
    work.reconcile(&mut dp, &stores);
    let mut pods = tokio::time::interval(Duration::from_millis(200));
    loop {
        work.measured.beat();
        tokio::select! {
            r = &mut shutdown => {
                r.context("signal handling")?;
                tracing::info!("stopping; programs and maps stay in place for the next agent");
                break;
            }
            _ = stores.changed.notified() => {
                // Let a burst of events land before recomputing.
                tokio::time::sleep(Duration::from_millis(10)).await;
                work.reconcile(&mut dp, &stores);
            }
            _ = pods.tick() => {
                if let Err(e) = dp.sync_local_pods() {
                    tracing::warn!(error = %e, "attaching local pods failed; retrying");
                }
                work.follow_up(&dp, Instant::now());
            }
            _ = tokio::time::sleep_until(work.resync.due().into()) => {
                stores.mark_full();
                work.reconcile(&mut dp, &stores);
            }
        }
    }
    tasks.iter().for_each(|t| t.abort());
    Ok(())
}

/// What follows each reconcile: Events about what the datapath does not serve or could not
/// program, the health check ports, and the measurements and readiness the metrics endpoint
/// shows.
struct Work {
    reconciler: Reconciler,
    events: Events,
    health: HealthChecks,
    measured: metrics::Agent,
    /// Rebuilds the metrics' frontend names after the maps changed.
    names: Throttle,
    /// Returns what a sync freed (the relist, a recompute, the old names) to the kernel.
    trimmer: Trimmer,
    /// When the next safety resync is due (moved on by every full recompute).
    resync: resync::Resync,
}

/// How often the metrics' frontend names (one entry per programmed frontend: O(Services) to
/// build) are rebuilt after the maps changed: at most once per [`NAMES_EVERY`], so a stream of
/// changes at 100,000 Services does not rebuild them with every change.
const NAMES_EVERY: Duration = Duration::from_secs(1);

impl Work {
    fn reconcile(&mut self, dp: &mut Datapath, stores: &Stores) {
        let found = self
            .reconciler
            .run(&mut dp.services, &mut dp.tunnels, stores);
        for (svc, note) in found.unsupported {
            self.events.unsupported(&svc, note);
        }
        for (svc, frontend, error) in found.sync_failed {
            self.events.sync_failed(&svc, &frontend, &error);
        }
        self.measured
            .services_failed
            .set(found.unprogrammed.len() as i64);
        if let Some(checks) = self.reconciler.health_checks() {
            self.health.sync(checks);
        }
        if let Some(took) = found.synced_after {
            self.measured.sync_seconds.observe(took.as_secs_f64());
        }
        for kind in &found.errors {
            self.measured.error(kind);
        }
        if found.wrote || found.full_took.is_some() {
            self.names.request();
            self.trimmer.after_sync();
        }
        if let Some(took) = found.full_took {
            self.resync.after_full(Instant::now(), took);
        }
        self.follow_up(dp, Instant::now());
        let why_not = match (stores.problem(), self.reconciler.desired()) {
            (Some(p), _) => Some(p),
            (None, None) => {
                Some("the service maps are not written yet (see the agent's log)".into())
            }
            (None, Some(_)) => None,
        };
        self.measured.set_ready(why_not.as_deref());
    }

    /// What follows a sync that changed the maps, when its interval passed (also polled on
    /// the pods tick, so it is never lost): the metrics' frontend names rebuilt, then freed
    /// memory returned to the kernel.
    fn follow_up(&mut self, dp: &Datapath, now: Instant) {
        if let Some(desired) = self.reconciler.desired() {
            if self.names.due(now) {
                let names = metrics::frontend_names(dp.services.programmed(), desired);
                *self
                    .measured
                    .frontends
                    .write()
                    .unwrap_or_else(|e| e.into_inner()) = names;
            }
        }
        self.trimmer.poll(now);
    }
}

/// Waits until the agent's own Node has a podCIDR and an InternalIP.
async fn own_node(stores: &Stores, name: &str) -> NodeInfo {
    let mut last = String::new();
    loop {
        let why = match stores.node(name).map(|n| model::node_info(&n)) {
            Some(Ok(info)) => return info,
            Some(Err(e)) => e.to_string(),
            None => format!("node {name} is not registered yet (the kubelet registers it)"),
        };
        if why != last {
            tracing::info!(reason = %why, "waiting for the node");
            last = why;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), stores.changed.notified()).await;
    }
}
