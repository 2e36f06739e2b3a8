//! [`Subnet`]: an IPv4 prefix such as a node's podCIDR `10.244.1.0/24`.
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network, `addr/prefix`, with the host bits of `addr` cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Subnet {
    network: Ipv4Addr,
    prefix: u8,
}

/// A string that is not an IPv4 CIDR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an IPv4 CIDR like 10.244.1.0/24")]
pub struct SubnetParseError(pub String);

impl Subnet {
    /// The network `addr/prefix` (host bits of `addr` are cleared); `None` if `prefix > 32`.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Option<Subnet> {
        if prefix > 32 {
            return None;
        }
        let network = Ipv4Addr::from(u32::from(addr) & mask(prefix));
        Some(Subnet { network, prefix })
    }

    /// Network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// Prefix length.
    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    /// Broadcast (last) address.
    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix))
    }

    /// Whether `ip` lies inside the network.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & mask(self.prefix) == u32::from(self.network)
    }

    /// The first usable address (network + 1), the conventional gateway: `10.244.1.1` for
    /// `10.244.1.0/24`. `None` for /31 and /32, which have no room for a gateway and hosts.
    pub fn first_host(&self) -> Option<Ipv4Addr> {
        (self.prefix <= 30).then(|| Ipv4Addr::from(u32::from(self.network) + 1))
    }

    /// Usable host addresses: everything except the network and broadcast addresses
    /// (empty for /31 and /32).
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let first = u32::from(self.network) + 1;
        let last = u32::from(self.broadcast());
        let range = if self.prefix <= 30 { first..last } else { 0..0 };
        range.map(Ipv4Addr::from)
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    }
}

impl FromStr for Subnet {
    type Err = SubnetParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || SubnetParseError(s.to_string());
        let (addr, prefix) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let prefix: u8 = prefix.parse().map_err(|_| err())?;
        Subnet::new(addr, prefix).ok_or_else(err)
    }
}

impl fmt::Display for Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

impl Serialize for Subnet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Subnet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_normalises() {
        let s: Subnet = "10.244.1.7/24".parse().unwrap();
        assert_eq!(s.to_string(), "10.244.1.0/24");
        assert_eq!(s.broadcast(), Ipv4Addr::new(10, 244, 1, 255));
        assert_eq!(s.first_host(), Some(Ipv4Addr::new(10, 244, 1, 1)));
        assert!(s.contains(Ipv4Addr::new(10, 244, 1, 200)));
        assert!(!s.contains(Ipv4Addr::new(10, 244, 2, 1)));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "10.244.1.0",
            "10.244.1.0/33",
            "x/24",
            "10.244.1.0/",
            "::1/64",
        ] {
            assert!(bad.parse::<Subnet>().is_err(), "{bad}");
        }
    }

    #[test]
    fn hosts_skip_network_and_broadcast() {
        let s: Subnet = "10.0.0.0/30".parse().unwrap();
        let hosts: Vec<_> = s.hosts().collect();
        assert_eq!(
            hosts,
            vec![Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)]
        );
        assert_eq!("10.0.0.0/31".parse::<Subnet>().unwrap().hosts().count(), 0);
        assert_eq!(
            "10.244.1.0/24".parse::<Subnet>().unwrap().hosts().count(),
            254
        );
    }
}
