//! Bulk TCP throughput with iperf3, run from a lab namespace against an iperf3 server pod.
use std::net::SocketAddr;

use serde_json::Value;
use switchyard_lab::netns::in_ns;

/// Errors of an iperf3 run.
#[derive(Debug, thiserror::Error)]
pub enum IperfError {
    /// Refused: traffic is only sent from the lab's namespaces.
    #[error("refusing to run iperf3 in {0:?}: only sy-* lab namespaces")]
    NotLab(String),
    /// iperf3 could not run or failed.
    #[error("iperf3 -c {addr} in {netns} failed: {msg}")]
    Failed {
        /// Namespace.
        netns: String,
        /// Target.
        addr: SocketAddr,
        /// Its error.
        msg: String,
    },
}

/// Runs `iperf3 -c addr` for `secs` seconds inside `netns`; received throughput in Gbit/s.
pub fn throughput(netns: &str, addr: SocketAddr, secs: u32) -> Result<f64, IperfError> {
    if !netns.starts_with("sy-") {
        return Err(IperfError::NotLab(netns.into()));
    }
    let fail = |msg: String| IperfError::Failed {
        netns: netns.into(),
        addr,
        msg,
    };
    let out = in_ns(netns, &["iperf3", "-J", "-c"])
        .arg(addr.ip().to_string())
        .args(["-p", &addr.port().to_string(), "-t", &secs.to_string()])
        .args(["--connect-timeout", "2000"])
        .output()
        .map_err(|e| fail(format!("cannot start ip netns exec: {e}")))?;
    let v: Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        fail(format!(
            "no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    })?;
    parse(&v).map_err(fail)
}

/// Received Gbit/s from iperf3's JSON.
pub fn parse(v: &Value) -> Result<f64, String> {
    if let Some(e) = v["error"].as_str() {
        return Err(e.to_string());
    }
    v.pointer("/end/sum_received/bits_per_second")
        .and_then(Value::as_f64)
        .map(|b| b / 1e9)
        .ok_or_else(|| "iperf3 JSON has no end.sum_received".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_received_throughput_and_errors() {
        let v = serde_json::json!({"end": {"sum_received": {"bits_per_second": 2.5e10}}});
        assert_eq!(parse(&v), Ok(25.0));
        let e = serde_json::json!({"error": "unable to connect to server"});
        assert_eq!(parse(&e), Err("unable to connect to server".into()));
    }

    #[test]
    fn refuses_namespaces_outside_the_lab() {
        let a: SocketAddr = "127.0.0.1:5201".parse().unwrap();
        assert!(matches!(
            throughput("default", a, 1),
            Err(IperfError::NotLab(_))
        ));
    }
}
