//! When a tracked flow is over: which entries of the conntrack (`CT`) and source NAT (`NAT`)
//! tables the sweeper removes.
//!
//! Both tables are LRU maps. When one is full the kernel evicts the least recently used entry —
//! which may be a live but idle connection (a database session quiet for minutes) while
//! thousands of flows that already closed wait there. The sweeper keeps room by removing flows
//! that are over, judged like netfilter's conntrack under kube-proxy's settings:
//!
//! | flow                                   | removed after idle | reference                                              |
//! |----------------------------------------|--------------------|--------------------------------------------------------|
//! | TCP, RST seen, or FIN seen both ways   | 10 s               | netfilter `tcp_timeout_close`; Cilium's closing timeout |
//! | TCP, FIN seen one way (half closed)    | 1 h                | kube-proxy `--conntrack-tcp-timeout-close-wait`          |
//! | TCP, open                              | 24 h               | kube-proxy `--conntrack-tcp-timeout-established`         |
//! | UDP, answered                          | 120 s              | netfilter `udp_timeout_stream`                          |
//! | UDP, never answered                    | 30 s               | netfilter `udp_timeout`                                 |
//! | anything else                          | 30 s               | netfilter `generic`/`icmp` timeouts                     |
//!
//! A closed flow is not kept for netfilter's 120 s TIME_WAIT: a load balancer only needs an
//! entry while packets of the connection may still come, and at thousands of connections per
//! second two minutes of closed flows would fill the table — the eviction this module exists to
//! prevent. (A late retransmitted FIN that misses conntrack is answered by the endpoints.)
//!
//! The datapath refreshes a `CT` entry's `last_seen` at most once per `CT_REFRESH_NS` (1 s), so
//! an idle time read here is up to a second long: a closed flow may go after 9 s.
//!
//! Invariant: a flow's two entries (forward and reply) are judged together — both go or both
//! stay — from the union of their closing flags and the later of their last-seen times; an
//! entry whose partner is gone (evicted, or taken over by another flow) is judged alone.
//! Everything here is pure: entries and the time in, keys to remove out.
use std::collections::HashMap;
use std::time::Duration;

use switchyard_abi::{
    proto, Backend, CtKey, CtValue, NatEntry, NatKey, RevNat, CT_DIR_FORWARD, CT_DIR_REPLY,
    CT_FLAG_FIN, CT_FLAG_RST,
};

/// How long a flow may stay idle, by state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after an RST, or after a FIN in both directions.
    pub tcp_closed: Duration,
    /// TCP after a FIN in one direction only.
    pub tcp_half_closed: Duration,
    /// Open TCP.
    pub tcp_established: Duration,
    /// UDP that got an answer.
    pub udp_answered: Duration,
    /// UDP never answered, and other protocols.
    pub other: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            tcp_closed: Duration::from_secs(10),
            tcp_half_closed: Duration::from_secs(3600),
            tcp_established: Duration::from_secs(24 * 3600),
            udp_answered: Duration::from_secs(120),
            other: Duration::from_secs(30),
        }
    }
}

/// What the sweeper knows of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryState {
    /// `CT_FLAG_*` / `NAT_FLAG_*` (the same bits).
    pub flags: u8,
    /// `bpf_ktime_get_ns()` (NAT) or `bpf_ktime_get_coarse_ns()` (CT) of its last packet.
    pub last_seen: u64,
    /// A packet went this entry's way (always true for NAT entries, which keep no count).
    pub used: bool,
}

impl Timeouts {
    /// How long a flow of `proto` whose entries are `own` and `partner` may stay idle.
    pub fn idle_limit(
        &self,
        proto: u8,
        own: &EntryState,
        partner: Option<&EntryState>,
    ) -> Duration {
        let all = own.flags | partner.map_or(0, |p| p.flags);
        match proto {
            proto::TCP if all & CT_FLAG_RST != 0 => self.tcp_closed,
            proto::TCP if partner.is_some_and(|p| own.flags & p.flags & CT_FLAG_FIN != 0) => {
                self.tcp_closed
            }
            proto::TCP if all & CT_FLAG_FIN != 0 => self.tcp_half_closed,
            proto::TCP => self.tcp_established,
            proto::UDP if own.used && partner.is_some_and(|p| p.used) => self.udp_answered,
            _ => self.other,
        }
    }
}

