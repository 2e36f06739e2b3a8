//! Writing a planned change of the service maps one frontend at a time, so that a frontend the
//! maps cannot take — a full map, a failing write — is skipped and reported while everything
//! else is still written.
//!
//! [`write()`] takes what the touched entries must become (a [`Target`]) in three steps:
//!
//! 1. **Make room.** Each frontend that goes away is deleted (its header before its slots and
//!    extras); then every backend and rev-NAT entry the target no longer has and no entry in the
//!    maps names any more.
//! 2. **Frontends.** Each added or changed frontend gets its own [`plan::diff`]: the backends it
//!    uses and its rev-NAT entry, affinity members, source ranges, slots, the header, then the
//!    slots and extras it no longer has. A frontend being replaced serves its old entries until
//!    its new header is written.
//! 3. **Leftovers.** Backends and rev-NAT entries that step 2 left unused are deleted; in a
//!    full sync also those only a failed frontend was to use (a removed frontend's, say), save a
//!    terminating backend, which may still carry that frontend's old connections. Backends whose
//!    state changed without a frontend of step 2 writing them are updated; after a failure in a
//!    full sync a backend is active exactly while a slot in the maps names it. If room was made
//!    after a frontend failed, the failed ones are tried once more.
//!
//! When a write of a frontend fails, its entries are put back as they were before its step —
//! the diff from what was written back to what was there, in the same safe order — so the
//! backends and rev-NAT entry it created go too; it is reported as [`Unprogrammed`] and the next
//! frontend goes on. A full map only ever refuses new keys, and putting back only overwrites and
//! deletes, so after a full map every entry left belongs to a programmed frontend. An
//! incremental target cannot see which backends the frontends left out were to share, so
//! [`super::services::ServiceSync`] follows one that left something out with a full sync.
//!
//! Invariants: per frontend the order of [`plan::diff`] holds, so no packet sees a header
//! counting a slot that is not written or a slot naming a backend that is not written;
//! `programmed` changes with each write that succeeds, and only then, so it always equals the
//! maps, whatever failed.
use std::collections::{BTreeSet, HashMap, HashSet};

use switchyard_abi::{
    addr_from_be, proto, AffinityMatchKey, ServiceKey, ServiceValue, SourceRangeKey,
    BACKEND_ACTIVE, BACKEND_TERMINATING,
};

use super::partial::programmed_entries;
use super::plan::{
    self, backend_value, front_key, identity, uses_of, BackendIdentity, FrontKey, Op, Programmed,
    SourceRange,
};
use super::services::{ServiceMaps, ServiceWriters};
use super::DatapathError;
use crate::model::Desired;

/// One frontend of a [`Target`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Front {
    /// Its map key.
    pub key: FrontKey,
    /// `namespace/name:port` of its Service; `None` for a frontend that goes away.
    pub service: Option<String>,
    /// The backend ids it uses afterwards (terminating ones too); `None`: it goes away.
    pub uses: Option<Vec<u32>>,
}

/// A planned change: what the entries it touches must hold afterwards.
#[derive(Clone, Debug)]
pub struct Target<'a> {
    /// The content of the frontends in `fronts` and of the backends and rev-NAT ids they use.
    pub after: &'a Programmed,
    /// The frontends to write or remove.
    pub fronts: Vec<Front>,
    /// Backends the change leaves unused: deleted once no entry names them.
    pub unused_backends: Vec<u32>,
    /// Rev-NAT ids the change leaves unused: deleted once no entry names them.
    pub unused_rev_nat: Vec<u32>,
    /// `fronts` are all frontends in the maps and `after` everything (a full sync): affinity
    /// members and source ranges of no frontend are deleted too.
    pub whole: bool,
}

