//! The HTTP API: discovery, and for every served resource list / get / create / update / patch /
//! delete / watch, including `/status` subresources — routed from the request path exactly as
//! kube-apiserver lays it out.
use std::collections::HashMap;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::admission::{self, Ranges};
use crate::auth::User;
use crate::authz;
use crate::events::convert::{inward, outward};
use crate::resources::{self, Resource};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::status::ApiError;
use crate::store::{Key, Page, PageQuery, Store, StoreError};
use crate::validate::{self, FieldValidation};
use crate::{clock, paging, patch, table, versions, watch};

/// The longest grace period a deletion gets: larger `gracePeriodSeconds` count as this (ten
/// years), so deletion timestamps stay representable.
pub const MAX_GRACE_SECONDS: i64 = 10 * 365 * 86_400;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct Api {
    /// The object store.
    pub store: Store,
    /// Allocation ranges.
    pub ranges: Ranges,
    /// The address clients reach the server at (for `/api`).
    pub address: String,
    /// Reaches kubelets for pods' logs, exec, attach and port-forward (`None`: no client
    /// credentials, those answer 503).
    pub kubelets: Option<crate::kubelet::Client>,
}

/// What a request path addresses.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    res: &'static Resource,
    namespace: Option<String>,
    name: Option<String>,
    status: bool,
}

fn json_response(code: StatusCode, v: &Value) -> Response {
    (
        code,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn ok(v: &Value) -> Response {
    json_response(StatusCode::OK, v)
}

/// Parses `/api/v1/...` or `/apis/<group>/<version>/...` after the group-version.
fn parse_target(group: &str, version: &str, rest: &[&str]) -> Result<Target, ApiError> {
    let find =
        |plural: &str| resources::find(group, version, plural).ok_or_else(ApiError::no_route);
    let t = |res, namespace: Option<&str>, name: Option<&str>, status| Target {
        res,
        namespace: namespace.map(Into::into),
        name: name.map(Into::into),
        status,
    };
    match rest {
        ["namespaces", ns, plural] if group.is_empty() || *plural != "status" => {
            let res = find(plural)?;
            if !res.namespaced {
                return Err(ApiError::no_route());
            }
            Ok(t(res, Some(ns), None, false))
        }
        ["namespaces", ns, plural, name] => {
            let res = find(plural)?;
            Ok(t(res, Some(ns), Some(name), false))
        }
        ["namespaces", ns, plural, name, "status"] => {
            let res = find(plural)?;
            if !res.status {
                return Err(ApiError::no_route());
            }
            Ok(t(res, Some(ns), Some(name), true))
        }
        [plural] => Ok(t(find(plural)?, None, None, false)),
        [plural, name] => {
            let res = find(plural)?;
            if res.namespaced {
                return Err(ApiError::no_route());
            }
            Ok(t(res, None, Some(name), false))
        }
        [plural, name, "status"] => {
            let res = find(plural)?;
            if res.namespaced || !res.status {
                return Err(ApiError::no_route());
            }
            Ok(t(res, None, Some(name), true))
        }
        _ => Err(ApiError::no_route()),
    }
}

/// The query parameters, decoded as application/x-www-form-urlencoded (`%XX` escapes, `+` is a
/// space, malformed escapes kept as they are); of a repeated key the last one counts.
fn query(uri: &Uri) -> HashMap<String, String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect()
}

/// The request's label and field selectors as one predicate; 400 when one does not parse.
fn selector(
    res: &Resource,
    q: &HashMap<String, String>,
) -> Result<impl Fn(&Value) -> bool, ApiError> {
    let labels = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(|e| ApiError::bad_request(format!("unable to parse requirement: {e}")))?;
    let fields = FieldSelector::parse_for(res, q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok(move |o: &Value| {
        let empty = serde_json::Map::new();
        labels.matches(
            o.pointer("/metadata/labels")
                .and_then(Value::as_object)
                .unwrap_or(&empty),
        ) && fields.matches(o)
    })
}

fn selected<'a>(
    res: &Resource,
    items: &'a [Arc<Value>],
    q: &HashMap<String, String>,
) -> Result<Vec<&'a Value>, ApiError> {
    let matches = selector(res, q)?;
    Ok(items
        .iter()
        .map(|o| o.as_ref())
        .filter(|o| matches(o))
        .collect())
}

