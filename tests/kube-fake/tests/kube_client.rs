//! The fake driven by the real `kube` client, as the syncer will drive it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Service};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::ClusterRole;
use kube::api::{
    Api, DeleteParams, ListParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams,
};
use kube::{Client, Config};
use mop_kube_fake::{FakeKube, Options, RolloutSettings};
use serde_json::{Value, json};

/// A client with the cluster admin's credentials: these tests are about the API,
/// not about authorization (`tests/rbac.rs` is).
fn client(fake: &FakeKube) -> Client {
    let mut config = Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some(mop_kube_fake::ADMIN_TOKEN.to_string().into());
    Client::try_from(config).unwrap()
}

fn status_of(err: kube::Error) -> kube::core::Status {
    match err {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn ssa() -> PatchParams {
    PatchParams::apply("mop")
}

async fn namespace(c: &Client, name: &str) {
    let ns: Api<Namespace> = Api::all(c.clone());
    ns.patch(
        name,
        &ssa(),
        &Patch::Apply(json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})),
    )
    .await
    .unwrap();
}

fn configmap(data: &str) -> Value {
    json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "mop-gateway-routing", "namespace": "mop",
                     "labels": {"app.kubernetes.io/managed-by": "mop", "mop.dev/tenant": "a"}},
        "data": {"gateway.json": data},
    })
}

fn deployment(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "mop-gateway", "namespace": "mop",
                     "labels": {"app.kubernetes.io/managed-by": "mop"}},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app.kubernetes.io/name": "mop-gateway"}},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "mop-gateway"}},
                "spec": {"containers": [{"name": "gateway", "image": image, "ports": [{"containerPort": 4317}]}]},
            },
        },
    })
}

fn daemonset(image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": {"name": "mop-agent", "namespace": "mop"},
        "spec": {
            "selector": {"matchLabels": {"app.kubernetes.io/name": "mop-agent"}},
            "updateStrategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 1}},
            "template": {
                "metadata": {"labels": {"app.kubernetes.io/name": "mop-agent"}},
                "spec": {"containers": [{"name": "agent", "image": image}]},
            },
        },
    })
}

async fn fast_fake() -> FakeKube {
    FakeKube::start_with(Options {
        token: None,
        rollout: RolloutSettings {
            step_delay: Duration::from_millis(5),
            nodes: 3,
            enabled: true,
        },
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn ssa_create_then_reapply_is_a_no_op() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");

    let created = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap();
    let rv = created.metadata.resource_version.clone().unwrap();
    assert!(created.metadata.uid.is_some());
    assert!(created.metadata.creation_timestamp.is_some());
    let mf = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(mf.len(), 1);
    assert_eq!(mf[0].manager.as_deref(), Some("mop"));
    assert_eq!(mf[0].operation.as_deref(), Some("Apply"));
    let fields = &mf[0].fields_v1.as_ref().unwrap().0;
    assert_eq!(fields["f:data"]["f:gateway.json"], json!({}));
    assert_eq!(
        fields["f:metadata"]["f:labels"]["f:mop.dev/tenant"],
        json!({})
    );

    let mutations = fake.mutations();
    let again = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap();
    assert_eq!(
        again.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(
        fake.mutations(),
        mutations,
        "an unchanged apply stores nothing"
    );

    let changed = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{\"v\":2}")),
        )
        .await
        .unwrap();
    assert_ne!(
        changed.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );

    let writes = fake.write_requests();
    assert!(
        writes
            .iter()
            .all(|r| r.is_apply() && r.field_manager.as_deref() == Some("mop"))
    );
    assert!(
        writes
            .iter()
            .all(|r| r.content_type.as_deref() == Some("application/apply-patch+yaml"))
    );
}

#[tokio::test]
async fn ssa_removes_fields_the_manager_stops_applying() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    let mut two = configmap("{}");
    two["data"]["extra"] = json!("x");
    cms.patch("mop-gateway-routing", &ssa(), &Patch::Apply(two))
        .await
        .unwrap();
    let one = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap();
    let data = one.data.unwrap();
    assert_eq!(data.len(), 1, "{data:?}");
}

