//! The object store: every object as JSON, one global resourceVersion sequence, a bounded
//! history of watch events, and an append-only log on disk.
//!
//! Each acknowledged write is appended to `<data-dir>/objects.log` and fsynced before the caller
//! answers, so a `kill -9` loses nothing that was acknowledged. On start the log is replayed and
//! rewritten compacted (one line per live object).
use std::collections::{BTreeMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::broadcast;

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
    /// Writing the log failed: the change was not made.
    #[error("persisting to {0}: {1}")]
    Io(PathBuf, std::io::Error),
}

#[derive(Serialize, Deserialize)]
struct LogLine {
    rv: u64,
    key: Key,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    object: Option<Value>,
}

struct Inner {
    objects: BTreeMap<Key, Arc<Value>>,
    rv: u64,
    history: VecDeque<Event>,
    log: Option<Log>,
}

/// The open log file.
struct Log {
    path: PathBuf,
    file: File,
    /// Bytes of complete records: a failed append is cut back to this.
    len: u64,
    /// An append failed and could not be undone: refuse writes rather than acknowledge records
    /// that would follow a torn one.
    broken: bool,
}

impl Log {
    /// Appends one record and fsyncs it; on failure the file is cut back to its last complete
    /// record (or, failing that, the log refuses all further writes).
    fn append(&mut self, line: &LogLine) -> Result<(), StoreError> {
        let err = |path: &Path, e| StoreError::Io(path.to_path_buf(), e);
        if self.broken {
            return Err(err(
                &self.path,
                std::io::Error::other("an earlier write failed half-way; restart switchyard-cp"),
            ));
        }
        let mut bytes = serde_json::to_vec(line).unwrap_or_default();
        bytes.push(b'\n');
        // One write call for the whole record: nothing interleaves, a kill leaves it whole or
        // absent, and only a crash of the machine can tear it (replay skips a torn tail).
        let result = self
            .file
            .write_all(&bytes)
            .and_then(|_| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(e) => {
                if self
                    .file
                    .set_len(self.len)
                    .and_then(|_| self.file.sync_data())
                    .is_err()
                {
                    self.broken = true;
                }
                Err(err(&self.path, e))
            }
        }
    }
}

/// Reads the log at `path` (missing: empty): the live objects and the last resourceVersion.
/// A record that does not parse is skipped with a warning: at the end of the file it is a write
/// that a crash tore before it was acknowledged; anywhere else the file was damaged.
fn replay(path: &Path) -> std::io::Result<(BTreeMap<Key, Arc<Value>>, u64)> {
    let mut objects = BTreeMap::new();
    let mut rv = 0;
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((objects, rv)),
        Err(e) => return Err(e),
    };
    let lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let Ok(entry) = serde_json::from_slice::<LogLine>(line) else {
            let torn_tail = i == last || (i + 1 == last && lines[last].is_empty());
            if torn_tail {
                tracing::warn!(path = %path.display(), line = i + 1, bytes = line.len(),
                    "skipping a torn last record (a write cut short by a crash; it was never acknowledged)");
            } else {
                tracing::warn!(path = %path.display(), line = i + 1, bytes = line.len(),
                    "skipping a damaged record in the middle of the log");
            }
            continue;
        };
        rv = rv.max(entry.rv);
        match entry.object {
            Some(o) => {
                objects.insert(entry.key, Arc::new(o));
            }
            None => {
                objects.remove(&entry.key);
            }
        }
    }
    Ok((objects, rv))
}

/// The shared store.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Mutex<Inner>>,
    events: broadcast::Sender<Event>,
    admission: Arc<Mutex<()>>,
}

/// Watch events kept for resuming watches.
pub const HISTORY: usize = 20_000;

