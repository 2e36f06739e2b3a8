//! Pure planning of map contents: the model's [`Desired`] state becomes the exact entries of
//! `SERVICES`, `BACKENDS`, `REV_NAT`, `AFFINITY_MATCH` and `SOURCE_RANGES`, reusing the ids
//! already programmed so that conntrack entries of established flows keep pointing at the right
//! backend and frontend.
//!
//! A frontend is a slot-0 header and one slot per backend taking new connections (or, for
//! Maglev, a table of [`MAGLEV_TABLE_SIZE`] slots), in [`SCOPE_EXTERNAL`]; when clients inside
//! the cluster get other backends than outside clients (`externalTrafficPolicy: Local`), the same
//! again in [`SCOPE_INTERNAL`].
//!
//! [`diff`] then lists the writes and deletes in the order that never lets a packet see a
//! half-written service: backends, rev-NAT, affinity members, source ranges, backend slots,
//! headers; removals in reverse.
//!
//! Ids: backend ids are `u32` (never 0); rev-NAT ids are `u32` in `1..=`[`MAX_REV_NAT_ID`], one
//! per frontend address and port, so that every frontend has its `SVC_STATS` slot (Cilium's
//! `u16` ids stop at 65,535 frontends; 100,000 Services need more).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use switchyard_abi::{
    addr_be, capacity, port_be, AffinityMatchKey, Backend, RevNat, ServiceKey, ServiceValue,
    SourceRangeKey, BACKEND_ACTIVE, BACKEND_TERMINATING, MAGLEV_TABLE_SIZE, SCOPE_EXTERNAL,
    SCOPE_INTERNAL, SVC_FLAG_AFFINITY, SVC_FLAG_EXTERNAL, SVC_FLAG_LOCAL_ONLY, SVC_FLAG_MAGLEV,
    SVC_FLAG_NODEPORT, SVC_FLAG_SOURCE_RANGES, SVC_FLAG_TWO_SCOPES,
};

use super::maglev;
use crate::model::{BackendSpec, Desired, Frontend, FrontendSpec};

/// The highest rev-NAT id: ids index `SVC_STATS`, so they stay below its size (and `REV_NAT`
/// holds one entry per id).
pub const MAX_REV_NAT_ID: u32 = capacity::SVC_STATS - 1;

// Every id has its `REV_NAT` entry and its counters.
const _: () = assert!(MAX_REV_NAT_ID < capacity::REV_NAT && MAX_REV_NAT_ID > u16::MAX as u32);

/// The rev-NAT id after `id`: ids wrap from [`MAX_REV_NAT_ID`] to 1 (0 is never used).
fn rev_nat_after(id: u32) -> u32 {
    if id >= MAX_REV_NAT_ID {
        1
    } else {
        id + 1
    }
}

/// A `SOURCE_RANGES` entry: the key data and the network's prefix length.
pub type SourceRange = (SourceRangeKey, u8);

/// The content of the service maps (what is, or should be, programmed).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Programmed {
    /// `BACKENDS`.
    pub backends: BTreeMap<u32, Backend>,
    /// `REV_NAT`.
    pub rev_nat: BTreeMap<u32, RevNat>,
    /// `SERVICES` (headers and slots).
    pub services: BTreeMap<ServiceKey, ServiceValue>,
    /// `AFFINITY_MATCH`: the backends of each ClientIP-affinity frontend.
    pub affinity_match: BTreeSet<AffinityMatchKey>,
    /// `SOURCE_RANGES`.
    pub source_ranges: BTreeSet<SourceRange>,
}

impl Programmed {
    /// Rebuilds every map from its sorted entries: written entry by entry, a B-tree's nodes
    /// end up about half full; rebuilt, they are full (the same content in less memory).
    pub fn compact(&mut self) {
        fn dense<K: Ord, V>(m: &mut BTreeMap<K, V>) {
            *m = std::mem::take(m).into_iter().collect();
        }
        fn dense_set<K: Ord>(s: &mut BTreeSet<K>) {
            *s = std::mem::take(s).into_iter().collect();
        }
        dense(&mut self.backends);
        dense(&mut self.rev_nat);
        dense(&mut self.services);
        dense_set(&mut self.affinity_match);
        dense_set(&mut self.source_ranges);
    }

