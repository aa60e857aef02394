//! The Grafana fake refuses what Grafana refuses (issue 12 item 3); each test
//! names the Grafana source the behaviour follows (see `tests/README.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use mop_fakes::grafana::FakeGrafana;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const USER: &str = "admin";
const PASS: &str = "admin-pw";

enum Auth {
    Admin,
    Token(String),
}

async fn call(
    g: &FakeGrafana,
    auth: &Auth,
    org: Option<i64>,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", g.url()));
    req = match auth {
        Auth::Admin => req.basic_auth(USER, Some(PASS)),
        Auth::Token(t) => req.bearer_auth(t),
    };
    if let Some(org) = org {
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

async fn new_org(g: &FakeGrafana, name: &str) -> i64 {
    let (st, body) = call(
        g,
        &Auth::Admin,
        None,
        Method::POST,
        "/api/orgs",
        Some(json!({ "name": name })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    body["orgId"].as_i64().unwrap()
}

/// `pkg/api/api.go` (`authorizeInOrg(ac.UseGlobalOrg, …ActionOrgsCreate)`):
/// a service-account token is authenticated, so server-admin APIs answer 403.
#[tokio::test]
async fn service_account_token_gets_403_on_server_admin_apis_not_401() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let org = new_org(&g, "team-a").await;
    let token = Auth::Token(g.add_service_account_token(org, "Admin"));
    for (method, path, body, permission) in [
        (Method::GET, "/api/orgs", None, "orgs:read"),
        (
            Method::POST,
            "/api/orgs",
            Some(json!({ "name": "evil" })),
            "orgs:create",
        ),
        (Method::DELETE, "/api/orgs/1", None, "orgs:delete"),
        (
            Method::GET,
            "/api/users/lookup?loginOrEmail=admin",
            None,
            "users:read",
        ),
        (
            Method::POST,
            "/api/orgs/1/users",
            Some(json!({ "loginOrEmail": "admin", "role": "Viewer" })),
            "org.users:add",
        ),
    ] {
        let (st, body) = call(&g, &token, None, method, path, body).await;
        assert_eq!(st, StatusCode::FORBIDDEN, "{path}: {body}");
        assert_eq!(body["title"], "Access denied", "{body}");
        assert!(
            body["message"].as_str().unwrap().contains(permission),
            "{body}"
        );
    }
    assert_eq!(g.org_id("evil"), None);

    // In its own org the token works (as an org Admin)…
    let (st, body) = call(&g, &token, None, Method::GET, "/api/datasources", None).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // …another org in the header is 401 (`pkg/services/authn/clients/api_key.go`).
    let (st, body) = call(&g, &token, Some(1), Method::GET, "/api/folders", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["messageId"], "api-key.organization-mismatch");
    // An unknown token is 401 "Invalid API key".
    let bogus = Auth::Token("glsa_nope".into());
    let (st, body) = call(&g, &bogus, None, Method::GET, "/api/orgs", None).await;
    assert_eq!(st, StatusCode::UNAUTHORIZED);
    assert_eq!(body["message"], "Invalid API key");

    // A Viewer token reads but cannot write dashboards; an Editor can.
    let viewer = Auth::Token(g.add_service_account_token(org, "Viewer"));
    let dash = json!({ "dashboard": { "title": "T", "uid": "t" } });
    let (st, _) = call(&g, &viewer, None, Method::GET, "/api/search", None).await;
    assert_eq!(st, StatusCode::OK);
    let (st, body) = call(
        &g,
        &viewer,
        None,
        Method::POST,
        "/api/dashboards/db",
        Some(dash.clone()),
    )
    .await;
    assert_eq!(st, StatusCode::FORBIDDEN, "{body}");
    let editor = Auth::Token(g.add_service_account_token(org, "Editor"));
    let (st, body) = call(
        &g,
        &editor,
        None,
        Method::POST,
        "/api/dashboards/db",
        Some(dash),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}

/// `pkg/util/shortid_generator.go` (`IsValidShortUID`, `IsShortUIDTooLong`) as
/// called by `pkg/services/dashboards/service/dashboard_service.go` and the
/// folder service: characters first, then length; 400.
#[tokio::test]
async fn folder_and_dashboard_uids_outside_grafanas_pattern_are_400() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let org = new_org(&g, "team-a").await;
    let a = Auth::Admin;
    let long_bad = format!("{}!", "a".repeat(45));
    for (uid, message) in [
        ("has space", "uid contains illegal characters"),
        ("dots.not.ok", "uid contains illegal characters"),
        ("ünïcode", "uid contains illegal characters"),
        ("a/b", "uid contains illegal characters"),
        (long_bad.as_str(), "uid contains illegal characters"),
        (&"a".repeat(41), "uid too long, max 40 characters"),
    ] {
        let (st, body) = call(
            &g,
            &a,
            Some(org),
            Method::POST,
            "/api/folders",
            Some(json!({ "uid": uid, "title": format!("F {uid}") })),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "folder {uid}: {body}");
        assert_eq!(body["message"], message, "folder {uid}");
        let (st, body) = call(
            &g,
            &a,
            Some(org),
            Method::POST,
            "/api/dashboards/db",
            Some(json!({ "dashboard": { "title": format!("D {uid}"), "uid": uid } })),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "dashboard {uid}: {body}");
        assert_eq!(body["message"], message, "dashboard {uid}");
    }
    // The boundary: 40 of [a-zA-Z0-9_-] is fine for both.
    let ok = format!("{}-_Z9", "a".repeat(36));
    let (st, body) = call(
        &g,
        &a,
        Some(org),
        Method::POST,
        "/api/folders",
        Some(json!({ "uid": ok, "title": "ok" })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    let (st, body) = call(
        &g,
        &a,
        Some(org),
        Method::POST,
        "/api/dashboards/db",
        Some(json!({ "dashboard": { "title": "ok", "uid": ok }, "folderUid": ok })),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert!(g.with_state(|s| s.dashboards.len() == 1 && s.folders.len() == 1));
}

/// `pkg/services/dashboards/database/database.go`
/// (`getExistingDashboardByTitleAndFolder`) and `pkg/services/dashboards/errors.go`
/// (`ErrDashboardWithSameNameInFolderExists`: 412, status `name-exists`).
#[tokio::test]
async fn second_dashboard_with_the_same_title_in_a_folder_is_412() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let org = new_org(&g, "team-a").await;
    let a = Auth::Admin;
    let post = |body: Value| {
        call(
            &g,
            &a,
            Some(org),
            Method::POST,
            "/api/dashboards/db",
            Some(body),
        )
    };
    let (st, _) = call(
        &g,
        &a,
        Some(org),
        Method::POST,
        "/api/folders",
        Some(json!({ "uid": "f", "title": "F" })),
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) =
        post(json!({ "dashboard": { "title": "Latency", "uid": "one" }, "folderUid": "f" })).await;
    assert_eq!(st, StatusCode::OK);

    // Same title (and same slug: case and punctuation do not matter) in the folder.
    for title in ["Latency", "latency", "LATENCY!"] {
        let (st, body) =
            post(json!({ "dashboard": { "title": title, "uid": "two" }, "folderUid": "f" })).await;
        assert_eq!(st, StatusCode::PRECONDITION_FAILED, "{title}: {body}");
        assert_eq!(body["status"], "name-exists");
        assert_eq!(
            body["message"],
            "A dashboard with the same name in the folder already exists"
        );
    }
    assert!(g.dashboard(org, "two").is_none());
    // Another folder, or the root, is fine; so is saving "one" again.
    let (st, _) = post(json!({ "dashboard": { "title": "Latency", "uid": "two" } })).await;
    assert_eq!(st, StatusCode::OK);
    let (st, _) = post(json!({ "dashboard": { "title": "Latency", "uid": "one", "version": 1 }, "folderUid": "f" })).await;
    assert_eq!(st, StatusCode::OK);
    // With overwrite the save lands on the other dashboard: "three" is never
    // created and "one" is replaced, which is why MOP must not render two
    // dashboards with one title in one folder.
    let (st, body) = post(json!({ "dashboard": { "title": "Latency", "uid": "three", "panels": [1] }, "folderUid": "f", "overwrite": true })).await;
    assert_eq!(st, StatusCode::OK, "{body}");
    assert_eq!(body["uid"], "one");
    assert!(g.dashboard(org, "three").is_none());
    assert_eq!(g.dashboard(org, "one").unwrap().model["panels"], json!([1]));
}

/// `pkg/api/datasources.go` (`validateURL`: on create when a URL is given, on
/// update always) and `pkg/api/datasource/validation.go` (`ValidateURL`).
#[tokio::test]
async fn datasource_urls_are_validated_like_grafana() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let org = new_org(&g, "team-a").await;
    let a = Auth::Admin;
    let ds = |url: &str| json!({ "name": "Mimir", "type": "prometheus", "uid": "mimir", "access": "proxy", "url": url });
    for bad in [
        "http://mimir:port/prometheus",
        "http://mi mir/x",
        "http://mimir/%zz",
        "://mimir",
    ] {
        let (st, body) = call(
            &g,
            &a,
            Some(org),
            Method::POST,
            "/api/datasources",
            Some(ds(bad)),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert_eq!(body["message"], "Validation error, invalid URL");
    }
    assert!(g.datasource(org, "mimir").is_none());
    // No scheme: Grafana prepends http:// and accepts it.
    let (st, body) = call(
        &g,
        &a,
        Some(org),
        Method::POST,
        "/api/datasources",
        Some(ds("mimir.mimir.svc:8080/prometheus")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
    // Update validates always: an empty URL for Prometheus is refused.
    let (st, body) = call(
        &g,
        &a,
        Some(org),
        Method::PUT,
        "/api/datasources/uid/mimir",
        Some(ds("")),
    )
    .await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{body}");
    let (st, body) = call(
        &g,
        &a,
        Some(org),
        Method::PUT,
        "/api/datasources/uid/mimir",
        Some(ds("https://mimir.example/prometheus")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{body}");
}
