//! `GET /exec/{namespace}/{pod}/{container}?command=…&stdin=…&stdout=…&stderr=…&tty=…` upgraded to
//! a WebSocket speaking `v5.channel.k8s.io` (or v4): runs the command inside the container
//! ([`super::nsenter`]), streams its output, feeds it the client's input, resizes its terminal,
//! and ends with the `Status` kubectl turns into its exit code ([`super::channels`]).
//!
//! Invariants: the status is sent only after all output the command wrote has been sent (or a
//! second after it exited, should a process it left behind keep its output open); a command
//! whose client goes away is killed with its whole session.
use super::channels::{self, Incoming, Outgoing};
use super::logs::parse_bool;
use super::nsenter::{self, Container, Pty};
use super::{pods, query, ApiError, State};
use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{FromRequestParts, Path, Request};
use axum::response::{IntoResponse, Response};
use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long output may still come after the command exited.
const DRAIN: Duration = Duration::from_secs(1);

/// The query of an exec request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Params {
    /// The command and its arguments.
    pub command: Vec<String>,
    /// Feed the client's input.
    pub stdin: bool,
    /// Send the standard output.
    pub stdout: bool,
    /// Send the standard error.
    pub stderr: bool,
    /// Run it on a terminal (its output comes on stdout).
    pub tty: bool,
}

impl Params {
    /// Reads and checks a query string, with kube-apiserver's messages.
    pub fn parse(raw: Option<&str>) -> Result<Params, ApiError> {
        let mut p = Params::default();
        for (k, v) in query::pairs(raw) {
            match k.as_str() {
                "command" => p.command.push(v),
                "stdin" => p.stdin = parse_bool(&k, &v)?,
                "stdout" => p.stdout = parse_bool(&k, &v)?,
                "stderr" => p.stderr = parse_bool(&k, &v)?,
                "tty" => p.tty = parse_bool(&k, &v)?,
                _ => {}
            }
        }
        if p.command.is_empty() {
            return Err(ApiError::bad_request(
                "you must specify at least one command for the container",
            ));
        }
        if !(p.stdin || p.stdout || p.stderr) {
            return Err(ApiError::bad_request(
                "you must specify at least 1 of stdin, stdout, stderr",
            ));
        }
        Ok(p)
    }
}

/// Whether a request asks for a WebSocket.
pub fn is_websocket(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get(axum::http::header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

/// Upgrades `parts` to a WebSocket with one of the channel protocols; returns it and whether it
/// is v5.
pub async fn upgrade(
    parts: &mut axum::http::request::Parts,
) -> Result<(WebSocketUpgrade, bool), ApiError> {
    if !is_websocket(&parts.headers) {
        return Err(ApiError::bad_request(
            "this node runtime streams over WebSockets only (v5.channel.k8s.io); SPDY is not supported",
        ));
    }
    let ws = WebSocketUpgrade::from_request_parts(parts, &())
        .await
        .map_err(|e| ApiError::bad_request(e.body_text()))?
        .protocols([channels::V5, channels::V4]);
    let v5 = match ws.selected_protocol().and_then(|p| p.to_str().ok()) {
        Some(p) => p == channels::V5,
        None => {
            return Err(ApiError::bad_request(format!(
                "requested protocol(s) are not supported; supports [{} {}]",
                channels::V5,
                channels::V4
            )))
        }
    };
    Ok((ws, v5))
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
    let pid = target.running()?;
    let (ws, v5) = upgrade(&mut parts).await?;
    Ok(ws
        .on_upgrade(move |socket| session(socket, v5, pid, params))
        .into_response())
}

/// Copies `from` to the client on `channel` until it ends.
async fn pump(mut from: impl AsyncRead + Unpin, out: Outgoing, channel: u8) {
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        match from.read(&mut buf).await {
            // A terminal whose last user is gone reads EIO: its end.
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if !out.send(channel, &buf[..n]).await {
                    return;
                }
            }
        }
    }
}

/// Where the client's input goes.
enum Input {
    Pipe(Option<tokio::process::ChildStdin>),
    Tty(tokio::fs::File),
    None,
}

