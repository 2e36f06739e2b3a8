//! The plugin's inputs: the network configuration on stdin and the `CNI_*` environment.
use super::error::{code, CniError};
use super::subnet::Subnet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// CNI versions whose configuration and result format this plugin speaks.
pub const SUPPORTED_VERSIONS: &[&str] = &["0.3.0", "0.3.1", "0.4.0", "1.0.0"];

/// The network configuration (stdin), as the kubelet writes it:
/// `{"cniVersion":"1.0.0","name":"switchyard","type":"switchyard","node":"n1","bridge":"cbr0",
/// "mtu":1460,"ipam":{"type":"host-local","subnet":"10.244.1.0/24","gateway":"10.244.1.1"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    /// CNI version of this configuration.
    pub cni_version: String,
    /// Network name.
    pub name: String,
    /// Plugin type (`switchyard`).
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// Node name: selects `/run/switchyard/<node>/` for IPAM and endpoint records.
    pub node: String,
    /// Bridge the host veths join.
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// MTU of both veth ends; default: the bridge's (the agent sets it from the uplink).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// Address management.
    pub ipam: IpamConf,
    /// Result of the previous ADD (given on CHECK and DEL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prev_result: Option<serde_json::Value>,
}

/// The `ipam` section: host-local allocation from one subnet.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpamConf {
    /// IPAM type; only `host-local` is supported.
    #[serde(rename = "type")]
    pub ipam_type: String,
    /// Subnet to allocate from (the node's podCIDR).
    pub subnet: Subnet,
    /// Gateway; defaults to the first address of the subnet.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
}

fn default_bridge() -> String {
    crate::paths::BRIDGE.to_string()
}

impl NetConf {
    /// Parses and validates the configuration.
    pub fn parse(bytes: &[u8]) -> Result<NetConf, CniError> {
        let conf: NetConf = serde_json::from_slice(bytes).map_err(|e| {
            CniError::new(code::DECODE, "cannot decode the network configuration")
                .with_details(e.to_string())
        })?;
        conf.validate()?;
        Ok(conf)
    }

    fn validate(&self) -> Result<(), CniError> {
        let invalid = |msg: String| CniError::new(code::INVALID_CONFIG, msg);
        if !SUPPORTED_VERSIONS.contains(&self.cni_version.as_str()) {
            return Err(CniError::new(
                code::INCOMPATIBLE_VERSION,
                format!("cniVersion {} is not supported", self.cni_version),
            )
            .with_details(format!("supported: {}", SUPPORTED_VERSIONS.join(", "))));
        }
        if self.ipam.ipam_type != "host-local" {
            return Err(CniError::new(
                code::UNSUPPORTED_FIELD,
                format!(
                    "ipam type {:?} is not supported; use host-local",
                    self.ipam.ipam_type
                ),
            ));
        }
        if !is_safe_name(&self.node) {
            return Err(invalid(format!(
                "node name {:?} must be letters, digits, '-', '_' or '.'",
                self.node
            )));
        }
        if self.bridge.is_empty() || self.bridge.len() > 15 {
            return Err(invalid(format!(
                "bridge name {:?} is not a valid interface name",
                self.bridge
            )));
        }
        if let Some(mtu) = self.mtu.filter(|m| !(68..=65535).contains(m)) {
            return Err(invalid(format!("mtu {mtu} is out of range 68..=65535")));
        }
        if self.ipam.subnet.hosts().next().is_none() {
            return Err(invalid(format!(
                "subnet {} has no host addresses",
                self.ipam.subnet
            )));
        }
        let gw = self.gateway();
        if !self.ipam.subnet.contains(gw)
            || gw == self.ipam.subnet.network()
            || gw == self.ipam.subnet.broadcast()
        {
            return Err(invalid(format!(
                "gateway {gw} is not a host address of subnet {}",
                self.ipam.subnet
            )));
        }
        Ok(())
    }

