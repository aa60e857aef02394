//! The Grafana applier against the strict Grafana fake, driven through the
//! reconcile engine with the desired state rendered from `repo-template/`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Duration;

mod support;

use mop_fakes::FailOn;
use mop_fakes::grafana::FakeGrafana;
use mop_syncer::apply::engine::{self, Options, Outcome, Report};
use mop_syncer::apply::grafana::GrafanaApplier;
use mop_syncer::apply::http::RetryPolicy;
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::plan::Action;
use mop_syncer::render::{self, Desired, Kind, ResourceId, Target};
use serde_json::{Value, json};

const USER: &str = "mop-admin";
const PASS: &str = "pw";
const REVISION: &str = "0123abcd";

type Files = BTreeMap<String, Vec<u8>>;

fn template() -> Files {
    fn walk(dir: &Path, rel: &str, out: &mut Files) {
        for e in std::fs::read_dir(dir).unwrap() {
            let e = e.unwrap();
            let name = e.file_name().into_string().unwrap();
            let rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if e.file_type().unwrap().is_dir() {
                walk(&e.path(), &rel, out);
            } else if mop_syncer::source::is_config_path(&rel) {
                out.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let mut files = Files::new();
    walk(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-template"),
        "",
        &mut files,
    );
    files
}

/// The desired state (with a revision, as from git) and scope of a repository.
fn render(files: &Files) -> (Desired, Scope) {
    let snap = mop_syncer::source::Snapshot::from_memory(files.clone());
    let outcome = mop_syncer::validate::validate(&snap);
    assert_eq!(outcome.error_count(), 0, "{:?}", outcome.diagnostics);
    let repo = outcome.repo.expect("repository validates");
    let mut desired = render::render(&repo).unwrap();
    desired.revision = Some(REVISION.to_string());
    (desired, Scope::of(&repo))
}

fn grafana_ids(d: &Desired) -> BTreeSet<ResourceId> {
    d.resources
        .keys()
        .filter(|id| id.target == Target::Grafana)
        .cloned()
        .collect()
}

fn body(d: &Desired, id: &ResourceId) -> Value {
    serde_json::from_str(&d.resources[id].body).unwrap()
}

/// Every user the repository names, as Grafana users with a login other than
/// the email the repository uses, so matching by email is exercised.
fn add_users(g: &FakeGrafana, d: &Desired, except: &[&str]) {
    let mut names = BTreeSet::new();
    for (id, r) in &d.resources {
        let b: Value = serde_json::from_str(&r.body).unwrap();
        match id.kind {
            Kind::OrgMember => {
                names.insert(b["loginOrEmail"].as_str().unwrap().to_string());
            }
            Kind::Team => {
                for m in b["members"].as_array().unwrap() {
                    names.insert(m.as_str().unwrap().to_string());
                }
            }
            _ => {}
        }
    }
    for n in names.iter().filter(|n| !except.contains(&n.as_str())) {
        let login = n.split('@').next().unwrap();
        g.add_user(login, n);
    }
}

fn applier(url: &str) -> Vec<Box<dyn Applier>> {
    let retry = RetryPolicy {
        attempts: 4,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    };
    vec![Box::new(
        GrafanaApplier::new(url, USER, PASS, retry).unwrap(),
    )]
}

fn opts() -> Options {
    support::prune_opts(30.0)
}

async fn reconcile(d: &Desired, s: &Scope, a: &[Box<dyn Applier>], o: &Options) -> Report {
    engine::reconcile(d, s, a, o, &|_, _| {}).await
}

fn changes(r: &Report) -> BTreeSet<(Action, ResourceId)> {
    r.differences()
        .map(|(_, c)| (c.change.action, c.change.id.clone()))
        .collect()
}

async fn applied_template() -> (FakeGrafana, Vec<Box<dyn Applier>>, Files, Desired, Scope) {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let files = template();
    let (d, s) = render(&files);
    add_users(&g, &d, &[]);
    let a = applier(&g.url());
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert!(r.converged(), "{:#?}", r.targets);
    (g, a, files, d, s)
}

fn org_of(g: &FakeGrafana, s: &Scope, tenant: Option<&str>) -> i64 {
    let name = tenant.map_or(s.platform_org.as_str(), |t| s.tenants[t].org.as_str());
    g.org_id(name)
        .unwrap_or_else(|| panic!("org {name:?} exists"))
}

#[tokio::test]
async fn first_reconcile_creates_everything() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let (d, s) = render(&template());
    add_users(&g, &d, &[]);
    let a = applier(&g.url());
    let r = reconcile(&d, &s, &a, &opts()).await;

    assert!(r.converged(), "{:#?}", r.targets);
    let all = grafana_ids(&d);
    let created: BTreeSet<ResourceId> = r
        .differences()
        .filter(|(_, c)| c.change.action == Action::Create && c.outcome == Outcome::Applied)
        .map(|(_, c)| c.change.id.clone())
        .collect();
    assert_eq!(created, all);
    assert_eq!(r.differences().count(), all.len());

    // Every object is in the fake, in its tenant's org.
    for id in &all {
        let org = org_of(&g, &s, id.tenant.as_deref());
        let b = body(&d, id);
        match id.kind {
            Kind::Org => {}
            Kind::OrgMember => {
                let role = g.with_state(|st| {
                    let user = st
                        .users
                        .values()
                        .find(|u| u.email == b["loginOrEmail"].as_str().unwrap())
                        .unwrap()
                        .id;
                    st.org_users.get(&(org, user)).cloned()
                });
                assert_eq!(role.as_deref(), b["role"].as_str(), "{id}");
            }
            Kind::Team => {
                let members = g.with_state(|st| {
                    let t = st
                        .teams
                        .values()
                        .find(|t| t.org_id == org && t.name == id.name)
                        .unwrap_or_else(|| panic!("{id} exists"));
                    let mut m: Vec<String> = t
                        .members
                        .iter()
                        .map(|u| st.users[u].email.clone())
                        .collect();
                    m.sort();
                    m
                });
                assert_eq!(json!(members), b["members"], "{id}");
            }
            Kind::Datasource => {
                let ds = g.datasource(org, &id.name).unwrap();
                assert_eq!(
                    ds.secure.get("httpHeaderValue1").map(String::as_str),
                    b["secureJsonData"]["httpHeaderValue1"].as_str(),
                    "{id}"
                );
                assert_eq!(ds.fields["jsonData"]["httpHeaderName1"], "X-Scope-OrgID");
            }
            Kind::Folder => {
                let title = g.with_state(|st| {
                    st.folders
                        .get(&(org, id.name.clone()))
                        .map(|f| f.title.clone())
                });
                assert_eq!(title.as_deref(), b["title"].as_str(), "{id}");
            }
            Kind::Dashboard => {
                let dash = g.dashboard(org, &id.name).unwrap();
                assert_eq!(dash.folder_uid.as_deref(), b["folderUid"].as_str(), "{id}");
                assert_eq!(dash.model["title"], b["dashboard"]["title"]);
                assert!(dash.message.contains(REVISION), "{}", dash.message);
                assert_eq!(dash.version, 1);
            }
            other => panic!("unexpected kind {other}"),
        }
    }
    // Each tenant's datasources carry that tenant's id; the platform's see all.
    for t in s.tenants.values() {
        let org = org_of(&g, &s, Some(&t.key));
        let ds = g.datasource(org, &format!("mop-{}-mimir", t.key)).unwrap();
        assert_eq!(ds.secure["httpHeaderValue1"], t.id);
    }
    let mut ids: Vec<&str> = s.tenants.values().map(|t| t.id.as_str()).collect();
    ids.sort();
    let platform = g
        .datasource(org_of(&g, &s, None), "mop-platform-all-mimir")
        .unwrap();
    assert_eq!(platform.secure["httpHeaderValue1"], ids.join("|"));
    // The admin MOP logs in as stays in every org it created.
    let orgs = g.with_state(|st| st.orgs.len());
    assert_eq!(
        orgs,
        1 + 1 + s.tenants.len(),
        "Main Org., platform, tenants"
    );
}

#[tokio::test]
async fn second_reconcile_writes_nothing() {
    let (g, a, _, d, s) = applied_template().await;
    g.recorder().reset();
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::new());
    assert_eq!(
        g.recorder().writes(),
        0,
        "{:?}",
        g.recorder().write_counts()
    );
    // Everything was read back (and the admin user was not among the members).
    assert_eq!(r.targets[0].live_objects, grafana_ids(&d).len());
    assert!(
        g.recorder()
            .requests()
            .iter()
            .all(|q| q.starts_with("GET "))
    );
}

#[tokio::test]
async fn a_dashboard_edited_in_the_ui_is_drift_and_is_reverted() {
    let (g, a, _, d, s) = applied_template().await;
    let id = grafana_ids(&d)
        .into_iter()
        .find(|id| id.kind == Kind::Dashboard)
        .unwrap();
    let org = org_of(&g, &s, id.tenant.as_deref());
    let title = body(&d, &id)["dashboard"]["title"].clone();
    assert!(g.edit_dashboard(org, &id.name, |m| m["title"] = json!("edited in the UI")));
    g.recorder().reset();

    let dry = reconcile(
        &d,
        &s,
        &a,
        &Options {
            dry_run: true,
            ..opts()
        },
    )
    .await;
    assert_eq!(
        changes(&dry),
        BTreeSet::from([(Action::Update, id.clone())])
    );
    assert!(
        dry.differences()
            .all(|(_, c)| c.outcome == Outcome::Planned)
    );
    assert_eq!(g.recorder().writes(), 0);

    let r = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::from([(Action::Update, id.clone())]));
    assert!(r.converged());
    assert_eq!(g.recorder().writes(), 1);
    assert_eq!(g.recorder().writes_to("POST /api/dashboards/db"), 1);
    let dash = g.dashboard(org, &id.name).unwrap();
    assert_eq!(dash.model["title"], title);
    assert_eq!(dash.version, 3, "created, edited, reverted");

    // A dashboard moved to the root in the UI goes back to its folder.
    g.with_state(|st| {
        st.dashboards
            .get_mut(&(org, id.name.clone()))
            .unwrap()
            .folder_uid = None
    });
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::from([(Action::Update, id.clone())]));
    assert_eq!(
        g.dashboard(org, &id.name).unwrap().folder_uid.as_deref(),
        body(&d, &id)["folderUid"].as_str()
    );

    // A dashboard made in a tenant's org by hand is not the repository's: drift.
    g.with_state(|st| {
        let mut extra = st.dashboards[&(org, id.name.clone())].clone();
        extra.uid = "by-hand".into();
        extra.model["uid"] = json!("by-hand");
        st.dashboards.insert((org, "by-hand".into()), extra);
    });
    g.recorder().reset();
    let r = reconcile(&d, &s, &a, &opts()).await;
    let gone = ResourceId {
        name: "by-hand".into(),
        ..id.clone()
    };
    assert_eq!(changes(&r), BTreeSet::from([(Action::Delete, gone)]));
    assert!(g.dashboard(org, "by-hand").is_none());
    assert_eq!(g.recorder().writes(), 1);
    let again = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&again), BTreeSet::new());
}

