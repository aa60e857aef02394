//! One sync of a repository, shared by `mop sync` and `mop serve`: connect the
//! appliers that `mop.yaml` describes (reading credentials by reference, afresh
//! every time, so rotated Secrets are picked up) and reconcile.

use std::collections::BTreeSet;

use crate::apply::http::RetryPolicy;
use crate::apply::{Applier, ApplyError, Scope, TenantRef, engine, inventory};
use crate::model::SecretRef;
use crate::render::Target;
use crate::repo::Repo;

/// What the appliers need besides `mop.yaml`.
#[derive(Clone, Default)]
pub struct Connections {
    /// The Kubernetes API; `None` when Kubernetes is not a selected target and no
    /// `secret:` reference must be read.
    pub kube: Option<kube::Client>,
    /// Targets to reconcile; empty means all.
    pub only: BTreeSet<Target>,
    pub retry: RetryPolicy,
}

impl Connections {
    pub fn selected(&self, t: Target) -> bool {
        self.only.is_empty() || self.only.contains(&t)
    }
}

/// The appliers of every selected target, in apply order: Grafana, the rulers,
/// Mimir's Alertmanager, then Kubernetes (workload rollouts last).
pub async fn appliers(
    repo: &Repo,
    conn: &Connections,
) -> Result<Vec<Box<dyn Applier>>, ApplyError> {
    let p = &repo.platform;
    let mut out: Vec<Box<dyn Applier>> = Vec::new();
    if conn.selected(Target::Grafana) {
        let password = read_secret(&p.grafana.admin_password, &p.namespace, conn.kube.as_ref())
            .await
            .map_err(|e| ApplyError::new(format!("grafana.admin_password in mop.yaml: {e}")))?;
        out.push(Box::new(crate::apply::grafana::GrafanaApplier::new(
            &p.grafana.url.value,
            &p.grafana.admin_user,
            password.trim_end_matches(['\n', '\r']),
            conn.retry,
        )?));
    }
    if conn.selected(Target::MimirRuler) {
        out.push(Box::new(crate::apply::ruler::RulerApplier::new(
            Target::MimirRuler,
            &p.backends.mimir.url.value,
            conn.retry,
        )?));
    }
    if conn.selected(Target::LokiRuler) {
        out.push(Box::new(crate::apply::ruler::RulerApplier::new(
            Target::LokiRuler,
            &p.backends.loki.url.value,
            conn.retry,
        )?));
    }
    if conn.selected(Target::MimirAlertmanager) {
        out.push(Box::new(
            crate::apply::alertmanager::AlertmanagerApplier::new(
                &p.backends.mimir.url.value,
                conn.retry,
                conn.kube.clone(),
                &p.namespace,
            )?,
        ));
    }
    if conn.selected(Target::Kubernetes) {
        let Some(client) = &conn.kube else {
            return Err(ApplyError::new(
                "the kubernetes target needs a cluster: run in a pod, set KUBECONFIG, or leave it out with --only",
            ));
        };
        out.push(Box::new(crate::apply::kubernetes::KubeApplier::new(
            client.clone(),
        )));
    }
    Ok(out)
}

/// Reads a credential by reference: a file (a mounted Secret), or a key of a
/// Kubernetes Secret in MOP's namespace.
pub async fn read_secret(
    r: &SecretRef,
    namespace: &str,
    kube: Option<&kube::Client>,
) -> Result<String, String> {
    match r {
        SecretRef::File(path) => std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the credential file {path}: {e}")),
        SecretRef::Secret(s) => {
            let Some(client) = kube else {
                return Err(format!(
                    "secret {}/{} is a Kubernetes Secret but no cluster is configured; use `file:` or set KUBECONFIG",
                    s.name, s.key
                ));
            };
            let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
                kube::Api::namespaced(client.clone(), namespace);
            let secret = api
                .get(&s.name)
                .await
                .map_err(|e| format!("cannot read Secret {namespace}/{}: {e}", s.name))?;
            let value = secret
                .data
                .as_ref()
                .and_then(|d| d.get(&s.key))
                .ok_or_else(|| format!("Secret {namespace}/{} has no key {}", s.name, s.key))?;
            String::from_utf8(value.0.clone())
                .map_err(|_| format!("Secret {namespace}/{} key {} is not UTF-8", s.name, s.key))
        }
    }
}

/// One reconcile of `desired` (rendered from `repo`): connects the appliers,
/// widens the scope with the tenants applied before (the cluster's inventory and
/// `previous`), reconciles, and records the repository's tenants as the applied
/// ones once everything converged.
pub async fn reconcile(
    repo: &Repo,
    desired: &crate::render::Desired,
    conn: &Connections,
    opts: &engine::Options,
    previous: Vec<TenantRef>,
    progress: &(dyn Fn(&Target, &engine::ChangeResult) + Sync),
) -> Result<engine::Report, ApplyError> {
    let appliers = appliers(repo, conn).await?;
    let ns = &repo.platform.namespace;
    let recorded = match &conn.kube {
        // Without the inventory a removed tenant's objects would be missed, not
        // deleted wrongly; still, say so.
        Some(k) => inventory::load(k, ns).await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the tenant inventory; objects of removed tenants may stay");
            inventory::Inventory::default()
        }),
        None => inventory::Inventory::default(),
    };
    let scope = Scope::of(repo)
        .with_previous(recorded.tenants.iter().cloned())
        .with_previous(previous);
    let report = engine::reconcile(desired, &scope, &appliers, opts, progress).await;
    if let (Some(k), false, true) = (&conn.kube, opts.dry_run, report.settled()) {
        let mut now: Vec<TenantRef> = Scope::of(repo).tenants.into_values().collect();
        // A removed tenant leaves the inventory only once every target is rid of
        // it: after a sync of some targets (`--only`), the others may still hold
        // its objects, and without the inventory nothing would find them again.
        let every_target = [
            Target::Grafana,
            Target::MimirRuler,
            Target::LokiRuler,
            Target::MimirAlertmanager,
            Target::Kubernetes,
        ]
        .into_iter()
        .all(|t| conn.selected(t));
        if !every_target {
            for t in &recorded.tenants {
                if !now.iter().any(|n| n.key == t.key) {
                    now.push(t.clone());
                }
            }
        }
        let now = inventory::Inventory {
            tenants: now,
            // Only a sync of every target applied the revision.
            revision: if every_target {
                desired.revision.clone()
            } else {
                recorded.revision.clone()
            },
        };
        if let Err(e) = inventory::save(k, ns, &recorded, &now).await {
            tracing::warn!(error = %e, "cannot record the tenant inventory");
        }
    }
    Ok(report)
}
