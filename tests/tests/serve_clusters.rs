//! Several clusters from one repository, end to end: one config repository with
//! `clusters/staging.yaml` and `clusters/prod.yaml`, served by a real
//! `git daemon`, synced by two real `mop serve --cluster …` processes, each
//! against its own strict Grafana, ruler and Kubernetes fakes (RBAC from
//! deploy/base). A commit that changes only staging makes zero writes on prod,
//! counted at prod's fakes, and prod's `/status` says the commit was not its.
//!
//! Needs the `mop` binary built next to this test (as for `serve_e2e.rs`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use serde_json::Value;
use support::{Fakes, GitServer, Proc, commit_and_push, free_port, git, mop_bin, sync_count};

const SECRET: &str = "webhook-secret-for-clusters";

/// `clusters/<name>.yaml` pointing at `f`'s fakes; `extra` is appended.
fn cluster_file(environment: &str, f: &Fakes, extra: &str) -> String {
    let password = f.tmp.path().join("grafana-password");
    let ruler = f.ruler.url();
    format!(
        "environment: {environment}
grafana:
  url: {grafana}
  admin_user: mop-admin
  admin_password:
    file: {password}
  platform_org: Platform
backends:
  mimir:
    url: {ruler}
    overrides: {{ namespace: monitoring, name: mimir-runtime-overrides }}
  loki:
    url: {ruler}
    overrides: {{ namespace: monitoring, name: loki-runtime-overrides }}
  tempo:
    url: http://tempo-query-frontend.monitoring.svc:3200
    push_url: http://tempo-distributor.monitoring.svc:4318/v1/traces
    overrides: {{ namespace: monitoring, name: tempo-runtime-overrides }}
  pyroscope:
    url: http://pyroscope.monitoring.svc:4040
    overrides: {{ namespace: monitoring, name: pyroscope-runtime-overrides }}
{extra}",
        grafana = f.grafana.url(),
        password = password.display(),
    )
}

struct Syncer {
    _proc: Proc,
    base: String,
}

impl Syncer {
    fn start(f: &Fakes, git_url: &str, cluster: &str, secret: &std::path::Path) -> Self {
        let port = free_port();
        let proc = Proc::adopt(
            Command::new(mop_bin())
                .args([
                    "serve",
                    "--git-url",
                    git_url,
                    "--branch",
                    "main",
                    "--mirror-dir",
                ])
                .arg(f.tmp.path().join(format!("mirror-{cluster}")))
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .arg("--webhook-secret-file")
                .arg(secret)
                // Only the webhook triggers syncs during the test.
                .args(["--interval", "1h"])
                // The cluster from the pod's environment, as deploy/ sets it.
                .env("MOP_CLUSTER", cluster)
                .env("KUBECONFIG", &f.kubeconfig)
                .env("RUST_LOG", "info")
                .stdout(Stdio::null())
                .stderr(Stdio::inherit())
                .spawn()
                .unwrap(),
        );
        Self {
            _proc: proc,
            base: format!("http://127.0.0.1:{port}"),
        }
    }

    async fn get(&self, http: &reqwest::Client, path: &str) -> (u16, Value) {
        support::get(http, &self.base, path).await
    }

    async fn syncs(&self, http: &reqwest::Client) -> u64 {
        sync_count(&self.get(http, "/metrics").await.1)
    }

