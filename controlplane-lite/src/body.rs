//! Request bodies: read with kube-apiserver's size limit and time limit, and decoded (JSON,
//! YAML or protobuf) with bounded work.
//!
//! Invariant: no request body makes the server hold more than [`MAX_BODY`] bytes of it, nor
//! build a decoded document larger than a small multiple of the bytes it was sent — YAML aliases
//! that would expand past [`yaml_budget`] ("billion laughs", CVE-2019-11253) are refused with
//! a 400 before they are expanded, and reading a body that trickles in stops after
//! [`BODY_READ_TIMEOUT`].
use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use axum::body::{Body, Bytes};
use http_body_util::BodyExt;
use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::status::ApiError;

/// The largest request body accepted: kube-apiserver's `MaxRequestBodyBytes`, 3 MiB.
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// How long the body of one request may take to arrive (kube-apiserver's request timeout).
pub const BODY_READ_TIMEOUT: Duration = Duration::from_secs(60);

/// go-yaml's word for an aliasing bomb, which kube-apiserver returns as a 400.
pub const EXCESSIVE_ALIASING: &str = "yaml: document contains excessive aliasing";

/// Reads a whole request body: 413 `RequestEntityTooLarge` past [`MAX_BODY`] (kube-apiserver:
/// `Request entity too large: limit is 3145728`), 504 `Timeout` when it has not arrived within
/// [`BODY_READ_TIMEOUT`], 400 when the connection broke.
pub async fn read(body: Body) -> Result<Bytes, ApiError> {
    read_within(body, BODY_READ_TIMEOUT).await
}

async fn read_within(body: Body, limit: Duration) -> Result<Bytes, ApiError> {
    let limited = http_body_util::Limited::new(body, MAX_BODY);
    match tokio::time::timeout(limit, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if is_length_limit(e.as_ref()) => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!(
            "reading the request body: {e}"
        ))),
        Err(_) => Err(ApiError::timeout(
            "request did not complete within requested timeout - context deadline exceeded",
        )),
    }
}

fn is_length_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(err) = cur {
        if err.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// The 413 kube-apiserver answers for a body over [`MAX_BODY`].
pub fn too_large() -> ApiError {
    ApiError::too_large(format!("limit is {MAX_BODY}"))
}

/// Decodes a create/update/delete body: protobuf (`k8s\0` prefix), JSON, else YAML.
pub fn decode(body: &[u8]) -> Result<Value, ApiError> {
    if body.starts_with(crate::protobuf::MAGIC) {
        return crate::protobuf::decode(body).map_err(|e| ApiError {
            code: 415,
            reason: "UnsupportedMediaType",
            message: e.to_string(),
            details: None,
        });
    }
    if let Ok(v) = serde_json::from_slice::<Value>(body) {
        return Ok(v);
    }
    yaml(body).map_err(|e| {
        ApiError::bad_request(format!("the request body is neither JSON nor YAML: {e}"))
    })
}

/// How much decoded YAML (in [`cost`] units) a body of `len` bytes may produce: four times its
/// size, at least 64 KiB. A document without aliases costs at most about twice its size.
pub fn yaml_budget(len: usize) -> usize {
    len.saturating_mul(4).max(64 * 1024)
}

/// Why a YAML body did not decode.
#[derive(Debug, thiserror::Error)]
pub enum YamlError {
    /// Its aliases expand past [`yaml_budget`].
    #[error("{EXCESSIVE_ALIASING}")]
    ExcessiveAliasing,
    /// The YAML parser refused it.
    #[error(transparent)]
    Syntax(#[from] serde_yaml::Error),
}

/// Decodes one YAML document into JSON, stopping once the expansion passes [`yaml_budget`].
pub fn yaml(body: &[u8]) -> Result<Value, YamlError> {
    let budget = Cell::new(yaml_budget(body.len()));
    let exceeded = Cell::new(false);
    let seed = Bounded {
        budget: &budget,
        exceeded: &exceeded,
    };
    match seed.deserialize(serde_yaml::Deserializer::from_slice(body)) {
        Ok(v) => Ok(v),
        Err(_) if exceeded.get() => Err(YamlError::ExcessiveAliasing),
        Err(e) => Err(YamlError::Syntax(e)),
    }
}

/// What one decoded node costs: one unit, plus the bytes of a string or key.
fn cost(extra: usize) -> usize {
    1 + extra
}

/// Builds a JSON value while charging every node against a shared budget.
#[derive(Clone, Copy)]
struct Bounded<'a> {
    budget: &'a Cell<usize>,
    exceeded: &'a Cell<bool>,
}

impl Bounded<'_> {
    fn charge<E: serde::de::Error>(&self, extra: usize) -> Result<(), E> {
        match self.budget.get().checked_sub(cost(extra)) {
            Some(left) => {
                self.budget.set(left);
                Ok(())
            }
            None => {
                self.exceeded.set(true);
                Err(E::custom(EXCESSIVE_ALIASING))
            }
        }
    }
}

