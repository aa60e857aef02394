//! Kubernetes through `kube`: server-side apply under field manager `mop`, prune of
//! what carries MOP's ownership label and the repository no longer holds, and
//! drift Events.
//!
//! Follows "Server-Side Apply"
//! (<https://kubernetes.io/docs/reference/using-api/server-side-apply/>) and the
//! Events API (<https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/>).

use std::any::TypeId;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{
    ConfigMap, Namespace, ObjectReference, Pod, Service, ServiceAccount,
};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams,
    ValidationDirective,
};
use kube::core::ApiResource;
use serde_json::{Map, Value, json};

use super::rollout::{self, Health, RolloutReport, RolloutState};
use super::{Applier, ApplyError, ObserveFailure, Observed, Scope};
use crate::plan::{Action, Change};
use crate::render::{Desired, Kind, MANAGED_BY, Resource, ResourceId, TENANT_LABEL, Target};

/// The field manager of every write; one manager, so MOP's fields are one set.
pub const FIELD_MANAGER: &str = "mop";
/// `reportingController` of MOP's Events.
pub const REPORTING_CONTROLLER: &str = "mop.dev/syncer";

/// One kind MOP renders: its API endpoint and whether it lives in a namespace.
struct KindApi {
    kind: Kind,
    api: ApiResource,
    namespaced: bool,
}

fn kind_api<K>(kind: Kind) -> KindApi
where
    K: kube::Resource<DynamicType = ()>,
    K::Scope: 'static,
{
    KindApi {
        kind,
        api: ApiResource::erase::<K>(&()),
        namespaced: TypeId::of::<K::Scope>() == TypeId::of::<NamespaceResourceScope>(),
    }
}

/// Every kind `render::kubernetes` produces; endpoints come from `k8s-openapi`, so
/// no discovery round trip is needed.
fn kinds() -> Vec<KindApi> {
    vec![
        kind_api::<Namespace>(Kind::Namespace),
        kind_api::<ServiceAccount>(Kind::ServiceAccount),
        kind_api::<ClusterRole>(Kind::ClusterRole),
        kind_api::<ClusterRoleBinding>(Kind::ClusterRoleBinding),
        kind_api::<Role>(Kind::Role),
        kind_api::<RoleBinding>(Kind::RoleBinding),
        kind_api::<ConfigMap>(Kind::ConfigMap),
        kind_api::<Service>(Kind::Service),
        kind_api::<Deployment>(Kind::Deployment),
        kind_api::<DaemonSet>(Kind::DaemonSet),
        kind_api::<k8s_openapi::api::networking::v1::NetworkPolicy>(Kind::NetworkPolicy),
    ]
}

/// Applies MOP's Kubernetes objects to one cluster.
pub struct KubeApplier {
    client: kube::Client,
    kinds: Vec<KindApi>,
    /// Workload rollouts as `observe` found them and `apply` left them.
    rollouts: Mutex<BTreeMap<ResourceId, RolloutReport>>,
}

