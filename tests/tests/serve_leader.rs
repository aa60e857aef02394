//! Two replicas of `mop serve --leader-election` (the real binary) on one git
//! repository served by `git daemon`, with the Grafana, ruler and Kubernetes
//! fakes: only the Lease holder applies; SIGTERM hands the Lease over at once.
//!
//! Needs the `mop` binary built next to this test (`cargo build -p mop-syncer`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use support::{
    Fakes, GitServer, Proc, commit_and_push, dashboard_title, edit_file, free_port, get, push_hook,
    wait_for,
};

const NS: &str = "mop-system";
const LEASE: &str = "mop-syncer";
const SECRET: &str = "webhook-secret-for-tests";
const RED: &str = "tenants/checkout/dashboards/services/red.json";

struct Replica {
    name: &'static str,
    base: String,
    proc: Proc,
}

fn start_replica(f: &Fakes, git: &GitServer, secret: &Path, name: &'static str) -> Replica {
    let port = free_port();
    let child = Command::new(support::mop_bin())
        .args([
            "serve",
            "--git-url",
            &git.url,
            "--branch",
            "main",
            "--mirror-dir",
            f.tmp
                .path()
                .join(format!("mirror-{name}"))
                .to_str()
                .unwrap(),
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--webhook-secret-file",
            secret.to_str().unwrap(),
            // Only webhooks and leadership changes trigger syncs during the test.
            "--interval",
            "1h",
            "--leader-election",
        ])
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", f.tmp.path())
        .env("KUBECONFIG", &f.kubeconfig)
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", NS)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    Replica {
        name,
        base: format!("http://127.0.0.1:{port}"),
        proc: Proc::adopt(child),
    }
}

fn holder(f: &Fakes) -> Option<String> {
    let lease = f
        .kube
        .get("coordination.k8s.io/v1", "Lease", Some(NS), LEASE)?;
    lease["spec"]["holderIdentity"]
        .as_str()
        .filter(|h| !h.is_empty())
        .map(str::to_string)
}

/// The holder written by each Lease write, in order (`None`: released).
fn lease_writes(f: &Fakes) -> Vec<Option<String>> {
    f.kube
        .write_requests()
        .iter()
        .filter(|r| r.path.contains("/leases") && r.status < 300)
        .map(|r| {
            r.body.as_ref().and_then(|b| {
                b["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_string)
            })
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_leader_applies_and_sigterm_hands_over() {
    let f = Fakes::start().await;
    // The replicas' own namespace exists before they run, as in a cluster; the
    // Lease lives there (the API refuses objects in a missing namespace).
    f.kube
        .put(
            "test",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .unwrap();
    let git = GitServer::serve(&f.repo, f.tmp.path()).await;
    let secret = f.tmp.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let http = reqwest::Client::new();

    let mut a = start_replica(&f, &git, &secret, "mop-a");
    let mut b = start_replica(&f, &git, &secret, "mop-b");

    // Exactly one leads, and it applies the repository. (A standby is Ready at
    // once: it serves and passes webhooks on.)
    wait_for("a leader's first sync", Duration::from_secs(20), || async {
        for r in [&a, &b] {
            let st = get(&http, &r.base, "/status").await.1;
            if st["leader"] == true && st["last_result"] == "success" {
                return true;
            }
        }
        false
    })
    .await;
    let lead = holder(&f).expect("the Lease has a holder");
    let (leader, follower) = if lead == a.name {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    assert_eq!(lead, leader.name);
    let st = get(&http, &leader.base, "/status").await.1;
    assert_eq!(st["leader"], true, "{st:#}");
    assert_eq!(st["last_result"], "success", "{st:#}");
    let fst = get(&http, &follower.base, "/status").await.1;
    assert_eq!(fst["leader"], false, "{fst:#}");
    assert_eq!(
        fst["last_attempt_unix"],
        Value::Null,
        "the follower never syncs: {fst:#}"
    );
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED")
    );
    assert!(
        f.kube
            .get("v1", "ConfigMap", Some(NS), "mop-gateway-routing")
            .is_some()
    );

    assert_eq!(
        get(&http, &follower.base, "/readyz").await.0,
        200,
        "a standby is Ready"
    );
    assert_eq!(fst["standby"], true, "{fst:#}");

    // A push announced to the follower is passed to the leader (through the
    // watched sync-request ConfigMap), which applies it at once; the follower
    // itself never syncs.
    edit_file(
        &f.repo.join(RED),
        "\"Checkout / HTTP RED\"",
        "\"Checkout / HTTP RED v2\"",
    );
    let v2 = commit_and_push(&f.repo, "checkout: RED v2");
    let t0 = std::time::Instant::now();
    assert_eq!(push_hook(&http, &follower.base, &f.repo, SECRET).await, 202);
    wait_for(
        "the leader to apply a push sent to the follower",
        Duration::from_secs(10),
        || async { get(&http, &leader.base, "/status").await.1["applied_revision"] == v2.as_str() },
    )
    .await;
    eprintln!(
        "push to the standby → applied by the leader: {:?}",
        t0.elapsed()
    );
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v2")
    );
    let fst = get(&http, &follower.base, "/status").await.1;
    assert_eq!(fst["leader"], false, "{fst:#}");
    assert_eq!(fst["last_attempt_unix"], Value::Null, "{fst:#}");
    assert!(
        lease_writes(&f)
            .iter()
            .all(|h| h.as_deref() == Some(leader.name)),
        "only the leader wrote the Lease: {:?}",
        lease_writes(&f)
    );

    // SIGTERM: the leader exits cleanly and releases the Lease.
    let status = leader.proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "the leader exited with {status}");
    let released = lease_writes(&f);
    let release_at = released
        .iter()
        .position(Option::is_none)
        .unwrap_or_else(|| panic!("no release of the Lease: {released:?}"));
    assert!(
        released[..release_at]
            .iter()
            .all(|h| h.as_deref() == Some(leader.name)),
        "{released:?}"
    );

    // The other replica takes over (at its next try, not after the Lease's
    // expiry) and syncs the branch's commit.
    let took = wait_for(
        "the follower to take over and apply",
        Duration::from_secs(12),
        || async {
            let st = get(&http, &follower.base, "/status").await.1;
            st["leader"] == true && st["applied_revision"] == v2.as_str()
        },
    )
    .await;
    eprintln!("release → new leader applied: {took:?}");
    assert_eq!(holder(&f).as_deref(), Some(follower.name));
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v2")
    );

    // The new leader applies pushes announced to it.
    edit_file(
        &f.repo.join(RED),
        "\"Checkout / HTTP RED v2\"",
        "\"Checkout / HTTP RED v3\"",
    );
    let v3 = commit_and_push(&f.repo, "checkout: RED v3");
    assert_eq!(push_hook(&http, &follower.base, &f.repo, SECRET).await, 202);
    wait_for(
        "the new leader to apply the push",
        Duration::from_secs(5),
        || async {
            get(&http, &follower.base, "/status").await.1["applied_revision"] == v3.as_str()
        },
    )
    .await;
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v3")
    );

    let status = follower.proc.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "the new leader exited with {status}");
    assert_eq!(holder(&f), None, "the last leader released the Lease too");
}

