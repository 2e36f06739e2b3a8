//! What happens to an object between the request and the store: server-set metadata, defaults,
//! validation, and the allocations kube-apiserver makes synchronously (ClusterIPs, NodePorts,
//! podCIDRs), so the object a client gets back already carries them.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::store::Store;
use crate::{clock, validate};

/// Address ranges the server allocates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// Service CIDR (ClusterIPs).
    pub service_cidr: (Ipv4Addr, u8),
    /// Cluster pod CIDR (node podCIDRs are carved from it).
    pub cluster_cidr: (Ipv4Addr, u8),
    /// Prefix length of each node's podCIDR.
    pub node_prefix: u8,
    /// NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

impl Default for Ranges {
    fn default() -> Self {
        Ranges {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            node_prefix: 24,
            node_ports: (30000, 32767),
        }
    }
}

fn in_cidr(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn invalid(res: &Resource, obj: &Value, causes: &[Cause]) -> ApiError {
    ApiError::invalid(res.kind, res.group, &name_of(obj), causes)
}

/// Prepares a new object: metadata, defaults, validation, allocations.
pub fn on_create(
    res: &Resource,
    ns: &str,
    obj: &mut Value,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    obj["apiVersion"] = json!(res.api_version());
    obj["kind"] = json!(res.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    let meta = &mut obj["metadata"];
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        if let Some(prefix) = meta.get("generateName").and_then(Value::as_str) {
            let suffix: String = (0..5)
                .map(|_| (b'a' + rand::random::<u8>() % 26) as char)
                .collect();
            meta["name"] = json!(format!("{prefix}{suffix}"));
        }
    }
    if res.namespaced {
        meta["namespace"] = json!(ns);
    } else if let Some(m) = meta.as_object_mut() {
        m.remove("namespace");
    }
    meta["uid"] = json!(clock::uid());
    meta["creationTimestamp"] = json!(clock::now());
    if let Some(m) = meta.as_object_mut() {
        m.remove("generation");
    }
    if tracks_generation(res) {
        meta["generation"] = json!(1);
    }
    if let Some(m) = meta.as_object_mut() {
        for k in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "managedFields",
        ] {
            m.remove(k);
        }
    }
    admit(res, obj, None, store, ranges)
}

