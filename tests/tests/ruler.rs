//! The ruler fake is as strict as Mimir's and Loki's ruler APIs.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use mop_fakes::FailOn;
use mop_fakes::ruler::{Api, FakeRuler, RuleGroup, RulerApis};
use reqwest::{Method, StatusCode};

const MIMIR: &str = "/prometheus/config/v1/rules";
const LOKI: &str = "/loki/api/v1/rules";

const GROUP: &str = "\
name: api-availability
interval: 60s
rules:
  - record: job:http_requests:rate5m
    expr: sum by (job) (rate(http_requests_total[5m]))
  - alert: HighErrorRate
    expr: job:http_errors:ratio5m > 0.05
    for: 300s
    labels:
      severity: page
    annotations:
      summary: Too many errors
";

async fn call(
    r: &FakeRuler,
    method: Method,
    path: &str,
    tenant: Option<&str>,
    body: Option<&str>,
) -> (StatusCode, String) {
    let mut req = reqwest::Client::new().request(method, format!("{}{path}", r.url()));
    if let Some(t) = tenant {
        req = req.header("X-Scope-OrgID", t);
    }
    if let Some(b) = body {
        req = req
            .header("Content-Type", "application/yaml")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    (resp.status(), resp.text().await.unwrap())
}

async fn start() -> FakeRuler {
    FakeRuler::start(RulerApis::ALL).await.unwrap()
}

#[tokio::test]
async fn missing_tenant_header_is_401_no_org_id() {
    let r = start().await;
    for (m, p) in [
        (Method::GET, MIMIR.to_string()),
        (Method::POST, format!("{MIMIR}/ns")),
        (Method::DELETE, format!("{LOKI}/ns/g")),
    ] {
        let (st, body) = call(&r, m, &p, None, Some(GROUP)).await;
        assert_eq!(
            (st, body.as_str()),
            (StatusCode::UNAUTHORIZED, "no org id\n")
        );
    }
    // Federated ids are for queries, not for the rule configuration API.
    let (st, _) = call(&r, Method::GET, MIMIR, Some("a|b"), None).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        r.recorder().writes(),
        2,
        "refused writes are still counted as sent"
    );
}

