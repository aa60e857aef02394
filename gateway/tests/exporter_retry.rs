//! Exporter delivery: retries with backoff honouring `Retry-After`, no retry on
//! 4xx, every drop counted by reason, health endpoints.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::fakes;
use common::otlp::spans_from;
use common::otlp::spans_seen;
use common::{eventually, metric_value, start_gateway, tenant};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

async fn send(url: String, first: u64, n: u64) {
    let body = ExportTraceServiceRequest {
        resource_spans: vec![spans_from(Some("shop"), "retry", first, n)],
    }
    .encode_to_vec();
    let r = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn retry_after_is_honoured_and_data_arrives_once() {
    let tempo = fakes::tempo().await;
    tempo.state.fail_next(503, Some("1"));
    tempo.state.fail_next(429, None);
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.retry_initial_ms = 10;
        s.retry_max_ms = 2_000;
    })
    .await;
    let started = Instant::now();
    send(gw.http_url("/v1/traces"), 1, 4).await;
    assert!(
        eventually(Duration::from_secs(10), async || !tempo
            .state
            .received()
            .is_empty())
        .await
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {took:?}"
    );
    assert_eq!(tempo.state.requests.load(Ordering::SeqCst), 3);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        spans_seen(&tempo.state.received()).len(),
        4,
        "delivered more than once"
    );
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_export_retries_total",
            &["tenant=\"team-a\""]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_exported_items_total",
            &["tenant=\"team-a\""]
        ),
        4.0,
        "{text}"
    );
}

#[tokio::test]
async fn client_errors_are_not_retried_and_are_counted() {
    let tempo = fakes::tempo().await;
    tempo.state.fail_next(400, None);
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    })
    .await;
    send(gw.http_url("/v1/traces"), 1, 3).await;
    let text = async || gw.metrics_text().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric_value(
                &text().await,
                "mop_gateway_dropped_items_total",
                &["reason=\"Rejected4xx\""],
            ) == 3.0
        })
        .await,
        "{}",
        text().await
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        tempo.state.requests.load(Ordering::SeqCst),
        1,
        "a 400 was retried"
    );
    assert!(tempo.state.received().is_empty());
}

#[tokio::test]
async fn unreachable_backend_is_retried_until_the_budget_then_counted() {
    // A port nobody listens on: connection refused every time.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://127.0.0.1:{port}/v1/traces"));
        s.retry_initial_ms = 10;
        s.retry_max_ms = 50;
        s.retry_max_elapsed_ms = 400;
    })
    .await;
    send(gw.http_url("/v1/traces"), 1, 2).await;
    let text = async || gw.metrics_text().await;
    assert!(
        eventually(Duration::from_secs(5), async || {
            metric_value(
                &text().await,
                "mop_gateway_dropped_items_total",
                &["reason=\"RetriesExhausted\""],
            ) == 2.0
        })
        .await,
        "{}",
        text().await
    );
    assert!(metric_value(&text().await, "mop_gateway_export_retries_total", &[]) >= 2.0);
}

#[tokio::test]
async fn health_readiness_and_metrics_endpoints() {
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some("http://127.0.0.1:9/v1/traces".into());
    })
    .await;
    let admin = gw.gw().admin_addr();
    let r = reqwest::get(format!("http://{admin}/healthz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("http://{admin}/readyz"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let text = gw.metrics_text().await;
    assert!(
        text.contains("mop_gateway_queue_depth{signal=\"Traces\"} 0"),
        "{text}"
    );
    assert!(text.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_can_go_to_mimir_over_otlp_with_the_tenant() {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    let mimir = fakes::mimir_otlp().await;
    let gw = start_gateway(
        &[
            tenant("team-a", &["shop"], false),
            tenant("team-b", &["billing"], false),
        ],
        None,
        |s| {
            s.metrics_otlp_url = Some(format!("http://{}/otlp/v1/metrics", mimir.addr));
        },
    )
    .await;
    let rm = |ns: &str| ResourceMetrics {
        resource: Some(common::otlp::resource(Some(ns), "svc")),
        scope_metrics: vec![ScopeMetrics {
            metrics: vec![Metric {
                name: "temperature".into(),
                data: Some(metric::Data::Gauge(Gauge {
                    data_points: vec![NumberDataPoint {
                        value: Some(number_data_point::Value::AsDouble(21.5)),
                        ..Default::default()
                    }],
                })),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let r = reqwest::Client::new()
        .post(gw.http_url("/v1/metrics"))
        .header("content-type", "application/x-protobuf")
        .body(
            ExportMetricsServiceRequest {
                resource_metrics: vec![rm("shop"), rm("billing")],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(5), async || mimir
            .state
            .received()
            .len()
            == 2)
        .await
    );
    let mut tenants: Vec<(String, String)> = mimir
        .state
        .received()
        .into_iter()
        .map(|(t, req)| {
            let ns = common::otlp::attr(
                &req.resource_metrics[0]
                    .resource
                    .as_ref()
                    .unwrap()
                    .attributes,
                "k8s.namespace.name",
            )
            .unwrap();
            (t, ns)
        })
        .collect();
    tenants.sort();
    assert_eq!(
        tenants,
        vec![
            ("team-a".into(), "shop".into()),
            ("team-b".into(), "billing".into())
        ]
    );
}
