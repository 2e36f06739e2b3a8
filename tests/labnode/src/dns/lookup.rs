//! The cluster domain's names and what each answers, as CoreDNS's `kubernetes` plugin (pods
//! disabled, no `forward`) answers them: a pure function of a [`Snapshot`], the zone and the
//! question.
//!
//! Invariant: a name outside the cluster domain is REFUSED — this server is the authority for
//! the cluster domain only and forwards nothing; inside it, a name no Service makes exist is
//! NXDOMAIN; a name that exists but has no record of the asked type gets an empty NOERROR
//! (NODATA). The names (`ZONE` = `cluster.local`):
//! - `SVC.NS.svc.ZONE`: A with the ClusterIP; for a headless Service the ready endpoints'
//!   addresses (NXDOMAIN while it has none); a CNAME for an ExternalName Service; SRV for every
//!   port (the target is the Service's name, or each endpoint's for a headless Service);
//! - `_PORT._PROTO.SVC.NS.svc.ZONE`: SRV for the named port;
//! - `ENDPOINT.SVC.NS.svc.ZONE` (headless Services): A with the endpoint's address; `ENDPOINT`
//!   is its `hostname`, else its address with dashes (`10-244-1-5`);
//! - `ZONE`, `svc.ZONE`, `NS.svc.ZONE` (a namespace with a Service) and `_PROTO.SVC.NS.svc.ZONE`
//!   exist without records (the zone's SOA answers an SOA question at `ZONE`).
//!
//! Resolvers reach `SVC`, `SVC.NS` and `SVC.NS.svc` through the search list the kubelet writes
//! into every pod's resolv.conf; the server itself only answers full names.
use super::snapshot::{self, Addressing, Endpoint, Port, Snapshot};
use hickory_proto::rr::RecordType;
use k8s_openapi::api::core::v1::Service;
use std::net::Ipv4Addr;

/// The cluster domain this server is the authority for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Zone {
    origin: String,
}

impl Zone {
    /// The zone `origin` (e.g. `cluster.local`; case and a final dot do not matter).
    pub fn new(origin: &str) -> Zone {
        Zone {
            origin: origin.trim_end_matches('.').to_ascii_lowercase(),
        }
    }

    /// The zone's name, without the final dot.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The labels of `name` (lower case, no final dot) below the zone, or `None` outside it.
    fn relative<'n>(&self, name: &'n str) -> Option<&'n str> {
        if name == self.origin {
            return Some("");
        }
        name.strip_suffix(self.origin.as_str())?.strip_suffix('.')
    }

    /// The fully qualified name of `relative` (labels below the zone).
    fn fqdn(&self, relative: &str) -> String {
        if relative.is_empty() {
            format!("{}.", self.origin)
        } else {
            format!("{relative}.{}.", self.origin)
        }
    }
}

/// The data of one answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Data {
    /// An IPv4 address.
    A(Ipv4Addr),
    /// A service location.
    Srv {
        /// Priority (always 0).
        priority: u16,
        /// Weight: the records share 100.
        weight: u16,
        /// Port.
        port: u16,
        /// Target name (fully qualified).
        target: String,
    },
    /// An alias (fully qualified).
    Cname(String),
    /// The zone's SOA.
    Soa,
}

/// One answer record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// Owner name, fully qualified (with the final dot), lower case.
    pub name: String,
    /// What it says.
    pub data: Data,
}

/// The answer to one question.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Outside the cluster domain: not this server's to answer, and it forwards nothing.
    Refused,
    /// No such name in the cluster domain.
    NxDomain,
    /// The name exists; `answers` of the asked type (none: NODATA), `additionals` the
    /// addresses of SRV targets.
    Found {
        /// The answer section.
        answers: Vec<Record>,
        /// The additional section.
        additionals: Vec<Record>,
    },
}

impl Answer {
    fn nodata() -> Answer {
        Answer::Found {
            answers: Vec::new(),
            additionals: Vec::new(),
        }
    }

