//! The ADD result object (CNI spec "Success" section) and the VERSION answer.
use super::config::SUPPORTED_VERSIONS;
use serde::{Deserialize, Serialize};

/// The result printed on a successful ADD (and expected back as `prevResult`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CniResult {
    /// CNI version of the result (the configuration's).
    pub cni_version: String,
    /// Interfaces created: the host veth, then the pod interface (with `sandbox`).
    pub interfaces: Vec<Interface>,
    /// Addresses assigned.
    pub ips: Vec<IpConfig>,
    /// Routes added in the pod.
    pub routes: Vec<Route>,
    /// DNS settings (none).
    pub dns: Dns,
}

/// One interface in a result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    /// Interface name.
    pub name: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// The netns path for interfaces inside the container; absent for host interfaces.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// One assigned address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `"4"`: only in pre-1.0 results.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Address in CIDR notation, e.g. `10.244.1.2/24`.
    pub address: String,
    /// Gateway, e.g. `10.244.1.1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces` of the interface carrying the address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// One route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// Destination, CIDR.
    pub dst: String,
    /// Next hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// DNS settings of a result; switchyard sets none.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dns {
    /// Name servers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nameservers: Vec<String>,
}

/// The VERSION answer: `{"cniVersion":"1.0.0","supportedVersions":[…]}`.
pub fn version_json() -> String {
    serde_json::json!({
        "cniVersion": "1.0.0",
        "supportedVersions": SUPPORTED_VERSIONS,
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_has_the_spec_shape() {
        let r = CniResult {
            cni_version: "1.0.0".into(),
            interfaces: vec![
                Interface {
                    name: "syv12345678".into(),
                    mac: "aa:bb:cc:dd:ee:01".into(),
                    sandbox: None,
                },
                Interface {
                    name: "eth0".into(),
                    mac: "aa:bb:cc:dd:ee:02".into(),
                    sandbox: Some("/run/netns/sy-pod-default-a".into()),
                },
            ],
            ips: vec![IpConfig {
                version: None,
                address: "10.244.1.2/24".into(),
                gateway: Some("10.244.1.1".into()),
                interface: Some(1),
            }],
            routes: vec![Route {
                dst: "0.0.0.0/0".into(),
                gw: Some("10.244.1.1".into()),
            }],
            dns: Dns::default(),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["interfaces"][0].get("sandbox"), None);
        assert_eq!(v["interfaces"][1]["sandbox"], "/run/netns/sy-pod-default-a");
        assert_eq!(v["ips"][0]["address"], "10.244.1.2/24");
        assert_eq!(v["ips"][0]["gateway"], "10.244.1.1");
        assert_eq!(v["ips"][0]["interface"], 1);
        assert_eq!(v["ips"][0].get("version"), None);
        assert_eq!(v["routes"][0]["dst"], "0.0.0.0/0");
        assert!(v["dns"].is_object());
        let back: CniResult = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn version_lists_1_0_0() {
        let v: serde_json::Value = serde_json::from_str(&version_json()).unwrap();
        assert!(v["supportedVersions"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s == "1.0.0"));
    }
}
