//! Staged shutdown and the disk budget.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::otlp::{spans_from, spans_seen};
use common::{eventually, fakes, metric_value, start_gateway, tenant};
use mop_gateway_config::{Policy, PolicyRule, Sampling};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

async fn post(url: &str, first: u64) -> u16 {
    reqwest::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(
            ExportTraceServiceRequest {
                resource_spans: vec![spans_from(Some("shop"), "s", first, 5)],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_partial_batches_and_open_traces() {
    let tempo = fakes::tempo().await;
    let mut sampled = tenant("team-a", &["shop"], false);
    // Nothing would be decided or sent for a minute on its own.
    sampled.sampling = Sampling {
        decision_wait_ms: 60_000,
        max_traces: 1000,
        max_spans_per_second: None,
        policies: vec![Policy {
            name: "all".into(),
            rule: PolicyRule::Always,
        }],
        service_overrides: BTreeMap::new(),
    };
    let mut gw = start_gateway(&[sampled], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.batch_timeout_ms = 60_000;
    })
    .await;
    let url = gw.http_url("/v1/traces");
    for i in 0..4 {
        assert_eq!(post(&url, i * 100).await, 200);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tempo.state.received().is_empty());
    let admin = gw.gw().admin_addr();
    gw.shutdown().await;
    assert_eq!(spans_seen(&tempo.state.received()).len(), 20);
    // Listeners are closed after shutdown.
    assert!(
        reqwest::get(format!("http://{admin}/healthz"))
            .await
            .is_err()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_disk_budget_pushes_back_and_loses_nothing() {
    let tempo = fakes::tempo().await;
    tempo.state.down.store(true, Ordering::SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.disk_queue_dir = Some(dir.path().to_path_buf());
        s.disk_queue_max_bytes = 4_000;
        s.queue_capacity = 2;
        s.batch_max_items = 5;
        s.retry_max_ms = 50;
    })
    .await;
    let url = gw.http_url("/v1/traces");
    let mut accepted = 0;
    let mut pushed_back = 0;
    for i in 0..60 {
        match post(&url, i * 100).await {
            200 => accepted += 1,
            429 => pushed_back += 1,
            other => panic!("unexpected status {other}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(pushed_back > 0, "a 4 kB budget never filled");
    assert!(accepted > 0);
    tempo.state.down.store(false, Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == accepted * 5)
        .await,
        "accepted {} spans, delivered {}",
        accepted * 5,
        spans_seen(&tempo.state.received()).len()
    );
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "{text}"
    );
}