#[tokio::test]
async fn ssa_conflict_between_managers_is_409_until_forced() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1.0.0")))
        .await
        .unwrap();

    // Someone edits the image by hand.
    fake.edit(
        "kubectl-edit",
        "apps/v1",
        "Deployment",
        Some("mop"),
        "mop-gateway",
        |d| {
            d["spec"]["template"]["spec"]["containers"][0]["image"] = json!("gw:hand");
        },
    )
    .unwrap();

    let err = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1.1.0")))
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!(st.code, 409);
    assert_eq!(st.reason, "Conflict");
    // apimachinery's wording: an updater is named with its apiVersion and time.
    assert!(
        st.message.starts_with(
            r#"Apply failed with 1 conflict: conflict with "kubectl-edit" using apps/v1 at "#
        ),
        "{}",
        st.message
    );
    assert!(
        st.message
            .ends_with(r#": .spec.template.spec.containers[name="gateway"].image"#),
        "{}",
        st.message
    );
    let cause = &st.details.unwrap().causes[0];
    assert_eq!(cause.reason, "FieldManagerConflict");

    let forced = deploys
        .patch(
            "mop-gateway",
            &PatchParams::apply("mop").force(),
            &Patch::Apply(deployment("gw:1.1.0")),
        )
        .await
        .unwrap();
    let image = forced.spec.unwrap().template.spec.unwrap().containers[0]
        .image
        .clone();
    assert_eq!(image.as_deref(), Some("gw:1.1.0"));
    assert!(fake.write_requests().last().unwrap().force);

    // Same value from another applier: shared ownership, no conflict.
    let other = PatchParams::apply("someone-else");
    deploys
        .patch("mop-gateway", &other, &Patch::Apply(deployment("gw:1.1.0")))
        .await
        .unwrap();

    // Another applier with a different value: conflict with both co-owners.
    let mut scaled = deployment("gw:1.1.0");
    scaled["spec"]["replicas"] = json!(5);
    let err = deploys
        .patch(
            "mop-gateway",
            &PatchParams::apply("autoscaler"),
            &Patch::Apply(scaled),
        )
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!(st.code, 409);
    assert!(
        st.message.starts_with("Apply failed with 2 conflicts"),
        "{}",
        st.message
    );
    // Appliers are named without apiVersion; several conflicts are listed by manager.
    assert!(
        st.message.contains("conflicts with \"mop\":\n- .spec.replicas\nconflicts with \"someone-else\":\n- .spec.replicas"),
        "{}",
        st.message
    );
}

#[tokio::test]
async fn server_defaults_and_generation() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    fake.set_rollout(RolloutSettings {
        enabled: false,
        ..RolloutSettings::default()
    });
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    let d = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1")))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(1));
    let spec = d.spec.unwrap();
    assert_eq!(spec.revision_history_limit, Some(10));
    let container = &spec.template.spec.unwrap().containers[0];
    assert_eq!(container.image_pull_policy.as_deref(), Some("IfNotPresent"));
    let label_only = {
        let mut v = deployment("gw:1");
        v["metadata"]["labels"]["x"] = json!("y");
        v
    };
    let d = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(label_only))
        .await
        .unwrap();
    assert_eq!(
        d.metadata.generation,
        Some(1),
        "metadata changes leave generation alone"
    );
    let d = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:2")))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));

    let svcs: Api<Service> = Api::namespaced(c.clone(), "mop");
    let svc = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "mop-gateway", "namespace": "mop"},
        "spec": {"selector": {"app.kubernetes.io/name": "mop-gateway"}, "ports": [{"name": "otlp", "port": 4317}]}});
    let s = svcs
        .patch("mop-gateway", &ssa(), &Patch::Apply(svc.clone()))
        .await
        .unwrap();
    let rv = s.metadata.resource_version.clone();
    let spec = s.spec.unwrap();
    assert!(spec.cluster_ip.is_some());
    assert_eq!(spec.ports.unwrap()[0].protocol.as_deref(), Some("TCP"));
    let s = svcs
        .patch("mop-gateway", &ssa(), &Patch::Apply(svc))
        .await
        .unwrap();
    assert_eq!(
        s.metadata.resource_version, rv,
        "defaulted fields do not make re-apply a write"
    );
}

