//! Folders, scoped to the org of `X-Grafana-Org-Id`.
//!
//! Follows <https://grafana.com/docs/grafana/latest/developers/http_api/folder/>:
//! list, get/update/delete by uid, create.
//!
//! Grafana behaviour kept: uids at most 40 characters of `[a-zA-Z0-9_-]` (400),
//! a uid is generated when none is given, an existing uid is 409, an empty title
//! is 400; `version` increments on every update and an update with another
//! `version` and no `overwrite` is 412; deleting a folder deletes its dashboards.
//! Not covered: nested folders (`parentUid`), folder permissions.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Folder, St, check_uid, org_ctx, parse};
use crate::common::lock;

pub(super) fn routes() -> Router<St> {
    Router::new()
        .route("/api/folders", get(list).post(create))
        .route(
            "/api/folders/{uid}",
            get(get_one).put(update).delete(remove),
        )
}

pub(super) fn folder_json(f: &Folder) -> Value {
    json!({
        "id": f.id,
        "uid": f.uid,
        "title": f.title,
        "url": format!("/dashboards/f/{}/{}", f.uid, super::slugify(&f.title)),
        "hasAcl": false,
        "canSave": true,
        "canEdit": true,
        "canAdmin": true,
        "canDelete": true,
        "version": f.version,
    })
}

fn not_found() -> ApiError {
    ApiError::msg(StatusCode::NOT_FOUND, "folder not found")
}

async fn list(State(st): State<St>, h: HeaderMap) -> ApiResult {
    let org = org_ctx(&st, &h, "folders:read")?;
    let s = lock(&st.state);
    let mut items: Vec<&Folder> = s
        .folders
        .iter()
        .filter(|((o, _), _)| *o == org)
        .map(|(_, f)| f)
        .collect();
    items.sort_by_key(|f| f.title.to_lowercase());
    let list: Vec<Value> = items
        .iter()
        .map(|f| json!({ "id": f.id, "uid": f.uid, "title": f.title }))
        .collect();
    Ok(Json(Value::Array(list)))
}

async fn get_one(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "folders:read")?;
    let s = lock(&st.state);
    s.folders
        .get(&(org, uid))
        .map(folder_json)
        .map(Json)
        .ok_or_else(not_found)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreateBody {
    #[serde(default)]
    uid: String,
    #[serde(default)]
    title: String,
}

async fn create(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "folders:create")?;
    let b: CreateBody = parse(&body)?;
    if b.title.trim().is_empty() {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "folder title cannot be empty",
        ));
    }
    check_uid(&b.uid)?;
    let mut s = lock(&st.state);
    if !b.uid.is_empty() && s.folders.contains_key(&(org, b.uid.clone())) {
        return Err(ApiError::msg(
            StatusCode::CONFLICT,
            "a folder with the same uid already exists",
        ));
    }
    let id = s.next_id();
    let uid = if b.uid.is_empty() {
        s.next_uid()
    } else {
        b.uid
    };
    let f = Folder {
        id,
        uid: uid.clone(),
        title: b.title,
        version: 1,
    };
    let out = folder_json(&f);
    s.folders.insert((org, uid), f);
    Ok(Json(out))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UpdateBody {
    #[serde(default)]
    title: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    overwrite: bool,
}

async fn update(
    State(st): State<St>,
    h: HeaderMap,
    Path(uid): Path<String>,
    body: Bytes,
) -> ApiResult {
    let org = org_ctx(&st, &h, "folders:write")?;
    let b: UpdateBody = parse(&body)?;
    if b.title.trim().is_empty() {
        return Err(ApiError::msg(
            StatusCode::BAD_REQUEST,
            "folder title cannot be empty",
        ));
    }
    let mut s = lock(&st.state);
    let f = s.folders.get_mut(&(org, uid)).ok_or_else(not_found)?;
    if !b.overwrite && b.version != f.version {
        return Err(ApiError::msg(
            StatusCode::PRECONDITION_FAILED,
            "the folder has been changed by someone else",
        ));
    }
    f.title = b.title;
    f.version += 1;
    Ok(Json(folder_json(f)))
}

async fn remove(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "folders:delete")?;
    let mut s = lock(&st.state);
    let f = s
        .folders
        .remove(&(org, uid.clone()))
        .ok_or_else(not_found)?;
    s.dashboards
        .retain(|(o, _), d| *o != org || d.folder_uid.as_deref() != Some(uid.as_str()));
    Ok(Json(
        json!({ "message": "Folder deleted", "id": f.id, "title": f.title }),
    ))
}
