//! The Node object: registration, the Ready heartbeat, and waiting for the podCIDR.
use super::error::{is_status, Error};
use k8s_openapi::api::core::v1::{
    DaemonEndpoint, Node, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeStatus,
    NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams, PostParams};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

/// The version this runtime reports as `nodeInfo.kubeletVersion`.
pub const KUBELET_VERSION: &str = "v1.32.0-switchyard";

/// What the node says about itself.
#[derive(Clone, Debug)]
pub struct NodeIdentity {
    /// Node name (`n1`).
    pub name: String,
    /// Underlay address, reported as `InternalIP`.
    pub internal_ip: Ipv4Addr,
    /// Reported as `Hostname`.
    pub hostname: String,
    /// `nodeInfo` and capacity, read once from the machine.
    pub facts: MachineFacts,
    /// The port of the node runtime's API, reported as `daemonEndpoints.kubeletEndpoint`.
    pub kubelet_port: u16,
}

/// Machine facts reported in `nodeInfo` and `capacity`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MachineFacts {
    /// CPUs.
    pub cpus: usize,
    /// Memory in KiB.
    pub memory_kib: u64,
    /// `uname -r`.
    pub kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release`.
    pub os_image: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

impl MachineFacts {
    /// Reads the facts from `/proc` and `/etc`; anything unreadable is left empty.
    pub fn read() -> MachineFacts {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let memory_kib = read("/proc/meminfo")
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0);
        let os_image = read("/etc/os-release")
            .lines()
            .find_map(|l| l.strip_prefix("PRETTY_NAME="))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_else(|| "Linux".into());
        MachineFacts {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            memory_kib,
            kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image,
            machine_id: read("/etc/machine-id").trim().to_string(),
            boot_id: read("/proc/sys/kernel/random/boot_id").trim().to_string(),
        }
    }
}

/// Kubernetes' name for the CPU architecture.
fn k8s_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The `Ready=True` condition, with heartbeat `now` and transition time `since`.
pub fn ready_condition(now: Timestamp, since: Timestamp) -> NodeCondition {
    NodeCondition {
        type_: "Ready".into(),
        status: "True".into(),
        reason: Some("KubeletReady".into()),
        message: Some("switchyard kubelet is posting ready status".into()),
        last_heartbeat_time: Some(Time(now)),
        last_transition_time: Some(Time(since)),
    }
}

/// The full node status this runtime reports.
pub fn node_status(id: &NodeIdentity, now: Timestamp, ready_since: Timestamp) -> NodeStatus {
    let mut capacity = BTreeMap::new();
    capacity.insert("cpu".to_string(), Quantity(id.facts.cpus.to_string()));
    capacity.insert(
        "memory".to_string(),
        Quantity(format!("{}Ki", id.facts.memory_kib)),
    );
    capacity.insert("pods".to_string(), Quantity("110".into()));
    capacity.insert("ephemeral-storage".to_string(), Quantity("10Gi".into()));
    NodeStatus {
        addresses: Some(vec![
            NodeAddress {
                type_: "InternalIP".into(),
                address: id.internal_ip.to_string(),
            },
            NodeAddress {
                type_: "Hostname".into(),
                address: id.hostname.clone(),
            },
        ]),
        conditions: Some(vec![ready_condition(now, ready_since)]),
        daemon_endpoints: Some(NodeDaemonEndpoints {
            kubelet_endpoint: Some(DaemonEndpoint {
                port: i32::from(id.kubelet_port),
            }),
        }),
        node_info: Some(NodeSystemInfo {
            architecture: k8s_arch().into(),
            boot_id: id.facts.boot_id.clone(),
            container_runtime_version: format!("switchyard://{}", env!("CARGO_PKG_VERSION")),
            kernel_version: id.facts.kernel.clone(),
            kube_proxy_version: String::new(),
            kubelet_version: KUBELET_VERSION.into(),
            machine_id: id.facts.machine_id.clone(),
            operating_system: "linux".into(),
            os_image: id.facts.os_image.clone(),
            system_uuid: id.facts.machine_id.clone(),
            ..Default::default()
        }),
        allocatable: Some(capacity.clone()),
        capacity: Some(capacity),
        phase: None,
        ..Default::default()
    }
}

/// The Node object to create.
pub fn node_object(id: &NodeIdentity, now: Timestamp) -> Node {
    let mut labels = BTreeMap::new();
    labels.insert("kubernetes.io/hostname".to_string(), id.hostname.clone());
    labels.insert("kubernetes.io/os".to_string(), "linux".to_string());
    labels.insert("kubernetes.io/arch".to_string(), k8s_arch().to_string());
    Node {
        metadata: ObjectMeta {
            name: Some(id.name.clone()),
            labels: Some(labels),
            ..Default::default()
        },
        spec: None,
        status: Some(node_status(id, now, now)),
    }
}

/// Creates the Node (or keeps the existing one) and sets its status; returns when the API has
/// the Ready condition. The returned time is the Ready transition time to keep reporting.
pub async fn register(api: &Api<Node>, id: &NodeIdentity) -> Result<Timestamp, Error> {
    let now = Timestamp::now();
    match api
        .create(&PostParams::default(), &node_object(id, now))
        .await
    {
        Ok(_) => tracing::info!(node = %id.name, "registered node"),
        Err(e) if is_status(&e, 409) => {
            tracing::info!(node = %id.name, "node exists; updating it");
            let labels = node_object(id, now).metadata.labels;
            let patch = serde_json::json!({"metadata": {"labels": labels}});
            api.patch(&id.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .map_err(Error::api(format!("label node {}", id.name)))?;
        }
        Err(e) => return Err(Error::api(format!("register node {}", id.name))(e)),
    }
    patch_status(api, id, &node_status(id, now, now)).await?;
    Ok(now)
}

/// Writes `status` through the status subresource.
pub async fn patch_status(
    api: &Api<Node>,
    id: &NodeIdentity,
    status: &NodeStatus,
) -> Result<(), Error> {
    let value = serde_json::to_value(status).map_err(|e| Error::Api {
        what: format!("encode status of node {}", id.name),
        source: kube::Error::SerdeError(e),
    })?;
    super::api::write_status(api, &id.name, &value)
        .await
        .map_err(Error::api(format!("update status of node {}", id.name)))
}

/// Renews the Ready condition (`lastHeartbeatTime`) every `every` until the task is dropped. Re-registers the node if
/// it was deleted.
pub async fn heartbeat(
    api: Api<Node>,
    id: NodeIdentity,
    mut ready_since: Timestamp,
    every: Duration,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let span = tracing::debug_span!("node_heartbeat", node = %id.name);
        let _e = span.enter();
        // The full status, not just the condition: a server without merge patches gets the
        // status replaced wholesale.
        let status = node_status(&id, Timestamp::now(), ready_since);
        match patch_status(&api, &id, &status).await {
            Ok(()) => {}
            Err(Error::Api { source, .. }) if is_status(&source, 404) => {
                tracing::warn!("node object is gone; registering again");
                match register(&api, &id).await {
                    Ok(t) => ready_since = t,
                    Err(e) => tracing::warn!(error = %e, "re-registration failed"),
                }
            }
            Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
        }
    }
}

/// Waits until the control plane assigned `spec.podCIDR` to the node and returns it.
pub async fn wait_for_pod_cidr(api: &Api<Node>, name: &str) -> Result<String, Error> {
    let mut logged = false;
    loop {
        match api.get(name).await {
            Ok(node) => {
                let spec = node.spec.unwrap_or_default();
                let cidr = spec
                    .pod_cidr
                    .filter(|c| !c.is_empty())
                    .or_else(|| spec.pod_cidrs.and_then(|v| v.into_iter().next()));
                if let Some(cidr) = cidr {
                    tracing::info!(node = name, pod_cidr = %cidr, "node has a podCIDR");
                    return Ok(cidr);
                }
            }
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Error::api(format!("read node {name}"))(e)),
        }
        if !logged {
            tracing::info!(
                node = name,
                "waiting for the control plane to assign spec.podCIDR"
            );
            logged = true;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> NodeIdentity {
        NodeIdentity {
            name: "n1".into(),
            internal_ip: Ipv4Addr::new(198, 18, 0, 11),
            hostname: "n1".into(),
            facts: MachineFacts {
                cpus: 2,
                memory_kib: 4_000_000,
                ..Default::default()
            },
            kubelet_port: 10250,
        }
    }

    #[test]
    fn node_reports_addresses_ready_and_version() {
        let now = Timestamp::from_second(1_700_000_000).unwrap();
        let v = serde_json::to_value(node_object(&id(), now)).unwrap();
        assert_eq!(v["metadata"]["name"], "n1");
        let addrs = v["status"]["addresses"].as_array().unwrap();
        assert!(
            addrs.contains(&serde_json::json!({"type": "InternalIP", "address": "198.18.0.11"}))
        );
        assert!(addrs.contains(&serde_json::json!({"type": "Hostname", "address": "n1"})));
        let ready = &v["status"]["conditions"][0];
        assert_eq!(
            (ready["type"].as_str(), ready["status"].as_str()),
            (Some("Ready"), Some("True"))
        );
        assert_eq!(ready["reason"], "KubeletReady");
        assert_eq!(ready["lastHeartbeatTime"], "2023-11-14T22:13:20Z");
        assert_eq!(v["status"]["nodeInfo"]["kubeletVersion"], KUBELET_VERSION);
        assert_eq!(v["status"]["capacity"]["cpu"], "2");
        assert_eq!(v["status"]["capacity"]["memory"], "4000000Ki");
        assert_eq!(v["status"]["capacity"]["pods"], "110");
        assert_eq!(
            v["status"]["daemonEndpoints"]["kubeletEndpoint"]["Port"], 10250,
            "where the API server reaches the node runtime"
        );
    }

    #[test]
    fn heartbeat_keeps_the_transition_time() {
        let since = Timestamp::from_second(1_700_000_000).unwrap();
        let now = Timestamp::from_second(1_700_000_100).unwrap();
        let c = ready_condition(now, since);
        assert_eq!(c.last_transition_time, Some(Time(since)));
        assert_eq!(c.last_heartbeat_time, Some(Time(now)));
    }
}
