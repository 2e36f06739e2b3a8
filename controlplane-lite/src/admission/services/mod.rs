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
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::{name_of, remove_keys, set_defaults, verdict, Ranges};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::store::{Held, Store};
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
    // Admission runs under the store's admission lock, so what is held cannot change until the
    // object that takes its pick is stored.
    let held = store.held();
    let taken = Taken {
        held: &held,
        own: &id,
        // The first address is the `kubernetes` Service's, even while it is being re-created.
        reserved: (id != KUBERNETES).then(|| ranges.first_service_ip()),
    };
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
        &|p| taken.node_port(p),
        ranges,
        &mut causes,
    )?;
    ports::health_check_port(
        spec,
        &ty,
        old_spec,
        &|p| taken.node_port(p),
        ranges,
        &mut causes,
    )?;
    cluster_ip::assign(spec, &ty, old_spec, &|ip| taken.ip(ip), ranges, &mut causes)?;
    drop(held);
    if causes.is_empty() && (old.is_none() || obj.get("status").is_none()) {
        obj["status"] = json!({"loadBalancer": {}});
    }
    verdict(res, obj, &causes)
}

/// What the other Services hold, as the store's index of them says.
struct Taken<'a> {
    /// The index.
    held: &'a Held,
    /// The Service being admitted (`namespace/name`): what it holds itself is not taken.
    own: &'a str,
    /// An address no one but the `kubernetes` Service may have.
    reserved: Option<Ipv4Addr>,
}

