//! Lists of many objects as kubectl reads them: `kubectl get` pages with `limit=500` and
//! follows the continue tokens. Invariant under test: every object is seen once, in key order,
//! from the first page's snapshot, with the right `remainingItemCount`. (A page costs what it
//! holds, never a copy of everything before it — `kubectl get svc -A` over ~100,000 Services
//! took 9 minutes before; that is a cost, measured by hand, not asserted here by a clock.)
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use serde_json::{json, Value};
use tower::ServiceExt;

use switchyard_cp::admission;
use switchyard_cp::api::{handle, Api};
use switchyard_cp::store::{Key, Store};

/// Services in the store.
const SERVICES: usize = 4_000;
/// Objects per page: small, so that there are many pages.
const LIMIT: usize = 20;

/// The API over an in-memory store holding [`SERVICES`] Services in 4 namespaces.
fn app() -> axum::Router {
    let store = Store::in_memory();
    for i in 0..SERVICES {
        let (ns, name) = (format!("ns-{}", i % 4), format!("svc-{i:05}"));
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"}},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "ports": [{"port": 80}]},
        });
        let key = Key {
            resource: "services".into(),
            namespace: ns,
            name,
        };
        store.create(key, svc).unwrap();
    }
    let api = Arc::new(Api {
        store,
        ranges: admission::Ranges::default(),
        address: "127.0.0.1:6443".into(),
        kubelets: None,
    });
    axum::Router::new().fallback(handle).with_state(api)
}

/// GETs `uri` (as a Table when `table`); the status code and body.
async fn get(app: &axum::Router, uri: &str, table: bool) -> (u16, Value) {
    let mut req = Request::builder().uri(uri);
    if table {
        req = req.header(
            "accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        );
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let code = resp.status().as_u16();
    let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
        .await
        .unwrap();
    (code, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// Pages through `path` (its query included) [`LIMIT`] at a time, as kubectl does; the names
/// seen, in order (every page from the first one's snapshot).
async fn page_through(app: &axum::Router, path: &str, table: bool) -> Vec<String> {
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut first_rv = None;
    loop {
        let cont = token
            .as_deref()
            .map_or(String::new(), |t| format!("&continue={t}"));
        let (code, page) = get(app, &format!("{path}&limit={LIMIT}{cont}"), table).await;
        assert_eq!(code, 200, "{page}");
        let rv = page["metadata"]["resourceVersion"].clone();
        assert_eq!(
            first_rv.get_or_insert_with(|| rv.clone()),
            &rv,
            "one snapshot"
        );
        let rows = if table { &page["rows"] } else { &page["items"] };
        let rows = rows.as_array().unwrap();
        assert!(rows.len() <= LIMIT);
        names.extend(rows.iter().map(|r| {
            let o = if table { &r["object"] } else { r };
            o["metadata"]["name"].as_str().unwrap().to_string()
        }));
        token = page["metadata"]["continue"].as_str().map(str::to_string);
        if token.is_none() {
            return names;
        }
    }
}

#[test]
fn kubectl_pages_through_thousands_of_services_seeing_each_once_in_key_order() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let app = app();
        // As `kubectl get svc -A` asks: Tables, all namespaces, unfiltered (so every page
        // carries remainingItemCount).
        let (_, first) = get(&app, &format!("/api/v1/services?limit={LIMIT}"), true).await;
        assert_eq!(
            first["metadata"]["remainingItemCount"],
            SERVICES - LIMIT,
            "{}",
            first["metadata"]
        );
        for (path, table) in [
            ("/api/v1/services?labelSelector=app%3Dweb", false),
            ("/api/v1/services?", true),
            ("/api/v1/namespaces/ns-1/services?x=y", false),
        ] {
            let names = page_through(&app, path, table).await;
            let want = if path.contains("ns-1") {
                SERVICES / 4
            } else {
                SERVICES
            };
            let mut unique = names.clone();
            unique.sort();
            unique.dedup();
            assert_eq!((names.len(), unique.len()), (want, want), "{path}");
            let mut sorted = names.clone();
            sorted.sort_by_key(|n| {
                let i: usize = n["svc-".len()..].parse().unwrap();
                (i % 4, n.clone())
            });
            assert_eq!(names, sorted, "{path}: key order (namespace, name)");
        }
    });
}
