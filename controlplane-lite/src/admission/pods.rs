//! Pods, as kube-apiserver defaults and validates them (SetDefaults_Pod, ValidatePod,
//! ValidatePodUpdate), to the depth the lab needs.
//!
//! Guarantees: an admitted pod has a spec with kube-apiserver's pod and container defaults
//! (restart policy, DNS policy, scheduler, image pull policy from the tag, …), at least one
//! container, every container named and the names unique, every container port in 1-65535 with
//! a protocol. A new pod's status is the server's (`Pending` with its QoS class), whatever the
//! client sent; an update may change only what [`POD_UPDATE_FORBIDDEN`] lists.
use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::{invalid, remove_keys, set_defaults, str_field, verdict};
use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::validate;

/// kube-apiserver's message for a pod update that changes more than it may.
pub const POD_UPDATE_FORBIDDEN: &str = "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)";

/// Defaults and validation of a new pod or of a replacement of `old`.
pub(super) fn admit(res: &Resource, obj: &mut Value, old: Option<&Value>) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    let spec = &mut obj["spec"];
    if !spec.is_object() {
        return Err(invalid(res, obj, &[Cause::required("spec.containers")]));
    }
    set_defaults(
        spec,
        [
            ("restartPolicy", json!("Always")),
            ("terminationGracePeriodSeconds", json!(30)),
            ("dnsPolicy", json!("ClusterFirst")),
            ("schedulerName", json!("default-scheduler")),
            ("enableServiceLinks", json!(true)),
            ("securityContext", json!({})),
            ("priority", json!(0)),
            ("preemptionPolicy", json!("PreemptLowerPriority")),
        ],
    );
    containers(spec, &mut causes);
    match old {
        // As kube-apiserver's ValidatePodUpdate: only images, activeDeadlineSeconds,
        // tolerations, terminationGracePeriodSeconds and scheduling gates may change (the
        // scheduler binds through the store, not through an update).
        Some(old) if immutable_part(&old["spec"]) != immutable_part(&obj["spec"]) => {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: "spec".into(),
                message: POD_UPDATE_FORBIDDEN.into(),
            });
        }
        Some(_) => {}
        // As kube-apiserver: a new pod's status is the server's, whatever the client sent.
        None => obj["status"] = json!({"phase": "Pending", "qosClass": qos_class(&obj["spec"])}),
    }
    verdict(res, obj, &causes)
}

/// Defaults and checks `spec.containers`: present, not empty, unique names, valid ports.
fn containers(spec: &mut Value, causes: &mut Vec<Cause>) {
    let Some(cs) = spec
        .get_mut("containers")
        .and_then(Value::as_array_mut)
        .filter(|cs| !cs.is_empty())
    else {
        causes.push(Cause::required("spec.containers"));
        return;
    };
    let mut names = BTreeSet::new();
    for (i, c) in cs.iter_mut().enumerate() {
        container_defaults(c);
        let name = str_field(c, "name");
        if name.is_empty() {
            causes.push(Cause::required(format!("spec.containers[{i}].name")));
        } else if !names.insert(name.clone()) {
            causes.push(Cause::duplicate(
                format!("spec.containers[{i}].name"),
                format!("{name:?}"),
            ));
        }
        container_ports(c, i, causes);
    }
}

/// Defaults the protocol of container `i`'s ports and checks their numbers.
fn container_ports(c: &mut Value, i: usize, causes: &mut Vec<Cause>) {
    let ports = c.get_mut("ports").and_then(Value::as_array_mut);
    for (j, p) in ports.into_iter().flatten().enumerate() {
        if p.get("protocol").is_none() {
            p["protocol"] = json!("TCP");
        }
        let field = format!("spec.containers[{i}].ports[{j}].containerPort");
        match p.get("containerPort").and_then(Value::as_i64) {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(Cause::invalid(field, n, validate::PORT_RANGE_MSG)),
            None => causes.push(Cause::required(field)),
        }
    }
}

/// SetDefaults_Container: pull policy from the image tag, termination message, resources.
fn container_defaults(c: &mut Value) {
    if !c.is_object() {
        return;
    }
    let image = c["image"].as_str().unwrap_or("");
    let last = image.rsplit('/').next().unwrap_or("");
    let tag = last.split_once(':').map(|(_, t)| t);
    let policy = if !image.contains('@') && tag.is_none_or(|t| t == "latest") {
        "Always"
    } else {
        "IfNotPresent"
    };
    set_defaults(
        c,
        [
            ("imagePullPolicy", json!(policy)),
            ("terminationMessagePath", json!("/dev/termination-log")),
            ("terminationMessagePolicy", json!("File")),
            ("resources", json!({})),
        ],
    );
}

/// The pod's QoS class as Kubernetes computes it: Guaranteed when every container limits CPU
/// and memory with requests equal to the limits, BestEffort when none requests or limits
/// anything, Burstable otherwise.
pub fn qos_class(spec: &Value) -> &'static str {
    let containers: Vec<&Value> = ["containers", "initContainers"]
        .iter()
        .flat_map(|k| spec[*k].as_array().into_iter().flatten())
        .collect();
    let set = |c: &Value, kind: &str| {
        c["resources"][kind]
            .as_object()
            .is_some_and(|m| m.keys().any(|k| k == "cpu" || k == "memory"))
    };
    if containers
        .iter()
        .all(|c| !set(c, "requests") && !set(c, "limits"))
    {
        return "BestEffort";
    }
    let guaranteed = containers.iter().all(|c| {
        ["cpu", "memory"].iter().all(|r| {
            let limit = &c["resources"]["limits"][*r];
            let request = &c["resources"]["requests"][*r];
            !limit.is_null() && (request.is_null() || request == limit)
        })
    });
    if guaranteed {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A pod spec without the fields an update may change.
fn immutable_part(spec: &Value) -> Value {
    let mut s = spec.clone();
    for list in ["containers", "initContainers"] {
        for c in s[list].as_array_mut().into_iter().flatten() {
            remove_keys(c, &["image"]);
        }
    }
    remove_keys(
        &mut s,
        &[
            "activeDeadlineSeconds",
            "tolerations",
            "terminationGracePeriodSeconds",
            "schedulingGates",
        ],
    );
    s
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::super::testing::create;
    use super::{container_defaults, qos_class};
    use crate::store::Store;

    #[test]
    fn pods_need_containers_and_start_pending() {
        let s = Store::in_memory();
        assert_eq!(
            create(&s, "pods", json!({"metadata": {"name": "p"}, "spec": {}}))
                .unwrap_err()
                .code,
            422
        );
        let p = create(&s, "pods", json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "ports": [{"containerPort": 8080}]}]}})).unwrap();
        assert_eq!(p["status"]["phase"], "Pending");
        assert_eq!(p["status"]["qosClass"], "BestEffort");
        assert_eq!(p["spec"]["containers"][0]["imagePullPolicy"], "Always");
        let res = |r: Value| json!({"containers": [{"name": "c", "image": "x:1", "resources": r}]});
        let both = json!({"cpu": "1", "memory": "1Gi"});
        assert_eq!(qos_class(&res(json!({"limits": both}))), "Guaranteed");
        assert_eq!(
            qos_class(&res(json!({"requests": {"cpu": "1"}}))),
            "Burstable"
        );
        let mut c = json!({"image": "registry:5000/echo:1.2"});
        container_defaults(&mut c);
        assert_eq!(c["imagePullPolicy"], "IfNotPresent");
        assert_eq!(p["spec"]["containers"][0]["ports"][0]["protocol"], "TCP");
    }
}
