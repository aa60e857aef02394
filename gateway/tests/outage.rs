//! A backend outage with the gateway restarted in the middle: with the disk queue
//! on, every accepted item arrives after recovery. Delivery is at-least-once in
//! general (a crash between a delivery and its acknowledgement resends it); in
//! this scenario nothing is delivered before the restart, so the test also checks
//! that every item arrives exactly once.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::otlp::{logs_from, spans_seen};
use common::{eventually, fakes, metric_value, write_config};
use mop_gateway::{Gateway, Settings};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_outage_across_a_restart_loses_nothing() {
    let tempo = fakes::tempo().await;
    let loki = fakes::loki().await;
    tempo.state.down.store(true, Ordering::SeqCst);
    loki.state.down.store(true, Ordering::SeqCst);

    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        &[common::tenant("team-a", &["shop"], false)],
        None,
    );
    let config_path = dir.path().join("gateway.json");
    std::fs::write(&config_path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let mut settings = Settings::for_config(config_path);
    settings.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    settings.loki_url = Some(format!("http://{}/loki/api/v1/push", loki.addr));
    settings.disk_queue_dir = Some(dir.path().join("queue"));
    settings.disk_queue_segment_bytes = 4096;
    settings.retry_max_ms = 100;
    settings.shutdown_timeout_ms = 500;

    let gw = Gateway::start(settings.clone()).await.unwrap();
    let client = reqwest::Client::new();
    for i in 0..50u64 {
        let body = ExportTraceServiceRequest {
            resource_spans: vec![common::otlp::spans_from(
                Some("shop"),
                &format!("req-{i}"),
                i * 10,
                2,
            )],
        };
        let r = client
            .post(format!("http://{}/v1/traces", gw.http_addr()))
            .header("content-type", "application/x-protobuf")
            .body(body.encode_to_vec())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let lines: Vec<String> = (0..20).map(|i| format!("line-{i}")).collect();
    let line_refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let r = client
        .post(format!("http://{}/v1/logs", gw.http_addr()))
        .header("content-type", "application/x-protobuf")
        .body(
            ExportLogsServiceRequest {
                resource_logs: vec![logs_from(Some("shop"), "svc", &line_refs)],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Let the exporter try (and fail) a few times before the restart.
    assert!(
        eventually(Duration::from_secs(5), async || tempo
            .state
            .requests
            .load(Ordering::SeqCst)
            >= 2)
        .await
    );
    gw.shutdown().await;
    assert!(tempo.state.received().is_empty());
    let spooled: u64 = std::fs::read_dir(dir.path().join("queue/traces"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(spooled > 1000, "nothing spooled to disk: {spooled} bytes");

    // Restart during the outage, then the backend recovers.
    let gw = Gateway::start(settings).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tempo.state.down.store(false, Ordering::SeqCst);
    loki.state.down.store(false, Ordering::SeqCst);

    assert!(
        eventually(Duration::from_secs(15), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            >= 100)
        .await,
        "only {} of 100 spans arrived",
        spans_seen(&tempo.state.received()).len()
    );
    let entries = || {
        loki.state
            .received()
            .iter()
            .flat_map(|(_, r)| {
                r.streams
                    .iter()
                    .flat_map(|s| s.entries.iter().map(|e| e.line.clone()))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    assert!(eventually(Duration::from_secs(15), async || entries().len() >= 20).await);
    tokio::time::sleep(Duration::from_millis(300)).await;

    let mut per_origin: HashMap<String, usize> = HashMap::new();
    for (tenant, _, origin) in spans_seen(&tempo.state.received()) {
        assert_eq!(tenant, "team-a");
        *per_origin.entry(origin).or_default() += 1;
    }
    assert_eq!(per_origin.len(), 50);
    assert!(
        per_origin.values().all(|n| *n == 2),
        "duplicates: {per_origin:?}"
    );
    let mut got = entries();
    got.sort();
    let mut want = lines.clone();
    want.sort();
    assert_eq!(got, want);

    let text = reqwest::get(format!("http://{}/metrics", gw.admin_addr()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "{text}"
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            let text = reqwest::get(format!("http://{}/metrics", gw.admin_addr()))
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            metric_value(&text, "mop_gateway_disk_queue_bytes", &[]) == 0.0
        })
        .await
    );
    gw.shutdown().await;
}