    /// Records `op` as applied to the maps.
    pub fn apply(&mut self, op: &Op) {
        match *op {
            Op::PutBackend(id, b) => {
                self.backends.insert(id, b);
            }
            Op::PutRevNat(id, r) => {
                self.rev_nat.insert(id, r);
            }
            Op::PutService(k, v) => {
                self.services.insert(k, v);
            }
            Op::DeleteService(k) => {
                self.services.remove(&k);
            }
            Op::DeleteRevNat(id) => {
                self.rev_nat.remove(&id);
            }
            Op::DeleteBackend(id) => {
                self.backends.remove(&id);
            }
            Op::PutAffinityMatch(k) => {
                self.affinity_match.insert(k);
            }
            Op::DeleteAffinityMatch(k) => {
                self.affinity_match.remove(&k);
            }
            Op::PutSourceRange(r) => {
                self.source_ranges.insert(r);
            }
            Op::DeleteSourceRange(r) => {
                self.source_ranges.remove(&r);
            }
        }
    }
}

/// The per-frontend entries besides `SERVICES` that [`frontend_entries`] writes.
pub struct Extras<'a> {
    /// `AFFINITY_MATCH`.
    pub affinity_match: &'a mut BTreeSet<AffinityMatchKey>,
    /// `SOURCE_RANGES`.
    pub source_ranges: &'a mut BTreeSet<SourceRange>,
}

/// Id counters that only move forward during a run, so a freed id is not handed to a new backend
/// while stale conntrack entries may still name it; and the ids last planned for entries that a
/// failed write left out of the maps, so that planning the same backend or frontend again gives
/// it the same id instead of using up a new one on every retry (a stale conntrack entry naming
/// such an id can only mean that same backend or frontend).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdCursor {
    /// Next backend id to try (never 0).
    pub backend: u32,
    /// Next rev-NAT id to try (never 0, never above [`MAX_REV_NAT_ID`]).
    pub rev_nat: u32,
    unwritten_backends: HashMap<BackendIdentity, u32>,
    unwritten_backend_ids: HashSet<u32>,
    unwritten_rev_nat: HashMap<(u32, u16), u32>,
    unwritten_rev_nat_ids: HashSet<u32>,
}

impl IdCursor {
    /// Starts after the highest ids already programmed.
    pub fn after(current: &Programmed) -> Self {
        let backend = current
            .backends
            .keys()
            .max()
            .map_or(1, |m| m.wrapping_add(1).max(1));
        let rev_nat = current
            .rev_nat
            .keys()
            .max()
            .map_or(1, |m| rev_nat_after(*m));
        IdCursor {
            backend,
            rev_nat,
            unwritten_backends: HashMap::new(),
            unwritten_backend_ids: HashSet::new(),
            unwritten_rev_nat: HashMap::new(),
            unwritten_rev_nat_ids: HashSet::new(),
        }
    }

    /// A fresh backend id: the first at or after the cursor that `used` does not claim (never
    /// 0), moving the cursor past it.
    pub fn next_backend(&mut self, used: impl Fn(u32) -> bool) -> u32 {
        let mut id = self.backend.max(1);
        while used(id) {
            id = id.wrapping_add(1).max(1);
        }
        self.backend = id.wrapping_add(1).max(1);
        id
    }

    /// A fresh rev-NAT id, as [`IdCursor::next_backend`] but wrapping after
    /// [`MAX_REV_NAT_ID`]; `None` when all of them are taken.
    pub fn next_rev_nat(&mut self, used: impl Fn(u32) -> bool) -> Option<u32> {
        let start = self.rev_nat.clamp(1, MAX_REV_NAT_ID);
        let mut id = start;
        loop {
            if !used(id) {
                self.rev_nat = rev_nat_after(id);
                return Some(id);
            }
            id = rev_nat_after(id);
            if id == start {
                return None;
            }
        }
    }

    /// The id of the backend `ident`, which the maps do not hold: the one last planned for it
    /// if a failed write left it out, else a fresh one (never one kept for another backend).
    pub fn backend_for(&mut self, ident: BackendIdentity, used: impl Fn(u32) -> bool) -> u32 {
        match self.unwritten_backends.get(&ident) {
            Some(id) if !used(*id) => *id,
            _ => {
                let kept = std::mem::take(&mut self.unwritten_backend_ids);
                let id = self.next_backend(|id| used(id) || kept.contains(&id));
                self.unwritten_backend_ids = kept;
                id
            }
        }
    }

    /// The rev-NAT id of the frontend address `(addr, port)`, which the maps do not hold, as
    /// [`IdCursor::backend_for`]; `None` when all [`MAX_REV_NAT_ID`] are taken.
    pub fn rev_nat_for(&mut self, at: (u32, u16), used: impl Fn(u32) -> bool) -> Option<u32> {
        match self.unwritten_rev_nat.get(&at) {
            Some(id) if !used(*id) => Some(*id),
            _ => {
                let kept = std::mem::take(&mut self.unwritten_rev_nat_ids);
                let id = self.next_rev_nat(|id| used(id) || kept.contains(&id));
                self.unwritten_rev_nat_ids = kept;
                id
            }
        }
    }