#[tokio::test]
async fn list_by_label_selector() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    namespace(&c, "team-a").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    cms.patch(
        "mop-gateway-routing",
        &ssa(),
        &Patch::Apply(configmap("{}")),
    )
    .await
    .unwrap();
    let mut other = configmap("{}");
    other["metadata"] = json!({"name": "unmanaged", "namespace": "mop", "labels": {"app": "x"}});
    cms.create(
        &PostParams::default(),
        &serde_json::from_value(other).unwrap(),
    )
    .await
    .unwrap();
    let mut b = configmap("{}");
    b["metadata"]["name"] = json!("tenant-b");
    b["metadata"]["namespace"] = json!("team-a");
    b["metadata"]["labels"]["mop.dev/tenant"] = json!("b");
    Api::<ConfigMap>::namespaced(c.clone(), "team-a")
        .patch("tenant-b", &ssa(), &Patch::Apply(b))
        .await
        .unwrap();

    let names = |l: kube::core::ObjectList<ConfigMap>| -> Vec<String> {
        l.items
            .into_iter()
            .map(|c| c.metadata.name.unwrap())
            .collect()
    };
    let all: Api<ConfigMap> = Api::all(c.clone());
    let owned = all
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=mop"))
        .await
        .unwrap();
    assert!(owned.metadata.resource_version.is_some());
    assert_eq!(names(owned), ["mop-gateway-routing", "tenant-b"]);
    let not_a = all
        .list(&ListParams::default().labels("app.kubernetes.io/managed-by=mop,mop.dev/tenant!=a"))
        .await
        .unwrap();
    assert_eq!(names(not_a), ["tenant-b"]);
    let set = all
        .list(&ListParams::default().labels("mop.dev/tenant in (a,c)"))
        .await
        .unwrap();
    assert_eq!(names(set), ["mop-gateway-routing"]);
    let exists = cms
        .list(&ListParams::default().labels("!mop.dev/tenant"))
        .await
        .unwrap();
    assert_eq!(names(exists), ["unmanaged"]);
    let err = cms
        .list(&ListParams::default().labels("bad key=1"))
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 400);
    assert!(
        fake.requests()
            .iter()
            .any(|r| r.method == "GET" && r.path == "/api/v1/configmaps")
    );
}

#[tokio::test]
async fn delete_answers_status_and_404_when_missing() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    cms.patch(
        "mop-gateway-routing",
        &ssa(),
        &Patch::Apply(configmap("{}")),
    )
    .await
    .unwrap();
    let gone = cms
        .delete("mop-gateway-routing", &DeleteParams::default())
        .await
        .unwrap();
    let status = gone.right().expect("ConfigMap delete answers a Status");
    assert!(status.is_success());
    let err = cms
        .delete("mop-gateway-routing", &DeleteParams::default())
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!((st.code, st.reason.as_str()), (404, "NotFound"));
    assert_eq!(st.message, r#"configmaps "mop-gateway-routing" not found"#);
    let err = cms.get("mop-gateway-routing").await.unwrap_err();
    assert_eq!(status_of(err).code, 404);
}

#[tokio::test]
async fn strict_rejections() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    // The namespace does not exist yet.
    let err = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!(
        (st.code, st.message.as_str()),
        (404, r#"namespaces "mop" not found"#)
    );
    namespace(&c, "mop").await;

    // A name that is not DNS-1123.
    let mut bad = configmap("{}");
    bad["metadata"]["name"] = json!("Bad_Name");
    let err = cms
        .patch("Bad_Name", &ssa(), &Patch::Apply(bad))
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!((st.code, st.reason.as_str()), (422, "Invalid"));

    // Body kind does not match the path.
    let mut wrong = configmap("{}");
    wrong["kind"] = json!("Secret");
    let err = cms
        .patch("mop-gateway-routing", &ssa(), &Patch::Apply(wrong))
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 400);

    // Unknown resource path.
    let req = http_request(
        "GET",
        &format!("{}/apis/apps/v1/namespaces/mop/widgets", fake.url()),
        None,
    );
    let (code, body) = raw(req).await;
    assert_eq!(code, 404);
    assert_eq!(body["kind"], "Status");

    // PATCH without a Content-Type.
    let req = http_request(
        "PATCH",
        &format!("{}/api/v1/namespaces/mop/configmaps/x", fake.url()),
        Some("{}"),
    );
    let (code, body) = raw(req).await;
    assert_eq!(
        (code, body["reason"].as_str()),
        (415, Some("UnsupportedMediaType"))
    );

    // Apply without a field manager.
    let err = cms
        .patch(
            "mop-gateway-routing",
            &PatchParams::default(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 400);

    // Deployment whose selector does not match its template.
    let mut d = deployment("gw:1");
    d["spec"]["selector"]["matchLabels"] = json!({"app": "other"});
    let err = Api::<Deployment>::namespaced(c.clone(), "mop")
        .patch("mop-gateway", &ssa(), &Patch::Apply(d))
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 422);

    // ClusterRole: cluster-scoped, path-segment names allowed.
    let roles: Api<ClusterRole> = Api::all(c.clone());
    roles
        .patch(
            "mop:agent",
            &ssa(),
            &Patch::Apply(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                "metadata": {"name": "mop:agent"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]})),
        )
        .await
        .unwrap();
    assert_eq!(
        fake.mutations(),
        2,
        "only the namespace and the ClusterRole were stored"
    );
}

