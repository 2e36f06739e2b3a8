//! One reconcile: what the watches report changed becomes map writes.
//!
//! A relist, a changed node (its address or the set of nodes, which decide backends' node
//! addresses and which endpoints are alive), a failed write or the periodic safety net recompute
//! everything from the stores ([`DesiredCache::rebuild`] and a full map sync). Anything else —
//! the common case of one Service or EndpointSlice changing — recomputes only the Services it
//! names and writes only the frontends whose spec changed.
use std::net::Ipv4Addr;
use std::time::Instant;

use crate::datapath::{Datapath, SyncReport};
use crate::model::{self, DesiredCache, NodeView};
use crate::watch::Stores;

/// The reconcile loop's memory between runs.
pub struct Reconciler {
    node: String,
    node_ip: Ipv4Addr,
    cache: Option<DesiredCache>,
}

impl Reconciler {
    /// For node `node` whose address is `node_ip`.
    pub fn new(node: &str, node_ip: Ipv4Addr) -> Self {
        Reconciler {
            node: node.to_string(),
            node_ip,
            cache: None,
        }
    }

    /// Takes the changes the watches recorded and writes what differs.
    pub fn run(&mut self, dp: &mut Datapath, stores: &Stores) {
        let span = tracing::info_span!("reconcile", node = %self.node);
        let _enter = span.enter();
        // The agent's work for a change, from reading the stores to the last map write; logged
        // as `took_us` (the benchmark's programming-time figure).
        let started = Instant::now();
        let dirty = stores.take_dirty();
        let nodes = stores.nodes.state();
        let view = NodeView::new(&nodes, &self.node, self.node_ip);
        let stale = self.cache.as_ref().is_none_or(|c| c.view() != &view);
        let (mode, result) = match self.cache.as_mut() {
            Some(cache) if !dirty.full && !stale => {
                let changed = cache.update(
                    dirty.services,
                    dirty.slices,
                    |k| stores.service(k),
                    |k| stores.slice(k),
                );
                if changed.is_empty() {
                    ("incremental", Ok(SyncReport::default()))
                } else {
                    ("incremental", dp.sync_changes(cache.desired(), &changed))
                }
            }
            _ => {
                let cache =
                    DesiredCache::rebuild(&stores.services.state(), &stores.slices.state(), view);
                let result = dp.sync_services(cache.desired());
                self.cache = Some(cache);
                ("full", result)
            }
        };
        let frontends = self
            .cache
            .as_ref()
            .map_or(0, |c| c.desired().frontends.len());
        match result {
            Ok(r) if r.written + r.deleted > 0 => tracing::info!(
                mode,
                frontends,
                written = r.written,
                deleted = r.deleted,
                took_us = started.elapsed().as_micros() as u64,
                "services synced"
            ),
            Ok(_) => {}
            Err(e) => {
                // Recompute everything next time: the maps may hold part of this change.
                self.cache = None;
                stores.mark_full();
                tracing::warn!(error = %e, "programming services failed; retrying on the next change")
            }
        }
        if dirty.full || dirty.nodes || stale {
            match dp.sync_tunnels(&model::tunnels(&nodes, &self.node)) {
                Ok(r) if r.written + r.deleted > 0 => tracing::info!(
                    written = r.written,
                    deleted = r.deleted,
                    "overlay routes synced"
                ),
                Ok(_) => {}
                Err(e) => {
                    stores.mark_full();
                    tracing::warn!(error = %e, "programming overlay routes failed; retrying on the next change")
                }
            }
        }
    }
}
