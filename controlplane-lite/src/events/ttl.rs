//! Events expire: kube-apiserver stores each with a TTL (`--event-ttl`, one hour by default)
//! counted from its last write; this sweep removes them the same way.
//!
//! Invariant: an Event written (created or changed) less than the TTL ago is never removed; one
//! not written for longer is removed within a sweep interval (a tenth of the TTL, at most a
//! minute). For Events found in the store at start, the last write is taken as the newest of
//! their timestamps (`creationTimestamp`, `lastTimestamp`, `eventTime`,
//! `series.lastObservedTime`), the best the stored objects tell.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::Value;

use super::RESOURCE;
use crate::clock;
use crate::store::{EventType, Key, Store};

/// kube-apiserver's default `--event-ttl`.
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The newest time an Event's own fields show (seconds since the epoch).
fn last_seen(event: &Value) -> i64 {
    [
        "/metadata/creationTimestamp",
        "/lastTimestamp",
        "/eventTime",
        "/series/lastObservedTime",
    ]
    .iter()
    .filter_map(|p| {
        event
            .pointer(p)
            .and_then(Value::as_str)
            .and_then(clock::parse)
    })
    .max()
    .unwrap_or(0)
}

/// Removes every Event last written more than `ttl` seconds before `now`; `written` maps
/// Events to their last write (others are judged by [`last_seen`]).
fn sweep(store: &Store, written: &mut HashMap<Key, i64>, now: i64, ttl: i64) {
    let (events, _) = store.list(RESOURCE, None);
    for e in events {
        let key = Key {
            resource: RESOURCE.into(),
            namespace: e["metadata"]["namespace"].as_str().unwrap_or("").into(),
            name: e["metadata"]["name"].as_str().unwrap_or("").into(),
        };
        let at = *written.entry(key.clone()).or_insert_with(|| last_seen(&e));
        if now - at > ttl && store.delete(key.clone()).is_ok() {
            written.remove(&key);
        }
    }
}

/// Runs until the store closes.
pub async fn run(store: Store, ttl: Duration) {
    let mut rx = store.subscribe();
    let mut written: HashMap<Key, i64> = HashMap::new();
    let every = (ttl / 10).clamp(Duration::from_millis(200), Duration::from_secs(60));
    let mut tick = tokio::time::interval(every);
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(e) if e.key.resource == RESOURCE => match e.kind {
                    EventType::Deleted => { written.remove(&e.key); }
                    _ => { written.insert(e.key, clock::now_secs()); }
                },
                Ok(_) => {}
                // Writes were missed: count every Event as written now rather than lose one early.
                Err(crate::store::RecvError::Lagged) => {
                    let now = clock::now_secs();
                    for e in store.list(RESOURCE, None).0 {
                        let key = Key {
                            resource: RESOURCE.into(),
                            namespace: e["metadata"]["namespace"].as_str().unwrap_or("").into(),
                            name: e["metadata"]["name"].as_str().unwrap_or("").into(),
                        };
                        written.insert(key, now);
                    }
                }
                Err(crate::store::RecvError::Closed) => return,
            },
            _ = tick.tick() => sweep(&store, &mut written, clock::now_secs(), ttl.as_secs() as i64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_events_unwritten_for_longer_than_the_ttl_are_removed() {
        let store = Store::in_memory();
        let key = |n: &str| Key {
            resource: RESOURCE.into(),
            namespace: "default".into(),
            name: n.into(),
        };
        let event = |n: &str, t: i64| json!({"metadata": {"name": n, "namespace": "default", "creationTimestamp": clock::format(t)}});
        store.create(key("old"), event("old", 1000)).unwrap();
        store.create(key("new"), event("new", 4000)).unwrap();
        store
            .create(key("rewritten"), event("rewritten", 1000))
            .unwrap();
        let mut written = HashMap::from([(key("rewritten"), 4500)]);
        sweep(&store, &mut written, 4700, 3600);
        assert!(store.get(&key("old")).is_none());
        assert!(store.get(&key("new")).is_some());
        assert!(
            store.get(&key("rewritten")).is_some(),
            "a recent write counts"
        );
    }
}
