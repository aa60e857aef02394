//! End to end: a real git repository served by a real `git daemon` → the real
//! `mop serve` binary → the strict Grafana, ruler and Kubernetes fakes.
//!
//! Needs the `mop` binary built next to this test (`cargo nextest run --workspace`
//! or `cargo build -p mop-syncer` first) and `git` with `git daemon`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use hmac::{Hmac, Mac};
use mop_fakes::grafana::FakeGrafana;
use mop_fakes::ruler::{Api, FakeRuler, RulerApis};
use mop_kube_fake::FakeKube;
use serde_json::Value;
use sha2::Sha256;
use support::{
    Proc, copy_dir, dashboard_title, free_port, git, mop_bin, sync_count, template, wait_for,
    wait_port,
};

const SECRET: &str = "webhook-secret-for-tests";

struct Platform {
    _tmp: tempfile::TempDir,
    work: PathBuf,
    grafana: FakeGrafana,
    ruler: FakeRuler,
    kube: FakeKube,
    _daemon: Proc,
    mop: Option<Proc>,
    mop_args: Vec<String>,
    kubeconfig: PathBuf,
    base: String,
    http: reqwest::Client,
}

impl Platform {
    async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let grafana = FakeGrafana::start("mop-admin", "s3cret").await.unwrap();
        for u in [
            "li@example.com",
            "sam@example.com",
            "maria@example.com",
            "jon@example.com",
            "support-lead@example.com",
        ] {
            grafana.add_user(u, u);
        }
        // Members of the platform tenant, whatever they are.
        let platform_tenant =
            std::fs::read_to_string(template().join("tenants/platform/tenant.yaml")).unwrap();
        for w in platform_tenant.split(|c: char| c.is_whitespace() || ",{}[]".contains(c)) {
            if w.contains('@') {
                grafana.add_user(w, w);
            }
        }
        let ruler = FakeRuler::start(RulerApis::ALL).await.unwrap();
        let kube = FakeKube::start().await.unwrap();

        let password = tmp.path().join("grafana-password");
        std::fs::write(&password, "s3cret\n").unwrap();
        let secret = tmp.path().join("webhook-secret");
        std::fs::write(&secret, SECRET).unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        std::fs::write(
            &kubeconfig,
            format!(
                "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n",
                kube.url()
            ),
        )
        .unwrap();

        // The config repository: repo-template pointed at the fakes.
        let work = tmp.path().join("work");
        copy_dir(&template(), &work);
        let mop_yaml = std::fs::read_to_string(work.join("mop.yaml")).unwrap();
        let mop_yaml = mop_yaml
            .replace("http://grafana.monitoring.svc:3000", &grafana.url())
            .replace("http://mimir-nginx.monitoring.svc:80", &ruler.url())
            .replace("http://loki-gateway.monitoring.svc:80", &ruler.url())
            .replace(
                "secret: { name: mop-grafana-admin, key: password }",
                &format!("file: {}", password.display()),
            );
        assert!(mop_yaml.contains(&grafana.url()) && mop_yaml.contains("file: "));
        std::fs::write(work.join("mop.yaml"), mop_yaml).unwrap();
        git(&work, &["init", "-q", "-b", "main"]);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-qm", "initial"]);
        let served = tmp.path().join("served");
        std::fs::create_dir_all(&served).unwrap();
        git(
            &served,
            &[
                "clone",
                "-q",
                "--bare",
                work.to_str().unwrap(),
                "config.git",
            ],
        );
        git(
            &work,
            &[
                "remote",
                "add",
                "origin",
                served.join("config.git").to_str().unwrap(),
            ],
        );

        let git_port = free_port();
        let daemon = Command::new("git")
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={git_port}"),
                &format!("--base-path={}", served.display()),
                served.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(git_port).await;

