//! `meta.k8s.io/v1` Table responses: what `kubectl get` prints, with kube-apiserver's columns
//! (priority 1 columns appear with `-o wide`).
use serde_json::{json, Value};

use crate::clock;
use crate::resources::Resource;

fn col(name: &str, ty: &str, priority: u8) -> Value {
    let format = if name == "Name" { "name" } else { "" };
    json!({"name": name, "type": ty, "format": format, "description": "", "priority": priority})
}

fn columns(kind: &str) -> Vec<Value> {
    let s = |n: &str| col(n, "string", 0);
    let w = |n: &str| col(n, "string", 1);
    match kind {
        "Pod" => vec![
            s("Name"),
            s("Ready"),
            s("Status"),
            col("Restarts", "string", 0),
            s("Age"),
            w("IP"),
            w("Node"),
            w("Nominated Node"),
            w("Readiness Gates"),
        ],
        "Service" => vec![
            s("Name"),
            s("Type"),
            s("Cluster-IP"),
            s("External-IP"),
            s("Port(s)"),
            s("Age"),
            w("Selector"),
        ],
        "Node" => vec![
            s("Name"),
            s("Status"),
            s("Roles"),
            s("Age"),
            s("Version"),
            w("Internal-IP"),
            w("External-IP"),
            w("OS-Image"),
            w("Kernel-Version"),
            w("Container-Runtime"),
        ],
        "Namespace" => vec![s("Name"), s("Status"), s("Age")],
        "Event" => vec![
            s("Last Seen"),
            s("Type"),
            s("Reason"),
            s("Object"),
            w("Subobject"),
            w("Source"),
            s("Message"),
            w("First Seen"),
            col("Count", "string", 1),
            col("Name", "string", 1),
        ],
        "Endpoints" => vec![s("Name"), s("Endpoints"), s("Age")],
        "EndpointSlice" => vec![
            s("Name"),
            s("AddressType"),
            s("Ports"),
            s("Endpoints"),
            s("Age"),
        ],
        _ => vec![s("Name"), s("Age")],
    }
}

fn str_at<'a>(v: &'a Value, ptr: &str) -> &'a str {
    v.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn or_none(s: String) -> String {
    if s.is_empty() {
        "<none>".into()
    } else {
        s
    }
}

fn joined(items: Vec<String>, max: usize) -> String {
    let n = items.len();
    let mut shown: Vec<String> = items.into_iter().take(max).collect();
    if n > max {
        shown.push(format!("+ {} more...", n - max));
    }
    or_none(shown.join(","))
}

/// An Event's row, as kube-apiserver's printEvent: times from the legacy fields or the
/// `eventTime`/`series` of the newer API, the count 1 for a singleton.
fn event_cells(o: &Value) -> Vec<Value> {
    let at = |p: &str| o.pointer(p).and_then(Value::as_str);
    let first = match at("/firstTimestamp") {
        Some(t) => clock::age(Some(t)),
        None => clock::age(at("/eventTime")),
    };
    let mut last = match at("/lastTimestamp") {
        Some(t) => clock::age(Some(t)),
        None => first.clone(),
    };
    let mut count = o["count"].as_i64().unwrap_or(0);
    if o["series"].is_object() {
        last = clock::age(at("/series/lastObservedTime"));
        count = o["series"]["count"].as_i64().unwrap_or(0);
    } else if count == 0 {
        count = 1;
    }
    let kind = str_at(o, "/involvedObject/kind").to_lowercase();
    let target = match str_at(o, "/involvedObject/name") {
        "" => kind,
        name => format!("{kind}/{name}"),
    };
    let or = |a: &str, b: &str| {
        if a.is_empty() {
            b.to_string()
        } else {
            a.to_string()
        }
    };
    let component = or(
        str_at(o, "/source/component"),
        str_at(o, "/reportingComponent"),
    );
    let instance = or(str_at(o, "/source/host"), str_at(o, "/reportingInstance"));
    let source = if instance.is_empty() {
        component
    } else {
        format!("{component}, {instance}")
    };
    vec![
        json!(last),
        json!(str_at(o, "/type")),
        json!(str_at(o, "/reason")),
        json!(target),
        json!(str_at(o, "/involvedObject/fieldPath")),
        json!(source),
        json!(str_at(o, "/message").trim()),
        json!(first),
        json!(count),
        json!(str_at(o, "/metadata/name")),
    ]
}

