//! Test harness: an OTLP/gRPC endpoint that records what it receives, real
//! servers on free loopback ports (killed on drop), and bounded waits.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use mop_agent::{agent::Agent, config::Config};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{
            ExportMetricsServiceRequest, ExportMetricsServiceResponse,
            metrics_service_server::{MetricsService, MetricsServiceServer},
        },
        trace::v1::{
            ExportTraceServiceRequest, ExportTraceServiceResponse,
            trace_service_server::{TraceService, TraceServiceServer},
        },
    },
    common::v1::{KeyValue, any_value::Value},
    metrics::v1::{HistogramDataPoint, metric},
    trace::v1::Span,
};
use tokio_util::sync::CancellationToken;

#[derive(Default, Clone)]
pub struct Received {
    pub traces: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    pub metrics: Arc<Mutex<Vec<ExportMetricsServiceRequest>>>,
}

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        self.traces.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        self.metrics.lock().unwrap().push(req.into_inner());
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A span with its resource's attributes.
#[derive(Debug, Clone)]
pub struct GotSpan {
    pub resource: Vec<KeyValue>,
    pub span: Span,
}

pub fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

pub fn attr_str(attrs: &[KeyValue], key: &str) -> Option<String> {
    match attr(attrs, key)? {
        Value::StringValue(s) => Some(s.clone()),
        _ => None,
    }
}

pub fn attr_int(attrs: &[KeyValue], key: &str) -> Option<i64> {
    match attr(attrs, key)? {
        Value::IntValue(i) => Some(*i),
        _ => None,
    }
}

impl Received {
    pub fn spans(&self) -> Vec<GotSpan> {
        let mut out = Vec::new();
        for req in self.traces.lock().unwrap().iter() {
            for rs in &req.resource_spans {
                let resource = rs
                    .resource
                    .clone()
                    .map(|r| r.attributes)
                    .unwrap_or_default();
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        out.push(GotSpan {
                            resource: resource.clone(),
                            span: s.clone(),
                        });
                    }
                }
            }
        }
        out
    }

    /// Latest cumulative data points of a histogram metric, with resources.
    pub fn histogram(&self, name: &str) -> Vec<(Vec<KeyValue>, HistogramDataPoint)> {
        let reqs = self.metrics.lock().unwrap();
        let Some(last) = reqs.iter().rev().find(|r| {
            r.resource_metrics.iter().any(|rm| {
                rm.scope_metrics
                    .iter()
                    .any(|sm| sm.metrics.iter().any(|m| m.name == name))
            })
        }) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for rm in &last.resource_metrics {
            let res = rm
                .resource
                .clone()
                .map(|r| r.attributes)
                .unwrap_or_default();
            for sm in &rm.scope_metrics {
                for m in sm.metrics.iter().filter(|m| m.name == name) {
                    if let Some(metric::Data::Histogram(h)) = &m.data {
                        for p in &h.data_points {
                            out.push((res.clone(), p.clone()));
                        }
                    }
                }
            }
        }
        out
    }
}

pub struct OtlpSink {
    pub addr: SocketAddr,
    pub got: Received,
    cancel: CancellationToken,
}

impl OtlpSink {
    pub async fn start() -> OtlpSink {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let got = Received::default();
        let cancel = CancellationToken::new();
        let c = cancel.clone();
        let svc = got.clone();
        tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(svc.clone()))
                .add_service(MetricsServiceServer::new(svc))
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    c.cancelled_owned(),
                )
                .await
                .unwrap();
        });
        OtlpSink { addr, got, cancel }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Waits (bounded) until `pred` holds for the received spans.
    pub async fn wait_spans(
        &self,
        timeout: Duration,
        pred: impl Fn(&[GotSpan]) -> bool,
    ) -> Vec<GotSpan> {
        let deadline = Instant::now() + timeout;
        loop {
            let spans = self.got.spans();
            if pred(&spans) || Instant::now() > deadline {
                return spans;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

// Shared with the other crates' tests (tests/support, `mop-test-support`):
// ports, a system program named by its package, a child killed with its
// whole process group on drop (nginx's workers outlived a SIGKILL of their
// master before), a bounded wait for a listener.
#[allow(unused_imports)] // each test binary uses some
pub use mop_test_support::{Proc, free_port, require, wait_listening};

/// A config exporting to `sink` quickly, instrumenting `ports`.
pub fn config(sink: &OtlpSink, ports: &[u16]) -> Config {
    let mut c = Config::new(sink.endpoint());
    c.instrument.ports = ports.to_vec();
    c.export.interval_ms = 200;
    c.rescan_interval_ms = 200;
    c.capture.poll_interval_ms = 10;
    c
}

pub async fn start_agent(cfg: Config) -> Agent {
    match Agent::start(cfg).await {
        Ok(a) => a,
        Err(e) => panic!("agent failed to start (tests need root/CAP_BPF): {e}"),
    }
}

pub fn run_ok(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A directory under the system temp dir, removed on drop. Declare it before
/// the processes that use it so they are killed first.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl AsRef<std::ffi::OsStr> for TempDir {
    fn as_ref(&self) -> &std::ffi::OsStr {
        self.0.as_os_str()
    }
}

impl AsRef<Path> for TempDir {
    fn as_ref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn temp_dir(tag: &str) -> TempDir {
    let d = std::env::temp_dir().join(format!(
        "mop-agent-{tag}-{}-{}",
        std::process::id(),
        free_port()
    ));
    std::fs::create_dir_all(&d).unwrap();
    TempDir(d)
}
/// A shell snippet that waits (bounded, 30 s) until `go` exists: clients
/// start their traffic only once the agent is attached, however slowly the
/// programs loaded on a busy machine.
pub fn wait_for_go(go: &Path) -> String {
    format!(
        "for i in $(seq 600); do [ -e {g} ] && break; sleep 0.05; done; ",
        g = go.display()
    )
}

pub fn go(go: &Path) {
    std::fs::write(go, b"").unwrap();
}
