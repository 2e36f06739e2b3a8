//! Planning a change to a few frontends without replanning the others.
//!
//! [`super::plan::plan`] rebuilds the content of every map from the whole desired state: right
//! after start and after a relist, but linear in the cluster. When the model reports that only
//! some frontends changed, [`plan_changes`] computes the entries of just those frontends — and of
//! the backends and rev-NAT entries they touch — before and after, which
//! [`super::apply::write`] writes frontend by frontend ([`Change::target`]). [`Usage`] remembers
//! which frontend references which backend and rev-NAT id, so a backend shared with an
//! unchanged frontend is neither deleted nor given another id.
//!
//! The result is exactly what a full plan would produce (the tests check that a full plan of the
//! outcome changes nothing).
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use switchyard_abi::{
    Backend, RevNat, ServiceKey, ServiceValue, BACKEND_ACTIVE, BACKEND_TERMINATING,
};

/// The header key of a frontend.
fn header_key(fk: &FrontKey) -> ServiceKey {
    ServiceKey::new(fk.0, fk.1, fk.2, 0)
}

use super::apply::{Front, Target};
use super::plan::{
    backend_value, front_key, frontend_entries, identity, uses_of, BackendIdentity, Extras,
    FrontKey, IdCursor, PlanError, Programmed, Uses,
};
use crate::model::{Desired, Frontend};

/// Who references which programmed id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    backend_ids: HashMap<BackendIdentity, u32>,
    rev_ids: HashMap<(u32, u16), u32>,
    front_backends: HashMap<FrontKey, Uses>,
    /// Per backend id: frontends referencing it, and how many of them as active.
    backend_refs: HashMap<u32, (u32, u32)>,
    /// Per rev-NAT id: frontends using it (TCP and UDP on one port share an id).
    rev_refs: HashMap<u32, u32>,
}

impl Usage {
    /// The usage of `programmed`, which must be what [`super::plan::plan`] made of `desired`.
    pub fn build(desired: &Desired, programmed: &Programmed) -> Usage {
        let mut u = Usage {
            backend_ids: programmed
                .backends
                .iter()
                .map(|(id, b)| (identity(b), *id))
                .collect(),
            rev_ids: programmed
                .rev_nat
                .iter()
                .map(|(id, r)| ((r.addr, r.port), *id))
                .collect(),
            ..Usage::default()
        };
        for (f, spec) in &desired.frontends {
            let fk = front_key(f);
            if let Some(id) = u.rev_ids.get(&(fk.0, fk.1)) {
                *u.rev_refs.entry(*id).or_default() += 1;
            }
            let uses = uses_of(spec, |b| {
                u.backend_ids.get(&identity(&backend_value(b))).copied()
            });
            u.add_uses(&uses, 1);
            u.front_backends.insert(fk, uses);
        }
        u
    }

    fn add_uses(&mut self, uses: &Uses, sign: i32) {
        for (id, active) in uses {
            let r = self.backend_refs.entry(*id).or_default();
            r.0 = r.0.saturating_add_signed(sign);
            if *active {
                r.1 = r.1.saturating_add_signed(sign);
            }
            if r.0 == 0 {
                self.backend_refs.remove(id);
            }
        }
    }

    fn refs(&self, id: u32) -> (i64, i64) {
        let (all, active) = self.backend_refs.get(&id).copied().unwrap_or_default();
        (i64::from(all), i64::from(active))
    }
}

/// The entries of the changed frontends (and of the backends and rev-NAT ids they touch), as
/// they are and as they must become.
#[derive(Clone, Debug, Default)]
pub struct Change {
    /// Current content of every entry the change touches.
    pub before: Programmed,
    /// Their content afterwards; an entry missing here is deleted.
    pub after: Programmed,
    fronts: Vec<(FrontKey, Option<Uses>)>,
}

impl Change {
    /// Applies the change to the in-memory picture of the maps and to `usage`.
    pub fn commit(&self, programmed: &mut Programmed, usage: &mut Usage) {
        for k in self.before.services.keys() {
            programmed.services.remove(k);
        }
        programmed.services.extend(&self.after.services);
        for k in &self.before.affinity_match {
            programmed.affinity_match.remove(k);
        }
        programmed.affinity_match.extend(&self.after.affinity_match);
        for r in &self.before.source_ranges {
            programmed.source_ranges.remove(r);
        }
        programmed.source_ranges.extend(&self.after.source_ranges);
        for id in self.before.rev_nat.keys() {
            programmed.rev_nat.remove(id);
        }
        programmed.rev_nat.extend(&self.after.rev_nat);
        for id in self.before.backends.keys() {
            programmed.backends.remove(id);
        }
        programmed.backends.extend(&self.after.backends);
        self.commit_usage(usage);
    }

