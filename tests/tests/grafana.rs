//! The Grafana fake is as strict as Grafana: each test pins one behaviour of the
//! real API that the syncer's Grafana applier must cope with.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mop_fakes::FailOn;
use mop_fakes::grafana::FakeGrafana;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASS: &str = "s3cret";

struct Client {
    http: reqwest::Client,
    base: String,
    org: Option<i64>,
    auth: Option<(&'static str, &'static str)>,
}

impl Client {
    fn new(g: &FakeGrafana) -> Self {
        Self {
            http: reqwest::Client::new(),
            base: g.url(),
            org: None,
            auth: Some((USER, PASS)),
        }
    }

    fn in_org(mut self, org: i64) -> Self {
        self.org = Some(org);
        self
    }

    fn auth(mut self, auth: Option<(&'static str, &'static str)>) -> Self {
        self.auth = auth;
        self
    }

    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(org) = self.org {
            req = req.header("X-Grafana-Org-Id", org.to_string());
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None).await
    }
    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, Some(body)).await
    }
    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PUT, path, Some(body)).await
    }
    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(Method::PATCH, path, Some(body)).await
    }
    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, path, None).await
    }
}

async fn start() -> FakeGrafana {
    FakeGrafana::start(USER, PASS).await.unwrap()
}

/// Creates an org as the syncer does and returns a client acting in it.
async fn org(g: &FakeGrafana, name: &str) -> (i64, Client) {
    let (st, body) = Client::new(g)
        .post("/api/orgs", json!({ "name": name }))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let id = body["orgId"].as_i64().unwrap();
    (id, Client::new(g).in_org(id))
}

#[tokio::test]
async fn admin_endpoints_need_basic_auth_of_the_server_admin() {
    let g = start().await;
    let anon = Client::new(&g).auth(None);
    assert_eq!(anon.get("/api/orgs").await.0, StatusCode::UNAUTHORIZED);
    let wrong = Client::new(&g).auth(Some((USER, "nope")));
    let (st, body) = wrong.post("/api/orgs", json!({ "name": "t" })).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid username or password");
    assert_eq!(
        wrong.get("/api/users/lookup?loginOrEmail=admin").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        anon.get("/api/datasources").await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        anon.get("/api/search?type=dash-db").await.0,
        StatusCode::UNAUTHORIZED
    );
    // Nothing was created by the refused requests.
    assert_eq!(g.org_id("t"), None);
}

#[tokio::test]
async fn unknown_org_in_header_is_403() {
    let g = start().await;
    let c = Client::new(&g).in_org(999);
    let (st, body) = c.get("/api/datasources").await;
    assert_eq!(st, StatusCode::FORBIDDEN);
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("datasources:read"),
        "{body}"
    );
    // Without the header the admin acts in its current org (1).
    let (st, _) = Client::new(&g).get("/api/folders").await;
    assert_eq!(st, StatusCode::OK);
}

