//! Which exposition format `/metrics` answers in: OpenMetrics to clients that ask for it (the
//! Prometheus server does), the Prometheus text format 0.0.4 to everyone else (curl,
//! `promtool check metrics`, older scrapers) — what kube-proxy serves.
//!
//! Invariant: the 0.0.4 text carries exactly the samples of the OpenMetrics text; only the
//! metadata differs. prometheus-client writes OpenMetrics only, where a counter family `x` has
//! samples `x_total`; 0.0.4 names the family by its sample (`x_total`), has no `# UNIT` and no
//! `# EOF`, and says `untyped` for `unknown`. Written here because prometheus-client has no
//! 0.0.4 encoder and the conversion is these few line rewrites.
use std::collections::HashSet;

/// Content type of the OpenMetrics text.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Content type of the Prometheus text format.
pub const TEXT_004: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Whether a client's `Accept` header asks for OpenMetrics.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    accept.is_some_and(|a| a.contains("application/openmetrics-text"))
}

/// The Prometheus text format 0.0.4 of an OpenMetrics exposition.
pub fn to_text_004(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        match meta {
            Some((prefix, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let name = if counters.contains(name) {
                    format!("{name}_total")
                } else {
                    name.to_string()
                };
                let tail = if prefix == "# TYPE " && tail == "unknown" {
                    "untyped"
                } else {
                    tail
                };
                out.push_str(&format!("{prefix}{name} {tail}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const OM: &str = "# HELP sy_packets Packets.\n# TYPE sy_packets counter\n\
        sy_packets_total{event=\"lb_new\"} 3\n\
        # HELP sy_entries Entries.\n# TYPE sy_entries gauge\nsy_entries{table=\"ct\"} 7\n\
        # HELP sy_sync_seconds Sync.\n# TYPE sy_sync_seconds histogram\n# UNIT sy_sync_seconds seconds\n\
        sy_sync_seconds_sum 0.5\nsy_sync_seconds_count 2\nsy_sync_seconds_bucket{le=\"+Inf\"} 2\n\
        # EOF\n";

    #[test]
    fn a_counter_family_is_named_by_its_total_sample() {
        let t = to_text_004(OM);
        assert!(t.contains("# HELP sy_packets_total Packets.\n# TYPE sy_packets_total counter\nsy_packets_total{event=\"lb_new\"} 3\n"), "{t}");
    }

    #[test]
    fn gauges_and_histograms_keep_their_names_and_samples() {
        let t = to_text_004(OM);
        assert!(
            t.contains("# TYPE sy_entries gauge\nsy_entries{table=\"ct\"} 7\n"),
            "{t}"
        );
        assert!(
            t.contains("# TYPE sy_sync_seconds histogram\nsy_sync_seconds_sum 0.5\n"),
            "{t}"
        );
    }

    #[test]
    fn the_openmetrics_only_lines_are_left_out() {
        let t = to_text_004(OM);
        assert!(!t.contains("# EOF") && !t.contains("# UNIT"), "{t}");
    }

    #[test]
    fn every_sample_line_is_kept_as_it_is() {
        let samples = |s: &str| -> Vec<String> {
            s.lines()
                .filter(|l| !l.starts_with('#'))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(samples(&to_text_004(OM)), samples(OM));
    }

    #[test]
    fn only_a_client_asking_for_openmetrics_gets_it() {
        assert!(wants_openmetrics(Some(
            "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
        )));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(None));
    }
}
