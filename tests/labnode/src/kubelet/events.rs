//! Events the node runtime writes on its pods, as the kubelet does (`Pulled`, `Created`,
//! `Started`, `Failed`, `BackOff`, `Killing`), so `kubectl get events` and `kubectl describe
//! pod` tell what happened on the node. Through kube-runtime's recorder (events.k8s.io/v1,
//! repeats aggregated into a series), reported as `kubelet` on the node.
//!
//! Invariant: publishing runs in the background; an API server that is slow or away never holds
//! up starting or stopping containers.
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::Resource;

/// The node runtime's event writer.
#[derive(Clone)]
pub struct PodEvents {
    recorder: Recorder,
}

impl PodEvents {
    /// Events reported by `kubelet` on node `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "kubelet".into(),
            instance: Some(node.to_string()),
        };
        PodEvents {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// A Normal event on `pod`.
    pub fn normal(&self, pod: &Pod, reason: &str, note: String) {
        self.publish(pod, EventType::Normal, reason, note);
    }

    /// A Warning on `pod`.
    pub fn warning(&self, pod: &Pod, reason: &str, note: String) {
        self.publish(pod, EventType::Warning, reason, note);
    }

    fn publish(&self, pod: &Pod, type_: EventType, reason: &str, note: String) {
        let reference: ObjectReference = pod.object_ref(&());
        let recorder = self.recorder.clone();
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: reason.to_string(),
            secondary: None,
        };
        tokio::spawn(async move {
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "cannot write an Event");
            }
        });
    }
}
