//! The object store: every object as JSON, one global resourceVersion sequence, a watch
//! history bounded in events and in bytes, and an append-only, checksummed log on disk
//! ([`log`]).
//!
//! Invariants:
//! - Each acknowledged write is appended to `<data-dir>/objects.log` and fsynced before the
//!   caller answers, so a `kill -9` loses nothing that was acknowledged. On start the log is
//!   replayed and rewritten compacted; while running it is compacted again whenever it grows
//!   past [`Limits::compact_ratio`] times the size of the live objects' records (and past
//!   [`Limits::compact_min_bytes`]).
//! - Writers are serialised by one writer lock, held through the disk work; readers (get, list,
//!   watch history) take only the state lock, which no one holds across disk work, so a slow
//!   fsync never stalls them. A write called from an async worker hands the worker over first
//!   ([`tokio::task::block_in_place`]) before it waits for the writer lock or the disk.
//! - [`Held`], the index of the ClusterIPs and node ports the stored Services hold, changes in
//!   the same commit as the Service it follows, so it always says what the objects say.
//! - The history holds at most [`Limits::history_events`] events and
//!   [`Limits::history_bytes`] bytes of objects; a watch from before it gets 410 Gone.
mod held;
mod log;
mod subscription;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

pub use held::Held;
pub use subscription::{RecvError, Subscription, TryRecvError};

/// Where an object lives: resource plural, namespace ("" for cluster-scoped), name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Key {
    /// Resource plural (`pods`, `services`, …).
    pub resource: String,
    /// Namespace, empty for cluster-scoped resources.
    pub namespace: String,
    /// Object name.
    pub name: String,
}

/// The kind of change a watch event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventType {
    /// Created.
    #[serde(rename = "ADDED")]
    Added,
    /// Changed.
    #[serde(rename = "MODIFIED")]
    Modified,
    /// Removed.
    #[serde(rename = "DELETED")]
    Deleted,
}

/// One change, as watchers see it.
#[derive(Clone, Debug)]
pub struct Event {
    /// resourceVersion of the change.
    pub rv: u64,
    /// What happened.
    pub kind: EventType,
    /// Which object.
    pub key: Key,
    /// The object after the change (before it, for deletions, with the deletion's RV).
    pub object: Arc<Value>,
    /// The object before the change (none for creations): what lists at an older
    /// resourceVersion see.
    pub prev: Option<Arc<Value>>,
    /// The size of `object` as JSON, what the history counts.
    pub size: usize,
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object exists.
    #[error("already exists")]
    AlreadyExists,
    /// The object does not exist.
    #[error("not found")]
    NotFound,
    /// The caller's resourceVersion is stale.
    #[error("conflict")]
    Conflict,
    /// Reading or writing the log failed: the change was not made.
    #[error("persisting to {0}: {1}")]
    Io(PathBuf, std::io::Error),
    /// A record in the middle of the log does not check out: the start stops here.
    #[error("{}: damaged record at byte offset {offset} ({reason}); the records after it cannot be trusted, so switchyard-cp will not start: restore the file from a backup, or cut it at that offset (truncate -s {offset}) to keep what precedes", path.display())]
    Damaged {
        /// The log file.
        path: PathBuf,
        /// Where the record starts.
        offset: u64,
        /// What is wrong with it.
        reason: String,
    },
}

/// The bounds of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Events kept for resuming watches.
    pub history_events: usize,
    /// Bytes of objects (as JSON) the kept events may hold together.
    pub history_bytes: usize,
    /// Compact the log once it is this many times the size of the live records…
    pub compact_ratio: u64,
    /// …and at least this large.
    pub compact_min_bytes: u64,
    /// Added to every fsync (tests: a slow disk).
    pub fsync_delay: Duration,
}

impl Default for Limits {
    /// 20,000 events, 64 MiB of history; compaction at 4× the live data and 4 MiB.
    fn default() -> Self {
        Limits {
            history_events: HISTORY,
            history_bytes: 64 * 1024 * 1024,
            compact_ratio: 4,
            compact_min_bytes: 4 * 1024 * 1024,
            fsync_delay: Duration::ZERO,
        }
    }
}

