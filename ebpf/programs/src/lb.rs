//! Service lookup and backend choice (the frontend → slot → backend split of `SERVICES`/`BACKENDS`).
use aya_ebpf::helpers::bpf_get_prandom_u32;
use switchyard_abi::{Backend, ServiceKey, ServiceValue};

use crate::maps::{BACKENDS, SERVICES};
use crate::packet::Flow;
use crate::{conntrack, stats};
use switchyard_abi::stat;

/// The service header (slot 0) of the frontend `flow` is addressed to, if any.
#[inline(always)]
pub fn lookup_service(flow: &Flow) -> Option<ServiceValue> {
    let key = ServiceKey::new(flow.daddr, flow.dport, flow.proto, 0);
    // SAFETY: the value is copied out at once; the agent replaces entries atomically per key.
    unsafe { SERVICES.get(&key) }.copied()
}

/// A backend by id.
#[inline(always)]
pub fn backend(id: u32) -> Option<Backend> {
    // SAFETY: copied out at once.
    unsafe { BACKENDS.get(&id) }.copied()
}

/// Picks a backend for a new flow: a random slot in `1..=count`. `None` when the service has no
/// backends or the slot/backend is missing (the agent is in the middle of an update).
#[inline(always)]
pub fn select_backend(flow: &Flow, svc: &ServiceValue) -> Option<(u32, Backend)> {
    if svc.count == 0 {
        return None;
    }
    // SAFETY: plain helper call.
    let rnd = unsafe { bpf_get_prandom_u32() };
    let slot = (rnd % u32::from(svc.count)) as u16 + 1;
    let key = ServiceKey::new(flow.daddr, flow.dport, flow.proto, slot);
    // SAFETY: copied out at once.
    let id = unsafe { SERVICES.get(&key) }?.backend_id;
    backend(id).map(|b| (id, b))
}

/// The backend for a packet to a frontend: the one conntrack remembers for this flow, else a new
/// random choice (recorded in conntrack). A TCP SYN (`syn`) reuses a remembered backend only
/// while the flow's reply entry is still its own: clients reuse source ports, and a new
/// connection must not inherit a flow whose replies would no longer be translated (or would be
/// translated to another frontend). `Ok(None)` when the
/// service has no backend at all; `Err` carries a drop reason.
#[inline(always)]
pub fn pick(flow: &Flow, svc: &ServiceValue, len: u32, syn: bool) -> Result<Option<Backend>, u32> {
    if let Some((ct, b)) = conntrack::touch(&conntrack::forward_key(flow), len)
        .and_then(|ct| backend(ct.backend_id).map(|b| (ct, b)))
    {
        if !syn || conntrack::reply_matches(flow, &b, ct.rev_nat_id) {
            stats::inc(stat::LB_ESTABLISHED);
            return Ok(Some(b));
        }
    }
    if svc.count == 0 {
        return Ok(None);
    }
    let (id, b) = select_backend(flow, svc).ok_or(stat::DROP_STALE_SLOT)?;
    conntrack::create(flow, id, &b, svc.rev_nat_id, len);
    stats::inc(stat::LB_NEW);
    Ok(Some(b))
}