    fn answers(answers: Vec<Record>) -> Answer {
        Answer::Found {
            answers,
            additionals: Vec::new(),
        }
    }
}

/// The answer to `qname` (any case, final dot or not) of type `qtype` in `zone`, given the
/// cluster's objects in `snap`.
pub fn lookup(snap: &Snapshot, zone: &Zone, qname: &str, qtype: RecordType) -> Answer {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    let Some(relative) = zone.relative(&name) else {
        return Answer::Refused;
    };
    let labels: Vec<&str> = if relative.is_empty() {
        Vec::new()
    } else {
        relative.split('.').collect()
    };
    let record = |data| Record {
        name: zone.fqdn(relative),
        data,
    };
    match labels.as_slice() {
        [] if qtype == RecordType::SOA => Answer::answers(vec![record(Data::Soa)]),
        [] | ["svc"] => Answer::nodata(),
        [ns, "svc"] if snap.has_namespace(ns) => Answer::nodata(),
        [svc, ns, "svc"] => match snap.service(ns, svc) {
            Some(s) => service_answer(snap, zone, s, qtype),
            None => Answer::NxDomain,
        },
        [first, svc, ns, "svc"] => match (snap.service(ns, svc), first.strip_prefix('_')) {
            (Some(s), Some(proto)) => nodata_if_found(srv_records(snap, zone, s, &|p| {
                !p.name.is_empty() && p.protocol == proto
            })),
            (Some(s), None) => endpoint_answer(snap, zone, s, first, qtype),
            (None, _) => Answer::NxDomain,
        },
        [port, proto, svc, ns, "svc"] => {
            let (Some(port), Some(proto), Some(s)) = (
                port.strip_prefix('_'),
                proto.strip_prefix('_'),
                snap.service(ns, svc),
            ) else {
                return Answer::NxDomain;
            };
            let srv = srv_records(snap, zone, s, &|p| p.name == port && p.protocol == proto);
            match srv {
                Answer::Found { .. } if qtype != RecordType::SRV => Answer::nodata(),
                found => found,
            }
        }
        _ => Answer::NxDomain,
    }
}

/// NODATA when `found` found something, else what it is (NXDOMAIN).
fn nodata_if_found(found: Answer) -> Answer {
    match found {
        Answer::Found { .. } => Answer::nodata(),
        other => other,
    }
}

/// The fully qualified name of Service `s`.
fn service_fqdn(zone: &Zone, s: &Service) -> String {
    let ns = s.metadata.namespace.as_deref().unwrap_or("default");
    let name = s.metadata.name.as_deref().unwrap_or_default();
    zone.fqdn(&format!("{name}.{ns}.svc"))
}

/// `SVC.NS.svc.ZONE`.
fn service_answer(snap: &Snapshot, zone: &Zone, s: &Service, qtype: RecordType) -> Answer {
    let fqdn = service_fqdn(zone, s);
    let a = |ip| Record {
        name: fqdn.clone(),
        data: Data::A(ip),
    };
    match (snapshot::addressing(s), qtype) {
        (Addressing::Unaddressed, _) => Answer::NxDomain,
        (Addressing::ExternalName(target), _) => Answer::answers(vec![Record {
            name: fqdn.clone(),
            data: Data::Cname(format!("{target}.")),
        }]),
        (_, RecordType::SRV) => srv_records(snap, zone, s, &|_| true),
        (Addressing::ClusterIp(ip), RecordType::A | RecordType::ANY) => {
            Answer::answers(vec![a(ip)])
        }
        (Addressing::ClusterIp(_), _) => Answer::nodata(),
        (Addressing::Headless, qtype) => {
            let endpoints = snap.endpoints(s);
            if endpoints.is_empty() {
                // As CoreDNS: a headless Service without ready endpoints has no name.
                Answer::NxDomain
            } else if matches!(qtype, RecordType::A | RecordType::ANY) {
                Answer::answers(endpoints.iter().map(|e| a(e.ip)).collect())
            } else {
                Answer::nodata()
            }
        }
    }
}

