//! One pod's life on this node: set up (namespace, CNI ADD, processes), watch and report its
//! status, tear down (stop processes, CNI DEL, remove the namespace, delete the object).
use super::cni_exec::{pod_ip, PodRef};
use super::error::{is_status, Error};
use super::probe::{self, Readiness};
use super::process::{self, Proc};
use super::state::{self, ContainerRecord, PodRecord};
use super::status::{self, ContainerPhase, ContainerView, PodView, Transitions};
use super::{etc, serviceaccount};
use super::{logs, netns, restart, Ctx};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Preconditions};
use nix::sys::signal::Signal;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedReceiver;

/// Messages from the pod manager to a worker.
#[derive(Debug)]
pub enum Cmd {
    /// The pod object changed.
    Update(Box<Pod>),
    /// The pod object is gone from the API.
    Gone,
}

/// How often a running pod is checked.
const TICK: Duration = Duration::from_millis(500);
/// Wait between CNI ADD attempts.
const CNI_RETRY: Duration = Duration::from_secs(1);
/// How often the agent's attached marker is looked for before the containers start.
const ATTACH_POLL: Duration = Duration::from_millis(20);
/// Grace period when the spec gives none.
const DEFAULT_GRACE: Duration = Duration::from_secs(30);
/// Extra wait for processes after SIGKILL.
const KILL_WAIT: Duration = Duration::from_secs(5);

/// Why the worker left its current stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Keep going.
    Continue,
    /// Stop the pod: give processes `grace`; delete the object afterwards if asked.
    Terminate {
        grace: Duration,
        delete_object: bool,
    },
    /// The kubelet is shutting down: leave the pod running, as a real kubelet does.
    Detach,
}

/// The CNI container id of a pod: `<ns>-<name>-<first 8 of uid>`.
pub fn container_id(namespace: &str, name: &str, uid: &str) -> String {
    let short: String = uid.chars().filter(|c| *c != '-').take(8).collect();
    format!("{namespace}-{name}-{short}")
}

/// Grace period of a pod being deleted.
fn grace_of(pod: &Pod) -> Duration {
    let secs = pod
        .metadata
        .deletion_grace_period_seconds
        .or_else(|| pod.spec.as_ref()?.termination_grace_period_seconds);
    match (secs, &pod.spec) {
        (Some(s), _) => Duration::from_secs(u64::try_from(s).unwrap_or(0)),
        (None, Some(_)) => DEFAULT_GRACE,
        (None, None) => Duration::from_secs(2),
    }
}

fn now_rfc3339() -> String {
    Timestamp::now().to_string()
}

fn parse_time(s: &Option<String>) -> Option<Timestamp> {
    s.as_deref().and_then(|s| s.parse().ok())
}

/// A pod this node runs.
pub struct Worker {
    ctx: Arc<Ctx>,
    pod: Pod,
    uid: String,
    namespace: String,
    name: String,
    host_network: bool,
    rec: PodRecord,
    procs: Vec<Option<Proc>>,
    /// When each container waiting to start again is due, and the back-off it waits.
    restart_at: Vec<Option<(Instant, Duration)>>,
    readiness: Vec<Readiness>,
    probe_ok: Vec<bool>,
    waiting: (String, Option<String>),
    transitions: Transitions,
    last_reported: Option<PodStatus>,
}

