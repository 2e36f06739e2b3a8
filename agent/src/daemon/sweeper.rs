//! The agent's conntrack and NAT sweeper: every [`INTERVAL`] it removes the flows that are over
//! ([`crate::datapath::aging`]) from the node's tables, so LRU eviction is left for tables truly
//! full of live flows, and it publishes each table's fill.
//!
//! Invariant: the sweep runs off the reconcile loop (a blocking task), reads each table once per
//! turn and only deletes; a failed turn is logged and the next one starts from scratch.
use std::path::PathBuf;
use std::time::Duration;

use crate::datapath::aging::Timeouts;
use crate::datapath::tables::{self, Sweep, TableSweep};
use crate::metrics::{self, TableLabels};

/// Time between two sweeps.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// Sweeps `pin_dir`'s tables every [`INTERVAL`] until the task is aborted.
pub async fn run(pin_dir: PathBuf, measured: metrics::Agent) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let dir = pin_dir.clone();
        let turn = tokio::task::spawn_blocking(move || {
            let span = tracing::debug_span!("sweep");
            let _enter = span.enter();
            tables::sweep(&dir, tables::monotonic_now(), &Timeouts::default())
        })
        .await;
        match turn {
            Ok(Ok(sweep)) => publish(&measured, &sweep),
            Ok(Err(e)) => tracing::warn!(error = %e, "sweeping conntrack and NAT failed; retrying"),
            Err(e) => tracing::warn!(error = %e, "the sweep task failed; retrying"),
        }
    }
}

fn publish(measured: &metrics::Agent, sweep: &Sweep) {
    for (table, t) in [("conntrack", &sweep.conntrack), ("nat", &sweep.nat)] {
        let labels = TableLabels {
            table: table.to_string(),
        };
        let left = t.entries.saturating_sub(t.removed);
        measured
            .table_entries
            .get_or_create(&labels)
            .set(left as i64);
        measured
            .table_capacity
            .get_or_create(&labels)
            .set(i64::from(t.capacity));
        measured
            .table_expired
            .get_or_create(&labels)
            .inc_by(t.removed as u64);
        log_fill(table, t, left);
    }
}

/// Warns when a table stays more than 90% full after a sweep: live flows alone fill it, and
/// LRU eviction will end idle ones; raise its size.
fn log_fill(table: &str, t: &TableSweep, left: usize) {
    if t.capacity > 0 && left * 10 > t.capacity as usize * 9 {
        let flag = if table == "nat" {
            "--nat-max"
        } else {
            "--ct-max"
        };
        tracing::warn!(
            table,
            entries = left,
            capacity = t.capacity,
            "the table is over 90% full of live flows; idle flows will be evicted — raise {flag}"
        );
    } else if t.removed > 0 {
        tracing::debug!(table, removed = t.removed, entries = left, "swept");
    }
}
