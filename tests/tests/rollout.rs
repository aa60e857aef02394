//! Rollouts of the gateway Deployment and agent DaemonSet from `versions.yaml`,
//! through the reconcile engine against the Kubernetes fake's rollout controller:
//! a healthy version is applied once its pods are all updated and ready; a version
//! whose pods crash-loop is rolled back within the health timeout and reported;
//! the next reconcile of the same pin holds the rollback instead of fighting it;
//! a new pin rolls forward.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

mod support;

use mop_kube_fake::{FakeKube, RolloutSettings};
use mop_syncer::apply::engine::{self, ChangeResult, Options, Outcome, Report};
use mop_syncer::apply::kubernetes::KubeApplier;
use mop_syncer::apply::rollout::{ROLLED_BACK_FROM, RolloutReport, RolloutState};
use mop_syncer::apply::{Applier, Scope};
use mop_syncer::render::{self, Desired, Kind, Target};
use serde_json::Value;

const GATEWAY_IMAGE: &str = "ghcr.io/example/mop-gateway";
const AGENT_IMAGE: &str = "ghcr.io/example/mop-agent";
/// The health timeout of the test repository's versions.yaml.
/// MOP's namespace in the repo-template.
const NS: &str = "mop-system";
const TIMEOUT: Duration = Duration::from_secs(2);

fn versions(gateway: &str, agent: &str) -> String {
    format!(
        "agent:\n  image: {AGENT_IMAGE}\n  version: {agent}\n  rollout:\n    max_unavailable: \"1\"\n    health_timeout: 2s\n\
         gateway:\n  image: {GATEWAY_IMAGE}\n  version: {gateway}\n  replicas: 2\n  rollout:\n    max_surge: \"1\"\n    health_timeout: 2s\n"
    )
}

/// The repo-template with the given versions pinned, rendered (Kubernetes only).
fn render_with(gateway: &str, agent: &str) -> (Desired, Scope) {
    let dir = tempfile::tempdir().unwrap();
    support::copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-template"),
        dir.path(),
    );
    std::fs::write(dir.path().join("versions.yaml"), versions(gateway, agent)).unwrap();
    let snap = mop_syncer::source::Snapshot::from_dir(dir.path()).unwrap();
    let outcome = mop_syncer::validate::validate(&snap);
    let repo = outcome
        .repo
        .unwrap_or_else(|| panic!("test repository invalid: {:?}", outcome.diagnostics));
    let mut desired = render::render(&repo).unwrap();
    desired
        .resources
        .retain(|id, _| id.target == Target::Kubernetes);
    (desired, Scope::of(&repo))
}

/// A fake cluster with the namespaces MOP installs into, rolling one pod (or one
/// DaemonSet batch) every 50 ms on 3 nodes.
async fn cluster(desired: &Desired) -> (support::Cluster, kube::Client) {
    let rollout = RolloutSettings {
        step_delay: Duration::from_millis(50),
        nodes: 3,
        enabled: true,
    };
    support::cluster_for(desired, rollout).await
}

fn opts(dry_run: bool) -> Options {
    Options {
        prune: true,
        max_prune_percent: 50.0,
        allow_mass_prune: false,
        dry_run,
    }
}

async fn reconcile(
    desired: &Desired,
    scope: &Scope,
    client: &kube::Client,
    dry_run: bool,
) -> Report {
    let appliers: Vec<Box<dyn Applier>> = vec![Box::new(KubeApplier::new(client.clone()))];
    engine::reconcile(desired, scope, &appliers, &opts(dry_run), &|_, _| {}).await
}

fn change(report: &Report, kind: Kind) -> Option<&ChangeResult> {
    report
        .targets
        .iter()
        .flat_map(|t| &t.changes)
        .find(|c| c.change.id.kind == kind)
}

fn rollout<'a>(report: &'a Report, workload: &str) -> &'a RolloutReport {
    report
        .targets
        .iter()
        .flat_map(|t| &t.rollouts)
        .find(|r| r.workload == workload)
        .unwrap_or_else(|| panic!("no rollout of {workload} in {:#?}", report.targets))
}

fn live(fake: &FakeKube, kind: &str, name: &str) -> Value {
    fake.get("apps/v1", kind, Some(NS), name).unwrap()
}

