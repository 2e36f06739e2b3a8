//! What happens to an object between the request and the store: server-set metadata, defaults,
//! validation, and the allocations kube-apiserver makes synchronously (ClusterIPs, NodePorts,
//! podCIDRs), so the object a client gets back already carries them.
//!
//! Guarantees: an object that [`on_create`] or [`on_update`] accepts is a JSON object with the
//! served `apiVersion` and `kind`, a valid name and labels, the metadata the server owns
//! (`metadata.rs`) and its kind's defaults and allocations (`services/`, `pods.rs`, `nodes.rs`,
//! `namespaces.rs`); one that fails validation is refused with a 422 naming every wrong field.
//! Allocations are only written into the object, never reserved elsewhere: what the store holds
//! is what is taken (the store keeps it indexed, [`crate::store::Held`], so checking costs no
//! list), so a refused object holds nothing and a deleted one frees what it held.
use std::net::Ipv4Addr;

use serde_json::Value;

use crate::resources::Resource;
use crate::status::{ApiError, Cause};
use crate::store::Store;
use crate::validate;

mod events;
mod metadata;
mod namespaces;
mod nodes;
mod pods;
mod services;

pub use metadata::{generation_changes, tracks_generation};
pub use pods::{qos_class, POD_UPDATE_FORBIDDEN};

/// Address ranges the server allocates from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ranges {
    /// Service CIDR (ClusterIPs).
    pub service_cidr: (Ipv4Addr, u8),
    /// Cluster pod CIDR (node podCIDRs are carved from it).
    pub cluster_cidr: (Ipv4Addr, u8),
    /// Prefix length of each node's podCIDR.
    pub node_prefix: u8,
    /// NodePort range, inclusive.
    pub node_ports: (u16, u16),
}

impl Ranges {
    /// The first address of the service CIDR: the `kubernetes` Service's ClusterIP, which no
    /// other Service may take (10.96.0.1 for 10.96.0.0/16).
    pub fn first_service_ip(&self) -> Ipv4Addr {
        let (net, prefix) = self.service_cidr;
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        Ipv4Addr::from((u32::from(net) & mask).wrapping_add(1))
    }
}

impl Default for Ranges {
    /// kubeadm's defaults: services in 10.96.0.0/16, pods in 10.244.0.0/16 with a /24 per node,
    /// NodePorts 30000-32767.
    fn default() -> Self {
        Ranges {
            service_cidr: (Ipv4Addr::new(10, 96, 0, 0), 16),
            cluster_cidr: (Ipv4Addr::new(10, 244, 0, 0), 16),
            node_prefix: 24,
            node_ports: (30000, 32767),
        }
    }
}

/// Prepares a new object: metadata, defaults, validation, allocations.
pub fn on_create(
    res: &Resource,
    ns: &str,
    obj: &mut Value,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    require_object(obj)?;
    metadata::on_create(res, ns, obj);
    admit(res, obj, None, store, ranges)
}

/// Prepares a replacement of `old`: keeps what the server owns, bumps `generation` on spec
/// changes, then defaults, validation and allocations. `status_only` keeps everything but status.
pub fn on_update(
    res: &Resource,
    old: &Value,
    obj: &mut Value,
    status_only: bool,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    require_object(obj)?;
    if status_only {
        let new = std::mem::replace(obj, old.clone());
        copy_or_remove(obj, &new, "status");
        return Ok(());
    }
    metadata::on_update(res, old, obj);
    admit(res, obj, Some(old), store, ranges)
}

fn require_object(obj: &Value) -> Result<(), ApiError> {
    if obj.is_object() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ))
    }
}

/// Validation every kind shares (name, labels), then the kind's own admission.
fn admit(
    res: &Resource,
    obj: &mut Value,
    old: Option<&Value>,
    store: &Store,
    ranges: &Ranges,
) -> Result<(), ApiError> {
    let mut causes = Vec::new();
    validate::name(res.kind, &name_of(obj), &mut causes);
    validate::labels(obj, &mut causes);
    if !causes.is_empty() {
        return Err(invalid(res, obj, &causes));
    }
    match res.kind {
        "Service" => services::admit(res, obj, old, store, ranges),
        "Node" => nodes::admit(res, obj, old, store, ranges),
        "Pod" => pods::admit(res, obj, old),
        "Event" => events::admit(res, obj),
        "Namespace" => {
            namespaces::admit(obj, old);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// `metadata.name`, or "" when it has none.
fn name_of(obj: &Value) -> String {
    obj.pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

/// The 422 for `obj` with `causes`.
fn invalid(res: &Resource, obj: &Value, causes: &[Cause]) -> ApiError {
    ApiError::invalid(res.kind, res.group, &name_of(obj), causes)
}

/// `Ok` when nothing was found wrong, else the 422 for `obj` with `causes`.
fn verdict(res: &Resource, obj: &Value, causes: &[Cause]) -> Result<(), ApiError> {
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(res, obj, causes))
    }
}

/// Removes `keys` from `v` when it is an object.
fn remove_keys(v: &mut Value, keys: &[&str]) {
    if let Some(m) = v.as_object_mut() {
        for k in keys {
            m.remove(*k);
        }
    }
}

/// Makes `dst[key]` what `src[key]` is: a copy, or absent.
fn copy_or_remove(dst: &mut Value, src: &Value, key: &str) {
    match src.get(key) {
        Some(v) => dst[key] = v.clone(),
        None => remove_keys(dst, &[key]),
    }
}

/// Sets every key of `defaults` that `v` (an object) lacks.
fn set_defaults(v: &mut Value, defaults: impl IntoIterator<Item = (&'static str, Value)>) {
    for (k, d) in defaults {
        if v.get(k).is_none() {
            v[k] = d;
        }
    }
}

/// `field` of `v` as a string, or "".
fn str_field(v: &Value, field: &str) -> String {
    v.get(field)
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string()
}

#[cfg(test)]
mod testing {
    use serde_json::Value;

    use super::{name_of, on_create, Ranges};
    use crate::resources::find;
    use crate::status::ApiError;
    use crate::store::{Key, Store};

    /// Admits `obj` as a new `plural` in `default` and stores it.
    pub(super) fn create(store: &Store, plural: &str, obj: Value) -> Result<Value, ApiError> {
        create_in(store, plural, obj, &Ranges::default())
    }

    /// [`create`] with `ranges`, under the admission lock as the API takes it.
    pub(super) fn create_in(
        store: &Store,
        plural: &str,
        mut obj: Value,
        ranges: &Ranges,
    ) -> Result<Value, ApiError> {
        let res = find("", "v1", plural).unwrap();
        let _admission = store.admission_lock();
        on_create(res, "default", &mut obj, store, ranges)?;
        let key = Key {
            resource: plural.into(),
            namespace: if res.namespaced {
                "default".into()
            } else {
                String::new()
            },
            name: name_of(&obj),
        };
        Ok((*store.create(key, obj).unwrap()).clone())
    }
}