    /// The gateway: configured, or the first address of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        self.ipam
            .gateway
            .or_else(|| self.ipam.subnet.first_host())
            .unwrap_or(Ipv4Addr::UNSPECIFIED)
    }
}

/// Whether `s` can be used as a single file-name component.
pub fn is_safe_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The CNI operation (`CNI_COMMAND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Wire a container.
    Add,
    /// Unwire a container (idempotent).
    Del,
    /// Verify a container is still wired as ADD left it.
    Check,
    /// Report supported versions.
    Version,
}

impl Command {
    /// Parses `CNI_COMMAND`.
    pub fn parse(s: &str) -> Result<Command, CniError> {
        match s {
            "ADD" => Ok(Command::Add),
            "DEL" => Ok(Command::Del),
            "CHECK" => Ok(Command::Check),
            "VERSION" => Ok(Command::Version),
            other => Err(CniError::new(
                code::INVALID_ENV,
                format!("unknown CNI_COMMAND {other:?}; expected ADD, DEL, CHECK or VERSION"),
            )),
        }
    }
}

/// The `CNI_*` environment of one invocation (everything but `CNI_COMMAND`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// `CNI_CONTAINERID`.
    pub container_id: String,
    /// `CNI_NETNS`; may be absent on DEL.
    pub netns: Option<PathBuf>,
    /// `CNI_IFNAME` (`eth0`).
    pub ifname: String,
    /// `CNI_ARGS`, parsed.
    pub args: CniArgs,
}

impl Invocation {
    /// Reads the invocation from environment lookups (`get("CNI_CONTAINERID")` …).
    pub fn from_lookup(
        command: Command,
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Invocation, CniError> {
        let missing = |var: &str| CniError::new(code::INVALID_ENV, format!("{var} is not set"));
        let container_id = get("CNI_CONTAINERID")
            .filter(|s| !s.is_empty())
            .ok_or_else(|| missing("CNI_CONTAINERID"))?;
        if !is_safe_name(&container_id) || !container_id.as_bytes()[0].is_ascii_alphanumeric() {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_CONTAINERID {container_id:?} must start with a letter or digit and contain only letters, digits, '-', '_' and '.'"),
            ));
        }
        let netns = get("CNI_NETNS")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from);
        if netns.is_none() && matches!(command, Command::Add | Command::Check) {
            return Err(missing("CNI_NETNS"));
        }
        let ifname = get("CNI_IFNAME")
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| crate::paths::POD_IFNAME.to_string());
        if ifname.len() > 15 || ifname.contains('/') || ifname.contains(char::is_whitespace) {
            return Err(CniError::new(
                code::INVALID_ENV,
                format!("CNI_IFNAME {ifname:?} is not a valid interface name"),
            ));
        }
        let args = CniArgs::parse(&get("CNI_ARGS").unwrap_or_default())?;
        Ok(Invocation {
            container_id,
            netns,
            ifname,
            args,
        })
    }
}

/// `CNI_ARGS`: `K8S_POD_NAMESPACE=default;K8S_POD_NAME=echo-1;IgnoreUnknown=1`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CniArgs(pub BTreeMap<String, String>);

impl CniArgs {
    /// Parses `KEY=VALUE` pairs separated by `;`.
    pub fn parse(s: &str) -> Result<CniArgs, CniError> {
        let mut map = BTreeMap::new();
        for pair in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').ok_or_else(|| {
                CniError::new(
                    code::INVALID_ENV,
                    format!("CNI_ARGS entry {pair:?} is not KEY=VALUE"),
                )
            })?;
            map.insert(k.to_string(), v.to_string());
        }
        Ok(CniArgs(map))
    }

    /// `K8S_POD_NAMESPACE`, or empty.
    pub fn pod_namespace(&self) -> String {
        self.0.get("K8S_POD_NAMESPACE").cloned().unwrap_or_default()
    }

    /// `K8S_POD_NAME`, or empty.
    pub fn pod_name(&self) -> String {
        self.0.get("K8S_POD_NAME").cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONF: &str = r#"{"cniVersion":"1.0.0","name":"switchyard","type":"switchyard",
        "node":"n1","bridge":"cbr0","mtu":1460,
        "ipam":{"type":"host-local","subnet":"10.244.1.0/24","gateway":"10.244.1.1"}}"#;

    #[test]
    fn parses_the_documented_config() {
        let c = NetConf::parse(CONF.as_bytes()).unwrap();
        assert_eq!(c.node, "n1");
        assert_eq!(c.bridge, "cbr0");
        assert_eq!(c.mtu, Some(1460));
        assert_eq!(c.ipam.subnet.to_string(), "10.244.1.0/24");
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 1, 1));
    }

    #[test]
    fn defaults_the_bridge_and_gateway_and_leaves_the_mtu_to_the_bridge() {
        let c = NetConf::parse(
            br#"{"cniVersion":"1.0.0","name":"n","type":"switchyard","node":"n2",
                "ipam":{"type":"host-local","subnet":"10.244.2.0/24"}}"#,
        )
        .unwrap();
        assert_eq!((c.bridge.as_str(), c.mtu), ("cbr0", None));
        assert_eq!(c.gateway(), Ipv4Addr::new(10, 244, 2, 1));
    }

    #[test]
    fn rejects_bad_configs_with_the_right_codes() {
        let with = |from: &str, to: &str| {
            NetConf::parse(CONF.replace(from, to).as_bytes())
                .unwrap_err()
                .code
        };
        assert_eq!(with("1.0.0", "9.9.9"), code::INCOMPATIBLE_VERSION);
        assert_eq!(with("host-local", "dhcp"), code::UNSUPPORTED_FIELD);
        assert_eq!(
            with(r#""node":"n1""#, r#""node":"../etc""#),
            code::INVALID_CONFIG
        );
        assert_eq!(
            with(r#""gateway":"10.244.1.1""#, r#""gateway":"10.9.9.9""#),
            code::INVALID_CONFIG
        );
        assert_eq!(with("10.244.1.0/24", "10.244.1.0/32"), code::INVALID_CONFIG);
        assert_eq!(NetConf::parse(b"{not json").unwrap_err().code, code::DECODE);
    }

    #[test]
    fn parses_cni_args() {
        let a = CniArgs::parse("IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=echo-1")
            .unwrap();
        assert_eq!(a.pod_namespace(), "default");
        assert_eq!(a.pod_name(), "echo-1");
        assert_eq!(CniArgs::parse("").unwrap(), CniArgs::default());
        assert_eq!(
            CniArgs::parse("novalue").unwrap_err().code,
            code::INVALID_ENV
        );
    }

    #[test]
    fn reads_the_environment() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        let inv = Invocation::from_lookup(
            Command::Add,
            env(&[
                ("CNI_CONTAINERID", "default-echo-1234abcd"),
                ("CNI_NETNS", "/run/netns/sy-pod-default-echo"),
                ("CNI_IFNAME", "eth0"),
                ("CNI_ARGS", "K8S_POD_NAMESPACE=default;K8S_POD_NAME=echo"),
            ]),
        )
        .unwrap();
        assert_eq!(
            inv.netns.as_deref(),
            Some(std::path::Path::new("/run/netns/sy-pod-default-echo"))
        );
        assert_eq!(inv.args.pod_name(), "echo");
        // DEL may come without a netns; ADD may not.
        assert!(Invocation::from_lookup(Command::Del, env(&[("CNI_CONTAINERID", "abc")])).is_ok());
        let err =
            Invocation::from_lookup(Command::Add, env(&[("CNI_CONTAINERID", "abc")])).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        let err =
            Invocation::from_lookup(Command::Del, env(&[("CNI_CONTAINERID", "../x")])).unwrap_err();
        assert_eq!(err.code, code::INVALID_ENV);
        assert_eq!(Command::parse("GC").unwrap_err().code, code::INVALID_ENV);
    }
}
