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
    event_of(kind, fd, ts, dir, data, data.len())
}

/// The agent's default `capture.bytes`: the kernel copies at most this much
/// of a message and reports its whole length.
const CAPTURE: usize = 1024;

fn event_of(
    kind: EventKind,
    fd: i32,
    ts: u64,
    dir: Option<Direction>,
    data: &[u8],
    total: usize,
) -> Vec<u8> {
    Event {
        ts_ns: ts,
        tgid: 4242,
        tid: 4242,
        fd,
        kind,
        direction: dir,
        syscall: 0,
        tls: false,
        total_len: total as u32,
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

/// A deterministic stream of numbers for the realistic traffic (the same
/// records in every run, so instruction counts compare across builds).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len() as u64) as usize]
    }
    fn hex(&mut self, n: usize) -> String {
        (0..n)
            .map(|_| char::from(b"0123456789abcdef"[self.below(16) as usize]))
            .collect()
    }
}

const USER_AGENTS: &[&str] = &[
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_7_1) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Safari/605.1.15",
    "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
    "python-requests/2.32.3",
    "curl/8.11.0",
    "kube-probe/1.31",
];

/// One request of a mixed service's traffic: REST routes with numeric ids,
/// UUIDs and hashes, queries, browser and SDK clients with cookies, bearer
/// tokens and trace context, bodies on writes.
fn realistic_request(r: &mut Rng) -> Vec<u8> {
    let id = r.below(1_000_000);
    let uuid = format!(
        "{}-{}-4{}-a{}-{}",
        r.hex(8),
        r.hex(4),
        r.hex(3),
        r.hex(3),
        r.hex(12)
    );
    let (method, target, body) = match r.below(100) {
        0..=39 => ("GET", format!("/api/v1/products/{id}"), 0),
        40..=54 => (
            "GET",
            format!("/api/v1/search?q={}&page={}&size=20", r.hex(6), r.below(20)),
            0,
        ),
        55..=62 => ("GET", format!("/api/v1/orders/{uuid}/items"), 0),
        63..=70 => ("GET", format!("/static/js/app.{}.js", r.hex(8)), 0),
        71..=76 => ("GET", "/healthz".to_string(), 0),
        77..=88 => (
            "POST",
            "/api/v1/orders".to_string(),
            200 + r.below(1800) as usize,
        ),
        89..=93 => (
            "PUT",
            format!("/api/v1/users/{id}/profile"),
            100 + r.below(900) as usize,
        ),
        94..=96 => (
            "PATCH",
            format!("/api/v1/carts/{uuid}"),
            50 + r.below(300) as usize,
        ),
        _ => ("DELETE", format!("/api/v1/sessions/{}", r.hex(32)), 0),
    };
    let mut h = format!("{method} {target} HTTP/1.1\r\nHost: shop.example.com\r\n");
    h += &format!("User-Agent: {}\r\n", r.pick(USER_AGENTS));
    h += "Accept: application/json, text/plain, */*\r\nAccept-Encoding: gzip, deflate, br\r\n";
    if r.below(2) == 0 {
        h += "Accept-Language: en-US,en;q=0.9,de;q=0.8\r\n";
    }
    if r.below(2) == 0 {
        h += &format!("traceparent: 00-{}-{}-01\r\n", r.hex(32), r.hex(16));
    }
    if r.below(10) < 4 {
        h += &format!(
            "Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.{}.{}\r\n",
            r.hex(180),
            r.hex(86)
        );
    }
    if r.below(10) < 3 {
        h += &format!(
            "Cookie: session={}; _ga=GA1.2.{}.{}; consent=1\r\n",
            r.hex(64),
            r.below(1 << 31),
            r.below(1 << 31)
        );
    }
    h += &format!("X-Request-Id: {}\r\n", r.hex(32));
    if body > 0 {
        h += &format!("Content-Type: application/json\r\nContent-Length: {body}\r\n");
    }
    h += "\r\n";
    let mut bytes = h.into_bytes();
    bytes.extend(std::iter::repeat_n(b'x', body));
    bytes
}

