//! The connection loop: accepts TCP connections, terminates TLS (rustls) unless serving plain
//! HTTP, and serves each connection with hyper (HTTP/1.1) from the axum router. On shutdown it
//! stops accepting, lets connections finish their current response for a short while (long
//! watches are cut after [`DRAIN`]) and then closes what is left.
//!
//! Invariants ([`Limits`]): at most `max_connections` connections are served at once — further
//! ones wait, unaccepted, in the kernel's listen backlog until one closes; a client gets
//! `header_timeout` for its TLS handshake and for each request's headers, counted from when the
//! connection waits for a request (so an idle keep-alive connection is closed after it too); and
//! a connection whose client reads nothing of a response for `write_timeout` is closed.
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Sleep;

/// The bounds of the connection loop.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Time for the TLS handshake and for each request's headers (also the idle timeout).
    pub header_timeout: Duration,
    /// How long a response may wait for its client to read before the connection is closed.
    pub write_timeout: Duration,
}

impl Default for Limits {
    /// 1024 connections, 10 s for headers (and idling), 60 s for a client to read.
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(60),
        }
    }
}

/// A connection whose writes fail once they have waited `limit` for the client to read.
struct WriteDeadline<I> {
    io: I,
    limit: Duration,
    stalled: Option<Pin<Box<Sleep>>>,
}

impl<I> WriteDeadline<I> {
    fn new(io: I, limit: Duration) -> Self {
        WriteDeadline {
            io,
            limit,
            stalled: None,
        }
    }

    /// Turns a pending write into a timeout once it has been pending for `limit`.
    fn check<T>(
        &mut self,
        cx: &mut Context<'_>,
        res: Poll<std::io::Result<T>>,
    ) -> Poll<std::io::Result<T>> {
        if res.is_ready() {
            self.stalled = None;
            return res;
        }
        let limit = self.limit;
        let timer = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client read nothing for the write timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for WriteDeadline<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for WriteDeadline<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        let res = Pin::new(&mut self.io).poll_write(cx, buf);
        self.check(cx, res)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_flush(cx);
        self.check(cx, res)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        let res = Pin::new(&mut self.io).poll_shutdown(cx);
        self.check(cx, res)
    }
}

/// How long in-flight requests may run after shutdown was asked for.
pub const DRAIN: Duration = Duration::from_secs(3);

async fn serve_conn<I>(
    io: I,
    app: axum::Router,
    mut stopping: watch::Receiver<bool>,
    limits: Limits,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = WriteDeadline::new(io, limits.write_timeout);
    // With upgrades: pods' exec, attach and port-forward switch protocols and are spliced to
    // the kubelet (crate::kubelet::proxy); the upgraded connection outlives this future.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .serve_connection(TokioIo::new(io), TowerToHyperService::new(app))
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = async { let _ = stopping.wait_for(|s| *s).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}

/// Serves `app` on `listener` until `shutdown` resolves: over TLS with `tls`, plain HTTP without.
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let (stop, stopping) = watch::channel(false);
    let mut conns = JoinSet::new();
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.clamp(1, Semaphore::MAX_PERMITS),
    ));
    tokio::pin!(shutdown);
    loop {
        // A free slot first: past the cap, new connections wait in the listen backlog.
        let slot = tokio::select! {
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(s) => s,
                Err(_) => break,
            },
        };
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not stop serving.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (app, watcher) = (app.clone(), stopping.clone());
        match &acceptor {
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let _slot = slot;
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => serve_conn(tls, app, watcher, limits).await,
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
            None => {
                conns.spawn(async move {
                    let _slot = slot;
                    serve_conn(tcp, app, watcher, limits).await
                });
            }
        }
    }
    drop(listener);
    let _ = stop.send(true);
    let drained = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        tracing::info!("closing connections still busy after {DRAIN:?} (watches)");
    }
    conns.shutdown().await;
}
