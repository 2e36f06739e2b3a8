//! The report: every scenario's figures with median, spread and ratio to the scenario's
//! baseline mode, written as `report.json` and `report.md`.
//!
//! Invariant: a ratio is paired (the median of per-round ratios) only over samples that were
//! measured in the same [`Round`]; every other ratio is median over median.
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::stats::Summary;

/// Whether a larger or a smaller figure is better.
#[derive(Clone, Copy, Debug, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Better {
    /// Throughput, rates.
    Higher,
    /// Latencies, times, memory.
    Lower,
}

/// One round of an interleaved measurement: the modes measured in one round ran back to back,
/// so the ratio of two of them sees one state of the shared machine (its drift cancels).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Round(pub u64);

impl Round {
    /// A round no other call in this process returned.
    pub fn next() -> Round {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Round(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// Fewest shared rounds for which a ratio is taken paired rather than median over median.
pub const MIN_PAIRS: usize = 3;

/// One measured figure: a mode (direct, switchyard-clusterip, iptables, …) in one case
/// (same node, N = 10000, …), with its repetitions summarised.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    /// The dataplane mode.
    pub mode: String,
    /// The case within the scenario.
    pub case: String,
    /// Repetitions, median and spread.
    #[serde(flatten)]
    pub summary: Summary,
    /// The round each sample was measured in (parallel to `summary.samples`; `None`: not part
    /// of an interleaved measurement).
    pub rounds: Vec<Option<Round>>,
    /// Ratio to the baseline mode in the same case ([`ratio_of`]).
    pub ratio: Option<f64>,
    /// Rounds the ratio was paired over; 0: median divided by the baseline's median.
    pub paired_rounds: usize,
}

/// A ratio of two figures and how it was taken.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Ratio {
    /// `a / b`.
    pub value: f64,
    /// Rounds both were measured in, when at least [`MIN_PAIRS`]: `value` is the median of
    /// the per-round ratios. 0: `value` is median over median.
    pub paired_rounds: usize,
}

/// `a / b`: the median of the per-round ratios when `a` and `b` share at least [`MIN_PAIRS`]
/// rounds, else `a`'s median over `b`'s. `None` when the denominator is 0.
pub fn ratio_of(a: &Figure, b: &Figure) -> Option<Ratio> {
    let pairs: Vec<f64> = a
        .rounds
        .iter()
        .zip(&a.summary.samples)
        .filter_map(|(r, x)| {
            let r = (*r)?;
            let i = b.rounds.iter().position(|q| *q == Some(r))?;
            let y = b.summary.samples[i];
            (y != 0.0).then(|| x / y)
        })
        .collect();
    if pairs.len() >= MIN_PAIRS {
        return Some(Ratio {
            value: crate::stats::median(&pairs),
            paired_rounds: pairs.len(),
        });
    }
    let m = b.summary.median;
    (m != 0.0).then(|| Ratio {
        value: a.summary.median / m,
        paired_rounds: 0,
    })
}

/// One scenario: one picture, one table.
#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    /// Stable identifier (file name of the plot).
    pub id: String,
    /// What is measured.
    pub title: String,
    /// Unit of the figures.
    pub unit: String,
    /// Which direction is better.
    pub better: Better,
    /// Mode the ratios are taken against.
    pub baseline: Option<String>,
    /// How the figure was obtained.
    pub method: String,
    /// The figures.
    pub figures: Vec<Figure>,
}

impl Scenario {
    /// An empty scenario.
    pub fn new(id: &str, title: &str, unit: &str, better: Better, baseline: Option<&str>) -> Self {
        Scenario {
            id: id.into(),
            title: title.into(),
            unit: unit.into(),
            better,
            baseline: baseline.map(str::to_string),
            method: String::new(),
            figures: Vec::new(),
        }
    }

    /// Sets the method description.
    pub fn method(mut self, text: &str) -> Self {
        self.method = text.into();
        self
    }

    /// Adds (or extends) the figure of `mode` in `case` with `samples`, measured outside any
    /// round.
    pub fn add(&mut self, mode: &str, case: &str, samples: &[f64]) {
        self.push(mode, case, samples.iter().map(|&v| (v, None)));
    }

    /// Adds (or extends) the figure of `mode` in `case` with one sample measured in `round`.
    pub fn add_in_round(&mut self, mode: &str, case: &str, round: Round, v: f64) {
        self.push(mode, case, [(v, Some(round))].into_iter());
    }

