//! The Kubernetes applier against the strict API-server fake, through the
//! reconcile engine, with the repo-template's rendered Kubernetes objects.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

mod support;

use mop_kube_fake::{FakeKube, RolloutSettings};
use mop_syncer::apply::engine::{self, Options, Report};
use mop_syncer::apply::kubernetes::{EventType, KubeApplier, Regarding, emit_event};
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::plan::Action;
use mop_syncer::render::{self, Desired, Kind, ResourceId, Target};
use serde_json::{Value, json};

const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
const TENANT: &str = "mop.dev/tenant";

fn repo_template() -> (Desired, Scope) {
    let (mut desired, scope) = support::rendered_template();
    desired
        .resources
        .retain(|id, _| id.target == Target::Kubernetes);
    (desired, scope)
}

fn body(desired: &Desired, id: &ResourceId) -> Value {
    serde_json::from_str(&desired.resources[id].body).unwrap()
}

/// The fake cluster; rollouts run (the applier waits for the workloads it
/// changes to become healthy), fast: the tests here are about configuration.
async fn cluster(desired: &Desired) -> (support::Cluster, kube::Client) {
    support::cluster_for(desired, RolloutSettings::default()).await
}

fn opts() -> Options {
    support::prune_opts(50.0)
}

async fn reconcile(desired: &Desired, scope: &Scope, client: &kube::Client, o: Options) -> Report {
    let appliers: Vec<Box<dyn Applier>> = vec![Box::new(KubeApplier::new(client.clone()))];
    engine::reconcile(desired, scope, &appliers, &o, &|_, _| {}).await
}

/// `(apiVersion, kind, namespace, name)` of a rendered object.
fn coords(b: &Value) -> (String, String, Option<String>, String) {
    (
        b["apiVersion"].as_str().unwrap().to_string(),
        b["kind"].as_str().unwrap().to_string(),
        b["metadata"]["namespace"].as_str().map(str::to_string),
        b["metadata"]["name"].as_str().unwrap().to_string(),
    )
}

fn get(fake: &FakeKube, b: &Value) -> Option<Value> {
    let (av, kind, ns, name) = coords(b);
    fake.get(&av, &kind, ns.as_deref(), &name)
}

fn find(desired: &Desired, kind: Kind, name: &str) -> ResourceId {
    desired
        .resources
        .keys()
        .find(|id| id.kind == kind && id.name.ends_with(name))
        .unwrap_or_else(|| panic!("no rendered {kind} {name}"))
        .clone()
}

