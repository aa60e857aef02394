//! OTLP receivers (gRPC and HTTP) and the ingest step they share: identify the
//! sender, route by tenant, enqueue all-or-nothing, count.

mod count;
pub mod grpc;
pub mod http;

use std::net::IpAddr;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::logs::v1::{
    ExportLogsPartialSuccess, ExportLogsServiceRequest, ExportLogsServiceResponse,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use tokio::sync::watch;

use crate::identity::Identifier;
use crate::pipeline::{Batch, EnqueueError, QueueSender};
use crate::ring::View;
use crate::ring::wire::{self, WireResourceSpans};
use crate::routing::{self, Caller, RouteTable};
use crate::signal::{ResourceItems, Signal, count_items};
use crate::telemetry::{Metrics, RejectReason, TenantSignal};

/// Why a request was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Rejected(String),
    #[error("{0} exporter queue is full; retry later")]
    QueueFull(Signal),
    #[error("gateway is shutting down; retry against another replica")]
    ShuttingDown,
    #[error("this gateway has no {0} backend configured")]
    NotConfigured(Signal),
    #[error("{0}")]
    Unavailable(String),
}

/// A request taken in, possibly with some items refused.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Accepted {
    pub rejected: usize,
    pub message: String,
}

/// What the receivers share: the live route table and the queues.
#[derive(Debug, Clone)]
pub struct Ingest {
    pub routes: watch::Receiver<Arc<RouteTable>>,
    pub identity: Identifier,
    pub traces: Option<QueueSender<WireResourceSpans>>,
    /// The trace ring as this replica sees it; while it forwards, protobuf
    /// trace requests are decoded with their spans kept encoded ([`wire`]).
    pub ring: Option<watch::Receiver<Arc<View>>>,
    pub metrics_queue: Option<QueueSender<ResourceMetrics>>,
    pub logs: Option<QueueSender<ResourceLogs>>,
    pub telemetry: Metrics,
    pub retry_after_s: u64,
}

/// A request header as the receivers read it: absent, text, or present but not
/// visible ASCII (which HTTP/2 and gRPC metadata allow as raw bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderText<'a> {
    Absent,
    Text(&'a str),
    NotAscii,
}

impl<'a> HeaderText<'a> {
    /// The text, `None` when absent; `refused` when present but unreadable.
    fn readable<R>(self, refused: impl FnOnce() -> R) -> Result<Option<&'a str>, R> {
        match self {
            Self::Absent => Ok(None),
            Self::Text(s) => Ok(Some(s)),
            Self::NotAscii => Err(refused()),
        }
    }

    pub fn of<E>(value: Option<Result<&'a str, E>>) -> Self {
        match value {
            None => Self::Absent,
            Some(Ok(s)) => Self::Text(s),
            Some(Err(_)) => Self::NotAscii,
        }
    }
}

impl Ingest {
    /// Whether trace spans are kept encoded on receipt (the ring forwards).
    pub fn keeps_spans_encoded(&self) -> bool {
        self.ring.as_ref().is_some_and(|v| v.borrow().forwards())
    }

    /// [`Ingest::ingest`] for the raw `authorization` and `X-Scope-OrgID`
    /// headers. A header that is present but unreadable is refused, never taken
    /// as absent: an unreadable token would otherwise make the caller anonymous
    /// (routed by namespace), and an unreadable tenant name would skip the check
    /// that a client names only its own tenant.
    pub async fn ingest_headers<R: ResourceItems>(
        &self,
        queue: Option<&QueueSender<R>>,
        authorization: HeaderText<'_>,
        org_id: HeaderText<'_>,
        peer: Option<IpAddr>,
        items: Vec<R>,
        bytes: usize,
    ) -> Result<Accepted, Error> {
        let (authorization, org_id) = match readable_headers(authorization, org_id) {
            Ok(h) => h,
            Err((reason, err)) => {
                self.telemetry
                    .rejected(R::SIGNAL, reason, count_items(&items));
                return Err(err);
            }
        };
        self.ingest(queue, authorization, org_id, peer, items, bytes)
            .await
    }

    /// Whether `queue` has no room for another request right now (it may have by
    /// the time the request is decoded; enqueueing checks again).
    pub fn full<R: ResourceItems>(queue: Option<&QueueSender<R>>) -> bool {
        queue.is_some_and(QueueSender::is_full)
    }

