//! Pod status as this node reports it: phase, addresses, conditions and container states,
//! computed from what the kubelet observed. Pure, so every rule is unit-tested.
use k8s_openapi::api::core::v1::{
    ContainerState, ContainerStateRunning, ContainerStateTerminated, ContainerStateWaiting,
    ContainerStatus, HostIP, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// What the kubelet knows about one container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerView {
    /// Container name.
    pub name: String,
    /// Image from the spec.
    pub image: String,
    /// Runtime id reported as `containerID`.
    pub id: String,
    /// Where it is in its life.
    pub state: ContainerPhase,
    /// Its readiness probe (if any) passes.
    pub probe_ok: bool,
    /// How often it was started again.
    pub restart_count: i32,
    /// Its previous run, when it was started again ([`ContainerPhase::Exited`]).
    pub last: Option<ContainerPhase>,
    /// It has exited and will be started again (the pod keeps running).
    pub restarting: bool,
}

/// A container's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ContainerPhase {
    /// Not started yet (the pod's network is being set up).
    Waiting {
        /// CamelCase reason, e.g. `ContainerCreating`.
        reason: String,
        /// Detail.
        message: Option<String>,
    },
    /// Running since.
    Running {
        /// Start time.
        started_at: Timestamp,
    },
    /// Ended.
    Exited {
        /// Exit code (`128 + signal` when killed; -1 unknown).
        code: i32,
        /// Killing signal.
        signal: Option<i32>,
        /// Start time, if it ever ran.
        started_at: Option<Timestamp>,
        /// End time.
        finished_at: Timestamp,
        /// Why, when it never ran (e.g. `StartError`).
        reason: Option<String>,
        /// Detail.
        message: Option<String>,
    },
}

/// What the kubelet knows about one pod.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodView {
    /// Pod address, once wired.
    pub pod_ip: Option<Ipv4Addr>,
    /// Node address.
    pub host_ip: Ipv4Addr,
    /// When the kubelet accepted the pod.
    pub start_time: Timestamp,
    /// Containers in spec order.
    pub containers: Vec<ContainerView>,
    /// The agent attached the datapath to the pod's veth (its marker file exists).
    pub attached: bool,
}

/// The pod phase: `Pending` until every container started, `Running` while any runs or is
/// to be started again (`restartPolicy`), `Succeeded` when all exited 0 for good, `Failed` when
/// all ended for good and one did not exit 0.
pub fn phase(containers: &[ContainerView]) -> &'static str {
    let waiting = containers
        .iter()
        .any(|c| !c.restarting && matches!(c.state, ContainerPhase::Waiting { .. }));
    let running = containers
        .iter()
        .any(|c| c.restarting || matches!(c.state, ContainerPhase::Running { .. }));
    if containers.is_empty() || waiting {
        "Pending"
    } else if running {
        "Running"
    } else if containers
        .iter()
        .all(|c| matches!(c.state, ContainerPhase::Exited { code: 0, .. }))
    {
        "Succeeded"
    } else {
        "Failed"
    }
}

/// The last transition time of each condition, kept across status computations.
#[derive(Clone, Debug, Default)]
pub struct Transitions(BTreeMap<&'static str, (bool, Timestamp)>);

impl Transitions {
    /// Records that condition `kind` is `status` at `now`; returns when it last changed.
    pub fn observe(&mut self, kind: &'static str, status: bool, now: Timestamp) -> Timestamp {
        match self.0.get(kind) {
            Some((s, since)) if *s == status => *since,
            _ => {
                self.0.insert(kind, (status, now));
                now
            }
        }
    }
}

fn condition(
    kind: &'static str,
    status: bool,
    since: Timestamp,
    reason: Option<&str>,
) -> PodCondition {
    PodCondition {
        type_: kind.into(),
        status: if status { "True" } else { "False" }.into(),
        last_transition_time: Some(Time(since)),
        reason: reason.map(str::to_string),
        ..Default::default()
    }
}

/// The API form of a container state, and whether it counts as started.
fn state_of(phase: &ContainerPhase, id: &str) -> (ContainerState, bool) {
    match phase {
        ContainerPhase::Waiting { reason, message } => (
            ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.clone()),
                    message: message.clone(),
                }),
                ..Default::default()
            },
            false,
        ),
        ContainerPhase::Running { started_at } => (
            ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: Some(Time(*started_at)),
                }),
                ..Default::default()
            },
            true,
        ),
        ContainerPhase::Exited {
            code,
            signal,
            started_at,
            finished_at,
            reason,
            message,
        } => (
            ContainerState {
                terminated: Some(ContainerStateTerminated {
                    exit_code: *code,
                    signal: *signal,
                    started_at: started_at.map(Time),
                    finished_at: Some(Time(*finished_at)),
                    reason: Some(reason.clone().unwrap_or_else(|| {
                        if *code == 0 { "Completed" } else { "Error" }.to_string()
                    })),
                    message: message.clone(),
                    container_id: Some(id.to_string()),
                }),
                ..Default::default()
            },
            false,
        ),
    }
}

