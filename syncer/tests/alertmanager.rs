//! The rendered Alertmanager configurations against the real Alertmanager
//! (Debian's `prometheus-alertmanager`: `amtool` and the server, 0.25):
//! every configuration loads, the template's alerts route to the intended
//! receivers, and a running Alertmanager given a configuration as MOP posts it
//! notifies exactly the receivers the routes name.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use mop_syncer::apply::alertmanager::{config_text, resolved_config};
use mop_syncer::render::{self, Desired, Target};
use mop_syncer::source::Snapshot;
use serde_json::{Value, json};

fn render_dir(dir: &Path) -> (mop_syncer::repo::Repo, Desired) {
    let snapshot = Snapshot::from_dir(dir).unwrap();
    let outcome = mop_syncer::validate::validate(&snapshot);
    let repo = outcome
        .repo
        .unwrap_or_else(|| panic!("{:#?}", outcome.diagnostics));
    let desired = render::render(&repo).unwrap();
    (repo, desired)
}

/// Tenant key → rendered body of its Alertmanager configuration.
fn configs(desired: &Desired) -> BTreeMap<String, Value> {
    desired
        .resources
        .values()
        .filter(|r| r.id.target == Target::MimirAlertmanager)
        .map(|r| {
            (
                r.id.tenant.clone().unwrap(),
                serde_json::from_str(&r.body).unwrap(),
            )
        })
        .collect()
}

fn amtool(args: &[&str]) -> (bool, String) {
    let out = Command::new("amtool")
        .args(args)
        .output()
        .expect("amtool is installed (Debian package prometheus-alertmanager; .ci/install-deps)");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_rendered_configuration_passes_amtool_check_config() {
    let (_, desired) = render_dir(&template());
    let configs = configs(&desired);
    assert_eq!(
        configs.keys().collect::<Vec<_>>(),
        ["catalog", "checkout", "platform"]
    );
    let dir = tempfile::tempdir().unwrap();
    for (tenant, body) in &configs {
        // As rendered (placeholders), and as posted (every credential filled).
        let resolved: BTreeMap<String, String> = body["secrets"]
            .as_object()
            .unwrap()
            .keys()
            .map(|p| {
                (
                    p.clone(),
                    "https://hooks.example.com/services/T0/B0/x".to_string(),
                )
            })
            .collect();
        // Template files beside the configuration, where its `templates`
        // names resolve (Mimir writes them to the tenant's directory).
        let tdir = dir.path().join(tenant);
        write_templates(&tdir, body);
        for (what, config) in [
            ("rendered", body["alertmanager_config"].clone()),
            ("resolved", resolved_config(body, &resolved).unwrap()),
        ] {
            let file = tdir.join(format!("{what}.yml"));
            std::fs::write(&file, config_text(&config).unwrap()).unwrap();
            let (ok, out) = amtool(&["check-config", file.to_str().unwrap()]);
            assert!(ok, "{tenant} ({what}): {out}");
            assert!(out.contains("SUCCESS"), "{out}");
        }
    }
}

fn write_templates(dir: &Path, body: &Value) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, text) in body["template_files"].as_object().unwrap() {
        std::fs::write(dir.join(name), text.as_str().unwrap()).unwrap();
    }
}

