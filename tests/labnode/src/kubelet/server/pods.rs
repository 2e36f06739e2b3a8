//! Finding what a request names — a pod run by this node and one of its containers — in the
//! kubelet's records ([`crate::kubelet::state`]), with the kubelet's answers when it is not there
//! or not in the state asked for.
//!
//! Invariant: a [`Target`] is only handed out for a container of a pod this node runs; a running
//! one ([`Target::running`]) only while its recorded process is alive (same pid and start time).
use super::ApiError;
use crate::kubelet::logs;
use crate::kubelet::process;
use crate::kubelet::state::{self, ContainerRecord, PodRecord};
use std::path::PathBuf;

/// A container of a pod on this node.
#[derive(Clone, Debug)]
pub struct Target {
    /// The node's name (for paths).
    pub node: String,
    /// The pod's record.
    pub pod: PodRecord,
    /// Index of the container in the record.
    pub index: usize,
}

/// The pod `namespace/name` run by `node` (the newest one, should an older pod of the same name
/// still be stopping).
pub fn find_pod(node: &str, namespace: &str, name: &str) -> Result<PodRecord, ApiError> {
    state::list(node)
        .iter()
        .filter_map(|uid| state::load(node, uid))
        .filter(|p| p.namespace == namespace && p.name == name)
        .max_by(|a, b| a.start_time.cmp(&b.start_time))
        .ok_or_else(|| ApiError::not_found(format!("pod {name:?} does not exist")))
}

/// Container `container` of pod `namespace/name`.
pub fn find(node: &str, namespace: &str, name: &str, container: &str) -> Result<Target, ApiError> {
    let pod = find_pod(node, namespace, name)?;
    let index = pod
        .containers
        .iter()
        .position(|c| c.name == container)
        .ok_or_else(|| {
            ApiError::not_found(format!("container {container:?} not found in pod {name:?}"))
        })?;
    Ok(Target {
        node: node.to_string(),
        pod,
        index,
    })
}

impl Target {
    /// The container's record.
    pub fn container(&self) -> &ContainerRecord {
        &self.pod.containers[self.index]
    }

    fn log(&self, restart: u32) -> PathBuf {
        logs::container_log(
            &self.node,
            &self.pod.namespace,
            &self.pod.name,
            &self.pod.uid,
            &self.container().name,
            restart,
        )
    }

    /// The log file to read: the current run's (while a container waits to start again, the
    /// run that ended), or with `previous` the run before the current one — the kubelet's
    /// `lastState`; the kubelet's 400s when there is none.
    pub fn log_file(&self, previous: bool) -> Result<PathBuf, ApiError> {
        let c = self.container();
        let (pod, name) = (&self.pod.name, &c.name);
        let last_run = c
            .last
            .as_ref()
            .and_then(|_| c.restart_count.checked_sub(1))
            .map(|run| self.log(run));
        if previous {
            return last_run.filter(|f| f.exists()).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "previous terminated container {name:?} in pod {pod:?} not found"
                ))
            });
        }
        let current = self.log(c.restart_count);
        if current.exists() {
            return Ok(current);
        }
        if let Some(last) = last_run.filter(|f| f.exists()) {
            return Ok(last);
        }
        Err(ApiError::bad_request(match &c.error {
            None => {
                format!("container {name:?} in pod {pod:?} is waiting to start: ContainerCreating")
            }
            Some(_) => format!("container {name:?} in pod {pod:?} is terminated"),
        }))
    }

    /// The pid of the container's process, if it runs.
    pub fn running(&self) -> Result<i32, ApiError> {
        let c = self.container();
        match (c.pid, c.start_ticks, &c.exit) {
            (Some(pid), Some(ticks), None) if process::start_ticks_of(pid) == Some(ticks) => {
                Ok(pid)
            }
            _ => Err(ApiError::bad_request(format!(
                "container {:?} in pod {:?} is not running",
                c.name, self.pod.name
            ))),
        }
    }
}
