//! Conntrack and NAT entries as people read them (`switchyard inspect conntrack|nat`): one row
//! per entry with addresses in dotted form, what it translates to, its closing state and age,
//! filtered by address, port, protocol or frontend.
//!
//! Invariant: pure — entries, the frontends and backends they name and the time in, rows out;
//! a filter only hides rows, never changes one.
use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde::Serialize;
use switchyard_abi::{
    addr_from_be, proto, Backend, CtKey, CtValue, NatEntry, NatKey, RevNat, CT_DIR_FORWARD,
    CT_FLAG_FIN, CT_FLAG_RST,
};

/// One entry of the conntrack or NAT table.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FlowRow {
    /// `forward` (as the client sent it) or `reply` (as the answer arrives).
    pub dir: &'static str,
    /// `tcp`, `udp`, `icmp` or the protocol number.
    pub proto: String,
    /// Source `ip:port` of the tuple.
    pub src: String,
    /// Destination `ip:port` of the tuple.
    pub dst: String,
    /// Conntrack: the backend (forward entries) or the frontend restored (reply entries);
    /// NAT: the translated source (forward) or the original source restored (reply).
    pub to: String,
    /// Conntrack: the frontend `ip:port` of the flow (from its rev-NAT id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub frontend: Option<String>,
    /// `open`, `fin` or `rst`: closing flags seen in this direction.
    pub state: &'static str,
    /// Seconds since the entry's last packet.
    pub idle_seconds: u64,
    /// Conntrack: packets in this direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub packets: Option<u64>,
    /// Conntrack: bytes in this direction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
}

/// Which rows to show; every given criterion must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Filter {
    /// An address of the tuple or of its translation.
    pub addr: Option<Ipv4Addr>,
    /// A port of the tuple or of its translation.
    pub port: Option<u16>,
    /// The protocol (`tcp`, `udp`).
    pub proto: Option<String>,
    /// The frontend `ip:port` (conntrack only).
    pub frontend: Option<String>,
}

impl Filter {
    /// Whether `row` passes.
    pub fn keeps(&self, row: &FlowRow) -> bool {
        let ends = [&row.src, &row.dst, &row.to];
        let addr_ok = self.addr.is_none_or(|a| {
            let a = a.to_string();
            ends.iter().any(|e| e.split(':').next() == Some(a.as_str()))
        });
        let port_ok = self.port.is_none_or(|p| {
            let p = p.to_string();
            ends.iter()
                .any(|e| e.rsplit(':').next() == Some(p.as_str()))
        });
        let proto_ok = self
            .proto
            .as_ref()
            .is_none_or(|p| p.eq_ignore_ascii_case(&row.proto));
        let front_ok = self
            .frontend
            .as_ref()
            .is_none_or(|f| row.frontend.as_deref() == Some(f.as_str()));
        addr_ok && port_ok && proto_ok && front_ok
    }
}

fn endpoint(addr: u32, port: u16) -> String {
    format!("{}:{}", addr_from_be(addr), u16::from_be(port))
}

fn proto_name(p: u8) -> String {
    match p {
        proto::TCP => "tcp".into(),
        proto::UDP => "udp".into(),
        1 => "icmp".into(),
        n => n.to_string(),
    }
}

fn state(flags: u8) -> &'static str {
    if flags & CT_FLAG_RST != 0 {
        "rst"
    } else if flags & CT_FLAG_FIN != 0 {
        "fin"
    } else {
        "open"
    }
}

fn dir(d: u8) -> &'static str {
    if d == CT_DIR_FORWARD {
        "forward"
    } else {
        "reply"
    }
}

fn tuple(k: &CtKey) -> (String, String) {
    (endpoint(k.saddr, k.sport), endpoint(k.daddr, k.dport))
}

/// Conntrack rows at `now` (`CLOCK_MONOTONIC` ns), sorted by tuple.
pub fn conntrack_rows(
    entries: &HashMap<CtKey, CtValue>,
    backends: &HashMap<u32, Backend>,
    fronts: &HashMap<u32, RevNat>,
    now: u64,
    filter: &Filter,
) -> Vec<FlowRow> {
    let mut rows: Vec<FlowRow> = entries
        .iter()
        .map(|(k, v)| {
            let frontend = fronts.get(&v.rev_nat_id).map(|f| endpoint(f.addr, f.port));
            let to = if k.dir == CT_DIR_FORWARD {
                backends.get(&v.backend_id).map_or_else(
                    || format!("backend #{} (removed)", v.backend_id),
                    |b| endpoint(b.addr, b.port),
                )
            } else {
                frontend
                    .clone()
                    .unwrap_or_else(|| "(frontend removed)".into())
            };
            let (src, dst) = tuple(k);
            FlowRow {
                dir: dir(k.dir),
                proto: proto_name(k.proto),
                src,
                dst,
                to,
                frontend,
                state: state(v.flags),
                idle_seconds: now.saturating_sub(v.last_seen) / 1_000_000_000,
                packets: Some(v.packets),
                bytes: Some(v.bytes),
            }
        })
        .filter(|r| filter.keeps(r))
        .collect();
    rows.sort_by(|a, b| (&a.src, &a.dst, a.dir).cmp(&(&b.src, &b.dst, b.dir)));
    rows
}

