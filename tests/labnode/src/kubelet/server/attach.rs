//! `/attach/{namespace}/{pod}/{container}` over a WebSocket (`v5.channel.k8s.io`): what the
//! running container writes from now on, its stdout on channel 1 and its stderr on channel 2,
//! until it exits; then a `Success` status. Containers here have no standard input, so what the
//! client types is dropped.
//!
//! Invariant: the output is exactly what the container's log shim records from the moment of
//! the attach ([`crate::kubelet::logs::read::entries`]).
use super::channels::{self, Incoming};
use super::exec::upgrade;
use super::logs::parse_bool;
use super::{pods, query, ApiError, State};
use crate::kubelet::logs::cri::Stream;
use crate::kubelet::logs::read::{self, Options};
use axum::extract::ws::WebSocket;
use axum::extract::{Path, Request};
use axum::response::{IntoResponse, Response};
use std::path::PathBuf;

/// The streams an attach asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
}

impl Params {
    /// Reads and checks a query string.
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let (mut p, mut stdin) = (Params::default(), false);
        for (k, v) in query::pairs(raw) {
            match k.as_str() {
                "stdin" => stdin = parse_bool(&k, &v)?,
                "stdout" => p.stdout = parse_bool(&k, &v)?,
                "stderr" => p.stderr = parse_bool(&k, &v)?,
                _ => {}
            }
        }
        if !(stdin || p.stdout || p.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(p)
    }
}

/// The handler.
pub async fn handle(
    axum::extract::State(state): axum::extract::State<State>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    req: Request,
) -> Result<Response, ApiError> {
    let (mut parts, _) = req.into_parts();
    let params = Params::parse(parts.uri.query())?;
    let target = pods::find(&state.node, &namespace, &pod, &container)?;
    target.running()?;
    let log = target.log_file(false)?;
    let (ws, v5) = upgrade(&mut parts).await?;
    Ok(ws
        .on_upgrade(move |socket| session(socket, v5, log, params))
        .into_response())
}

async fn session(socket: WebSocket, v5: bool, log: PathBuf, p: Params) {
    let (out, mut incoming) = channels::start(socket, v5);
    let first = if p.stdout {
        channels::STDOUT
    } else {
        channels::STDERR
    };
    out.send(first, &[]).await;
    let follow = Options {
        follow: true,
        tail_lines: Some(0),
        ..Default::default()
    };
    let mut entries = read::entries(log, follow);
    loop {
        tokio::select! {
            batch = entries.recv() => match batch {
                Some(Ok(batch)) => {
                    for e in batch {
                        let (wanted, channel) = match e.stream {
                            Stream::Stdout => (p.stdout, channels::STDOUT),
                            Stream::Stderr => (p.stderr, channels::STDERR),
                        };
                        let mut data = e.content;
                        if !e.partial {
                            data.push(b'\n');
                        }
                        if wanted && !out.send(channel, &data).await {
                            return;
                        }
                    }
                }
                Some(Err(e)) => {
                    out.finish(&channels::internal_error(&e.to_string())).await;
                    return;
                }
                None => break,
            },
            msg = incoming.recv() => {
                if matches!(msg, None | Some(Incoming::Gone)) {
                    return;
                }
            }
        }
    }
    out.finish(&channels::exit_status(0, &[])).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_needs_one_stream() {
        assert_eq!(
            Params::parse(Some("stdout=true&stderr=1")).unwrap(),
            Params {
                stdout: true,
                stderr: true
            }
        );
        assert!(Params::parse(Some("tty=true")).is_err());
    }
}
