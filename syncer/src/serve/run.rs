//! The sync loop of `mop serve`.
//!
//! Every interval (from `mop.yaml`), on a verified push webhook, or on a change
//! in the watched directory, the leader:
//! 1. reads the source (git fetch, or the directory);
//! 2. validates it: an invalid commit is reported on `/status` and NOT applied —
//!    the last good commit stays applied and keeps being checked for drift;
//! 3. renders, and reconciles every target: a commit not yet applied is applied;
//!    the applied commit is only compared (drift `report`) or re-applied where it
//!    differs (drift `heal`);
//! 4. records the outcome (`/status`, `/drift`, metrics, Kubernetes Events).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::server::Trigger;
use super::status::{State, drift_of};
use crate::apply::engine::{Options, Report};
use crate::apply::{Scope, TenantRef};
use crate::model::platform::DriftPolicy;
use crate::render::{self, Desired};
use crate::source::Snapshot;
use crate::sync::{self, Connections};

use crate::validate;

/// Where the config repository comes from.
pub enum Source {
    /// A remote repository mirrored locally, one branch.
    Git(Arc<Mutex<super::git::GitSource>>),
    /// A directory (local development; `--watch` re-syncs on change).
    Dir(PathBuf),
}

impl Source {
    /// The snapshot to sync. git2 and the file system block, so this runs on the
    /// blocking pool.
    async fn read(&self) -> Result<Snapshot, String> {
        match self {
            Source::Git(g) => {
                let g = Arc::clone(g);
                tokio::task::spawn_blocking(move || {
                    let g = g.lock().map_err(|_| "git source poisoned".to_string())?;
                    let fetched = g.fetch().map_err(|e| e.to_string())?;
                    if fetched.forced {
                        tracing::warn!(
                            previous = fetched.previous.as_deref().unwrap_or("-"),
                            commit = %fetched.commit,
                            "the branch was force-pushed; syncing its new commit"
                        );
                    }
                    g.snapshot(&fetched.commit).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("git fetch task failed: {e}"))?
            }
            Source::Dir(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || {
                    Snapshot::from_dir(&path).map_err(|e| e.to_string())
                })
                .await
                .map_err(|e| format!("read task failed: {e}"))?
            }
        }
    }
}

pub struct LoopConfig {
    pub source: Source,
    pub connections: Connections,
    /// Overrides `sync.interval` of `mop.yaml`.
    pub interval: Option<Duration>,
    pub allow_mass_prune: bool,
    /// Leader election is on (a replica that does not lead is a standby).
    pub leader_election: bool,
    /// The cluster to sync (`--cluster`): in a repository of several clusters,
    /// only its view of the repository is applied.
    pub cluster: Option<String>,
}

/// The part of a validated repository this syncer applies: the whole repository
/// when it is one cluster, else the view of `cluster`.
pub fn scope_to_cluster(
    repo: crate::repo::Repo,
    cluster: Option<&str>,
) -> Result<crate::repo::Repo, String> {
    let keys = || {
        repo.clusters
            .iter()
            .map(|c| c.key.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match cluster {
        None if repo.is_multi_cluster() => Err(format!(
            "the repository describes several clusters ({}): start mop serve with --cluster <name> (or MOP_CLUSTER)",
            keys()
        )),
        None => Ok(repo),
        Some(key) if !repo.is_multi_cluster() => {
            if key == repo.platform.cluster {
                Ok(repo)
            } else {
                Err(format!(
                    "--cluster {key}: the repository is one cluster, {:?} (mop.yaml), and has no clusters/ directory",
                    repo.platform.cluster
                ))
            }
        }
        Some(key) => repo.for_cluster(key).ok_or_else(|| {
            format!(
                "--cluster {key}: there is no clusters/{key}.yaml (clusters: {})",
                keys()
            )
        }),
    }
}

/// What a cluster gets from a revision: its rendered objects and the settings
/// its appliers connect with. Equal fingerprints mean a commit changed only
/// other clusters.
fn cluster_fingerprint(repo: &crate::repo::Repo, desired: &Desired) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    h.update(fingerprint(desired).as_bytes());
    h.update(
        serde_json::to_string(&repo.platform)
            .unwrap_or_default()
            .as_bytes(),
    );
    h.update(
        serde_json::to_string(&repo.versions)
            .unwrap_or_default()
            .as_bytes(),
    );
    hex::encode(h.finalize())
}

/// The last revision that validated: what stays applied while newer ones are invalid.
struct Good {
    revision: String,
    desired: Desired,
    repo: crate::repo::Repo,
}

/// A directory has no commit id: name its content instead, so an unchanged
/// directory is recognised as the applied revision.
fn fingerprint(desired: &Desired) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for r in desired.resources.values() {
        h.update(r.id.to_string().as_bytes());
        h.update(render::digest(&r.body).as_bytes());
    }
    format!("dir:{}", &hex::encode(h.finalize())[..12])
}