#[tokio::test]
async fn a_changed_datasource_secret_is_an_update_and_unchanged_ones_are_not_sent() {
    let (g, a, mut files, d, s) = applied_template().await;
    let path = "tenants/checkout/tenant.yaml";
    let text = String::from_utf8(files[path].clone()).unwrap();
    assert!(text.contains("id: checkout\n"));
    files.insert(
        path.into(),
        text.replace("id: checkout\n", "id: checkout-eu\n")
            .into_bytes(),
    );
    let (d2, s2) = render(&files);
    assert_eq!(s2.tenants["checkout"].id, "checkout-eu");
    // What the render says changed in Grafana: only datasources, whose secret
    // header carries the tenant id (the checkout org's and the platform's).
    let differing: BTreeSet<ResourceId> = grafana_ids(&d2)
        .into_iter()
        .filter(|id| d.resources.get(id).map(|r| &r.body) != Some(&d2.resources[id].body))
        .collect();
    assert!(differing.iter().all(|id| id.kind == Kind::Datasource));
    assert!(differing.iter().any(|id| id.tenant.is_none()));
    assert!(
        differing
            .iter()
            .any(|id| id.tenant.as_deref() == Some("checkout"))
    );

    g.recorder().reset();
    let r = reconcile(&d2, &s2, &a, &opts()).await;
    let expected: BTreeSet<(Action, ResourceId)> = differing
        .iter()
        .map(|id| (Action::Update, id.clone()))
        .collect();
    assert_eq!(changes(&r), expected);
    assert!(r.converged(), "{:#?}", r.targets);
    let counts = g.recorder().write_counts();
    assert_eq!(
        counts,
        BTreeMap::from([(
            "PUT /api/datasources/uid/{uid}".to_string(),
            differing.len() as u64
        )])
    );
    let org = org_of(&g, &s2, Some("checkout"));
    assert_eq!(
        g.datasource(org, "mop-checkout-loki").unwrap().secure["httpHeaderValue1"],
        "checkout-eu"
    );
    let platform = g
        .datasource(org_of(&g, &s2, None), "mop-platform-all-tempo")
        .unwrap();
    assert!(platform.secure["httpHeaderValue1"].contains("checkout-eu"));
    // Applied once, the new secret is not sent again.
    g.recorder().reset();
    let r = reconcile(&d2, &s2, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::new());
    assert_eq!(g.recorder().writes(), 0);
    let _ = s;
}