impl KubeApplier {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            kinds: kinds(),
            rollouts: Mutex::new(BTreeMap::new()),
        }
    }

    fn record(&self, id: &ResourceId, r: RolloutReport) {
        // A poisoned map only loses the report, never the rollout.
        if let Ok(mut m) = self.rollouts.lock() {
            m.insert(id.clone(), r);
        }
    }

    /// Follows the rollout an apply of `desired` started. Healthy: the change is
    /// applied. Not healthy within the timeout: the last healthy images go back
    /// (when `before` had any), an Event says so, and the change fails with what
    /// was wrong and what runs now.
    async fn roll_out(
        &self,
        id: &ResourceId,
        api: &Api<DynamicObject>,
        desired: &Value,
        before: Option<&Value>,
    ) -> Result<(), ApplyError> {
        let kind = id.kind;
        let (ns, name) = ns_name(desired);
        let ns = ns.unwrap_or_default().to_string();
        let name = name.to_string();
        let timeout = rollout::timeout(desired);
        let workload = rollout::workload_name(kind, desired);
        let pinned = rollout::images(desired);
        let mut report = RolloutReport {
            workload: workload.clone(),
            namespace: ns.clone(),
            pinned: rollout::show(&pinned),
            running: rollout::show(&pinned),
            state: RolloutState::Healthy,
            rolled_back: false,
            message: None,
        };
        let why = match rollout::wait(api, &name, kind, timeout).await {
            Health::Healthy => {
                self.record(id, report);
                return Ok(());
            }
            Health::Failed(m) | Health::Progressing(m) => m,
        };
        let mut msg = format!(
            "rollout of {workload} in {ns} to {} not healthy within {}s: {why}",
            report.pinned,
            timeout.as_secs()
        );
        let pods = Api::namespaced_with(self.client.clone(), &ns, &ApiResource::erase::<Pod>(&()));
        for p in rollout::stuck_pods(&pods, desired).await {
            msg.push_str("; ");
            msg.push_str(&p);
        }
        // Rolling back to the very images that failed would change nothing: the
        // rollout failed for another reason (a changed argument, a missing Secret).
        let target = before
            .and_then(|b| rollout::last_healthy(kind, b))
            .filter(|t| t.images != pinned);
        let reason = match target {
            Some(to) => {
                let back = rollout::rollback_body(desired, &to);
                let applied = match serde_json::from_value::<DynamicObject>(back) {
                    Ok(obj) => api
                        .patch(&name, &strict_apply(FIELD_MANAGER), &Patch::Apply(&obj))
                        .await
                        .map_err(|e| describe(&e)),
                    Err(e) => Err(e.to_string()),
                };
                match applied {
                    Ok(_) => {
                        msg.push_str(&format!("; rolled back to {}", rollout::show(&to.images)));
                        if let Health::Progressing(w) | Health::Failed(w) =
                            rollout::wait(api, &name, kind, timeout).await
                        {
                            msg.push_str(&format!(", which is not healthy yet either: {w}"));
                        }
                        report.running = rollout::show(&to.images);
                        report.state = RolloutState::RolledBack;
                        report.rolled_back = true;
                        "RolledBack"
                    }
                    Err(e) => {
                        msg.push_str(&format!(
                            "; rolling back to {} failed: {e}",
                            rollout::show(&to.images)
                        ));
                        report.state = RolloutState::Failed;
                        "RolloutFailed"
                    }
                }
            }
            None => {
                msg.push_str("; no earlier healthy version to roll back to");
                report.state = RolloutState::Failed;
                "RolloutFailed"
            }
        };
        tracing::warn!(workload = %workload, namespace = %ns, reason, "{msg}");
        if let Some(regarding) = Regarding::of(id)
            && let Err(e) = emit_event(
                &self.client,
                &ns,
                &regarding,
                reason,
                &msg,
                EventType::Warning,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot record the rollout Event");
        }
        report.message = Some(msg.clone());
        self.record(id, report);
        Err(ApplyError::new(msg))
    }

    fn kind(&self, kind: Kind) -> Result<&KindApi, ApplyError> {
        self.kinds
            .iter()
            .find(|k| k.kind == kind)
            .ok_or_else(|| ApplyError::new(format!("{kind} is not a Kubernetes kind")))
    }

    fn api(&self, k: &KindApi, namespace: Option<&str>) -> Api<DynamicObject> {
        match namespace.filter(|_| k.namespaced) {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &k.api),
            None => Api::all_with(self.client.clone(), &k.api),
        }
    }
}

