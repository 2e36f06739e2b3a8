//! Read-only views of a node's pinned maps, for `switchyard inspect` and the tests.
//!
//! Works without the agent running: it opens the pins directly.
use std::net::Ipv4Addr;

use aya::maps::{HashMap, Map, MapData, MapError, PerCpuArray};
use switchyard_abi::{addr_from_be, names, stat, Backend, LocalPod, ServiceKey, ServiceValue};

use super::flows::{self, Filter, FlowRow};
use super::maps::Named;
use super::services::read_map;
use super::{tables, DatapathError};
use crate::paths;

/// Command-line options of `switchyard inspect`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// What to show.
    #[arg(value_enum)]
    pub what: What,
    /// Node whose pinned maps to read.
    #[arg(long, env = "NODE_NAME")]
    pub node: String,
    /// Output: `text`, or `json` (conntrack and nat: an array of rows).
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Conntrack and nat: only flows with this address (either end or the translation).
    #[arg(long)]
    pub addr: Option<Ipv4Addr>,
    /// Conntrack and nat: only flows with this port (either end or the translation).
    #[arg(long)]
    pub port: Option<u16>,
    /// Conntrack and nat: only flows of this protocol (`tcp`, `udp`).
    #[arg(long)]
    pub proto: Option<String>,
    /// Conntrack: only flows to this frontend (`ip:port`).
    #[arg(long)]
    pub frontend: Option<String>,
}

/// Output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Lines for people.
    Text,
    /// JSON for programs.
    Json,
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
    /// Connection-tracking entries of load-balanced flows.
    Conntrack,
    /// Source NAT translations (masquerade, NodePort SNAT).
    Nat,
    /// Local pods: address, host veth, and whether the socket programs balance their TCP.
    Pods,
}

/// The map pinned as `name` for `node`, as the aya type `T`.
fn open<T>(node: &str, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    tables::open_pinned(&paths::pin_dir(node), name)
}

/// Node `node`'s conntrack entries that pass `filter`.
pub fn conntrack(node: &str, filter: &Filter) -> Result<Vec<FlowRow>, DatapathError> {
    let dir = paths::pin_dir(node);
    let (backends, fronts) = (tables::backends(&dir)?, tables::fronts(&dir)?);
    let entries = tables::conntrack(&dir)?;
    let now = tables::monotonic_now();
    Ok(flows::conntrack_rows(
        &entries, &backends, &fronts, now, filter,
    ))
}

/// Node `node`'s NAT entries that pass `filter`.
pub fn nat(node: &str, filter: &Filter) -> Result<Vec<FlowRow>, DatapathError> {
    let entries = tables::nat(&paths::pin_dir(node))?;
    Ok(flows::nat_rows(&entries, tables::monotonic_now(), filter))
}

fn print_rows<T: serde::Serialize>(rows: &[T], output: Output, line: impl Fn(&T) -> String) {
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(rows).unwrap_or_else(|_| "[]".into())
        ),
        Output::Text => rows.iter().for_each(|r| println!("{}", line(r))),
    }
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
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
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

/// One local pod in the datapath.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PodRow {
    /// The pod's address.
    pub ip: Ipv4Addr,
    /// Its host veth's ifindex.
    pub ifindex: u32,
    /// Whether its network namespace is in `POD_NETNS` (its TCP to Services is socket-balanced;
    /// otherwise translated per packet).
    pub socket_lb: bool,
}

/// Every local pod (`LOCAL_PODS`), by address, with its `POD_NETNS` state.
pub fn pods(node: &str) -> Result<Vec<PodRow>, DatapathError> {
    let local: HashMap<MapData, u32, LocalPod> = open(node, names::LOCAL_PODS)?;
    let netns: HashMap<MapData, u64, u32> = open(node, names::POD_NETNS)?;
    let local = read_map(&Named::new(names::LOCAL_PODS, local))?;
    let balanced: std::collections::BTreeSet<u32> = read_map(&Named::new(names::POD_NETNS, netns))?
        .into_values()
        .collect();
    let mut rows: Vec<PodRow> = local
        .iter()
        .map(|(ip, pod)| PodRow {
            ip: addr_from_be(*ip),
            ifindex: pod.ifindex,
            socket_lb: balanced.contains(ip),
        })
        .collect();
    rows.sort_by_key(|r| r.ip);
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
    let filter = Filter {
        addr: opts.addr,
        port: opts.port,
        proto: opts.proto.clone(),
        frontend: opts.frontend.clone(),
    };
    match opts.what {
        What::Conntrack => print_rows(&conntrack(&opts.node, &filter)?, opts.output, flows::line),
        What::Nat => print_rows(&nat(&opts.node, &filter)?, opts.output, flows::line),
        What::Stats => {
            let counters = stats(&opts.node)?;
            match opts.output {
                Output::Json => {
                    let obj: serde_json::Map<String, serde_json::Value> = counters
                        .into_iter()
                        .map(|(k, v)| (k.to_string(), v.into()))
                        .collect();
                    println!("{}", serde_json::Value::Object(obj));
                }
                Output::Text => counters.iter().for_each(|(k, v)| println!("{k:<24} {v}")),
            }
        }
        What::Tunnels => {
            let routes = tunnels(&opts.node)?;
            match opts.output {
                Output::Json => println!("{}", serde_json::json!(routes)),
                Output::Text => routes.iter().for_each(|r| println!("{r}")),
            }
        }
        What::Pods => print_rows(&pods(&opts.node)?, opts.output, |r| {
            let lb = if r.socket_lb { "socket" } else { "per-packet" };
            format!("{} ifindex {} services: {lb}", r.ip, r.ifindex)
        }),
        What::Services => print_rows(&services(&opts.node)?, opts.output, |r| {
            format!("{} -> [{}]", r.frontend, r.backends.join(", "))
        }),
    }
    Ok(())
}
