//! The two ways the kernel side follows syscalls (`capture.attach`): the BTF
//! raw tracepoint on `sys_exit` that this kernel offers, and the syscall
//! tracepoints it falls back to. Each must see every syscall form a server
//! reads requests and writes responses with: a Python server answering four
//! keep-alive requests, each read and answered with another pair of
//! syscalls (read/write, recv/send = recvfrom/sendto, recvmsg/sendmsg,
//! readv/writev).
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{process::Command, time::Duration};

use common::*;
use mop_agent::{config::Attach, ebpf::AttachMode};
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const SERVER: &str = r#"
import os, socket, sys
forms = [("read", "write"), ("recv", "send"), ("recvmsg", "sendmsg"), ("readv", "writev")]
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1])))
l.listen(8)
while True:
    c, _ = l.accept()
    fd = c.fileno()
    for rd, wr in forms:
        if rd == "read":
            data = os.read(fd, 4096)
        elif rd == "recv":
            data = c.recv(4096)
        elif rd == "recvmsg":
            data = c.recvmsg(4096)[0]
        else:
            buf = bytearray(4096)
            data = bytes(buf[: os.readv(fd, [buf])])
        if not data:
            break
        head, body = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", b"ok\n"
        if wr == "write":
            os.write(fd, head + body)
        elif wr == "send":
            c.send(head + body)
        elif wr == "sendmsg":
            c.sendmsg([head, body])
        else:
            os.writev(fd, [head, body])
    c.close()
"#;

const PATHS: [&str; 4] = [
    "/form/read-write",
    "/form/recv-send",
    "/form/recvmsg-sendmsg",
    "/form/readv-writev",
];

/// Starts the server, then the agent with `attach`, sends the four requests
/// and checks one server span per syscall form; returns the agent's mode and
/// its `/metrics` page.
async fn every_form_captured(attach: Attach) -> (AttachMode, String) {
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let (_server, port) = start_python_server("python3 (syscall forms)", SERVER);
    let mut cfg = config(&sink, &[port]);
    cfg.capture.attach = attach;
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    let agent = start_agent(cfg).await;
    let mode = agent.attach_mode;

    // One connection (curl reuses it for every URL), so the four forms are
    // the four requests in order.
    let urls: Vec<String> = PATHS
        .iter()
        .map(|p| format!("http://127.0.0.1:{port}{p}"))
        .collect();
    let out = run_ok(Command::new(&curl).arg("-sf").args(&urls));
    assert_eq!(out, "ok\n".repeat(4));

    let server = |s: &GotSpan| {
        s.span.kind == SpanKind::Server as i32
            && attr_int(&s.span.attributes, "server.port") == Some(i64::from(port))
    };
    let spans = sink
        .wait_spans(Duration::from_secs(15), |s| {
            s.iter().filter(|x| server(x)).count() >= 4
        })
        .await;
    let mut paths: Vec<String> = spans
        .iter()
        .filter(|s| server(s))
        .filter_map(|s| attr_str(&s.span.attributes, "url.path"))
        .collect();
    paths.sort();
    let mut want: Vec<String> = PATHS.iter().map(|p| p.to_string()).collect();
    want.sort();
    assert_eq!(paths, want, "attach mode {mode:?}, spans: {spans:#?}");
    for s in spans.iter().filter(|s| server(s)) {
        assert_eq!(
            attr_int(&s.span.attributes, "http.response.status_code"),
            Some(200)
        );
    }
    let metrics = run_ok(
        Command::new(&curl)
            .arg("-s")
            .arg(format!("http://{}/metrics", agent.metrics_addr.unwrap())),
    );
    agent.shutdown(Duration::from_secs(5)).await;
    (mode, metrics)
}

/// Where the kernel offers what the `btf` mode needs (BTF, x86-64: its
/// syscall numbers and registers), the agent takes it, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn btf_raw_tracepoint_is_used_where_offered_and_sees_every_form() {
    let (mode, metrics) = every_form_captured(Attach::Auto).await;
    if cfg!(target_arch = "x86_64") && std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        assert_eq!(mode, AttachMode::Btf);
        assert!(
            metrics.contains("mop_agent_attach_mode{mode=\"btf\"} 1\n")
                && metrics.contains("mop_agent_attach_mode{mode=\"tracepoints\"} 0\n"),
            "{metrics}"
        );
    }
}

/// The fallback, forced: the syscall tracepoint pairs see the same forms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syscall_tracepoints_when_configured_see_every_form() {
    let (mode, metrics) = every_form_captured(Attach::Tracepoints).await;
    assert_eq!(mode, AttachMode::Tracepoints);
    assert!(
        metrics.contains("mop_agent_attach_mode{mode=\"tracepoints\"} 1\n"),
        "{metrics}"
    );
}

