//! HTTP handling: one entry point that authenticates, records, routes by path and
//! answers with objects, lists, watch streams or `Status` errors.
//!
//! Follows "Kubernetes API Concepts" (verbs, collections, lists, watches, resource
//! versions): <https://kubernetes.io/docs/reference/using-api/api-concepts/>,
//! "Server-Side Apply" for `PATCH` with `application/apply-patch+yaml`, `fieldManager`
//! and `force`: <https://kubernetes.io/docs/reference/using-api/server-side-apply/>,
//! "Update API Objects in Place Using kubectl patch" for the JSON merge and JSON
//! patch types: <https://kubernetes.io/docs/tasks/manage-kubernetes-objects/update-api-object-kubectl-patch/>,
//! and "Authenticating" for bearer tokens:
//! <https://kubernetes.io/docs/reference/access-authn-authz/authentication/#putting-a-bearer-token-in-a-request>.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State as AxState};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::fields;
use crate::rbac::{self, User};
use crate::resources::{self, Resource, Target};
use crate::selector::{FieldSelector, LabelSelector};
use crate::status::{ApiError, delete_success};
use crate::store::{Credential, RecordedRequest, State, now_rfc3339};
use crate::validate;
use crate::{Inner, controller, watch};

type Result<T, E = ApiError> = std::result::Result<T, E>;

/// What a handler answers.
pub enum Reply {
    Json(u16, Value),
    Stream(Response),
}

impl From<ApiError> for Reply {
    fn from(e: ApiError) -> Self {
        Reply::Json(e.code, e.body)
    }
}

/// Query parameters, percent-decoded.
pub type Query = BTreeMap<String, String>;

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("");
                match u8::from_str_radix(hex, 16) {
                    Ok(b) => {
                        out.push(b);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

pub fn parse_query(q: &str) -> Query {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

/// The single entry point for every request.
pub async fn handle(AxState(inner): AxState<Arc<Inner>>, req: Request) -> Response {
    let method = req.method().clone();
    let uri = req.uri().clone();
    let headers = req.headers().clone();
    let body = match axum::body::to_bytes(req.into_body(), 64 << 20).await {
        Ok(b) => b,
        Err(_) => Bytes::new(),
    };
    let path = uri.path().to_string();
    let raw_query = uri.query().unwrap_or("").to_string();
    let query = parse_query(&raw_query);
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    let attributes = rbac::attributes(method.as_str(), &path, &query);
    let mut user_name = String::new();
    let mut warnings: Vec<String> = Vec::new();
    let reply = match authenticate(&inner, &headers) {
        Err(e) => e.into(),
        Ok(user) => {
            user_name = user.name.clone();
            // Authorization comes before routing, as in the API server's filter
            // chain: a request nobody may make is 403 even for a path not served.
            let decision = match lock(&inner) {
                Ok(s) => rbac::authorize(&s, &user, &attributes)
                    .map_err(|reason| rbac::forbidden(&user, &attributes, &reason)),
                Err(e) => Err(e),
            };
            match decision {
                Err(e) => e.into(),
                Ok(()) => {
                    let who = Who {
                        user,
                        attributes: attributes.clone(),
                        warnings: Default::default(),
                    };
                    let reply = route(
                        &inner,
                        &method,
                        &path,
                        &query,
                        content_type.as_deref(),
                        &headers,
                        &body,
                        &who,
                    )
                    .await;
                    warnings = who.warnings.into_inner().unwrap_or_default();
                    reply
                }
            }
        }
    };

    let (status, mut response) = match reply {
        Reply::Json(code, v) => {
            let sc = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut r = (sc, v.to_string()).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/json"),
            );
            (code, r)
        }
        Reply::Stream(r) => (r.status().as_u16(), r),
    };
    for w in &warnings {
        if let Ok(v) = header::HeaderValue::from_bytes(crate::strict::warning_header(w).as_bytes())
        {
            response.headers_mut().append(header::WARNING, v);
        }
    }

    let recorded = RecordedRequest {
        method: method.to_string(),
        path,
        query: raw_query,
        content_type,
        field_manager: query.get("fieldManager").cloned(),
        force: query.get("force").is_some_and(|v| v == "true"),
        body: parse_body(&body).ok().flatten(),
        status,
        user: user_name,
        attributes,
    };
    if let Ok(mut s) = inner.state.lock() {
        s.requests.push(recorded);
    }
    response
}

/// The caller of a request, for the checks that happen after routing (the
/// `create` a server-side apply implies, RBAC escalation prevention).
pub struct Who {
    pub user: User,
    pub attributes: rbac::Attributes,
    /// What the answer's `Warning` headers will say, deduplicated as the API
    /// server's warning recorder does (`endpoints/filters/warning.go`).
    pub warnings: std::sync::Mutex<Vec<String>>,
}

impl Who {
    pub fn warn(&self, texts: impl IntoIterator<Item = String>) {
        if let Ok(mut w) = self.warnings.lock() {
            for t in texts {
                if !t.is_empty() && !w.contains(&t) {
                    w.push(t);
                }
            }
        }
    }
}

/// Bearer token → user ("Authenticating": an unknown or malformed token is 401;
/// no credentials at all is the anonymous user, whom RBAC then refuses almost
/// everything). A ServiceAccount token is valid only while its ServiceAccount
/// exists.
fn authenticate(inner: &Inner, headers: &HeaderMap) -> Result<User> {
    let got = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer "))
                .map(str::trim)
                .ok_or_else(ApiError::unauthorized)?,
        ),
    };
    let s = lock(inner)?;
    if let Some(want) = &s.token {
        return if got == Some(want.as_str()) {
            Ok(User::admin())
        } else {
            Err(ApiError::unauthorized())
        };
    }
    let Some(token) = got else {
        return Ok(User::anonymous());
    };
    match s.tokens.get(token) {
        Some(Credential::User(u)) => Ok(u.clone()),
        Some(Credential::ServiceAccount { namespace, name }) => {
            let sa = resources::find("", "v1", "serviceaccounts")
                .and_then(|r| s.get(&r, namespace, name));
            if sa.is_some() {
                Ok(User::service_account(namespace, name))
            } else {
                Err(ApiError::unauthorized())
            }
        }
        None => Err(ApiError::unauthorized()),
    }
}

