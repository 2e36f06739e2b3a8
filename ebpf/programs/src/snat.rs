//! The source NAT table shared by masquerade and NodePort: a forward entry per translated flow
//! (original tuple → translated source) and a reply entry (reply tuple → original source).
//!
//! Ports come from `SNAT_PORT_MIN..=SNAT_PORT_MAX`, chosen at random and claimed atomically with
//! `BPF_NOEXIST` on the reply entry, so two flows never share a translated tuple.
use aya_ebpf::helpers::bpf_get_prandom_u32;
use switchyard_abi::{
    NatEntry, NatKey, CT_DIR_FORWARD, CT_DIR_REPLY, SNAT_PORT_MAX, SNAT_PORT_MIN,
};

use crate::conntrack::key;
use crate::maps::NAT;
use crate::packet::Flow;

const BPF_NOEXIST: u64 = 1;
/// Random ports tried before giving up on a destination.
const ATTEMPTS: u32 = 16;

/// The translated source of an already translated flow.
#[inline(always)]
pub fn forward(flow: &Flow) -> Option<NatEntry> {
    // SAFETY: copied out at once.
    unsafe { NAT.get(&key(flow, CT_DIR_FORWARD)) }.copied()
}

/// The original source a reply must be sent back to, if `flow` answers a translated flow.
#[inline(always)]
pub fn reverse(flow: &Flow) -> Option<NatEntry> {
    // SAFETY: copied out at once.
    unsafe { NAT.get(&key(flow, CT_DIR_REPLY)) }.copied()
}

/// Translates `flow`'s source to `to_addr` with a free port; `None` when no port was free.
#[inline(always)]
pub fn allocate(flow: &Flow, to_addr: u32) -> Option<NatEntry> {
    let span = u32::from(SNAT_PORT_MAX - SNAT_PORT_MIN) + 1;
    let original = NatEntry {
        addr: flow.saddr,
        port: flow.sport,
        pad: 0,
    };
    for _ in 0..ATTEMPTS {
        // SAFETY: plain helper call.
        let port = (SNAT_PORT_MIN + (unsafe { bpf_get_prandom_u32() } % span) as u16).to_be();
        let reply = NatKey {
            saddr: flow.daddr,
            daddr: to_addr,
            sport: flow.dport,
            dport: port,
            proto: flow.proto,
            dir: CT_DIR_REPLY,
            pad: [0; 2],
        };
        if NAT.insert(&reply, &original, BPF_NOEXIST).is_ok() {
            let translated = NatEntry {
                addr: to_addr,
                port,
                pad: 0,
            };
            let _ = NAT.insert(&key(flow, CT_DIR_FORWARD), &translated, 0);
            return Some(translated);
        }
    }
    None
}
