//! Bounded queues between receivers and exporters, and the exporter worker that
//! batches per tenant, sends with bounded concurrency and retries.
//!
//! Backpressure: receivers reserve queue slots for every tenant batch of a request
//! at once ([`QueueSender::try_enqueue_all`]); when the queue is full, the whole
//! request is refused with a retryable error, never half-accepted. A queue can
//! also carry a byte budget ([`QueueSender::with_byte_budget`]): each accepted
//! request is charged its OTLP-encoded size, and the [`Charge`] travels with the
//! request's items through every stage until the exporter has encoded them, so
//! the budget bounds the decoded data of the whole path, not of one queue.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio::time::Instant;

use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::disk_queue::{self, DiskQueue};
use crate::export::{Encoded, Encoder, Sender};
use crate::signal::{ResourceItems, Signal, count_items};
use crate::telemetry::{DropReason, Metrics, SignalLabel};

/// One tenant's share of a request.
#[derive(Debug)]
pub struct Batch<R> {
    pub tenant: Arc<str>,
    pub items: Vec<R>,
    /// The bytes these items hold of a byte budget; stages pass it on with the
    /// items (or drop it where they hand the items to a store with its own bound).
    pub charge: Charge,
}

impl<R> Batch<R> {
    /// A batch charged to no budget.
    pub fn new(tenant: Arc<str>, items: Vec<R>) -> Self {
        Self {
            tenant,
            items,
            charge: Charge::none(),
        }
    }
}

/// Encoded bytes of accepted requests whose items are still in memory, decoded
/// (queued, in a stage or in a partial batch); above `limit` the receivers refuse
/// new requests. Shared by every receiver of one signal.
#[derive(Debug)]
pub struct ByteBudget {
    limit: usize,
    used: AtomicUsize,
    gauge: prometheus_client::metrics::gauge::Gauge,
}

impl ByteBudget {
    /// Charges `bytes` if they fit. A request is let in whenever nothing is
    /// charged, so one larger than the whole budget (up to
    /// `--max-request-bytes`) is still accepted instead of refused forever.
    fn try_charge(self: &Arc<Self>, bytes: usize) -> Option<Charge> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used > 0 && used.saturating_add(bytes) > self.limit {
                return None;
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        self.gauge.inc_by(bytes as i64);
        Some(Charge {
            budget: Some(self.clone()),
            bytes,
        })
    }

    /// As [`ByteBudget::try_charge`] decides: nothing charged is never
    /// exhausted, whatever the limit (even 0).
    fn exhausted(&self) -> bool {
        let used = self.used.load(Ordering::Relaxed);
        used > 0 && used >= self.limit
    }

    /// Bytes charged now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

/// Bytes charged to a [`ByteBudget`], given back when dropped.
#[derive(Debug, Default)]
pub struct Charge {
    budget: Option<Arc<ByteBudget>>,
    bytes: usize,
}

impl Charge {
    pub fn none() -> Self {
        Self::default()
    }

    /// Holds at least half of its budget. A partial batch that does is sent
    /// without waiting for `batch_max_items` or the timeout: otherwise, with
    /// large items, one partial batch could hold the whole budget and refuse
    /// every client until its timeout.
    pub fn holds_half_budget(&self) -> bool {
        self.budget
            .as_ref()
            .is_some_and(|b| self.bytes >= b.limit / 2)
    }

    /// Takes over `other`'s bytes, so that one charge covers items merged into
    /// one batch. Both are of the same budget (one per signal); a charge of
    /// another budget is given back at once rather than held by the wrong one.
    pub fn merge(&mut self, mut other: Charge) {
        match (&self.budget, &other.budget) {
            (_, None) => {}
            (None, Some(_)) => *self = other,
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => {
                self.bytes += std::mem::take(&mut other.bytes);
            }
            (Some(_), Some(_)) => drop(other),
        }
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(b) = self.budget.take()
            && self.bytes > 0
        {
            b.used.fetch_sub(self.bytes, Ordering::AcqRel);
            b.gauge.dec_by(self.bytes as i64);
        }
    }
}

/// The queue was full: the client must retry later.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EnqueueError {
    #[error("queue is full")]
    Full,
    #[error("gateway is shutting down")]
    Closed,
}

/// The sending half of a bounded queue, counting its depth.
#[derive(Debug)]
pub struct QueueSender<R> {
    tx: mpsc::Sender<Batch<R>>,
    metrics: Metrics,
    signal: Signal,
    budget: Option<Arc<ByteBudget>>,
}

