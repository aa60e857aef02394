//! OTLP/gRPC export: spans batched by size and time, RED metrics every
//! interval, retries with backoff; the only buffer is the bounded span
//! channel in front of it, so nothing grows without bound and every drop is
//! counted.
use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::{Buf as _, BufMut};
use opentelemetry_proto::tonic::{
    collector::metrics::v1::{
        ExportMetricsServiceRequest, metrics_service_client::MetricsServiceClient,
    },
    trace::v1::Span,
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

/// The spans of one drain of the ring buffer, already protobuf-encoded, and
/// the resource of each.
///
/// Spans are encoded where they are built (`telemetry::build` writes the
/// bytes directly) and travel to the exporter in one batch per drain: a
/// channel send and an `Arc` per span measured as a large share of the
/// agent's CPU, and so did building `Span` structs for prost to encode.
#[derive(Debug, Default)]
pub struct SpanBatch {
    resources: Vec<Arc<ResourceInfo>>,
    /// Per span: index into `resources` and end offset in `bytes`.
    spans: Vec<(u32, usize)>,
    bytes: Vec<u8>,
    /// The resource of the last push, to skip the lookup for runs of spans
    /// of one resource.
    last: Option<(usize, u32)>,
}

impl SpanBatch {
    pub fn with_capacity(bytes: usize) -> SpanBatch {
        SpanBatch {
            bytes: Vec::with_capacity(bytes),
            spans: Vec::with_capacity(bytes / 256),
            ..SpanBatch::default()
        }
    }

    pub fn byte_len(&self) -> usize {
        self.bytes.len()
    }

    /// Empties the batch and keeps its buffers for the next drain.
    fn clear(&mut self) {
        self.resources.clear();
        self.spans.clear();
        self.bytes.clear();
        self.last = None;
    }

    fn resource_index(&mut self, resource: &Arc<ResourceInfo>) -> u32 {
        let ptr = Arc::as_ptr(resource) as usize;
        if let Some((p, i)) = self.last
            && p == ptr
        {
            return i;
        }
        let i = match self
            .resources
            .iter()
            .position(|r| Arc::as_ptr(r) as usize == ptr)
        {
            Some(i) => i as u32,
            None => {
                self.resources.push(resource.clone());
                (self.resources.len() - 1) as u32
            }
        };
        self.last = Some((ptr, i));
        i
    }

    /// Adds one encoded `Span` message.
    pub fn push(&mut self, resource: &Arc<ResourceInfo>, span: &[u8]) {
        self.push_with(resource, |out| out.extend_from_slice(span));
    }

    /// Adds the `Span` message that `write` appends to the batch's buffer:
    /// spans are built in place, not copied in.
    pub fn push_with<R>(
        &mut self,
        resource: &Arc<ResourceInfo>,
        write: impl FnOnce(&mut Vec<u8>) -> R,
    ) -> R {
        let idx = self.resource_index(resource);
        let r = write(&mut self.bytes);
        self.spans.push((idx, self.bytes.len()));
        r
    }

    /// Adds a span given as a struct (tests and tools).
    pub fn push_span(&mut self, resource: &Arc<ResourceInfo>, span: &Span) {
        self.push(resource, &span.encode_to_vec());
    }

    pub fn len(&self) -> usize {
        self.spans.len()
    }

    pub fn is_empty(&self) -> bool {
        self.spans.is_empty()
    }

    /// Each span with its resource, in push order.
    fn iter(&self) -> impl Iterator<Item = (&Arc<ResourceInfo>, &[u8])> {
        let mut start = 0;
        self.spans.iter().filter_map(move |(r, end)| {
            let bytes = self.bytes.get(start..*end)?;
            start = *end;
            Some((self.resources.get(*r as usize)?, bytes))
        })
    }
}

/// Creates the span queue between the reader and the exporter, bounded to
/// `capacity` spans: those queued plus those the exporter holds unsent.
pub fn queue(capacity: usize) -> (SpanSender, SpanReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let queued = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let pool = Arc::new(Mutex::new(Vec::new()));
    (
        SpanSender {
            tx,
            queued: queued.clone(),
            capacity,
            pool: pool.clone(),
        },
        SpanReceiver { rx, queued, pool },
    )
}

/// Emptied batches handed back to the reader: a fresh batch per drain meant
/// fresh pages, and zeroing them (`clear_page_erms`) was 8% of the agent's
/// profile under load.
type BatchPool = Arc<Mutex<Vec<SpanBatch>>>;
const POOLED_BATCHES: usize = 4;
/// A batch grown larger than this by a burst is freed, not kept.
const MAX_POOLED_BYTES: usize = 4 << 20;

#[derive(Debug, Clone)]
pub struct SpanSender {
    tx: mpsc::UnboundedSender<SpanBatch>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    capacity: usize,
    pool: BatchPool,
}

impl SpanSender {
    /// An empty batch, reusing the buffers of one the exporter is done with.
    pub fn batch(&self) -> SpanBatch {
        self.pool
            .lock()
            .ok()
            .and_then(|mut p| p.pop())
            .unwrap_or_default()
    }

    /// Returns a batch that was not sent (empty, or refused) to the pool.
    pub fn give_back(&self, batch: SpanBatch) {
        recycle(&self.pool, batch);
    }

    /// Queues a batch, or hands it back when the queue has no room for all
    /// of it (the caller counts the drop) or the exporter has stopped.
    pub fn try_send(&self, batch: SpanBatch) -> Result<(), SpanBatch> {
        use std::sync::atomic::Ordering::AcqRel;
        let n = batch.len();
        let reserved =
            self.queued
                .fetch_update(AcqRel, std::sync::atomic::Ordering::Acquire, |q| {
                    (q + n <= self.capacity).then_some(q + n)
                });
        if reserved.is_err() {
            return Err(batch);
        }
        self.tx.send(batch).map_err(|e| {
            self.queued.fetch_sub(n, AcqRel);
            e.0
        })
    }
}

pub struct SpanReceiver {
    rx: mpsc::UnboundedReceiver<SpanBatch>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
    pool: BatchPool,
}

fn recycle(pool: &BatchPool, mut batch: SpanBatch) {
    batch.clear();
    if batch.bytes.capacity() > MAX_POOLED_BYTES {
        return;
    }
    if let Ok(mut p) = pool.lock()
        && p.len() < POOLED_BATCHES
    {
        p.push(batch);
    }
}

impl SpanReceiver {
    fn recycle(&self, batch: SpanBatch) {
        recycle(&self.pool, batch);
    }

    fn release(&self, n: usize) {
        self.queued
            .fetch_sub(n, std::sync::atomic::Ordering::AcqRel);
    }
}

/// The encoded `ExportTraceServiceRequest` of one batch, as the exporter
/// sends it (for benchmarks and tools).
pub fn encode_request(batch: &SpanBatch, host: &str) -> Vec<u8> {
    let mut p = Pending::default();
    for (r, s) in batch.iter() {
        p.push(r, s);
    }
    Exporter::request(&p, host)
}

/// Spans waiting for the next request, grouped by resource and framed as
/// `ScopeSpans.spans` entries.
#[derive(Default)]
struct Pending {
    groups: Groups,
    by_ptr: HashMap<usize, usize, foldhash::fast::RandomState>,
    /// The resource pointer and group of the last push: a drain's spans
    /// come in runs of one resource, and hashing the pointer per span
    /// (SipHash then) was ~1% of the agent's CPU under load.
    last: Option<(usize, usize)>,
    count: usize,
    /// Emptied group buffers, reused by the next groups.
    spare: Vec<Vec<u8>>,
}

impl Pending {
    fn push(&mut self, resource: &Arc<ResourceInfo>, span: &[u8]) {
        let ptr = Arc::as_ptr(resource) as usize;
        let g = match self.last {
            Some((p, g)) if p == ptr => g,
            _ => {
                let groups = &mut self.groups;
                let g = *self.by_ptr.entry(ptr).or_insert_with(|| {
                    groups.push((resource.clone(), self.spare.pop().unwrap_or_default()));
                    groups.len() - 1
                });
                self.last = Some((ptr, g));
                g
            }
        };
        put_len_field(&mut self.groups[g].1, 2, span);
        self.count += 1;
    }

    /// Hands the spans over for a request; `restore` gives the buffers
    /// back once it is sent.
    fn take(&mut self) -> Groups {
        self.by_ptr.clear();
        self.last = None;
        self.count = 0;
        std::mem::take(&mut self.groups)
    }

    /// Keeps a sent request's buffers for the next groups.
    fn restore(&mut self, mut groups: Groups) {
        for (_, mut b) in groups.drain(..) {
            b.clear();
            self.spare.push(b);
        }
        if self.groups.is_empty() {
            // The emptied list keeps its capacity too.
            self.groups = groups;
        }
    }

    /// Forgets the spans but keeps the buffers.
    #[cfg(test)]
    fn clear(&mut self) {
        let g = self.take();
        self.restore(g);
    }
}

/// Encoded spans per resource, as the exporter frames them into a request.
type Groups = Vec<(Arc<ResourceInfo>, Vec<u8>)>;

/// One trace export: the pending groups, framed into the request as tonic
/// encodes it. Shared by the retries of one batch, which frame the same
/// bytes again.
#[derive(Debug)]
struct TraceRequest {
    groups: Groups,
    host: Arc<str>,
    len: usize,
}

/// Tag of a length-delimited protobuf field: `field << 3 | 2`.
const fn len_tag(field: u8) -> u8 {
    (field << 3) | 2
}

/// Appends one length-delimited field.
fn put_len_field(out: &mut impl BufMut, field: u8, body: &[u8]) {
    out.put_u8(len_tag(field));
    prost::encoding::encode_varint(body.len() as u64, out);
    out.put_slice(body);
}

fn len_field_size(len: usize) -> usize {
    1 + prost::encoding::encoded_len_varint(len as u64) + len
}

/// Frames the pending groups (spans encoded once, where they were built)
/// straight into tonic's buffer, and ignores the response body. Framing
/// them into a request buffer first, which tonic then copied whole into its
/// own, was a copy of every span byte: half of the agent's `memmove` under
/// load. A retry frames the same groups again.
#[derive(Debug, Clone, Copy, Default)]
struct PreEncoded;

impl Codec for PreEncoded {
    type Encode = Arc<TraceRequest>;
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
    type Item = Arc<TraceRequest>;
    type Error = Status;
    fn encode(&mut self, item: Arc<TraceRequest>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.len);
        Exporter::frame_groups(&item.groups, &item.host, dst);
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
    host: Arc<str>,
    metrics: Arc<Mutex<Metrics>>,
    stats: Arc<SelfMetrics>,
    token_file: Option<std::path::PathBuf>,
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
            host: host.into(),
            metrics,
            stats,
            token_file: None,
        })
    }

    /// Sends the token in this file (re-read per request) to the gateway.
    pub fn with_token_file(mut self, file: Option<std::path::PathBuf>) -> Self {
        self.token_file = file;
        self
    }

    /// A request carrying the gateway token, if one is configured. A token that
    /// cannot be read is an `UNAUTHENTICATED` failure of this export (retried
    /// like the gateway's own refusal would not be), never an anonymous send.
    fn authorized<T>(&self, body: T) -> Result<tonic::Request<T>, Status> {
        let mut req = tonic::Request::new(body);
        if let Some(path) = &self.token_file {
            let token = std::fs::read_to_string(path).map_err(|e| {
                Status::unauthenticated(format!("cannot read {}: {e}", path.display()))
            })?;
            let value = format!("Bearer {}", token.trim()).parse().map_err(|_| {
                Status::unauthenticated(format!("{} holds no valid token", path.display()))
            })?;
            req.metadata_mut().insert("authorization", value);
        }
        Ok(req)
    }

    pub async fn run(mut self, mut rx: SpanReceiver, cancel: CancellationToken) {
        let mut pending = Pending::default();
        let mut tick = tokio::time::interval(Duration::from_millis(self.cfg.interval_ms.max(1)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                r = rx.rx.recv() => match r {
                    Some(batch) => {
                        self.add(&batch, &mut pending, &rx, &cancel).await;
                        rx.recycle(batch);
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    self.flush(&mut pending, &rx, &cancel).await;
                    self.send_metrics().await;
                }
            }
        }
        // Drain: what is already queued gets one last attempt.
        rx.rx.close();
        while let Ok(batch) = rx.rx.try_recv() {
            self.add(&batch, &mut pending, &rx, &cancel).await;
        }
        self.flush(&mut pending, &rx, &cancel).await;
        self.send_metrics().await;
    }

    /// Moves a batch into `pending`, sending a request each time
    /// `batch_size` spans are pending.
    async fn add(
        &mut self,
        batch: &SpanBatch,
        pending: &mut Pending,
        rx: &SpanReceiver,
        cancel: &CancellationToken,
    ) {
        for (res, span) in batch.iter() {
            pending.push(res, span);
            if pending.count >= self.cfg.batch_size {
                self.flush(pending, rx, cancel).await;
            }
        }
    }

    async fn flush(
        &mut self,
        pending: &mut Pending,
        rx: &SpanReceiver,
        cancel: &CancellationToken,
    ) {
        if pending.count == 0 {
            return;
        }
        let n = pending.count;
        let groups = pending.take();
        let len = Self::framed_len(&groups);
        let req = Arc::new(TraceRequest {
            groups,
            host: self.host.clone(),
            len,
        });
        let sent = self.send_spans(req, n as u64, cancel).await;
        rx.release(n);
        // Reuse the groups' buffers once tonic has let go of the request.
        if let Ok(req) = Arc::try_unwrap(sent) {
            pending.restore(req.groups);
        }
    }

    /// The encoded `ExportTraceServiceRequest` of the pending spans: one
    /// `ResourceSpans` per resource, holding one `ScopeSpans` with the
    /// pre-encoded spans (fields: request.resource_spans = 1;
    /// ResourceSpans.resource = 1, .scope_spans = 2; ScopeSpans.scope = 1,
    /// .spans = 2).
    fn request(p: &Pending, host: &str) -> Vec<u8> {
        let mut out = Vec::with_capacity(Self::framed_len(&p.groups));
        Self::frame_groups(&p.groups, host, &mut out);
        out
    }

    /// Writes the request of `groups` to `out`.
    fn frame_groups(groups: &Groups, host: &str, out: &mut impl BufMut) {
        let scope = telemetry::scope().encode_to_vec();
        for (res, spans) in groups {
            let resource = telemetry::resource(res, host).encode_to_vec();
            let scope_spans_len = len_field_size(scope.len()) + spans.len();
            let resource_spans_len =
                len_field_size(resource.len()) + len_field_size(scope_spans_len);
            out.put_u8(len_tag(1));
            prost::encoding::encode_varint(resource_spans_len as u64, out);
            put_len_field(out, 1, &resource);
            out.put_u8(len_tag(2));
            prost::encoding::encode_varint(scope_spans_len as u64, out);
            put_len_field(out, 1, &scope);
            out.put_slice(spans);
        }
    }

    /// An upper bound of the request's size, to reserve it at once: the
    /// spans plus room for each group's resource and framing.
    fn framed_len(groups: &Groups) -> usize {
        groups.iter().map(|(_, b)| b.len() + 1024).sum()
    }

    /// Sends one request with retries; gives the request back for reuse.
    async fn send_spans(
        &mut self,
        req: Arc<TraceRequest>,
        n: u64,
        cancel: &CancellationToken,
    ) -> Arc<TraceRequest> {
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
                    return req;
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
        req
    }

    async fn export_bytes(&mut self, body: Arc<TraceRequest>) -> Result<(), Status> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone());
        grpc.ready()
            .await
            .map_err(|e| Status::unavailable(format!("OTLP endpoint not ready: {e}")))?;
        let req = self.authorized(body)?;
        grpc.unary(
            req,
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
        let req = match self.authorized(ExportMetricsServiceRequest { resource_metrics }) {
            Ok(r) => r,
            Err(status) => {
                SelfMetrics::inc(&self.stats.metric_exports_failed);
                warn!(error = %status.message(), "metric export failed");
                return;
            }
        };
        if let Err(status) = self.metrics_client.export(req).await {
            SelfMetrics::inc(&self.stats.metric_exports_failed);
            warn!(code = ?status.code(), error = %status.message(), "metric export failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::{
        collector::trace::v1::ExportTraceServiceRequest,
        trace::v1::{ResourceSpans, ScopeSpans},
    };

    use super::*;

    fn res(name: &str) -> Arc<ResourceInfo> {
        Arc::new(ResourceInfo {
            service_name: name.into(),
            namespace: Some("ns".into()),
            pod: None,
            pid: 7,
            exe_name: "x".into(),
            exe_path: "/x".into(),
            container_id: None,
        })
    }

    fn span(i: u8) -> Span {
        Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("span-{i}-{}", "x".repeat(usize::from(i) * 40)),
            attributes: vec![telemetry::kv("k", "v")],
            ..Span::default()
        }
    }

    /// The hand-framed request decodes to what prost would have encoded from
    /// structs: one ResourceSpans per resource, spans in batch order.
    #[test]
    fn framed_request_matches_struct_encoding() {
        let (a, b) = (res("a"), res("b"));
        let mut batch = SpanBatch::default();
        for i in 1..=5 {
            batch.push_span(if i % 2 == 0 { &b } else { &a }, &span(i));
        }
        assert_eq!(batch.len(), 5);
        let mut pending = Pending::default();
        for (r, s) in batch.iter() {
            pending.push(r, s);
        }
        // Buffers are reused after a flush without changing the framing.
        let first = Exporter::request(&pending, "h");
        pending.clear();
        for (r, s) in batch.iter() {
            pending.push(r, s);
        }
        assert_eq!(Exporter::request(&pending, "h"), first);
        let got = ExportTraceServiceRequest::decode(&Exporter::request(&pending, "h")[..]).unwrap();
        let mut got = got.resource_spans;
        got.sort_by_key(|r| r.resource.as_ref().map(|x| x.encode_to_vec()));
        let want_one = |r: &Arc<ResourceInfo>, ids: &[u8]| ResourceSpans {
            resource: Some(telemetry::resource(r, "h")),
            scope_spans: vec![ScopeSpans {
                scope: Some(telemetry::scope()),
                spans: ids.iter().map(|i| span(*i)).collect(),
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        };
        let mut want = vec![want_one(&a, &[1, 3, 5]), want_one(&b, &[2, 4])];
        want.sort_by_key(|r| r.resource.as_ref().map(|x| x.encode_to_vec()));
        assert_eq!(got, want);
    }

    #[test]
    fn queue_is_bounded_in_spans_until_the_exporter_releases_them() {
        let (tx, rx) = queue(5);
        let r = res("a");
        let batch = |n: u8| {
            let mut b = SpanBatch::default();
            for i in 0..n {
                b.push_span(&r, &span(i));
            }
            b
        };
        assert!(tx.try_send(batch(3)).is_ok());
        // 3 + 3 > 5: refused whole, handed back for counting.
        assert_eq!(tx.try_send(batch(3)).map_err(|b| b.len()), Err(3));
        assert!(tx.try_send(batch(2)).is_ok());
        rx.release(3);
        assert!(tx.try_send(batch(3)).is_ok());
        assert!(tx.try_send(batch(1)).is_err());
    }
}
