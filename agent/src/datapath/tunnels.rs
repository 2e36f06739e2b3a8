//! Keeping `TUNNEL` (podCIDR → the underlay address of the node that owns it) equal to the
//! routes the model derives from the Nodes.
//!
//! Invariant: new and changed routes are written before stale ones are removed, so a pod CIDR
//! that moves between nodes always has a route; what this sync remembers is what the map holds
//! (read back after a failed write).
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::maps::MapWriter;
use super::services::read_map;
use super::{DatapathError, SyncReport};

/// A pod CIDR: network address and prefix length.
pub type Cidr = (Ipv4Addr, u8);

/// The overlay route map and what it holds.
pub struct TunnelSync<T> {
    map: T,
    routes: BTreeMap<Cidr, Ipv4Addr>,
}

impl<T: MapWriter<Cidr, Ipv4Addr>> TunnelSync<T> {
    /// Takes over `map` with the routes a previous agent left.
    pub fn open(map: T) -> Result<Self, DatapathError> {
        let routes = read_map(&map)?;
        Ok(TunnelSync { map, routes })
    }

    /// The routes the map holds.
    pub fn routes(&self) -> &BTreeMap<Cidr, Ipv4Addr> {
        &self.routes
    }

    /// The map (tests inject failures).
    pub fn map_mut(&mut self) -> &mut T {
        &mut self.map
    }

    /// Makes the map hold exactly `routes`, writing only what differs.
    pub fn sync(&mut self, routes: &BTreeMap<Cidr, Ipv4Addr>) -> Result<SyncReport, DatapathError> {
        let result = self.write(routes);
        if result.is_err() {
            if let Ok(actual) = read_map(&self.map) {
                self.routes = actual;
            }
        }
        result
    }

    fn write(&mut self, routes: &BTreeMap<Cidr, Ipv4Addr>) -> Result<SyncReport, DatapathError> {
        let err = DatapathError::map(self.map.name());
        let mut report = SyncReport::default();
        for (cidr, node) in routes {
            if self.routes.get(cidr) != Some(node) {
                self.map.put(*cidr, *node).map_err(&err)?;
                self.routes.insert(*cidr, *node);
                report.written += 1;
            }
        }
        let stale: Vec<Cidr> = self
            .routes
            .keys()
            .filter(|k| !routes.contains_key(k))
            .copied()
            .collect();
        for cidr in stale {
            self.map.remove(&cidr).map_err(&err)?;
            self.routes.remove(&cidr);
            report.deleted += 1;
        }
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::maps::MemMap;

    fn routes(entries: &[(u8, u8)]) -> BTreeMap<Cidr, Ipv4Addr> {
        entries
            .iter()
            .map(|(n, node)| {
                (
                    (Ipv4Addr::new(10, 244, *n, 0), 24),
                    Ipv4Addr::new(198, 18, 0, *node),
                )
            })
            .collect()
    }

    #[test]
    fn only_differences_are_written_and_removed_routes_go() {
        let mut t = TunnelSync::open(MemMap::new("TUNNEL_V1", 16)).unwrap();
        let r = t.sync(&routes(&[(2, 12), (3, 13)])).unwrap();
        assert_eq!((r.written, r.deleted), (2, 0));
        let r = t.sync(&routes(&[(2, 12), (3, 14)])).unwrap();
        assert_eq!((r.written, r.deleted), (1, 0), "only the moved route");
        let r = t.sync(&routes(&[(3, 14)])).unwrap();
        assert_eq!((r.written, r.deleted), (0, 1));
        assert_eq!(t.map_mut().content(), &routes(&[(3, 14)]));
    }

    #[test]
    fn a_failed_write_leaves_the_sync_knowing_what_the_map_holds() {
        let mut t = TunnelSync::open(MemMap::new("TUNNEL_V1", 16)).unwrap();
        t.map_mut().fail_after(1);
        assert!(t.sync(&routes(&[(2, 12), (3, 13)])).is_err());
        assert_eq!(t.routes(), &routes(&[(2, 12)]));
        t.map_mut().heal();
        let r = t.sync(&routes(&[(2, 12), (3, 13)])).unwrap();
        assert_eq!(r.written, 1);
    }
}
