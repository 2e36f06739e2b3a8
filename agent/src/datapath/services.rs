//! Keeping `SERVICES`, `BACKENDS` and `REV_NAT` equal to the model's desired state.
//!
//! [`ServiceSync`] remembers what the maps hold ([`Programmed`]), the id cursor and, after a
//! full sync that wrote everything, which frontend uses which id ([`Usage`]). A full sync plans
//! everything ([`plan::plan`]); a change to a few frontends plans just those
//! ([`partial::plan_changes`]). Both write only the difference, frontend by frontend, through
//! [`apply::write`], which skips and reports a frontend the maps cannot take and writes the rest.
//!
//! Invariant: `programmed` is what the maps hold, write by write. After a sync that left
//! something out the usage is dropped and the next sync is a full one, which tries again; the
//! cursor remembers the ids planned for what was left out, so retries use up none.
use std::collections::{BTreeMap, BTreeSet};

use switchyard_abi::{AffinityMatchKey, Backend, RevNat, ServiceKey, ServiceValue};

use super::apply::{self, ServiceReport, Target};
use super::maps::{MapWriter, MemMap};
use super::partial::{self, Usage};
use super::plan::{self, IdCursor, Op, Programmed, SourceRange};
use super::DatapathError;
use crate::model::{Desired, Frontend};

/// The map types of one set of service maps (the kernel's, or in-memory ones).
pub trait ServiceWriters {
    /// `BACKENDS`.
    type Backends: MapWriter<u32, Backend>;
    /// `REV_NAT`.
    type RevNat: MapWriter<u32, RevNat>;
    /// `SERVICES`.
    type Services: MapWriter<ServiceKey, ServiceValue>;
    /// `AFFINITY_MATCH`.
    type Affinity: MapWriter<AffinityMatchKey, u8>;
    /// `SOURCE_RANGES`.
    type Ranges: MapWriter<SourceRange, u8>;
}

/// The service maps.
pub struct ServiceMaps<W: ServiceWriters> {
    /// `BACKENDS`.
    pub backends: W::Backends,
    /// `REV_NAT`.
    pub rev_nat: W::RevNat,
    /// `SERVICES`.
    pub services: W::Services,
    /// `AFFINITY_MATCH`.
    pub affinity_match: W::Affinity,
    /// `SOURCE_RANGES`.
    pub source_ranges: W::Ranges,
}

impl<W: ServiceWriters> ServiceMaps<W> {
    /// What the maps hold now (a previous agent's work, after a restart).
    pub fn read(&self) -> Result<Programmed, DatapathError> {
        Ok(Programmed {
            backends: read_map(&self.backends)?,
            rev_nat: read_map(&self.rev_nat)?,
            services: read_map(&self.services)?,
            affinity_match: read_map(&self.affinity_match)?.into_keys().collect(),
            source_ranges: read_map(&self.source_ranges)?.into_keys().collect(),
        })
    }

    /// Applies one operation.
    pub fn apply(&mut self, op: &Op) -> Result<(), DatapathError> {
        let (map, result) = match *op {
            Op::PutBackend(id, b) => (self.backends.name(), self.backends.put(id, b)),
            Op::PutRevNat(id, r) => (self.rev_nat.name(), self.rev_nat.put(id, r)),
            Op::PutService(k, v) => (self.services.name(), self.services.put(k, v)),
            Op::DeleteService(k) => (self.services.name(), self.services.remove(&k)),
            Op::DeleteRevNat(id) => (self.rev_nat.name(), self.rev_nat.remove(&id)),
            Op::DeleteBackend(id) => (self.backends.name(), self.backends.remove(&id)),
            Op::PutAffinityMatch(k) => (self.affinity_match.name(), self.affinity_match.put(k, 0)),
            Op::DeleteAffinityMatch(k) => {
                (self.affinity_match.name(), self.affinity_match.remove(&k))
            }
            Op::PutSourceRange(r) => (self.source_ranges.name(), self.source_ranges.put(r, 0)),
            Op::DeleteSourceRange(r) => (self.source_ranges.name(), self.source_ranges.remove(&r)),
        };
        result.map_err(DatapathError::map(map))
    }
}

