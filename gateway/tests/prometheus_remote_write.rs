//! Metrics from the OpenTelemetry Python SDK go through the gateway into a real
//! Prometheus (remote-write receiver on) and come back over Prometheus's query
//! API with the names and labels the OTel→Prometheus compatibility spec gives.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::procs::{Prometheus, run_python};
use common::{eventually, metric_value, start_gateway, tenant};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_otlp.py")
}

fn label<'a>(series: &'a serde_json::Value, name: &str) -> &'a str {
    series["metric"][name].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_metrics_land_in_prometheus_with_prometheus_names() {
    let prom = Prometheus::start().await;
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.remote_write_url = Some(prom.write_url());
    })
    .await;
    run_python(
        &script(),
        &[
            ("PROTOCOL", "http".into()),
            ("ENDPOINT", format!("http://{}", gw.gw().http_addr())),
            ("NAMESPACE", "shop".into()),
            ("SIGNALS", "metrics".into()),
            ("RUN_ID", "prom-run".into()),
        ],
    )
    .await;

    let q = r#"http_server_requests_total{test_run="prom-run"}"#;
    assert!(
        eventually(Duration::from_secs(15), async || !prom
            .query(q)
            .await
            .is_empty())
        .await,
        "series never arrived; gateway metrics:\n{}",
        gw.metrics_text().await
    );
    let counter = prom.query(q).await;
    assert_eq!(counter.len(), 1, "{counter:?}");
    let s = &counter[0];
    assert_eq!(s["value"][1], "5");
    assert_eq!(label(s, "job"), "shop/py-svc");
    assert_eq!(label(s, "instance"), "py-1");
    assert_eq!(label(s, "http_route"), "/items");
    assert_eq!(label(s, "otel_scope_name"), "mop-test");
    assert_eq!(label(s, "otel_scope_version"), "1.2.3");

    let count = prom
        .query(r#"http_server_request_duration_seconds_count{test_run="prom-run"}"#)
        .await;
    assert_eq!(count[0]["value"][1], "5", "{count:?}");
    let sum = prom
        .query(r#"http_server_request_duration_seconds_sum{test_run="prom-run"}"#)
        .await;
    let sum: f64 = sum[0]["value"][1].as_str().unwrap().parse().unwrap();
    assert!((sum - 0.3).abs() < 1e-9, "{sum}");
    let buckets = prom
        .query(r#"http_server_request_duration_seconds_bucket{test_run="prom-run"}"#)
        .await;
    let inf = buckets.iter().find(|b| label(b, "le") == "+Inf").unwrap();
    assert_eq!(inf["value"][1], "5");
    // The SDK's default bounds are 0, 5, 10, …: the observations (0.02–0.1 s) all
    // fall in (0, 5], and buckets are cumulative from there on.
    let le = |bound: &str| {
        buckets
            .iter()
            .find(|b| label(b, "le") == bound)
            .unwrap_or_else(|| panic!("no le={bound} in {buckets:?}"))["value"][1]
            .clone()
    };
    assert_eq!(le("0"), "0");
    assert_eq!(le("5"), "5");
    assert_eq!(le("10"), "5");
    // A quantile works on them, so the bucket layout is what PromQL expects.
    let p50 = prom
        .query(r#"histogram_quantile(0.5, http_server_request_duration_seconds_bucket{test_run="prom-run"})"#)
        .await;
    assert_eq!(p50.len(), 1);

    // Non-monotonic sum → gauge, no _total; `{item}` annotation adds no suffix.
    let gauge = prom.query(r#"queue_size{test_run="prom-run"}"#).await;
    assert_eq!(gauge[0]["value"][1], "7", "{gauge:?}");

    let info = prom.query(r#"target_info{job="shop/py-svc"}"#).await;
    assert_eq!(info.len(), 1, "{info:?}");
    assert_eq!(label(&info[0], "k8s_namespace_name"), "shop");
    assert_eq!(label(&info[0], "deployment_environment"), "test");
    assert_eq!(label(&info[0], "instance"), "py-1");

    let text = gw.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "mop_gateway_exported_items_total",
            &["tenant=\"team-a\"", "signal=\"Metrics\""]
        ) >= 3.0,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "{text}"
    );
}
