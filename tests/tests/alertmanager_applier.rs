//! The Alertmanager applier against the strict fake of Mimir's Alertmanager
//! configuration API (whose loader is the real `amtool`), through the reconcile
//! engine, with repo-template's rendered configurations and their credentials
//! in Kubernetes Secrets read as the syncer's ServiceAccount.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

mod support;

use mop_fakes::alertmanager::{FakeAlertmanager, UserConfig};
use mop_syncer::apply::alertmanager::{AlertmanagerApplier, MARKER};
use mop_syncer::apply::engine::{self, Options, Outcome, Report};
use mop_syncer::apply::http::RetryPolicy;
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::plan::Action;
use mop_syncer::render::{Desired, Target};
use serde_json::json;

const NS: &str = support::SYNCER_NAMESPACE;

fn template() -> (Desired, Scope) {
    let (mut desired, scope) = support::rendered_template();
    desired
        .resources
        .retain(|id, _| id.target == Target::MimirAlertmanager);
    assert_eq!(desired.resources.len(), 3);
    (desired, scope)
}

fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
    }
}

async fn reconcile(
    desired: &Desired,
    scope: &Scope,
    url: &str,
    kube: &kube::Client,
    opts: Options,
) -> Report {
    let appliers: Vec<Box<dyn Applier>> = vec![Box::new(
        AlertmanagerApplier::new(url, fast_retry(), Some(kube.clone()), NS).unwrap(),
    )];
    engine::reconcile(desired, scope, &appliers, &opts, &|_, _| {}).await
}

fn opts() -> Options {
    support::prune_opts(100.0)
}

async fn setup() -> (
    Desired,
    Scope,
    FakeAlertmanager,
    support::Cluster,
    kube::Client,
) {
    let (desired, scope) = template();
    let mimir = FakeAlertmanager::start().await.unwrap();
    let (cluster, client) =
        support::cluster_for(&desired, mop_kube_fake::RolloutSettings::default()).await;
    support::put_alerting_secrets(&cluster);
    (desired, scope, mimir, cluster, client)
}

fn set_secret(cluster: &support::Cluster, name: &str, key: &str, value: &str) {
    use base64::Engine as _;
    let mut s = cluster.get("v1", "Secret", Some(NS), name).unwrap();
    s["data"][key] = json!(base64::engine::general_purpose::STANDARD.encode(value));
    cluster.put("kubectl", s).unwrap();
}

#[tokio::test]
async fn apply_posts_resolved_configurations_and_reapply_writes_nothing() {
    let (desired, scope, mimir, _cluster, client) = setup().await;
    let report = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    assert!(report.converged(), "{report:#?}");
    assert_eq!(mimir.recorder().writes_to("POST /api/v1/alerts"), 3);

    let checkout = mimir
        .config("checkout")
        .expect("stored under checkout's X-Scope-OrgID");
    let text = &checkout.alertmanager_config;
    assert!(text.starts_with(MARKER), "{text}");
    // The values from the Secrets, never the placeholders.
    for want in [
        "https://hooks.slack.example/services/T0/B0/checkout",
        "checkout-routing-key-0001",
        "platform-routing-key-0001",
    ] {
        assert!(text.contains(want), "{want} missing from {text}");
    }
    assert!(
        !text.contains("<secret>") && !text.contains("secret.invalid"),
        "{text}"
    );
    // Another tenant's credentials stay out.
    assert!(!text.contains("/catalog"), "{text}");
    // The report a user sees holds no credential.
    let shown = serde_json::to_string(&report).unwrap();
    assert!(!shown.contains("routing-key-0001") && !shown.contains("hooks.slack.example"));

    mimir.recorder().reset();
    let again = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    assert!(again.converged(), "{again:#?}");
    assert!(again.targets[0].changes.is_empty(), "{again:#?}");
    assert_eq!(mimir.recorder().writes(), 0);
}

#[tokio::test]
async fn a_rotated_secret_updates_exactly_the_tenants_that_use_it() {
    let (desired, scope, mimir, cluster, client) = setup().await;
    assert!(
        reconcile(&desired, &scope, &mimir.url(), &client, opts())
            .await
            .converged()
    );

    set_secret(
        &cluster,
        "mop-alerting-checkout",
        "slack-webhook-url",
        "https://hooks.slack.example/services/T0/B0/rotated",
    );
    mimir.recorder().reset();
    let report = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    let changed: Vec<(Action, Option<String>)> = report.targets[0]
        .changes
        .iter()
        .map(|c| (c.change.action, c.change.id.tenant.clone()))
        .collect();
    assert_eq!(changed, vec![(Action::Update, Some("checkout".into()))]);
    // The plan shows that the credentials changed, not what they are.
    let details = serde_json::to_string(&report.targets[0].changes[0].change.details).unwrap();
    assert!(details.contains("secrets_sha256"), "{details}");
    assert!(!details.contains("rotated"), "{details}");
    assert!(
        mimir
            .config("checkout")
            .unwrap()
            .alertmanager_config
            .contains("B0/rotated")
    );

    // The platform's Secret is in every tenant's configuration.
    set_secret(
        &cluster,
        "mop-alerting-platform",
        "pagerduty-routing-key",
        "platform-routing-key-0002",
    );
    let report = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    assert_eq!(report.targets[0].applied(), 3, "{report:#?}");
}