/// Where the rollout of a live workload stands against its desired body, and
/// why to hold it when it was rolled back from the images still pinned.
fn rollout_state(
    id: &ResourceId,
    desired: &Value,
    live: &Value,
) -> (RolloutReport, Option<String>) {
    let pinned = rollout::images(desired);
    let running = rollout::images(live);
    let mut r = RolloutReport {
        workload: rollout::workload_name(id.kind, live),
        namespace: ns_name(live).0.unwrap_or_default().to_string(),
        pinned: rollout::show(&pinned),
        running: rollout::show(&running),
        state: RolloutState::Progressing,
        rolled_back: false,
        message: None,
    };
    if running != pinned && rollout::rolled_back_from(live).as_ref() == Some(&pinned) {
        r.state = RolloutState::RolledBack;
        let why = format!(
            "pinned {}, running {} (rolled back): the pinned version did not become healthy; \
             kept until versions.yaml pins another version",
            r.pinned, r.running
        );
        r.message = Some(why.clone());
        return (r, Some(why));
    }
    match rollout::health(id.kind, live) {
        Health::Healthy if running == pinned => r.state = RolloutState::Healthy,
        Health::Healthy => r.message = Some("the pinned version is not applied yet".into()),
        Health::Progressing(m) => r.message = Some(m),
        Health::Failed(m) => {
            r.state = RolloutState::Failed;
            r.message = Some(m);
        }
    }
    (r, None)
}

/// `metadata.namespace` and `metadata.name` of a body.
fn ns_name(v: &Value) -> (Option<&str>, &str) {
    let m = &v["metadata"];
    (
        m["namespace"].as_str().filter(|s| !s.is_empty()),
        m["name"].as_str().unwrap_or_default(),
    )
}

/// Puts MOP's ownership labels on a body: observe finds objects by them, so an
/// object without them would be created again on every reconcile and never pruned.
fn with_ownership(v: &mut Value, tenant: Option<&str>) {
    let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(labels) = labels.as_object_mut() {
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
        if let Some(t) = tenant {
            labels.insert(TENANT_LABEL.into(), t.into());
        }
    }
}

fn parse(r: &Resource) -> Result<Value, ApplyError> {
    serde_json::from_str(&r.body)
        .map_err(|e| ApplyError::new(format!("{}: body is not JSON: {e}", r.id)))
}

/// `live` reduced to the fields `desired` has, recursively (arrays element by
/// element): what the server fills in (defaults, `status`, `managedFields`,
/// `resourceVersion`, other managers' labels) is not a difference, a changed value
/// of a field MOP sets is. Live array elements beyond the desired ones are kept
/// whole, so an added container or port is a difference too.
fn project(live: &Value, desired: &Value) -> Value {
    match (live, desired) {
        (Value::Object(l), Value::Object(d)) => Value::Object(
            d.iter()
                .filter_map(|(k, dv)| l.get(k).map(|lv| (k.clone(), project(lv, dv))))
                .collect(),
        ),
        (Value::Array(l), Value::Array(d)) => Value::Array(
            l.iter()
                .enumerate()
                .map(|(i, lv)| match d.get(i) {
                    Some(dv) => project(lv, dv),
                    None => lv.clone(),
                })
                .collect(),
        ),
        _ => live.clone(),
    }
}

/// What a live object without a desired counterpart is reported as: enough to
/// name it in a plan and to delete it.
fn prune_stub(api_version: &str, kind: &str, live: &Value) -> Value {
    let m = &live["metadata"];
    let mut meta = Map::new();
    meta.insert("name".into(), m["name"].clone());
    if let Some(ns) = m["namespace"].as_str().filter(|s| !s.is_empty()) {
        meta.insert("namespace".into(), ns.into());
    }
    if let Some(labels) = m.get("labels") {
        meta.insert("labels".into(), labels.clone());
    }
    json!({ "apiVersion": api_version, "kind": kind, "metadata": meta })
}

