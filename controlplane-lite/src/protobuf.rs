//! Request bodies in Kubernetes' protobuf encoding (`application/vnd.kubernetes.protobuf`),
//! which kubectl's typed subcommands send (`create namespace`, `run`, `create service`,
//! `expose`): the `k8s\0` envelope (`runtime.Unknown`) around the object's message, decoded into
//! the object's JSON form with the field numbers of Kubernetes' generated.proto
//! (`protobuf_schema.txt`, every message reachable from the served kinds).
//!
//! Go's encoder writes non-pointer fields even when empty, so zero values ("", 0, false, empty
//! messages) are left out, as `omitempty` leaves them out of JSON. A field the schema does not
//! know makes the body undecodable (415) rather than silently dropped.
use std::collections::HashMap;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use crate::clock;

/// The prefix of every protobuf-encoded Kubernetes object.
pub const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProtoError {
    /// The bytes are not valid protobuf.
    #[error("malformed protobuf body: {0}")]
    Malformed(&'static str),
    /// The envelope names a kind this server does not serve.
    #[error("protobuf bodies of {0} are not supported; send JSON")]
    UnknownKind(String),
    /// A field the schema does not have (a newer Kubernetes type?).
    #[error(
        "protobuf field {number} of {message} is not known to controlplane-lite; send JSON instead"
    )]
    UnknownField {
        /// The message.
        message: String,
        /// Its field number.
        number: u64,
    },
}

/// The type of a field (of a list item or map value for repeated and map fields).
#[derive(Debug)]
pub(crate) enum Ty {
    Str,
    Int,
    Bool,
    Double,
    Bytes,
    Time,
    Quantity,
    IntOrStr,
    /// Another message, by schema name (`core.PodSpec`).
    Msg(String),
}

/// One field of a message.
#[derive(Debug)]
pub(crate) struct Field {
    /// Its JSON name.
    pub(crate) name: String,
    pub(crate) ty: Ty,
    pub(crate) repeated: bool,
    pub(crate) map: bool,
}

/// Messages by schema name, fields by number.
pub(crate) type Schema = HashMap<String, HashMap<u64, Field>>;

fn parse_ty(s: &str) -> Ty {
    match s {
        "string" => Ty::Str,
        "int32" | "int64" => Ty::Int,
        "bool" => Ty::Bool,
        "double" => Ty::Double,
        "bytes" => Ty::Bytes,
        "time" => Ty::Time,
        "quantity" => Ty::Quantity,
        "intorstr" => Ty::IntOrStr,
        other => Ty::Msg(other.to_string()),
    }
}

/// The messages of `protobuf_schema.txt` (also the field structure the OpenAPI documents show).
pub(crate) fn schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(|| {
        let mut all = Schema::new();
        let mut current = String::new();
        for line in include_str!("protobuf_schema.txt").lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            if let Some(name) = line.strip_prefix('@') {
                current = name.to_string();
                all.entry(current.clone()).or_default();
                continue;
            }
            let parts: Vec<&str> = line.split_whitespace().collect();
            let (Some(num), Some(name), Some(ty)) = (
                parts.first().and_then(|n| n.parse::<u64>().ok()),
                parts.get(1),
                parts.get(2),
            ) else {
                continue;
            };
            let (map, ty) = match ty.strip_prefix("map:") {
                Some(v) => (true, parse_ty(v)),
                None => (false, parse_ty(ty)),
            };
            let field = Field {
                name: name.to_string(),
                ty,
                repeated: parts.get(3) == Some(&"r"),
                map,
            };
            all.entry(current.clone()).or_default().insert(num, field);
        }
        all
    })
}