    /// Remembers the ids `planned` gives that `written` (what the maps hold after the writes)
    /// lacks, in place of those remembered before.
    pub fn keep_unwritten(&mut self, planned: &Programmed, written: &Programmed) {
        self.unwritten_backends = planned
            .backends
            .iter()
            .filter(|(id, _)| !written.backends.contains_key(id))
            .map(|(id, b)| (identity(b), *id))
            .collect();
        self.unwritten_backend_ids = self.unwritten_backends.values().copied().collect();
        self.unwritten_rev_nat = planned
            .rev_nat
            .iter()
            .filter(|(id, _)| !written.rev_nat.contains_key(id))
            .map(|(id, r)| ((r.addr, r.port), *id))
            .collect();
        self.unwritten_rev_nat_ids = self.unwritten_rev_nat.values().copied().collect();
    }
}

/// A frontend as the maps key it: address, port (both network order), protocol.
pub type FrontKey = (u32, u16, u8);

/// The map key of a model frontend.
pub fn front_key(f: &Frontend) -> FrontKey {
    (addr_be(f.ip), port_be(f.port), f.proto.ip_proto())
}

/// The backends one frontend references: id, and whether it uses it as active; sorted.
pub type Uses = Vec<(u32, bool)>;

/// The backends `spec` uses (in both scopes), each once by id, active if any scope sends it new
/// connections; sorted. `id_of` gives each backend's id (`None`: not known, left out).
pub fn uses_of(spec: &FrontendSpec, mut id_of: impl FnMut(&BackendSpec) -> Option<u32>) -> Uses {
    let mut ids: BTreeMap<u32, bool> = BTreeMap::new();
    for b in spec.backends.iter().chain(spec.internal.iter().flatten()) {
        if let Some(id) = id_of(b) {
            *ids.entry(id).or_insert(false) |= !b.terminating;
        }
    }
    ids.into_iter().collect()
}

/// Writes the entries of one frontend — its `SERVICES` slots and header in each scope it has,
/// its `AFFINITY_MATCH` members and `SOURCE_RANGES` networks — and returns the backends it uses
/// (each once; active if any scope sends it new connections). Terminating backends get an id
/// (their `BACKENDS` entry keeps existing flows going) but no slot. `backend_id` names (or
/// allocates) the id of each backend.
pub fn frontend_entries(
    fk: FrontKey,
    spec: &FrontendSpec,
    rev_nat_id: u32,
    mut backend_id: impl FnMut(&BackendSpec) -> u32,
    out: &mut BTreeMap<ServiceKey, ServiceValue>,
    extras: Extras<'_>,
) -> Result<Uses, PlanError> {
    let uses = uses_of(spec, |b| Some(backend_id(b)));
    let id_of: HashMap<&BackendSpec, u32> = spec
        .backends
        .iter()
        .chain(spec.internal.iter().flatten())
        .map(|b| (b, backend_id(b)))
        .collect();
    let mut scopes = vec![(SCOPE_EXTERNAL, &spec.backends)];
    if let Some(internal) = &spec.internal {
        scopes.push((SCOPE_INTERNAL, internal));
    }
    for (scope, backends) in scopes {
        let active: Vec<(u32, &BackendSpec)> = backends
            .iter()
            .filter(|b| !b.terminating)
            .map(|b| (id_of[b], b))
            .collect();
        let slots = slots(spec, &active)?;
        let (addr, port, proto) = fk;
        for (i, id) in slots.iter().enumerate() {
            out.insert(
                ServiceKey::scoped(addr, port, proto, i as u16 + 1, scope),
                ServiceValue {
                    backend_id: *id,
                    rev_nat_id,
                    ..ServiceValue::default()
                },
            );
        }
        let mut value = header(spec, slots.len() as u16, rev_nat_id);
        if scope == SCOPE_INTERNAL {
            value.flags &= !(SVC_FLAG_LOCAL_ONLY | SVC_FLAG_TWO_SCOPES);
        }
        out.insert(ServiceKey::scoped(addr, port, proto, 0, scope), value);
        if spec.affinity_timeout.is_some() {
            for (id, _) in &active {
                extras.affinity_match.insert(AffinityMatchKey {
                    backend_id: *id,
                    rev_nat_id,
                    proto,
                    pad: [0; 3],
                });
            }
        }
    }
    for (net, prefix) in &spec.source_ranges {
        extras.source_ranges.insert((
            SourceRangeKey {
                rev_nat_id: rev_nat_id.to_be(),
                proto: fk.2,
                pad: [0; 3],
                addr: addr_be(*net),
            },
            *prefix,
        ));
    }
    Ok(uses)
}