fn rv_of(v: &Value) -> u64 {
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
    /// An in-memory store (tests).
    pub fn in_memory() -> Self {
        Self::with(BTreeMap::new(), 0, None)
    }

    fn with(objects: BTreeMap<Key, Arc<Value>>, rv: u64, log: Option<Log>) -> Self {
        let (events, _) = broadcast::channel(65_536);
        Store {
            inner: Arc::new(Mutex::new(Inner {
                objects,
                rv,
                history: VecDeque::new(),
                log,
            })),
            events,
            admission: Arc::new(Mutex::new(())),
        }
    }

    /// Serialises admission with the write it precedes: held from reading what is allocated
    /// (ClusterIPs, nodePorts, podCIDRs) until the object that takes its pick is stored, so two
    /// concurrent requests never get the same one.
    pub fn admission_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.admission.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Opens (or creates) the store in `dir`, replaying and compacting its log.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let io = |p: &Path| {
            let p = p.to_path_buf();
            move |e| StoreError::Io(p, e)
        };
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let path = dir.join("objects.log");
        let (objects, rv) = replay(&path).map_err(io(&path))?;
        let tmp = dir.join("objects.log.tmp");
        {
            let mut f = File::create(&tmp).map_err(io(&tmp))?;
            // Keep the sequence even if the newest object was deleted: a marker line.
            let marker = LogLine {
                rv,
                key: Key {
                    resource: String::new(),
                    namespace: String::new(),
                    name: String::new(),
                },
                object: None,
            };
            writeln!(f, "{}", serde_json::to_string(&marker).unwrap_or_default())
                .map_err(io(&tmp))?;
            for (key, obj) in &objects {
                let line = LogLine {
                    rv: rv_of(obj),
                    key: key.clone(),
                    object: Some((**obj).clone()),
                };
                writeln!(f, "{}", serde_json::to_string(&line).unwrap_or_default())
                    .map_err(io(&tmp))?;
            }
            f.sync_all().map_err(io(&tmp))?;
        }
        std::fs::rename(&tmp, &path).map_err(io(&path))?;
        // The rename itself must be durable before anything is appended to the new file.
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io(dir))?;
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io(&path))?;
        let len = file.metadata().map_err(io(&path))?.len();
        tracing::info!(objects = objects.len(), resource_version = rv, path = %path.display(), "store opened");
        Ok(Self::with(
            objects,
            rv,
            Some(Log {
                path,
                file,
                len,
                broken: false,
            }),
        ))
    }

    /// Subscribes to changes after now.
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// The current resourceVersion.
    pub fn rv(&self) -> u64 {
        self.lock().rv
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One object.
    pub fn get(&self, key: &Key) -> Option<Arc<Value>> {
        self.lock().objects.get(key).cloned()
    }

    /// Every object of `resource` (in `namespace` if given), with the list's resourceVersion.
    pub fn list(&self, resource: &str, namespace: Option<&str>) -> (Vec<Arc<Value>>, u64) {
        let inner = self.lock();
        let items = inner
            .objects
            .iter()
            .filter(|(k, _)| k.resource == resource && namespace.is_none_or(|ns| k.namespace == ns))
            .map(|(_, v)| v.clone())
            .collect();
        (items, inner.rv)
    }

    /// Events after `rv` (for a resuming watch) and a receiver for what follows, or `None` when
    /// `rv` is older than the kept history (the client must relist: 410 Gone).
    pub fn since(&self, rv: u64) -> Option<(Vec<Event>, broadcast::Receiver<Event>)> {
        let inner = self.lock();
        let rx = self.events.subscribe();
        let oldest = inner.history.front().map_or(inner.rv + 1, |e| e.rv);
        if rv + 1 < oldest && rv < inner.rv {
            return None;
        }
        Some((
            inner
                .history
                .iter()
                .filter(|e| e.rv > rv)
                .cloned()
                .collect(),
            rx,
        ))
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

    /// Reads the object at `key` and replaces it with `f(object)` under one lock (no lost
    /// updates between controllers). `f` returning `None` leaves it unchanged.
    pub fn modify(
        &self,
        key: &Key,
        f: impl FnOnce(&Value) -> Option<Value>,
    ) -> Result<Option<Arc<Value>>, StoreError> {
        let mut inner = self.lock();
        let Some(current) = inner.objects.get(key).cloned() else {
            return Err(StoreError::NotFound);
        };
        match f(&current) {
            Some(next) if next != *current => {
                self.commit(&mut inner, key.clone(), Some(next)).map(Some)
            }
            _ => Ok(None),
        }
    }

    fn write(
        &self,
        key: Key,
        obj: Option<Value>,
        expect_rv: Option<u64>,
        create: bool,
    ) -> Result<Arc<Value>, StoreError> {
        let mut inner = self.lock();
        let existing = inner.objects.get(&key).cloned();
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
        self.commit(&mut inner, key, obj)
    }

    fn commit(
        &self,
        inner: &mut Inner,
        key: Key,
        obj: Option<Value>,
    ) -> Result<Arc<Value>, StoreError> {
        let rv = inner.rv + 1;
        let (kind, stored) = match obj {
            Some(mut o) => {
                set_rv(&mut o, rv);
                let kind = if inner.objects.contains_key(&key) {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                (kind, Some(o))
            }
            None => (EventType::Deleted, None),
        };
        if let Some(log) = &mut inner.log {
            log.append(&LogLine {
                rv,
                key: key.clone(),
                object: stored.clone(),
            })?;
        }
        inner.rv = rv;
        let object = match stored {
            Some(o) => {
                let o = Arc::new(o);
                inner.objects.insert(key.clone(), o.clone());
                o
            }
            None => {
                let mut old = inner
                    .objects
                    .remove(&key)
                    .map(|o| (*o).clone())
                    .unwrap_or(Value::Null);
                set_rv(&mut old, rv);
                Arc::new(old)
            }
        };
        let event = Event {
            rv,
            kind,
            key,
            object: object.clone(),
        };
        inner.history.push_back(event.clone());
        while inner.history.len() > HISTORY {
            inner.history.pop_front();
        }
        let _ = self.events.send(event);
        Ok(object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
    fn restart_keeps_objects_and_the_sequence() {
        let dir = std::env::temp_dir().join(format!("sy-cp-store-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            s.create(key("a"), pod("a")).unwrap();
            s.create(key("b"), pod("b")).unwrap();
            s.delete(key("b")).unwrap();
        }
        let s = Store::open(&dir).unwrap();
        assert!(s.get(&key("a")).is_some() && s.get(&key("b")).is_none());
        assert_eq!(s.rv(), 3, "the sequence continues after the deletion");
        assert_eq!(rv_of(&s.create(key("c"), pod("c")).unwrap()), 4);
        // A torn last line is ignored.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("objects.log"))
            .unwrap();
        write!(f, "{{\"rv\": 9, \"key\"").unwrap();
        drop(f);
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert_eq!(s.rv(), 4);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn damaged_records_are_skipped_and_later_writes_survive() {
        let dir = std::env::temp_dir().join(format!("sy-cp-store-torn-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        {
            let s = Store::open(&dir).unwrap();
            s.create(key("a"), pod("a")).unwrap();
        }
        // Garbage (not even UTF-8) in the middle, then a good record, then a torn tail.
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join("objects.log"))
            .unwrap();
        f.write_all(b"\xff\xfe{broken\n").unwrap();
        let good = LogLine {
            rv: 2,
            key: key("b"),
            object: Some(pod("b")),
        };
        writeln!(f, "{}", serde_json::to_string(&good).unwrap()).unwrap();
        f.write_all(b"{\"rv\":3,\"key\":{\"reso").unwrap();
        drop(f);
        let s = Store::open(&dir).unwrap();
        assert!(s.get(&key("a")).is_some() && s.get(&key("b")).is_some());
        assert_eq!(s.rv(), 2);
        s.create(key("c"), pod("c")).unwrap();
        drop(s);
        let s = Store::open(&dir).unwrap();
        assert!(
            s.get(&key("c")).is_some(),
            "a write after the torn tail survives"
        );
        assert_eq!(s.rv(), 3);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
