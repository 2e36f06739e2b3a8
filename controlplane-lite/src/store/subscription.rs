//! Following the store's changes: a [`Subscription`] reads the shared, bounded watch history
//! from where it last was, woken by the resourceVersion the store publishes.
//!
//! Invariant: a subscriber holds no copy of events it has not taken (the store keeps one
//! history for everybody), so a subscriber that stops reading costs nothing but its place; when
//! the history has moved past that place, the next [`Subscription::recv`] says so
//! ([`RecvError::Lagged`]) and the subscriber resumes at the newest change.
use std::collections::VecDeque;
use std::sync::Weak;

use tokio::sync::watch;

use super::{Event, Shared};

/// Why [`Subscription::recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RecvError {
    /// Events were dropped from the history before this subscriber read them.
    #[error("lagged behind the watch history")]
    Lagged,
    /// The store is gone.
    #[error("the store is closed")]
    Closed,
}

/// Why [`Subscription::try_recv`] returned no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryRecvError {
    /// Nothing new yet.
    Empty,
    /// As [`RecvError`].
    Failed(RecvError),
}

/// How many events one look at the history takes at most.
const BATCH: usize = 512;

/// A reader of the changes after a resourceVersion.
pub struct Subscription {
    shared: Weak<Shared>,
    /// The resourceVersion of the last event taken (or skipped).
    last: u64,
    rv: watch::Receiver<u64>,
    buf: VecDeque<Event>,
}

impl Subscription {
    pub(super) fn new(shared: Weak<Shared>, last: u64, rv: watch::Receiver<u64>) -> Self {
        Subscription {
            shared,
            last,
            rv,
            buf: VecDeque::new(),
        }
    }

    /// The resourceVersion of the last event this subscription returned.
    pub fn position(&self) -> u64 {
        self.last
    }

    /// Takes what the history holds after the last event, without waiting.
    pub fn try_recv(&mut self) -> Result<Event, TryRecvError> {
        if let Some(e) = self.buf.pop_front() {
            return Ok(e);
        }
        let shared = self
            .shared
            .upgrade()
            .ok_or(TryRecvError::Failed(RecvError::Closed))?;
        self.rv.borrow_and_update();
        match shared.events_after(self.last, BATCH) {
            Ok(events) => {
                if let Some(e) = events.last() {
                    self.last = e.rv;
                }
                self.buf.extend(events);
                self.buf.pop_front().ok_or(TryRecvError::Empty)
            }
            Err(newest) => {
                self.last = newest;
                Err(TryRecvError::Failed(RecvError::Lagged))
            }
        }
    }

    /// The next change; cancel-safe (an event taken from the history stays buffered here).
    pub async fn recv(&mut self) -> Result<Event, RecvError> {
        loop {
            match self.try_recv() {
                Ok(e) => return Ok(e),
                Err(TryRecvError::Failed(e)) => return Err(e),
                Err(TryRecvError::Empty) => {
                    if self.rv.changed().await.is_err() {
                        return Err(RecvError::Closed);
                    }
                }
            }
        }
    }
}
