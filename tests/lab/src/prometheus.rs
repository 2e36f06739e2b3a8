//! A real Prometheus server (Debian's `prometheus`) scraping the lab's agents, and queries
//! through its HTTP API — what an operator's monitoring sees of switchyard.
//!
//! Invariant: the server is one of the lab's background processes (its pid in
//! `target/lab/pids/prometheus.pid`), listening on loopback only and scraping only the lab's
//! node addresses, so `lab down` (or a failed test's drop of the lab) stops it and it never talks
//! to anything outside the lab.
use std::net::TcpListener;
use std::time::Duration;

use serde_json::Value;

use crate::{cmd, kube, topology, Lab, LabError};

/// The agents' metrics port (`--metrics-address 0.0.0.0:10249`, the DaemonSet's default).
pub const METRICS_PORT: u16 = 10249;

/// How often the server scrapes the agents.
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// A running Prometheus server.
#[derive(Debug)]
pub struct Prometheus {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

/// The scrape configuration: job `switchyard`, one target per lab node.
pub fn config(nodes: usize) -> String {
    let targets: Vec<String> = (1..=nodes)
        .map(|n| format!("'{}:{METRICS_PORT}'", topology::node_addr(n)))
        .collect();
    format!(
        "global:\n  scrape_interval: {s}s\n  scrape_timeout: {s}s\n\
         scrape_configs:\n  - job_name: switchyard\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", "),
        s = SCRAPE_INTERVAL.as_secs()
    )
}

impl Prometheus {
    /// Starts a server scraping every node of `lab` and waits until each target is up.
    pub fn start(lab: &Lab) -> Result<Prometheus, LabError> {
        let dir = lab.dir().join("prometheus");
        // A fresh database: figures from an earlier lab must not show.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| LabError::Io(dir.clone(), e))?;
        let conf = dir.join("prometheus.yml");
        std::fs::write(&conf, config(lab.opts.nodes)).map_err(|e| LabError::Io(conf.clone(), e))?;
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        lab.start_process(
            "prometheus",
            None,
            &[
                "prometheus",
                &format!("--config.file={}", conf.display()),
                &format!("--storage.tsdb.path={}", dir.join("data").display()),
                &format!("--web.listen-address={listen}"),
            ],
        )?;
        let p = Prometheus {
            url: format!("http://{listen}"),
        };
        let hint = format!("see {}", lab.log_of("prometheus").display());
        let nodes = lab.opts.nodes;
        kube::wait(
            &format!("Prometheus to scrape all {nodes} agents"),
            Duration::from_secs(30),
            Some(&hint),
            || Ok(p.value("sum(up{job=\"switchyard\"})")? == Some(nodes as f64)),
        )?;
        Ok(p)
    }

    /// The result of an instant PromQL query: each series' labels and value.
    pub fn query(&self, promql: &str) -> Result<Vec<(Value, f64)>, LabError> {
        let body = cmd::run(&[
            "curl",
            "-sS",
            "--max-time",
            "5",
            &format!("{}/api/v1/query", self.url),
            "--data-urlencode",
            &format!("query={promql}"),
        ])?;
        parse_vector(&body)
    }

    /// The single value of a query that sums to one series, or `None` if it has none.
    pub fn value(&self, promql: &str) -> Result<Option<f64>, LabError> {
        Ok(self.query(promql)?.first().map(|(_, v)| *v))
    }
}

/// An instant-vector answer of the HTTP API: `(metric labels, value)` per series.
pub fn parse_vector(body: &str) -> Result<Vec<(Value, f64)>, LabError> {
    let bad = |why: &str| LabError::Unexpected(format!("Prometheus answered {why}: {body}"));
    let v: Value = serde_json::from_str(body).map_err(|_| bad("no JSON"))?;
    if v["status"] != "success" {
        return Err(bad("an error"));
    }
    let series = v
        .pointer("/data/result")
        .and_then(Value::as_array)
        .ok_or_else(|| bad("no result"))?;
    series
        .iter()
        .map(|s| {
            let value = s
                .pointer("/value/1")
                .and_then(Value::as_str)
                .and_then(|x| x.parse::<f64>().ok())
                .ok_or_else(|| bad("a sample without a value"))?;
            Ok((s["metric"].clone(), value))
        })
        .collect()
}

fn free_port() -> Result<u16, LabError> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| LabError::Io("127.0.0.1:0".into(), e))?;
    l.local_addr()
        .map(|a| a.port())
        .map_err(|e| LabError::Io("127.0.0.1:0".into(), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_configuration_scrapes_each_node_address_on_the_metrics_port() {
        let c = config(3);
        assert!(
            c.contains("targets: ['198.18.0.11:10249', '198.18.0.12:10249', '198.18.0.13:10249']"),
            "{c}"
        );
        assert!(c.contains("scrape_interval: 1s"), "{c}");
    }

    #[test]
    fn an_instant_vector_gives_labels_and_values() {
        let body = r#"{"status":"success","data":{"resultType":"vector","result":[
            {"metric":{"instance":"198.18.0.11:10249"},"value":[1700000000.1,"42"]}]}}"#;
        let v = parse_vector(body).unwrap();
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].0["instance"], "198.18.0.11:10249");
        assert_eq!(v[0].1, 42.0);
    }

    #[test]
    fn an_error_answer_is_an_error() {
        let body = r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#;
        assert!(parse_vector(body).is_err());
    }
}