fn container_status(c: &ContainerView) -> ContainerStatus {
    let (state, started) = state_of(&c.state, &c.id);
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone(),
        image_id: String::new(),
        container_id: Some(c.id.clone()),
        ready: started && c.probe_ok,
        started: Some(started),
        restart_count: c.restart_count,
        last_state: c.last.as_ref().map(|l| state_of(l, &c.id).0),
        state: Some(state),
        ..Default::default()
    }
}

/// The status to report. `Ready` needs every container running with its readiness probe
/// passing *and* the datapath attached to the pod's veth.
pub fn pod_status(view: &PodView, tr: &mut Transitions, now: Timestamp) -> PodStatus {
    let statuses: Vec<ContainerStatus> = view.containers.iter().map(container_status).collect();
    let containers_ready = !statuses.is_empty() && statuses.iter().all(|s| s.ready);
    let ready = containers_ready && view.attached && view.pod_ip.is_some();
    let phase = phase(&view.containers);
    let not_ready_reason = |ok: bool| (!ok).then_some("ContainersNotReady");
    let ready_reason = if ready {
        None
    } else if containers_ready {
        Some("DatapathNotAttached")
    } else {
        Some("ContainersNotReady")
    };
    let conditions = vec![
        condition(
            "PodScheduled",
            true,
            tr.observe("PodScheduled", true, now),
            None,
        ),
        condition(
            "Initialized",
            true,
            tr.observe("Initialized", true, now),
            None,
        ),
        condition(
            "ContainersReady",
            containers_ready,
            tr.observe("ContainersReady", containers_ready, now),
            not_ready_reason(containers_ready),
        ),
        condition(
            "Ready",
            ready,
            tr.observe("Ready", ready, now),
            ready_reason,
        ),
    ];
    PodStatus {
        phase: Some(phase.into()),
        host_ip: Some(view.host_ip.to_string()),
        host_ips: Some(vec![HostIP {
            ip: view.host_ip.to_string(),
        }]),
        pod_ip: view.pod_ip.map(|ip| ip.to_string()),
        pod_ips: view.pod_ip.map(|ip| vec![PodIP { ip: ip.to_string() }]),
        start_time: Some(Time(view.start_time)),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + s).unwrap()
    }

    fn running(name: &str) -> ContainerView {
        ContainerView {
            name: name.into(),
            image: "switchyard".into(),
            id: format!("switchyard://{name}"),
            state: ContainerPhase::Running { started_at: t(1) },
            probe_ok: true,
            restart_count: 0,
            last: None,
            restarting: false,
        }
    }

    fn exited(name: &str, code: i32) -> ContainerView {
        ContainerView {
            state: ContainerPhase::Exited {
                code,
                signal: None,
                started_at: Some(t(1)),
                finished_at: t(5),
                reason: None,
                message: None,
            },
            ..running(name)
        }
    }

    fn view(containers: Vec<ContainerView>, attached: bool) -> PodView {
        PodView {
            pod_ip: Some(Ipv4Addr::new(10, 244, 1, 2)),
            host_ip: Ipv4Addr::new(198, 18, 0, 11),
            start_time: t(0),
            containers,
            attached,
        }
    }

    fn cond(s: &PodStatus, kind: &str) -> String {
        s.conditions
            .as_ref()
            .unwrap()
            .iter()
            .find(|c| c.type_ == kind)
            .unwrap()
            .status
            .clone()
    }

    #[test]
    fn ready_waits_for_the_datapath_marker() {
        let mut tr = Transitions::default();
        let s = pod_status(&view(vec![running("echo")], false), &mut tr, t(2));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "ContainersReady"), "True");
        assert_eq!(cond(&s, "Ready"), "False");
        let s = pod_status(&view(vec![running("echo")], true), &mut tr, t(3));
        assert_eq!(cond(&s, "Ready"), "True");
        assert_eq!(s.pod_ip.as_deref(), Some("10.244.1.2"));
        assert_eq!(s.pod_ips.as_ref().unwrap()[0].ip, "10.244.1.2");
        assert_eq!(s.host_ip.as_deref(), Some("198.18.0.11"));
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert!(cs.ready && cs.started == Some(true) && cs.restart_count == 0);
        assert_eq!(
            cs.state
                .as_ref()
                .unwrap()
                .running
                .as_ref()
                .unwrap()
                .started_at,
            Some(Time(t(1)))
        );
    }

    #[test]
    fn transition_times_move_only_on_change() {
        let mut tr = Transitions::default();
        let v = view(vec![running("echo")], true);
        let time_of = |s: &PodStatus| {
            s.conditions
                .as_ref()
                .unwrap()
                .iter()
                .find(|c| c.type_ == "Ready")
                .unwrap()
                .last_transition_time
                .clone()
        };
        let a = pod_status(&v, &mut tr, t(2));
        let b = pod_status(&v, &mut tr, t(9));
        assert_eq!(time_of(&a), time_of(&b));
        assert_eq!(
            a, b,
            "an unchanged pod yields an identical status (no needless patches)"
        );
        let c = pod_status(&view(vec![exited("echo", 1)], true), &mut tr, t(10));
        assert_eq!(time_of(&c), Some(Time(t(10))));
    }

    #[test]
    fn exits_end_the_pod_and_readiness() {
        let mut tr = Transitions::default();
        let s = pod_status(&view(vec![exited("a", 0)], true), &mut tr, t(6));
        assert_eq!(s.phase.as_deref(), Some("Succeeded"));
        assert_eq!(cond(&s, "Ready"), "False");
        let term = s.container_statuses.as_ref().unwrap()[0]
            .state
            .clone()
            .unwrap()
            .terminated
            .unwrap();
        assert_eq!(
            (term.exit_code, term.reason.as_deref()),
            (0, Some("Completed"))
        );
        let s = pod_status(
            &view(vec![exited("a", 0), exited("b", 2)], true),
            &mut tr,
            t(6),
        );
        assert_eq!(s.phase.as_deref(), Some("Failed"));
        let s = pod_status(
            &view(vec![running("a"), exited("b", 2)], true),
            &mut tr,
            t(6),
        );
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
    }

    #[test]
    fn a_crash_looping_container_keeps_the_pod_running_and_reports_its_last_run() {
        let mut tr = Transitions::default();
        let looping = ContainerView {
            state: ContainerPhase::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some("back-off 10s restarting failed container=a pod=p_ns(u)".into()),
            },
            restart_count: 1,
            last: Some(exited("a", 1).state),
            restarting: true,
            ..running("a")
        };
        let s = pod_status(&view(vec![looping], true), &mut tr, t(6));
        assert_eq!(s.phase.as_deref(), Some("Running"));
        assert_eq!(cond(&s, "Ready"), "False");
        let cs = &s.container_statuses.as_ref().unwrap()[0];
        assert_eq!(cs.restart_count, 1);
        let waiting = cs.state.as_ref().unwrap().waiting.as_ref().unwrap();
        assert_eq!(waiting.reason.as_deref(), Some("CrashLoopBackOff"));
        let last = cs.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
        assert_eq!((last.exit_code, last.reason.as_deref()), (1, Some("Error")));
    }

    #[test]
    fn pending_until_started() {
        let waiting = ContainerView {
            state: ContainerPhase::Waiting {
                reason: "ContainerCreating".into(),
                message: None,
            },
            ..running("a")
        };
        let mut v = view(vec![waiting], false);
        v.pod_ip = None;
        let s = pod_status(&v, &mut Transitions::default(), t(1));
        assert_eq!(s.phase.as_deref(), Some("Pending"));
        assert_eq!(s.pod_ip, None);
        assert_eq!(cond(&s, "Ready"), "False");
    }
}
