//! Dashboards and search, scoped to the org of `X-Grafana-Org-Id`.
//!
//! Follows <https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/>
//! (`POST /api/dashboards/db`, `GET`/`DELETE /api/dashboards/uid/:uid`) and
//! <https://grafana.com/docs/grafana/latest/developers/http_api/folder_dashboard_search/>
//! (`GET /api/search`).
//!
//! Grafana behaviour kept:
//! - the saved JSON gets Grafana's `id`, `uid` (generated when missing) and
//!   `version` (1, then +1 on every save);
//! - saving over an existing uid with a `dashboard.version` other than the stored
//!   one and without `overwrite: true` is 412 `{"status": "version-mismatch"}`;
//! - the folder is whatever `folderUid` says on every save: without it the
//!   dashboard lands in (or moves to) the root, "General";
//! - an unknown `folderUid` is 400 "folder not found"; a uid over 40 characters
//!   is 400 "uid too long, max 40 characters"; an empty title is 400;
//! - `GET` returns `{dashboard, meta}` with `meta.version`, `folderUid` (`""` for
//!   the root), `folderTitle` ("General" for the root), `created`, `updated`, …
//!
//! - a dashboard `id` naming another dashboard than its `uid` is 400; an `id`
//!   naming no dashboard is 404.
//!
//! Statuses as Grafana's save path maps them (`getExistingDashboardByIDOrUIDForUpdate`
//! in `pkg/services/dashboards/service/dashboard_service.go`, and the error table of
//! `pkg/api/dashboard.go`: version mismatch 412, folder not found 400, uid too long
//! 400, empty title 400, not found 404).
//!
//! - a second dashboard whose title (as a slug) is taken in the same folder is 412
//!   `{"status": "name-exists"}` without `overwrite`; with it, the save lands on
//!   the other dashboard (see `save`);
//! - uids outside `^[a-zA-Z0-9_-]*$` are 400 "uid contains illegal characters"
//!   (checked before the length), surrounding whitespace trimmed first
//!   (`ValidateBasicDashboardProperties` / `BuildSaveDashboardCommand` in
//!   `pkg/services/dashboards/service/dashboard_service.go`, `IsValidShortUID` in
//!   `pkg/util/shortid_generator.go`).
//!
//! Not covered: dashboard versions history, permissions, provisioning, library
//! panels, the title-versus-folder-name clash of Grafana ≤ 10.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiResult, Dashboard, St, check_uid, now_rfc3339, org_ctx, parse, slugify};
use crate::common::lock;

