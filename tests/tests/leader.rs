//! Leader election of `mop serve` against the Kubernetes API fake: two electors on
//! one Lease, with short durations.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

use std::time::Duration;

mod support;

use mop_kube_fake::FakeKube;
use mop_syncer::serve::leader::{LeaderConfig, LeaderElector};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

const NS: &str = "mop-system";
const LEASE: &str = "mop-syncer";
const LEASE_DURATION: Duration = Duration::from_secs(2);
const RENEW_DEADLINE: Duration = Duration::from_millis(1200);
const RETRY: Duration = Duration::from_millis(150);

async fn fake_with_namespace() -> FakeKube {
    let fake = FakeKube::start().await.unwrap();
    fake.put(
        "test",
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
    )
    .unwrap();
    support::install_syncer(&fake);
    fake
}

/// The syncer's ServiceAccount, with deploy/base's RBAC.
fn client(fake: &FakeKube) -> kube::Client {
    let token = fake.service_account_token(support::SYNCER_NAMESPACE, support::SYNCER_SA);
    support::client_with_token(fake, &token)
}

struct Candidate {
    identity: &'static str,
    leader: watch::Receiver<bool>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Candidate {
    fn start(fake: &FakeKube, identity: &'static str) -> Self {
        let mut config = LeaderConfig::new(LEASE, NS, identity);
        config.lease_duration = LEASE_DURATION;
        config.renew_deadline = RENEW_DEADLINE;
        config.retry_period = RETRY;
        let elector = LeaderElector::new(client(fake), config);
        let leader = elector.subscribe();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(elector.run(async move {
            let _ = stopped.await;
        }));
        Self {
            identity,
            leader,
            stop: Some(stop),
            task,
        }
    }

    fn leads(&self) -> bool {
        *self.leader.borrow()
    }

    /// Clean shutdown: the elector releases the Lease.
    async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task).await.unwrap();
    }
}

fn holder(fake: &FakeKube) -> Option<String> {
    let lease = fake.get("coordination.k8s.io/v1", "Lease", Some(NS), LEASE)?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

fn transitions(fake: &FakeKube) -> i64 {
    fake.get("coordination.k8s.io/v1", "Lease", Some(NS), LEASE)
        .unwrap()["spec"]["leaseTransitions"]
        .as_i64()
        .unwrap_or(0)
}

async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < within,
            "{what} did not happen within {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// Watches both for `period`: never two leaders, and the Lease names the one.
async fn assert_single_leader(fake: &FakeKube, a: &Candidate, b: &Candidate, period: Duration) {
    let end = Instant::now() + period;
    while Instant::now() < end {
        assert!(!(a.leads() && b.leads()), "two leaders at once");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let leader = if a.leads() { a } else { b };
    assert!(leader.leads(), "nobody leads");
    assert_eq!(holder(fake).as_deref(), Some(leader.identity));
}

#[tokio::test]
async fn exactly_one_leads_and_the_other_takes_over_on_release() {
    let fake = fake_with_namespace().await;
    let mut a = Candidate::start(&fake, "replica-a");
    let mut b = Candidate::start(&fake, "replica-b");

    wait_for("a leader", Duration::from_secs(5), || {
        a.leads() || b.leads()
    })
    .await;
    // Several renewal periods: leadership is stable and exclusive.
    assert_single_leader(&fake, &a, &b, 10 * RETRY).await;

    let (leader, follower) = if a.leads() {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    let leader_id = leader.identity;
    leader.shutdown().await;
    assert!(!leader.leads());
    // Released: the holder is cleared before the follower's next try.
    let took = wait_for("the follower taking over", LEASE_DURATION, || {
        follower.leads()
    })
    .await;
    assert!(
        took < LEASE_DURATION,
        "a released Lease is taken without waiting for expiry ({took:?})"
    );
    assert_eq!(holder(&fake).as_deref(), Some(follower.identity));
    assert_ne!(holder(&fake).as_deref(), Some(leader_id));
    assert_eq!(transitions(&fake), 1);

    // Every Lease update was conditional: the fake refuses the others (422), so
    // all PUTs must have been answered 200 or 409.
    for r in fake.write_requests() {
        if r.path.contains("/leases/") && r.method == "PUT" {
            assert!(
                r.body.as_ref().unwrap()["metadata"]["resourceVersion"].is_string(),
                "unconditional Lease update: {r:?}"
            );
            assert!(matches!(r.status, 200 | 409), "{r:?}");
        }
    }
    follower.shutdown().await;
    assert_eq!(holder(&fake), None, "released on shutdown");
}

#[tokio::test]
async fn a_crashed_leader_is_replaced_after_the_lease_expires() {
    let fake = fake_with_namespace().await;
    let a = Candidate::start(&fake, "replica-a");
    wait_for("a to lead", Duration::from_secs(5), || a.leads()).await;
    let b = Candidate::start(&fake, "replica-b");
    // b sees a renewing, and stays follower well past a lease duration.
    tokio::time::sleep(LEASE_DURATION + 4 * RETRY).await;
    assert!(a.leads() && !b.leads());
    assert_eq!(holder(&fake).as_deref(), Some("replica-a"));

    // Crash: no release, no more renewals.
    a.task.abort();
    let crashed = Instant::now();
    wait_for("b taking over", LEASE_DURATION + 10 * RETRY, || b.leads()).await;
    let took = crashed.elapsed();
    // Not before the Lease could have expired on b's clock (b may have seen the
    // last renewal up to one retry period late).
    assert!(
        took + RETRY >= LEASE_DURATION,
        "took over an unexpired Lease after {took:?}"
    );
    assert_eq!(holder(&fake).as_deref(), Some("replica-b"));
    assert_eq!(transitions(&fake), 1);
}

#[tokio::test]
async fn leader_steps_down_when_it_cannot_renew() {
    let fake = fake_with_namespace().await;
    let a = Candidate::start(&fake, "replica-a");
    wait_for("a to lead", Duration::from_secs(5), || a.leads()).await;

    // The API refuses us (a revoked service-account token): renewals fail.
    fake.set_token(Some("only-someone-else-has-this"));
    let lost = Instant::now();
    wait_for("a stepping down", RENEW_DEADLINE + 4 * RETRY, || !a.leads()).await;
    assert!(
        lost.elapsed() + RETRY >= RENEW_DEADLINE,
        "stepped down before the renew deadline ({:?})",
        lost.elapsed()
    );
    // It still holds the Lease record (it could not write); nobody else could act
    // before that record expires, and by then a has stopped acting.
    assert_eq!(holder(&fake).as_deref(), Some("replica-a"));

    // Access restored: it campaigns again and leads.
    fake.set_token(None);
    wait_for("a leading again", LEASE_DURATION + 10 * RETRY, || a.leads()).await;
}
