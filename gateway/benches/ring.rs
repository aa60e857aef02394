//! The trace ring's CPU cost, on one core: spans/s of a 3-replica ring in which
//! every replica forwards the 2/3 of its input it does not own, next to the same
//! input sampled where it arrives (no ring) and the prost floor (decode + encode),
//! in one run. Run with `cargo bench -p mop-gateway --bench ring`.
//!
//! What each path does per request (all on this thread, no sockets):
//! - `floor`: decode the OTLP request, encode it again.
//! - `local`: decode → route by tenant → tail sampler → Tempo encode (what a
//!   replica does without the ring).
//! - `ring`: decode → route → split by trace owner over three members; the
//!   third owned here goes to the sampler; each other third is encoded as the
//!   forwarder's `ExportTraceServiceRequest`, decoded as the owner's ring port
//!   does, and sampled there → Tempo encode. That is the CPU the three replicas
//!   spend together per span, divided over their cores: the figure to compare
//!   with `local`, whose replicas never talk to each other.
//!
//! gRPC framing and the loopback socket are not included (they are the same
//! per byte for both receivers and scale with what is forwarded); the figures
//! are spans per second of CPU on one core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark: a panic is the failure report

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use mop_gateway::export::Encoder;
use mop_gateway::export::tempo::TempoEncoder;
use mop_gateway::ring::Ring;
use mop_gateway::ring::forward::split;
use mop_gateway::routing::{Caller, Grant, RouteTable};
use mop_gateway::sampling::{Output, Sampler};
use mop_gateway_config::{
    FORMAT_VERSION, GatewayConfig, Policy, PolicyRule, Sampling, TenantRoute,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

const REQUESTS: usize = 200;
const RESOURCES_PER_REQUEST: usize = 4;
const SPANS_PER_RESOURCE: usize = 25;
const SPANS_PER_TRACE: usize = 5;
const NAMESPACES: [&str; 4] = ["shop", "billing", "search", "infra-eu"];
const MEMBERS: [&str; 3] = ["10.0.0.1:4319", "10.0.0.2:4319", "10.0.0.3:4319"];

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

/// The same request shape as `benches/pipeline.rs`: four namespaces per request,
/// HTTP semantic-convention attributes, five spans per trace.
fn requests() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..REQUESTS)
        .map(|r| {
            let resource_spans = (0..RESOURCES_PER_REQUEST)
                .map(|i| {
                    let ns = NAMESPACES[(r + i) % NAMESPACES.len()];
                    let mut trace_id = vec![0u8; 16];
                    let spans = (0..SPANS_PER_RESOURCE)
                        .map(|s| {
                            if s % SPANS_PER_TRACE == 0 {
                                trace_id = (0..16).map(|_| rng.u8(..)).collect();
                            }
                            let start = 1_700_000_000_000_000_000u64 + rng.u64(..1_000_000_000);
                            Span {
                                trace_id: trace_id.clone(),
                                span_id: rng.u64(..).to_be_bytes().to_vec(),
                                parent_span_id: if s % SPANS_PER_TRACE == 0 {
                                    vec![]
                                } else {
                                    rng.u64(..).to_be_bytes().to_vec()
                                },
                                name: "GET /api/v1/items/{id}".into(),
                                kind: 2,
                                start_time_unix_nano: start,
                                end_time_unix_nano: start + rng.u64(..50_000_000),
                                attributes: vec![
                                    kv("http.request.method", "GET"),
                                    kv("http.route", "/api/v1/items/{id}"),
                                    kv("url.path", "/api/v1/items/12345"),
                                    kv("server.address", "items.shop.svc.cluster.local"),
                                    kv("network.peer.address", "10.1.2.3"),
                                    kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                                ],
                                status: Some(Status {
                                    code: if rng.u8(..100) == 0 { 2 } else { 1 },
                                    message: String::new(),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect();
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![
                                kv("service.name", "items"),
                                kv("k8s.namespace.name", ns),
                                kv("k8s.pod.name", "items-7c9f8d6b5-x2x4q"),
                                kv("k8s.node.name", "node-12"),
                                kv("telemetry.sdk.language", "go"),
                            ],
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "mop-agent".into(),
                                version: "0.1.0".into(),
                                ..Default::default()
                            }),
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }.encode_to_vec()
        })
        .collect()
}

/// Every trace kept (so both paths encode every span for Tempo), decided at once.
fn table() -> RouteTable {
    RouteTable::build(&GatewayConfig {
        version: FORMAT_VERSION,
        revision: None,
        default_tenant: None,
        ring: None,
        identity: Default::default(),
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
                    policies: vec![
                        Policy {
                            name: "errors".into(),
                            rule: PolicyRule::Errors,
                        },
                        Policy {
                            name: "all".into(),
                            rule: PolicyRule::Always,
                        },
                    ],
                    service_overrides: BTreeMap::new(),
                },
            })
            .collect(),
    })
    .unwrap()
}