#[tokio::test]
async fn orgs_create_lookup_rename_delete() {
    let g = start().await;
    let admin = Client::new(&g);
    let (id, _) = org(&g, "tenant-a").await;
    let (st, body) = admin.post("/api/orgs", json!({ "name": "tenant-a" })).await;
    assert_eq!(st, StatusCode::CONFLICT, "{body}");
    let (st, body) = admin.get("/api/orgs/name/tenant-a").await;
    assert_eq!((st, body["id"].as_i64()), (StatusCode::OK, Some(id)));
    assert_eq!(
        admin.get("/api/orgs/name/nope").await.0,
        StatusCode::NOT_FOUND
    );
    let (st, _) = admin
        .put(&format!("/api/orgs/{id}"), json!({ "name": "tenant-b" }))
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(g.org_id("tenant-b"), Some(id));
    // The creating admin is an Admin of the new org, so it can act in it.
    let (st, users) = admin.get(&format!("/api/orgs/{id}/users")).await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(users[0]["role"], "Admin");
    // Deleting the org one acts in is refused; deleting another works.
    let (st, _) = Client::new(&g)
        .in_org(id)
        .delete(&format!("/api/orgs/{id}"))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        admin.delete(&format!("/api/orgs/{id}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        admin.delete(&format!("/api/orgs/{id}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn org_users_must_exist_and_roles_are_checked() {
    let g = start().await;
    let admin = Client::new(&g);
    let (id, in_org) = org(&g, "t").await;
    let path = format!("/api/orgs/{id}/users");
    let (st, _) = admin
        .post(&path, json!({ "loginOrEmail": "alice", "role": "Editor" }))
        .await;
    assert_eq!(
        st,
        StatusCode::NOT_FOUND,
        "users are not created by adding them"
    );
    let alice = g.add_user("alice", "alice@example.com");
    let (st, _) = admin
        .post(
            &path,
            json!({ "loginOrEmail": "alice@example.com", "role": "Boss" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, body) = admin
        .post(
            &path,
            json!({ "loginOrEmail": "alice@example.com", "role": "Editor" }),
        )
        .await;
    assert_eq!((st, body["userId"].as_i64()), (StatusCode::OK, Some(alice)));
    let (st, _) = admin
        .post(&path, json!({ "loginOrEmail": "alice", "role": "Editor" }))
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, _) = in_org
        .patch(
            &format!("/api/org/users/{alice}"),
            json!({ "role": "Viewer" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, users) = in_org.get("/api/org/users").await;
    let roles: Vec<(&str, &str)> = users
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["login"].as_str().unwrap(), u["role"].as_str().unwrap()))
        .collect();
    assert_eq!(roles, [("admin", "Admin"), ("alice", "Viewer")]);
    let (st, body) = admin.get("/api/users/lookup?loginOrEmail=alice").await;
    assert_eq!((st, body["id"].as_i64()), (StatusCode::OK, Some(alice)));
    // The last admin can be neither demoted nor removed.
    let (st, _) = admin
        .patch(&format!("{path}/1"), json!({ "role": "Viewer" }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        admin.delete(&format!("{path}/{alice}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        admin.delete(&format!("{path}/{alice}")).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn teams_are_scoped_by_org_header() {
    let g = start().await;
    let (_, a) = org(&g, "a").await;
    let (_, b) = org(&g, "b").await;
    let bob = g.add_user("bob", "bob@example.com");
    let (st, body) = a
        .post(
            "/api/teams",
            json!({ "name": "sre", "email": "sre@example.com" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let team = body["teamId"].as_i64().unwrap();
    assert_eq!(
        a.post("/api/teams", json!({ "name": "sre" })).await.0,
        StatusCode::CONFLICT
    );
    // The same name in another org is another team; org a's team is invisible there.
    assert_eq!(
        b.post("/api/teams", json!({ "name": "sre" })).await.0,
        StatusCode::OK
    );
    assert_eq!(
        b.get(&format!("/api/teams/{team}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (_, found) = a.get("/api/teams/search?name=sre").await;
    assert_eq!(found["totalCount"], 1);
    assert_eq!(found["teams"][0]["id"].as_i64(), Some(team));

    let members = format!("/api/teams/{team}/members");
    assert_eq!(
        a.post(&members, json!({ "userId": bob })).await.0,
        StatusCode::OK
    );
    assert_eq!(
        a.post(&members, json!({ "userId": bob })).await.0,
        StatusCode::BAD_REQUEST
    );
    let (_, list) = a.get(&members).await;
    assert_eq!(list[0]["login"], "bob");
    assert_eq!(
        a.delete(&format!("{members}/{bob}")).await.0,
        StatusCode::OK
    );
    assert_eq!(
        a.delete(&format!("{members}/{bob}")).await.0,
        StatusCode::NOT_FOUND
    );
    let (st, _) = a
        .put(
            &format!("/api/teams/{team}"),
            json!({ "name": "ops", "email": "" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(
        a.delete(&format!("/api/teams/{team}")).await.0,
        StatusCode::OK
    );
}

fn mimir_ds(uid: &str, tenant: &str) -> Value {
    json!({
        "uid": uid,
        "name": "Mimir",
        "type": "prometheus",
        "access": "proxy",
        "url": "http://mimir/prometheus",
        "isDefault": true,
        "jsonData": { "httpHeaderName1": "X-Scope-OrgID", "httpMethod": "POST" },
        "secureJsonData": { "httpHeaderValue1": tenant },
    })
}

#[tokio::test]
async fn datasource_secrets_are_never_returned_and_versions_follow_grafana() {
    let g = start().await;
    let (id, c) = org(&g, "t").await;
    let (st, body) = c.post("/api/datasources", mimir_ds("mimir-t", "t")).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["message"], "Datasource added");
    assert!(body["datasource"].get("secureJsonData").is_none());

    let (st, ds) = c.get("/api/datasources/uid/mimir-t").await;
    assert_eq!(st, StatusCode::OK);
    assert!(ds.get("secureJsonData").is_none(), "{ds}");
    assert_eq!(ds["secureJsonFields"], json!({ "httpHeaderValue1": true }));
    assert_eq!(ds["version"], 1);
    assert_eq!(ds["orgId"].as_i64(), Some(id));
    // Grafana fills in defaults the syncer never sent.
    assert_eq!(ds["basicAuth"], false);
    assert_eq!(ds["database"], "");
    let (_, list) = c.get("/api/datasources").await;
    assert!(list[0].get("secureJsonData").is_none());
    assert!(list[0].get("secureJsonFields").is_none());

    // An update without secureJsonData keeps the secret. Grafana stores the sent
    // version + 1: sending the current one increments it, sending none resets it.
    let mut upd = mimir_ds("mimir-t", "t");
    upd.as_object_mut().unwrap().remove("secureJsonData");
    upd["url"] = json!("http://mimir2/prometheus");
    upd["version"] = json!(1);
    let (st, body) = c.put("/api/datasources/uid/mimir-t", upd.clone()).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["datasource"]["version"], 2);
    assert_eq!(body["message"], "Datasource updated");
    let stored = g.datasource(id, "mimir-t").unwrap();
    assert_eq!(stored.secure["httpHeaderValue1"], "t");
    assert_eq!(stored.fields["url"], "http://mimir2/prometheus");
    // An update based on an older version is refused.
    assert_eq!(
        c.put("/api/datasources/uid/mimir-t", upd.clone()).await.0,
        StatusCode::CONFLICT
    );
    upd.as_object_mut().unwrap().remove("version");
    let (_, body) = c.put("/api/datasources/uid/mimir-t", upd).await;
    assert_eq!(body["datasource"]["version"], 1);

    // Names and uids are unique per org; other orgs do not see it.
    assert_eq!(
        c.post("/api/datasources", mimir_ds("other", "t")).await.0,
        StatusCode::CONFLICT
    );
    let (_, other) = org(&g, "u").await;
    assert_eq!(
        other.get("/api/datasources/uid/mimir-t").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        other
            .post("/api/datasources", mimir_ds("mimir-t", "u"))
            .await
            .0,
        StatusCode::OK
    );

    assert_eq!(
        c.delete("/api/datasources/uid/mimir-t").await.0,
        StatusCode::OK
    );
    assert_eq!(
        c.get("/api/datasources/uid/mimir-t").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn datasource_without_name_or_type_is_400() {
    let g = start().await;
    let c = Client::new(&g);
    let (st, _) = c
        .post("/api/datasources", json!({ "uid": "x", "type": "loki" }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = c
        .post(
            "/api/datasources",
            json!({ "name": "x", "type": "loki", "isDefault": "yes" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

fn dash(uid: &str, title: &str) -> Value {
    json!({ "uid": uid, "title": title, "panels": [], "schemaVersion": 39 })
}

#[tokio::test]
async fn dashboard_versions_increment_and_conflicts_are_412() {
    let g = start().await;
    let (id, c) = org(&g, "t").await;
    let (st, f) = c
        .post("/api/folders", json!({ "uid": "f1", "title": "Team" }))
        .await;
    assert_eq!(st, StatusCode::OK, "{f}");
    let save = |d: Value, overwrite: bool| json!({ "dashboard": d, "folderUid": "f1", "overwrite": overwrite, "message": "commit abc" });
    let (st, body) = c
        .post("/api/dashboards/db", save(dash("d1", "One"), false))
        .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(
        (body["version"].as_i64(), body["status"].as_str()),
        (Some(1), Some("success"))
    );

    // Without the current version and without overwrite: 412 version-mismatch.
    let (st, body) = c
        .post("/api/dashboards/db", save(dash("d1", "One"), false))
        .await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    assert_eq!(body["status"], "version-mismatch");
    let mut with_version = dash("d1", "One");
    with_version["version"] = json!(1);
    assert_eq!(
        c.post("/api/dashboards/db", save(with_version, false))
            .await
            .0,
        StatusCode::OK
    );
    let (_, body) = c
        .post("/api/dashboards/db", save(dash("d1", "One"), true))
        .await;
    assert_eq!(body["version"], 3);

    let (st, got) = c.get("/api/dashboards/uid/d1").await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(got["dashboard"]["version"], 3);
    assert_eq!(got["dashboard"]["uid"], "d1");
    assert!(got["dashboard"]["id"].is_i64());
    assert_eq!(got["meta"]["version"], 3);
    assert_eq!(got["meta"]["folderUid"], "f1");
    assert_eq!(got["meta"]["folderTitle"], "Team");
    assert_eq!(g.dashboard(id, "d1").unwrap().message, "commit abc");
}

#[tokio::test]
async fn dashboard_posted_without_folder_uid_moves_to_the_root() {
    let g = start().await;
    let (_, c) = org(&g, "t").await;
    c.post("/api/folders", json!({ "uid": "f1", "title": "Team" }))
        .await;
    let (st, _) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": dash("d1", "One"), "folderUid": "f1" }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": dash("d1", "One"), "overwrite": true }),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let (_, got) = c.get("/api/dashboards/uid/d1").await;
    assert_eq!(got["meta"]["folderUid"], "");
    assert_eq!(got["meta"]["folderTitle"], "General");
    let (_, hits) = c.get("/api/search?type=dash-db&folderUIDs=f1").await;
    assert_eq!(hits, json!([]));
    let (_, hits) = c.get("/api/search?type=dash-db").await;
    assert_eq!(hits[0]["uid"], "d1");
    assert!(hits[0].get("folderUid").is_none());
}

#[tokio::test]
async fn dashboard_uid_over_40_chars_and_unknown_folder_are_400() {
    let g = start().await;
    let c = Client::new(&g);
    let long = "a".repeat(41);
    let (st, body) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": dash(&long, "X") }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(body["message"], "uid too long, max 40 characters");
    let ok = "a".repeat(40);
    assert_eq!(
        c.post("/api/dashboards/db", json!({ "dashboard": dash(&ok, "X") }))
            .await
            .0,
        StatusCode::OK
    );
    let (st, body) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": dash("d2", "Y"), "folderUid": "missing" }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    let (st, _) = c
        .post("/api/dashboards/db", json!({ "dashboard": dash("d3", "") }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    let (st, _) = c
        .post("/api/folders", json!({ "uid": long, "title": "F" }))
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn folders_version_and_delete_with_their_dashboards() {
    let g = start().await;
    let (_, c) = org(&g, "t").await;
    assert_eq!(
        c.post("/api/folders", json!({ "uid": "f1", "title": "A" }))
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        c.post("/api/folders", json!({ "uid": "f1", "title": "B" }))
            .await
            .0,
        StatusCode::CONFLICT
    );
    let (st, _) = c.put("/api/folders/f1", json!({ "title": "B" })).await;
    assert_eq!(st, StatusCode::PRECONDITION_FAILED);
    let (st, f) = c
        .put("/api/folders/f1", json!({ "title": "B", "version": 1 }))
        .await;
    assert_eq!((st, f["version"].as_i64()), (StatusCode::OK, Some(2)));
    let (_, list) = c.get("/api/folders").await;
    assert_eq!(list, json!([{ "id": f["id"], "uid": "f1", "title": "B" }]));
    c.post(
        "/api/dashboards/db",
        json!({ "dashboard": dash("d1", "One"), "folderUid": "f1" }),
    )
    .await;
    assert_eq!(c.delete("/api/folders/f1").await.0, StatusCode::OK);
    assert_eq!(
        c.get("/api/dashboards/uid/d1").await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        c.delete("/api/dashboards/uid/d1").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn writes_are_counted_and_failures_injected() {
    let g = start().await;
    let (_, c) = org(&g, "t").await;
    g.recorder().reset();
    c.get("/api/search?type=dash-db").await;
    c.get("/api/datasources").await;
    assert_eq!(g.recorder().writes(), 0, "reads are not writes");

    g.recorder().fail_next(2, 500, FailOn::Writes);
    let body = json!({ "dashboard": dash("d1", "One") });
    assert_eq!(c.get("/api/folders").await.0, StatusCode::OK, "reads pass");
    assert_eq!(
        c.post("/api/dashboards/db", body.clone()).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        c.post("/api/dashboards/db", body.clone()).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(
        c.get("/api/dashboards/uid/d1").await.0,
        StatusCode::NOT_FOUND,
        "failed writes change nothing"
    );
    assert_eq!(c.post("/api/dashboards/db", body).await.0, StatusCode::OK);
    assert_eq!(c.delete("/api/dashboards/uid/d1").await.0, StatusCode::OK);
    assert_eq!(g.recorder().writes_to("POST /api/dashboards/db"), 3);
    assert_eq!(
        g.recorder().writes_to("DELETE /api/dashboards/uid/{uid}"),
        1
    );
    assert_eq!(g.recorder().writes(), 4);

    g.recorder().fail_next(1, 503, FailOn::Any);
    assert_eq!(
        c.get("/api/folders").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(c.get("/api/folders").await.0, StatusCode::OK);
    // Unknown paths answer like Grafana and are still counted.
    let (st, body) = c.post("/api/nope", json!({})).await;
    assert_eq!(
        (st, body["message"].as_str()),
        (StatusCode::NOT_FOUND, Some("Not found"))
    );
    assert_eq!(g.recorder().writes_to("POST <no route>"), 1);
}

#[tokio::test]
async fn ui_edits_bump_the_version_and_show_in_the_api() {
    let g = start().await;
    let (id, c) = org(&g, "t").await;
    c.post(
        "/api/dashboards/db",
        json!({ "dashboard": dash("d1", "One") }),
    )
    .await;
    assert!(g.edit_dashboard(id, "d1", |d| d["title"] = json!("Edited in the UI")));
    let (_, got) = c.get("/api/dashboards/uid/d1").await;
    assert_eq!(got["dashboard"]["title"], "Edited in the UI");
    assert_eq!(got["meta"]["version"], 2);
    // The syncer's next save must carry version 2 or overwrite.
    let mut d = dash("d1", "One");
    d["version"] = json!(1);
    assert_eq!(
        c.post("/api/dashboards/db", json!({ "dashboard": d }))
            .await
            .0,
        StatusCode::PRECONDITION_FAILED
    );
    g.with_state(|s| s.folders.clear());
    assert_eq!(c.get("/api/folders").await.1, json!([]));
}

#[tokio::test]
async fn dashboard_ids_must_name_an_existing_dashboard() {
    let g = start().await;
    let c = Client::new(&g);
    let (_, one) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": dash("d1", "One") }),
        )
        .await;
    c.post(
        "/api/dashboards/db",
        json!({ "dashboard": dash("d2", "Two") }),
    )
    .await;
    let mut d = dash("d3", "Three");
    d["id"] = json!(424_242);
    let (st, _) = c
        .post("/api/dashboards/db", json!({ "dashboard": d }))
        .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    let mut d = dash("d2", "Two");
    d["id"] = one["id"].clone();
    let (st, _) = c
        .post(
            "/api/dashboards/db",
            json!({ "dashboard": d, "overwrite": true }),
        )
        .await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    // By id alone, the dashboard with that id is updated.
    let d = json!({ "id": one["id"], "title": "One again", "version": 1 });
    let (st, body) = c
        .post("/api/dashboards/db", json!({ "dashboard": d }))
        .await;
    assert_eq!((st, body["uid"].as_str()), (StatusCode::OK, Some("d1")));
    assert_eq!(body["version"], 2);
}
