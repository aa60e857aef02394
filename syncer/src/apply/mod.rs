//! Applying: read the live state of each target, plan against it with the same pure
//! [`crate::plan::diff`] that `mop plan` uses, and perform the plan.
//!
//! Each target is one [`Applier`]. An applier knows its API; the engine
//! ([`engine`]) knows the safety rules (a failed read never becomes a delete, one
//! tenant's failure never blocks another, mass pruning is refused) and is the same
//! for every target.
//!
//! The contract that makes "no change plans zero writes" hold: `observe` reports
//! live objects, and `canonical` reports desired objects, in *one* normal form:
//! what the server adds (ids, versions, defaults, timestamps) is removed, write-only
//! secrets are replaced by a hash kept on the object, JSON keys are sorted. Two
//! objects that differ only in what the server adds then have equal bodies.

pub mod alertmanager;
pub mod engine;
pub mod grafana;
pub mod http;
pub mod inventory;
pub mod kubernetes;
pub mod rollout;
pub mod ruler;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::plan::Change;
use crate::render::{Desired, Resource, ResourceId, Target};
use crate::repo::Repo;

/// One tenant as the appliers address it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TenantRef {
    /// Directory name under `tenants/` (the `tenant` of a [`ResourceId`]).
    pub key: String,
    /// `X-Scope-OrgID` for the backends and rulers.
    pub id: String,
    /// Grafana organisation name.
    pub org: String,
}

/// The tenants an applier reads and writes: those of the repository plus those
/// known to have been applied before (so a removed tenant's objects can be pruned).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Scope {
    pub tenants: BTreeMap<String, TenantRef>,
    /// Grafana organisation whose datasources see every tenant.
    pub platform_org: String,
    /// Tenants whose Grafana organisation had another name when last applied
    /// (tenant key → that name), so the org is found and renamed, not replaced.
    pub renamed_orgs: BTreeMap<String, String>,
}

impl Scope {
    pub fn of(repo: &Repo) -> Self {
        let tenants = repo
            .tenants
            .iter()
            .map(|t| {
                (
                    t.key.clone(),
                    TenantRef {
                        key: t.key.clone(),
                        id: t.id().to_string(),
                        org: t.org_name().to_string(),
                    },
                )
            })
            .collect();
        Self {
            tenants,
            platform_org: repo.platform.grafana.platform_org.clone(),
            renamed_orgs: BTreeMap::new(),
        }
    }

    /// Adds tenants applied earlier that the repository no longer has.
    pub fn with_previous(mut self, previous: impl IntoIterator<Item = TenantRef>) -> Self {
        for t in previous {
            match self.tenants.get(&t.key) {
                Some(now) if now.org != t.org => {
                    self.renamed_orgs.entry(t.key.clone()).or_insert(t.org);
                }
                Some(_) => {}
                None => {
                    self.tenants.insert(t.key.clone(), t);
                }
            }
        }
        self
    }

    pub fn tenant(&self, key: &str) -> Option<&TenantRef> {
        self.tenants.get(key)
    }
}

/// A part of a target whose live state could not be read. Nothing in it is
/// created, updated or deleted in this reconcile: acting on a partial read is how
/// GitOps tools delete what they merely failed to see.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ObserveFailure {
    /// `None`: the whole target (its API is unreachable, or a platform-wide read
    /// failed).
    pub tenant: Option<String>,
    pub error: String,
}

/// The live state of one target, as far as it could be read.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// MOP-owned live objects in scope, bodies in the normal form of
    /// [`Applier::canonical`].
    pub live: BTreeMap<ResourceId, Resource>,
    pub failures: Vec<ObserveFailure>,
    /// Objects to leave as they are although they differ, with why (a workload
    /// rolled back from the version the repository still pins): reported as drift,
    /// never applied, not even to heal.
    pub held: BTreeMap<ResourceId, String>,
}

impl Observed {
    /// Whether changes to `tenant`'s objects (or platform objects, `None`) may be
    /// performed: neither the whole target nor that tenant failed to be read.
    pub fn readable(&self, tenant: Option<&str>) -> bool {
        !self
            .failures
            .iter()
            .any(|f| f.tenant.is_none() || f.tenant.as_deref() == tenant)
    }

    /// The live state in the shape the planner compares.
    pub fn as_desired(&self) -> Desired {
        Desired {
            revision: None,
            resources: self.live.clone(),
        }
    }
}

/// Why one change could not be applied: what the server said, for the report.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct ApplyError {
    pub message: String,
}

impl ApplyError {
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// One target's API. Implementations hold their clients and whatever ids they
/// learnt in `observe` (Grafana org ids, team ids); `apply` may rely on `observe`
/// having run first in the same reconcile.
#[async_trait::async_trait]
pub trait Applier: Send + Sync {
    fn target(&self) -> Target;

    /// Reads every live object of this target that MOP owns within `scope`.
    /// `desired` is this target's part of the desired state; appliers use it only
    /// to project live objects onto the fields MOP manages (a Kubernetes object's
    /// server-filled defaults are not drift). A read that fails is reported in
    /// [`Observed::failures`], never as missing objects.
    async fn observe(&self, scope: &Scope, desired: &Desired) -> Observed;

    /// The desired resource in the normal form `observe` reports live objects in.
    fn canonical(&self, desired: &Resource) -> Resource {
        canonical_json(desired)
    }

    /// Performs one change of a plan made against `observe`'s result. `desired` is
    /// the rendered (not canonical) resource for creates and updates; `live` the
    /// observed one for updates and deletes.
    async fn apply(
        &self,
        scope: &Scope,
        change: &Change,
        desired: Option<&Resource>,
        live: Option<&Resource>,
    ) -> Result<(), ApplyError>;

    /// Rollouts of workloads this target runs, as the last `observe` and `apply`
    /// left them (only the Kubernetes target has any).
    fn rollouts(&self) -> Vec<rollout::RolloutReport> {
        Vec::new()
    }
}

/// A resource whose body is re-serialised with every object's keys sorted, so
/// key order never counts as a difference.
pub fn canonical_json(r: &Resource) -> Resource {
    match serde_json::from_str::<serde_json::Value>(&r.body) {
        Ok(v) => Resource {
            body: Arc::from(v.to_string()),
            ..r.clone()
        },
        // Rendered bodies are always JSON; keep an unparsable one as it is rather
        // than invent a difference.
        Err(_) => r.clone(),
    }
}