/// JSON first (what clients send), then YAML (what `apply-patch+yaml` allows).
fn parse_body(body: &[u8]) -> Result<Option<Value>, String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => Ok(Some(v)),
        Err(je) => {
            let text = std::str::from_utf8(body).map_err(|e| e.to_string())?;
            serde_saphyr::from_str::<Value>(text)
                .map(Some)
                .map_err(|ye| format!("{je}; as YAML: {ye}"))
        }
    }
}

fn lock(inner: &Inner) -> Result<std::sync::MutexGuard<'_, State>> {
    inner
        .state
        .lock()
        .map_err(|_| ApiError::bad_request("fake state poisoned by an earlier panic"))
}

#[allow(clippy::too_many_arguments)] // one request, taken apart once in `handle`
async fn route(
    inner: &Arc<Inner>,
    method: &Method,
    path: &str,
    q: &Query,
    content_type: Option<&str>,
    headers: &HeaderMap,
    body: &[u8],
    who: &Who,
) -> Reply {
    if let Some(r) = crate::identity::answer(inner, method, path, body) {
        return r.map_or_else(Reply::from, |v| Reply::Json(201, v));
    }
    if let Some(d) = crate::discovery::answer(path) {
        return if method == Method::GET {
            Reply::Json(200, d)
        } else {
            ApiError::method_not_allowed().into()
        };
    }
    let Some(t) = resources::parse_path(path) else {
        return ApiError::no_route().into();
    };
    let manager = q.get("fieldManager").cloned().unwrap_or_else(|| {
        // Without `fieldManager`, the API server names the manager after the
        // User-Agent up to its first `/`.
        headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
            .unwrap_or_else(|| "unknown".into())
    });
    let result = match (method.clone(), t.name.is_some()) {
        (Method::GET, true) => get(inner, &t).map(|v| Reply::Json(200, v)),
        (Method::GET, false) if q.get("watch").is_some_and(|w| w == "true" || w == "1") => {
            watch::start(inner, &t, q)
        }
        (Method::GET, false) => list(inner, &t, q).map(|v| Reply::Json(200, v)),
        (Method::POST, false) => create(inner, &t, q, content_type, body, &manager, who),
        (Method::PUT, true) => replace(inner, &t, q, content_type, body, &manager, who),
        (Method::PATCH, true) => patch(inner, &t, q, content_type, body, &manager, who),
        (Method::DELETE, true) => delete(inner, &t, q, body),
        (Method::DELETE, false) => delete_collection(inner, &t, q),
        _ => Err(ApiError::method_not_allowed()),
    };
    result.unwrap_or_else(Reply::from)
}

fn ns_of(t: &Target) -> &str {
    t.namespace.as_deref().unwrap_or("")
}

fn name_of(t: &Target) -> &str {
    t.name.as_deref().unwrap_or("")
}

fn get(inner: &Inner, t: &Target) -> Result<Value> {
    let s = lock(inner)?;
    s.get(&t.resource, ns_of(t), name_of(t))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, name_of(t)))
}

pub fn selectors(q: &Query) -> Result<(LabelSelector, FieldSelector)> {
    let l = LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    let f = FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str))
        .map_err(ApiError::bad_request)?;
    Ok((l, f))
}