    fn push(&mut self, mode: &str, case: &str, new: impl Iterator<Item = (f64, Option<Round>)>) {
        let i = match self
            .figures
            .iter()
            .position(|f| f.mode == mode && f.case == case)
        {
            Some(i) => i,
            None => {
                self.figures.push(Figure {
                    mode: mode.into(),
                    case: case.into(),
                    summary: Summary::of(Vec::new()),
                    rounds: Vec::new(),
                    ratio: None,
                    paired_rounds: 0,
                });
                self.figures.len() - 1
            }
        };
        let f = &mut self.figures[i];
        let mut all = f.summary.samples.clone();
        for (v, round) in new {
            all.push(v);
            f.rounds.push(round);
        }
        f.summary = Summary::of(all);
    }

    /// Fills in every figure's ratio ([`ratio_of`]) to the baseline mode of the same case.
    pub fn compute_ratios(&mut self) {
        let Some(base) = self.baseline.clone() else {
            return;
        };
        let bases: Vec<Figure> = self
            .figures
            .iter()
            .filter(|f| f.mode == base)
            .cloned()
            .collect();
        for f in &mut self.figures {
            let r = bases
                .iter()
                .find(|b| b.case == f.case)
                .and_then(|b| ratio_of(f, b));
            f.ratio = r.map(|r| r.value);
            f.paired_rounds = r.map_or(0, |r| r.paired_rounds);
        }
    }

    /// Modes in first-seen order.
    pub fn modes(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.figures {
            if !out.contains(&f.mode) {
                out.push(f.mode.clone());
            }
        }
        out
    }

    /// Cases in first-seen order.
    pub fn cases(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for f in &self.figures {
            if !out.contains(&f.case) {
                out.push(f.case.clone());
            }
        }
        out
    }

    /// The figure of `mode` in `case`.
    pub fn get(&self, mode: &str, case: &str) -> Option<&Figure> {
        self.figures
            .iter()
            .find(|f| f.mode == mode && f.case == case)
    }
}

/// The machine the run happened on.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Host {
    /// `uname -r`.
    pub kernel: String,
    /// Online CPUs.
    pub cpus: usize,
    /// `iptables -V`.
    pub iptables: String,
    /// `nft -v`.
    pub nft: String,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Whether this was `--quick`.
    pub quick: bool,
    /// Start, seconds since the Unix epoch.
    pub started_unix: u64,
    /// Wall time of the run in seconds.
    pub duration_s: f64,
    /// The machine.
    pub host: Host,
    /// Repetitions of each measurement.
    pub repetitions: usize,
    /// Every scenario.
    pub scenarios: Vec<Scenario>,
    /// Things that went wrong but did not stop the run.
    pub warnings: Vec<String>,
    /// Where the run's time went, part by part in the order they ran.
    pub parts: Vec<Part>,
}

/// One part of the run and its wall time.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Part {
    /// What ran (e.g. "creating fillers up to N=100000").
    pub name: String,
    /// Its wall time, seconds.
    pub seconds: f64,
}

impl Part {
    /// The part `name` that started at `start` and ends now.
    pub fn since(name: impl Into<String>, start: std::time::Instant) -> Part {
        Part {
            name: name.into(),
            seconds: start.elapsed().as_secs_f64(),
        }
    }
}

/// Formats a figure for a table: three significant digits.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn cell(f: Option<&Figure>) -> String {
    match f {
        None => "–".into(),
        Some(f) => {
            let paired = if f.paired_rounds > 0 { " paired" } else { "" };
            let ratio = f
                .ratio
                .map(|r| format!(" ({r:.2}×{paired})"))
                .unwrap_or_default();
            format!(
                "{} ±{:.0}%{ratio}",
                fmt_num(f.summary.median),
                f.summary.spread_pct / 2.0
            )
        }
    }
}

impl Report {
    /// The scenario with `id`.
    pub fn scenario(&self, id: &str) -> Option<&Scenario> {
        self.scenarios.iter().find(|s| s.id == id)
    }

