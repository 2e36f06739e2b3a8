//! `pods/log`, `pods/exec`, `pods/attach` and `pods/portforward`: checked and authorized here as
//! kube-apiserver does, then passed to the kubelet of the pod's node ([`super::Client`]) — the
//! log streamed back as it comes, the other three as an upgraded connection (WebSocket or SPDY)
//! spliced byte for byte between the client and the kubelet, so that kubectl speaks its
//! streaming protocols with the kubelet itself.
//!
//! Invariants: nothing reaches a kubelet before the user is authorized (`get pods/log`,
//! `create` for the others), the pod exists and the container is one of its; every refusal —
//! ours or the kubelet's — is a `Status` with kube-apiserver's reason and message.
use super::{endpoint, Client};
use crate::auth::User;
use crate::authz::{self, Attributes, Facts};
use crate::status::{ApiError, Cause};
use crate::store::{Key, Store};
use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::Value;

/// The streaming subresources of pods.
pub const SUBRESOURCES: [&str; 4] = ["log", "exec", "attach", "portforward"];

/// Request headers passed to the kubelet: those an upgrade needs.
const FORWARDED: [&str; 8] = [
    "connection",
    "upgrade",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-protocol",
    "sec-websocket-extensions",
    "x-stream-protocol-version",
    "user-agent",
];

/// A request for one of the [`SUBRESOURCES`] of pod `namespace/name`.
pub struct StreamRequest {
    /// The method.
    pub method: Method,
    /// Path and query.
    pub uri: Uri,
    /// Its headers.
    pub headers: HeaderMap,
    /// Who asks (`None`: no authentication configured).
    pub user: Option<User>,
    /// The client's side of an upgrade.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod.
    pub name: String,
    /// `log`, `exec`, `attach` or `portforward`.
    pub subresource: String,
}

/// The values of query parameter `key`.
fn params<'a>(q: &'a [(String, String)], key: &'a str) -> impl Iterator<Item = &'a str> {
    q.iter()
        .filter(move |(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// The container a request names, defaulted as kube-apiserver's `validateContainer`.
pub fn container(pod: &Value, requested: Option<&str>) -> Result<String, ApiError> {
    let name = pod["metadata"]["name"].as_str().unwrap_or("");
    let names = |key: &str| -> Vec<String> {
        pod["spec"][key]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["name"].as_str().map(str::to_string))
            .collect()
    };
    let containers = names("containers");
    match requested.filter(|c| !c.is_empty()) {
        Some(c) => {
            let all = [
                names("initContainers"),
                containers,
                names("ephemeralContainers"),
            ];
            if all.iter().flatten().any(|n| n == c) {
                Ok(c.to_string())
            } else {
                Err(ApiError::bad_request(format!(
                    "container {c} is not valid for pod {name}"
                )))
            }
        }
        None => match containers.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::bad_request(format!(
                "a container name must be specified for pod {name}"
            ))),
            _ => {
                let mut all = names("initContainers");
                all.extend(containers);
                all.extend(names("ephemeralContainers"));
                Err(ApiError::bad_request(format!(
                    "a container name must be specified for pod {name}, choose one of: [{}]",
                    all.join(" ")
                )))
            }
        },
    }
}

/// kube-apiserver's `ValidatePodLogOptions`.
pub fn validate_log_options(name: &str, q: &[(String, String)]) -> Result<(), ApiError> {
    let number = |key: &str| -> Result<Option<i64>, ApiError> {
        params(q, key)
            .last()
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("{key}: invalid value {v:?}: not an integer"))
                })
            })
            .transpose()
    };
    let mut causes = Vec::new();
    if let Some(t) = number("tailLines")?.filter(|t| *t < 0) {
        causes.push(Cause::invalid(
            "tailLines",
            t,
            "must be greater than or equal to 0",
        ));
    }
    if let Some(l) = number("limitBytes")?.filter(|l| *l < 1) {
        causes.push(Cause::invalid("limitBytes", l, "must be greater than 0"));
    }
    let since_time = params(q, "sinceTime").last().is_some();
    match number("sinceSeconds")? {
        Some(_) if since_time => causes.push(Cause {
            reason: "FieldValueForbidden",
            field: String::new(),
            message: "Forbidden: at most one of `sinceTime` or `sinceSeconds` may be specified"
                .into(),
        }),
        Some(s) if s < 1 => {
            causes.push(Cause::invalid("sinceSeconds", s, "must be greater than 0"))
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(ApiError::invalid("PodLogOptions", "", name, &causes))
    }
}