/// Server-side applies one of MOP's own bookkeeping ConfigMaps (the
/// inventory, the sync-request hand-off) in its namespace, as
/// `field_manager`, with `data` as its whole data.
pub(crate) async fn apply_own_config_map(
    client: &kube::Client,
    namespace: &str,
    name: &str,
    field_manager: &str,
    data: Value,
) -> Result<(), kube::Error> {
    let body = json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/part-of": "mop" },
        },
        "data": data,
    });
    Api::<ConfigMap>::namespaced(client.clone(), namespace)
        .patch(name, &strict_apply(field_manager), &Patch::Apply(&body))
        .await
        .map(|_| ())
}

/// Server-side apply as `manager`, forced, with `fieldValidation=Strict`: a
/// field the API server does not know, or given twice, fails the apply instead
/// of being dropped with a warning nobody reads.
fn strict_apply(manager: &str) -> PatchParams {
    PatchParams::apply(manager)
        .force()
        .validation(ValidationDirective::Strict)
}

/// `POST` of `obj` with `fieldValidation=Strict` (`PostParams` cannot say it):
/// an unknown or repeated field fails the write instead of being dropped with
/// a warning nobody reads.
pub async fn create_strict<K>(api: &Api<K>, obj: &K) -> kube::Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(api.resource_url())
        .create(&PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    api.clone().into_client().request(strict(req)?).await
}

/// `PUT` of `obj` as `name` with `fieldValidation=Strict`.
pub async fn replace_strict<K>(api: &Api<K>, name: &str, obj: &K) -> kube::Result<K>
where
    K: kube::Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let body = serde_json::to_vec(obj).map_err(kube::Error::SerdeError)?;
    let req = kube::core::Request::new(api.resource_url())
        .replace(name, &PostParams::default(), body)
        .map_err(kube::Error::BuildRequest)?;
    api.clone().into_client().request(strict(req)?).await
}

fn strict(mut req: http::Request<Vec<u8>>) -> kube::Result<http::Request<Vec<u8>>> {
    let uri = req.uri().to_string();
    let sep = match uri.chars().last() {
        Some('?' | '&') => "",
        _ if uri.contains('?') => "&",
        _ => "?",
    };
    *req.uri_mut() = format!("{uri}{sep}fieldValidation=Strict")
        .parse::<http::Uri>()
        .map_err(|e| kube::Error::HttpError(e.into()))?;
    Ok(req)
}

