//! What the tests that run the real `mop` binary share: the three fakes, a copy
//! of `repo-template` pointed at them, a kubeconfig for the Kubernetes fake, and
//! helpers to run `mop` and wait for `mop serve`.
//!
//! The `mop` binary must be built next to the test executable
//! (`cargo build -p mop-syncer` first, as for `serve_e2e.rs`).

#![allow(dead_code)] // each test file uses a different part

pub mod api_calls;

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use mop_fakes::grafana::FakeGrafana;
use mop_fakes::ruler::{FakeRuler, RulerApis};
use mop_kube_fake::FakeKube;
use serde_json::Value;

pub const ADMIN: &str = "mop-admin";
pub const PASSWORD: &str = "s3cret";

pub fn mop_bin() -> PathBuf {
    // A target directory shared by several work trees holds whichever `mop` was
    // built last; MOP_BIN pins the one under test.
    if let Some(bin) = std::env::var_os("MOP_BIN") {
        return PathBuf::from(bin);
    }
    workspace_bin("mop", "mop-syncer")
}

/// A binary of this workspace (`name`, from `package`), built next to the test
/// executable.
pub fn workspace_bin(name: &str, package: &str) -> PathBuf {
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        bin.is_file(),
        "{} not built: run the suite with `cargo nextest run --workspace` or `cargo build -p {package}`",
        bin.display()
    );
    bin
}

pub fn template() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../repo-template")
}

// Shared with the other crates' tests (tests/support, `mop-test-support`).
#[allow(unused_imports)] // each test binary uses some
pub use mop_test_support::{Proc, copy_dir, free_port, git, wait_for, wait_port};

/// Replaces `from` by `to` in a file, asserting the file had `from`.
pub fn edit_file(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} has no {from:?} to replace",
        path.display()
    );
    std::fs::write(path, text.replacen(from, to, 1)).unwrap();
}

/// Writes a kubeconfig whose current context is the API server at `server`
/// (a [`FakeKube`]) with a bearer token: what `mop` finds through `KUBECONFIG`
/// (`kube::Client::try_default`), as a pod finds its ServiceAccount token.
pub fn write_kubeconfig(path: &Path, server: &str, token: &str) {
    std::fs::write(
        path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {server}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {token}\n"
        ),
    )
    .unwrap();
}

/// The syncer's ServiceAccount (deploy/base/serviceaccount.yaml).
pub const SYNCER_NAMESPACE: &str = "mop-system";
pub const SYNCER_SA: &str = "mop-syncer";

fn deploy_base() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/base")
}

/// The objects of `deploy/base` that make up the syncer's identity and
/// permissions (its Namespace, ServiceAccount, Roles, ClusterRoles and
/// bindings), exactly as `kubectl apply -k deploy/base` would create them: the
/// kustomization lists plain files and transforms nothing (asserted), so its
/// output is those files' objects.
pub fn deploy_base_identity() -> Vec<Value> {
    let base = deploy_base();
    let k: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(base.join("kustomization.yaml")).unwrap())
            .unwrap();
    let keys: Vec<&str> = k.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        ["apiVersion", "kind", "resources"],
        "deploy/base/kustomization.yaml transforms its resources now: render it here as kustomize does"
    );
    let mut out = Vec::new();
    for file in k["resources"].as_array().unwrap() {
        let text = std::fs::read_to_string(base.join(file.as_str().unwrap())).unwrap();
        let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
        out.extend(docs.into_iter().filter(|d| {
            matches!(
                d["kind"].as_str(),
                Some(
                    "Namespace"
                        | "ServiceAccount"
                        | "Role"
                        | "RoleBinding"
                        | "ClusterRole"
                        | "ClusterRoleBinding"
                )
            )
        }));
    }
    assert!(
        out.iter().any(|o| o["kind"] == "ClusterRole")
            && out.iter().any(|o| o["kind"] == "ServiceAccount"),
        "deploy/base has no syncer RBAC"
    );
    out
}

/// Installs the syncer's identity from `deploy/base` into `fake` (as the
/// cluster admin, creating the namespaces its Roles live in when the test has
/// not, as the LGTM stack's would exist) and returns a token of its
/// ServiceAccount: what the syncer runs as in every test that uses this.
pub fn install_syncer(fake: &FakeKube) -> String {
    install_identity(fake, &deploy_base_identity())
}

