//! Every verb of `deploy/base/rbac.yaml` is needed: for each rule × verb, the
//! syncer's RBAC without that one verb makes a named scenario of real product
//! code (the Kubernetes applier and its rollouts, the inventory, the webhook
//! hand-off, leader election, `secret:` references, Events) fail with 403
//! against the Kubernetes fake, which authorizes like the real RBAC authorizer.
//! A verb no scenario needs fails this test: remove it from rbac.yaml, or add
//! the scenario that needs it. With the RBAC unchanged, every scenario runs
//! without a single 403 (the baseline).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use mop_kube_fake::{FakeKube, Options, RolloutSettings};
use mop_syncer::apply::engine::{self, Options as EngineOptions};
use mop_syncer::apply::inventory::{self, Inventory};
use mop_syncer::apply::kubernetes::{EventType, KubeApplier, Regarding, emit_event};
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::model::common::{SecretKeyRef, SecretRef};
use mop_syncer::render::{Desired, Kind, Target};
use mop_syncer::serve::handoff;
use mop_syncer::serve::leader::{LeaderConfig, LeaderElector};
use mop_syncer::serve::server::Trigger;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

const NS: &str = support::SYNCER_NAMESPACE;

/// A sequence of product calls the syncer makes in one situation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scenario {
    /// `mop sync` of repo-template's Kubernetes objects into an empty cluster:
    /// observe (lists), server-side applies that create, the agent's RBAC,
    /// rollouts of the gateway and the agent (get, then a watch by name).
    Install,
    /// Everything but the tenant namespaces removed from the repository, with
    /// prune on: deletes, and namespaces only unlabelled.
    Prune,
    /// The tenant inventory written (created, then updated) and read back.
    Inventory,
    /// A standby records two sync requests; the leader's watch sees them.
    Handoff,
    /// A replica acquires the Lease, renews it and releases it.
    Leader,
    /// `admin_password: {secret: ...}` read through the API.
    Secret,
    /// The Alertmanager applier resolving repo-template's alerting.yaml
    /// `secret:` references (one `get` per Secret) and applying the result.
    AlertSecrets,
    /// Drift and rollout Events about objects in MOP's namespace, a backend's
    /// namespace and cluster-scoped objects.
    Events,
}

use Scenario::*;

