//! The per-packet ClusterIP path for the benchmark's client pod while the agents run with their
//! default socket load balancing for pods.
//!
//! Invariant: while a [`PerPacket`] guard lives, node 1's `POD_NETNS` has no entry for the client
//! pod, so the socket programs leave its sockets alone and `from_pod` translates its packets,
//! exactly as for every pod with `--socket-lb host-only` (the agent writes a pod's entry only
//! when the pod's CNI record appears or changes, so it does not put it back meanwhile).
//! Dropping the guard restores the entry. Toggling one entry instead of restarting the agents
//! lets the two paths be measured in interleaved repetitions.
use std::net::Ipv4Addr;

use aya::maps::{HashMap, MapData};
use switchyard::datapath::{tables, DatapathError};
use switchyard::paths;
use switchyard_abi::{addr_be, names};

/// Node 1's `POD_NETNS` without the client pod's entry; see the module documentation.
pub struct PerPacket {
    map: HashMap<MapData, u64, u32>,
    cookie: u64,
    ip: u32,
}

/// Why the per-packet path cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum PerPacketError {
    /// The pinned map is unusable.
    #[error(transparent)]
    Map(#[from] DatapathError),
    /// Reading the entries failed.
    #[error("reading POD_NETNS on {0}: {1}")]
    Read(String, #[source] aya::maps::MapError),
    /// The pod is not socket-balanced to begin with.
    #[error("pod {0} has no POD_NETNS entry on {1}: is its CNI record's netns_cookie set?")]
    NoEntry(Ipv4Addr, String),
    /// Removing the entry failed.
    #[error("removing the POD_NETNS entry of {0}: {1}")]
    Remove(Ipv4Addr, #[source] aya::maps::MapError),
}

impl PerPacket {
    /// Removes the `POD_NETNS` entry of the pod with address `pod` on `node`.
    pub fn enter(node: &str, pod: Ipv4Addr) -> Result<PerPacket, PerPacketError> {
        let mut map: HashMap<MapData, u64, u32> =
            tables::open_pinned(&paths::pin_dir(node), names::POD_NETNS)?;
        let ip = addr_be(pod);
        let entries: Vec<(u64, u32)> = map
            .iter()
            .collect::<Result<_, _>>()
            .map_err(|e| PerPacketError::Read(node.into(), e))?;
        let cookie = entries
            .into_iter()
            .find(|(_, v)| *v == ip)
            .map(|(k, _)| k)
            .ok_or_else(|| PerPacketError::NoEntry(pod, node.into()))?;
        map.remove(&cookie)
            .map_err(|e| PerPacketError::Remove(pod, e))?;
        Ok(PerPacket { map, cookie, ip })
    }
}

impl Drop for PerPacket {
    fn drop(&mut self) {
        if let Err(e) = self.map.insert(self.cookie, self.ip, 0) {
            eprintln!("warning: restoring the client pod's POD_NETNS entry: {e}");
        }
    }
}
