//! How long and how often each measurement runs (`--quick` or full).
use std::time::Duration;

/// The knobs of one run.
#[derive(Clone, Debug)]
pub struct Plan {
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
    /// Numbers of installed Services for the scale scenarios (ascending).
    pub levels: Vec<usize>,
    /// Services created one by one for the control loop.
    pub control_services: usize,
    /// Seconds the idle agent is watched for its CPU use.
    pub idle_secs: u64,
}

impl Plan {
    /// The plan for `--quick` (under five minutes) or the full run (under an hour).
    pub fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                reps: 3,
                iperf_secs: 1,
                rr: Duration::from_millis(400),
                conn: Duration::from_millis(400),
                conn_threads: 4,
                levels: vec![1, 1_000],
                control_services: 20,
                idle_secs: 3,
            }
        } else {
            Plan {
                reps: 5,
                iperf_secs: 4,
                rr: Duration::from_secs(2),
                conn: Duration::from_secs(2),
                conn_threads: 4,
                levels: vec![1, 1_000, 10_000],
                control_services: 100,
                idle_secs: 10,
            }
        }
    }

    /// The largest scale level.
    pub fn max_level(&self) -> usize {
        self.levels.last().copied().unwrap_or(1)
    }
}