fn list(inner: &Inner, t: &Target, q: &Query) -> Result<Value> {
    let (ls, fs) = selectors(q)?;
    let s = lock(inner)?;
    let items: Vec<Value> = s
        .list(&t.resource, t.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches(&o["metadata"]["labels"]) && fs.matches(o))
        .map(|o| {
            // List items carry no `apiVersion`/`kind`: the list's own say it once.
            let mut o = o.clone();
            if let Some(m) = o.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            o
        })
        .collect();
    Ok(json!({
        "kind": format!("{}List", t.resource.kind),
        "apiVersion": t.resource.api_version(),
        "metadata": { "resourceVersion": s.rv.to_string() },
        "items": items,
    }))
}

/// Parses a request body and checks it names the resource the path names.
fn body_object(t: &Target, body: &[u8]) -> Result<Value> {
    let obj = parse_body(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?
        .ok_or_else(|| ApiError::bad_request("the request body is empty"))?;
    check_object(t, obj)
}

/// A POST or PUT body decoded under its `fieldValidation` (strict.rs): 400
/// under `Strict` with unknown or duplicate fields, warnings under `Warn`,
/// unknown fields dropped under `Warn` and `Ignore`.
fn decoded_object(
    t: &Target,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
    options_kind: &str,
    who: &Who,
) -> Result<Value> {
    let directive = crate::strict::directive(q, options_kind)?;
    let decoded = crate::strict::decode_body(&t.resource, body, content_type)?
        .ok_or_else(|| ApiError::bad_request("the request body is empty"))?;
    if !decoded.errors.is_empty() {
        match directive {
            crate::strict::Directive::Strict => {
                return Err(crate::strict::decode_error(
                    &t.resource,
                    &decoded.obj,
                    &decoded.errors,
                ));
            }
            crate::strict::Directive::Warn => {
                who.warn(crate::strict::warnings(&decoded.errors));
            }
            crate::strict::Directive::Ignore => {}
        }
    }
    check_object(t, decoded.obj)
}

/// Checks a decoded body names the resource the path names.
fn check_object(t: &Target, obj: Value) -> Result<Value> {
    if !obj.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a JSON or YAML object",
        ));
    }
    let av = obj["apiVersion"].as_str().unwrap_or("");
    let kind = obj["kind"].as_str().unwrap_or("");
    if kind.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'Kind' is missing in '{obj}'"
        )));
    }
    if av.is_empty() {
        return Err(ApiError::bad_request(format!(
            "Object 'apiVersion' is missing in '{obj}'"
        )));
    }
    let want_av = t.resource.api_version();
    if av != want_av {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({av}) does not match the expected API version ({want_av})"
        )));
    }
    if kind != t.resource.kind {
        return Err(ApiError::bad_request(format!(
            "the kind in the data ({kind}) does not match the expected kind ({})",
            t.resource.kind
        )));
    }
    if let Some(ns) = &t.namespace {
        match obj["metadata"]["namespace"].as_str() {
            Some(bns) if !bns.is_empty() && bns != ns => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
            _ => {}
        }
    }
    if let Some(name) = &t.name {
        match obj["metadata"]["name"].as_str() {
            Some(bn) if !bn.is_empty() && bn != name => {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({bn}) does not match the name on the URL ({name})"
                )));
            }
            _ => {}
        }
    }
    Ok(obj)
}

fn invalid(res: &Resource, obj: &Value, causes: Vec<(String, String)>) -> Result<()> {
    if causes.is_empty() {
        return Ok(());
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    Err(ApiError::invalid(res.kind, name, res.group, &causes))
}

fn dry_run(q: &Query) -> Result<bool> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported dry run value: {other}"
        ))),
    }
}

/// How a write is stored.
#[derive(Debug, Clone, Copy)]
pub struct Mode {
    /// `dryRun=All`: validate, answer, store nothing.
    pub dry: bool,
    /// Caused by a client (counted in [`State::client_mutations`]), not the controller.
    pub by_client: bool,
    /// The writer may set `status` (the controller); clients may not.
    pub keep_status: bool,
}

impl Mode {
    pub const CLIENT: Mode = Mode {
        dry: false,
        by_client: true,
        keep_status: false,
    };
    pub const CONTROLLER: Mode = Mode {
        dry: false,
        by_client: false,
        keep_status: true,
    };

    pub fn client(dry: bool) -> Mode {
        Mode {
            dry,
            ..Mode::CLIENT
        }
    }
}

