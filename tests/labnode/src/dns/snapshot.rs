//! What the cluster DNS knows of the cluster: the Services and EndpointSlices of one moment,
//! and the few facts of them names are made of.
//!
//! Invariant: everything here is read from the objects as they are, with no state of its own —
//! a [`Snapshot`] taken after a watch event answers as the API does after that event.
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// The label naming an EndpointSlice's Service.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// The Services and EndpointSlices of the cluster at one moment.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// Every Service.
    pub services: Vec<Arc<Service>>,
    /// Every EndpointSlice.
    pub slices: Vec<Arc<EndpointSlice>>,
}

/// How a Service is addressed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Addressing {
    /// A ClusterIP: the name answers with it.
    ClusterIp(Ipv4Addr),
    /// `clusterIP: None`: the name answers with the ready endpoints' addresses.
    Headless,
    /// `type: ExternalName`: the name is an alias of this one.
    ExternalName(String),
    /// No usable address (none assigned yet, or not IPv4): the name does not exist.
    Unaddressed,
}

/// A port of a Service or of an EndpointSlice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Port {
    /// Its name (`""` when unnamed).
    pub name: String,
    /// `tcp`, `udp` or `sctp`.
    pub protocol: String,
    /// The port number.
    pub port: u16,
}

/// A ready endpoint of a Service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// Its address.
    pub ip: Ipv4Addr,
    /// `endpoints[].hostname`, if set.
    pub hostname: Option<String>,
    /// The ports of its EndpointSlice.
    pub ports: Vec<Port>,
}

impl Endpoint {
    /// The label naming the endpoint under its Service: the hostname, else the address with
    /// dashes (`10-244-1-5`), as CoreDNS names them.
    pub fn label(&self) -> String {
        self.hostname
            .clone()
            .unwrap_or_else(|| self.ip.to_string().replace('.', "-"))
    }
}

fn lower_protocol(p: Option<&String>) -> String {
    p.map_or_else(|| "tcp".to_string(), |p| p.to_ascii_lowercase())
}

impl Snapshot {
    /// A snapshot of these objects.
    pub fn new(services: Vec<Arc<Service>>, slices: Vec<Arc<EndpointSlice>>) -> Snapshot {
        Snapshot { services, slices }
    }

    /// Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<&Service> {
        self.services.iter().map(Arc::as_ref).find(|s| {
            s.metadata.namespace.as_deref() == Some(namespace)
                && s.metadata.name.as_deref() == Some(name)
        })
    }

    /// Whether `namespace` has a Service (the DNS knows namespaces only through them).
    pub fn has_namespace(&self, namespace: &str) -> bool {
        self.services
            .iter()
            .any(|s| s.metadata.namespace.as_deref() == Some(namespace))
    }

    /// The endpoints of Service `svc` that names publish: the ready ones (`conditions.ready`
    /// not false), or all with `publishNotReadyAddresses`; IPv4 only, each address once.
    pub fn endpoints(&self, svc: &Service) -> Vec<Endpoint> {
        let namespace = svc.metadata.namespace.as_deref();
        let name = svc.metadata.name.as_deref();
        let publish_not_ready = svc
            .spec
            .as_ref()
            .and_then(|s| s.publish_not_ready_addresses)
            .unwrap_or(false);
        let mut out: Vec<Endpoint> = Vec::new();
        for slice in &self.slices {
            let owner = slice
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(SERVICE_NAME_LABEL));
            if slice.metadata.namespace.as_deref() != namespace
                || owner.map(String::as_str) != name
                || slice.address_type != "IPv4"
            {
                continue;
            }
            let ports: Vec<Port> = slice
                .ports
                .iter()
                .flatten()
                .filter_map(|p| {
                    Some(Port {
                        name: p.name.clone().unwrap_or_default(),
                        protocol: lower_protocol(p.protocol.as_ref()),
                        port: u16::try_from(p.port?).ok()?,
                    })
                })
                .collect();
            for ep in slice.endpoints.iter().flatten() {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready) != Some(false);
                if !(ready || publish_not_ready) {
                    continue;
                }
                for ip in ep.addresses.iter().filter_map(|a| a.parse().ok()) {
                    if out.iter().all(|e| e.ip != ip) {
                        out.push(Endpoint {
                            ip,
                            hostname: ep.hostname.clone(),
                            ports: ports.clone(),
                        });
                    }
                }
            }
        }
        out.sort_by_key(|e| e.ip);
        out
    }
}

