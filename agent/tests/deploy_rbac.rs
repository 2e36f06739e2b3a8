//! `deploy/`'s ClusterRole is exactly what the agent uses: the agent's watches, its event
//! recorder and `install-cni`'s podCIDR lookup run against a recording stand-in for the API
//! server, and the `(group, resource, verb)` of every request they make must be a rule of the
//! role, and every rule of the role must be used (least privilege). controlplane-lite's tests
//! check the other side: that it grants the agent's service account exactly this role.
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use switchyard::model::objects::{Meta, Service};
use switchyard_lab::deploy::{deploy_dir, grants, Grant, Manifests};
use switchyard_lab::lab::workspace_root;

/// One request as the API server's authorizer sees it.
fn attributes(method: &Method, path: &str, query: &str) -> Grant {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => panic!("not a resource path: {path}"),
    };
    let rest = match rest {
        ["namespaces", _ns, rest @ ..] if !rest.is_empty() => rest,
        other => other,
    };
    let resource = match rest {
        [r, _name, sub] => format!("{r}/{sub}"),
        [r, ..] => r.to_string(),
        [] => panic!("no resource in {path}"),
    };
    let named = rest.len() >= 2;
    let watch = query
        .split('&')
        .any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = match (method.as_str(), named) {
        ("GET", true) => "get",
        ("GET", false) if watch => "watch",
        ("GET", false) => "list",
        ("POST", _) => "create",
        ("PATCH", _) => "patch",
        ("PUT", _) => "update",
        ("DELETE", true) => "delete",
        ("DELETE", false) => "deletecollection",
        (m, _) => panic!("unexpected method {m} {path}"),
    };
    Grant::new(group, &resource, verb)
}

type Body = BoxBody<Bytes, Infallible>;

fn json(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed())
        .unwrap()
}

/// An API server that answers every request with an empty list, a watch that never ends, node
/// `n1` with a podCIDR, or the event it was sent — and records what was asked.
fn recording_client() -> (kube::Client, Arc<Mutex<Vec<Grant>>>) {
    let seen: Arc<Mutex<Vec<Grant>>> = Arc::default();
    let log = seen.clone();
    let service = tower::service_fn(move |req: Request<kube::client::Body>| {
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let path = parts.uri.path().to_string();
            let query = parts.uri.query().unwrap_or("").to_string();
            let grant = attributes(&parts.method, &path, &query);
            log.lock().unwrap().push(grant.clone());
            let sent = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            let response = match grant.verb.as_str() {
                "watch" => Response::new(
                    StreamBody::new(futures::stream::pending::<
                        Result<http_body::Frame<Bytes>, Infallible>,
                    >())
                    .boxed(),
                ),
                "list" => json(
                    StatusCode::OK,
                    r#"{"apiVersion":"v1","kind":"List","metadata":{"resourceVersion":"1"},"items":[]}"#.into(),
                ),
                "get" => json(
                    StatusCode::OK,
                    r#"{"apiVersion":"v1","kind":"Node","metadata":{"name":"n1"},"spec":{"podCIDR":"10.244.1.0/24"}}"#.into(),
                ),
                "create" => json(
                    StatusCode::CREATED,
                    String::from_utf8_lossy(&sent).into_owned(),
                ),
                "patch" => json(StatusCode::OK, String::from_utf8_lossy(&sent).into_owned()),
                _ => json(StatusCode::FORBIDDEN, "{}".into()),
            };
            Ok::<_, Infallible>(response)
        }
    });
    (kube::Client::new(service, "default"), seen)
}

fn service() -> Service {
    Service {
        metadata: Meta {
            name: Some("web".into()),
            namespace: Some("default".into()),
            uid: Some("uid-web".into()),
            ..Meta::default()
        },
        ..Service::default()
    }
}

#[tokio::test]
async fn the_cluster_role_is_exactly_what_the_agent_and_install_cni_ask_the_api_server_for() {
    let role = grants(
        Manifests::load(&deploy_dir(&workspace_root()))
            .unwrap()
            .cluster_role("switchyard")
            .unwrap(),
    );
    let (client, seen) = recording_client();

    // The agent: its three watches, and an Event written twice (created, then its series
    // patched), as `daemon::run` does.
    let (_stores, tasks) = switchyard::watch::start(&client);
    let events = switchyard::daemon::events::Events::new(client.clone(), "n1");
    events.unsupported(&service(), "sessionAffinity: None is fine".into());
    let count = |verb: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|g| g.verb == verb)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while count("create") == 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    events.unsupported(&service(), "sessionAffinity: None is fine".into());
    // install-cni: the node's podCIDR.
    let cidr = switchyard::cni::install::pod_cidr(&client, "n1", Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(cidr.to_string(), "10.244.1.0/24");
    while (count("patch") == 0 || count("watch") < 3) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in tasks {
        t.abort();
    }

    let used: BTreeSet<Grant> = seen.lock().unwrap().iter().cloned().collect();
    let unlisted: Vec<String> = used.difference(&role).map(Grant::to_string).collect();
    assert!(
        unlisted.is_empty(),
        "the agent asks for what deploy/01-rbac.yaml does not grant: {unlisted:?}"
    );
    let unused: Vec<String> = role.difference(&used).map(Grant::to_string).collect();
    let used: Vec<String> = used.iter().map(Grant::to_string).collect();
    assert!(
        unused.is_empty(),
        "deploy/01-rbac.yaml grants what the agent never uses: {unused:?} (used: {used:?})"
    );
}

#[test]
fn requests_map_to_the_authorizers_attributes() {
    let g = |m: Method, path: &str, q: &str| attributes(&m, path, q).to_string();
    assert_eq!(
        g(Method::GET, "/api/v1/services", ""),
        "list services (core)"
    );
    assert_eq!(
        g(
            Method::GET,
            "/apis/discovery.k8s.io/v1/endpointslices",
            "watch=true&resourceVersion=1"
        ),
        "watch endpointslices (discovery.k8s.io)"
    );
    assert_eq!(g(Method::GET, "/api/v1/nodes/n1", ""), "get nodes (core)");
    assert_eq!(
        g(
            Method::PATCH,
            "/apis/events.k8s.io/v1/namespaces/default/events/e1",
            ""
        ),
        "patch events (events.k8s.io)"
    );
    assert_eq!(
        g(Method::PUT, "/api/v1/namespaces/default/pods/p/status", ""),
        "update pods/status (core)"
    );
}
