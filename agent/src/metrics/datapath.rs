//! The datapath's own counters, read from the pinned maps at each scrape: `STATS` (per-CPU,
//! summed) as `switchyard_datapath_packets_total{event}` and
//! `switchyard_datapath_drops_total{reason}`, and `SVC_STATS` as
//! `switchyard_service_{packets,bytes,connections}_total{service,frontend}`.
use std::sync::{Arc, RwLock};

use aya::maps::{Map, MapData, PerCpuArray};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::MetricType;
use switchyard_abi::{names, stat, SvcCounters};

use super::FrontendNames;
use crate::datapath::batch;
use crate::paths;

/// Reads node `node`'s counters at each scrape.
#[derive(Debug)]
pub struct DatapathCollector {
    node: String,
    frontends: Arc<RwLock<FrontendNames>>,
}

impl DatapathCollector {
    /// The collector of `node`, naming frontends from `frontends`.
    pub fn new(node: &str, frontends: Arc<RwLock<FrontendNames>>) -> Self {
        DatapathCollector {
            node: node.to_string(),
            frontends,
        }
    }

    fn open<T: TryFrom<Map, Error = aya::maps::MapError>>(&self, name: &str) -> Option<T> {
        let data = MapData::from_pin(paths::pin_dir(&self.node).join(name)).ok()?;
        T::try_from(Map::from_map_data(data).ok()?).ok()
    }
}

impl DatapathCollector {
    /// `SVC_STATS` up to the highest id `names` holds, per id and CPU: read in batches (a few
    /// system calls for 100,000 frontends, where one lookup per frontend took one each).
    fn frontend_counters(&self, names: &FrontendNames) -> Option<Vec<Vec<SvcCounters>>> {
        let end = names.keys().next_back().map_or(0, |id| id + 1);
        let map = self.open::<PerCpuArray<MapData, SvcCounters>>(names::SVC_STATS)?;
        let cpus = aya::util::nr_cpus().ok()?;
        match batch::lookup_percpu_prefix(batch::fd_of(&map), end, cpus) {
            Ok(rows) => Some(rows),
            Err(error) => {
                tracing::warn!(%error, "reading the per-frontend counters (SVC_STATS) failed");
                None
            }
        }
    }
}

/// Sums a per-CPU value.
fn sum(values: impl IntoIterator<Item = u64>) -> u64 {
    values.into_iter().fold(0u64, u64::saturating_add)
}

impl Collector for DatapathCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(map) = self.open::<PerCpuArray<MapData, u64>>(names::STATS) {
            let counters: Vec<(&str, u64)> = stat::NAMES
                .iter()
                .enumerate()
                .map(|(i, n)| {
                    (
                        *n,
                        map.get(&(i as u32), 0)
                            .map_or(0, |v| sum(v.iter().copied())),
                    )
                })
                .collect();
            for (family, help, drops) in [
                (
                    "datapath_drops",
                    "Packets the datapath dropped (or rejected), by reason",
                    true,
                ),
                ("datapath_packets", "Datapath decisions, by event", false),
            ] {
                let mut m = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
                for (name, v) in &counters {
                    let is_drop = name.starts_with("drop_");
                    if is_drop != drops {
                        continue;
                    }
                    let label = name.strip_prefix("drop_").unwrap_or(name);
                    let key = if drops { "reason" } else { "event" };
                    ConstCounter::new(*v).encode(m.encode_family(&[(key, label)])?)?;
                }
            }
        }
        let names = self
            .frontends
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(per_frontend) = self.frontend_counters(&names) {
            let rows: Vec<(&(String, String), SvcCounters)> = names
                .iter()
                .filter_map(|(id, labels)| {
                    let per_cpu = per_frontend.get(*id as usize)?;
                    let total = per_cpu
                        .iter()
                        .fold(SvcCounters::default(), |a, c| SvcCounters {
                            packets: a.packets.saturating_add(c.packets),
                            bytes: a.bytes.saturating_add(c.bytes),
                            connections: a.connections.saturating_add(c.connections),
                        });
                    Some((labels, total))
                })
                .collect();
            type Pick = fn(&SvcCounters) -> u64;
            let families: [(&str, &str, Pick); 3] = [
                (
                    "service_packets",
                    "Packets to a Service's frontend and replies from its backends, where they \
                     are translated (socket-balanced connections are not: see connections)",
                    |c| c.packets,
                ),
                ("service_bytes", "Bytes of those packets", |c| c.bytes),
                (
                    "service_connections",
                    "New connections to a Service's frontend (translated or socket-balanced)",
                    |c| c.connections,
                ),
            ];
            for (family, help, pick) in families {
                let mut m = encoder.encode_descriptor(family, help, None, MetricType::Counter)?;
                for ((service, frontend), c) in &rows {
                    let labels = [
                        ("service", service.as_str()),
                        ("frontend", frontend.as_str()),
                    ];
                    ConstCounter::new(pick(c)).encode(m.encode_family(&labels)?)?;
                }
            }
        }
        Ok(())
    }
}
