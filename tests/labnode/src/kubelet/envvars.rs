//! The Service environment variables the kubelet gives every container, as the real kubelet
//! builds them (`getServiceEnvVarMap` and `envvars.FromServices`; Kubernetes docs: Services,
//! "Environment variables").
//!
//! A pod in namespace `ns` gets the variables of `default/kubernetes` always, and, when
//! `spec.enableServiceLinks` is true (the default), those of every Service of `ns` with a
//! ClusterIP (headless Services and ones without an address get none). A Service of `ns` named
//! `kubernetes` takes the place of the default one. For a Service `redis-primary` on
//! `10.0.0.11:6379/TCP`:
//! ```text
//! REDIS_PRIMARY_SERVICE_HOST=10.0.0.11
//! REDIS_PRIMARY_SERVICE_PORT=6379          (the first port; plus _SERVICE_PORT_<NAME> per named port)
//! REDIS_PRIMARY_PORT=tcp://10.0.0.11:6379  (the first port)
//! REDIS_PRIMARY_PORT_6379_TCP=tcp://10.0.0.11:6379
//! REDIS_PRIMARY_PORT_6379_TCP_PROTO=tcp
//! REDIS_PRIMARY_PORT_6379_TCP_PORT=6379
//! REDIS_PRIMARY_PORT_6379_TCP_ADDR=10.0.0.11
//! ```
//! The container's own `env` wins over all of these (see [`super::process::launch`]).
use k8s_openapi::api::core::v1::Service;
use std::collections::BTreeMap;

/// Namespace of the API server's Service.
pub const MASTER_NAMESPACE: &str = "default";
/// Name of the API server's Service, whose variables every pod gets.
pub const MASTER_SERVICE: &str = "kubernetes";

/// Whether the Service has a ClusterIP (not headless, not unallocated).
fn has_cluster_ip(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| !ip.is_empty() && ip != "None")
}

/// The Services whose variables a pod in `namespace` gets, by name (sorted).
pub fn services_for_pod<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> BTreeMap<String, &'a Service> {
    let mut map: BTreeMap<String, &'a Service> = BTreeMap::new();
    for svc in services {
        if !has_cluster_ip(svc) {
            continue;
        }
        let Some(name) = svc.metadata.name.clone() else {
            continue;
        };
        let ns = svc.metadata.namespace.as_deref().unwrap_or("");
        if ns == MASTER_NAMESPACE && name == MASTER_SERVICE {
            // Always, unless the pod's own namespace has a Service of that name.
            map.entry(name).or_insert(svc);
        } else if ns == namespace && enable_service_links {
            map.insert(name, svc);
        }
    }
    map
}

/// `redis-primary` → `REDIS_PRIMARY`.
fn env_name(s: &str) -> String {
    s.replace('-', "_").to_uppercase()
}

/// The variables of `services`, in order.
pub fn from_services<'a>(services: impl IntoIterator<Item = &'a Service>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let (Some(name), Some(spec)) = (svc.metadata.name.as_deref(), svc.spec.as_ref()) else {
            continue;
        };
        if !has_cluster_ip(svc) {
            continue;
        }
        let ip = spec.cluster_ip.clone().unwrap_or_default();
        let prefix = env_name(name);
        let ports = spec.ports.clone().unwrap_or_default();
        out.push((format!("{prefix}_SERVICE_HOST"), ip.clone()));
        if let Some(first) = ports.first() {
            let base = format!("{prefix}_SERVICE_PORT");
            out.push((base.clone(), first.port.to_string()));
            for p in &ports {
                if let Some(pn) = p.name.as_deref().filter(|n| !n.is_empty()) {
                    out.push((format!("{base}_{}", env_name(pn)), p.port.to_string()));
                }
            }
        }
        // Docker link variables.
        let host_port = |port: i32| {
            if ip.contains(':') {
                format!("[{ip}]:{port}")
            } else {
                format!("{ip}:{port}")
            }
        };
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.clone().filter(|s| !s.is_empty());
            let proto = proto.as_deref().unwrap_or("TCP");
            let url = format!("{}://{}", proto.to_lowercase(), host_port(p.port));
            if i == 0 {
                out.push((format!("{prefix}_PORT"), url.clone()));
            }
            let pp = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.push((pp.clone(), url));
            out.push((format!("{pp}_PROTO"), proto.to_lowercase()));
            out.push((format!("{pp}_PORT"), p.port.to_string()));
            out.push((format!("{pp}_ADDR"), ip.clone()));
        }
    }
    out
}