/// Prepares a replacement of `old`: keeps what the server owns, bumps `generation` on spec
/// changes, then defaults, validation and allocations. `status_only` keeps everything but status.
pub fn on_update(
    res: &Resource,
    old: &Value,
    obj: &mut Value,
    status_only: bool,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    }
    if status_only {
        let status = obj.get("status").cloned();
        *obj = old.clone();
        match status {
            Some(s) => obj["status"] = s,
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
        return Ok(());
    }
    obj["apiVersion"] = json!(res.api_version());
    obj["kind"] = json!(res.kind);
    if !obj["metadata"].is_object() {
        obj["metadata"] = json!({});
    }
    for k in [
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "namespace",
        "name",
    ] {
        match old["metadata"].get(k) {
            Some(v) => obj["metadata"][k] = v.clone(),
            None => {
                if let Some(m) = obj["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
        }
    }
    // The main resource never changes status for kinds that have a status subresource.
    if res.status {
        match old.get("status") {
            Some(s) => obj["status"] = s.clone(),
            None => {
                if let Some(m) = obj.as_object_mut() {
                    m.remove("status");
                }
            }
        }
    }
    match old.pointer("/metadata/generation").and_then(Value::as_i64) {
        Some(g) if tracks_generation(res) => {
            obj["metadata"]["generation"] = json!(if generation_changes(old, obj) {
                g + 1
            } else {
                g
            })
        }
        _ => {
            if let Some(m) = obj["metadata"].as_object_mut() {
                m.remove("generation");
            }
        }
    }
    admit(res, obj, Some(old), store, ranges)
}

/// Whether kube-apiserver 1.32 keeps `metadata.generation` for the kind: of the served kinds only
/// EndpointSlices (pods got one in 1.33; services, nodes, namespaces and Endpoints never had).
pub fn tracks_generation(res: &Resource) -> bool {
    res.kind == "EndpointSlice"
}

/// An EndpointSlice's generation moves when anything but its metadata changes, or its labels.
pub fn generation_changes(old: &Value, new: &Value) -> bool {
    let body = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v.as_object_mut() {
            m.remove("metadata");
        }
        v
    };
    body(old) != body(new) || old.pointer("/metadata/labels") != new.pointer("/metadata/labels")
}

fn admit(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate::name(res.kind, &name_of(obj), &mut causes);
    validate::labels(obj, &mut causes);
    if !causes.is_empty() {
        return Err(invalid(res, obj, &causes));
    }
    match res.kind {
        "Service" => service(res, obj, old, store, ranges),
        "Node" => node(obj, store, ranges),
        "Pod" => pod(res, obj, old),
        "Namespace" => {
            obj["status"] = json!({"phase": "Active"});
            // Finalizers change only through the finalize subresource (not served).
            obj["spec"] = match old {
                None => json!({"finalizers": ["kubernetes"]}),
                Some(o) if o["spec"].is_object() => o["spec"].clone(),
                Some(_) => json!({"finalizers": ["kubernetes"]}),
            };
            // As kube-apiserver since 1.21: every namespace carries its name as a label.
            let name = name_of(obj);
            if !obj["metadata"]["labels"].is_object() {
                obj["metadata"]["labels"] = json!({});
            }
            obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = json!(name);
            Ok(())
        }
        _ => Ok(()),
    }
}

fn pod(res: &Resource, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return Err(invalid(res, obj, &[Cause::required("spec.containers")]));
    }
    for (k, v) in [
        ("restartPolicy", json!("Always")),
        ("terminationGracePeriodSeconds", json!(30)),
        ("dnsPolicy", json!("ClusterFirst")),
        ("schedulerName", json!("default-scheduler")),
        ("enableServiceLinks", json!(true)),
        ("securityContext", json!({})),
        ("priority", json!(0)),
        ("preemptionPolicy", json!("PreemptLowerPriority")),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    match spec.get_mut("containers").and_then(Value::as_array_mut) {
        Some(cs) if !cs.is_empty() => {
            let mut names = BTreeSet::new();
            for (i, c) in cs.iter_mut().enumerate() {
                container_defaults(c);
                let name = c
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if name.is_empty() {
                    causes.push(Cause::required(format!("spec.containers[{i}].name")));
                } else if !names.insert(name.clone()) {
                    causes.push(Cause::duplicate(
                        format!("spec.containers[{i}].name"),
                        format!("{name:?}"),
                    ));
                }
                for (j, p) in c
                    .get_mut("ports")
                    .and_then(Value::as_array_mut)
                    .into_iter()
                    .flatten()
                    .enumerate()
                {
                    if p.get("protocol").is_none() {
                        p["protocol"] = json!("TCP");
                    }
                    match p.get("containerPort").and_then(Value::as_i64) {
                        Some(n) if (1..=65535).contains(&n) => {}
                        Some(n) => causes.push(Cause::invalid(
                            format!("spec.containers[{i}].ports[{j}].containerPort"),
                            n,
                            validate::PORT_RANGE_MSG,
                        )),
                        None => causes.push(Cause::required(format!(
                            "spec.containers[{i}].ports[{j}].containerPort"
                        ))),
                    }
                }
            }
        }
        _ => causes.push(Cause::required("spec.containers")),
    }
    if let Some(old) = old {
        // As kube-apiserver's ValidatePodUpdate: only images, activeDeadlineSeconds,
        // tolerations, terminationGracePeriodSeconds and scheduling gates may change (the
        // scheduler binds through the store, not through an update).
        if immutable_part(&old["spec"]) != immutable_part(&obj["spec"]) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: "spec".into(),
                message: POD_UPDATE_FORBIDDEN.into(),
            });
        }
    } else {
        // As kube-apiserver: a new pod's status is the server's, whatever the client sent.
        obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])});
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(res, obj, &causes))
    }
}

/// SetDefaults_Container: pull policy from the image tag, termination message, resources.
fn container_defaults(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c["image"].as_str().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = last.split_once(':').map(|(_, t)| t);
    let policy = if !image.contains('@') && tag.is_none_or(|t| t == "latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    for (k, v) in [
        ("imagePullPolicy", json!(policy)),
        ("terminationMessagePath", json!("/dev/termination-log")),
        ("terminationMessagePolicy", json!("File")),
        ("resources", json!({})),
    ] {
        if c.get(k).is_none() {
            c[k] = v;
        }
    }
}

