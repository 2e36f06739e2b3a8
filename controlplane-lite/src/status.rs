//! Kubernetes `Status` errors: every failure a client sees is one of these, with the reason,
//! code and message kube-apiserver would give.
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

/// One field problem of a 422 Invalid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cause {
    /// `FieldValueInvalid`, `FieldValueRequired`, `FieldValueDuplicate`, `FieldValueNotSupported`.
    pub reason: &'static str,
    /// The field path, e.g. `spec.ports[0].port`.
    pub field: String,
    /// What is wrong, e.g. `Invalid value: 70000: must be between 1 and 65535, inclusive`.
    pub message: String,
}

impl Cause {
    /// A `FieldValueInvalid` cause, formatted as Kubernetes does.
    pub fn invalid(field: impl Into<String>, value: impl std::fmt::Display, detail: &str) -> Cause {
        Cause {
            reason: "FieldValueInvalid",
            field: field.into(),
            message: format!("Invalid value: {value}: {detail}"),
        }
    }

    /// A `FieldValueRequired` cause.
    pub fn required(field: impl Into<String>) -> Cause {
        Cause {
            reason: "FieldValueRequired",
            field: field.into(),
            message: "Required value".into(),
        }
    }

    /// A `FieldValueNotSupported` cause listing the supported values.
    pub fn not_supported(
        field: impl Into<String>,
        value: Option<&str>,
        supported: &[&str],
    ) -> Cause {
        let value = value.map_or("null".to_string(), |v| format!("{v:?}"));
        let list = supported
            .iter()
            .map(|s| format!("{s:?}"))
            .collect::<Vec<_>>()
            .join(", ");
        Cause {
            reason: "FieldValueNotSupported",
            field: field.into(),
            message: format!("Unsupported value: {value}: supported values: {list}"),
        }
    }

    /// A `FieldValueDuplicate` cause.
    pub fn duplicate(field: impl Into<String>, value: impl std::fmt::Display) -> Cause {
        Cause {
            reason: "FieldValueDuplicate",
            field: field.into(),
            message: format!("Duplicate value: {value}"),
        }
    }
}

/// An API error, rendered as a `Status` object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP code.
    pub code: u16,
    /// Kubernetes reason (`NotFound`, `AlreadyExists`, …).
    pub reason: &'static str,
    /// Human message.
    pub message: String,
    /// `details` (name, group, kind, causes).
    pub details: Option<Value>,
}

/// `pods` or `endpointslices.discovery.k8s.io`, as messages name resources.
fn qualified(plural: &str, group: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{plural}.{group}")
    }
}

impl ApiError {
    /// An error about object `name` of `plural` in `group`, with its `details`.
    fn about(
        code: u16,
        reason: &'static str,
        message: String,
        plural: &str,
        group: &str,
        name: &str,
    ) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: Some(json!({"name": name, "group": group, "kind": plural})),
        }
    }

    fn new(code: u16, reason: &'static str, message: String) -> Self {
        ApiError {
            code,
            reason,
            message,
            details: None,
        }
    }

    /// 404 for an object.
    pub fn not_found(plural: &str, group: &str, name: &str) -> Self {
        let what = qualified(plural, group);
        Self::about(
            404,
            "NotFound",
            format!("{what} \"{name}\" not found"),
            plural,
            group,
            name,
        )
    }

    /// 404 for a path nothing serves.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
        )
    }

    /// 409 AlreadyExists.
    pub fn already_exists(plural: &str, group: &str, name: &str) -> Self {
        let what = qualified(plural, group);
        Self::about(
            409,
            "AlreadyExists",
            format!("{what} \"{name}\" already exists"),
            plural,
            group,
            name,
        )
    }

    /// 409 Conflict on a stale resourceVersion.
    pub fn conflict(plural: &str, group: &str, name: &str) -> Self {
        let what = qualified(plural, group);
        let message = format!("Operation cannot be fulfilled on {what} \"{name}\": the object has been modified; please apply your changes to the latest version and try again");
        Self::about(409, "Conflict", message, plural, group, name)
    }

    /// 422 Invalid with field causes.
    pub fn invalid(kind: &str, group: &str, name: &str, causes: &[Cause]) -> Self {
        let list: Vec<String> = causes
            .iter()
            .map(|c| format!("{}: {}", c.field, c.message))
            .collect();
        let summary = if list.len() == 1 {
            list[0].clone()
        } else {
            format!("[{}]", list.join(", "))
        };
        let mut e = Self::new(
            422,
            "Invalid",
            format!("{kind} \"{name}\" is invalid: {summary}"),
        );
        e.details = Some(json!({
            "name": name, "group": group, "kind": kind,
            "causes": causes.iter().map(|c| json!({"reason": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        }));
        e
    }

    /// 400 BadRequest.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into())
    }

    /// 405 MethodNotAllowed.
    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
        )
    }

    /// 410 Gone / Expired for a watch from a too old resourceVersion.
    pub fn gone(rv: u64) -> Self {
        Self::new(410, "Expired", format!("too old resource version: {rv}"))
    }

    /// 415 for a patch type we do not speak.
    pub fn unsupported_media(ct: &str) -> Self {
        Self::new(415, "UnsupportedMediaType", format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json (got {ct})"))
    }

    /// 413 RequestEntityTooLarge, as kube-apiserver words it: `Request entity too large: <why>`.
    pub fn too_large(why: impl std::fmt::Display) -> Self {
        Self::new(
            413,
            "RequestEntityTooLarge",
            format!("Request entity too large: {why}"),
        )
    }

    /// 504 Timeout, as kube-apiserver words it: `Timeout: <why>`.
    pub fn timeout(why: impl std::fmt::Display) -> Self {
        Self::new(504, "Timeout", format!("Timeout: {why}"))
    }

    /// 500 for failures of the server itself (e.g. the disk).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(500, "InternalError", message.into())
    }

    /// The `Status` object.
    pub fn to_status(&self) -> Value {
        let mut v = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message, "reason": self.reason, "code": self.code,
        });
        if let Some(d) = &self.details {
            v["details"] = d.clone();
        }
        v
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let code = StatusCode::from_u16(self.code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (code, axum::Json(self.to_status())).into_response()
    }
}