#[test]
fn the_templates_template_file_is_sent_and_loads() {
    let (_, desired) = render_dir(&template());
    let body = &configs(&desired)["checkout"];
    assert_eq!(
        body["alertmanager_config"]["templates"],
        json!(["slack.tmpl"])
    );
    assert!(
        body["template_files"]["slack.tmpl"]
            .as_str()
            .unwrap()
            .contains("define \"checkout.slack.text\"")
    );
    // A template that does not parse is refused by the real loader too, so the
    // check above is not vacuous.
    let dir = tempfile::tempdir().unwrap();
    let mut broken = body.clone();
    broken["template_files"]["slack.tmpl"] = json!("{{ define \"x\" }}");
    write_templates(dir.path(), &broken);
    let file = dir.path().join("c.yml");
    std::fs::write(&file, config_text(&body["alertmanager_config"]).unwrap()).unwrap();
    let (ok, out) = amtool(&["check-config", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
}

#[test]
fn amtool_refuses_what_validate_would_have_refused() {
    // The check above could pass on a tool that accepts anything: show amtool
    // refusing a configuration with a route to an undefined receiver.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.yml");
    std::fs::write(
        &file,
        "route: {receiver: a, routes: [{receiver: b}]}\nreceivers: [{name: a}]\n",
    )
    .unwrap();
    let (ok, out) = amtool(&["check-config", file.to_str().unwrap()]);
    assert!(!ok, "{out}");
    assert!(out.contains("undefined receiver \"b\""), "{out}");
}

/// Who should be notified of an alert with `labels` in `tenant`, written out
/// from the repo-template's intent (each team's channel; critical pages the
/// team and the platform on-call; the syncer's own alerts also open a ticket),
/// not derived from the configuration under test.
fn intended(tenant: &str, labels: &BTreeMap<String, String>) -> String {
    let severity = labels.get("severity").map(String::as_str);
    let mut to = Vec::new();
    if severity == Some("critical") {
        to.push("platform-oncall".to_string());
    }
    if tenant == "platform" {
        if labels.get("namespace").map(String::as_str) == Some("mop-system")
            && matches!(severity, Some("critical" | "warning"))
        {
            to.push("sre-tickets".into());
        }
        if to.is_empty() {
            to.push("sre-slack".into());
        }
    } else {
        match severity {
            Some("critical") => to.push(format!("{tenant}-pager")),
            _ => to.push(format!("{tenant}-slack")),
        }
    }
    to.join(",")
}

#[test]
fn the_templates_alerts_reach_the_intended_receivers() {
    let (repo, desired) = render_dir(&template());
    let configs = configs(&desired);
    let dir = tempfile::tempdir().unwrap();
    let mut tested = 0;
    for t in &repo.tenants {
        let body = &configs[&t.key];
        let tdir = dir.path().join(&t.key);
        write_templates(&tdir, body);
        let file = tdir.join("config.yml");
        std::fs::write(&file, config_text(&body["alertmanager_config"]).unwrap()).unwrap();
        // Every alerting rule of the tenant with its static labels, plus an
        // alert without severity, plus each with the namespace of MOP itself.
        let mut alerts: Vec<BTreeMap<String, String>> = Vec::new();
        for ns in t.metric_rules.iter().chain(&t.log_rules) {
            for g in &ns.file.groups {
                for r in &g.rules {
                    let Some(name) = &r.alert else { continue };
                    let mut labels: BTreeMap<String, String> = r
                        .labels
                        .iter()
                        .flatten()
                        .map(|(k, v)| (k.clone(), v.value.clone()))
                        .collect();
                    labels.insert("alertname".into(), name.value.clone());
                    alerts.push(labels);
                }
            }
        }
        alerts.push(BTreeMap::from([("alertname".into(), "Unlabelled".into())]));
        for a in alerts.clone() {
            let mut a = a;
            a.insert("namespace".into(), "mop-system".into());
            alerts.push(a);
        }
        for labels in &alerts {
            let want = intended(&t.key, labels);
            let verify = format!("--verify.receivers={want}");
            let mut args = vec![
                "config".to_string(),
                "routes".into(),
                "test".into(),
                format!("--config.file={}", file.display()),
                verify,
            ];
            args.extend(labels.iter().map(|(k, v)| format!("{k}={v}")));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let (ok, out) = amtool(&args);
            assert!(
                ok,
                "{}: {labels:?} should reach {want}: amtool says {out}",
                t.key
            );
            tested += 1;
        }
    }
    assert!(tested > 30, "only {tested} alerts routed");
}

/// Notifications a webhook server received: (receiver from the path, alertname).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

async fn webhook_server() -> (String, Seen, tokio::task::JoinHandle<()>) {
    let seen: Seen = Arc::default();
    let s = Arc::clone(&seen);
    let app = axum::Router::new().route(
        "/{receiver}",
        axum::routing::post(
            move |axum::extract::Path(receiver): axum::extract::Path<String>,
                  axum::Json(payload): axum::Json<Value>| {
                let s = Arc::clone(&s);
                async move {
                    for a in payload["alerts"].as_array().into_iter().flatten() {
                        let name = a["labels"]["alertname"].as_str().unwrap_or("").to_string();
                        s.lock().unwrap().push((receiver.clone(), name));
                    }
                    "ok"
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (url, seen, task)
}

/// A running Alertmanager in its own process group, killed with its group when
/// dropped.
struct Alertmanager(Child);

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.0.id())])
            .status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const TENANT: &str = r#"route:
  receiver: shop-team
  group_by: [alertname]
  group_wait: 1s
  group_interval: 1s
  routes:
    - matchers: ['severity="critical"']
      receiver: shop-pager
      continue: true
    - matchers: ['severity="info"']
      receiver: shop-quiet
receivers:
  - name: shop-team
    webhook_configs:
      - url: { secret: { name: mop-alerting-shop, key: team-url } }
  - name: shop-pager
    webhook_configs:
      - url: { secret: { name: mop-alerting-shop, key: pager-url } }
  - name: shop-quiet
"#;

const PLATFORM: &str = r#"receivers:
  - name: platform-oncall
    webhook_configs:
      - url: { secret: { name: mop-alerting-platform, key: oncall-url } }
routes:
  - matchers: ['severity="critical"']
    receiver: platform-oncall
    continue: true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_notifies_the_receivers_the_routes_name() {
    // A repository with one tenant whose receivers are webhooks, rendered as
    // `mop render` does, filled in as the applier fills it in before posting.
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&template(), repo.path());
    std::fs::create_dir_all(repo.path().join("tenants/shop")).unwrap();
    std::fs::write(
        repo.path().join("tenants/shop/tenant.yaml"),
        "id: shop\nnamespaces: [shop]\n",
    )
    .unwrap();
    std::fs::write(repo.path().join("tenants/shop/alerting.yaml"), TENANT).unwrap();
    std::fs::write(repo.path().join("alerting.yaml"), PLATFORM).unwrap();
    let (_, desired) = render_dir(repo.path());
    let body = configs(&desired).remove("shop").unwrap();

    let (hooks, seen, server) = webhook_server().await;
    let secret_values: BTreeMap<(&str, &str), String> = BTreeMap::from([
        (
            ("mop-alerting-shop", "team-url"),
            format!("{hooks}/shop-team"),
        ),
        (
            ("mop-alerting-shop", "pager-url"),
            format!("{hooks}/shop-pager"),
        ),
        (
            ("mop-alerting-platform", "oncall-url"),
            format!("{hooks}/platform-oncall"),
        ),
    ]);
    let resolved: BTreeMap<String, String> = body["secrets"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(pointer, r)| {
            let key = (
                r["secret"]["name"].as_str().unwrap(),
                r["secret"]["key"].as_str().unwrap(),
            );
            (pointer.clone(), secret_values[&key].clone())
        })
        .collect();
    let text = config_text(&resolved_config(&body, &resolved).unwrap()).unwrap();
    assert!(!text.contains("secret.invalid"), "{text}");

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(&config, &text).unwrap();
    let port = free_port();
    let log = std::fs::File::create(dir.path().join("alertmanager.log")).unwrap();
    let am = Alertmanager(
        Command::new("prometheus-alertmanager")
            .process_group(0)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            // No gossip: a single instance, no fixed cluster port.
            .arg("--cluster.listen-address=")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect(
                "prometheus-alertmanager is installed (Debian package prometheus-alertmanager)",
            ),
    );
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ready = http.get(format!("{base}/-/ready")).send().await;
        if ready.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "alertmanager did not become ready: {}",
            std::fs::read_to_string(dir.path().join("alertmanager.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let alerts = json!([
        {"labels": {"alertname": "ShopDown", "severity": "critical", "namespace": "shop"}},
        {"labels": {"alertname": "ShopSlow", "severity": "warning", "namespace": "shop"}},
        {"labels": {"alertname": "ShopFyi", "severity": "info", "namespace": "shop"}},
    ]);
    let posted = http
        .post(format!("{base}/api/v2/alerts"))
        .json(&alerts)
        .send()
        .await
        .unwrap();
    assert!(posted.status().is_success(), "{}", posted.status());

    let want: BTreeSet<(String, String)> = [
        ("platform-oncall", "ShopDown"),
        ("shop-pager", "ShopDown"),
        ("shop-team", "ShopSlow"),
    ]
    .into_iter()
    .map(|(r, a)| (r.to_string(), a.to_string()))
    .collect();
    let got = || -> BTreeSet<(String, String)> { seen.lock().unwrap().iter().cloned().collect() };
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_subset(&got()) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A little longer, so a notification to a receiver the routes do not name
    // (shop-team for the critical alert, anyone for the info one) would show.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(got(), want, "notifications (receiver, alert)");
    drop(am);
    server.abort();
}