/// Turns a kubelet's refusal (plain text) into the `Status` kube-apiserver makes of it.
pub fn kubelet_refusal(code: StatusCode, body: &[u8], subresource: &str, name: &str) -> ApiError {
    let text = String::from_utf8_lossy(body).trim().to_string();
    let (code, reason) = match code.as_u16() {
        400 => (400, "BadRequest"),
        401 => (401, "Unauthorized"),
        403 => (403, "Forbidden"),
        404 => (404, "NotFound"),
        500 => (500, "InternalError"),
        other => (other, "Unknown"),
    };
    let message = match reason {
        "InternalError" => format!("Internal error occurred: {text}"),
        "BadRequest" => text,
        _ => format!("{text} (pods/{subresource} {name})"),
    };
    ApiError {
        code,
        reason,
        message,
        details: None,
    }
}

/// What the client sees when the kubelet cannot be reached.
fn unreachable(
    e: &super::KubeletError,
    method: &Method,
    addr: std::net::SocketAddr,
    path: &str,
) -> ApiError {
    let verb = if *method == Method::POST {
        "Post"
    } else {
        "Get"
    };
    ApiError::internal(format!("{verb} \"https://{addr}{path}\": {e}"))
}

fn get(store: &Store, resource: &str, namespace: &str, name: &str) -> Option<Value> {
    store
        .get(&Key {
            resource: resource.into(),
            namespace: namespace.into(),
            name: name.into(),
        })
        .map(|o| (*o).clone())
}

/// Serves one request.
pub async fn serve(
    store: &Store,
    kubelets: Option<&Client>,
    req: StreamRequest,
) -> Result<Response, ApiError> {
    let log = req.subresource == "log";
    let allowed = if log {
        req.method == Method::GET
    } else {
        req.method == Method::GET || req.method == Method::POST
    };
    if !allowed {
        return Err(ApiError::method_not_allowed());
    }
    if let Some(user) = &req.user {
        let a = Attributes {
            verb: if log { "get" } else { "create" }.into(),
            group: String::new(),
            resource: "pods".into(),
            subresource: req.subresource.clone(),
            namespace: req.namespace.clone(),
            name: req.name.clone(),
        };
        authz::decide(user, &a, &Facts::default()).map_err(|d| authz::forbidden(user, &a, &d))?;
    }
    let pod = get(store, "pods", &req.namespace, &req.name)
        .ok_or_else(|| ApiError::not_found("pods", "", &req.name))?;
    let q: Vec<(String, String)> = form_urlencoded::parse(req.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let container = if req.subresource == "portforward" {
        None
    } else {
        Some(container(&pod, params(&q, "container").last())?)
    };
    if log {
        validate_log_options(&req.name, &q)?;
    }
    let node_name = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node_name.is_empty() {
        if log {
            // kube-apiserver answers an unscheduled pod's log with nothing.
            return Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain")]).into_response());
        }
        return Err(ApiError::bad_request(format!(
            "pod {} does not have a host assigned",
            req.name
        )));
    }
    let node = get(store, "nodes", "", node_name)
        .ok_or_else(|| ApiError::not_found("nodes", "", node_name))?;
    let addr = endpoint(&node).ok_or_else(|| {
        ApiError::internal(format!(
            "node {node_name} reports no address to reach its kubelet at"
        ))
    })?;
    let kubelets = kubelets.ok_or_else(|| ApiError {
        code: 503,
        reason: "ServiceUnavailable",
        message: "this server has no kubelet client credentials (it serves plain HTTP)".into(),
        details: None,
    })?;
    let mut path = match (req.subresource.as_str(), &container) {
        ("log", Some(c)) => format!("/containerLogs/{}/{}/{c}", req.namespace, req.name),
        ("portforward", _) => format!("/portForward/{}/{}", req.namespace, req.name),
        (sub, Some(c)) => format!("/{sub}/{}/{}/{c}", req.namespace, req.name),
        (_, None) => unreachable!("every subresource but portforward names a container"),
    };
    if let Some(query) = req.uri.query().filter(|q| !q.is_empty()) {
        path = format!("{path}?{query}");
    }
    let mut outgoing = hyper::Request::builder()
        .method(req.method.clone())
        .uri(path.as_str());
    for name in FORWARDED {
        for v in req.headers.get_all(name) {
            outgoing = outgoing.header(name, v);
        }
    }
    let outgoing = outgoing
        .body(Empty::<Bytes>::new())
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let mut resp = kubelets
        .send(addr, outgoing)
        .await
        .map_err(|e| unreachable(&e, &req.method, addr, &path))?;
    let status = resp.status();
    if status == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client) = req.upgrade else {
            return Err(ApiError::bad_request("the connection cannot be upgraded"));
        };
        let kubelet = hyper::upgrade::on(&mut resp);
        let mut answer = Response::builder().status(StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            answer = answer.header(name, value);
        }
        tokio::spawn(splice(client, kubelet));
        return answer
            .body(Body::empty())
            .map_err(|e| ApiError::internal(e.to_string()));
    }
    if !status.is_success() {
        let body = resp
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        return Err(kubelet_refusal(status, &body, &req.subresource, &req.name));
    }
    let mut answer = Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain");
    if let Some(v) = resp
        .headers()
        .get(HeaderName::from_static("transfer-encoding"))
    {
        answer = answer.header("transfer-encoding", v);
    }
    answer
        .body(Body::new(resp.into_body()))
        .map_err(|e| ApiError::internal(e.to_string()))
}

