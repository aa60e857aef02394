//! Fake of Grafana's HTTP API (`/api/...`): the parts the syncer uses.
//!
//! Authentication follows
//! <https://grafana.com/docs/grafana/latest/developers/http_api/authentication/>:
//! basic auth of the server admin; `X-Grafana-Org-Id` picks the organisation a
//! request acts in (default: the user's current org, org 1). Admin endpoints
//! (`/api/orgs…`, `/api/users/lookup`) need a server admin over basic auth
//! (<https://grafana.com/docs/grafana/latest/developers/http_api/org/#admin-organizations-api>).
//!
//! An org in `X-Grafana-Org-Id` that does not exist, or that the admin is not a
//! member of, gets 403 "You'll need additional permissions…": Grafana resolves
//! the signed-in user for that org, finds no org role (its user store marks the
//! user `OrgID = -1`, "Org missing"), and access control then denies every
//! org-scoped action (`pkg/services/user/userimpl/store.go` `GetSignedInUser`,
//! `pkg/services/accesscontrol/middleware.go`).
//!
//! Handlers, one module per documentation page: [`orgs`] (orgs, org users, user
//! lookup), [`teams`], [`datasources`], [`folders`], [`dashboards`] (dashboards and
//! search).

mod dashboards;
mod datasources;
mod folders;
mod orgs;
mod teams;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use axum::Json;
use axum::Router;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::common::{self, Error, Recorder, lock};

/// An organisation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    /// Grafana-assigned id.
    pub id: i64,
    /// Unique name.
    pub name: String,
}

/// A Grafana user (created by tests with [`FakeGrafana::add_user`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Grafana-assigned id.
    pub id: i64,
    /// Login.
    pub login: String,
    /// Email.
    pub email: String,
    /// Server admin ("Grafana Admin").
    pub is_admin: bool,
}

/// A team, in one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Team {
    /// Grafana-assigned id.
    pub id: i64,
    /// Grafana-assigned uid.
    pub uid: String,
    /// Owning org.
    pub org_id: i64,
    /// Name, unique in the org.
    pub name: String,
    /// Email (may be empty).
    pub email: String,
    /// Member user ids.
    pub members: BTreeSet<i64>,
}

/// A datasource, in one org.
#[derive(Debug, Clone, PartialEq)]
pub struct Datasource {
    /// Grafana-assigned id.
    pub id: i64,
    /// Owning org.
    pub org_id: i64,
    /// Uid, unique in the org.
    pub uid: String,
    /// Incremented on every update; starts at 1.
    pub version: i64,
    /// The stored non-secret fields (`name`, `type`, `access`, `url`, `user`,
    /// `database`, `basicAuth`, `basicAuthUser`, `withCredentials`, `isDefault`,
    /// `jsonData`, `readOnly`), with Grafana's defaults filled in.
    pub fields: Map<String, Value>,
    /// The secrets as sent (`secureJsonData`); never returned by the API, only
    /// their keys as `secureJsonFields`. Tests read them here.
    pub secure: BTreeMap<String, String>,
}

/// A folder, in one org.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Folder {
    /// Grafana-assigned id (shared sequence with dashboards, as in Grafana).
    pub id: i64,
    /// Uid, unique in the org.
    pub uid: String,
    /// Title.
    pub title: String,
    /// Incremented on every update; starts at 1.
    pub version: i64,
}

/// A dashboard, in one org.
#[derive(Debug, Clone, PartialEq)]
pub struct Dashboard {
    /// Grafana-assigned id.
    pub id: i64,
    /// Uid, unique in the org.
    pub uid: String,
    /// The dashboard JSON as stored, with Grafana's `id`, `uid` and `version` set.
    pub model: Value,
    /// Folder uid; `None` is the root ("General").
    pub folder_uid: Option<String>,
    /// Incremented on every save; starts at 1.
    pub version: i64,
    /// The `message` of the last save.
    pub message: String,
    /// RFC 3339 time of creation and of the last save.
    pub created: String,
    /// See `created`.
    pub updated: String,
}

