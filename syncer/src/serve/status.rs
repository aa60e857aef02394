//! What `mop serve` knows about itself: the applied revision, the last attempt,
//! per-target and per-tenant results, drift; shown on `/status` and `/drift` and
//! exported as metrics on `/metrics`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use serde::Serialize;

use crate::apply::engine::{Outcome, Report};
use crate::apply::rollout::{RolloutReport, RolloutState};
use crate::diag::Diagnostic;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RevisionLabel {
    revision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetTenant {
    target: String,
    tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkloadLabel {
    namespace: String,
    workload: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

/// How a sync attempt ended, for `mop_sync_total{result}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncResult {
    /// Everything applied (or nothing to do).
    Success,
    /// Some changes failed or a target could not be read; the rest applied.
    Partial,
    /// The commit did not validate; nothing applied, the last good commit stays.
    Invalid,
    /// The source could not be read (fetch failed).
    SourceError,
}

impl SyncResult {
    fn as_str(self) -> &'static str {
        match self {
            SyncResult::Success => "success",
            SyncResult::Partial => "partial",
            SyncResult::Invalid => "invalid",
            SyncResult::SourceError => "source_error",
        }
    }
}

#[derive(Debug)]
struct Metrics {
    syncs: Family<ResultLabel, Counter>,
    duration: Family<ResultLabel, Histogram, fn() -> Histogram>,
    last_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    applied_revision: Family<RevisionLabel, Gauge>,
    drifted: Family<TargetTenant, Gauge>,
    apply_errors: Family<TargetLabel, Counter>,
    leader: Gauge,
    rollbacks: Family<WorkloadLabel, Counter>,
    rollout_healthy: Family<WorkloadLabel, Gauge>,
}

fn sync_buckets() -> Histogram {
    Histogram::new([0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            syncs: Family::default(),
            duration: Family::new_with_constructor(sync_buckets),
            last_success: Gauge::default(),
            applied_revision: Family::default(),
            drifted: Family::default(),
            apply_errors: Family::default(),
            leader: Gauge::default(),
            rollbacks: Family::default(),
            rollout_healthy: Family::default(),
        }
    }
}

/// One drifted object, as `/drift` and `mop drift` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Drifted {
    pub target: String,
    pub tenant: Option<String>,
    pub kind: String,
    pub name: String,
    /// What bringing it back would do: create (deleted by hand), update (edited),
    /// delete (added by hand where MOP owns everything).
    pub action: String,
    /// Fields that differ (path: live → desired).
    pub details: Vec<String>,
    /// Why MOP leaves this difference alone (a rolled-back rollout whose failed
    /// version the repository still pins).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<String>,
}

/// Per target: the outcome of the last reconcile.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TargetStatus {
    pub applied: usize,
    pub failed: usize,
    pub skipped: usize,
    /// Differences left alone on purpose (rolled-back workloads).
    pub held: usize,
    pub live_objects: usize,
    /// Tenants whose changes failed, with the first error of each.
    pub tenant_errors: BTreeMap<String, String>,
    pub observe_failures: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prune_refused: Option<String>,
}

/// The document served on `/status`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Last commit whose desired state was fully applied.
    pub applied_revision: Option<String>,
    /// Last commit seen at the source.
    pub source_revision: Option<String>,
    /// The cluster this syncer serves (`--cluster`) in a repository of several.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
    /// Set when the source's commit changes nothing this cluster renders or
    /// connects to (only other clusters' files): it was not applied and nothing
    /// was written; `applied_revision` stays the commit that last changed this
    /// cluster.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unchanged_for_cluster: Option<String>,
    pub leader: bool,
    /// Leader election is on and another replica leads: this one only serves.
    pub standby: bool,
    pub ready: bool,
    /// RFC 3339-ish seconds since the epoch of the last attempt and last success.
    pub last_attempt_unix: Option<u64>,
    pub last_success_unix: Option<u64>,
    pub last_result: Option<SyncResult>,
    /// Why the last attempt did not fully apply, in one line.
    pub last_error: Option<String>,
    /// Validation errors of the source revision when it is invalid.
    pub validation_errors: Vec<String>,
    pub targets: BTreeMap<String, TargetStatus>,
    pub drift: Vec<Drifted>,
    /// The gateway and agent rollouts: pinned and running version, and whether the
    /// pinned one is healthy, still rolling, or was rolled back.
    pub rollouts: Vec<RolloutReport>,
}

/// Shared between the sync loop (writer) and the HTTP handlers (readers).
#[derive(Clone, Default)]
pub struct State {
    inner: Arc<Mutex<Status>>,
    metrics: Arc<Metrics>,
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl State {
    fn lock(&self) -> MutexGuard<'_, Status> {
        // A panic while holding the lock leaves a status that is still worth showing.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Status {
        self.lock().clone()
    }

