//! Datasources, scoped to the org of `X-Grafana-Org-Id`.
//!
//! Follows <https://grafana.com/docs/grafana/latest/developers/http_api/data_source/>:
//! list, get/update/delete by uid (and get by name), create.
//!
//! Grafana behaviour kept: `secureJsonData` is write-only — responses carry
//! `secureJsonFields: {key: true}` instead; an update keeps secrets it does not
//! mention and replaces every other field (omitted fields fall back to defaults);
//! ids are assigned; `version` starts at 1 and an update stores the *sent*
//! `version` + 1 — so an update that sends the current version increments it,
//! and one that sends none resets it to 1 — while an update carrying a version
//! older than the stored one is 409 (Grafana's `UpdateDataSource` in
//! `pkg/services/datasources/service/store.go`); names and uids are unique per org
//! (409); at most one datasource per org is the default (setting `isDefault`
//! clears it elsewhere); defaults are filled in (`user`, `database`, `basicAuth`,
//! `withCredentials`, `jsonData: {}`, `readOnly`, …), so clients must normalise.
//! Uids are not validated: Grafana only logs invalid datasource uids unless the
//! `failWrongDSUID` feature flag is on.
//!
//! URLs are validated as Grafana does (`validateURL` in `pkg/api/datasources.go`,
//! `ValidateURL` in `pkg/api/datasource/validation.go`): on create only when a URL
//! is given, on update always; an empty URL is refused for the types that need
//! one (Prometheus, Loki, Tempo, …), a URL without `scheme://` gets `http://`
//! prepended, and the result must parse as Go's `net/url.Parse` parses. A
//! failure is 400 `{"message": "Validation error, invalid URL"}`.

use std::collections::BTreeMap;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::{ApiError, ApiResult, Datasource, GrafanaState, St, org_ctx, parse};
use crate::common::lock;

pub(super) fn routes() -> Router<St> {
    Router::new()
        .route("/api/datasources", get(list).post(create))
        .route(
            "/api/datasources/uid/{uid}",
            get(get_by_uid).put(update).delete(remove),
        )
        .route("/api/datasources/name/{name}", get(get_by_name))
}

/// The create/update command. Unknown fields are ignored, as Go's JSON decoding
/// ignores them; a field of the wrong type is 400 "bad request data".
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Body {
    #[serde(default)]
    name: String,
    #[serde(default, rename = "type")]
    type_: String,
    #[serde(default)]
    access: String,
    #[serde(default)]
    url: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    database: String,
    #[serde(default)]
    basic_auth: bool,
    #[serde(default)]
    basic_auth_user: String,
    #[serde(default)]
    with_credentials: bool,
    #[serde(default)]
    is_default: bool,
    #[serde(default)]
    json_data: Option<Map<String, Value>>,
    #[serde(default)]
    secure_json_data: Option<BTreeMap<String, String>>,
    #[serde(default)]
    uid: String,
    #[serde(default)]
    version: i64,
}

impl Body {
    fn fields(&self) -> Map<String, Value> {
        let v = json!({
            "name": self.name,
            "type": self.type_,
            "access": self.access,
            "url": self.url,
            "user": self.user,
            "database": self.database,
            "basicAuth": self.basic_auth,
            "basicAuthUser": self.basic_auth_user,
            "withCredentials": self.with_credentials,
            "isDefault": self.is_default,
            "jsonData": self.json_data.clone().unwrap_or_default(),
            "readOnly": false,
        });
        match v {
            Value::Object(m) => m,
            _ => Map::new(),
        }
    }

    /// Grafana's binding requires `name` and `type`, and `access` is
    /// `proxy` or `direct` when given.
    fn validate(&self) -> ApiResult<()> {
        if self.name.is_empty() || self.type_.is_empty() {
            return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
        }
        if !matches!(self.access.as_str(), "" | "proxy" | "direct") {
            return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
        }
        Ok(())
    }
}

/// The full DTO of `GET /api/datasources/uid/:uid`: never the secrets.
fn dto(d: &Datasource) -> Value {
    let mut m = d.fields.clone();
    m.insert("id".into(), json!(d.id));
    m.insert("uid".into(), json!(d.uid));
    m.insert("orgId".into(), json!(d.org_id));
    m.insert("version".into(), json!(d.version));
    m.insert("typeLogoUrl".into(), json!(""));
    let secure: Map<String, Value> = d.secure.keys().map(|k| (k.clone(), json!(true))).collect();
    m.insert("secureJsonFields".into(), Value::Object(secure));
    Value::Object(m)
}