/// How `svc` is addressed.
pub fn addressing(svc: &Service) -> Addressing {
    let Some(spec) = svc.spec.as_ref() else {
        return Addressing::Unaddressed;
    };
    if spec.type_.as_deref() == Some("ExternalName") {
        return match spec.external_name.as_deref() {
            Some(n) if !n.is_empty() => Addressing::ExternalName(n.to_ascii_lowercase()),
            _ => Addressing::Unaddressed,
        };
    }
    match spec.cluster_ip.as_deref() {
        Some("None") => Addressing::Headless,
        Some(ip) => ip
            .parse()
            .map_or(Addressing::Unaddressed, Addressing::ClusterIp),
        None => Addressing::Unaddressed,
    }
}

/// The ports of `svc`.
pub fn ports(svc: &Service) -> Vec<Port> {
    svc.spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .filter_map(|p| {
            Some(Port {
                name: p.name.clone().unwrap_or_default(),
                protocol: lower_protocol(p.protocol.as_ref()),
                port: u16::try_from(p.port).ok()?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Services and EndpointSlices for the DNS's tests.
    use super::*;

    /// Service `ns/name` with `spec`.
    pub fn service(ns: &str, name: &str, spec: serde_json::Value) -> Arc<Service> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": ns, "name": name},
                "spec": spec,
            }))
            .unwrap(),
        )
    }

    /// An EndpointSlice of Service `ns/svc` with `endpoints` and `ports`.
    pub fn slice(
        ns: &str,
        svc: &str,
        endpoints: serde_json::Value,
        ports: serde_json::Value,
    ) -> Arc<EndpointSlice> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"namespace": ns, "name": format!("{svc}-abcde"),
                             "labels": {SERVICE_NAME_LABEL: svc}},
                "addressType": "IPv4",
                "endpoints": endpoints,
                "ports": ports,
            }))
            .unwrap(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::*;
    use super::*;
    use serde_json::json;

    #[test]
    fn names_publish_ready_endpoints_once_each() {
        let svc = service("default", "db", json!({"clusterIP": "None"}));
        let snap = Snapshot::new(
            vec![svc.clone()],
            vec![
                slice(
                    "default",
                    "db",
                    json!([
                        {"addresses": ["10.244.1.7"], "conditions": {"ready": true}},
                        {"addresses": ["10.244.1.5"]},
                        {"addresses": ["10.244.1.9"], "conditions": {"ready": false, "terminating": true}},
                    ]),
                    json!([{"name": "pg", "port": 5432}]),
                ),
                slice(
                    "default",
                    "db",
                    json!([{"addresses": ["10.244.1.7"], "hostname": "db-0"}]),
                    json!([]),
                ),
                slice(
                    "other",
                    "db",
                    json!([{"addresses": ["10.244.2.2"]}]),
                    json!([]),
                ),
            ],
        );
        let eps = snap.endpoints(&svc);
        let ips: Vec<String> = eps.iter().map(|e| e.ip.to_string()).collect();
        assert_eq!(ips, ["10.244.1.5", "10.244.1.7"]);
        assert_eq!(eps[0].label(), "10-244-1-5");
        assert_eq!(
            eps[0].ports,
            [Port {
                name: "pg".into(),
                protocol: "tcp".into(),
                port: 5432
            }]
        );

        let mut spec = (*svc).clone();
        spec.spec.as_mut().unwrap().publish_not_ready_addresses = Some(true);
        assert_eq!(snap.endpoints(&spec).len(), 3, "publishNotReadyAddresses");
    }

    #[test]
    fn a_service_is_addressed_by_its_cluster_ip_none_or_external_name() {
        let a = |spec| addressing(&service("d", "s", spec));
        assert_eq!(
            a(json!({"clusterIP": "10.96.0.5"})),
            Addressing::ClusterIp(Ipv4Addr::new(10, 96, 0, 5))
        );
        assert_eq!(a(json!({"clusterIP": "None"})), Addressing::Headless);
        assert_eq!(
            a(json!({"type": "ExternalName", "externalName": "DB.Example.com"})),
            Addressing::ExternalName("db.example.com".into())
        );
        assert_eq!(a(json!({})), Addressing::Unaddressed);
    }
}
