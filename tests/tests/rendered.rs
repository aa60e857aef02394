//! The bodies `mop render` produces for the bundled repo-template are accepted by
//! the fakes as they are, in apply order: the fakes are strict, but not stricter
//! than the real APIs on what the syncer sends.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use mop_fakes::grafana::FakeGrafana;
use mop_fakes::ruler::{Api, FakeRuler, RuleGroup, RulerApis};
use mop_syncer::render::{self, Kind, Target};
use serde_json::{Value, json};

fn desired() -> render::Desired {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-template");
    let snap = mop_syncer::source::Snapshot::from_dir(&dir).unwrap();
    let outcome = mop_syncer::validate::validate(&snap);
    let repo = outcome.repo.expect("repo-template validates");
    render::render(&repo).unwrap()
}

/// Percent-encodes one path segment (everything but RFC 3986 unreserved).
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn rendered_grafana_objects_are_accepted() {
    let desired = desired();
    let g = FakeGrafana::start("admin", "pw").await.unwrap();
    let http = reqwest::Client::new();
    let url = g.url();
    let call = |method: reqwest::Method, path: String, org: Option<i64>, body: Value| {
        let mut req = http
            .request(method, format!("{url}{path}"))
            .basic_auth("admin", Some("pw"))
            .json(&body);
        if let Some(o) = org {
            req = req.header("X-Grafana-Org-Id", o.to_string());
        }
        async move {
            let resp = req.send().await.unwrap();
            let st = resp.status();
            let body: Value = resp.json().await.unwrap_or(Value::Null);
            assert!(st.is_success(), "{st} {body}");
            body
        }
    };
    let mut orgs: BTreeMap<Option<String>, i64> = BTreeMap::new();
    let mut users = BTreeSet::new();
    let mut ensure_user = |who: &str| {
        if users.insert(who.to_string()) {
            let email = if who.contains('@') {
                who.to_string()
            } else {
                format!("{who}@example.com")
            };
            g.add_user(who, &email);
        }
    };
    let mut counts: BTreeMap<Kind, usize> = BTreeMap::new();
    // `resources` is ordered by target, then tenant, then kind: orgs come first
    // within each tenant, which is the apply order that matters here.
    for (id, r) in desired
        .resources
        .iter()
        .filter(|(id, _)| id.target == Target::Grafana)
    {
        let body: Value = serde_json::from_str(&r.body).unwrap();
        let org = orgs.get(&id.tenant).copied();
        match id.kind {
            Kind::Org => {
                let out = call(reqwest::Method::POST, "/api/orgs".into(), None, body).await;
                orgs.insert(id.tenant.clone(), out["orgId"].as_i64().unwrap());
            }
            Kind::OrgMember => {
                ensure_user(body["loginOrEmail"].as_str().unwrap());
                let path = format!("/api/orgs/{}/users", org.unwrap());
                call(reqwest::Method::POST, path, None, body).await;
            }
            Kind::Team => {
                let out = call(
                    reqwest::Method::POST,
                    "/api/teams".into(),
                    org,
                    body.clone(),
                )
                .await;
                let team = out["teamId"].as_i64().unwrap();
                for m in body["members"].as_array().unwrap() {
                    let m = m.as_str().unwrap();
                    ensure_user(m);
                    let path = format!("/api/users/lookup?loginOrEmail={}", seg(m));
                    let user = call(reqwest::Method::GET, path, None, Value::Null).await;
                    let path = format!("/api/teams/{team}/members");
                    call(
                        reqwest::Method::POST,
                        path,
                        org,
                        json!({ "userId": user["id"] }),
                    )
                    .await;
                }
            }
            Kind::Datasource => {
                call(reqwest::Method::POST, "/api/datasources".into(), org, body).await;
                let path = format!("/api/datasources/uid/{}", seg(&id.name));
                let got = call(reqwest::Method::GET, path, org, Value::Null).await;
                assert!(got.get("secureJsonData").is_none());
                assert_eq!(got["secureJsonFields"]["httpHeaderValue1"], true);
            }
            Kind::Folder => {
                call(reqwest::Method::POST, "/api/folders".into(), org, body).await;
            }
            Kind::Dashboard => {
                // The body is already `{dashboard, folderUid}`; the applier adds
                // the save options.
                let mut save = body;
                save["overwrite"] = json!(false);
                save["message"] = json!("mop: repo-template");
                let out = call(
                    reqwest::Method::POST,
                    "/api/dashboards/db".into(),
                    org,
                    save,
                )
                .await;
                assert_eq!(out["version"], 1);
            }
            other => panic!("unexpected Grafana kind {other}"),
        }
        *counts.entry(id.kind).or_default() += 1;
    }
    for kind in [Kind::Org, Kind::Datasource, Kind::Folder, Kind::Dashboard] {
        assert!(
            counts.get(&kind).copied().unwrap_or(0) > 0,
            "no {kind} rendered"
        );
    }
}

#[tokio::test]
async fn rendered_rule_groups_are_accepted_and_read_back() {
    let desired = desired();
    let r = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let http = reqwest::Client::new();
    let mut posted = 0;
    for (id, res) in &desired.resources {
        let api = match id.target {
            Target::MimirRuler => Api::Mimir,
            Target::LokiRuler => Api::Loki,
            _ => continue,
        };
        let body: Value = serde_json::from_str(&res.body).unwrap();
        let group = body["name"].as_str().unwrap();
        let ns = id.name.strip_suffix(&format!("/{group}")).unwrap();
        let tenant = id.tenant.as_deref().unwrap();
        let yaml = serde_saphyr::to_string(&body).unwrap();
        let resp = http
            .post(format!("{}{}/{}", r.url(), api.prefix(), seg(ns)))
            .header("X-Scope-OrgID", tenant)
            .header("Content-Type", "application/yaml")
            .body(yaml.clone())
            .send()
            .await
            .unwrap();
        let st = resp.status();
        assert_eq!(
            st,
            202,
            "{}: {}\n{yaml}",
            id.name,
            resp.text().await.unwrap()
        );
        let back = http
            .get(format!(
                "{}{}/{}/{}",
                r.url(),
                api.prefix(),
                seg(ns),
                seg(group)
            ))
            .header("X-Scope-OrgID", tenant)
            .send()
            .await
            .unwrap();
        assert_eq!(back.status(), 200);
        let back: RuleGroup = serde_saphyr::from_str(&back.text().await.unwrap()).unwrap();
        assert_eq!(back.name, group);
        assert_eq!(back.rules.len(), body["rules"].as_array().unwrap().len());
        posted += 1;
    }
    assert!(posted > 0, "repo-template renders rule groups");
    assert_eq!(r.recorder().writes(), posted);
}
