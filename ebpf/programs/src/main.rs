//! # switchyard-ebpf
//!
//! The kernel half of switchyard. One file per attach point, sharing small libraries:
//! - [`from_pod`]: TC ingress on every pod's host-side veth (ClusterIP load balancing, reverse NAT,
//!   local redirect, overlay encapsulation).
//! - [`from_overlay`]: TC ingress on `vxlan0` (reverse NAT of remote backends' replies, delivery).
//! - [`netdev`]: TC ingress (NodePort, replies to masqueraded flows) and egress (masquerade) on the
//!   node's uplink.
//! - [`maps`]: every map, pinned by name so the agent can restart without losing state.
//! - [`packet`]: header offsets and field access; [`lb`]: service and backend lookup;
//!   [`conntrack`]: flow tracking; [`nat`]: address/port rewrite with checksums;
//!   [`reject`]: ICMP port unreachable for services without backends; [`stats`]: counters;
//!   [`forward`]: delivery to local pods and the uplink; [`overlay`]: VXLAN tunnel keys;
//!   [`snat`]: the source NAT table of masquerade and NodePort; [`hook`]: what every TC hook
//!   does around its decisions; [`frag`]: later fragments of translated datagrams; [`icmp`]:
//!   ICMP errors about translated flows; [`source`]: source validation on pod veths.
//! - [`to_pods`]: TC egress on `cbr0` (reverse NAT of replies from the node's own namespace).
//! - [`to_overlay`]: TC egress on `vxlan0` (tunnel keys for the node's own traffic to pods).
//! - [`sock`]: cgroup socket hooks (socket load balancing for the node's own clients).
//! - [`xdp_nodeport`]: native XDP on the uplink (`--nodeport-acceleration native`): NodePort
//!   traffic to remote backends balanced, translated and encapsulated before an skb exists.
#![no_std]
#![no_main]

mod conntrack;
mod forward;
mod frag;
mod from_overlay;
mod from_pod;
mod hook;
mod icmp;
mod lb;
mod maps;
mod nat;
mod netdev;
mod overlay;
mod packet;
mod reject;
mod snat;
mod sock;
mod source;
mod stats;
mod to_overlay;
mod to_pods;
mod xdp_nodeport;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // eBPF programs cannot panic; the verifier rejects any path that could reach here.
    loop {}
}

/// License section required by the kernel for GPL-only helpers.
#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";