impl<R> Clone for QueueSender<R> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            metrics: self.metrics.clone(),
            signal: self.signal,
            budget: self.budget.clone(),
        }
    }
}

/// The receiving half; decrements the depth gauge on receive.
#[derive(Debug)]
pub struct QueueReceiver<R> {
    rx: mpsc::Receiver<Batch<R>>,
    metrics: Metrics,
    signal: Signal,
}

pub fn queue<R>(
    capacity: usize,
    signal: Signal,
    metrics: Metrics,
) -> (QueueSender<R>, QueueReceiver<R>) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    // Present from the start, so dashboards see 0 rather than no series.
    let _ = metrics.queue_depth.get_or_create(&SignalLabel { signal });
    (
        QueueSender {
            tx,
            metrics: metrics.clone(),
            signal,
            budget: None,
        },
        QueueReceiver {
            rx,
            metrics,
            signal,
        },
    )
}

impl<R> QueueSender<R> {
    /// Bounds what [`QueueSender::try_enqueue_sized`] accepts by bytes as well:
    /// at most `max_bytes` of encoded requests whose items are still decoded
    /// somewhere behind this queue (the charge is given back once the exporter
    /// has encoded them).
    pub fn with_byte_budget(mut self, max_bytes: usize) -> Self {
        let gauge = self
            .metrics
            .queue_budget_bytes
            .get_or_create(&SignalLabel {
                signal: self.signal,
            })
            .clone();
        self.budget = Some(Arc::new(ByteBudget {
            limit: max_bytes,
            used: AtomicUsize::new(0),
            gauge,
        }));
        self
    }

    /// The byte budget, if this queue has one.
    pub fn byte_budget(&self) -> Option<&Arc<ByteBudget>> {
        self.budget.as_ref()
    }
}

impl<R: ResourceItems> QueueSender<R> {
    /// Enqueues every batch or none.
    pub fn try_enqueue_all(&self, batches: Vec<Batch<R>>) -> Result<(), EnqueueError> {
        self.try_enqueue_sized(batches, 0)
    }

    /// Enqueues every batch or none; `bytes` (the request's encoded size) is
    /// charged to the byte budget, if any, and refused with
    /// [`EnqueueError::Full`] when it does not fit.
    pub fn try_enqueue_sized(
        &self,
        mut batches: Vec<Batch<R>>,
        bytes: usize,
    ) -> Result<(), EnqueueError> {
        if batches.is_empty() {
            return Ok(());
        }
        if let Some(budget) = &self.budget {
            if self.tx.is_closed() {
                return Err(EnqueueError::Closed);
            }
            let charge = budget.try_charge(bytes).ok_or(EnqueueError::Full)?;
            // One charge for the request, carried by its first batch; if the
            // slots below are not there, it is given back with the batches.
            batches[0].charge.merge(charge);
        }
        let permits = self
            .tx
            .try_reserve_many(batches.len())
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(()) => EnqueueError::Full,
                mpsc::error::TrySendError::Closed(()) => EnqueueError::Closed,
            })?;
        let n = batches.len();
        for (permit, batch) in permits.zip(batches) {
            queued_items(&self.metrics, &batch).inc_by(count_items(&batch.items) as i64);
            permit.send(batch);
        }
        self.depth().inc_by(n as i64);
        Ok(())
    }

    /// No free slot or no budget left right now (the receivers refuse before
    /// decoding).
    pub fn is_full(&self) -> bool {
        self.tx.capacity() == 0 || self.budget.as_ref().is_some_and(|b| b.exhausted())
    }

    /// Waits for room; used by internal stages (the sampler) so that a full export
    /// queue propagates back to the stage's own input queue.
    pub async fn enqueue(&self, batch: Batch<R>) -> Result<(), EnqueueError> {
        let items = queued_items(&self.metrics, &batch);
        let n = count_items(&batch.items) as i64;
        self.tx
            .send(batch)
            .await
            .map_err(|_| EnqueueError::Closed)?;
        items.inc_by(n);
        self.depth().inc();
        Ok(())
    }

    fn depth(&self) -> prometheus_client::metrics::gauge::Gauge {
        self.metrics
            .queue_depth
            .get_or_create(&SignalLabel {
                signal: self.signal,
            })
            .clone()
    }
}

impl<R: ResourceItems> QueueReceiver<R> {
    pub async fn recv(&mut self) -> Option<Batch<R>> {
        let b = self.rx.recv().await?;
        queued_items(&self.metrics, &b).dec_by(count_items(&b.items) as i64);
        self.metrics
            .queue_depth
            .get_or_create(&SignalLabel {
                signal: self.signal,
            })
            .dec();
        Some(b)
    }

