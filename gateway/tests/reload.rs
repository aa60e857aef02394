//! Hot reload of `gateway.json` the way Kubernetes updates a mounted ConfigMap:
//! files live in a timestamped directory, `..data` points at it, and the update
//! is an atomic rename of a new `..data` symlink.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::otlp::{spans_from, spans_seen};
use common::{eventually, fakes, metric_value, tenant, write_config};
use mop_gateway::{Gateway, Settings};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// Publishes `content` as the ConfigMap's new version, as the kubelet does.
fn publish(dir: &Path, version: &str, content: &[u8]) {
    let ts = dir.join(format!("..{version}"));
    std::fs::create_dir(&ts).unwrap();
    std::fs::write(ts.join("gateway.json"), content).unwrap();
    let tmp = dir.join("..data_tmp");
    symlink(format!("..{version}"), &tmp).unwrap();
    std::fs::rename(&tmp, dir.join("..data")).unwrap();
    if !dir.join("gateway.json").exists() {
        symlink("..data/gateway.json", dir.join("gateway.json")).unwrap();
    }
}

async fn post(client: &reqwest::Client, url: &str, ns: &str, origin: &str, first: u64) -> u16 {
    client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(
            ExportTraceServiceRequest {
                resource_spans: vec![spans_from(Some(ns), origin, first, 1)],
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
async fn symlink_swap_reloads_and_bad_config_keeps_the_old_one() {
    let tempo = fakes::tempo().await;
    let tokens = tempfile::tempdir().unwrap();
    let mount = tempfile::tempdir().unwrap();
    let v1 = write_config(tokens.path(), &[tenant("team-a", &["shop"], false)], None);
    let v2 = write_config(
        tokens.path(),
        &[
            tenant("team-a", &["shop"], false),
            tenant("team-b", &["new-ns"], false),
        ],
        None,
    );
    publish(mount.path(), "v1", &serde_json::to_vec(&v1).unwrap());
    let mut settings = Settings::for_config(mount.path().join("gateway.json"));
    settings.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    settings.reload_interval_ms = 50;
    let gw = Gateway::start(settings).await.unwrap();
    let url = format!("http://{}/v1/traces", gw.http_addr());
    let client = reqwest::Client::new();

    // Steady traffic to a namespace both versions route, across every reload.
    let stop = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(AtomicUsize::new(0));
    let traffic = {
        let (stop, accepted, url, client) =
            (stop.clone(), accepted.clone(), url.clone(), client.clone());
        tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::SeqCst) {
                if post(&client, &url, "shop", "steady", 1_000_000 + i).await == 200 {
                    accepted.fetch_add(1, Ordering::SeqCst);
                }
                i += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    assert_eq!(post(&client, &url, "new-ns", "x", 1).await, 400);
    publish(mount.path(), "v2", &serde_json::to_vec(&v2).unwrap());
    assert!(
        eventually(Duration::from_secs(5), async || post(
            &client, &url, "new-ns", "after-v2", 2
        )
        .await
            == 200)
        .await
    );

    // Broken versions: not JSON, then valid JSON that fails validation.
    let admin = format!("http://{}/metrics", gw.admin_addr());
    let failures = async |n: f64| {
        eventually(Duration::from_secs(5), async || {
            let text = reqwest::get(&admin).await.unwrap().text().await.unwrap();
            metric_value(
                &text,
                "mop_gateway_config_reloads_total",
                &["result=\"failure\""],
            ) >= n
        })
        .await
    };
    publish(mount.path(), "v3", b"{ this is not json");
    assert!(failures(1.0).await);
    let mut dup = v2.clone();
    dup.tenants.push(dup.tenants[0].clone());
    publish(mount.path(), "v4", &serde_json::to_vec(&dup).unwrap());
    assert!(failures(2.0).await);
    // Still v2.
    assert_eq!(post(&client, &url, "new-ns", "still-v2", 3).await, 200);

    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    let steady = accepted.load(Ordering::SeqCst);
    assert!(steady > 10, "{steady}");
    assert!(
        eventually(Duration::from_secs(5), async || {
            spans_seen(&tempo.state.received())
                .iter()
                .filter(|(_, _, o)| o == "steady")
                .count()
                == steady
        })
        .await,
        "in-flight data lost across reloads"
    );
    assert!(
        eventually(Duration::from_secs(5), async || {
            spans_seen(&tempo.state.received())
                .iter()
                .any(|(t, ns, o)| t == "team-b" && ns == "new-ns" && o == "still-v2")
        })
        .await
    );
    let seen = spans_seen(&tempo.state.received());
    assert!(seen.iter().all(|(t, _, o)| o != "steady" || t == "team-a"));
    gw.shutdown().await;
}
