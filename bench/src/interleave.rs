//! Interleaved scale probes: at one level switchyard and kube-proxy's modes answer the same
//! ClusterIP on n1 by turns, in the order A B C, C B A, A B C … (each mode's mean position in
//! time is the same), so slow drift of the shared machine hits every mode alike instead of
//! the whole run of one mode.
//!
//! Invariant: exactly one dataplane translates while a probe runs. kube-proxy's rule sets
//! stay loaded side by side, every one but the active one dormant (unhooked, rules kept);
//! switchyard is paused on n1 by detaching its programs around its pinned maps
//! ([`switch::pause`]), so no mode is reprogrammed between turns.
use std::time::Duration;

use anyhow::{Context, Result};

use crate::kproxy::apply;
use crate::run::Ctx;
use crate::scale::{Tool, NODE_NS};
use crate::switch;

/// Who translates the measured ClusterIP during one turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Plane {
    /// switchyard's programs on n1.
    Switchyard,
    /// One of kube-proxy's rule sets, switchyard paused.
    Kernel(Tool),
}

impl Plane {
    /// The mode name figures are filed under.
    pub fn name(self) -> &'static str {
        match self {
            Plane::Switchyard => "switchyard",
            Plane::Kernel(t) => t.name(),
        }
    }
}

/// The planes of repetition `rep`: `planes` in order on even repetitions, reversed on odd
/// ones, so that across repetitions each plane's mean position is the same.
pub fn order<T: Copy>(planes: &[T], rep: usize) -> Vec<T> {
    let mut v = planes.to_vec();
    if rep % 2 == 1 {
        v.reverse();
    }
    v
}

/// The dataplane state of n1 across turns.
pub struct Turns {
    /// Whether switchyard's programs are attached on n1.
    switchyard_on: bool,
    /// kube-proxy rule sets loaded (dormant unless active).
    tools: Vec<Tool>,
    /// Frontends the agent programs at this level (its sync after a resume has them all).
    frontends: u64,
}

impl Turns {
    /// Turns among switchyard (attached now) and the loaded, dormant rule sets of `tools`.
    pub fn new(tools: &[Tool], frontends: u64) -> Turns {
        Turns {
            switchyard_on: true,
            tools: tools.to_vec(),
            frontends,
        }
    }

    /// Makes `plane` the only one translating and waits until the ClusterIP answers through it.
    pub fn activate(&mut self, ctx: &mut Ctx, plane: Plane) -> Result<()> {
        for &t in &self.tools {
            if plane != Plane::Kernel(t) {
                apply::set_dormant(NODE_NS, t.table(), true)?;
            }
        }
        match plane {
            Plane::Switchyard if !self.switchyard_on => {
                switch::resume(&ctx.lab, 1).context("resuming switchyard on n1")?;
                self.switchyard_on = true;
                // Its log starts anew; its first sync (logged though it writes nothing on the
                // pinned maps) is the end of its start-up work, which must not share the CPUs
                // with the probe.
                let want = self.frontends;
                ctx.agent
                    .wait_sync(
                        0,
                        "its first sync after resuming",
                        Duration::from_secs(300),
                        |s| s.frontends >= want,
                    )
                    .context("the resumed agent's sync")?;
            }
            Plane::Switchyard => {}
            Plane::Kernel(t) => {
                if self.switchyard_on {
                    switch::pause(&ctx.lab, 1).context("pausing switchyard on n1")?;
                    self.switchyard_on = false;
                }
                apply::set_dormant(NODE_NS, t.table(), false)?;
            }
        }
        crate::scale::wait_reachable(ctx)
            .with_context(|| format!("the ClusterIP through {}", plane.name()))
    }

    /// Leaves switchyard attached and removes every loaded rule set.
    pub fn finish(mut self, ctx: &mut Ctx) -> Result<()> {
        self.activate(ctx, Plane::Switchyard)?;
        for t in std::mem::take(&mut self.tools) {
            apply::delete_table(NODE_NS, t.table())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn odd_repetitions_run_the_planes_in_reverse() {
        let p = ["a", "b", "c"];
        assert_eq!(order(&p, 0), ["a", "b", "c"]);
        assert_eq!(order(&p, 1), ["c", "b", "a"]);
        assert_eq!(order(&p, 2), ["a", "b", "c"]);
    }

    #[test]
    fn over_an_even_number_of_repetitions_every_plane_has_the_same_mean_position() {
        let p = [0usize, 1, 2];
        let mut sum = [0usize; 3];
        for rep in 0..4 {
            for (pos, plane) in order(&p, rep).into_iter().enumerate() {
                sum[plane] += pos;
            }
        }
        assert!(sum.iter().all(|s| *s == sum[0]), "{sum:?}");
    }
}
