//! Contract check: the fake accepts exactly what the syncer renders for the
//! repository template (its render golden file), and an unchanged re-apply of all of
//! it stores nothing. Guards against the fake being stricter than a real server in
//! ways the syncer would trip over, and against render output a server rejects.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::core::{DynamicObject, GroupVersionKind};
use kube::{Client, Config, discovery};
use mop_kube_fake::{FakeKube, Options, RolloutSettings};
use serde_json::Value;

const GOLDEN: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../syncer/tests/golden/render/repo-template.txt"
);

/// The `===== kubernetes/...` sections of the golden file, parsed. A missing or
/// empty golden fails the test: skipping would let it pass without checking.
fn rendered() -> Vec<Value> {
    let text = std::fs::read_to_string(GOLDEN).unwrap_or_else(|e| {
        panic!(
            "cannot read the render golden {GOLDEN}: {e}; it is written by \
             `UPDATE_GOLDEN=1 cargo test -p mop-syncer --test render`"
        )
    });
    let mut out = Vec::new();
    for section in text.split("\n===== ").skip(1) {
        let (header, body) = section.split_once('\n').unwrap();
        if header.starts_with("kubernetes/") {
            out.push(
                serde_saphyr::from_str::<Value>(body).unwrap_or_else(|e| panic!("{header}: {e}")),
            );
        }
    }
    // Dependency order, as the applier performs it: namespaces and definitions first.
    let rank = |v: &Value| match v["kind"].as_str().unwrap_or("") {
        "Namespace" => 0,
        "ServiceAccount" | "ClusterRole" => 1,
        "ClusterRoleBinding" | "ConfigMap" | "Service" => 2,
        _ => 3,
    };
    out.sort_by_key(rank);
    out
}

async fn api_for(c: &Client, obj: &Value) -> Api<DynamicObject> {
    let (group, version) = match obj["apiVersion"].as_str().unwrap().split_once('/') {
        Some((g, v)) => (g.to_string(), v.to_string()),
        None => (
            String::new(),
            obj["apiVersion"].as_str().unwrap().to_string(),
        ),
    };
    let gvk = GroupVersionKind::gvk(&group, &version, obj["kind"].as_str().unwrap());
    let (ar, _) = discovery::pinned_kind(c, &gvk).await.unwrap();
    match obj["metadata"]["namespace"].as_str() {
        Some(ns) => Api::namespaced_with(c.clone(), ns, &ar),
        None => Api::all_with(c.clone(), &ar),
    }
}

#[tokio::test]
async fn rendered_repo_template_applies_and_reapplies_as_no_op() {
    let objects = rendered();
    assert!(
        objects.len() > 3,
        "the render golden {GOLDEN} holds only {} Kubernetes objects; expected the repo-template's namespaces, ConfigMaps and workloads",
        objects.len()
    );
    // No rollouts: status writes would move resourceVersions under the comparison.
    let fake = FakeKube::start_with(Options {
        rollout: RolloutSettings {
            enabled: false,
            ..RolloutSettings::default()
        },
        ..Options::default()
    })
    .await
    .unwrap();
    let mut config = Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some(mop_kube_fake::ADMIN_TOKEN.to_string().into());
    let c = Client::try_from(config).unwrap();
    let pp = PatchParams::apply("mop");
    for obj in &objects {
        let api = api_for(&c, obj).await;
        let name = obj["metadata"]["name"].as_str().unwrap();
        let body: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        if let Err(e) = api.patch(name, &pp, &Patch::Apply(&body)).await {
            panic!("{} {name} rejected: {e}", obj["kind"]);
        }
    }
    let stored = fake.mutations();
    assert_eq!(stored as usize, objects.len());

    for obj in &objects {
        let api = api_for(&c, obj).await;
        let name = obj["metadata"]["name"].as_str().unwrap();
        let body: DynamicObject = serde_json::from_value(obj.clone()).unwrap();
        let before = api.get(name).await.unwrap();
        let after = api.patch(name, &pp, &Patch::Apply(&body)).await.unwrap();
        assert_eq!(
            before.metadata.resource_version, after.metadata.resource_version,
            "{name}: an unchanged re-apply keeps the resourceVersion"
        );
    }
    assert_eq!(
        fake.mutations(),
        stored,
        "re-applying an unchanged render stores nothing"
    );

    // What the applier's prune step lists: everything it owns, by label.
    let mut owned = 0;
    for kind in [
        ("v1", "ConfigMap"),
        ("apps/v1", "Deployment"),
        ("apps/v1", "DaemonSet"),
        ("v1", "Service"),
    ] {
        let api: Api<DynamicObject> = {
            let probe = serde_json::json!({"apiVersion": kind.0, "kind": kind.1, "metadata": {}});
            api_for(&c, &probe).await
        };
        owned += api
            .list(&ListParams::default().labels("app.kubernetes.io/managed-by=mop"))
            .await
            .unwrap()
            .items
            .len();
    }
    let expected = objects
        .iter()
        .filter(|o| {
            matches!(
                o["kind"].as_str(),
                Some("ConfigMap" | "Deployment" | "DaemonSet" | "Service")
            )
        })
        .count();
    assert_eq!(owned, expected);
}
