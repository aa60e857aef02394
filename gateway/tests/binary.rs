//! The `mop-gateway` binary as a Deployment runs it: flags, JSON logs, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::otlp::{spans_from, spans_seen};
use common::{eventually, fakes, tenant, write_config};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use mop_test_support::Proc;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_flushes_on_sigterm() {
    let tempo = fakes::tempo().await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), &[tenant("team-a", &["shop"], false)], None);
    let path = dir.path().join("gateway.json");
    std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_mop-gateway"))
        .arg(format!("--config={}", path.display()))
        .args([
            "--grpc-listen=127.0.0.1:0",
            "--http-listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
        ])
        .arg(format!("--tempo-url=http://{}/v1/traces", tempo.addr))
        // Long enough that only the shutdown flush can deliver.
        .arg("--batch-timeout-ms=60000")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Proc::adopt(child);
    // The JSON start-up log line says where it listens.
    let stdout = child.child.stdout.take().unwrap();
    let started = tokio::task::spawn_blocking(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let line = line.unwrap();
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            if v["fields"]["message"] == "mop-gateway started" {
                return v["fields"].clone();
            }
        }
        panic!("mop-gateway exited without starting");
    });
    let fields = tokio::time::timeout(Duration::from_secs(10), started)
        .await
        .unwrap()
        .unwrap();
    let http = fields["http"].as_str().unwrap().to_string();
    let admin = fields["admin"].as_str().unwrap().to_string();
    assert!(
        eventually(Duration::from_secs(10), async || {
            reqwest::get(format!("http://{admin}/readyz"))
                .await
                .is_ok_and(|r| r.status() == 200)
        })
        .await
    );
    let r = reqwest::Client::new()
        .post(format!("http://{http}/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(
            ExportTraceServiceRequest {
                resource_spans: vec![spans_from(Some("shop"), "bin", 1, 3)],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    mop_test_support::sigterm(child.pid());
    let status = tokio::task::spawn_blocking(move || {
        let s = child.child.wait().unwrap();
        drop(child);
        s
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
    assert_eq!(spans_seen(&tempo.state.received()).len(), 3);
}

#[test]
fn bad_config_refuses_to_start_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.json");
    std::fs::write(&path, r#"{"version": 1, "tenants": [], "surprise": true}"#).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_mop-gateway"))
        .arg(format!("--config={}", path.display()))
        .args([
            "--grpc-listen=127.0.0.1:0",
            "--http-listen=127.0.0.1:0",
            "--admin-listen=127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("surprise") && err.contains("gateway.json"),
        "{err}"
    );
}