    /// Refuses further batches (senders get [`EnqueueError::Closed`]); those
    /// already queued can still be received.
    pub fn close(&mut self) {
        self.rx.close();
    }
}

fn queued_items<R: ResourceItems>(
    metrics: &Metrics,
    batch: &Batch<R>,
) -> prometheus_client::metrics::gauge::Gauge {
    metrics
        .queue_items
        .get_or_create(&crate::telemetry::TenantSignal {
            tenant: batch.tenant.to_string(),
            signal: R::SIGNAL,
        })
        .clone()
}

/// How the exporter worker batches and sends.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    pub batch_max_items: usize,
    pub batch_timeout: Duration,
    pub max_in_flight: usize,
    pub shutdown_timeout: Duration,
}

struct Pending<R> {
    items: Vec<R>,
    count: usize,
    deadline: Instant,
    /// The byte-budget charge of the items; given back once they are encoded.
    charge: Charge,
}

/// With a disk queue, batches are encoded and appended to it instead of sent; the
/// drainer ([`run_drainer`]) sends them.
#[derive(Clone)]
pub struct Spool {
    pub queue: Arc<DiskQueue>,
    /// Fires when the shutdown deadline has passed: stop waiting for disk space.
    pub stop: CancellationToken,
}

/// An encoded request as stored in the disk queue.
#[derive(Clone, PartialEq, Message)]
pub struct SpooledRequest {
    #[prost(string, tag = "1")]
    pub tenant: String,
    #[prost(uint64, tag = "2")]
    pub items: u64,
    #[prost(bytes = "bytes", tag = "3")]
    pub body: bytes::Bytes,
    #[prost(string, tag = "4")]
    pub content_type: String,
    #[prost(string, optional, tag = "5")]
    pub content_encoding: Option<String>,
    #[prost(string, repeated, tag = "6")]
    pub header_names: Vec<String>,
    #[prost(string, repeated, tag = "7")]
    pub header_values: Vec<String>,
}

impl SpooledRequest {
    fn new(tenant: &str, e: Encoded) -> Self {
        let (header_names, header_values) = e.extra_headers.into_iter().unzip();
        Self {
            tenant: tenant.to_string(),
            items: e.items as u64,
            body: e.body,
            content_type: e.content_type,
            content_encoding: e.content_encoding,
            header_names,
            header_values,
        }
    }

    fn into_encoded(self) -> (String, Encoded) {
        (
            self.tenant,
            Encoded {
                body: self.body,
                content_type: self.content_type,
                content_encoding: self.content_encoding,
                extra_headers: self
                    .header_names
                    .into_iter()
                    .zip(self.header_values)
                    .collect(),
                items: self.items as usize,
                dropped: Vec::new(),
            },
        )
    }
}

async fn spool_batch<R: ResourceItems>(
    spool: &Spool,
    tenant: &str,
    p: Pending<R>,
    encoder: &Arc<dyn Encoder<R>>,
    metrics: &Metrics,
) {
    let signal = R::SIGNAL;
    let encoded = encoder.encode(tenant, p.items);
    // The decoded items are gone; the disk queue has its own budget.
    drop(p.charge);
    for (reason, n, why) in &encoded.dropped {
        metrics.dropped(tenant, signal, *reason, *n, why);
    }
    if encoded.items == 0 {
        return;
    }
    let n = encoded.items;
    let record = SpooledRequest::new(tenant, encoded).encode_to_vec();
    loop {
        match spool.queue.append(&record) {
            Ok(()) => break,
            Err(disk_queue::Error::Full(_)) => {
                // Over budget: wait for the drainer to free space. Meanwhile the
                // in-memory queue fills and clients are pushed back.
                tokio::select! {
                    _ = spool.queue.space_freed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = spool.stop.cancelled() => {
                        metrics.dropped(tenant, signal, DropReason::Shutdown, n, "disk queue full at shutdown deadline");
                        return;
                    }
                }
            }
            Err(e) => {
                metrics.dropped(tenant, signal, DropReason::DiskIo, n, &e.to_string());
                return;
            }
        }
    }
    metrics
        .disk_queue_bytes
        .get_or_create(&SignalLabel { signal })
        .set(spool.queue.pending_bytes() as i64);
}