/// Runs until `shutdown` turns true. A sync in progress when it does is finished
/// (each change is one request; stopping half-way through an apply is safe too,
/// the next leader re-plans from live state), then the loop returns.
pub async fn run(
    cfg: LoopConfig,
    state: State,
    mut triggers: mpsc::Receiver<Trigger>,
    mut leader: watch::Receiver<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut good: Option<Good> = None;
    let mut first = true;
    // A closed channel (its sender gone) would wake the select at once forever.
    let mut leader_open = true;
    loop {
        let interval = cfg
            .interval
            .or_else(|| {
                good.as_ref()
                    .map(|g| Duration::from_millis(g.repo.platform.sync.interval.millis))
            })
            .unwrap_or(Duration::from_secs(60));
        if !first {
            let tick = tokio::time::sleep(interval);
            tokio::pin!(tick);
            loop {
                tokio::select! {
                    () = &mut tick => break,
                    t = triggers.recv() => {
                        if let Some(t) = t { tracing::info!(?t, "sync triggered"); }
                        break;
                    }
                    r = leader.changed(), if leader_open => {
                        if r.is_ok() { break }
                        // Without leader election the sender is gone from the
                        // start: nothing changed, so no sync (it used to cost a
                        // second sync right after the first).
                        leader_open = false;
                    }
                    r = shutdown.changed() => {
                        if r.is_err() { return }
                        break;
                    }
                }
            }
        }
        first = false;
        if *shutdown.borrow() {
            break;
        }
        let is_leader = *leader.borrow();
        state.set_leader(is_leader, cfg.leader_election);
        if !is_leader {
            continue;
        }
        // A trigger that arrives during this sync stays in the one-slot channel and
        // causes one more sync: this one may have read the source before the push.
        //
        // Leadership lost mid-sync (the Lease could not be renewed) abandons the
        // sync at once: another replica may take over when the Lease expires, and
        // two appliers must never run together. Stopping between requests is safe;
        // the next leader re-plans from live state.
        let lost = async {
            if leader.wait_for(|l| !*l).await.is_err() {
                // No elector (or it is gone): leadership cannot be lost.
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            () = sync_once(&cfg, &state, &mut good) => {}
            () = lost => {
                tracing::warn!("lost leadership during a sync; abandoning it");
                state.set_leader(false, cfg.leader_election);
            }
        }
    }
}

async fn sync_once(cfg: &LoopConfig, state: &State, good: &mut Option<Good>) {
    let t0 = Instant::now();
    let snapshot = match cfg.source.read().await {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot read the config repository");
            state.source_error(&e, t0.elapsed());
            return;
        }
    };
    let source_rev = snapshot.revision.clone();
    let outcome = match tokio::task::spawn_blocking(move || validate::validate(&snapshot)).await {
        Ok(o) => o,
        Err(e) => {
            state.source_error(&format!("validation task failed: {e}"), t0.elapsed());
            return;
        }
    };
    let scoped = outcome
        .repo
        .map(|r| scope_to_cluster(r, cfg.cluster.as_deref()));
    let repo = match scoped {
        Some(Err(e)) => {
            tracing::error!(error = %e, "cannot pick this syncer's cluster");
            state.source_error(&e, t0.elapsed());
            return;
        }
        Some(Ok(r)) => Some(r),
        None => None,
    };
    let new = match repo {
        Some(repo) => match render::render(&repo) {
            Ok(desired) => {
                let revision = source_rev.clone().unwrap_or_else(|| fingerprint(&desired));
                Some(Good {
                    revision,
                    desired,
                    repo,
                })
            }
            Err(e) => {
                state.source_error(&format!("render failed: {e}"), t0.elapsed());
                return;
            }
        },
        None => {
            tracing::error!(
                revision = source_rev.as_deref().unwrap_or("(working tree)"),
                errors = outcome.diagnostics.iter().filter(|d| d.is_error()).count(),
                "the repository is invalid; it is not applied"
            );
            state.invalid(source_rev.as_deref(), &outcome.diagnostics, t0.elapsed());
            None
        }
    };
    let applied = state.snapshot().applied_revision;
    // Tenants of the previous good revision stay in scope, so the objects of a
    // tenant the new revision removed are found and pruned.
    let previous: Vec<TenantRef> = good
        .as_ref()
        .map(|g| Scope::of(&g.repo).tenants.into_values().collect())
        .unwrap_or_default();
    let mut new = new;
    if cfg.cluster.is_some() {
        // A commit that changes only other clusters is no change here: the
        // applied revision stays, and the reconcile below is a drift check (under
        // `report`, zero writes).
        let unchanged = match (&mut new, good.as_ref()) {
            (Some(n), Some(g))
                if applied.as_deref() == Some(g.revision.as_str())
                    && n.revision != g.revision
                    && cluster_fingerprint(&n.repo, &n.desired)
                        == cluster_fingerprint(&g.repo, &g.desired) =>
            {
                let seen = std::mem::replace(&mut n.revision, g.revision.clone());
                tracing::info!(revision = %seen, applied = %g.revision, "the commit changes nothing on this cluster");
                Some(seen)
            }
            _ => None,
        };
        if new.is_some() {
            state.set_unchanged_for_cluster(unchanged);
        }
    }
    let (target, invalid_head) = match new {
        Some(n) => {
            *good = Some(n);
            (good.as_ref(), false)
        }
        // Invalid: keep checking (or healing) the last good revision.
        None => (good.as_ref(), true),
    };
    let Some(g) = target else {
        return;
    };
    let mut applied = applied;
    if applied.is_none() {
        // A restarted or newly elected syncer: the cluster records what was
        // applied. Re-applying it would revert hand edits under `drift: report`.
        if let Some(k) = &cfg.connections.kube {
            match crate::apply::inventory::load(k, &g.repo.platform.namespace).await {
                Ok(inv) => {
                    if let Some(r) = inv.revision {
                        tracing::info!(revision = %r, "the cluster records this revision as applied");
                        state.set_applied(&r);
                        applied = Some(r);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot read the applied revision"),
            }
        }
    }
    let heal = g.repo.platform.sync.drift == DriftPolicy::Heal;
    let is_new = applied.as_deref() != Some(g.revision.as_str());
    let dry_run = !is_new && !heal;
    let mut desired = g.desired.clone();
    desired.revision = Some(g.revision.clone());
    let report = match reconcile(cfg, g, &desired, previous, dry_run).await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "cannot connect the targets");
            state.source_error(&e, t0.elapsed());
            return;
        }
    };
    log_report(&report, is_new);
    // Differences found on the applied revision are drift; on a new revision they
    // are the change being applied.
    if !is_new {
        let drift = drift_of(&report);
        if !drift.is_empty() {
            tracing::warn!(
                objects = drift.len(),
                healed = heal,
                "drift from the applied revision"
            );
        }
        let known = state.snapshot().drift;
        if let Some(client) = &cfg.connections.kube {
            let ns = &g.repo.platform.namespace;
            for (d, r) in drift.iter().zip(drifted_ids(&report)) {
                // One Event when an object starts to drift, not one per interval.
                if !known.contains(d) {
                    drift_event(client, ns, d, r, heal).await;
                }
            }
        }
        state.set_drift(drift);
    } else if report.converged() {
        state.set_drift(Vec::new());
    }
    if !invalid_head {
        state.reconciled(source_rev.as_deref(), &report, t0.elapsed());
    }
}

