//! The one seam between the agent's bookkeeping and the kernel: [`MapWriter`], a BPF map seen as
//! puts, removes and a listing.
//!
//! The pinned aya maps implement it for the datapath; [`MemMap`] implements it in memory with a
//! capacity and injectable failures, so everything that decides *what* to write — the service
//! sync, the tunnel sync and the reconcile loop — is tested without a kernel, the way
//! kube-proxy's proxier is tested against a fake iptables.
//!
//! Invariant: `remove` of a missing key succeeds (the goal "key absent" is reached), so a retry
//! after a partly applied change never fails on what the first attempt already did.
use std::collections::BTreeMap;
use std::io;
use std::net::Ipv4Addr;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{HashMap, MapData, MapError};
use aya::sys::SyscallError;
use aya::Pod;
use switchyard_abi::{addr_be, addr_from_be, SourceRangeKey, SOURCE_RANGE_PREFIX};

/// One BPF map as the agent writes it.
pub trait MapWriter<K, V> {
    /// The pinned name of the map (for errors and logs).
    fn name(&self) -> &'static str;
    /// Creates or replaces the entry of `key`.
    fn put(&mut self, key: K, value: V) -> Result<(), MapError>;
    /// Removes the entry of `key`; a missing key is not an error.
    fn remove(&mut self, key: &K) -> Result<(), MapError>;
    /// Every entry the map holds now.
    fn entries(&self) -> Result<Vec<(K, V)>, MapError>;
}

/// A pinned hash map with its name.
pub struct Named<M> {
    name: &'static str,
    map: M,
}

impl<M> Named<M> {
    /// `map`, pinned as `name`.
    pub fn new(name: &'static str, map: M) -> Self {
        Named { name, map }
    }

    /// The map itself.
    pub fn into_inner(self) -> M {
        self.map
    }
}

impl<K: Pod, V: Pod> MapWriter<K, V> for Named<HashMap<MapData, K, V>> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn put(&mut self, key: K, value: V) -> Result<(), MapError> {
        self.map.insert(key, value, 0)
    }

    fn remove(&mut self, key: &K) -> Result<(), MapError> {
        ignore_missing(self.map.remove(key))
    }

    fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
        self.map.iter().collect()
    }
}

/// An overlay route: (network address, prefix length) → node address.
impl MapWriter<(Ipv4Addr, u8), Ipv4Addr> for Named<LpmTrie<MapData, u32, u32>> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn put(&mut self, (net, prefix): (Ipv4Addr, u8), node: Ipv4Addr) -> Result<(), MapError> {
        self.map
            .insert(&Key::new(u32::from(prefix), addr_be(net)), addr_be(node), 0)
    }

    fn remove(&mut self, &(net, prefix): &(Ipv4Addr, u8)) -> Result<(), MapError> {
        ignore_missing(self.map.remove(&Key::new(u32::from(prefix), addr_be(net))))
    }

    fn entries(&self) -> Result<Vec<((Ipv4Addr, u8), Ipv4Addr)>, MapError> {
        self.map
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let prefix = u8::try_from(k.prefix_len()).unwrap_or(32);
                Ok(((addr_from_be(k.data()), prefix), addr_from_be(v)))
            })
            .collect()
    }
}

/// A `SOURCE_RANGES` entry: key data and the network's prefix length (the trie's prefix is
/// [`SOURCE_RANGE_PREFIX`] bits longer: the rev-NAT id, protocol and padding come first).
impl MapWriter<(SourceRangeKey, u8), u8> for Named<LpmTrie<MapData, SourceRangeKey, u8>> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn put(&mut self, (key, prefix): (SourceRangeKey, u8), value: u8) -> Result<(), MapError> {
        self.map.insert(
            &Key::new(SOURCE_RANGE_PREFIX + u32::from(prefix), key),
            value,
            0,
        )
    }

    fn remove(&mut self, &(key, prefix): &(SourceRangeKey, u8)) -> Result<(), MapError> {
        ignore_missing(
            self.map
                .remove(&Key::new(SOURCE_RANGE_PREFIX + u32::from(prefix), key)),
        )
    }

    fn entries(&self) -> Result<Vec<((SourceRangeKey, u8), u8)>, MapError> {
        self.map
            .iter()
            .map(|item| {
                let (k, v) = item?;
                let prefix =
                    u8::try_from(k.prefix_len().saturating_sub(SOURCE_RANGE_PREFIX)).unwrap_or(32);
                Ok(((k.data(), prefix), v))
            })
            .collect()
    }
}

