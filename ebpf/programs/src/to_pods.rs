//! `to_pods`: TC egress on `cbr0` — what the node's own stack sends to the pods on this node.
//!
//! A pod's connection to a Service whose endpoint lives in the node's own namespace (a
//! `hostNetwork` pod, a node daemon, the API server on this node) was DNATed by `from_pod` to
//! the node's address; the stack delivers it locally and its reply leaves through `cbr0` to the
//! pod, where no other program sees it. Here the reply-direction conntrack entry restores the
//! frontend as its source. Everything else passes unchanged to the bridge.
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    macros::classifier,
    programs::TcContext,
};
use switchyard_abi::stat;

use crate::packet::{self, Parsed};
use crate::{forward, stats};

/// Entry point: see the module documentation.
#[classifier]
pub fn to_pods(mut ctx: TcContext) -> i32 {
    let flow = match packet::parse(&ctx) {
        Ok(Parsed::L4(flow)) => flow,
        Ok(_) => return TC_ACT_OK,
        Err(()) => {
            stats::inc(stat::DROP_MALFORMED);
            return TC_ACT_SHOT;
        }
    };
    let len = ctx.len();
    match forward::reverse_nat(&mut ctx, &flow, len) {
        Ok(Some(_)) => {
            stats::inc(stat::HOST_REV_NAT);
            TC_ACT_OK
        }
        Ok(None) => TC_ACT_OK,
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
}