/// The Service variables of a pod in `namespace` (see the module documentation).
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Vec<(String, String)> {
    from_services(services_for_pod(services, namespace, enable_service_links).into_values())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": ns},
            "spec": {"clusterIP": ip, "ports": ports}
        }))
        .unwrap()
    }

    fn kubernetes() -> Service {
        svc(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443, "protocol": "TCP", "targetPort": 6443}]),
        )
    }

    fn pairs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_documented_example() {
        let redis = svc(
            "default",
            "redis-primary",
            "10.0.0.11",
            json!([{"port": 6379, "protocol": "TCP"}]),
        );
        assert_eq!(
            from_services([&redis]),
            pairs(&[
                ("REDIS_PRIMARY_SERVICE_HOST", "10.0.0.11"),
                ("REDIS_PRIMARY_SERVICE_PORT", "6379"),
                ("REDIS_PRIMARY_PORT", "tcp://10.0.0.11:6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP", "tcp://10.0.0.11:6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP_PROTO", "tcp"),
                ("REDIS_PRIMARY_PORT_6379_TCP_PORT", "6379"),
                ("REDIS_PRIMARY_PORT_6379_TCP_ADDR", "10.0.0.11"),
            ])
        );
    }

    #[test]
    fn the_kubernetes_service() {
        assert_eq!(
            from_services([&kubernetes()]),
            pairs(&[
                ("KUBERNETES_SERVICE_HOST", "10.96.0.1"),
                ("KUBERNETES_SERVICE_PORT", "443"),
                ("KUBERNETES_SERVICE_PORT_HTTPS", "443"),
                ("KUBERNETES_PORT", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP", "tcp://10.96.0.1:443"),
                ("KUBERNETES_PORT_443_TCP_PROTO", "tcp"),
                ("KUBERNETES_PORT_443_TCP_PORT", "443"),
                ("KUBERNETES_PORT_443_TCP_ADDR", "10.96.0.1"),
            ])
        );
    }

    #[test]
    fn named_ports_and_protocols() {
        let dns = svc(
            "kube-system",
            "kube-dns",
            "10.96.0.10",
            json!([
                {"name": "dns", "port": 53, "protocol": "UDP"},
                {"name": "dns-tcp", "port": 53, "protocol": "TCP"}
            ]),
        );
        let env = from_services([&dns]);
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBE_DNS_SERVICE_PORT"), Some("53"));
        assert_eq!(get("KUBE_DNS_SERVICE_PORT_DNS"), Some("53"));
        assert_eq!(get("KUBE_DNS_SERVICE_PORT_DNS_TCP"), Some("53"));
        assert_eq!(get("KUBE_DNS_PORT"), Some("udp://10.96.0.10:53"));
        assert_eq!(get("KUBE_DNS_PORT_53_UDP_PROTO"), Some("udp"));
        assert_eq!(get("KUBE_DNS_PORT_53_TCP"), Some("tcp://10.96.0.10:53"));
        assert_eq!(env.len(), 2 + 2 + 1 + 4 + 4);
    }

    #[test]
    fn which_services_a_pod_sees() {
        let all = [
            kubernetes(),
            svc("demo", "web", "10.96.0.20", json!([{"port": 80}])),
            svc("demo", "headless", "None", json!([{"port": 80}])),
            svc("demo", "pending", "", json!([{"port": 80}])),
            svc("other", "db", "10.96.0.30", json!([{"port": 5432}])),
        ];
        let names = |ns: &str, links: bool| -> Vec<String> {
            services_for_pod(&all, ns, links).into_keys().collect()
        };
        assert_eq!(names("demo", true), ["kubernetes", "web"]);
        assert_eq!(names("demo", false), ["kubernetes"]);
        assert_eq!(names("other", true), ["db", "kubernetes"]);
        assert_eq!(names("default", true), ["kubernetes"]);
        let env = service_env(&all, "demo", true);
        assert!(env.contains(&("WEB_SERVICE_HOST".into(), "10.96.0.20".into())));
        assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())));
        assert!(!env.iter().any(|(k, _)| k.starts_with("DB_")));
        // A pod's own namespace may shadow `kubernetes`.
        let mut shadowed = all.to_vec();
        shadowed.push(svc(
            "demo",
            "kubernetes",
            "10.96.0.99",
            json!([{"port": 1}]),
        ));
        let env = service_env(&shadowed, "demo", true);
        assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.99".into())));
        let env = service_env(&shadowed, "demo", false);
        assert!(env.contains(&("KUBERNETES_SERVICE_HOST".into(), "10.96.0.1".into())));
    }
}