#[tokio::test]
async fn a_hand_edit_in_mimir_is_drift_and_is_put_back() {
    let (desired, scope, mimir, _cluster, client) = setup().await;
    assert!(
        reconcile(&desired, &scope, &mimir.url(), &client, opts())
            .await
            .converged()
    );
    mimir.state().with(|s| {
        let c = s.configs.get_mut("catalog").unwrap();
        c.alertmanager_config = c.alertmanager_config.replace("#catalog-alerts", "#random");
    });
    let dry = reconcile(
        &desired,
        &scope,
        &mimir.url(),
        &client,
        Options {
            dry_run: true,
            ..opts()
        },
    )
    .await;
    let c = &dry.targets[0].changes;
    assert_eq!(c.len(), 1, "{c:#?}");
    assert_eq!(c[0].outcome, Outcome::Planned);
    let paths: Vec<&str> = c[0]
        .change
        .details
        .iter()
        .map(|d| d.path.as_str())
        .collect();
    assert_eq!(
        paths,
        ["alertmanager_config.receivers.catalog-slack.slack_configs[0].channel"]
    );
    let healed = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    assert!(healed.converged());
    assert!(
        mimir
            .config("catalog")
            .unwrap()
            .alertmanager_config
            .contains("#catalog-alerts")
    );
}

#[tokio::test]
async fn a_missing_secret_leaves_that_tenant_untouched_and_the_others_go_on() {
    let (desired, scope, mimir, cluster, client) = setup().await;
    let mut s = cluster
        .get("v1", "Secret", Some(NS), "mop-alerting-catalog")
        .unwrap();
    s["data"]
        .as_object_mut()
        .unwrap()
        .remove("slack-webhook-url");
    cluster.put("kubectl", s).unwrap();
    let report = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    let t = &report.targets[0];
    assert_eq!(t.observe_failures.len(), 1, "{t:#?}");
    assert_eq!(t.observe_failures[0].tenant.as_deref(), Some("catalog"));
    assert!(
        t.observe_failures[0]
            .error
            .contains("Secret mop-system/mop-alerting-catalog has no key slack-webhook-url"),
        "{t:#?}"
    );
    assert!(mimir.config("catalog").is_none());
    assert!(mimir.config("checkout").is_some() && mimir.config("platform").is_some());
}

#[tokio::test]
async fn a_failed_read_never_becomes_a_delete() {
    let (desired, scope, mimir, _cluster, client) = setup().await;
    assert!(
        reconcile(&desired, &scope, &mimir.url(), &client, opts())
            .await
            .converged()
    );
    // checkout's alerting.yaml is removed; Mimir cannot read checkout's config.
    let mut without = desired.clone();
    without
        .resources
        .retain(|id, _| id.tenant.as_deref() != Some("checkout"));
    mimir
        .state()
        .with(|s| s.failing_reads.push("checkout".into()));
    mimir.recorder().reset();
    let report = reconcile(&without, &scope, &mimir.url(), &client, opts()).await;
    assert_eq!(report.targets[0].observe_failures.len(), 1, "{report:#?}");
    assert_eq!(mimir.recorder().writes(), 0);
    assert!(mimir.config("checkout").is_some());
    // Readable again: now the prune deletes it.
    mimir.state().with(|s| s.failing_reads.clear());
    let report = reconcile(&without, &scope, &mimir.url(), &client, opts()).await;
    let changed: Vec<(Action, Option<String>)> = report.targets[0]
        .changes
        .iter()
        .map(|c| (c.change.action, c.change.id.tenant.clone()))
        .collect();
    assert_eq!(changed, vec![(Action::Delete, Some("checkout".into()))]);
    assert!(mimir.config("checkout").is_none());
    assert_eq!(mimir.recorder().writes_to("DELETE /api/v1/alerts"), 1);
}

#[tokio::test]
async fn a_configuration_mop_did_not_write_is_left_alone() {
    let (desired, scope, mimir, _cluster, client) = setup().await;
    let theirs = UserConfig {
        template_files: Default::default(),
        alertmanager_config: "route: {receiver: x}\nreceivers: [{name: x}]\n".into(),
    };
    mimir
        .state()
        .with(|s| s.configs.insert("catalog".into(), theirs.clone()));
    let mut without = desired.clone();
    without
        .resources
        .retain(|id, _| id.tenant.as_deref() != Some("catalog"));
    let report = reconcile(&without, &scope, &mimir.url(), &client, opts()).await;
    assert!(report.converged(), "{report:#?}");
    assert_eq!(mimir.config("catalog"), Some(theirs));
    // With an alerting.yaml for that tenant, MOP's configuration replaces it.
    let report = reconcile(&desired, &scope, &mimir.url(), &client, opts()).await;
    let catalog = report.targets[0]
        .changes
        .iter()
        .find(|c| c.change.id.tenant.as_deref() == Some("catalog"))
        .unwrap();
    assert_eq!(catalog.change.action, Action::Update);
    assert!(
        mimir
            .config("catalog")
            .unwrap()
            .alertmanager_config
            .starts_with(MARKER)
    );
}