    /// Applies the change to `usage` alone, once the maps hold all of it.
    pub fn commit_usage(&self, usage: &mut Usage) {
        for r in self.before.rev_nat.values() {
            usage.rev_ids.remove(&(r.addr, r.port));
        }
        for (id, r) in &self.after.rev_nat {
            usage.rev_ids.insert((r.addr, r.port), *id);
        }
        for b in self.before.backends.values() {
            usage.backend_ids.remove(&identity(b));
        }
        for (id, b) in &self.after.backends {
            usage.backend_ids.insert(identity(b), *id);
        }
        for (fk, uses) in &self.fronts {
            if let Some(old) = usage.front_backends.remove(fk) {
                usage.add_uses(&old, -1);
                if let Some(id) = self.before_rev(fk) {
                    decrement(&mut usage.rev_refs, id);
                }
            }
            if let Some(new) = uses {
                usage.add_uses(new, 1);
                if let Some(id) = self.after_rev(fk) {
                    *usage.rev_refs.entry(id).or_default() += 1;
                }
                usage.front_backends.insert(*fk, new.clone());
            }
        }
    }

    /// The change as [`super::apply::write`] takes it: one step per changed frontend, named by its
    /// Service in `desired`; `changed` are the frontends it was planned for.
    pub fn target<'a>(&'a self, desired: &Desired, changed: &BTreeSet<Frontend>) -> Target<'a> {
        let service_of: HashMap<FrontKey, &str> = changed
            .iter()
            .filter_map(|f| Some((front_key(f), desired.frontends.get(f)?.service.as_str())))
            .collect();
        Target {
            after: &self.after,
            fronts: self
                .fronts
                .iter()
                .map(|(fk, uses)| Front {
                    key: *fk,
                    service: service_of.get(fk).map(|s| s.to_string()),
                    uses: uses.as_ref().map(|u| u.iter().map(|(id, _)| *id).collect()),
                })
                .collect(),
            unused_backends: self
                .before
                .backends
                .keys()
                .filter(|id| !self.after.backends.contains_key(id))
                .copied()
                .collect(),
            unused_rev_nat: self
                .before
                .rev_nat
                .keys()
                .filter(|id| !self.after.rev_nat.contains_key(id))
                .copied()
                .collect(),
            whole: false,
        }
    }

    fn before_rev(&self, fk: &FrontKey) -> Option<u32> {
        self.before
            .services
            .get(&header_key(fk))
            .map(|h| h.rev_nat_id)
    }

    fn after_rev(&self, fk: &FrontKey) -> Option<u32> {
        self.after
            .services
            .get(&header_key(fk))
            .map(|h| h.rev_nat_id)
    }
}

fn decrement(refs: &mut HashMap<u32, u32>, id: u32) {
    if let Some(n) = refs.get_mut(&id) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            refs.remove(&id);
        }
    }
}

/// The programmed entries of one frontend in `SERVICES` (header and slots).
pub fn programmed_entries(
    services: &BTreeMap<ServiceKey, ServiceValue>,
    fk: FrontKey,
) -> impl Iterator<Item = (&ServiceKey, &ServiceValue)> {
    let lo = ServiceKey::new(fk.0, fk.1, 0, 0);
    let hi = ServiceKey {
        slot: u16::MAX,
        proto: u8::MAX,
        scope: u8::MAX,
        pad: [u8::MAX; 2],
        ..lo
    };
    services
        .range(lo..=hi)
        .filter(move |(k, _)| k.proto == fk.2)
}

