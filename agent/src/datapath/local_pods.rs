//! Local pods: the CNI plugin's endpoint records become `LOCAL_PODS` entries and attached veths.
//!
//! Pure part: [`parse_mac`] and [`to_local_pod`]. [`LocalPods::sync`] reads
//! `paths::endpoints_dir(node)`; each record not yet handled gets its map entry, its program
//! attached and its marker in `paths::attached_dir(node)` (the kubelet waits for it before
//! reporting the pod Ready). One broken pod never keeps the others out: it is retried on the
//! next scan.
use std::collections::{BTreeMap, BTreeSet};

use aya::programs::TcAttachType;
use aya::Ebpf;
use switchyard_abi::{addr_be, programs, LocalPod};

use crate::cni::{read_records, EndpointRecord};
use crate::paths;

use super::maps::MapWriter;
use super::{attach, loader, DatapathError, SyncReport};

/// `LOCAL_PODS`, the attached pod veths, and which records they came from.
pub struct LocalPods<M> {
    node: String,
    map: M,
    /// Container id → record, for the pods handled so far.
    pods: BTreeMap<String, EndpointRecord>,
    /// Whether leftovers of pods deleted while no agent ran were removed.
    pruned: bool,
}

impl<M: MapWriter<u32, LocalPod>> LocalPods<M> {
    /// The local pods of `node`, kept in `map`.
    pub fn new(node: &str, map: M) -> Self {
        LocalPods {
            node: node.to_string(),
            map,
            pods: BTreeMap::new(),
            pruned: false,
        }
    }

    /// Rescans the CNI endpoint records: fills `LOCAL_PODS`, attaches `from_pod` to new veths,
    /// forgets removed ones.
    pub fn sync(&mut self, ebpf: &mut Ebpf) -> Result<SyncReport, DatapathError> {
        let (records, problems) = read_records(&paths::endpoints_dir(&self.node));
        for p in problems {
            tracing::warn!(problem = %p, "skipping unreadable CNI endpoint record");
        }
        let mut report = SyncReport::default();
        if !self.pruned {
            // Pods deleted while no agent ran left map entries and link pins behind.
            report.deleted += self.prune_stale(&records)?;
            self.pruned = true;
        }
        let gone: Vec<String> = self
            .pods
            .keys()
            .filter(|id| !records.contains_key(*id))
            .cloned()
            .collect();
        for id in gone {
            if let Some(rec) = self.pods.remove(&id) {
                // Only remove the entry if no newer pod took the IP meanwhile.
                if records.values().all(|r| r.ip != rec.ip) {
                    self.map
                        .remove(&addr_be(rec.ip))
                        .map_err(DatapathError::map(self.map.name()))?;
                }
                attach::detach(&self.link_pin(&id))?;
                let _ = std::fs::remove_file(paths::attached_dir(&self.node).join(&id));
                report.deleted += 1;
                tracing::info!(container = %id, pod = %rec.pod_name, ip = %rec.ip, "pod left the node datapath");
            }
        }
        for (id, rec) in records {
            if self.pods.get(&id) == Some(&rec) {
                continue;
            }
            let span = tracing::info_span!("local_pod", container = %id, pod = %rec.pod_name, ip = %rec.ip);
            let _enter = span.enter();
            match self.add(ebpf, &id, &rec) {
                Ok(()) => {
                    tracing::info!(ifname = %rec.host_ifname, "pod attached to the datapath");
                    self.pods.insert(id, rec);
                    report.written += 1;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "attaching the pod failed; retrying");
                    report.failed += 1;
                }
            }
        }
        Ok(report)
    }

    fn link_pin(&self, container_id: &str) -> std::path::PathBuf {
        loader::pod_link_pin(&paths::pin_dir(&self.node), container_id)
    }

    /// Puts one pod into `LOCAL_PODS`, attaches `from_pod` to its veth and marks it attached.
    fn add(
        &mut self,
        ebpf: &mut Ebpf,
        id: &str,
        rec: &EndpointRecord,
    ) -> Result<(), DatapathError> {
        let (key, value) = to_local_pod(rec)?;
        self.map
            .put(key, value)
            .map_err(DatapathError::map(self.map.name()))?;
        attach::attach(
            ebpf,
            programs::FROM_POD,
            &rec.host_ifname,
            TcAttachType::Ingress,
            &self.link_pin(id),
        )?;
        let attached = paths::attached_dir(&self.node);
        std::fs::create_dir_all(&attached).map_err(DatapathError::io(&attached))?;
        let marker = attached.join(id);
        std::fs::write(&marker, b"").map_err(DatapathError::io(&marker))
    }

    /// Removes `LOCAL_PODS` entries and pod link pins that no current record accounts for.
    fn prune_stale(
        &mut self,
        records: &BTreeMap<String, EndpointRecord>,
    ) -> Result<usize, DatapathError> {
        let err = DatapathError::map(self.map.name());
        let live: BTreeSet<u32> = records.values().map(|r| addr_be(r.ip)).collect();
        let stale: Vec<u32> = self
            .map
            .entries()
            .map_err(&err)?
            .into_iter()
            .map(|(ip, _)| ip)
            .filter(|ip| !live.contains(ip))
            .collect();
        for ip in &stale {
            self.map.remove(ip).map_err(&err)?;
        }
        let mut removed = stale.len();
        if let Ok(entries) = std::fs::read_dir(self.link_pin("")) {
            for entry in entries.flatten() {
                let id = entry.file_name().to_string_lossy().into_owned();
                if !records.contains_key(&id) {
                    attach::detach(&entry.path())?;
                    removed += 1;
                }
            }
        }
        if removed > 0 {
            tracing::info!(
                removed,
                "pruned datapath state of pods deleted while no agent ran"
            );
        }
        Ok(removed)
    }
}

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
    let bad = |what: &str, v: &str| DatapathError::BadRecord {
        container: rec.container_id.clone(),
        reason: format!("{what} {v:?} is not a MAC address"),
    };
    Ok((
        addr_be(rec.ip),
        LocalPod {
            ifindex: rec.host_ifindex,
            pod_mac: parse_mac(&rec.pod_mac).ok_or_else(|| bad("pod_mac", &rec.pod_mac))?,
            host_mac: parse_mac(&rec.host_mac).ok_or_else(|| bad("host_mac", &rec.host_mac))?,
        },
    ))
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
