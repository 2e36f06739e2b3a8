//! What the datapath cannot serve of each Service, reported once per change: the reconcile loop
//! hands every recomputed Service to [`Notes::update`], which returns only what is new, so a
//! user sees each problem once in the log and once as an Event, not on every resync.
use std::collections::HashMap;

use crate::model::objects::Service;
use crate::model::{self, ObjKey};

/// The notes last reported for each Service.
#[derive(Debug, Default)]
pub struct Notes {
    reported: HashMap<ObjKey, Vec<String>>,
}

impl Notes {
    /// Records the current notes of `svc` (`None`: deleted) and returns the ones not reported
    /// before.
    pub fn update(&mut self, key: &ObjKey, svc: Option<&Service>) -> Vec<String> {
        let now = svc.map(model::service_notes).unwrap_or_default();
        if now.is_empty() {
            self.reported.remove(key);
            return Vec::new();
        }
        let before = self.reported.insert(key.clone(), now.clone());
        now.into_iter()
            .filter(|n| !before.as_ref().is_some_and(|b| b.contains(n)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn svc(protocol: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"name": "s", "namespace": "default"},
            "spec": {"clusterIP": "10.96.0.9", "ports": [{"port": 80, "protocol": protocol}]}
        }))
        .unwrap()
    }

    #[test]
    fn a_problem_is_reported_once_until_it_goes_away_and_comes_back() {
        let mut notes = Notes::default();
        let key: ObjKey = ("default".into(), "s".into());
        assert_eq!(notes.update(&key, Some(&svc("SCTP"))).len(), 1);
        assert!(
            notes.update(&key, Some(&svc("SCTP"))).is_empty(),
            "not again"
        );
        assert!(notes.update(&key, Some(&svc("TCP"))).is_empty());
        assert_eq!(notes.update(&key, Some(&svc("SCTP"))).len(), 1, "new again");
        assert!(notes.update(&key, None).is_empty());
    }
}