/// Sends what the disk queue holds, oldest first, acknowledging each record only
/// after the backend accepted it (at-least-once). Retryable failures are retried
/// until `stop`; once `closing` fires and the queue is empty, it returns.
pub async fn run_drainer(
    queue: Arc<DiskQueue>,
    sender: Arc<Sender>,
    signal: Signal,
    metrics: Metrics,
    closing: CancellationToken,
    stop: CancellationToken,
) {
    let gauge = metrics
        .disk_queue_bytes
        .get_or_create(&SignalLabel { signal })
        .clone();
    while !stop.is_cancelled() {
        gauge.set(queue.pending_bytes() as i64);
        match queue.peek() {
            Ok(Some((payload, pos))) => {
                let done = match SpooledRequest::decode(&payload[..]) {
                    Ok(req) => {
                        let (tenant, e) = req.into_encoded();
                        sender
                            .send_until(&tenant, signal, &e, &metrics, Some(&stop))
                            .await
                    }
                    Err(e) => {
                        metrics.dropped("", signal, DropReason::Corrupt, 1, &e.to_string());
                        true
                    }
                };
                if !done {
                    break;
                }
                if let Err(e) = queue.ack(pos) {
                    tracing::error!(error = %e, "cannot persist disk-queue cursor; the record may be sent again after a restart");
                }
            }
            Ok(None) => {
                if closing.is_cancelled() {
                    break;
                }
                tokio::select! {
                    _ = queue.appended() => {}
                    _ = closing.cancelled() => {}
                    _ = stop.cancelled() => {}
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "disk queue read failed");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.cancelled() => {}
                }
            }
        }
    }
    gauge.set(queue.pending_bytes() as i64);
}