#[tokio::test]
async fn removing_a_dashboard_and_a_tenant_deletes_them_and_nothing_else() {
    let (g, a, mut files, d, s) = applied_template().await;
    let dashboard = "tenants/checkout/dashboards/services/overview.json";
    let removed_uid = serde_json::from_slice::<Value>(&files[dashboard]).unwrap()["uid"]
        .as_str()
        .unwrap()
        .to_string();
    files.remove(dashboard);
    files.retain(|p, _| !p.starts_with("tenants/catalog/"));
    let (d2, s2) = render(&files);
    let s2 = s2.with_previous(s.tenants.values().cloned());
    assert!(s2.tenants.contains_key("catalog"));

    // What must go: everything of catalog, and the one dashboard. Members the
    // repository no longer names go by their Grafana login.
    let mut deletes: BTreeSet<ResourceId> = grafana_ids(&d)
        .into_iter()
        .filter(|id| id.tenant.as_deref() == Some("catalog"))
        .map(|mut id| {
            if id.kind == Kind::OrgMember {
                id.name = id.name.split('@').next().unwrap().to_string();
            }
            id
        })
        .collect();
    let dash_id = ResourceId {
        target: Target::Grafana,
        tenant: Some("checkout".into()),
        kind: Kind::Dashboard,
        name: removed_uid.clone(),
    };
    assert!(d.resources.contains_key(&dash_id));
    deletes.insert(dash_id);

    // The mass-prune guard holds at the default share...
    g.recorder().reset();
    let refused = reconcile(&d2, &s2, &a, &opts()).await;
    assert!(refused.targets[0].prune_refused.is_some());
    assert_eq!(
        g.recorder()
            .write_counts()
            .keys()
            .filter(|k| k.starts_with("DELETE"))
            .count(),
        0
    );

    // ...and pruning goes ahead when it is allowed.
    let o = Options {
        allow_mass_prune: true,
        ..opts()
    };
    let r = reconcile(&d2, &s2, &a, &o).await;
    assert!(r.converged(), "{:#?}", r.targets);
    let got_deletes: BTreeSet<ResourceId> = r
        .differences()
        .filter(|(_, c)| c.change.action == Action::Delete)
        .map(|(_, c)| c.change.id.clone())
        .collect();
    assert_eq!(got_deletes, deletes);
    // The other changes (of this run or the refused one): the platform
    // datasources, which no longer see catalog.
    for (_, c) in refused.differences().chain(r.differences()) {
        if c.change.action != Action::Delete {
            assert_eq!(c.change.action, Action::Update, "{:?}", c.change);
            assert_eq!(c.change.id.kind, Kind::Datasource);
            assert_eq!(c.change.id.tenant, None);
        }
    }
    assert!(g.org_id(&s.tenants["catalog"].org).is_none());
    let checkout = org_of(&g, &s2, Some("checkout"));
    assert!(g.dashboard(checkout, &removed_uid).is_none());
    for id in grafana_ids(&d2) {
        if id.kind == Kind::Dashboard {
            let org = org_of(&g, &s2, id.tenant.as_deref());
            assert!(g.dashboard(org, &id.name).is_some(), "{id} kept");
        }
    }
    // Users are Grafana's, not an org's: removing an org keeps them.
    assert!(g.with_state(|st| st.users.values().any(|u| u.email == "li@example.com")));

    g.recorder().reset();
    let r = reconcile(&d2, &s2, &a, &o).await;
    assert_eq!(changes(&r), BTreeSet::new());
    assert_eq!(g.recorder().writes(), 0);
}

