//! Test harness: strict fakes of Tempo and Loki, a real Prometheus process, the
//! Python OpenTelemetry SDK as a client, and an in-process gateway.
// Test harness: a panic is the failure report.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::result_large_err
)]

/// The backend fakes, shared (tests/support, `mop-test-support`).
#[allow(unused_imports)] // not every test binary uses one
pub use mop_test_support::backends as fakes;
pub mod kube;
pub mod otlp;
pub mod procs;

use std::collections::BTreeMap;
use std::path::PathBuf;

use mop_gateway::{Gateway, Settings};
use mop_gateway_config::{FORMAT_VERSION, GatewayConfig, Policy, Sampling, TenantRoute};

pub fn sampling(policies: Vec<Policy>) -> Sampling {
    Sampling {
        decision_wait_ms: 200,
        max_traces: 10_000,
        max_spans_per_second: None,
        policies,
        service_overrides: BTreeMap::new(),
    }
}

/// A tenant whose token (if any) is `token-<id>`.
pub struct TenantSpec {
    pub id: &'static str,
    pub namespaces: Vec<&'static str>,
    pub with_token: bool,
    pub sampling: Sampling,
}

pub fn tenant(id: &'static str, namespaces: &[&'static str], with_token: bool) -> TenantSpec {
    TenantSpec {
        id,
        namespaces: namespaces.to_vec(),
        with_token,
        sampling: sampling(vec![]),
    }
}

pub fn token_of(id: &str) -> String {
    format!("token-{id}-s3cr3t")
}

pub struct TestGateway {
    pub gateway: Option<Gateway>,
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub settings: Settings,
}

impl TestGateway {
    pub fn gw(&self) -> &Gateway {
        self.gateway.as_ref().unwrap()
    }
    pub fn http_url(&self, path: &str) -> String {
        format!("http://{}{}", self.gw().http_addr(), path)
    }
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.gw().grpc_addr())
    }
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.gw().admin_addr()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    pub async fn shutdown(&mut self) {
        if let Some(g) = self.gateway.take() {
            g.shutdown().await;
        }
    }
}

pub fn write_config(
    dir: &std::path::Path,
    tenants: &[TenantSpec],
    default_tenant: Option<&str>,
) -> GatewayConfig {
    let tenants = tenants
        .iter()
        .map(|t| {
            let token_files = if t.with_token {
                let p = dir.join(format!("{}.token", t.id));
                std::fs::write(&p, format!("{}\n", token_of(t.id))).unwrap();
                vec![p.display().to_string()]
            } else {
                vec![]
            };
            TenantRoute {
                id: t.id.into(),
                namespaces: t.namespaces.iter().map(|s| s.to_string()).collect(),
                token_files,
                sampling: t.sampling.clone(),
            }
        })
        .collect();
    GatewayConfig {
        version: FORMAT_VERSION,
        revision: Some("test".into()),
        default_tenant: default_tenant.map(String::from),
        tenants,
        ring: None,
        // Anonymous test clients on loopback play a trusted collector (the
        // static-mode counterpart of an agent): they may name any namespace.
        // `tests/sender_identity.rs` covers the verified kinds of sender.
        identity: mop_gateway_config::Identity {
            static_sources: vec![mop_gateway_config::StaticSource {
                cidr: "127.0.0.0/8".into(),
                tenant: None,
                namespaces: vec!["*".into()],
            }],
            ..Default::default()
        },
    }
}

pub async fn start_gateway(
    tenants: &[TenantSpec],
    default_tenant: Option<&str>,
    tweak: impl FnOnce(&mut Settings),
) -> TestGateway {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), tenants, default_tenant);
    let config_path = dir.path().join("gateway.json");
    std::fs::write(&config_path, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let mut settings = Settings::for_config(config_path.clone());
    tweak(&mut settings);
    let gateway = Gateway::start(settings.clone()).await.unwrap();
    TestGateway {
        gateway: Some(gateway),
        dir,
        config_path,
        settings,
    }
}

/// Polls `f` until it returns true or the timeout passes.
#[allow(unused_imports)] // not every test binary polls
pub use mop_test_support::eventually;

/// Value of a metric sample line in Prometheus text, summed over matching lines.
pub fn metric_value(text: &str, name: &str, label_parts: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && l[name.len()..].starts_with(['{', ' ']))
        .filter(|l| label_parts.iter().all(|p| l.contains(p)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