/// Objects with their keys, in key order.
pub type Snapshot = Vec<(Key, Arc<Value>)>;

/// What [`Store::list_page`] lists.
#[derive(Clone, Copy, Debug, Default)]
pub struct PageQuery<'a> {
    /// Resource plural.
    pub resource: &'a str,
    /// Only this namespace (`None`: all of them).
    pub namespace: Option<&'a str>,
    /// The snapshot's resourceVersion (`None`: now).
    pub rv: Option<u64>,
    /// `(namespace, name)` of the last object of the previous page: list only what follows.
    pub after: Option<(&'a str, &'a str)>,
    /// At most this many objects (`None`: all).
    pub limit: Option<usize>,
    /// Count every object after the page, kept or not (`remainingItemCount`, which only
    /// unfiltered lists carry); otherwise [`Page::rest`] only says whether a kept one follows.
    pub count_rest: bool,
}

/// One page of a list ([`Store::list_page`]).
#[derive(Clone, Debug)]
pub struct Page {
    /// The objects of the page, in key order.
    pub items: Snapshot,
    /// Objects after the page: all of them with [`PageQuery::count_rest`], else 0 or 1.
    pub rest: usize,
    /// The snapshot's resourceVersion.
    pub rv: u64,
}

/// Two iterators sorted by distinct keys, merged in key order.
fn merge_by_key<'a, V: 'a>(
    a: impl Iterator<Item = (&'a Key, V)>,
    b: impl Iterator<Item = (&'a Key, V)>,
) -> impl Iterator<Item = (&'a Key, V)> {
    let (mut a, mut b) = (a.peekable(), b.peekable());
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((ka, _)), Some((kb, _))) if kb < ka => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

/// Where a page of an unfiltered list ended: (namespace scope, snapshot resourceVersion, last
/// key of the page).
type RestAt = (Option<String>, u64, Key);

/// Lists being paged through whose remaining counts are remembered, at most.
const REST_COUNTS: usize = 1024;

/// Watch events kept for resuming watches, at most.
pub const HISTORY: usize = 20_000;

/// What readers see.
struct State {
    objects: BTreeMap<Key, Arc<Value>>,
    rv: u64,
    history: VecDeque<Event>,
    history_bytes: usize,
}

/// What only writers touch.
struct Writer {
    log: Option<log::Log>,
    /// The size of each live object's record in the log.
    sizes: BTreeMap<Key, u64>,
    /// Their sum.
    live: u64,
}

pub(crate) struct Shared {
    state: Mutex<State>,
    writer: Mutex<Writer>,
    admission: Mutex<()>,
    /// Taken after `state` when both are (in [`Store::commit`]).
    held: Mutex<Held>,
    published: watch::Sender<u64>,
    limits: Limits,
    /// How many objects follow a page of an unfiltered list: (namespace scope, snapshot
    /// resourceVersion, last key of the page) → count. A snapshot never changes, so the next
    /// page's count is this one minus its length, without walking the rest again.
    rest_counts: Mutex<HashMap<RestAt, usize>>,
}

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Up to `max` events after `last`, or (when the history no longer reaches back to `last`)
    /// the newest resourceVersion.
    pub(crate) fn events_after(&self, last: u64, max: usize) -> Result<Vec<Event>, u64> {
        let st = self.state();
        let oldest = st.history.front().map_or(st.rv.saturating_add(1), |e| e.rv);
        if last.saturating_add(1) < oldest && last < st.rv {
            return Err(st.rv);
        }
        let from = st.history.partition_point(|e| e.rv <= last);
        Ok(st.history.range(from..).take(max).cloned().collect())
    }
}

/// The shared store.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

/// The objects of `resource` (in `namespace` if given) whose names start with `prefix`: a range
/// of the key order (resource, namespace, name), so a list costs what it returns rather than
/// what the whole store holds.
fn scope<'a>(
    objects: &'a BTreeMap<Key, Arc<Value>>,
    resource: &'a str,
    namespace: Option<&'a str>,
    prefix: &'a str,
) -> impl Iterator<Item = (&'a Key, &'a Arc<Value>)> + 'a {
    let start = Key {
        resource: resource.to_string(),
        namespace: namespace.unwrap_or("").to_string(),
        name: prefix.to_string(),
    };
    objects.range(start..).take_while(move |(k, _)| {
        in_scope(k, resource, namespace) && namespace.is_none_or(|_| k.name.starts_with(prefix))
    })
}

