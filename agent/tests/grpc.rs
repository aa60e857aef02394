//! A real gRPC pair (python grpcio server and client, HTTP/2 with HPACK
//! Huffman coding and dynamic table): rpc spans on both sides, status codes,
//! traceparent continuation, rpc.server.duration.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{process::Command, time::Duration};

use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const SERVER: &str = r#"
import sys, grpc
from concurrent import futures
def say(req, ctx):
    if req == b"fail":
        ctx.abort(grpc.StatusCode.NOT_FOUND, "no such greeting")
    return b"hello " + req
h = grpc.method_handlers_generic_handler("demo.Greeter", {"Say": grpc.unary_unary_rpc_method_handler(say)})
s = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
s.add_generic_rpc_handlers((h,))
s.add_insecure_port("127.0.0.1:" + sys.argv[1])
s.start()
s.wait_for_termination()
"#;

const CLIENT: &str = r#"
import os, sys, time, grpc
# Start only once the agent is attached (bounded wait).
for _ in range(600):
    if os.path.exists(sys.argv[2]):
        break
    time.sleep(0.05)
ch = grpc.insecure_channel("127.0.0.1:" + sys.argv[1])
say = ch.unary_unary("/demo.Greeter/Say")
tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
assert say(b"world", metadata=[("traceparent", tp)], timeout=5) == b"hello world"
assert say(b"again", timeout=5) == b"hello again"
try:
    say(b"fail", timeout=5)
    sys.exit("expected NOT_FOUND")
except grpc.RpcError as e:
    assert e.code() == grpc.StatusCode.NOT_FOUND
"#;

fn python_with_grpc() -> std::path::PathBuf {
    let py = require("python3", "python3");
    let ok = Command::new(&py)
        .args(["-c", "import grpc"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 cannot import grpc: this test needs grpcio (pip install -r .ci/pip.d/agent.txt)"
    );
    py
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_python_pair() {
    let py = python_with_grpc();
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("grpc");
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    std::fs::write(dir.join("client.py"), CLIENT).unwrap();
    let _server = Proc::spawn(
        "grpc server",
        Command::new(&py)
            .arg(dir.join("server.py"))
            .arg(port.to_string()),
    );
    wait_listening(port, Duration::from_secs(15));
    let mut client = Command::new(&py);
    let go_file = dir.join("go");
    client
        .arg(dir.join("client.py"))
        .arg(port.to_string())
        .arg(&go_file);
    let client = client.stdin(std::process::Stdio::null()).spawn().unwrap();
    let client_pid = client.id();
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client_pid];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let rpc = |s: &[GotSpan], k: SpanKind| -> Vec<GotSpan> {
        s.iter()
            .filter(|x| {
                x.span.kind == k as i32
                    && attr_str(&x.span.attributes, "rpc.system").as_deref() == Some("grpc")
            })
            .cloned()
            .collect()
    };
    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            rpc(s, SpanKind::Server).len() >= 3 && rpc(s, SpanKind::Client).len() >= 3
        })
        .await;
    let out = client.wait_with_output().unwrap();
    assert!(out.status.success(), "grpc client failed");
    let server = rpc(&spans, SpanKind::Server);
    assert_eq!(server.len(), 3, "server spans: {server:#?}");
    for s in &server {
        assert_eq!(s.span.name, "demo.Greeter/Say");
        assert_eq!(
            attr_str(&s.span.attributes, "rpc.service").as_deref(),
            Some("demo.Greeter")
        );
        assert_eq!(
            attr_str(&s.span.attributes, "rpc.method").as_deref(),
            Some("Say")
        );
        assert!(s.span.end_time_unix_nano > s.span.start_time_unix_nano);
    }
    let codes: Vec<_> = server
        .iter()
        .filter_map(|s| attr_int(&s.span.attributes, "rpc.grpc.status_code"))
        .collect();
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 2, "{codes:?}");
    assert_eq!(codes.iter().filter(|c| **c == 5).count(), 1, "{codes:?}");
    let continued: Vec<_> = server
        .iter()
        .filter(|s| s.span.parent_span_id == [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7])
        .collect();
    assert_eq!(continued.len(), 1);
    assert_eq!(
        continued[0].span.trace_id,
        [
            0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e,
            0x47, 0x36
        ]
    );
    // NOT_FOUND is the client's problem, not a server error.
    assert!(server.iter().all(|s| s.span.status.is_none()));
    let client_spans = rpc(&spans, SpanKind::Client);
    assert_eq!(client_spans.len(), 3, "client spans: {client_spans:#?}");
    assert_eq!(
        client_spans
            .iter()
            .filter(|s| s.span.status.is_some())
            .count(),
        1
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let points = loop {
        let p = sink.got.histogram("rpc.server.duration");
        if p.iter().map(|(_, d)| d.count).sum::<u64>() >= 3 || std::time::Instant::now() > deadline
        {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(points.iter().map(|(_, d)| d.count).sum::<u64>(), 3);
    assert!(
        points
            .iter()
            .any(|(_, p)| attr_int(&p.attributes, "rpc.grpc.status_code") == Some(5))
    );
    agent.shutdown(Duration::from_secs(5)).await;
}
