//! A Service's `spec.ports`, and the NodePort allocator.
//!
//! Guarantees: every port gets a protocol (TCP unless set) and a `targetPort` (the port unless
//! set); names are DNS-1123 labels, unique, and required when there is more than one port;
//! `port` and a numeric `targetPort` are in 1-65535, a named `targetPort` is at most 15 lowercase
//! letters, digits and hyphens. Where the type has node ports every port gets a `nodePort` in
//! the configured range held by no other Service: the one requested, or a random free one (none
//! for a LoadBalancer with `allocateLoadBalancerNodePorts: false`);
//! elsewhere a non-zero `nodePort` is refused. `ports` may only be absent on headless and
//! ExternalName Services.
use std::collections::BTreeSet;

use serde_json::{json, Value};

use super::super::{str_field, Ranges};
use crate::status::{ApiError, Cause};
use crate::validate;

/// Defaults and checks every port of `spec` (of type `ty`); `(node_ports, allocate)`: whether
/// the type has node ports, and whether ports without one get one; `taken` says whether another
/// Service holds a node port.
pub(super) fn admit(
    spec: &mut Value,
    ty: &str,
    (node_ports, allocate): (bool, bool),
    taken: &dyn Fn(u16) -> bool,
    ranges: &Ranges,
    causes: &mut Vec<Cause>,
) -> Result<(), ApiError> {
    let headless = spec.get("clusterIP").and_then(Value::as_str) == Some("None");
    let Some(ports) = spec.get_mut("ports").and_then(Value::as_array_mut) else {
        if !headless && ty != "ExternalName" {
            causes.push(Cause::required("spec.ports"));
        }
        return Ok(());
    };
    let many = ports.len() > 1;
    let mut names = BTreeSet::new();
    let mut allocator = NodePorts {
        range: ranges.node_ports,
        taken,
        claimed: BTreeSet::new(),
    };
    for (i, p) in ports.iter_mut().enumerate() {
        let field = |f: &str| format!("spec.ports[{i}].{f}");
        if p.get("protocol").is_none() {
            p["protocol"] = json!("TCP");
        }
        name(p, many, &mut names, field("name"), causes);
        let port = p.get("port").and_then(Value::as_i64);
        match port {
            Some(n) if (1..=65535).contains(&n) => {}
            Some(n) => causes.push(Cause::invalid(field("port"), n, validate::PORT_RANGE_MSG)),
            None => causes.push(Cause::required(field("port"))),
        }
        target_port(p, port, field("targetPort"), causes);
        if node_ports && (allocate || p.get("nodePort").is_some_and(|n| !n.is_null())) {
            allocator.assign(p, field("nodePort"), causes)?;
        } else if node_ports {
            // No node port wanted for this one.
        } else if p.get("nodePort").is_some_and(|n| n.as_i64() != Some(0)) {
            causes.push(Cause {
                reason: "FieldValueForbidden",
                field: field("nodePort"),
                message: format!("Forbidden: may not be used when `type` is '{ty}'"),
            });
        }
    }
    Ok(())
}