/// The backend id of every slot of a frontend with `active` backends: one slot each in the
/// model's order, or a Maglev table over them.
fn slots(spec: &FrontendSpec, active: &[(u32, &BackendSpec)]) -> Result<Vec<u32>, PlanError> {
    if spec.maglev && !active.is_empty() {
        let names: Vec<Vec<u8>> = active
            .iter()
            .map(|(_, b)| format!("{}:{}", b.addr.ip, b.addr.port).into_bytes())
            .collect();
        return Ok(maglev::table(&names, usize::from(MAGLEV_TABLE_SIZE))
            .into_iter()
            .map(|i| active[i].0)
            .collect());
    }
    if active.len() > usize::from(u16::MAX) {
        return Err(PlanError::TooManyBackends {
            service: spec.service.clone(),
            count: spec.backends.len(),
        });
    }
    Ok(active.iter().map(|(id, _)| *id).collect())
}

/// Errors of planning.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    /// More frontends than rev-NAT ids.
    #[error(
        "{0} frontends need more than {max} rev-NAT ids (one per frontend address and port): \
         the REV_NAT map is full",
        max = MAX_REV_NAT_ID
    )]
    TooManyFrontends(usize),
    /// A frontend has more backends than a slot index can address.
    #[error("service {service} has {count} backends; at most 65535 are supported")]
    TooManyBackends {
        /// `ns/name:port` of the service.
        service: String,
        /// How many backends it has.
        count: usize,
    },
}

/// What makes two backends the same backend: address, port, protocol (map byte order).
pub type BackendIdentity = (u32, u16, u8);

/// The identity of a backend value.
pub fn identity(b: &Backend) -> BackendIdentity {
    (b.addr, b.port, b.proto)
}

/// Computes the full map content for `desired`, reusing ids from `current`.
pub fn plan(
    desired: &Desired,
    current: &Programmed,
    cursor: &mut IdCursor,
) -> Result<Programmed, PlanError> {
    let mut backend_ids: HashMap<BackendIdentity, u32> = current
        .backends
        .iter()
        .map(|(id, b)| (identity(b), *id))
        .collect();
    let mut rev_ids: HashMap<(u32, u16), u32> = current
        .rev_nat
        .iter()
        .map(|(id, r)| ((r.addr, r.port), *id))
        .collect();
    let mut used_backend: HashSet<u32> = current.backends.keys().copied().collect();
    let mut used_rev: HashSet<u32> = current.rev_nat.keys().copied().collect();

    let mut next = Programmed::default();
    for (frontend, spec) in &desired.frontends {
        let fk = front_key(frontend);
        let (addr, port, _) = fk;
        let rev_nat_id = match rev_ids.get(&(addr, port)) {
            Some(id) => *id,
            None => {
                let id = cursor
                    .rev_nat_for((addr, port), |id| used_rev.contains(&id))
                    .ok_or(PlanError::TooManyFrontends(desired.frontends.len()))?;
                used_rev.insert(id);
                rev_ids.insert((addr, port), id);
                id
            }
        };
        next.rev_nat
            .insert(rev_nat_id, RevNat { addr, port, pad: 0 });
        let Programmed {
            backends,
            services,
            affinity_match,
            source_ranges,
            ..
        } = &mut next;
        frontend_entries(
            fk,
            spec,
            rev_nat_id,
            |b| {
                let value = backend_value(b);
                let ident = identity(&value);
                let id = *backend_ids.entry(ident).or_insert_with(|| {
                    let id = cursor.backend_for(ident, |id| used_backend.contains(&id));
                    used_backend.insert(id);
                    id
                });
                // A backend shared by several frontends: active wins over terminating.
                let entry = backends.entry(id).or_insert(value);
                if value.state == BACKEND_ACTIVE {
                    entry.state = BACKEND_ACTIVE;
                }
                id
            },
            services,
            Extras {
                affinity_match,
                source_ranges,
            },
        )?;
    }
    Ok(next)
}

/// The `BACKENDS` value of a backend spec.
pub fn backend_value(b: &BackendSpec) -> Backend {
    Backend {
        addr: addr_be(b.addr.ip),
        port: port_be(b.addr.port),
        proto: b.addr.proto.ip_proto(),
        state: if b.terminating {
            BACKEND_TERMINATING
        } else {
            BACKEND_ACTIVE
        },
        node_addr: b.node_ip.map_or(0, addr_be),
    }
}

