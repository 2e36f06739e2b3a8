//! The on-disk log: one record per write, each line `<crc32, 8 hex digits> <JSON>\n`.
//!
//! Invariant: a record is acknowledged only after it is written whole and fsynced; replay
//! accepts a record only when its checksum matches (lines of the previous format, plain JSON
//! without a checksum, are still read). A record that does not check out is dropped when it is
//! the last one (a write a crash tore before it was acknowledged) and stops the start anywhere
//! else, naming the file and the byte offset, since what follows cannot be trusted.
use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Key, StoreError};

/// One record: the object at `key` after the write with resourceVersion `rv` (none: deleted).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Record {
    pub rv: u64,
    pub key: Key,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub object: Option<Value>,
}

impl Record {
    /// The key of the marker record that keeps the sequence when the newest object is gone.
    pub fn marker(rv: u64) -> Record {
        Record {
            rv,
            key: Key {
                resource: String::new(),
                namespace: String::new(),
                name: String::new(),
            },
            object: None,
        }
    }
}

/// The line of a record whose JSON is `json`: checksum, space, JSON, newline.
pub(super) fn line(json: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(json.len() + 10);
    out.extend_from_slice(format!("{:08x} ", crc32fast::hash(json)).as_bytes());
    out.extend_from_slice(json);
    out.push(b'\n');
    out
}

/// The JSON of a record, or why the line is not one.
fn parse_line(line: &[u8]) -> Result<(Record, bool), String> {
    let (json, legacy) = match line.get(..9) {
        Some([h @ .., b' ']) if h.iter().all(u8::is_ascii_hexdigit) => {
            let want = std::str::from_utf8(h)
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                .unwrap_or(0);
            let json = &line[9..];
            let got = crc32fast::hash(json);
            if got != want {
                return Err(format!("checksum {got:08x} does not match {want:08x}"));
            }
            (json, false)
        }
        _ if line.first() == Some(&b'{') => (line, true),
        _ => return Err("not a record".into()),
    };
    serde_json::from_slice(json)
        .map(|r| (r, legacy))
        .map_err(|e| format!("unreadable record: {e}"))
}

/// What replaying a log found.
pub(super) struct Replayed {
    pub objects: BTreeMap<Key, Arc<Value>>,
    pub rv: u64,
    /// Records of the previous format (no checksum) read.
    pub legacy: usize,
}

/// Reads the log at `path` (missing: empty).
pub(super) fn replay(path: &Path) -> Result<Replayed, StoreError> {
    let mut out = Replayed {
        objects: BTreeMap::new(),
        rv: 0,
        legacy: 0,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(StoreError::Io(path.to_path_buf(), e)),
    };
    // The offset at which each line starts.
    let mut offset = 0usize;
    let lines: Vec<(usize, &[u8])> = bytes
        .split(|b| *b == b'\n')
        .map(|l| {
            let at = offset;
            offset += l.len() + 1;
            (at, l)
        })
        .collect();
    let last = lines
        .iter()
        .rposition(|(_, l)| !l.iter().all(u8::is_ascii_whitespace));
    for (i, (at, line)) in lines.iter().enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let (record, legacy) = match parse_line(line) {
            Ok(r) => r,
            Err(why) if Some(i) == last => {
                tracing::warn!(path = %path.display(), offset = at, bytes = line.len(), %why,
                    "skipping a torn last record (a write cut short by a crash; it was never acknowledged)");
                continue;
            }
            Err(reason) => {
                return Err(StoreError::Damaged {
                    path: path.to_path_buf(),
                    offset: *at as u64,
                    reason,
                })
            }
        };
        out.legacy += usize::from(legacy);
        out.rv = out.rv.max(record.rv);
        match record.object {
            Some(o) => {
                out.objects.insert(record.key, Arc::new(o));
            }
            None => {
                out.objects.remove(&record.key);
            }
        }
    }
    Ok(out)
}

/// Writes a compacted log (a marker keeping `rv`, then one record per object) to `path` and
/// makes it the log: [`write_compacted`], then [`install`].
pub(super) fn rewrite(
    path: &Path,
    rv: u64,
    objects: &BTreeMap<Key, Arc<Value>>,
) -> Result<(File, u64, BTreeMap<Key, u64>), StoreError> {
    let (tmp, sizes) = write_compacted(path, rv, objects)?;
    let (file, len) = install(&tmp, path)?;
    Ok((file, len, sizes))
}

