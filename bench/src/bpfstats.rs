//! What one eBPF program costs per run, from the kernel's own accounting (`bpf_stats`).
//!
//! While a [`Stats`] guard lives, the kernel adds every run's duration to the program's
//! `run_time_ns` and counts it in `run_cnt` (`BPF_ENABLE_STATS`; the accounting stops when the
//! guard's descriptor closes, also if the benchmark dies). A [`Sample`] sums both over every
//! loaded program of one name — the three lab agents each load their own `from_pod` — so the
//! difference of two samples taken around a run is that program's mean cost per packet on
//! whichever node the packets crossed.
use std::os::fd::OwnedFd;

use aya::programs::loaded_programs;
use aya::sys::{enable_stats, Stats as StatsType};

/// Errors reading program statistics.
#[derive(Debug, thiserror::Error)]
pub enum StatsError {
    /// The kernel refused BPF_ENABLE_STATS.
    #[error(
        "enabling the kernel's BPF run-time statistics (BPF_ENABLE_STATS, kernel ≥ 5.8, root)"
    )]
    Enable(#[source] aya::sys::SyscallError),
    /// Listing the loaded programs failed.
    #[error("listing the loaded BPF programs")]
    List(#[source] aya::programs::ProgramError),
}

/// Run-time accounting switched on for as long as this lives.
pub struct Stats {
    _fd: OwnedFd,
}

/// The summed counters of the programs of one name at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Nanoseconds spent in the programs.
    pub run_time_ns: u64,
    /// Runs (packets, for a tc program).
    pub run_cnt: u64,
}

impl Sample {
    /// Mean nanoseconds per run between `earlier` and `self`; `None` without runs.
    pub fn ns_per_run_since(&self, earlier: &Sample) -> Option<f64> {
        let runs = self.run_cnt.checked_sub(earlier.run_cnt)?;
        let ns = self.run_time_ns.checked_sub(earlier.run_time_ns)?;
        (runs > 0).then(|| ns as f64 / runs as f64)
    }
}

impl Stats {
    /// Switches the accounting on.
    pub fn enable() -> Result<Stats, StatsError> {
        Ok(Stats {
            _fd: enable_stats(StatsType::RunTime).map_err(StatsError::Enable)?,
        })
    }

    /// The counters of every loaded program called `name`, summed.
    pub fn sample(&self, name: &str) -> Result<Sample, StatsError> {
        let mut s = Sample::default();
        for info in loaded_programs() {
            let info = info.map_err(StatsError::List)?;
            if info.name_as_str() == Some(name) {
                s.run_time_ns += info.run_time().as_nanos() as u64;
                s.run_cnt += info.run_count();
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cost_per_run_is_the_time_difference_over_the_run_difference() {
        let a = Sample {
            run_time_ns: 1_000,
            run_cnt: 10,
        };
        let b = Sample {
            run_time_ns: 7_000,
            run_cnt: 20,
        };
        assert_eq!(b.ns_per_run_since(&a), Some(600.0));
    }

    #[test]
    fn no_runs_or_counters_that_went_back_give_no_figure() {
        let a = Sample {
            run_time_ns: 1_000,
            run_cnt: 10,
        };
        assert_eq!(a.ns_per_run_since(&a), None);
        assert_eq!(Sample::default().ns_per_run_since(&a), None);
    }
}