/// The slot-0 header of a frontend with `count` active backends.
pub fn header(spec: &FrontendSpec, count: u16, rev_nat_id: u32) -> ServiceValue {
    let mut flags = 0;
    if spec.affinity_timeout.is_some() {
        flags |= SVC_FLAG_AFFINITY;
    }
    if spec.local_only {
        flags |= SVC_FLAG_LOCAL_ONLY;
    }
    if spec.nodeport {
        flags |= SVC_FLAG_NODEPORT;
    }
    if spec.external {
        flags |= SVC_FLAG_EXTERNAL;
    }
    if spec.maglev {
        flags |= SVC_FLAG_MAGLEV;
    }
    if spec.internal.is_some() {
        flags |= SVC_FLAG_TWO_SCOPES;
    }
    if !spec.source_ranges.is_empty() {
        flags |= SVC_FLAG_SOURCE_RANGES;
    }
    ServiceValue {
        backend_id: 0,
        count,
        rev_nat_id,
        flags,
        pad: 0,
        affinity_timeout: spec.affinity_timeout.unwrap_or(0),
    }
}

/// One map operation, in the order it must be applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// Write a backend.
    PutBackend(u32, Backend),
    /// Write a rev-NAT entry.
    PutRevNat(u32, RevNat),
    /// Add an affinity member.
    PutAffinityMatch(AffinityMatchKey),
    /// Add a source range.
    PutSourceRange(SourceRange),
    /// Write a service slot or header.
    PutService(ServiceKey, ServiceValue),
    /// Delete a service slot or header.
    DeleteService(ServiceKey),
    /// Delete a source range.
    DeleteSourceRange(SourceRange),
    /// Delete an affinity member.
    DeleteAffinityMatch(AffinityMatchKey),
    /// Delete a rev-NAT entry.
    DeleteRevNat(u32),
    /// Delete a backend.
    DeleteBackend(u32),
}

impl Op {
    /// Whether the operation removes an entry.
    pub fn is_delete(&self) -> bool {
        matches!(
            self,
            Op::DeleteService(_)
                | Op::DeleteSourceRange(_)
                | Op::DeleteAffinityMatch(_)
                | Op::DeleteRevNat(_)
                | Op::DeleteBackend(_)
        )
    }
}

