//! RBAC in the fake, driven by the real `kube` client: ServiceAccount tokens,
//! 403 `Status` bodies worded as the API server words them, resourceNames,
//! watch vs list, the `create` a creating apply needs, escalation prevention,
//! and the bootstrap discovery roles.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, Config};
use mop_kube_fake::{ADMIN_TOKEN, FakeKube};
use serde_json::json;

fn client(fake: &FakeKube, token: Option<&str>) -> Client {
    let mut config = Config::new(fake.url().parse().unwrap());
    config.auth_info.token = token.map(|t| t.to_string().into());
    Client::try_from(config).unwrap()
}

fn status(e: kube::Error) -> kube::core::Status {
    match e {
        kube::Error::Api(s) => *s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

/// A fake with namespace `app`, ServiceAccount `app/bot` bound to `rules` by a
/// Role in `app`; the bot's client.
async fn with_role(rules: serde_json::Value) -> (FakeKube, Client) {
    let fake = FakeKube::start().await.unwrap();
    fake.put_yaml(
        "kubectl",
        &format!(
            "apiVersion: v1\nkind: Namespace\nmetadata: {{name: app}}\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: bot, namespace: app}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: bot, namespace: app}}\nrules: {rules}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: bot, namespace: app}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: bot}}\nsubjects: [{{kind: ServiceAccount, name: bot, namespace: app}}]\n"
        ),
    )
    .unwrap();
    let token = fake.service_account_token("app", "bot");
    let c = client(&fake, Some(&token));
    (fake, c)
}

fn cm(name: &str) -> serde_json::Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": "app"}, "data": {"k": "v"}})
}

#[tokio::test]
async fn a_denied_request_is_403_with_the_api_servers_message() {
    let (fake, bot) = with_role(json!([])).await;
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "app");
    let s = status(cms.get("x").await.unwrap_err());
    assert_eq!((s.code, s.reason.as_str()), (403, "Forbidden"));
    assert_eq!(
        s.message,
        r#"configmaps "x" is forbidden: User "system:serviceaccount:app:bot" cannot get resource "configmaps" in API group "" in the namespace "app""#
    );
    let d = s.details.unwrap();
    assert_eq!((d.name.as_str(), d.kind.as_str()), ("x", "configmaps"));
    // Cluster scope, a group, no name.
    let crs: Api<ClusterRole> = Api::all(bot.clone());
    let s = status(crs.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(
        s.message,
        r#"clusterroles.rbac.authorization.k8s.io is forbidden: User "system:serviceaccount:app:bot" cannot list resource "clusterroles" in API group "rbac.authorization.k8s.io" at the cluster scope"#
    );
    let r = fake.requests().pop().unwrap();
    assert_eq!(
        (r.status, r.user.as_str()),
        (403, "system:serviceaccount:app:bot")
    );
}

#[tokio::test]
async fn tokens_authenticate_service_accounts_while_they_exist() {
    let (fake, bot) =
        with_role(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]))
            .await;
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "app");
    cms.list(&ListParams::default()).await.unwrap();
    // Unknown token: 401, not anonymous.
    let stranger: Api<ConfigMap> = Api::namespaced(client(&fake, Some("nope")), "app");
    assert_eq!(
        status(stranger.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );
    // No credentials: system:anonymous, whom RBAC refuses.
    let anon: Api<ConfigMap> = Api::namespaced(client(&fake, None), "app");
    let s = status(anon.list(&ListParams::default()).await.unwrap_err());
    assert_eq!(s.code, 403);
    assert!(
        s.message.contains(r#"User "system:anonymous""#),
        "{}",
        s.message
    );
    // The ServiceAccount deleted: its token no longer authenticates.
    let sas: Api<ServiceAccount> = Api::namespaced(client(&fake, Some(ADMIN_TOKEN)), "app");
    sas.delete("bot", &DeleteParams::default()).await.unwrap();
    assert_eq!(
        status(cms.list(&ListParams::default()).await.unwrap_err()).code,
        401
    );
}

#[tokio::test]
async fn resource_names_match_named_requests_and_name_field_selectors_only() {
    let (fake, bot) = with_role(json!([
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["mine"], "verbs": ["get", "list", "watch", "create", "patch"]}
    ]))
    .await;
    fake.put("kubectl", cm("mine")).unwrap();
    fake.put("kubectl", cm("other")).unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "app");
    cms.get("mine").await.unwrap();
    assert_eq!(status(cms.get("other").await.unwrap_err()).code, 403);
    // A list has no name...
    assert_eq!(
        status(cms.list(&ListParams::default()).await.unwrap_err()).code,
        403
    );
    // ...unless a metadata.name field selector gives it one.
    let l = cms
        .list(&ListParams::default().fields("metadata.name=mine"))
        .await
        .unwrap();
    assert_eq!(l.items.len(), 1);
    // A POST has no name at authorization time: resourceNames cannot allow it.
    let s = status(
        cms.create(
            &Default::default(),
            &serde_json::from_value(cm("mine2")).unwrap(),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 403);
}