type RawRequest = (String, String, Option<String>, Option<String>);

fn http_request(method: &str, url: &str, body: Option<&str>) -> RawRequest {
    (
        method.to_string(),
        url.to_string(),
        body.map(str::to_string),
        None,
    )
}

/// A minimal HTTP/1.1 client, for requests `kube` refuses to send malformed.
async fn raw(
    (method, url, body, content_type): (String, String, Option<String>, Option<String>),
) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let body = body.unwrap_or_default();
    let ct = content_type
        .map(|c| format!("Content-Type: {c}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {}\r\n{ct}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        mop_kube_fake::ADMIN_TOKEN,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    let code: u16 = out[9..12].parse().unwrap();
    let json_start = out.find("\r\n\r\n").unwrap() + 4;
    let body = &out[json_start..];
    let body = body
        .find('{')
        .map(|i| &body[i..body.rfind('}').unwrap() + 1])
        .unwrap_or("null");
    (code, serde_json::from_str(body).unwrap())
}

#[tokio::test]
async fn bearer_token_is_checked_when_configured() {
    let fake = FakeKube::start_with(Options {
        token: Some("s3cret".into()),
        ..Options::default()
    })
    .await
    .unwrap();
    let err = Api::<Namespace>::all(client(&fake))
        .list(&ListParams::default())
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 401);
    let mut config = Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some("s3cret".to_string().into());
    let c = Client::try_from(config).unwrap();
    let list = Api::<Namespace>::all(c)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert!(
        list.items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
}

fn lease(holder: &str, rv: Option<&str>, renew: &str) -> Lease {
    let mut v = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "mop-syncer", "namespace": "mop"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": format!("2026-11-21T14:00:{renew}.000000Z")},
    });
    if let Some(rv) = rv {
        v["metadata"]["resourceVersion"] = json!(rv);
    }
    serde_json::from_value(v).unwrap()
}

#[tokio::test]
async fn lease_replace_with_stale_resource_version_conflicts() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let leases: Api<Lease> = Api::namespaced(c.clone(), "mop");
    let created = leases
        .create(&PostParams::default(), &lease("replica-a", None, "00"))
        .await
        .unwrap();
    let rv0 = created.metadata.resource_version.clone().unwrap();

    let err = leases
        .create(&PostParams::default(), &lease("replica-b", None, "01"))
        .await
        .unwrap_err();
    assert_eq!(status_of(err).reason, "AlreadyExists");

    // Replica a renews with the version it read.
    let renewed = leases
        .replace(
            "mop-syncer",
            &PostParams::default(),
            &lease("replica-a", Some(&rv0), "10"),
        )
        .await
        .unwrap();
    assert_ne!(
        renewed.metadata.resource_version.as_deref(),
        Some(rv0.as_str())
    );

    // Replica b, holding the old version, loses.
    let err = leases
        .replace(
            "mop-syncer",
            &PostParams::default(),
            &lease("replica-b", Some(&rv0), "11"),
        )
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!((st.code, st.reason.as_str()), (409, "Conflict"));
    assert!(
        st.message.contains("the object has been modified"),
        "{}",
        st.message
    );
    assert_eq!(
        leases
            .get("mop-syncer")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("replica-a")
    );

    // Leases refuse updates without a resourceVersion.
    let err = leases
        .replace(
            "mop-syncer",
            &PostParams::default(),
            &lease("replica-b", None, "01"),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 422);
}

