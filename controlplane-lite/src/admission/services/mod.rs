//! Services, as kube-apiserver's defaulting (SetDefaults_Service), validation (ValidateService)
//! and service registry (ClusterIP and NodePort allocators) treat them.
//!
//! Guarantees: an admitted Service has a supported `type`; `sessionAffinity`, the traffic
//! policies and the IP family fields set (defaults filled in, values checked); ports that
//! [`ports`] accepted, each with a NodePort held by no other Service when the type exposes node
//! ports; a ClusterIP that [`cluster_ip`] assigned (held by no other Service, never changed
//! once set); and a `status` (`{"loadBalancer": {}}` unless an update carries one). A type change
//! away from NodePort/LoadBalancer releases the node ports and `externalTrafficPolicy` the client
//! left as they were. Otherwise the Service is refused with every cause found, in kube-apiserver's
//! order; a range with nothing left to allocate is a 500.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{name_of, remove_keys, set_defaults, verdict, Ranges};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::store::Store;
use crate::validate;

mod cluster_ip;
mod ports;

/// `namespace/name` of the API server's own Service, the only one given the first address.
const KUBERNETES: &str = "default/kubernetes";

/// The Service types served.
const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];

/// Defaults, validation and allocations of a new Service or of a replacement of `old`.
pub(super) fn admit(
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
    let mut taken = Taken::by_others(store, &id);
    // The first address is the `kubernetes` Service's, even while it is being re-created.
    if id != KUBERNETES {
        taken.ips.insert(ranges.first_service_ip());
    }
    let mut causes = Vec::new();
    if !obj["spec"].is_object() {
        obj["spec"] = json!({});
    }
    let spec = &mut obj["spec"];
    let old_spec = old.map(|o| &o["spec"]);
    let ty = service_type(spec, &mut causes);
    set_defaults(
        spec,
        [
            ("sessionAffinity", json!("None")),
            ("internalTrafficPolicy", json!("Cluster")),
            ("ipFamilies", json!(["IPv4"])),
            ("ipFamilyPolicy", json!("SingleStack")),
        ],
    );
    session_affinity(spec, &mut causes);
    let node_ports = ty == "NodePort" || ty == "LoadBalancer";
    if ty == "LoadBalancer" && spec.get("allocateLoadBalancerNodePorts").is_none() {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
    if let (false, Some(old_spec)) = (node_ports, old_spec) {
        drop_type_dependent_fields(old_spec, spec);
    }
    traffic_policies(spec, node_ports, &mut causes);
    validate::label_map(spec.get("selector"), "spec.selector", &mut causes);
    // kube-apiserver allocates none with `allocateLoadBalancerNodePorts: false` (but keeps
    // the ones a client asks for).
    let allocate = node_ports && spec.get("allocateLoadBalancerNodePorts") != Some(&json!(false));
    ports::admit(
        spec,
        &ty,
        (node_ports, allocate),
        &taken.node_ports,
        ranges,
        &mut causes,
    )?;
    ports::health_check_port(spec, &ty, old_spec, &taken.node_ports, ranges, &mut causes)?;
    cluster_ip::assign(spec, &ty, old_spec, &taken.ips, ranges, &mut causes)?;
    if causes.is_empty() && (old.is_none() || obj.get("status").is_none()) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    verdict(res, obj, &causes)
}

/// What the other Services hold.
struct Taken {
    /// Their ClusterIPs.
    ips: BTreeSet<Ipv4Addr>,
    /// Their NodePorts.
    node_ports: BTreeSet<u16>,
}

impl Taken {
    /// Every ClusterIP and NodePort in use, except by `skip` (`namespace/name`).
    fn by_others(store: &Store, skip: &str) -> Taken {
        let mut taken = Taken {
            ips: BTreeSet::new(),
            node_ports: BTreeSet::new(),
        };
        for svc in store.list("services", None).0 {
            let id = format!(
                "{}/{}",
                svc["metadata"]["namespace"].as_str().unwrap_or(""),
                svc["metadata"]["name"].as_str().unwrap_or("")
            );
            if id == skip {
                continue;
            }
            let ip = svc.pointer("/spec/clusterIP").and_then(Value::as_str);
            let ip: Option<Ipv4Addr> = ip.and_then(|s| s.parse().ok());
            taken.ips.extend(ip);
            let ports = svc.pointer("/spec/ports").and_then(Value::as_array);
            let health = svc.pointer("/spec/healthCheckNodePort");
            for np in ports
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("nodePort"))
                .chain(health)
            {
                let np: Option<u16> = np.as_u64().and_then(|n| n.try_into().ok());
                taken.node_ports.extend(np);
            }
        }
        taken
    }
}

