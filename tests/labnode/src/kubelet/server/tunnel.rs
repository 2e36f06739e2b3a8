//! A byte stream carried in WebSocket binary messages, as client-go's `TunnelingConnection`
//! sends SPDY over a WebSocket (`SPDY/3.1+portforward.k8s.io`, KEP-4006): each write of one side
//! is a binary message, message boundaries mean nothing.
//!
//! Invariant: the bytes come out in order and unchanged in both directions; the end of either
//! direction (a close message, or the local side shutting down) ends that direction only.
use axum::extract::ws::{CloseFrame, Message, WebSocket};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

/// The stream inside `socket`: what is read is what the client sent, what is written is sent.
pub fn bytes_over(socket: WebSocket) -> DuplexStream {
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_us, mut to_us) = tokio::io::split(ours);
    let (mut sink, mut source) = socket.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if to_us.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_us.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_us.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let msg = Message::Binary(bytes::Bytes::copy_from_slice(&buf[..n]));
                    if sink.send(msg).await.is_err() {
                        return;
                    }
                }
            }
        }
        let close = CloseFrame {
            code: 1000,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
        let _ = sink.close().await;
    });
    theirs
}