/// Stores a write: server metadata, defaults, validation, no-op detection.
/// Returns the stored object and whether anything changed.
pub fn commit(
    s: &mut State,
    res: &Resource,
    old: Option<&Value>,
    mut obj: Value,
    entries: &[fields::Entry],
    mode: Mode,
) -> Result<(Value, bool)> {
    if entries.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] =
            Value::Array(entries.iter().map(fields::Entry::to_json).collect());
    }
    let obj = s.prepare(res, old, obj, mode.keep_status);
    invalid(res, &obj, validate::validate(res, &obj))?;
    if let Some(o) = old {
        invalid(res, &obj, validate::immutable(res, o, &obj))?;
        if *o == obj {
            return Ok((o.clone(), false));
        }
    }
    if mode.dry {
        return Ok((obj, false));
    }
    let kind = if old.is_some() { "MODIFIED" } else { "ADDED" };
    Ok((s.store(res, obj, kind, mode.by_client), true))
}

/// Generates `generateName` suffixes as the API server does (5 characters).
fn generated_name(prefix: &str, seq: u64) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut n = seq.wrapping_mul(2_654_435_761) ^ 0x5bd1_e995;
    let mut suffix = String::new();
    for _ in 0..5 {
        suffix.push(ALPHABET[(n % ALPHABET.len() as u64) as usize] as char);
        n /= ALPHABET.len() as u64;
    }
    format!("{prefix}{suffix}")
}

fn require_namespace(s: &State, t: &Target) -> Result<()> {
    match &t.namespace {
        Some(ns) if t.resource.namespaced && !s.namespace_exists(ns) => {
            Err(ApiError::namespace_not_found(ns))
        }
        _ => Ok(()),
    }
}

fn after_write(
    inner: &Arc<Inner>,
    res: &Resource,
    old: Option<&Value>,
    new: &Value,
    changed: bool,
) {
    if !changed {
        return;
    }
    let rv = inner.state.lock().map(|s| s.rv).unwrap_or(0);
    inner.changed.send_replace(rv);
    if res.is_workload() {
        let old_gen = old.map(|o| o["metadata"]["generation"].clone());
        if old_gen.as_ref() != Some(&new["metadata"]["generation"]) {
            controller::kick(inner, res, new);
        }
    }
}

