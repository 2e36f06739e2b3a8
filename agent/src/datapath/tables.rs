//! The node's flow tables — conntrack (`CT`) and source NAT (`NAT`) — read and swept through
//! their pins, so this works with or without the agent running.
//!
//! Invariant: only entries [`super::aging`] judges over are removed; a table is read once per
//! sweep (bounded, even while the datapath changes it) and decided on as a whole, so a flow's
//! two entries go together.
use std::cell::RefCell;
use std::collections::HashMap as StdHashMap;
use std::path::Path;

use aya::maps::{HashMap, Map, MapData, MapError};
use aya::sys::SyscallError;
use aya::Pod;
use switchyard_abi::{names, Backend, CtKey, CtValue, NatEntry, NatKey, RevNat};

use super::aging::{self, Timeouts};
use super::batch;
use super::DatapathError;

/// Opens the map pinned as `name` in `pin_dir` as the aya type `T`.
pub fn open_pinned<T>(pin_dir: &Path, name: &'static str) -> Result<T, DatapathError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenPin {
        path: path.clone(),
        node: node_of(pin_dir),
        source: Box::new(source),
    })?;
    Map::from_map_data(data)
        .and_then(T::try_from)
        .map_err(DatapathError::map(name))
}

/// Every entry of a pinned hash map, read in batches ([`super::batch`]). The read is bounded by
/// twice the map's capacity, so a busy datapath cannot keep the reader going forever.
pub fn read<K, V>(
    map: &HashMap<MapData, K, V>,
    name: &'static str,
    capacity: u32,
) -> Result<StdHashMap<K, V>, DatapathError>
where
    K: Pod + Eq + std::hash::Hash,
    V: Pod,
{
    batch::lookup_all(batch::fd_of(map), capacity)
        .map(|entries| entries.into_iter().collect())
        .map_err(failed(name, "bpf_map_lookup_batch"))
}

/// The conntrack table pinned in `pin_dir`.
pub fn conntrack(pin_dir: &Path) -> Result<StdHashMap<CtKey, CtValue>, DatapathError> {
    load(pin_dir, names::CT).map(|(_, entries, _)| entries)
}

/// The NAT table pinned in `pin_dir`.
pub fn nat(pin_dir: &Path) -> Result<StdHashMap<NatKey, NatEntry>, DatapathError> {
    load(pin_dir, names::NAT).map(|(_, entries, _)| entries)
}

/// The backends pinned in `pin_dir`, by id.
pub fn backends(pin_dir: &Path) -> Result<StdHashMap<u32, Backend>, DatapathError> {
    load(pin_dir, names::BACKENDS).map(|(_, entries, _)| entries)
}

/// The frontends pinned in `pin_dir`, by rev-NAT id.
pub fn fronts(pin_dir: &Path) -> Result<StdHashMap<u32, RevNat>, DatapathError> {
    load(pin_dir, names::REV_NAT).map(|(_, entries, _)| entries)
}

/// One table's sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TableSweep {
    /// Entries before the sweep.
    pub entries: usize,
    /// Entries removed.
    pub removed: usize,
    /// The table's capacity.
    pub capacity: u32,
}

/// What a sweep of both tables did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sweep {
    /// `CT`.
    pub conntrack: TableSweep,
    /// `NAT`.
    pub nat: TableSweep,
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock `bpf_ktime_get_ns()` stamps entries with (CT
/// entries: `bpf_ktime_get_coarse_ns()`, the same clock at tick resolution).
pub fn monotonic_now() -> u64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    })
}

