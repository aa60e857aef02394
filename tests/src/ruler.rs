//! Fake of the Mimir ruler's rule-configuration API and of Loki's, which shares
//! Mimir's (Cortex-derived) handlers under another prefix.
//!
//! Follows:
//! - <https://grafana.com/docs/mimir/latest/references/http-api/#ruler> (list rule
//!   groups, get rule groups by namespace, get rule group, set rule group, delete
//!   rule group, delete namespace);
//! - <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ruler> (the
//!   same operations under `/loki/api/v1/rules`);
//! - for status codes and bodies the docs leave open, Mimir's handlers
//!   (`pkg/ruler/api.go`: 404 `no rule groups found` for an empty list, 404
//!   `group does not exist` / `group namespace does not exist`, 400 on a body that
//!   does not decode or validate, 202 with a JSON success body on writes) and
//!   dskit's tenant middleware (401 `no org id` without `X-Scope-OrgID`).
//!
//! Strictness: one bare rule group per POST (a `groups:` wrapper has no `name`,
//! so it is rejected like Mimir rejects it); rule validation as Prometheus'
//! `rulefmt` does it (name, rules, record xor alert, expr, recording-rule fields);
//! durations re-formatted the way Mimir returns them (`300s` comes back as `5m`,
//! zero durations are omitted). Not checked: PromQL/LogQL syntax of `expr`
//! (the syncer validates expressions itself), per-tenant rule limits.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::common::{self, Error, Recorder, lock};

/// Which ruler API a request went to. Mimir and Loki are separate services, so
/// their rules never mix even for the same tenant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Api {
    /// `/prometheus/config/v1/rules`
    Mimir,
    /// `/loki/api/v1/rules`
    Loki,
}

impl Api {
    /// The route prefix of this API.
    pub fn prefix(self) -> &'static str {
        match self {
            Api::Mimir => "/prometheus/config/v1/rules",
            Api::Loki => "/loki/api/v1/rules",
        }
    }
}

/// Which APIs a [`FakeRuler`] serves.
#[derive(Debug, Clone, Copy)]
pub struct RulerApis {
    /// Serve the Mimir prefix.
    pub mimir: bool,
    /// Serve the Loki prefix.
    pub loki: bool,
}

impl RulerApis {
    /// Both prefixes on one server.
    pub const ALL: Self = Self {
        mimir: true,
        loki: true,
    };
    /// Only Mimir's.
    pub const MIMIR: Self = Self {
        mimir: true,
        loki: false,
    };
    /// Only Loki's.
    pub const LOKI: Self = Self {
        mimir: false,
        loki: true,
    };
}

/// A rule group as the rulers store and return it (Prometheus `rulefmt` plus
/// Mimir's `source_tenants`). Unknown fields in a POST are ignored, as Mimir's
/// non-strict YAML decoding ignores them, and are therefore not returned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleGroup {
    /// Group name.
    #[serde(default)]
    pub name: String,
    /// Evaluation interval; omitted when zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Evaluation offset; omitted when zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_offset: Option<String>,
    /// Limit of alerts/series per rule; omitted when zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Labels added to every rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Tenants a federated group queries (Mimir).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_tenants: Option<Vec<String>>,
    /// The rules.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// One alerting or recording rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    /// Series a recording rule writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Alert an alerting rule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// The query.
    #[serde(default)]
    pub expr: String,
    /// Pending period; omitted when zero.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// Keep-firing period; omitted when zero.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations (alerting rules only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

/// Namespace → group name → group, for one tenant of one API.
pub type Namespaces = BTreeMap<String, BTreeMap<String, RuleGroup>>;

/// The fake's whole state: (API, tenant) → namespaces. Public so tests can
/// inspect it and edit it directly (simulating a change made with `mimirtool`).
#[derive(Debug, Default)]
pub struct RulerState {
    /// Rules per API and tenant.
    pub tenants: BTreeMap<(Api, String), Namespaces>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<RulerState>,
}

/// A running fake ruler. Dropping it stops the server.
#[derive(Debug)]
pub struct FakeRuler {
    server: common::Server,
    shared: Arc<Shared>,
    recorder: Recorder,
}

