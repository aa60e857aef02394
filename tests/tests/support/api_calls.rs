//! Every Kubernetes API call the syncer's code makes, as a table: what
//! `docs/security.md` means by "the RBAC is derived from what the code calls".
//! `tests/api_calls.rs` checks every row is allowed by deploy/base's RBAC; the
//! tests that run the syncer against the Kubernetes fake check that every request
//! the fake saw from the syncer's ServiceAccount is a row here
//! ([`assert_recorded_calls_listed`]), so a new call cannot go unlisted.

#![allow(dead_code)]

use mop_kube_fake::{Attributes, FakeKube, RecordedRequest};

/// Where the object of a call lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A cluster-scoped resource (for Namespaces, the API server's request
    /// info names the namespace itself as the request's namespace).
    Cluster,
    /// A list or watch across all namespaces.
    AllNamespaces,
    /// MOP's own namespace (`mop.yaml` `namespace:`, `mop-system`).
    Own,
    /// The namespace of a rendered object (MOP's, a backend's).
    OfObject,
}

/// Where the object name of a call comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Name {
    /// A rendered object's name (from the config repository and render).
    Rendered,
    /// A `metadata.name` field selector naming a rendered object.
    FieldSelectorRendered,
    /// A name fixed in the code.
    Fixed(&'static str),
    /// A `metadata.name` field selector naming an object fixed in the code.
    FieldSelectorFixed(&'static str),
    /// A name from configuration (`--lease-name`, a `secret:` reference in
    /// mop.yaml): repo-template's and the default are given.
    Configured(&'static str),
    /// No name: a list or watch by label selector, or a POST whose body names
    /// (or generates) the object, unknown to the authorizer.
    None,
}

/// One call.
#[derive(Debug, Clone, Copy)]
pub struct Call {
    /// The code that makes it.
    pub code: &'static str,
    pub method: &'static str,
    /// The verb the authorizer sees.
    pub verb: &'static str,
    pub group: &'static str,
    pub resource: &'static str,
    pub subresource: &'static str,
    pub scope: Scope,
    pub name: Name,
    /// A server-side apply: when the object does not exist yet, also
    /// authorized as `create` of that name (endpoints/handlers/patch.go).
    pub creates: bool,
}

#[allow(clippy::too_many_arguments)] // a table row, one argument per column
const fn call(
    code: &'static str,
    method: &'static str,
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    scope: Scope,
    name: Name,
    creates: bool,
) -> Call {
    Call {
        code,
        method,
        verb,
        group,
        resource,
        subresource: "",
        scope,
        name,
        creates,
    }
}

const APPS: &str = "apps";
const RBAC: &str = "rbac.authorization.k8s.io";
const OBSERVE: &str = "apply/kubernetes.rs KubeApplier::observe";
const APPLY: &str = "apply/kubernetes.rs KubeApplier::apply (server-side apply)";
const PRUNE: &str = "apply/kubernetes.rs KubeApplier::apply (prune)";
const BEFORE: &str = "apply/kubernetes.rs KubeApplier::apply (the running version, before)";
const WAIT: &str = "apply/rollout.rs wait (await_condition, then a last get)";
const ROLLBACK: &str = "apply/kubernetes.rs roll_out (rollback apply)";
const ALERTING: &str = "apply/alertmanager.rs AlertmanagerApplier::observe (credentials)";

use Name::*;
use Scope::*;

/// The table.
pub const CALLS: &[Call] = &[
    // Observe: every rendered kind, across the cluster, by MOP's label.
    call(
        OBSERVE,
        "GET",
        "list",
        "",
        "namespaces",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        "",
        "serviceaccounts",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        RBAC,
        "clusterroles",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        RBAC,
        "clusterrolebindings",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        RBAC,
        "roles",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        RBAC,
        "rolebindings",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        "networking.k8s.io",
        "networkpolicies",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        "",
        "configmaps",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        "",
        "services",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        APPS,
        "deployments",
        AllNamespaces,
        None,
        false,
    ),
    call(
        OBSERVE,
        "GET",
        "list",
        APPS,
        "daemonsets",
        AllNamespaces,
        None,
        false,
    ),
    // Apply: every rendered object.
    call(
        APPLY,
        "PATCH",
        "patch",
        "",
        "namespaces",
        Cluster,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        "",
        "serviceaccounts",
        OfObject,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        RBAC,
        "clusterroles",
        Cluster,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        RBAC,
        "clusterrolebindings",
        Cluster,
        Rendered,
        true,
    ),
    call(
        APPLY, "PATCH", "patch", RBAC, "roles", OfObject, Rendered, true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        RBAC,
        "rolebindings",
        OfObject,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        "networking.k8s.io",
        "networkpolicies",
        OfObject,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        "",
        "configmaps",
        OfObject,
        Rendered,
        true,
    ),
    call(
        APPLY, "PATCH", "patch", "", "services", OfObject, Rendered, true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        APPS,
        "deployments",
        OfObject,
        Rendered,
        true,
    ),
    call(
        APPLY,
        "PATCH",
        "patch",
        APPS,
        "daemonsets",
        OfObject,
        Rendered,
        true,
    ),
    // Rollouts of the workloads.
    call(
        BEFORE,
        "GET",
        "get",
        APPS,
        "deployments",
        OfObject,
        Rendered,
        false,
    ),
    call(
        BEFORE,
        "GET",
        "get",
        APPS,
        "daemonsets",
        OfObject,
        Rendered,
        false,
    ),
    call(
        WAIT,
        "GET",
        "list",
        APPS,
        "deployments",
        OfObject,
        FieldSelectorRendered,
        false,
    ),
    call(
        WAIT,
        "GET",
        "watch",
        APPS,
        "deployments",
        OfObject,
        FieldSelectorRendered,
        false,
    ),
    call(
        WAIT,
        "GET",
        "list",
        APPS,
        "daemonsets",
        OfObject,
        FieldSelectorRendered,
        false,
    ),
    call(
        WAIT,
        "GET",
        "watch",
        APPS,
        "daemonsets",
        OfObject,
        FieldSelectorRendered,
        false,
    ),
    call(
        ROLLBACK,
        "PATCH",
        "patch",
        APPS,
        "deployments",
        OfObject,
        Rendered,
        false,
    ),
    call(
        ROLLBACK,
        "PATCH",
        "patch",
        APPS,
        "daemonsets",
        OfObject,
        Rendered,
        false,
    ),
    call(
        "apply/rollout.rs stuck_pods",
        "GET",
        "list",
        "",
        "pods",
        OfObject,
        None,
        false,
    ),
    // Prune: deletes, and only MOP's labels off a namespace (a merge patch).
    call(
        PRUNE,
        "PATCH",
        "patch",
        "",
        "namespaces",
        Cluster,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        "",
        "serviceaccounts",
        OfObject,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        RBAC,
        "clusterroles",
        Cluster,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        RBAC,
        "clusterrolebindings",
        Cluster,
        Rendered,
        false,
    ),
    call(
        PRUNE, "DELETE", "delete", RBAC, "roles", OfObject, Rendered, false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        RBAC,
        "rolebindings",
        OfObject,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        "networking.k8s.io",
        "networkpolicies",
        OfObject,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        "",
        "configmaps",
        OfObject,
        Rendered,
        false,
    ),
    call(
        PRUNE, "DELETE", "delete", "", "services", OfObject, Rendered, false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        APPS,
        "deployments",
        OfObject,
        Rendered,
        false,
    ),
    call(
        PRUNE,
        "DELETE",
        "delete",
        APPS,
        "daemonsets",
        OfObject,
        Rendered,
        false,
    ),
    // Events about rendered objects: in their namespace, or MOP's for
    // cluster-scoped ones; the server generates the name.
    call(
        "apply/kubernetes.rs emit_event",
        "POST",
        "create",
        "events.k8s.io",
        "events",
        OfObject,
        None,
        false,
    ),
    // The tenant inventory.
    call(
        "apply/inventory.rs load",
        "GET",
        "get",
        "",
        "configmaps",
        Own,
        Fixed("mop-inventory"),
        false,
    ),
    call(
        "apply/inventory.rs save",
        "PATCH",
        "patch",
        "",
        "configmaps",
        Own,
        Fixed("mop-inventory"),
        true,
    ),
    // The webhook hand-off.
    call(
        "serve/handoff.rs request",
        "PATCH",
        "patch",
        "",
        "configmaps",
        Own,
        Fixed("mop-sync-request"),
        true,
    ),
    call(
        "serve/handoff.rs watch_requests",
        "GET",
        "list",
        "",
        "configmaps",
        Own,
        FieldSelectorFixed("mop-sync-request"),
        false,
    ),
    call(
        "serve/handoff.rs watch_requests",
        "GET",
        "watch",
        "",
        "configmaps",
        Own,
        FieldSelectorFixed("mop-sync-request"),
        false,
    ),
    // Leader election.
    call(
        "serve/leader.rs",
        "GET",
        "get",
        "coordination.k8s.io",
        "leases",
        Own,
        Configured("mop-syncer"),
        false,
    ),
    call(
        "serve/leader.rs",
        "POST",
        "create",
        "coordination.k8s.io",
        "leases",
        Own,
        None,
        false,
    ),
    call(
        "serve/leader.rs",
        "PUT",
        "update",
        "coordination.k8s.io",
        "leases",
        Own,
        Configured("mop-syncer"),
        false,
    ),
    // `secret:` references of mop.yaml.
    call(
        "sync.rs read_secret",
        "GET",
        "get",
        "",
        "secrets",
        Own,
        Configured("mop-grafana-admin"),
        false,
    ),
    // `secret:` references of alerting.yaml (repo-template's Secrets).
    call(
        ALERTING,
        "GET",
        "get",
        "",
        "secrets",
        Own,
        Configured("mop-alerting-platform"),
        false,
    ),
    call(
        ALERTING,
        "GET",
        "get",
        "",
        "secrets",
        Own,
        Configured("mop-alerting-checkout"),
        false,
    ),
    call(
        ALERTING,
        "GET",
        "get",
        "",
        "secrets",
        Own,
        Configured("mop-alerting-catalog"),
        false,
    ),
];

const OWN_NAMESPACE: &str = "mop-system";

/// Whether a request the fake recorded is the call `c`.
pub fn matches(c: &Call, r: &RecordedRequest) -> bool {
    let a = &r.attributes;
    let cluster_scoped =
        a.namespace.is_empty() || (a.resource == "namespaces" && a.namespace == a.name);
    let scope = match c.scope {
        Cluster => cluster_scoped && !a.name.is_empty(),
        AllNamespaces => a.namespace.is_empty() && a.name.is_empty(),
        Own => a.namespace == OWN_NAMESPACE,
        OfObject => !a.namespace.is_empty(),
    };
    let field_name = r.query.contains("fieldSelector=metadata.name");
    let name = match c.name {
        Rendered => !a.name.is_empty() && !field_name,
        FieldSelectorRendered => !a.name.is_empty() && field_name,
        Fixed(n) | Configured(n) => a.name == n && !field_name,
        FieldSelectorFixed(n) => a.name == n && field_name,
        None => a.name.is_empty(),
    };
    a.resource_request
        && r.method == c.method
        && a.verb == c.verb
        && a.api_group == c.group
        && a.resource == c.resource
        && a.subresource == c.subresource
        && scope
        && name
}

/// Fails when the fake saw a request from the syncer's ServiceAccount that no
/// row of [`CALLS`] describes.
#[track_caller]
pub fn assert_recorded_calls_listed(fake: &FakeKube) {
    let syncer = format!(
        "system:serviceaccount:{}:{}",
        super::SYNCER_NAMESPACE,
        super::SYNCER_SA
    );
    let unlisted: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.user == syncer)
        .filter(|r| !CALLS.iter().any(|c| matches(c, r)))
        .map(|r| {
            let a: &Attributes = &r.attributes;
            format!(
                "{} {}?{} (verb {}, group {:?}, resource {}, namespace {:?}, name {:?})",
                r.method, r.path, r.query, a.verb, a.api_group, a.resource, a.namespace, a.name
            )
        })
        .collect();
    let lax: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| {
            r.user == syncer && r.sends_object() && !r.query.contains("fieldValidation=Strict")
        })
        .map(|r| format!("{} {}?{}", r.method, r.path, r.query))
        .collect();
    assert!(
        lax.is_empty(),
        "writes without fieldValidation=Strict: {lax:#?}"
    );
    assert!(
        unlisted.is_empty(),
        "the syncer made Kubernetes calls that tests/tests/support/api_calls.rs does not list (add them, and check deploy/base/rbac.yaml allows them): {unlisted:#?}"
    );
}
