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
//! so it is rejected like Mimir rejects it); a duration that does not parse is
//! a decode error (400 `unable to decoded rule group`), as Mimir's YAML decoding
//! of `model.Duration` fails; the group and its rules are validated per API as
//! [`validate`] describes (PromQL parsed for Mimir, Go templates of alerting
//! rules parsed, label names checked; Mimir refuses empty groups, Loki does not);
//! then the per-tenant limits are enforced as `CreateRuleGroup` in Mimir's
//! `pkg/ruler/api.go` (and Loki's `pkg/ruler/base/api.go`) does: more rules than
//! `ruler_max_rules_per_rule_group` is 400 `per-user rules per rule group limit
//! (limit: N actual: M) exceeded`; when `ruler_max_rule_groups_per_tenant` is
//! set, the tenant's groups in all namespaces **plus one** (even when the POST
//! replaces an existing group) over the limit is 400 `per-user rule groups limit
//! (limit: N actual: M) exceeded` (`AssertMaxRuleGroups` in `pkg/ruler/ruler.go`).
//! Defaults: Mimir 20 rules per group and 70 groups per tenant
//! (`pkg/util/validation/limits.go`), Loki none (`pkg/validation/limits.go`);
//! per tenant they come from the runtime-overrides file the syncer renders
//! ([`FakeRuler::load_runtime_overrides`]). Durations are re-formatted the way
//! Mimir returns them (`300s` comes back as `5m`, zero durations are omitted).

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

mod validate;

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
    /// Per-tenant limits from the runtime overrides, per API.
    pub limits: BTreeMap<(Api, String), RulerLimits>,
    /// Mimir's `-tenant-federation.enabled` (default false): federated groups
    /// (`source_tenants`) are refused unless it is on.
    pub federation_enabled: bool,
}

/// The ruler limits of one tenant (0 = unlimited, as in Mimir and Loki).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RulerLimits {
    /// `ruler_max_rule_groups_per_tenant`
    pub max_rule_groups_per_tenant: u64,
    /// `ruler_max_rules_per_rule_group`
    pub max_rules_per_rule_group: u64,
}

impl RulerLimits {
    /// The server's defaults: Mimir's `-ruler.max-rule-groups-per-tenant=70` and
    /// `-ruler.max-rules-per-rule-group=20` (`pkg/util/validation/limits.go`);
    /// Loki's are 0, no limit (`pkg/validation/limits.go`).
    pub fn defaults(api: Api) -> Self {
        match api {
            Api::Mimir => Self {
                max_rule_groups_per_tenant: 70,
                max_rules_per_rule_group: 20,
            },
            Api::Loki => Self {
                max_rule_groups_per_tenant: 0,
                max_rules_per_rule_group: 0,
            },
        }
    }
}