fn floor(reqs: &[Vec<u8>]) -> usize {
    let mut bytes = 0;
    for r in reqs {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        bytes += black_box(req.encode_to_vec()).len();
    }
    bytes
}

fn sample_export(
    sampler: &mut Sampler,
    table: &RouteTable,
    tenant: &std::sync::Arc<str>,
    items: Vec<ResourceSpans>,
    now: u64,
) -> usize {
    let mut out = Output::default();
    sampler.add(
        tenant,
        table.sampling(tenant).unwrap(),
        items,
        now,
        &mut out,
    );
    sampler.tick(now + 1, |t| table.sampling(t), &mut out);
    out.kept
        .into_iter()
        .map(|(t, items)| black_box(TempoEncoder.encode(&t, items)).body.len())
        .sum()
}

/// A sender allowed to name every namespace (the agent-shaped traffic of this
/// benchmark).
fn collector() -> Caller {
    Caller::Network(Grant::Namespaces(vec!["*".to_string()].into()))
}

fn local(reqs: &[Vec<u8>], table: &RouteTable) -> usize {
    let mut sampler = Sampler::default();
    let mut bytes = 0;
    for (i, r) in reqs.iter().enumerate() {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let routed = table.route(&collector(), req.resource_spans);
        for (tenant, items) in routed.per_tenant {
            bytes += sample_export(&mut sampler, table, &tenant, items, i as u64);
        }
    }
    bytes
}

fn ring(reqs: &[Vec<u8>], table: &RouteTable, ring: &Ring) -> usize {
    // One sampler per replica; requests arrive round-robin at the three.
    let mut samplers: Vec<Sampler> = (0..3).map(|_| Sampler::default()).collect();
    let mut bytes = 0;
    for (i, r) in reqs.iter().enumerate() {
        let here = i % 3;
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let routed = table.route(&collector(), req.resource_spans);
        for (tenant, items) in routed.per_tenant {
            let s = split(ring, MEMBERS[here], items);
            bytes += sample_export(&mut samplers[here], table, &tenant, s.local, i as u64);
            for (owner, frags) in s.remote {
                // The forwarder's request, and the owner's ring port decoding it.
                let wire = ExportTraceServiceRequest {
                    resource_spans: frags,
                }
                .encode_to_vec();
                let got = ExportTraceServiceRequest::decode(&black_box(wire)[..]).unwrap();
                let o = MEMBERS.iter().position(|m| **m == *owner).unwrap();
                bytes += sample_export(
                    &mut samplers[o],
                    table,
                    &tenant,
                    got.resource_spans,
                    i as u64,
                );
            }
        }
    }
    bytes
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

fn main() {
    let reqs = requests();
    let spans = REQUESTS * RESOURCES_PER_REQUEST * SPANS_PER_RESOURCE;
    let table = table();
    let members = Ring::new(MEMBERS);
    // Which share the ring forwards with this data (2/3 expected).
    let mut forwarded = 0usize;
    for (i, r) in reqs.iter().enumerate() {
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let s = split(&members, MEMBERS[i % 3], req.resource_spans);
        forwarded += s
            .remote
            .iter()
            .flat_map(|(_, v)| v)
            .map(|rs| {
                rs.scope_spans
                    .iter()
                    .map(|ss| ss.spans.len())
                    .sum::<usize>()
            })
            .sum::<usize>();
    }
    match std::env::var("MOP_BENCH_PATH").as_deref() {
        // Setup only (requests, table, the forwarded share): subtracted from the others.
        Ok("none") => return,
        Ok("floor") => {
            for _ in 0..5 {
                black_box(floor(&reqs));
            }
            return;
        }
        Ok("local") => {
            for _ in 0..5 {
                black_box(local(&reqs, &table));
            }
            return;
        }
        Ok("ring") => {
            for _ in 0..5 {
                black_box(ring(&reqs, &table, &members));
            }
            return;
        }
        _ => {}
    }
    let f = spans_per_sec(|| floor(&reqs), spans);
    let l = spans_per_sec(|| local(&reqs, &table), spans);
    let g = spans_per_sec(|| ring(&reqs, &table, &members), spans);
    println!(
        "{spans} spans in {REQUESTS} requests; the ring forwards {forwarded} ({:.1}%)",
        100.0 * forwarded as f64 / spans as f64
    );
    println!("prost floor (decode+encode):            {f:>12.0} spans/s");
    println!(
        "no ring (route, sample, Tempo encode):  {l:>12.0} spans/s  ({:.2} of floor)",
        l / f
    );
    println!(
        "ring, 2/3 forwarded (+encode/decode):   {g:>12.0} spans/s  ({:.2} of floor, {:.2} of no ring)",
        g / f,
        g / l
    );
}
