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
    let python = require("python3", "python3");
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let _server = Proc::spawn(
        "python3 (syscall forms)",
        Command::new(python)
            .args(["-c", SERVER])
            .arg(port.to_string()),
    );
    wait_listening(port, Duration::from_secs(10));
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
