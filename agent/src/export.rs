//! OTLP/gRPC export: spans batched by size and time, RED metrics every
//! interval, retries with backoff; the only buffer is the bounded span
//! channel in front of it, so nothing grows without bound and every drop is
//! counted.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Buf as _, BufMut as _, Bytes};
use opentelemetry_proto::tonic::{
    collector::{
        metrics::v1::{ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient},
        trace::v1::ExportTraceServiceRequest,
    },
    trace::v1::{ResourceSpans, ScopeSpans, Span},
};
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};
use tracing::{debug, warn};

use crate::{
    config,
    process::ResourceInfo,
    selfmetrics::SelfMetrics,
    telemetry::{self, Metrics},
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid OTLP endpoint {endpoint:?}: {reason}")]
    Endpoint { endpoint: String, reason: String },
}

/// A span and the resource it belongs to.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub resource: Arc<ResourceInfo>,
    pub span: Span,
}

/// Sends an already-encoded protobuf message and ignores the response body:
/// a batch is encoded once and every retry resends the same bytes instead
/// of cloning and re-encoding the request.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = PreEncoded;
    type Decoder = PreEncoded;
    fn encoder(&mut self) -> Self::Encoder {
        PreEncoded
    }
    fn decoder(&mut self) -> Self::Decoder {
        PreEncoded
    }
}

impl Encoder for PreEncoded {
    type Item = Bytes;
    type Error = Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for PreEncoded {
    type Item = ();
    type Error = Status;
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        // ExportTraceServiceResponse may carry partial_success; the count of
        // rejected spans is not acted on, so the body is skipped.
        let n = src.remaining();
        src.advance(n);
        Ok(Some(()))
    }
}

const TRACE_EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

pub struct Exporter {
    channel: Channel,
    metrics_client: MetricsServiceClient<Channel>,
    cfg: config::Export,
    host: String,
    metrics: Arc<Mutex<Metrics>>,
    stats: Arc<SelfMetrics>,
}

fn retryable(code: Code) -> bool {
    // The OTLP spec's retryable codes.
    matches!(
        code,
        Code::Cancelled
            | Code::DeadlineExceeded
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::OutOfRange
            | Code::Unavailable
            | Code::DataLoss
    )
}

pub fn now_unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl Exporter {
    pub fn new(
        endpoint: &str,
        cfg: config::Export,
        host: String,
        metrics: Arc<Mutex<Metrics>>,
        stats: Arc<SelfMetrics>,
    ) -> Result<Exporter, Error> {
        // Lazy: the agent starts (and buffers) while the gateway is down.
        let channel = Channel::from_shared(endpoint.to_owned())
            .map_err(|e| Error::Endpoint {
                endpoint: endpoint.to_owned(),
                reason: e.to_string(),
            })?
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_timeout(Duration::from_millis(cfg.timeout_ms))
            .connect_lazy();
        Ok(Exporter {
            channel: channel.clone(),
            metrics_client: MetricsServiceClient::new(channel),
            cfg,
            host,
            metrics,
            stats,
        })
    }

    pub async fn run(mut self, mut rx: mpsc::Receiver<SpanRecord>, cancel: CancellationToken) {
        let mut batch: Vec<SpanRecord> = Vec::with_capacity(self.cfg.batch_size);
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = rx.recv() => match r {
                    Some(s) => {
                        batch.push(s);
                        if batch.len() >= self.cfg.batch_size {
                            self.send_spans(std::mem::take(&mut batch), &cancel).await;
                        }
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    if !batch.is_empty() {
                        self.send_spans(std::mem::take(&mut batch), &cancel).await;
                    }
                    self.send_metrics().await;
                }
            }
        }
        // Drain: what is already queued gets one last attempt.
        rx.close();
        while let Ok(s) = rx.try_recv() {
            batch.push(s);
        }
        for chunk in batch.chunks(self.cfg.batch_size) {
            self.send_spans(chunk.to_vec(), &cancel).await;
        }
        self.send_metrics().await;
    }

    fn request(batch: Vec<SpanRecord>, host: &str) -> ExportTraceServiceRequest {
        // The reader hands out one Arc per resource, so grouping by pointer
        // is exact and avoids hashing every resource's strings per span.
        let mut by_res: HashMap<*const ResourceInfo, (Arc<ResourceInfo>, Vec<Span>)> =
            HashMap::new();
        for r in batch {
            by_res
                .entry(Arc::as_ptr(&r.resource))
                .or_insert_with(|| (r.resource.clone(), Vec::new()))
                .1
                .push(r.span);
        }
        ExportTraceServiceRequest {
            resource_spans: by_res
                .into_iter()
                .map(|(_, (res, spans))| ResourceSpans {
                    resource: Some(telemetry::resource(&res, host)),
                    scope_spans: vec![ScopeSpans {
                        scope: Some(telemetry::scope()),
                        spans,
                        ..ScopeSpans::default()
                    }],
                    ..ResourceSpans::default()
                })
                .collect(),
        }
    }

    async fn send_spans(&mut self, batch: Vec<SpanRecord>, cancel: &CancellationToken) {
        let n = batch.len() as u64;
        let req = Bytes::from(Self::request(batch, &self.host).encode_to_vec());
        let attempts = if cancel.is_cancelled() {
            1
        } else {
            self.cfg.max_attempts
        };
        let mut backoff = Duration::from_millis(100);
        for attempt in 1..=attempts {
            match self.export_bytes(req.clone()).await {
                Ok(_) => {
                    self.stats
                        .spans_exported
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    debug!(spans = n, "exported spans");
                    return;
                }
                Err(status) if retryable(status.code()) && attempt < attempts => {
                    SelfMetrics::inc(&self.stats.export_retries);
                    warn!(code = ?status.code(), attempt, error = %status.message(), "span export failed; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
                Err(status) => {
                    warn!(code = ?status.code(), error = %status.message(), spans = n, "span export failed; dropping batch");
                    break;
                }
            }
        }
        self.stats
            .spans_dropped_export_failed
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    async fn export_bytes(&mut self, body: Bytes) -> Result<(), Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("OTLP endpoint not ready: {e}")))?;
        grpc.unary(
            tonic::Request::new(body),
            PathAndQuery::from_static(TRACE_EXPORT_PATH),
            PreEncoded,
        )
        .await
        .map(|_| ())
    }

    async fn send_metrics(&mut self) {
        let resource_metrics = match self.metrics.lock() {
            Ok(m) => m.to_otlp(now_unix_ns(), &self.host),
            Err(_) => return,
        };
        if resource_metrics.is_empty() {
            return;
        }
        SelfMetrics::inc(&self.stats.metric_exports);
        // Cumulative temporality: a failed export is simply superseded by the
        // next one, so metrics are not retried.
        if let Err(status) = self
            .metrics_client
            .export(ExportMetricsServiceRequest { resource_metrics })
            .await
        {
            SelfMetrics::inc(&self.stats.metric_exports_failed);
            warn!(code = ?status.code(), error = %status.message(), "metric export failed");
        }
    }
}
