//! What the agent tells Prometheus (`/metrics`, text exposition through the kept
//! `prometheus-client` crate), and the health its probes ask about (`/healthz`, `/readyz`).
//!
//! - counters the datapath keeps in BPF maps — per frontend packets, bytes and new connections
//!   (`SVC_STATS`), every decision and drop reason (`STATS`) — are read from the pinned maps at
//!   each scrape ([`datapath::DatapathCollector`]), so they are exact and cost nothing between
//!   scrapes;
//! - what the agent itself measures — the time from a watch event to the maps written, reconcile
//!   errors, Services that could not be programmed, table fill — lives in [`Agent`].
//!
//! Invariant: the endpoint only reads; scraping never changes what the datapath does.
pub mod datapath;
pub mod exposition;
pub mod http;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, RwLock};

use std::net::Ipv4Addr;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use switchyard_abi::addr_from_be;

use crate::datapath::plan::Programmed;
use crate::model::Desired;

/// Labels of a reconcile error.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// What failed: `services`, `tunnels`, `local_pods`.
    pub kind: String,
}

/// Labels of a table's fill.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    /// `conntrack` or `nat`.
    pub table: String,
}

/// Which frontend a rev-NAT id stands for: `(namespace/name, "ip:port")`.
pub type FrontendNames = BTreeMap<u32, (String, String)>;

/// The agent's own measurements, shared by the loop (which writes) and the HTTP endpoint.
#[derive(Clone)]
pub struct Agent {
    /// Watch event → maps written, seconds.
    pub sync_seconds: Histogram,
    /// Reconcile steps that failed, by kind.
    pub reconcile_errors: Family<ErrorLabels, Counter>,
    /// Frontends the last sync could not write (a full map, say); they are retried.
    pub services_failed: Gauge,
    /// Entries of a table, from its last sweep.
    pub table_entries: Family<TableLabels, Gauge>,
    /// Capacity of a table.
    pub table_capacity: Family<TableLabels, Gauge>,
    /// Entries the sweeper removed, by table.
    pub table_expired: Family<TableLabels, Counter>,
    /// The frontend names of the programmed rev-NAT ids.
    pub frontends: Arc<RwLock<FrontendNames>>,
    /// Readiness: why not ready, or empty when ready.
    pub not_ready: Arc<RwLock<String>>,
    /// Seconds since the Unix epoch of the last loop turn (liveness).
    pub heartbeat: Arc<AtomicI64>,
}

impl Agent {
    /// Fresh measurements, registered in `registry` (prefix `switchyard_`).
    pub fn new(registry: &mut Registry) -> Agent {
        let a = Agent {
            sync_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 18)),
            reconcile_errors: Family::default(),
            services_failed: Gauge::default(),
            table_entries: Family::default(),
            table_capacity: Family::default(),
            table_expired: Family::default(),
            frontends: Arc::default(),
            not_ready: Arc::new(RwLock::new("starting".into())),
            heartbeat: Arc::new(AtomicI64::new(now())),
        };
        registry.register(
            "sync_duration_seconds",
            "Time from a watch event to the datapath maps written",
            a.sync_seconds.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Reconcile steps that failed (retried), by kind",
            a.reconcile_errors.clone(),
        );
        registry.register(
            "services_unprogrammed",
            "Frontends the last sync could not write (retried; see the agent's Events)",
            a.services_failed.clone(),
        );
        registry.register(
            "table_entries",
            "Entries of a datapath table at its last sweep",
            a.table_entries.clone(),
        );
        registry.register(
            "table_capacity",
            "Capacity of a datapath table",
            a.table_capacity.clone(),
        );
        registry.register(
            "table_expired",
            "Entries the sweeper removed (closed or idle flows)",
            a.table_expired.clone(),
        );
        a
    }

    /// Marks the agent ready (the first full sync is written) or not, and why.
    pub fn set_ready(&self, why_not: Option<&str>) {
        *self.not_ready.write().unwrap_or_else(|e| e.into_inner()) =
            why_not.unwrap_or_default().to_string();
    }

    /// Records that the loop is alive.
    pub fn beat(&self) {
        self.heartbeat.store(now(), Ordering::Relaxed);
    }

    /// Counts a failed reconcile step.
    pub fn error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }
}

/// Names the programmed rev-NAT ids: each id's frontend address and the Service of the desired
/// frontend at that address.
pub fn frontend_names(programmed: &Programmed, desired: &Desired) -> FrontendNames {
    let service_at: BTreeMap<(Ipv4Addr, u16), &str> = desired
        .frontends
        .iter()
        .map(|(f, spec)| ((f.ip, f.port), spec.service.as_str()))
        .collect();
    programmed
        .rev_nat
        .iter()
        .map(|(id, r)| {
            let (ip, port) = (addr_from_be(r.addr), u16::from_be(r.port));
            let service = service_at.get(&(ip, port)).copied().unwrap_or_default();
            (*id, (service.to_string(), format!("{ip}:{port}")))
        })
        .collect()
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Frontend, FrontendSpec, Proto};
    use switchyard_abi::{addr_be, RevNat};

    #[test]
    fn a_rev_nat_id_is_named_by_the_service_whose_frontend_has_its_address() {
        let mut programmed = Programmed::default();
        let rev = |ip: Ipv4Addr, port: u16| RevNat {
            addr: addr_be(ip),
            port: port.to_be(),
            pad: 0,
        };
        programmed
            .rev_nat
            .insert(7, rev(Ipv4Addr::new(10, 96, 0, 10), 53));
        programmed
            .rev_nat
            .insert(9, rev(Ipv4Addr::new(10, 96, 0, 99), 80));
        let mut desired = Desired::default();
        let f = Frontend {
            ip: Ipv4Addr::new(10, 96, 0, 10),
            port: 53,
            proto: Proto::Udp,
        };
        let spec = FrontendSpec {
            service: "kube-system/kube-dns:dns".into(),
            ..FrontendSpec::default()
        };
        desired.frontends.insert(f, spec);
        let names = frontend_names(&programmed, &desired);
        assert_eq!(
            names[&7],
            (
                "kube-system/kube-dns:dns".to_string(),
                "10.96.0.10:53".to_string()
            )
        );
        assert_eq!(
            names[&9].1, "10.96.0.99:80",
            "a stale id still has its address"
        );
    }
}
