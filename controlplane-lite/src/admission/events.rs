//! Events, as kube-apiserver's event strategy validates them (ValidateEventCreate /
//! legacyValidateEvent), for requests through either API.
//!
//! Guarantees: an admitted Event is stored in its normalised core/v1 form
//! ([`crate::events::convert::normalize_core`]); an Event without `eventTime` (the legacy form)
//! names the namespace it lives in as its object's (or none, in `default`); one with `eventTime`
//! has a reporting controller (a qualified name), a reporting instance, an action and a reason;
//! through events.k8s.io/v1 an Event also needs `eventTime`, a `type` of Normal or Warning, and
//! none of the deprecated fields. Otherwise it is refused with a 422 naming every field, with
//! the field names of the API the client used.
use serde_json::Value;

use super::verdict;
use crate::events::convert::normalize_core;
use crate::events::GROUP;
use crate::resources::Resource;
use crate::status::{ApiError, Cause};

/// kube-apiserver's limits on the reporting instance, action, reason and note.
const INSTANCE_MAX: usize = 128;
const ACTION_MAX: usize = 128;
const REASON_MAX: usize = 128;
const NOTE_MAX: usize = 1024;

fn text<'a>(e: &'a Value, f: &str) -> &'a str {
    e[f].as_str().unwrap_or("")
}

/// Validates the (core-form) Event `obj` a client sent through `res`, then normalises it.
pub(super) fn admit(res: &Resource, obj: &mut Value) -> Result<(), ApiError> {
    *obj = normalize_core(std::mem::take(obj));
    let new_api = res.group == GROUP;
    let name = |core: &'static str, events: &'static str| if new_api { events } else { core };
    let mut causes = Vec::new();
    let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
    let involved_ns = obj["involvedObject"]["namespace"].as_str().unwrap_or("");
    let involved = name("involvedObject.namespace", "regarding.namespace");
    let mismatch = |c: &mut Vec<Cause>| {
        c.push(Cause::invalid(
            involved,
            format!("{involved_ns:?}"),
            "does not match event.namespace",
        ))
    };
    if new_api {
        if obj["eventTime"].is_null() {
            causes.push(Cause::required("eventTime"));
        }
        let ty = text(obj, "type");
        if ty != "Normal" && ty != "Warning" {
            causes.push(Cause::invalid(
                "type",
                "\"\"",
                &format!("has invalid value: {ty}"),
            ));
        }
        for (core, events) in [
            ("firstTimestamp", "deprecatedFirstTimestamp"),
            ("lastTimestamp", "deprecatedLastTimestamp"),
        ] {
            if !obj[core].is_null() {
                causes.push(Cause::invalid(events, "\"\"", "needs to be unset"));
            }
        }
        if obj["count"].as_i64().unwrap_or(0) != 0 {
            causes.push(Cause::invalid(
                "deprecatedCount",
                "\"\"",
                "needs to be unset",
            ));
        }
        if obj["source"].as_object().is_some_and(|s| !s.is_empty()) {
            causes.push(Cause::invalid(
                "deprecatedSource",
                "\"\"",
                "needs to be unset",
            ));
        }
    }
    if obj["eventTime"].is_null() {
        let ok = if involved_ns.is_empty() {
            ns.is_empty() || ns == "default"
        } else {
            ns == involved_ns
        };
        if !ok {
            mismatch(&mut causes);
        }
    } else {
        if involved_ns.is_empty() && ns != "default" && ns != "kube-system" {
            mismatch(&mut causes);
        }
        let controller_field = name("reportingComponent", "reportingController");
        let controller = text(obj, "reportingComponent");
        if controller.is_empty() {
            causes.push(Cause::required(controller_field));
        }
        for (field, max) in [
            ("reportingInstance", INSTANCE_MAX),
            ("action", ACTION_MAX),
            ("reason", REASON_MAX),
        ] {
            let v = text(obj, field);
            if v.is_empty() {
                causes.push(Cause::required(field));
            } else if v.len() > max {
                causes.push(Cause::invalid(
                    field,
                    "\"\"",
                    &format!("can have at most {max} characters"),
                ));
            }
        }
        if text(obj, "message").len() > NOTE_MAX {
            causes.push(Cause::invalid(
                name("message", "note"),
                "\"\"",
                &format!("can have at most {NOTE_MAX} characters"),
            ));
        }
    }
    verdict(res, obj, &causes)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::resources::find;

    #[test]
    fn new_api_events_need_their_reporting_fields_and_no_deprecated_ones() {
        let res = find(GROUP, "v1", "events").unwrap();
        let mut e = json!({"metadata": {"name": "e", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "count": 2, "type": "Info"});
        let err = admit(res, &mut e).unwrap_err();
        let fields: Vec<String> = err.details.unwrap()["causes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["field"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(fields, ["eventTime", "type", "deprecatedCount"]);
        let core = find("", "v1", "events").unwrap();
        let mut legacy = json!({"metadata": {"name": "e", "namespace": "shop"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "other"}});
        let err = admit(core, &mut legacy).unwrap_err();
        assert!(
            err.message
                .contains("involvedObject.namespace: Invalid value: \"other\": does not match event.namespace"),
            "{}",
            err.message
        );
    }
}