impl RulerState {
    /// The limits that apply to `tenant` on `api`.
    pub fn limits_of(&self, api: Api, tenant: &str) -> RulerLimits {
        self.limits
            .get(&(api, tenant.to_string()))
            .copied()
            .unwrap_or_else(|| RulerLimits::defaults(api))
    }
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
    alertmanager: crate::alertmanager::Shared,
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
        // Mimir serves its Alertmanager's configuration API under the same URL.
        let alertmanager = crate::alertmanager::Shared::default();
        if apis.mimir {
            router = router.merge(crate::alertmanager::routes(alertmanager.clone()));
        }
        let recorder = Recorder::default();
        let server = common::serve(router, recorder.clone(), not_found).await?;
        Ok(Self {
            server,
            shared,
            recorder,
            alertmanager,
        })
    }

    /// The Alertmanager configurations stored through the Mimir URL.
    pub fn alertmanager(&self) -> &crate::alertmanager::Shared {
        &self.alertmanager
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

    /// Loads a runtime-overrides file (`overrides: {<tenant>: {…}}`, what Mimir
    /// and Loki read from `-runtime-config.file`) for `api`, replacing the
    /// per-tenant limits loaded before. A tenant's block is a whole limits
    /// struct over the defaults, so a key it omits keeps the server's default.
    /// Other keys are ignored; a limit that is not a non-negative integer is an
    /// error, as the server would refuse to load the file.
    pub fn load_runtime_overrides(&self, api: Api, yaml: &str) -> Result<(), String> {
        let doc: serde_json::Value =
            serde_saphyr::from_str(yaml).map_err(|e| format!("runtime overrides: {e}"))?;
        let mut limits = BTreeMap::new();
        let tenants = match doc.get("overrides") {
            None | Some(serde_json::Value::Null) => serde_json::Map::new(),
            Some(serde_json::Value::Object(m)) => m.clone(),
            Some(other) => {
                return Err(format!(
                    "runtime overrides: `overrides` is {other}, not a map"
                ));
            }
        };
        for (tenant, block) in tenants {
            let mut l = RulerLimits::defaults(api);
            for (key, slot) in [
                (
                    "ruler_max_rule_groups_per_tenant",
                    &mut l.max_rule_groups_per_tenant,
                ),
                (
                    "ruler_max_rules_per_rule_group",
                    &mut l.max_rules_per_rule_group,
                ),
            ] {
                if let Some(v) = block.get(key) {
                    *slot = v.as_u64().ok_or_else(|| {
                        format!("runtime overrides: {tenant}.{key} is {v}, not a count")
                    })?;
                }
            }
            limits.insert((api, tenant), l);
        }
        self.with_state(|s| {
            s.limits.retain(|(a, _), _| *a != api);
            s.limits.extend(limits);
        });
        Ok(())
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
    // `ErrBadRuleGroup` in `pkg/ruler/api.go` (sic).
    let decode_error = || text(StatusCode::BAD_REQUEST, "unable to decoded rule group");
    let Ok(group) = serde_saphyr::from_str::<RuleGroup>(body) else {
        return decode_error();
    };
    let Some(group) = normalise(group) else {
        return decode_error();
    };
    let mut s = lock(&c.shared.state);
    let errs = validate::problems(c.api, &group, s.federation_enabled);
    if !errs.is_empty() {
        return text(StatusCode::BAD_REQUEST, &errs.join(", "));
    }
    let limits = s.limits_of(c.api, &t);
    let rules = group.rules.len() as u64;
    if limits.max_rules_per_rule_group > 0 && rules > limits.max_rules_per_rule_group {
        return text(
            StatusCode::BAD_REQUEST,
            &format!(
                "per-user rules per rule group limit (limit: {} actual: {rules}) exceeded",
                limits.max_rules_per_rule_group
            ),
        );
    }
    if limits.max_rule_groups_per_tenant > 0 {
        let existing: usize = s
            .tenants
            .get(&(c.api, t.clone()))
            .map_or(0, |n| n.values().map(BTreeMap::len).sum());
        // Mimir counts the posted group as a new one even when it replaces one.
        let actual = existing as u64 + 1;
        if actual > limits.max_rule_groups_per_tenant {
            return text(
                StatusCode::BAD_REQUEST,
                &format!(
                    "per-user rule groups limit (limit: {} actual: {actual}) exceeded",
                    limits.max_rule_groups_per_tenant
                ),
            );
        }
    }
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

/// Re-formats durations as Mimir returns them after its proto round trip;
/// `None` when one does not parse (a YAML decode error in Mimir and Loki).
fn normalise(mut g: RuleGroup) -> Option<RuleGroup> {
    fn dur(v: &mut Option<String>) -> Option<()> {
        if let Some(s) = v.as_deref() {
            match parse_duration(s)? {
                0 => *v = None,
                ms => *v = Some(format_duration(ms)),
            }
        }
        Some(())
    }
    dur(&mut g.interval)?;
    dur(&mut g.query_offset)?;
    if g.limit == Some(0) {
        g.limit = None;
    }
    for r in &mut g.rules {
        dur(&mut r.for_)?;
        dur(&mut r.keep_firing_for)?;
    }
    Some(g)
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