/// The shorter list item of `GET /api/datasources`.
fn list_item(d: &Datasource) -> Value {
    let mut m = Map::new();
    for k in [
        "name",
        "type",
        "access",
        "url",
        "user",
        "database",
        "basicAuth",
        "isDefault",
        "jsonData",
        "readOnly",
    ] {
        if let Some(v) = d.fields.get(k) {
            m.insert(k.into(), v.clone());
        }
    }
    m.insert("id".into(), json!(d.id));
    m.insert("uid".into(), json!(d.uid));
    m.insert("orgId".into(), json!(d.org_id));
    m.insert("typeName".into(), json!(""));
    m.insert("typeLogoUrl".into(), json!(""));
    Value::Object(m)
}

fn not_found() -> ApiError {
    ApiError::msg(StatusCode::NOT_FOUND, "Data source not found")
}

fn find(s: &GrafanaState, org: i64, uid: &str) -> Option<i64> {
    s.datasources
        .values()
        .find(|d| d.org_id == org && d.uid == uid)
        .map(|d| d.id)
}

fn clear_other_defaults(s: &mut GrafanaState, org: i64, keep: i64) {
    for d in s.datasources.values_mut() {
        if d.org_id == org && d.id != keep {
            d.fields.insert("isDefault".into(), json!(false));
        }
    }
}

async fn list(State(st): State<St>, h: HeaderMap) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:read")?;
    let s = lock(&st.state);
    let mut items: Vec<&Datasource> = s.datasources.values().filter(|d| d.org_id == org).collect();
    // Grafana lists datasources sorted by name.
    items.sort_by(|a, b| {
        a.fields
            .get("name")
            .map(Value::to_string)
            .cmp(&b.fields.get("name").map(Value::to_string))
    });
    Ok(Json(Value::Array(
        items.into_iter().map(list_item).collect(),
    )))
}

async fn get_by_uid(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:read")?;
    let s = lock(&st.state);
    let id = find(&s, org, &uid).ok_or_else(not_found)?;
    s.datasources
        .get(&id)
        .map(dto)
        .map(Json)
        .ok_or_else(not_found)
}

async fn get_by_name(State(st): State<St>, h: HeaderMap, Path(name): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:read")?;
    let s = lock(&st.state);
    s.datasources
        .values()
        .find(|d| d.org_id == org && d.fields.get("name") == Some(&json!(name)))
        .map(dto)
        .map(Json)
        .ok_or_else(not_found)
}

fn name_taken(s: &GrafanaState, org: i64, name: &str, except: Option<i64>) -> bool {
    s.datasources.values().any(|d| {
        d.org_id == org && Some(d.id) != except && d.fields.get("name") == Some(&json!(name))
    })
}

async fn create(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:create")?;
    let b: Body = parse(&body)?;
    b.validate()?;
    if !b.url.is_empty() {
        validate_url(&b.type_, &b.url)?;
    }
    let mut s = lock(&st.state);
    if name_taken(&s, org, &b.name, None) {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "data source with the same name already exists",
        ));
    }
    if !b.uid.is_empty() && find(&s, org, &b.uid).is_some() {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "data source with the same uid already exists",
        ));
    }
    let id = s.next_id();
    let uid = if b.uid.is_empty() {
        s.next_uid()
    } else {
        b.uid.clone()
    };
    let ds = Datasource {
        id,
        org_id: org,
        uid,
        version: 1,
        fields: b.fields(),
        secure: b.secure_json_data.clone().unwrap_or_default(),
    };
    let out = dto(&ds);
    s.datasources.insert(id, ds);
    if b.is_default {
        clear_other_defaults(&mut s, org, id);
    }
    Ok(Json(
        json!({ "datasource": out, "id": id, "message": "Datasource added", "name": b.name }),
    ))
}

async fn update(
    State(st): State<St>,
    h: HeaderMap,
    Path(uid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:write")?;
    let b: Body = parse(&body)?;
    b.validate()?;
    validate_url(&b.type_, &b.url)?;
    let mut s = lock(&st.state);
    let id = find(&s, org, &uid).ok_or_else(not_found)?;
    if name_taken(&s, org, &b.name, Some(id)) {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "data source with the same name already exists",
        ));
    }
    let ds = s.datasources.get_mut(&id).ok_or_else(not_found)?;
    if b.version != 0 && b.version < ds.version {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "Datasource has already been updated by someone else. Please reload and try again",
        ));
    }
    ds.fields = b.fields();
    // Secrets not mentioned are kept; mentioned ones are replaced.
    if let Some(secure) = &b.secure_json_data {
        ds.secure.extend(secure.clone());
    }
    ds.version = b.version + 1;
    let out = dto(ds);
    if b.is_default {
        clear_other_defaults(&mut s, org, id);
    }
    Ok(Json(
        json!({ "datasource": out, "id": id, "message": "Datasource updated", "name": b.name }),
    ))
}

async fn remove(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "datasources:delete")?;
    let mut s = lock(&st.state);
    let id = find(&s, org, &uid).ok_or_else(not_found)?;
    s.datasources.remove(&id);
    Ok(Json(json!({ "message": "Data source deleted", "id": id })))
}