fn create(
    inner: &Arc<Inner>,
    t: &Target,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
    manager: &str,
    who: &Who,
) -> Result<Reply> {
    let mut obj = decoded_object(t, q, content_type, body, "CreateOptions", who)?;
    let dry = dry_run(q)?;
    if obj["metadata"]["resourceVersion"]
        .as_str()
        .is_some_and(|rv| !rv.is_empty())
    {
        return Err(ApiError::bad_request(
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut s = lock(inner)?;
    require_namespace(&s, t)?;
    if obj["metadata"]["name"].as_str().is_none_or(str::is_empty)
        && let Some(prefix) = obj["metadata"]["generateName"].as_str()
    {
        let seq = s.rv + 1;
        obj["metadata"]["name"] = json!(generated_name(prefix, seq));
    }
    if let Some(ns) = &t.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    if s.get(&t.resource, ns_of(t), &name).is_some() {
        return Err(ApiError::already_exists(&t.resource, &name));
    }
    let view = fields::tracked_view(&obj);
    let entries = fields::update(
        None,
        &[],
        &view,
        manager,
        &t.resource.api_version(),
        None,
        &now_rfc3339(),
    );
    rbac::admit_write(&s, &who.user, &t.resource, None, &obj)?;
    let (stored, changed) = commit(&mut s, &t.resource, None, obj, &entries, Mode::client(dry))?;
    drop(s);
    after_write(inner, &t.resource, None, &stored, changed);
    Ok(Reply::Json(201, stored))
}

fn allow_create_on_update(res: &Resource) -> bool {
    res.is("coordination.k8s.io", "leases")
        || res.is("", "events")
        || res.is("events.k8s.io", "events")
        || res.is("", "services")
}

fn replace(
    inner: &Arc<Inner>,
    t: &Target,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
    manager: &str,
    who: &Who,
) -> Result<Reply> {
    let mut obj = decoded_object(t, q, content_type, body, "UpdateOptions", who)?;
    let dry = dry_run(q)?;
    if let Some(ns) = &t.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    obj["metadata"]["name"] = json!(name_of(t));
    let mut s = lock(inner)?;
    let old = s.get(&t.resource, ns_of(t), name_of(t)).cloned();
    let sent_rv = obj["metadata"]["resourceVersion"]
        .as_str()
        .map(str::to_string);
    let Some(old) = old else {
        if !allow_create_on_update(&t.resource) {
            return Err(ApiError::not_found(&t.resource, name_of(t)));
        }
        if sent_rv.is_some() {
            // A precondition on an object that does not exist cannot hold.
            return Err(ApiError::not_found(&t.resource, name_of(t)));
        }
        // The create an update implies is authorized with the name
        // (`withAuthorization` in endpoints/handlers/update.go).
        rbac::authorize_create_on_write(&s, &who.user, &who.attributes)?;
        drop(s);
        // The body is decoded already: what is passed on has nothing left to
        // report.
        return create(
            inner,
            t,
            q,
            Some("application/json"),
            &serde_json::to_vec(&obj).unwrap_or_default(),
            manager,
            who,
        );
    };
    match sent_rv {
        Some(rv) if Some(rv.as_str()) != old["metadata"]["resourceVersion"].as_str() => {
            return Err(ApiError::stale(&t.resource, name_of(t)));
        }
        None if t.resource.is("coordination.k8s.io", "leases") => {
            // Leases refuse unconditional updates: leader election depends on it.
            return Err(ApiError::invalid(
                t.resource.kind,
                name_of(t),
                t.resource.group,
                &[(
                    "metadata.resourceVersion".into(),
                    "Invalid value: 0x0: must be specified for an update".into(),
                )],
            ));
        }
        _ => {}
    }
    let old_view = fields::tracked_view(&old);
    let view = fields::tracked_view(&obj);
    let entries = fields::update(
        Some(&old_view),
        &fields::entries(&old),
        &view,
        manager,
        &t.resource.api_version(),
        None,
        &now_rfc3339(),
    );
    rbac::admit_write(&s, &who.user, &t.resource, Some(&old), &obj)?;
    let (stored, changed) = commit(
        &mut s,
        &t.resource,
        Some(&old),
        obj,
        &entries,
        Mode::client(dry),
    )?;
    drop(s);
    after_write(inner, &t.resource, Some(&old), &stored, changed);
    Ok(Reply::Json(200, stored))
}

fn patch(
    inner: &Arc<Inner>,
    t: &Target,
    q: &Query,
    content_type: Option<&str>,
    body: &[u8],
    manager: &str,
    who: &Who,
) -> Result<Reply> {
    let ct = content_type
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string())
        .ok_or_else(|| ApiError::unsupported_media_type(""))?;
    let force = match q.get("force").map(String::as_str) {
        None => false,
        Some("true") => true,
        Some("false") => false,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid value for force: {other}"
            )));
        }
    };
    match ct.as_str() {
        "application/apply-patch+yaml" => apply(inner, t, q, body, force, who),
        "application/merge-patch+json"
        | "application/strategic-merge-patch+json"
        | "application/json-patch+json" => {
            if force {
                return Err(ApiError::bad_request(
                    "force: Forbidden: may not be specified for non-apply patch",
                ));
            }
            let directive = crate::strict::directive(q, "PatchOptions")?;
            other_patch(inner, t, q, &ct, body, manager, who, directive)
        }
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn apply(
    inner: &Arc<Inner>,
    t: &Target,
    q: &Query,
    body: &[u8],
    force: bool,
    who: &Who,
) -> Result<Reply> {
    let manager = q
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .cloned()
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH, application/apply-patch+yaml: fieldManager is required for apply requests",
            )
        })?;
    // `fieldValidation` (PatchOptions validation; absent is Warn): strict.rs.
    let directive = crate::strict::directive(q, "PatchOptions")?;
    let config = body_object(t, body)?;
    let dry = dry_run(q)?;
    if !config["metadata"]["managedFields"].is_null() {
        return Err(ApiError::bad_request("metadata.managedFields must be nil"));
    }
    // An apply is strict about undeclared fields whatever `fieldValidation`
    // says (schema.rs).
    let unknown =
        crate::schema::unknown_fields(&t.resource, &config).map_err(ApiError::internal_unknown)?;
    if !unknown.is_empty() {
        return Err(ApiError::internal_unknown(crate::schema::apply_error(
            &t.resource,
            ns_of(t),
            name_of(t),
            &unknown,
        )));
    }
    let mut s = lock(inner)?;
    let live = s.get(&t.resource, ns_of(t), name_of(t)).cloned();
    if live.is_none() {
        require_namespace(&s, t)?;
        // An apply that creates is also authorized as `create` of that name
        // (`createAuthorizerAttributes` in endpoints/handlers/patch.go).
        rbac::authorize_create_on_write(&s, &who.user, &who.attributes)?;
    }
    if let (Some(rv), Some(l)) = (config["metadata"]["resourceVersion"].as_str(), &live)
        && Some(rv) != l["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(&t.resource, name_of(t)));
    }
    let (live_view, live_entries) = match &live {
        Some(l) => (fields::tracked_view(l), fields::entries(l)),
        None => (json!({}), Vec::new()),
    };
    let av = t.resource.api_version();
    let applied = fields::apply(
        &live_view,
        &live_entries,
        &fields::tracked_view(&config),
        &manager,
        &av,
        force,
        &now_rfc3339(),
    )
    .map_err(|c| ApiError::apply_conflicts(&c))?;
    // Duplicate keys are looked for after the apply itself succeeded
    // (`applyPatcher.applyPatchToCurrentObject` in endpoints/handlers/patch.go).
    if directive != crate::strict::Directive::Ignore
        && let Some(e) = crate::strict::apply_duplicates(body)
    {
        if directive == crate::strict::Directive::Strict {
            return Err(crate::strict::apply_error(&e));
        }
        who.warn(crate::strict::warnings(&[e]));
    }

    // The object is its untracked parts (identity, server metadata, status) plus the
    // merged view.
    let mut obj = match &live {
        Some(l) => l.clone(),
        None => {
            json!({"apiVersion": av, "kind": t.resource.kind, "metadata": {"name": name_of(t)}})
        }
    };
    if let Some(ns) = &t.namespace {
        obj["metadata"]["namespace"] = json!(ns);
    }
    if let Some(m) = obj.as_object_mut() {
        m.retain(|k, _| matches!(k.as_str(), "apiVersion" | "kind" | "metadata" | "status"));
    }
    if let Some(md) = obj["metadata"].as_object_mut() {
        for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
            md.remove(f);
        }
    }
    if let Some(view) = applied.view.as_object() {
        for (k, v) in view {
            if k == "metadata" {
                if let Some(vm) = v.as_object() {
                    for (mk, mv) in vm {
                        obj["metadata"][mk] = mv.clone();
                    }
                }
            } else {
                obj[k] = v.clone();
            }
        }
    }
    rbac::admit_write(&s, &who.user, &t.resource, live.as_ref(), &obj)?;
    let (stored, changed) = commit(
        &mut s,
        &t.resource,
        live.as_ref(),
        obj,
        &applied.entries,
        Mode::client(dry),
    )?;
    drop(s);
    after_write(inner, &t.resource, live.as_ref(), &stored, changed);
    Ok(Reply::Json(if live.is_none() { 201 } else { 200 }, stored))
}