/// Copies bytes both ways between the client's and the kubelet's upgraded connections.
async fn splice(client: hyper::upgrade::OnUpgrade, kubelet: hyper::upgrade::OnUpgrade) {
    let (client, kubelet) = match tokio::try_join!(client, kubelet) {
        Ok(both) => both,
        Err(e) => {
            tracing::debug!(error = %e, "upgrading a streaming connection failed");
            return;
        }
    };
    let (mut client, mut kubelet) = (TokioIo::new(client), TokioIo::new(kubelet));
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut kubelet).await {
        tracing::debug!(error = %e, "streaming connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pod(containers: &[&str]) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {
            "containers": containers.iter().map(|c| json!({"name": c})).collect::<Vec<_>>()
        }})
    }

    #[test]
    fn the_only_container_is_the_default_and_several_need_a_name() {
        assert_eq!(container(&pod(&["app"]), None).unwrap(), "app");
        assert_eq!(
            container(&pod(&["app", "side"]), Some("side")).unwrap(),
            "side"
        );
        let e = container(&pod(&["app", "side"]), None).unwrap_err();
        assert_eq!(
            (e.code, e.message.as_str()),
            (
                400,
                "a container name must be specified for pod web, choose one of: [app side]"
            )
        );
        let e = container(&pod(&["app"]), Some("nope")).unwrap_err();
        assert_eq!(e.message, "container nope is not valid for pod web");
    }

    #[test]
    fn log_options_are_validated_with_kube_apiservers_words() {
        let q = |s: &str| -> Vec<(String, String)> {
            form_urlencoded::parse(s.as_bytes()).into_owned().collect()
        };
        assert!(validate_log_options("web", &q("tailLines=0&limitBytes=1&sinceSeconds=1")).is_ok());
        let e = validate_log_options("web", &q("tailLines=-1")).unwrap_err();
        assert_eq!(e.code, 422);
        assert_eq!(
            e.message,
            "PodLogOptions \"web\" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0"
        );
        let e = validate_log_options("web", &q("sinceSeconds=5&sinceTime=2026-01-01T00:00:00Z"))
            .unwrap_err();
        assert!(e
            .message
            .contains("at most one of `sinceTime` or `sinceSeconds` may be specified"));
    }

    #[test]
    fn kubelet_refusals_become_statuses() {
        let e = kubelet_refusal(
            StatusCode::BAD_REQUEST,
            b"container \"c\" in pod \"p\" is waiting to start: ContainerCreating",
            "log",
            "p",
        );
        assert_eq!((e.code, e.reason), (400, "BadRequest"));
        assert_eq!(
            e.message,
            "container \"c\" in pod \"p\" is waiting to start: ContainerCreating"
        );
        let e = kubelet_refusal(StatusCode::UNAUTHORIZED, b"Unauthorized", "exec", "p");
        assert_eq!((e.code, e.reason), (401, "Unauthorized"));
    }
}