    /// The headline table: the data path ratios to direct, and the scale and programming
    /// figures at the largest N, as markdown.
    pub fn headline(&self) -> String {
        let mut md = String::new();
        let modes = [
            "switchyard-clusterip",
            "switchyard-clusterip-per-packet",
            "switchyard-nodeport",
            "switchyard-nodeport-tc",
            "switchyard-nodeport-xdp",
            "iptables-clusterip",
            "iptables-nodeport",
            "nftables-clusterip",
            "nftables-nodeport",
        ];
        let _ = writeln!(
            md,
            "| ratio to direct pod IP ({} rounds; † median over median, others paired) | {} |",
            self.repetitions,
            modes.join(" | ")
        );
        let _ = writeln!(md, "|---|{}", "---|".repeat(modes.len()));
        for (id, label) in [
            ("throughput", "TCP throughput"),
            ("conn_rate", "connections/s"),
            ("latency_p50", "request/response p50 latency"),
        ] {
            let Some(s) = self.scenario(id) else { continue };
            for case in s.cases() {
                let cells: Vec<String> = modes
                    .iter()
                    .map(|m| {
                        s.get(m, &case)
                            .and_then(|f| Some((f.ratio?, f.paired_rounds)))
                            .map_or("–".into(), |(r, paired)| {
                                format!("{r:.2}{}", if paired > 0 { "" } else { "†" })
                            })
                    })
                    .collect();
                let _ = writeln!(md, "| {label}, {case} | {} |", cells.join(" | "));
            }
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "| at N Services | switchyard | iptables | nftables |");
        let _ = writeln!(md, "|---|---|---|---|");
        for (id, label) in [
            ("scale_conn_rate", "connections/s"),
            (
                "scale_first_packet_p50",
                "first-packet latency p50 under load (µs)",
            ),
            (
                "scale_first_packet_unloaded_p50",
                "first-packet latency p50 unloaded (µs)",
            ),
            ("program_install", "install N services (ms)"),
            ("program_update", "one endpoint change (ms)"),
        ] {
            let Some(s) = self.scenario(id) else { continue };
            for case in s.cases() {
                let cells: Vec<String> = ["switchyard", "iptables", "nftables"]
                    .iter()
                    .map(|m| cell(s.get(m, &case)))
                    .collect();
                let _ = writeln!(md, "| {label}, {case} | {} |", cells.join(" | "));
            }
        }
        md
    }