#[tokio::test]
async fn writes_failing_with_500_are_retried_and_applied() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let (d, s) = render(&template());
    add_users(&g, &d, &[]);
    let a = applier(&g.url());
    g.recorder().fail_next(2, 500, FailOn::Writes);
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert!(r.converged(), "{:#?}", r.targets);
    let orgs = grafana_ids(&d)
        .iter()
        .filter(|id| id.kind == Kind::Org)
        .count() as u64;
    // The first write (the platform org) was sent three times, the rest once.
    assert_eq!(g.recorder().writes_to("POST /api/orgs"), orgs + 2);
    assert_eq!(g.with_state(|st| st.orgs.len()) as u64, orgs + 1);
    g.recorder().reset();
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::new());
}

#[tokio::test]
async fn grafana_unreachable_on_observe_changes_nothing() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let (d, s) = render(&template());
    let a = applier(&format!("http://127.0.0.1:{port}"));
    let r = reconcile(&d, &s, &a, &opts()).await;
    let t = &r.targets[0];
    assert_eq!(t.observe_failures.len(), 1, "{:?}", t.observe_failures);
    assert_eq!(t.observe_failures[0].tenant, None);
    support::assert_all_skipped(t);
    assert_eq!(r.applied(), 0);
}

#[tokio::test]
async fn a_failed_read_never_becomes_a_delete() {
    let (g, a, mut files, _, s) = applied_template().await;
    files.retain(|p, _| !p.starts_with("tenants/catalog/"));
    let (d2, s2) = render(&files);
    let s2 = s2.with_previous(s.tenants.values().cloned());
    let o = Options {
        allow_mass_prune: true,
        ..opts()
    };

    // Grafana answering 500 to everything: the whole target is unreadable.
    g.recorder().reset();
    g.recorder().fail_next(1000, 500, FailOn::Any);
    let r = reconcile(&d2, &s2, &a, &o).await;
    g.recorder().fail_next(0, 500, FailOn::Any);
    assert_eq!(r.targets[0].observe_failures.len(), 1);
    assert_eq!(r.targets[0].observe_failures[0].tenant, None);
    assert!(r.targets[0].observe_failures[0].error.contains("500"));
    assert_eq!(g.recorder().writes(), 0);
    assert_eq!(r.applied(), 0);

    // Only catalog's org unreadable (MOP's admin lost its role there): catalog
    // is left alone, the platform is still applied.
    let catalog = org_of(&g, &s, Some("catalog"));
    g.with_state(|st| st.org_users.retain(|(o, u), _| !(*o == catalog && *u == 1)));
    let r = reconcile(&d2, &s2, &a, &o).await;
    let t = &r.targets[0];
    assert_eq!(t.observe_failures.len(), 1, "{:?}", t.observe_failures);
    assert_eq!(t.observe_failures[0].tenant.as_deref(), Some("catalog"));
    assert!(t.observe_failures[0].error.contains("403"));
    assert!(g.org_id(&s.tenants["catalog"].org).is_some());
    for c in &t.changes {
        match c.change.id.tenant.as_deref() {
            Some("catalog") => assert!(matches!(c.outcome, Outcome::Skipped(_)), "{c:?}"),
            _ => assert_eq!(c.outcome, Outcome::Applied, "{c:?}"),
        }
    }
    assert!(t.changes.iter().any(|c| c.change.id.tenant.is_none()));
}