#[tokio::test]
async fn merge_patch_takes_ownership_as_update() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    cms.patch(
        "mop-gateway-routing",
        &ssa(),
        &Patch::Apply(configmap("{}")),
    )
    .await
    .unwrap();
    let pp = PatchParams {
        field_manager: Some("hand".into()),
        ..PatchParams::default()
    };
    let cm = cms
        .patch(
            "mop-gateway-routing",
            &pp,
            &Patch::Merge(json!({"data": {"gateway.json": "edited"}})),
        )
        .await
        .unwrap();
    let managers: Vec<_> = cm
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .map(|m| (m.manager.unwrap(), m.operation.unwrap()))
        .collect();
    assert!(
        managers.contains(&("hand".into(), "Update".into())),
        "{managers:?}"
    );
    let err = cms
        .patch(
            "mop-gateway-routing",
            &ssa(),
            &Patch::Apply(configmap("{}")),
        )
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 409);
}

async fn wait_for<K, F>(api: &Api<K>, name: &str, mut done: F) -> K
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    F: FnMut(&K) -> bool,
{
    // Generous bound: the machine may be busy; a healthy run takes milliseconds.
    for _ in 0..2000 {
        let o = api.get(name).await.unwrap();
        if done(&o) {
            return o;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("{name} never reached the expected state");
}

#[tokio::test]
async fn healthy_deployment_rollout() {
    let fake = fast_fake().await;
    let c = client(&fake);
    namespace(&c, "mop").await;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1.0.0")))
        .await
        .unwrap();
    let healthy = |d: &Deployment| {
        let s = d.status.clone().unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.updated_replicas == Some(2)
            && s.ready_replicas == Some(2)
            && s.available_replicas == Some(2)
            && s.replicas == Some(2)
    };
    wait_for(&deploys, "mop-gateway", healthy).await;
    let d = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1.1.0")))
        .await
        .unwrap();
    assert_eq!(d.metadata.generation, Some(2));
    let d = wait_for(&deploys, "mop-gateway", healthy).await;
    // Re-applying the same spec after the controller wrote status is still a no-op,
    // and keeps the controller's status ownership.
    let again = deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1.1.0")))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, d.metadata.resource_version);
    let mf = again.metadata.managed_fields.unwrap();
    assert!(
        mf.iter()
            .any(|m| m.manager.as_deref() == Some("kube-controller-manager")
                && m.subresource.as_deref() == Some("status"))
    );
    let conds = d.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "Progressing"
                && c.reason.as_deref() == Some("NewReplicaSetAvailable"))
    );
    let pods: Api<Pod> = Api::namespaced(c.clone(), "mop");
    let pods = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=mop-gateway"))
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    assert!(
        pods.items
            .iter()
            .all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("gw:1.1.0"))
    );
}

#[tokio::test]
async fn crash_looping_rollout_never_becomes_available_and_rolls_back() {
    let fake = fast_fake().await;
    let c = client(&fake);
    namespace(&c, "mop").await;
    fake.mark_image_bad("agent:2.0.0-bad");
    let dss: Api<DaemonSet> = Api::namespaced(c.clone(), "mop");
    dss.patch("mop-agent", &ssa(), &Patch::Apply(daemonset("agent:1.0.0")))
        .await
        .unwrap();
    let healthy = |d: &DaemonSet| {
        let s = d.status.clone().unwrap_or_default();
        s.observed_generation == d.metadata.generation
            && s.desired_number_scheduled == 3
            && s.updated_number_scheduled == Some(3)
            && s.number_ready == 3
            && s.number_available == Some(3)
    };
    wait_for(&dss, "mop-agent", healthy).await;

    dss.patch(
        "mop-agent",
        &ssa(),
        &Patch::Apply(daemonset("agent:2.0.0-bad")),
    )
    .await
    .unwrap();
    let stuck = wait_for(&dss, "mop-agent", |d| {
        let s = d.status.clone().unwrap_or_default();
        s.observed_generation == Some(2) && s.updated_number_scheduled == Some(1)
    })
    .await;
    let s = stuck.status.unwrap();
    assert_eq!(
        (s.number_ready, s.number_available, s.number_unavailable),
        (2, Some(2), Some(1))
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    let still = dss.get("mop-agent").await.unwrap().status.unwrap();
    assert_eq!(
        still.updated_number_scheduled,
        Some(1),
        "a crash-looping rollout does not progress"
    );

    let pods: Api<Pod> = Api::namespaced(c.clone(), "mop");
    let crashing: Vec<Pod> = pods
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|p| {
            p.status
                .as_ref()
                .and_then(|s| s.container_statuses.as_ref())
                .is_some_and(|cs| {
                    cs.iter().any(|c| {
                        c.state
                            .as_ref()
                            .and_then(|s| s.waiting.as_ref())
                            .and_then(|w| w.reason.as_deref())
                            == Some("CrashLoopBackOff")
                    })
                })
        })
        .collect();
    assert_eq!(crashing.len(), 1);

    // Roll back: the old image becomes healthy again, the crashing pod goes.
    dss.patch("mop-agent", &ssa(), &Patch::Apply(daemonset("agent:1.0.0")))
        .await
        .unwrap();
    let back = wait_for(&dss, "mop-agent", healthy).await;
    assert_eq!(back.metadata.generation, Some(3));
    let left = pods.list(&ListParams::default()).await.unwrap().items;
    assert_eq!(left.len(), 3);
    assert!(left.iter().all(|p| p.spec.as_ref().unwrap().containers[0].image.as_deref() == Some("agent:1.0.0")));
}

