//! What every TC hook does around its own decisions: parse the headers, count a drop reason
//! instead of returning it, and remember what a translated first fragment became so that the
//! datagram's later fragments follow it ([`frag`](crate::frag)).
use aya_ebpf::{
    bindings::{TC_ACT_OK, TC_ACT_SHOT},
    programs::TcContext,
};
use switchyard_abi::stat;

use crate::packet::{self, Parsed};
use crate::{frag, stats};

/// Runs `hook` on the parsed packet (non-IPv4 packets pass untouched). `hook` returns a TC verdict, or `Err` with the `stat` drop
/// reason (the packet is then dropped and the reason counted).
///
/// Entry points pass `hook` as an `#[inline(always)]` closure and are `#[inline(always)]`
/// themselves: the compiler otherwise outlines a large hook once it crosses its inlining
/// threshold, the outlined hook gets `Parsed` through the stack, and the verifier rejects the
/// compiler's spill of the variant's unset fields ("invalid size of register spill").
#[inline(always)]
pub fn run(
    ctx: &mut TcContext,
    hook: impl FnOnce(&mut TcContext, &Parsed) -> Result<i32, u32>,
) -> i32 {
    let parsed = match packet::parse(ctx) {
        // Not IPv4: no hook touches it. Returning here also keeps the compiler from spilling
        // the enum's unset fields, which the verifier rejects as reads of uninitialised
        // registers.
        Ok(Parsed::Other) => return TC_ACT_OK,
        Ok(p) => p,
        Err(()) => {
            stats::inc(stat::DROP_MALFORMED);
            return TC_ACT_SHOT;
        }
    };
    let first = match &parsed {
        Parsed::L4(flow) => frag::first(flow),
        _ => None,
    };
    match hook(ctx, &parsed) {
        Ok(verdict) => {
            if let Some(key) = first {
                frag::remember(ctx, &key);
            }
            verdict
        }
        Err(reason) => {
            stats::inc(reason);
            TC_ACT_SHOT
        }
    }
}