/// Removes the flows of `pin_dir`'s tables that are over at `now` ([`monotonic_now`], or a
/// later time in tests).
pub fn sweep(pin_dir: &Path, now: u64, timeouts: &Timeouts) -> Result<Sweep, DatapathError> {
    let backends = Lookup::<Backend>::open(pin_dir, names::BACKENDS)?;
    let fronts = Lookup::<RevNat>::open(pin_dir, names::REV_NAT)?;

    let (mut ct, entries, ct_cap) = load::<CtKey, CtValue>(pin_dir, names::CT)?;
    let gone = aging::expired(
        &entries,
        |k, v| aging::ct_partner(k, v, |id| backends.get(id), |id| fronts.get(id)),
        aging::ct_state,
        now,
        timeouts,
    );
    let conntrack = TableSweep {
        entries: entries.len(),
        removed: remove(&mut ct, names::CT, &gone)?,
        capacity: ct_cap,
    };

    let (mut nat, entries, nat_cap) = load::<NatKey, NatEntry>(pin_dir, names::NAT)?;
    let gone = aging::expired(
        &entries,
        aging::nat_partner,
        aging::nat_state,
        now,
        timeouts,
    );
    let nat_sweep = TableSweep {
        entries: entries.len(),
        removed: remove(&mut nat, names::NAT, &gone)?,
        capacity: nat_cap,
    };
    Ok(Sweep {
        conntrack,
        nat: nat_sweep,
    })
}

/// The capacity of the map pinned as `name` in `pin_dir`.
pub fn capacity(pin_dir: &Path, name: &'static str) -> Result<u32, DatapathError> {
    let path = pin_dir.join(name);
    let data = MapData::from_pin(&path).map_err(|source| DatapathError::OpenPin {
        path: path.clone(),
        node: node_of(pin_dir),
        source: Box::new(source),
    })?;
    data.info()
        .map(|i| i.max_entries())
        .map_err(DatapathError::map(name))
}

fn node_of(pin_dir: &Path) -> String {
    pin_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// A pinned hash map, what it held when read, and its capacity.
type Loaded<K, V> = (HashMap<MapData, K, V>, StdHashMap<K, V>, u32);

/// Opens and reads the hash map pinned as `name` in `pin_dir`.
/// A pinned id-keyed map (`BACKENDS`, `REV_NAT`) looked up as a sweep needs it, each id once.
/// A sweep names only the backends and frontends of the flows in the table, far fewer than the
/// maps hold at scale: reading all of `BACKENDS` at 500,000 endpoints would cost a million
/// syscalls every sweep.
struct Lookup<V> {
    map: HashMap<MapData, u32, V>,
    seen: RefCell<StdHashMap<u32, Option<V>>>,
}

impl<V: Pod> Lookup<V> {
    fn open(pin_dir: &Path, name: &'static str) -> Result<Self, DatapathError> {
        Ok(Lookup {
            map: open_pinned(pin_dir, name)?,
            seen: RefCell::new(StdHashMap::new()),
        })
    }

    /// The entry of `id`; `None` when it is gone (or cannot be read: its flows are judged
    /// alone, as when it is gone).
    fn get(&self, id: u32) -> Option<V> {
        *self
            .seen
            .borrow_mut()
            .entry(id)
            .or_insert_with(|| self.map.get(&id, 0).ok())
    }
}

fn load<K, V>(pin_dir: &Path, name: &'static str) -> Result<Loaded<K, V>, DatapathError>
where
    K: Pod + Eq + std::hash::Hash,
    V: Pod,
{
    let cap = capacity(pin_dir, name)?;
    let map: HashMap<MapData, K, V> = open_pinned(pin_dir, name)?;
    let entries = read(&map, name, cap)?;
    Ok((map, entries, cap))
}

/// Removes `keys` in batches (a key already gone counts as removed: the goal is reached).
fn remove<K: Pod, V: Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
) -> Result<usize, DatapathError> {
    batch::delete(batch::fd_of(map), keys).map_err(failed(name, "bpf_map_delete_batch"))
}

/// The error of a batch `call` on the map `name`.
fn failed(name: &'static str, call: &'static str) -> impl Fn(std::io::Error) -> DatapathError {
    move |io_error| {
        DatapathError::map(name)(MapError::SyscallError(SyscallError { call, io_error }))
    }
}