fn describe(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(s) => format!("HTTP {} {}: {}", s.code, s.reason, s.message),
        other => {
            let mut s = other.to_string();
            let mut src = std::error::Error::source(other);
            while let Some(c) = src {
                s.push_str(": ");
                s.push_str(&c.to_string());
                src = c.source();
            }
            s
        }
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[async_trait::async_trait]
impl Applier for KubeApplier {
    fn target(&self) -> Target {
        Target::Kubernetes
    }

    async fn observe(&self, _scope: &Scope, desired: &Desired) -> Observed {
        // Desired objects by (kind, name) whatever their tenant, so an object whose
        // tenant label changed is one update, not a prune racing a create.
        let mut wanted: BTreeMap<(Kind, &str), (&ResourceId, Value)> = BTreeMap::new();
        for r in desired.resources.values() {
            if let Ok(v) = serde_json::from_str::<Value>(&r.body) {
                let mut v = v;
                with_ownership(&mut v, r.id.tenant.as_deref());
                wanted.insert((r.id.kind, r.id.name.as_str()), (&r.id, v));
            }
        }
        let selector = format!("{}={}", MANAGED_BY.0, MANAGED_BY.1);
        let lp = ListParams::default().labels(&selector);
        let mut observed = Observed::default();
        let mut rollouts = BTreeMap::new();
        for k in &self.kinds {
            let list = match self.api(k, None).list(&lp).await {
                Ok(l) => l,
                Err(e) => {
                    observed.failures.push(ObserveFailure {
                        tenant: None,
                        error: format!("listing {}: {}", k.api.plural, describe(&e)),
                    });
                    continue;
                }
            };
            for obj in list.items {
                let mut live = match serde_json::to_value(&obj) {
                    Ok(v) => v,
                    Err(e) => {
                        observed.failures.push(ObserveFailure {
                            tenant: None,
                            error: format!("reading a listed {}: {e}", k.api.kind),
                        });
                        continue;
                    }
                };
                // List items carry no apiVersion/kind of their own.
                live["apiVersion"] = k.api.api_version.clone().into();
                live["kind"] = k.api.kind.clone().into();
                let (ns, name) = ns_name(&live);
                let name = match ns {
                    Some(ns) => format!("{ns}/{name}"),
                    None => name.to_string(),
                };
                let (id, body) = match wanted.get(&(k.kind, name.as_str())) {
                    Some((id, d)) => {
                        let mut body = project(&live, d);
                        if rollout::is_workload(k.kind) {
                            let (r, held) = rollout_state(id, d, &live);
                            rollouts.insert((*id).clone(), r);
                            match held {
                                Some(why) => {
                                    observed.held.insert((*id).clone(), why);
                                }
                                // A rollback record the repository has moved past
                                // (it pins other images now) would hold a later
                                // re-pin of the failed images: show it as a
                                // difference, so the next apply drops it.
                                None => {
                                    if let Some(a) = live["metadata"]["annotations"]
                                        .get(rollout::ROLLED_BACK_FROM)
                                    {
                                        body["metadata"]["annotations"]
                                            [rollout::ROLLED_BACK_FROM] = a.clone();
                                    }
                                }
                            }
                        }
                        ((*id).clone(), body)
                    }
                    None => (
                        ResourceId {
                            target: Target::Kubernetes,
                            tenant: live["metadata"]["labels"][TENANT_LABEL]
                                .as_str()
                                .map(str::to_string),
                            kind: k.kind,
                            name,
                        },
                        prune_stub(&k.api.api_version, &k.api.kind, &live),
                    ),
                };
                observed.live.insert(
                    id.clone(),
                    Resource {
                        id,
                        title: None,
                        body: Arc::from(body.to_string()),
                    },
                );
            }
        }
        if let Ok(mut m) = self.rollouts.lock() {
            *m = rollouts;
        }
        observed
    }

    fn rollouts(&self) -> Vec<RolloutReport> {
        self.rollouts
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    fn canonical(&self, desired: &Resource) -> Resource {
        match serde_json::from_str::<Value>(&desired.body) {
            Ok(mut v) => {
                with_ownership(&mut v, desired.id.tenant.as_deref());
                Resource {
                    body: Arc::from(v.to_string()),
                    ..desired.clone()
                }
            }
            Err(_) => desired.clone(),
        }
    }

    async fn apply(
        &self,
        _scope: &Scope,
        change: &Change,
        desired: Option<&Resource>,
        live: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let k = self.kind(change.id.kind)?;
        let fail = |e: kube::Error| ApplyError::new(format!("{}: {}", change.id, describe(&e)));
        match change.action {
            Action::Create | Action::Update => {
                let desired = desired
                    .ok_or_else(|| ApplyError::new(format!("{}: no desired object", change.id)))?;
                let mut body = parse(desired)?;
                with_ownership(&mut body, change.id.tenant.as_deref());
                let (ns, name) = ns_name(&body);
                let name = name.to_string();
                let api = self.api(k, ns);
                let workload = rollout::is_workload(change.id.kind);
                // The version running before, to go back to if this one fails.
                let before = if workload {
                    api.get_opt(&name)
                        .await
                        .map_err(fail)?
                        .and_then(|o| serde_json::to_value(o).ok())
                } else {
                    None
                };
                let obj: DynamicObject = serde_json::from_value(body.clone())
                    .map_err(|e| ApplyError::new(format!("{}: {e}", change.id)))?;
                // `force`: a field MOP sets that someone changed by hand is owned by
                // that someone now, and a plain apply would answer 409 Conflict. The
                // repository is the source of truth, so MOP takes the field back
                // (that is what healing drift means); fields MOP does not set stay
                // with whoever set them.
                let pp = strict_apply(FIELD_MANAGER);
                let applied = api
                    .patch(&name, &pp, &Patch::Apply(&obj))
                    .await
                    .map_err(fail)?;
                // Only a new generation (a changed spec) starts a rollout; labels
                // or annotations alone do not.
                let rolls = workload
                    && before.as_ref().is_none_or(|b| {
                        b["metadata"]["generation"].as_i64() != applied.metadata.generation
                    });
                if rolls {
                    return self
                        .roll_out(&change.id, &api, &body, before.as_ref())
                        .await;
                }
                Ok(())
            }
            Action::Delete => {
                let live =
                    live.ok_or_else(|| ApplyError::new(format!("{}: no live object", change.id)))?;
                let body = parse(live)?;
                let (ns, name) = ns_name(&body);
                let api = self.api(k, ns);
                if change.id.kind == Kind::Namespace {
                    // A namespace holds the tenant's workloads and data, which MOP
                    // never owned: pruning only gives it back, by removing the
                    // labels that made it MOP's. A merge patch removes them even
                    // when another manager also owns them, where an apply without
                    // them would leave them and prune again on every reconcile.
                    let patch = json!({ "metadata": { "labels": {
                        MANAGED_BY.0: null,
                        TENANT_LABEL: null,
                    } } });
                    let pp = PatchParams {
                        field_manager: Some(FIELD_MANAGER.into()),
                        field_validation: Some(ValidationDirective::Strict),
                        ..PatchParams::default()
                    };
                    match api.patch(name, &pp, &Patch::Merge(&patch)).await {
                        Ok(_) => Ok(()),
                        Err(e) if is_not_found(&e) => Ok(()),
                        Err(e) => Err(fail(e)),
                    }
                } else {
                    match api.delete(name, &DeleteParams::default()).await {
                        Ok(_) => Ok(()),
                        // Already gone: what the delete was for.
                        Err(e) if is_not_found(&e) => Ok(()),
                        Err(e) => Err(fail(e)),
                    }
                }
            }
        }
    }
}

/// The object an Event is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Regarding {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// `None` for cluster-scoped objects.
    pub namespace: Option<String>,
}

impl Regarding {
    /// The object a Kubernetes resource of the desired state is (`None` for other
    /// targets).
    pub fn of(id: &ResourceId) -> Option<Self> {
        if id.target != Target::Kubernetes {
            return None;
        }
        let k = kinds().into_iter().find(|k| k.kind == id.kind)?;
        let (namespace, name) = match id.name.split_once('/') {
            Some((ns, name)) if k.namespaced => (Some(ns.to_string()), name.to_string()),
            _ => (None, id.name.clone()),
        };
        Some(Self {
            api_version: k.api.api_version,
            kind: k.api.kind,
            name,
            namespace,
        })
    }
}

/// Severity of an Event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    Normal,
    Warning,
}