#[tokio::test(start_paused = true)]
async fn crash_looping_deployment_exceeds_its_progress_deadline() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    fake.mark_image_bad("gw:bad");
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    let mut d = deployment("gw:bad");
    d["spec"]["progressDeadlineSeconds"] = json!(30);
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(d))
        .await
        .unwrap();
    let progressing = |d: &Deployment| {
        d.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Progressing")
                    .and_then(|c| c.reason.clone())
            })
    };
    let d = wait_for(&deploys, "mop-gateway", |d| {
        d.status.as_ref().and_then(|s| s.updated_replicas) == Some(1)
    })
    .await;
    assert_eq!(progressing(&d).as_deref(), Some("ReplicaSetUpdated"));
    // The paused clock jumps past the deadline while nothing else runs.
    tokio::time::sleep(Duration::from_secs(31)).await;
    let d = deploys.get("mop-gateway").await.unwrap();
    assert_eq!(progressing(&d).as_deref(), Some("ProgressDeadlineExceeded"));
    let s = d.status.unwrap();
    assert_eq!(s.available_replicas.unwrap_or(0), 0);
    assert_eq!(s.updated_replicas, Some(1));
}

#[tokio::test]
async fn watch_reports_added_modified_deleted() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    fake.set_rollout(RolloutSettings {
        enabled: false,
        ..RolloutSettings::default()
    });
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    let list = deploys.list(&ListParams::default()).await.unwrap();
    let rv = list.metadata.resource_version.unwrap();
    let mut events = deploys
        .watch(&WatchParams::default().timeout(10), &rv)
        .await
        .unwrap()
        .boxed();

    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1")))
        .await
        .unwrap();
    fake.set_status(
        "apps/v1",
        "Deployment",
        Some("mop"),
        "mop-gateway",
        json!({"observedGeneration": 1, "readyReplicas": 2}),
    )
    .unwrap();
    deploys
        .delete("mop-gateway", &DeleteParams::default())
        .await
        .unwrap();

    let mut seen = Vec::new();
    while seen.len() < 3 {
        match events.try_next().await.unwrap().unwrap() {
            WatchEvent::Added(d) => seen.push(("ADDED", d.status.and_then(|s| s.ready_replicas))),
            WatchEvent::Modified(d) => {
                seen.push(("MODIFIED", d.status.and_then(|s| s.ready_replicas)))
            }
            WatchEvent::Deleted(d) => {
                seen.push(("DELETED", d.status.and_then(|s| s.ready_replicas)))
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(
        seen,
        [("ADDED", None), ("MODIFIED", Some(2)), ("DELETED", Some(2))]
    );

    // From resourceVersion 0, a watch first lists what exists.
    let pods: Api<Pod> = Api::namespaced(c.clone(), "mop");
    let mut w = pods
        .watch(&WatchParams::default().timeout(1), "0")
        .await
        .unwrap()
        .boxed();
    assert!(
        w.try_next().await.unwrap().is_none(),
        "no pods: the stream ends at its timeout"
    );
}

#[tokio::test]
async fn runtime_watcher_sees_rollout_progress() {
    let fake = fast_fake().await;
    let c = client(&fake);
    namespace(&c, "mop").await;
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1")))
        .await
        .unwrap();
    let mut w = deploys
        .watch(
            &WatchParams::default()
                .fields("metadata.name=mop-gateway")
                .timeout(5),
            "0",
        )
        .await
        .unwrap()
        .boxed();
    let mut ready = Vec::new();
    while let Some(ev) = w.try_next().await.unwrap() {
        if let WatchEvent::Added(d) | WatchEvent::Modified(d) = ev {
            let r = d.status.and_then(|s| s.ready_replicas).unwrap_or(0);
            ready.push(r);
            if r == 2 {
                break;
            }
        }
    }
    assert_eq!(ready.last(), Some(&2));
}

#[tokio::test]
async fn apply_accepts_a_yaml_body() {
    let fake = FakeKube::start().await.unwrap();
    namespace(&client(&fake), "mop").await;
    let yaml = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-yaml\n  namespace: mop\ndata:\n  a: \"1\"\n";
    let url = format!(
        "{}/api/v1/namespaces/mop/configmaps/from-yaml?fieldManager=mop",
        fake.url()
    );
    let (code, body) = raw((
        "PATCH".into(),
        url,
        Some(yaml.into()),
        Some("application/apply-patch+yaml".into()),
    ))
    .await;
    assert_eq!(code, 201, "{body}");
    assert_eq!(body["data"]["a"], "1");
    let req = fake.requests().pop().unwrap();
    assert!(req.is_apply());
    assert_eq!(req.field_manager.as_deref(), Some("mop"));
    assert_eq!(req.body.unwrap()["metadata"]["name"], "from-yaml");
}

#[tokio::test]
async fn events_are_validated_and_listed() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let events: Api<Event> = Api::namespaced(c.clone(), "mop");
    let ev = json!({
        "apiVersion": "events.k8s.io/v1", "kind": "Event",
        "metadata": {"generateName": "mop-gateway-routing.", "namespace": "mop"},
        "eventTime": "2026-11-21T14:00:00.000000Z",
        "reportingController": "mop.dev/syncer", "reportingInstance": "mop-syncer-0",
        "action": "Reconcile", "reason": "Drifted", "type": "Warning",
        "note": "ConfigMap mop/mop-gateway-routing differs from the repository",
        "regarding": {"apiVersion": "v1", "kind": "ConfigMap", "namespace": "mop", "name": "mop-gateway-routing"},
    });
    let created = events
        .create(
            &PostParams::default(),
            &serde_json::from_value(ev.clone()).unwrap(),
        )
        .await
        .unwrap();
    assert!(
        created
            .metadata
            .name
            .unwrap()
            .starts_with("mop-gateway-routing.")
    );
    let mut bad = ev;
    bad.as_object_mut().unwrap().remove("reportingController");
    let err = events
        .create(
            &PostParams::default(),
            &serde_json::from_value(bad).unwrap(),
        )
        .await
        .unwrap_err();
    let st = status_of(err);
    assert_eq!(st.code, 422);
    assert!(
        st.message.contains("reportingController: Required value"),
        "{}",
        st.message
    );
    let listed = events.list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items[0].reason.as_deref(), Some("Drifted"));
}

