//! Watch streams: newline-delimited JSON events (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK`,
//! `ERROR`) flushed one by one, resumable from a resourceVersion, with selector semantics as
//! kube-apiserver has them (an object that stops matching is reported as `DELETED`).
//!
//! Invariant: each watch reads the store's shared history at its own pace into its own
//! [`outbox`] (at most [`BUFFER_LINES`] lines and [`BUFFER_BYTES`] bytes); a client that leaves
//! that buffer full for [`STALL_GRACE`] has its watch closed, as does one that falls behind the
//! history (with a 410 `Expired` event), so a client that stops reading never holds back
//! writers or other watchers, and every watch ends at its `timeoutSeconds` (1800 s by default,
//! at most a year).
pub mod outbox;

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use axum::body::Bytes;
use axum::response::Response;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::api::stream_body;
use crate::resources::Resource;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Event, EventType, Key, RecvError, Store, Subscription};
use crate::table;
use outbox::{Outbox, Sent};

/// How often bookmarks are sent to watchers that allow them.
pub const BOOKMARK_EVERY: Duration = Duration::from_secs(5);

/// Lines a watch may have waiting for its client.
pub const BUFFER_LINES: usize = 1024;

/// Bytes a watch may have waiting for its client.
pub const BUFFER_BYTES: usize = 16 * 1024 * 1024;

/// How long a watch waits for its client to make room in a full buffer before closing.
pub const STALL_GRACE: Duration = Duration::from_secs(5);

/// The longest watch: a larger `timeoutSeconds` counts as this.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The watch's `timeoutSeconds` (1800 s without it, as kube-apiserver's minimum request
/// timeout; capped at [`MAX_TIMEOUT`]).
pub fn timeout_of(q: &HashMap<String, String>) -> Duration {
    q.get("timeoutSeconds")
        .and_then(|t| t.parse::<u64>().ok())
        .map_or(Duration::from_secs(1800), |s| {
            Duration::from_secs(s).min(MAX_TIMEOUT)
        })
}

struct Filter {
    res: &'static Resource,
    namespace: Option<String>,
    labels: LabelSelector,
    fields: FieldSelector,
    table: bool,
}

impl Filter {
    fn scoped(&self, key: &Key) -> bool {
        key.resource == self.res.plural
            && self
                .namespace
                .as_deref()
                .is_none_or(|ns| key.namespace == ns)
    }

    fn matches(&self, obj: &Value) -> bool {
        let empty = serde_json::Map::new();
        self.labels.matches(
            obj.pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
        ) && self.fields.matches(obj)
    }

    fn line(&self, kind: &str, obj: &Value) -> Bytes {
        let object = if self.table && kind != "BOOKMARK" && kind != "ERROR" {
            let rv = obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            table::table(self.res, &[obj], rv, "")
        } else if kind == "BOOKMARK" || kind == "ERROR" {
            obj.clone()
        } else {
            crate::events::convert::outward(self.res, obj)
        };
        Bytes::from(format!("{}\n", json!({"type": kind, "object": object})))
    }
}

/// Starts a watch response.
pub async fn serve(
    store: &Store,
    res: &'static Resource,
    namespace: Option<String>,
    q: &HashMap<String, String>,
    table: bool,
) -> Result<Response, ApiError> {
    let filter = Filter {
        res,
        namespace,
        labels: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        fields: FieldSelector::parse_for(res, q.get("fieldSelector").map_or("", String::as_str))
            .map_err(ApiError::bad_request)?,
        table,
    };
    let bookmarks = q
        .get("allowWatchBookmarks")
        .is_some_and(|v| v == "true" || v == "1");
    let timeout = timeout_of(q);
    let from = q
        .get("resourceVersion")
        .filter(|v| !v.is_empty() && v.as_str() != "0")
        .map(|v| {
            v.parse::<u64>()
                .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}")))
        })
        .transpose()?;
    // A streaming list (`sendInitialEvents=true`, what client-go's WatchList and kube-rs'
    // streaming_lists send): the current state, then a bookmark marking its end.
    let initial_events = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let not_older = q.get("resourceVersionMatch").map(String::as_str) == Some("NotOlderThan");
    if q.contains_key("sendInitialEvents") && !not_older {
        return Err(ApiError::invalid(
            "ListOptions",
            "meta.k8s.io",
            "",
            &[crate::status::Cause {
                reason: "FieldValueForbidden",
                field: "resourceVersionMatch".into(),
                message: "Forbidden: sendInitialEvents requires setting resourceVersionMatch to NotOlderThan".into(),
            }],
        ));
    }
    let from = if initial_events { None } else { from };

    let (tx, body) = outbox::outbox(BUFFER_LINES, BUFFER_BYTES);
    let mut pending = VecDeque::new();
    let mut matched = HashSet::new();
    let (receiver, start_rv) = match from {
        None => {
            // No resourceVersion: the current state as ADDED events, then changes.
            let rx = store.subscribe();
            let (items, rv) = store.list(res.plural, filter.namespace.as_deref());
            for o in items.iter().filter(|o| filter.matches(o)) {
                matched.insert(key_of(res, o));
                pending.push_back(filter.line("ADDED", o));
            }
            if initial_events && bookmarks {
                let obj = json!({"kind": res.kind, "apiVersion": res.api_version(), "metadata": {
                    "resourceVersion": rv.to_string(),
                    "annotations": {"k8s.io/initial-events-end": "true"}}});
                pending.push_back(Bytes::from(format!(
                    "{}\n",
                    json!({"type": "BOOKMARK", "object": obj})
                )));
            }
            (rx, rv)
        }
        Some(rv) => match store.since(rv) {
            Some((history, rx)) => {
                // Objects that matched before rv are unknown here; treat every later event on
                // its own (an object that stops matching then still yields DELETED).
                for o in store
                    .list(res.plural, filter.namespace.as_deref())
                    .0
                    .iter()
                    .filter(|o| filter.matches(o))
                {
                    matched.insert(key_of(res, o));
                }
                for e in history {
                    if let Some(line) = translate(&filter, &mut matched, &e) {
                        pending.push_back(line);
                    }
                }
                (rx, rv)
            }
            None => {
                let status = ApiError::gone(rv).to_status();
                let line = Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})));
                let _ = tx.send(line, Instant::now() + STALL_GRACE).await;
                return Ok(stream_body(body));
            }
        },
    };
    let state = Pump {
        tx,
        filter,
        pending,
        matched,
        last_rv: start_rv,
        bookmarks,
        timeout,
    };
    tokio::spawn(state.run(receiver));
    Ok(stream_body(body))
}

