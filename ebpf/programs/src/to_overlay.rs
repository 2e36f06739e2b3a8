//! `to_overlay`: TC egress on `vxlan0` — what the node's own stack routes to other nodes' pods
//! (the agent routes the cluster CIDR to `vxlan0`, the local podCIDR staying on `cbr0`).
//!
//! `vxlan0` runs in external mode and encapsulates only packets that carry a tunnel key; this
//! program gives each the key of the node owning its destination (the `TUNNEL` trie). Packets
//! `from_pod` and `from_netdev` redirected here already carry one: it is set again, to the
//! same value. A packet for a pod CIDR no node owns is dropped and counted.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use switchyard_abi::stat;

use crate::overlay;
use crate::packet::Parsed;
use crate::{hook, stats};

/// Entry point: see the module documentation.
#[classifier]
pub fn to_overlay(mut ctx: TcContext) -> i32 {
    hook::run(&mut ctx, |ctx, parsed| {
        let daddr = match *parsed {
            Parsed::L4(flow) => flow.daddr,
            Parsed::L3(ip) => ip.daddr,
            Parsed::Other => return Ok(TC_ACT_OK),
        };
        let Some(cfg) = overlay::config() else {
            return Ok(TC_ACT_OK);
        };
        match overlay::set_tunnel_key(ctx, &cfg, daddr) {
            Some(Ok(())) => {
                stats::inc(stat::HOST_TUNNEL_TX);
                Ok(TC_ACT_OK)
            }
            Some(Err(verdict)) => Ok(verdict),
            None => Err(stat::DROP_NO_ROUTE),
        }
    })
}
