//! Chunked lists (`limit` and `continue`, what `kubectl get --chunk-size` sends), as
//! kube-apiserver pages them.
//!
//! Invariant: every page of one list is cut from the same snapshot — the store as it was at the
//! first page's resourceVersion, rebuilt from the watch history — in key order, so a chunked
//! list sees each object exactly once as of that version. The continue token is opaque to
//! clients (base64 of `{"v":"meta.k8s.io/v1","rv":N,"start":"<namespace>/<name>\u0000"}`, as
//! kube-apiserver's). Once the history no longer reaches back to that version the next page is
//! a 410 `Expired` whose `metadata.continue` continues from the current state instead.
use std::collections::HashMap;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::status::ApiError;
use crate::store::Key;

/// kube-apiserver's message for a continue token older than the history.
pub const TOO_OLD: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

/// A decoded continue token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Continue {
    /// Always `meta.k8s.io/v1`.
    pub v: String,
    /// The snapshot's resourceVersion; negative: the current state (an inconsistent
    /// continuation after a too old token).
    pub rv: i64,
    /// The key of the last object returned (`<namespace>/<name>` or `<name>`, then NUL).
    pub start: String,
}

impl Continue {
    /// The token after `last` in the snapshot at `rv` (`None`: the current state).
    pub fn after(rv: Option<u64>, last: &Key) -> Continue {
        let start = if last.namespace.is_empty() {
            format!("{}\u{0}", last.name)
        } else {
            format!("{}/{}\u{0}", last.namespace, last.name)
        };
        Continue {
            v: "meta.k8s.io/v1".into(),
            rv: rv.and_then(|r| i64::try_from(r).ok()).unwrap_or(-1),
            start,
        }
    }

    /// The snapshot's resourceVersion, `None` for the current state.
    pub fn snapshot(&self) -> Option<u64> {
        u64::try_from(self.rv).ok()
    }

    /// (namespace, name) of the last object returned.
    pub fn position(&self) -> (&str, &str) {
        let s = self.start.trim_end_matches('\u{0}');
        s.split_once('/').unwrap_or(("", s))
    }

    /// The opaque form.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Reads a token; 400 `invalid continue token` when it is not one of ours.
    pub fn decode(token: &str) -> Result<Continue, ApiError> {
        let bad = |why: String| ApiError::bad_request(format!("invalid continue token: {why}"));
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.trim_end_matches('='))
            .map_err(|e| bad(e.to_string()))?;
        let c: Continue = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
        if c.v != "meta.k8s.io/v1" {
            return Err(bad(format!("unsupported version {:?}", c.v)));
        }
        Ok(c)
    }
}

/// The list's `limit`: `None` for none (absent, unparsable, zero or negative, as
/// kube-apiserver ignores those).
pub fn limit(q: &HashMap<String, String>) -> Option<usize> {
    q.get("limit")
        .and_then(|l| l.parse::<i64>().ok())
        .filter(|l| *l > 0)
        .map(|l| usize::try_from(l).unwrap_or(usize::MAX))
}

/// Whether `key` comes after the token's position (the objects still to list).
pub fn is_after(key: &Key, c: &Continue) -> bool {
    let (ns, name) = c.position();
    (key.namespace.as_str(), key.name.as_str()) > (ns, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(ns: &str, name: &str) -> Key {
        Key {
            resource: "pods".into(),
            namespace: ns.into(),
            name: name.into(),
        }
    }

    #[test]
    fn tokens_round_trip_and_order_keys() {
        let c = Continue::after(Some(42), &key("default", "b"));
        let back = Continue::decode(&c.encode()).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.snapshot(), Some(42));
        assert!(is_after(&key("default", "c"), &back) && !is_after(&key("default", "b"), &back));
        assert!(is_after(&key("kube-system", "a"), &back));
        let now = Continue::after(None, &key("", "n1"));
        assert_eq!(Continue::decode(&now.encode()).unwrap().snapshot(), None);
        assert_eq!(
            Continue::decode("!!").unwrap_err().code,
            400,
            "garbage is a 400"
        );
    }

    #[test]
    fn limits_ignore_what_kube_apiserver_ignores() {
        let q = |v: &str| HashMap::from([("limit".to_string(), v.to_string())]);
        assert_eq!(limit(&q("5")), Some(5));
        assert_eq!(limit(&q("0")), None);
        assert_eq!(limit(&q("-3")), None);
        assert_eq!(limit(&q("99999999999999999999")), None);
        assert_eq!(limit(&HashMap::new()), None);
    }
}