#[tokio::test]
async fn one_tenants_failure_does_not_block_the_others() {
    let g = FakeGrafana::start(USER, PASS).await.unwrap();
    let (d, s) = render(&template());
    // A member of catalog that Grafana does not know.
    add_users(&g, &d, &["sam@example.com"]);
    let a = applier(&g.url());
    let r = reconcile(&d, &s, &a, &opts()).await;

    let failed: BTreeMap<ResourceId, String> = r
        .differences()
        .filter_map(|(_, c)| match &c.outcome {
            Outcome::Failed(e) => Some((c.change.id.clone(), e.clone())),
            _ => None,
        })
        .collect();
    let member = ResourceId {
        target: Target::Grafana,
        tenant: Some("catalog".into()),
        kind: Kind::OrgMember,
        name: "sam@example.com".into(),
    };
    let team = ResourceId {
        kind: Kind::Team,
        name: "catalog-devs".into(),
        ..member.clone()
    };
    assert_eq!(
        failed.keys().cloned().collect::<BTreeSet<_>>(),
        BTreeSet::from([member.clone(), team.clone()])
    );
    for (id, e) in &failed {
        assert!(e.contains(&id.to_string()), "names the object: {e}");
        assert!(e.contains("User not found"), "quotes Grafana: {e}");
    }
    // Everything else, catalog's datasources and dashboards included, applied.
    assert!(
        r.differences()
            .filter(|(_, c)| !failed.contains_key(&c.change.id))
            .all(|(_, c)| c.outcome == Outcome::Applied)
    );
    for id in grafana_ids(&d)
        .iter()
        .filter(|id| id.kind == Kind::Dashboard)
    {
        let org = org_of(&g, &s, id.tenant.as_deref());
        assert!(g.dashboard(org, &id.name).is_some(), "{id}");
    }
    // Once the user exists, the next reconcile completes catalog.
    g.add_user("sam", "sam@example.com");
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert!(r.converged(), "{:#?}", r.targets);
    assert_eq!(
        changes(&r),
        BTreeSet::from([(Action::Create, member), (Action::Update, team)])
    );
}