    /// The full markdown report.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "# switchyard benchmark{}\n",
            if self.quick { " (--quick)" } else { "" }
        );
        let _ = writeln!(
            md,
            "Kernel {}, {} CPUs, {}, {}. Run took {:.0} s; every figure is the median of {} repetitions (± half the min–max spread), with its ratio to the scenario's baseline in parentheses. A ratio marked *paired* is the median of the per-round ratios of two modes measured by turns (one round: each mode once, back to back), so drift of the machine between rounds cancels; the others are median over median.\n",
            self.host.kernel,
            self.host.cpus,
            self.host.iptables,
            self.host.nft,
            self.duration_s,
            self.repetitions
        );
        let _ = writeln!(md, "## Headline\n\n{}", self.headline());
        let _ = writeln!(
            md,
            "## Targets\n\nEach figure from this run's medians (see bench/README.md).\n\n{}",
            crate::targets::markdown(self)
        );
        for s in &self.scenarios {
            let _ = writeln!(md, "## {} ({})\n", s.title, s.unit);
            if !s.method.is_empty() {
                let _ = writeln!(md, "{}\n", s.method);
            }
            match &s.baseline {
                Some(b) => {
                    let _ = writeln!(md, "Ratios to **{b}**. Plot: `{}.png`.\n", s.id);
                }
                None => {
                    let _ = writeln!(
                        md,
                        "No baseline (only switchyard has this). Plot: `{}.png`.\n",
                        s.id
                    );
                }
            }
            let cases = s.cases();
            let _ = writeln!(md, "| mode | {} |", cases.join(" | "));
            let _ = writeln!(md, "|---|{}", "---|".repeat(cases.len()));
            for m in s.modes() {
                let cells: Vec<String> = cases.iter().map(|c| cell(s.get(&m, c))).collect();
                let _ = writeln!(md, "| {m} | {} |", cells.join(" | "));
            }
            let _ = writeln!(md);
        }
        if !self.parts.is_empty() {
            let _ = writeln!(md, "## Where the run's time went\n");
            let _ = writeln!(md, "| part | s | share |");
            let _ = writeln!(md, "|---|---|---|");
            for p in &self.parts {
                let share = p.seconds / self.duration_s.max(f64::EPSILON) * 100.0;
                let _ = writeln!(md, "| {} | {:.0} | {share:.0}% |", p.name, p.seconds);
            }
            let _ = writeln!(md);
        }
        if !self.warnings.is_empty() {
            let _ = writeln!(md, "## Warnings\n");
            for w in &self.warnings {
                let _ = writeln!(md, "- {w}");
            }
        }
        md
    }

    /// Writes `report.json` and `report.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let json = serde_json::to_string_pretty(self).map_err(std::io::Error::other)?;
        std::fs::write(dir.join("report.json"), json)?;
        std::fs::write(dir.join("report.md"), self.markdown())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_taken_against_the_baseline_in_the_same_case() {
        let mut s = Scenario::new("t", "t", "x", Better::Higher, Some("direct"));
        s.add("direct", "same node", &[10.0, 10.0, 10.0]);
        s.add("direct", "cross node", &[5.0, 5.0, 5.0]);
        s.add("switchyard", "same node", &[9.0, 9.0, 9.0]);
        s.add("switchyard", "cross node", &[5.0, 4.0, 6.0]);
        s.compute_ratios();
        assert_eq!(s.get("switchyard", "same node").unwrap().ratio, Some(0.9));
        assert_eq!(s.get("switchyard", "cross node").unwrap().ratio, Some(1.0));
        assert_eq!(s.get("direct", "same node").unwrap().ratio, Some(1.0));
    }

    fn in_rounds(s: &mut Scenario, mode: &str, samples: &[(u64, f64)]) {
        for &(r, v) in samples {
            s.add_in_round(mode, "same node", Round(r), v);
        }
    }

    #[test]
    fn modes_measured_in_the_same_rounds_are_compared_round_by_round() {
        // The machine speeds up over the run; each round switchyard is ~10% ahead.
        let mut s = Scenario::new("t", "t", "x", Better::Higher, Some("direct"));
        in_rounds(&mut s, "direct", &[(0, 100.0), (1, 120.0), (2, 160.0)]);
        in_rounds(&mut s, "switchyard", &[(0, 110.0), (1, 130.0), (2, 176.0)]);
        s.compute_ratios();
        let f = s.get("switchyard", "same node").unwrap();
        assert_eq!(f.paired_rounds, 3);
        assert!((f.ratio.unwrap() - 1.1).abs() < 1e-9, "{:?}", f.ratio);
        // Median over median would have read 130 / 120.
        assert!(
            cell(Some(f)).contains("(1.10× paired)"),
            "{}",
            cell(Some(f))
        );
    }

    #[test]
    fn too_few_shared_rounds_fall_back_to_median_over_median() {
        let mut s = Scenario::new("t", "t", "x", Better::Higher, Some("direct"));
        in_rounds(&mut s, "direct", &[(0, 100.0), (1, 120.0), (2, 160.0)]);
        in_rounds(&mut s, "switchyard", &[(1, 132.0), (2, 176.0), (7, 90.0)]);
        s.add("switchyard", "same node", &[500.0]);
        s.compute_ratios();
        let f = s.get("switchyard", "same node").unwrap();
        assert_eq!(f.paired_rounds, 0);
        assert_eq!(f.ratio, Some((132.0 + 176.0) / 2.0 / 120.0));
    }

    #[test]
    fn markdown_lists_every_mode_and_case() {
        let mut s = Scenario::new(
            "conn_rate",
            "New connections",
            "conn/s",
            Better::Higher,
            Some("direct"),
        );
        s.add("direct", "same node", &[1000.0]);
        s.add("iptables-clusterip", "same node", &[800.0]);
        s.compute_ratios();
        let r = Report {
            quick: true,
            started_unix: 0,
            duration_s: 1.0,
            host: Host::default(),
            repetitions: 1,
            scenarios: vec![s],
            warnings: vec![],
            parts: vec![Part {
                name: "direct and switchyard datapath".into(),
                seconds: 0.25,
            }],
        };
        let md = r.markdown();
        assert!(
            md.contains("| iptables-clusterip | 800 ±0% (0.80×) |"),
            "{md}"
        );
        assert!(
            md.contains("| direct and switchyard datapath | 0 | 25% |"),
            "{md}"
        );
        assert!(
            md.contains("| connections/s, same node | – | – | – | – | – | 0.80† |"),
            "{md}"
        );
    }
}