/// Most bytes of an Event's `note` the API accepts.
const MAX_NOTE: usize = 1024;

/// Records an `events.k8s.io/v1` Event about `regarding` (e.g. reason `Drifted`
/// when a MOP-managed object was changed by hand), shown by `kubectl describe`
/// and `kubectl events`.
///
/// The Event goes to the object's own namespace (the API refuses an Event about a
/// namespaced object elsewhere); Events about cluster-scoped objects go to
/// `namespace` (MOP's). `reportingInstance` is the pod name (`HOSTNAME`), so two
/// replicas' Events can be told apart.
pub async fn emit_event(
    client: &kube::Client,
    namespace: &str,
    regarding: &Regarding,
    reason: &str,
    note: &str,
    type_: EventType,
) -> Result<(), ApplyError> {
    let ns = regarding.namespace.as_deref().unwrap_or(namespace);
    let mut note = note.to_string();
    if note.len() > MAX_NOTE {
        let mut end = MAX_NOTE;
        while !note.is_char_boundary(end) {
            end -= 1;
        }
        note.truncate(end);
    }
    let instance = std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| REPORTING_CONTROLLER.to_string());
    let event = Event {
        metadata: ObjectMeta {
            // The API server adds a random suffix; Events are never updated by
            // name, so a readable prefix is all the name needs to be.
            generate_name: Some(format!("{}.", regarding.name)),
            namespace: Some(ns.to_string()),
            ..ObjectMeta::default()
        },
        event_time: Some(MicroTime(k8s_openapi::jiff::Timestamp::now())),
        action: Some("Reconcile".into()),
        reason: Some(reason.to_string()),
        note: Some(note),
        type_: Some(
            match type_ {
                EventType::Normal => "Normal",
                EventType::Warning => "Warning",
            }
            .into(),
        ),
        regarding: Some(ObjectReference {
            api_version: Some(regarding.api_version.clone()),
            kind: Some(regarding.kind.clone()),
            name: Some(regarding.name.clone()),
            namespace: regarding.namespace.clone(),
            ..ObjectReference::default()
        }),
        reporting_controller: Some(REPORTING_CONTROLLER.into()),
        reporting_instance: Some(instance),
        ..Event::default()
    };
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    create_strict(&api, &event).await.map_err(|e| {
        ApplyError::new(format!(
            "event {reason} for {} {}: {}",
            regarding.kind,
            regarding.name,
            describe(&e)
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_replaces_ask_for_strict_field_validation() {
        let r = kube::core::Request::new("/apis/events.k8s.io/v1/namespaces/a/events");
        let post = strict(r.create(&PostParams::default(), vec![]).unwrap()).unwrap();
        assert_eq!(
            post.uri().to_string(),
            "/apis/events.k8s.io/v1/namespaces/a/events?fieldValidation=Strict"
        );
        let pp = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let put = strict(r.replace("x", &pp, vec![]).unwrap()).unwrap();
        assert_eq!(
            put.uri().to_string(),
            "/apis/events.k8s.io/v1/namespaces/a/events/x?&dryRun=All&fieldValidation=Strict"
        );
    }

    #[test]
    fn projection_keeps_only_desired_fields() {
        let desired = json!({"metadata": {"name": "a", "labels": {"x": "1"}},
                             "spec": {"ports": [{"port": 80}]}});
        let live = json!({"metadata": {"name": "a", "uid": "u", "labels": {"x": "1", "y": "2"}},
                          "spec": {"ports": [{"port": 80, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
                          "status": {}});
        assert_eq!(project(&live, &desired), desired);
        let changed = json!({"metadata": {"name": "a", "labels": {"x": "2"}},
                             "spec": {"ports": [{"port": 80}, {"port": 81}]}});
        let p = project(&changed, &desired);
        assert_eq!(p["metadata"]["labels"]["x"], "2");
        assert_eq!(p["spec"]["ports"].as_array().map(Vec::len), Some(2));
    }

    #[test]
    fn regarding_of_namespaced_and_cluster_ids() {
        let id = |kind, name: &str| ResourceId {
            target: Target::Kubernetes,
            tenant: None,
            kind,
            name: name.into(),
        };
        let r = Regarding::of(&id(Kind::ConfigMap, "mop/cfg")).unwrap();
        assert_eq!(
            (r.api_version.as_str(), r.kind.as_str(), r.name.as_str()),
            ("v1", "ConfigMap", "cfg")
        );
        assert_eq!(r.namespace.as_deref(), Some("mop"));
        let r = Regarding::of(&id(Kind::ClusterRole, "mop-agent")).unwrap();
        assert_eq!(r.api_version, "rbac.authorization.k8s.io/v1");
        assert_eq!(r.namespace, None);
    }
}