impl FakeRuler {
    /// Starts a fake serving `apis` on `127.0.0.1:0`.
    pub async fn start(apis: RulerApis) -> Result<Self, Error> {
        let shared = Arc::new(Shared {
            state: Mutex::new(RulerState::default()),
        });
        let mut router = Router::new();
        for (on, api) in [(apis.mimir, Api::Mimir), (apis.loki, Api::Loki)] {
            if on {
                router = router.merge(routes(api, Arc::clone(&shared)));
            }
        }
        let recorder = Recorder::default();
        let server = common::serve(router, recorder.clone(), not_found).await?;
        Ok(Self {
            server,
            shared,
            recorder,
        })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    /// Request counters and failure injection.
    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    /// Runs `f` on the state (to inspect it, or edit it behind the client's back).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut RulerState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// The stored group, if any.
    pub fn group(&self, api: Api, tenant: &str, namespace: &str, group: &str) -> Option<RuleGroup> {
        self.with_state(|s| {
            s.tenants
                .get(&(api, tenant.to_string()))
                .and_then(|n| n.get(namespace))
                .and_then(|g| g.get(group))
                .cloned()
        })
    }

    /// Number of groups stored for one tenant of one API.
    pub fn group_count(&self, api: Api, tenant: &str) -> usize {
        self.with_state(|s| {
            s.tenants
                .get(&(api, tenant.to_string()))
                .map_or(0, |n| n.values().map(BTreeMap::len).sum())
        })
    }
}

/// Mimir's router answers unknown paths with Go's default 404 text.
fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

#[derive(Clone)]
struct Ctx {
    api: Api,
    shared: Arc<Shared>,
}

fn routes(api: Api, shared: Arc<Shared>) -> Router {
    let p = api.prefix();
    Router::new()
        .route(p, get(list_all))
        .route(
            &format!("{p}/{{namespace}}"),
            get(list_namespace).post(set_group).delete(delete_namespace),
        )
        .route(
            &format!("{p}/{{namespace}}/{{group}}"),
            get(get_group).delete(delete_group),
        )
        .with_state(Ctx { api, shared })
}

/// Go's `http.Error`: plain text with a trailing newline.
fn text(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, format!("{msg}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Prometheus-API style error (`util_api.RespondError`).
fn bad_data(msg: &str) -> Response {
    (
        StatusCode::BAD_REQUEST,
        axum::Json(serde_json::json!({"status": "error", "errorType": "bad_data", "error": msg})),
    )
        .into_response()
}

fn accepted() -> Response {
    (
        StatusCode::ACCEPTED,
        axum::Json(
            serde_json::json!({"status": "success", "data": null, "errorType": "", "error": ""}),
        ),
    )
        .into_response()
}

fn yaml<T: Serialize>(v: &T) -> Response {
    match serde_saphyr::to_string(v) {
        Ok(body) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

/// The answer to a request without a usable `X-Scope-OrgID`. Missing → 401
/// `no org id` (dskit's auth middleware). Several tenants (`a|b`) or an invalid
/// id → the ruler's `tenant.TenantID` fails and the handler answers 400.
fn refuse(missing: bool) -> Response {
    if missing {
        text(StatusCode::UNAUTHORIZED, "no org id")
    } else {
        bad_data("no org id")
    }
}

/// The tenant from `X-Scope-OrgID`; `Err(true)` when the header is missing,
/// `Err(false)` when it is not one valid tenant id.
fn tenant_id(h: &HeaderMap) -> Result<String, bool> {
    let Some(v) = h.get("X-Scope-OrgID").and_then(|v| v.to_str().ok()) else {
        return Err(true);
    };
    if v.is_empty() {
        return Err(true);
    }
    // dskit's `tenant.ValidTenantID`: at most 150 of [A-Za-z0-9!-_.*'()], not `.`/`..`.
    let valid_char = |c: char| c.is_ascii_alphanumeric() || "!-_.*'()".contains(c);
    if v.contains('|') || v.len() > 150 || v == "." || v == ".." || !v.chars().all(valid_char) {
        return Err(false);
    }
    Ok(v.to_string())
}

async fn list_all(State(c): State<Ctx>, h: HeaderMap) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let out = formatted(&c, &t, None);
    if out.is_empty() {
        return text(StatusCode::NOT_FOUND, "no rule groups found");
    }
    yaml(&out)
}

async fn list_namespace(State(c): State<Ctx>, Path(ns): Path<String>, h: HeaderMap) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let out = formatted(&c, &t, Some(&ns));
    if out.is_empty() {
        return text(StatusCode::NOT_FOUND, "no rule groups found");
    }
    yaml(&out)
}

/// `{namespace: [group, …]}` in the shape `GET …/rules` returns.
fn formatted(c: &Ctx, tenant: &str, only: Option<&str>) -> BTreeMap<String, Vec<RuleGroup>> {
    let s = lock(&c.shared.state);
    let Some(nss) = s.tenants.get(&(c.api, tenant.to_string())) else {
        return BTreeMap::new();
    };
    nss.iter()
        .filter(|(ns, groups)| only.is_none_or(|o| o == ns.as_str()) && !groups.is_empty())
        .map(|(ns, groups)| (ns.clone(), groups.values().cloned().collect()))
        .collect()
}

async fn get_group(
    State(c): State<Ctx>,
    Path((ns, group)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let s = lock(&c.shared.state);
    match s
        .tenants
        .get(&(c.api, t))
        .and_then(|n| n.get(&ns))
        .and_then(|g| g.get(&group))
    {
        Some(g) => yaml(g),
        None => text(StatusCode::NOT_FOUND, "group does not exist"),
    }
}

async fn set_group(
    State(c): State<Ctx>,
    Path(ns): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return text(StatusCode::BAD_REQUEST, "unable to decoded rule group");
    };
    let group: RuleGroup = match serde_saphyr::from_str(body) {
        Ok(g) => g,
        Err(_) => return text(StatusCode::BAD_REQUEST, "unable to decoded rule group"),
    };
    let group = match normalise(group) {
        Ok(g) => g,
        Err(errs) => return text(StatusCode::BAD_REQUEST, &errs.join(", ")),
    };
    let mut s = lock(&c.shared.state);
    s.tenants
        .entry((c.api, t))
        .or_default()
        .entry(ns)
        .or_default()
        .insert(group.name.clone(), group);
    accepted()
}

async fn delete_namespace(State(c): State<Ctx>, Path(ns): Path<String>, h: HeaderMap) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let mut s = lock(&c.shared.state);
    let removed = s.tenants.get_mut(&(c.api, t)).and_then(|n| n.remove(&ns));
    match removed {
        Some(groups) if !groups.is_empty() => accepted(),
        _ => text(StatusCode::NOT_FOUND, "group namespace does not exist"),
    }
}

async fn delete_group(
    State(c): State<Ctx>,
    Path((ns, group)): Path<(String, String)>,
    h: HeaderMap,
) -> Response {
    let t = match tenant_id(&h) {
        Ok(t) => t,
        Err(missing) => return refuse(missing),
    };
    let mut s = lock(&c.shared.state);
    let Some(nss) = s.tenants.get_mut(&(c.api, t)) else {
        return text(StatusCode::NOT_FOUND, "group does not exist");
    };
    let Some(groups) = nss.get_mut(&ns) else {
        return text(StatusCode::NOT_FOUND, "group does not exist");
    };
    if groups.remove(&group).is_none() {
        return text(StatusCode::NOT_FOUND, "group does not exist");
    }
    if groups.is_empty() {
        // A namespace exists only through its groups (it is a key prefix in the
        // rule store), so deleting the last group deletes the namespace.
        nss.remove(&ns);
    }
    accepted()
}

/// Validates like Mimir's `ValidateRuleGroup` and Prometheus' `Rule.Validate`,
/// and re-formats durations as Mimir returns them after its proto round trip.
fn normalise(mut g: RuleGroup) -> Result<RuleGroup, Vec<String>> {
    let mut errs = Vec::new();
    if g.name.is_empty() {
        errs.push("invalid rules configuration: rule group name must not be empty".to_string());
    }
    if g.rules.is_empty() {
        errs.push(format!(
            "invalid rules configuration: rule group '{}' has no rules",
            g.name
        ));
    }
    let dur = |v: &mut Option<String>, what: &str, errs: &mut Vec<String>| {
        if let Some(s) = v.as_deref() {
            match parse_duration(s) {
                Some(0) => *v = None,
                Some(ms) => *v = Some(format_duration(ms)),
                None => errs.push(format!("invalid {what} duration {s:?}")),
            }
        }
    };
    dur(&mut g.interval, "interval", &mut errs);
    dur(&mut g.query_offset, "query_offset", &mut errs);
    if g.limit == Some(0) {
        g.limit = None;
    }
    let name = g.name.clone();
    for (i, r) in g.rules.iter_mut().enumerate() {
        let mut rule_errs = Vec::new();
        match (&r.record, &r.alert) {
            (Some(_), Some(_)) => {
                rule_errs.push("only one of 'record' and 'alert' must be set".to_string());
            }
            (None, None) => rule_errs.push("one of 'record' or 'alert' must be set".to_string()),
            (Some(rec), None) => {
                if !valid_metric_name(rec) {
                    rule_errs.push(format!("invalid recording rule name: {rec}"));
                }
                if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
                    rule_errs.push("invalid field 'annotations' in recording rule".to_string());
                }
                if r.for_.is_some() {
                    rule_errs.push("invalid field 'for' in recording rule".to_string());
                }
                if r.keep_firing_for.is_some() {
                    rule_errs.push("invalid field 'keep_firing_for' in recording rule".to_string());
                }
            }
            (None, Some(_)) => {}
        }
        if r.expr.trim().is_empty() {
            rule_errs.push("field 'expr' must be set in rule".to_string());
        }
        dur(&mut r.for_, "for", &mut rule_errs);
        dur(&mut r.keep_firing_for, "keep_firing_for", &mut rule_errs);
        let what = r.record.as_deref().or(r.alert.as_deref()).unwrap_or("");
        for e in rule_errs {
            errs.push(format!("group '{name}', rule {}, {what:?}: {e}", i + 1));
        }
    }
    if errs.is_empty() { Ok(g) } else { Err(errs) }
}

fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

const UNITS: [(&str, u64); 7] = [
    ("y", 365 * 24 * 3600 * 1000),
    ("w", 7 * 24 * 3600 * 1000),
    ("d", 24 * 3600 * 1000),
    ("h", 3600 * 1000),
    ("m", 60 * 1000),
    ("s", 1000),
    ("ms", 1),
];

/// Parses a Prometheus duration (`1h30m`, `90s`, `0`) into milliseconds: each
/// unit at most once, largest first, as Prometheus' `model.ParseDuration` requires.
pub fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    let mut rest = s;
    let mut total: u64 = 0;
    let mut last_unit = None;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit())?;
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        // "ms" must be tried before "m".
        let (idx, unit) = UNITS
            .iter()
            .enumerate()
            .filter(|(_, (u, _))| rest.starts_with(u))
            .max_by_key(|(_, (u, _))| u.len())?;
        if last_unit.is_some_and(|l| idx <= l) {
            return None;
        }
        last_unit = Some(idx);
        total = total.checked_add(n.checked_mul(unit.1)?)?;
        rest = &rest[unit.0.len()..];
    }
    Some(total)
}

/// Formats milliseconds the way Prometheus' `model.Duration.String` does.
pub fn format_duration(mut ms: u64) -> String {
    if ms == 0 {
        return "0s".to_string();
    }
    let mut out = String::new();
    for (unit, size) in UNITS {
        let n = ms / size;
        if n > 0 {
            let _ = write!(out, "{n}{unit}");
            ms -= n * size;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_format_like_prometheus() {
        assert_eq!(
            parse_duration("300s").map(format_duration).as_deref(),
            Some("5m")
        );
        assert_eq!(
            parse_duration("90m").map(format_duration).as_deref(),
            Some("1h30m")
        );
        assert_eq!(
            parse_duration("7d").map(format_duration).as_deref(),
            Some("1w")
        );
        assert_eq!(
            parse_duration("1500ms").map(format_duration).as_deref(),
            Some("1s500ms")
        );
        assert_eq!(parse_duration("0"), Some(0));
        assert_eq!(parse_duration("5m1h"), None);
        assert_eq!(parse_duration("5"), None);
        assert_eq!(parse_duration("abc"), None);
    }
}