/// Managers recorded in `managedFields`, as (manager, operation).
fn managers(obj: &Value) -> Vec<(String, String)> {
    obj["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_string(),
                e["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn apply_creates_the_rendered_objects_as_mop_and_reapply_changes_nothing() {
    let (desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    let kinds: BTreeSet<Kind> = desired.resources.keys().map(|id| id.kind).collect();
    assert!(kinds.len() >= 8, "every kind is rendered: {kinds:?}");

    fake.clear_requests();
    let before = fake.mutations();
    let report = reconcile(&desired, &scope, &client, opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    assert_eq!(report.applied(), desired.resources.len());
    assert_eq!(fake.mutations() - before, desired.resources.len() as u64);

    let writes = fake.write_requests();
    assert_eq!(writes.len(), desired.resources.len());
    for w in &writes {
        assert!(
            w.is_apply(),
            "{} {} is not a server-side apply",
            w.method,
            w.path
        );
        assert_eq!(w.field_manager.as_deref(), Some("mop"), "{}", w.path);
        assert!(w.force, "{}", w.path);
        // 201 for new objects; 200 for namespaces the cluster already had.
        assert!(matches!(w.status, 200 | 201), "{} {}", w.path, w.status);
    }
    for id in desired.resources.keys() {
        let want = body(&desired, id);
        let live = get(&fake, &want).unwrap_or_else(|| panic!("{id} was not created"));
        assert!(
            managers(&live).contains(&("mop".into(), "Apply".into())),
            "{id}: {:?}",
            managers(&live)
        );
        assert_eq!(live["metadata"]["labels"][MANAGED_BY], "mop", "{id}");
        assert_eq!(
            live["metadata"]["labels"][TENANT].as_str(),
            id.tenant.as_deref(),
            "{id}"
        );
    }

    // The server filled in defaults, uids, managedFields and status: none of it is
    // a difference.
    let stored = fake.mutations();
    fake.clear_requests();
    let again = reconcile(&desired, &scope, &client, opts()).await;
    assert!(again.converged());
    assert_eq!(again.differences().count(), 0, "{:#?}", again.plan());
    assert_eq!(fake.mutations(), stored);
    assert!(fake.write_requests().is_empty());
}

#[tokio::test]
async fn a_hand_edit_of_a_mop_field_is_drift_and_is_taken_back() {
    let (desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    reconcile(&desired, &scope, &client, opts()).await;

    let cm = find(&desired, Kind::ConfigMap, render::GATEWAY_CONFIGMAP);
    let deploy = find(&desired, Kind::Deployment, "mop-gateway");
    let (cm_body, deploy_body) = (body(&desired, &cm), body(&desired, &deploy));
    let (_, _, cm_ns, cm_name) = coords(&cm_body);
    let (_, _, d_ns, d_name) = coords(&deploy_body);
    fake.edit(
        "kubectl-edit",
        "v1",
        "ConfigMap",
        cm_ns.as_deref(),
        &cm_name,
        |o| {
            o["data"]["gateway.json"] = "{}".into();
        },
    )
    .unwrap();
    fake.edit(
        "kubectl-edit",
        "apps/v1",
        "Deployment",
        d_ns.as_deref(),
        &d_name,
        |o| {
            o["spec"]["template"]["spec"]["containers"][0]["image"] = "evil/gateway:latest".into();
            // Not a field MOP sets: someone else's business, not drift.
            o["metadata"]["annotations"] = json!({"team.example/owner": "platform"});
        },
    )
    .unwrap();

    let dry = reconcile(
        &desired,
        &scope,
        &client,
        Options {
            dry_run: true,
            ..opts()
        },
    )
    .await;
    let drifted: BTreeSet<(ResourceId, Action)> = dry
        .differences()
        .map(|(_, c)| (c.change.id.clone(), c.change.action))
        .collect();
    assert_eq!(
        drifted,
        BTreeSet::from([
            (cm.clone(), Action::Update),
            (deploy.clone(), Action::Update)
        ])
    );

    fake.clear_requests();
    let healed = reconcile(&desired, &scope, &client, opts()).await;
    assert!(healed.converged(), "{:#?}", healed.targets);
    assert_eq!(healed.applied(), 2);
    assert_eq!(fake.write_requests().len(), 2);
    let live_cm = get(&fake, &cm_body).unwrap();
    assert_eq!(live_cm["data"], cm_body["data"]);
    let live_d = get(&fake, &deploy_body).unwrap();
    assert_eq!(
        live_d["spec"]["template"]["spec"]["containers"][0]["image"],
        deploy_body["spec"]["template"]["spec"]["containers"][0]["image"]
    );
    assert_eq!(
        live_d["metadata"]["annotations"]["team.example/owner"], "platform",
        "a field MOP does not set is left alone"
    );

    let settled = reconcile(&desired, &scope, &client, opts()).await;
    assert_eq!(settled.differences().count(), 0, "{:#?}", settled.plan());
}

#[tokio::test]
async fn a_configmap_removed_from_the_repository_is_pruned() {
    let (mut desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    reconcile(&desired, &scope, &client, opts()).await;
    let cm = find(&desired, Kind::ConfigMap, "mop-agent-config");
    let cm_body = body(&desired, &cm);
    desired.resources.remove(&cm);

    fake.clear_requests();
    let report = reconcile(&desired, &scope, &client, opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    let changes: Vec<_> = report
        .differences()
        .map(|(_, c)| (c.change.id.clone(), c.change.action))
        .collect();
    assert_eq!(changes, vec![(cm, Action::Delete)]);
    assert!(get(&fake, &cm_body).is_none());
    let writes = fake.write_requests();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, "DELETE");
}

#[tokio::test]
async fn a_removed_tenant_namespace_is_kept_and_only_loses_mops_labels() {
    let (mut desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    reconcile(&desired, &scope, &client, opts()).await;
    // The first rendered namespace.
    let ns = find(&desired, Kind::Namespace, "");
    // Someone else labelled it too; their label stays.
    fake.edit("kubectl", "v1", "Namespace", None, &ns.name, |o| {
        o["metadata"]["labels"]["team"] = "payments".into();
    })
    .unwrap();
    desired.resources.remove(&ns);

    fake.clear_requests();
    let report = reconcile(&desired, &scope, &client, opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    let changes: Vec<_> = report
        .differences()
        .map(|(_, c)| (c.change.id.clone(), c.change.action))
        .collect();
    assert_eq!(changes, vec![(ns.clone(), Action::Delete)]);
    assert!(
        fake.write_requests().iter().all(|w| w.method != "DELETE"),
        "{:?}",
        fake.write_requests()
    );
    let live = fake
        .get("v1", "Namespace", None, &ns.name)
        .expect("namespace kept");
    let labels = live["metadata"]["labels"].as_object().unwrap();
    assert!(!labels.contains_key(MANAGED_BY), "{labels:?}");
    assert!(!labels.contains_key(TENANT), "{labels:?}");
    assert_eq!(labels["team"], "payments");
    assert_eq!(labels["kubernetes.io/metadata.name"], ns.name.as_str());

    // No longer MOP's: not seen, not pruned again.
    fake.clear_requests();
    let again = reconcile(&desired, &scope, &client, opts()).await;
    assert_eq!(again.differences().count(), 0, "{:#?}", again.plan());
    assert!(fake.write_requests().is_empty());
}

#[tokio::test]
async fn a_failed_list_deletes_nothing() {
    let (mut desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    reconcile(&desired, &scope, &client, opts()).await;
    let cm = find(&desired, Kind::ConfigMap, "mop-agent-config");
    let cm_body = body(&desired, &cm);
    desired.resources.remove(&cm);

    // The client sends no token any more: every list answers 401.
    fake.set_token(Some("rotated"));
    fake.clear_requests();
    let report = reconcile(
        &desired,
        &scope,
        &client,
        Options {
            allow_mass_prune: true,
            ..opts()
        },
    )
    .await;
    fake.set_token(None);
    let t = &report.targets[0];
    assert!(!t.observe_failures.is_empty());
    assert!(t.observe_failures.iter().all(|f| f.tenant.is_none()));
    assert!(
        t.observe_failures[0].error.contains("401"),
        "{}",
        t.observe_failures[0].error
    );
    support::assert_all_skipped(t);
    assert!(fake.write_requests().is_empty());
    assert!(get(&fake, &cm_body).is_some());
}

#[tokio::test]
async fn drift_events_are_recorded_on_the_object() {
    let (desired, _) = repo_template();
    let (fake, client) = cluster(&desired).await;
    let cm = find(&desired, Kind::ConfigMap, render::GATEWAY_CONFIGMAP);
    let regarding = Regarding::of(&cm).unwrap();
    let cm_ns = regarding.namespace.clone().unwrap();
    emit_event(
        &client,
        "mop-system",
        &regarding,
        "Drifted",
        "data.gateway.json differs from the repository",
        EventType::Warning,
    )
    .await
    .unwrap();
    let role = find(&desired, Kind::ClusterRole, "mop-agent");
    emit_event(
        &client,
        "mop-system",
        &Regarding::of(&role).unwrap(),
        "Drifted",
        &"x".repeat(5000),
        EventType::Normal,
    )
    .await
    .unwrap();

    let events = fake.list("events.k8s.io/v1", "Event", Some(&cm_ns));
    let e = events
        .iter()
        .find(|e| e["regarding"]["kind"] == "ConfigMap")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(e["reason"], "Drifted");
    assert_eq!(e["type"], "Warning");
    assert_eq!(e["regarding"]["name"], render::GATEWAY_CONFIGMAP);
    assert_eq!(e["regarding"]["namespace"], cm_ns.as_str());
    assert_eq!(e["regarding"]["apiVersion"], "v1");
    assert_eq!(e["reportingController"], "mop.dev/syncer");
    assert!(e["note"].as_str().unwrap().contains("gateway.json"));

    let events = fake.list("events.k8s.io/v1", "Event", Some("mop-system"));
    let e = events
        .iter()
        .find(|e| e["regarding"]["kind"] == "ClusterRole")
        .unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(e["type"], "Normal");
    assert!(e["regarding"].get("namespace").is_none());
    assert_eq!(
        e["note"].as_str().unwrap().len(),
        1024,
        "notes are capped at 1 kB"
    );
}

#[tokio::test]
async fn a_namespace_moved_to_another_tenant_is_relabelled_not_unlabelled() {
    let (mut desired, scope) = repo_template();
    let (fake, client) = cluster(&desired).await;
    reconcile(&desired, &scope, &client, opts()).await;
    // The first rendered namespace.
    let old = find(&desired, Kind::Namespace, "");
    let new_tenant = scope
        .tenants
        .keys()
        .find(|k| Some(k.as_str()) != old.tenant.as_deref())
        .unwrap()
        .clone();
    let mut r = desired.resources.remove(&old).unwrap();
    let mut b: Value = serde_json::from_str(&r.body).unwrap();
    b["metadata"]["labels"][TENANT] = new_tenant.clone().into();
    r.body = b.to_string().into();
    r.id.tenant = Some(new_tenant.clone());
    desired.resources.insert(r.id.clone(), r.clone());

    let report = reconcile(&desired, &scope, &client, opts()).await;
    assert!(report.converged(), "{:#?}", report.targets);
    let changes: Vec<_> = report
        .differences()
        .map(|(_, c)| (c.change.id.clone(), c.change.action))
        .collect();
    // One update under the new tenant; no prune of the old id that would strip
    // the labels the update just set.
    assert_eq!(changes, vec![(r.id.clone(), Action::Update)]);
    let live = fake.get("v1", "Namespace", None, &old.name).unwrap();
    assert_eq!(live["metadata"]["labels"][TENANT], new_tenant.as_str());
    assert_eq!(live["metadata"]["labels"][MANAGED_BY], "mop");
}
