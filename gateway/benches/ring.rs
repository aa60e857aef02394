//! The trace ring's CPU cost, on one core: spans/s of a 3-replica ring in which
//! every replica forwards the 2/3 of its input it does not own, next to the same
//! input sampled where it arrives (no ring) and the prost floor (decode + encode),
//! in one run. Run with `cargo bench -p mop-gateway --bench ring`.
//!
//! What each path does per request (all on this thread, no sockets):
//! - `floor`: decode the OTLP request, encode it again.
//! - `local`: decode → route by tenant → the router's pass-through (no ring)
//!   → tail sampler → Tempo encode (what a replica does without the ring).
//! - `ring`: decode with spans kept encoded (`ring::wire`, what the receivers do
//!   while the ring is on) → route → split by trace owner over three members;
//!   the third owned here is decoded and goes to the sampler; each other third
//!   is copied as received into the forwarder's `ExportTraceServiceRequest`,
//!   decoded as the owner's ring port does, and sampled there → Tempo encode.
//!   That is the CPU the three replicas spend together per span, divided over
//!   their cores: the figure to compare with `local`, whose replicas never talk
//!   to each other.
//!
//! gRPC framing and the loopback socket are not included (they are the same
//! per byte for both receivers and scale with what is forwarded); the figures
//! are spans per second of CPU on one core.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark: a panic is the failure report

mod common;

// The allocator `mop-gateway` ships with (src/main.rs): decoding allocates per
// span, so the system allocator made every path slower than the product, and
// the ring path, which decodes twice, the more so.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use mop_gateway::export::Encoder;
use mop_gateway::export::tempo::TempoEncoder;
use mop_gateway::ring::Ring;
use mop_gateway::ring::forward::split;
use mop_gateway::ring::wire::{self, WireResourceSpans};
use mop_gateway::routing::{Caller, Grant, RouteTable};
use mop_gateway::sampling::{Output, Sampler};
use mop_gateway_config::{
    FORMAT_VERSION, GatewayConfig, Policy, PolicyRule, Sampling, TenantRoute,
};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use common::{NAMESPACES, REQUESTS, RESOURCES_PER_REQUEST, SPANS_PER_RESOURCE, requests};

const MEMBERS: [&str; 3] = ["10.0.0.1:4319", "10.0.0.2:4319", "10.0.0.3:4319"];
use prost::Message;

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

fn floor(reqs: &[Bytes]) -> usize {
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

fn local(reqs: &[Bytes], table: &RouteTable) -> usize {
    let mut sampler = Sampler::default();
    let no_ring = Ring::default();
    let mut bytes = 0;
    for (i, r) in reqs.iter().enumerate() {
        // As the receivers decode without the ring (spans decoded), and the
        // router passes them on.
        let req = ExportTraceServiceRequest::decode(&r[..]).unwrap();
        let items: Vec<WireResourceSpans> =
            req.resource_spans.into_iter().map(Into::into).collect();
        let routed = table.route(&collector(), items);
        for (tenant, items) in routed.per_tenant {
            let s = split(&no_ring, "", items);
            bytes += sample_export(&mut sampler, table, &tenant, s.local, i as u64);
        }
    }
    bytes
}

fn ring(reqs: &[Bytes], table: &RouteTable, ring: &Ring) -> usize {
    // One sampler per replica; requests arrive round-robin at the three.
    let mut samplers: Vec<Sampler> = (0..3).map(|_| Sampler::default()).collect();
    let mut bytes = 0;
    for (i, r) in reqs.iter().enumerate() {
        let here = i % 3;
        let items = wire::decode_request(r.clone()).unwrap();
        let routed = table.route(&collector(), items);
        for (tenant, items) in routed.per_tenant {
            let s = split(ring, MEMBERS[here], items);
            bytes += sample_export(&mut samplers[here], table, &tenant, s.local, i as u64);
            for (owner, frags) in s.remote {
                // The forwarder's request, and the owner's ring port decoding it.
                let wire = wire::encode_request(&frags);
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
    let reqs: Vec<Bytes> = requests().into_iter().map(Bytes::from).collect();
    let spans = REQUESTS * RESOURCES_PER_REQUEST * SPANS_PER_RESOURCE;
    let table = table();
    let members = Ring::new(MEMBERS);
    // Which share the ring forwards with this data (2/3 expected).
    let mut forwarded = 0usize;
    for (i, r) in reqs.iter().enumerate() {
        let items = wire::decode_request(r.clone()).unwrap();
        let s = split(&members, MEMBERS[i % 3], items);
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