pub(super) fn routes() -> Router<St> {
    Router::new()
        .route("/api/dashboards/db", post(save))
        .route("/api/dashboards/uid/{uid}", get(get_one).delete(remove))
        .route("/api/search", get(search))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SaveBody {
    dashboard: Option<Value>,
    #[serde(default)]
    folder_uid: Option<String>,
    #[serde(default)]
    overwrite: bool,
    #[serde(default)]
    message: String,
}

fn bad(msg: &str) -> ApiError {
    ApiError::msg(StatusCode::BAD_REQUEST, msg)
}

fn title_of(d: &Value) -> String {
    d.get("title")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

async fn save(State(st): State<St>, h: HeaderMap, body: Bytes) -> ApiResult {
    let org = org_ctx(&st, &h, "dashboards:write")?;
    let b: SaveBody = parse(&body)?;
    let Some(mut model) = b.dashboard.filter(Value::is_object) else {
        return Err(bad("bad request data"));
    };
    let title = title_of(&model);
    if title.trim().is_empty() {
        return Err(bad("Dashboard title cannot be empty"));
    }
    let uid = match model.get("uid") {
        None | Some(Value::Null) => None,
        Some(Value::String(u)) if u.trim().is_empty() => None,
        Some(Value::String(u)) => Some(u.trim().to_string()),
        Some(_) => return Err(bad("bad request data")),
    };
    if let Some(u) = &uid {
        check_uid(u)?;
    }
    let sent_version = model.get("version").and_then(Value::as_i64).unwrap_or(0);
    let folder_uid = b.folder_uid.filter(|f| !f.is_empty());

    let mut s = lock(&st.state);
    if let Some(f) = &folder_uid
        && !s.folders.contains_key(&(org, f.clone()))
    {
        return Err(bad("folder not found"));
    }
    let sent_id = model
        .get("id")
        .and_then(Value::as_i64)
        .filter(|&id| id != 0);
    // Saved by id alone: Grafana updates the dashboard with that id.
    let uid = uid.or_else(|| {
        let id = sent_id?;
        s.dashboards
            .iter()
            .find(|((o, _), d)| *o == org && d.id == id)
            .map(|(_, d)| d.uid.clone())
    });
    let mut existing = uid
        .as_ref()
        .and_then(|u| s.dashboards.get(&(org, u.clone())))
        .cloned();
    if let Some(id) = sent_id {
        // An id must name an existing dashboard of the org, and the same one as
        // the uid when both are given.
        if !s
            .dashboards
            .iter()
            .any(|((o, _), d)| *o == org && d.id == id)
        {
            return Err(ApiError::msg(StatusCode::NOT_FOUND, "Dashboard not found"));
        }
        if existing.as_ref().is_some_and(|e| e.id != id) {
            return Err(bad("A dashboard with the same uid already exists"));
        }
    }
    if let Some(e) = &existing
        && !b.overwrite
        && sent_version != e.version
    {
        return Err(ApiError(
            StatusCode::PRECONDITION_FAILED,
            json!({ "message": "The dashboard has been changed by someone else", "status": "version-mismatch" }),
        ));
    }
    // One title per folder (compared as slugs): Grafana's legacy dashboard store
    // (`getExistingDashboardByTitleAndFolder` in
    // `pkg/services/dashboards/database/database.go`, Grafana ≤ 11) refuses a
    // second dashboard with 412 `name-exists` (`ErrDashboardWithSameNameInFolderExists`
    // in `pkg/services/dashboards/errors.go`, mapped by `pkg/api/dashboard.go`);
    // with `overwrite` it saves over the other dashboard instead, taking its id
    // and uid. Grafana 12's unified storage dropped the check; MOP must work on
    // both, so the fake keeps the stricter one.
    let slug = slugify(&title);
    let clash = s
        .dashboards
        .iter()
        .find(|((o, _), d)| {
            *o == org
                && d.folder_uid == folder_uid
                && slugify(&title_of(&d.model)) == slug
                && existing.as_ref().is_none_or(|e| e.id != d.id)
        })
        .map(|(_, d)| d.clone());
    let mut uid = uid;
    if let Some(other) = clash {
        if !b.overwrite {
            return Err(ApiError(
                StatusCode::PRECONDITION_FAILED,
                json!({ "message": "A dashboard with the same name in the folder already exists", "status": "name-exists" }),
            ));
        }
        uid = Some(other.uid.clone());
        existing = Some(other);
    }
    let uid = match uid {
        Some(u) => u,
        None => s.next_uid(),
    };
    let now = now_rfc3339();
    let (id, version, created) = match &existing {
        Some(e) => (e.id, e.version + 1, e.created.clone()),
        None => (s.next_id(), 1, now.clone()),
    };
    model["id"] = json!(id);
    model["uid"] = json!(uid);
    model["version"] = json!(version);
    s.dashboards.insert(
        (org, uid.clone()),
        Dashboard {
            id,
            uid: uid.clone(),
            model,
            folder_uid: folder_uid.clone(),
            version,
            message: b.message,
            created,
            updated: now,
        },
    );
    Ok(Json(json!({
        "id": id,
        "uid": uid,
        "url": format!("/d/{uid}/{slug}"),
        "status": "success",
        "version": version,
        "slug": slug,
        "folderUid": folder_uid.unwrap_or_default(),
    })))
}

async fn get_one(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "dashboards:read")?;
    let s = lock(&st.state);
    let d = s
        .dashboards
        .get(&(org, uid))
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "Dashboard not found"))?;
    let folder = d
        .folder_uid
        .as_ref()
        .and_then(|f| s.folders.get(&(org, f.clone())));
    let slug = slugify(&title_of(&d.model));
    Ok(Json(json!({
        "dashboard": d.model,
        "meta": {
            "type": "db",
            "canSave": true,
            "canEdit": true,
            "canAdmin": true,
            "canStar": true,
            "canDelete": true,
            "slug": slug,
            "url": format!("/d/{}/{slug}", d.uid),
            "expires": "0001-01-01T00:00:00Z",
            "created": d.created,
            "updated": d.updated,
            "updatedBy": st_admin(&st),
            "createdBy": st_admin(&st),
            "version": d.version,
            "hasAcl": false,
            "isFolder": false,
            "folderId": folder.map_or(0, |f| f.id),
            "folderUid": folder.map_or("", |f| f.uid.as_str()),
            "folderTitle": folder.map_or("General", |f| f.title.as_str()),
            "folderUrl": folder.map_or(String::new(), |f| format!("/dashboards/f/{}/{}", f.uid, slugify(&f.title))),
            "provisioned": false,
            "provisionedExternalId": "",
        },
    })))
}

