//! Organisations and their members, and user lookup.
//!
//! Follows <https://grafana.com/docs/grafana/latest/developers/http_api/org/>
//! (admin organisations API under `/api/orgs`, current-organisation API under
//! `/api/org`) and <https://grafana.com/docs/grafana/latest/developers/http_api/user/#get-single-user-by-usernamelogin-or-email>
//! (`GET /api/users/lookup`).
//!
//! Grafana behaviour kept: the server admin who creates an org becomes its
//! `Admin`; names are unique (409 "Organization name taken"); the last org admin
//! can be neither demoted nor removed (400); deleting the org one is acting in is
//! refused (400); deleting an org deletes everything in it.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    ApiError, ApiResult, GrafanaState, Org, St, current_org, org_ctx, parse, server_admin,
};
use crate::common::lock;

pub(super) fn routes() -> Router<St> {
    Router::new()
        .route("/api/orgs", get(list_orgs).post(create_org))
        .route("/api/orgs/name/{name}", get(get_org_by_name))
        .route(
            "/api/orgs/{id}",
            get(get_org).put(update_org).delete(delete_org),
        )
        .route(
            "/api/orgs/{id}/users",
            get(list_org_users).post(add_org_user),
        )
        .route(
            "/api/orgs/{id}/users/{user_id}",
            patch(update_org_user).delete(remove_org_user),
        )
        .route("/api/org", get(get_current_org))
        .route(
            "/api/org/users",
            get(list_current_org_users).post(add_current_org_user),
        )
        .route(
            "/api/org/users/{user_id}",
            patch(update_current_org_user).delete(remove_current_org_user),
        )
        .route("/api/users/lookup", get(lookup_user))
}

const ROLES: [&str; 4] = ["Viewer", "Editor", "Admin", "None"];

fn org_json(o: &Org) -> Value {
    json!({
        "id": o.id,
        "name": o.name,
        "address": { "address1": "", "address2": "", "city": "", "zipCode": "", "state": "", "country": "" },
    })
}

fn not_found_org() -> ApiError {
    ApiError::msg(StatusCode::NOT_FOUND, "Organization not found")
}

#[derive(Deserialize)]
struct OrgBody {
    #[serde(default)]
    name: String,
}

async fn list_orgs(State(st): State<St>, h: HeaderMap) -> ApiResult {
    server_admin(&st, &h, "orgs:read")?;
    let s = lock(&st.state);
    let list: Vec<Value> = s
        .orgs
        .values()
        .map(|o| json!({ "id": o.id, "name": o.name }))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn create_org(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    server_admin(&st, &h, "orgs:create")?;
    let b: OrgBody = parse(&body)?;
    if b.name.is_empty() {
        return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
    }
    let mut s = lock(&st.state);
    if s.org_by_name(&b.name).is_some() {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "Organization name taken",
        ));
    }
    let id = s.next_id();
    s.orgs.insert(id, Org { id, name: b.name });
    if let Some(admin) = s
        .users
        .values()
        .find(|u| u.login == st.admin_user)
        .map(|u| u.id)
    {
        s.org_users.insert((id, admin), "Admin".into());
    }
    Ok(Json(
        json!({ "orgId": id, "message": "Organization created" }),
    ))
}

async fn get_org(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    server_admin(&st, &h, "orgs:read")?;
    let s = lock(&st.state);
    s.orgs
        .get(&id)
        .map(org_json)
        .map(Json)
        .ok_or_else(not_found_org)
}

async fn get_org_by_name(
    State(st): State<St>,
    h: HeaderMap,
    Path(name): Path<String>,
) -> ApiResult {
    server_admin(&st, &h, "orgs:read")?;
    let s = lock(&st.state);
    s.org_by_name(&name)
        .map(org_json)
        .map(Json)
        .ok_or_else(not_found_org)
}

async fn update_org(
    State(st): State<St>,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult {
    server_admin(&st, &h, "orgs:write")?;
    let b: OrgBody = parse(&body)?;
    if b.name.is_empty() {
        return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
    }
    let mut s = lock(&st.state);
    if s.org_by_name(&b.name).is_some_and(|o| o.id != id) {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "Organization name taken",
        ));
    }
    let org = s.orgs.get_mut(&id).ok_or_else(not_found_org)?;
    org.name = b.name;
    Ok(Json(json!({ "message": "Organization updated" })))
}

async fn delete_org(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    server_admin(&st, &h, "orgs:delete")?;
    if id == current_org(&h) {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "Can not delete org for current user",
        ));
    }
    let mut s = lock(&st.state);
    if s.orgs.remove(&id).is_none() {
        return Err(ApiError::msg(
            StatusCode::NOT_FOUND,
            "Failed to delete organization. ID not found",
        ));
    }
    s.org_users.retain(|(o, _), _| *o != id);
    s.teams.retain(|_, t| t.org_id != id);
    s.datasources.retain(|_, d| d.org_id != id);
    s.folders.retain(|(o, _), _| *o != id);
    s.dashboards.retain(|(o, _), _| *o != id);
    Ok(Json(json!({ "message": "Organization deleted" })))
}

async fn get_current_org(State(st): State<St>, h: HeaderMap) -> ApiResult {
    let org = org_ctx(&st, &h, "orgs:read")?;
    let s = lock(&st.state);
    s.orgs
        .get(&org)
        .map(org_json)
        .map(Json)
        .ok_or_else(not_found_org)
}

// --- org users ---------------------------------------------------------------