impl<'a> Target<'a> {
    /// A full sync: the maps, now `current`, become `next`, which [`plan::plan`] made of
    /// `desired`.
    pub fn whole(desired: &Desired, current: &Programmed, next: &'a Programmed) -> Self {
        let ids: HashMap<BackendIdentity, u32> = next
            .backends
            .iter()
            .map(|(id, b)| (identity(b), *id))
            .collect();
        let mut fronts: Vec<Front> = desired
            .frontends
            .iter()
            .map(|(f, spec)| Front {
                key: front_key(f),
                service: Some(spec.service.clone()),
                uses: Some(
                    uses_of(spec, |b| ids.get(&identity(&backend_value(b))).copied())
                        .into_iter()
                        .map(|(id, _)| id)
                        .collect(),
                ),
            })
            .collect();
        let wanted: HashSet<FrontKey> = fronts.iter().map(|f| f.key).collect();
        let gone: BTreeSet<FrontKey> = current
            .services
            .keys()
            .map(|k| (k.addr, k.port, k.proto))
            .filter(|fk| !wanted.contains(fk))
            .collect();
        fronts.extend(gone.into_iter().map(|key| Front {
            key,
            service: None,
            uses: None,
        }));
        Target {
            after: next,
            fronts,
            unused_backends: current
                .backends
                .keys()
                .filter(|id| !next.backends.contains_key(id))
                .copied()
                .collect(),
            unused_rev_nat: current
                .rev_nat
                .keys()
                .filter(|id| !next.rev_nat.contains_key(id))
                .copied()
                .collect(),
            whole: true,
        }
    }
}

/// A frontend a sync left as it was because one of its writes failed; the next full sync
/// tries again.
#[derive(Debug)]
pub struct Unprogrammed {
    /// `namespace/name:port` of its Service; `None` for a frontend that was to go away.
    pub service: Option<String>,
    /// The frontend, `address:port/PROTOCOL`.
    pub frontend: String,
    /// The write that failed.
    pub error: DatapathError,
}

/// What a service sync did.
#[derive(Debug, Default)]
pub struct ServiceReport {
    /// Map entries written (created or changed), putting back included.
    pub written: usize,
    /// Map entries deleted.
    pub deleted: usize,
    /// Frontends left as they were.
    pub unprogrammed: Vec<Unprogrammed>,
    /// Entries of no single frontend (an unused backend or rev-NAT entry, an affinity member or
    /// source range of no frontend, a backend's state) that could not be written or deleted.
    pub leftovers: usize,
}

impl ServiceReport {
    /// Whether the maps now hold all of the target.
    pub fn complete(&self) -> bool {
        self.unprogrammed.is_empty() && self.leftovers == 0
    }
}

/// `address:port/PROTOCOL` of a frontend key.
pub fn describe(fk: FrontKey) -> String {
    let name = match fk.2 {
        proto::TCP => "TCP".to_string(),
        proto::UDP => "UDP".to_string(),
        other => format!("proto {other}"),
    };
    format!("{}:{}/{name}", addr_from_be(fk.0), u16::from_be(fk.1))
}

/// Writes `target` into `maps`, keeping `programmed` equal to what they hold (see the module
/// documentation for the order).
pub fn write<W: ServiceWriters>(
    maps: &mut ServiceMaps<W>,
    programmed: &mut Programmed,
    target: &Target<'_>,
) -> ServiceReport {
    let mut w = Writer {
        maps,
        programmed,
        report: ServiceReport::default(),
        failing: false,
        room_made: false,
    };
    let after_extras = Extras::of(target.after);
    let (gone, kept): (Vec<&Front>, Vec<&Front>) =
        target.fronts.iter().partition(|f| f.uses.is_none());
    let mut failed = Vec::new();

    let extras = Extras::of(w.programmed);
    for f in gone {
        if let Err(e) = w.front(f, target, &extras, &after_extras) {
            failed.push((f, e));
        }
    }
    if target.whole {
        w.strays(target);
    }
    w.free(target, &failed);

    let extras = Extras::of(w.programmed);
    for f in kept {
        if let Err(e) = w.front(f, target, &extras, &after_extras) {
            failed.push((f, e));
        }
    }
    w.free(target, &failed);
    w.settle(target, &failed);

    if !failed.is_empty() && w.room_made {
        let extras = Extras::of(w.programmed);
        for (f, _) in std::mem::take(&mut failed) {
            if let Err(e) = w.front(f, target, &extras, &after_extras) {
                failed.push((f, e));
            }
        }
        w.free(target, &failed);
        w.settle(target, &failed);
    }
    w.report.unprogrammed = failed
        .into_iter()
        .map(|(f, error)| Unprogrammed {
            service: f.service.clone(),
            frontend: describe(f.key),
            error,
        })
        .collect();
    w.report
}