/// The pod's QoS class as Kubernetes computes it: Guaranteed when every container limits CPU
/// and memory with requests equal to the limits, BestEffort when none requests or limits
/// anything, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let set = |c: &Value, kind: &str| {
        c["resources"][kind]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory"))
    };
    if containers
        .iter()
        .all(|c| !set(c, "requests") && !set(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// kube-apiserver's message for a pod update that changes more than it may.
pub const POD_UPDATE_FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// A pod spec without the fields an update may change.
fn immutable_part(spec: &Value) -> Value {
    let mut s = spec.clone();
    for list in ["containers", "initContainers"] {
        for c in s[list].as_array_mut().into_iter().flatten() {
            if let Some(m) = c.as_object_mut() {
                m.remove("image");
            }
        }
    }
    if let Some(m) = s.as_object_mut() {
        for k in [
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ] {
            m.remove(k);
        }
    }
    s
}

/// Every ClusterIP and NodePort in use, except by `skip` (`namespace/name`).
fn used(store: &Store, skip: &str) -> (BTreeSet<Ipv4Addr>, BTreeSet<u16>) {
    let (mut ips, mut ports) = (BTreeSet::new(), BTreeSet::new());
    for svc in store.list("services", None).0 {
        let id = format!(
            "{}/{}",
            svc["metadata"]["namespace"].as_str().unwrap_or(""),
            svc["metadata"]["name"].as_str().unwrap_or("")
        );
        if id == skip {
            continue;
        }
        if let Some(ip) = svc
            .pointer("/spec/clusterIP")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok())
        {
            ips.insert(ip);
        }
        for p in svc
            .pointer("/spec/ports")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(np) = p
                .get("nodePort")
                .and_then(Value::as_u64)
                .and_then(|n| u16::try_from(n).ok())
            {
                ports.insert(np);
            }
        }
    }
    (ips, ports)
}

