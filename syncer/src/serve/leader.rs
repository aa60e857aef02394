//! Leader election with a `coordination.k8s.io/v1` Lease, so two replicas of
//! `mop serve` can run and only one applies.
//!
//! The algorithm is client-go's `leaderelection` package:
//! - a Lease that is absent, released (no holder) or expired is taken; one held by
//!   someone else is left alone;
//! - expiry is judged by *this* process's clock: a Lease is expired when its record
//!   has not changed for `leaseDurationSeconds` since we first saw it that way. The
//!   `renewTime` written by another node is never compared with our clock, so clock
//!   skew between nodes cannot make two leaders;
//! - every write is a PUT carrying the `resourceVersion` that was read (optimistic
//!   concurrency): of two candidates racing, one gets 409 Conflict and stays follower;
//! - the leader renews every `retry_period`, and steps down when it has not renewed
//!   for `renew_deadline` (shorter than the lease duration, so it stops acting
//!   before anyone else may start);
//! - on clean shutdown the leader releases the Lease (clears the holder), so the
//!   other replica takes over at its next try instead of after expiry.
//!
//! Reference: <https://kubernetes.io/docs/concepts/architecture/leases/>.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use tokio::sync::watch;
use tokio::time::Instant;

/// Timings and names of a [`LeaderElector`].
#[derive(Debug, Clone)]
pub struct LeaderConfig {
    /// Name of the Lease object.
    pub lease_name: String,
    /// Namespace of the Lease (the syncer's own).
    pub namespace: String,
    /// This replica's identity, unique among replicas (the Pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal (written to the Lease, whole
    /// seconds, at least 1). Default 15 s.
    pub lease_duration: Duration,
    /// The leader steps down when it could not renew for this long. Must be
    /// shorter than `lease_duration`. Default 10 s.
    pub renew_deadline: Duration,
    /// How often the leader renews and a follower tries to acquire. Default 5 s.
    pub retry_period: Duration,
}

impl LeaderConfig {
    pub fn new(
        lease_name: impl Into<String>,
        namespace: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            lease_name: lease_name.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(5),
        }
    }

    fn lease_seconds(&self) -> i32 {
        let secs = self.lease_duration.as_secs_f64().ceil();
        if secs < 1.0 {
            1
        } else if secs > f64::from(i32::MAX) {
            i32::MAX
        } else {
            secs as i32
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(
        "cannot {action} Lease {namespace}/{name}: {source}; check that the service account may get, create and update leases.coordination.k8s.io there"
    )]
    Api {
        action: &'static str,
        namespace: String,
        name: String,
        #[source]
        source: kube::Error,
    },
}

/// The part of a Lease that tells whether its holder is alive: when none of it
/// changes for a lease duration, the holder is gone.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    holder: Option<String>,
    renew_time: Option<Timestamp>,
    acquire_time: Option<Timestamp>,
    transitions: Option<i32>,
    duration_seconds: Option<i32>,
}

impl Record {
    fn of(spec: &LeaseSpec) -> Self {
        Self {
            holder: spec.holder_identity.clone().filter(|h| !h.is_empty()),
            renew_time: spec.renew_time.as_ref().map(|t| t.0),
            acquire_time: spec.acquire_time.as_ref().map(|t| t.0),
            transitions: spec.lease_transitions,
            duration_seconds: spec.lease_duration_seconds,
        }
    }
}

/// Campaigns for one Lease and tells through a watch channel whether this replica
/// leads.
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaderConfig,
    leader: watch::Sender<bool>,
    /// The Lease record last seen, and when (our clock) it was first seen so.
    observed: Option<(Record, Instant)>,
}

impl LeaderElector {
    pub fn new(client: kube::Client, config: LeaderConfig) -> Self {
        let api = Api::namespaced(client, &config.namespace);
        Self {
            api,
            config,
            leader: watch::Sender::new(false),
            observed: None,
        }
    }