    /// Waits for a sync attempt after `n0` attempts, returning `/status`.
    async fn attempt_after(&self, http: &reqwest::Client, n0: u64) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.syncs(http).await > n0 {
                return self.get(http, "/status").await.1;
            }
            assert!(Instant::now() < deadline, "no sync on {}", self.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// (Grafana writes, ruler writes, Kubernetes write requests) at one cluster's fakes.
fn writes(f: &Fakes) -> (u64, u64, usize) {
    f.writes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_to_staging_writes_nothing_on_prod() {
    let staging = Fakes::start().await;
    let prod = Fakes::start().await;
    // The repository: staging's copy of repo-template, plus two clusters. prod
    // serves every tenant; staging only checkout and platform (the gateway's
    // default tenant), so catalog is a tenant only prod has.
    let repo = staging.repo.clone();
    std::fs::create_dir_all(repo.join("clusters")).unwrap();
    let staging_limits = "defaults:\n  metrics:\n    ingestion_burst_size: 200000\n";
    std::fs::write(
        repo.join("clusters/staging.yaml"),
        cluster_file(
            "staging",
            &staging,
            &format!("tenants:\n  names: [checkout, platform]\n{staging_limits}"),
        ),
    )
    .unwrap();
    std::fs::write(
        repo.join("clusters/prod.yaml"),
        cluster_file("prod", &prod, "promote_after: staging\n"),
    )
    .unwrap();
    let secret = staging.tmp.path().join("webhook-secret");
    std::fs::write(&secret, SECRET).unwrap();
    let server = GitServer::serve(&repo, staging.tmp.path()).await;
    let first = git(&repo, &["rev-parse", "HEAD"]);

    let http = reqwest::Client::new();
    let s = Syncer::start(&staging, &server.url, "staging", &secret);
    let p = Syncer::start(&prod, &server.url, "prod", &secret);
    for (name, syncer) in [("staging", &s), ("prod", &p)] {
        support::wait_for(
            &format!("{name}'s first sync"),
            Duration::from_secs(90),
            || async { syncer.get(&http, "/status").await.1["applied_revision"] == first.as_str() },
        )
        .await;
        let st = syncer.get(&http, "/status").await.1;
        assert_eq!(st["cluster"], name, "{st:#}");
        assert_eq!(st["last_result"], "success", "{st:#}");
    }
    // Each cluster got its own tenants, in its own Grafana.
    assert!(
        prod.grafana.org_id("Catalog").is_some(),
        "catalog is on prod"
    );
    assert!(
        staging.grafana.org_id("Catalog").is_none(),
        "catalog is not on staging"
    );
    assert!(staging.grafana.org_id("Checkout").is_some());
    assert!(prod.grafana.org_id("Checkout").is_some());

    // A commit that changes only staging (its tenants' default limits).
    let prod_before = writes(&prod);
    let staging_before = writes(&staging);
    let path = repo.join("clusters/staging.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace(
            "ingestion_burst_size: 200000",
            "ingestion_burst_size: 310000",
        ),
    )
    .unwrap();
    let (n_staging, n_prod) = (s.syncs(&http).await, p.syncs(&http).await);
    let change = commit_and_push(&repo, "staging: higher metric ingestion rate");
    for syncer in [&s, &p] {
        assert_eq!(
            support::push_hook(&http, &syncer.base, &repo, SECRET).await,
            202
        );
    }
    // staging applies it.
    support::wait_for(
        "staging to apply the change",
        Duration::from_secs(30),
        || async { s.get(&http, "/status").await.1["applied_revision"] == change.as_str() },
    )
    .await;
    let st = s.attempt_after(&http, n_staging).await;
    assert!(st.get("unchanged_for_cluster").is_none(), "{st:#}");
    let overrides = staging
        .kube
        .get(
            "v1",
            "ConfigMap",
            Some("monitoring"),
            "mimir-runtime-overrides",
        )
        .expect("staging's Mimir overrides");
    assert!(
        overrides.to_string().contains("310000"),
        "staging's overrides carry the new limit: {overrides}"
    );
    assert_ne!(writes(&staging), staging_before, "staging wrote the change");

    // prod saw the commit, wrote nothing, and says why.
    let st = p.attempt_after(&http, n_prod).await;
    assert_eq!(st["source_revision"], change.as_str(), "{st:#}");
    assert_eq!(st["applied_revision"], first.as_str(), "{st:#}");
    assert_eq!(st["unchanged_for_cluster"], change.as_str(), "{st:#}");
    assert_eq!(st["last_result"], "success", "{st:#}");
    assert_eq!(
        writes(&prod),
        prod_before,
        "prod wrote for a staging-only commit"
    );
    let overrides = prod
        .kube
        .get(
            "v1",
            "ConfigMap",
            Some("monitoring"),
            "mimir-runtime-overrides",
        )
        .expect("prod's Mimir overrides");
    assert!(!overrides.to_string().contains("310000"), "{overrides}");

    // A commit that changes prod is applied on prod, and nothing on staging.
    let staging_before = writes(&staging);
    let path = repo.join("clusters/prod.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        format!("{text}defaults:\n  metrics:\n    ingestion_burst_size: 250000\n"),
    )
    .unwrap();
    let (n_staging, n_prod) = (s.syncs(&http).await, p.syncs(&http).await);
    let prod_change = commit_and_push(&repo, "prod: its own limits");
    for syncer in [&s, &p] {
        assert_eq!(
            support::push_hook(&http, &syncer.base, &repo, SECRET).await,
            202
        );
    }
    p.attempt_after(&http, n_prod).await;
    support::wait_for(
        "prod to apply its change",
        Duration::from_secs(30),
        || async { p.get(&http, "/status").await.1["applied_revision"] == prod_change.as_str() },
    )
    .await;
    let st = s.attempt_after(&http, n_staging).await;
    assert_eq!(st["unchanged_for_cluster"], prod_change.as_str(), "{st:#}");
    assert_eq!(st["applied_revision"], change.as_str(), "{st:#}");
    assert_eq!(
        writes(&staging),
        staging_before,
        "staging wrote for a prod-only commit"
    );
}