impl Taken<'_> {
    /// Whether ClusterIP `ip` is taken.
    fn ip(&self, ip: Ipv4Addr) -> bool {
        self.reserved == Some(ip) || self.held.ip_held_by_other(ip, self.own)
    }

    /// Whether node port `port` is taken.
    fn node_port(&self, port: u16) -> bool {
        self.held.node_port_held_by_other(port, self.own)
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

    use super::super::testing::{create, create_in};
    use super::super::Ranges;
    use super::cluster_ip::in_cidr;
    use crate::store::{Key, Store};

    fn svc_key(name: &str) -> Key {
        Key {
            resource: "services".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    /// A NodePort Service `name` asking for ClusterIP `ip` and node port `port`.
    fn node_port_svc(name: &str, ip: &str, port: u16) -> serde_json::Value {
        json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "clusterIP": ip,
               "ports": [{"port": 80, "nodePort": port}]}})
    }

    /// Ranges with a service CIDR of `prefix` bits and node ports `lo..=hi`.
    fn small(prefix: u8, (lo, hi): (u16, u16)) -> Ranges {
        Ranges {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), prefix),
            node_ports: (lo, hi),
            ..Ranges::default()
        }
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

    /// `err` refuses both the requested address and the requested node port.
    fn assert_both_taken(err: &crate::status::ApiError) {
        for what in ["IP", "port"] {
            let said = format!("provided {what} is already allocated");
            assert!(err.message.contains(&said), "{}", err.message);
        }
    }

    #[test]
    fn a_deleted_services_address_and_node_port_are_free_again() {
        let s = Store::in_memory();
        create(&s, "services", node_port_svc("a", "10.96.3.3", 30100)).unwrap();
        let err = create(&s, "services", node_port_svc("b", "10.96.3.3", 30100)).unwrap_err();
        assert_eq!(err.code, 422);
        assert_both_taken(&err);
        s.delete(svc_key("a")).unwrap();
        let b = create(&s, "services", node_port_svc("b", "10.96.3.3", 30100)).unwrap();
        assert_eq!(b["spec"]["clusterIP"], "10.96.3.3");
    }

    #[test]
    fn a_refused_service_holds_nothing() {
        let s = Store::in_memory();
        let mut bad = node_port_svc("a", "10.96.3.4", 30101);
        bad["spec"]["ports"][0]["port"] = json!(70000);
        assert_eq!(create(&s, "services", bad).unwrap_err().code, 422);
        create(&s, "services", node_port_svc("b", "10.96.3.4", 30101))
            .expect("the refused Service took neither the address nor the port");
    }

    #[test]
    fn an_update_keeps_what_the_service_holds_and_a_type_change_releases_its_node_ports() {
        let s = Store::in_memory();
        let a = create(&s, "services", node_port_svc("a", "10.96.3.5", 30102)).unwrap();
        let res = crate::resources::find("", "v1", "services").unwrap();
        let ranges = Ranges::default();
        let mut same = a.clone();
        let admission = s.admission_lock();
        super::super::on_update(res, &a, &mut same, false, &s, &ranges)
            .expect("its own address and port are no conflict");
        let mut cluster_ip = a.clone();
        cluster_ip["spec"]["type"] = json!("ClusterIP");
        super::super::on_update(res, &a, &mut cluster_ip, false, &s, &ranges).unwrap();
        s.update(svc_key("a"), cluster_ip, None).unwrap();
        drop(admission);
        let b = json!({"metadata": {"name": "b"}, "spec": {"type": "NodePort", "ports": [{"port": 80, "nodePort": 30102}]}});
        create(&s, "services", b).expect("the node port was released with the type");
    }

    #[test]
    fn what_services_hold_is_known_again_after_a_restart() {
        let dir = std::env::temp_dir().join(format!("sy-cp-held-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let s = Store::open(&dir).unwrap();
        create(&s, "services", node_port_svc("a", "10.96.3.6", 30103)).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        let err = create(&s, "services", node_port_svc("b", "10.96.3.6", 30103)).unwrap_err();
        assert_both_taken(&err);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_exhausted_range_is_a_500_naming_it() {
        // A /29 has the addresses .2 to .6 to give (.0, .1 and .7 are never given).
        let ranges = small(29, (30000, 30001));
        let s = Store::in_memory();
        let plain = |n: usize| json!({"metadata": {"name": format!("s{n}")}, "spec": {"ports": [{"port": 80}]}});
        let mut ips = std::collections::BTreeSet::new();
        for n in 0..5 {
            let svc = create_in(&s, "services", plain(n), &ranges).unwrap();
            ips.insert(svc["spec"]["clusterIP"].as_str().unwrap().to_string());
        }
        assert_eq!(ips.len(), 5, "{ips:?}");
        let err = create_in(&s, "services", plain(5), &ranges).unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            err.message.contains("the service CIDR is full"),
            "{}",
            err.message
        );
        s.delete(svc_key("s0")).unwrap();
        create_in(&s, "services", plain(5), &ranges).expect("a deletion frees an address");

        let ranges = small(24, (30000, 30001));
        let s = Store::in_memory();
        let np = |n: usize| json!({"metadata": {"name": format!("n{n}")}, "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
        let a = create_in(&s, "services", np(0), &ranges).unwrap();
        let b = create_in(&s, "services", np(1), &ranges).unwrap();
        assert_ne!(
            a["spec"]["ports"][0]["nodePort"],
            b["spec"]["ports"][0]["nodePort"]
        );
        let err = create_in(&s, "services", np(2), &ranges).unwrap_err();
        assert_eq!(err.code, 500);
        assert!(
            err.message
                .contains("failed to allocate a nodePort: the range is full"),
            "{}",
            err.message
        );
    }

    #[test]
    fn concurrent_creates_never_get_the_same_address_or_node_port() {
        // 5 addresses and 5 node ports for 8 Services created at once.
        let ranges = small(29, (30000, 30004));
        let s = Store::in_memory();
        let got: Vec<Option<(String, u64)>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|n| {
                    let s = s.clone();
                    scope.spawn(move || {
                        let svc = json!({"metadata": {"name": format!("c{n}")},
                            "spec": {"type": "NodePort", "ports": [{"port": 80}]}});
                        create_in(&s, "services", svc, &ranges).ok().map(|v| {
                            (
                                v["spec"]["clusterIP"].as_str().unwrap().to_string(),
                                v["spec"]["ports"][0]["nodePort"].as_u64().unwrap(),
                            )
                        })
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let given: Vec<&(String, u64)> = got.iter().flatten().collect();
        assert_eq!(given.len(), 5, "as many as the ranges hold: {got:?}");
        let ips: std::collections::BTreeSet<_> = given.iter().map(|(ip, _)| ip).collect();
        let ports: std::collections::BTreeSet<_> = given.iter().map(|(_, p)| p).collect();
        assert_eq!((ips.len(), ports.len()), (5, 5), "{got:?}");
    }
}