fn org_users(s: &GrafanaState, org: i64) -> Value {
    let list: Vec<Value> = s
        .org_users
        .iter()
        .filter(|((o, _), _)| *o == org)
        .filter_map(|((o, u), role)| {
            let user = s.users.get(u)?;
            Some(json!({
                "orgId": o,
                "userId": u,
                "email": user.email,
                "name": "",
                "login": user.login,
                "avatarUrl": "",
                "role": role,
                "lastSeenAt": "",
                "lastSeenAtAge": "",
                "isDisabled": false,
                "authLabels": [],
            }))
        })
        .collect();
    Value::Array(list)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddUserBody {
    #[serde(default)]
    login_or_email: String,
    #[serde(default)]
    role: String,
}

#[derive(Deserialize)]
struct RoleBody {
    #[serde(default)]
    role: String,
}

fn check_role(role: &str) -> ApiResult<()> {
    if ROLES.contains(&role) {
        Ok(())
    } else {
        Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "Invalid role specified",
        ))
    }
}

fn add_user(st: &St, org: i64, body: &[u8]) -> ApiResult {
    let b: AddUserBody = parse(body)?;
    check_role(&b.role)?;
    let mut s = lock(&st.state);
    if !s.orgs.contains_key(&org) {
        return Err(not_found_org());
    }
    let user = s
        .user_by_login_or_email(&b.login_or_email)
        .map(|u| u.id)
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "User not found"))?;
    if s.org_users.contains_key(&(org, user)) {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "User is already member of this organization",
        ));
    }
    s.org_users.insert((org, user), b.role);
    Ok(Json(
        json!({ "message": "User added to organization", "userId": user }),
    ))
}

fn admins_left_without(s: &GrafanaState, org: i64, user: i64) -> usize {
    s.org_users
        .iter()
        .filter(|((o, u), r)| *o == org && *u != user && r.as_str() == "Admin")
        .count()
}

fn update_user(st: &St, org: i64, user: i64, body: &[u8]) -> ApiResult {
    let b: RoleBody = parse(body)?;
    check_role(&b.role)?;
    let mut s = lock(&st.state);
    let current = s
        .org_users
        .get(&(org, user))
        .cloned()
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "User not found"))?;
    if current == "Admin" && b.role != "Admin" && admins_left_without(&s, org, user) == 0 {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "Cannot change role so that there is no organization admin left",
        ));
    }
    s.org_users.insert((org, user), b.role);
    Ok(Json(json!({ "message": "Organization user updated" })))
}

fn remove_user(st: &St, org: i64, user: i64) -> ApiResult {
    let mut s = lock(&st.state);
    let current = s
        .org_users
        .get(&(org, user))
        .cloned()
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "User not found"))?;
    if current == "Admin" && admins_left_without(&s, org, user) == 0 {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "Cannot remove last organization admin",
        ));
    }
    s.org_users.remove(&(org, user));
    // Leaving an org also leaves its teams.
    for t in s.teams.values_mut().filter(|t| t.org_id == org) {
        t.members.remove(&user);
    }
    Ok(Json(json!({ "message": "User removed from organization" })))
}

async fn list_org_users(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    server_admin(&st, &h, "org.users:read")?;
    let s = lock(&st.state);
    Ok(Json(org_users(&s, id)))
}

async fn add_org_user(
    State(st): State<St>,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult {
    server_admin(&st, &h, "org.users:add")?;
    add_user(&st, id, &body)
}

async fn update_org_user(
    State(st): State<St>,
    h: HeaderMap,
    Path((id, user)): Path<(i64, i64)>,
    body: Bytes,
) -> ApiResult {
    server_admin(&st, &h, "org.users:write")?;
    update_user(&st, id, user, &body)
}

async fn remove_org_user(
    State(st): State<St>,
    h: HeaderMap,
    Path((id, user)): Path<(i64, i64)>,
) -> ApiResult {
    server_admin(&st, &h, "org.users:remove")?;
    remove_user(&st, id, user)
}

async fn list_current_org_users(State(st): State<St>, h: HeaderMap) -> ApiResult {
    let org = org_ctx(&st, &h, "org.users:read")?;
    let s = lock(&st.state);
    Ok(Json(org_users(&s, org)))
}

async fn add_current_org_user(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "org.users:add")?;
    add_user(&st, org, &body)
}

async fn update_current_org_user(
    State(st): State<St>,
    h: HeaderMap,
    Path(user): Path<i64>,
    body: Bytes,
) -> ApiResult {
    let org = org_ctx(&st, &h, "org.users:write")?;
    update_user(&st, org, user, &body)
}

async fn remove_current_org_user(
    State(st): State<St>,
    h: HeaderMap,
    Path(user): Path<i64>,
) -> ApiResult {
    let org = org_ctx(&st, &h, "org.users:remove")?;
    remove_user(&st, org, user)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct LookupQuery {
    #[serde(default)]
    login_or_email: String,
}

async fn lookup_user(
    State(st): State<St>,
    h: HeaderMap,
    Query(q): Query<LookupQuery>,
) -> ApiResult {
    server_admin(&st, &h, "users:read")?;
    let s = lock(&st.state);
    let u = s
        .user_by_login_or_email(&q.login_or_email)
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "user not found"))?;
    let org_id = s
        .org_users
        .keys()
        .find(|(_, uid)| *uid == u.id)
        .map_or(0, |(o, _)| *o);
    Ok(Json(json!({
        "id": u.id,
        "email": u.email,
        "name": "",
        "login": u.login,
        "theme": "",
        "orgId": org_id,
        "isGrafanaAdmin": u.is_admin,
        "isDisabled": false,
        "isExternal": false,
        "authLabels": [],
        "avatarUrl": "",
    })))
}