    pub fn set_leader(&self, leader: bool, elected: bool) {
        let mut s = self.lock();
        s.leader = leader;
        s.standby = elected && !leader;
        drop(s);
        self.metrics.leader.set(i64::from(leader));
    }

    pub fn set_cluster(&self, cluster: Option<String>) {
        self.lock().cluster = cluster;
    }

    /// Records that `revision` changes nothing on this cluster (or, `None`, that
    /// the source's commit is this cluster's own again).
    pub fn set_unchanged_for_cluster(&self, revision: Option<String>) {
        self.lock().unchanged_for_cluster = revision;
    }

    /// Takes `revision` as applied (recorded in the cluster by an earlier run).
    pub fn set_applied(&self, revision: &str) {
        let mut s = self.lock();
        if let Some(old) = s.applied_revision.replace(revision.to_string()) {
            self.metrics
                .applied_revision
                .remove(&RevisionLabel { revision: old });
        }
        self.metrics
            .applied_revision
            .get_or_create(&RevisionLabel {
                revision: revision.to_string(),
            })
            .set(1);
    }

    pub fn source_error(&self, error: &str, took: Duration) {
        let mut s = self.lock();
        s.last_attempt_unix = Some(now_unix());
        s.last_result = Some(SyncResult::SourceError);
        s.last_error = Some(error.to_string());
        self.count(SyncResult::SourceError, took);
    }

    pub fn invalid(&self, revision: Option<&str>, diags: &[Diagnostic], took: Duration) {
        let mut s = self.lock();
        s.last_attempt_unix = Some(now_unix());
        s.source_revision = revision.map(str::to_string);
        s.last_result = Some(SyncResult::Invalid);
        let errors: Vec<String> = diags
            .iter()
            .filter(|d| d.is_error())
            .map(ToString::to_string)
            .collect();
        s.last_error = Some(format!(
            "revision {} is invalid ({} error(s)); {} stays applied",
            revision.unwrap_or("(working tree)"),
            errors.len(),
            s.applied_revision.as_deref().unwrap_or("nothing")
        ));
        s.validation_errors = errors;
        self.count(SyncResult::Invalid, took);
    }

    /// Records a reconcile. `applied` says whether `report` was an apply of
    /// `report.revision` (as opposed to a drift check of the applied revision).
    pub fn reconciled(&self, source_revision: Option<&str>, report: &Report, took: Duration) {
        let mut s = self.lock();
        let now = now_unix();
        s.last_attempt_unix = Some(now);
        s.source_revision = source_revision.map(str::to_string);
        s.validation_errors.clear();
        let result = if report.converged() || (report.dry_run && report.failed() == 0) {
            SyncResult::Success
        } else {
            SyncResult::Partial
        };
        s.last_result = Some(result);
        // A revision whose only unapplied part is a rolled-back workload is applied
        // as far as it will be: from now on it is drift-checked (the held rollout
        // shows as drift), not re-applied.
        if !report.dry_run && report.settled() && s.applied_revision != report.revision {
            if let Some(old) = &s.applied_revision {
                self.metrics.applied_revision.remove(&RevisionLabel {
                    revision: old.clone(),
                });
            }
            s.applied_revision = report.revision.clone();
            if let Some(new) = &report.revision {
                self.metrics
                    .applied_revision
                    .get_or_create(&RevisionLabel {
                        revision: new.clone(),
                    })
                    .set(1);
            }
        }
        if result == SyncResult::Success {
            s.last_success_unix = Some(now);
            s.ready = true;
            s.last_error = None;
            self.metrics.last_success.set(now as f64);
        }
        s.targets.clear();
        let mut first_error = None;
        for t in &report.targets {
            let mut ts = TargetStatus {
                live_objects: t.live_objects,
                prune_refused: t.prune_refused.clone(),
                observe_failures: t
                    .observe_failures
                    .iter()
                    .map(|f| match &f.tenant {
                        Some(k) => format!("tenant {k}: {}", f.error),
                        None => f.error.clone(),
                    })
                    .collect(),
                ..TargetStatus::default()
            };
            for c in &t.changes {
                match &c.outcome {
                    Outcome::Applied | Outcome::Planned => ts.applied += 1,
                    Outcome::Skipped(_) => ts.skipped += 1,
                    Outcome::Held(_) => ts.held += 1,
                    Outcome::Failed(e) => {
                        ts.failed += 1;
                        let key = c
                            .change
                            .id
                            .tenant
                            .clone()
                            .unwrap_or_else(|| "_platform".into());
                        let msg = format!("{}: {e}", c.change.id);
                        first_error.get_or_insert_with(|| msg.clone());
                        ts.tenant_errors.entry(key).or_insert(msg);
                    }
                }
            }
            if ts.failed > 0 {
                self.metrics
                    .apply_errors
                    .get_or_create(&TargetLabel {
                        target: t.target.to_string(),
                    })
                    .inc_by(ts.failed as u64);
            }
            if first_error.is_none() {
                first_error = ts.observe_failures.first().cloned();
            }
            s.targets.insert(t.target.to_string(), ts);
        }
        if result != SyncResult::Success {
            s.last_error = first_error;
        }
        let rollouts: Vec<RolloutReport> = report
            .targets
            .iter()
            .flat_map(|t| t.rollouts.iter().cloned())
            .collect();
        // A reconcile without the Kubernetes target knows nothing new about rollouts.
        if report
            .targets
            .iter()
            .any(|t| t.target == crate::render::Target::Kubernetes)
        {
            self.metrics.rollout_healthy.clear();
            for r in &rollouts {
                let l = WorkloadLabel {
                    namespace: r.namespace.clone(),
                    workload: r.workload.clone(),
                };
                self.metrics
                    .rollout_healthy
                    .get_or_create(&l)
                    .set(i64::from(r.state == RolloutState::Healthy));
                if r.rolled_back {
                    self.metrics.rollbacks.get_or_create(&l).inc();
                }
            }
            s.rollouts = rollouts;
        }
        self.count(result, took);
    }