/// RFC 7386 JSON merge patch.
fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = json!({});
            }
            if let Some(t) = target.as_object_mut() {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// RFC 6902 JSON patch (add, remove, replace, test, copy, move).
fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    fn parts(ptr: &str) -> Result<Vec<String>, String> {
        if ptr.is_empty() {
            return Ok(vec![]);
        }
        let rest = ptr
            .strip_prefix('/')
            .ok_or_else(|| format!("invalid JSON pointer {ptr}"))?;
        Ok(rest
            .split('/')
            .map(|p| p.replace("~1", "/").replace("~0", "~"))
            .collect())
    }
    fn parent<'a>(doc: &'a mut Value, ps: &[String]) -> Result<&'a mut Value, String> {
        let mut cur = doc;
        for p in ps {
            cur = match cur {
                Value::Object(m) => m
                    .get_mut(p)
                    .ok_or_else(|| format!("missing path element {p}"))?,
                Value::Array(a) => {
                    let i: usize = p.parse().map_err(|_| format!("bad array index {p}"))?;
                    a.get_mut(i)
                        .ok_or_else(|| format!("index {i} out of range"))?
                }
                _ => return Err(format!("cannot descend into {p}")),
            };
        }
        Ok(cur)
    }
    fn add(doc: &mut Value, path: &str, v: Value) -> Result<(), String> {
        let ps = parts(path)?;
        let Some((last, head)) = ps.split_last() else {
            *doc = v;
            return Ok(());
        };
        match parent(doc, head)? {
            Value::Object(m) => {
                m.insert(last.clone(), v);
            }
            Value::Array(a) => {
                if last == "-" {
                    a.push(v);
                } else {
                    let i: usize = last
                        .parse()
                        .map_err(|_| format!("bad array index {last}"))?;
                    if i > a.len() {
                        return Err(format!("index {i} out of range"));
                    }
                    a.insert(i, v);
                }
            }
            _ => return Err(format!("cannot add at {path}")),
        }
        Ok(())
    }
    fn take(doc: &mut Value, path: &str) -> Result<Value, String> {
        let ps = parts(path)?;
        let (last, head) = ps.split_last().ok_or("cannot remove the root")?;
        match parent(doc, head)? {
            Value::Object(m) => m.remove(last).ok_or_else(|| format!("missing {path}")),
            Value::Array(a) => {
                let i: usize = last
                    .parse()
                    .map_err(|_| format!("bad array index {last}"))?;
                if i < a.len() {
                    Ok(a.remove(i))
                } else {
                    Err(format!("index {i} out of range"))
                }
            }
            _ => Err(format!("cannot remove {path}")),
        }
    }
    let ops = ops
        .as_array()
        .ok_or("a JSON patch must be an array of operations")?;
    for op in ops {
        let path = op["path"].as_str().ok_or("operation without path")?;
        match op["op"].as_str() {
            Some("add") => add(target, path, op["value"].clone())?,
            Some("remove") => {
                take(target, path)?;
            }
            Some("replace") => {
                take(target, path)?;
                add(target, path, op["value"].clone())?;
            }
            Some("test") => {
                let ps = parts(path)?;
                if *parent(target, &ps)? != op["value"] {
                    return Err(format!("test failed at {path}"));
                }
            }
            Some("move") | Some("copy") => {
                let from = op["from"].as_str().ok_or("operation without from")?;
                let v = if op["op"] == "move" {
                    take(target, from)?
                } else {
                    parent(target, &parts(from)?)?.clone()
                };
                add(target, path, v)?;
            }
            other => return Err(format!("unknown operation {other:?}")),
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)] // one request, taken apart once in `handle`
fn other_patch(
    inner: &Arc<Inner>,
    t: &Target,
    q: &Query,
    ct: &str,
    body: &[u8],
    manager: &str,
    who: &Who,
    directive: crate::strict::Directive,
) -> Result<Reply> {
    use crate::strict::{self, Directive};
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    // The patch's own strict errors (endpoints/handlers/patch.go
    // `applyJSPatch`, `strategicPatchObject`), then those of the patched object.
    let mut strict_errors = if directive == Directive::Ignore {
        Vec::new()
    } else {
        strict::patch_errors(ct, body)?
    };
    let dry = dry_run(q)?;
    let mut s = lock(inner)?;
    let old = s
        .get(&t.resource, ns_of(t), name_of(t))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, name_of(t)))?;
    let mut obj = old.clone();
    match ct {
        "application/json-patch+json" => {
            json_patch(&mut obj, &patch).map_err(|e| {
                ApiError::invalid(
                    t.resource.kind,
                    name_of(t),
                    t.resource.group,
                    &[(String::new(), e)],
                )
            })?;
        }
        "application/strategic-merge-patch+json" => {
            // Strategic merge is approximated by the merge-key aware merge of
            // server-side apply (lists of containers, env, ports merge by key);
            // `$patch` directives are not supported.
            if patch.to_string().contains("\"$patch\"")
                || patch.to_string().contains("$setElementOrder")
            {
                return Err(ApiError::unsupported_media_type(
                    "application/strategic-merge-patch+json with $-directives (not simulated)",
                ));
            }
            fields::merge(&mut obj, &patch, "");
        }
        _ => merge_patch(&mut obj, &patch),
    }
    // Typed decoding of the patched object drops what its type does not
    // declare; under Strict and Warn it says so.
    let shown = (directive == Directive::Strict).then(|| {
        if ct == "application/strategic-merge-patch+json" {
            strict::go_map(&patch)
        } else {
            strict::go_json(&obj)
        }
    });
    let unknown = strict::patched_unknown(&t.resource, &mut obj)?;
    if directive != Directive::Ignore {
        strict_errors.extend(unknown);
    }
    if !strict_errors.is_empty() {
        match (directive, shown) {
            (Directive::Strict, Some(shown)) => {
                return Err(strict::patch_error(&shown, &strict_errors));
            }
            _ => who.warn(strict::warnings(&strict_errors)),
        }
    }
    if obj["metadata"]["name"] != old["metadata"]["name"]
        || obj["metadata"]["namespace"] != old["metadata"]["namespace"]
    {
        return Err(ApiError::bad_request(
            "metadata.name and metadata.namespace cannot be changed by a patch",
        ));
    }
    if let (Some(rv), Some(cur)) = (
        obj["metadata"]["resourceVersion"].as_str(),
        old["metadata"]["resourceVersion"].as_str(),
    ) && rv != cur
    {
        return Err(ApiError::stale(&t.resource, name_of(t)));
    }
    let entries = fields::update(
        Some(&fields::tracked_view(&old)),
        &fields::entries(&old),
        &fields::tracked_view(&obj),
        manager,
        &t.resource.api_version(),
        None,
        &now_rfc3339(),
    );
    rbac::admit_write(&s, &who.user, &t.resource, Some(&old), &obj)?;
    let (stored, changed) = commit(
        &mut s,
        &t.resource,
        Some(&old),
        obj,
        &entries,
        Mode::client(dry),
    )?;
    drop(s);
    after_write(inner, &t.resource, Some(&old), &stored, changed);
    Ok(Reply::Json(200, stored))
}

