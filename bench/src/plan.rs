//! How long and how often each measurement runs (`--quick` or full).
use std::time::Duration;

/// The knobs of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// `--quick`: short runs, small N.
    pub quick: bool,
    /// Repetitions of every measurement.
    pub reps: usize,
    /// Seconds of each iperf3 run.
    pub iperf_secs: u32,
    /// Duration of each request/response run.
    pub rr: Duration,
    /// Duration of each connection-rate run.
    pub conn: Duration,
    /// Parallel connecting threads.
    pub conn_threads: usize,
    /// Alternating slices a scale probe's connection-rate run and its control are cut in
    /// (`load::connection_rate_sliced`).
    pub slices: usize,
    /// Duration of each first-packet latency run (one thread, unloaded).
    pub first_packet: Duration,
    /// Numbers of installed Services for switchyard's scale scenarios (ascending).
    pub levels: Vec<usize>,
    /// The same for kube-proxy's modes: a prefix of `levels`. They stop earlier because
    /// their programming time grows faster than linearly (nftables needs minutes per install
    /// at 10,000 Services), see bench/README.md.
    pub kernel_levels: Vec<usize>,
    /// Time one figure of `program_install` may take in all: installs repeat (up to `reps`)
    /// only while the installs so far stay within it (one install at least; the last one's
    /// rules stay loaded for the measurements that follow).
    pub install_budget: Duration,
    /// Services created one by one for the control loop.
    pub control_services: usize,
    /// Seconds the idle agent is watched for its CPU use.
    pub idle_secs: u64,
}

impl Plan {
    /// The plan for `--quick` (under five minutes) or the full run (about 20 minutes).
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                quick,
                reps: 3,
                iperf_secs: 1,
                rr: Duration::from_millis(400),
                conn: Duration::from_millis(400),
                conn_threads: 4,
                slices: 2,
                first_packet: Duration::from_millis(300),
                levels: vec![1, 1_000],
                kernel_levels: vec![1, 1_000],
                install_budget: Duration::from_secs(60),
                control_services: 20,
                idle_secs: 3,
            }
        } else {
            Plan {
                quick,
                reps: 5,
                // Shorter runs, five repetitions each, for a full run under 20 minutes: the
                // datapath modes' runs were 60% of the time at 3 s / 2 s / 2 s (1,400 s). The
                // request/response and connection-rate runs went from 1.5 s to 1.2 s (still
                // ~10,000 round trips, ~15,000 connections) when the unloaded first-packet runs
                // (0.4 s per scale probe) and the scale levels' direct control came in.
                iperf_secs: 2,
                rr: Duration::from_millis(1_200),
                conn: Duration::from_millis(1_200),
                conn_threads: 4,
                slices: 6,
                first_packet: Duration::from_millis(400),
                levels: vec![1, 1_000, 10_000, 100_000],
                kernel_levels: vec![1, 1_000, 10_000],
                install_budget: Duration::from_secs(20),
                control_services: 100,
                idle_secs: 6,
            }
        }
    }

    /// The runs of one install figure, starting now: up to [`Plan::reps`], the first always,
    /// another while the installs so far stay within [`Plan::install_budget`].
    pub fn install_runs(&self) -> InstallRuns {
        InstallRuns {
            since: std::time::Instant::now(),
            next: 0,
            reps: self.reps,
            budget: self.install_budget,
        }
    }

    /// The plan with switchyard's scale `levels` (sorted, deduplicated; N=1 is always
    /// measured: every ratio of the scale scenarios is against it).
    pub fn with_levels(mut self, mut levels: Vec<usize>) -> Result<Plan, String> {
        if levels.contains(&0) {
            return Err("a scale level is a number of Services, at least 1".into());
        }
        levels.push(1);
        levels.sort_unstable();
        levels.dedup();
        self.levels = levels;
        Ok(self)
    }

    /// The largest scale level.
    pub fn max_level(&self) -> usize {
        self.levels.last().copied().unwrap_or(1)
    }
}

/// See [`Plan::install_runs`]; yields "run k/n" for the progress line.
#[derive(Clone, Debug)]
pub struct InstallRuns {
    since: std::time::Instant,
    next: usize,
    reps: usize,
    budget: Duration,
}

impl Iterator for InstallRuns {
    type Item = String;

    fn next(&mut self) -> Option<String> {
        if self.next >= self.reps || (self.next > 0 && self.since.elapsed() > self.budget) {
            return None;
        }
        self.next += 1;
        Some(format!("run {}/{}", self.next, self.reps))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chosen_levels_are_sorted_without_repeats_and_always_include_one_service() {
        let plan = Plan::new(true)
            .with_levels(vec![100_000, 1_000, 100_000])
            .unwrap();
        assert_eq!(plan.levels, vec![1, 1_000, 100_000]);
        assert_eq!(plan.max_level(), 100_000);
        assert_eq!(plan.kernel_levels, Plan::new(true).kernel_levels);
    }

    #[test]
    fn zero_services_is_not_a_level() {
        assert!(Plan::new(false).with_levels(vec![0, 10]).is_err());
    }

    #[test]
    fn the_first_install_always_runs_and_another_only_within_the_budget() {
        let plan = Plan::new(true);
        let runs: Vec<String> = plan.install_runs().collect();
        assert_eq!(runs, ["run 1/3", "run 2/3", "run 3/3"]);
        let mut late = plan.install_runs();
        late.since -= plan.install_budget + Duration::from_secs(1);
        assert_eq!(late.next().as_deref(), Some("run 1/3"));
        assert_eq!(late.next(), None);
    }
}
