//! kube-proxy's two rule-based modes, rendered as kube-proxy renders them, for the same
//! Services switchyard programs: [`iptables`] (`KUBE-SERVICES` → `KUBE-SVC-*` with
//! `statistic --mode random` → `KUBE-SEP-*` DNAT, loaded with `iptables-restore`) and
//! [`nftables`] (a service verdict map → per-service chain with `numgen random mod N vmap`,
//! loaded with `nft -f`), plus [`apply`] which loads and times them in a node namespace.
pub mod apply;
pub mod iptables;
pub mod nftables;

use std::net::Ipv4Addr;

/// One port of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SvcPort {
    /// Port name ("" when unnamed).
    pub name: String,
    /// Service port.
    pub port: u16,
    /// Endpoint (target) port.
    pub target: u16,
    /// NodePort, if any.
    pub node_port: Option<u16>,
}

/// A TCP Service as kube-proxy sees it: ClusterIP, ports and ready endpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Svc {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// ClusterIP.
    pub cluster_ip: Ipv4Addr,
    /// Ports.
    pub ports: Vec<SvcPort>,
    /// Ready endpoint addresses.
    pub endpoints: Vec<Ipv4Addr>,
}

impl Svc {
    /// kube-proxy's "servicePortName": `ns/name:port`.
    pub fn port_name(&self, p: &SvcPort) -> String {
        format!("{}/{}:{}", self.namespace, self.name, p.name)
    }
}

/// `n` filler-like Services with made-up ClusterIPs from 10.96.128.0 on (for `render`).
pub fn synthetic(n: usize) -> Vec<Svc> {
    (0..n)
        .map(|i| Svc {
            namespace: "default".into(),
            name: crate::cluster::filler_name(i),
            cluster_ip: Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 96, 128, 0)) + i as u32),
            ports: vec![SvcPort {
                name: "http".into(),
                port: 80,
                target: 8080,
                node_port: None,
            }],
            endpoints: crate::cluster::filler_endpoints(i),
        })
        .collect()
}

/// 16 characters of base32 from a stable 80-bit hash of `s`, like kube-proxy's chain suffixes
/// (which take 16 base32 characters of a SHA-256).
pub fn chain_hash(s: &str) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let fnv = |seed: u64| {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0), fnv(0x9e37_79b9_7f4a_7c15));
    (0..16)
        .map(|i| {
            let word = if i < 12 {
                a >> (i * 5)
            } else {
                b >> ((i - 12) * 5)
            };
            ALPHABET[(word & 31) as usize] as char
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chain_hashes_are_stable_distinct_base32() {
        let a = chain_hash("default/echo:http/tcp");
        assert_eq!(a, chain_hash("default/echo:http/tcp"));
        assert_ne!(a, chain_hash("default/echo:https/tcp"));
        assert_eq!(a.len(), 16);
        assert!(a
            .bytes()
            .all(|c| c.is_ascii_uppercase() || (b'2'..=b'7').contains(&c)));
    }
}