/// Deletes one object and what the real cluster would delete with it (a
/// namespace's contents; the pods of a workload), returning the removed object.
pub fn delete_cascade(
    s: &mut State,
    res: &Resource,
    ns: &str,
    name: &str,
    by_client: bool,
) -> Option<Value> {
    let removed = s.remove(res, ns, name, by_client)?;
    if res.is("", "namespaces") {
        let inside: Vec<(Resource, String)> = resources::RESOURCES
            .iter()
            .filter(|r| r.namespaced)
            .flat_map(|r| {
                s.list(r, Some(name))
                    .into_iter()
                    .map(|o| (*r, o["metadata"]["name"].as_str().unwrap_or("").to_string()))
                    .collect::<Vec<_>>()
            })
            .collect();
        for (r, n) in inside {
            s.remove(&r, name, &n, false);
        }
    } else if res.is_workload() {
        let uid = removed["metadata"]["uid"].clone();
        let pods = controller::owned_pods(s, ns, &uid);
        for p in pods {
            s.remove(&controller::POD, ns, &p, false);
        }
    }
    Some(removed)
}

fn delete(inner: &Arc<Inner>, t: &Target, q: &Query, body: &[u8]) -> Result<Reply> {
    let dry = dry_run(q)?;
    let opts = parse_body(body).ok().flatten().unwrap_or(Value::Null);
    let mut s = lock(inner)?;
    let old = s
        .get(&t.resource, ns_of(t), name_of(t))
        .cloned()
        .ok_or_else(|| ApiError::not_found(&t.resource, name_of(t)))?;
    let pre = &opts["preconditions"];
    if let Some(rv) = pre["resourceVersion"].as_str()
        && Some(rv) != old["metadata"]["resourceVersion"].as_str()
    {
        return Err(ApiError::stale(&t.resource, name_of(t)));
    }
    if let Some(uid) = pre["uid"].as_str()
        && Some(uid) != old["metadata"]["uid"].as_str()
    {
        return Err(ApiError::stale(&t.resource, name_of(t)));
    }
    let removed = if dry {
        old.clone()
    } else {
        delete_cascade(&mut s, &t.resource, ns_of(t), name_of(t), true)
            .unwrap_or_else(|| old.clone())
    };
    drop(s);
    if !dry {
        after_write(inner, &t.resource, Some(&old), &removed, true);
    }
    let uid = old["metadata"]["uid"].as_str().unwrap_or("");
    // Stores with `ReturnDeletedObject: true` in the API server (Namespaces, Pods,
    // Services, ServiceAccounts) answer with the object; the rest with a Status.
    // Namespaces and Pods are deleted gracefully there: the answer shows the
    // deletion under way, though the fake has already removed them.
    let reply = if t.resource.is("", "namespaces") {
        let mut o = removed;
        o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        o["status"]["phase"] = json!("Terminating");
        o
    } else if t.resource.is("", "pods") {
        let mut o = removed;
        o["metadata"]["deletionTimestamp"] = json!(now_rfc3339());
        o["metadata"]["deletionGracePeriodSeconds"] = json!(30);
        o
    } else if t.resource.is("", "services") || t.resource.is("", "serviceaccounts") {
        removed
    } else {
        delete_success(&t.resource, name_of(t), uid)
    };
    Ok(Reply::Json(200, reply))
}