/// Every entry of `map`.
pub fn read_map<K: Ord, V>(map: &impl MapWriter<K, V>) -> Result<BTreeMap<K, V>, DatapathError> {
    Ok(map
        .entries()
        .map_err(DatapathError::map(map.name()))?
        .into_iter()
        .collect())
}

/// The service maps and what is known about their content.
pub struct ServiceSync<W: ServiceWriters> {
    maps: ServiceMaps<W>,
    programmed: Programmed,
    cursor: IdCursor,
    /// Which frontend uses which id; `None` until the first full sync (a previous agent's maps
    /// say nothing about terminating backends) and after a failed write.
    usage: Option<Usage>,
}

impl<W: ServiceWriters> ServiceSync<W> {
    /// Takes over `maps` with whatever they hold; ids continue after the highest one found.
    pub fn open(maps: ServiceMaps<W>) -> Result<Self, DatapathError> {
        let programmed = maps.read()?;
        let cursor = IdCursor::after(&programmed);
        Ok(ServiceSync {
            maps,
            programmed,
            cursor,
            usage: None,
        })
    }

    /// What the maps hold, as far as this sync knows.
    pub fn programmed(&self) -> &Programmed {
        &self.programmed
    }

    /// The maps (tests look inside).
    pub fn maps(&self) -> &ServiceMaps<W> {
        &self.maps
    }

    /// The maps, for injecting failures in tests.
    pub fn maps_mut(&mut self) -> &mut ServiceMaps<W> {
        &mut self.maps
    }

    /// Makes the maps equal to `desired`, writing only what differs, in an order that never
    /// exposes a half-written service; a frontend the maps cannot take is left as it was and
    /// reported. `Err` only when the desired state cannot be planned at all.
    pub fn sync_all(&mut self, desired: &Desired) -> Result<ServiceReport, DatapathError> {
        self.usage = None;
        let next = plan::plan(desired, &self.programmed, &mut self.cursor)?;
        let target = Target::whole(desired, &self.programmed, &next);
        let report = apply::write(&mut self.maps, &mut self.programmed, &target);
        self.programmed.compact();
        self.cursor.keep_unwritten(&next, &self.programmed);
        if report.complete() {
            self.usage = Some(Usage::build(desired, &self.programmed));
        }
        Ok(report)
    }

    /// Like [`ServiceSync::sync_all`] when only the frontends in `changed` differ from what was
    /// last synced: plans and writes just those (and the backends they touch). Without a usage
    /// (before the first full sync, after one that left something out) it does a full one, and
    /// it ends with one when it leaves something out.
    pub fn sync_changes(
        &mut self,
        desired: &Desired,
        changed: &BTreeSet<Frontend>,
    ) -> Result<ServiceReport, DatapathError> {
        // Taken out while the maps change: if something is left out, the usage no longer
        // describes the maps, and the next sync is a full one.
        let Some(mut usage) = self.usage.take() else {
            return self.sync_all(desired);
        };
        let change =
            partial::plan_changes(desired, changed, &self.programmed, &usage, &mut self.cursor)?;
        let report = apply::write(
            &mut self.maps,
            &mut self.programmed,
            &change.target(desired, changed),
        );
        self.cursor.keep_unwritten(&change.after, &self.programmed);
        if report.complete() {
            change.commit_usage(&mut usage);
            self.usage = Some(usage);
            return Ok(report);
        }
        // Something was left out. Only a full sync knows which backends and rev-NAT ids the
        // frontends left out were to take over from others, so it finishes the job (trying
        // them once more) and reports every frontend left out.
        let full = self.sync_all(desired)?;
        Ok(ServiceReport {
            written: report.written + full.written,
            deleted: report.deleted + full.deleted,
            ..full
        })
    }
}

/// Service maps in memory (tests).
pub struct InMemory;

impl ServiceWriters for InMemory {
    type Backends = MemMap<u32, Backend>;
    type RevNat = MemMap<u32, RevNat>;
    type Services = MemMap<ServiceKey, ServiceValue>;
    type Affinity = MemMap<AffinityMatchKey, u8>;
    type Ranges = MemMap<SourceRange, u8>;
}