/// `ENDPOINT.SVC.NS.svc.ZONE`: an endpoint of a headless Service.
fn endpoint_answer(
    snap: &Snapshot,
    zone: &Zone,
    s: &Service,
    label: &str,
    qtype: RecordType,
) -> Answer {
    if snapshot::addressing(s) != Addressing::Headless {
        return Answer::NxDomain;
    }
    let Some(ep) = snap.endpoints(s).into_iter().find(|e| e.label() == label) else {
        return Answer::NxDomain;
    };
    if matches!(qtype, RecordType::A | RecordType::ANY) {
        Answer::answers(vec![Record {
            name: endpoint_fqdn(zone, s, &ep),
            data: Data::A(ep.ip),
        }])
    } else {
        Answer::nodata()
    }
}

fn endpoint_fqdn(zone: &Zone, s: &Service, ep: &Endpoint) -> String {
    format!("{}.{}", ep.label(), service_fqdn(zone, s))
}

/// SRV records of Service `s` for its ports that `wanted` picks, named after those ports
/// (`_PORT._PROTO.SVC…`; unnamed ports are named by the Service's own name); NXDOMAIN when
/// there are none. A ClusterIP Service's point at its name (its address in the additional
/// section), a headless Service's at every ready endpoint (with the endpoint's port).
fn srv_records(
    snap: &Snapshot,
    zone: &Zone,
    s: &Service,
    wanted: &dyn Fn(&Port) -> bool,
) -> Answer {
    let fqdn = service_fqdn(zone, s);
    let owner = |p: &Port| {
        if p.name.is_empty() {
            fqdn.clone()
        } else {
            format!("_{}._{}.{fqdn}", p.name, p.protocol)
        }
    };
    // (owner, port, target, target address)
    let mut found: Vec<(String, u16, String, Ipv4Addr)> = Vec::new();
    match snapshot::addressing(s) {
        Addressing::ClusterIp(ip) => {
            for p in snapshot::ports(s).iter().filter(|p| wanted(p)) {
                found.push((owner(p), p.port, fqdn.clone(), ip));
            }
        }
        Addressing::Headless => {
            for ep in snap.endpoints(s) {
                let target = endpoint_fqdn(zone, s, &ep);
                for p in ep.ports.iter().filter(|p| wanted(p)) {
                    found.push((owner(p), p.port, target.clone(), ep.ip));
                }
            }
        }
        Addressing::ExternalName(_) | Addressing::Unaddressed => {}
    }
    if found.is_empty() {
        return Answer::NxDomain;
    }
    let weight = u16::try_from((100 / found.len()).max(1)).unwrap_or(1);
    let mut answers = Vec::new();
    let mut additionals: Vec<Record> = Vec::new();
    for (name, port, target, ip) in found {
        let address = Record {
            name: target.clone(),
            data: Data::A(ip),
        };
        if !additionals.contains(&address) {
            additionals.push(address);
        }
        answers.push(Record {
            name,
            data: Data::Srv {
                priority: 0,
                weight,
                port,
                target,
            },
        });
    }
    Answer::Found {
        answers,
        additionals,
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::fixtures::{service, slice};
    use super::*;
    use serde_json::json;

    fn cluster() -> Snapshot {
        Snapshot::new(
            vec![
                service(
                    "default",
                    "echo",
                    json!({"clusterIP": "10.96.0.20", "ports": [
                        {"name": "http", "port": 80, "targetPort": 8080},
                        {"name": "udp", "port": 5353, "protocol": "UDP"},
                    ]}),
                ),
                service(
                    "default",
                    "db",
                    json!({"clusterIP": "None", "ports": [{"name": "pg", "port": 5432}]}),
                ),
                service("default", "empty", json!({"clusterIP": "None"})),
                service(
                    "default",
                    "ext",
                    json!({"type": "ExternalName", "externalName": "db.example.com"}),
                ),
                service(
                    "kube-system",
                    "kube-dns",
                    json!({"clusterIP": "10.96.0.10"}),
                ),
            ],
            vec![slice(
                "default",
                "db",
                json!([
                    {"addresses": ["10.244.1.6"], "hostname": "db-0"},
                    {"addresses": ["10.244.2.7"]},
                    {"addresses": ["10.244.2.8"], "conditions": {"ready": false}},
                ]),
                json!([{"name": "pg", "port": 5432, "protocol": "TCP"}]),
            )],
        )
    }

    fn ask(name: &str, qtype: RecordType) -> Answer {
        lookup(&cluster(), &Zone::new("cluster.local"), name, qtype)
    }

    fn a(name: &str, ip: &str) -> Record {
        Record {
            name: name.into(),
            data: Data::A(ip.parse().unwrap()),
        }
    }

    fn srv(name: &str, weight: u16, port: u16, target: &str) -> Record {
        Record {
            name: name.into(),
            data: Data::Srv {
                priority: 0,
                weight,
                port,
                target: target.into(),
            },
        }
    }

    fn found(answers: Vec<Record>, additionals: Vec<Record>) -> Answer {
        Answer::Found {
            answers,
            additionals,
        }
    }

    #[test]
    fn a_service_name_answers_its_cluster_ip_in_any_case_with_or_without_the_final_dot() {
        let want = found(
            vec![a("echo.default.svc.cluster.local.", "10.96.0.20")],
            vec![],
        );
        assert_eq!(ask("echo.default.svc.cluster.local.", RecordType::A), want);
        assert_eq!(ask("Echo.Default.SVC.cluster.local", RecordType::A), want);
    }

    #[test]
    fn a_headless_service_answers_its_ready_endpoints() {
        assert_eq!(
            ask("db.default.svc.cluster.local.", RecordType::A),
            found(
                vec![
                    a("db.default.svc.cluster.local.", "10.244.1.6"),
                    a("db.default.svc.cluster.local.", "10.244.2.7"),
                ],
                vec![]
            )
        );
        assert_eq!(
            ask("db-0.db.default.svc.cluster.local.", RecordType::A),
            found(
                vec![a("db-0.db.default.svc.cluster.local.", "10.244.1.6")],
                vec![]
            )
        );
        assert_eq!(
            ask("10-244-2-7.db.default.svc.cluster.local.", RecordType::A),
            found(
                vec![a("10-244-2-7.db.default.svc.cluster.local.", "10.244.2.7")],
                vec![]
            )
        );
        assert_eq!(
            ask("10-244-2-8.db.default.svc.cluster.local.", RecordType::A),
            Answer::NxDomain,
            "not ready"
        );
        assert_eq!(
            ask("empty.default.svc.cluster.local.", RecordType::A),
            Answer::NxDomain,
            "a headless Service without endpoints"
        );
    }

    #[test]
    fn a_named_port_answers_srv_pointing_at_the_service_or_at_each_endpoint() {
        let target = "echo.default.svc.cluster.local.";
        for (owner, port) in [
            ("_http._tcp.echo.default.svc.cluster.local.", 80),
            ("_udp._udp.echo.default.svc.cluster.local.", 5353),
        ] {
            assert_eq!(
                ask(owner, RecordType::SRV),
                found(
                    vec![srv(owner, 100, port, target)],
                    vec![a(target, "10.96.0.20")]
                ),
                "{owner}"
            );
        }
        assert_eq!(
            ask("_pg._tcp.db.default.svc.cluster.local.", RecordType::SRV),
            found(
                vec![
                    srv(
                        "_pg._tcp.db.default.svc.cluster.local.",
                        50,
                        5432,
                        "db-0.db.default.svc.cluster.local."
                    ),
                    srv(
                        "_pg._tcp.db.default.svc.cluster.local.",
                        50,
                        5432,
                        "10-244-2-7.db.default.svc.cluster.local."
                    ),
                ],
                vec![
                    a("db-0.db.default.svc.cluster.local.", "10.244.1.6"),
                    a("10-244-2-7.db.default.svc.cluster.local.", "10.244.2.7"),
                ]
            )
        );
        assert_eq!(
            ask(
                "_http._udp.echo.default.svc.cluster.local.",
                RecordType::SRV
            ),
            Answer::NxDomain,
            "http is TCP"
        );
        assert_eq!(
            ask("_http._tcp.echo.default.svc.cluster.local.", RecordType::A),
            found(vec![], vec![]),
            "the SRV name exists without an address"
        );
    }

    #[test]
    fn srv_at_the_service_name_lists_every_port() {
        let Answer::Found { answers, .. } = ask("echo.default.svc.cluster.local.", RecordType::SRV)
        else {
            panic!("no answer");
        };
        assert_eq!(
            answers,
            [
                srv(
                    "_http._tcp.echo.default.svc.cluster.local.",
                    50,
                    80,
                    "echo.default.svc.cluster.local."
                ),
                srv(
                    "_udp._udp.echo.default.svc.cluster.local.",
                    50,
                    5353,
                    "echo.default.svc.cluster.local."
                ),
            ]
        );
    }

    #[test]
    fn names_outside_the_cluster_domain_are_refused() {
        assert_eq!(ask("example.com.", RecordType::A), Answer::Refused);
        assert_eq!(
            ask("cluster.local.example.com.", RecordType::A),
            Answer::Refused
        );
        assert_eq!(ask("xcluster.local.", RecordType::A), Answer::Refused);
        assert_eq!(ask(".", RecordType::NS), Answer::Refused);
    }

    #[test]
    fn unknown_names_in_the_cluster_domain_do_not_exist() {
        for name in [
            "nope.default.svc.cluster.local.",
            "echo.nope.svc.cluster.local.",
            "echo.default.cluster.local.",
            "nope.svc.cluster.local.",
            "1-2-3-4.default.pod.cluster.local.",
            "10-244-2-7.echo.default.svc.cluster.local.",
            "a.b._http._tcp.echo.default.svc.cluster.local.",
        ] {
            assert_eq!(ask(name, RecordType::A), Answer::NxDomain, "{name}");
        }
    }

    #[test]
    fn names_that_exist_without_the_asked_type_answer_no_data() {
        let nodata = found(vec![], vec![]);
        for (name, qtype) in [
            ("cluster.local.", RecordType::A),
            ("svc.cluster.local.", RecordType::A),
            ("default.svc.cluster.local.", RecordType::A),
            ("echo.default.svc.cluster.local.", RecordType::AAAA),
            ("db.default.svc.cluster.local.", RecordType::AAAA),
            ("_tcp.echo.default.svc.cluster.local.", RecordType::SRV),
        ] {
            assert_eq!(ask(name, qtype), nodata, "{name} {qtype}");
        }
        assert_eq!(
            ask("cluster.local.", RecordType::SOA),
            found(
                vec![Record {
                    name: "cluster.local.".into(),
                    data: Data::Soa
                }],
                vec![]
            )
        );
    }

    #[test]
    fn an_external_name_service_is_an_alias() {
        assert_eq!(
            ask("ext.default.svc.cluster.local.", RecordType::A),
            found(
                vec![Record {
                    name: "ext.default.svc.cluster.local.".into(),
                    data: Data::Cname("db.example.com.".into())
                }],
                vec![]
            )
        );
    }

    #[test]
    fn a_deleted_service_no_longer_answers() {
        let mut snap = cluster();
        snap.services
            .retain(|s| s.metadata.name.as_deref() != Some("echo"));
        assert_eq!(
            lookup(
                &snap,
                &Zone::new("cluster.local."),
                "echo.default.svc.cluster.local.",
                RecordType::A
            ),
            Answer::NxDomain
        );
    }
}
