//! One reconcile: for every target, observe → plan → (guard) → apply, with the
//! safety rules that hold whatever the target:
//!
//! - a part of a target whose live state could not be read is not touched;
//! - pruning deletes only with `prune` on, and is refused as a whole for a target
//!   when it would delete more than `max_prune_percent` of what MOP owns there;
//! - a failed change skips only the changes that depend on it (later kinds of the
//!   same tenant in the same target, e.g. an org's dashboards when the org could
//!   not be created); other tenants go on.

use serde::Serialize;

use super::{Applier, ObserveFailure, Scope};
use crate::plan::{self, Action, Change, Plan};
use crate::render::{Desired, Kind, Target};

#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Delete MOP-owned objects the repository no longer holds.
    pub prune: bool,
    /// Refuse a target's deletes when they exceed this share of its MOP-owned objects.
    pub max_prune_percent: f64,
    pub allow_mass_prune: bool,
    /// Plan only: observe and compare, change nothing.
    pub dry_run: bool,
}

impl Options {
    pub fn from_policy(p: &crate::model::platform::SyncPolicy) -> Self {
        Self {
            prune: p.prune,
            max_prune_percent: p.max_prune_percent,
            allow_mass_prune: false,
            dry_run: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", content = "reason", rename_all = "lowercase")]
pub enum Outcome {
    Applied,
    /// Dry run: would be applied.
    Planned,
    Failed(String),
    Skipped(String),
    /// Left as it is on purpose although it differs (a rolled-back workload whose
    /// failed version the repository still pins): drift, not an error.
    Held(String),
}

#[derive(Debug, Clone, Serialize)]
pub struct ChangeResult {
    #[serde(flatten)]
    pub change: Change,
    #[serde(flatten)]
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetReport {
    pub target: Target,
    /// MOP-owned live objects seen.
    pub live_objects: usize,
    pub observe_failures: Vec<ObserveFailure>,
    /// Set when deletes were refused as a mass prune.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_refused: Option<String>,
    /// Every difference between live and desired, with what happened to it.
    pub changes: Vec<ChangeResult>,
    /// Workload rollouts (Kubernetes only).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rollouts: Vec<super::rollout::RolloutReport>,
}

impl TargetReport {
    pub fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.changes.iter().filter(|c| f(&c.outcome)).count()
    }

    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_)))
    }

    pub fn applied(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Applied))
    }

    /// Whether everything of this target is as desired after this reconcile.
    pub fn converged(&self) -> bool {
        self.observe_failures.is_empty()
            && self
                .changes
                .iter()
                .all(|c| matches!(c.outcome, Outcome::Applied))
    }

    /// Whether everything was applied except what is held on purpose: the
    /// revision is as applied as it will get until the repository changes.
    pub fn settled(&self) -> bool {
        self.observe_failures.is_empty()
            && self
                .changes
                .iter()
                .all(|c| matches!(c.outcome, Outcome::Applied | Outcome::Held(_)))
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub revision: Option<String>,
    pub dry_run: bool,
    pub targets: Vec<TargetReport>,
}

impl Report {
    pub fn converged(&self) -> bool {
        self.targets.iter().all(TargetReport::converged)
    }

    /// See [`TargetReport::settled`].
    pub fn settled(&self) -> bool {
        self.targets.iter().all(TargetReport::settled)
    }

    pub fn failed(&self) -> usize {
        self.targets.iter().map(TargetReport::failed).sum()
    }

    pub fn applied(&self) -> usize {
        self.targets.iter().map(TargetReport::applied).sum()
    }

    /// The differences found between live and desired, whatever was done about them.
    pub fn differences(&self) -> impl Iterator<Item = (&Target, &ChangeResult)> {
        self.targets
            .iter()
            .flat_map(|t| t.changes.iter().map(move |c| (&t.target, c)))
    }

    /// The differences as a plan (for the text, Markdown and JSON formats of `mop plan`).
    pub fn plan(&self) -> Plan {
        Plan {
            changes: self
                .targets
                .iter()
                .flat_map(|t| t.changes.iter().map(|c| c.change.clone()))
                .collect(),
        }
    }
}

/// Reconciles every target of `appliers` (in their order) with `desired`.
pub async fn reconcile(
    desired: &Desired,
    scope: &Scope,
    appliers: &[Box<dyn Applier>],
    opts: &Options,
    progress: &(dyn Fn(&Target, &ChangeResult) + Sync),
) -> Report {
    let mut targets = Vec::with_capacity(appliers.len());
    for a in appliers {
        targets.push(reconcile_target(desired, scope, a.as_ref(), opts, progress).await);
    }
    Report {
        revision: desired.revision.clone(),
        dry_run: opts.dry_run,
        targets,
    }
}