/// Keys of `entries` whose flow is over at `now` (nanoseconds of the clock
/// `bpf_ktime_get_ns()` reads, `CLOCK_MONOTONIC`; CT entries are stamped with its coarse
/// version, at most a tick behind). `partner` names an entry's other half;
/// it counts only when that entry exists and names this one back.
pub fn expired<V>(
    entries: &HashMap<CtKey, V>,
    partner: impl Fn(&CtKey, &V) -> Option<CtKey>,
    state: impl Fn(&V) -> EntryState,
    now: u64,
    timeouts: &Timeouts,
) -> Vec<CtKey> {
    let mut out = Vec::new();
    for (key, value) in entries {
        let own = state(value);
        let other = partner(key, value).and_then(|pk| {
            let pv = entries.get(&pk)?;
            (partner(&pk, pv) == Some(*key)).then(|| state(pv))
        });
        let last = other.map_or(own.last_seen, |o| o.last_seen.max(own.last_seen));
        let idle = Duration::from_nanos(now.saturating_sub(last));
        if idle > timeouts.idle_limit(key.proto, &own, other.as_ref()) {
            out.push(*key);
        }
    }
    out
}

/// The state of a conntrack entry.
pub fn ct_state(v: &CtValue) -> EntryState {
    EntryState {
        flags: v.flags,
        last_seen: v.last_seen,
        used: v.packets > 0,
    }
}

/// The other half of conntrack entry `key`: a forward entry's reply entry (backend → client,
/// through the backend `backend` gives for its id), a reply entry's forward entry (client →
/// frontend, through the frontend `front` gives for its rev-NAT id).
pub fn ct_partner(
    key: &CtKey,
    value: &CtValue,
    backend: impl Fn(u32) -> Option<Backend>,
    front: impl Fn(u32) -> Option<RevNat>,
) -> Option<CtKey> {
    match key.dir {
        CT_DIR_FORWARD => backend(value.backend_id).map(|b| CtKey {
            saddr: b.addr,
            daddr: key.saddr,
            sport: b.port,
            dport: key.sport,
            dir: CT_DIR_REPLY,
            ..*key
        }),
        CT_DIR_REPLY => front(value.rev_nat_id).map(|f| CtKey {
            saddr: key.daddr,
            daddr: f.addr,
            sport: key.dport,
            dport: f.port,
            dir: CT_DIR_FORWARD,
            ..*key
        }),
        _ => None,
    }
}

/// The state of a NAT entry.
pub fn nat_state(v: &NatEntry) -> EntryState {
    EntryState {
        flags: v.flags,
        last_seen: v.last_seen,
        used: true,
    }
}