async fn reconcile(
    cfg: &LoopConfig,
    g: &Good,
    desired: &Desired,
    previous: Vec<TenantRef>,
    dry_run: bool,
) -> Result<Report, String> {
    let opts = Options {
        allow_mass_prune: cfg.allow_mass_prune,
        dry_run,
        ..Options::from_policy(&g.repo.platform.sync)
    };
    sync::reconcile(
        &g.repo,
        desired,
        &cfg.connections,
        &opts,
        previous,
        &|_, _| {},
    )
    .await
    .map_err(|e| e.message)
}

/// The ids of the differences `drift_of` lists, in the same order.
fn drifted_ids(report: &Report) -> impl Iterator<Item = &crate::render::ResourceId> {
    report
        .differences()
        .filter(|(_, c)| !matches!(c.outcome, crate::apply::engine::Outcome::Skipped(_)))
        .map(|(_, c)| &c.change.id)
}

/// A Kubernetes Event about a drifted object: on the object itself when it is a
/// Kubernetes object, else on MOP's inventory ConfigMap, so
/// `kubectl events -n <mop namespace>` shows Grafana and ruler drift too.
async fn drift_event(
    client: &kube::Client,
    namespace: &str,
    d: &super::status::Drifted,
    id: &crate::render::ResourceId,
    healed: bool,
) {
    use crate::apply::kubernetes::{EventType, Regarding, emit_event};
    let regarding = Regarding::of(id).unwrap_or_else(|| Regarding {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: crate::apply::inventory::NAME.into(),
        namespace: Some(namespace.to_string()),
    });
    let mut note = format!(
        "{id} differs from the applied revision ({}{})",
        d.action,
        if healed { ", put back" } else { "" }
    );
    for detail in d.details.iter().take(5) {
        note.push_str("; ");
        note.push_str(detail);
    }
    if let Err(e) = emit_event(
        client,
        namespace,
        &regarding,
        "Drifted",
        &note,
        EventType::Warning,
    )
    .await
    {
        tracing::warn!(error = %e, "cannot record the drift Event");
    }
}

