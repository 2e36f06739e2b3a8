//! What the kubelet remembers about each pod it runs, on disk, so that a restarted kubelet
//! adopts running pods instead of starting them twice.
//!
//! One JSON file per pod UID under `/run/switchyard/<node>/kubelet/`, written atomically.
use super::error::Error;
use super::process::Exit;
use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;
use std::path::PathBuf;

/// Directory of the kubelet's pod records for `node`.
pub fn dir(node: &str) -> PathBuf {
    switchyard::paths::state_dir(node).join("kubelet")
}

/// One pod as run by this node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodRecord {
    /// Pod UID.
    pub uid: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub name: String,
    /// CNI container id.
    pub container_id: String,
    /// Name of the pod's network namespace; empty for a `hostNetwork` pod.
    pub netns: String,
    /// Pod address, once CNI ADD succeeded.
    pub pod_ip: Option<Ipv4Addr>,
    /// When the kubelet started working on the pod (RFC 3339).
    pub start_time: String,
    /// Containers, in spec order.
    pub containers: Vec<ContainerRecord>,
}

/// One container of a [`PodRecord`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerRecord {
    /// Container name.
    pub name: String,
    /// Image as written in the spec (reported back, never pulled).
    pub image: String,
    /// Process id (= process group id) while started.
    pub pid: Option<i32>,
    /// Start time of `pid` in clock ticks, to recognise it after a restart.
    pub start_ticks: Option<u64>,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// How it ended.
    pub exit: Option<Exit>,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
    /// Why it could not start.
    pub error: Option<String>,
    /// How often it was started again after exiting (its log file is `<restart_count>.log`).
    #[serde(default)]
    pub restart_count: u32,
    /// Its previous run, once it was started again (`lastState`).
    #[serde(default)]
    pub last: Option<LastRun>,
}

/// A finished run of a container that was started again.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastRun {
    /// How it ended.
    pub exit: Exit,
    /// When it started (RFC 3339).
    pub started_at: Option<String>,
    /// When it ended (RFC 3339).
    pub finished_at: Option<String>,
}

fn file(node: &str, uid: &str) -> PathBuf {
    dir(node).join(format!("{uid}.json"))
}

/// Saves a record atomically.
pub fn save(node: &str, rec: &PodRecord) -> Result<(), Error> {
    let d = dir(node);
    std::fs::create_dir_all(&d).map_err(Error::io(&d))?;
    let path = file(node, &rec.uid);
    let tmp = d.join(format!(".{}.tmp", rec.uid));
    let json = serde_json::to_vec_pretty(rec).map_err(|e| Error::Io {
        path: path.clone(),
        source: std::io::Error::other(e),
    })?;
    std::fs::write(&tmp, json).map_err(Error::io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(Error::io(&path))
}

/// Loads the record of pod `uid`, if there is a readable one.
pub fn load(node: &str, uid: &str) -> Option<PodRecord> {
    let path = file(node, uid);
    let raw = std::fs::read(&path).ok()?;
    match serde_json::from_slice(&raw) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring unreadable pod record");
            None
        }
    }
}

/// Removes the record of pod `uid`.
pub fn remove(node: &str, uid: &str) -> Result<(), Error> {
    let path = file(node, uid);
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io(&path)(e)),
        _ => Ok(()),
    }
}

/// UIDs of every saved record.
pub fn list(node: &str) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(dir(node)) else {
        return Vec::new();
    };
    rd.filter_map(|e| e.ok())
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            name.strip_suffix(".json")
                .filter(|n| !n.starts_with('.'))
                .map(str::to_string)
        })
        .collect()
}