/// Answers `GET /iov/N` with one `writev` of N buffers (N >= 4): the status
/// line, N - 4 padding headers, Content-Length, the blank line and a body of
/// 100 + N bytes, so the body size is known only from the second-to-last
/// header buffer.
const IOV_SERVER: &str = r#"
import os, socket, sys
l = socket.socket()
l.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
l.bind(("127.0.0.1", int(sys.argv[1])))
l.listen(8)
while True:
    c, _ = l.accept()
    while True:
        data = c.recv(4096)
        if not data:
            break
        n = int(data.split(b" ")[1].rsplit(b"/", 1)[1])
        parts = [b"HTTP/1.1 200 OK\r\n"]
        parts += [b"X-Pad-%d: %d\r\n" % (i, i) for i in range(n - 4)]
        parts += [b"Content-Length: %d\r\n" % (100 + n), b"\r\n", b"x" * (100 + n)]
        os.writev(c.fileno(), parts)
    c.close()
"#;

/// Runs `script` with a free port as its argument, once it listens.
fn start_python_server(name: &'static str, script: &str) -> (Proc, u16) {
    let python = require("python3", "python3");
    let port = free_port();
    let server = Proc::spawn(
        name,
        Command::new(python)
            .args(["-c", script])
            .arg(port.to_string()),
    );
    wait_listening(port, Duration::from_secs(10));
    (server, port)
}

fn start_iov_server() -> (Proc, u16) {
    start_python_server("python3 (writev of N buffers)", IOV_SERVER)
}

fn iov_server_span(port: u16) -> impl Fn(&GotSpan) -> bool {
    move |s: &GotSpan| {
        s.span.kind == SpanKind::Server as i32
            && attr_int(&s.span.attributes, "server.port") == Some(i64::from(port))
    }
}

/// A response written with few buffers (their array read onto the BPF
/// stack) and with many (read into the per-CPU scratch, up to 32) arrives
/// whole: the Content-Length in its second-to-last buffer gives the body
/// size of each span.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writev_of_few_and_many_buffers_is_captured_whole() {
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let (_server, port) = start_iov_server();
    let agent = start_agent(config(&sink, &[port])).await;
    // Around the 8 buffers the stack takes, and the 32 the scratch takes.
    let counts = [4_i64, 8, 9, 12, 32];
    let urls: Vec<String> = counts
        .iter()
        .map(|n| format!("http://127.0.0.1:{port}/iov/{n}"))
        .collect();
    run_ok(Command::new(&curl).arg("-sf").args(&urls));
    let server = iov_server_span(port);
    let spans = sink
        .wait_spans(Duration::from_secs(15), |s| {
            s.iter().filter(|x| server(x)).count() >= counts.len()
        })
        .await;
    agent.shutdown(Duration::from_secs(5)).await;
    let mut got: Vec<(String, Option<i64>, Option<i64>)> = spans
        .iter()
        .filter(|s| server(s))
        .map(|s| {
            (
                attr_str(&s.span.attributes, "url.path").unwrap_or_default(),
                attr_int(&s.span.attributes, "http.response.status_code"),
                attr_int(&s.span.attributes, "http.response.body.size"),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, Option<i64>, Option<i64>)> = counts
        .iter()
        .map(|n| (format!("/iov/{n}"), Some(200), Some(100 + n)))
        .collect();
    want.sort();
    assert_eq!(got, want);
}

/// The kernel asks the ring how much waits only every wakeup_bytes / 64
/// bytes a CPU emits, but must still wake the reader: with the reader's poll
/// timer at a minute, spans of a stream of requests arrive only through
/// those wake-ups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reader_is_woken_by_the_kernel_without_its_poll_timer() {
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let (_server, port) = start_iov_server();
    let mut cfg = config(&sink, &[port]);
    cfg.capture.poll_interval_ms = 60_000;
    cfg.capture.wakeup_bytes = 16 * 1024;
    let agent = start_agent(cfg).await;
    // ~400 bytes of events per request (request, response and the
    // connection's open): ~40 KiB, past the wake-up threshold twice.
    let urls: Vec<String> = (0..100)
        .map(|_| format!("http://127.0.0.1:{port}/iov/4"))
        .collect();
    let started = std::time::Instant::now();
    run_ok(Command::new(&curl).arg("-sf").args(&urls));
    let server = iov_server_span(port);
    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            s.iter().filter(|x| server(x)).count() >= 30
        })
        .await;
    let n = spans.iter().filter(|s| server(s)).count();
    let waited = started.elapsed();
    agent.shutdown(Duration::from_secs(5)).await;
    // Below the wake-up threshold the tail waits for the timer, so not all
    // 100; but well over the 16 KiB that the first wake-up drains.
    assert!(
        n >= 30 && waited < Duration::from_secs(30),
        "{n} spans after {waited:?}"
    );
}
