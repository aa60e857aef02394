//! The ruler applier against the strict Mimir/Loki ruler fake, through the
//! reconcile engine, with the repo-template's rendered rule groups.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

mod support;

use mop_fakes::FailOn;
use mop_fakes::ruler::{Api, FakeRuler, RulerApis};
use mop_syncer::apply::engine::{self, Options, Outcome, Report};
use mop_syncer::apply::http::RetryPolicy;
use mop_syncer::apply::ruler::RulerApplier;
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::plan::Action;
use mop_syncer::render::{Desired, ResourceId, Target};
use serde_json::Value;

fn repo_template() -> (Desired, Scope) {
    support::rendered_template()
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

fn appliers(url: &str) -> Vec<Box<dyn Applier>> {
    vec![
        Box::new(RulerApplier::new(Target::MimirRuler, url, fast_retry()).unwrap()),
        Box::new(RulerApplier::new(Target::LokiRuler, url, fast_retry()).unwrap()),
    ]
}

fn opts() -> Options {
    support::prune_opts(50.0)
}

async fn reconcile(desired: &Desired, scope: &Scope, url: &str, opts: Options) -> Report {
    engine::reconcile(desired, scope, &appliers(url), &opts, &|_, _| {}).await
}

fn api(t: Target) -> Api {
    match t {
        Target::MimirRuler => Api::Mimir,
        Target::LokiRuler => Api::Loki,
        other => panic!("not a ruler: {other}"),
    }
}

/// The rule groups of the desired state: (id, tenant's X-Scope-OrgID, namespace, group).
fn groups(desired: &Desired, scope: &Scope) -> Vec<(ResourceId, String, String, String)> {
    desired
        .resources
        .keys()
        .filter(|id| matches!(id.target, Target::MimirRuler | Target::LokiRuler))
        .map(|id| {
            let org = scope.tenants[id.tenant.as_deref().unwrap()].id.clone();
            // Namespaces are file names, so they hold no `/`; group names may.
            let (ns, group) = id.name.split_once('/').unwrap();
            (id.clone(), org, ns.to_string(), group.to_string())
        })
        .collect()
}

#[tokio::test]
async fn apply_creates_every_group_for_the_right_tenant_and_reapply_writes_nothing() {
    let (desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let all = groups(&desired, &scope);
    assert!(
        all.len() > 5,
        "the template has rule groups for both rulers"
    );

    let report = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    assert_eq!(report.applied(), all.len());
    for (id, org, ns, group) in &all {
        let got = fake
            .group(api(id.target), org, ns, group)
            .unwrap_or_else(|| panic!("{id} is not stored for tenant {org}"));
        assert_eq!(&got.name, group);
        // Exactly one API holds it: Mimir's rules are not Loki's.
        let other = match id.target {
            Target::MimirRuler => Api::Loki,
            _ => Api::Mimir,
        };
        assert!(fake.group(other, org, ns, group).is_none(), "{id}");
    }
    for t in scope.tenants.values() {
        for target in [Target::MimirRuler, Target::LokiRuler] {
            let want = all
                .iter()
                .filter(|(id, org, ..)| id.target == target && org == &t.id)
                .count();
            assert_eq!(
                fake.group_count(api(target), &t.id),
                want,
                "{} {target}",
                t.id
            );
        }
    }
    // An unchanged repository is no difference.
    fake.recorder().reset();
    let again = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(again.converged());
    assert_eq!(again.differences().count(), 0, "{:#?}", again.plan());
    assert_eq!(fake.recorder().writes(), 0);
    assert!(
        fake.recorder()
            .requests()
            .iter()
            .all(|r| r.starts_with("GET ")),
        "{:?}",
        fake.recorder().requests()
    );
}

#[tokio::test]
async fn what_the_ruler_reformats_or_omits_is_no_difference() {
    let (mut desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let (id, org, ns, group) = groups(&desired, &scope)
        .into_iter()
        .find(|(id, ..)| id.target == Target::MimirRuler)
        .unwrap();
    // Values a repository may hold that the ruler hands back otherwise: 365 days
    // come back as `1y`, zero durations and limits are omitted.
    let r = desired.resources.get_mut(&id).unwrap();
    let mut body: Value = serde_json::from_str(&r.body).unwrap();
    body["interval"] = "52w1d".into();
    body["query_offset"] = "0s".into();
    body["limit"] = 0.into();
    r.body = Arc::from(body.to_string());

    let first = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(first.converged(), "{:#?}", first.targets);
    let stored = fake.group(Api::Mimir, &org, &ns, &group).unwrap();
    assert_eq!(stored.interval.as_deref(), Some("1y"));
    assert_eq!((stored.query_offset, stored.limit), (None, None));

    fake.recorder().reset();
    let again = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert_eq!(again.differences().count(), 0, "{:#?}", again.plan());
    assert_eq!(fake.recorder().writes(), 0);
}

#[tokio::test]
async fn a_group_edited_in_the_ruler_is_drift_and_is_put_back() {
    let (desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    reconcile(&desired, &scope, &fake.url(), opts()).await;
    let (id, org, ns, group) = groups(&desired, &scope)
        .into_iter()
        .find(|(id, ..)| id.target == Target::MimirRuler)
        .unwrap();
    let original = fake.group(Api::Mimir, &org, &ns, &group).unwrap();
    fake.with_state(|s| {
        let g = s
            .tenants
            .get_mut(&(Api::Mimir, org.clone()))
            .unwrap()
            .get_mut(&ns)
            .unwrap()
            .get_mut(&group)
            .unwrap();
        g.rules[0].expr = "vector(1)".into();
    });

    let dry = reconcile(
        &desired,
        &scope,
        &fake.url(),
        Options {
            dry_run: true,
            ..opts()
        },
    )
    .await;
    let diffs: Vec<_> = dry.differences().map(|(_, c)| c.change.clone()).collect();
    assert_eq!(diffs.len(), 1, "{diffs:#?}");
    assert_eq!(diffs[0].id, id);
    assert_eq!(diffs[0].action, Action::Update);

    fake.recorder().reset();
    let healed = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(healed.converged());
    assert_eq!(healed.applied(), 1);
    assert_eq!(fake.recorder().writes(), 1);
    assert_eq!(fake.group(Api::Mimir, &org, &ns, &group).unwrap(), original);
}

#[tokio::test]
async fn a_group_removed_from_the_repository_is_deleted() {
    let (mut desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    reconcile(&desired, &scope, &fake.url(), opts()).await;
    let (id, org, ns, group) = groups(&desired, &scope)
        .into_iter()
        .find(|(id, ..)| id.target == Target::LokiRuler)
        .unwrap();
    let before = fake.group_count(Api::Loki, &org);
    desired.resources.remove(&id);

    fake.recorder().reset();
    let report = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    let changes: Vec<_> = report.differences().map(|(_, c)| &c.change).collect();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].id.clone(), changes[0].action),
        (id, Action::Delete)
    );
    assert!(fake.group(Api::Loki, &org, &ns, &group).is_none());
    assert_eq!(fake.group_count(Api::Loki, &org), before - 1);
    assert_eq!(
        fake.recorder()
            .write_counts()
            .into_iter()
            .collect::<Vec<_>>(),
        vec![(
            "DELETE /loki/api/v1/rules/{namespace}/{group}".to_string(),
            1
        )]
    );
}

#[tokio::test]
async fn the_ruler_unreachable_is_an_observe_failure_per_tenant() {
    let (desired, scope) = repo_template();
    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let report = reconcile(
        &desired,
        &scope,
        &format!("http://127.0.0.1:{port}"),
        opts(),
    )
    .await;
    assert!(!report.converged());
    for t in &report.targets {
        let failed: Vec<_> = t
            .observe_failures
            .iter()
            .map(|f| f.tenant.clone().unwrap())
            .collect();
        assert_eq!(
            failed,
            scope.tenants.keys().cloned().collect::<Vec<_>>(),
            "{}",
            t.target
        );
        assert!(
            t.observe_failures[0].error.contains("GET /prometheus")
                || t.observe_failures[0].error.contains("GET /loki")
        );
        support::assert_all_skipped(t);
    }
}

#[tokio::test]
async fn failed_reads_never_delete() {
    let (desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    reconcile(&desired, &scope, &fake.url(), opts()).await;
    let stored = groups(&desired, &scope).len();
    // The repository now holds no rules at all, and every read fails (after
    // retries): nothing may be deleted on the strength of a read that failed.
    let empty = Desired {
        revision: None,
        resources: desired
            .resources
            .iter()
            .filter(|(id, _)| !matches!(id.target, Target::MimirRuler | Target::LokiRuler))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    fake.recorder().reset();
    fake.recorder().fail_next(10_000, 500, FailOn::Any);
    let report = reconcile(
        &empty,
        &scope,
        &fake.url(),
        Options {
            allow_mass_prune: true,
            ..opts()
        },
    )
    .await;
    fake.recorder().fail_next(0, 500, FailOn::Any);
    assert_eq!(fake.recorder().writes(), 0);
    assert!(
        report
            .targets
            .iter()
            .all(|t| t.observe_failures.len() == scope.tenants.len())
    );
    let total: usize = scope
        .tenants
        .values()
        .map(|t| fake.group_count(Api::Mimir, &t.id) + fake.group_count(Api::Loki, &t.id))
        .sum();
    assert_eq!(total, stored);
}

#[tokio::test]
async fn server_errors_are_retried_until_the_write_succeeds() {
    let (desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    fake.recorder().fail_next(2, 503, FailOn::Writes);
    let report = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    let n = groups(&desired, &scope).len();
    assert_eq!(report.applied(), n);
    // Two refused attempts plus one accepted POST per group.
    assert_eq!(fake.recorder().writes(), n as u64 + 2);
}

#[tokio::test]
async fn one_tenants_rejected_group_does_not_block_the_others() {
    let (mut desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let all = groups(&desired, &scope);
    let (bad, bad_org, bad_ns, bad_group) = all
        .iter()
        .find(|(id, ..)| id.target == Target::MimirRuler)
        .cloned()
        .unwrap();
    // A group without rules: the ruler answers 400.
    let r = desired.resources.get_mut(&bad).unwrap();
    let mut body: Value = serde_json::from_str(&r.body).unwrap();
    body["rules"] = Value::Array(Vec::new());
    r.body = Arc::from(body.to_string());

    let report = reconcile(&desired, &scope, &fake.url(), opts()).await;
    let failed: Vec<_> = report
        .differences()
        .filter_map(|(_, c)| match &c.outcome {
            Outcome::Failed(why) => Some((c.change.id.clone(), why.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0].0, bad);
    assert!(failed[0].1.contains("400"), "{}", failed[0].1);
    assert!(failed[0].1.contains("has no rules"), "{}", failed[0].1);
    assert_eq!(report.applied(), all.len() - 1);
    assert!(
        fake.group(Api::Mimir, &bad_org, &bad_ns, &bad_group)
            .is_none()
    );
    for (id, org, ns, group) in all.iter().filter(|(id, ..)| *id != bad) {
        assert!(fake.group(api(id.target), org, ns, group).is_some(), "{id}");
    }
}

#[tokio::test]
async fn a_tenant_whose_reads_are_refused_does_not_block_the_others() {
    let (desired, mut scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let all = groups(&desired, &scope);
    // A federated id is refused (400) by the rule API for reads and writes alike.
    let key = scope.tenants.keys().next().unwrap().clone();
    scope.tenants.get_mut(&key).unwrap().id = "a|b".into();

    let report = reconcile(&desired, &scope, &fake.url(), opts()).await;
    for t in &report.targets {
        assert_eq!(t.observe_failures.len(), 1, "{}", t.target);
        assert_eq!(t.observe_failures[0].tenant.as_deref(), Some(key.as_str()));
        assert!(
            t.observe_failures[0].error.contains("400"),
            "{}",
            t.observe_failures[0].error
        );
    }
    let others: Vec<_> = all
        .iter()
        .filter(|(id, ..)| id.tenant.as_deref() != Some(key.as_str()))
        .collect();
    assert!(!others.is_empty());
    assert_eq!(report.applied(), others.len());
    for (id, org, ns, group) in others {
        assert!(fake.group(api(id.target), org, ns, group).is_some(), "{id}");
    }
}

#[tokio::test]
async fn group_names_with_slashes_and_spaces_round_trip() {
    let (mut desired, scope) = repo_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let (id, org, ns, _) = groups(&desired, &scope)
        .into_iter()
        .find(|(id, ..)| id.target == Target::LokiRuler)
        .unwrap();
    let odd = "5xx / min?%";
    let mut r = desired.resources.remove(&id).unwrap();
    let mut body: Value = serde_json::from_str(&r.body).unwrap();
    body["name"] = odd.into();
    r.body = Arc::from(body.to_string());
    r.id.name = format!("{ns}/{odd}");
    desired.resources.insert(r.id.clone(), r.clone());

    let first = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(first.converged(), "{:#?}", first.targets);
    assert!(fake.group(Api::Loki, &org, &ns, odd).is_some());

    fake.recorder().reset();
    desired.resources.remove(&r.id);
    let pruned = reconcile(&desired, &scope, &fake.url(), opts()).await;
    assert!(pruned.converged(), "{:#?}", pruned.targets);
    assert!(fake.group(Api::Loki, &org, &ns, odd).is_none());
    assert_eq!(
        fake.recorder().requests().last().map(String::as_str),
        Some(format!("DELETE /loki/api/v1/rules/{ns}/5xx%20%2F%20min%3F%25").as_str())
    );
}