/// kube-apiserver's 410 for a continue token older than the history, whose own continue token
/// goes on from the current state.
fn expired_continue(cont: Option<&paging::Continue>) -> Response {
    let mut status = ApiError {
        code: 410,
        reason: "Expired",
        message: paging::TOO_OLD.into(),
        details: None,
    }
    .to_status();
    if let Some(c) = cont {
        let (namespace, name) = c.position();
        let last = Key {
            resource: String::new(),
            namespace: namespace.into(),
            name: name.into(),
        };
        status["metadata"] = json!({"continue": paging::Continue::after(None, &last).encode()});
    }
    json_response(StatusCode::GONE, &status)
}

/// Applies the request's `fieldValidation` directive to `obj`: unknown fields fail a Strict
/// request with kube-apiserver's "strict decoding error"; otherwise they are dropped (as
/// decoding into the API types drops them) and, under Warn, returned as warnings. `patch`
/// requests get the bare message, as kube-apiserver words it for patched objects.
fn check_fields(
    res: &Resource,
    obj: &mut Value,
    q: &HashMap<String, String>,
    patch: bool,
) -> Result<Vec<String>, ApiError> {
    let directive = FieldValidation::parse(q.get("fieldValidation").map(String::as_str))
        .map_err(ApiError::bad_request)?;
    let mut typed = obj.clone();
    if typed.is_object() {
        typed["apiVersion"] = json!(res.api_version());
        typed["kind"] = json!(res.kind);
    }
    let prefix = if patch {
        String::new()
    } else {
        format!(
            "{} in version {:?} cannot be handled as a {}: ",
            res.kind, res.version, res.kind
        )
    };
    let unknown = validate::unknown_fields(res.group, res.kind, &typed)
        .map_err(|e| ApiError::bad_request(format!("{prefix}{e}")))?;
    if directive == FieldValidation::Strict && !unknown.is_empty() {
        return Err(ApiError::bad_request(format!(
            "{prefix}{}",
            validate::strict_decoding_error(&unknown)
        )));
    }
    unknown.iter().for_each(|f| f.remove_from(obj));
    Ok(match directive {
        FieldValidation::Warn => unknown
            .iter()
            .map(|f| format!("unknown field \"{f}\""))
            .collect(),
        _ => Vec::new(),
    })
}

/// Whether the request is a server-side dry run (`?dryRun=All`): admitted and answered as if
/// done, never stored (`kubectl diff`, `--dry-run=server`).
fn dry_run(q: &HashMap<String, String>) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {other:?}: only All is supported"
        ))),
    }
}

/// Adds one `Warning: 299 - "..."` header per warning, as kube-apiserver sends them.
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let text = format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\""));
        if let Ok(v) = header::HeaderValue::from_str(&text) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

fn wants_table(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("as=Table"))
}

fn store_err<'a>(res: &'a Resource, name: &'a str) -> impl Fn(StoreError) -> ApiError + 'a {
    move |e| match e {
        StoreError::AlreadyExists => ApiError::already_exists(res.plural, res.group, name),
        StoreError::NotFound => ApiError::not_found(res.plural, res.group, name),
        StoreError::Conflict => ApiError::conflict(res.plural, res.group, name),
        StoreError::Io(..) | StoreError::Damaged { .. } => ApiError::internal(e.to_string()),
    }
}

impl Api {
    fn key(&self, t: &Target, name: &str) -> Key {
        Key {
            resource: t.res.plural.into(),
            namespace: t.namespace.clone().unwrap_or_default(),
            name: name.into(),
        }
    }

    fn require_namespace(&self, ns: &str) -> Result<(), ApiError> {
        let key = Key {
            resource: "namespaces".into(),
            namespace: String::new(),
            name: ns.into(),
        };
        match self.store.get(&key) {
            Some(_) => Ok(()),
            None => Err(ApiError::not_found("namespaces", "", ns)),
        }
    }