    /// The answer to a request of `items` items, not decoded, that arrived while
    /// the queue was full: the sender is identified exactly as
    /// [`Ingest::ingest_headers`] would (so a refused credential is still
    /// answered as such, and counted), then told to retry later.
    pub async fn refuse_full(
        &self,
        signal: Signal,
        authorization: HeaderText<'_>,
        org_id: HeaderText<'_>,
        peer: Option<IpAddr>,
        items: usize,
    ) -> Error {
        let (authorization, org_id) = match readable_headers(authorization, org_id) {
            Ok(h) => h,
            Err((reason, err)) => {
                self.telemetry.rejected(signal, reason, items);
                return err;
            }
        };
        let table = self.routes.borrow().clone();
        if let Err(e) = self
            .identify(&table, authorization, org_id, peer, signal, items)
            .await
        {
            return e;
        }
        self.telemetry
            .rejected(signal, RejectReason::QueueFull, items);
        Error::QueueFull(signal)
    }

    async fn identify(
        &self,
        table: &RouteTable,
        authorization: Option<&str>,
        org_id: Option<&str>,
        peer: Option<IpAddr>,
        signal: Signal,
        total: usize,
    ) -> Result<Caller, Error> {
        self.identity
            .identify(table, authorization, org_id, peer)
            .await
            .map_err(|e| {
                let reason = e.reason();
                tracing::info!(reason = ?reason, peer = ?peer, items = total, signal = %signal, error = %e, "request refused");
                self.telemetry.rejected(signal, reason, total);
                let msg = e.to_string();
                match e {
                    routing::Error::TenantNotAllowed { .. }
                    | routing::Error::NotAgent { .. }
                    | routing::Error::NoNode
                    | routing::Error::UnknownSource(_) => Error::Forbidden(msg),
                    routing::Error::IdentityUnavailable(_) => Error::Unavailable(msg),
                    _ => Error::Unauthenticated(msg),
                }
            })
    }

    /// The whole ingest step for one request; `peer` is the connection's source
    /// address, `bytes` the request's encoded (uncompressed) size, charged to the
    /// queue's byte budget.
    pub async fn ingest<R: ResourceItems>(
        &self,
        queue: Option<&QueueSender<R>>,
        authorization: Option<&str>,
        org_id: Option<&str>,
        peer: Option<IpAddr>,
        items: Vec<R>,
        bytes: usize,
    ) -> Result<Accepted, Error> {
        let signal = R::SIGNAL;
        let total = count_items(&items);
        let Some(queue) = queue else {
            return Err(Error::NotConfigured(signal));
        };
        // One table for the whole request: a reload in the middle cannot split a
        // request across two configs.
        let table = self.routes.borrow().clone();
        let caller = self
            .identify(&table, authorization, org_id, peer, signal, total)
            .await?;
        let routed = table.route(&caller, items);
        if routed.retagged_items > 0 {
            // Retagged items all went to the one tenant of the verified sender.
            for (t, _) in &routed.per_tenant {
                tracing::info!(tenant = %t, items = routed.retagged_items, signal = %signal, caller = ?caller_kind(&caller), "items naming another namespace routed to the verified sender's tenant");
                self.telemetry
                    .retagged
                    .get_or_create(&TenantSignal {
                        tenant: t.to_string(),
                        signal,
                    })
                    .inc_by(routed.retagged_items as u64);
            }
        }
        let accepted_items = routed.accepted_items();
        let rejected = routed.rejected_items;
        let message = if rejected > 0 {
            for (reason, n) in &routed.rejected {
                self.telemetry.rejected(signal, *reason, *n);
            }
            routed.rejection_message()
        } else {
            String::new()
        };
        if accepted_items == 0 {
            return if rejected > 0 {
                Err(Error::Rejected(message))
            } else {
                Ok(Accepted::default())
            };
        }
        let counts: Vec<(Arc<str>, usize)> = routed
            .per_tenant
            .iter()
            .map(|(t, v)| (t.clone(), count_items(v)))
            .collect();
        let batches = routed
            .per_tenant
            .into_iter()
            .map(|(tenant, items)| Batch::new(tenant, items))
            .collect();
        queue.try_enqueue_sized(batches, bytes).map_err(|e| {
            self.telemetry
                .rejected(signal, RejectReason::QueueFull, accepted_items);
            match e {
                EnqueueError::Full => Error::QueueFull(signal),
                EnqueueError::Closed => Error::ShuttingDown,
            }
        })?;
        for (t, n) in counts {
            self.telemetry.received(&t, signal, n);
        }
        Ok(Accepted { rejected, message })
    }
}