        let http_port = free_port();
        let mop_args: Vec<String> = vec![
            "serve".into(),
            "--git-url".into(),
            format!("git://127.0.0.1:{git_port}/config.git"),
            "--branch".into(),
            "main".into(),
            "--mirror-dir".into(),
            tmp.path().join("mirror").to_str().unwrap().into(),
            "--listen".into(),
            format!("127.0.0.1:{http_port}"),
            "--webhook-secret-file".into(),
            secret.to_str().unwrap().into(),
            // Only the webhook triggers syncs during the test.
            "--interval".into(),
            "1h".into(),
        ];
        let mop = spawn_mop(&mop_args, &kubeconfig);
        Self {
            _tmp: tmp,
            work,
            grafana,
            ruler,
            kube,
            _daemon: Proc(daemon),
            mop: Some(mop),
            mop_args,
            kubeconfig,
            base: format!("http://127.0.0.1:{http_port}"),
            http: reqwest::Client::new(),
        }
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        match self.http.get(format!("{}{path}", self.base)).send().await {
            Ok(r) => {
                let code = r.status().as_u16();
                let text = r.text().await.unwrap_or_default();
                (
                    code,
                    serde_json::from_str(&text).unwrap_or(Value::String(text)),
                )
            }
            Err(_) => (0, Value::Null),
        }
    }

    async fn status(&self) -> Value {
        self.get("/status").await.1
    }

    /// Posts a GitHub push event, signed with `secret`.
    async fn push_hook(&self, secret: &str) -> u16 {
        let head = git(&self.work, &["rev-parse", "HEAD"]);
        let body = serde_json::json!({
            "ref": "refs/heads/main",
            "before": "0000000000000000000000000000000000000000",
            "after": head,
            "repository": { "full_name": "platform/observability-config" },
        })
        .to_string();
        let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        mac.update(body.as_bytes());
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        self.http
            .post(format!("{}/webhook", self.base))
            .header("X-GitHub-Event", "push")
            .header("X-GitHub-Delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958")
            .header("X-Hub-Signature-256", sig)
            .header("Content-Type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    fn commit_and_push(&self, msg: &str) -> String {
        git(&self.work, &["add", "-A"]);
        git(&self.work, &["commit", "-qm", msg]);
        git(&self.work, &["push", "-q", "origin", "main"]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn writes(&self) -> (u64, u64, u64) {
        (
            self.grafana.recorder().writes(),
            self.ruler.recorder().writes(),
            self.kube.mutations(),
        )
    }

    /// Waits until `/status` shows an attempt after `after` (its last_attempt_unix
    /// and sync counter moved), returning the status.
    async fn next_attempt(&self, before: &Value) -> Value {
        let n0 = sync_count(&self.get("/metrics").await.1);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let n = sync_count(&self.get("/metrics").await.1);
            if n > n0 {
                return self.status().await;
            }
            assert!(Instant::now() < deadline, "no sync after {before}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn spawn_mop(args: &[String], kubeconfig: &Path) -> Proc {
    Proc(
        Command::new(mop_bin())
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    )
}

/// Stops a `mop serve` with SIGTERM and checks it exits 0.
async fn terminate(mut mop: Proc) {
    let pid = mop.0.id().to_string();
    Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    let t0 = Instant::now();
    loop {
        if let Some(st) = mop.0.try_wait().unwrap() {
            assert!(st.success(), "mop serve exited with {st}");
            return;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_push_to_applied_platform() {
    let mut p = Platform::start().await;

    // 1. The first sync applies the whole repository.
    wait_for(
        "the first sync (readyz)",
        Duration::from_secs(60),
        || async { p.get("/readyz").await.0 == 200 },
    )
    .await;
    let head = git(&p.work, &["rev-parse", "HEAD"]);
    let st = p.status().await;
    assert_eq!(st["applied_revision"], head.as_str(), "{st:#}");
    assert_eq!(st["last_result"], "success", "{st:#}");
    // The fakes hold the rendered state.
    assert!(p.grafana.org_id("Checkout").is_some());
    assert_eq!(
        dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED"),
        "checkout's RED dashboard"
    );
    assert!(p.ruler.group_count(Api::Mimir, "checkout") > 0);
    assert!(p.ruler.group_count(Api::Loki, "platform") > 0);
    let gw = p
        .kube
        .get("v1", "ConfigMap", Some("mop-system"), "mop-gateway-routing");
    assert!(gw.is_some(), "gateway routing ConfigMap applied");

    // 2. A sync with nothing changed writes nothing anywhere.
    let before = p.writes();
    assert_eq!(p.push_hook(SECRET).await, 202);
    let st = p.next_attempt(&st).await;
    assert_eq!(p.writes(), before, "no-op reconcile wrote: {st:#}");
    assert_eq!(st["drift"].as_array().map(Vec::len), Some(0), "{st:#}");

    // 3. A wrong signature is refused and fetches nothing.
    assert_eq!(p.push_hook("not-the-secret").await, 401);

    // 4. A pushed change to a dashboard and a rule is applied within 2 s of the webhook.
    let dash = p.work.join("tenants/checkout/dashboards/services/red.json");
    let text = std::fs::read_to_string(&dash).unwrap();
    std::fs::write(
        &dash,
        text.replace("\"Checkout / HTTP RED\"", "\"Checkout / HTTP RED v2\""),
    )
    .unwrap();
    let rules = rule_file(&p.work.join("tenants/checkout/rules/metrics"));
    let text = std::fs::read_to_string(&rules).unwrap();
    let text2 = text.replacen("for: 10m", "for: 7m", 1);
    assert_ne!(
        text,
        text2,
        "{} has a `for: 10m` to change",
        rules.display()
    );
    std::fs::write(&rules, text2).unwrap();
    let commit = p.commit_and_push("checkout: rename RED dashboard, slower alert");
    let t0 = Instant::now();
    assert_eq!(p.push_hook(SECRET).await, 202);
    wait_for(
        "the pushed change to be applied",
        Duration::from_secs(10),
        || async {
            dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref()
                == Some("Checkout / HTTP RED v2")
                && p.status().await["applied_revision"] == commit.as_str()
        },
    )
    .await;
    let took = t0.elapsed();
    eprintln!("push → applied: {took:?}");
    assert!(
        took < Duration::from_secs(2),
        "push → applied took {took:?}"
    );
    let group = p
        .ruler
        .group(Api::Mimir, "checkout", "saturation", "checkout-saturation")
        .expect("checkout-saturation group");
    assert!(
        group.rules.iter().any(|r| r.for_.as_deref() == Some("7m")),
        "the changed rule reached the ruler: {group:?}"
    );

    // 5. An edit in Grafana's UI is drift: reported, not reverted (policy report).
    let org = p.grafana.org_id("Checkout").unwrap();
    assert!(p.grafana.edit_dashboard(org, "checkout-red", |d| {
        d["title"] = Value::String("edited by hand".into());
    }));
    let st = p.status().await;
    assert_eq!(p.push_hook(SECRET).await, 202);
    let st = p.next_attempt(&st).await;
    let drift = st["drift"].as_array().unwrap();
    assert!(
        drift
            .iter()
            .any(|d| d["kind"] == "dashboard" && d["name"] == "checkout-red"),
        "{st:#}"
    );
    let (_, d) = p.get("/drift").await;
    assert_eq!(d["drifted"], drift.len(), "{d:#}");
    assert_eq!(
        dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref(),
        Some("edited by hand"),
        "report leaves the edit alone"
    );
    let metrics = p.get("/metrics").await.1;
    assert!(
        metrics
            .as_str()
            .unwrap()
            .contains("mop_drifted_objects{target=\"grafana\",tenant=\"checkout\"} 1"),
        "{metrics}"
    );

    // A restarted syncer knows the applied revision (recorded in the cluster) and
    // keeps reporting the edit instead of re-applying the commit over it.
    terminate(p.mop.take().unwrap()).await;
    p.mop = Some(spawn_mop(&p.mop_args, &p.kubeconfig));
    wait_for(
        "the restarted syncer's first sync",
        Duration::from_secs(30),
        || async { p.get("/status").await.1["last_result"] == "success" },
    )
    .await;
    let st = p.status().await;
    assert!(
        st["drift"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["name"] == "checkout-red"),
        "{st:#}"
    );
    assert_eq!(
        dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref(),
        Some("edited by hand"),
        "a restart does not revert drift under `report`"
    );

    // 6. With drift: heal, the edit is reverted.
    let mop_yaml = std::fs::read_to_string(p.work.join("mop.yaml")).unwrap();
    std::fs::write(
        p.work.join("mop.yaml"),
        mop_yaml.replace("drift: report", "drift: heal"),
    )
    .unwrap();
    let heal = p.commit_and_push("heal drift");
    assert_eq!(p.push_hook(SECRET).await, 202);
    wait_for(
        "the edit to be reverted",
        Duration::from_secs(10),
        || async {
            dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref()
                == Some("Checkout / HTTP RED v2")
                && p.status().await["applied_revision"] == heal.as_str()
        },
    )
    .await;
    assert!(p.grafana.edit_dashboard(org, "checkout-red", |d| {
        d["title"] = Value::String("edited again".into());
    }));
    let st = p.status().await;
    assert_eq!(p.push_hook(SECRET).await, 202);
    p.next_attempt(&st).await;
    assert_eq!(
        dashboard_title(&p.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v2"),
        "heal reverts an edit of the applied revision"
    );

    // 7. An invalid commit is not applied; /status says why; the last good stays.
    let good = p.status().await["applied_revision"].clone();
    let before = p.writes();
    let tenant = p.work.join("tenants/catalog/tenant.yaml");
    let text = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(&tenant, text.replace("display_name:", "dispaly_name:")).unwrap();
    let bad = p.commit_and_push("typo");
    let st = p.status().await;
    assert_eq!(p.push_hook(SECRET).await, 202);
    let st = p.next_attempt(&st).await;
    assert_eq!(st["last_result"], "invalid", "{st:#}");
    assert_eq!(st["applied_revision"], good, "{st:#}");
    assert_eq!(st["source_revision"], bad.as_str(), "{st:#}");
    let errors = st["validation_errors"].to_string();
    assert!(
        errors.contains("tenants/catalog/tenant.yaml") && errors.contains("dispaly_name"),
        "{errors}"
    );
    assert_eq!(p.writes(), before, "an invalid commit changes nothing");
    assert_eq!(
        p.get("/readyz").await.0,
        200,
        "still serving the last good commit"
    );

    // Clean shutdown on SIGTERM.
    terminate(p.mop.take().unwrap()).await;
}

/// The first rule file of a directory that has a `for: 10m`.
fn rule_file(dir: &Path) -> PathBuf {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
        .into_iter()
        .find(|f| std::fs::read_to_string(f).unwrap().contains("for: 10m"))
        .unwrap_or_else(|| panic!("no rule file with `for: 10m` in {}", dir.display()))
}
