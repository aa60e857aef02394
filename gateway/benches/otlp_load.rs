//! The load generator and counting sink of `benches/gateway-vs-rotel.sh`, which
//! measures mop-gateway and another OTLP collector end to end on loopback: OTLP/HTTP
//! protobuf in, uncompressed OTLP/HTTP protobuf out. Not a benchmark by itself:
//! run under `cargo bench` (no subcommand) it only says so.
//!
//! ```text
//! otlp_load sink ADDR_FILE             # bind 127.0.0.1:0, write the address to ADDR_FILE,
//!                                      # answer every OTLP/HTTP trace export with 200 and
//!                                      # count its spans; GET /count prints the total
//! otlp_load load URL SINK TOTAL_SPANS [IN_FLIGHT]
//!                                      # post TOTAL_SPANS spans to URL as 100-span requests
//!                                      # (200 distinct pre-encoded bodies, reused in turn),
//!                                      # IN_FLIGHT (16) at a time, then wait until the sink
//!                                      # at SINK has counted them all; prints one JSON line
//! ```
//!
//! The requests are `common/sdk.rs`'s SDK-shaped set (40 services, 1–4 resources
//! per request, spans of mixed kinds with their semantic-convention attributes),
//! or with `OTLP_LOAD_SET=agent` the pipeline benchmark's uniform set (4 resources
//! of 25 spans, 6 identical HTTP attributes per span). The sink refuses compressed bodies (415) so a collector that is not
//! exporting uncompressed cannot be measured by mistake.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark: a panic is the failure report

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, header};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use common::SPANS_PER_REQUEST;

/// The request set named by `OTLP_LOAD_SET`, as the bodies the load generator
/// posts: `sdk` (the default; many services, SDK-shaped spans of mixed kinds, see
/// `common/sdk.rs`) or `agent` (the pipeline benchmark's uniform set: one
/// service, identical attributes).
fn requests() -> (&'static str, Vec<Bytes>) {
    let set = std::env::var("OTLP_LOAD_SET").unwrap_or_else(|_| "sdk".into());
    let (name, bodies) = match set.as_str() {
        "sdk" => ("sdk", common::sdk::requests()),
        "agent" => ("agent", common::requests()),
        other => panic!("OTLP_LOAD_SET={other:?}: use sdk or agent"),
    };
    (name, bodies.into_iter().map(Bytes::from).collect())
}

async fn sink(addr_file: &str) {
    let spans = Arc::new(AtomicU64::new(0));
    let count = spans.clone();
    let export = move |headers: HeaderMap, body: Bytes| {
        let spans = spans.clone();
        async move {
            if headers
                .get(header::CONTENT_ENCODING)
                .is_some_and(|v| v.as_bytes() != b"identity")
            {
                return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
            }
            let Ok(req) = ExportTraceServiceRequest::decode(body) else {
                return (StatusCode::BAD_REQUEST, Vec::new());
            };
            let n: usize = req
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .map(|ss| ss.spans.len())
                .sum();
            spans.fetch_add(n as u64, Ordering::Relaxed);
            (
                StatusCode::OK,
                ExportTraceServiceResponse::default().encode_to_vec(),
            )
        }
    };
    let app = axum::Router::new()
        .route("/v1/traces", axum::routing::post(export))
        .route(
            "/count",
            axum::routing::get(move || {
                let count = count.clone();
                async move { count.load(Ordering::Relaxed).to_string() }
            }),
        )
        // A collector's batch of 8192 spans is about 3 MB, over axum's 2 MB default.
        .layer(axum::extract::DefaultBodyLimit::max(256 << 20));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let tmp = format!("{addr_file}.tmp");
    std::fs::write(&tmp, l.local_addr().unwrap().to_string()).unwrap();
    std::fs::rename(&tmp, addr_file).unwrap();
    axum::serve(l, app).await.unwrap();
}

async fn sink_count(client: &reqwest::Client, sink: &str) -> u64 {
    let text = client
        .get(format!("{sink}/count"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.trim().parse().unwrap()
}

async fn load(url: &str, sink: &str, total_spans: usize, in_flight: usize) {
    let (set, bodies) = requests();
    let body_bytes: usize = bodies.iter().map(Bytes::len).sum();
    let total_requests = total_spans.div_ceil(SPANS_PER_REQUEST);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(in_flight)
        .build()
        .unwrap();
    let before = sink_count(&client, sink).await;
    let target = before + (total_requests * SPANS_PER_REQUEST) as u64;
    let started = Instant::now();
    let permits = Arc::new(tokio::sync::Semaphore::new(in_flight));
    let retried = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..total_requests {
        let permit = permits.clone().acquire_owned().await.unwrap();
        let (client, url, body, retried) = (
            client.clone(),
            url.to_string(),
            bodies[i % bodies.len()].clone(),
            retried.clone(),
        );
        tasks.spawn(async move {
            // A collector pushing back (429/503) is asked again: every span must
            // arrive for the round to count.
            loop {
                let resp = client
                    .post(&url)
                    .header(header::CONTENT_TYPE, "application/x-protobuf")
                    .body(body.clone())
                    .send()
                    .await
                    .unwrap();
                match resp.status() {
                    StatusCode::OK => break,
                    StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                        retried.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    s => panic!("{url} answered {s}"),
                }
            }
            drop(permit);
        });
        // Reap finished tasks as we go so the set stays small.
        while tasks.try_join_next().is_some() {}
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    let sent = started.elapsed();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut got = sink_count(&client, sink).await;
    while got < target {
        assert!(
            Instant::now() < deadline,
            "the sink counted {} of {} spans after 120 s",
            got - before,
            target - before
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        got = sink_count(&client, sink).await;
    }
    let done = started.elapsed();
    println!(
        "{{\"spans\":{},\"requests\":{total_requests},\"in_flight\":{in_flight},\"send_s\":{:.3},\"delivered_s\":{:.3},\"spans_per_s\":{:.0},\"sink_counted\":{},\"retried\":{},\"set\":\"{set}\",\"bytes_per_span\":{:.0}}}",
        total_requests * SPANS_PER_REQUEST,
        sent.as_secs_f64(),
        done.as_secs_f64(),
        (total_requests * SPANS_PER_REQUEST) as f64 / done.as_secs_f64(),
        got - before,
        retried.load(Ordering::Relaxed),
        body_bytes as f64 / (bodies.len() * SPANS_PER_REQUEST) as f64,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rt = || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    };
    match args.first().map(String::as_str) {
        Some("sink") => rt().block_on(sink(&args[1])),
        Some("load") => {
            let total: usize = args[3].parse().unwrap();
            let in_flight: usize = args.get(4).map_or(16, |s| s.parse().unwrap());
            rt().block_on(load(&args[1], &args[2], total, in_flight))
        }
        _ => println!(
            "otlp_load: load generator and sink of benches/gateway-vs-rotel.sh; nothing to run on its own"
        ),
    }
}