#[tokio::test]
async fn post_one_group_202_then_yaml_round_trip() {
    let r = start().await;
    let (st, body) = call(
        &r,
        Method::POST,
        &format!("{MIMIR}/team-a"),
        Some("t1"),
        Some(GROUP),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{body}");
    assert!(body.contains("\"status\":\"success\""));

    let (st, yaml) = call(
        &r,
        Method::GET,
        &format!("{MIMIR}/team-a/api-availability"),
        Some("t1"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::OK);
    let g: RuleGroup = serde_saphyr::from_str(&yaml).unwrap();
    assert_eq!(g.name, "api-availability");
    // Durations come back the way Mimir formats them.
    assert_eq!(g.interval.as_deref(), Some("1m"));
    assert_eq!(g.rules[1].for_.as_deref(), Some("5m"));
    assert_eq!(g.rules[1].labels.as_ref().unwrap()["severity"], "page");
    assert_eq!(
        Some(g),
        r.group(Api::Mimir, "t1", "team-a", "api-availability")
    );

    // Posting the returned body again stores the same group.
    call(
        &r,
        Method::POST,
        &format!("{MIMIR}/team-a"),
        Some("t1"),
        Some(&yaml),
    )
    .await;
    let (_, again) = call(
        &r,
        Method::GET,
        &format!("{MIMIR}/team-a/api-availability"),
        Some("t1"),
        None,
    )
    .await;
    assert_eq!(again, yaml);

    // The list is a map namespace → groups.
    let (st, all) = call(&r, Method::GET, MIMIR, Some("t1"), None).await;
    assert_eq!(st, StatusCode::OK);
    let map: std::collections::BTreeMap<String, Vec<RuleGroup>> =
        serde_saphyr::from_str(&all).unwrap();
    assert_eq!(map["team-a"].len(), 1);
    let (st, ns) = call(
        &r,
        Method::GET,
        &format!("{MIMIR}/team-a"),
        Some("t1"),
        None,
    )
    .await;
    assert_eq!((st, ns), (StatusCode::OK, all));
}

#[tokio::test]
async fn groups_wrapper_and_invalid_yaml_are_400() {
    let r = start().await;
    let wrapped = format!(
        "groups:\n{}",
        GROUP
            .lines()
            .map(|l| format!("  {l}\n"))
            .collect::<String>()
    );
    let wrapped = wrapped.replacen("  name:", "  - name:", 1);
    for bad in [
        wrapped.as_str(),
        "name: [unclosed",
        "name: g\nrules: []\n",
        "name: g\nrules:\n  - expr: up\n",
        "name: g\nrules:\n  - record: ok\n    alert: both\n    expr: up\n",
        "name: g\nrules:\n  - record: 'not a metric'\n    expr: up\n",
        "name: g\ninterval: 5 minutes\nrules:\n  - record: ok\n    expr: up\n",
    ] {
        let (st, body) = call(
            &r,
            Method::POST,
            &format!("{MIMIR}/ns"),
            Some("t"),
            Some(bad),
        )
        .await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{bad} → {body}");
    }
    assert_eq!(r.group_count(Api::Mimir, "t"), 0);
}

#[tokio::test]
async fn tenants_and_apis_are_isolated() {
    let r = start().await;
    call(
        &r,
        Method::POST,
        &format!("{MIMIR}/ns"),
        Some("t1"),
        Some(GROUP),
    )
    .await;
    let (st, body) = call(&r, Method::GET, MIMIR, Some("t2"), None).await;
    assert_eq!(
        (st, body.as_str()),
        (StatusCode::NOT_FOUND, "no rule groups found\n")
    );
    let (st, _) = call(
        &r,
        Method::GET,
        &format!("{MIMIR}/ns/api-availability"),
        Some("t2"),
        None,
    )
    .await;
    assert_eq!(st, StatusCode::NOT_FOUND);
    // Loki's ruler is another service: same tenant, no rules there.
    assert_eq!(
        call(&r, Method::GET, LOKI, Some("t1"), None).await.0,
        StatusCode::NOT_FOUND
    );
    let loki = "name: errors\nrules:\n  - alert: Errors\n    expr: sum(rate({app=\"x\"} |= \"error\" [5m])) > 1\n";
    let (st, _) = call(
        &r,
        Method::POST,
        &format!("{LOKI}/ns"),
        Some("t1"),
        Some(loki),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert_eq!(r.group_count(Api::Loki, "t1"), 1);
    assert_eq!(r.group_count(Api::Mimir, "t1"), 1);
    assert_eq!(r.group_count(Api::Mimir, "t2"), 0);
}

#[tokio::test]
async fn percent_encoded_namespace_and_group_are_decoded() {
    let r = start().await;
    let group = GROUP.replace("name: api-availability", "name: api/availability group");
    let (st, _) = call(
        &r,
        Method::POST,
        &format!("{MIMIR}/team%2Fa%20b"),
        Some("t"),
        Some(&group),
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED);
    assert!(
        r.group(Api::Mimir, "t", "team/a b", "api/availability group")
            .is_some()
    );
    let path = format!("{MIMIR}/team%2Fa%20b/api%2Favailability%20group");
    assert_eq!(
        call(&r, Method::GET, &path, Some("t"), None).await.0,
        StatusCode::OK
    );
    assert_eq!(
        call(&r, Method::DELETE, &path, Some("t"), None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(r.group_count(Api::Mimir, "t"), 0);
}

#[tokio::test]
async fn deletes_are_202_then_404() {
    let r = start().await;
    let other = GROUP.replace("name: api-availability", "name: other");
    call(
        &r,
        Method::POST,
        &format!("{MIMIR}/ns"),
        Some("t"),
        Some(GROUP),
    )
    .await;
    call(
        &r,
        Method::POST,
        &format!("{MIMIR}/ns"),
        Some("t"),
        Some(&other),
    )
    .await;
    let g = format!("{MIMIR}/ns/api-availability");
    assert_eq!(
        call(&r, Method::DELETE, &g, Some("t"), None).await.0,
        StatusCode::ACCEPTED
    );
    let (st, body) = call(&r, Method::DELETE, &g, Some("t"), None).await;
    assert_eq!(
        (st, body.as_str()),
        (StatusCode::NOT_FOUND, "group does not exist\n")
    );
    let ns = format!("{MIMIR}/ns");
    assert_eq!(
        call(&r, Method::DELETE, &ns, Some("t"), None).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        call(&r, Method::DELETE, &ns, Some("t"), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        call(&r, Method::GET, &ns, Some("t"), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        r.recorder()
            .writes_to("DELETE /prometheus/config/v1/rules/{namespace}"),
        2
    );
    assert_eq!(
        r.recorder()
            .writes_to("DELETE /prometheus/config/v1/rules/{namespace}/{group}"),
        2
    );
}

#[tokio::test]
async fn failures_on_demand_and_single_api_servers() {
    let r = FakeRuler::start(RulerApis::MIMIR).await.unwrap();
    assert_eq!(
        call(&r, Method::GET, LOKI, Some("t"), None).await.0,
        StatusCode::NOT_FOUND
    );
    r.recorder().fail_next(1, 500, FailOn::Writes);
    let p = format!("{MIMIR}/ns");
    assert_eq!(
        call(&r, Method::POST, &p, Some("t"), Some(GROUP)).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(r.group_count(Api::Mimir, "t"), 0);
    assert_eq!(
        call(&r, Method::POST, &p, Some("t"), Some(GROUP)).await.0,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        r.recorder()
            .writes_to("POST /prometheus/config/v1/rules/{namespace}"),
        2
    );
    // A change made behind the syncer's back (e.g. with mimirtool) is visible.
    r.with_state(|s| s.tenants.clear());
    assert_eq!(
        call(&r, Method::GET, MIMIR, Some("t"), None).await.0,
        StatusCode::NOT_FOUND
    );
}
