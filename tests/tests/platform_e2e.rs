//! The whole platform on one machine (issue 6, part 4): a git repository made from
//! `repo-template` → the real `mop sync` renders and applies the gateway's
//! routing+sampling ConfigMap (and the agent's config) to the Kubernetes fake →
//! the real `mop-gateway` runs with that ConfigMap mounted the way the kubelet
//! mounts it → the real `mop-agent` (eBPF, root) captures a python HTTP server
//! that its config maps to namespace `checkout` → spans reach a strict Tempo fake
//! and RED metrics a real Prometheus (through a relay that checks the tenant
//! header), both as tenant `checkout`. Then a commit to `sampling.yaml`, synced
//! again and published by a `..data` symlink swap, hot-reloads the gateway and
//! changes which traces are kept.
//!
//! Needs `mop`, `mop-gateway` and `mop-agent` built next to this test (`cargo
//! nextest run --workspace`, or `cargo build -p mop-syncer -p mop-gateway -p
//! mop-agent`), root (or CAP_BPF + CAP_PERFMON) for the agent, and `git`,
//! `python3`, `curl` and `prometheus` (.ci/apt.d).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

#[path = "platform/backends.rs"]
mod backends;
mod support;

use std::collections::BTreeMap;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use backends::{Prometheus, RemoteWriteRelay, Tempo};
use mop_kube_fake::FakeKube;
use opentelemetry_proto::tonic::common::v1::{KeyValue, any_value::Value as AnyValue};
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use serde_json::{Value, json};
use support::{
    copy_dir, free_port, git, mop_bin, template, wait_for, workspace_bin, write_kubeconfig,
};

const SERVICE: &str = "checkout-web";
const PARENT_SPAN: &str = "00f067aa0ba902b7";
const PAY: &str = "/api/checkout/pay";
const CART: &str = "/api/checkout/cart";

// A child killed with its process group on drop, its output in a log file
// that failure messages quote; a system program found or named by package.
use mop_test_support::{Proc, require};

/// Replaces `from` by `to` in a file, insisting that `from` is there: the test
/// must notice when repo-template changes under it.
fn edit(path: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(
        text.contains(from),
        "{} no longer contains {from:?}; adapt the test",
        path.display()
    );
    std::fs::write(path, text.replace(from, to)).unwrap();
}

/// Publishes a ConfigMap's new content as the kubelet does: files in a new
/// timestamped directory, then an atomic rename of the `..data` symlink, with the
/// visible files being symlinks through `..data`.
fn publish(dir: &Path, version: &str, files: &BTreeMap<String, String>) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir(&ts).unwrap();
    for (name, content) in files {
        std::fs::write(ts.join(name), content).unwrap();
    }
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    for name in files.keys() {
        if std::fs::symlink_metadata(dir.join(name)).is_err() {
            symlink(format!("..data/{name}"), dir.join(name)).unwrap();
        }
    }
}

async fn get_text(url: &str) -> Option<String> {
    let r = reqwest::get(url).await.ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.text().await.ok()
}

/// Value of a sample in Prometheus text, summed over lines carrying every label part.
fn metric_value(text: &str, name: &str, label_parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| label_parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a AnyValue> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        AnyValue::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        AnyValue::IntValue(i) => Some(*i),
        _ => None,
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A span as Tempo received it: tenant, resource attributes, span.
#[derive(Debug, Clone)]
struct GotSpan {
    tenant: String,
    resource: Vec<KeyValue>,
    span: Span,
}

fn spans(tempo: &Tempo) -> Vec<GotSpan> {
    let mut out = Vec::new();
    for (tenant, req) in tempo.received() {
        for rs in req.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for ss in rs.scope_spans {
                for span in ss.spans {
                    out.push(GotSpan {
                        tenant: tenant.clone(),
                        resource: resource.clone(),
                        span,
                    });
                }
            }
        }
    }
    out
}

/// A trace id whose rightmost 56 bits (the randomness the gateway's probabilistic
/// policy reads) are all ones: no percentage below 100 keeps it, so only the
/// other policies decide. `n` makes it unique.
fn trace_id(n: u8) -> String {
    format!("e2e0{n:014x}ffffffffffffff")
}