/// One wire value.
enum Wire<'a> {
    Varint(u64),
    Fixed64(u64),
    Bytes(&'a [u8]),
    /// A 32-bit value (no served field uses one; read past).
    Fixed32,
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Result<u64, ProtoError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&b, rest) = self
                .buf
                .split_first()
                .ok_or(ProtoError::Malformed("truncated varint"))?;
            self.buf = rest;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(ProtoError::Malformed("varint too long"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], ProtoError> {
        if self.buf.len() < n {
            return Err(ProtoError::Malformed("truncated field"));
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Ok(head)
    }

    fn next(&mut self) -> Result<Option<(u64, Wire<'a>)>, ProtoError> {
        if self.buf.is_empty() {
            return Ok(None);
        }
        let key = self.varint()?;
        let wire = match key & 7 {
            0 => Wire::Varint(self.varint()?),
            1 => Wire::Fixed64(u64::from_le_bytes(
                self.take(8)?.try_into().expect("8 bytes"),
            )),
            2 => {
                let n =
                    usize::try_from(self.varint()?).map_err(|_| ProtoError::Malformed("length"))?;
                Wire::Bytes(self.take(n)?)
            }
            5 => {
                self.take(4)?;
                Wire::Fixed32
            }
            _ => return Err(ProtoError::Malformed("unsupported wire type")),
        };
        Ok(Some((key >> 3, wire)))
    }
}

fn fields(buf: &[u8]) -> Result<Vec<(u64, Wire<'_>)>, ProtoError> {
    let mut r = Reader { buf };
    let mut out = Vec::new();
    while let Some(f) = r.next()? {
        out.push(f);
    }
    Ok(out)
}

fn string(w: &Wire<'_>) -> Result<String, ProtoError> {
    match w {
        Wire::Bytes(b) => std::str::from_utf8(b)
            .map(str::to_string)
            .map_err(|_| ProtoError::Malformed("a string is not UTF-8")),
        _ => Err(ProtoError::Malformed(
            "a string field is not length-delimited",
        )),
    }
}

/// The JSON value of one wire value of type `ty` (`Null` for a zero value).
fn value(ty: &Ty, w: &Wire<'_>) -> Result<Value, ProtoError> {
    Ok(match (ty, w) {
        (Ty::Str, _) => match string(w)? {
            s if s.is_empty() => Value::Null,
            s => json!(s),
        },
        (Ty::Int, Wire::Varint(v)) => match *v as i64 {
            0 => Value::Null,
            n => json!(n),
        },
        (Ty::Bool, Wire::Varint(v)) => match v {
            0 => Value::Null,
            _ => json!(true),
        },
        (Ty::Double, Wire::Fixed64(v)) => json!(f64::from_bits(*v)),
        (Ty::Bytes, Wire::Bytes([])) => Value::Null,
        (Ty::Time, Wire::Bytes(b)) => {
            let mut secs = 0i64;
            for (n, w) in fields(b)? {
                if let (1, Wire::Varint(v)) = (n, w) {
                    secs = v as i64;
                }
            }
            if secs == 0 {
                Value::Null
            } else {
                json!(clock::format(secs))
            }
        }
        (Ty::Quantity, Wire::Bytes(b)) => {
            let mut q = Value::Null;
            for (n, w) in fields(b)? {
                if n == 1 {
                    q = json!(string(&w)?);
                }
            }
            q
        }
        (Ty::IntOrStr, Wire::Bytes(b)) => {
            let (mut kind, mut int, mut text) = (0u64, 0i64, String::new());
            for (n, w) in fields(b)? {
                match (n, w) {
                    (1, Wire::Varint(v)) => kind = v,
                    (2, Wire::Varint(v)) => int = v as i64,
                    (3, w) => text = string(&w)?,
                    _ => {}
                }
            }
            if kind == 1 {
                json!(text)
            } else {
                json!(int)
            }
        }
        (Ty::Msg(name), Wire::Bytes(b)) => match message(name, b)? {
            Value::Object(m) if m.is_empty() => Value::Null,
            v => v,
        },
        _ => return Err(ProtoError::Malformed("a field has the wrong wire type")),
    })
}

/// Decodes message `name` from `buf` into its JSON object.
fn message(name: &str, buf: &[u8]) -> Result<Value, ProtoError> {
    let schema = schema();
    let known = schema
        .get(name)
        .ok_or_else(|| ProtoError::UnknownKind(name.to_string()))?;
    let mut out = Map::new();
    for (num, w) in fields(buf)? {
        let Some(f) = known.get(&num) else {
            return Err(ProtoError::UnknownField {
                message: name.to_string(),
                number: num,
            });
        };
        if f.map {
            let Wire::Bytes(entry) = w else {
                return Err(ProtoError::Malformed("a map entry is not length-delimited"));
            };
            let (mut k, mut v) = (String::new(), Value::Null);
            for (n, ew) in fields(entry)? {
                match n {
                    1 => k = string(&ew)?,
                    2 => v = value(&f.ty, &ew)?,
                    _ => {}
                }
            }
            if v.is_null() && matches!(f.ty, Ty::Str) {
                v = json!("");
            }
            let m = out.entry(f.name.clone()).or_insert_with(|| json!({}));
            m[k] = v;
            continue;
        }
        if matches!(f.ty, Ty::Bytes) && matches!(&w, Wire::Bytes(b) if !b.is_empty()) {
            return Err(ProtoError::UnknownField {
                message: name.to_string(),
                number: num,
            });
        }
        let v = value(&f.ty, &w)?;
        if f.repeated {
            // Repeated items keep their zero values (an empty string in a list is a value).
            let v = match (v, &f.ty) {
                (Value::Null, Ty::Str) => json!(""),
                (Value::Null, Ty::Msg(_)) => json!({}),
                (v, _) => v,
            };
            match out
                .entry(f.name.clone())
                .or_insert_with(|| json!([]))
                .as_array_mut()
            {
                Some(list) => list.push(v),
                None => return Err(ProtoError::Malformed("a repeated field")),
            }
        } else if !v.is_null() {
            out.insert(f.name.clone(), v);
        }
    }
    Ok(Value::Object(out))
}

/// The message of `apiVersion`/`kind`, if served.
fn root(api_version: &str, kind: &str) -> Option<&'static str> {
    Some(match (api_version, kind) {
        ("v1", "Namespace") => "core.Namespace",
        ("v1", "Pod") => "core.Pod",
        ("v1", "Service") => "core.Service",
        ("v1", "Node") => "core.Node",
        ("v1", "Endpoints") => "core.Endpoints",
        ("discovery.k8s.io/v1", "EndpointSlice") => "disc.EndpointSlice",
        ("v1", "Event") => "core.Event",
        ("events.k8s.io/v1", "Event") => "events.Event",
        ("authorization.k8s.io/v1", "SelfSubjectAccessReview") => "authz.SelfSubjectAccessReview",
        _ => return None,
    })
}