/// Runs until the queue is closed and drained, then waits for in-flight requests
/// up to the shutdown deadline; whatever is still unsent then is counted dropped.
pub async fn run_exporter<R: ResourceItems>(
    mut rx: QueueReceiver<R>,
    encoder: Arc<dyn Encoder<R>>,
    sender: Arc<Sender>,
    opts: ExportOptions,
    metrics: Metrics,
    spool: Option<Spool>,
) {
    let signal = R::SIGNAL;
    let mut pending: HashMap<Arc<str>, Pending<R>> = HashMap::new();
    let slots = Arc::new(Semaphore::new(opts.max_in_flight.max(1)));
    let unsent = Arc::new(InFlight::default());
    let mut tasks = JoinSet::new();
    loop {
        let next_deadline = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            maybe = rx.recv() => {
                let Some(batch) = maybe else { break };
                let n = count_items(&batch.items);
                let entry = pending.entry(batch.tenant.clone()).or_insert_with(|| Pending {
                    items: Vec::new(),
                    count: 0,
                    deadline: Instant::now() + opts.batch_timeout,
                    charge: Charge::none(),
                });
                entry.items.extend(batch.items);
                entry.count += n;
                entry.charge.merge(batch.charge);
                if (entry.count >= opts.batch_max_items || entry.charge.holds_half_budget())
                    && let Some(p) = pending.remove(&batch.tenant)
                {
                    match &spool {
                        Some(sp) => spool_batch(sp, &batch.tenant, p, &encoder, &metrics).await,
                        None => flush(&mut tasks, &slots, batch.tenant, p, &encoder, &sender, &metrics, &unsent).await,
                    }
                }
            }
            _ = sleep_until_opt(next_deadline) => {
                let now = Instant::now();
                let due: Vec<Arc<str>> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in due {
                    if let Some(p) = pending.remove(&t) {
                        match &spool {
                            Some(sp) => spool_batch(sp, &t, p, &encoder, &metrics).await,
                            None => flush(&mut tasks, &slots, t, p, &encoder, &sender, &metrics, &unsent).await,
                        }
                    }
                }
            }
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    let rest: Vec<(Arc<str>, Pending<R>)> = pending.drain().collect();
    for (t, p) in rest {
        match &spool {
            Some(sp) => spool_batch(sp, &t, p, &encoder, &metrics).await,
            None => {
                flush(
                    &mut tasks, &slots, t, p, &encoder, &sender, &metrics, &unsent,
                )
                .await
            }
        }
    }
    let drained = tokio::time::timeout(opts.shutdown_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tasks.abort_all();
        for (tenant, n) in unsent.take_all() {
            metrics.dropped(
                &tenant,
                signal,
                DropReason::Shutdown,
                n,
                "shutdown deadline passed with the export still in flight",
            );
        }
    }
}

/// Items per tenant currently being sent, so an aborted send at shutdown is counted.
#[derive(Default)]
struct InFlight {
    inner: std::sync::Mutex<HashMap<Arc<str>, usize>>,
}

impl InFlight {
    fn add(&self, tenant: &Arc<str>, n: usize) {
        if let Ok(mut m) = self.inner.lock() {
            *m.entry(tenant.clone()).or_default() += n;
        }
    }
    fn sub(&self, tenant: &Arc<str>, n: usize) {
        if let Ok(mut m) = self.inner.lock()
            && let Some(v) = m.get_mut(tenant)
        {
            *v = v.saturating_sub(n);
        }
    }
    fn take_all(&self) -> Vec<(Arc<str>, usize)> {
        match self.inner.lock() {
            Ok(mut m) => m.drain().filter(|(_, n)| *n > 0).collect(),
            Err(_) => Vec::new(),
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn flush<R: ResourceItems>(
    tasks: &mut JoinSet<()>,
    slots: &Arc<Semaphore>,
    tenant: Arc<str>,
    p: Pending<R>,
    encoder: &Arc<dyn Encoder<R>>,
    sender: &Arc<Sender>,
    metrics: &Metrics,
    unsent: &Arc<InFlight>,
) {
    // Waiting for a slot here (not inside the task) stops the worker from draining
    // its queue while every slot is busy, so a slow backend fills the queue and
    // clients get pushed back instead of the gateway buffering without bound.
    let Ok(permit) = slots.clone().acquire_owned().await else {
        return;
    };
    let encoder = encoder.clone();
    let sender = sender.clone();
    let metrics = metrics.clone();
    let unsent = unsent.clone();
    unsent.add(&tenant, p.count);
    tasks.spawn(async move {
        let _permit = permit;
        let count = p.count;
        let encoded = encoder.encode(&tenant, p.items);
        // The decoded items are gone; what is left in memory is the encoded
        // body, bounded by the in-flight slots.
        drop(p.charge);
        for (reason, n, why) in &encoded.dropped {
            metrics.dropped(&tenant, R::SIGNAL, *reason, *n, why);
        }
        sender.send(&tenant, R::SIGNAL, encoded, &metrics).await;
        unsent.sub(&tenant, count);
    });
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

    fn batch() -> Batch<ResourceSpans> {
        Batch::new(Arc::from("t"), vec![ResourceSpans::default()])
    }

    #[test]
    fn byte_budget_refuses_past_its_limit_and_frees_on_drop() {
        let metrics = Metrics::default();
        let (tx, mut rx) = queue::<ResourceSpans>(16, Signal::Traces, metrics);
        let tx = tx.with_byte_budget(100);
        let budget = tx.byte_budget().unwrap().clone();
        // Larger than the whole budget, but nothing is charged: let in.
        tx.try_enqueue_sized(vec![batch()], 150).unwrap();
        assert!(tx.is_full());
        assert_eq!(
            tx.try_enqueue_sized(vec![batch()], 1),
            Err(EnqueueError::Full)
        );
        let first = rx.rx.try_recv().unwrap();
        assert_eq!(budget.used(), 150, "the charge travels with the batch");
        drop(first);
        assert_eq!(budget.used(), 0);
        tx.try_enqueue_sized(vec![batch(), batch()], 60).unwrap();
        tx.try_enqueue_sized(vec![batch()], 40).unwrap();
        assert_eq!(
            tx.try_enqueue_sized(vec![batch()], 1),
            Err(EnqueueError::Full)
        );
        // Merged charges (the exporter's partial batch) are given back together.
        let mut merged = Charge::none();
        while let Ok(b) = rx.rx.try_recv() {
            merged.merge(b.charge);
        }
        assert_eq!(budget.used(), 100);
        assert!(merged.holds_half_budget());
        drop(merged);
        assert_eq!(budget.used(), 0);
        assert!(!tx.is_full());
    }

    #[test]
    fn a_zero_budget_takes_one_request_at_a_time() {
        let metrics = Metrics::default();
        let (tx, mut rx) = queue::<ResourceSpans>(16, Signal::Traces, metrics);
        let tx = tx.with_byte_budget(0);
        assert!(!tx.is_full());
        tx.try_enqueue_sized(vec![batch()], 10).unwrap();
        assert!(tx.is_full());
        drop(rx.rx.try_recv().unwrap());
        assert!(!tx.is_full());
    }

    #[test]
    fn a_refused_request_gives_its_charge_back() {
        let metrics = Metrics::default();
        let (tx, _rx) = queue::<ResourceSpans>(1, Signal::Traces, metrics);
        let tx = tx.with_byte_budget(1000);
        tx.try_enqueue_sized(vec![batch()], 10).unwrap();
        // No slot left (capacity 1): refused, and its bytes are not kept.
        assert_eq!(
            tx.try_enqueue_sized(vec![batch()], 10),
            Err(EnqueueError::Full)
        );
        assert_eq!(tx.byte_budget().unwrap().used(), 10);
    }
}
