//! Service lookup and backend choice (the frontend → slot → backend split of `SERVICES`/`BACKENDS`).
//!
//! A frontend's header may name a second scope for clients inside the cluster
//! (`SVC_FLAG_TWO_SCOPES`: `externalTrafficPolicy: Local` sends outside clients to this node's
//! endpoints only, pods to all); [`Frontend`] carries the header and scope a lookup settled on.
//! New flows pick a slot at random, or by the flow's hash for Maglev frontends (so every node
//! picks the same backend for a flow), or by the client's ClientIP affinity.
use aya_ebpf::helpers::{bpf_get_prandom_u32, bpf_ktime_get_ns};
use aya_ebpf::maps::lpm_trie::Key;
use switchyard_abi::{
    proto, stat, AffinityKey, AffinityMatchKey, AffinityValue, Backend, CtValue, ServiceKey,
    ServiceValue, SourceRangeKey, BACKEND_ACTIVE, SCOPE_EXTERNAL, SCOPE_INTERNAL,
    SOURCE_RANGE_PREFIX, SVC_FLAG_AFFINITY, SVC_FLAG_MAGLEV, SVC_FLAG_SOURCE_RANGES,
    SVC_FLAG_TWO_SCOPES,
};

use crate::maps::{AFFINITY, AFFINITY_MATCH, BACKENDS, SERVICES, SOURCE_RANGES};
use crate::packet::{Flow, TCP_ACK, TCP_SYN};
use crate::{conntrack, stats};

/// Where a load-balanced packet goes: its backend's address and port (network byte order).
/// `repr(C)` with its padding spelled out and written: no partly initialised stack slot for the
/// verifier to reason about when the value is spilled.
#[derive(Clone, Copy)]
#[repr(C)]
pub struct Dest {
    /// The backend's IPv4 address.
    pub addr: u32,
    /// The backend's port.
    pub port: u16,
    pad: u16,
}

impl Dest {
    /// Where packets to `backend` go.
    #[inline(always)]
    fn of(backend: &Backend) -> Dest {
        Dest {
            addr: backend.addr,
            port: backend.port,
            pad: 0,
        }
    }

    /// Where the forward conntrack entry `ct` remembers its flow's packets go (`nat_addr`,
    /// `nat_port`).
    #[inline(always)]
    fn remembered_by(ct: &CtValue) -> Dest {
        Dest {
            addr: ct.nat_addr,
            port: ct.nat_port,
            pad: 0,
        }
    }
}

/// A frontend header and the scope its slots are in.
#[derive(Clone, Copy)]
pub struct Frontend {
    /// The header (slot 0).
    pub svc: ServiceValue,
    /// `SCOPE_EXTERNAL` or `SCOPE_INTERNAL`.
    pub scope: u8,
}

/// The service header (slot 0, external scope) of the frontend `flow` is addressed to, if any.
#[inline(always)]
pub fn lookup_service(flow: &Flow) -> Option<ServiceValue> {
    let key = ServiceKey::new(flow.daddr, flow.dport, flow.proto, 0);
    // SAFETY: the value is copied out at once; the agent replaces entries atomically per key.
    unsafe { SERVICES.get(&key) }.copied()
}

/// The frontend `svc` (found by [`lookup_service`]) as a client inside the cluster (`inside`)
/// or outside it sees it.
#[inline(always)]
pub fn scoped(flow: &Flow, svc: ServiceValue, inside: bool) -> Option<Frontend> {
    if inside && svc.flags & SVC_FLAG_TWO_SCOPES != 0 {
        let key = ServiceKey::scoped(flow.daddr, flow.dport, flow.proto, 0, SCOPE_INTERNAL);
        // SAFETY: copied out at once.
        let svc = unsafe { SERVICES.get(&key) }.copied()?;
        return Some(Frontend {
            svc,
            scope: SCOPE_INTERNAL,
        });
    }
    Some(Frontend {
        svc,
        scope: SCOPE_EXTERNAL,
    })
}

