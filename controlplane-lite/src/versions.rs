//! resourceVersions clients send on get, list and watch.
//!
//! Invariant: a resourceVersion is a decimal u64 or the request is a 400; one newer than the
//! store's is waited for up to [`TOO_LARGE_WAIT`] and then refused as kube-apiserver's watch
//! cache refuses it: 504 `Timeout`, `Timeout: Too large resource version: <asked>, current:
//! <current>`, cause `ResourceVersionTooLarge`, `retryAfterSeconds: 1`.
use std::collections::HashMap;
use std::time::Duration;

use serde_json::json;

use crate::status::ApiError;
use crate::store::Store;

/// How long a request for a resourceVersion from the future waits for it (kube-apiserver's
/// watch cache blocks for 3 s).
pub const TOO_LARGE_WAIT: Duration = Duration::from_secs(3);

/// The `resourceVersion` parameter: `None` when absent, empty or "0" (any version).
pub fn requested(q: &HashMap<String, String>) -> Result<Option<u64>, ApiError> {
    match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => Ok(None),
        Some(v) => v
            .parse::<u64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {v:?}"))),
    }
}

/// kube-apiserver's `NewTooLargeResourceVersionError`.
pub fn too_large(asked: u64, current: u64) -> ApiError {
    let mut e = ApiError::timeout(format!(
        "Too large resource version: {asked}, current: {current}"
    ));
    e.details = Some(json!({
        "causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}],
        "retryAfterSeconds": 1,
    }));
    e
}

/// Waits (briefly) until the store has the resourceVersion the request names.
pub async fn await_requested(store: &Store, q: &HashMap<String, String>) -> Result<(), ApiError> {
    let Some(asked) = requested(q)? else {
        return Ok(());
    };
    if asked <= store.rv() || store.wait_for(asked, TOO_LARGE_WAIT).await {
        return Ok(());
    }
    Err(too_large(asked, store.rv()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_version_from_the_future_is_a_504_after_a_short_wait() {
        let store = Store::in_memory();
        let q = HashMap::from([(
            "resourceVersion".to_string(),
            "18446744073709551615".to_string(),
        )]);
        let e = await_requested(&store, &q).await.unwrap_err();
        assert_eq!((e.code, e.reason), (504, "Timeout"));
        assert_eq!(
            e.message,
            "Timeout: Too large resource version: 18446744073709551615, current: 0"
        );
        let q = HashMap::from([("resourceVersion".to_string(), "-1".to_string())]);
        assert_eq!(await_requested(&store, &q).await.unwrap_err().code, 400);
    }
}
