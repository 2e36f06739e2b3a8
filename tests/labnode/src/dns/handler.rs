//! The DNS messages: hickory's server hands every query (UDP or TCP) to [`Handler`], which
//! answers it from a fresh [`Snapshot`] through [`lookup`] and encodes the records.
//!
//! Invariant: every query gets exactly one response and none is ever forwarded: in-zone answers
//! are authoritative (AA set; NXDOMAIN and NODATA carry the zone's SOA, whose minimum is the
//! negative-caching time), names outside the zone get REFUSED, recursion is never available.
use super::lookup::{self, Answer, Data, Zone};
use super::snapshot::Snapshot;
use hickory_proto::op::{Edns, MessageType, Metadata, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, CNAME, SOA, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record};
use hickory_server::net::runtime::Time;
use hickory_server::server::{Request, RequestHandler, ResponseHandler, ResponseInfo};
use hickory_server::zone_handler::MessageResponseBuilder;

/// Time to live of every record, and the negative-caching time (CoreDNS's default).
pub const TTL: u32 = 5;

/// Where the snapshot a query is answered from comes from.
pub trait Source: Send + Sync + Unpin + 'static {
    /// The cluster's objects now.
    fn snapshot(&self) -> Snapshot;
}

/// Answers queries for one zone from the objects of a [`Source`].
pub struct Handler<S> {
    zone: Zone,
    source: S,
}

impl<S: Source> Handler<S> {
    /// A handler for `zone`.
    pub fn new(zone: Zone, source: S) -> Handler<S> {
        Handler { zone, source }
    }
}

/// `name` as a DNS name (the lookup only makes valid names).
fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap_or_else(|_| Name::root())
}

/// The zone's SOA record (CoreDNS's fields).
fn soa(zone: &Zone) -> Record {
    let origin = zone.origin();
    Record::from_rdata(
        name(&format!("{origin}.")),
        TTL,
        RData::SOA(SOA::new(
            name(&format!("ns.dns.{origin}.")),
            name(&format!("hostmaster.{origin}.")),
            1,
            7200,
            1800,
            86400,
            TTL,
        )),
    )
}

/// The wire record of `r`.
fn record(zone: &Zone, r: &lookup::Record) -> Record {
    let owner = name(&r.name);
    match &r.data {
        Data::A(ip) => Record::from_rdata(owner, TTL, RData::A(A(*ip))),
        Data::Srv {
            priority,
            weight,
            port,
            target,
        } => Record::from_rdata(
            owner,
            TTL,
            RData::SRV(SRV::new(*priority, *weight, *port, name(target))),
        ),
        Data::Cname(target) => Record::from_rdata(owner, TTL, RData::CNAME(CNAME(name(target)))),
        Data::Soa => soa(zone),
    }
}

/// A response's code, AA flag and records.
#[derive(Default)]
struct Reply {
    code: ResponseCode,
    authoritative: bool,
    answers: Vec<Record>,
    additionals: Vec<Record>,
    /// The zone's SOA, for NXDOMAIN and NODATA.
    authority: Vec<Record>,
}

/// The reply that says `answer`.
fn reply(zone: &Zone, answer: &Answer) -> Reply {
    let convert = |rs: &[lookup::Record]| rs.iter().map(|r| record(zone, r)).collect::<Vec<_>>();
    match answer {
        Answer::Refused => Reply {
            code: ResponseCode::Refused,
            ..Reply::default()
        },
        Answer::NxDomain => Reply {
            code: ResponseCode::NXDomain,
            authoritative: true,
            authority: vec![soa(zone)],
            ..Reply::default()
        },
        Answer::Found {
            answers,
            additionals,
        } => Reply {
            code: ResponseCode::NoError,
            authoritative: true,
            answers: convert(answers),
            additionals: convert(additionals),
            authority: if answers.is_empty() {
                vec![soa(zone)]
            } else {
                vec![]
            },
        },
    }
}