/// Requests `path` with a W3C traceparent carrying `trace`; returns the status.
fn request(curl: &Path, port: u16, path: &str, trace: &str) -> u16 {
    let out = Command::new(curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-H"])
        .arg(format!("traceparent: 00-{trace}-{PARENT_SPAN}-01"))
        .arg(format!("http://127.0.0.1:{port}{path}"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).parse().unwrap_or(0)
}

/// Runs `mop sync` on the committed HEAD of `repo`, Kubernetes only.
fn mop_sync(mop: &Path, repo: &Path, kubeconfig: &Path) -> String {
    let out = Command::new(mop)
        .args(["sync", "--rev", "HEAD", "--only", "kubernetes"])
        .arg(repo)
        .env("KUBECONFIG", kubeconfig)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "mop sync failed: {text}");
    text
}

fn configmap_data(kube: &FakeKube, name: &str) -> BTreeMap<String, String> {
    let cm = kube
        .get("v1", "ConfigMap", Some("mop-system"), name)
        .unwrap_or_else(|| panic!("ConfigMap mop-system/{name} was not applied"));
    serde_json::from_value(cm["data"].clone()).unwrap()
}

/// Policy names of a tenant in a `gateway.json`.
fn policies(gateway_json: &str, tenant: &str) -> Vec<String> {
    let cfg: Value = serde_json::from_str(gateway_json).unwrap();
    let t = cfg["tenants"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == tenant)
        .unwrap_or_else(|| panic!("no tenant {tenant} in {cfg:#}"));
    t["sampling"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect()
}

struct Gateway {
    proc: Proc,
    admin: String,
}

impl Gateway {
    async fn metrics(&mut self) -> String {
        self.proc.assert_running();
        get_text(&format!("{}/metrics", self.admin))
            .await
            .unwrap_or_default()
    }

    async fn decisions(&mut self, decision: &str) -> f64 {
        let text = self.metrics().await;
        metric_value(
            &text,
            "mop_gateway_sampling_decisions_total",
            &["tenant=\"checkout\"", &format!("decision=\"{decision}\"")],
        )
    }
}

/// Requests per route as Prometheus has them, from the duration histogram's count.
async fn counts_by_route(prom: &Prometheus) -> BTreeMap<String, String> {
    prom.query(&format!(
        "sum by (http_route) (http_server_request_duration_seconds_count{{job=\"{SERVICE}\"}})"
    ))
    .await
    .iter()
    .map(|s| {
        (
            s["metric"]["http_route"].as_str().unwrap_or("").to_string(),
            s["value"][1].as_str().unwrap_or("").to_string(),
        )
    })
    .collect()
}

fn expected_counts(pay: u32, cart: u32) -> BTreeMap<String, String> {
    BTreeMap::from([
        (CART.to_string(), cart.to_string()),
        (PAY.to_string(), pay.to_string()),
    ])
}

/// Waits until the checkout tenant's sampler has decided `decided` traces in all
/// and Tempo holds every trace of `kept`, then returns what Tempo received.
async fn settle(
    gw: &mut Gateway,
    tempo: &Tempo,
    decided: f64,
    kept: &[&String],
    agent: &mut Proc,
) -> Vec<GotSpan> {
    let t0 = Instant::now();
    loop {
        agent.assert_running();
        let text = gw.metrics().await;
        let n = metric_value(
            &text,
            "mop_gateway_sampling_decisions_total",
            &["tenant=\"checkout\""],
        );
        let got = spans(tempo);
        let ids = trace_ids(&got);
        if n >= decided && kept.iter().all(|k| ids.contains(k)) {
            return got;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "within 20 s the gateway decided {n} of {decided} checkout traces and Tempo got traces {ids:?} (expected {kept:?} among them)\ngateway metrics:\n{text}\n{}\n{}",
            gw.proc.log(),
            agent.log()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn trace_ids(spans: &[GotSpan]) -> Vec<String> {
    spans.iter().map(|s| hex(&s.span.trace_id)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_to_gateway_to_backends_with_agent_traffic_and_sampling_reload() {
    let t_start = Instant::now();
    let mop = mop_bin();
    let gateway_bin = workspace_bin("mop-gateway", "mop-gateway");
    let agent_bin = workspace_bin("mop-agent", "mop-agent");
    let python = require("python3", "python3");
    let curl = require("curl", "curl");
    let prometheus = require("prometheus", "prometheus");
    require("git", "git");

    let tmp = tempfile::tempdir().unwrap();
    let logs = tmp.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();

    // Backends: Tempo fake; Prometheus behind the tenant-checking relay.
    let tempo = Tempo::start().await;
    let prom = Prometheus::start_with(&prometheus).await;
    let relay = RemoteWriteRelay::start(prom.write_url()).await;
    let kube = FakeKube::start().await.unwrap();
    let token = support::install_syncer(&kube);
    let kubeconfig = tmp.path().join("kubeconfig");
    write_kubeconfig(&kubeconfig, &kube.url(), &token);

    // The checkout service: python's http.server with the two routes.
    let app_port = free_port();
    let www = tmp.path().join("www");
    for route in [PAY, CART] {
        let f = www.join(route.trim_start_matches('/'));
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(&f, format!("{route}\n")).unwrap();
    }

    // The config repository: repo-template, pointed at this machine.
    let work = tmp.path().join("repo");
    copy_dir(&template(), &work);
    let mop_yaml = work.join("mop.yaml");
    edit(
        &mop_yaml,
        "push_url: http://tempo-distributor.monitoring.svc:4318/v1/traces",
        &format!("push_url: {}", tempo.url()),
    );
    edit(
        &mop_yaml,
        "push_url: http://mimir-nginx.monitoring.svc:80/api/v1/push",
        &format!("push_url: {}", relay.url()),
    );
    // The agent instruments exactly the test's server, not whatever else listens
    // on the template's ports on this machine.
    edit(
        &mop_yaml,
        "ports: [80, 443, 3000, 5432, 6379, 8000, 8080, 9090]",
        &format!("ports: [{app_port}]"),
    );
    // Ingest tokens from files, as a mounted Secret would provide them (the
    // gateway refuses a config whose token files it cannot read).
    let tokens = tmp.path().join("tokens");
    std::fs::create_dir_all(&tokens).unwrap();
    for t in ["checkout", "platform"] {
        let file = tokens.join(t);
        std::fs::write(&file, format!("{t}-ingest-token-e2e\n")).unwrap();
        edit(
            &work.join(format!("tenants/{t}/tenant.yaml")),
            &format!("- secret: {{ name: mop-ingest-{t}, key: token }}"),
            &format!("- file: {}", file.display()),
        );
    }
    // Decide sooner than the template's 10 s, to keep the test short.
    let sampling = work.join("tenants/checkout/sampling.yaml");
    edit(&sampling, "decision_wait: 10s", "decision_wait: 1s");
    git(&work, &["init", "-q", "-b", "main"]);
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-qm", "platform from repo-template"]);

    // 1. `mop sync` renders and applies the gateway's and the agent's config.
    mop_sync(&mop, &work, &kubeconfig);
    let routing = configmap_data(&kube, "mop-gateway-routing");
    let gateway_json = routing
        .get("gateway.json")
        .unwrap_or_else(|| panic!("no gateway.json in {routing:?}"))
        .clone();
    assert_eq!(
        policies(&gateway_json, "checkout"),
        ["errors", "slow", "payments-route", "baseline"],
        "{gateway_json}"
    );
    let mount = tmp.path().join("gateway-config");
    std::fs::create_dir_all(&mount).unwrap();
    publish(&mount, "2026_01_01_00_00_00.000000001", &routing);

    // The backend URLs come from the rendered gateway Deployment.
    let deployment = kube
        .get("apps/v1", "Deployment", Some("mop-system"), "mop-gateway")
        .expect("gateway Deployment applied");
    let args: Vec<String> = serde_json::from_value(
        deployment["spec"]["template"]["spec"]["containers"][0]["args"].clone(),
    )
    .unwrap();
    let arg = |flag: &str| {
        args.iter()
            .find_map(|a| a.strip_prefix(&format!("--{flag}=")))
            .unwrap_or_else(|| panic!("no --{flag} in {args:?}"))
            .to_string()
    };
    assert_eq!(arg("tempo-url"), tempo.url());
    assert_eq!(arg("remote-write-url"), relay.url());

    // 2. The gateway, with the mounted config and the rendered backend URLs.
    let (grpc, admin) = (free_port(), free_port());
    // The gateway runs as its own ServiceAccount, authorized only by the
    // ClusterRole and binding the syncer rendered and applied above.
    let gateway_token = tmp.path().join("gateway-sa-token");
    std::fs::write(
        &gateway_token,
        kube.service_account_token("mop-system", "mop-gateway"),
    )
    .unwrap();
    let mut gw = Gateway {
        proc: Proc::spawn_logged(
            "mop-gateway",
            &logs,
            Command::new(&gateway_bin)
                .arg(format!("--config={}", mount.join("gateway.json").display()))
                .arg(format!("--grpc-listen=127.0.0.1:{grpc}"))
                .arg(format!("--http-listen=127.0.0.1:{}", free_port()))
                .arg(format!("--admin-listen=127.0.0.1:{admin}"))
                .arg(format!("--tempo-url={}", arg("tempo-url")))
                .arg(format!("--remote-write-url={}", arg("remote-write-url")))
                .arg("--reload-interval-ms=100")
                .arg("--batch-timeout-ms=50")
                .arg("--sampler-tick-ms=50")
                // Sender identity against the Kubernetes fake: pod watch and
                // TokenReview of the agent's token.
                .arg(format!("--kubernetes={}", kube.url()))
                .arg(format!(
                    "--kubernetes-token-file={}",
                    gateway_token.display()
                ))
                .env("RUST_LOG", "info"),
        ),
        admin: format!("http://127.0.0.1:{admin}"),
    };
    {
        let gw = &mut gw;
        wait_for("the gateway's /readyz", Duration::from_secs(10), || {
            gw.proc.assert_running();
            let url = format!("{}/readyz", gw.admin);
            async move { get_text(&url).await.is_some() }
        })
        .await;
    }

    // 3. The service and the agent, configured from the rendered agent.yaml.
    let _app = Proc::spawn_logged(
        "python-http-server",
        &logs,
        Command::new(&python)
            .args([
                "-m",
                "http.server",
                &app_port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&www),
    );
    wait_for(
        "the python server to listen",
        Duration::from_secs(10),
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", app_port))
                .await
                .is_ok()
        },
    )
    .await;
    let agent_cm = configmap_data(&kube, "mop-agent-config");
    let mut agent_cfg: Value = serde_saphyr::from_str(&agent_cm["agent.yaml"]).unwrap();
    assert_eq!(
        agent_cfg["instrument"]["ports"],
        json!([app_port]),
        "{agent_cfg:#}"
    );
    let agent_metrics = free_port();
    agent_cfg["otlp_endpoint"] = json!(format!("http://127.0.0.1:{grpc}"));
    agent_cfg["metrics_listen"] = json!(format!("127.0.0.1:{agent_metrics}"));
    // No cluster here: the namespace comes from a services rule, as for a process
    // outside Kubernetes, instead of from pod metadata.
    agent_cfg["kubernetes"] = json!({ "enabled": false });
    // The agent authenticates to the gateway with a projected-style token, and
    // may name `checkout` because a checkout pod runs on its node.
    kube.run_pod(mop_kube_fake::PodSpec {
        namespace: "mop-system".into(),
        name: "mop-agent-e2e".into(),
        node: "e2e-node".into(),
        ips: vec!["10.9.0.2".into()],
        host_network: false,
    })
    .unwrap();
    kube.run_pod(mop_kube_fake::PodSpec {
        namespace: "checkout".into(),
        name: "checkout-app".into(),
        node: "e2e-node".into(),
        ips: vec!["10.9.0.3".into()],
        host_network: false,
    })
    .unwrap();
    let agent_token = kube
        .issue_token(mop_kube_fake::TokenSpec {
            namespace: "mop-system".into(),
            service_account: "mop-agent".into(),
            audiences: vec!["mop-gateway".into()],
            pod: Some("mop-agent-e2e".into()),
            node: Some("e2e-node".into()),
            valid_for: Duration::from_secs(3600),
        })
        .unwrap();
    let token_file = tmp.path().join("gateway-token");
    std::fs::write(&token_file, &agent_token).unwrap();
    assert_eq!(
        agent_cfg["gateway_token_file"],
        json!("/var/run/secrets/mop-gateway/token"),
        "the rendered agent config names the projected token"
    );
    agent_cfg["gateway_token_file"] = json!(token_file.display().to_string());
    agent_cfg["services"] =
        json!([{ "port": app_port, "service_name": SERVICE, "namespace": "checkout" }]);
    agent_cfg["export"] = json!({ "interval_ms": 200 });
    agent_cfg["rescan_interval_ms"] = json!(200);
    agent_cfg["capture"]["poll_interval_ms"] = json!(10);
    let agent_yaml = tmp.path().join("agent.yaml");
    // JSON is YAML: the agent reads it as its config file.
    std::fs::write(
        &agent_yaml,
        serde_json::to_string_pretty(&agent_cfg).unwrap(),
    )
    .unwrap();
    let mut agent = Proc::spawn_logged(
        "mop-agent",
        &logs,
        Command::new(&agent_bin).arg("--config").arg(&agent_yaml),
    );
    {
        let agent = &mut agent;
        let url = format!("http://127.0.0.1:{agent_metrics}/metrics");
        let t0 = Instant::now();
        loop {
            if let Some(st) = agent.child.try_wait().unwrap() {
                panic!(
                    "mop-agent exited with {st} (this test needs root or CAP_BPF + CAP_PERFMON, like the agent's tests)\n{}",
                    agent.log()
                );
            }
            let tracked = get_text(&url)
                .await
                .map(|t| metric_value(&t, "mop_agent_tracked_processes", &[]))
                .unwrap_or(0.0);
            if tracked >= 1.0 {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "the agent did not track the python server within 30 s\n{}",
                agent.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // 4. Traffic under the template's policies: `payments-route` keeps the pay
    // route; the cart route matches no policy (fast, no error, trace ids no
    // percentage keeps) and is dropped.
    let (p1, p2, c1, c2) = (trace_id(1), trace_id(2), trace_id(3), trace_id(4));
    for (path, t) in [(PAY, &p1), (CART, &c1), (PAY, &p2), (CART, &c2)] {
        assert_eq!(request(&curl, app_port, path, t), 200, "GET {path}");
    }
    let got = settle(&mut gw, &tempo, 4.0, &[&p1, &p2], &mut agent).await;
    assert_eq!(gw.decisions("payments-route").await, 2.0);
    assert_eq!(gw.decisions("dropped").await, 2.0);
    let ids = trace_ids(&got);
    assert!(
        ids.contains(&p1) && ids.contains(&p2),
        "pay traces kept: {got:#?}"
    );
    assert!(
        !ids.contains(&c1) && !ids.contains(&c2),
        "cart traces dropped: {ids:?}"
    );
    assert!(
        got.iter().all(|s| s.tenant == "checkout"),
        "every span under X-Scope-OrgID checkout: {got:#?}"
    );
    assert_eq!(got.len(), 2, "one server span per kept request: {got:#?}");
    let pay = got.iter().find(|s| hex(&s.span.trace_id) == p1).unwrap();
    assert_eq!(pay.span.kind, SpanKind::Server as i32, "{pay:#?}");
    assert_eq!(pay.span.name, format!("GET {PAY}"));
    assert_eq!(hex(&pay.span.parent_span_id), PARENT_SPAN);
    let a = &pay.span.attributes;
    assert_eq!(
        attr_str(a, "http.request.method").as_deref(),
        Some("GET"),
        "{a:?}"
    );
    assert_eq!(attr_str(a, "url.path").as_deref(), Some(PAY), "{a:?}");
    assert_eq!(attr_str(a, "http.route").as_deref(), Some(PAY), "{a:?}");
    assert_eq!(attr_int(a, "http.response.status_code"), Some(200), "{a:?}");
    assert_eq!(
        attr_int(a, "server.port"),
        Some(i64::from(app_port)),
        "{a:?}"
    );
    assert_eq!(
        attr_str(&pay.resource, "service.name").as_deref(),
        Some(SERVICE)
    );
    assert_eq!(
        attr_str(&pay.resource, "k8s.namespace.name").as_deref(),
        Some("checkout")
    );

    // RED metrics: in Prometheus, one count per request made, whatever sampling kept.
    let prom_ref = &prom;
    wait_for(
        "request counts (2 pay, 2 cart) in Prometheus",
        Duration::from_secs(15),
        || async move { counts_by_route(prom_ref).await == expected_counts(2, 2) },
    )
    .await;
    let series = prom
        .query(&format!(
            "http_server_request_duration_seconds_count{{job=\"{SERVICE}\",http_route=\"{PAY}\"}}"
        ))
        .await;
    assert_eq!(series.len(), 1, "{series:#?}");
    let labels = &series[0]["metric"];
    assert_eq!(labels["http_request_method"], "GET", "{labels}");
    assert_eq!(labels["http_response_status_code"], "200", "{labels}");
    let buckets = prom
        .query(&format!(
            "http_server_request_duration_seconds_bucket{{job=\"{SERVICE}\",http_route=\"{PAY}\",le=\"+Inf\"}}"
        ))
        .await;
    assert_eq!(buckets[0]["value"][1], "2", "{buckets:#?}");
    let sum = prom
        .query(&format!(
            "http_server_request_duration_seconds_sum{{job=\"{SERVICE}\",http_route=\"{PAY}\"}}"
        ))
        .await;
    let sum: f64 = sum[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!(
        sum > 0.0 && sum < 10.0,
        "duration sum of two local requests: {sum}"
    );
    let info = prom
        .query(&format!("target_info{{job=\"{SERVICE}\"}}"))
        .await;
    assert_eq!(info.len(), 1, "{info:#?}");
    assert_eq!(info[0]["metric"]["k8s_namespace_name"], "checkout");
    // …and they were written as tenant checkout, and only as checkout.
    let writes = relay.received();
    assert!(
        writes.iter().any(|(t, names)| t == "checkout"
            && names
                .iter()
                .any(|n| n == "http_server_request_duration_seconds_count")),
        "{writes:?}"
    );
    assert!(writes.iter().all(|(t, _)| t == "checkout"), "{writes:?}");

    // 5. A commit moves the kept route from pay to cart; sync; the kubelet-style
    // swap; the gateway reloads.
    edit(
        &sampling,
        "  - name: payments-route\n    type: attribute\n    key: http.route\n    values: [/api/checkout/pay, /api/checkout/confirm]",
        &format!(
            "  - name: cart-route\n    type: attribute\n    key: http.route\n    values: [{CART}]"
        ),
    );
    git(
        &work,
        &[
            "commit",
            "-qam",
            "checkout: keep cart traces instead of payments",
        ],
    );
    let writes_before = kube.mutations();
    mop_sync(&mop, &work, &kubeconfig);
    assert!(
        kube.mutations() > writes_before,
        "the second sync applied the change"
    );
    // Both syncs ran as the syncer's ServiceAccount with deploy/base's RBAC.
    support::assert_no_forbidden(&kube);
    support::api_calls::assert_recorded_calls_listed(&kube);
    let routing2 = configmap_data(&kube, "mop-gateway-routing");
    assert_eq!(
        policies(&routing2["gateway.json"], "checkout"),
        ["errors", "slow", "cart-route", "baseline"],
    );
    let reloads = gw.metrics().await;
    let reloaded = metric_value(
        &reloads,
        "mop_gateway_config_reloads_total",
        &["result=\"success\""],
    );
    publish(&mount, "2026_01_01_00_01_00.000000002", &routing2);
    let t0 = Instant::now();
    loop {
        let text = gw.metrics().await;
        let n = metric_value(
            &text,
            "mop_gateway_config_reloads_total",
            &["result=\"success\""],
        );
        if n > reloaded {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "the gateway did not reload the swapped gateway.json within 10 s\n{text}\n{}",
            gw.proc.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (p3, p4, c3, c4) = (trace_id(5), trace_id(6), trace_id(7), trace_id(8));
    for (path, t) in [(PAY, &p3), (CART, &c3), (PAY, &p4), (CART, &c4)] {
        assert_eq!(request(&curl, app_port, path, t), 200, "GET {path}");
    }
    let got = settle(&mut gw, &tempo, 8.0, &[&c3, &c4], &mut agent).await;
    assert_eq!(gw.decisions("cart-route").await, 2.0);
    assert_eq!(gw.decisions("payments-route").await, 2.0, "only phase 1's");
    assert_eq!(gw.decisions("dropped").await, 4.0);
    let ids = trace_ids(&got);
    assert!(
        ids.contains(&c3) && ids.contains(&c4),
        "cart traces kept now: {ids:?}"
    );
    assert!(
        !ids.contains(&p3) && !ids.contains(&p4),
        "pay traces dropped now: {ids:?}"
    );
    let cart = got.iter().find(|s| hex(&s.span.trace_id) == c3).unwrap();
    assert_eq!(
        attr_str(&cart.span.attributes, "http.route").as_deref(),
        Some(CART)
    );
    assert_eq!(cart.tenant, "checkout");
    // Metrics are never sampled: every request is counted.
    let prom_ref = &prom;
    wait_for(
        "request counts (4 pay, 4 cart) in Prometheus",
        Duration::from_secs(15),
        || async move { counts_by_route(prom_ref).await == expected_counts(4, 4) },
    )
    .await;
    assert!(relay.received().iter().all(|(t, _)| t == "checkout"));
    assert_eq!(got.len(), 4, "two kept spans per phase: {got:#?}");
    let text = gw.metrics().await;
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "the gateway lost nothing: {text}"
    );
    gw.proc.assert_running();
    agent.assert_running();
    eprintln!("platform e2e took {:?}", t_start.elapsed());
}