/// Writes the compacted log beside `path` (`objects.log.tmp`), fsynced; its path and the size
/// of each object's record. A failure here leaves the log as it was.
pub(super) fn write_compacted(
    path: &Path,
    rv: u64,
    objects: &BTreeMap<Key, Arc<Value>>,
) -> Result<(PathBuf, BTreeMap<Key, u64>), StoreError> {
    let tmp = path.with_extension("log.tmp");
    let io = |e| StoreError::Io(tmp.clone(), e);
    let mut sizes = BTreeMap::new();
    let mut f = std::io::BufWriter::new(File::create(&tmp).map_err(io)?);
    let marker = serde_json::to_vec(&Record::marker(rv)).unwrap_or_default();
    f.write_all(&line(&marker)).map_err(io)?;
    for (key, obj) in objects {
        let record = Record {
            rv: super::rv_of(obj),
            key: key.clone(),
            object: Some((**obj).clone()),
        };
        let bytes = line(&serde_json::to_vec(&record).unwrap_or_default());
        f.write_all(&bytes).map_err(io)?;
        sizes.insert(key.clone(), bytes.len() as u64);
    }
    let f = f.into_inner().map_err(|e| io(e.into_error()))?;
    f.sync_all().map_err(io)?;
    Ok((tmp, sizes))
}

/// Renames `tmp` over `path`, makes the rename durable and opens the result for appending;
/// its length.
pub(super) fn install(tmp: &Path, path: &Path) -> Result<(File, u64), StoreError> {
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |e| StoreError::Io(p, e)
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::rename(tmp, path).map_err(io(path))?;
    // The rename itself must be durable before anything is appended to the new file.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))?;
    let file = OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(io(path))?;
    let len = file.metadata().map_err(io(path))?.len();
    Ok((file, len))
}

/// The open log file.
pub(super) struct Log {
    pub path: PathBuf,
    file: File,
    /// Bytes of complete records: a failed append is cut back to this.
    pub len: u64,
    /// An append failed and could not be undone: refuse writes rather than acknowledge records
    /// that would follow a torn one.
    broken: bool,
    /// Added to every fsync (tests: a slow disk).
    pub fsync_delay: Duration,
}

impl Log {
    /// The log at `path`, open for appending at `len`.
    pub fn new(path: PathBuf, file: File, len: u64, fsync_delay: Duration) -> Log {
        Log {
            path,
            file,
            len,
            broken: false,
            fsync_delay,
        }
    }

    /// Replaces the open file after a compaction.
    pub fn reopened(&mut self, file: File, len: u64) {
        self.file = file;
        self.len = len;
    }

    /// Refuses every further write (the file on disk is no longer the one open here).
    pub fn break_off(&mut self) {
        self.broken = true;
    }

    /// Appends one record line and fsyncs it; on failure the file is cut back to its last
    /// complete record (or, failing that, the log refuses all further writes).
    pub fn append(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let err = |path: &Path, e| StoreError::Io(path.to_path_buf(), e);
        if self.broken {
            return Err(err(
                &self.path,
                std::io::Error::other("an earlier write failed half-way; restart switchyard-cp"),
            ));
        }
        // One write call for the whole record: nothing interleaves, a kill leaves it whole or
        // absent, and only a crash of the machine can tear it (replay drops a torn tail).
        let result = self.file.write_all(bytes).and_then(|_| {
            if !self.fsync_delay.is_zero() {
                std::thread::sleep(self.fsync_delay);
            }
            self.file.sync_data()
        });
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_a_checksum_that_replay_verifies() {
        let l = line(br#"{"rv":1,"key":{"resource":"a","namespace":"","name":"b"}}"#);
        assert!(parse_line(&l[..l.len() - 1]).is_ok());
        let mut bad = l.clone();
        bad[20] ^= 1;
        assert!(parse_line(&bad[..bad.len() - 1])
            .unwrap_err()
            .contains("checksum"));
        let legacy = br#"{"rv":1,"key":{"resource":"a","namespace":"","name":"b"}}"#;
        assert!(parse_line(legacy).unwrap().1, "the previous format is read");
    }
}