/// Forwards TCP connections to `upstream`, holding every chunk of the answers
/// for `delay`: a slow server, so that a sync takes a while.
async fn slow_proxy(upstream: String, delay: Duration) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                continue;
            };
            let (mut cr, mut cw) = client.into_split();
            let (mut sr, mut sw) = server.into_split();
            tokio::spawn(async move {
                let _ = tokio::io::copy(&mut cr, &mut sw).await;
            });
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    let n = match sr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    tokio::time::sleep(delay).await;
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

/// Regression: a leader that lost the Lease in the middle of a long sync went on
/// applying to the end of it (and `/status` still said `leader: true`), while
/// another replica could already have taken over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_loses_the_lease_mid_sync_stops_applying() {
    let f = Fakes::start().await;
    f.kube
        .put(
            "test",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}),
        )
        .unwrap();
    // Every answer of Grafana takes 400 ms: the first sync (some 60 requests)
    // lasts far longer than the 10 s renew deadline.
    let slow = slow_proxy(
        f.grafana.url().trim_start_matches("http://").to_string(),
        Duration::from_millis(400),
    )
    .await;
    edit_file(&f.repo.join("mop.yaml"), &f.grafana.url(), &slow);
    let git = GitServer::serve(&f.repo, f.tmp.path()).await;
    let secret = f.tmp.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let http = reqwest::Client::new();
    let a = start_replica(&f, &git, &secret, "mop-a");

    wait_for(
        "the leader to start applying",
        Duration::from_secs(15),
        || async { f.grafana.recorder().writes() > 0 },
    )
    .await;
    assert_eq!(holder(&f).as_deref(), Some("mop-a"));
    assert_eq!(get(&http, &a.base, "/status").await.1["leader"], true);

    // The API server stops accepting this replica: it cannot renew, and steps
    // down after its renew deadline (10 s).
    f.kube.set_token(Some("not-the-replicas-token"));
    let t0 = std::time::Instant::now();
    wait_for(
        "the leader to step down",
        Duration::from_secs(14),
        || async { get(&http, &a.base, "/status").await.1["leader"] == false },
    )
    .await;
    eprintln!("stepped down {:?} after the API refused it", t0.elapsed());
    let writes = f.grafana.recorder().writes();
    let requests = f.grafana.recorder().requests().len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        f.grafana.recorder().writes(),
        writes,
        "a replica that is no longer leader went on applying"
    );
    assert_eq!(f.grafana.recorder().requests().len(), requests);
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red"),
        None,
        "the sync was abandoned before the dashboards"
    );
}