/// `spec.healthCheckNodePort` of a Service of type `ty`: a `LoadBalancer` with
/// `externalTrafficPolicy: Local` gets one (the requested one if free, else a free one from the
/// node port range, never one of its own node ports), as kube-apiserver allocates it; elsewhere
/// one the client left unchanged from `old_spec` is released, one it sets is refused.
pub(super) fn health_check_port(
    spec: &mut Value,
    ty: &str,
    old_spec: Option<&Value>,
    taken: &dyn Fn(u16) -> bool,
    ranges: &Ranges,
    causes: &mut Vec<Cause>,
) -> Result<(), ApiError> {
    const FIELD: &str = "spec.healthCheckNodePort";
    let wanted = ty == "LoadBalancer"
        && spec.get("externalTrafficPolicy").and_then(Value::as_str) == Some("Local");
    let requested = spec.get(FIELD_NAME).filter(|v| !v.is_null()).cloned();
    if !wanted {
        match requested {
            Some(v) if old_spec.and_then(|o| o.get(FIELD_NAME)) == Some(&v) => {
                if let Some(m) = spec.as_object_mut() {
                    m.remove(FIELD_NAME);
                }
            }
            Some(v) if v.as_i64() != Some(0) => causes.push(Cause::invalid(
                FIELD,
                v,
                "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'",
            )),
            _ => {}
        }
        return Ok(());
    }
    let own: BTreeSet<u16> = spec["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p.get("nodePort")?.as_u64()?.try_into().ok())
        .collect();
    let taken = |p: u16| taken(p) || own.contains(&p);
    let mut allocator = NodePorts {
        range: ranges.node_ports,
        taken: &taken,
        claimed: BTreeSet::new(),
    };
    let mut port = json!({"nodePort": requested});
    allocator.assign(&mut port, FIELD.to_string(), causes)?;
    spec[FIELD_NAME] = port["nodePort"].clone();
    Ok(())
}

/// The key of [`health_check_port`]'s field.
const FIELD_NAME: &str = "healthCheckNodePort";

/// Checks a port's name: required with `many` ports, a DNS-1123 label, not in `names` yet.
fn name(p: &Value, many: bool, names: &mut BTreeSet<String>, field: String, c: &mut Vec<Cause>) {
    let name = str_field(p, "name");
    if many && name.is_empty() {
        c.push(Cause::required(field));
    } else if !name.is_empty() && !validate::is_dns1123_label(&name) {
        c.push(Cause::invalid(
            field,
            format!("{name:?}"),
            validate::DNS1123_LABEL_MSG,
        ));
    } else if !names.insert(name.clone()) {
        c.push(Cause::duplicate(field, format!("{name:?}")));
    }
}

/// Defaults `targetPort` to `port` and checks one that is set.
fn target_port(p: &mut Value, port: Option<i64>, field: String, causes: &mut Vec<Cause>) {
    match p.get("targetPort") {
        None | Some(Value::Null) => p["targetPort"] = json!(port.unwrap_or(0)),
        Some(Value::Number(n)) if n.as_i64().is_some_and(|n| !(1..=65535).contains(&n)) => {
            causes.push(Cause::invalid(field, n, validate::PORT_RANGE_MSG))
        }
        Some(Value::String(s)) if !is_port_name(s) => causes.push(Cause::invalid(
            field,
            format!("{s:?}"),
            "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)",
        )),
        _ => {}
    }
}

/// 1 to 15 lowercase letters, digits and hyphens.
fn is_port_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 15
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// The node ports one Service is being given.
struct NodePorts<'a> {
    /// The range, inclusive.
    range: (u16, u16),
    /// Whether other Services hold a port.
    taken: &'a dyn Fn(u16) -> bool,
    /// Given to this Service's earlier ports.
    claimed: BTreeSet<u16>,
}

impl NodePorts<'_> {
    /// Checks the port's requested `nodePort`, or gives it a free one.
    fn assign(
        &mut self,
        p: &mut Value,
        field: String,
        causes: &mut Vec<Cause>,
    ) -> Result<(), ApiError> {
        let (lo, hi) = self.range;
        match p.get("nodePort").and_then(Value::as_i64) {
            Some(np) if np < i64::from(lo) || np > i64::from(hi) => {
                causes.push(Cause::invalid(
                    field,
                    np,
                    &format!(
                        "provided port is not in the valid range. The range of valid ports is {lo}-{hi}"
                    ),
                ));
            }
            Some(np) if (self.taken)(np as u16) => {
                causes.push(Cause::invalid(
                    field,
                    np,
                    "provided port is already allocated",
                ));
            }
            Some(np) => {
                self.claimed.insert(np as u16);
            }
            None => {
                let n = self.allocate().ok_or_else(|| {
                    ApiError::internal("failed to allocate a nodePort: the range is full")
                })?;
                self.claimed.insert(n);
                p["nodePort"] = json!(n);
            }
        }
        Ok(())
    }

    /// A free port: a random one of the first 64 free, or the first free.
    fn allocate(&self) -> Option<u16> {
        let (lo, hi) = self.range;
        let free = |n: &u16| !(self.taken)(*n) && !self.claimed.contains(n);
        (lo..=hi)
            .filter(free)
            .nth(rand::random::<usize>() % 64)
            .or_else(|| (lo..=hi).find(free))
    }
}
