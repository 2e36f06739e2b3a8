//! Events the agent writes on the objects they concern (events.k8s.io/v1, through kube-runtime's
//! recorder, which aggregates repeats into a series), so `kubectl describe svc` shows what the
//! datapath did not do and why. Publishing runs in the background: the API server being slow or
//! away never holds up programming the datapath.
use kube::runtime::events::{Event, EventType, Recorder, Reporter};

use crate::model::objects::Service;

/// The agent's event writer.
#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
}

impl Events {
    /// Events reported as `switchyard` on node `node`.
    pub fn new(client: kube::Client, node: &str) -> Self {
        let reporter = Reporter {
            controller: "switchyard".into(),
            instance: Some(node.to_string()),
        };
        Events {
            recorder: Recorder::new(client, reporter),
        }
    }

    /// A Warning on Service `svc` that the datapath does not serve something it asks for.
    pub fn unsupported(&self, svc: &Service, note: String) {
        self.warn(svc, "Unsupported", note);
    }

    /// A Warning on Service `svc` that its `frontend` could not be written into the service maps
    /// because of `error` (which says what to do about a full map).
    pub fn sync_failed(&self, svc: &Service, frontend: &str, error: &str) {
        let note = format!(
            "frontend {frontend} is not programmed: {error}. Its previous entries, if any, stay \
             in place; switchyard retries with every change and at least every 30 s"
        );
        self.warn(svc, "SyncFailed", note);
    }

    fn warn(&self, svc: &Service, reason: &str, note: String) {
        let reference = svc.object_reference();
        let recorder = self.recorder.clone();
        let reason = reason.to_string();
        tokio::spawn(async move {
            let event = Event {
                type_: EventType::Warning,
                reason,
                note: Some(note),
                action: "Programming".into(),
                secondary: None,
            };
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(error = %e, "cannot write an Event");
            }
        });
    }
}