/// Affinity members and source ranges grouped by the rev-NAT id and protocol of their frontend.
#[derive(Default)]
struct Extras {
    affinity: HashMap<(u32, u8), Vec<AffinityMatchKey>>,
    ranges: HashMap<(u32, u8), Vec<SourceRange>>,
}

impl Extras {
    fn of(p: &Programmed) -> Extras {
        let mut e = Extras::default();
        for k in &p.affinity_match {
            e.affinity
                .entry((k.rev_nat_id, k.proto))
                .or_default()
                .push(*k);
        }
        for r in &p.source_ranges {
            e.ranges
                .entry((u32::from_be(r.0.rev_nat_id), r.0.proto))
                .or_default()
                .push(*r);
        }
        e
    }

    /// Copies the extras of `group` into `out`.
    fn add(&self, group: (u32, u8), out: &mut Programmed) {
        out.affinity_match
            .extend(self.affinity.get(&group).into_iter().flatten());
        out.source_ranges
            .extend(self.ranges.get(&group).into_iter().flatten());
    }
}

/// The rev-NAT id the `SERVICES` entries of `fk` in `p` carry.
fn rev_of(p: &Programmed, fk: FrontKey) -> Option<u32> {
    programmed_entries(&p.services, fk)
        .next()
        .map(|(_, v)| v.rev_nat_id)
}

struct Writer<'m, W: ServiceWriters> {
    maps: &'m mut ServiceMaps<W>,
    programmed: &'m mut Programmed,
    report: ServiceReport,
    /// A frontend has failed.
    failing: bool,
    /// Something was deleted (not put back) since a frontend failed.
    room_made: bool,
}

