//! `GET /containerLogs/{namespace}/{pod}/{container}`: a container's log as text, with the
//! kubelet's query parameters (`follow`, `tailLines`, `sinceSeconds`, `sinceTime`, `timestamps`,
//! `previous`, `limitBytes`), streamed as it is read.
use super::{pods, query, ApiError, State};
use crate::kubelet::logs::read::{self, Options};
use axum::body::Body;
use axum::extract::{Path, RawQuery};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use k8s_openapi::jiff::{SignedDuration, Timestamp};

/// A boolean as Go's `strconv.ParseBool` reads it.
pub fn parse_bool(name: &str, v: &str) -> Result<bool, ApiError> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" | "" => Ok(false),
        _ => Err(ApiError::bad_request(format!(
            "{name}: invalid boolean value {v:?}"
        ))),
    }
}

fn number(name: &str, v: &str) -> Result<i64, ApiError> {
    v.parse()
        .map_err(|_| ApiError::bad_request(format!("{name}: invalid integer {v:?}")))
}

/// The options of a query string, at `now`.
pub fn options(raw: Option<&str>, now: Timestamp) -> Result<(Options, bool), ApiError> {
    let mut opts = Options::default();
    let mut previous = false;
    for (k, v) in query::pairs(raw) {
        match k.as_str() {
            "follow" => opts.follow = parse_bool(&k, &v)?,
            "timestamps" => opts.timestamps = parse_bool(&k, &v)?,
            "previous" => previous = parse_bool(&k, &v)?,
            "tailLines" => opts.tail_lines = Some(number(&k, &v)?.max(0) as u64),
            "limitBytes" => opts.limit_bytes = Some(number(&k, &v)?.max(1) as u64),
            "sinceSeconds" => {
                let secs = SignedDuration::from_secs(number(&k, &v)?.max(0));
                opts.since = now.checked_sub(secs).ok();
            }
            "sinceTime" => {
                opts.since = Some(v.parse().map_err(|_| {
                    ApiError::bad_request(format!("sinceTime: {v:?} is not an RFC 3339 time"))
                })?)
            }
            _ => {}
        }
    }
    Ok((opts, previous))
}

/// The handler.
pub async fn get(
    axum::extract::State(state): axum::extract::State<State>,
    Path((namespace, pod, container)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let (opts, previous) = options(raw.as_deref(), Timestamp::now())?;
    let target = pods::find(&state.node, &namespace, &pod, &container)?;
    let file = target.log_file(previous)?;
    let rx = read::stream(file, opts);
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    });
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain")],
        Body::from_stream(body),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_become_log_options() {
        let now: Timestamp = "2026-12-02T01:00:00Z".parse().unwrap();
        let (o, previous) = options(
            Some(
                "follow=true&tailLines=3&timestamps=1&limitBytes=100&sinceSeconds=60&previous=true",
            ),
            now,
        )
        .unwrap();
        assert!(o.follow && o.timestamps && previous);
        assert_eq!((o.tail_lines, o.limit_bytes), (Some(3), Some(100)));
        assert_eq!(o.since, Some("2026-12-02T00:59:00Z".parse().unwrap()));
        let (o, previous) = options(Some("sinceTime=2026-12-01T00%3A00%3A00Z"), now).unwrap();
        assert_eq!(o.since, Some("2026-12-01T00:00:00Z".parse().unwrap()));
        assert!(!o.follow && !previous);
        assert!(options(Some("follow=maybe"), now).is_err());
        assert!(options(Some("tailLines=x"), now).is_err());
    }
}