    fn list(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
        headers: &HeaderMap,
    ) -> Result<Response, ApiError> {
        let limit = paging::limit(q);
        let cont = match q.get("continue").filter(|c| !c.is_empty()) {
            Some(token) => Some(paging::Continue::decode(token)?),
            None => None,
        };
        let snapshot = cont.as_ref().and_then(paging::Continue::snapshot);
        let ns = t.namespace.as_deref();
        let matches = selector(t.res, q)?;
        let filtered = q.contains_key("labelSelector") || q.contains_key("fieldSelector");
        // Only this page is cut from the snapshot (and, unfiltered, the rest counted for
        // remainingItemCount): each page costs what it holds, not what came before it.
        let query = PageQuery {
            resource: t.res.plural,
            namespace: ns,
            rv: snapshot,
            after: cont.as_ref().map(paging::Continue::position),
            limit,
            count_rest: !filtered,
        };
        let Some(Page { items, rest, rv }) = self.store.list_page(&query, |_, o| matches(o)) else {
            return Ok(expired_continue(cont.as_ref()));
        };
        // Later pages continue in the same snapshot (or, after a too old token, in the
        // current state, as kube-apiserver's inconsistent continuation).
        let token_rv = match &cont {
            Some(c) if c.snapshot().is_none() => None,
            _ => Some(rv),
        };
        let next = items
            .last()
            .filter(|_| rest > 0)
            .map(|(k, _)| paging::Continue::after(token_rv, k).encode());
        let page: Vec<&Value> = items.iter().map(|(_, o)| o.as_ref()).collect();
        let mut meta = json!({"resourceVersion": rv.to_string()});
        if let Some(token) = &next {
            meta["continue"] = json!(token);
            if !filtered {
                meta["remainingItemCount"] = json!(rest);
            }
        }
        if wants_table(headers) {
            let mut table = table::table(
                t.res,
                &page,
                rv,
                q.get("includeObject").map_or("", String::as_str),
            );
            table["metadata"] = meta;
            return Ok(ok(&table));
        }
        Ok(ok(&json!({
            "kind": format!("{}List", t.res.kind),
            "apiVersion": t.res.api_version(),
            "metadata": meta,
            "items": page.iter().map(|o| outward(t.res, o)).collect::<Vec<_>>(),
        })))
    }