#[tokio::test]
async fn watch_list_and_get_are_different_verbs() {
    let (_fake, bot) =
        with_role(json!([{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["list"]}]))
            .await;
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "app");
    cms.list(&ListParams::default()).await.unwrap();
    let s = status(cms.get("x").await.unwrap_err());
    assert!(s.message.contains("cannot get resource"), "{}", s.message);
    let err = cms
        .watch(&Default::default(), "0")
        .await
        .err()
        .expect("a watch without the watch verb is refused");
    let s = status(err);
    assert!(s.message.contains("cannot watch resource"), "{}", s.message);
}

#[tokio::test]
async fn an_apply_that_creates_needs_create_of_that_name() {
    let (fake, bot) = with_role(json!([
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["patch"]},
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["b"], "verbs": ["patch", "create"]}
    ]))
    .await;
    let cms: Api<ConfigMap> = Api::namespaced(bot.clone(), "app");
    let ssa = PatchParams::apply("bot");
    // `patch` alone does not create.
    let s = status(
        cms.patch("a", &ssa, &Patch::Apply(cm("a")))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    assert_eq!(s.message, r#"configmaps "a" is forbidden: "#);
    // `create` restricted to the name does.
    cms.patch("b", &ssa, &Patch::Apply(cm("b"))).await.unwrap();
    // Once it exists, `patch` alone updates it.
    fake.put("kubectl", cm("a")).unwrap();
    let mut changed = cm("a");
    changed["data"]["k"] = json!("w");
    cms.patch("a", &ssa.clone().force(), &Patch::Apply(changed))
        .await
        .unwrap();
}

#[tokio::test]
async fn writing_roles_and_bindings_cannot_escalate() {
    let fake = FakeKube::start().await.unwrap();
    fake.put_yaml(
        "kubectl",
        r#"apiVersion: v1
kind: Namespace
metadata: {name: ops}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: writer, namespace: ops}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: writer}
rules:
  - apiGroups: [rbac.authorization.k8s.io]
    resources: [clusterroles, clusterrolebindings]
    verbs: [create, patch]
  - apiGroups: [""]
    resources: [pods]
    verbs: [list]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: writer}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: writer}
subjects: [{kind: ServiceAccount, name: writer, namespace: ops}]
"#,
    )
    .unwrap();
    let token = fake.service_account_token("ops", "writer");
    let c = client(&fake, Some(&token));
    let crs: Api<ClusterRole> = Api::all(c.clone());
    let ssa = PatchParams::apply("writer");
    let role = |verbs: &[&str]| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
               "metadata": {"name": "reader"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": verbs}]})
    };
    // Only what the writer holds.
    crs.patch("reader", &ssa, &Patch::Apply(role(&["list"])))
        .await
        .unwrap();
    let s = status(
        crs.patch("reader", &ssa, &Patch::Apply(role(&["list", "watch"])))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        "clusterroles.rbac.authorization.k8s.io \"reader\" is forbidden: user \"system:serviceaccount:ops:writer\" (groups=[\"system:serviceaccounts\" \"system:serviceaccounts:ops\" \"system:authenticated\"]) is attempting to grant RBAC permissions not currently held:\n{APIGroups:[\"\"], Resources:[\"pods\"], Verbs:[\"watch\"]}"
    );
    // Binding a role whose permissions the writer holds is allowed; one it does
    // not hold (cluster-admin) is not, without `bind`.
    let crbs: Api<ClusterRoleBinding> = Api::all(c.clone());
    let binding = |role: &str| {
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
               "metadata": {"name": format!("to-{role}")},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
               "subjects": [{"kind": "ServiceAccount", "name": "writer", "namespace": "ops"}]})
    };
    crbs.patch("to-reader", &ssa, &Patch::Apply(binding("reader")))
        .await
        .unwrap();
    let s = status(
        crbs.patch(
            "to-cluster-admin",
            &ssa,
            &Patch::Apply(binding("cluster-admin")),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(s.code, 403);
    assert!(
        s.message
            .contains("is attempting to grant RBAC permissions not currently held"),
        "{}",
        s.message
    );
    // A binding to a role that does not exist is 404 from the role lookup.
    let s = status(
        crbs.patch("to-ghost", &ssa, &Patch::Apply(binding("ghost")))
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code, 404);
    // `bind` on that one role allows binding it.
    fake.put_yaml(
        "kubectl",
        r#"apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: binder}
rules: [{apiGroups: [rbac.authorization.k8s.io], resources: [clusterroles], resourceNames: [cluster-admin], verbs: [bind]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: binder}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: binder}
subjects: [{kind: ServiceAccount, name: writer, namespace: ops}]
"#,
    )
    .unwrap();
    crbs.patch(
        "to-cluster-admin",
        &ssa,
        &Patch::Apply(binding("cluster-admin")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn discovery_is_for_authenticated_users_and_version_for_everyone() {
    let (fake, bot) = with_role(json!([])).await;
    let v = bot.apiserver_version().await.unwrap();
    assert_eq!(v.major, "1");
    kube::discovery::Discovery::new(bot.clone())
        .run()
        .await
        .unwrap();
    let anon = client(&fake, None);
    anon.apiserver_version().await.unwrap();
    let s = status(anon.list_core_api_versions().await.unwrap_err());
    assert_eq!(s.code, 403);
    assert_eq!(
        s.message,
        r#"forbidden: User "system:anonymous" cannot get path "/api""#
    );
}