/// [`install_syncer`] with other objects than deploy/base's (a mutated RBAC).
pub fn install_identity(fake: &FakeKube, objects: &[Value]) -> String {
    for o in objects {
        if let Some(ns) = o["metadata"]["namespace"].as_str()
            && fake.get("v1", "Namespace", None, ns).is_none()
            && !objects
                .iter()
                .any(|n| n["kind"] == "Namespace" && n["metadata"]["name"] == ns)
        {
            fake.put(
                "kubectl",
                serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
            )
            .unwrap();
        }
    }
    // Namespaces first, as kustomize orders its output.
    let mut ordered: Vec<&Value> = objects
        .iter()
        .filter(|o| o["kind"] == "Namespace")
        .collect();
    ordered.extend(objects.iter().filter(|o| o["kind"] != "Namespace"));
    for o in ordered {
        fake.put("kubectl", o.clone())
            .unwrap_or_else(|e| panic!("deploy/base {} {}: {e}", o["kind"], o["metadata"]["name"]));
    }
    fake.service_account_token(SYNCER_NAMESPACE, SYNCER_SA)
}

/// A `kube` client with `token` as its bearer token.
pub fn client_with_token(fake: &FakeKube, token: &str) -> kube::Client {
    let mut config = kube::Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some(token.to_string().into());
    kube::Client::try_from(config).unwrap()
}

/// A client with the cluster admin's credentials, for test setup only.
pub fn admin_client(fake: &FakeKube) -> kube::Client {
    client_with_token(fake, mop_kube_fake::ADMIN_TOKEN)
}

/// Asserts that nothing the fake answered was a 403: the syncer's RBAC covered
/// every call of the scenario.
#[track_caller]
pub fn assert_no_forbidden(fake: &FakeKube) {
    let denied: Vec<String> = fake
        .requests()
        .iter()
        .filter(|r| r.status == 403)
        .map(|r| format!("{} {}?{} as {}", r.method, r.path, r.query, r.user))
        .collect();
    assert!(denied.is_empty(), "requests refused by RBAC: {denied:#?}");
}

/// The fakes and a config repository (a copy of `repo-template`) pointed at them.
pub struct Fakes {
    pub tmp: tempfile::TempDir,
    /// The config repository.
    pub repo: PathBuf,
    pub kubeconfig: PathBuf,
    pub grafana: FakeGrafana,
    pub ruler: FakeRuler,
    pub kube: FakeKube,
}

/// Users that Grafana knows (they come from its login, never from the syncer).
fn users_of_template() -> Vec<String> {
    let mut users = Vec::new();
    for t in std::fs::read_dir(template().join("tenants")).unwrap() {
        let text = std::fs::read_to_string(t.unwrap().path().join("tenant.yaml")).unwrap();
        for w in text.split(|c: char| c.is_whitespace() || ",{}[]".contains(c)) {
            if w.contains('@') && !users.iter().any(|u| u == w) {
                users.push(w.to_string());
            }
        }
    }
    users
}

impl Fakes {
    pub async fn start() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let grafana = FakeGrafana::start(ADMIN, PASSWORD).await.unwrap();
        let users = users_of_template();
        assert!(!users.is_empty());
        for u in &users {
            grafana.add_user(u, u);
        }
        let ruler = FakeRuler::start(RulerApis::ALL).await.unwrap();
        let kube = FakeKube::start().await.unwrap();
        let token = install_syncer(&kube);
        put_alerting_secrets(&kube);

        let password = tmp.path().join("grafana-password");
        std::fs::write(&password, format!("{PASSWORD}\n")).unwrap();
        let kubeconfig = tmp.path().join("kubeconfig");
        write_kubeconfig(&kubeconfig, &kube.url(), &token);

        let repo = tmp.path().join("repo");
        copy_dir(&template(), &repo);
        let mop_yaml = std::fs::read_to_string(repo.join("mop.yaml")).unwrap();
        let mop_yaml = mop_yaml
            .replace("http://grafana.monitoring.svc:3000", &grafana.url())
            .replace("http://mimir-nginx.monitoring.svc:80", &ruler.url())
            .replace("http://loki-gateway.monitoring.svc:80", &ruler.url())
            .replace(
                "secret: { name: mop-grafana-admin, key: password }",
                &format!("file: {}", password.display()),
            );
        assert!(mop_yaml.contains(&grafana.url()) && mop_yaml.contains("file: "));
        std::fs::write(repo.join("mop.yaml"), mop_yaml).unwrap();
        Self {
            tmp,
            repo,
            kubeconfig,
            grafana,
            ruler,
            kube,
        }
    }

    /// Write requests received by (Grafana, the rulers, Kubernetes).
    pub fn writes(&self) -> (u64, u64, usize) {
        (
            self.grafana.recorder().writes(),
            self.ruler.recorder().writes(),
            self.kube.write_requests().len(),
        )
    }

    /// A `mop` command with the environment of a CI job: the fakes' kubeconfig,
    /// no terminal, nothing from the developer's home.
    pub fn mop(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(mop_bin());
        c.args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.tmp.path())
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        c
    }

    /// Runs `mop args…` on the repository to completion.
    pub async fn run(&self, args: &[&str]) -> Run {
        Run::of(self.mop(args).output().await.unwrap(), args)
    }
}