fn service(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    let id = format!(
        "{}/{}",
        obj["metadata"]["namespace"].as_str().unwrap_or(""),
        name_of(obj)
    );
    let (used_ips, used_ports) = used(store, &id);
    let mut causes = Vec::new();
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !["ClusterIP", "NodePort", "LoadBalancer", "ExternalName"].contains(&ty.as_str()) {
        causes.push(Cause::not_supported(
            "spec.type",
            Some(&ty),
            &["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"],
        ));
    }
    spec["type"] = json!(ty);
    for (k, v) in [
        ("sessionAffinity", json!("None")),
        ("internalTrafficPolicy", json!("Cluster")),
        ("ipFamilies", json!(["IPv4"])),
        ("ipFamilyPolicy", json!("SingleStack")),
    ] {
        if spec.get(k).is_none() {
            spec[k] = v;
        }
    }
    // Defaults as SetDefaults_Service: None clears the config, ClientIP gets 10800 s.
    match spec["sessionAffinity"].as_str() {
        Some("None") => {
            if let Some(m) = spec.as_object_mut() {
                m.remove("sessionAffinityConfig");
            }
        }
        Some("ClientIP") => {
            match spec
                .pointer("/sessionAffinityConfig/clientIP/timeoutSeconds")
                .and_then(Value::as_i64)
            {
                None => {
                    spec["sessionAffinityConfig"] = json!({"clientIP": {"timeoutSeconds": 10800}})
                }
                Some(t) if !(1..=86400).contains(&t) => causes.push(Cause::invalid(
                    "spec.sessionAffinityConfig.clientIP.timeoutSeconds",
                    t,
                    "must be greater than 0 and less than 86400",
                )),
                Some(_) => {}
            }
        }
        other => causes.push(Cause::not_supported(
            "spec.sessionAffinity",
            other,
            &["ClientIP", "None"],
        )),
    }
    let node_ports = ty == "NodePort" || ty == "LoadBalancer";
    if ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    let old_spec = old.map(|o| &o["spec"]);
    // As kube-apiserver's dropTypeDependentFields: a type change away from NodePort drops the
    // node ports and externalTrafficPolicy the client left as they were (so they are released);
    // ones the client set itself are refused below.
    if !node_ports {
        if let Some(old_spec) = old_spec {
            let node_ports_of = |s: &Value| -> Vec<Value> {
                s["ports"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|p| p["nodePort"].clone())
                    .collect()
            };
            if node_ports_of(old_spec) == node_ports_of(spec) {
                for p in spec["ports"].as_array_mut().into_iter().flatten() {
                    if let Some(m) = p.as_object_mut() {
                        m.remove("nodePort");
                    }
                }
            }
            if old_spec.get("externalTrafficPolicy") == spec.get("externalTrafficPolicy") {
                if let Some(m) = spec.as_object_mut() {
                    m.remove("externalTrafficPolicy");
                }
            }
        }
    }
    if node_ports {
        if spec.get("externalTrafficPolicy").is_none() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        match spec["externalTrafficPolicy"].as_str() {
            Some("Cluster") | Some("Local") => {}
            other => causes.push(Cause::not_supported(
                "spec.externalTrafficPolicy",
                other,
                &["Cluster", "Local"],
            )),
        }
    } else if let Some(etp) = spec.get("externalTrafficPolicy").and_then(Value::as_str) {
        causes.push(Cause::invalid(
            "spec.externalTrafficPolicy",
            format!("{etp:?}"),
            "may only be set for externally-accessible services",
        ));
    }
    match spec["internalTrafficPolicy"].as_str() {
        Some("Cluster") | Some("Local") => {}
        other => causes.push(Cause::not_supported(
            "spec.internalTrafficPolicy",
            other,
            &["Cluster", "Local"],
        )),
    }
    validate::label_map(spec.get("selector"), "spec.selector", &mut causes);
    // Ports.
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let ports = spec.get_mut("ports").and_then(Value::as_array_mut);
    let mut new_node_ports = BTreeSet::new();
    match ports {
        None if !headless && ty != "ExternalName" => causes.push(Cause::required("spec.ports")),
        None => {}
        Some(ports) => {
            let many = ports.len() > 1;
            let mut names = BTreeSet::new();
            for (i, p) in ports.iter_mut().enumerate() {
                let field = |f: &str| format!("spec.ports[{i}].{f}");
                if p.get("protocol").is_none() {
                    p["protocol"] = json!("TCP");
                }
                let name = p
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                if many && name.is_empty() {
                    causes.push(Cause::required(field("name")));
                } else if !name.is_empty() && !validate::is_dns1123_label(&name) {
                    causes.push(Cause::invalid(
                        field("name"),
                        format!("{name:?}"),
                        validate::DNS1123_LABEL_MSG,
                    ));
                } else if !names.insert(name.clone()) {
                    causes.push(Cause::duplicate(field("name"), format!("{name:?}")));
                }
                let port = p.get("port").and_then(Value::as_i64);
                match port {
                    Some(n) if (1..=65535).contains(&n) => {}
                    Some(n) => {
                        causes.push(Cause::invalid(field("port"), n, validate::PORT_RANGE_MSG))
                    }
                    None => causes.push(Cause::required(field("port"))),
                }
                match p.get("targetPort") {
                    None | Some(Value::Null) => p["targetPort"] = json!(port.unwrap_or(0)),
                    Some(Value::Number(n)) if n.as_i64().is_some_and(|n| !(1..=65535).contains(&n)) => {
                        causes.push(Cause::invalid(field("targetPort"), n, validate::PORT_RANGE_MSG))
                    }
                    Some(Value::String(s)) if s.is_empty() || s.len() > 15 || !s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') => {
                        causes.push(Cause::invalid(field("targetPort"), format!("{s:?}"), "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"))
                    }
                    _ => {}
                }
                if node_ports {
                    match p.get("nodePort").and_then(Value::as_i64) {
                        Some(np) => {
                            let (lo, hi) = ranges.node_ports;
                            if np < i64::from(lo) || np > i64::from(hi) {
                                causes.push(Cause::invalid(field("nodePort"), np, &format!("provided port is not in the valid range. The range of valid ports is {lo}-{hi}")));
                            } else if used_ports.contains(&(np as u16)) {
                                causes.push(Cause::invalid(
                                    field("nodePort"),
                                    np,
                                    "provided port is already allocated",
                                ));
                            } else {
                                new_node_ports.insert(np as u16);
                            }
                        }
                        None => {
                            let (lo, hi) = ranges.node_ports;
                            let free = (lo..=hi)
                                .filter(|n| !used_ports.contains(n) && !new_node_ports.contains(n))
                                .nth(rand::random::<usize>() % 64);
                            let free = free.or_else(|| {
                                (lo..=hi).find(|n| {
                                    !used_ports.contains(n) && !new_node_ports.contains(n)
                                })
                            });
                            match free {
                                Some(n) => {
                                    new_node_ports.insert(n);
                                    p["nodePort"] = json!(n);
                                }
                                None => {
                                    return Err(ApiError::internal(
                                        "failed to allocate a nodePort: the range is full",
                                    ))
                                }
                            }
                        }
                    }
                } else if p.get("nodePort").is_some_and(|n| n.as_i64() != Some(0)) {
                    causes.push(Cause {
                        reason: "FieldValueForbidden",
                        field: field("nodePort"),
                        message: format!("Forbidden: may not be used when `type` is '{ty}'"),
                    });
                }
            }
        }
    }
    // ClusterIP.
    let old_ip = old
        .and_then(|o| o.pointer("/spec/clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let requested = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match (requested, old_ip) {
        (None, Some(old)) => Some(old),
        (Some(r), Some(old)) if r != old => {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                format!("{r:?}"),
                "may not change once set",
            ));
            Some(old)
        }
        (Some(r), Some(_)) => Some(r),
        (Some(r), None) if r == "None" => Some(r),
        (Some(r), None) => match r.parse::<Ipv4Addr>() {
            Ok(ip) if !in_cidr(ip, ranges.service_cidr) => {
                causes.push(Cause::invalid("spec.clusterIPs", format!("[]string{{{r:?}}}"), &format!("failed to allocate IP {r}: provided IP is not in the valid range. The range of valid IPs is {}/{}", ranges.service_cidr.0, ranges.service_cidr.1)));
                None
            }
            Ok(ip) if used_ips.contains(&ip) => {
                causes.push(Cause::invalid(
                    "spec.clusterIPs",
                    format!("[]string{{{r:?}}}"),
                    &format!("failed to allocate IP {r}: provided IP is already allocated"),
                ));
                None
            }
            Ok(_) => Some(r),
            Err(_) => {
                causes.push(Cause::invalid(
                    "spec.clusterIPs[0]",
                    format!("{r:?}"),
                    "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
                ));
                None
            }
        },
        (None, None) if ty == "ExternalName" => None,
        (None, None) => Some(
            allocate_ip(ranges.service_cidr, &used_ips)
                .ok_or_else(|| {
                    ApiError::internal("failed to allocate a ClusterIP: the service CIDR is full")
                })?
                .to_string(),
        ),
    };
    if let Some(ip) = ip {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    if causes.is_empty() {
        if old.is_none() || obj.get("status").is_none() {
            obj["status"] = json!({"loadBalancer": {}});
        }
        Ok(())
    } else {
        Err(invalid(res, obj, &causes))
    }
}

