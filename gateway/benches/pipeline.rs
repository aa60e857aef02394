//! Gateway hot path on one core: OTLP spans decoded → tenant-routed → (tail-sampled)
//! → encoded for Tempo, against the floor of a bare prost decode + encode of the
//! same requests. Run with `cargo bench -p mop-gateway --bench pipeline`; after
//! criterion's figures it prints spans/s, the ratio to the floor and peak RSS.
//!
//! With `MOP_BENCH_PATH=none|floor|route|verified|sample` it runs only that path five times and
//! exits, for instruction counts under `valgrind --tool=callgrind`, which stay
//! repeatable on a loaded machine (see `docs/performance.md`).
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark: a panic is the failure report

mod common;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mop_gateway::export::Encoder;
use mop_gateway::export::tempo::TempoEncoder;
use mop_gateway::identity::pods::{PodFacts, PodIndex};
use mop_gateway::routing::{Caller, Grant, RouteTable};
use mop_gateway::sampling::{Output, Sampler};
use mop_gateway_config::{
    FORMAT_VERSION, GatewayConfig, Policy, PolicyRule, Sampling, TenantRoute,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use common::{NAMESPACES, REQUESTS, RESOURCES_PER_REQUEST, SPANS_PER_RESOURCE, requests};
use prost::Message;

fn config(sampled: bool) -> GatewayConfig {
    let policies = if sampled {
        vec![
            Policy {
                name: "errors".into(),
                rule: PolicyRule::Errors,
            },
            Policy {
                name: "slow".into(),
                rule: PolicyRule::Latency {
                    threshold_ms: 5_000,
                },
            },
            Policy {
                name: "base".into(),
                rule: PolicyRule::Probabilistic { percentage: 10.0 },
            },
        ]
    } else {
        vec![]
    };
    GatewayConfig {
        version: FORMAT_VERSION,
        revision: None,
        default_tenant: None,
        ring: None,
        tenants: NAMESPACES
            .iter()
            .map(|ns| TenantRoute {
                id: format!("tenant-{ns}"),
                namespaces: vec![ns.to_string()],
                token_files: vec![],
                sampling: Sampling {
                    decision_wait_ms: 0,
                    max_traces: 100_000,
                    max_spans_per_second: None,
                    policies: policies.clone(),
                    service_overrides: BTreeMap::new(),
                },
            })
            .collect(),
        identity: Default::default(),
    }
}

/// A sender allowed to name every namespace (the agent-shaped traffic of this
/// benchmark).
fn collector() -> Caller {
    Caller::Network(Grant::Namespaces(vec!["*".to_string()].into()))
}

fn floor(reqs: &[Vec<u8>]) -> usize {
    let mut bytes = 0;
    for r in reqs {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        bytes += black_box(req.encode_to_vec()).len();
    }
    bytes
}

fn route_export(reqs: &[Vec<u8>], table: &RouteTable) -> usize {
    let mut bytes = 0;
    for r in reqs {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let routed = table.route(&collector(), req.resource_spans);
        for (tenant, items) in routed.per_tenant {
            bytes += black_box(TempoEncoder.encode(&tenant, items)).body.len();
        }
    }
    bytes
}

/// A pod index with every benchmark namespace's pod on the agent's node (and 500
/// other pods around the cluster, so lookups are not in a toy map).
fn pod_index() -> std::sync::RwLock<PodIndex> {
    let mut pods: Vec<PodFacts> = NAMESPACES
        .iter()
        .enumerate()
        .map(|(i, ns)| PodFacts {
            namespace: ns.to_string(),
            name: "items-7c9f8d6b5-x2x4q".into(),
            uid: format!("uid-{i}"),
            node: Some("node-12".into()),
            ips: vec![format!("10.1.0.{i}").parse().unwrap()],
            host_network: false,
            terminal: false,
        })
        .collect();
    for i in 0..500u32 {
        pods.push(PodFacts {
            namespace: format!("ns-{}", i % 50),
            name: format!("pod-{i}"),
            uid: format!("uid-x{i}"),
            node: Some(format!("node-{}", i % 20)),
            ips: vec![std::net::IpAddr::from([
                10,
                2,
                (i / 250) as u8,
                (i % 250) as u8,
            ])],
            host_network: false,
            terminal: false,
        });
    }
    let mut idx = PodIndex::default();
    idx.replace_all(pods);
    std::sync::RwLock::new(idx)
}

/// As `route_export`, with the sender verified the way an agent is after its
/// (cached) TokenReview: per request the node's pods from the index, per resource
/// the pod-on-node check.
fn verified_route_export(
    reqs: &[Vec<u8>],
    table: &RouteTable,
    index: &std::sync::RwLock<PodIndex>,
) -> usize {
    let mut bytes = 0;
    for r in reqs {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let caller = {
            let idx = index.read().unwrap();
            Caller::Agent {
                node: Arc::from("node-12"),
                pods: idx.node("node-12"),
            }
        };
        let routed = table.route(&caller, req.resource_spans);
        debug_assert_eq!(routed.rejected_items, 0);
        for (tenant, items) in routed.per_tenant {
            bytes += black_box(TempoEncoder.encode(&tenant, items)).body.len();
        }
    }
    bytes
}

fn route_sample_export(reqs: &[Vec<u8>], table: &RouteTable) -> usize {
    let mut sampler = Sampler::default();
    let mut bytes = 0;
    for (i, r) in reqs.iter().enumerate() {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let routed = table.route(&collector(), req.resource_spans);
        let mut out = Output::default();
        for (tenant, items) in routed.per_tenant {
            let cfg = table.sampling(&tenant).unwrap();
            sampler.add(&tenant, cfg, items, i as u64, &mut out);
        }
        // One sampler tick per request, as the gateway's timer would do.
        sampler.tick(i as u64 + 1, |t| table.sampling(t), &mut out);
        for (tenant, items) in out.kept {
            bytes += black_box(TempoEncoder.encode(&tenant, items)).body.len();
        }
    }
    let mut out = Output::default();
    sampler.flush(|t| table.sampling(t), &mut out);
    bytes
}

/// The whole loop on ONE thread (a current-thread runtime): an HTTP client posting
/// the requests 16 at a time, the gateway's HTTP receiver, routing, batching, the
/// Tempo exporter, and a null backend answering 200. Client and backend costs are
/// included, so this is a lower bound for the gateway alone.
fn end_to_end_one_thread(reqs: &[Vec<u8>], spans: usize) -> f64 {
    use mop_gateway::telemetry::TenantSignal;
    use mop_gateway::{Gateway, Settings};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sink = axum::Router::new().route("/v1/traces", axum::routing::post(|| async { "" }));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let sink_addr = l.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(l, sink).await });
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gateway.json");
        std::fs::write(&path, serde_json::to_vec(&config(false)).unwrap()).unwrap();
        let mut settings = Settings::for_config(path);
        settings.tempo_url = Some(format!("http://{sink_addr}/v1/traces"));
        settings.queue_capacity = 4096;
        settings.batch_timeout_ms = 5;
        let gw = Gateway::start(settings).await.unwrap();
        let url = format!("http://{}/v1/traces", gw.http_addr());
        let client = reqwest::Client::new();
        let exported = |m: &mop_gateway::telemetry::Metrics| -> u64 {
            NAMESPACES
                .iter()
                .map(|ns| {
                    m.exported
                        .get_or_create(&TenantSignal {
                            tenant: format!("tenant-{ns}"),
                            signal: mop_gateway::signal::Signal::Traces,
                        })
                        .get()
                })
                .sum()
        };
        let mut best = Duration::MAX;
        for round in 0..6u64 {
            let target = (round + 1) * spans as u64;
            let t = Instant::now();
            let permits = Arc::new(tokio::sync::Semaphore::new(16));
            let mut tasks = tokio::task::JoinSet::new();
            for r in reqs {
                let permit = permits.clone().acquire_owned().await.unwrap();
                let (client, url, body) = (client.clone(), url.clone(), r.clone());
                tasks.spawn(async move {
                    let resp = client
                        .post(url)
                        .header("content-type", "application/x-protobuf")
                        .body(body)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 200);
                    drop(permit);
                });
            }
            while tasks.join_next().await.is_some() {}
            while exported(gw.metrics()) < target {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            // Round 0 warms connections and allocators up.
            if round > 0 {
                best = best.min(t.elapsed());
            }
        }
        gw.shutdown().await;
        spans as f64 / best.as_secs_f64()
    })
}