fn live_image(fake: &FakeKube, kind: &str, name: &str) -> String {
    live(fake, kind, name)["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn pod_images(fake: &FakeKube, app: &str) -> Vec<String> {
    let mut v: Vec<String> = fake
        .list("v1", "Pod", Some(NS))
        .into_iter()
        .filter(|p| p["metadata"]["labels"]["app.kubernetes.io/name"] == app)
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    v.sort();
    v
}

/// A cluster where the repo-template at 0.1.0 is applied and healthy.
async fn installed() -> (support::Cluster, kube::Client, Scope) {
    let (desired, scope) = render_with("0.1.0", "0.1.0");
    let (fake, client) = cluster(&desired).await;
    let report = reconcile(&desired, &scope, &client, false).await;
    assert!(report.converged(), "{:#?}", report.targets);
    assert_eq!(
        rollout(&report, "deployment/mop-gateway").state,
        RolloutState::Healthy
    );
    assert_eq!(
        rollout(&report, "daemonset/mop-agent").state,
        RolloutState::Healthy
    );
    (fake, client, scope)
}

#[tokio::test]
async fn a_healthy_gateway_version_rolls_out_and_is_applied() {
    let (fake, client, _) = installed().await;
    assert_eq!(
        pod_images(&fake, "mop-gateway"),
        [
            format!("{GATEWAY_IMAGE}:0.1.0"),
            format!("{GATEWAY_IMAGE}:0.1.0")
        ]
    );
    let (desired, scope) = render_with("0.2.0", "0.1.0");
    let report = reconcile(&desired, &scope, &client, false).await;
    let c = change(&report, Kind::Deployment).expect("the gateway changes");
    assert_eq!(c.outcome, Outcome::Applied);
    assert!(report.converged(), "{:#?}", report.targets);
    // Applied means rolled out: every pod runs the new version and is ready.
    let d = live(&fake, "Deployment", "mop-gateway");
    assert_eq!(
        d["status"]["observedGeneration"],
        d["metadata"]["generation"]
    );
    assert_eq!(d["status"]["updatedReplicas"], 2);
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(
        pod_images(&fake, "mop-gateway"),
        [
            format!("{GATEWAY_IMAGE}:0.2.0"),
            format!("{GATEWAY_IMAGE}:0.2.0")
        ]
    );
    // The gateway never goes below full capacity.
    assert_eq!(d["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"], 0);
    let r = rollout(&report, "deployment/mop-gateway");
    assert_eq!(r.state, RolloutState::Healthy);
    assert_eq!(r.running, format!("{GATEWAY_IMAGE}:0.2.0"));
    assert!(!r.rolled_back);
}

#[tokio::test]
async fn a_crash_looping_gateway_is_rolled_back_held_and_rolled_forward_by_a_new_pin() {
    let (fake, client, _) = installed().await;
    let bad = format!("{GATEWAY_IMAGE}:0.2.0");
    let good = format!("{GATEWAY_IMAGE}:0.1.0");
    fake.mark_image_bad(&bad);

    let (desired, scope) = render_with("0.2.0", "0.1.0");
    let t0 = Instant::now();
    let report = reconcile(&desired, &scope, &client, false).await;
    let took = t0.elapsed();
    // The timeout, then the rollback's own rollout (2 pods at 50 ms), with room.
    assert!(took >= TIMEOUT && took < TIMEOUT * 2, "took {took:?}");
    let c = change(&report, Kind::Deployment).unwrap();
    let Outcome::Failed(msg) = &c.outcome else {
        panic!("a failed rollout is a failed change: {:?}", c.outcome)
    };
    for part in [
        "deployment/mop-gateway",
        bad.as_str(),
        "not healthy within 2s",
        "CrashLoopBackOff",
        &format!("rolled back to {good}"),
    ] {
        assert!(msg.contains(part), "{part:?} missing from {msg:?}");
    }
    assert!(!msg.contains("not healthy yet either"), "{msg}");
    // The old version runs again, on every pod, and the Deployment is healthy.
    assert_eq!(live_image(&fake, "Deployment", "mop-gateway"), good);
    assert_eq!(
        pod_images(&fake, "mop-gateway"),
        [good.clone(), good.clone()]
    );
    let d = live(&fake, "Deployment", "mop-gateway");
    assert_eq!(d["status"]["availableReplicas"], 2);
    assert_eq!(
        d["metadata"]["labels"]["app.kubernetes.io/version"], "0.1.0",
        "the version label follows the image back"
    );
    let r = rollout(&report, "deployment/mop-gateway");
    assert_eq!(
        (
            r.state,
            r.rolled_back,
            r.pinned.as_str(),
            r.running.as_str()
        ),
        (RolloutState::RolledBack, true, bad.as_str(), good.as_str())
    );
    // A Warning Event on the Deployment says what happened.
    let events = fake.list("events.k8s.io/v1", "Event", Some(NS));
    let ev = events
        .iter()
        .find(|e| e["reason"] == "RolledBack")
        .unwrap_or_else(|| panic!("no RolledBack Event in {events:#?}"));
    assert_eq!(ev["type"], "Warning");
    assert_eq!(ev["regarding"]["kind"], "Deployment");
    assert_eq!(ev["regarding"]["name"], "mop-gateway");
    assert!(
        ev["note"]
            .as_str()
            .unwrap()
            .contains(&format!("rolled back to {good}"))
    );
    // Nothing else failed: the rest of the revision was applied.
    assert_eq!(report.failed(), 1);

    // The same revision again (as `heal` would): the bad version is not re-applied.
    let before = fake.mutations();
    fake.clear_requests();
    let again = reconcile(&desired, &scope, &client, false).await;
    assert_eq!(fake.mutations(), before, "a held rollout changes nothing");
    assert!(
        fake.write_requests().is_empty(),
        "a held rollout sends no write: {:?}",
        fake.write_requests()
    );
    let c = change(&again, Kind::Deployment).expect("the pin is still a difference");
    let Outcome::Held(why) = &c.outcome else {
        panic!("held, not {:?}", c.outcome)
    };
    assert!(
        why.contains(&format!("pinned {bad}, running {good} (rolled back)")),
        "{why}"
    );
    assert!(
        c.change.details.iter().any(|d| d.path.contains("image")),
        "the difference names the image: {:?}",
        c.change.details
    );
    assert!(again.settled() && !again.converged());
    assert_eq!(live_image(&fake, "Deployment", "mop-gateway"), good);
    // A drift check reports the same.
    let check = reconcile(&desired, &scope, &client, true).await;
    assert!(matches!(
        &change(&check, Kind::Deployment).unwrap().outcome,
        Outcome::Held(w) if w.contains("rolled back")
    ));
    assert_eq!(
        rollout(&check, "deployment/mop-gateway").state,
        RolloutState::RolledBack
    );

    // A new pin tries again, and rolls forward.
    let (desired, scope) = render_with("0.3.0", "0.1.0");
    let report = reconcile(&desired, &scope, &client, false).await;
    assert_eq!(
        change(&report, Kind::Deployment).unwrap().outcome,
        Outcome::Applied
    );
    assert!(report.converged(), "{:#?}", report.targets);
    let newer = format!("{GATEWAY_IMAGE}:0.3.0");
    assert_eq!(pod_images(&fake, "mop-gateway"), [newer.clone(), newer]);
    let d = live(&fake, "Deployment", "mop-gateway");
    assert!(
        d["metadata"]["annotations"].get(ROLLED_BACK_FROM).is_none(),
        "the rollback record goes with the next pin: {:?}",
        d["metadata"]["annotations"]
    );
    // And that state is stable: nothing more to do.
    let before = fake.mutations();
    let settled = reconcile(&desired, &scope, &client, false).await;
    assert!(
        settled.targets[0].changes.is_empty(),
        "{:#?}",
        settled.targets
    );
    assert_eq!(fake.mutations(), before);
}

#[tokio::test]
async fn a_rollback_record_does_not_outlive_the_pin_it_is_about() {
    let (fake, client, _) = installed().await;
    let bad = format!("{GATEWAY_IMAGE}:0.2.0");
    fake.mark_image_bad(&bad);
    let (v2, scope) = render_with("0.2.0", "0.1.0");
    let report = reconcile(&v2, &scope, &client, false).await;
    assert!(matches!(
        change(&report, Kind::Deployment).unwrap().outcome,
        Outcome::Failed(_)
    ));
    // The repository goes back to what runs: only the rollback record differs,
    // and dropping it is no rollout.
    let (v1, scope) = render_with("0.1.0", "0.1.0");
    let generation = live(&fake, "Deployment", "mop-gateway")["metadata"]["generation"].clone();
    let report = reconcile(&v1, &scope, &client, false).await;
    let c = change(&report, Kind::Deployment).expect("the stale record is a difference");
    assert_eq!(c.outcome, Outcome::Applied);
    assert!(
        c.change
            .details
            .iter()
            .all(|d| d.path.contains(ROLLED_BACK_FROM)),
        "{:?}",
        c.change.details
    );
    let d = live(&fake, "Deployment", "mop-gateway");
    assert!(d["metadata"]["annotations"].get(ROLLED_BACK_FROM).is_none());
    assert_eq!(d["metadata"]["generation"], generation);
    let report = reconcile(&v1, &scope, &client, false).await;
    assert!(report.converged() && report.targets[0].changes.is_empty());
    // A later pin of 0.2.0 is a new decision: tried again (and rolled back again).
    let report = reconcile(&v2, &scope, &client, false).await;
    let Outcome::Failed(msg) = &change(&report, Kind::Deployment).unwrap().outcome else {
        panic!("tried again, not held")
    };
    assert!(msg.contains("rolled back to"), "{msg}");
}

#[tokio::test]
async fn a_crash_looping_agent_is_rolled_back_after_one_batch() {
    let (fake, client, _) = installed().await;
    let bad = format!("{AGENT_IMAGE}:0.2.0");
    let good = format!("{AGENT_IMAGE}:0.1.0");
    fake.mark_image_bad(&bad);
    let (desired, scope) = render_with("0.1.0", "0.2.0");
    let report = reconcile(&desired, &scope, &client, false).await;
    let c = change(&report, Kind::DaemonSet).unwrap();
    let Outcome::Failed(msg) = &c.outcome else {
        panic!("{:?}", c.outcome)
    };
    assert!(msg.contains("daemonset/mop-agent"), "{msg}");
    assert!(msg.contains("1 of 3 nodes updated"), "{msg}");
    assert!(msg.contains(&format!("rolled back to {good}")), "{msg}");
    let ds = live(&fake, "DaemonSet", "mop-agent");
    assert_eq!(
        ds["spec"]["updateStrategy"]["rollingUpdate"]["maxUnavailable"], 1,
        "maxUnavailable from versions.yaml"
    );
    assert_eq!(ds["status"]["numberAvailable"], 3);
    assert_eq!(
        pod_images(&fake, "mop-agent"),
        [good.clone(), good.clone(), good]
    );
    assert_eq!(
        rollout(&report, "daemonset/mop-agent").state,
        RolloutState::RolledBack
    );
    // The gateway, unchanged, stays healthy.
    assert_eq!(
        rollout(&report, "deployment/mop-gateway").state,
        RolloutState::Healthy
    );
}

#[tokio::test]
async fn a_first_install_that_never_becomes_healthy_has_nothing_to_roll_back_to() {
    let (desired, scope) = render_with("0.2.0", "0.1.0");
    let (fake, client) = cluster(&desired).await;
    fake.mark_image_bad(&format!("{GATEWAY_IMAGE}:0.2.0"));
    let report = reconcile(&desired, &scope, &client, false).await;
    let Outcome::Failed(msg) = &change(&report, Kind::Deployment).unwrap().outcome else {
        panic!()
    };
    assert!(
        msg.contains("no earlier healthy version to roll back to"),
        "{msg}"
    );
    assert_eq!(
        rollout(&report, "deployment/mop-gateway").state,
        RolloutState::Failed
    );
    let events = fake.list("events.k8s.io/v1", "Event", Some(NS));
    assert!(events.iter().any(|e| e["reason"] == "RolloutFailed"));
    // Left as applied (there is nothing better), so the next reconcile has no change.
    let before = fake.mutations();
    let again = reconcile(&desired, &scope, &client, false).await;
    assert!(change(&again, Kind::Deployment).is_none());
    assert_eq!(fake.mutations(), before);
}

#[tokio::test]
async fn status_and_metrics_show_the_rollback() {
    let (fake, client, _) = installed().await;
    fake.mark_image_bad(&format!("{GATEWAY_IMAGE}:0.2.0"));
    let (mut desired, scope) = render_with("0.2.0", "0.1.0");
    desired.revision = Some("r2".into());
    let state = mop_syncer::serve::status::State::default();
    let report = reconcile(&desired, &scope, &client, false).await;
    state.reconciled(Some("r2"), &report, Duration::from_secs(1));
    let s = state.snapshot();
    let r = s
        .rollouts
        .iter()
        .find(|r| r.workload == "deployment/mop-gateway")
        .unwrap();
    assert_eq!(r.state, RolloutState::RolledBack);
    assert_eq!(r.running, format!("{GATEWAY_IMAGE}:0.1.0"));
    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["rollouts"][0]["state"], "rolled-back");
    let m = state.encode_metrics();
    assert!(
        m.contains(
            r#"mop_rollback_total{namespace="mop-system",workload="deployment/mop-gateway"} 1"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"mop_rollout_healthy{namespace="mop-system",workload="deployment/mop-gateway"} 0"#
        ),
        "{m}"
    );
    assert!(
        m.contains(
            r#"mop_rollout_healthy{namespace="mop-system",workload="daemonset/mop-agent"} 1"#
        ),
        "{m}"
    );
    // Not applied yet: the failed change keeps the revision from counting as applied.
    assert_eq!(s.applied_revision, None);
    // The next reconcile holds the rollback: the revision is applied as far as it
    // will be, and later checks report the held pin as drift.
    let again = reconcile(&desired, &scope, &client, false).await;
    state.reconciled(Some("r2"), &again, Duration::from_secs(1));
    assert_eq!(state.snapshot().applied_revision.as_deref(), Some("r2"));
    let drift =
        mop_syncer::serve::status::drift_of(&reconcile(&desired, &scope, &client, true).await);
    assert!(
        drift.iter().any(|d| d.kind == "deployment"
            && d.name == "mop-system/mop-gateway"
            && d.held
                .as_deref()
                .is_some_and(|w| w.contains("(rolled back)"))),
        "{drift:#?}"
    );
    assert!(
        !state.encode_metrics().contains(
            r#"mop_rollback_total{namespace="mop-system",workload="deployment/mop-gateway"} 2"#
        ),
        "holding is not another rollback"
    );
}
