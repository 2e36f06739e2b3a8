//! A watch's own buffer between the event pump and the client's connection.
//!
//! Invariant: it never holds more than its line count or its byte budget (a single line larger
//! than the budget waits for an empty buffer), and a client that leaves it full past the grace
//! given to [`Outbox::send`] gets its watch closed ([`Sent::Stalled`]) — as kube-apiserver
//! closes watchers that do not keep up — instead of holding memory or anybody else back.
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::Instant;

/// How a line fared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sent {
    /// Queued.
    Queued,
    /// The client is gone.
    Gone,
    /// No room came before the deadline.
    Stalled,
}

/// The pump's end.
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    bytes: Arc<Semaphore>,
    budget: usize,
}

/// A buffer of at most `lines` lines and `budget` bytes: the pump's end and the response body's.
pub fn outbox(
    lines: usize,
    budget: usize,
) -> (
    Outbox,
    impl Stream<Item = Result<Bytes, Infallible>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<Bytes>(lines.max(1));
    let budget = budget.clamp(1, Semaphore::MAX_PERMITS);
    let bytes = Arc::new(Semaphore::new(budget));
    let freed = bytes.clone();
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(move |line| {
        freed.add_permits(line.len().clamp(1, budget));
        Ok(line)
    });
    (Outbox { tx, bytes, budget }, stream)
}

impl Outbox {
    /// Queues `line`, waiting until `until` at most for room.
    pub async fn send(&self, line: Bytes, until: Instant) -> Sent {
        if self.tx.is_closed() {
            return Sent::Gone;
        }
        let need = u32::try_from(line.len().clamp(1, self.budget)).unwrap_or(u32::MAX);
        let permit = match tokio::time::timeout_at(until, self.bytes.acquire_many(need)).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Sent::Gone,
            Err(_) => return Sent::Stalled,
        };
        match tokio::time::timeout_at(until, self.tx.reserve()).await {
            Ok(Ok(slot)) => {
                // The permits come back when the response body takes the line.
                permit.forget();
                slot.send(line);
                Sent::Queued
            }
            Ok(Err(_)) => Sent::Gone,
            Err(_) => Sent::Stalled,
        }
    }

    /// Resolves once the client went away.
    pub async fn closed(&self) {
        self.tx.closed().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_full_buffer_stalls_until_the_client_reads() {
        let (out, stream) = outbox(10, 100);
        let mut stream = Box::pin(stream);
        let soon = || Instant::now() + Duration::from_millis(50);
        assert_eq!(
            out.send(Bytes::from(vec![b'a'; 60]), soon()).await,
            Sent::Queued
        );
        assert_eq!(
            out.send(Bytes::from(vec![b'b'; 60]), soon()).await,
            Sent::Stalled
        );
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 60);
        assert_eq!(
            out.send(Bytes::from(vec![b'b'; 60]), soon()).await,
            Sent::Queued
        );
        // A line over the whole budget waits for an empty buffer, then goes.
        assert_eq!(
            out.send(Bytes::from(vec![b'c'; 500]), soon()).await,
            Sent::Stalled
        );
        assert_eq!(stream.next().await.unwrap().unwrap().len(), 60);
        assert_eq!(
            out.send(Bytes::from(vec![b'c'; 500]), soon()).await,
            Sent::Queued
        );
        drop(stream);
        assert_eq!(out.send(Bytes::from_static(b"x"), soon()).await, Sent::Gone);
    }
}