/// The fake's whole state. Public so tests can inspect it and edit it directly
/// (simulating an edit in Grafana's UI) with [`FakeGrafana::with_state`].
#[derive(Debug, Default)]
pub struct GrafanaState {
    /// Orgs by id.
    pub orgs: BTreeMap<i64, Org>,
    /// Users by id.
    pub users: BTreeMap<i64, User>,
    /// (org id, user id) → role (`Admin`, `Editor`, `Viewer`, `None`).
    pub org_users: BTreeMap<(i64, i64), String>,
    /// Teams by id.
    pub teams: BTreeMap<i64, Team>,
    /// Datasources by id.
    pub datasources: BTreeMap<i64, Datasource>,
    /// (org id, uid) → folder.
    pub folders: BTreeMap<(i64, String), Folder>,
    /// (org id, uid) → dashboard.
    pub dashboards: BTreeMap<(i64, String), Dashboard>,
    /// Service-account token → (org id, org role).
    pub service_account_tokens: BTreeMap<String, (i64, String)>,
    next_id: i64,
}

impl GrafanaState {
    /// A fresh id. One sequence for everything keeps ids unique and simple; real
    /// Grafana has one per table, and clients must not assume either.
    pub fn next_id(&mut self) -> i64 {
        self.next_id += 1;
        self.next_id
    }

    /// A fresh 14-character uid, like the short uids Grafana generates.
    pub(crate) fn next_uid(&mut self) -> String {
        format!("fake{:010}", self.next_id())
    }

    pub(crate) fn org_by_name(&self, name: &str) -> Option<&Org> {
        self.orgs.values().find(|o| o.name == name)
    }

    pub(crate) fn user_by_login_or_email(&self, s: &str) -> Option<&User> {
        self.users
            .values()
            .find(|u| u.login.eq_ignore_ascii_case(s) || u.email.eq_ignore_ascii_case(s))
    }
}

pub(crate) struct Shared {
    pub(crate) state: Mutex<GrafanaState>,
    admin_user: String,
    admin_password: String,
}

pub(crate) type St = Arc<Shared>;

/// A running fake Grafana. Dropping it stops the server.
pub struct FakeGrafana {
    server: common::Server,
    shared: St,
    recorder: Recorder,
}

impl std::fmt::Debug for FakeGrafana {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeGrafana")
            .field("url", &self.url())
            .finish_non_exhaustive()
    }
}

impl FakeGrafana {
    /// Starts a fake on `127.0.0.1:0` with one server admin (user id 1, an
    /// `Admin` of org 1 "Main Org.", as a fresh Grafana has).
    pub async fn start(admin_user: &str, admin_password: &str) -> Result<Self, Error> {
        // Org 1 and user 1, as in a fresh Grafana; later ids come from one
        // sequence starting at 2.
        let mut state = GrafanaState {
            next_id: 1,
            ..GrafanaState::default()
        };
        let org = 1;
        state.orgs.insert(
            org,
            Org {
                id: org,
                name: "Main Org.".into(),
            },
        );
        let admin = 1;
        state.users.insert(
            admin,
            User {
                id: admin,
                login: admin_user.into(),
                email: "admin@localhost".into(),
                is_admin: true,
            },
        );
        state.org_users.insert((org, admin), "Admin".into());
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            admin_user: admin_user.into(),
            admin_password: admin_password.into(),
        });
        let router = Router::new()
            .merge(orgs::routes())
            .merge(teams::routes())
            .merge(datasources::routes())
            .merge(folders::routes())
            .merge(dashboards::routes())
            .with_state(Arc::clone(&shared));
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

    /// Runs `f` on the state: to inspect it, or to change it behind the client's
    /// back (a UI edit, for drift tests). Keep `f` short; requests wait for it.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut GrafanaState) -> R) -> R {
        f(&mut lock(&self.shared.state))
    }

    /// Creates a user (Grafana users come from sign-up, LDAP or OAuth, which the
    /// syncer never does) and returns its id. It belongs to no org.
    pub fn add_user(&self, login: &str, email: &str) -> i64 {
        self.with_state(|s| {
            let id = s.next_id();
            s.users.insert(
                id,
                User {
                    id,
                    login: login.into(),
                    email: email.into(),
                    is_admin: false,
                },
            );
            id
        })
    }

    /// Creates a service account with `role` (`Viewer`, `Editor`, `Admin`) in
    /// `org_id` and returns a token for it, as `POST /api/serviceaccounts` and
    /// `…/{id}/tokens` would (those routes are not part of the fake).
    pub fn add_service_account_token(&self, org_id: i64, role: &str) -> String {
        self.with_state(|s| {
            let token = format!("glsa_fake{:020}_{org_id}", s.next_id());
            s.service_account_tokens
                .insert(token.clone(), (org_id, role.to_string()));
            token
        })
    }

    /// The id of the org with this name.
    pub fn org_id(&self, name: &str) -> Option<i64> {
        self.with_state(|s| s.org_by_name(name).map(|o| o.id))
    }

    /// A stored dashboard.
    pub fn dashboard(&self, org_id: i64, uid: &str) -> Option<Dashboard> {
        self.with_state(|s| s.dashboards.get(&(org_id, uid.to_string())).cloned())
    }

    /// A stored datasource (with its secrets, which the API never returns).
    pub fn datasource(&self, org_id: i64, uid: &str) -> Option<Datasource> {
        self.with_state(|s| {
            s.datasources
                .values()
                .find(|d| d.org_id == org_id && d.uid == uid)
                .cloned()
        })
    }

    /// Simulates a save from Grafana's UI: applies `edit` to the dashboard JSON
    /// and bumps the version as a save does. Returns false if there is no such
    /// dashboard.
    pub fn edit_dashboard(&self, org_id: i64, uid: &str, edit: impl FnOnce(&mut Value)) -> bool {
        self.with_state(|s| {
            let Some(d) = s.dashboards.get_mut(&(org_id, uid.to_string())) else {
                return false;
            };
            edit(&mut d.model);
            d.version += 1;
            d.model["version"] = json!(d.version);
            d.updated = now_rfc3339();
            true
        })
    }
}

