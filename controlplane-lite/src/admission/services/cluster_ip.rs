//! A Service's ClusterIP, and the ClusterIP allocator.
//!
//! Guarantees: once a Service has a ClusterIP it keeps it (an update that asks for another is
//! refused); a new Service's requested ClusterIP is either `None` (headless) or an IPv4 address
//! in the service CIDR that no other Service holds, or it is refused; without one it gets a
//! random free address of the service CIDR (never the network address, `.1` or the broadcast
//! address), except an ExternalName Service, which gets none. `clusterIPs` always mirrors
//! `clusterIP`.
use std::net::Ipv4Addr;

use serde_json::{json, Value};

use super::super::Ranges;
use crate::status::{ApiError, Cause};

/// Keeps, checks or allocates the ClusterIP of `spec` (of type `ty`; `old_spec` when it
/// replaces a stored Service); `taken` says whether another Service holds an address.
pub(super) fn assign(
    spec: &mut Value,
    ty: &str,
    old_spec: Option<&Value>,
    taken: &dyn Fn(Ipv4Addr) -> bool,
    ranges: &Ranges,
    causes: &mut Vec<Cause>,
) -> Result<(), ApiError> {
    let old_ip = old_spec
        .and_then(|s| s.get("clusterIP"))
        .and_then(Value::as_str)
        .map(str::to_string);
    let requested = spec
        .get("clusterIP")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string);
    let ip = match (requested, old_ip) {
        (None, Some(old)) => Some(old),
        (Some(r), Some(old)) if r != old => {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                format!("{r:?}"),
                "may not change once set",
            ));
            Some(old)
        }
        (Some(r), Some(_)) => Some(r),
        (Some(r), None) if r == "None" => Some(r),
        (Some(r), None) => check_requested(&r, taken, ranges, causes).then_some(r),
        (None, None) if ty == "ExternalName" => None,
        (None, None) => Some(
            allocate(ranges.service_cidr, taken)
                .ok_or_else(|| {
                    ApiError::internal("failed to allocate a ClusterIP: the service CIDR is full")
                })?
                .to_string(),
        ),
    };
    if let Some(ip) = ip {
        spec["clusterIP"] = json!(ip);
        spec["clusterIPs"] = json!([ip]);
    }
    Ok(())
}

/// Whether the ClusterIP `r` a new Service asks for may be given; a cause if not.
fn check_requested(
    r: &str,
    taken: &dyn Fn(Ipv4Addr) -> bool,
    ranges: &Ranges,
    causes: &mut Vec<Cause>,
) -> bool {
    let refuse = |causes: &mut Vec<Cause>, why: &str| {
        causes.push(Cause::invalid(
            "spec.clusterIPs",
            format!("[]string{{{r:?}}}"),
            &format!("failed to allocate IP {r}: {why}"),
        ));
        false
    };
    match r.parse::<Ipv4Addr>() {
        Ok(ip) if !in_cidr(ip, ranges.service_cidr) => {
            let (net, prefix) = ranges.service_cidr;
            refuse(
                causes,
                &format!(
                    "provided IP is not in the valid range. The range of valid IPs is {net}/{prefix}"
                ),
            )
        }
        Ok(ip) if taken(ip) => refuse(causes, "provided IP is already allocated"),
        Ok(_) => true,
        Err(_) => {
            causes.push(Cause::invalid(
                "spec.clusterIPs[0]",
                format!("{r:?}"),
                "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)",
            ));
            false
        }
    }
}

/// Whether `ip` is in the network `net/prefix`.
pub(super) fn in_cidr(ip: Ipv4Addr, (net, prefix): (Ipv4Addr, u8)) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// A random free address of `cidr`, skipping the network address, `.1` (the `kubernetes`
/// service by convention) and the broadcast address: from a random start, the first address
/// `used` does not hold.
fn allocate((net, prefix): (Ipv4Addr, u8), used: &dyn Fn(Ipv4Addr) -> bool) -> Option<Ipv4Addr> {
    let size = 1u64 << (32 - u32::from(prefix));
    if size < 4 {
        return None;
    }
    let base = u64::from(u32::from(net));
    let start = 2 + rand::random::<u64>() % (size - 3);
    (0..size - 3)
        .map(|i| 2 + (start - 2 + i) % (size - 3))
        .map(|off| Ipv4Addr::from((base + off) as u32))
        .find(|ip| !used(*ip))
}