/// The other half of NAT entry `key`: a forward entry (original tuple → translated source)
/// names the reply tuple to the translated source; a reply entry (reply tuple → original
/// source) names the original tuple.
pub fn nat_partner(key: &NatKey, value: &NatEntry) -> Option<NatKey> {
    match key.dir {
        CT_DIR_FORWARD => Some(NatKey {
            saddr: key.daddr,
            daddr: value.addr,
            sport: key.dport,
            dport: value.port,
            dir: CT_DIR_REPLY,
            ..*key
        }),
        CT_DIR_REPLY => Some(NatKey {
            saddr: value.addr,
            daddr: key.saddr,
            sport: value.port,
            dport: key.sport,
            dir: CT_DIR_FORWARD,
            ..*key
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;
    use switchyard_abi::addr_be;

    const SEC: u64 = 1_000_000_000;
    const CLIENT: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 244, 1, 2), 40_000);
    const VIP: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 96, 0, 10), 80);
    const POD: (Ipv4Addr, u16) = (Ipv4Addr::new(10, 244, 2, 3), 8080);

    fn key(src: (Ipv4Addr, u16), dst: (Ipv4Addr, u16), proto: u8, dir: u8) -> CtKey {
        CtKey {
            saddr: addr_be(src.0),
            daddr: addr_be(dst.0),
            sport: src.1.to_be(),
            dport: dst.1.to_be(),
            proto,
            dir,
            pad: [0; 2],
        }
    }

    /// A load-balanced flow's two entries, last seen at `fwd_at`/`rep_at` seconds with
    /// closing flags `fwd_flags`/`rep_flags`.
    fn flow(proto: u8, fwd: (u8, u64), rep: (u8, u64)) -> HashMap<CtKey, CtValue> {
        let value = |(flags, at): (u8, u64), packets| CtValue {
            backend_id: 1,
            rev_nat_id: 1,
            flags,
            last_seen: at * SEC,
            packets,
            ..CtValue::default()
        };
        HashMap::from([
            (key(CLIENT, VIP, proto, CT_DIR_FORWARD), value(fwd, 1)),
            (key(POD, CLIENT, proto, CT_DIR_REPLY), value(rep, 1)),
        ])
    }

    fn sweep_ct(entries: &HashMap<CtKey, CtValue>, now_s: u64) -> Vec<CtKey> {
        let backend = |_| {
            Some(Backend {
                addr: addr_be(POD.0),
                port: POD.1.to_be(),
                ..Backend::default()
            })
        };
        let front = |_| {
            Some(RevNat {
                addr: addr_be(VIP.0),
                port: VIP.1.to_be(),
                pad: 0,
            })
        };
        let mut out = expired(
            entries,
            |k, v| ct_partner(k, v, backend, front),
            ct_state,
            now_s * SEC,
            &Timeouts::default(),
        );
        out.sort_by_key(|k| k.dir);
        out
    }

    #[test]
    fn a_flow_closed_both_ways_goes_after_ten_seconds_and_both_its_entries_with_it() {
        let f = flow(proto::TCP, (CT_FLAG_FIN, 100), (CT_FLAG_FIN, 101));
        assert!(sweep_ct(&f, 110).is_empty(), "9 s after the last packet");
        assert_eq!(sweep_ct(&f, 112).len(), 2);
    }

    #[test]
    fn an_rst_in_either_direction_closes_the_flow() {
        let f = flow(proto::TCP, (0, 100), (CT_FLAG_RST, 100));
        assert_eq!(sweep_ct(&f, 111).len(), 2);
    }

    #[test]
    fn a_half_closed_flow_is_kept_for_an_hour() {
        let f = flow(proto::TCP, (CT_FLAG_FIN, 100), (0, 100));
        assert!(sweep_ct(&f, 100 + 3599).is_empty());
        assert_eq!(sweep_ct(&f, 100 + 3601).len(), 2);
    }

    #[test]
    fn an_idle_open_connection_is_kept_for_a_day() {
        let f = flow(proto::TCP, (0, 100), (0, 100));
        assert!(sweep_ct(&f, 100 + 23 * 3600).is_empty());
        assert_eq!(sweep_ct(&f, 100 + 25 * 3600).len(), 2);
    }

    #[test]
    fn the_later_of_the_two_directions_counts_as_the_flow_s_last_packet() {
        // The client is silent, the backend streams: the flow is alive.
        let f = flow(proto::TCP, (CT_FLAG_FIN, 100), (CT_FLAG_FIN, 5000));
        assert!(sweep_ct(&f, 5005).is_empty());
    }

    #[test]
    fn a_udp_flow_without_an_answer_goes_after_thirty_seconds_an_answered_one_after_two_minutes() {
        let mut f = flow(proto::UDP, (0, 100), (0, 100));
        let reply = key(POD, CLIENT, proto::UDP, CT_DIR_REPLY);
        f.get_mut(&reply).unwrap().packets = 0;
        assert_eq!(sweep_ct(&f, 131).len(), 2, "unanswered");
        f.get_mut(&reply).unwrap().packets = 1;
        assert!(sweep_ct(&f, 131).is_empty(), "answered");
        assert_eq!(sweep_ct(&f, 221).len(), 2);
    }

    #[test]
    fn an_entry_whose_partner_belongs_to_another_flow_is_judged_alone() {
        let mut f = flow(proto::TCP, (CT_FLAG_FIN, 100), (CT_FLAG_FIN, 100));
        // The reply tuple was taken over by a flow to another frontend (rev-NAT id 2).
        f.get_mut(&key(POD, CLIENT, proto::TCP, CT_DIR_REPLY))
            .unwrap()
            .rev_nat_id = 2;
        let front = |id: u32| {
            Some(RevNat {
                addr: addr_be(if id == 1 {
                    VIP.0
                } else {
                    Ipv4Addr::new(10, 96, 0, 11)
                }),
                port: VIP.1.to_be(),
                pad: 0,
            })
        };
        let backend = |_| {
            Some(Backend {
                addr: addr_be(POD.0),
                port: POD.1.to_be(),
                ..Backend::default()
            })
        };
        let gone = expired(
            &f,
            |k, v| ct_partner(k, v, backend, front),
            ct_state,
            120 * SEC,
            &Timeouts::default(),
        );
        // Each alone has one FIN: half closed, so nothing goes after 20 s.
        assert!(gone.is_empty());
    }

    #[test]
    fn a_nat_translation_s_two_entries_name_each_other() {
        let forward = key(CLIENT, VIP, proto::TCP, CT_DIR_FORWARD);
        let translated = NatEntry {
            addr: addr_be(Ipv4Addr::new(192, 168, 1, 1)),
            port: 61_000u16.to_be(),
            ..NatEntry::default()
        };
        let reply = nat_partner(&forward, &translated).unwrap();
        assert_eq!(reply.saddr, forward.daddr);
        assert_eq!(reply.daddr, translated.addr);
        assert_eq!(reply.dport, translated.port);
        assert_eq!(reply.dir, CT_DIR_REPLY);
        let original = NatEntry {
            addr: forward.saddr,
            port: forward.sport,
            ..NatEntry::default()
        };
        assert_eq!(nat_partner(&reply, &original), Some(forward));
    }
}
