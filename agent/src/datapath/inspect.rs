//! Read-only views of a node's pinned maps, for `switchyard inspect` and the tests.
//!
//! Works without the agent running: it opens the pins directly.
use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use switchyard_abi::{addr_from_be, names, stat, Backend, ServiceKey, ServiceValue};

use super::maps::Named;
use super::services::read_map;
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

/// The map pinned as `name` for `node`, as the aya type `T`.
fn open<T>(node: &str, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = paths::pin_dir(node).join(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenPin {
        path: path.clone(),
        node: node.to_string(),
        source: Box::new(source),
    })?;
    Map::from_map_data(data)
        .and_then(T::try_from)
        .map_err(DatapathError::map(name))
}

/// Counters summed over CPUs, by name (`switchyard_abi::stat::NAMES`).
pub fn stats(node: &str) -> Result<Vec<(&'static str, u64)>, DatapathError> {
    let map: PerCpuArray<MapData, u64> = open(node, names::STATS)?;
    let mut out = Vec::new();
    for (i, name) in stat::NAMES.iter().enumerate() {
        let values = map
            .get(&(i as u32), 0)
            .map_err(DatapathError::map(names::STATS))?;
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
    let svc: HashMap<MapData, ServiceKey, ServiceValue> = open(node, names::SERVICES)?;
    let be: HashMap<MapData, u32, Backend> = open(node, names::BACKENDS)?;
    let mut entries: Vec<(ServiceKey, ServiceValue)> = svc
        .iter()
        .collect::<Result<_, _>>()
        .map_err(DatapathError::map(names::SERVICES))?;
    entries.sort_by_key(|(k, _)| (k.addr.to_be(), k.port, k.proto, k.slot));
    let mut rows: Vec<FrontendRow> = Vec::new();
    for (k, v) in &entries {
        let addr = format!("{}:{}", addr_from_be(k.addr), u16::from_be(k.port));
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
                |b| format!("{}:{}", addr_from_be(b.addr), u16::from_be(b.port)),
            ));
        }
    }
    Ok(rows)
}

/// Overlay routes as `podCIDR -> node address`, sorted.
pub fn tunnels(node: &str) -> Result<Vec<String>, DatapathError> {
    use aya::maps::lpm_trie::LpmTrie;
    let map: LpmTrie<MapData, u32, u32> = open(node, names::TUNNEL)?;
    let routes = read_map(&Named::new(names::TUNNEL, map))?;
    Ok(routes
        .iter()
        .map(|((net, prefix), node)| format!("{net}/{prefix} -> {node}"))
        .collect())
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
