//! Source validation on a pod's veth. Invariant: a packet `from_pod` lets through carries, as its
//! IPv4 source, the address of the pod whose host-side veth it arrived on — the `LOCAL_PODS`
//! entry of that address names that veth. Anything else (another pod's address, a remote or
//! outside address, an address no pod has) is a spoof and is dropped before it can create a
//! conntrack, NAT or fragment entry.
//!
//! What legitimately leaves a pod passes: ARP and other non-IPv4 frames never reach the check
//! (`hook::run`), DHCP does not exist here (the CNI plugin configures the address), and
//! hostNetwork pods have no veth. The agent writes a pod's `LOCAL_PODS` entry before it
//! attaches `from_pod` to its veth, so a pod's first packet already finds it.
use aya_ebpf::programs::TcContext;

use crate::maps::LOCAL_PODS;

/// Whether `saddr` (network order) is the address of the pod whose veth `ctx` arrived on. One
/// map lookup.
#[inline(always)]
pub fn owned_by_ingress(ctx: &TcContext, saddr: u32) -> bool {
    // SAFETY: reading the ingress ifindex of the skb we run on (at TC ingress, the device the
    // packet arrived on: the pod's host-side veth).
    let ingress = unsafe { (*ctx.skb.skb).ingress_ifindex };
    // SAFETY: only a field is read, at once.
    match unsafe { LOCAL_PODS.get(&saddr) } {
        Some(pod) => pod.ifindex == ingress,
        None => false,
    }
}