/// The operations that turn `current` into `next`, safely ordered; nothing for unchanged entries.
pub fn diff(current: &Programmed, next: &Programmed) -> Vec<Op> {
    let mut ops = Vec::new();
    for (id, b) in &next.backends {
        if current.backends.get(id) != Some(b) {
            ops.push(Op::PutBackend(*id, *b));
        }
    }
    for (id, r) in &next.rev_nat {
        if current.rev_nat.get(id) != Some(r) {
            ops.push(Op::PutRevNat(*id, *r));
        }
    }
    for k in next.affinity_match.difference(&current.affinity_match) {
        ops.push(Op::PutAffinityMatch(*k));
    }
    for r in next.source_ranges.difference(&current.source_ranges) {
        ops.push(Op::PutSourceRange(*r));
    }
    let changed = |k: &ServiceKey, v: &ServiceValue| current.services.get(k) != Some(v);
    // Slots before headers: a header never counts a slot that is not written yet.
    for (k, v) in next.services.iter().filter(|(k, _)| k.slot != 0) {
        if changed(k, v) {
            ops.push(Op::PutService(*k, *v));
        }
    }
    for (k, v) in next.services.iter().filter(|(k, _)| k.slot == 0) {
        if changed(k, v) {
            ops.push(Op::PutService(*k, *v));
        }
    }
    // Removals: headers, then slots beyond the new count, then rev-NAT, then backends.
    for k in current.services.keys().filter(|k| k.slot == 0) {
        if !next.services.contains_key(k) {
            ops.push(Op::DeleteService(*k));
        }
    }
    for k in current.services.keys().filter(|k| k.slot != 0) {
        if !next.services.contains_key(k) {
            ops.push(Op::DeleteService(*k));
        }
    }
    for r in current.source_ranges.difference(&next.source_ranges) {
        ops.push(Op::DeleteSourceRange(*r));
    }
    for k in current.affinity_match.difference(&next.affinity_match) {
        ops.push(Op::DeleteAffinityMatch(*k));
    }
    for id in current.rev_nat.keys() {
        if !next.rev_nat.contains_key(id) {
            ops.push(Op::DeleteRevNat(*id));
        }
    }
    for id in current.backends.keys() {
        if !next.backends.contains_key(id) {
            ops.push(Op::DeleteBackend(*id));
        }
    }
    ops
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::model::{BackendAddr, BackendSpec, Frontend, Proto};
    use std::net::Ipv4Addr;

    pub(crate) fn backend(last: u8, terminating: bool) -> BackendSpec {
        BackendSpec {
            addr: BackendAddr {
                ip: Ipv4Addr::new(10, 244, 1, last),
                port: 8080,
                proto: Proto::Tcp,
            },
            terminating,
            node_ip: None,
        }
    }

    pub(crate) fn desired(backends: Vec<BackendSpec>) -> Desired {
        let mut d = Desired::default();
        d.frontends.insert(
            Frontend {
                ip: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                proto: Proto::Tcp,
            },
            FrontendSpec {
                backends,
                service: "default/echo:http".into(),
                ..Default::default()
            },
        );
        d
    }

    pub(crate) fn apply(current: &Programmed, ops: &[Op]) -> Programmed {
        let mut p = current.clone();
        for op in ops {
            p.apply(op);
        }
        p
    }

    #[test]
    fn compacting_the_programmed_state_keeps_every_entry() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let backends = (2..60).map(|i| backend(i, i % 5 == 0)).collect();
        let p = plan(&desired(backends), &Programmed::default(), &mut cursor).unwrap();
        let mut compacted = p.clone();
        compacted.compact();
        assert_eq!(compacted, p);
        assert_eq!(compacted.backends.len(), 58);
    }

    #[test]
    fn a_service_becomes_header_slots_backends_and_rev_nat() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(
            &desired(vec![backend(2, false), backend(3, false)]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        assert_eq!(p.backends.len(), 2);
        assert_eq!(p.rev_nat.len(), 1);
        let header = p.services.iter().find(|(k, _)| k.slot == 0).unwrap().1;
        assert_eq!(header.count, 2);
        assert_eq!(p.services.len(), 3);
        let rn = p.rev_nat.values().next().unwrap();
        assert_eq!(rn.addr.to_ne_bytes(), [10, 96, 0, 10]);
        assert_eq!(rn.port, 80u16.to_be());
    }

    #[test]
    fn ids_survive_replanning_and_removed_ids_are_not_reused() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let first = plan(
            &desired(vec![backend(2, false), backend(3, false)]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        let id_of_3 = *first
            .backends
            .iter()
            .find(|(_, b)| b.addr.to_ne_bytes()[3] == 3)
            .unwrap()
            .0;
        let second = plan(
            &desired(vec![backend(3, false), backend(4, false)]),
            &first,
            &mut cursor,
        )
        .unwrap();
        let id3 = *second
            .backends
            .iter()
            .find(|(_, b)| b.addr.to_ne_bytes()[3] == 3)
            .unwrap()
            .0;
        let id4 = *second
            .backends
            .iter()
            .find(|(_, b)| b.addr.to_ne_bytes()[3] == 4)
            .unwrap()
            .0;
        assert_eq!(id3, id_of_3, "an existing backend keeps its id");
        assert!(
            !first.backends.contains_key(&id4),
            "a new backend never takes a freed id"
        );
        assert_eq!(first.rev_nat, second.rev_nat);
    }

    #[test]
    fn a_restarted_agent_continues_after_the_highest_programmed_id() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let first = plan(
            &desired(vec![backend(2, false)]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        let restarted = IdCursor::after(&first);
        assert!(restarted.backend > *first.backends.keys().max().unwrap());
    }

    #[test]
    fn terminating_backends_keep_their_entry_but_get_no_slot() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(
            &desired(vec![backend(2, false), backend(3, true)]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        assert_eq!(p.backends.len(), 2);
        let header = p.services.iter().find(|(k, _)| k.slot == 0).unwrap().1;
        assert_eq!(header.count, 1);
        assert_eq!(
            p.backends
                .values()
                .filter(|b| b.state == BACKEND_TERMINATING)
                .count(),
            1
        );
    }

    #[test]
    fn no_backends_still_programs_a_header_with_count_zero() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&desired(vec![]), &Programmed::default(), &mut cursor).unwrap();
        assert_eq!(p.services.len(), 1);
        assert_eq!(p.services.values().next().unwrap().count, 0);
    }

    #[test]
    fn diff_orders_writes_safely_and_reaches_the_target() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let a = plan(
            &desired(vec![
                backend(2, false),
                backend(3, false),
                backend(4, false),
            ]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        let b = plan(&desired(vec![backend(2, false)]), &a, &mut cursor).unwrap();
        let ops = diff(&a, &b);
        assert_eq!(apply(&a, &ops), b);
        // The shrunk header is written before the slots beyond it are deleted,
        // and backends are deleted last.
        let header_pos = ops
            .iter()
            .position(|o| matches!(o, Op::PutService(k, _) if k.slot == 0))
            .unwrap();
        let first_slot_delete = ops
            .iter()
            .position(|o| matches!(o, Op::DeleteService(k) if k.slot != 0))
            .unwrap();
        assert!(header_pos < first_slot_delete);
        assert!(matches!(ops.last(), Some(Op::DeleteBackend(_))));
        assert!(diff(&b, &b).is_empty(), "an unchanged state writes nothing");
    }

    #[test]
    fn growing_writes_slots_before_the_header() {
        let mut cursor = IdCursor::after(&Programmed::default());
        let a = plan(
            &desired(vec![backend(2, false)]),
            &Programmed::default(),
            &mut cursor,
        )
        .unwrap();
        let b = plan(
            &desired(vec![backend(2, false), backend(3, false)]),
            &a,
            &mut cursor,
        )
        .unwrap();
        let ops = diff(&a, &b);
        let slot = ops
            .iter()
            .position(|o| matches!(o, Op::PutService(k, _) if k.slot == 2))
            .unwrap();
        let header = ops
            .iter()
            .position(|o| matches!(o, Op::PutService(k, _) if k.slot == 0))
            .unwrap();
        assert!(slot < header);
        assert_eq!(apply(&a, &ops), b);
    }

    #[test]
    fn tcp_and_udp_on_the_same_port_share_one_rev_nat_id() {
        let mut d = desired(vec![backend(2, false)]);
        let mut udp = d.frontends.values().next().unwrap().clone();
        udp.backends[0].addr.proto = Proto::Udp;
        d.frontends.insert(
            Frontend {
                ip: Ipv4Addr::new(10, 96, 0, 10),
                port: 80,
                proto: Proto::Udp,
            },
            udp,
        );
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&d, &Programmed::default(), &mut cursor).unwrap();
        assert_eq!(p.rev_nat.len(), 1);
        assert_eq!(p.backends.len(), 2);
    }

    #[test]
    fn a_maglev_frontend_gets_a_full_table_shared_by_its_backends() {
        let mut d = desired(vec![backend(2, false), backend(3, false), backend(4, true)]);
        d.frontends.values_mut().next().unwrap().maglev = true;
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&d, &Programmed::default(), &mut cursor).unwrap();
        let header = p.services.iter().find(|(k, _)| k.slot == 0).unwrap().1;
        assert_eq!(header.count, MAGLEV_TABLE_SIZE);
        assert_ne!(header.flags & SVC_FLAG_MAGLEV, 0);
        let mut per_backend: BTreeMap<u32, usize> = BTreeMap::new();
        for (_, v) in p.services.iter().filter(|(k, _)| k.slot != 0) {
            *per_backend.entry(v.backend_id).or_default() += 1;
        }
        assert_eq!(
            per_backend.len(),
            2,
            "the terminating backend owns no entry"
        );
        assert!(
            per_backend.values().all(|n| n.abs_diff(2047) < 30),
            "{per_backend:?}"
        );
    }

    #[test]
    fn clients_inside_the_cluster_get_their_own_scope_when_backends_differ() {
        let mut d = desired(vec![backend(2, false), backend(3, true)]);
        let spec = d.frontends.values_mut().next().unwrap();
        spec.local_only = true;
        spec.internal = Some(vec![backend(2, false), backend(3, false)]);
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&d, &Programmed::default(), &mut cursor).unwrap();
        let head = |scope| {
            p.services
                .iter()
                .find(|(k, _)| k.slot == 0 && k.scope == scope)
                .unwrap()
                .1
        };
        assert_eq!(head(SCOPE_EXTERNAL).count, 1);
        assert_ne!(head(SCOPE_EXTERNAL).flags & SVC_FLAG_TWO_SCOPES, 0);
        assert_eq!(head(SCOPE_INTERNAL).count, 2);
        assert_eq!(head(SCOPE_INTERNAL).flags & SVC_FLAG_LOCAL_ONLY, 0);
        assert_eq!(p.backends.len(), 2);
        assert!(p.backends.values().all(|b| b.state == BACKEND_ACTIVE));
    }

    #[test]
    fn affinity_members_and_source_ranges_follow_the_frontend() {
        let mut d = desired(vec![backend(2, false), backend(3, true)]);
        let spec = d.frontends.values_mut().next().unwrap();
        spec.affinity_timeout = Some(30);
        spec.source_ranges = vec![(Ipv4Addr::new(198, 18, 0, 0), 24)];
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&d, &Programmed::default(), &mut cursor).unwrap();
        assert_eq!(
            p.affinity_match.len(),
            1,
            "only backends taking new connections"
        );
        assert_eq!(p.source_ranges.len(), 1);
        let (key, prefix) = *p.source_ranges.iter().next().unwrap();
        assert_eq!((key.addr.to_ne_bytes(), prefix), ([198, 18, 0, 0], 24));
        let gone = plan(&Desired::default(), &p, &mut cursor).unwrap();
        let ops = diff(&p, &gone);
        assert_eq!(apply(&p, &ops), gone);
        assert!(gone.affinity_match.is_empty() && gone.source_ranges.is_empty());
        let range_delete = ops
            .iter()
            .position(|o| matches!(o, Op::DeleteSourceRange(_)))
            .unwrap();
        let header_delete = ops
            .iter()
            .position(|o| matches!(o, Op::DeleteService(k) if k.slot == 0))
            .unwrap();
        assert!(
            header_delete < range_delete,
            "the header goes before what it names"
        );
    }

    /// `n` (fewer than 2^19) single-backend ClusterIP frontends `10.96.0.0/13:80/TCP`, each with its own
    /// backend.
    fn many_frontends(n: u32) -> Desired {
        let mut d = Desired::default();
        for i in 0..n {
            let [_, w, x, y] = i.to_be_bytes();
            d.frontends.insert(
                Frontend {
                    ip: Ipv4Addr::new(10, 96 + w, x, y),
                    port: 80,
                    proto: Proto::Tcp,
                },
                FrontendSpec {
                    backends: vec![BackendSpec {
                        addr: BackendAddr {
                            ip: Ipv4Addr::new(10, 244 + w, x, y),
                            port: 8080,
                            proto: Proto::Tcp,
                        },
                        terminating: false,
                        node_ip: None,
                    }],
                    service: format!("default/s{i}:http"),
                    ..Default::default()
                },
            );
        }
        d
    }

    #[test]
    fn seventy_thousand_frontends_get_distinct_rev_nat_ids_beyond_65535() {
        let d = many_frontends(70_000);
        let mut cursor = IdCursor::after(&Programmed::default());
        let p = plan(&d, &Programmed::default(), &mut cursor).unwrap();
        assert_eq!(p.rev_nat.len(), 70_000, "one id per frontend");
        assert_eq!(p.rev_nat.keys().max(), Some(&70_000));
        let headers: BTreeSet<u32> = p
            .services
            .iter()
            .filter(|(k, _)| k.slot == 0)
            .map(|(_, v)| v.rev_nat_id)
            .collect();
        assert_eq!(headers.len(), 70_000, "every header names its own id");
        for (k, v) in &p.services {
            let r = p.rev_nat[&v.rev_nat_id];
            assert_eq!((r.addr, r.port), (k.addr, k.port), "id {}", v.rev_nat_id);
        }
        let replanned = plan(&d, &p, &mut cursor).unwrap();
        assert_eq!(replanned.rev_nat, p.rev_nat, "ids survive replanning");
    }

    #[test]
    fn rev_nat_ids_pass_65535_without_wrapping() {
        let mut cursor = IdCursor::after(&Programmed::default());
        cursor.rev_nat = 65_534;
        let ids: Vec<u32> = (0..4)
            .map(|_| cursor.next_rev_nat(|_| false).unwrap())
            .collect();
        assert_eq!(ids, vec![65_534, 65_535, 65_536, 65_537]);
    }

    #[test]
    fn rev_nat_ids_wrap_after_the_highest_to_the_first_free_one() {
        let mut cursor = IdCursor::after(&Programmed::default());
        cursor.rev_nat = MAX_REV_NAT_ID;
        assert_eq!(cursor.next_rev_nat(|_| false), Some(MAX_REV_NAT_ID));
        assert_eq!(cursor.rev_nat, 1, "never 0, never beyond the highest");
        let used = |id: u32| id == 1 || id == 2;
        assert_eq!(cursor.next_rev_nat(used), Some(3));
    }

    #[test]
    fn rev_nat_ids_run_out_only_when_every_one_up_to_the_highest_is_taken() {
        let mut cursor = IdCursor::after(&Programmed::default());
        cursor.rev_nat = 200_000;
        assert_eq!(cursor.next_rev_nat(|id| id != 70_000), Some(70_000));
        assert_eq!(cursor.next_rev_nat(|_| true), None);
        assert_eq!(MAX_REV_NAT_ID, 262_143);
    }

    #[test]
    fn a_restarted_agent_continues_after_a_programmed_rev_nat_id_beyond_65535() {
        let mut p = Programmed::default();
        let front = RevNat {
            addr: 1,
            port: 2,
            pad: 0,
        };
        p.rev_nat.insert(100_000, front);
        assert_eq!(IdCursor::after(&p).rev_nat, 100_001);
        p.rev_nat.insert(MAX_REV_NAT_ID, front);
        assert_eq!(IdCursor::after(&p).rev_nat, 1, "wraps after the highest id");
    }

    #[test]
    fn too_many_frontends_fails_planning_instead_of_reusing_an_id() {
        let d = many_frontends(3);
        let taken: Programmed = Programmed {
            rev_nat: (1..=MAX_REV_NAT_ID)
                .map(|id| {
                    let r = RevNat {
                        addr: id,
                        port: 1,
                        pad: 0,
                    };
                    (id, r)
                })
                .collect(),
            ..Programmed::default()
        };
        let mut cursor = IdCursor::after(&taken);
        assert_eq!(
            plan(&d, &taken, &mut cursor),
            Err(PlanError::TooManyFrontends(3))
        );
    }
}