impl Worker {
    /// A worker for `pod` (which has a UID).
    pub fn new(ctx: Arc<Ctx>, pod: Pod) -> Worker {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let namespace = pod
            .metadata
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = pod.metadata.name.clone().unwrap_or_default();
        let host_network = pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false);
        let containers = pod.spec.clone().unwrap_or_default().containers;
        let mut worker = Worker {
            readiness: containers.iter().map(probe::readiness).collect(),
            probe_ok: Vec::new(),
            procs: Vec::new(),
            restart_at: Vec::new(),
            rec: PodRecord {
                uid: uid.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
                container_id: String::new(),
                netns: String::new(),
                pod_ip: None,
                start_time: String::new(),
                containers: Vec::new(),
            },
            ctx,
            pod,
            uid,
            namespace,
            name,
            host_network,
            waiting: ("ContainerCreating".into(), None),
            transitions: Transitions::default(),
            last_reported: None,
        };
        worker.reset();
        worker
    }

    /// Starts the record afresh from the spec: nothing created yet.
    fn reset(&mut self) {
        let containers = self.pod.spec.clone().unwrap_or_default().containers;
        self.rec = PodRecord {
            uid: self.uid.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            container_id: container_id(&self.namespace, &self.name, &self.uid),
            netns: if self.host_network {
                String::new()
            } else {
                switchyard::paths::pod_netns(&self.namespace, &self.name)
            },
            pod_ip: None,
            start_time: now_rfc3339(),
            containers: containers
                .iter()
                .map(|c| ContainerRecord {
                    name: c.name.clone(),
                    image: c.image.clone().unwrap_or_default(),
                    pid: None,
                    start_ticks: None,
                    started_at: None,
                    exit: None,
                    finished_at: None,
                    error: None,
                    restart_count: 0,
                    last: None,
                })
                .collect(),
        };
        self.procs = containers.iter().map(|_| None).collect();
        self.restart_at = vec![None; containers.len()];
        self.probe_ok = vec![false; containers.len()];
    }

    fn api(&self) -> Api<Pod> {
        Api::namespaced(self.ctx.client.clone(), &self.namespace)
    }

    fn pod_ref(&self) -> PodRef<'_> {
        PodRef {
            namespace: &self.namespace,
            name: &self.name,
            container_id: &self.rec.container_id,
        }
    }

    fn netns_path(&self) -> PathBuf {
        if self.host_network {
            PathBuf::from("/proc/self/ns/net")
        } else {
            netns::path(&self.rec.netns)
        }
    }

    /// Runs the pod until it is deleted (or gone), then cleans up after it.
    pub async fn run(mut self, mut rx: UnboundedReceiver<Cmd>) {
        // Whatever an earlier kubelet run left is taken over first, so that even a pod deleted
        // meanwhile has its processes found and stopped.
        let adopted = state::load(&self.ctx.node, &self.uid).map(|rec| self.adopt(rec));
        let mut next = self.handle_pending(&mut rx);
        if next == Next::Continue {
            next = match adopted {
                Some(true) => Next::Continue,
                Some(false) => {
                    tracing::info!(
                        "leftovers of an interrupted start; cleaning up and starting again"
                    );
                    self.stop_processes(Duration::ZERO).await;
                    self.cleanup_network().await;
                    self.reset();
                    self.start(&mut rx).await
                }
                None if matches!(
                    self.pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded") | Some("Failed")
                ) =>
                {
                    // Finished before this kubelet knew it: never run it again.
                    self.wait_for_deletion(&mut rx).await
                }
                None => self.start(&mut rx).await,
            };
        }
        if next == Next::Continue {
            next = self.monitor(&mut rx).await;
        }
        if let Next::Terminate {
            grace,
            delete_object,
        } = next
        {
            self.teardown(grace, delete_object).await;
        }
    }

    fn on_cmd(&mut self, cmd: Option<Cmd>) -> Next {
        match cmd {
            Some(Cmd::Update(pod)) => {
                self.pod = *pod;
                if self.pod.metadata.deletion_timestamp.is_some() {
                    Next::Terminate {
                        grace: grace_of(&self.pod),
                        delete_object: true,
                    }
                } else {
                    Next::Continue
                }
            }
            Some(Cmd::Gone) => Next::Terminate {
                grace: grace_of(&self.pod),
                delete_object: false,
            },
            // The manager is gone: the kubelet is shutting down.
            None => Next::Detach,
        }
    }

    fn handle_pending(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Next {
        if self.pod.metadata.deletion_timestamp.is_some() {
            return Next::Terminate {
                grace: grace_of(&self.pod),
                delete_object: true,
            };
        }
        while let Ok(cmd) = rx.try_recv() {
            let next = self.on_cmd(Some(cmd));
            if next != Next::Continue {
                return next;
            }
        }
        Next::Continue
    }

    /// Takes over the record of an earlier kubelet run, adopting its live processes. Returns
    /// whether the pod had got running (network wired, every container started or failed).
    fn adopt(&mut self, rec: PodRecord) -> bool {
        let spec_len = self.pod.spec.as_ref().map(|s| s.containers.len());
        let complete = rec.pod_ip.is_some()
            && spec_len.is_none_or(|n| n == rec.containers.len())
            && rec
                .containers
                .iter()
                .all(|c| c.pid.is_some() || c.error.is_some() || c.last.is_some());
        // A pod known only from its record (deleted while the kubelet was down) has no spec:
        // the record says whether it had a namespace of its own.
        self.host_network = rec.netns.is_empty();
        self.rec = rec;
        self.procs = self.rec.containers.iter().map(|_| None).collect();
        self.probe_ok = vec![false; self.rec.containers.len()];
        // Containers that were waiting to start again do so now.
        self.restart_at = self
            .rec
            .containers
            .iter()
            .map(|c| restart::pending(c).then(|| (Instant::now(), Duration::ZERO)))
            .collect();
        for (i, c) in self.rec.containers.iter_mut().enumerate() {
            if c.exit.is_some() {
                continue;
            }
            match (c.pid, c.start_ticks) {
                (Some(pid), Some(ticks)) if process::start_ticks_of(pid) == Some(ticks) => {
                    self.procs[i] = Some(Proc::Adopted {
                        pid,
                        start_ticks: ticks,
                    });
                }
                (Some(_), _) => {
                    c.exit = Some(process::Exit {
                        code: -1,
                        signal: None,
                    });
                    c.finished_at = Some(now_rfc3339());
                }
                _ => {}
            }
        }
        tracing::info!(pod_ip = ?self.rec.pod_ip, complete, "took over the pod from an earlier kubelet run");
        complete
    }

    async fn wait_for_deletion(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Next {
        loop {
            let next = self.on_cmd(rx.recv().await);
            if next != Next::Continue {
                return next;
            }
        }
    }

    fn save(&self) {
        if let Err(e) = state::save(&self.ctx.node, &self.rec) {
            tracing::warn!(error = %e, "cannot save pod record");
        }
    }

    async fn start(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Next {
        self.save();
        self.report().await;
        let ip = if self.host_network {
            self.ctx.node_ip
        } else {
            match self.setup_network(rx).await {
                Ok(ip) => ip,
                Err(next) => return next,
            }
        };
        self.rec.pod_ip = Some(ip);
        self.save();
        if let Err(next) = self.wait_attached(rx).await {
            return next;
        }
        let service_env = match self.service_env(rx).await {
            Ok(env) => env,
            Err(next) => return next,
        };
        let mounts = self.write_pod_files(ip);
        self.start_containers(ip, &service_env, mounts);
        self.save();
        Next::Continue
    }

    /// Writes the pod's service-account directory (unless the pod opted out), resolv.conf and
    /// hosts files; what to mount in its containers, or why that cannot be.
    fn write_pod_files(&self, ip: Ipv4Addr) -> Result<Vec<process::Mount>, String> {
        let mut mounts = Vec::new();
        if serviceaccount::wanted(&self.pod) {
            let dir = serviceaccount::pod_dir(&self.ctx.node, &self.uid);
            serviceaccount::write(&dir, &self.pod, &self.ctx.credentials)
                .and_then(|()| serviceaccount::ensure_mount_point())
                .map_err(|e| format!("cannot prepare the service-account volume: {e}"))?;
            mounts.push(process::Mount {
                source: dir,
                target: PathBuf::from(serviceaccount::MOUNT_PATH),
            });
        }
        let dir = etc::pod_dir(&self.ctx.node, &self.uid);
        mounts.extend(
            etc::write(&dir, &self.pod, ip, &self.ctx.etc)
                .map_err(|e| format!("cannot write the pod's resolv.conf and hosts: {e}"))?,
        );
        Ok(mounts)
    }

    /// Whether the agent has attached the datapath to the pod's veth (its marker file exists);
    /// always for a `hostNetwork` pod.
    fn attached(&self) -> bool {
        self.host_network
            || switchyard::paths::attached_dir(&self.ctx.node)
                .join(&self.rec.container_id)
                .exists()
    }

    /// Waits until the agent has attached the datapath to the pod's veth (or the pod goes
    /// away), as a CNI plugin that returns only once the datapath is programmed would: the
    /// containers' first packets (to a ClusterIP, say) are then load-balanced already.
    async fn wait_attached(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Result<(), Next> {
        let started = Instant::now();
        let mut logged = false;
        while !self.attached() {
            if !logged && started.elapsed() >= Duration::from_secs(5) {
                tracing::info!("waiting for the agent to attach the datapath to the pod");
                logged = true;
            }
            if self.waiting.0 != "DatapathNotAttached" {
                self.waiting = (
                    "DatapathNotAttached".into(),
                    Some("waiting for the switchyard agent to attach the pod's datapath".into()),
                );
                self.report().await;
            }
            self.pause(rx, ATTACH_POLL).await?;
        }
        Ok(())
    }

    /// The pod's Service variables, once the kubelet has listed the Services (or the pod goes
    /// away meanwhile).
    async fn service_env(
        &mut self,
        rx: &mut UnboundedReceiver<Cmd>,
    ) -> Result<Vec<(String, String)>, Next> {
        let services = self.ctx.services.clone();
        let mut logged = false;
        loop {
            tokio::select! {
                ready = services.wait_until_ready() => {
                    if ready.is_err() {
                        tracing::warn!("the service watch has stopped; using the services known so far");
                    }
                    break;
                }
                cmd = rx.recv() => {
                    let next = self.on_cmd(cmd);
                    if next != Next::Continue {
                        return Err(next);
                    }
                }
                _ = tokio::time::sleep(Duration::from_secs(5)), if !logged => {
                    tracing::info!("waiting for the first list of services");
                    logged = true;
                }
            }
        }
        Ok(self.current_service_env())
    }

    /// The pod's Service variables from the Services known now.
    fn current_service_env(&self) -> Vec<(String, String)> {
        let all = self.ctx.services.state();
        let enable_links = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        super::envvars::service_env(
            all.iter().map(|s| s.as_ref()),
            &self.namespace,
            enable_links,
        )
    }

    /// Creates the namespace and runs CNI ADD until it succeeds (or the pod goes away).
    async fn setup_network(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Result<Ipv4Addr, Next> {
        let ns_path = loop {
            match netns::create(&self.rec.netns).await {
                Ok(p) => break p,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot create the pod network namespace");
                    self.waiting = ("CreateNetnsError".into(), Some(e.to_string()));
                    self.report().await;
                    self.pause(rx, CNI_RETRY * 5).await?;
                }
            }
        };
        let mut attempts = 0u32;
        loop {
            attempts += 1;
            let result = self.ctx.cni.add(self.pod_ref(), &ns_path).await;
            match result.as_ref().map(pod_ip) {
                Ok(Some(ip)) => {
                    tracing::info!(%ip, "pod network ready");
                    return Ok(ip);
                }
                Ok(None) => {
                    tracing::warn!("CNI ADD returned no IPv4 address");
                    self.waiting = (
                        "NetworkError".into(),
                        Some("CNI result without an IPv4 address".into()),
                    );
                }
                Err(Error::Cni { code: 11, msg, .. }) => {
                    if attempts == 1 || attempts.is_multiple_of(30) {
                        tracing::info!(%msg, "network not ready yet; retrying");
                    }
                    self.waiting = ("NetworkNotReady".into(), Some(msg.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "CNI ADD failed; retrying");
                    self.waiting = ("NetworkError".into(), Some(e.to_string()));
                }
            }
            self.report().await;
            let backoff = if attempts < 10 {
                CNI_RETRY
            } else {
                CNI_RETRY * 5
            };
            self.pause(rx, backoff).await?;
        }
    }

    /// Sleeps `d`, returning early with the command's outcome if the pod is deleted.
    async fn pause(&mut self, rx: &mut UnboundedReceiver<Cmd>, d: Duration) -> Result<(), Next> {
        let deadline = tokio::time::Instant::now() + d;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => return Ok(()),
                cmd = rx.recv() => {
                    let next = self.on_cmd(cmd);
                    if next != Next::Continue {
                        return Err(next);
                    }
                }
            }
        }
    }

    fn start_containers(
        &mut self,
        ip: Ipv4Addr,
        service_env: &[(String, String)],
        mounts: Result<Vec<process::Mount>, String>,
    ) {
        for i in 0..self.rec.containers.len() {
            self.start_container(i, ip, service_env, &mounts);
        }
    }

    /// Starts container `i` (its run number `restart_count`).
    fn start_container(
        &mut self,
        i: usize,
        ip: Ipv4Addr,
        service_env: &[(String, String)],
        mounts: &Result<Vec<process::Mount>, String>,
    ) {
        let spec = self.pod.spec.clone().unwrap_or_default();
        let Some(container) = spec.containers.get(i) else {
            return;
        };
        let ns_path = self.netns_path();
        let ctx = process::PodContext {
            pod: &self.pod,
            pod_ip: ip,
            host_ip: self.ctx.node_ip,
            node: &self.ctx.node,
            exe_dir: &self.ctx.exe_dir,
            service_env,
        };
        let rec = &mut self.rec.containers[i];
        let log = logs::container_log(
            &self.ctx.node,
            &self.namespace,
            &self.name,
            &self.uid,
            &container.name,
            rec.restart_count,
        );
        let spawned = process::launch(container, &ctx)
            .and_then(|l| Ok((l, mounts.clone()?)))
            .map_err(|message| Error::Start {
                container: container.name.clone(),
                message,
            })
            .and_then(|(l, m)| process::spawn(&l, &ns_path, &m, &log));
        match spawned.map(Proc::child) {
            Ok(Some(proc)) => {
                let pid = proc.pid();
                rec.pid = Some(pid);
                rec.start_ticks = process::start_ticks_of(pid);
                rec.started_at = Some(now_rfc3339());
                tracing::info!(container = %container.name, pid, restarts = rec.restart_count, log = %log.display(), "container started");
                self.procs[i] = Some(proc);
                let events = &self.ctx.events;
                let image = container.image.as_deref().unwrap_or_default();
                events.normal(
                    &self.pod,
                    "Pulled",
                    format!("Container image \"{image}\" already present on machine"),
                );
                events.normal(
                    &self.pod,
                    "Created",
                    format!("Created container: {}", container.name),
                );
                events.normal(
                    &self.pod,
                    "Started",
                    format!("Started container {}", container.name),
                );
            }
            Ok(None) => {
                rec.error = Some("the process exited before its pid could be read".into());
                rec.finished_at = Some(now_rfc3339());
            }
            Err(e) => {
                tracing::warn!(container = %container.name, error = %e, "container failed to start");
                rec.error = Some(e.to_string());
                self.ctx
                    .events
                    .warning(&self.pod, "Failed", format!("Error: {e}"));
                rec.finished_at = Some(now_rfc3339());
            }
        }
    }

    /// Starts again the containers whose back-off is over.
    fn restart_due(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = (0..self.restart_at.len())
            .filter(|i| self.restart_at[*i].is_some_and(|(at, _)| at <= now))
            .collect();
        let Some(ip) = self.rec.pod_ip.filter(|_| !due.is_empty()) else {
            return;
        };
        let service_env = self.current_service_env();
        let mounts = self.write_pod_files(ip);
        for i in due {
            self.restart_at[i] = None;
            self.start_container(i, ip, &service_env, &mounts);
        }
        self.save();
    }

    async fn monitor(&mut self, rx: &mut UnboundedReceiver<Cmd>) -> Next {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = rx.recv() => {
                    let next = self.on_cmd(cmd);
                    if next != Next::Continue {
                        return next;
                    }
                }
                _ = tick.tick() => {
                    self.observe().await;
                    self.report().await;
                }
            }
        }
    }

    /// Notes exits and runs readiness checks.
    async fn observe(&mut self) {
        let mut changed = false;
        for (i, slot) in self.procs.iter_mut().enumerate() {
            let Some(proc) = slot else { continue };
            if let Some(exit) = proc.poll_exit() {
                tracing::info!(container = %self.rec.containers[i].name, code = exit.code, "container exited");
                let rec = &mut self.rec.containers[i];
                let code = exit.code;
                rec.exit = Some(exit);
                rec.finished_at = Some(now_rfc3339());
                *slot = None;
                changed = true;
                let policy = self
                    .pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.restart_policy.as_deref());
                if restart::wanted(policy, code) {
                    let restarts = rec.restart_count;
                    let delay = restart::backoff(restarts, restart::schedule(rec));
                    self.restart_at[i] = Some((Instant::now() + delay, delay));
                    let name = &self.rec.containers[i].name;
                    if !delay.is_zero() {
                        self.ctx.events.warning(
                            &self.pod,
                            "BackOff",
                            format!(
                                "Back-off restarting failed container {name} in pod {}_{}({})",
                                self.name, self.namespace, self.uid
                            ),
                        );
                    }
                }
            }
        }
        if changed {
            self.save();
        }
        self.restart_due();
        let ip = self.rec.pod_ip.unwrap_or(Ipv4Addr::UNSPECIFIED);
        for i in 0..self.procs.len() {
            let running = self.procs[i].is_some();
            let Some(r) = self.readiness.get(i) else {
                self.probe_ok[i] = running;
                continue;
            };
            let old_enough = parse_time(&self.rec.containers[i].started_at)
                .and_then(|t| Timestamp::now().duration_since(t).try_into().ok())
                .is_some_and(|age: Duration| age >= r.initial_delay);
            self.probe_ok[i] = running && old_enough && probe::run(&r.check, ip, r.timeout).await;
        }
    }

    fn view(&self) -> PodView {
        let started_all = self.rec.pod_ip.is_some();
        let containers = self
            .rec
            .containers
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let restarting = restart::pending(c);
                let state = match (&c.exit, &c.error, parse_time(&c.started_at)) {
                    (Some(exit), _, _) => {
                        restart::exited(exit.code, exit.signal, &c.started_at, &c.finished_at)
                    }
                    (None, Some(err), _) => ContainerPhase::Exited {
                        code: 128,
                        signal: None,
                        started_at: None,
                        finished_at: parse_time(&c.finished_at).unwrap_or_else(Timestamp::now),
                        reason: Some("StartError".into()),
                        message: Some(err.clone()),
                    },
                    (None, None, Some(started_at)) if started_all => {
                        ContainerPhase::Running { started_at }
                    }
                    _ if restarting => ContainerPhase::Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message: Some(restart::waiting_message(
                            self.restart_at[i].map_or(Duration::ZERO, |(_, d)| d),
                            &c.name,
                            &self.name,
                            &self.namespace,
                            &self.uid,
                        )),
                    },
                    _ => ContainerPhase::Waiting {
                        reason: self.waiting.0.clone(),
                        message: self.waiting.1.clone(),
                    },
                };
                ContainerView {
                    name: c.name.clone(),
                    image: c.image.clone(),
                    id: format!("switchyard://{}-{}", self.rec.container_id, c.name),
                    state,
                    probe_ok: self.probe_ok.get(i).copied().unwrap_or(false),
                    // The coming run is counted once it starts.
                    restart_count: i32::try_from(c.restart_count)
                        .unwrap_or(i32::MAX)
                        .saturating_sub(i32::from(restarting)),
                    last: c.last.as_ref().map(|l| {
                        restart::exited(l.exit.code, l.exit.signal, &l.started_at, &l.finished_at)
                    }),
                    restarting,
                }
            })
            .collect();
        let attached = self.attached();
        PodView {
            pod_ip: self.rec.pod_ip,
            host_ip: self.ctx.node_ip,
            start_time: self
                .rec
                .start_time
                .parse()
                .unwrap_or_else(|_| Timestamp::now()),
            containers,
            attached,
        }
    }

    /// Sends the status if it changed since the last successful report.
    async fn report(&mut self) {
        let status = status::pod_status(&self.view(), &mut self.transitions, Timestamp::now());
        if self.last_reported.as_ref() == Some(&status) {
            return;
        }
        match patch_pod_status(&self.api(), &self.name, &status).await {
            Ok(()) => {
                let ready = status
                    .conditions
                    .as_ref()
                    .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
                    .map(|c| c.status.clone());
                tracing::info!(phase = ?status.phase, ready = ?ready, pod_ip = ?status.pod_ip, "reported pod status");
                self.last_reported = Some(status);
            }
            Err(e) => tracing::warn!(error = %e, "cannot report pod status"),
        }
    }

    /// CNI DEL and namespace removal, logging failures.
    async fn cleanup_network(&self) {
        if self.host_network {
            return;
        }
        let ns_path = netns::path(&self.rec.netns);
        for attempt in 1..=3 {
            match self.ctx.cni.del(self.pod_ref(), Some(&ns_path)).await {
                Ok(()) => break,
                Err(e) if attempt == 3 => tracing::warn!(error = %e, "CNI DEL failed; giving up"),
                Err(e) => {
                    tracing::warn!(error = %e, "CNI DEL failed; retrying");
                    tokio::time::sleep(CNI_RETRY).await;
                }
            }
        }
        if let Err(e) = netns::delete(&self.rec.netns).await {
            tracing::warn!(error = %e, "cannot remove the pod network namespace");
        }
    }

    /// SIGTERM every container's process group, SIGKILL what is left after `grace`.
    async fn stop_processes(&mut self, grace: Duration) {
        // Groups of the containers still running now; a group keeps its id reserved while it has
        // members, so signalling it later cannot hit an unrelated process.
        let groups: Vec<i32> = self.procs.iter().flatten().map(Proc::pid).collect();
        for (i, _) in self.procs.iter().enumerate().filter(|(_, p)| p.is_some()) {
            let name = &self.rec.containers[i].name;
            self.ctx
                .events
                .normal(&self.pod, "Killing", format!("Stopping container {name}"));
        }
        for proc in self.procs.iter().flatten() {
            proc.signal_group(Signal::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.procs.iter().any(Option::is_some) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            self.reap();
        }
        // SIGKILL whatever is left, including stragglers whose group leader already exited.
        for pgid in groups {
            if let Err(e) =
                nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pgid), Signal::SIGKILL)
            {
                if e != nix::errno::Errno::ESRCH {
                    tracing::warn!(pgid, error = %e, "cannot kill process group");
                }
            }
        }
        let deadline = Instant::now() + KILL_WAIT;
        while self.procs.iter().any(Option::is_some) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.reap();
        }
    }

    async fn teardown(&mut self, grace: Duration, delete_object: bool) {
        tracing::info!(?grace, delete_object, "stopping pod");
        self.stop_processes(grace).await;
        self.cleanup_network().await;
        if let Err(e) = serviceaccount::remove(&self.ctx.node, &self.uid) {
            tracing::warn!(error = %e, "cannot remove the pod's files");
        }
        if let Err(e) = logs::remove_pod(&self.ctx.node, &self.namespace, &self.name, &self.uid) {
            tracing::warn!(error = %e, "cannot remove the pod's logs");
        }
        if let Err(e) = state::remove(&self.ctx.node, &self.uid) {
            tracing::warn!(error = %e, "cannot remove pod record");
        }
        if delete_object {
            let dp = DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(Preconditions {
                    uid: Some(self.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match self.api().delete(&self.name, &dp).await {
                Ok(_) => tracing::info!("pod deleted"),
                Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
                Err(e) => tracing::warn!(error = %e, "cannot delete the pod object"),
            }
        }
    }

    fn reap(&mut self) {
        for slot in &mut self.procs {
            if slot.as_mut().is_some_and(|p| p.poll_exit().is_some()) {
                *slot = None;
            }
        }
    }
}

/// Writes a pod's status through the status subresource.
pub async fn patch_pod_status(api: &Api<Pod>, name: &str, status: &PodStatus) -> Result<(), Error> {
    let value = serde_json::to_value(status).map_err(|e| Error::Api {
        what: format!("encode status of pod {name}"),
        source: kube::Error::SerdeError(e),
    })?;
    super::api::write_status(api, name, &value)
        .await
        .map_err(Error::api(format!("update status of pod {name}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_ids_are_stable_and_file_safe() {
        let id = container_id("default", "echo-1", "6f1c3a2b-0000-4000-8000-000000000000");
        assert_eq!(id, "default-echo-1-6f1c3a2b");
        assert!(id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'));
    }

    #[test]
    fn grace_follows_the_deletion_then_the_spec() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {"containers": [], "terminationGracePeriodSeconds": 7}
        }))
        .unwrap();
        assert_eq!(grace_of(&pod), Duration::from_secs(7));
        pod.metadata.deletion_grace_period_seconds = Some(1);
        assert_eq!(grace_of(&pod), Duration::from_secs(1));
        pod.spec.as_mut().unwrap().termination_grace_period_seconds = None;
        pod.metadata.deletion_grace_period_seconds = None;
        assert_eq!(grace_of(&pod), DEFAULT_GRACE);
    }
}