/// Decodes a `k8s\0`-prefixed body into the object's JSON.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = body
        .strip_prefix(MAGIC)
        .ok_or(ProtoError::Malformed("no k8s protobuf prefix"))?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (n, w) in fields(envelope)? {
        match (n, w) {
            (1, Wire::Bytes(tm)) => {
                for (tn, tw) in fields(tm)? {
                    match tn {
                        1 => api_version = string(&tw)?,
                        2 => kind = string(&tw)?,
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(r)) => raw = r,
            (3, w) if !string(&w)?.is_empty() => {
                return Err(ProtoError::Malformed("content encodings are not supported"))
            }
            _ => {}
        }
    }
    let name = root(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind(format!("{api_version}, Kind={kind}")))?;
    let mut obj = message(name, raw)?;
    obj["apiVersion"] = json!(api_version);
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(mut v: u64, out: &mut Vec<u8>) {
        loop {
            let b = (v & 0x7f) as u8;
            v >>= 7;
            if v == 0 {
                out.push(b);
                return;
            }
            out.push(b | 0x80);
        }
    }

    fn bytes(num: u64, b: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        varint(num << 3 | 2, &mut out);
        varint(b.len() as u64, &mut out);
        out.extend_from_slice(b);
        out
    }

    fn int(num: u64, v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        varint(num << 3, &mut out);
        varint(v, &mut out);
        out
    }

    #[test]
    fn a_service_as_go_encodes_it_decodes_to_its_json() {
        // ObjectMeta{name: "np", generateName: "", labels: {app: np}, creationTimestamp: {}}
        let meta = [
            bytes(1, b"np"),
            bytes(2, b""),
            int(7, 0),
            bytes(8, b""),
            bytes(11, &[bytes(1, b"app"), bytes(2, b"np")].concat()),
        ]
        .concat();
        // ServicePort{name: "80-8080", port: 80, targetPort: {type: 0, intVal: 8080}, nodePort: 31002}
        let port = [
            bytes(1, b"80-8080"),
            bytes(2, b"TCP"),
            int(3, 80),
            bytes(4, &[int(1, 0), int(2, 8080), bytes(3, b"")].concat()),
            int(5, 31002),
        ]
        .concat();
        let spec = [bytes(1, &port), bytes(4, b"NodePort"), bytes(3, b"")].concat();
        let raw = [bytes(1, &meta), bytes(2, &spec), bytes(3, &bytes(1, b""))].concat();
        let type_meta = [bytes(1, b"v1"), bytes(2, b"Service")].concat();
        let body = [MAGIC, &bytes(1, &type_meta), &bytes(2, &raw)].concat();
        let obj = decode(&body).unwrap();
        assert_eq!(
            obj,
            json!({"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": "np", "labels": {"app": "np"}},
                "spec": {"type": "NodePort", "ports": [{"name": "80-8080", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 31002}]}})
        );
        let unknown = [MAGIC, &bytes(1, &type_meta), &bytes(2, &int(99, 1))].concat();
        assert!(matches!(
            decode(&unknown),
            Err(ProtoError::UnknownField { number: 99, .. })
        ));
        let deployment = [bytes(1, b"apps/v1"), bytes(2, b"Deployment")].concat();
        assert!(matches!(
            decode(&[MAGIC, &bytes(1, &deployment)].concat()),
            Err(ProtoError::UnknownKind(_))
        ));
    }
}