impl<W: ServiceWriters> Writer<'_, W> {
    /// Applies `op` to the maps and, if that worked, to `programmed`.
    fn op(&mut self, op: &Op) -> Result<(), DatapathError> {
        self.maps.apply(op)?;
        self.programmed.apply(op);
        if op.is_delete() {
            self.report.deleted += 1;
        } else {
            self.report.written += 1;
        }
        Ok(())
    }

    /// An operation towards the target (not putting back).
    fn forward(&mut self, op: &Op) -> Result<(), DatapathError> {
        self.op(op)?;
        if self.failing && op.is_delete() {
            self.room_made = true;
        }
        Ok(())
    }

    /// An operation of no single frontend: a failure is counted and left to the next sync.
    fn leftover(&mut self, op: &Op) {
        if let Err(e) = self.forward(op) {
            tracing::warn!(error = %e, ?op, "a service map write failed; the next full sync retries it");
            self.report.leftovers += 1;
        }
    }

    /// Writes (or removes) one frontend; on a failure puts its entries back as they were.
    fn front(
        &mut self,
        f: &Front,
        target: &Target<'_>,
        extras: &Extras,
        after_extras: &Extras,
    ) -> Result<(), DatapathError> {
        let fk = f.key;
        let now_rev = rev_of(self.programmed, fk);
        let mut before = Programmed {
            services: programmed_entries(&self.programmed.services, fk)
                .map(|(k, v)| (*k, *v))
                .collect(),
            ..Programmed::default()
        };
        let mut after = Programmed::default();
        if let Some(rev) = now_rev {
            extras.add((rev, fk.2), &mut before);
        }
        if let Some(uses) = &f.uses {
            after.services = programmed_entries(&target.after.services, fk)
                .map(|(k, v)| (*k, *v))
                .collect();
            if let Some(rev) = rev_of(target.after, fk) {
                after_extras.add((rev, fk.2), &mut after);
                // Strays of a previous agent under the same id are the frontend's now.
                if now_rev != Some(rev) {
                    extras.add((rev, fk.2), &mut before);
                }
                if let Some(r) = target.after.rev_nat.get(&rev) {
                    after.rev_nat.insert(rev, *r);
                }
                if let Some(r) = self.programmed.rev_nat.get(&rev) {
                    before.rev_nat.insert(rev, *r);
                }
            }
            for id in uses {
                let Some(b) = target.after.backends.get(id) else {
                    continue;
                };
                after.backends.insert(*id, *b);
                if let Some(b) = self.programmed.backends.get(id) {
                    before.backends.insert(*id, *b);
                }
            }
        }
        let mut now = before.clone();
        for op in plan::diff(&before, &after) {
            if let Err(e) = self.forward(&op) {
                self.failing = true;
                self.put_back(&now, &before);
                return Err(e);
            }
            now.apply(&op);
        }
        Ok(())
    }

    /// Turns the entries of one frontend from `now` back into `before`.
    fn put_back(&mut self, now: &Programmed, before: &Programmed) {
        for op in plan::diff(now, before) {
            if let Err(e) = self.op(&op) {
                tracing::warn!(error = %e, ?op, "putting a frontend back failed; the next full sync repairs it");
                return;
            }
        }
    }

    /// Deletes the affinity members and source ranges of no frontend the target has.
    fn strays(&mut self, target: &Target<'_>) {
        let extras = Extras::of(self.programmed);
        let mut claimed = HashSet::new();
        for f in &target.fronts {
            claimed.extend(rev_of(self.programmed, f.key).map(|rev| (rev, f.key.2)));
            claimed.extend(rev_of(target.after, f.key).map(|rev| (rev, f.key.2)));
        }
        let mut ops = Vec::new();
        for (group, keys) in &extras.affinity {
            if !claimed.contains(group) {
                ops.extend(
                    keys.iter()
                        .filter(|k| !target.after.affinity_match.contains(k))
                        .map(|k| Op::DeleteAffinityMatch(*k)),
                );
            }
        }
        for (group, ranges) in &extras.ranges {
            if !claimed.contains(group) {
                ops.extend(
                    ranges
                        .iter()
                        .filter(|r| !target.after.source_ranges.contains(r))
                        .map(|r| Op::DeleteSourceRange(*r)),
                );
            }
        }
        for op in ops {
            self.leftover(&op);
        }
    }

    /// Deletes the unused backends and rev-NAT entries that no entry names any more; in a
    /// whole target also those that only `failed` frontends were to use (they may have been
    /// another frontend's, now gone), except a terminating backend, which may still carry
    /// connections of a failed frontend's old entries.
    fn free(&mut self, target: &Target<'_>, failed: &[(&Front, DatapathError)]) {
        let present_backend = |id: &u32| self.programmed.backends.contains_key(id);
        let present_rev = |id: &u32| self.programmed.rev_nat.contains_key(id);
        let mut gone_backends: BTreeSet<u32> = target
            .unused_backends
            .iter()
            .copied()
            .filter(present_backend)
            .collect();
        let mut gone_revs: BTreeSet<u32> = target
            .unused_rev_nat
            .iter()
            .copied()
            .filter(present_rev)
            .collect();
        if target.whole && !failed.is_empty() {
            let failed_keys: HashSet<FrontKey> = failed.iter().map(|(f, _)| f.key).collect();
            let serving: HashSet<u32> = target
                .fronts
                .iter()
                .filter(|f| !failed_keys.contains(&f.key))
                .flat_map(|f| f.uses.iter().flatten().copied())
                .collect();
            for (f, _) in failed {
                gone_backends.extend(f.uses.iter().flatten().copied().filter(|id| {
                    !serving.contains(id)
                        && present_backend(id)
                        && target
                            .after
                            .backends
                            .get(id)
                            .is_some_and(|b| b.state == BACKEND_ACTIVE)
                }));
                gone_revs.extend(rev_of(target.after, f.key).filter(present_rev));
            }
        }
        if gone_backends.is_empty() && gone_revs.is_empty() {
            return;
        }
        // Entries naming an unused id can only belong to the target's frontends (the others
        // keep using what they name), unless the target is everything.
        let mut slot_backends = HashSet::new();
        let mut entry_revs = HashSet::new();
        let mut note = |k: &ServiceKey, v: &ServiceValue| {
            if k.slot != 0 {
                slot_backends.insert(v.backend_id);
            }
            entry_revs.insert(v.rev_nat_id);
        };
        if target.whole {
            self.programmed
                .services
                .iter()
                .for_each(|(k, v)| note(k, v));
        } else {
            for f in &target.fronts {
                programmed_entries(&self.programmed.services, f.key).for_each(|(k, v)| note(k, v));
            }
        }
        let affinity_revs: HashSet<u32> = if gone_revs.is_empty() {
            HashSet::new()
        } else {
            self.programmed
                .affinity_match
                .iter()
                .map(|k| k.rev_nat_id)
                .collect()
        };
        let mut ops = Vec::new();
        for id in gone_backends {
            let lo = AffinityMatchKey {
                backend_id: id,
                rev_nat_id: 0,
                proto: 0,
                pad: [0; 3],
            };
            let hi = AffinityMatchKey {
                rev_nat_id: u32::MAX,
                proto: u8::MAX,
                pad: [u8::MAX; 3],
                ..lo
            };
            let member = self
                .programmed
                .affinity_match
                .range(lo..=hi)
                .next()
                .is_some();
            if !slot_backends.contains(&id) && !member {
                ops.push(Op::DeleteBackend(id));
            }
        }
        for id in gone_revs {
            let lo = SourceRangeKey {
                rev_nat_id: id.to_be(),
                proto: 0,
                pad: [0; 3],
                addr: 0,
            };
            let hi = SourceRangeKey {
                proto: u8::MAX,
                pad: [u8::MAX; 3],
                addr: u32::MAX,
                ..lo
            };
            let range = self
                .programmed
                .source_ranges
                .range((lo, 0)..=(hi, u8::MAX))
                .next()
                .is_some();
            if !entry_revs.contains(&id) && !affinity_revs.contains(&id) && !range {
                ops.push(Op::DeleteRevNat(id));
            }
        }
        for op in ops {
            self.leftover(&op);
        }
    }

    /// Updates the backends of the target whose value differs (a state change no frontend
    /// step carried). After a failure a backend's state follows what the maps now hold — active
    /// while a slot names it — in a whole target, and a part leaves failed frontends' backends
    /// as they are (the full sync that follows sets them).
    fn settle(&mut self, target: &Target<'_>, failed: &[(&Front, DatapathError)]) {
        let slotted: Option<HashSet<u32>> = (target.whole && !failed.is_empty()).then(|| {
            self.programmed
                .services
                .iter()
                .filter(|(k, _)| k.slot != 0)
                .map(|(_, v)| v.backend_id)
                .collect()
        });
        let keep: HashSet<u32> = if target.whole {
            HashSet::new()
        } else {
            failed
                .iter()
                .flat_map(|(f, _)| f.uses.iter().flatten().copied())
                .collect()
        };
        let ops: Vec<Op> = target
            .after
            .backends
            .iter()
            .filter(|(id, _)| !keep.contains(id))
            .filter_map(|(id, b)| {
                let now = self.programmed.backends.get(id)?;
                let mut b = *b;
                if let Some(slotted) = &slotted {
                    b.state = if slotted.contains(id) {
                        BACKEND_ACTIVE
                    } else {
                        BACKEND_TERMINATING
                    };
                }
                (*now != b).then_some(Op::PutBackend(*id, b))
            })
            .collect();
        for op in ops {
            self.leftover(&op);
        }
    }
}