/// Which scenario needs each verb: (role, the rule's resources, its
/// resourceNames, verb) → scenario.
const NEEDS: &[(&str, &str, &str, &str, Scenario)] = &[
    (
        "ClusterRole/mop-syncer",
        "namespaces,serviceaccounts,configmaps,services",
        "",
        "list",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "deployments,daemonsets",
        "",
        "list",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "clusterroles,clusterrolebindings,roles,rolebindings",
        "",
        "list",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "namespaces",
        "",
        "create",
        Install,
    ),
    ("ClusterRole/mop-syncer", "namespaces", "", "patch", Install),
    (
        "ClusterRole/mop-syncer",
        "clusterroles,clusterrolebindings",
        "mop-agent,mop-gateway",
        "create",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "clusterroles,clusterrolebindings",
        "mop-agent,mop-gateway",
        "patch",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "clusterroles,clusterrolebindings",
        "mop-agent,mop-gateway",
        "delete",
        Prune,
    ),
    // Escalation prevention: writing the agent's ClusterRole needs them.
    ("ClusterRole/mop-syncer", "pods", "", "list", Install),
    ("ClusterRole/mop-syncer", "pods", "", "watch", Install),
    (
        "Role/mop-syncer",
        "serviceaccounts",
        "mop-gateway,mop-agent",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "serviceaccounts",
        "mop-gateway,mop-agent",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "serviceaccounts",
        "mop-gateway,mop-agent",
        "delete",
        Prune,
    ),
    (
        "Role/mop-syncer",
        "services",
        "mop-gateway,mop-gateway-peers",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "services",
        "mop-gateway,mop-gateway-peers",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "services",
        "mop-gateway,mop-gateway-peers",
        "delete",
        Prune,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-gateway-routing,mop-agent-config",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-gateway-routing,mop-agent-config",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-gateway-routing,mop-agent-config",
        "delete",
        Prune,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-inventory",
        "get",
        Inventory,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-inventory",
        "create",
        Inventory,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-inventory",
        "patch",
        Inventory,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-sync-request",
        "watch",
        Handoff,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-sync-request",
        "create",
        Handoff,
    ),
    (
        "Role/mop-syncer",
        "configmaps",
        "mop-sync-request",
        "patch",
        Handoff,
    ),
    (
        "Role/mop-syncer",
        "deployments",
        "mop-gateway",
        "get",
        Install,
    ),
    (
        "Role/mop-syncer",
        "deployments",
        "mop-gateway",
        "watch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "deployments",
        "mop-gateway",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "deployments",
        "mop-gateway",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "deployments",
        "mop-gateway",
        "delete",
        Prune,
    ),
    ("Role/mop-syncer", "daemonsets", "mop-agent", "get", Install),
    (
        "Role/mop-syncer",
        "daemonsets",
        "mop-agent",
        "watch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "daemonsets",
        "mop-agent",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "daemonsets",
        "mop-agent",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "daemonsets",
        "mop-agent",
        "delete",
        Prune,
    ),
    ("Role/mop-syncer", "leases", "mop-syncer", "get", Leader),
    ("Role/mop-syncer", "leases", "mop-syncer", "update", Leader),
    ("Role/mop-syncer", "leases", "", "create", Leader),
    (
        "Role/mop-syncer",
        "secrets",
        "mop-grafana-admin",
        "get",
        Secret,
    ),
    (
        "Role/mop-syncer",
        "secrets",
        "mop-alerting-platform,mop-alerting-checkout,mop-alerting-catalog",
        "get",
        AlertSecrets,
    ),
    ("Role/mop-syncer", "events", "", "create", Events),
    (
        "Role/mop-syncer-overrides",
        "configmaps",
        "mimir-runtime-overrides,loki-runtime-overrides,tempo-runtime-overrides,pyroscope-runtime-overrides",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer-overrides",
        "configmaps",
        "mimir-runtime-overrides,loki-runtime-overrides,tempo-runtime-overrides,pyroscope-runtime-overrides",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer-overrides",
        "configmaps",
        "mimir-runtime-overrides,loki-runtime-overrides,tempo-runtime-overrides,pyroscope-runtime-overrides",
        "delete",
        Prune,
    ),
    ("Role/mop-syncer-overrides", "events", "", "create", Events),
    // Merged from issue13-ring (gateway ring) and issue14-tenancy (sender identity);
    // endpointslices and tokenreviews: escalation prevention for the roles rendered.
    (
        "ClusterRole/mop-syncer",
        "networkpolicies",
        "",
        "list",
        Install,
    ),
    (
        "ClusterRole/mop-syncer",
        "tokenreviews",
        "",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "roles,rolebindings",
        "mop-gateway-ring",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "roles,rolebindings",
        "mop-gateway-ring",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "roles,rolebindings",
        "mop-gateway-ring",
        "delete",
        Prune,
    ),
    ("Role/mop-syncer", "endpointslices", "", "get", Install),
    ("Role/mop-syncer", "endpointslices", "", "list", Install),
    ("Role/mop-syncer", "endpointslices", "", "watch", Install),
    (
        "Role/mop-syncer",
        "networkpolicies",
        "mop-gateway",
        "create",
        Install,
    ),
    (
        "Role/mop-syncer",
        "networkpolicies",
        "mop-gateway",
        "patch",
        Install,
    ),
    (
        "Role/mop-syncer",
        "networkpolicies",
        "mop-gateway",
        "delete",
        Prune,
    ),
];