fn log_report(report: &Report, is_new: bool) {
    for t in &report.targets {
        // What moved, one line per object: the audit trail an operator greps
        // for when a dashboard changed and nobody remembers merging it.
        for c in &t.changes {
            tracing::info!(
                target_name = %t.target,
                revision = report.revision.as_deref().unwrap_or("-"),
                action = ?c.change.action,
                object = %c.change.id,
                outcome = ?c.outcome,
                "change"
            );
        }
        tracing::info!(
            target_name = %t.target,
            revision = report.revision.as_deref().unwrap_or("-"),
            applied = t.applied(),
            failed = t.failed(),
            differences = t.changes.len(),
            live = t.live_objects,
            mode = if report.dry_run { "drift-check" } else if is_new { "apply" } else { "heal" },
            "reconciled"
        );
    }
}

/// How long the watched directory must be quiet before a sync starts. One save is
/// several events (truncate, write, close; an editor's backup, rename and chmod;
/// `git checkout` of many files), and a sync that starts at the first of them reads
/// a directory half old, half new: a mix that never existed on disk, which may
/// validate and be applied. Waiting for quiet makes one save one sync.
const WATCH_QUIET: Duration = Duration::from_millis(200);
/// A directory that never goes quiet (a log written inside it) still syncs this often.
const WATCH_MAX_DELAY: Duration = Duration::from_secs(2);

/// Watches a working directory; any change outside `.git/` asks for a sync once the
/// directory has been quiet for [`WATCH_QUIET`]. Must be called inside the runtime.
pub fn watch_dir(
    dir: &std::path::Path,
    triggers: mpsc::Sender<Trigger>,
) -> Result<notify::RecommendedWatcher, String> {
    use notify::Watcher;
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
        let Ok(ev) = ev else { return };
        let relevant = ev
            .paths
            .iter()
            .any(|p| !p.components().any(|c| c.as_os_str() == ".git"));
        if relevant && !ev.kind.is_access() {
            let _ = tx.send(());
        }
    })
    .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    w.watch(dir, notify::RecursiveMode::Recursive)
        .map_err(|e| format!("cannot watch {}: {e}", dir.display()))?;
    tokio::spawn(async move {
        // Ends when the watcher (the sender) is dropped.
        while rx.recv().await.is_some() {
            let deadline = Instant::now() + WATCH_MAX_DELAY;
            loop {
                let quiet_until = (Instant::now() + WATCH_QUIET).min(deadline);
                match tokio::time::timeout_at(quiet_until.into(), rx.recv()).await {
                    Ok(Some(())) if Instant::now() < deadline => {}
                    Ok(None) => return,
                    _ => break,
                }
            }
            // A sync already queued will read the directory as it is now: one
            // slot is enough.
            let _ = triggers.try_send(Trigger::FileChange);
        }
    });
    Ok(w)
}

/// Verifies a webhook delivery with the secret in `secret_file` (read on every
/// delivery, so a rotated Secret applies at once) and turns a push to `branch`
/// into a trigger. Pushes to other branches and pings are answered but ignored.
pub fn check_webhook(
    secret_file: &std::path::Path,
    branch: &str,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Result<Option<Trigger>, (axum::http::StatusCode, String)> {
    use super::webhook::{self, WebhookError, WebhookEvent};
    use axum::http::StatusCode;
    let secret = std::fs::read(secret_file).map_err(|e| {
        tracing::error!(file = %secret_file.display(), error = %e, "cannot read the webhook secret");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the webhook secret cannot be read".to_string(),
        )
    })?;
    let secret = secret.trim_ascii_end();
    match webhook::verify_and_parse(headers, body, secret) {
        Ok(WebhookEvent::Push(p)) if p.branch() == Some(branch) && !p.deleted() => {
            Ok(Some(Trigger::Push {
                provider: p.provider.to_string(),
                commit: p.after,
            }))
        }
        Ok(_) => Ok(None),
        Err(e) => {
            if matches!(e, WebhookError::Unauthorized(_)) {
                tracing::warn!(error = %e, "webhook delivery refused");
            }
            Err((e.status(), e.to_string()))
        }
    }
}