#[async_trait::async_trait]
impl<S: Source> RequestHandler for Handler<S> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        // Answer EDNS with EDNS, advertising the client's own buffer size (at least 512).
        let edns = request.edns.as_ref().map(|e| {
            let mut ours = Edns::new();
            ours.set_max_payload(e.max_payload().max(512))
                .set_version(0);
            ours
        });
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut meta = Metadata::response_from_request(&request.metadata);
        let query = match (request.request_info(), request.metadata.op_code) {
            (Ok(info), OpCode::Query) if request.metadata.message_type == MessageType::Query => {
                Ok(info.query)
            }
            (Ok(_), OpCode::Query) | (Err(_), _) => Err(ResponseCode::FormErr),
            (Ok(_), _) => Err(ResponseCode::NotImp),
        };
        let reply = match query {
            Ok(q) if q.query_class() == DNSClass::IN => {
                let snapshot = self.source.snapshot();
                let name = q.name().to_string();
                reply(
                    &self.zone,
                    &lookup::lookup(&snapshot, &self.zone, &name, q.query_type()),
                )
            }
            Ok(_) => reply(&self.zone, &Answer::Refused),
            Err(code) => Reply {
                code,
                ..Reply::default()
            },
        };
        meta.response_code = reply.code;
        meta.authoritative = reply.authoritative;
        let response = builder.build(
            meta,
            reply.answers.iter(),
            std::iter::empty(),
            reply.authority.iter(),
            reply.additionals.iter(),
        );
        match response_handle.send_response(response).await {
            Ok(info) => info,
            Err(e) => {
                tracing::warn!(error = %e, "cannot send a DNS response");
                meta.response_code = ResponseCode::ServFail;
                hickory_proto::op::Header {
                    metadata: meta,
                    counts: Default::default(),
                }
                .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::snapshot::fixtures::service;
    use super::*;
    use hickory_proto::op::{Message, Query};
    use hickory_proto::rr::RecordType;
    use hickory_proto::serialize::binary::BinEncoder;
    use hickory_server::net::runtime::TokioTime;
    use hickory_server::net::xfer::Protocol;
    use hickory_server::zone_handler::MessageResponse;
    use serde_json::json;
    use std::sync::{Arc, Mutex};

    struct Fixed(Snapshot);

    impl Source for Fixed {
        fn snapshot(&self) -> Snapshot {
            self.0.clone()
        }
    }

    /// Keeps the encoded response.
    #[derive(Clone, Default)]
    struct Capture(Arc<Mutex<Vec<u8>>>);

    #[async_trait::async_trait]
    impl ResponseHandler for Capture {
        async fn send_response<'a>(
            &mut self,
            response: MessageResponse<
                '_,
                'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
                impl Iterator<Item = &'a Record> + Send + 'a,
            >,
        ) -> Result<ResponseInfo, hickory_server::net::NetError> {
            let mut bytes = self.0.lock().unwrap();
            let mut encoder = BinEncoder::new(&mut bytes);
            Ok(response.destructive_emit(&mut encoder)?)
        }
    }

    /// Sends one query through the handler; the decoded response.
    async fn ask(name: &str, qtype: RecordType) -> Message {
        let handler = Handler::new(
            Zone::new("cluster.local"),
            Fixed(Snapshot::new(
                vec![service(
                    "default",
                    "echo",
                    json!({"clusterIP": "10.96.0.20", "ports": [{"name": "http", "port": 80}]}),
                )],
                vec![],
            )),
        );
        let mut query = Message::query();
        query.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
        query.metadata.recursion_desired = true;
        let request = Request::from_bytes(
            query.to_vec().unwrap(),
            "10.244.1.5:40000".parse().unwrap(),
            Protocol::Udp,
        )
        .unwrap();
        let capture = Capture::default();
        handler
            .handle_request::<_, TokioTime>(&request, capture.clone())
            .await;
        let bytes = capture.0.lock().unwrap().clone();
        Message::from_vec(&bytes).unwrap()
    }

    #[tokio::test]
    async fn a_service_name_gets_an_authoritative_address_over_the_wire() {
        let m = ask("echo.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NoError);
        assert!(m.metadata.authoritative);
        assert!(!m.metadata.recursion_available);
        assert_eq!(m.answers.len(), 1);
        assert_eq!(m.answers[0].data, RData::A(A::new(10, 96, 0, 20)), "{m:?}");
        assert_eq!(m.answers[0].ttl, TTL);
    }

    #[tokio::test]
    async fn an_unknown_name_gets_nxdomain_with_the_zones_soa() {
        let m = ask("nope.default.svc.cluster.local.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.authoritative);
        assert!(m.answers.is_empty());
        assert_eq!(m.authorities.len(), 1);
        assert_eq!(m.authorities[0].record_type(), RecordType::SOA);
    }

    #[tokio::test]
    async fn a_name_outside_the_cluster_is_refused_not_forwarded() {
        let m = ask("example.com.", RecordType::A).await;
        assert_eq!(m.metadata.response_code, ResponseCode::Refused);
        assert!(!m.metadata.authoritative);
        assert!(!m.metadata.recursion_available);
        assert!(m.answers.is_empty() && m.authorities.is_empty());
    }
}