fn cells(kind: &str, o: &Value) -> Vec<Value> {
    let name = str_at(o, "/metadata/name").to_string();
    let age = clock::age(
        o.pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str),
    );
    match kind {
        "Pod" => {
            let containers = o
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = o
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c["ready"] == json!(true))
                .count();
            let restarts: i64 = statuses
                .iter()
                .filter_map(|c| c["restartCount"].as_i64())
                .sum();
            let status = pod_status(o, &statuses);
            vec![
                json!(name),
                json!(format!("{ready}/{containers}")),
                json!(status),
                json!(restarts.to_string()),
                json!(age),
                json!(or_none(str_at(o, "/status/podIP").to_string())),
                json!(or_none(str_at(o, "/spec/nodeName").to_string())),
                json!("<none>"),
                json!("<none>"),
            ]
        }
        "Service" => {
            let ty = str_at(o, "/spec/type");
            let listed = |ptr: &str| -> Vec<String> {
                o.pointer(ptr)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            };
            // As kubectl's printer: externalIPs, a LoadBalancer's ingress or <pending>, an
            // ExternalName's name.
            let mut external = listed("/spec/externalIPs");
            if ty == "LoadBalancer" {
                let ingress: Vec<String> = o
                    .pointer("/status/loadBalancer/ingress")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["ip"].as_str().or(i["hostname"].as_str()))
                    .map(str::to_string)
                    .collect();
                external.extend(ingress);
                if external.is_empty() {
                    external.push("<pending>".into());
                }
            }
            if ty == "ExternalName" {
                external = vec![str_at(o, "/spec/externalName").to_string()];
            }
            let ports: Vec<String> = o
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|p| {
                    let np = p["nodePort"]
                        .as_u64()
                        .map(|n| format!(":{n}"))
                        .unwrap_or_default();
                    format!(
                        "{}{np}/{}",
                        p["port"],
                        p["protocol"].as_str().unwrap_or("TCP")
                    )
                })
                .collect();
            let selector: Vec<String> = o
                .pointer("/spec/selector")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect();
            vec![
                json!(name),
                json!(str_at(o, "/spec/type")),
                json!(or_none(str_at(o, "/spec/clusterIP").to_string())),
                json!(or_none(external.join(","))),
                json!(or_none(ports.join(","))),
                json!(age),
                json!(or_none(selector.join(","))),
            ]
        }
        "Node" => {
            let ready = o
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .find(|c| c["type"] == "Ready")
                .map(|c| c["status"].as_str().unwrap_or(""));
            let mut status = match ready {
                Some("True") => "Ready",
                _ => "NotReady",
            }
            .to_string();
            if o.pointer("/spec/unschedulable") == Some(&json!(true)) {
                status.push_str(",SchedulingDisabled");
            }
            let addr = |t: &str| {
                o.pointer("/status/addresses")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .find(|a| a["type"] == t)
                    .and_then(|a| a["address"].as_str())
                    .unwrap_or("<none>")
                    .to_string()
            };
            let roles: Vec<String> = o
                .pointer("/metadata/labels")
                .and_then(Value::as_object)
                .into_iter()
                .flatten()
                .filter_map(|(k, _)| k.strip_prefix("node-role.kubernetes.io/"))
                .map(str::to_string)
                .collect();
            vec![
                json!(name),
                json!(status),
                json!(or_none(roles.join(","))),
                json!(age),
                json!(str_at(o, "/status/nodeInfo/kubeletVersion")),
                json!(addr("InternalIP")),
                json!(addr("ExternalIP")),
                json!(str_at(o, "/status/nodeInfo/osImage")),
                json!(str_at(o, "/status/nodeInfo/kernelVersion")),
                json!(str_at(o, "/status/nodeInfo/containerRuntimeVersion")),
            ]
        }
        "Namespace" => vec![json!(name), json!(str_at(o, "/status/phase")), json!(age)],
        "Endpoints" => {
            let mut eps = Vec::new();
            for s in o["subsets"].as_array().into_iter().flatten() {
                for a in s["addresses"].as_array().into_iter().flatten() {
                    for p in s["ports"].as_array().into_iter().flatten() {
                        eps.push(format!("{}:{}", a["ip"].as_str().unwrap_or(""), p["port"]));
                    }
                }
            }
            vec![json!(name), json!(joined(eps, 3)), json!(age)]
        }
        "EndpointSlice" => {
            let ports: Vec<String> = o["ports"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|p| p["port"].to_string())
                .collect();
            let eps: Vec<String> = o["endpoints"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|e| e["addresses"].as_array().cloned().unwrap_or_default())
                .filter_map(|a| a.as_str().map(str::to_string))
                .collect();
            vec![
                json!(name),
                json!(str_at(o, "/addressType")),
                json!(or_none(ports.join(","))),
                json!(joined(eps, 3)),
                json!(age),
            ]
        }
        "Event" => event_cells(o),
        _ => vec![json!(name), json!(age)],
    }
}

