//! `docs/security.md`'s promise, tested: every Kubernetes API call the syncer
//! makes (the table in `support/api_calls.rs`, which the tests running the
//! syncer check every recorded request against) is allowed by
//! `deploy/base/rbac.yaml`, for the objects repo-template renders, evaluated by
//! the Kubernetes fake's RBAC authorizer.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;

use mop_kube_fake::{Attributes, FakeKube, User};
use mop_syncer::render::Target;
use serde_json::Value;
use support::api_calls::{CALLS, Call, Name, Scope};

/// (group, resource, namespace, name) of every rendered Kubernetes object.
fn rendered() -> Vec<(String, String, String, String)> {
    let (desired, _) = support::rendered_template();
    desired
        .resources
        .values()
        .filter(|r| r.id.target == Target::Kubernetes)
        .map(|r| {
            let b: Value = serde_json::from_str(&r.body).unwrap();
            let group = b["apiVersion"]
                .as_str()
                .unwrap()
                .split_once('/')
                .map_or("", |(g, _)| g)
                .to_string();
            let resource = match b["kind"].as_str().unwrap() {
                "Namespace" => "namespaces",
                "ServiceAccount" => "serviceaccounts",
                "ConfigMap" => "configmaps",
                "Service" => "services",
                "Deployment" => "deployments",
                "DaemonSet" => "daemonsets",
                "ClusterRole" => "clusterroles",
                "ClusterRoleBinding" => "clusterrolebindings",
                "Role" => "roles",
                "RoleBinding" => "rolebindings",
                "NetworkPolicy" => "networkpolicies",
                other => panic!("render produces {other}: add it to support/api_calls.rs and here"),
            };
            let name = b["metadata"]["name"].as_str().unwrap().to_string();
            let ns = match b["metadata"]["namespace"].as_str() {
                Some(ns) => ns.to_string(),
                // The request info of a Namespace names the namespace itself.
                None if resource == "namespaces" => name.clone(),
                None => String::new(),
            };
            (group, resource.to_string(), ns, name)
        })
        .collect()
}

/// The concrete requests a row stands for, with repo-template's objects.
fn instances(c: &Call, objects: &[(String, String, String, String)]) -> Vec<Attributes> {
    let base = Attributes {
        verb: c.verb.into(),
        resource_request: true,
        api_group: c.group.into(),
        api_version: "v1".into(),
        resource: c.resource.into(),
        subresource: c.subresource.into(),
        ..Attributes::default()
    };
    let at = |ns: &str, name: &str| Attributes {
        namespace: ns.into(),
        name: name.into(),
        ..base.clone()
    };
    let namespaces: BTreeSet<&str> = objects
        .iter()
        .filter(|o| o.1 != "namespaces" && !o.2.is_empty())
        .map(|o| o.2.as_str())
        .collect();
    let own = support::SYNCER_NAMESPACE;
    match (c.scope, c.name) {
        (_, Name::Rendered | Name::FieldSelectorRendered) => {
            let of: Vec<Attributes> = objects
                .iter()
                .filter(|o| o.0 == c.group && o.1 == c.resource)
                .map(|o| at(&o.2, &o.3))
                .collect();
            assert!(
                !of.is_empty(),
                "{c:?}: repo-template renders no {}",
                c.resource
            );
            of
        }
        (Scope::Own, Name::Fixed(n) | Name::Configured(n) | Name::FieldSelectorFixed(n)) => {
            vec![at(own, n)]
        }
        (Scope::AllNamespaces, Name::None) => vec![at("", "")],
        (Scope::Own, Name::None) => vec![at(own, "")],
        (Scope::OfObject, Name::None) => namespaces.iter().map(|ns| at(ns, "")).collect(),
        other => panic!("{c:?}: no instances for {other:?}"),
    }
}

#[tokio::test]
async fn every_call_in_the_table_is_allowed_by_deploy_base_rbac() {
    let fake = FakeKube::start().await.unwrap();
    support::install_syncer(&fake);
    let syncer = User::service_account(support::SYNCER_NAMESPACE, support::SYNCER_SA);
    let objects = rendered();
    let mut denied = Vec::new();
    let mut checked = 0;
    for c in CALLS {
        for a in instances(c, &objects) {
            let mut asks = vec![a.clone()];
            if c.creates {
                asks.push(Attributes {
                    verb: "create".into(),
                    ..a.clone()
                });
            }
            for a in asks {
                checked += 1;
                if !fake.can(&syncer, &a) {
                    denied.push(format!(
                        "{}: {} {}.{} {:?}/{:?}",
                        c.code, a.verb, a.resource, a.api_group, a.namespace, a.name
                    ));
                }
            }
        }
    }
    assert!(checked > CALLS.len(), "checked only {checked} requests");
    assert!(
        denied.is_empty(),
        "deploy/base/rbac.yaml does not allow these calls of the syncer: {denied:#?}"
    );
}

/// The table is not vacuous: a call nobody listed is caught.
#[tokio::test]
async fn an_unlisted_call_is_caught() {
    let fake = FakeKube::start().await.unwrap();
    let token = support::install_syncer(&fake);
    let client = support::client_with_token(&fake, &token);
    let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
        kube::Api::namespaced(client, support::SYNCER_NAMESPACE);
    // Refused by RBAC, and not in the table either.
    let _ = api.list(&Default::default()).await;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        support::api_calls::assert_recorded_calls_listed(&fake)
    }));
    assert!(caught.is_err());
}

/// Every write must ask for `fieldValidation=Strict`: an Event created the
/// way `kube`'s `Api::create` sends it (no parameter: the server's default,
/// Warn) is caught, and the same Event through the syncer's `create_strict`
/// is not.
#[tokio::test]
async fn a_write_without_strict_field_validation_is_caught() {
    use k8s_openapi::api::events::v1::Event;
    let fake = FakeKube::start().await.unwrap();
    let token = support::install_syncer(&fake);
    let client = support::client_with_token(&fake, &token);
    let api: kube::Api<Event> = kube::Api::namespaced(client, support::SYNCER_NAMESPACE);
    let event = |name: &str| Event {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        event_time: Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(
            k8s_openapi::jiff::Timestamp::now(),
        )),
        reporting_controller: Some(mop_syncer::apply::kubernetes::REPORTING_CONTROLLER.into()),
        reporting_instance: Some("t".into()),
        action: Some("Sync".into()),
        reason: Some("Drift".into()),
        type_: Some("Normal".into()),
        ..Default::default()
    };
    mop_syncer::apply::kubernetes::create_strict(&api, &event("strict"))
        .await
        .unwrap();
    support::api_calls::assert_recorded_calls_listed(&fake);
    let _ = api.create(&Default::default(), &event("lax")).await;
    let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        support::api_calls::assert_recorded_calls_listed(&fake)
    }));
    assert!(caught.is_err());
}