/// Plans the frontends in `changed` as `desired` now has them (absent: removed), against the
/// maps' `current` content and `usage`.
pub fn plan_changes(
    desired: &Desired,
    changed: &BTreeSet<Frontend>,
    current: &Programmed,
    usage: &Usage,
    cursor: &mut IdCursor,
) -> Result<Change, PlanError> {
    let mut change = Change::default();
    let mut backend_delta: HashMap<u32, (i64, i64)> = HashMap::new();
    let mut rev_delta: HashMap<u32, i64> = HashMap::new();
    let mut values: HashMap<u32, Backend> = HashMap::new();
    let mut new_backends: HashMap<BackendIdentity, u32> = HashMap::new();
    let mut new_revs: HashMap<(u32, u16), u32> = HashMap::new();
    let mut taken_revs: HashSet<u32> = HashSet::new();

    for f in changed {
        let fk = front_key(f);
        change
            .before
            .services
            .extend(programmed_entries(&current.services, fk));
        if let Some(h) = current.services.get(&header_key(&fk)) {
            if let Some(r) = current.rev_nat.get(&h.rev_nat_id) {
                change.before.rev_nat.insert(h.rev_nat_id, *r);
                *rev_delta.entry(h.rev_nat_id).or_default() -= 1;
            }
            let mine: BTreeSet<u32> = usage
                .front_backends
                .get(&fk)
                .into_iter()
                .flatten()
                .map(|(id, _)| *id)
                .collect();
            change
                .before
                .affinity_match
                .extend(current.affinity_match.iter().filter(|k| {
                    k.rev_nat_id == h.rev_nat_id && k.proto == fk.2 && mine.contains(&k.backend_id)
                }));
            change.before.source_ranges.extend(
                current
                    .source_ranges
                    .iter()
                    .filter(|(k, _)| k.rev_nat_id == h.rev_nat_id.to_be() && k.proto == fk.2),
            );
        }
        for (id, active) in usage.front_backends.get(&fk).into_iter().flatten() {
            if let Some(b) = current.backends.get(id) {
                change.before.backends.insert(*id, *b);
            }
            let d = backend_delta.entry(*id).or_default();
            d.0 -= 1;
            d.1 -= i64::from(*active);
        }
        let Some(spec) = desired.frontends.get(f) else {
            change.fronts.push((fk, None));
            continue;
        };
        let rev_nat_id = match usage
            .rev_ids
            .get(&(fk.0, fk.1))
            .or_else(|| new_revs.get(&(fk.0, fk.1)))
        {
            Some(id) => *id,
            None => {
                let id = cursor
                    .rev_nat_for((fk.0, fk.1), |id| {
                        current.rev_nat.contains_key(&id) || taken_revs.contains(&id)
                    })
                    .ok_or(PlanError::TooManyFrontends(desired.frontends.len()))?;
                new_revs.insert((fk.0, fk.1), id);
                taken_revs.insert(id);
                id
            }
        };
        change.after.rev_nat.insert(
            rev_nat_id,
            RevNat {
                addr: fk.0,
                port: fk.1,
                pad: 0,
            },
        );
        *rev_delta.entry(rev_nat_id).or_default() += 1;

        let Programmed {
            services,
            affinity_match,
            source_ranges,
            ..
        } = &mut change.after;
        let uses = frontend_entries(
            fk,
            spec,
            rev_nat_id,
            |b| {
                let value = backend_value(b);
                let ident = identity(&value);
                let id = match usage
                    .backend_ids
                    .get(&ident)
                    .or_else(|| new_backends.get(&ident))
                {
                    Some(id) => *id,
                    None => {
                        let id = cursor.backend_for(ident, |id| {
                            current.backends.contains_key(&id)
                                || new_backends.values().any(|v| *v == id)
                        });
                        new_backends.insert(ident, id);
                        id
                    }
                };
                values.insert(id, value);
                let d = backend_delta.entry(id).or_default();
                d.0 += 1;
                d.1 += i64::from(!b.terminating);
                id
            },
            services,
            Extras {
                affinity_match,
                source_ranges,
            },
        )?;
        change.fronts.push((fk, Some(uses)));
    }

    // Backends: kept while any frontend, changed or not, still references them; active if any
    // of those uses it as active (as the full plan decides).
    for (id, (d_all, d_active)) in &backend_delta {
        let (all, active) = usage.refs(*id);
        if all + d_all <= 0 {
            continue;
        }
        let Some(mut value) = values.get(id).or_else(|| current.backends.get(id)).copied() else {
            continue;
        };
        value.state = if active + d_active > 0 {
            BACKEND_ACTIVE
        } else {
            BACKEND_TERMINATING
        };
        change.after.backends.insert(*id, value);
    }
    for (id, d) in &rev_delta {
        let all = i64::from(usage.rev_refs.get(id).copied().unwrap_or(0));
        if all + d > 0 && !change.after.rev_nat.contains_key(id) {
            if let Some(r) = current.rev_nat.get(id) {
                change.after.rev_nat.insert(*id, *r);
            }
        }
    }
    Ok(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::datapath::plan::tests::{apply, backend};
    use crate::datapath::plan::{diff, plan};
    use crate::model::{BackendSpec, FrontendSpec, Proto};
    use rand::{Rng, SeedableRng};
    use std::net::Ipv4Addr;

    fn front(i: u8, proto: Proto) -> Frontend {
        Frontend {
            ip: Ipv4Addr::new(10, 96, 0, i),
            port: 80,
            proto,
        }
    }

    fn random_spec(rng: &mut impl Rng) -> FrontendSpec {
        let mut backends: Vec<_> = (0..rng.gen_range(0..5))
            .map(|_| backend(rng.gen_range(2..12), rng.gen_bool(0.2)))
            .collect();
        backends.sort();
        backends.dedup_by_key(|b| b.addr);
        let internal = rng.gen_bool(0.2).then(|| {
            backends
                .iter()
                .map(|b| BackendSpec {
                    terminating: rng.gen_bool(0.3),
                    ..*b
                })
                .collect()
        });
        let source_ranges = (0..rng.gen_range(0..3))
            .map(|i| (Ipv4Addr::new(198, 18, i, 0), 24))
            .collect();
        FrontendSpec {
            backends,
            service: "t".into(),
            nodeport: rng.gen_bool(0.2),
            affinity_timeout: rng.gen_bool(0.3).then_some(60),
            maglev: rng.gen_bool(0.05),
            internal,
            source_ranges,
            ..Default::default()
        }
    }

    /// Random changes to a dozen frontends that share backends and rev-NAT ids: after each
    /// incremental step the maps hold what a full plan would write (a full plan is a no-op),
    /// the operations reach that content from the previous one, and the usage equals a fresh one.
    #[test]
    fn incremental_changes_reach_what_a_full_plan_would() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let fronts: Vec<Frontend> = (1..=6)
            .flat_map(|i| [front(i, Proto::Tcp), front(i, Proto::Udp)])
            .collect();
        let mut desired = Desired::default();
        for f in &fronts[..4] {
            desired.frontends.insert(*f, random_spec(&mut rng));
        }
        let mut cursor = IdCursor::after(&Programmed::default());
        let mut programmed = plan(&desired, &Programmed::default(), &mut cursor).unwrap();
        let mut usage = Usage::build(&desired, &programmed);
        for step in 0..300 {
            let mut changed = BTreeSet::new();
            for _ in 0..rng.gen_range(1..4) {
                let f = fronts[rng.gen_range(0..fronts.len())];
                if rng.gen_bool(0.3) {
                    desired.frontends.remove(&f);
                } else {
                    desired.frontends.insert(f, random_spec(&mut rng));
                }
                changed.insert(f);
            }
            let change =
                plan_changes(&desired, &changed, &programmed, &usage, &mut cursor).unwrap();
            let ops = diff(&change.before, &change.after);
            let reached = apply(&programmed, &ops);
            change.commit(&mut programmed, &mut usage);
            assert_eq!(reached, programmed, "step {step}: ops and commit agree");
            let full = plan(&desired, &programmed, &mut cursor.clone()).unwrap();
            let ops = diff(&programmed, &full);
            assert!(
                ops.is_empty(),
                "step {step}: a full plan changes nothing, but would apply {:?}",
                &ops[..ops.len().min(8)]
            );
            assert_eq!(
                usage,
                Usage::build(&desired, &programmed),
                "step {step}: usage"
            );
        }
    }

    #[test]
    fn a_backend_shared_with_an_unchanged_frontend_stays() {
        let mut desired = Desired::default();
        let spec = FrontendSpec {
            backends: vec![backend(2, false)],
            ..Default::default()
        };
        desired.frontends.insert(front(1, Proto::Tcp), spec.clone());
        desired.frontends.insert(front(2, Proto::Tcp), spec);
        let mut cursor = IdCursor::after(&Programmed::default());
        let mut programmed = plan(&desired, &Programmed::default(), &mut cursor).unwrap();
        let mut usage = Usage::build(&desired, &programmed);
        desired.frontends.remove(&front(1, Proto::Tcp));
        let changed = [front(1, Proto::Tcp)].into();
        let change = plan_changes(&desired, &changed, &programmed, &usage, &mut cursor).unwrap();
        let ops = diff(&change.before, &change.after);
        assert!(
            !ops.iter()
                .any(|op| matches!(op, crate::datapath::plan::Op::DeleteBackend(_))),
            "backend still used by 10.96.0.2: {ops:?}"
        );
        change.commit(&mut programmed, &mut usage);
        assert_eq!(programmed.backends.len(), 1);
        assert_eq!(programmed.rev_nat.len(), 1);
    }
}