/// `spec.type`, `ClusterIP` when absent; an unknown one is a cause.
fn service_type(spec: &mut Value, causes: &mut Vec<Cause>) -> String {
    let ty = spec
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("ClusterIP")
        .to_string();
    if !TYPES.contains(&ty.as_str()) {
        causes.push(Cause::not_supported("spec.type", Some(&ty), &TYPES));
    }
    spec["type"] = json!(ty);
    ty
}

/// As SetDefaults_Service: `None` clears `sessionAffinityConfig`, `ClientIP` gets a 10800 s
/// timeout unless it has one in 1-86400.
fn session_affinity(spec: &mut Value, causes: &mut Vec<Cause>) {
    match spec["sessionAffinity"].as_str() {
        Some("None") => remove_keys(spec, &["sessionAffinityConfig"]),
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
}

/// As kube-apiserver's dropTypeDependentFields, for a type that has no node ports: drops the
/// node ports and `externalTrafficPolicy` the client left as they were in `old_spec` (so they are
/// released); ones the client set itself stay, to be refused.
fn drop_type_dependent_fields(old_spec: &Value, spec: &mut Value) {
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
            remove_keys(p, &["nodePort"]);
        }
    }
    if old_spec.get("externalTrafficPolicy") == spec.get("externalTrafficPolicy") {
        remove_keys(spec, &["externalTrafficPolicy"]);
    }
}

/// `externalTrafficPolicy` (defaulted to `Cluster` where node ports exist, refused elsewhere)
/// and `internalTrafficPolicy`: each `Cluster` or `Local`.
fn traffic_policies(spec: &mut Value, node_ports: bool, causes: &mut Vec<Cause>) {
    if node_ports {
        if spec.get("externalTrafficPolicy").is_none() {
            spec["externalTrafficPolicy"] = json!("Cluster");
        }
        cluster_or_local(spec, "externalTrafficPolicy", causes);
    } else if let Some(etp) = spec.get("externalTrafficPolicy").and_then(Value::as_str) {
        causes.push(Cause::invalid(
            "spec.externalTrafficPolicy",
            format!("{etp:?}"),
            "may only be set for externally-accessible services",
        ));
    }
    cluster_or_local(spec, "internalTrafficPolicy", causes);
}

/// A cause unless `spec[policy]` is `Cluster` or `Local`.
fn cluster_or_local(spec: &Value, policy: &str, causes: &mut Vec<Cause>) {
    match spec[policy].as_str() {
        Some("Cluster") | Some("Local") => {}
        other => causes.push(Cause::not_supported(
            format!("spec.{policy}"),
            other,
            &["Cluster", "Local"],
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use serde_json::json;

    use super::super::testing::create;
    use super::cluster_ip::in_cidr;
    use crate::store::Store;

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
    fn a_local_load_balancer_gets_a_health_check_port_that_is_released_with_the_policy() {
        let s = Store::in_memory();
        let lb = json!({"metadata": {"name": "lb"}, "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "ports": [{"port": 80}]}});
        let a = create(&s, "services", lb).unwrap();
        let hc = a["spec"]["healthCheckNodePort"]
            .as_u64()
            .expect("allocated");
        assert!((30000..=32767).contains(&hc));
        assert_ne!(Some(hc), a["spec"]["ports"][0]["nodePort"].as_u64());
        let clash = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": hc}]}});
        let err = create(&s, "services", clash).unwrap_err();
        assert!(
            format!("{err:?}").contains("provided port is already allocated"),
            "{err:?}"
        );
        let misplaced = json!({"metadata": {"name": "c"}, "spec": {"type": "NodePort", "healthCheckNodePort": 31999, "ports": [{"port": 80}]}});
        let err = create(&s, "services", misplaced).unwrap_err();
        assert!(
            format!("{err:?}").contains("healthCheckNodePort"),
            "{err:?}"
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
}