/// Grafana's answer to an unknown `/api` path.
fn not_found() -> Response {
    ApiError::msg(StatusCode::NOT_FOUND, "Not found").into_response()
}

/// An error answer: a status and Grafana's JSON body (`{"message": …}` plus
/// whatever else the endpoint adds, e.g. `status` on dashboard conflicts).
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) Value);

impl ApiError {
    pub(crate) fn msg(status: StatusCode, message: &str) -> Self {
        Self(status, json!({ "message": message }))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

pub(crate) type ApiResult<T = Json<Value>> = Result<T, ApiError>;

/// Decodes a JSON body; Grafana answers 400 "bad request data" when binding fails.
pub(crate) fn parse<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body)
        .map_err(|_| ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"))
}

/// Who a request is from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Identity {
    /// The server admin, over basic auth.
    ServerAdmin,
    /// A service-account token: one org, one org role, never a server admin.
    ServiceAccount { org: i64, role: String },
}

fn unauthorized(message: &str, message_id: &str) -> ApiError {
    // errutil's public error body (`pkg/apimachinery/errutil`).
    ApiError(
        StatusCode::UNAUTHORIZED,
        json!({ "message": message, "messageId": message_id, "statusCode": 401 }),
    )
}

/// Identifies the caller: basic auth of the server admin, or a service-account
/// token (`Authorization: Bearer glsa_…`, see [`FakeGrafana::add_service_account_token`]).
/// Grafana answers 401 without credentials, with wrong ones, and with an unknown
/// token (`pkg/services/authn/clients/api_key.go`: `api-key.invalid`
/// "Invalid API key").
pub(crate) fn authenticate(shared: &Shared, h: &HeaderMap) -> ApiResult<Identity> {
    let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) else {
        return Err(ApiError::msg(StatusCode::UNAUTHORIZED, "Unauthorized"));
    };
    if let Some(token) = v.strip_prefix("Bearer ") {
        let s = lock(&shared.state);
        return s
            .service_account_tokens
            .get(token.trim())
            .map(|(org, role)| Identity::ServiceAccount {
                org: *org,
                role: role.clone(),
            })
            .ok_or_else(|| unauthorized("Invalid API key", "api-key.invalid"));
    }
    let creds = v
        .strip_prefix("Basic ")
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok());
    let ok = creds
        .as_deref()
        .and_then(|c| c.split_once(':'))
        .is_some_and(|(u, p)| u == shared.admin_user && p == shared.admin_password);
    if ok {
        Ok(Identity::ServerAdmin)
    } else {
        Err(unauthorized(
            "Invalid username or password",
            "password-auth.failed",
        ))
    }
}

/// For the server-admin APIs (`/api/orgs…`, `/api/users/lookup`): a
/// service-account token is authenticated but lacks the global permission, so
/// Grafana answers **403**, not 401. The routes are registered in
/// `pkg/api/api.go` with `authorizeInOrg(ac.UseGlobalOrg, ac.EvalPermission(ac.ActionOrgsCreate))`
/// and the like; permissions such as `orgs:create` belong only to the Grafana
/// Admin role (`pkg/services/accesscontrol/roles.go`), never to a service
/// account, which has an org role only. The denial body comes from
/// `pkg/middleware/authorization/access_control.go`'s `deny`.
pub(crate) fn server_admin(shared: &Shared, h: &HeaderMap, permission: &str) -> ApiResult<()> {
    match authenticate(shared, h)? {
        Identity::ServerAdmin => Ok(()),
        Identity::ServiceAccount { .. } => Err(forbidden(permission)),
    }
}