impl Drop for Fakes {
    /// Every test of the binary also checks that RBAC refused nothing the
    /// syncer asked, since `mop` reports some refusals only in its log.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_forbidden(&self.kube);
            api_calls::assert_recorded_calls_listed(&self.kube);
        }
    }
}

/// A finished `mop` run.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn of(o: Output, args: &[&str]) -> Self {
        let r = Self {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        };
        eprintln!(
            "--- mop {} → {:?}\n--- stdout:\n{}--- stderr:\n{}",
            args.join(" "),
            r.code,
            r.stdout,
            r.stderr
        );
        r
    }

    /// Asserts the exit code, showing the output when it differs.
    #[track_caller]
    pub fn expect(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "stdout:\n{}\nstderr:\n{}",
            self.stdout,
            self.stderr
        );
        self
    }
}

/// GET `base + path`: the status code (0 when unreachable) and the body, as JSON
/// when it parses, else as a string.
pub async fn get(http: &reqwest::Client, base: &str, path: &str) -> (u16, Value) {
    match http.get(format!("{base}{path}")).send().await {
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

/// Sum of `mop_sync_total` over results, from the Prometheus text.
pub fn sync_count(metrics: &Value) -> u64 {
    let text = metrics.as_str().unwrap_or_default();
    text.lines()
        .filter(|l| l.starts_with("mop_sync_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

pub fn dashboard_title(g: &FakeGrafana, org: &str, uid: &str) -> Option<String> {
    let org = g.org_id(org)?;
    let d = g.dashboard(org, uid)?;
    d.model["title"].as_str().map(str::to_string)
}

/// The config repository committed and served read-only by a real `git daemon`.
pub struct GitServer {
    /// `git://127.0.0.1:<port>/config.git`
    pub url: String,
    _daemon: Proc,
}

impl GitServer {
    /// Commits `repo` as it is (branch `main`) and serves a bare clone of it;
    /// `repo` gets it as `origin`, so [`commit_and_push`] publishes changes.
    pub async fn serve(repo: &Path, root: &Path) -> Self {
        git(repo, &["init", "-q", "-b", "main"]);
        git(repo, &["add", "-A"]);
        git(repo, &["commit", "-qm", "initial"]);
        let served = root.join("served");
        std::fs::create_dir_all(&served).unwrap();
        git(
            &served,
            &[
                "clone",
                "-q",
                "--bare",
                repo.to_str().unwrap(),
                "config.git",
            ],
        );
        git(
            repo,
            &[
                "remote",
                "add",
                "origin",
                served.join("config.git").to_str().unwrap(),
            ],
        );
        let port = free_port();
        // `git daemon` forks `git-daemon`: run it in a group of its own so
        // that the drop kills both.
        let daemon = Command::new("git")
            .process_group(0)
            .args([
                "daemon",
                "--reuseaddr",
                "--export-all",
                "--listen=127.0.0.1",
                &format!("--port={port}"),
                &format!("--base-path={}", served.display()),
                served.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        wait_port(port).await;
        Self {
            url: format!("git://127.0.0.1:{port}/config.git"),
            _daemon: Proc::adopt(daemon),
        }
    }
}

/// Commits everything in `repo` and pushes it to the served repository.
pub fn commit_and_push(repo: &Path, msg: &str) -> String {
    git(repo, &["add", "-A"]);
    git(repo, &["commit", "-qm", msg]);
    git(repo, &["push", "-q", "origin", "main"]);
    git(repo, &["rev-parse", "HEAD"])
}

/// Posts a GitHub push event for `repo`'s HEAD to `base/webhook`, signed with
/// `secret`; returns the status code.
pub async fn push_hook(http: &reqwest::Client, base: &str, repo: &Path, secret: &str) -> u16 {
    use hmac::{Hmac, Mac};
    let head = git(repo, &["rev-parse", "HEAD"]);
    let body = serde_json::json!({
        "ref": "refs/heads/main",
        "before": "0000000000000000000000000000000000000000",
        "after": head,
        "repository": { "full_name": "platform/observability-config" },
    })
    .to_string();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    http.post(format!("{base}/webhook"))
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

/// `repo-template` validated and rendered: its whole desired state and scope.
pub fn rendered_template() -> (mop_syncer::render::Desired, mop_syncer::apply::Scope) {
    let snap = mop_syncer::source::Snapshot::from_dir(&template()).unwrap();
    let repo = mop_syncer::validate::validate(&snap)
        .repo
        .expect("repo-template validates");
    let desired = mop_syncer::render::render(&repo).unwrap();
    (desired, mop_syncer::apply::Scope::of(&repo))
}

/// A Kubernetes fake rolling out as `rollout` says, holding the namespaces the
/// desired objects live in but MOP does not render (its own, the backends'), as
/// an installed platform has them, and the syncer's identity from `deploy/base`;
/// the client is the syncer's (its ServiceAccount token), so RBAC applies.
pub async fn cluster_for(
    desired: &mop_syncer::render::Desired,
    rollout: mop_kube_fake::RolloutSettings,
) -> (Cluster, kube::Client) {
    let fake = FakeKube::start_with(mop_kube_fake::Options {
        rollout,
        ..mop_kube_fake::Options::default()
    })
    .await
    .unwrap();
    let namespaces: std::collections::BTreeSet<String> = desired
        .resources
        .values()
        .filter_map(|r| {
            let b: Value = serde_json::from_str(&r.body).unwrap();
            b["metadata"]["namespace"].as_str().map(str::to_string)
        })
        .collect();
    for ns in namespaces {
        fake.put(
            "kubectl",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
    }
    let token = install_syncer(&fake);
    let client = client_with_token(&fake, &token);
    (Cluster(fake), client)
}

/// A fake cluster that, when the test ends without a panic, asserts RBAC
/// refused none of its requests: a product path that swallows a 403 (a drift
/// Event, the stuck-pod report) must not hide a missing permission.
pub struct Cluster(pub FakeKube);

impl std::ops::Deref for Cluster {
    type Target = FakeKube;
    fn deref(&self) -> &FakeKube {
        &self.0
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            assert_no_forbidden(&self.0);
            api_calls::assert_recorded_calls_listed(&self.0);
        }
    }
}

/// Engine options of the applier tests: prune on, deletes refused beyond
/// `max_prune_percent` of a target's MOP-owned objects.
pub fn prune_opts(max_prune_percent: f64) -> mop_syncer::apply::engine::Options {
    mop_syncer::apply::engine::Options {
        prune: true,
        max_prune_percent,
        allow_mass_prune: false,
        dry_run: false,
    }
}

/// Asserts that a target had changes and that every one was skipped, none
/// applied (what a failed observe must lead to).
pub fn assert_all_skipped(t: &mop_syncer::apply::engine::TargetReport) {
    assert!(!t.changes.is_empty(), "no changes planned");
    assert!(
        t.changes
            .iter()
            .all(|c| matches!(c.outcome, mop_syncer::apply::engine::Outcome::Skipped(_))),
        "{:#?}",
        t.changes
    );
}

/// The Secrets repo-template's alerting.yaml files reference, in MOP's
/// namespace, with values Alertmanager accepts (URLs where it wants URLs).
pub fn put_alerting_secrets(fake: &FakeKube) {
    use base64::Engine as _;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    for (name, keys) in [
        (
            "mop-alerting-platform",
            &[
                ("pagerduty-routing-key", "platform-routing-key-0001"),
                (
                    "slack-webhook-url",
                    "https://hooks.slack.example/services/T0/B0/platform",
                ),
                ("ticket-webhook-url", "https://tickets.example/hooks/mop"),
            ][..],
        ),
        (
            "mop-alerting-checkout",
            &[
                ("pagerduty-routing-key", "checkout-routing-key-0001"),
                (
                    "slack-webhook-url",
                    "https://hooks.slack.example/services/T0/B0/checkout",
                ),
            ][..],
        ),
        (
            "mop-alerting-catalog",
            &[
                ("pagerduty-routing-key", "catalog-routing-key-0001"),
                (
                    "slack-webhook-url",
                    "https://hooks.slack.example/services/T0/B0/catalog",
                ),
            ][..],
        ),
    ] {
        let data: serde_json::Map<String, Value> = keys
            .iter()
            .map(|(k, v)| ((*k).to_string(), Value::String(b64(v))))
            .collect();
        fake.put(
            "kubectl",
            serde_json::json!({"apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": SYNCER_NAMESPACE},
                "data": data}),
        )
        .unwrap();
    }
}