async fn reconcile_target(
    desired: &Desired,
    scope: &Scope,
    applier: &dyn Applier,
    opts: &Options,
    progress: &(dyn Fn(&Target, &ChangeResult) + Sync),
) -> TargetReport {
    let target = applier.target();
    let mine = Desired {
        revision: desired.revision.clone(),
        resources: desired
            .resources
            .iter()
            .filter(|(id, _)| id.target == target)
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect(),
    };
    let observed = applier.observe(scope, &mine).await;
    for f in &observed.failures {
        tracing::warn!(%target, tenant = f.tenant.as_deref().unwrap_or("-"), error = %f.error, "cannot read live state; its part of the target is left alone");
    }
    let canonical = Desired {
        revision: mine.revision.clone(),
        resources: mine
            .resources
            .values()
            .map(|r| (r.id.clone(), applier.canonical(r)))
            .collect(),
    };
    let live = observed.as_desired();
    let plan = plan::diff(Some(&live), &canonical);

    let deletes = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete && observed.readable(c.id.tenant.as_deref()))
        .count();
    let prune_refused = mass_prune(deletes, observed.live.len(), opts);
    if let Some(why) = &prune_refused {
        tracing::warn!(%target, "{why}");
    }

    let mut failed: Vec<(Option<String>, Kind)> = Vec::new();
    let mut changes = Vec::with_capacity(plan.changes.len());
    for change in plan.changes {
        let tenant = change.id.tenant.clone();
        let skip = if !observed.readable(tenant.as_deref()) {
            Some("its live state could not be read".to_string())
        } else if change.action == Action::Delete && !opts.prune {
            Some("pruning is off".to_string())
        } else if change.action == Action::Delete && prune_refused.is_some() {
            Some("mass prune refused".to_string())
        } else if let Some((_, k)) = failed
            .iter()
            .find(|(t, k)| *t == tenant && depends_on(change.id.kind, *k))
        {
            Some(format!("a {k} of the same tenant failed"))
        } else {
            None
        };
        let outcome = match (skip, observed.held.get(&change.id)) {
            (Some(why), _) => Outcome::Skipped(why),
            (None, Some(why)) => Outcome::Held(why.clone()),
            (None, None) if opts.dry_run => Outcome::Planned,
            (None, None) => {
                let d = desired.resources.get(&change.id);
                let l = observed.live.get(&change.id);
                match applier.apply(scope, &change, d, l).await {
                    Ok(()) => Outcome::Applied,
                    Err(e) => {
                        tracing::warn!(%target, id = %change.id, error = %e, "change failed");
                        failed.push((tenant, change.id.kind));
                        Outcome::Failed(e.message)
                    }
                }
            }
        };
        let result = ChangeResult { change, outcome };
        progress(&target, &result);
        changes.push(result);
    }
    TargetReport {
        target,
        live_objects: observed.live.len(),
        observe_failures: observed.failures,
        prune_refused,
        changes,
        rollouts: applier.rollouts(),
    }
}

/// Whether a change of `kind` needs an earlier failed change of `failed` (same
/// tenant and target) to have succeeded: everything of a tenant lives in its
/// Grafana organisation or its namespaces, dashboards live in folders.
fn depends_on(kind: Kind, failed: Kind) -> bool {
    kind > failed
        && matches!(
            (failed, kind),
            (Kind::Org | Kind::Namespace, _) | (Kind::Folder, Kind::Dashboard)
        )
}

fn mass_prune(deletes: usize, owned: usize, opts: &Options) -> Option<String> {
    if deletes == 0 || !opts.prune || opts.allow_mass_prune || owned == 0 {
        return None;
    }
    let share = deletes as f64 * 100.0 / owned as f64;
    (share > opts.max_prune_percent).then(|| {
        format!(
            "refusing to prune {deletes} of {owned} MOP-owned objects ({share:.0}% > max_prune_percent {}%); \
             if the repository really removed them, run `mop sync --allow-mass-prune`",
            opts.max_prune_percent
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mass_prune_guard() {
        let o = Options {
            prune: true,
            max_prune_percent: 30.0,
            allow_mass_prune: false,
            dry_run: false,
        };
        assert!(mass_prune(3, 10, &o).is_none());
        assert!(mass_prune(4, 10, &o).is_some());
        let forced = Options {
            allow_mass_prune: true,
            ..o
        };
        assert!(mass_prune(10, 10, &forced).is_none());
    }
}