/// A random free address of `cidr`, skipping the network address, `.1` (the `kubernetes`
/// service by convention) and the broadcast address.
fn allocate_ip((net, prefix): (Ipv4Addr, u8), used: &BTreeSet<Ipv4Addr>) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(prefix));
    if size < 4 {
        return None;
    }
    let base = u64::from(u32::from(net));
    let start = 2 + rand::random::<u64>() % (size - 3);
    (0..size - 3)
        .map(|i| 2 + (start - 2 + i) % (size - 3))
        .map(|off| Ipv4Addr::from((base + off) as u32))
        .find(|ip| !used.contains(ip))
}

fn node(obj: &mut Value, store: &Store, ranges: &Ranges) -> Result<(), ApiError> {
    let has_cidr = obj
        .pointer("/spec/podCIDR")
        .and_then(Value::as_str)
        .is_some_and(|s| !s.is_empty());
    if has_cidr {
        return Ok(());
    }
    let name = name_of(obj);
    let used: BTreeSet<String> = store
        .list("nodes", None)
        .0
        .iter()
        .filter(|n| n["metadata"]["name"].as_str() != Some(name.as_str()))
        .filter_map(|n| {
            n.pointer("/spec/podCIDR")
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .collect();
    let (net, prefix) = ranges.cluster_cidr;
    let count = 1u32 << (ranges.node_prefix - prefix);
    let step = 1u32 << (32 - ranges.node_prefix);
    let cidr = (1..count)
        .map(|i| {
            format!(
                "{}/{}",
                Ipv4Addr::from(u32::from(net) + i * step),
                ranges.node_prefix
            )
        })
        .find(|c| !used.contains(c))
        .ok_or_else(|| ApiError::internal("no podCIDR left in the cluster CIDR"))?;
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    obj["spec"]["podCIDR"] = json!(cidr);
    obj["spec"]["podCIDRs"] = json!([cidr]);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;
    use crate::store::Key;

    fn create(store: &Store, plural: &str, mut obj: Value) -> Result<Value, ApiError> {
        let res = find("", "v1", plural).unwrap();
        on_create(res, "default", &mut obj, store, &Ranges::default())?;
        let key = Key {
            resource: plural.into(),
            namespace: if res.namespaced {
                "default".into()
            } else {
                String::new()
            },
            name: name_of(&obj),
        };
        Ok((*store.create(key, obj).unwrap()).clone())
    }

    #[test]
    fn services_get_defaults_and_a_cluster_ip_from_the_range() {
        let s = Store::in_memory();
        let svc = create(
            &s,
            "services",
            json!({"metadata": {"name": "web"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(in_cidr(ip, (Ipv4Addr::new(10, 96, 0, 0), 16)));
        assert_eq!(svc["spec"]["ports"][0]["targetPort"], 80);
        assert_eq!(svc["spec"]["ports"][0]["protocol"], "TCP");
        assert_eq!(svc["spec"]["type"], "ClusterIP");
        let taken = create(
            &s,
            "services",
            json!({"metadata": {"name": "web2"}, "spec": {"clusterIP": ip.to_string(), "ports": [{"port": 80}]}}),
        );
        let err = taken.unwrap_err();
        assert_eq!(err.code, 422);
        assert!(
            err.message.contains("provided IP is already allocated"),
            "{}",
            err.message
        );
    }

    #[test]
    fn nodeports_are_allocated_checked_and_unique() {
        let s = Store::in_memory();
        let a = create(&s, "services", json!({"metadata": {"name": "a"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31002}]}})).unwrap();
        assert_eq!(a["spec"]["ports"][0]["nodePort"], 31002);
        assert_eq!(a["spec"]["externalTrafficPolicy"], "Cluster");
        let dup = create(&s, "services", json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 31002}]}})).unwrap_err();
        assert!(
            dup.message.contains("provided port is already allocated"),
            "{}",
            dup.message
        );
        let out = create(&s, "services", json!({"metadata": {"name": "c"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 80}]}})).unwrap_err();
        assert!(out.message.contains("valid range"), "{}", out.message);
        let auto = create(&s, "services", json!({"metadata": {"name": "d"}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}})).unwrap();
        let np = auto["spec"]["ports"][0]["nodePort"].as_u64().unwrap();
        assert!((30000..=32767).contains(&np) && np != 31002);
    }

    #[test]
    fn invalid_services_get_causes_naming_each_field() {
        let s = Store::in_memory();
        let err = create(
            &s,
            "services",
            json!({"metadata": {"name": "x"}, "spec": {"ports": [{"port": 70000}, {"port": 80}]}}),
        )
        .unwrap_err();
        let causes = err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert!(
            causes.contains(&"spec.ports[0].port".to_string()),
            "{causes:?}"
        );
        assert!(
            causes.contains(&"spec.ports[0].name".to_string()),
            "multi-port needs names: {causes:?}"
        );
        let err = create(
            &s,
            "services",
            json!({"metadata": {"name": "Bad_Name"}, "spec": {"ports": [{"port": 80}]}}),
        )
        .unwrap_err();
        assert!(err.message.contains("DNS-1035"));
    }

    #[test]
    fn nodes_get_the_lowest_free_pod_cidr_in_registration_order() {
        let s = Store::in_memory();
        let n1 = create(&s, "nodes", json!({"metadata": {"name": "n1"}})).unwrap();
        let n2 = create(&s, "nodes", json!({"metadata": {"name": "n2"}})).unwrap();
        assert_eq!(n1["spec"]["podCIDR"], "10.244.1.0/24");
        assert_eq!(n2["spec"]["podCIDR"], "10.244.2.0/24");
    }

    #[test]
    fn pods_need_containers_and_start_pending() {
        let s = Store::in_memory();
        assert_eq!(
            create(&s, "pods", json!({"metadata": {"name": "p"}, "spec": {}}))
                .unwrap_err()
                .code,
            422
        );
        let p = create(&s, "pods", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}})).unwrap();
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let res = |r: Value| json!({"containers": [{"name": "c", "image": "x:1", "resources": r}]});
        let both = json!({"cpu": "1", "memory": "1Gi"});
        assert_eq!(qos_class(&res(json!({"limits": both}))), "Guaranteed");
        assert_eq!(
            qos_class(&res(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        let mut c = json!({"image": "registry:5000/echo:1.2"});
        container_defaults(&mut c);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    }
}
