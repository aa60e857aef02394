//! Real programs attached, real servers, real clients: HTTP/1.1 through
//! python's http.server and nginx, driven by curl, received as OTLP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{process::Command, time::Duration};

use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn server_spans(spans: &[GotSpan], port: u16) -> Vec<GotSpan> {
    spans
        .iter()
        .filter(|s| {
            s.span.kind == SpanKind::Server as i32
                && attr_int(&s.span.attributes, "server.port") == Some(i64::from(port))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_http_server_spans_and_metrics() {
    let python = require("python3", "python3");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("pyhttp");
    std::fs::create_dir_all(dir.join("users")).unwrap();
    std::fs::write(dir.join("users/42"), "user forty-two\n").unwrap();
    let _server = Proc::spawn(
        "python3 -m http.server",
        Command::new(python)
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--directory",
            ])
            .arg(&dir),
    );
    wait_listening(port, Duration::from_secs(10));

    let mut cfg = config(&sink, &[port]);
    cfg.services.push(mop_agent::config::ServiceRule {
        port: Some(port),
        service_name: Some("py-files".into()),
        namespace: Some("team-py".into()),
        ..Default::default()
    });
    let agent = start_agent(cfg).await;

    let curl = require("curl", "curl");
    let url = format!("http://127.0.0.1:{port}/users/42");
    run_ok(
        Command::new(&curl)
            .args(["-sf", "-H"])
            .arg(format!("traceparent: 00-{TRACE_ID}-{PARENT}-01"))
            .arg(&url),
    );
    let missing = format!("http://127.0.0.1:{port}/nope/7");
    let out = Command::new(&curl)
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(&missing)
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "404");

    let spans = sink
        .wait_spans(Duration::from_secs(10), |s| {
            server_spans(s, port).len() >= 2
        })
        .await;
    let ours = server_spans(&spans, port);
    assert_eq!(ours.len(), 2, "spans: {spans:#?}");
    let ok = ours
        .iter()
        .find(|s| attr_int(&s.span.attributes, "http.response.status_code") == Some(200))
        .expect("200 span");
    assert_eq!(ok.span.name, "GET /users/{id}");
    assert_eq!(
        attr_str(&ok.span.attributes, "http.request.method").as_deref(),
        Some("GET")
    );
    assert_eq!(
        attr_str(&ok.span.attributes, "url.path").as_deref(),
        Some("/users/42")
    );
    assert_eq!(
        attr_str(&ok.span.attributes, "http.route").as_deref(),
        Some("/users/{id}")
    );
    assert_eq!(hex(&ok.span.trace_id), TRACE_ID);
    assert_eq!(hex(&ok.span.parent_span_id), PARENT);
    assert!(ok.span.end_time_unix_nano > ok.span.start_time_unix_nano);
    assert_eq!(
        attr_str(&ok.resource, "service.name").as_deref(),
        Some("py-files")
    );
    assert_eq!(
        attr_str(&ok.resource, "k8s.namespace.name").as_deref(),
        Some("team-py")
    );
    assert_eq!(
        attr_str(&ok.resource, "process.executable.name").map(|e| e.starts_with("python")),
        Some(true)
    );
    let nf = ours
        .iter()
        .find(|s| attr_int(&s.span.attributes, "http.response.status_code") == Some(404))
        .expect("404 span");
    assert_eq!(nf.span.name, "GET /nope/{id}");
    assert!(nf.span.parent_span_id.is_empty());
    assert_eq!(nf.span.trace_id.len(), 16);

    // Metrics arrive on the export interval.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let points = loop {
        let p = sink.got.histogram("http.server.request.duration");
        let n: u64 = p.iter().map(|(_, d)| d.count).sum();
        if n >= 2 || std::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let ok_point = points
        .iter()
        .find(|(_, p)| attr_str(&p.attributes, "http.route").as_deref() == Some("/users/{id}"))
        .expect("histogram point for /users/{id}");
    assert_eq!(ok_point.1.count, 1);
    assert!(ok_point.1.sum.unwrap() > 0.0);
    assert_eq!(
        attr_int(&ok_point.1.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        attr_str(&ok_point.0, "k8s.namespace.name").as_deref(),
        Some("team-py")
    );

    agent.shutdown(Duration::from_secs(5)).await;
}