fn key_of(res: &Resource, o: &Value) -> Key {
    Key {
        resource: res.plural.into(),
        namespace: o
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
        name: o
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .into(),
    }
}

/// The event line for `e`, applying selector semantics; `replaying` events are already known
/// to have happened after the watch's starting point.
fn translate(filter: &Filter, matched: &mut HashSet<Key>, e: &Event) -> Option<Bytes> {
    if !filter.scoped(&e.key) {
        return None;
    }
    let was = matched.contains(&e.key);
    let now = e.kind != EventType::Deleted && filter.matches(&e.object);
    match (e.kind, was, now) {
        (EventType::Deleted, true, _) => {
            matched.remove(&e.key);
            Some(filter.line("DELETED", &e.object))
        }
        (EventType::Deleted, false, _) => filter
            .matches(&e.object)
            .then(|| filter.line("DELETED", &e.object)),
        (_, false, true) => {
            matched.insert(e.key.clone());
            Some(filter.line("ADDED", &e.object))
        }
        (_, true, true) => Some(filter.line(
            if e.kind == EventType::Added {
                "ADDED"
            } else {
                "MODIFIED"
            },
            &e.object,
        )),
        (_, true, false) => {
            matched.remove(&e.key);
            Some(filter.line("DELETED", &e.object))
        }
        (_, false, false) => None,
    }
}

/// A running watch: the events it still owes the client and how it follows the store.
struct Pump {
    tx: Outbox,
    filter: Filter,
    pending: VecDeque<Bytes>,
    matched: HashSet<Key>,
    last_rv: u64,
    bookmarks: bool,
    timeout: Duration,
}

impl Pump {
    fn bookmark(&self) -> Bytes {
        let obj = json!({"kind": self.filter.res.kind, "apiVersion": self.filter.res.api_version(), "metadata": {"resourceVersion": self.last_rv.to_string()}});
        Bytes::from(format!("{}\n", json!({"type": "BOOKMARK", "object": obj})))
    }

    /// Queues `line`; `false` when the watch must end (client gone, stalled, or its time up).
    async fn send(&self, line: Bytes, deadline: Instant) -> bool {
        let until = deadline.min(Instant::now() + STALL_GRACE);
        match self.tx.send(line, until).await {
            Sent::Queued => true,
            Sent::Gone => false,
            Sent::Stalled => {
                if Instant::now() < deadline {
                    tracing::info!(
                        resource = self.filter.res.plural,
                        "closing a watch whose client does not read (its buffer stayed full)"
                    );
                }
                false
            }
        }
    }

    async fn run(mut self, mut rx: Subscription) {
        let deadline = Instant::now()
            .checked_add(self.timeout)
            .unwrap_or_else(|| Instant::now() + MAX_TIMEOUT);
        let mut bookmark = tokio::time::interval(BOOKMARK_EVERY);
        bookmark.tick().await;
        while let Some(line) = self.pending.pop_front() {
            if !self.send(line, deadline).await {
                return;
            }
        }
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = self.tx.closed() => return,
                _ = bookmark.tick(), if self.bookmarks => {
                    if !self.send(self.bookmark(), deadline).await {
                        return;
                    }
                }
                ev = rx.recv() => match ev {
                    Ok(e) => {
                        if e.rv <= self.last_rv {
                            continue;
                        }
                        self.last_rv = e.rv;
                        if let Some(line) = translate(&self.filter, &mut self.matched, &e) {
                            if !self.send(line, deadline).await {
                                return;
                            }
                        }
                    }
                    Err(RecvError::Lagged) => {
                        // Fell behind the history: end with 410 so the client relists.
                        let status = ApiError::gone(self.last_rv).to_status();
                        let line = Bytes::from(format!("{}\n", json!({"type": "ERROR", "object": status})));
                        let _ = self.send(line, deadline).await;
                        return;
                    }
                    Err(RecvError::Closed) => return,
                },
            }
        }
        if self.bookmarks {
            let _ = self
                .send(self.bookmark(), Instant::now() + STALL_GRACE)
                .await;
        }
    }
}