    /// "Am I the leader?", updated as leadership is won and lost.
    pub fn subscribe(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    pub fn config(&self) -> &LeaderConfig {
        &self.config
    }

    /// Campaigns until `shutdown` completes, then releases the Lease if held.
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut last_renew: Option<Instant> = None;
        loop {
            let started = Instant::now();
            // A leader's attempt may not outlive its deadline; a follower's is
            // bounded the same way so a hung request cannot stall the loop.
            let deadline = match (self.is_leader(), last_renew) {
                (true, Some(t)) => t + self.config.renew_deadline,
                _ => started + self.config.renew_deadline,
            };
            let attempt = tokio::time::timeout_at(deadline, self.try_acquire_or_renew());
            let result = tokio::select! {
                r = attempt => r,
                () = &mut shutdown => break,
            };
            match result {
                Ok(Ok(true)) => {
                    if !self.is_leader() {
                        tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "became leader");
                    }
                    last_renew = Some(started);
                    self.set_leader(true);
                }
                Ok(Ok(false)) => {
                    if self.is_leader() {
                        tracing::warn!(identity = %self.config.identity, lease = %self.config.lease_name, "lost the Lease to another replica; stepping down");
                    }
                    last_renew = None;
                    self.set_leader(false);
                }
                Ok(Err(e)) => {
                    tracing::warn!(identity = %self.config.identity, error = %e, "leader election attempt failed");
                }
                Err(_) => {
                    tracing::warn!(identity = %self.config.identity, lease = %self.config.lease_name, "leader election attempt timed out");
                }
            }
            let now = Instant::now();
            if self.is_leader() && last_renew.is_none_or(|t| now >= t + self.config.renew_deadline)
            {
                tracing::warn!(identity = %self.config.identity, lease = %self.config.lease_name, deadline = ?self.config.renew_deadline, "could not renew the Lease in time; stepping down");
                self.set_leader(false);
                last_renew = None;
            }
            let mut next = now + self.config.retry_period;
            if let (true, Some(t)) = (self.is_leader(), last_renew) {
                // Wake at the deadline at the latest, to step down on time.
                next = next.min(t + self.config.renew_deadline);
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                () = &mut shutdown => break,
            }
        }
        let was_leader = self.is_leader();
        // Stop acting as leader before the Lease is handed back.
        self.set_leader(false);
        if was_leader {
            match tokio::time::timeout(self.config.renew_deadline, self.release()).await {
                Ok(Ok(())) => {
                    tracing::info!(identity = %self.config.identity, lease = %self.config.lease_name, "released the Lease")
                }
                Ok(Err(e)) => {
                    tracing::warn!(identity = %self.config.identity, error = %e, "cannot release the Lease; the other replica takes over when it expires")
                }
                Err(_) => {
                    tracing::warn!(identity = %self.config.identity, "releasing the Lease timed out; the other replica takes over when it expires")
                }
            }
        }
    }

    /// One campaign step: takes or renews the Lease when allowed. `Ok(true)` when
    /// this replica holds it afterwards. Does not change [`Self::subscribe`]'s
    /// value; [`Self::run`] does.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, LeaderError> {
        let now = Instant::now();
        let stamp = MicroTime(Timestamp::now());
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.err("read", e))?
        else {
            let spec = LeaseSpec {
                holder_identity: Some(self.config.identity.clone()),
                lease_duration_seconds: Some(self.config.lease_seconds()),
                acquire_time: Some(stamp.clone()),
                renew_time: Some(stamp),
                lease_transitions: Some(0),
                ..LeaseSpec::default()
            };
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec.clone()),
            };
            return match crate::apply::kubernetes::create_strict(&self.api, &lease).await {
                Ok(_) => {
                    self.observed = Some((Record::of(&spec), now));
                    Ok(true)
                }
                // Another replica created it first.
                Err(kube::Error::Api(s)) if s.is_already_exists() || s.is_conflict() => Ok(false),
                Err(e) => Err(self.err("create", e)),
            };
        };

        let old = lease.spec.clone().unwrap_or_default();
        let record = Record::of(&old);
        match &self.observed {
            Some((seen, _)) if *seen == record => {}
            _ => self.observed = Some((record.clone(), now)),
        }
        let mine = record.holder.as_deref() == Some(self.config.identity.as_str());
        if !mine && record.holder.is_some() {
            let valid_for = Duration::from_secs(
                u64::try_from(record.duration_seconds.unwrap_or(0)).unwrap_or(0),
            );
            let seen_at = self.observed.as_ref().map_or(now, |(_, at)| *at);
            if now < seen_at + valid_for {
                return Ok(false);
            }
            tracing::info!(identity = %self.config.identity, previous = ?record.holder, "the Lease expired; taking it over");
        }

        let mut spec = old.clone();
        spec.holder_identity = Some(self.config.identity.clone());
        spec.lease_duration_seconds = Some(self.config.lease_seconds());
        spec.renew_time = Some(stamp.clone());
        if !mine {
            spec.acquire_time = Some(stamp);
            spec.lease_transitions = Some(old.lease_transitions.unwrap_or(0) + 1);
        }
        lease.spec = Some(spec.clone());
        // The resourceVersion read above stays in the metadata: the update only
        // succeeds if nobody wrote the Lease since.
        lease.metadata.managed_fields = None;
        match crate::apply::kubernetes::replace_strict(&self.api, &name, &lease).await {
            Ok(_) => {
                self.observed = Some((Record::of(&spec), now));
                Ok(true)
            }
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(false),
            Err(e) => Err(self.err("update", e)),
        }
    }

    /// Hands the Lease back (no holder) if this replica holds it, so another can
    /// take it at once.
    pub async fn release(&mut self) -> Result<(), LeaderError> {
        let name = self.config.lease_name.clone();
        let Some(mut lease) = self
            .api
            .get_opt(&name)
            .await
            .map_err(|e| self.err("read", e))?
        else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        let stamp = MicroTime(Timestamp::now());
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(stamp.clone());
        spec.acquire_time = Some(stamp);
        lease.spec = Some(spec);
        lease.metadata.managed_fields = None;
        match crate::apply::kubernetes::replace_strict(&self.api, &name, &lease).await {
            Ok(_) => Ok(()),
            // Someone else wrote it since: it is no longer ours to release.
            Err(kube::Error::Api(s)) if s.is_conflict() => Ok(()),
            Err(e) => Err(self.err("release", e)),
        }
    }

    fn set_leader(&self, leader: bool) {
        self.leader.send_if_modified(|v| {
            let changed = *v != leader;
            *v = leader;
            changed
        });
    }

    fn err(&self, action: &'static str, source: kube::Error) -> LeaderError {
        LeaderError::Api {
            action,
            namespace: self.config.namespace.clone(),
            name: self.config.lease_name.clone(),
            source,
        }
    }
}
