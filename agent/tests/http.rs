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

fn nginx_conf(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let www = dir.join("www");
    std::fs::create_dir_all(&www).unwrap();
    std::fs::write(www.join("big.bin"), vec![b'x'; 100_000]).unwrap();
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 2;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 256; }}\n\
         http {{\n  access_log off;\n  sendfile on;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port};\n    root {d}/www;\n\
             location /api/ {{ default_type text/plain; return 200 \"ok\\n\"; }}\n\
             location /boom {{ return 502; }}\n  }}\n}}\n"
    );
    let path = dir.join("nginx.conf");
    std::fs::write(&path, conf).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_keep_alive_sendfile_and_client_spans() {
    let nginx = require("nginx", "nginx-light");
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("nginx");
    let conf = nginx_conf(&dir, port);
    let _server = Proc::spawn(
        "nginx",
        Command::new(nginx).arg("-c").arg(&conf).arg("-p").arg(&dir),
    );
    wait_listening(port, Duration::from_secs(10));

    let mut cfg = config(&sink, &[port]);
    cfg.metrics_listen = Some("127.0.0.1:0".parse().unwrap());
    // The client side: a shell the agent tracks by pid; curl, forked from
    // it after the agent started, is followed by the fork tracepoint.
    let base = format!("http://127.0.0.1:{port}");
    let go_file = dir.join("go");
    let script = format!(
        "{w}{c} -s -o /dev/null {base}/api/orders/1234 {base}/big.bin {base}/boom {base}/api/orders/99",
        c = curl.display(),
        w = wait_for_go(&go_file),
    );
    let client = Proc::spawn("sh (curl)", Command::new("sh").arg("-c").arg(&script));
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);
    let metrics_addr = agent.metrics_addr.unwrap();

    let spans = sink
        .wait_spans(Duration::from_secs(15), |s| {
            server_spans(s, port).len() >= 4
                && s.iter()
                    .filter(|x| x.span.kind == SpanKind::Client as i32)
                    .count()
                    >= 4
        })
        .await;
    let srv = server_spans(&spans, port);
    assert_eq!(srv.len(), 4, "server spans: {srv:#?}");
    let names: Vec<_> = srv.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "GET /api/orders/{id}")
            .count(),
        2,
        "{names:?}"
    );
    // nginx answers the static file with sendfile(2): the body is never
    // copied, but its length is still counted.
    let big = srv
        .iter()
        .find(|s| attr_str(&s.span.attributes, "url.path").as_deref() == Some("/big.bin"))
        .unwrap();
    assert_eq!(
        attr_int(&big.span.attributes, "http.response.body.size"),
        Some(100_000)
    );
    let boom = srv.iter().find(|s| s.span.name == "GET /boom").unwrap();
    assert_eq!(
        attr_int(&boom.span.attributes, "http.response.status_code"),
        Some(502)
    );
    assert_eq!(boom.span.status.as_ref().map(|s| s.code), Some(2));
    assert_eq!(
        attr_str(&boom.resource, "process.executable.name").as_deref(),
        Some("nginx")
    );
    for s in &srv {
        assert!(s.span.end_time_unix_nano > s.span.start_time_unix_nano);
    }

    let clients: Vec<_> = spans
        .iter()
        .filter(|s| s.span.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(clients.len(), 4, "client spans: {clients:#?}");
    assert!(
        clients
            .iter()
            .all(|s| attr_str(&s.resource, "process.executable.name").as_deref() == Some("curl"))
    );
    assert!(
        clients
            .iter()
            .all(|s| attr_int(&s.span.attributes, "server.port") == Some(i64::from(port)))
    );
    let client_points = loop {
        let p = sink.got.histogram("http.client.request.duration");
        if p.iter().map(|(_, d)| d.count).sum::<u64>() >= 4 {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        client_points
            .iter()
            .any(|(_, p)| attr_int(&p.attributes, "http.response.status_code") == Some(502))
    );

    // Self-metrics are served and count what happened.
    let body = run_ok(
        Command::new(&curl)
            .arg("-s")
            .arg(format!("http://{metrics_addr}/metrics")),
    );
    let exported: u64 = body
        .lines()
        .find_map(|l| l.strip_prefix("mop_agent_spans_exported_total "))
        .and_then(|v| v.parse().ok())
        .expect("mop_agent_spans_exported_total in /metrics");
    assert!(exported >= 8, "{body}");

    // Clean detach: after shutdown none of the agent's programs is loaded.
    // The kernel releases a detached program asynchronously: in
    // kernel/bpf/syscall.c the last put of a link or program can go to a
    // workqueue (bpf_link_put_deferred) and the freeing waits for RCU grace
    // periods (call_rcu; call_rcu_tasks_trace where the attach point may
    // sleep, as syscall tracepoints now can), which a loaded machine
    // stretches. So the check waits for the IDs to go, and fails if any
    // outlives 10 s: a leaked fd, link or pin keeps a program loaded for good.
    let ids = agent.program_ids.clone();
    assert!(!ids.is_empty());
    agent.shutdown(Duration::from_secs(5)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let still = loop {
        let still: Vec<u32> = aya::programs::loaded_programs()
            .filter_map(|p| p.ok())
            .map(|p| p.id())
            .filter(|id| ids.contains(id))
            .collect();
        if still.is_empty() || std::time::Instant::now() >= deadline {
            break still;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        still.is_empty(),
        "programs still loaded 10 s after shutdown: {still:?}"
    );
}
