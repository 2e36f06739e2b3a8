//! CNI errors: the `{"code","msg","details"}` object a plugin prints on failure.
use serde::Serialize;

/// Well-known CNI error codes (CNI spec, "Error" section) and switchyard's own (100 and up).
pub mod code {
    /// Incompatible CNI version.
    pub const INCOMPATIBLE_VERSION: u32 = 1;
    /// Unsupported field in the network configuration.
    pub const UNSUPPORTED_FIELD: u32 = 2;
    /// Container unknown or does not exist.
    pub const UNKNOWN_CONTAINER: u32 = 3;
    /// Invalid necessary environment variables, like `CNI_COMMAND` or `CNI_CONTAINERID`.
    pub const INVALID_ENV: u32 = 4;
    /// I/O failure.
    pub const IO: u32 = 5;
    /// Failed to decode content (bad JSON).
    pub const DECODE: u32 = 6;
    /// Invalid network configuration.
    pub const INVALID_CONFIG: u32 = 7;
    /// Try again later: a transient condition (here: `cbr0` does not exist yet).
    pub const TRY_AGAIN_LATER: u32 = 11;
    /// switchyard: the subnet has no free address.
    pub const IPAM_EXHAUSTED: u32 = 100;
    /// switchyard: the kernel rejected a link, address or route change.
    pub const NETLINK: u32 = 101;
    /// switchyard: CHECK found the interface not as ADD left it.
    pub const CHECK_FAILED: u32 = 102;
    /// switchyard: ADD's host veth name is another pod's link (left untouched).
    pub const HOST_LINK_TAKEN: u32 = 103;
}

/// A CNI error result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("CNI error {code}: {msg}{}", if details.is_empty() { String::new() } else { format!(" ({details})") })]
pub struct CniError {
    /// CNI error code (see [`code`]).
    pub code: u32,
    /// Short message.
    pub msg: String,
    /// Longer explanation; may be empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub details: String,
}

impl CniError {
    /// An error with `code` and message.
    pub fn new(code: u32, msg: impl Into<String>) -> CniError {
        CniError {
            code,
            msg: msg.into(),
            details: String::new(),
        }
    }

    /// Adds details.
    pub fn with_details(mut self, details: impl Into<String>) -> CniError {
        self.details = details.into();
        self
    }

    /// The JSON object printed on stdout, tagged with `cni_version`.
    pub fn to_json(&self, cni_version: &str) -> String {
        #[derive(Serialize)]
        #[serde(rename_all = "camelCase")]
        struct Out<'a> {
            cni_version: &'a str,
            #[serde(flatten)]
            err: &'a CniError,
        }
        serde_json::to_string(&Out {
            cni_version,
            err: self,
        })
        .unwrap_or_else(|_| {
            format!(
                r#"{{"cniVersion":"{cni_version}","code":{},"msg":"error"}}"#,
                self.code
            )
        })
    }
}

impl From<crate::netlink::NetlinkError> for CniError {
    fn from(e: crate::netlink::NetlinkError) -> CniError {
        CniError::new(code::NETLINK, "netlink operation failed").with_details(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_json_has_the_spec_fields() {
        let e = CniError::new(code::TRY_AGAIN_LATER, "bridge cbr0 does not exist yet")
            .with_details("the agent creates it");
        let v: serde_json::Value = serde_json::from_str(&e.to_json("1.0.0")).unwrap();
        assert_eq!(v["cniVersion"], "1.0.0");
        assert_eq!(v["code"], 11);
        assert_eq!(v["msg"], "bridge cbr0 does not exist yet");
        assert_eq!(v["details"], "the agent creates it");
        let bare: serde_json::Value =
            serde_json::from_str(&CniError::new(7, "bad").to_json("1.0.0")).unwrap();
        assert!(bare.get("details").is_none());
    }
}