impl Input {
    async fn write(&mut self, data: &[u8]) {
        let ok = match self {
            Input::Pipe(Some(w)) => w.write_all(data).await.is_ok(),
            Input::Tty(w) => w.write_all(data).await.is_ok() && w.flush().await.is_ok(),
            _ => true,
        };
        if !ok {
            self.close();
        }
    }

    fn close(&mut self) {
        if let Input::Pipe(w) = self {
            *w = None;
        }
    }
}

/// One exec session on an upgraded connection.
async fn session(socket: WebSocket, v5: bool, pid: i32, p: Params) {
    let (out, mut incoming) = channels::start(socket, v5);
    // client-go reads the connection before it has set up its streams and discards output on
    // a stream it has not created yet ("Unknown stream id"): the command starts once kubectl
    // showed it is ready (see [`settle`]).
    let Some(early) = settle(&mut incoming, p.tty).await else {
        return;
    };
    // Tells the client the streams are set up, as the kubelet does.
    let first = if p.stdout {
        channels::STDOUT
    } else if p.stderr {
        channels::STDERR
    } else {
        channels::ERROR
    };
    out.send(first, &[]).await;
    let Started {
        mut child,
        mut input,
        mut pumps,
        master,
    } = match start(pid, &p, &out, initial_size(&early)) {
        Ok(s) => s,
        Err(e) => {
            let why = match e.kind() {
                std::io::ErrorKind::NotFound => format!(
                    "exec: {:?}: executable file not found in $PATH",
                    p.command[0]
                ),
                _ => e.to_string(),
            };
            let message = format!("error executing command in container: {why}");
            tracing::info!(command = ?p.command, error = %e, "exec failed");
            out.finish(&channels::internal_error(&message)).await;
            return;
        }
    };
    let session_id = child.id().and_then(|id| i32::try_from(id).ok());
    let mut early = early.into_iter();
    let status = loop {
        let next = early.next();
        tokio::select! {
            status = child.wait(), if next.is_none() => break status,
            msg = async { match next { Some(m) => Some(m), None => incoming.recv().await } } => match msg.unwrap_or(Incoming::Gone) {
                Incoming::Stdin(data) => input.write(&data).await,
                Incoming::CloseStdin => input.close(),
                Incoming::Resize { width, height } => {
                    if let Some(m) = &master {
                        let _ = nsenter::resize(m, width, height);
                    }
                }
                Incoming::Ignored => {}
                Incoming::Gone => {
                    if let Some(sid) = session_id {
                        let _ = nix::sys::signal::killpg(
                            nix::unistd::Pid::from_raw(sid),
                            nix::sys::signal::Signal::SIGKILL,
                        );
                    }
                    let _ = child.wait().await;
                    return;
                }
            },
        }
    };
    drop(input);
    let drained =
        tokio::time::timeout(DRAIN, async { while pumps.recv().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::debug!(command = ?p.command, "output still open after the command exited");
    }
    let code = match status {
        Ok(s) => crate::kubelet::process::Exit::from_status(s).code,
        Err(_) => -1,
    };
    out.finish(&channels::exit_status(code, &p.command)).await;
}

/// How long a terminal session waits for the client's first terminal size.
const FIRST_SIZE: Duration = Duration::from_secs(2);

/// How long a session without a terminal waits for a first message from the client.
const SETTLE: Duration = Duration::from_millis(250);

/// Waits until the client has set up its streams: on a terminal, kubectl sends the terminal's
/// size right after (waited for at most [`FIRST_SIZE`]); otherwise its first input, or
/// [`SETTLE`] without one (a command without input: the kubelet's own start through the
/// container runtime takes longer than that too). Returns the messages received meanwhile, or
/// `None` when the client went away.
async fn settle(incoming: &mut mpsc::Receiver<Incoming>, tty: bool) -> Option<Vec<Incoming>> {
    let mut early = Vec::new();
    let wait = if tty { FIRST_SIZE } else { SETTLE };
    let _ = tokio::time::timeout(wait, async {
        while let Some(msg) = incoming.recv().await {
            let done = !tty || matches!(msg, Incoming::Resize { .. } | Incoming::Gone);
            early.push(msg);
            if done {
                return;
            }
        }
        early.push(Incoming::Gone);
    })
    .await;
    match early.last() {
        Some(Incoming::Gone) => None,
        _ => Some(early),
    }
}

/// The last terminal size among `early` messages.
fn initial_size(early: &[Incoming]) -> Option<(u16, u16)> {
    early.iter().rev().find_map(|m| match m {
        Incoming::Resize { width, height } => Some((*width, *height)),
        _ => None,
    })
}

/// A started command.
struct Started {
    child: tokio::process::Child,
    input: Input,
    /// Ends (all senders dropped) once every output pump has finished.
    pumps: mpsc::Receiver<()>,
    /// The terminal's controlling side, for resizes.
    master: Option<OwnedFd>,
}

fn spawn_pump(
    from: impl AsyncRead + Unpin + Send + 'static,
    out: &Outgoing,
    channel: u8,
    done: &mpsc::Sender<()>,
) {
    let (out, done) = (out.clone(), done.clone());
    tokio::spawn(async move {
        pump(from, out, channel).await;
        drop(done);
    });
}

/// Starts the command in the container of `pid` with the streams `p` asks for, its output
/// pumped to `out`, on a terminal of `size` (columns, rows) when it asks for one.
fn start(
    pid: i32,
    p: &Params,
    out: &Outgoing,
    size: Option<(u16, u16)>,
) -> std::io::Result<Started> {
    let container = Container::of(pid)?;
    let (done, pumps) = mpsc::channel(1);
    let started = if p.tty {
        let Pty { master, slave } = Pty::open()?;
        if let Some((width, height)) = size {
            nsenter::resize(&master, width, height)?;
        }
        let mut cmd = container.command(&p.command, true)?;
        cmd.stdin(Stdio::from(slave.try_clone()?))
            .stdout(Stdio::from(slave.try_clone()?))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn()?;
        // The command's copies of the terminal are closed with `cmd`, so reading the
        // controlling side ends (EIO) once the command and its children are gone.
        drop(cmd);
        let file = std::fs::File::from(master.try_clone()?);
        spawn_pump(
            tokio::fs::File::from_std(file.try_clone()?),
            out,
            channels::STDOUT,
            &done,
        );
        Started {
            child,
            input: if p.stdin {
                Input::Tty(tokio::fs::File::from_std(file))
            } else {
                Input::None
            },
            pumps,
            master: Some(master),
        }
    } else {
        let piped = |on: bool| if on { Stdio::piped() } else { Stdio::null() };
        let mut cmd = container.command(&p.command, false)?;
        cmd.stdin(piped(p.stdin))
            .stdout(piped(p.stdout))
            .stderr(piped(p.stderr));
        let mut child = cmd.spawn()?;
        if let Some(o) = child.stdout.take() {
            spawn_pump(o, out, channels::STDOUT, &done);
        }
        if let Some(e) = child.stderr.take() {
            spawn_pump(e, out, channels::STDERR, &done);
        }
        Started {
            input: Input::Pipe(child.stdin.take()),
            child,
            pumps,
            master: None,
        }
    };
    Ok(started)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_queries_are_read_and_checked_with_the_api_servers_words() {
        let p = Params::parse(Some(
            "command=sh&command=-c&command=echo+out%3B+exit+3&stdin=true&stdout=true&stderr=true",
        ))
        .unwrap();
        assert_eq!(p.command, vec!["sh", "-c", "echo out; exit 3"]);
        assert!(p.stdin && p.stdout && p.stderr && !p.tty);
        assert_eq!(
            Params::parse(Some("stdout=true")).unwrap_err().message,
            "you must specify at least one command for the container"
        );
        assert_eq!(
            Params::parse(Some("command=ls")).unwrap_err().message,
            "you must specify at least 1 of stdin, stdout, stderr"
        );
    }
}