/// The fake refuses what Mimir refuses (`pkg/alertmanager/api.go`).
#[tokio::test]
async fn the_fake_is_as_strict_as_mimir() {
    let mimir = FakeAlertmanager::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/alerts", mimir.url());
    let post = |tenant: Option<&str>, body: String| {
        let mut r = http.post(&url).body(body);
        if let Some(t) = tenant {
            r = r.header("X-Scope-OrgID", t);
        }
        r.send()
    };
    let answer = |r: reqwest::Response| async move {
        let s = r.status().as_u16();
        (s, r.text().await.unwrap())
    };
    let yaml = |config: &str| {
        serde_saphyr::to_string(&UserConfig {
            template_files: Default::default(),
            alertmanager_config: config.into(),
        })
        .unwrap()
    };
    let (s, b) = answer(
        post(None, yaml("route: {receiver: a}\nreceivers: [{name: a}]\n"))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!((s, b.as_str()), (401, "no org id\n"));
    let (s, b) = answer(post(Some("t"), yaml("")).await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(
        b.starts_with("error validating Alertmanager config: configuration provided is empty"),
        "{b}"
    );
    let (s, b) = answer(
        post(
            Some("t"),
            yaml("route: {receiver: a, routes: [{receiver: b}]}\nreceivers: [{name: a}]\n"),
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(s, 400);
    assert!(b.contains("undefined receiver \"b\""), "{b}");
    let (s, b) = answer(post(Some("t"), yaml("route: {receiver: a}\nreceivers: [{name: a, webhook_configs: [{url: 'http://x.example/', http_config: {basic_auth: {username: u, password_file: /etc/passwd}}}]}]\n")).await.unwrap()).await;
    assert_eq!(
        (s, b.as_str()),
        (
            400,
            "error validating Alertmanager config: setting password_file, bearer_token_file and credentials_file is not allowed\n"
        )
    );
    let bad_template = serde_saphyr::to_string(&UserConfig {
        template_files: [("../x.tmpl".to_string(), String::new())].into(),
        alertmanager_config: "route: {receiver: a}\nreceivers: [{name: a}]\n".into(),
    })
    .unwrap();
    let (s, b) = answer(post(Some("t"), bad_template).await.unwrap()).await;
    assert_eq!(s, 400);
    assert!(
        b.contains("the template name cannot contain any path"),
        "{b}"
    );
    let (s, b) = answer(
        http.get(&url)
            .header("X-Scope-OrgID", "t")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b.as_str()),
        (404, "alertmanager storage object not found\n")
    );
    assert_eq!(mimir.recorder().writes_to("POST /api/v1/alerts"), 5);
    let good = "route: {receiver: a}\nreceivers: [{name: a}]\n";
    let (s, _) = answer(post(Some("t"), yaml(good)).await.unwrap()).await;
    assert_eq!(s, 201);
    let (s, b) = answer(
        http.get(&url)
            .header("X-Scope-OrgID", "t")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let back: UserConfig = serde_saphyr::from_str(&b).unwrap();
    assert_eq!(back.alertmanager_config, good);
    let (s, _) = answer(
        http.delete(&url)
            .header("X-Scope-OrgID", "t")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = answer(
        http.delete(&url)
            .header("X-Scope-OrgID", "t")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(s, 200, "deleting nothing is fine too");
}

/// A Mimir without the Alertmanager (its router's 404) is no failure for
/// tenants without alerting.yaml, and a failure for one that has it.
#[tokio::test]
async fn a_mimir_without_alertmanager_is_quiet_unless_a_tenant_needs_it() {
    let (desired, scope, _mimir, _cluster, client) = setup().await;
    let rulers = mop_fakes::ruler::FakeRuler::start(mop_fakes::ruler::RulerApis::LOKI)
        .await
        .unwrap();
    let none = Desired::default();
    let report = reconcile(&none, &scope, &rulers.url(), &client, opts()).await;
    assert!(report.converged(), "{report:#?}");
    let report = reconcile(&desired, &scope, &rulers.url(), &client, opts()).await;
    let failed: Vec<_> = report.targets[0]
        .observe_failures
        .iter()
        .map(|f| f.tenant.clone().unwrap())
        .collect();
    assert_eq!(failed, ["catalog", "checkout", "platform"], "{report:#?}");
    assert_eq!(rulers.recorder().writes(), 0);
}