#[tokio::test]
async fn watch_from_a_compacted_version_is_expired() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let old_rv = fake.resource_version().to_string();
    namespace(&c, "other").await;
    fake.compact();
    let nss: Api<Namespace> = Api::all(c.clone());
    let mut w = nss
        .watch(&WatchParams::default().timeout(5), &old_rv)
        .await
        .unwrap()
        .boxed();
    match w.try_next().await.unwrap().unwrap() {
        WatchEvent::Error(st) => assert_eq!((st.code, st.reason.as_str()), (410, "Expired")),
        other => panic!("expected 410, got {other:?}"),
    }
    assert!(w.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn discovery_and_dynamic_objects() {
    use kube::core::{DynamicObject, GroupVersionKind};
    use kube::discovery::{self, Discovery, Scope};

    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let version = c.apiserver_version().await.unwrap();
    assert_eq!(version.major, "1");

    let disc = Discovery::new(c.clone()).run().await.unwrap();
    let apps = disc.get("apps").unwrap();
    let (ar, caps) = apps.recommended_kind("Deployment").unwrap();
    assert_eq!(ar.plural, "deployments");
    assert_eq!(caps.scope, Scope::Namespaced);

    // The syncer renders JSON; DynamicObject over a discovered ApiResource applies it.
    let gvk = GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding");
    let (ar, caps) = discovery::pinned_kind(&c, &gvk).await.unwrap();
    assert_eq!(caps.scope, Scope::Cluster);
    let api: Api<DynamicObject> = Api::all_with(c.clone(), &ar);
    let crb: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": {"name": "mop-agent", "labels": {"app.kubernetes.io/managed-by": "mop"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mop-agent"},
        "subjects": [{"kind": "ServiceAccount", "name": "mop-agent", "namespace": "mop"}],
    }))
    .unwrap();
    let applied = api
        .patch("mop-agent", &ssa(), &Patch::Apply(&crb))
        .await
        .unwrap();
    assert_eq!(applied.data["subjects"][0]["name"], "mop-agent");
    let rv = applied.metadata.resource_version.clone();
    let again = api
        .patch("mop-agent", &ssa(), &Patch::Apply(&crb))
        .await
        .unwrap();
    assert_eq!(again.metadata.resource_version, rv);

    // roleRef cannot change.
    let mut other = crb.clone();
    other.data["roleRef"]["name"] = json!("something-else");
    let err = api
        .patch("mop-agent", &ssa(), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert_eq!(status_of(err).code, 422);
}