    /// Replaces the drift list with what the last drift check found.
    pub fn set_drift(&self, drift: Vec<Drifted>) {
        self.metrics.drifted.clear();
        for d in &drift {
            self.metrics
                .drifted
                .get_or_create(&TargetTenant {
                    target: d.target.clone(),
                    tenant: d.tenant.clone().unwrap_or_else(|| "_platform".into()),
                })
                .inc();
        }
        self.lock().drift = drift;
    }

    fn count(&self, result: SyncResult, took: Duration) {
        let l = ResultLabel {
            result: result.as_str().to_string(),
        };
        self.metrics.syncs.get_or_create(&l).inc();
        self.metrics
            .duration
            .get_or_create(&l)
            .observe(took.as_secs_f64());
    }

    /// The metrics in Prometheus text format.
    pub fn encode_metrics(&self) -> String {
        let m = &self.metrics;
        let mut r = Registry::with_prefix("mop");
        r.register(
            "sync",
            "Sync attempts by result (success, partial, invalid, source_error)",
            m.syncs.clone(),
        );
        r.register(
            "sync_duration_seconds",
            "Duration of sync attempts",
            m.duration.clone(),
        );
        r.register(
            "last_sync_success_timestamp_seconds",
            "Unix time of the last sync that converged",
            m.last_success.clone(),
        );
        r.register(
            "applied_revision_info",
            "The commit whose desired state is applied (value 1)",
            m.applied_revision.clone(),
        );
        r.register(
            "drifted_objects",
            "Live objects that differ from the applied revision",
            m.drifted.clone(),
        );
        r.register(
            "apply_errors",
            "Changes that failed to apply",
            m.apply_errors.clone(),
        );
        r.register(
            "rollback",
            "Rollouts of a workload that failed and were rolled back to the last healthy version",
            m.rollbacks.clone(),
        );
        r.register(
            "rollout_healthy",
            "1 when the workload runs the pinned version and is healthy, 0 when it is rolling, failed or rolled back",
            m.rollout_healthy.clone(),
        );
        r.register(
            "leader",
            "1 when this replica holds the lease and applies",
            m.leader.clone(),
        );
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        out
    }
}

/// The drift a dry-run report found, in `/drift`'s shape.
pub fn drift_of(report: &Report) -> Vec<Drifted> {
    report
        .differences()
        .filter(|(_, c)| !matches!(c.outcome, Outcome::Skipped(_)))
        .map(|(target, c)| Drifted {
            target: target.to_string(),
            tenant: c.change.id.tenant.clone(),
            kind: c.change.id.kind.to_string(),
            name: c.change.id.name.clone(),
            action: format!("{:?}", c.change.action).to_lowercase(),
            details: c
                .change
                .details
                .iter()
                .map(|d| {
                    format!(
                        "{}: {} → {}",
                        if d.path.is_empty() { "." } else { &d.path },
                        d.old.as_deref().unwrap_or("(none)"),
                        d.new.as_deref().unwrap_or("(none)")
                    )
                })
                .collect(),
            held: match &c.outcome {
                Outcome::Held(why) => Some(why.clone()),
                _ => None,
            },
        })
        .collect()
}