/// Whether `k` is an object of `resource` (in `namespace`, when one is given).
fn in_scope(k: &Key, resource: &str, namespace: Option<&str>) -> bool {
    k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns)
}

/// Runs blocking disk work: on an async worker of a multi-threaded runtime the worker is
/// handed over first, so other tasks keep running; elsewhere it simply runs.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The resourceVersion in an object's metadata (0 without one).
pub fn rv_of(v: &Value) -> u64 {
    v.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn set_rv(v: &mut Value, rv: u64) {
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("resourceVersion".into(), Value::String(rv.to_string()));
    }
}

impl Store {
    /// An in-memory store with the default limits (tests).
    pub fn in_memory() -> Self {
        Self::in_memory_with(Limits::default())
    }

    /// An in-memory store with `limits`.
    pub fn in_memory_with(limits: Limits) -> Self {
        Self::with(BTreeMap::new(), 0, None, BTreeMap::new(), limits)
    }

    fn with(
        objects: BTreeMap<Key, Arc<Value>>,
        rv: u64,
        log: Option<log::Log>,
        sizes: BTreeMap<Key, u64>,
        limits: Limits,
    ) -> Self {
        let (published, _) = watch::channel(rv);
        let live = sizes.values().sum();
        let held = Held::build(objects.iter().map(|(k, v)| (k, v.as_ref())));
        Store {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    objects,
                    rv,
                    history: VecDeque::new(),
                    history_bytes: 0,
                }),
                writer: Mutex::new(Writer { log, sizes, live }),
                admission: Mutex::new(()),
                held: Mutex::new(held),
                published,
                limits,
                rest_counts: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Serialises admission with the write it precedes: held from reading what is allocated
    /// (ClusterIPs, nodePorts, podCIDRs) until the object that takes its pick is stored, so two
    /// concurrent requests never get the same one.
    pub fn admission_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.shared
            .admission
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The ClusterIPs and node ports the stored Services hold. Allocators read it under
    /// [`Store::admission_lock`]; while holding it, do not call the store (a write waits for it).
    pub fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.shared.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens (or creates) the store in `dir` with the default limits.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        Self::open_with(dir, Limits::default())
    }

    /// Opens (or creates) the store in `dir`, replaying and compacting its log.
    pub fn open_with(dir: &Path, limits: Limits) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(dir.to_path_buf(), e))?;
        let path = dir.join("objects.log");
        let replayed = log::replay(&path)?;
        let (objects, rv) = (replayed.objects, replayed.rv);
        let (file, len, sizes) = log::rewrite(&path, rv, &objects)?;
        if replayed.legacy > 0 {
            tracing::info!(path = %path.display(), records = replayed.legacy,
                "migrated the log from the previous format (records without checksums) to checksummed records");
        }
        tracing::info!(objects = objects.len(), resource_version = rv, path = %path.display(), "store opened");
        Ok(Self::with(
            objects,
            rv,
            Some(log::Log::new(path, file, len, limits.fsync_delay)),
            sizes,
            limits,
        ))
    }

    /// The store's limits.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// Follows changes after now.
    pub fn subscribe(&self) -> Subscription {
        let rv = self.shared.state().rv;
        self.subscribe_after(rv)
    }

    fn subscribe_after(&self, rv: u64) -> Subscription {
        Subscription::new(
            Arc::downgrade(&self.shared),
            rv,
            self.shared.published.subscribe(),
        )
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.shared.state().rv
    }

    /// The resourceVersion of the oldest change the history still holds (the current one + 1
    /// when it holds none).
    pub fn oldest_rv(&self) -> u64 {
        let st = self.shared.state();
        st.history.front().map_or(st.rv.saturating_add(1), |e| e.rv)
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.shared.state().objects.get(key).cloned()
    }

    /// Every object of `resource` (in `namespace` if given), with the list's resourceVersion.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let st = self.shared.state();
        let items = scope(&st.objects, resource, namespace, "")
            .map(|(_, v)| v.clone())
            .collect();
        (items, st.rv)
    }

    /// The objects of `resource` in `namespace` whose names start with `prefix`, in name order:
    /// as cheap as their number, however many others the store holds.
    pub fn list_prefixed(&self, resource: &str, namespace: &str, prefix: &str) -> Vec<Arc<Value>> {
        let st = self.shared.state();
        scope(&st.objects, resource, Some(namespace), prefix)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Every object of `resource` (in `namespace` if given) as it was at resourceVersion `rv`
    /// (`None`: now), in key order, with that resourceVersion; `None` when the history no
    /// longer reaches back to `rv` (or `rv` is in the future).
    pub fn list_at(
        &self,
        resource: &str,
        namespace: Option<&str>,
        rv: Option<u64>,
    ) -> Option<(Snapshot, u64)> {
        let page = self.list_page(
            &PageQuery {
                resource,
                namespace,
                rv,
                after: None,
                limit: None,
                count_rest: false,
            },
            |_, _| true,
        )?;
        Some((page.items, page.rv))
    }

    /// One page of a list as it was at resourceVersion `query.rv` (`None`: now): in key order,
    /// the first `query.limit` objects after `query.after` that `keep` accepts. `None` when the
    /// history no longer reaches back to that version (or it is in the future).
    ///
    /// The work is proportional to the page, the changes made since that version and (only
    /// with `count_rest`, for a list's first page only: later pages take the count the previous
    /// one left) the number of objects after the page — never to the objects before
    /// `query.after`, so paging through a list of N objects costs O(N) in all, not O(N²).
    pub fn list_page(
        &self,
        query: &PageQuery<'_>,
        mut keep: impl FnMut(&Key, &Value) -> bool,
    ) -> Option<Page> {
        use std::ops::Bound;
        let PageQuery {
            resource,
            namespace,
            ..
        } = *query;
        let st = self.shared.state();
        let rv = query.rv.unwrap_or(st.rv);
        let oldest = st.history.front().map_or(st.rv.saturating_add(1), |e| e.rv);
        if rv > st.rv || (rv.saturating_add(1) < oldest && rv < st.rv) {
            return None;
        }
        let key = |ns: &str, name: &str| Key {
            resource: resource.to_string(),
            namespace: ns.to_string(),
            name: name.to_string(),
        };
        let first = key(namespace.unwrap_or(""), "");
        // The lower bound: the start of the scope, or just after the last key already listed.
        let lower = match query.after {
            Some((ns, name)) if (ns, name) >= (first.namespace.as_str(), "") => {
                Bound::Excluded(key(ns, name))
            }
            _ => Bound::Included(first),
        };
        let in_range = |k: &Key| {
            in_scope(k, resource, namespace)
                && match &lower {
                    Bound::Excluded(l) => k > l,
                    _ => true,
                }
        };
        // What each key changed since `rv` was at `rv` (undone newest first, so the oldest
        // change's previous object is what stays).
        let mut then: BTreeMap<&Key, Option<&Arc<Value>>> = BTreeMap::new();
        for e in st.history.iter().rev().take_while(|e| e.rv > rv) {
            if in_range(&e.key) {
                then.insert(&e.key, e.prev.as_ref());
            }
        }
        let now = st
            .objects
            .range((lower.as_ref(), Bound::Unbounded))
            .take_while(|(k, _)| in_scope(k, resource, namespace))
            .filter(|(k, _)| !then.contains_key(k));
        let undone = then.iter().filter_map(|(k, v)| v.map(|v| (*k, v)));
        let mut merged = merge_by_key(now, undone);
        let limit = query.limit.unwrap_or(usize::MAX);
        let items: Snapshot = merged
            .by_ref()
            .filter(|(k, v)| keep(k, v))
            .take(limit)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let rest = if query.count_rest {
            let mut counts = self
                .shared
                .rest_counts
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let scope = namespace.map(str::to_string);
            let known = match (&lower, query.rv) {
                (Bound::Excluded(after), Some(at)) => {
                    counts.remove(&(scope.clone(), at, after.clone()))
                }
                _ => None,
            };
            let rest = match known {
                Some(n) => n.saturating_sub(items.len()),
                None => merged.count(),
            };
            if let Some((last, _)) = items.last().filter(|_| rest > 0) {
                if counts.len() >= REST_COUNTS {
                    counts.clear();
                }
                counts.insert((scope, rv, last.clone()), rest);
            }
            rest
        } else {
            merged.filter(|(k, v)| keep(k, v)).take(1).count()
        };
        Some(Page { items, rest, rv })
    }

    /// Waits up to `within` for the store to reach resourceVersion `rv`; whether it did.
    pub async fn wait_for(&self, rv: u64, within: Duration) -> bool {
        let mut published = self.shared.published.subscribe();
        let reached = tokio::time::timeout(within, published.wait_for(|now| *now >= rv)).await;
        matches!(reached, Ok(Ok(_)))
    }

    /// Events after `rv` (for a resuming watch) and a subscription for what follows, or `None`
    /// when `rv` is older than the kept history (the client must relist: 410 Gone).
    pub fn since(&self, rv: u64) -> Option<(Vec<Event>, Subscription)> {
        let mut events = Vec::new();
        let mut last = rv;
        loop {
            let batch = self.shared.events_after(last, usize::MAX).ok()?;
            match batch.last() {
                Some(e) => last = e.rv,
                None => break,
            }
            events.extend(batch);
        }
        Some((events, self.subscribe_after(last)))
    }

    /// Creates `obj` at `key`; fails if it exists.
    pub fn create(&self, key: Key, obj: Value) -> Result<Arc<Value>, StoreError> {
        self.write(key, Some(obj), None, true)
    }

    /// Replaces the object at `key`. With `expect_rv`, fails with `Conflict` unless the stored
    /// object still has that resourceVersion.
    pub fn update(
        &self,
        key: Key,
        obj: Value,
        expect_rv: Option<u64>,
    ) -> Result<Arc<Value>, StoreError> {
        self.write(key, Some(obj), expect_rv, false)
    }

    /// Removes the object at `key`.
    pub fn delete(&self, key: Key) -> Result<Arc<Value>, StoreError> {
        self.write(key, None, None, false)
    }

    /// Reads the object at `key` and replaces it with `f(object)` under the writer lock (no
    /// lost updates between controllers). `f` returning `None` leaves it unchanged.
    pub fn modify(
        &self,
        key: &Key,
        f: impl FnOnce(&Value) -> Option<Value>,
    ) -> Result<Option<Arc<Value>>, StoreError> {
        blocking(|| {
            let mut w = self.writer();
            let Some(current) = self.get(key) else {
                return Err(StoreError::NotFound);
            };
            match f(&current) {
                Some(next) if next != *current => {
                    self.commit(&mut w, key.clone(), Some(next)).map(Some)
                }
                _ => Ok(None),
            }
        })
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Writer> {
        self.shared.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn write(
        &self,
        key: Key,
        obj: Option<Value>,
        expect_rv: Option<u64>,
        create: bool,
    ) -> Result<Arc<Value>, StoreError> {
        // Waiting for the writer lock is blocking too: another writer may be in an fsync.
        blocking(|| {
            let mut w = self.writer();
            let existing = self.get(&key);
            match (&existing, create) {
                (Some(_), true) => return Err(StoreError::AlreadyExists),
                (None, false) => return Err(StoreError::NotFound),
                _ => {}
            }
            if let (Some(expect), Some(cur)) = (expect_rv, &existing) {
                if rv_of(cur) != expect {
                    return Err(StoreError::Conflict);
                }
            }
            self.commit(&mut w, key, obj)
        })
    }

    /// Makes one change durable, then visible. Only writers change the state, and the caller
    /// holds the writer lock, so the state read here stays valid until it is published.
    fn commit(
        &self,
        w: &mut Writer,
        key: Key,
        obj: Option<Value>,
    ) -> Result<Arc<Value>, StoreError> {
        let rv = self.rv() + 1;
        let stored = obj.map(|mut o| {
            set_rv(&mut o, rv);
            o
        });
        let record = log::Record {
            rv,
            key: key.clone(),
            object: stored,
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        let line = log::line(&json);
        if let Some(log) = &mut w.log {
            log.append(&line)?;
        }
        let stored = record.object;
        let old_size = match &stored {
            Some(_) => w.sizes.insert(key.clone(), line.len() as u64),
            None => w.sizes.remove(&key),
        };
        w.live = w.live.saturating_sub(old_size.unwrap_or(0))
            + stored.as_ref().map_or(0, |_| line.len() as u64);
        let event = {
            let mut st = self.shared.state();
            st.rv = rv;
            let (kind, object, prev) = match stored {
                Some(o) => {
                    let o = Arc::new(o);
                    let prev = st.objects.insert(key.clone(), o.clone());
                    self.held().apply(&key, prev.as_deref(), Some(&o));
                    let kind = match prev {
                        Some(_) => EventType::Modified,
                        None => EventType::Added,
                    };
                    (kind, o, prev)
                }
                None => {
                    let prev = st.objects.remove(&key);
                    self.held().apply(&key, prev.as_deref(), None);
                    let mut old = prev.as_deref().cloned().unwrap_or(Value::Null);
                    set_rv(&mut old, rv);
                    (EventType::Deleted, Arc::new(old), prev)
                }
            };
            let event = Event {
                rv,
                kind,
                key,
                object,
                prev,
                size: json.len(),
            };
            st.history_bytes += event.size;
            st.history.push_back(event.clone());
            let limits = self.shared.limits;
            while st.history.len() > limits.history_events
                || (st.history_bytes > limits.history_bytes && !st.history.is_empty())
            {
                if let Some(e) = st.history.pop_front() {
                    st.history_bytes -= e.size;
                }
            }
            event
        };
        self.shared.published.send_replace(rv);
        self.maybe_compact(w);
        Ok(event.object)
    }

    /// Rewrites the log when it has grown past its bound; a failure is logged and retried at
    /// a later write (the log stays valid either way).
    fn maybe_compact(&self, w: &mut Writer) {
        let limits = self.shared.limits;
        let live = w.live;
        let Some(log) = &mut w.log else { return };
        if log.len < limits.compact_min_bytes || log.len < live.saturating_mul(limits.compact_ratio)
        {
            return;
        }
        let (objects, rv) = {
            let st = self.shared.state();
            (st.objects.clone(), st.rv)
        };
        let before = log.len;
        let path = log.path.clone();
        let (tmp, sizes) = match log::write_compacted(&path, rv, &objects) {
            Ok(done) => done,
            Err(e) => {
                tracing::warn!(error = %e, "compacting the log failed; it keeps growing until a later try works");
                return;
            }
        };
        match log::install(&tmp, &path) {
            Ok((file, len)) => {
                log.reopened(file, len);
                w.live = sizes.values().sum();
                w.sizes = sizes;
                tracing::info!(path = %path.display(), before, after = len, objects = objects.len(), "compacted the log");
            }
            Err(e) => {
                // The file on disk may no longer be the one open here: appending could lose
                // acknowledged writes, so refuse them until a restart replays the log.
                log.break_off();
                tracing::error!(error = %e, "installing the compacted log failed; writes are refused until switchyard-cp restarts");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::fs::OpenOptions;
    use std::io::Write;

    fn key(name: &str) -> Key {
        Key {
            resource: "pods".into(),
            namespace: "default".into(),
            name: name.into(),
        }
    }

    fn pod(name: &str) -> Value {
        json!({"metadata": {"name": name}})
    }

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sy-cp-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn writes_bump_one_sequence_and_check_versions() {
        let s = Store::in_memory();
        let a = s.create(key("a"), pod("a")).unwrap();
        assert_eq!(rv_of(&a), 1);
        assert!(matches!(
            s.create(key("a"), pod("a")),
            Err(StoreError::AlreadyExists)
        ));
        assert!(matches!(
            s.update(key("a"), pod("a"), Some(7)),
            Err(StoreError::Conflict)
        ));
        let a2 = s.update(key("a"), pod("a"), Some(1)).unwrap();
        assert_eq!(rv_of(&a2), 2);
        assert!(matches!(s.delete(key("b")), Err(StoreError::NotFound)));
        let (events, _) = s.since(0).unwrap();
        assert_eq!(
            events.iter().map(|e| e.kind).collect::<Vec<_>>(),
            [EventType::Added, EventType::Modified]
        );
    }

    #[test]
    fn the_history_is_bounded_in_bytes_and_older_versions_are_gone() {
        let s = Store::in_memory_with(Limits {
            history_bytes: 10_000,
            ..Limits::default()
        });
        let big = json!({"metadata": {"name": "a"}, "data": "x".repeat(3000)});
        s.create(key("a"), big.clone()).unwrap();
        for _ in 0..9 {
            s.update(key("a"), big.clone(), None).unwrap();
        }
        assert!(s.since(0).is_none(), "the first writes left the history");
        let (events, _) = s.since(8).unwrap();
        assert_eq!(events.len(), 2);
        assert!(
            s.oldest_rv() >= 8 && s.oldest_rv() <= 9,
            "{}",
            s.oldest_rv()
        );
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_behind_the_history_is_told_so_and_resumes() {
        let s = Store::in_memory_with(Limits {
            history_events: 5,
            ..Limits::default()
        });
        let mut sub = s.subscribe();
        for i in 0..10 {
            s.create(key(&format!("p{i}")), pod(&format!("p{i}")))
                .unwrap();
        }
        assert_eq!(sub.recv().await.unwrap_err(), RecvError::Lagged);
        s.create(key("next"), pod("next")).unwrap();
        assert_eq!(sub.recv().await.unwrap().key, key("next"));
    }

    #[test]
    fn lists_at_an_older_version_undo_the_changes_made_since() {
        let s = Store::in_memory();
        s.create(key("a"), pod("a")).unwrap();
        s.create(key("b"), pod("b")).unwrap();
        let at = s.rv();
        s.delete(key("a")).unwrap();
        s.create(key("c"), pod("c")).unwrap();
        s.update(key("b"), json!({"metadata": {"name": "b"}, "x": 1}), None)
            .unwrap();
        let (then, rv) = s.list_at("pods", None, Some(at)).unwrap();
        assert_eq!(rv, at);
        let names: Vec<&str> = then.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(then[1].1.get("x").is_none(), "b as it was");
        assert!(s.list_at("pods", None, Some(s.rv() + 1)).is_none());
        assert_eq!(s.list_at("pods", None, None).unwrap().0.len(), 2);
    }

    #[test]
    fn pages_of_an_older_version_follow_each_other_and_count_what_is_left() {
        let s = Store::in_memory();
        for n in ["a", "b", "c", "d", "e"] {
            s.create(key(n), pod(n)).unwrap();
        }
        let at = s.rv();
        // Changes after the snapshot, before, inside and after the pages.
        s.delete(key("b")).unwrap();
        s.delete(key("d")).unwrap();
        s.create(key("bb"), pod("bb")).unwrap();
        s.update(key("e"), json!({"metadata": {"name": "e"}, "x": 1}), None)
            .unwrap();
        let page = |after: Option<&str>, count_rest: bool| {
            let q = PageQuery {
                resource: "pods",
                namespace: Some("default"),
                rv: Some(at),
                after: after.map(|n| ("default", n)),
                limit: Some(2),
                count_rest,
            };
            let p = s.list_page(&q, |_, _| true).unwrap();
            let names: Vec<String> = p.items.iter().map(|(k, _)| k.name.clone()).collect();
            (names, p.rest, p.items)
        };
        let (first, rest, _) = page(None, true);
        assert_eq!((first, rest), (vec!["a".to_string(), "b".to_string()], 3));
        let (second, rest, _) = page(Some("b"), true);
        assert_eq!((second, rest), (vec!["c".to_string(), "d".to_string()], 1));
        let (last, rest, items) = page(Some("d"), false);
        assert_eq!((last, rest), (vec!["e".to_string()], 0));
        assert!(items[0].1.get("x").is_none(), "e as it was");
        let (now, _) = s.list_at("pods", Some("default"), None).unwrap();
        let names: Vec<&str> = now.iter().map(|(k, _)| k.name.as_str()).collect();
        assert_eq!(names, ["a", "bb", "c", "e"]);
    }

    #[test]
    fn lists_hold_only_their_resource_namespace_and_name_prefix() {
        let s = Store::in_memory();
        let at = |resource: &str, ns: &str, name: &str| Key {
            resource: resource.into(),
            namespace: ns.into(),
            name: name.into(),
        };
        for (r, ns, n) in [
            ("endpointslices", "a", "web-1"),
            ("endpointslices", "a", "web-2"),
            ("endpointslices", "a", "web2-1"),
            ("endpointslices", "a", "wex"),
            ("endpointslices", "b", "web-3"),
            ("pods", "a", "web-4"),
            ("podsx", "a", "web-5"),
        ] {
            s.create(at(r, ns, n), pod(n)).unwrap();
        }
        let names = |v: Vec<Arc<Value>>| -> Vec<String> {
            v.iter()
                .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
                .collect()
        };
        assert_eq!(
            names(s.list_prefixed("endpointslices", "a", "web-")),
            ["web-1", "web-2"]
        );
        assert_eq!(names(s.list("endpointslices", Some("a")).0).len(), 4);
        assert_eq!(names(s.list("endpointslices", None).0).len(), 5);
        assert_eq!(names(s.list("pods", None).0), ["web-4"]);
        assert_eq!(s.list_at("pods", Some("a"), None).unwrap().0.len(), 1);
    }

    /// A fresh log in a scratch directory `name` holding pods `a` and `b`.
    fn log_with_a_and_b(name: &str) -> (PathBuf, Store) {
        let dir = scratch(name);
        let s = Store::open(&dir).unwrap();
        s.create(key("a"), pod("a")).unwrap();
        s.create(key("b"), pod("b")).unwrap();
        (dir, s)
    }

    #[test]
    fn restart_keeps_objects_and_the_sequence() {
        let (dir, s) = log_with_a_and_b("restart");
        s.delete(key("b")).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(s.get(&key("a")).is_some() && s.get(&key("b")).is_none());
        assert_eq!(s.rv(), 3, "the sequence continues after the deletion");
        assert_eq!(rv_of(&s.create(key("c"), pod("c")).unwrap()), 4);
        // A torn last line is dropped.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("objects.log"))
            .unwrap();
        write!(f, "0badc0de {{\"rv\": 9, \"key\"").unwrap();
        drop(f);
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.rv(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_damaged_record_in_the_middle_stops_the_start_naming_file_and_offset() {
        let (dir, s) = log_with_a_and_b("damaged");
        drop(s);
        let path = dir.join("objects.log");
        let mut bytes = std::fs::read(&path).unwrap();
        // Flip one byte inside the second line (the record of "a").
        let second = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
        bytes[second + 30] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let e = Store::open(&dir)
            .err()
            .expect("a damaged log stops the start");
        let text = e.to_string();
        assert!(
            text.starts_with(&format!(
                "{}: damaged record at byte offset {second} (checksum",
                path.display()
            )),
            "{text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_log_of_the_previous_format_is_read_and_migrated() {
        let dir = scratch("legacy");
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("objects.log");
        let line = |rv: u64, name: &str| {
            serde_json::to_string(&json!({"rv": rv, "key": key(name), "object": pod(name)}))
                .unwrap()
        };
        std::fs::write(&path, format!("{}\n{}\n", line(1, "a"), line(2, "b"))).unwrap();
        let s = Store::open(&dir).unwrap();
        assert!(s.get(&key("a")).is_some() && s.get(&key("b")).is_some());
        assert_eq!(s.rv(), 2);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().all(|l| l.as_bytes()[8] == b' '),
            "rewritten with checksums: {text}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_log_compacts_while_running_once_it_outgrows_the_live_data() {
        let dir = scratch("compact");
        let s = Store::open_with(
            &dir,
            Limits {
                compact_min_bytes: 20_000,
                ..Limits::default()
            },
        )
        .unwrap();
        let path = dir.join("objects.log");
        let big = json!({"metadata": {"name": "a"}, "data": "x".repeat(1000)});
        s.create(key("a"), big.clone()).unwrap();
        let mut largest = 0;
        for _ in 0..200 {
            s.update(key("a"), big.clone(), None).unwrap();
            largest = largest.max(std::fs::metadata(&path).unwrap().len());
        }
        assert!(largest < 25_000, "the log stayed bounded: {largest}");
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.rv(), 201);
        assert_eq!(rv_of(&s.get(&key("a")).unwrap()), 201);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