    fn get(
        &self,
        t: &Target,
        name: &str,
        headers: &HeaderMap,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let obj = self
            .store
            .get(&self.key(t, name))
            .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, name))?;
        if wants_table(headers) && !t.status {
            return Ok(ok(&table::table(
                t.res,
                &[obj.as_ref()],
                self.store.rv(),
                q.get("includeObject").map_or("", String::as_str),
            )));
        }
        Ok(ok(&outward(t.res, &obj)))
    }

    fn create(
        &self,
        t: &Target,
        body: &Bytes,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let mut obj = crate::body::decode(body)?;
        let warnings = check_fields(t.res, &mut obj, q, false)?;
        let mut obj = inward(t.res, obj);
        let ns = t.namespace.clone().unwrap_or_default();
        if t.res.namespaced {
            if let Some(body_ns) = obj.pointer("/metadata/namespace").and_then(Value::as_str) {
                if body_ns != ns {
                    return Err(ApiError::bad_request(format!("the namespace of the provided object ({body_ns}) does not match the namespace sent on the request ({ns})")));
                }
            }
            self.require_namespace(&ns)?;
        }
        let _admission = self.store.admission_lock();
        admission::on_create(t.res, &ns, &mut obj, &self.store, &self.ranges)?;
        let name = obj
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        if dry_run(q)? {
            if self.store.get(&self.key(t, &name)).is_some() {
                return Err(ApiError::already_exists(t.res.plural, t.res.group, &name));
            }
            return Ok(with_warnings(
                json_response(StatusCode::CREATED, &outward(t.res, &obj)),
                &warnings,
            ));
        }
        let stored = self
            .store
            .create(self.key(t, &name), obj)
            .map_err(store_err(t.res, &name))?;
        Ok(with_warnings(
            json_response(StatusCode::CREATED, &outward(t.res, &stored)),
            &warnings,
        ))
    }

    fn update(
        &self,
        t: &Target,
        name: &str,
        body: &Bytes,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let mut obj = crate::body::decode(body)?;
        let warnings = check_fields(t.res, &mut obj, q, false)?;
        let obj = inward(t.res, obj);
        if let Some(n) = obj.pointer("/metadata/name").and_then(Value::as_str) {
            if n != name {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({n}) does not match the name on the URL ({name})"
                )));
            }
        }
        let expect = obj
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let key = self.key(t, name);
        let dry = dry_run(q)?;
        // Without a resourceVersion the update applies to whatever is stored when it is
        // written, as kube-apiserver's GuaranteedUpdate: admitted against the object read, and
        // tried again when that changed meanwhile; never re-creating one deleted meanwhile.
        let mut tries = 0;
        loop {
            let old = self
                .store
                .get(&key)
                .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, name))?;
            let read = expect.or_else(|| Some(crate::store::rv_of(&old)));
            match self.replace(t, name, &old, obj.clone(), read, dry) {
                Err(e) if e.code == 409 && expect.is_none() && tries < 10 => tries += 1,
                resp => return Ok(with_warnings(resp?, &warnings)),
            }
        }
    }

    fn patch(
        &self,
        t: &Target,
        name: &str,
        req: &Request,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let (headers, body) = (&req.headers, &req.body);
        let ct = headers
            .get(header::CONTENT_TYPE)
            .and_then(|c| c.to_str().ok())
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string();
        // The patch type is checked first: server-side apply (`application/apply-patch+yaml`)
        // is refused as such, whether the object exists or not.
        const PATCH_TYPES: [&str; 3] = [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
        ];
        if !PATCH_TYPES.contains(&ct.as_str()) {
            return Err(ApiError::unsupported_media(&ct));
        }
        let p: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("the patch is not JSON: {e}")))?;
        let key = self.key(t, name);
        let old = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, name))?;
        let mut obj = outward(t.res, &old);
        let bad = |e: patch::PatchError| {
            if let patch::PatchError::TooManyOperations(_) = e {
                // kube-apiserver: errors.NewRequestEntityTooLargeError (413).
                return ApiError::too_large(&e);
            }
            ApiError::invalid(
                t.res.kind,
                t.res.group,
                name,
                &[crate::status::Cause::invalid("patch", "", &e.to_string())],
            )
        };
        match ct.as_str() {
            "application/merge-patch+json" => patch::merge(&mut obj, &p),
            "application/strategic-merge-patch+json" => {
                patch::strategic(&mut obj, &p).map_err(bad)?
            }
            "application/json-patch+json" => patch::json_patch(&mut obj, &p).map_err(bad)?,
            other => return Err(ApiError::unsupported_media(other)),
        }
        // What a patch may build is bounded by what a body may carry (kube-apiserver refuses a
        // too large result with the same 413).
        if serde_json::to_vec(&obj).map_or(0, |b| b.len()) > crate::body::MAX_BODY {
            return Err(crate::body::too_large());
        }
        let warnings = check_fields(t.res, &mut obj, q, true)?;
        let obj = inward(t.res, obj);
        // A patch carrying a resourceVersion is a precondition.
        let expect = p
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
            .and_then(|s| s.parse().ok());
        let expect = expect.or_else(|| {
            old.pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse().ok())
        });
        let resp = self.replace(t, name, &old, obj, expect, dry_run(q)?)?;
        Ok(with_warnings(resp, &warnings))
    }

    /// Admits `obj` as the replacement of `old` and stores it (409 on a stale `expect`).
    fn replace(
        &self,
        t: &Target,
        name: &str,
        old: &Value,
        mut obj: Value,
        expect: Option<u64>,
        dry: bool,
    ) -> Result<Response, ApiError> {
        let key = self.key(t, name);
        let _admission = self.store.admission_lock();
        admission::on_update(t.res, old, &mut obj, t.status, &self.store, &self.ranges)?;
        if dry {
            let current = old
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .and_then(|s| s.parse::<u64>().ok());
            if expect.is_some_and(|e| Some(e) != current) {
                return Err(ApiError::conflict(t.res.plural, t.res.group, name));
            }
            obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
            return Ok(ok(&outward(t.res, &obj)));
        }
        let stored = self
            .store
            .update(key, obj, expect)
            .map_err(store_err(t.res, name))?;
        Ok(ok(&outward(t.res, &stored)))
    }

    fn delete(
        &self,
        t: &Target,
        name: &str,
        q: &HashMap<String, String>,
        body: &Bytes,
    ) -> Result<Response, ApiError> {
        let opts: Value = if body.is_empty() {
            json!({})
        } else {
            crate::body::decode(body)?
        };
        let grace = q
            .get("gracePeriodSeconds")
            .and_then(|g| g.parse::<i64>().ok())
            .or_else(|| opts["gracePeriodSeconds"].as_i64())
            .map(|g| g.min(MAX_GRACE_SECONDS));
        let key = self.key(t, name);
        let obj = self
            .store
            .get(&key)
            .ok_or_else(|| ApiError::not_found(t.res.plural, t.res.group, name))?;
        if let Some(pre) = opts
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
        {
            if obj
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                != Some(pre)
            {
                return Err(ApiError::conflict(t.res.plural, t.res.group, name));
            }
        }
        // kubectl sends a delete's dry run in the DeleteOptions body.
        let dry_body = opts["dryRun"]
            .as_array()
            .is_some_and(|d| d.iter().any(|v| v == "All"));
        if dry_run(q)? || dry_body {
            return Ok(ok(&outward(t.res, &obj)));
        }
        if t.res.kind == "Pod" {
            if let Some(resp) = self.graceful_pod_delete(&key, &obj, grace)? {
                return Ok(resp);
            }
        }
        if t.res.kind == "Namespace" {
            for res in resources::RESOURCES.iter().filter(|r| r.namespaced) {
                for o in self.store.list(res.plural, Some(name)).0 {
                    let k = Key {
                        resource: res.plural.into(),
                        namespace: name.into(),
                        name: o["metadata"]["name"].as_str().unwrap_or("").into(),
                    };
                    let _ = self.store.delete(k);
                }
            }
        }
        let gone = self.store.delete(key).map_err(store_err(t.res, name))?;
        Ok(ok(&outward(t.res, &gone)))
    }

    /// A pod on a live node is marked terminating; its kubelet finishes the deletion.
    fn graceful_pod_delete(
        &self,
        key: &Key,
        pod: &Value,
        grace: Option<i64>,
    ) -> Result<Option<Response>, ApiError> {
        let node = pod
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .unwrap_or("");
        let node_exists = !node.is_empty()
            && self
                .store
                .get(&Key {
                    resource: "nodes".into(),
                    namespace: String::new(),
                    name: node.into(),
                })
                .is_some();
        let grace = grace
            .or_else(|| {
                pod.pointer("/spec/terminationGracePeriodSeconds")
                    .and_then(Value::as_i64)
            })
            .unwrap_or(30)
            .min(MAX_GRACE_SECONDS);
        if !node_exists || grace <= 0 {
            return Ok(None);
        }
        let updated = self
            .store
            .modify(key, |p| {
                let mut p = p.clone();
                if p.pointer("/metadata/deletionTimestamp").is_none() {
                    p["metadata"]["deletionTimestamp"] =
                        json!(clock::format(clock::now_secs().saturating_add(grace)));
                    p["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
                }
                Some(p)
            })
            .map_err(store_err(
                resources::by_kind("Pod").expect("pods are served"),
                &key.name,
            ))?;
        let current = updated
            .or_else(|| self.store.get(key))
            .map(|o| (*o).clone())
            .unwrap_or(Value::Null);
        Ok(Some(ok(&current)))
    }

    fn delete_collection(
        &self,
        t: &Target,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let (items, _) = self.store.list(t.res.plural, t.namespace.as_deref());
        let mut deleted = Vec::new();
        for o in selected(t.res, &items, q)? {
            let name = o["metadata"]["name"].as_str().unwrap_or("").to_string();
            if self.delete(t, &name, q, &Bytes::new()).is_ok() {
                deleted.push(outward(t.res, o));
            }
        }
        Ok(ok(
            &json!({"kind": format!("{}List", t.res.kind), "apiVersion": t.res.api_version(), "metadata": {}, "items": deleted}),
        ))
    }

    /// Refuses the request with kube-apiserver's 403 unless `user` may make it.
    fn authorize(
        &self,
        user: &User,
        t: &Target,
        req: &Request,
        watching: bool,
    ) -> Result<(), ApiError> {
        let verb = match (req.method.as_str(), t.name.is_some()) {
            ("GET", _) if watching => "watch",
            ("GET", true) => "get",
            ("GET", false) => "list",
            ("POST", _) => "create",
            ("PUT", _) => "update",
            ("PATCH", _) => "patch",
            ("DELETE", true) => "delete",
            ("DELETE", false) => "deletecollection",
            (other, _) => other,
        };
        let mut name = t.name.clone().unwrap_or_default();
        let mut facts = authz::Facts::default();
        if authz::node_of(user).is_some() {
            if verb == "create" && t.res.plural == "nodes" {
                // A node's create is about the Node it carries.
                if let Ok(obj) = crate::body::decode(&req.body) {
                    name = obj
                        .pointer("/metadata/name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string();
                }
            }
            if t.res.plural == "pods" && !name.is_empty() {
                facts.pod_node = self.store.get(&self.key(t, &name)).and_then(|p| {
                    p.pointer("/spec/nodeName")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                });
            }
        }
        let a = authz::Attributes {
            verb: verb.to_lowercase(),
            group: t.res.group.to_string(),
            resource: t.res.plural.to_string(),
            subresource: if t.status {
                "status".into()
            } else {
                String::new()
            },
            namespace: t.namespace.clone().unwrap_or_default(),
            name,
        };
        authz::decide(user, &a, &facts).map_err(|d| {
            tracing::debug!(user = %user.name, verb = %a.verb, resource = %a.resource, name = %a.name, "forbidden");
            authz::forbidden(user, &a, &d)
        })
    }

    /// `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` (`kubectl auth can-i`).
    fn self_review(&self, req: &Request) -> Result<Response, ApiError> {
        if req.method != Method::POST {
            return Err(ApiError::method_not_allowed());
        }
        let review = crate::body::decode(&req.body)?;
        let admin = User {
            name: "admin".into(),
            uid: String::new(),
            groups: vec![authz::MASTERS.into()],
        };
        let answered = authz::self_review(req.user.as_ref().unwrap_or(&admin), review)?;
        Ok(json_response(StatusCode::CREATED, &answered))
    }

    /// Serves a request under `/api/<version>` or `/apis/<group>/<version>`: authorization,
    /// then watches on the async workers and every other verb — which may wait for locks and
    /// the disk — on the blocking pool.
    async fn resource(
        self: Arc<Self>,
        req: Arc<Request>,
        group: &str,
        version: &str,
        rest: &[&str],
    ) -> Result<Response, ApiError> {
        if rest.is_empty() {
            return resources::resource_list(group, version)
                .map(|v| ok(&v))
                .ok_or_else(ApiError::no_route);
        }
        let t = parse_target(group, version, rest)?;
        let q = query(&req.uri);
        let watching = matches!(q.get("watch").map(String::as_str), Some("1") | Some("true"));
        if let Some(user) = &req.user {
            self.authorize(user, &t, &req, watching)?;
        }
        if req.method == Method::GET {
            versions::await_requested(&self.store, &q).await?;
        }
        if req.method == Method::GET && watching {
            let mut q = q;
            if let Some(name) = &t.name {
                let sel = q.get("fieldSelector").cloned().unwrap_or_default();
                q.insert(
                    "fieldSelector".into(),
                    if sel.is_empty() {
                        format!("metadata.name={name}")
                    } else {
                        format!("{sel},metadata.name={name}")
                    },
                );
            }
            let table = wants_table(&req.headers);
            return watch::serve(&self.store, t.res, t.namespace.clone(), &q, table).await;
        }
        tokio::task::spawn_blocking(move || self.verb(&req, &t, &q))
            .await
            .unwrap_or_else(|e| Err(ApiError::internal(format!("the request failed: {e}"))))
    }

    /// Every verb but watch.
    fn verb(
        &self,
        req: &Request,
        t: &Target,
        q: &HashMap<String, String>,
    ) -> Result<Response, ApiError> {
        let (method, headers, body) = (&req.method, &req.headers, &req.body);
        let span = tracing::debug_span!("request", %method, resource = t.res.plural, namespace = ?t.namespace, name = ?t.name);
        let _enter = span.enter();
        match (method.as_str(), &t.name) {
            ("GET", None) => self.list(t, q, headers),
            ("GET", Some(name)) => self.get(t, name, headers, q),
            ("POST", None) if t.namespace.is_some() || !t.res.namespaced => self.create(t, body, q),
            ("PUT", Some(name)) => self.update(t, name, body, q),
            ("PATCH", Some(name)) => self.patch(t, name, req, q),
            ("DELETE", Some(name)) if !t.status => self.delete(t, name, q, body),
            ("DELETE", None) if t.namespace.is_some() || !t.res.namespaced => {
                self.delete_collection(t, q)
            }
            _ => Err(ApiError::method_not_allowed()),
        }
    }
}

/// One HTTP request, as the verb handlers need it.
struct Request {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
    /// Who sent it (`None`: the server runs without authentication).
    user: Option<User>,
}

/// The single entry point: routes by path.
pub async fn handle(State(api): State<Arc<Api>>, req: axum::extract::Request) -> Response {
    let (mut parts, body) = req.into_parts();
    let user = parts.extensions.get::<User>().cloned();
    let (method, uri, headers) = (parts.method, parts.uri, parts.headers);
    if let Some((namespace, name, subresource)) = pod_stream(uri.path()) {
        let req = crate::kubelet::proxy::StreamRequest {
            method: method.clone(),
            uri: uri.clone(),
            headers,
            user,
            upgrade: parts.extensions.remove::<hyper::upgrade::OnUpgrade>(),
            namespace,
            name,
            subresource,
        };
        return crate::kubelet::proxy::serve(&api.store, api.kubelets.as_ref(), req)
            .await
            .unwrap_or_else(|e| {
                tracing::debug!(%method, %uri, code = e.code, reason = e.reason, "request failed");
                e.into_response()
            });
    }
    let body = match crate::body::read(body).await {
        Ok(b) => b,
        Err(e) => {
            tracing::debug!(%method, %uri, code = e.code, reason = e.reason, "request body refused");
            return e.into_response();
        }
    };
    let req = Arc::new(Request {
        method: method.clone(),
        uri: uri.clone(),
        headers,
        body,
        user,
    });
    let path = req.uri.path().trim_end_matches('/').to_string();
    let parts: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let result = match parts.as_slice() {
        ["healthz"] | ["readyz"] | ["livez"] => Ok((StatusCode::OK, "ok").into_response()),
        ["version"] => Ok(ok(&resources::version())),
        ["api"] => Ok(ok(&resources::core_versions(&api.address))),
        ["apis"] => Ok(ok(&resources::groups())),
        ["apis", group] => resources::group(group)
            .map(|g| ok(&g))
            .ok_or_else(ApiError::no_route),
        ["openapi", "v3"] => Ok(ok(&resources::openapi_index())),
        ["openapi", "v3", rest @ ..] => resources::openapi_doc(&rest.join("/"))
            .map(|d| ok(&d))
            .ok_or_else(ApiError::no_route),
        ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] => api.self_review(&req),
        ["api", version, rest @ ..] => api.clone().resource(req, "", version, rest).await,
        ["apis", group, version, rest @ ..] => {
            api.clone().resource(req, group, version, rest).await
        }
        _ => Err(ApiError::no_route()),
    };
    result.unwrap_or_else(|e| {
        tracing::debug!(%method, %uri, code = e.code, reason = e.reason, "request failed");
        e.into_response()
    })
}