#[tokio::test]
async fn membership_edited_by_hand_is_drift_and_is_reverted() {
    let (g, a, _, d, s) = applied_template().await;
    let org = org_of(&g, &s, Some("checkout"));
    let member = ResourceId {
        target: Target::Grafana,
        tenant: Some("checkout".into()),
        kind: Kind::OrgMember,
        name: "jon@example.com".into(),
    };
    let team = ResourceId {
        kind: Kind::Team,
        name: "checkout-oncall".into(),
        ..member.clone()
    };
    let intruder = g.add_user("eve", "eve@example.com");
    g.with_state(|st| {
        let jon = st
            .users
            .values()
            .find(|u| u.email == "jon@example.com")
            .unwrap()
            .id;
        st.org_users.insert((org, jon), "Admin".into());
        st.org_users.insert((org, intruder), "Viewer".into());
        let t = st
            .teams
            .values_mut()
            .find(|t| t.org_id == org && t.name == team.name)
            .unwrap();
        t.members.insert(intruder);
    });
    g.recorder().reset();
    let r = reconcile(&d, &s, &a, &opts()).await;
    let eve = ResourceId {
        name: "eve".into(),
        ..member.clone()
    };
    assert_eq!(
        changes(&r),
        BTreeSet::from([
            (Action::Update, member.clone()),
            (Action::Update, team.clone()),
            (Action::Delete, eve),
        ])
    );
    assert!(r.converged(), "{:#?}", r.targets);
    assert_eq!(
        g.recorder().write_counts(),
        BTreeMap::from([
            ("PATCH /api/orgs/{id}/users/{user_id}".to_string(), 1),
            ("PUT /api/teams/{id}/members".to_string(), 1),
            ("DELETE /api/orgs/{id}/users/{user_id}".to_string(), 1),
        ])
    );
    let role = g.with_state(|st| {
        let jon = st
            .users
            .values()
            .find(|u| u.email == "jon@example.com")
            .unwrap()
            .id;
        st.org_users.get(&(org, jon)).cloned()
    });
    assert_eq!(role.as_deref(), body(&d, &member)["role"].as_str());
    assert!(g.with_state(|st| !st.org_users.contains_key(&(org, intruder))));
    g.recorder().reset();
    let r = reconcile(&d, &s, &a, &opts()).await;
    assert_eq!(changes(&r), BTreeSet::new());
    assert_eq!(g.recorder().writes(), 0);
}