fn spans_per_sec(mut f: impl FnMut() -> usize, spans: usize) -> f64 {
    for _ in 0..3 {
        black_box(f());
    }
    let mut best = Duration::MAX;
    for _ in 0..15 {
        let t = Instant::now();
        black_box(f());
        best = best.min(t.elapsed());
    }
    spans as f64 / best.as_secs_f64()
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

fn main() {
    let reqs = requests();
    let spans = REQUESTS * RESOURCES_PER_REQUEST * SPANS_PER_RESOURCE;
    let plain = Arc::new(RouteTable::build(&config(false)).unwrap());
    let sampled = Arc::new(RouteTable::build(&config(true)).unwrap());
    let index = pod_index();
    if let Ok(path) = std::env::var("MOP_BENCH_PATH") {
        let mut bytes = 0;
        for _ in 0..5 {
            bytes += match path.as_str() {
                // Setup only: subtracted from the others.
                "none" => 0,
                "floor" => floor(&reqs),
                "route" => route_export(&reqs, &plain),
                "verified" => verified_route_export(&reqs, &plain, &index),
                "sample" => route_sample_export(&reqs, &sampled),
                other => panic!("unknown MOP_BENCH_PATH {other}"),
            };
        }
        println!("{path}: {} spans, {bytes} bytes encoded", 5 * spans);
        return;
    }

    let mut c = Criterion::default().configure_from_args().sample_size(20);
    {
        let mut g = c.benchmark_group("traces");
        g.throughput(Throughput::Elements(spans as u64));
        g.bench_function("floor_prost_decode_encode", |b| b.iter(|| floor(&reqs)));
        g.bench_function("decode_route_export", |b| {
            b.iter(|| route_export(&reqs, &plain))
        });
        g.bench_function("decode_verified_agent_route_export", |b| {
            b.iter(|| verified_route_export(&reqs, &plain, &index))
        });
        g.bench_function("decode_route_tail_sample_export", |b| {
            b.iter(|| route_sample_export(&reqs, &sampled))
        });
        g.finish();
    }
    c.final_summary();

    let f = spans_per_sec(|| floor(&reqs), spans);
    let r = spans_per_sec(|| route_export(&reqs, &plain), spans);
    let v = spans_per_sec(|| verified_route_export(&reqs, &plain, &index), spans);
    let s = spans_per_sec(|| route_sample_export(&reqs, &sampled), spans);
    println!(
        "\nmop-gateway pipeline, one thread, {spans} spans in {REQUESTS} requests (best of 15):"
    );
    println!("  floor (prost decode+encode)        {:>12.0} spans/s", f);
    println!(
        "  decode → route → encode            {:>12.0} spans/s  ({:.2}× the floor's time)",
        r,
        f / r
    );
    println!(
        "  decode → verify agent → route → enc {:>11.0} spans/s  ({:.2}× the floor's time, {:+.1}% vs unverified)",
        v,
        f / v,
        (r / v - 1.0) * 100.0
    );
    println!(
        "  decode → route → tail-sample → enc {:>12.0} spans/s  ({:.2}× the floor's time)",
        s,
        f / s
    );
    let e = end_to_end_one_thread(&reqs, spans);
    println!(
        "  HTTP client → gateway → null Tempo {:>12.0} spans/s  (all on one thread, best of 5 rounds)",
        e
    );
    if let Some(kib) = peak_rss_kib() {
        println!("  peak RSS                           {:>12} KiB", kib);
    }
}