/// The lowest org role holding `permission` among those the fake serves:
/// Viewers read dashboards and folders, Editors also write them, everything
/// else (datasources, teams, org users) is the org Admin's (Grafana's basic
/// roles, `pkg/services/accesscontrol/roles.go` and the fixed roles each
/// service registers). Conservative where Grafana is configurable.
fn min_role(permission: &str) -> u8 {
    match permission {
        "dashboards:read" | "folders:read" | "orgs:read" => 1,
        "dashboards:write" | "dashboards:create" | "dashboards:delete" | "folders:create"
        | "folders:write" | "folders:delete" => 2,
        _ => 3,
    }
}

fn role_rank(role: &str) -> u8 {
    match role {
        "Viewer" => 1,
        "Editor" => 2,
        "Admin" => 3,
        _ => 0,
    }
}

/// The org a request acts in: `X-Grafana-Org-Id`, else the admin's current org
/// (1). `permission` names the action for the 403 message when the admin has no
/// role in that org (see the module docs). A service-account token acts in its
/// own org: another org in the header is 401 `api-key.organization-mismatch`
/// (`pkg/services/authn/clients/api_key.go`), and a role too low for the action
/// is 403.
pub(crate) fn org_ctx(shared: &Shared, h: &HeaderMap, permission: &str) -> ApiResult<i64> {
    let identity = authenticate(shared, h)?;
    // Grafana ignores a header that does not parse as an integer.
    let header_org = h
        .get("X-Grafana-Org-Id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&id| id > 0);
    if let Identity::ServiceAccount { org, role } = identity {
        if header_org.is_some_and(|h| h != org) {
            return Err(unauthorized(
                "API key does not belong to the requested organization",
                "api-key.organization-mismatch",
            ));
        }
        if role_rank(&role) < min_role(permission) {
            return Err(forbidden(permission));
        }
        return Ok(org);
    }
    let org = header_org.unwrap_or(1);
    let s = lock(&shared.state);
    let admin = s
        .users
        .values()
        .find(|u| u.login == shared.admin_user)
        .map(|u| u.id);
    let member =
        admin.is_some_and(|a| s.orgs.contains_key(&org) && s.org_users.contains_key(&(org, a)));
    if member {
        Ok(org)
    } else {
        Err(forbidden(permission))
    }
}

pub(crate) fn forbidden(permission: &str) -> ApiError {
    ApiError(
        StatusCode::FORBIDDEN,
        json!({
            "accessErrorId": "ACE0000000000",
            "message": format!("You'll need additional permissions to perform this action. Permissions needed: {permission}"),
            "title": "Access denied",
        }),
    )
}

/// The org the admin acts in for admin endpoints that care (deleting one's
/// current org is refused).
pub(crate) fn current_org(h: &HeaderMap) -> i64 {
    h.get("X-Grafana-Org-Id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|&id| id > 0)
        .unwrap_or(1)
}

/// Grafana's uid rule for dashboards and folders: characters first
/// (`util.IsValidShortUID`, `^[a-zA-Z0-9\-\_]*$`), then at most 40 of them
/// (`util.IsShortUIDTooLong`), both in `pkg/util/shortid_generator.go`; the
/// errors are `ErrDashboardInvalidUid` / `ErrDashboardUidTooLong` of
/// `pkg/services/dashboards/errors.go` (400), which the folder service returns
/// too (`pkg/services/folder/folderimpl`).
pub(crate) fn check_uid(uid: &str) -> ApiResult<()> {
    if !uid
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "uid contains illegal characters",
        ));
    }
    if uid.len() > 40 {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "uid too long, max 40 characters",
        ));
    }
    Ok(())
}

/// Grafana's slug for URLs: lower case, runs of other characters become `-`.
pub(crate) fn slugify(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.ends_with('-') && !out.is_empty() {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

/// The current time as RFC 3339 (UTC, seconds), as Grafana's `created`/`updated`.
pub(crate) fn now_rfc3339() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_and_uids() {
        assert_eq!(slugify("My  Dashboard (prod)"), "my-dashboard-prod");
        assert!(check_uid(&"a".repeat(40)).is_ok());
        assert!(check_uid(&"a".repeat(41)).is_err());
        assert!(check_uid("a/b").is_err());
        assert_eq!(now_rfc3339().len(), 20);
    }
}