/// `Ok` for a removal whose key was already gone.
pub fn ignore_missing(r: Result<(), MapError>) -> Result<(), MapError> {
    match r {
        Err(MapError::KeyNotFound) => Ok(()),
        Err(MapError::SyscallError(ref e)) if e.io_error.raw_os_error() == Some(libc::ENOENT) => {
            Ok(())
        }
        other => other,
    }
}

/// A map in memory, for tests: a capacity like the kernel's (a put of a new key into a full map
/// fails with `E2BIG`, as `bpf_map_update_elem` does), failures on demand, and a count of writes.
#[derive(Clone, Debug)]
pub struct MemMap<K, V> {
    name: &'static str,
    entries: BTreeMap<K, V>,
    capacity: usize,
    fail_after: Option<usize>,
    /// Puts and removes applied so far.
    pub ops: usize,
    /// Puts refused so far because the map was full.
    pub refused: usize,
}

impl<K: Ord + Clone, V: Clone> MemMap<K, V> {
    /// An empty map named `name` holding at most `capacity` entries.
    pub fn new(name: &'static str, capacity: usize) -> Self {
        MemMap {
            name,
            entries: BTreeMap::new(),
            capacity,
            fail_after: None,
            ops: 0,
            refused: 0,
        }
    }

    /// Holds at most `capacity` entries from now on: entries beyond it stay, but a put of a
    /// new key fails as in a full kernel map.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// Lets the next `n` operations succeed and every later one fail with `EIO`, until
    /// [`MemMap::heal`].
    pub fn fail_after(&mut self, n: usize) {
        self.fail_after = Some(n);
    }

    /// Stops injecting failures.
    pub fn heal(&mut self) {
        self.fail_after = None;
    }

    /// What the map holds.
    pub fn content(&self) -> &BTreeMap<K, V> {
        &self.entries
    }

    fn admit(&mut self) -> Result<(), MapError> {
        match self.fail_after.as_mut() {
            Some(0) => Err(syscall_error("bpf_map_update_elem", libc::EIO)),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }
}

fn syscall_error(call: &'static str, errno: i32) -> MapError {
    MapError::SyscallError(SyscallError {
        call,
        io_error: io::Error::from_raw_os_error(errno),
    })
}

impl<K: Ord + Clone, V: Clone> MapWriter<K, V> for MemMap<K, V> {
    fn name(&self) -> &'static str {
        self.name
    }

    fn put(&mut self, key: K, value: V) -> Result<(), MapError> {
        self.admit()?;
        if !self.entries.contains_key(&key) && self.entries.len() >= self.capacity {
            self.refused += 1;
            return Err(syscall_error("bpf_map_update_elem", libc::E2BIG));
        }
        self.entries.insert(key, value);
        self.ops += 1;
        Ok(())
    }

    fn remove(&mut self, key: &K) -> Result<(), MapError> {
        self.admit()?;
        self.entries.remove(key);
        self.ops += 1;
        Ok(())
    }

    fn entries(&self) -> Result<Vec<(K, V)>, MapError> {
        Ok(self
            .entries
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_map_refuses_new_keys_but_takes_updates() {
        let mut m = MemMap::new("T", 1);
        m.put(1u32, 10u32).unwrap();
        m.put(1, 11).unwrap();
        let err = m.put(2, 20).unwrap_err();
        assert!(err.to_string().contains("bpf_map_update_elem"), "{err}");
        assert_eq!(m.refused, 1);
        m.remove(&1).unwrap();
        m.put(2, 20).unwrap();
        assert_eq!(m.entries().unwrap(), vec![(2, 20)]);
    }

    #[test]
    fn removing_a_missing_key_succeeds() {
        let mut m: MemMap<u32, u32> = MemMap::new("T", 4);
        m.remove(&7).unwrap();
        assert!(ignore_missing(Err(MapError::KeyNotFound)).is_ok());
        assert!(ignore_missing(Err(syscall_error("x", libc::ENOENT))).is_ok());
        assert!(ignore_missing(Err(syscall_error("x", libc::EIO))).is_err());
    }

    #[test]
    fn injected_failures_start_after_the_given_number_of_operations() {
        let mut m = MemMap::new("T", 8);
        m.fail_after(1);
        m.put(1u32, 1u32).unwrap();
        assert!(m.put(2, 2).is_err());
        assert!(m.remove(&1).is_err());
        m.heal();
        m.put(2, 2).unwrap();
        assert_eq!(m.content().len(), 2);
    }
}