/// NAT rows at `now` (`CLOCK_MONOTONIC` ns), sorted by tuple.
pub fn nat_rows(entries: &HashMap<NatKey, NatEntry>, now: u64, filter: &Filter) -> Vec<FlowRow> {
    let mut rows: Vec<FlowRow> = entries
        .iter()
        .map(|(k, v)| {
            let (src, dst) = tuple(k);
            FlowRow {
                dir: dir(k.dir),
                proto: proto_name(k.proto),
                src,
                dst,
                to: endpoint(v.addr, v.port),
                frontend: None,
                state: state(v.flags),
                idle_seconds: now.saturating_sub(v.last_seen) / 1_000_000_000,
                packets: None,
                bytes: None,
            }
        })
        .filter(|r| filter.keeps(r))
        .collect();
    rows.sort_by(|a, b| (&a.src, &a.dst, a.dir).cmp(&(&b.src, &b.dst, b.dir)));
    rows
}

/// A row as one line of text.
pub fn line(row: &FlowRow) -> String {
    let mut s = format!(
        "{:<7} {:<4} {:>21} -> {:<21} => {:<21} {:<4} idle {}s",
        row.dir, row.proto, row.src, row.dst, row.to, row.state, row.idle_seconds
    );
    if let Some(f) = &row.frontend {
        s.push_str(&format!(" frontend {f}"));
    }
    if let (Some(p), Some(b)) = (row.packets, row.bytes) {
        s.push_str(&format!(" packets {p} bytes {b}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_abi::{addr_be, CT_DIR_REPLY};

    const SEC: u64 = 1_000_000_000;

    fn key(s: [u8; 4], sp: u16, d: [u8; 4], dp: u16, dir: u8) -> CtKey {
        CtKey {
            saddr: addr_be(s.into()),
            daddr: addr_be(d.into()),
            sport: sp.to_be(),
            dport: dp.to_be(),
            proto: proto::TCP,
            dir,
            pad: [0; 2],
        }
    }

    fn world() -> (
        HashMap<CtKey, CtValue>,
        HashMap<u32, Backend>,
        HashMap<u32, RevNat>,
    ) {
        let ct = HashMap::from([
            (
                key([10, 244, 1, 2], 40000, [10, 96, 0, 10], 80, CT_DIR_FORWARD),
                CtValue {
                    backend_id: 3,
                    rev_nat_id: 5,
                    flags: CT_FLAG_FIN,
                    last_seen: 90 * SEC,
                    packets: 4,
                    bytes: 400,
                    ..CtValue::default()
                },
            ),
            (
                key([10, 244, 2, 3], 8080, [10, 244, 1, 2], 40000, CT_DIR_REPLY),
                CtValue {
                    backend_id: 3,
                    rev_nat_id: 5,
                    last_seen: 95 * SEC,
                    packets: 3,
                    bytes: 900,
                    ..CtValue::default()
                },
            ),
        ]);
        let backends = HashMap::from([(
            3,
            Backend {
                addr: addr_be([10, 244, 2, 3].into()),
                port: 8080u16.to_be(),
                ..Backend::default()
            },
        )]);
        let fronts = HashMap::from([(
            5,
            RevNat {
                addr: addr_be([10, 96, 0, 10].into()),
                port: 80u16.to_be(),
                pad: 0,
            },
        )]);
        (ct, backends, fronts)
    }

    #[test]
    fn a_forward_entry_shows_its_backend_and_a_reply_entry_the_frontend_it_restores() {
        let (ct, b, f) = world();
        let rows = conntrack_rows(&ct, &b, &f, 100 * SEC, &Filter::default());
        assert_eq!(rows.len(), 2);
        let fwd = rows.iter().find(|r| r.dir == "forward").unwrap();
        assert_eq!(fwd.src, "10.244.1.2:40000");
        assert_eq!(fwd.dst, "10.96.0.10:80");
        assert_eq!(fwd.to, "10.244.2.3:8080");
        assert_eq!(fwd.state, "fin");
        assert_eq!(fwd.idle_seconds, 10);
        let rep = rows.iter().find(|r| r.dir == "reply").unwrap();
        assert_eq!(rep.to, "10.96.0.10:80");
        assert_eq!(rep.bytes, Some(900));
    }

    #[test]
    fn filters_keep_only_rows_that_match_every_criterion() {
        let (ct, b, f) = world();
        let by = |filter: Filter| conntrack_rows(&ct, &b, &f, 100 * SEC, &filter).len();
        assert_eq!(
            by(Filter {
                addr: Some([10, 244, 2, 3].into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            by(Filter {
                port: Some(80),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            by(Filter {
                port: Some(81),
                ..Filter::default()
            }),
            0
        );
        assert_eq!(
            by(Filter {
                proto: Some("udp".into()),
                ..Filter::default()
            }),
            0
        );
        assert_eq!(
            by(Filter {
                frontend: Some("10.96.0.10:80".into()),
                addr: Some([10, 244, 1, 2].into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            by(Filter {
                addr: Some([10, 244, 1, 20].into()),
                ..Filter::default()
            }),
            0
        );
    }

    #[test]
    fn a_forward_entry_whose_backend_was_removed_says_so() {
        let (ct, _, f) = world();
        let rows = conntrack_rows(&ct, &HashMap::new(), &f, 100 * SEC, &Filter::default());
        assert!(rows.iter().any(|r| r.to == "backend #3 (removed)"));
    }
}