/// Types whose datasources need a URL (`requiredURL` in
/// `pkg/api/datasource/validation.go`).
const URL_REQUIRED: [&str; 14] = [
    "graphite",
    "influxdb",
    "influxdb_08",
    "elasticsearch",
    "prometheus",
    "alertmanager",
    "jaeger",
    "loki",
    "opentsdb",
    "tempo",
    "zipkin",
    "mysql",
    "grafana-postgresql-datasource",
    "mssql",
];

fn validate_url(type_: &str, url: &str) -> ApiResult<()> {
    if go_url_parses(type_, url) {
        Ok(())
    } else {
        Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "Validation error, invalid URL",
        ))
    }
}

/// Grafana's `ValidateURL`: Go's `url.Parse` of the URL, with `http://`
/// prepended when it has no `…://`. `mssql` (parsed by its own driver) is
/// taken as is.
fn go_url_parses(type_: &str, url: &str) -> bool {
    if URL_REQUIRED.contains(&type_) && url.trim().is_empty() {
        return false;
    }
    if type_.eq_ignore_ascii_case("mssql") {
        return true;
    }
    // reURL = `^[^:]*://`
    let has_scheme_sep = url.find("://").is_some_and(|i| !url[..i].contains(':'));
    let url = if has_scheme_sep {
        url.to_string()
    } else {
        format!("http://{url}")
    };
    go_parse(&url)
}

/// The checks of Go's `net/url.Parse` that can fail (`net/url/url.go`).
fn go_parse(raw: &str) -> bool {
    // "net/url: invalid control character in URL"
    if raw.bytes().any(|b| b < 0x20 || b == 0x7f) {
        return false;
    }
    let (rest, fragment) = raw.split_once('#').unwrap_or((raw, ""));
    if !valid_escapes(fragment) {
        return false;
    }
    // getScheme: letters, then letters/digits/+-. up to ':'.
    let mut scheme_end = None;
    for (i, c) in rest.char_indices() {
        match c {
            'a'..='z' | 'A'..='Z' => {}
            '0'..='9' | '+' | '-' | '.' if i > 0 => {}
            // "missing protocol scheme"
            ':' if i == 0 => return false,
            ':' => {
                scheme_end = Some(i);
                break;
            }
            _ => break,
        }
    }
    let Some(end) = scheme_end else {
        // No scheme: a colon in the first path segment is an error ("first
        // path segment in URL cannot contain colon").
        let first = rest.split(['/', '?']).next().unwrap_or("");
        return !first.contains(':') && valid_escapes(rest.split('?').next().unwrap_or(""));
    };
    let after = &rest[end + 1..];
    let (after, _query) = after.split_once('?').unwrap_or((after, ""));
    let Some(hier) = after.strip_prefix("//") else {
        return valid_escapes(after);
    };
    let (authority, path) = match hier.find('/') {
        Some(i) => (&hier[..i], &hier[i..]),
        None => (hier, ""),
    };
    if !valid_escapes(path) {
        return false;
    }
    let host = match authority.rfind('@') {
        Some(i) => {
            let userinfo = &authority[..i];
            // validUserinfo
            if !userinfo
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c))
                || !valid_escapes(userinfo)
            {
                return false;
            }
            &authority[i + 1..]
        }
        None => authority,
    };
    valid_host(host)
}

fn valid_host(host: &str) -> bool {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        // "missing ']' in host"
        let Some(close) = v6.find(']') else {
            return false;
        };
        (&v6[..close], &v6[close + 1..])
    } else {
        match host.rfind(':') {
            Some(i) => (&host[..i], &host[i..]),
            None => (host, ""),
        }
    };
    // validOptionalPort: empty, or ':' and digits ("invalid port … after host").
    if !(port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit())))
    {
        return false;
    }
    // shouldEscape(c, encodeHost): what may appear in a host name.
    valid_escapes(name)
        && name.chars().all(|c| {
            !c.is_ascii() || c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:[]<>\"%".contains(c)
        })
}

/// Every `%` starts a two-digit hex escape ("invalid URL escape").
fn valid_escapes(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if i + 2 >= b.len() || !(b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit()) {
                return false;
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_judged_like_go_net_url() {
        for ok in [
            "http://mimir.mimir.svc:8080/prometheus",
            "https://loki.example/loki",
            "tempo.tempo:3200",
            "http://[::1]:9090",
            "http://user:p%40ss@host/x?q=a b",
            "http://host:/path",
        ] {
            assert!(go_url_parses("prometheus", ok), "{ok}");
        }
        for bad in [
            "",
            "  ",
            "http://host:port/x",
            "http://ho st/x",
            "http://host/%zz",
            "http://[::1/x",
            "://host",
            "http://host/\nx",
            "http://host/a%2",
        ] {
            assert!(!go_url_parses("prometheus", bad), "{bad:?}");
        }
        // An empty URL is fine for a type that needs none.
        assert!(go_url_parses("grafana-testdata-datasource", ""));
    }
}