impl<'de> DeserializeSeed<'de> for Bounded<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Bounded<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML value")
    }

    fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Bool(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Value, E> {
        self.charge(0)?;
        // As serde_json: a non-finite number has no JSON form.
        Ok(Number::from_f64(v).map_or(Value::Null, Value::Number))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Value, E> {
        self.charge(v.len())?;
        Ok(Value::String(v.to_string()))
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Value, E> {
        self.charge(0)?;
        Ok(Value::Null)
    }

    fn visit_none<E: serde::de::Error>(self) -> Result<Value, E> {
        self.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self)? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        self.charge(0)?;
        let mut out = Map::new();
        while let Some(k) = map.next_key_seed(self)? {
            let key = match k {
                Value::String(s) => s,
                // YAML allows other keys; JSON objects have string keys.
                other => other.to_string(),
            };
            let v = map.next_value_seed(self)?;
            out.insert(key, v);
        }
        Ok(Value::Object(out))
    }
}

impl ApiError {
    /// Whether this is the 400 of a YAML aliasing bomb (for logs and tests).
    pub fn is_excessive_aliasing(&self) -> bool {
        self.code == 400 && self.message.contains(EXCESSIVE_ALIASING)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A few KB of YAML whose aliases expand to 10^9 scalars.
    fn billion_laughs() -> String {
        let a = vec!["x"; 1000].join(",");
        let b = vec!["*a"; 100].join(",");
        let c = vec!["*b"; 100].join(",");
        let d = vec!["*c"; 100].join(",");
        format!("a: &a [{a}]\nb: &b [{b}]\nc: &c [{c}]\nd: [{d}]\n")
    }

    #[test]
    fn a_yaml_alias_bomb_is_refused_as_excessive_aliasing() {
        let body = billion_laughs();
        assert!(body.len() < 4096, "{}", body.len());
        let e = decode(body.as_bytes()).unwrap_err();
        assert_eq!(e.code, 400);
        assert!(e.is_excessive_aliasing(), "{}", e.message);
    }

    #[test]
    fn modest_yaml_aliases_and_plain_documents_decode() {
        let v = yaml(b"a: &a {x: 1}\nb: *a\nc: [1, 2.5, true, null, ~]\n").unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": {"x": 1}, "b": {"x": 1}, "c": [1, 2.5, true, null, null]})
        );
        let big = "k: v\n".repeat(200_000);
        assert!(
            yaml(big.as_bytes()).is_ok(),
            "a 1 MB document without aliases"
        );
    }

    #[tokio::test]
    async fn a_body_over_three_mebibytes_is_a_413_status() {
        let e = read(Body::from(vec![b' '; MAX_BODY + 1]))
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason), (413, "RequestEntityTooLarge"));
        assert_eq!(e.message, "Request entity too large: limit is 3145728");
        assert_eq!(
            read(Body::from(vec![b' '; MAX_BODY])).await.unwrap().len(),
            MAX_BODY
        );
    }

    #[tokio::test]
    async fn a_body_that_never_ends_times_out_with_a_504() {
        let (_tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(1);
        let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(rx));
        let e = read_within(body, Duration::from_millis(50))
            .await
            .unwrap_err();
        assert_eq!((e.code, e.reason), (504, "Timeout"));
    }
}