/// A pod's STATUS column, as kubectl's printer computes it: the phase (or the pod's reason),
/// then a container's waiting or terminated reason, `Running`/`NotReady` for a completed
/// container beside running ones, `Terminating` once deleted.
fn pod_status(o: &Value, statuses: &[Value]) -> String {
    let mut reason = str_at(o, "/status/reason").to_string();
    if reason.is_empty() {
        reason = str_at(o, "/status/phase").to_string();
    }
    let mut running = false;
    for c in statuses.iter().rev() {
        let state = &c["state"];
        if let Some(r) = state["waiting"]["reason"]
            .as_str()
            .filter(|r| !r.is_empty())
        {
            reason = r.to_string();
        } else if state["terminated"].is_object() {
            let t = &state["terminated"];
            reason = match t["reason"].as_str().filter(|r| !r.is_empty()) {
                Some(r) => r.to_string(),
                None => match t["signal"].as_i64().filter(|s| *s != 0) {
                    Some(s) => format!("Signal:{s}"),
                    None => format!("ExitCode:{}", t["exitCode"].as_i64().unwrap_or(0)),
                },
            };
        } else if state["running"].is_object() && c["ready"] == json!(true) {
            running = true;
        }
    }
    if reason == "Completed" && running {
        let ready = o
            .pointer("/status/conditions")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        reason = if ready { "Running" } else { "NotReady" }.to_string();
    }
    if o.pointer("/metadata/deletionTimestamp").is_some() {
        reason = if str_at(o, "/status/reason") == "NodeLost" {
            "Unknown".to_string()
        } else {
            "Terminating".to_string()
        };
    }
    or_none(reason)
}

/// The row object: metadata only unless `includeObject=Object`.
fn row_object(o: &Value, include: &str) -> Value {
    match include {
        "Object" => o.clone(),
        "None" => Value::Null,
        _ => {
            json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"]})
        }
    }
}

/// A Table of `items`.
pub fn table(res: &Resource, items: &[&Value], rv: u64, include: &str) -> Value {
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": rv.to_string()},
        "columnDefinitions": columns(res.kind),
        "rows": items.iter().map(|o| json!({"cells": cells(res.kind, o), "object": row_object(o, include)})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::find;

    #[test]
    fn pod_rows_show_readiness_status_ip_and_node() {
        let pod = json!({"metadata": {"name": "echo-1", "creationTimestamp": clock::now()}, "spec": {"containers": [{"name": "c"}], "nodeName": "n1"},
            "status": {"phase": "Running", "podIP": "10.244.1.5", "containerStatuses": [{"ready": true, "restartCount": 0}]}});
        let t = table(find("", "v1", "pods").unwrap(), &[&pod], 7, "");
        let cells = &t["rows"][0]["cells"];
        assert_eq!(cells[0], "echo-1");
        assert_eq!(cells[1], "1/1");
        assert_eq!(cells[2], "Running");
        assert_eq!(cells[5], "10.244.1.5");
        assert_eq!(cells[6], "n1");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn pod_status_shows_container_reasons_as_kubectl_does() {
        let pod = |statuses: Value, extra: Value| {
            let mut p = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]},
                "status": {"phase": "Pending", "containerStatuses": statuses}});
            crate::patch::merge(&mut p, &extra);
            p
        };
        let status = |p: &Value| {
            table(find("", "v1", "pods").unwrap(), &[p], 1, "")["rows"][0]["cells"][2].clone()
        };
        let waiting = pod(
            json!([{"state": {"waiting": {"reason": "ContainerCreating"}}}]),
            json!({}),
        );
        assert_eq!(status(&waiting), "ContainerCreating");
        let crashed = pod(
            json!([{"state": {"terminated": {"exitCode": 2}}}]),
            json!({"status": {"phase": "Running"}}),
        );
        assert_eq!(status(&crashed), "ExitCode:2");
        let done = pod(
            json!([{"state": {"terminated": {"reason": "Completed", "exitCode": 0}}}]),
            json!({"status": {"phase": "Succeeded"}}),
        );
        assert_eq!(status(&done), "Completed");
        let gone = pod(
            json!([]),
            json!({"metadata": {"deletionTimestamp": "2026-01-01T00:00:00Z"}}),
        );
        assert_eq!(status(&gone), "Terminating");
    }

    #[test]
    fn service_rows_show_ports_with_node_ports() {
        let svc = json!({"metadata": {"name": "web"}, "spec": {"type": "NodePort", "clusterIP": "10.96.0.10", "ports": [{"port": 80, "nodePort": 31002, "protocol": "TCP"}], "selector": {"app": "web"}}});
        let t = table(find("", "v1", "services").unwrap(), &[&svc], 1, "");
        assert_eq!(t["rows"][0]["cells"][4], "80:31002/TCP");
        assert_eq!(t["rows"][0]["cells"][6], "app=web");
    }

    #[test]
    fn event_rows_show_last_seen_type_reason_object_and_message() {
        let ev = json!({"metadata": {"name": "p.1"}, "involvedObject": {"kind": "Pod", "name": "p"},
            "type": "Normal", "reason": "Scheduled", "message": "Successfully assigned default/p to n1",
            "eventTime": clock::now_micro(), "firstTimestamp": null, "lastTimestamp": null,
            "reportingComponent": "default-scheduler", "reportingInstance": "", "source": {}});
        let t = table(find("", "v1", "events").unwrap(), &[&ev], 1, "");
        let cells = &t["rows"][0]["cells"];
        assert!(cells[0].as_str().unwrap().ends_with('s'), "{cells}");
        assert_eq!(cells[1], "Normal");
        assert_eq!(cells[3], "pod/p");
        assert_eq!(cells[5], "default-scheduler");
        assert_eq!(cells[6], "Successfully assigned default/p to n1");
        assert_eq!(cells[8], 1);
    }
}
