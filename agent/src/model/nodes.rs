//! Nodes: the agent's own node settings, and the overlay routes (podCIDR → node address) to
//! every other node.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Node;

use super::ModelError;

/// What the agent needs to know about a node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's podCIDR (network address, prefix length).
    pub pod_cidr: (Ipv4Addr, u8),
    /// The node's InternalIP.
    pub internal_ip: Ipv4Addr,
}

impl NodeInfo {
    /// The first address of the podCIDR: `cbr0`'s address and the pods' gateway.
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.pod_cidr.0).wrapping_add(1))
    }
}

/// Parses `a.b.c.d/n` into its network address and prefix.
pub fn parse_cidr(s: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = s.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| *p <= 32)?;
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    Some((Ipv4Addr::from(u32::from(addr) & mask), prefix))
}

fn name(node: &Node) -> String {
    node.metadata.name.clone().unwrap_or_default()
}

/// The node's IPv4 InternalIP.
pub fn internal_ip(node: &Node) -> Option<Ipv4Addr> {
    node.status
        .as_ref()?
        .addresses
        .as_ref()?
        .iter()
        .filter(|a| a.type_ == "InternalIP")
        .find_map(|a| a.address.parse().ok())
}

/// podCIDR and InternalIP of `node`, or why they are not usable yet.
pub fn node_info(node: &Node) -> Result<NodeInfo, ModelError> {
    let cidr = node
        .spec
        .as_ref()
        .and_then(|s| s.pod_cidr.clone())
        .ok_or_else(|| ModelError::NoPodCidr(name(node)))?;
    let pod_cidr = parse_cidr(&cidr).ok_or_else(|| ModelError::BadPodCidr {
        node: name(node),
        value: cidr,
    })?;
    let internal_ip = internal_ip(node).ok_or_else(|| ModelError::NoInternalIp(name(node)))?;
    Ok(NodeInfo {
        pod_cidr,
        internal_ip,
    })
}

/// Overlay routes to every other node with a podCIDR and an InternalIP.
pub fn tunnels<N: std::borrow::Borrow<Node>>(
    nodes: &[N],
    self_name: &str,
) -> BTreeMap<(Ipv4Addr, u8), Ipv4Addr> {
    nodes
        .iter()
        .map(std::borrow::Borrow::borrow)
        .filter(|n| n.metadata.name.as_deref() != Some(self_name))
        .filter_map(|n| node_info(n).ok())
        .map(|i| (i.pod_cidr, i.internal_ip))
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeSpec, NodeStatus};

    pub(crate) fn node(name: &str, cidr: Option<&str>, ip: Option<&str>) -> Node {
        Node {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(NodeSpec {
                pod_cidr: cidr.map(Into::into),
                ..Default::default()
            }),
            status: Some(NodeStatus {
                addresses: ip.map(|ip| {
                    vec![
                        NodeAddress {
                            address: name.into(),
                            type_: "Hostname".into(),
                        },
                        NodeAddress {
                            address: ip.into(),
                            type_: "InternalIP".into(),
                        },
                    ]
                }),
                ..Default::default()
            }),
        }
    }

    #[test]
    fn a_registered_node_gives_its_cidr_gateway_and_address() {
        let info = node_info(&node("n1", Some("10.244.1.0/24"), Some("198.18.0.11"))).unwrap();
        assert_eq!(info.pod_cidr, (Ipv4Addr::new(10, 244, 1, 0), 24));
        assert_eq!(info.gateway(), Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(info.internal_ip, Ipv4Addr::new(198, 18, 0, 11));
    }

    #[test]
    fn missing_or_bad_fields_say_what_is_missing() {
        assert_eq!(
            node_info(&node("n1", None, Some("198.18.0.11"))),
            Err(ModelError::NoPodCidr("n1".into()))
        );
        assert!(matches!(
            node_info(&node("n1", Some("10.244.1.0"), Some("198.18.0.11"))),
            Err(ModelError::BadPodCidr { .. })
        ));
        assert_eq!(
            node_info(&node("n1", Some("10.244.1.0/24"), None)),
            Err(ModelError::NoInternalIp("n1".into()))
        );
    }

    #[test]
    fn cidrs_are_normalised_to_their_network() {
        assert_eq!(
            parse_cidr("10.244.1.7/24"),
            Some((Ipv4Addr::new(10, 244, 1, 0), 24))
        );
        assert_eq!(parse_cidr("10.244.1.0/33"), None);
        assert_eq!(parse_cidr("0.0.0.0/0"), Some((Ipv4Addr::UNSPECIFIED, 0)));
    }

    #[test]
    fn tunnels_lead_to_every_other_ready_node() {
        let nodes = [
            node("n1", Some("10.244.1.0/24"), Some("198.18.0.11")),
            node("n2", Some("10.244.2.0/24"), Some("198.18.0.12")),
            node("n3", None, Some("198.18.0.13")),
        ];
        let t = tunnels(&nodes, "n1");
        assert_eq!(t.len(), 1, "not to itself, not to a node without podCIDR");
        assert_eq!(
            t[&(Ipv4Addr::new(10, 244, 2, 0), 24)],
            Ipv4Addr::new(198, 18, 0, 12)
        );
    }
}