/// Whether `flow`'s client may use `svc` (`loadBalancerSourceRanges`).
#[inline(always)]
pub fn admitted(flow: &Flow, svc: &ServiceValue) -> bool {
    if svc.flags & SVC_FLAG_SOURCE_RANGES == 0 {
        return true;
    }
    let key = Key::new(
        SOURCE_RANGE_PREFIX + 32,
        SourceRangeKey {
            rev_nat_id: svc.rev_nat_id.to_be(),
            proto: flow.proto,
            pad: [0; 3],
            addr: flow.saddr,
        },
    );
    SOURCE_RANGES.get(&key).is_some()
}

/// A backend by id.
#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    // SAFETY: copied out at once.
    unsafe { BACKENDS.get(&id) }.copied()
}

/// murmur3's finaliser: spreads every input bit over the output.
#[inline(always)]
fn mix(mut h: u32) -> u32 {
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}

/// A hash of the flow's 5-tuple, the same on every node.
#[inline(always)]
pub fn flow_hash(flow: &Flow) -> u32 {
    let ports = (u32::from(flow.sport) << 16) | u32::from(flow.dport);
    mix(mix(mix(flow.saddr ^ 0x9e37_79b9) ^ flow.daddr) ^ ports) ^ u32::from(flow.proto)
}

/// Picks a backend for a new flow of `front`: the slot its hash names (Maglev frontends, when
/// `hash` is given), else a random one. `None` when the frontend has no backends or the
/// slot/backend is missing (the agent is in the middle of an update).
#[inline(always)]
pub fn select_backend(flow: &Flow, front: &Frontend, hash: Option<u32>) -> Option<(u32, Backend)> {
    let svc = &front.svc;
    if svc.count == 0 {
        return None;
    }
    let h = match hash {
        Some(h) if svc.flags & SVC_FLAG_MAGLEV != 0 => h,
        // SAFETY: plain helper call.
        _ => unsafe { bpf_get_prandom_u32() },
    };
    let slot = (h % u32::from(svc.count)) as u16 + 1;
    let key = ServiceKey::scoped(flow.daddr, flow.dport, flow.proto, slot, front.scope);
    // SAFETY: copied out at once.
    let id = unsafe { SERVICES.get(&key) }?.backend_id;
    backend(id).map(|b| (id, b))
}

/// A new flow's backend with ClientIP affinity: the one `client` last got from this frontend,
/// while it was chosen within the timeout, still belongs to the frontend and takes new
/// connections; else a fresh choice, remembered.
#[inline(always)]
pub fn with_affinity(
    client: u32,
    flow: &Flow,
    front: &Frontend,
    hash: Option<u32>,
) -> Option<(u32, Backend)> {
    let svc = &front.svc;
    let key = AffinityKey {
        client,
        rev_nat_id: svc.rev_nat_id,
        proto: flow.proto,
        pad: [0; 3],
    };
    // SAFETY: plain helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    // SAFETY: copied out at once.
    if let Some(a) = unsafe { AFFINITY.get(&key) }.copied() {
        let member = AffinityMatchKey {
            backend_id: a.backend_id,
            rev_nat_id: svc.rev_nat_id,
            proto: flow.proto,
            pad: [0; 3],
        };
        let fresh =
            now.saturating_sub(a.last_used) <= u64::from(svc.affinity_timeout) * 1_000_000_000;
        // SAFETY: copied out at once.
        if fresh && unsafe { AFFINITY_MATCH.get(&member) }.is_some() {
            if let Some(b) = backend(a.backend_id).filter(|b| b.state == BACKEND_ACTIVE) {
                remember(&key, a.backend_id, now);
                stats::inc(stat::AFFINITY_HIT);
                return Some((a.backend_id, b));
            }
        }
    }
    let (id, b) = select_backend(flow, front, hash)?;
    remember(&key, id, now);
    Some((id, b))
}

#[inline(always)]
fn remember(key: &AffinityKey, backend_id: u32, now: u64) {
    let value = AffinityValue {
        backend_id,
        pad: 0,
        last_used: now,
    };
    let _ = AFFINITY.insert(key, &value, 0);
}

/// A new flow's backend by the frontend's rules (affinity, Maglev, random).
#[inline(always)]
pub fn choose(
    client: u32,
    flow: &Flow,
    front: &Frontend,
    hash: Option<u32>,
) -> Option<(u32, Backend)> {
    if front.svc.flags & SVC_FLAG_AFFINITY != 0 {
        with_affinity(client, flow, front, hash)
    } else {
        select_backend(flow, front, hash)
    }
}