/// The namespace, pod and subresource of a path to one of a pod's streaming subresources
/// (`/api/v1/namespaces/NS/pods/NAME/log|exec|attach|portforward`).
fn pod_stream(path: &str) -> Option<(String, String, String)> {
    let parts: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    match parts.as_slice() {
        ["", "api", "v1", "namespaces", ns, "pods", name, sub]
            if crate::kubelet::proxy::SUBRESOURCES.contains(sub) =>
        {
            Some((ns.to_string(), name.to_string(), sub.to_string()))
        }
        _ => None,
    }
}

/// A streaming response body.
pub fn stream_body(
    s: impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> + Send + 'static,
) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::TRANSFER_ENCODING, "chunked")
        .body(Body::from_stream(s))
        .unwrap_or_else(|_| ApiError::internal("building the watch response").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_to_their_resource_namespace_name_and_subresource() {
        let t = parse_target("", "v1", &["namespaces", "default", "pods", "a", "status"]).unwrap();
        assert_eq!(
            (
                t.res.plural,
                t.namespace.as_deref(),
                t.name.as_deref(),
                t.status
            ),
            ("pods", Some("default"), Some("a"), true)
        );
        let t = parse_target("", "v1", &["namespaces", "kube-system"]).unwrap();
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_target("", "v1", &["nodes", "n1", "status"]).unwrap();
        assert!(t.status && t.namespace.is_none());
        assert!(
            parse_target("", "v1", &["pods", "a"]).is_err(),
            "namespaced objects need a namespace"
        );
        assert!(parse_target("", "v1", &["deployments"]).is_err());
        let t = parse_target(
            "discovery.k8s.io",
            "v1",
            &["namespaces", "default", "endpointslices"],
        )
        .unwrap();
        assert_eq!(t.res.kind, "EndpointSlice");
    }

    #[test]
    fn pods_streaming_subresources_are_routed_to_the_kubelet_proxy() {
        assert_eq!(
            pod_stream("/api/v1/namespaces/default/pods/web/exec"),
            Some(("default".into(), "web".into(), "exec".into()))
        );
        assert!(pod_stream("/api/v1/namespaces/default/pods/web/log/").is_some());
        assert_eq!(
            pod_stream("/api/v1/namespaces/default/pods/web/status"),
            None
        );
        assert_eq!(
            pod_stream("/api/v1/namespaces/default/services/web/exec"),
            None
        );
    }

    #[test]
    fn query_components_decode_percent_escapes_and_plus_as_form_encoding_does() {
        let uri: Uri = concat!(
            "/api/v1/namespaces/default/pods?labelSelector=app%3Dweb%2Ctier+in+%28a%2Cb%29",
            "&fieldSelector=metadata.name%3Da%2Fb%2fc&continue=a+b%2Bc%20d&watch&empty=",
            "&bad=%zz%4&pct=100%25&utf8=%C3%A9&lossy=%FF&&k%3Dy=1&dup=1&dup=2",
        )
        .parse()
        .unwrap();
        let q = query(&uri);
        let want = [
            ("labelSelector", "app=web,tier in (a,b)"),
            ("fieldSelector", "metadata.name=a/b/c"),
            ("continue", "a b+c d"),
            ("watch", ""),
            ("empty", ""),
            ("bad", "%zz%4"),
            ("pct", "100%"),
            ("utf8", "é"),
            ("lossy", "\u{FFFD}"),
            ("k=y", "1"),
            ("dup", "2"),
        ];
        assert_eq!(q.len(), want.len(), "{q:?}");
        for (k, v) in want {
            assert_eq!(q.get(k).map(String::as_str), Some(v), "{k}");
        }
    }
}
