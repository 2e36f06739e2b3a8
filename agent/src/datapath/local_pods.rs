//! Local pods: the CNI plugin's endpoint records become `LOCAL_PODS` entries, attached veths and
//! (with socket load balancing for pods) `POD_NETNS` entries.
//!
//! Pure part: [`parse_mac`], [`to_local_pod`] and [`pod_netns_entry`]. [`LocalPods::sync`] reads
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

/// `LOCAL_PODS`, `POD_NETNS`, the attached pod veths, and which records they came from.
pub struct LocalPods<M, N> {
    node: String,
    map: M,
    /// `POD_NETNS`: the pods the socket programs balance for.
    netns: N,
    /// Whether pods get socket load balancing (`--socket-lb all`).
    socket_lb: bool,
    /// Container id → record, for the pods handled so far.
    pods: BTreeMap<String, EndpointRecord>,
    /// Whether leftovers of pods deleted while no agent ran were removed.
    pruned: bool,
}

impl<M: MapWriter<u32, LocalPod>, N: MapWriter<u64, u32>> LocalPods<M, N> {
    /// The local pods of `node`, kept in `map` (`LOCAL_PODS`) and, if `socket_lb`, in `netns`
    /// (`POD_NETNS`; emptied otherwise).
    pub fn new(node: &str, map: M, netns: N, socket_lb: bool) -> Self {
        LocalPods {
            node: node.to_string(),
            map,
            netns,
            socket_lb,
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
                self.forget_netns(&rec)?;
                attach::detach(&self.link_pin(&id))?;
                let _ = std::fs::remove_file(paths::attached_dir(&self.node).join(&id));
                report.deleted += 1;
                tracing::info!(container = %id, pod = %rec.pod_name, ip = %rec.ip, "pod left the node datapath");
            }
        }
        for (id, rec) in records {
            match self.pods.get(&id) {
                Some(old) if *old == rec => continue,
                Some(old) => {
                    let old = old.clone();
                    self.forget_netns(&old)?;
                }
                None => {}
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

    /// Removes the `POD_NETNS` entry of a record's namespace, if it has one.
    fn forget_netns(&mut self, rec: &EndpointRecord) -> Result<(), DatapathError> {
        if rec.netns_cookie == 0 {
            return Ok(());
        }
        self.netns
            .remove(&rec.netns_cookie)
            .map_err(DatapathError::map(self.netns.name()))
    }

    /// Puts one pod into `LOCAL_PODS`, attaches `from_pod` to its veth, hands its namespace to
    /// the socket programs and marks it attached.
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
        match pod_netns_entry(rec, self.socket_lb) {
            Some((cookie, ip)) => self
                .netns
                .put(cookie, ip)
                .map_err(DatapathError::map(self.netns.name()))?,
            None if self.socket_lb => tracing::warn!(
                "the pod's CNI record names no network namespace cookie (an older CNI plugin \
                 wired it): its connections to Services take the per-packet path until the pod \
                 is recreated"
            ),
            None => {}
        }
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
        let live: BTreeSet<u32> = records.values().map(|r| addr_be(r.ip)).collect();
        let mut removed = remove_where(&mut self.map, |ip, _| !live.contains(ip))?;
        // Without socket load balancing for pods nothing belongs in POD_NETNS (an agent that
        // ran with it may have left entries).
        let socket_lb = self.socket_lb;
        removed += remove_where(&mut self.netns, |_, ip| !socket_lb || !live.contains(ip))?;
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

/// Removes every entry of `map` for which `stale` holds; how many went.
fn remove_where<K: Copy, V>(
    map: &mut impl MapWriter<K, V>,
    stale: impl Fn(&K, &V) -> bool,
) -> Result<usize, DatapathError> {
    let err = DatapathError::map(map.name());
    let keys: Vec<K> = map
        .entries()
        .map_err(&err)?
        .into_iter()
        .filter(|(k, v)| stale(k, v))
        .map(|(k, _)| k)
        .collect();
    for k in &keys {
        map.remove(k).map_err(&err)?;
    }
    Ok(keys.len())
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

/// The `POD_NETNS` entry (netns cookie → pod IPv4, network order) of a record, if pods get
/// socket load balancing and the record names its namespace's cookie.
pub fn pod_netns_entry(rec: &EndpointRecord, socket_lb: bool) -> Option<(u64, u32)> {
    (socket_lb && rec.netns_cookie != 0).then(|| (rec.netns_cookie, addr_be(rec.ip)))
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

    fn record() -> EndpointRecord {
        EndpointRecord {
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
            netns_cookie: 4099,
        }
    }

    #[test]
    fn a_record_becomes_its_map_entry() {
        let rec = record();
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

    #[test]
    fn a_pods_namespace_is_balanced_only_with_socket_lb_for_pods_and_a_known_cookie() {
        let rec = record();
        let (cookie, ip) = pod_netns_entry(&rec, true).unwrap();
        assert_eq!((cookie, ip.to_ne_bytes()), (4099, [10, 244, 1, 5]));
        assert_eq!(pod_netns_entry(&rec, false), None);
        let old_plugin = EndpointRecord {
            netns_cookie: 0,
            ..rec
        };
        assert_eq!(pod_netns_entry(&old_plugin, true), None);
    }
}