/// The credential headers as text; a header that is present but unreadable is
/// refused, never taken as absent: an unreadable token would otherwise make the
/// caller anonymous (routed by namespace), and an unreadable tenant name would
/// skip the check that a client names only its own tenant.
#[allow(clippy::type_complexity)]
fn readable_headers<'a>(
    authorization: HeaderText<'a>,
    org_id: HeaderText<'a>,
) -> Result<(Option<&'a str>, Option<&'a str>), (RejectReason, Error)> {
    let authorization = authorization.readable(|| {
        (
            RejectReason::Unauthenticated,
            Error::Unauthenticated(
                "authorization header is not visible ASCII; it must be `Bearer <token>`".into(),
            ),
        )
    })?;
    let org_id = org_id.readable(|| {
        (
            RejectReason::Malformed,
            Error::Rejected(
                "X-Scope-OrgID header is not visible ASCII; tenant ids are ASCII".into(),
            ),
        )
    })?;
    Ok((authorization, org_id))
}

fn caller_kind(c: &Caller) -> &'static str {
    match c {
        Caller::Tenant(_) => "token",
        Caller::Agent { .. } => "agent",
        Caller::Pod { .. } => "pod",
        Caller::Network(_) => "static source",
    }
}

/// The OTLP export request of one signal and how to answer it.
pub trait OtlpRequest:
    prost::Message + Default + serde::de::DeserializeOwned + Send + 'static
{
    type Item: ResourceItems;
    type Response: prost::Message + serde::Serialize + Default + Send + 'static;
    fn into_items(self) -> Vec<Self::Item>;
    /// Decodes a protobuf request body into its items.
    fn decode_items(
        body: bytes::Bytes,
        _ingest: &Ingest,
    ) -> Result<Vec<Self::Item>, prost::DecodeError> {
        Self::decode(&body[..]).map(Self::into_items)
    }
    fn response(a: &Accepted) -> Self::Response;
    fn queue(ingest: &Ingest) -> Option<&QueueSender<Self::Item>>;
}

impl OtlpRequest for ExportTraceServiceRequest {
    type Item = WireResourceSpans;
    type Response = ExportTraceServiceResponse;
    fn into_items(self) -> Vec<WireResourceSpans> {
        self.resource_spans.into_iter().map(Into::into).collect()
    }
    /// With the ring on, spans stay encoded: those owned by a peer are copied to
    /// it, never decoded here. Refused exactly as a full decode refuses.
    fn decode_items(
        body: bytes::Bytes,
        ingest: &Ingest,
    ) -> Result<Vec<WireResourceSpans>, prost::DecodeError> {
        if ingest.keeps_spans_encoded() {
            wire::decode_request(body)
        } else {
            <Self as prost::Message>::decode(&body[..]).map(Self::into_items)
        }
    }
    fn response(a: &Accepted) -> ExportTraceServiceResponse {
        ExportTraceServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: a.rejected as i64,
                error_message: a.message.clone(),
            }),
        }
    }
    fn queue(ingest: &Ingest) -> Option<&QueueSender<WireResourceSpans>> {
        ingest.traces.as_ref()
    }
}

impl OtlpRequest for ExportMetricsServiceRequest {
    type Item = ResourceMetrics;
    type Response = ExportMetricsServiceResponse;
    fn into_items(self) -> Vec<ResourceMetrics> {
        self.resource_metrics
    }
    fn response(a: &Accepted) -> ExportMetricsServiceResponse {
        ExportMetricsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: a.rejected as i64,
                error_message: a.message.clone(),
            }),
        }
    }
    fn queue(ingest: &Ingest) -> Option<&QueueSender<ResourceMetrics>> {
        ingest.metrics_queue.as_ref()
    }
}

impl OtlpRequest for ExportLogsServiceRequest {
    type Item = ResourceLogs;
    type Response = ExportLogsServiceResponse;
    fn into_items(self) -> Vec<ResourceLogs> {
        self.resource_logs
    }
    fn response(a: &Accepted) -> ExportLogsServiceResponse {
        ExportLogsServiceResponse {
            partial_success: (a.rejected > 0).then(|| ExportLogsPartialSuccess {
                rejected_log_records: a.rejected as i64,
                error_message: a.message.clone(),
            }),
        }
    }
    fn queue(ingest: &Ingest) -> Option<&QueueSender<ResourceLogs>> {
        ingest.logs.as_ref()
    }
}