fn st_admin(st: &St) -> &str {
    &st.admin_user
}

async fn remove(State(st): State<St>, h: HeaderMap, Path(uid): Path<String>) -> ApiResult {
    let org = org_ctx(&st, &h, "dashboards:delete")?;
    let mut s = lock(&st.state);
    let d = s
        .dashboards
        .remove(&(org, uid))
        .ok_or_else(|| ApiError::msg(StatusCode::NOT_FOUND, "Dashboard not found"))?;
    let title = title_of(&d.model);
    Ok(Json(json!({
        "id": d.id,
        "uid": d.uid,
        "title": title,
        "message": format!("Dashboard {title} deleted"),
    })))
}

/// `GET /api/search`: `type` (`dash-db`, `dash-folder`), `query` (title
/// substring, case-insensitive), `dashboardUIDs` and `folderUIDs` (repeatable;
/// `general` is the root), `limit` (default 1000), `page`. Sorted by title.
async fn search(State(st): State<St>, h: HeaderMap, RawQuery(q): RawQuery) -> ApiResult {
    let org = org_ctx(&st, &h, "dashboards:read")?;
    let mut kind = None;
    let mut query = String::new();
    let mut uids = Vec::new();
    let mut folder_uids = Vec::new();
    let mut limit = 1000usize;
    let mut page = 1usize;
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "type" => kind = Some(v.into_owned()),
            "query" => query = v.to_lowercase(),
            "dashboardUIDs" => uids.push(v.into_owned()),
            "folderUIDs" => folder_uids.push(v.into_owned()),
            "limit" => limit = v.parse().map_err(|_| bad("bad request data"))?,
            "page" => page = v.parse().map_err(|_| bad("bad request data"))?,
            _ => {}
        }
    }
    let s = lock(&st.state);
    let mut hits: Vec<(String, Value)> = Vec::new();
    let want = |t: &str| kind.as_deref().is_none_or(|k| k == t);
    if want("dash-folder") {
        for ((o, _), f) in &s.folders {
            if *o != org
                || !f.title.to_lowercase().contains(&query)
                || (!uids.is_empty() && !uids.contains(&f.uid))
                || (!folder_uids.is_empty() && !folder_uids.iter().any(|u| u == "general"))
            {
                continue;
            }
            let slug = slugify(&f.title);
            hits.push((
                f.title.to_lowercase(),
                json!({
                    "id": f.id, "uid": f.uid, "orgId": org, "title": f.title,
                    "uri": format!("db/{slug}"), "url": format!("/dashboards/f/{}/{slug}", f.uid),
                    "slug": "", "type": "dash-folder", "tags": [], "isStarred": false, "sortMeta": 0,
                }),
            ));
        }
    }
    if want("dash-db") {
        for ((o, _), d) in &s.dashboards {
            let title = title_of(&d.model);
            let in_folder = |u: &String| match &d.folder_uid {
                None => u == "general",
                Some(f) => f == u,
            };
            if *o != org
                || !title.to_lowercase().contains(&query)
                || (!uids.is_empty() && !uids.contains(&d.uid))
                || (!folder_uids.is_empty() && !folder_uids.iter().any(in_folder))
            {
                continue;
            }
            let slug = slugify(&title);
            let tags = d.model.get("tags").cloned().unwrap_or_else(|| json!([]));
            let mut hit = json!({
                "id": d.id, "uid": d.uid, "orgId": org, "title": title,
                "uri": format!("db/{slug}"), "url": format!("/d/{}/{slug}", d.uid),
                "slug": "", "type": "dash-db", "tags": tags, "isStarred": false, "sortMeta": 0,
            });
            // Root dashboards carry no folder fields, as in Grafana's answer.
            if let Some(f) = d
                .folder_uid
                .as_ref()
                .and_then(|f| s.folders.get(&(org, f.clone())))
            {
                hit["folderId"] = json!(f.id);
                hit["folderUid"] = json!(f.uid);
                hit["folderTitle"] = json!(f.title);
                hit["folderUrl"] = json!(format!("/dashboards/f/{}/{}", f.uid, slugify(&f.title)));
            }
            hits.push((title.to_lowercase(), hit));
        }
    }
    hits.sort_by(|a, b| a.0.cmp(&b.0));
    let out: Vec<Value> = hits
        .into_iter()
        .skip(page.saturating_sub(1).saturating_mul(limit))
        .take(limit)
        .map(|(_, v)| v)
        .collect();
    Ok(Json(Value::Array(out)))
}
