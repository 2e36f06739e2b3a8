//! Keeping `SERVICES`, `BACKENDS` and `REV_NAT` equal to the model's desired state.
//!
//! [`ServiceSync`] remembers what the maps hold ([`Programmed`]), the id cursor and, after the
//! first full sync, which frontend uses which id ([`Usage`]). A full sync plans everything
//! ([`plan::plan`]); a change to a few frontends plans just those ([`partial::plan_changes`]).
//! Both write only the difference, in [`plan::diff`]'s order, through [`MapWriter`]s.
//!
//! Invariant: after a failed write the maps may hold part of a change, so the usage is dropped
//! and the next sync is a full one, which rewrites whatever differs from the desired state.
use std::collections::{BTreeMap, BTreeSet};

use switchyard_abi::{AffinityMatchKey, Backend, RevNat, ServiceKey, ServiceValue};

use super::maps::{MapWriter, MemMap};
use super::partial::{self, Usage};
use super::plan::{self, IdCursor, Op, Programmed, SourceRange};
use super::{DatapathError, SyncReport};
use crate::model::{Desired, Frontend};

/// The map types of one set of service maps (the kernel's, or in-memory ones).
pub trait ServiceWriters {
    /// `BACKENDS`.
    type Backends: MapWriter<u32, Backend>;
    /// `REV_NAT`.
    type RevNat: MapWriter<u16, RevNat>;
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
    /// exposes a half-written service.
    pub fn sync_all(&mut self, desired: &Desired) -> Result<SyncReport, DatapathError> {
        let next = plan::plan(desired, &self.programmed, &mut self.cursor)?;
        let ops = plan::diff(&self.programmed, &next);
        self.usage = None;
        let report = self.apply_all(&ops)?;
        self.usage = Some(Usage::build(desired, &next));
        self.programmed = next;
        Ok(report)
    }

    /// Like [`ServiceSync::sync_all`] when only the frontends in `changed` differ from what was
    /// last synced: plans and writes just those (and the backends they touch). Without a usage
    /// (before the first full sync, after a failure) it does a full one.
    pub fn sync_changes(
        &mut self,
        desired: &Desired,
        changed: &BTreeSet<Frontend>,
    ) -> Result<SyncReport, DatapathError> {
        // Taken out while the maps change: if a write fails they are between two states, and
        // the next sync is a full one that rewrites whatever differs.
        let Some(mut usage) = self.usage.take() else {
            return self.sync_all(desired);
        };
        let change =
            partial::plan_changes(desired, changed, &self.programmed, &usage, &mut self.cursor)?;
        let report = self.apply_all(&plan::diff(&change.before, &change.after))?;
        change.commit(&mut self.programmed, &mut usage);
        self.usage = Some(usage);
        Ok(report)
    }

    fn apply_all(&mut self, ops: &[Op]) -> Result<SyncReport, DatapathError> {
        let mut report = SyncReport::default();
        for op in ops {
            if let Err(e) = self.maps.apply(op) {
                // The maps are no longer what `programmed` says: read them back so the next
                // full sync diffs against the truth.
                if let Ok(actual) = self.maps.read() {
                    self.programmed = actual;
                }
                return Err(e);
            }
            report.count(op);
        }
        Ok(report)
    }
}

impl SyncReport {
    fn count(&mut self, op: &Op) {
        match op {
            Op::PutBackend(..)
            | Op::PutRevNat(..)
            | Op::PutService(..)
            | Op::PutAffinityMatch(..)
            | Op::PutSourceRange(..) => self.written += 1,
            _ => self.deleted += 1,
        }
    }
}

/// Service maps in memory (tests).
pub struct InMemory;

impl ServiceWriters for InMemory {
    type Backends = MemMap<u32, Backend>;
    type RevNat = MemMap<u16, RevNat>;
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
mod tests {
    use super::*;
    use crate::datapath::plan::tests::backend;

    fn desired(backends: &[u8]) -> Desired {
        crate::datapath::plan::tests::desired(backends.iter().map(|b| backend(*b, false)).collect())
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
        assert_eq!(sync.sync_all(&d).unwrap(), SyncReport::default());
    }

    #[test]
    fn after_a_failed_write_the_next_sync_repairs_the_maps() {
        let mut sync = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
        sync.sync_all(&desired(&[2, 3])).unwrap();
        sync.maps_mut().services.fail_after(1);
        let wanted = desired(&[4, 5, 6]);
        let changed = wanted.frontends.keys().copied().collect();
        assert!(sync.sync_changes(&wanted, &changed).is_err());
        sync.maps_mut().services.heal();
        sync.sync_changes(&wanted, &changed).unwrap();
        let fresh = {
            let mut s = ServiceSync::open(MemServiceMaps::in_memory()).unwrap();
            s.sync_all(&wanted).unwrap();
            s.programmed().services.len()
        };
        assert_eq!(sync.programmed(), &sync.maps().read().unwrap());
        assert_eq!(sync.maps().services.content().len(), fresh);
    }
}