/// [`ServiceMaps`] in memory.
pub type MemServiceMaps = ServiceMaps<InMemory>;

impl MemServiceMaps {
    /// Empty maps with the kernel maps' names and capacities.
    pub fn in_memory() -> Self {
        use switchyard_abi::{capacity, names};
        ServiceMaps {
            backends: MemMap::new(names::BACKENDS, capacity::BACKENDS as usize),
            rev_nat: MemMap::new(names::REV_NAT, capacity::REV_NAT as usize),
            services: MemMap::new(names::SERVICES, capacity::SERVICES as usize),
            affinity_match: MemMap::new(names::AFFINITY_MATCH, capacity::AFFINITY_MATCH as usize),
            source_ranges: MemMap::new(names::SOURCE_RANGES, capacity::SOURCE_RANGES as usize),
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::datapath::partial::programmed_entries;
    use crate::datapath::plan::tests::backend;
    use crate::datapath::plan::{front_key, identity, BackendIdentity, FrontKey};
    use crate::model::{FrontendSpec, Proto};
    use rand::{Rng, SeedableRng};
    use std::net::Ipv4Addr;
    use switchyard_abi::{names, BACKEND_TERMINATING, SVC_FLAG_AFFINITY};

    fn desired(backends: &[u8]) -> Desired {
        crate::datapath::plan::tests::desired(backends.iter().map(|b| backend(*b, false)).collect())
    }

    fn front(i: u8) -> Frontend {
        Frontend {
            ip: Ipv4Addr::new(10, 96, 0, i),
            port: 80,
            proto: Proto::Tcp,
        }
    }

    /// Service `name` at 10.96.0.`i`:80 with the backends 10.244.1.`b` of `backends`.
    fn service(d: &mut Desired, name: &str, i: u8, backends: impl IntoIterator<Item = u8>) {
        d.frontends.insert(
            front(i),
            FrontendSpec {
                backends: backends.into_iter().map(|b| backend(b, false)).collect(),
                service: format!("default/{name}:http"),
                ..Default::default()
            },
        );
    }

    /// A frontend's entries with ids replaced by what they name: `SERVICES` by (scope, slot)
    /// → header (count, flags, affinity timeout) or slot backend; affinity members; source
    /// ranges.
    type View = (
        BTreeMap<(u8, u16), (u16, u8, u32, Option<BackendIdentity>)>,
        BTreeSet<Option<BackendIdentity>>,
        BTreeSet<(u32, u8)>,
    );

    fn view(p: &Programmed, fk: FrontKey) -> View {
        let services: BTreeMap<_, _> = programmed_entries(&p.services, fk)
            .map(|(k, v)| {
                let named = if k.slot == 0 {
                    (v.count, v.flags, v.affinity_timeout, None)
                } else {
                    (0, 0, 0, p.backends.get(&v.backend_id).map(identity))
                };
                ((k.scope, k.slot), named)
            })
            .collect();
        let rev = programmed_entries(&p.services, fk)
            .next()
            .map(|(_, v)| v.rev_nat_id);
        let affinity = p
            .affinity_match
            .iter()
            .filter(|k| Some(k.rev_nat_id) == rev && k.proto == fk.2)
            .map(|k| p.backends.get(&k.backend_id).map(identity))
            .collect();
        let ranges = p
            .source_ranges
            .iter()
            .filter(|(k, _)| Some(u32::from_be(k.rev_nat_id)) == rev && k.proto == fk.2)
            .map(|(k, prefix)| (k.addr, *prefix))
            .collect();
        (services, affinity, ranges)
    }

    /// Everything in `p` is reachable and names only what exists: every header's slots are
    /// written and its rev-NAT entry names its address; every slot has a header counting it
    /// and a backend; every active backend is named by a slot (a terminating one is kept
    /// without), every rev-NAT id by a header; every affinity member and source range belongs
    /// to a frontend.
    pub(crate) fn orphans(p: &Programmed) -> Vec<String> {
        let mut bad = Vec::new();
        let header = |k: &ServiceKey| p.services.get(&ServiceKey { slot: 0, ..*k });
        for (k, v) in &p.services {
            if k.slot == 0 {
                match p.rev_nat.get(&v.rev_nat_id) {
                    Some(r) if (r.addr, r.port) == (k.addr, k.port) => {}
                    other => bad.push(format!("{k:?}: rev-NAT {} is {other:?}", v.rev_nat_id)),
                }
                for slot in 1..=v.count {
                    if !p.services.contains_key(&ServiceKey { slot, ..*k }) {
                        bad.push(format!("{k:?} counts missing slot {slot}"));
                    }
                }
            } else {
                match header(k) {
                    Some(h) if h.count >= k.slot && h.rev_nat_id == v.rev_nat_id => {}
                    other => bad.push(format!("slot {k:?} under header {other:?}")),
                }
                if !p.backends.contains_key(&v.backend_id) {
                    bad.push(format!("slot {k:?} names missing backend {}", v.backend_id));
                }
            }
        }
        let slotted: BTreeSet<u32> = p
            .services
            .iter()
            .filter(|(k, _)| k.slot != 0)
            .map(|(_, v)| v.backend_id)
            .collect();
        let headed: BTreeSet<(u32, u8, bool)> = p
            .services
            .iter()
            .filter(|(k, _)| k.slot == 0)
            .map(|(k, v)| (v.rev_nat_id, k.proto, v.flags & SVC_FLAG_AFFINITY != 0))
            .collect();
        let named_rev = |id: u32| headed.iter().any(|(r, _, _)| *r == id);
        for (id, _) in p
            .backends
            .iter()
            .filter(|(id, b)| !slotted.contains(id) && b.state != BACKEND_TERMINATING)
        {
            bad.push(format!("backend {id} named by no slot"));
        }
        for id in p.rev_nat.keys().filter(|id| !named_rev(**id)) {
            bad.push(format!("rev-NAT {id} named by no header"));
        }
        for k in &p.affinity_match {
            if !p.backends.contains_key(&k.backend_id)
                || !headed.contains(&(k.rev_nat_id, k.proto, true))
            {
                bad.push(format!("affinity member {k:?} of no frontend"));
            }
        }
        for (k, prefix) in &p.source_ranges {
            if !headed
                .iter()
                .any(|(r, proto, _)| *r == u32::from_be(k.rev_nat_id) && *proto == k.proto)
            {
                bad.push(format!("source range {k:?}/{prefix} of no frontend"));
            }
        }
        bad
    }

    /// What a sync with no limits would program for `d`.
    fn fresh(d: &Desired) -> Programmed {
        let mut s = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        assert!(s.sync_all(d).unwrap().complete());
        s.programmed().clone()
    }

    fn sizes(sync: &ServiceSync<InMemory>) -> (usize, usize, usize) {
        let m = sync.maps();
        (
            m.services.content().len(),
            m.backends.content().len(),
            m.rev_nat.content().len(),
        )
    }

    #[test]
    fn a_full_sync_writes_the_maps_and_a_second_writes_nothing() {
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        let d = desired(&[2, 3]);
        let first = sync.sync_all(&d).unwrap();
        assert_eq!(
            first.written,
            2 + 1 + 3,
            "two backends, one rev-NAT, header + two slots"
        );
        assert_eq!(sync.maps().services.content().len(), 3);
        let second = sync.sync_all(&d).unwrap();
        assert_eq!((second.written, second.deleted), (0, 0));
        assert!(second.complete());
    }

    #[test]
    fn after_a_failed_write_the_next_sync_repairs_the_maps() {
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        sync.sync_all(&desired(&[2, 3])).unwrap();
        sync.maps_mut().services.fail_after(1);
        let wanted = desired(&[4, 5, 6]);
        let changed = wanted.frontends.keys().copied().collect();
        let failed = sync.sync_changes(&wanted, &changed).unwrap();
        assert_eq!(failed.unprogrammed.len(), 1, "{failed:?}");
        assert_eq!(
            sync.programmed(),
            &sync.maps().read().unwrap(),
            "the bookkeeping follows every write that worked"
        );
        sync.maps_mut().services.heal();
        assert!(sync.sync_changes(&wanted, &changed).unwrap().complete());
        assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
        let fk = front_key(wanted.frontends.keys().next().unwrap());
        assert_eq!(view(sync.programmed(), fk), view(&fresh(&wanted), fk));
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
    }

    /// SERVICES, BACKENDS and REV_NAT are exactly full; one Service goes and another comes in
    /// the same sync, full or incremental: the removal makes the room first.
    #[test]
    fn with_full_maps_a_removed_service_makes_room_for_a_new_one_in_the_same_sync() {
        for incremental in [false, true] {
            let mut before = Desired::default();
            service(&mut before, "a", 1, [2, 3]);
            service(&mut before, "b", 2, [4, 5]);
            let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
            assert!(sync.sync_all(&before).unwrap().complete());
            let (services, backends, rev_nat) = sizes(&sync);
            let m = sync.maps_mut();
            m.services.set_capacity(services);
            m.backends.set_capacity(backends);
            m.rev_nat.set_capacity(rev_nat);

            let mut after = before.clone();
            after.frontends.remove(&front(1));
            service(&mut after, "c", 3, [6, 7]);
            let report = if incremental {
                sync.sync_changes(&after, &[front(1), front(3)].into())
            } else {
                sync.sync_all(&after)
            }
            .unwrap();
            assert!(report.complete(), "incremental: {incremental}: {report:?}");
            assert_eq!(
                (report.written, report.deleted),
                (2 + 1 + 3, 2 + 1 + 3),
                "incremental: {incremental}: c written and a deleted, nothing tried twice"
            );
            let m = sync.maps();
            assert_eq!(
                (m.services.refused, m.backends.refused, m.rev_nat.refused),
                (0, 0, 0),
                "incremental: {incremental}: the room was made before c was written"
            );
            assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
            let expected = fresh(&after);
            for f in [front(1), front(2), front(3)] {
                assert_eq!(
                    view(sync.programmed(), front_key(&f)),
                    view(&expected, front_key(&f)),
                    "{f:?}"
                );
            }
            assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
        }
    }

    /// a (4 backends), b (6) and c (2) with room for 9 backends.
    fn too_big() -> (Desired, ServiceSync<InMemory>) {
        let mut d = Desired::default();
        service(&mut d, "a", 1, 2..6);
        service(&mut d, "b", 2, 10..16);
        service(&mut d, "c", 3, [6, 7]);
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        sync.maps_mut().backends.set_capacity(9);
        (d, sync)
    }

    #[test]
    fn a_service_too_big_for_the_room_left_is_skipped_and_reported_and_the_others_are_programmed() {
        let (d, mut sync) = too_big();
        let report = sync.sync_all(&d).unwrap();
        let [failed] = &report.unprogrammed[..] else {
            panic!("one frontend left out: {report:?}");
        };
        assert_eq!(failed.service.as_deref(), Some("default/b:http"));
        assert_eq!(failed.frontend, "10.96.0.2:80/TCP");
        assert_eq!(failed.error.full_map(), Some(names::BACKENDS));

        assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
        let expected = fresh(&d);
        for f in [front(1), front(3)] {
            assert_eq!(
                view(sync.programmed(), front_key(&f)),
                view(&expected, front_key(&f))
            );
        }
        assert_eq!(
            view(sync.programmed(), front_key(&front(2))),
            View::default()
        );
        assert_eq!(sync.programmed().backends.len(), 6, "a's and c's backends");
        assert_eq!(sync.programmed().rev_nat.len(), 2, "b's rev-NAT entry went");
    }

    #[test]
    fn a_service_that_grows_past_the_room_left_keeps_serving_its_old_backends() {
        let (mut d, mut sync) = too_big();
        service(&mut d, "b", 2, [10, 11]);
        assert!(sync.sync_all(&d).unwrap().complete());
        let old = view(sync.programmed(), front_key(&front(2)));
        service(&mut d, "b", 2, 10..16);
        let report = sync.sync_changes(&d, &[front(2)].into()).unwrap();
        assert_eq!(report.unprogrammed.len(), 1, "{report:?}");
        assert_eq!(view(sync.programmed(), front_key(&front(2))), old);
        assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
    }

    #[test]
    fn a_frontend_refused_for_room_that_a_later_one_frees_is_written_in_the_same_sync() {
        let mut d = Desired::default();
        service(&mut d, "a", 1, [2, 3]);
        service(&mut d, "b", 2, 4..8);
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        assert!(sync.sync_all(&d).unwrap().complete());
        sync.maps_mut().backends.set_capacity(6);
        // a (first in order) grows by two; b, after it, shrinks by three.
        service(&mut d, "a", 1, [2, 3, 8, 9]);
        service(&mut d, "b", 2, [4]);
        let report = sync.sync_all(&d).unwrap();
        assert!(report.complete(), "{report:?}");
        assert!(sync.maps().backends.refused > 0, "a was refused at first");
        let expected = fresh(&d);
        for f in [front(1), front(2)] {
            assert_eq!(
                view(sync.programmed(), front_key(&f)),
                view(&expected, front_key(&f))
            );
        }
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
    }

    /// An incremental change removes 10.96.0.1:80/UDP and adds a TCP frontend on the same
    /// address and port, which would take over its rev-NAT id but does not fit (SERVICES):
    /// nothing it was to take over stays behind.
    #[test]
    fn an_incremental_sync_that_leaves_a_frontend_out_keeps_nothing_only_it_would_use() {
        let mut d = Desired::default();
        service(&mut d, "a", 1, [2, 3]);
        let udp = Frontend {
            proto: Proto::Udp,
            ..front(1)
        };
        let mut spec = d.frontends.remove(&front(1)).unwrap();
        spec.backends
            .iter_mut()
            .for_each(|b| b.addr.proto = Proto::Udp);
        d.frontends.insert(udp, spec);
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        assert!(sync.sync_all(&d).unwrap().complete());
        sync.maps_mut().services.set_capacity(2);
        d.frontends.remove(&udp);
        service(&mut d, "a", 1, [2, 3]);
        let report = sync.sync_changes(&d, &[udp, front(1)].into()).unwrap();
        assert_eq!(report.unprogrammed.len(), 1, "{report:?}");
        assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
        assert_eq!(sync.programmed(), &Programmed::default());
    }

    #[test]
    fn retrying_a_service_that_does_not_fit_uses_up_no_ids_and_it_is_programmed_once_there_is_room()
    {
        let (mut d, mut sync) = too_big();
        let first = sync.sync_all(&d).unwrap();
        assert_eq!(first.unprogrammed.len(), 1);
        let held = sizes(&sync);
        for retry in 0..50 {
            let report = if retry % 2 == 0 {
                sync.sync_all(&d)
            } else {
                sync.sync_changes(&d, &[front(2)].into())
            }
            .unwrap();
            assert_eq!(report.unprogrammed.len(), 1, "retry {retry}");
            assert_eq!(sizes(&sync), held, "retry {retry}: nothing left behind");
        }
        d.frontends.remove(&front(1));
        let report = sync.sync_all(&d).unwrap();
        assert!(report.complete(), "{report:?}");
        assert_eq!(
            view(sync.programmed(), front_key(&front(2))),
            view(&fresh(&d), front_key(&front(2)))
        );
        assert_eq!(orphans(sync.programmed()), Vec::<String>::new());
        assert!(
            sync.programmed().backends.keys().all(|id| *id <= 12),
            "the 12 backends ever planned have ids 1 to 12: {:?}",
            sync.programmed().backends.keys()
        );
        assert!(sync.programmed().rev_nat.keys().all(|id| *id <= 3));
    }

    /// Random changes to frontends sharing backends and rev-NAT ids, synced fully or
    /// incrementally into maps of random, small capacities: after every sync the bookkeeping
    /// equals the maps, nothing is orphaned, every frontend not reported is exactly as a sync
    /// without limits would program it, every reported one is exactly as it was, after a sync
    /// that left nothing out a full plan changes nothing (backend states included), and once
    /// the limits go everything is programmed.
    #[test]
    fn syncs_into_full_maps_skip_only_what_does_not_fit_and_leave_nothing_behind() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(14);
        let fronts: Vec<Frontend> = (1..=4)
            .flat_map(|i| [Proto::Tcp, Proto::Udp].map(|proto| Frontend { proto, ..front(i) }))
            .collect();
        let random_spec = |rng: &mut rand::rngs::StdRng, f: &Frontend| {
            let mut backends: Vec<_> = (0..rng.gen_range(0..5))
                .map(|_| {
                    let mut b = backend(rng.gen_range(2..14), rng.gen_bool(0.15));
                    b.addr.proto = f.proto;
                    b
                })
                .collect();
            backends.sort();
            backends.dedup_by_key(|b| b.addr);
            let internal = rng.gen_bool(0.2).then(|| {
                backends
                    .iter()
                    .copied()
                    .filter(|_| rng.gen_bool(0.7))
                    .collect()
            });
            FrontendSpec {
                backends,
                internal,
                local_only: rng.gen_bool(0.2),
                affinity_timeout: rng.gen_bool(0.3).then_some(60),
                source_ranges: (0..rng.gen_range(0..3))
                    .map(|i| (Ipv4Addr::new(198, 18, i, 0), 24))
                    .collect(),
                service: format!("default/s{}:p", f.ip.octets()[3]),
                ..Default::default()
            }
        };
        let mut d = Desired::default();
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        let mut left_out = 0;
        for step in 0..400 {
            let limited = step % 50 < 45;
            let m = sync.maps_mut();
            let cap = |rng: &mut rand::rngs::StdRng, n| {
                if limited {
                    rng.gen_range(0..n)
                } else {
                    usize::MAX
                }
            };
            m.services.set_capacity(cap(&mut rng, 40));
            m.backends.set_capacity(cap(&mut rng, 14));
            m.rev_nat.set_capacity(cap(&mut rng, 6));
            m.affinity_match.set_capacity(cap(&mut rng, 16));
            m.source_ranges.set_capacity(cap(&mut rng, 10));
            let mut changed = BTreeSet::new();
            for _ in 0..rng.gen_range(1..4) {
                let f = fronts[rng.gen_range(0..fronts.len())];
                if rng.gen_bool(0.3) {
                    d.frontends.remove(&f);
                } else {
                    let spec = random_spec(&mut rng, &f);
                    d.frontends.insert(f, spec);
                }
                changed.insert(f);
            }
            let before = sync.programmed().clone();
            let report = if rng.gen_bool(0.5) {
                sync.sync_all(&d)
            } else {
                sync.sync_changes(&d, &changed)
            }
            .unwrap();
            assert_eq!(report.leftovers, 0, "step {step}: deletes never fail here");
            assert_eq!(
                sync.programmed(),
                &sync.maps().read().unwrap(),
                "step {step}: bookkeeping"
            );
            let now = sync.programmed();
            assert_eq!(
                orphans(now),
                Vec::<String>::new(),
                "step {step}: {report:?}"
            );
            let expected = fresh(&d);
            let failed: BTreeSet<&str> = report
                .unprogrammed
                .iter()
                .map(|u| u.frontend.as_str())
                .collect();
            left_out += failed.len();
            for f in &fronts {
                let fk = front_key(f);
                let wanted = if failed.contains(apply::describe(fk).as_str()) {
                    view(&before, fk)
                } else {
                    view(&expected, fk)
                };
                assert_eq!(view(now, fk), wanted, "step {step}: {f:?}, {report:?}");
            }
            if !limited {
                assert!(report.complete(), "step {step}: no limits: {report:?}");
            }
            if report.complete() {
                let full = plan::plan(&d, now, &mut sync.cursor.clone()).unwrap();
                let ops = plan::diff(now, &full);
                assert!(
                    ops.is_empty(),
                    "step {step}: a full plan would write {ops:?}"
                );
            }
        }
        assert!(
            left_out > 50,
            "the limits bite: {left_out} frontends left out"
        );
    }
}