fn join(v: &Value) -> String {
    v.as_array()
        .map(|a| {
            a.iter()
                .map(|s| s.as_str().unwrap())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// One verb removed from one rule of deploy/base's RBAC.
#[derive(Debug, Clone)]
struct Mutation {
    role: String,
    resources: String,
    names: String,
    verb: String,
    objects: Vec<Value>,
}

/// Every rule × verb of the Roles and ClusterRoles in deploy/base.
fn mutations(base: &[Value]) -> Vec<Mutation> {
    let mut out = Vec::new();
    for (i, o) in base.iter().enumerate() {
        if !matches!(o["kind"].as_str(), Some("Role" | "ClusterRole")) {
            continue;
        }
        let role = format!(
            "{}/{}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["name"].as_str().unwrap()
        );
        for (r, rule) in o["rules"].as_array().unwrap().iter().enumerate() {
            for verb in rule["verbs"].as_array().unwrap() {
                let verb = verb.as_str().unwrap().to_string();
                let mut objects = base.to_vec();
                let rules = objects[i]["rules"].as_array_mut().unwrap();
                rules[r]["verbs"]
                    .as_array_mut()
                    .unwrap()
                    .retain(|v| v.as_str() != Some(verb.as_str()));
                if rules[r]["verbs"].as_array().unwrap().is_empty() {
                    rules.remove(r);
                }
                out.push(Mutation {
                    role: role.clone(),
                    resources: join(&rule["resources"]),
                    names: join(&rule["resourceNames"]),
                    verb,
                    objects,
                });
            }
        }
    }
    out
}

fn kubernetes_template() -> (Desired, Scope) {
    let (mut desired, scope) = support::rendered_template();
    desired
        .resources
        .retain(|id, _| id.target == Target::Kubernetes);
    (desired, scope)
}

fn prune_all() -> EngineOptions {
    EngineOptions {
        prune: true,
        max_prune_percent: 100.0,
        allow_mass_prune: true,
        dry_run: false,
    }
}

async fn reconcile(client: &kube::Client, desired: &Desired, scope: &Scope) -> engine::Report {
    let appliers: Vec<Box<dyn Applier>> = vec![Box::new(KubeApplier::new(client.clone()))];
    engine::reconcile(desired, scope, &appliers, &prune_all(), &|_, _| {}).await
}

/// A fake with the platform's namespaces and `identity` installed; the
/// syncer's client.
async fn cluster(identity: &[Value]) -> (FakeKube, kube::Client) {
    // Rollouts slow enough that the syncer always finds them in progress and
    // must watch: with 1 ms steps a loaded machine saw them finished at the
    // first read, and removing `watch` broke nothing.
    let fake = FakeKube::start_with(Options {
        rollout: RolloutSettings {
            step_delay: Duration::from_millis(150),
            ..RolloutSettings::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    for ns in [NS, "monitoring"] {
        fake.put(
            "kubectl",
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
    }
    let token = support::install_identity(&fake, identity);
    let client = support::client_with_token(&fake, &token);
    (fake, client)
}

/// Runs a scenario's setup (as the admin) and then its calls (as the syncer),
/// returning its own verdict on success.
async fn run(s: Scenario, fake: &FakeKube, client: kube::Client) -> Result<(), String> {
    match s {
        Install => {
            let (desired, scope) = kubernetes_template();
            let report = reconcile(&client, &desired, &scope).await;
            (report.failed() == 0 && report.applied() > 0)
                .then_some(())
                .ok_or_else(|| format!("{report:#?}"))
        }
        Prune => {
            let (desired, scope) = kubernetes_template();
            let admin = support::admin_client(fake);
            let setup = reconcile(&admin, &desired, &scope).await;
            assert_eq!(setup.failed(), 0, "{setup:#?}");
            let mut kept = desired.clone();
            kept.resources.retain(|id, _| id.kind == Kind::Namespace);
            let report = reconcile(&client, &kept, &scope).await;
            let gone = fake
                .get("apps/v1", "Deployment", Some(NS), "mop-gateway")
                .is_none();
            (report.failed() == 0 && gone)
                .then_some(())
                .ok_or_else(|| format!("{report:#?}"))
        }
        Inventory => {
            let first = Inventory {
                tenants: Vec::new(),
                revision: Some("a".repeat(40)),
            };
            inventory::save(&client, NS, &Inventory::default(), &first).await?;
            let second = Inventory {
                revision: Some("b".repeat(40)),
                ..first.clone()
            };
            inventory::save(&client, NS, &first, &second).await?;
            let read = inventory::load(&client, NS).await?;
            (read == second)
                .then_some(())
                .ok_or_else(|| format!("read back {read:?}"))
        }
        Handoff => {
            let (_leader_tx, leader_rx) = watch::channel(true);
            let (tx, mut rx) = mpsc::channel(4);
            let watcher = tokio::spawn(handoff::watch_requests(
                client.clone(),
                NS.into(),
                leader_rx,
                tx,
            ));
            // The watch is established (its initial list done) before the requests.
            tokio::time::sleep(Duration::from_millis(300)).await;
            handoff::request(&client, NS, &Trigger::FileChange).await?;
            handoff::request(&client, NS, &Trigger::Requested("again".into())).await?;
            let got = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
            watcher.abort();
            matches!(got, Ok(Some(Trigger::Requested(_))))
                .then_some(())
                .ok_or_else(|| format!("no trigger from the watch: {got:?}"))
        }
        Leader => {
            let mut config = LeaderConfig::new("mop-syncer", NS, "replica-a");
            config.lease_duration = Duration::from_secs(2);
            config.renew_deadline = Duration::from_millis(1200);
            config.retry_period = Duration::from_millis(100);
            let elector = LeaderElector::new(client.clone(), config);
            let mut leads = elector.subscribe();
            let (stop, stopped) = oneshot::channel::<()>();
            let task = tokio::spawn(elector.run(async move {
                let _ = stopped.await;
            }));
            let led = tokio::time::timeout(Duration::from_secs(5), leads.wait_for(|l| *l))
                .await
                .is_ok();
            // Renewals are updates of the Lease.
            let puts = || fake.requests().iter().filter(|r| r.method == "PUT").count();
            let before = puts();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            while puts() == before && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let renewed = puts() > before;
            let _ = stop.send(());
            let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
            (led && renewed)
                .then_some(())
                .ok_or_else(|| format!("led: {led}, renewed: {renewed}"))
        }
        Secret => {
            fake.put(
                "kubectl",
                json!({"apiVersion": "v1", "kind": "Secret",
                       "metadata": {"name": "mop-grafana-admin", "namespace": NS},
                       "data": {"password": "czNjcmV0"}}),
            )
            .unwrap();
            let r = SecretRef::Secret(SecretKeyRef {
                name: "mop-grafana-admin".into(),
                key: "password".into(),
            });
            let got = mop_syncer::sync::read_secret(&r, NS, Some(&client)).await?;
            (got == "s3cret").then_some(()).ok_or(got)
        }
        AlertSecrets => {
            support::put_alerting_secrets(fake);
            let (mut desired, scope) = support::rendered_template();
            desired
                .resources
                .retain(|id, _| id.target == Target::MimirAlertmanager);
            let mimir = mop_fakes::alertmanager::FakeAlertmanager::start()
                .await
                .map_err(|e| e.to_string())?;
            let applier = mop_syncer::apply::alertmanager::AlertmanagerApplier::new(
                &mimir.url(),
                mop_syncer::apply::http::RetryPolicy::default(),
                Some(client),
                NS,
            )
            .map_err(|e| e.to_string())?;
            let appliers: Vec<Box<dyn Applier>> = vec![Box::new(applier)];
            let report = engine::reconcile(
                &desired,
                &scope,
                &appliers,
                &EngineOptions {
                    prune: false,
                    max_prune_percent: 100.0,
                    allow_mass_prune: false,
                    dry_run: false,
                },
                &|_, _| {},
            )
            .await;
            let stored = ["catalog", "checkout", "platform"]
                .iter()
                .all(|t| mimir.config(t).is_some());
            (report.converged() && stored)
                .then_some(())
                .ok_or_else(|| format!("{report:#?}"))
        }
        Events => {
            let about = [
                ("apps/v1", "Deployment", Some(NS), "mop-gateway"),
                (
                    "v1",
                    "ConfigMap",
                    Some("monitoring"),
                    "mimir-runtime-overrides",
                ),
                ("v1", "Namespace", None, "checkout"),
            ];
            for (api_version, kind, namespace, name) in about {
                let regarding = Regarding {
                    api_version: api_version.into(),
                    kind: kind.into(),
                    name: name.into(),
                    namespace: namespace.map(str::to_string),
                };
                emit_event(
                    &client,
                    NS,
                    &regarding,
                    "Drifted",
                    "changed by hand",
                    EventType::Warning,
                )
                .await
                .map_err(|e| e.to_string())?;
            }
            Ok(())
        }
    }
}

/// What a scenario run under some RBAC came to.
#[derive(Debug)]
struct Outcome {
    /// The requests answered 403, as `METHOD path?query`.
    forbidden: Vec<String>,
    /// The scenario's own verdict, `None` when it was stopped at the first 403.
    result: Option<Result<(), String>>,
}

/// Runs `s` against a fresh cluster with `identity`, stopping at the first 403
/// (a refused watch or Lease renewal would otherwise be retried until a timeout).
async fn attempt(s: Scenario, identity: Vec<Value>) -> Outcome {
    let (fake, client) = cluster(&identity).await;
    let fake = Arc::new(fake);
    let forbidden = |f: &FakeKube| -> Vec<String> {
        f.requests()
            .iter()
            .filter(|r| r.status == 403)
            .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
            .collect()
    };
    let f2 = fake.clone();
    let task = tokio::spawn(async move { run(s, &f2, client).await });
    let result = race(task, || !forbidden(&fake).is_empty()).await;
    if matches!(result, Some(Ok(()))) {
        support::api_calls::assert_recorded_calls_listed(&fake);
    }
    Outcome {
        forbidden: forbidden(&fake),
        result,
    }
}

async fn race<T: Send + 'static>(
    task: tokio::task::JoinHandle<T>,
    stop: impl Fn() -> bool,
) -> Option<T> {
    let limit = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut task = task;
    loop {
        tokio::select! {
            r = &mut task => return Some(r.unwrap()),
            _ = tokio::time::sleep(Duration::from_millis(10)) => {
                if stop() || tokio::time::Instant::now() > limit {
                    task.abort();
                    return None;
                }
            }
        }
    }
}

async fn limited<F: Future>(sem: &Semaphore, f: F) -> F::Output {
    let _permit = sem.acquire().await.unwrap();
    f.await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removing_any_verb_of_the_syncer_rbac_breaks_a_named_scenario() {
    let base = support::deploy_base_identity();
    let muts = mutations(&base);
    assert!(
        muts.len() > 20,
        "deploy/base's RBAC has {} verbs?",
        muts.len()
    );

    // Every verb has a scenario, and every table row a verb.
    let mut planned = Vec::new();
    let mut unneeded = Vec::new();
    for m in &muts {
        match NEEDS.iter().find(|n| {
            (n.0, n.1, n.2, n.3)
                == (
                    m.role.as_str(),
                    m.resources.as_str(),
                    m.names.as_str(),
                    m.verb.as_str(),
                )
        }) {
            Some(n) => planned.push((m.clone(), n.4)),
            None => unneeded.push(format!(
                "{} [{}] [{}] {}",
                m.role, m.resources, m.names, m.verb
            )),
        }
    }
    assert!(
        unneeded.is_empty(),
        "no scenario needs these verbs of deploy/base/rbac.yaml: remove them there, or add the scenario that needs them to NEEDS: {unneeded:#?}"
    );
    let stale: Vec<_> = NEEDS
        .iter()
        .filter(|n| {
            !muts.iter().any(|m| {
                (n.0, n.1, n.2, n.3)
                    == (
                        m.role.as_str(),
                        m.resources.as_str(),
                        m.names.as_str(),
                        m.verb.as_str(),
                    )
            })
        })
        .collect();
    assert!(
        stale.is_empty(),
        "NEEDS rows for verbs rbac.yaml no longer has: {stale:#?}"
    );

    let sem = Arc::new(Semaphore::new(6));
    // Baseline: the unchanged RBAC lets every scenario through.
    let mut baseline = tokio::task::JoinSet::new();
    for s in [
        Install,
        Prune,
        Inventory,
        Handoff,
        Leader,
        Secret,
        AlertSecrets,
        Events,
    ] {
        let (sem, base) = (sem.clone(), base.clone());
        baseline.spawn(async move { (s, limited(&sem, attempt(s, base)).await) });
    }
    while let Some(r) = baseline.join_next().await {
        let (s, out) = r.unwrap();
        assert!(
            out.forbidden.is_empty(),
            "{s:?} with deploy/base's RBAC got 403: {:#?}",
            out.forbidden
        );
        assert!(
            matches!(out.result, Some(Ok(()))),
            "{s:?} with deploy/base's RBAC did not succeed: {:?}",
            out.result
        );
    }

    let mut runs = tokio::task::JoinSet::new();
    for (m, s) in planned {
        let sem = sem.clone();
        runs.spawn(async move {
            let out = limited(&sem, attempt(s, m.objects.clone())).await;
            (m, s, out)
        });
    }
    let mut survived = Vec::new();
    while let Some(r) = runs.join_next().await {
        let (m, s, out) = r.unwrap();
        if out.forbidden.is_empty() {
            survived.push(format!(
                "{} [{}] [{}] without {}: {s:?} ended {:?} with no 403",
                m.role, m.resources, m.names, m.verb, out.result
            ));
        }
    }
    assert!(
        survived.is_empty(),
        "removing these verbs broke no scenario (the verb is not needed, or its scenario does not exercise it): {survived:#?}"
    );
}

/// A sync-request watch the API server refuses (403: `watch` removed from the
/// syncer's Role) backs off instead of retrying at once. Without the backoff the
/// watch re-listed and re-watched in a tight loop: thousands of requests a second
/// at the API server for as long as the RBAC stayed wrong.
#[tokio::test]
async fn a_refused_sync_request_watch_backs_off() {
    let base = support::deploy_base_identity();
    let m = mutations(&base)
        .into_iter()
        .find(|m| m.names == "mop-sync-request" && m.verb == "watch")
        .expect("deploy/base grants watch on the mop-sync-request ConfigMap");
    let (fake, client) = cluster(&m.objects).await;
    let (_leader_tx, leader_rx) = watch::channel(true);
    let (tx, _rx) = mpsc::channel(4);
    let before = fake.requests().len();
    let task = tokio::spawn(handoff::watch_requests(client, NS.into(), leader_rx, tx));
    tokio::time::sleep(Duration::from_secs(3)).await;
    task.abort();
    let requests = fake.requests();
    let refused = requests[before..]
        .iter()
        .filter(|r| r.status == 403)
        .count();
    let made = requests.len() - before;
    assert!(refused >= 1, "the watch was not refused: {made} requests");
    // kube's default backoff starts at 0.8 s and grows: about 3 attempts of
    // list + watch in 3 s; a tight loop makes hundreds.
    assert!(
        made <= 12,
        "{made} requests ({refused} refused) in 3 s: the refused watch is retried without backoff"
    );
}
