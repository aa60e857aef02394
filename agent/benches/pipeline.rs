//! The agent's userspace work per request, without the kernel, the ring
//! buffer's wake-ups or the network: recorded-shape events of an nginx
//! keep-alive workload (wrk's request, nginx's response, 50 connections)
//! go through exactly what the reader does per record (decode, connection
//! tracking, HTTP/1 parsing, span encoding, RED histogram, batching), then
//! the exporter's request framing.
//!
//! `cargo bench -p mop-agent --bench pipeline`; figures in
//! docs/performance.md (Agent). Compare with the live figure of
//! `agent/bench/nginx-wrk.sh`, which adds scheduling, the ring buffer and
//! gRPC.
#![allow(clippy::unwrap_used, clippy::expect_used)] // benchmark code
use std::{net::IpAddr, path::PathBuf};

use criterion::{Criterion, Throughput, criterion_group};
use mop_agent::{
    agent::Pipeline,
    conn::Tracker,
    ebpf::event::{Direction, Event, EventKind, Role, Tuple},
    export::{SpanBatch, encode_request},
    process::Resolver,
    telemetry::Metrics,
};

// The agent binary's allocator (src/main.rs), so that allocation costs as
// it does in production.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONNS: i32 = 50;
const REQUESTS: usize = 10_000;

const REQUEST: &[u8] = b"GET /api/items/42 HTTP/1.1\r\nHost: 127.0.0.1:18080\r\n\r\n";
const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 07:40:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";

fn event(kind: EventKind, fd: i32, ts: u64, dir: Option<Direction>, data: &[u8]) -> Vec<u8> {
    Event {
        ts_ns: ts,
        tgid: 4242,
        tid: 4242,
        fd,
        kind,
        direction: dir,
        syscall: 0,
        tls: false,
        total_len: data.len() as u32,
        data,
        tuple: Tuple {
            local: IpAddr::from([127, 0, 0, 1]),
            local_port: 18080,
            peer: IpAddr::from([127, 0, 0, 1]),
            peer_port: 40000 + fd as u16,
            role: Role::Server,
        },
        comm: if kind == EventKind::Data {
            b""
        } else {
            b"nginx"
        },
    }
    .encode()
}

/// The records of `REQUESTS` exchanges spread over `CONNS` connections.
fn records() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let opens = (0..CONNS)
        .map(|fd| event(EventKind::Open, fd + 10, 1, None, &[]))
        .collect();
    let mut data = Vec::with_capacity(REQUESTS * 2);
    for i in 0..REQUESTS {
        let fd = (i as i32 % CONNS) + 10;
        let ts = 1_000 + i as u64 * 10_000;
        data.push(event(
            EventKind::Data,
            fd,
            ts,
            Some(Direction::Ingress),
            REQUEST,
        ));
        data.push(event(
            EventKind::Data,
            fd,
            ts + 5_000,
            Some(Direction::Egress),
            RESPONSE,
        ));
    }
    (opens, data)
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        Tracker::new(1024),
        Resolver::new(PathBuf::from("/nonexistent-proc"), Vec::new()),
        1_700_000_000_000_000_000,
    )
}

fn bench(c: &mut Criterion) {
    let (opens, data) = records();
    let mut g = c.benchmark_group("agent");
    g.throughput(Throughput::Elements(REQUESTS as u64));
    g.bench_function(
        "reader per request (decode, track, parse, span, histogram, batch)",
        |b| {
            let mut p = pipeline();
            let mut metrics = Metrics::new(0, 2000);
            let mut batch = SpanBatch::default();
            for r in &opens {
                p.process(r, &mut batch, Some(&mut metrics)).unwrap();
            }
            b.iter(|| {
                let mut batch = SpanBatch::with_capacity(REQUESTS * 400);
                let mut n = 0;
                for r in &data {
                    n += p.process(r, &mut batch, Some(&mut metrics)).unwrap();
                }
                assert_eq!(n, REQUESTS);
                batch
            });
        },
    );
    let mut p = pipeline();
    let mut metrics = Metrics::new(0, 2000);
    let mut batch = SpanBatch::default();
    for r in opens.iter().chain(&data) {
        p.process(r, &mut batch, Some(&mut metrics)).unwrap();
    }
    assert_eq!(batch.len(), REQUESTS);
    g.bench_function("exporter framing per request", |b| {
        b.iter(|| encode_request(&batch, "node-a"));
    });
    g.finish();
}

criterion_group!(benches, bench);

/// With `MOP_PIPELINE_PASSES=N`, no criterion: N passes of the 10,000
/// exchanges through the reader's pipeline, for an instruction count that
/// a loaded machine does not disturb:
/// `MOP_PIPELINE_PASSES=5 valgrind --tool=callgrind
/// --toggle-collect='mop_agent::agent::Pipeline::process' <bench binary>`,
/// then Ir / (N × 10,000) is the reader's instructions per request
/// (with `--toggle-collect='mop_agent::export::encode_request'`, the
/// exporter's framing per request).
fn main() {
    if let Some(passes) = std::env::var("MOP_PIPELINE_PASSES")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
    {
        let (opens, data) = records();
        let mut p = pipeline();
        let mut metrics = Metrics::new(0, 2000);
        let mut batch = SpanBatch::default();
        for r in &opens {
            p.process(r, &mut batch, Some(&mut metrics)).unwrap();
        }
        let mut n = 0;
        for _ in 0..passes {
            let mut batch = SpanBatch::with_capacity(REQUESTS * 400);
            for r in &data {
                n += p.process(r, &mut batch, Some(&mut metrics)).unwrap();
            }
            // The exporter's framing of the same spans, for
            // `--toggle-collect='mop_agent::export::encode_request'`.
            std::hint::black_box(encode_request(&batch, "node-a"));
        }
        assert_eq!(n, passes * REQUESTS);
        println!("{n} exchanges through the pipeline");
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