/// The response's writes: the head (with the start of the body when the
/// server writes them together), then the rest of a chunked body chunk by
/// chunk, as streaming servers do.
fn realistic_response(r: &mut Rng) -> Vec<Vec<u8>> {
    let (status, reason) = match r.below(1000) {
        0..=829 => (200, "OK"),
        830..=869 => (201, "Created"),
        870..=894 => (204, "No Content"),
        895..=924 => (304, "Not Modified"),
        925..=944 => (400, "Bad Request"),
        945..=959 => (401, "Unauthorized"),
        960..=984 => (404, "Not Found"),
        985..=994 => (500, "Internal Server Error"),
        _ => (503, "Service Unavailable"),
    };
    let mut h = format!(
        "HTTP/1.1 {status} {reason}\r\nServer: envoy\r\nDate: Sat, 05 Dec 2026 01:{:02}:{:02} GMT\r\n",
        r.below(60),
        r.below(60)
    );
    h += &format!("X-Request-Id: {}\r\nVary: Accept-Encoding\r\n", r.hex(32));
    if r.below(10) == 0 {
        h += &format!(
            "Set-Cookie: session={}; Path=/; HttpOnly; Secure; SameSite=Lax\r\n",
            r.hex(64)
        );
    }
    if matches!(status, 204 | 304) {
        h += "\r\n";
        return vec![h.into_bytes()];
    }
    h += "Content-Type: application/json\r\nCache-Control: no-store\r\n";
    if r.below(5) == 0 {
        // Chunked, streamed in 2-4 writes of up to 900 bytes.
        h += "Transfer-Encoding: chunked\r\n\r\n";
        let mut writes = vec![h.into_bytes()];
        for _ in 0..2 + r.below(3) {
            let n = 50 + r.below(850) as usize;
            let mut w = format!("{n:x}\r\n").into_bytes();
            w.extend(std::iter::repeat_n(b'y', n));
            w.extend_from_slice(b"\r\n");
            writes.push(w);
        }
        writes.push(b"0\r\n\r\n".to_vec());
        return writes;
    }
    // Content-Length: mostly small JSON, a long tail up to 64 KiB.
    let body = match r.below(10) {
        0..=5 => 20 + r.below(600),
        6..=8 => 600 + r.below(7_000),
        _ => 8_000 + r.below(57_000),
    } as usize;
    h += &format!("Content-Length: {body}\r\n\r\n");
    let mut w = h.into_bytes();
    w.extend(std::iter::repeat_n(b'z', body));
    vec![w]
}

/// `REQUESTS` exchanges of realistic traffic over `CONNS` connections, as
/// the kernel delivers them: each write a record of at most `CAPTURE`
/// bytes carrying the write's whole length.
fn realistic_records() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let opens = (0..CONNS)
        .map(|fd| event(EventKind::Open, fd + 10, 1, None, &[]))
        .collect();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut data = Vec::with_capacity(REQUESTS * 3);
    let mut head_bytes = 0usize;
    for i in 0..REQUESTS {
        let fd = (i as i32 % CONNS) + 10;
        let ts = 1_000 + i as u64 * 10_000;
        let req = realistic_request(&mut r);
        head_bytes += req.len();
        let cut = req.len().min(CAPTURE);
        data.push(event_of(
            EventKind::Data,
            fd,
            ts,
            Some(Direction::Ingress),
            &req[..cut],
            req.len(),
        ));
        for (k, w) in realistic_response(&mut r).iter().enumerate() {
            let cut = w.len().min(CAPTURE);
            data.push(event_of(
                EventKind::Data,
                fd,
                ts + 5_000 + k as u64 * 100,
                Some(Direction::Egress),
                &w[..cut],
                w.len(),
            ));
        }
    }
    eprintln!(
        "realistic traffic: {} records, requests {} bytes on average",
        data.len(),
        head_bytes / REQUESTS
    );
    (opens, data)
}

/// `MOP_PIPELINE_TRAFFIC=realistic` picks the mixed traffic above; by
/// default, wrk's one request against nginx's `return 200`.
fn traffic() -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
    match std::env::var("MOP_PIPELINE_TRAFFIC").as_deref() {
        Ok("realistic") => realistic_records(),
        _ => records(),
    }
}

fn pipeline() -> Pipeline {
    Pipeline::new(
        Tracker::new(1024),
        Resolver::new(PathBuf::from("/nonexistent-proc"), Vec::new()),
        1_700_000_000_000_000_000,
    )
}

fn bench(c: &mut Criterion) {
    let (opens, data) = traffic();
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
        let (opens, data) = traffic();
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
