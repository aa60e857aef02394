//! Teams and team members, scoped to the org of `X-Grafana-Org-Id`.
//!
//! Follows <https://grafana.com/docs/grafana/latest/developers/http_api/team/>:
//! search (`name` exact, `query` substring), create (409 "Team name taken"),
//! update, delete, members list/add/remove, and the bulk
//! `PUT /api/teams/:id/members` (`members`: logins or emails).
//! Adding a member twice is 400 "User is already added to this team", as
//! Grafana's handler answers. A team of another org is 404, as it is invisible.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, GrafanaState, St, Team, org_ctx, parse};
use crate::common::lock;

pub(super) fn routes() -> Router<St> {
    Router::new()
        .route("/api/teams/search", get(search))
        .route("/api/teams", post(create))
        .route("/api/teams/{id}", get(get_team).put(update).delete(remove))
        .route(
            "/api/teams/{id}/members",
            get(members).post(add_member).put(set_members),
        )
        .route("/api/teams/{id}/members/{user_id}", delete(remove_member))
}

fn team_json(t: &Team) -> Value {
    json!({
        "id": t.id,
        "uid": t.uid,
        "orgId": t.org_id,
        "name": t.name,
        "email": t.email,
        "avatarUrl": "",
        "memberCount": t.members.len(),
        "permission": 0,
    })
}

fn not_found() -> ApiError {
    ApiError::msg(StatusCode::NOT_FOUND, "Team not found")
}

fn team_mut(s: &mut GrafanaState, org: i64, id: i64) -> ApiResult<&mut Team> {
    s.teams
        .get_mut(&id)
        .filter(|t| t.org_id == org)
        .ok_or_else(not_found)
}

#[derive(Deserialize)]
struct SearchQuery {
    name: Option<String>,
    query: Option<String>,
    perpage: Option<usize>,
    page: Option<usize>,
}

async fn search(State(st): State<St>, h: HeaderMap, Query(q): Query<SearchQuery>) -> ApiResult {
    let org = org_ctx(&st, &h, "teams:read")?;
    let s = lock(&st.state);
    let needle = q.query.as_deref().unwrap_or("").to_lowercase();
    let matching: Vec<&Team> = s
        .teams
        .values()
        .filter(|t| t.org_id == org)
        .filter(|t| q.name.as_deref().is_none_or(|n| n == t.name))
        .filter(|t| t.name.to_lowercase().contains(&needle))
        .collect();
    let per_page = q.perpage.unwrap_or(1000).max(1);
    let page = q.page.unwrap_or(1).max(1);
    let teams: Vec<Value> = matching
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .map(|t| team_json(t))
        .collect();
    Ok(Json(json!({
        "totalCount": matching.len(),
        "teams": teams,
        "page": page,
        "perPage": per_page,
    })))
}

#[derive(Deserialize)]
struct TeamBody {
    #[serde(default)]
    name: String,
    #[serde(default)]
    email: String,
}

async fn create(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "teams:create")?;
    let b: TeamBody = parse(&body)?;
    if b.name.is_empty() {
        return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
    }
    let mut s = lock(&st.state);
    if s.teams
        .values()
        .any(|t| t.org_id == org && t.name == b.name)
    {
        return Err(ApiError::msg(StatusCode::CONFLICT, "Team name taken"));
    }
    let id = s.next_id();
    let uid = s.next_uid();
    s.teams.insert(
        id,
        Team {
            id,
            uid: uid.clone(),
            org_id: org,
            name: b.name,
            email: b.email,
            members: Default::default(),
        },
    );
    Ok(Json(
        json!({ "message": "Team created", "teamId": id, "uid": uid }),
    ))
}

async fn get_team(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let org = org_ctx(&st, &h, "teams:read")?;
    let mut s = lock(&st.state);
    Ok(Json(team_json(team_mut(&mut s, org, id)?)))
}

async fn update(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "teams:write")?;
    let b: TeamBody = parse(&body)?;
    if b.name.is_empty() {
        return Err(ApiError::msg(StatusCode::BAD_REQUEST, "bad request data"));
    }
    let mut s = lock(&st.state);
    if s.teams
        .values()
        .any(|t| t.org_id == org && t.name == b.name && t.id != id)
    {
        return Err(ApiError::msg(StatusCode::CONFLICT, "Team name taken"));
    }
    let t = team_mut(&mut s, org, id)?;
    t.name = b.name;
    t.email = b.email;
    Ok(Json(json!({ "message": "Team updated" })))
}

async fn remove(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let org = org_ctx(&st, &h, "teams:delete")?;
    let mut s = lock(&st.state);
    if s.teams.get(&id).is_none_or(|t| t.org_id != org) {
        return Err(ApiError::msg(
            StatusCode::NOT_FOUND,
            "Failed to delete Team. ID not found",
        ));
    }
    s.teams.remove(&id);
    Ok(Json(json!({ "message": "Team deleted" })))
}

async fn members(State(st): State<St>, h: HeaderMap, Path(id): Path<i64>) -> ApiResult {
    let org = org_ctx(&st, &h, "teams.permissions:read")?;
    let mut s = lock(&st.state);
    let ids: Vec<i64> = team_mut(&mut s, org, id)?.members.iter().copied().collect();
    let list: Vec<Value> = ids
        .iter()
        .filter_map(|u| s.users.get(u))
        .map(|u| {
            json!({
                "orgId": org,
                "teamId": id,
                "userId": u.id,
                "email": u.email,
                "name": "",
                "login": u.login,
                "avatarUrl": "",
                "labels": [],
                "permission": 0,
            })
        })
        .collect();
    Ok(Json(Value::Array(list)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AddMemberBody {
    user_id: i64,
}

async fn add_member(
    State(st): State<St>,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult {
    let org = org_ctx(&st, &h, "teams.permissions:write")?;
    let b: AddMemberBody = parse(&body)?;
    let mut s = lock(&st.state);
    if !s.users.contains_key(&b.user_id) {
        return Err(ApiError::msg(StatusCode::NOT_FOUND, "User not found"));
    }
    let t = team_mut(&mut s, org, id)?;
    if !t.members.insert(b.user_id) {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "User is already added to this team",
        ));
    }
    Ok(Json(json!({ "message": "Member added to Team" })))
}

#[derive(Deserialize)]
struct SetMembersBody {
    #[serde(default)]
    members: Vec<String>,
    #[serde(default)]
    admins: Vec<String>,
}

async fn set_members(
    State(st): State<St>,
    h: HeaderMap,
    Path(id): Path<i64>,
    body: Bytes,
) -> ApiResult {
    let org = org_ctx(&st, &h, "teams.permissions:write")?;
    let b: SetMembersBody = parse(&body)?;
    let mut s = lock(&st.state);
    let mut ids = std::collections::BTreeSet::new();
    for who in b.members.iter().chain(&b.admins) {
        let u = s
            .user_by_login_or_email(who)
            .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "User not found"))?;
        ids.insert(u.id);
    }
    team_mut(&mut s, org, id)?.members = ids;
    Ok(Json(
        json!({ "message": "Team memberships have been updated" }),
    ))
}

async fn remove_member(
    State(st): State<St>,
    h: HeaderMap,
    Path((id, user)): Path<(i64, i64)>,
) -> ApiResult {
    let org = org_ctx(&st, &h, "teams.permissions:write")?;
    let mut s = lock(&st.state);
    if !team_mut(&mut s, org, id)?.members.remove(&user) {
        return Err(ApiError::msg(
            StatusCode::NOT_FOUND,
            "Team member not found",
        ));
    }
    Ok(Json(json!({ "message": "Team Member removed" })))
}
