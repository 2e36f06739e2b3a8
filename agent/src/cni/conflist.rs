//! The network configuration list a container runtime reads from its configuration directory
//! (`/etc/cni/net.d/05-switchyard.conflist`, written by `switchyard install-cni`), and the
//! plugin configuration a runtime derives from it, as libcni does: the list's `cniVersion` and
//! `name` copied into the plugin's own object.
//!
//! Invariant: the plugin configuration derived from [`for_node`]'s list is exactly the one the
//! lab's kubelet hands the plugin (`cniVersion`, `name`, `type`, `node`, `bridge`, `ipam`; no
//! `mtu`: the plugin takes the bridge's, which the agent sets), so the plugin gets the same
//! input on a cluster node as in the lab.
use serde_json::{json, Value};

use super::Subnet;

/// The file `install-cni` writes. Runtimes use the first file of the directory in lexical
/// order, so `05-` comes before the usual `10-<network>.conflist` of another network plugin.
pub const FILE_NAME: &str = "05-switchyard.conflist";

/// The network's name (also the plugin's `type`: the executable's name in the plugin directory).
pub const NETWORK: &str = "switchyard";

/// The CNI version the list declares.
pub const CNI_VERSION: &str = "1.0.0";

/// A configuration list that cannot be written or used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfListError {
    /// The podCIDR leaves no address for the gateway.
    #[error(
        "podCIDR {0} has no host address for the pod gateway (cbr0): give nodes a /30 or larger"
    )]
    SubnetTooSmall(Subnet),
    /// The list has no usable first plugin.
    #[error("the configuration list has no plugins[0] object: {0}")]
    NoPlugin(String),
}

/// The list for node `node` whose pods get addresses from its podCIDR `subnet`; `cbr0` (the
/// subnet's first address) is their gateway.
pub fn for_node(node: &str, subnet: Subnet) -> Result<Value, ConfListError> {
    let gateway = subnet
        .first_host()
        .ok_or(ConfListError::SubnetTooSmall(subnet))?;
    Ok(json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK,
        "plugins": [{
            "type": NETWORK,
            "node": node,
            "bridge": crate::paths::BRIDGE,
            "ipam": {
                "type": "host-local",
                "subnet": subnet.to_string(),
                "gateway": gateway.to_string(),
            },
        }],
    }))
}

/// What a runtime hands the first plugin of `list` on stdin: `plugins[0]` with the list's
/// `cniVersion` and `name` (libcni's `ConfFromBytes` of each plugin of a list).
pub fn plugin_config(list: &Value) -> Result<Value, ConfListError> {
    let mut plugin = list
        .pointer("/plugins/0")
        .filter(|p| p.is_object())
        .cloned()
        .ok_or_else(|| ConfListError::NoPlugin(list.to_string()))?;
    for key in ["cniVersion", "name"] {
        if let Some(v) = list.get(key) {
            plugin[key] = v.clone();
        }
    }
    Ok(plugin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cni::NetConf;

    #[test]
    fn the_plugin_gets_its_node_podcidr_and_gateway_from_the_list() {
        let subnet: Subnet = "10.244.3.0/24".parse().unwrap();
        let list = for_node("n3", subnet).unwrap();
        let conf = plugin_config(&list).unwrap();
        let parsed = NetConf::parse(conf.to_string().as_bytes()).unwrap();
        assert_eq!(parsed.cni_version, CNI_VERSION);
        assert_eq!(parsed.name, NETWORK);
        assert_eq!(parsed.plugin_type, NETWORK);
        assert_eq!(parsed.node, "n3");
        assert_eq!(parsed.bridge, "cbr0");
        assert_eq!(parsed.mtu, None, "the bridge's MTU, set by the agent");
        assert_eq!(parsed.ipam.subnet, subnet);
        assert_eq!(parsed.gateway(), std::net::Ipv4Addr::new(10, 244, 3, 1));
    }

    #[test]
    fn a_subnet_without_hosts_and_a_list_without_plugins_are_refused() {
        let tiny: Subnet = "10.244.3.0/32".parse().unwrap();
        assert_eq!(
            for_node("n3", tiny).unwrap_err(),
            ConfListError::SubnetTooSmall(tiny)
        );
        assert!(matches!(
            plugin_config(&json!({"cniVersion": "1.0.0", "plugins": []})),
            Err(ConfListError::NoPlugin(_))
        ));
    }
}
