//! Local pods: the CNI plugin's endpoint records become `LOCAL_PODS` entries and attached veths.
//!
//! Pure part: [`parse_mac`] and [`to_local_pod`]. The scan reads `paths::endpoints_dir(node)`;
//! each record not yet handled gets its map entry, its program attached and its marker in
//! `paths::attached_dir(node)` (the kubelet waits for it before reporting the pod Ready).
use std::collections::BTreeMap;
use std::path::Path;

use switchyard_abi::LocalPod;

use crate::cni::EndpointRecord;

use super::DatapathError;

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// The `LOCAL_PODS` key and value for a record.
pub fn to_local_pod(rec: &EndpointRecord) -> Result<(u32, LocalPod), DatapathError> {
    let bad = |what: &str, v: &str| {
        DatapathError::BadRecord(
            rec.container_id.clone(),
            format!("{what} {v:?} is not a MAC address"),
        )
    };
    Ok((
        u32::from_ne_bytes(rec.ip.octets()),
        LocalPod {
            ifindex: rec.host_ifindex,
            pod_mac: parse_mac(&rec.pod_mac).ok_or_else(|| bad("pod_mac", &rec.pod_mac))?,
            host_mac: parse_mac(&rec.host_mac).ok_or_else(|| bad("host_mac", &rec.host_mac))?,
        },
    ))
}

/// Reads every record in `dir` (a missing directory means no pods). Unreadable or malformed
/// records are reported in the second list and skipped.
pub fn read_records(dir: &Path) -> (BTreeMap<String, EndpointRecord>, Vec<String>) {
    let mut records = BTreeMap::new();
    let mut problems = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (records, problems);
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<EndpointRecord>(&b).map_err(|e| e.to_string()))
        {
            Ok(rec) => {
                records.insert(rec.container_id.clone(), rec);
            }
            Err(e) => problems.push(format!("{}: {e}", path.display())),
        }
    }
    (records, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("0a:1b:2c:3d:4e:5f"),
            Some([0x0a, 0x1b, 0x2c, 0x3d, 0x4e, 0x5f])
        );
        assert_eq!(parse_mac("0a:1b:2c:3d:4e"), None);
        assert_eq!(parse_mac("0a:1b:2c:3d:4e:5f:00"), None);
        assert_eq!(parse_mac("zz:1b:2c:3d:4e:5f"), None);
    }

    #[test]
    fn a_record_becomes_its_map_entry() {
        let rec = EndpointRecord {
            container_id: "c1".into(),
            pod_namespace: "default".into(),
            pod_name: "echo-1".into(),
            netns: "/run/netns/sy-pod-default-echo-1".into(),
            ip: Ipv4Addr::new(10, 244, 1, 5),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 244, 1, 1),
            host_ifname: "syv00000001".into(),
            host_ifindex: 42,
            host_mac: "02:00:00:00:00:01".into(),
            pod_mac: "02:00:00:00:00:02".into(),
        };
        let (key, pod) = to_local_pod(&rec).unwrap();
        assert_eq!(key.to_ne_bytes(), [10, 244, 1, 5]);
        assert_eq!(pod.ifindex, 42);
        assert_eq!(pod.pod_mac[5], 2);
        let bad = EndpointRecord {
            pod_mac: "nope".into(),
            ..rec
        };
        assert!(to_local_pod(&bad).is_err());
    }
}