/// The backend for a packet to a frontend: the one conntrack remembers for this flow, else a new
/// choice (recorded in conntrack). A TCP SYN (TCP flags `tcp`) reuses a remembered backend only
/// while the flow's reply entry is still its own: clients reuse source ports, and a new
/// connection must not inherit a flow whose replies would no longer be translated (or would be
/// translated to another frontend). `Ok(None)` when the frontend has no backend at all; `Err`
/// carries a drop reason.
#[inline(always)]
pub fn pick(flow: &Flow, front: &Frontend, len: u32, tcp: u8) -> Result<Option<Dest>, u32> {
    let svc = &front.svc;
    let syn = flow.proto == proto::TCP && tcp & (TCP_SYN | TCP_ACK) == TCP_SYN;
    // Looked up in `BACKENDS` whatever the entry's age: a SYN's backend, and every UDP
    // datagram's (see `remembered`).
    let always = syn || flow.proto != proto::TCP;
    if let Some((ct, to)) = conntrack::touch(&conntrack::forward_key(flow), len, tcp)
        .and_then(|hit| remembered(&hit.entry, always || hit.due).map(|to| (hit.entry, to)))
    {
        if !syn || conntrack::reply_matches(flow, to.addr, to.port, ct.rev_nat_id) {
            stats::inc(stat::LB_ESTABLISHED);
            stats::service(svc.rev_nat_id, len, false);
            return Ok(Some(to));
        }
    }
    if svc.count == 0 {
        return Ok(None);
    }
    let (id, b) =
        choose(flow.saddr, flow, front, Some(flow_hash(flow))).ok_or(stat::DROP_STALE_SLOT)?;
    conntrack::create(flow, id, &b, svc.rev_nat_id, len);
    stats::inc(stat::LB_NEW);
    stats::service(svc.rev_nat_id, len, true);
    Ok(Some(Dest::of(&b)))
}

/// The backend of a packet (`len` bytes, TCP flags `tcp`) of an established TCP flow whose
/// forward conntrack entry can be trusted without its frontend ([`conntrack::fresh`]): the entry
/// is fresh and remembers the backend's address, and the packet is no SYN (a SYN may begin a new
/// connection on a reused port: [`pick`] decides). The frontend's rules (scopes, source ranges,
/// affinity) chose the backend when the flow began; as with kube-proxy's conntrack, they are not
/// applied to its later packets. UDP datagrams are not taken here: they look their backend up
/// every time ([`remembered`]). `None`: take [`pick`].
#[inline(always)]
pub fn established(flow: &Flow, len: u32, tcp: u8) -> Option<Dest> {
    if flow.proto != proto::TCP || tcp & TCP_SYN != 0 {
        return None;
    }
    let ct = conntrack::fresh(&conntrack::forward_key(flow), len, tcp)?;
    stats::inc(stat::LB_ESTABLISHED);
    stats::service(ct.rev_nat_id, len, false);
    Some(Dest::remembered_by(ct))
}

/// The backend a forward conntrack entry `ct` sends its packet to: the address it remembers,
/// unless it is to be checked (`check`: the entry is due for a refresh, the packet is a SYN, or
/// the flow is not TCP) or an older datapath wrote it without one; then the backend its id
/// names in `BACKENDS`, `None` once that backend is gone — the flow then gets a new one. So a
/// removed backend keeps its TCP flows for at most `CT_REFRESH_NS` (kube-proxy's conntrack
/// keeps a removed endpoint's TCP flows until they expire) and loses its UDP flows at their
/// next datagram: a UDP client keeps its socket across backend changes (a resolver's queries),
/// and kube-proxy clears a removed endpoint's UDP conntrack entries.
#[inline(always)]
fn remembered(ct: &CtValue, check: bool) -> Option<Dest> {
    if !check && ct.nat_addr != 0 {
        return Some(Dest::remembered_by(ct));
    }
    backend(ct.backend_id).map(|b| Dest::of(&b))
}
