//! The Kubernetes WebSocket streaming protocol `v5.channel.k8s.io` (and `v4`, which lacks the
//! close signal), as the kubelet speaks it for exec and attach: every binary message starts with
//! a channel byte — 0 stdin, 1 stdout, 2 stderr, 3 error (a `Status` in JSON, sent once at the
//! end), 4 resize (`{"Width":W,"Height":H}`) — and in v5, `[255, channel]` closes the client's
//! side of a channel (stdin's end of file).
//!
//! Invariant: the server's messages go out in the order they were queued, so a command's output
//! always precedes its status; the status is the last message, followed by a normal close.
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use serde_json::json;
use tokio::sync::mpsc;

/// The current protocol (with the close signal).
pub const V5: &str = "v5.channel.k8s.io";
/// The previous one.
pub const V4: &str = "v4.channel.k8s.io";
/// Standard input.
pub const STDIN: u8 = 0;
/// Standard output.
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;
/// The final status.
pub const ERROR: u8 = 3;
/// Terminal size changes.
pub const RESIZE: u8 = 4;
/// v5: closes the sender's side of the channel named by the next byte.
pub const CLOSE: u8 = 255;

/// What a client's message asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes for the command's standard input.
    Stdin(Bytes),
    /// Standard input has ended.
    CloseStdin,
    /// The terminal has a new size.
    Resize {
        /// Columns.
        width: u16,
        /// Rows.
        height: u16,
    },
    /// Nothing to act on (an unknown channel, an empty message).
    Ignored,
    /// The client closed the connection or went away.
    Gone,
}

/// What a binary message from the client means under protocol `v5` (or v4).
pub fn incoming(msg: &[u8], v5: bool) -> Incoming {
    let Some((&channel, data)) = msg.split_first() else {
        return Incoming::Ignored;
    };
    match channel {
        STDIN if !data.is_empty() => Incoming::Stdin(Bytes::copy_from_slice(data)),
        CLOSE if v5 && data == [STDIN] => Incoming::CloseStdin,
        RESIZE => {
            #[derive(serde::Deserialize)]
            #[serde(rename_all = "PascalCase")]
            struct Size {
                width: u16,
                height: u16,
            }
            match serde_json::from_slice::<Size>(data) {
                Ok(s) => Incoming::Resize {
                    width: s.width,
                    height: s.height,
                },
                Err(_) => Incoming::Ignored,
            }
        }
        _ => Incoming::Ignored,
    }
}

/// The `Status` of a command that exited with `code` (the kubelet's words).
pub fn exit_status(code: i32, argv: &[String]) -> serde_json::Value {
    if code == 0 {
        return json!({"metadata": {}, "status": "Success"});
    }
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!(
            "command terminated with non-zero exit code: error executing command {argv:?}, exit code {code}"
        ),
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
    })
}

/// The `Status` of a failure to run anything (kube's `NewInternalError`).
pub fn internal_error(message: &str) -> serde_json::Value {
    json!({
        "metadata": {},
        "status": "Failure",
        "message": format!("Internal error occurred: {message}"),
        "reason": "InternalError",
        "details": {"causes": [{"message": message}]},
        "code": 500,
    })
}

/// The sending side of a session: queues messages for the client.
#[derive(Clone, Debug)]
pub struct Outgoing(mpsc::Sender<Message>);

impl Outgoing {
    /// Queues `data` on `channel`; false once the client is gone.
    pub async fn send(&self, channel: u8, data: &[u8]) -> bool {
        let mut msg = Vec::with_capacity(data.len() + 1);
        msg.push(channel);
        msg.extend_from_slice(data);
        self.0.send(Message::Binary(msg.into())).await.is_ok()
    }

    /// Sends the final status and closes the connection normally.
    pub async fn finish(self, status: &serde_json::Value) {
        self.send(ERROR, status.to_string().as_bytes()).await;
        let _ = self
            .0
            .send(Message::Close(Some(CloseFrame {
                code: 1000,
                reason: "".into(),
            })))
            .await;
    }
}

/// Starts the session's writer and reader on `socket`: what is queued on the returned
/// [`Outgoing`] is sent in order (the writer ends after a close message), and what the client
/// sends arrives on the receiver, ending with [`Incoming::Gone`].
pub fn start(socket: WebSocket, v5: bool) -> (Outgoing, mpsc::Receiver<Incoming>) {
    let (mut sink, mut source) = socket.split();
    let (out_tx, mut out_rx) = mpsc::channel::<Message>(64);
    let (in_tx, in_rx) = mpsc::channel(64);
    tokio::spawn(async move {
        while let Some(msg) = out_rx.recv().await {
            let close = matches!(msg, Message::Close(_));
            if sink.send(msg).await.is_err() || close {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            let what = match msg {
                Message::Binary(b) => incoming(&b, v5),
                Message::Close(_) => break,
                _ => continue,
            };
            if what != Incoming::Ignored && in_tx.send(what).await.is_err() {
                return;
            }
        }
        let _ = in_tx.send(Incoming::Gone).await;
    });
    (Outgoing(out_tx), in_rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_messages_carry_stdin_its_end_and_terminal_sizes() {
        assert_eq!(
            incoming(b"\x00hi\n", true),
            Incoming::Stdin(Bytes::from_static(b"hi\n"))
        );
        assert_eq!(incoming(&[255, 0], true), Incoming::CloseStdin);
        assert_eq!(
            incoming(&[255, 0], false),
            Incoming::Ignored,
            "v4 has no close"
        );
        assert_eq!(
            incoming(b"\x04{\"Width\":120,\"Height\":40}", true),
            Incoming::Resize {
                width: 120,
                height: 40
            }
        );
        for ignored in [&b""[..], b"\x00", b"\x04{bad", b"\x07x"] {
            assert_eq!(incoming(ignored, true), Incoming::Ignored);
        }
    }

    #[test]
    fn an_exit_code_becomes_the_status_kubectl_turns_into_its_own_exit_code() {
        assert_eq!(
            exit_status(0, &[]),
            json!({"metadata": {}, "status": "Success"})
        );
        let s = exit_status(3, &["sh".into(), "-c".into(), "exit 3".into()]);
        assert_eq!(s["status"], "Failure");
        assert_eq!(s["reason"], "NonZeroExitCode");
        assert_eq!(
            s["details"]["causes"],
            json!([{"reason": "ExitCode", "message": "3"}])
        );
    }
}
