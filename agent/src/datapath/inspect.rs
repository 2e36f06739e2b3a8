//! Read-only views of a node's pinned maps, for `switchyard inspect` and the tests.
//!
//! Works without the agent running: it opens the pins directly.
use std::net::Ipv4Addr;

use aya::maps::{HashMap, Map, MapData, PerCpuArray};
use switchyard_abi::{names, stat, Backend, RevNat, ServiceKey, ServiceValue};

use super::DatapathError;
use crate::paths;

/// Command-line options of `switchyard inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// What to show.
    #[arg(value_enum)]
    pub what: What,
    /// Node whose pinned maps to read.
    #[arg(long)]
    pub node: String,
}

/// The views `inspect` offers.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum What {
    /// Datapath counters (summed over CPUs), as JSON.
    Stats,
    /// Programmed frontends and their backends.
    Services,
    /// Overlay routes: podCIDR → node address.
    Tunnels,
}

fn open(node: &str, name: &str) -> Result<Map, DatapathError> {
    let path = paths::pin_dir(node).join(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        DatapathError::Map(
            name.into(),
            format!(
                "{e} (is the agent for node {node} running or were its pins removed? looked at {})",
                path.display()
            ),
        )
    })?;
    Map::from_map_data(data).map_err(|e| DatapathError::Map(name.into(), e.to_string()))
}

/// Counters summed over CPUs, by name (`switchyard_abi::stat::NAMES`).
pub fn stats(node: &str) -> Result<Vec<(&'static str, u64)>, DatapathError> {
    let map: PerCpuArray<MapData, u64> = PerCpuArray::try_from(open(node, names::STATS)?)
        .map_err(|e| DatapathError::Map(names::STATS.into(), e.to_string()))?;
    let mut out = Vec::new();
    for (i, name) in stat::NAMES.iter().enumerate() {
        let values = map
            .get(&(i as u32), 0)
            .map_err(|e| DatapathError::Map(names::STATS.into(), e.to_string()))?;
        out.push((*name, values.iter().sum()));
    }
    Ok(out)
}

/// One programmed frontend.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrontendRow {
    /// `ip:port/proto`.
    pub frontend: String,
    /// Backends in slot order, `ip:port`.
    pub backends: Vec<String>,
}

/// Every programmed frontend with its backends.
pub fn services(node: &str) -> Result<Vec<FrontendRow>, DatapathError> {
    fn err(n: &'static str) -> impl Fn(aya::maps::MapError) -> DatapathError {
        move |e| DatapathError::Map(n.into(), e.to_string())
    }
    let svc: HashMap<MapData, ServiceKey, ServiceValue> =
        HashMap::try_from(open(node, names::SERVICES)?).map_err(err(names::SERVICES))?;
    let be: HashMap<MapData, u32, Backend> =
        HashMap::try_from(open(node, names::BACKENDS)?).map_err(err(names::BACKENDS))?;
    let _rn: HashMap<MapData, u16, RevNat> =
        HashMap::try_from(open(node, names::REV_NAT)?).map_err(err(names::REV_NAT))?;
    let mut entries: Vec<(ServiceKey, ServiceValue)> = svc
        .iter()
        .collect::<Result<_, _>>()
        .map_err(err(names::SERVICES))?;
    entries.sort_by_key(|(k, _)| (k.addr.to_be(), k.port, k.proto, k.slot));
    let mut rows: Vec<FrontendRow> = Vec::new();
    for (k, v) in &entries {
        let addr = format!(
            "{}:{}",
            Ipv4Addr::from(k.addr.to_ne_bytes()),
            u16::from_be(k.port)
        );
        let proto = if k.proto == switchyard_abi::proto::UDP {
            "udp"
        } else {
            "tcp"
        };
        if k.slot == 0 {
            rows.push(FrontendRow {
                frontend: format!("{addr}/{proto}"),
                backends: Vec::new(),
            });
        } else if let Some(row) = rows.last_mut() {
            let b = be.get(&v.backend_id, 0).ok();
            row.backends.push(b.map_or_else(
                || format!("#{} (missing)", v.backend_id),
                |b| {
                    format!(
                        "{}:{}",
                        Ipv4Addr::from(b.addr.to_ne_bytes()),
                        u16::from_be(b.port)
                    )
                },
            ));
        }
    }
    Ok(rows)
}

/// Overlay routes as `podCIDR -> node address`, sorted.
pub fn tunnels(node: &str) -> Result<Vec<String>, DatapathError> {
    use aya::maps::lpm_trie::LpmTrie;
    let name = names::TUNNEL;
    let map: LpmTrie<MapData, u32, u32> = LpmTrie::try_from(open(node, name)?)
        .map_err(|e| DatapathError::Map(name.into(), e.to_string()))?;
    let mut out = Vec::new();
    for item in map.iter() {
        let (k, v) = item.map_err(|e| DatapathError::Map(name.into(), e.to_string()))?;
        out.push(format!(
            "{}/{} -> {}",
            Ipv4Addr::from(k.data().to_ne_bytes()),
            k.prefix_len(),
            Ipv4Addr::from(v.to_ne_bytes())
        ));
    }
    out.sort();
    Ok(out)
}

/// Runs `switchyard inspect`.
pub fn run(opts: &Options) -> Result<(), DatapathError> {
    match opts.what {
        What::Stats => {
            let obj: serde_json::Map<String, serde_json::Value> = stats(&opts.node)?
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.into()))
                .collect();
            println!("{}", serde_json::Value::Object(obj));
        }
        What::Tunnels => {
            for route in tunnels(&opts.node)? {
                println!("{route}");
            }
        }
        What::Services => {
            for row in services(&opts.node)? {
                println!("{} -> [{}]", row.frontend, row.backends.join(", "));
            }
        }
    }
    Ok(())
}