#[tokio::test]
async fn kube_runtime_await_condition_follows_rollouts() {
    use kube::runtime::wait::{await_condition, conditions};

    let fake = fast_fake().await;
    let c = client(&fake);
    namespace(&c, "mop").await;
    fake.mark_image_bad("gw:bad");
    let deploys: Api<Deployment> = Api::namespaced(c.clone(), "mop");
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:1")))
        .await
        .unwrap();
    let done = tokio::time::timeout(
        Duration::from_secs(10),
        await_condition(
            deploys.clone(),
            "mop-gateway",
            conditions::is_deployment_completed(),
        ),
    )
    .await
    .expect("a healthy rollout completes")
    .unwrap()
    .unwrap();
    assert_eq!(done.status.unwrap().ready_replicas, Some(2));

    // A crash-looping image never completes: the waiter times out.
    deploys
        .patch("mop-gateway", &ssa(), &Patch::Apply(deployment("gw:bad")))
        .await
        .unwrap();
    wait_for(&deploys, "mop-gateway", |d| {
        d.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
    })
    .await;
    let waited = tokio::time::timeout(
        Duration::from_millis(300),
        await_condition(
            deploys.clone(),
            "mop-gateway",
            conditions::is_deployment_completed(),
        ),
    )
    .await;
    assert!(waited.is_err(), "{waited:?}");
}

#[tokio::test]
async fn apply_refuses_fields_the_schema_does_not_declare() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    namespace(&c, "mop").await;
    let cms: Api<ConfigMap> = Api::namespaced(c.clone(), "mop");
    let mut bad = configmap("{}");
    bad["spec"] = json!({"foo": 1});
    // Whatever fieldValidation says: apply is always strict (500, as the API
    // server answers it today).
    for pp in [ssa(), ssa().validation_ignore()] {
        let s = status_of(
            cms.patch("mop-gateway-routing", &pp, &Patch::Apply(bad.clone()))
                .await
                .unwrap_err(),
        );
        assert_eq!(s.code, 500);
        assert_eq!(
            s.message,
            "failed to create typed patch object (mop/mop-gateway-routing; /v1, Kind=ConfigMap): .spec: field not declared in schema"
        );
    }
    assert!(
        fake.get("v1", "ConfigMap", Some("mop"), "mop-gateway-routing")
            .is_none()
    );
    // An unknown directive is refused.
    let (code, body) = raw((
        "PATCH".into(),
        format!(
            "{}/api/v1/namespaces/mop/configmaps/x?fieldManager=mop&fieldValidation=Loose",
            fake.url()
        ),
        Some(configmap("{}").to_string()),
        Some("application/apply-patch+yaml".into()),
    ))
    .await;
    assert_eq!(code, 422, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Unsupported value: \"Loose\"")
    );
}