fn delete_collection(inner: &Arc<Inner>, t: &Target, q: &Query) -> Result<Reply> {
    let (ls, fs) = selectors(q)?;
    let dry = dry_run(q)?;
    let mut s = lock(inner)?;
    let names: Vec<(String, String)> = s
        .list(&t.resource, t.namespace.as_deref())
        .into_iter()
        .filter(|o| ls.matches(&o["metadata"]["labels"]) && fs.matches(o))
        .map(|o| {
            (
                o["metadata"]["namespace"]
                    .as_str()
                    .unwrap_or("")
                    .to_string(),
                o["metadata"]["name"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let mut items = Vec::new();
    for (ns, name) in names {
        let removed = if dry {
            s.get(&t.resource, &ns, &name).cloned()
        } else {
            delete_cascade(&mut s, &t.resource, &ns, &name, true)
        };
        if let Some(o) = removed {
            items.push(o);
        }
    }
    let rv = s.rv;
    drop(s);
    inner.changed.send_replace(rv);
    Ok(Reply::Json(
        200,
        json!({
            "kind": format!("{}List", t.resource.kind),
            "apiVersion": t.resource.api_version(),
            "metadata": { "resourceVersion": rv.to_string() },
            "items": items,
        }),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_decoding() {
        let q = parse_query("labelSelector=app%3Dweb%2Cmop.dev%2Ftenant+in+(a)&watch=true");
        assert_eq!(q["labelSelector"], "app=web,mop.dev/tenant in (a)");
        assert_eq!(q["watch"], "true");
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"a": [1, 2], "b": {"c": 1}});
        json_patch(
            &mut v,
            &json!([{"op": "add", "path": "/a/-", "value": 3}, {"op": "replace", "path": "/b/c", "value": 2}, {"op": "remove", "path": "/a/0"}]),
        )
        .unwrap();
        assert_eq!(v, json!({"a": [2, 3], "b": {"c": 2}}));
    }
}
