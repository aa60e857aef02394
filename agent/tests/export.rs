//! The exporter against an OTLP endpoint that fails: retryable errors are
//! retried with backoff until the batch is accepted; a non-retryable error
//! drops the batch and counts it. Nothing is lost silently.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use mop_agent::{
    config,
    export::{self, Exporter, SpanBatch},
    process::ResourceInfo,
    selfmetrics::SelfMetrics,
    telemetry::Metrics,
};
use opentelemetry_proto::tonic::{
    collector::trace::v1::{
        ExportTraceServiceRequest, ExportTraceServiceResponse,
        trace_service_server::{TraceService, TraceServiceServer},
    },
    trace::v1::Span,
};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Flaky {
    calls: Arc<AtomicUsize>,
    fail_first: usize,
    code: tonic::Code,
    spans: Arc<Mutex<Vec<Span>>>,
    /// `authorization` of every call.
    auth: Arc<Mutex<Vec<Option<String>>>>,
}

#[tonic::async_trait]
impl TraceService for Flaky {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.auth.lock().unwrap().push(
            req.metadata()
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string),
        );
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        if n < self.fail_first {
            return Err(tonic::Status::new(self.code, "backend busy"));
        }
        for rs in req.into_inner().resource_spans {
            for ss in rs.scope_spans {
                self.spans.lock().unwrap().extend(ss.spans);
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

async fn serve(f: Flaky) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(f))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    format!("http://{addr}")
}

fn record(i: u8) -> SpanBatch {
    let mut b = SpanBatch::default();
    b.push_span(
        &Arc::new(ResourceInfo {
            service_name: "svc".into(),
            namespace: Some("ns".into()),
            pod: None,
            pid: 1,
            exe_name: "x".into(),
            exe_path: "/x".into(),
            container_id: None,
        }),
        &Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("span-{i}"),
            ..Span::default()
        },
    );
    b
}

async fn run(fail_first: usize, code: tonic::Code, attempts: u32) -> (Flaky, Arc<SelfMetrics>) {
    let f = Flaky {
        calls: Arc::default(),
        fail_first,
        code,
        spans: Arc::default(),
        auth: Arc::default(),
    };
    let endpoint = serve(f.clone()).await;
    let stats = Arc::new(SelfMetrics::default());
    let cfg = config::Export {
        batch_size: 3,
        interval_ms: 50,
        queue_size: 16,
        max_attempts: attempts,
        timeout_ms: 2000,
    };
    let exporter = Exporter::new(
        &endpoint,
        cfg,
        "host".into(),
        Arc::new(Mutex::new(Metrics::new(0, 10))),
        stats.clone(),
    )
    .unwrap();
    let (tx, rx) = export::queue(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(exporter.run(rx, cancel.clone()));
    for i in 1..=3 {
        assert!(tx.try_send(record(i)).is_ok());
    }
    // Bounded wait for the outcome, then a clean stop.
    for _ in 0..100 {
        let done = stats.spans_exported.load(Ordering::SeqCst)
            + stats.spans_dropped_export_failed.load(Ordering::SeqCst);
        if done >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    cancel.cancel();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    (f, stats)
}

#[tokio::test]
async fn retryable_errors_are_retried_until_accepted() {
    let (f, stats) = run(2, tonic::Code::Unavailable, 5).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 3);
    // Each record has its own resource, and resources are grouped in no
    // particular order: compare as a set.
    let mut names: Vec<String> = f
        .spans
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.name.clone())
        .collect();
    names.sort();
    assert_eq!(names, vec!["span-1", "span-2", "span-3"]);
    assert_eq!(stats.spans_exported.load(Ordering::SeqCst), 3);
    assert_eq!(stats.export_retries.load(Ordering::SeqCst), 2);
    assert_eq!(stats.spans_dropped_export_failed.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn exhausted_attempts_drop_the_batch_and_count_it() {
    let (f, stats) = run(usize::MAX, tonic::Code::ResourceExhausted, 2).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 2);
    assert_eq!(stats.spans_dropped_export_failed.load(Ordering::SeqCst), 3);
    assert_eq!(stats.spans_exported.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn non_retryable_errors_are_not_retried() {
    let (f, stats) = run(usize::MAX, tonic::Code::InvalidArgument, 5).await;
    assert_eq!(f.calls.load(Ordering::SeqCst), 1);
    assert_eq!(stats.spans_dropped_export_failed.load(Ordering::SeqCst), 3);
    assert_eq!(stats.export_retries.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn the_gateway_token_is_sent_and_reread_when_it_rotates() {
    let f = Flaky {
        calls: Arc::default(),
        fail_first: 0,
        code: tonic::Code::Ok,
        spans: Arc::default(),
        auth: Arc::default(),
    };
    let endpoint = serve(f.clone()).await;
    let token = std::env::temp_dir().join(format!("mop-agent-token-{}", std::process::id()));
    std::fs::write(&token, "first-token\n").unwrap();
    let stats = Arc::new(SelfMetrics::default());
    let cfg = config::Export {
        batch_size: 1,
        interval_ms: 20,
        queue_size: 16,
        max_attempts: 1,
        timeout_ms: 2000,
    };
    let exporter = Exporter::new(
        &endpoint,
        cfg,
        "host".into(),
        Arc::new(Mutex::new(Metrics::new(0, 10))),
        stats.clone(),
    )
    .unwrap()
    .with_token_file(Some(token.clone()));
    let (tx, rx) = export::queue(16);
    let cancel = CancellationToken::new();
    let task = tokio::spawn(exporter.run(rx, cancel.clone()));
    let wait = async |n: u64| {
        for _ in 0..100 {
            if stats.spans_exported.load(Ordering::SeqCst) >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("spans not exported");
    };
    assert!(tx.try_send(record(1)).is_ok());
    wait(1).await;
    std::fs::write(&token, "rotated-token\n").unwrap();
    assert!(tx.try_send(record(2)).is_ok());
    wait(2).await;
    cancel.cancel();
    drop(tx);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
    let _ = std::fs::remove_file(&token);
    let auth = f.auth.lock().unwrap().clone();
    assert_eq!(
        auth.first().cloned().flatten().as_deref(),
        Some("Bearer first-token")
    );
    assert_eq!(
        auth.last().cloned().flatten().as_deref(),
        Some("Bearer rotated-token")
    );
}
