//! `to_pods`: TC egress on `cbr0` — what the node's own stack sends to the pods on this node.
//!
//! A pod's connection to a Service whose endpoint lives in the node's own namespace (a
//! `hostNetwork` pod, a node daemon, the API server on this node) was DNATed by `from_pod` to
//! the node's address; the stack delivers it locally and its reply leaves through `cbr0` to the
//! pod, where no other program sees it. Here the reply-direction conntrack entry restores the
//! frontend as its source (and their later fragments and ICMP errors follow). Everything else
//! passes unchanged to the bridge.
use aya_ebpf::{bindings::TC_ACT_OK, macros::classifier, programs::TcContext};
use switchyard_abi::stat;

use crate::packet::Parsed;
use crate::{forward, frag, hook, icmp, nat, stats};

/// Entry point: see the module documentation.
#[classifier]
pub fn to_pods(mut ctx: TcContext) -> i32 {
    hook::run(&mut ctx, |ctx, parsed| match *parsed {
        Parsed::L4(flow) => {
            let len = ctx.len();
            if forward::reverse_nat(ctx, &flow, len, nat::rewrite)?.is_some() {
                stats::inc(stat::HOST_REV_NAT);
            }
            Ok(TC_ACT_OK)
        }
        Parsed::L3(mut ip) => {
            if ip.later_fragment() {
                frag::translate(ctx, &mut ip)?;
            } else {
                icmp::translate_error(ctx, &ip, 0)?;
            }
            Ok(TC_ACT_OK)
        }
        Parsed::Other => Ok(TC_ACT_OK),
    })
}
