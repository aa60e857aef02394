//! The ring router and the per-peer forwarders.
//!
//! The router takes every trace batch the receivers accepted, splits it by trace
//! id, keeps the fragments this replica owns (they go to the sampler) and hands
//! the others to one forwarder per owner. A forwarder batches per tenant and sends
//! OTLP/gRPC `Export` requests to the owner's ring port, the tenant in metadata.
//!
//! Backpressure: router → forwarder queues are bounded and awaited, so a slow or
//! full owner (RESOURCE_EXHAUSTED, retried with backoff and counted) fills the
//! forwarder's queue, then the router's input, then clients get pushed back — the
//! same path as a slow backend.
//!
//! Failure: an owner that does not answer within `--ring-unreachable-ms` is left
//! out of this replica's ring for `--ring-suspect-ms` and its spans go to the next
//! owner of each trace (counted `orphaned`): every replica that forwards to the
//! dead owner finds it dead and picks the same next owner, so traces stay whole
//! while Kubernetes (or the peers file) catches up.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{BufMut, Bytes};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::metadata::MetadataValue;

use super::wire::{Spans, WireResourceSpans, WireScopeSpans};
use super::{OrphanReason, RetryLabels, RetryReason, Ring, TenantLabel, View};
use crate::pipeline::{Batch, Charge, QueueReceiver, QueueSender};
use crate::sampling::{TraceId, to_trace_id};
use crate::signal::count_items;
use crate::telemetry::{DropReason, Metrics};

const EXPORT_PATH: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// How forwarders batch and retry.
#[derive(Debug, Clone)]
pub struct ForwardOptions {
    pub batch_max_items: usize,
    pub batch_timeout: Duration,
    pub queue_capacity: usize,
    pub request_timeout: Duration,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    pub unreachable: Duration,
    pub suspect: Duration,
}

/// Shared by the router and the forwarders.
pub struct Dispatch {
    self_addr: Arc<str>,
    view: watch::Receiver<Arc<View>>,
    local: QueueSender<ResourceSpans>,
    forwarders: Mutex<HashMap<Arc<str>, mpsc::Sender<Batch<WireResourceSpans>>>>,
    pruned_generation: AtomicU64,
    suspects: Mutex<HashMap<Arc<str>, Instant>>,
    secret: Option<MetadataValue<tonic::metadata::Ascii>>,
    opts: ForwardOptions,
    metrics: Metrics,
    /// The shutdown deadline: stop retrying busy owners, sample here instead.
    stop: CancellationToken,
    closed: AtomicBool,
}

/// Where the fragments of one batch go.
#[derive(Debug, Default)]
pub struct Split {
    /// Owned here, decoded for the sampler.
    pub local: Vec<ResourceSpans>,
    /// Owned by peers; spans received encoded stay encoded.
    pub remote: Vec<(Arc<str>, Vec<WireResourceSpans>)>,
    /// Spans owned here that did not decode: none, for spans read by
    /// [`super::wire::decode_request`], which checked them.
    pub undecodable: usize,
}

/// Splits one scope's spans (of one form) by destination: one list per
/// destination, in the order of their first span, each in input order.
fn by_dest<T>(spans: Vec<T>, dests: &[usize]) -> Vec<(usize, Vec<T>)> {
    let mut out: Vec<(usize, Vec<T>)> = Vec::new();
    for (span, &dest) in spans.into_iter().zip(dests) {
        match out.iter_mut().find(|(d, _)| *d == dest) {
            Some((_, v)) => v.push(span),
            None => out.push((dest, vec![span])),
        }
    }
    out
}

/// Splits `items` by the owner of each trace. Pure.
///
/// Spans are grouped per input resource and destination, not per trace: the
/// sampler regroups by trace anyway, and one group per destination clones each
/// resource and scope at most once per owner (a per-trace split cloned them once
/// per trace and put as many copies on the wire to the owner). A resource whose
/// spans all go to one place is moved whole. Spans keep their order within each
/// destination's share, and the form they came in: encoded spans going to a peer
/// are never decoded here; those owned here are decoded for the sampler.
pub fn split(ring: &Ring, self_addr: &str, items: Vec<WireResourceSpans>) -> Split {
    fn to_local(rs: WireResourceSpans, out: &mut Split) {
        let (rs, bad) = rs.into_decoded();
        out.undecodable += bad;
        out.local.push(rs);
    }
    let mut out = Split::default();
    if ring.is_empty() {
        for rs in items {
            to_local(rs, &mut out);
        }
        return out;
    }
    let members = ring.members();
    // Destination of a span: an index into `members`, or `HERE`.
    const HERE: usize = usize::MAX;
    let dest_of = |id: &TraceId| match ring.owner_index(id) {
        Some(i) if members[i].addr() != self_addr => i,
        _ => HERE,
    };
    let mut remote: Vec<(usize, Vec<WireResourceSpans>)> = Vec::new();
    let mut send = |dest: usize, rs: WireResourceSpans, out: &mut Split| {
        if dest == HERE {
            to_local(rs, out);
        } else {
            match remote.iter_mut().find(|(d, _)| *d == dest) {
                Some((_, v)) => v.push(rs),
                None => remote.push((dest, vec![rs])),
            }
        }
    };
    let mut dests: Vec<usize> = Vec::new();
    for mut rs in items {
        dests.clear();
        for ss in &rs.scope_spans {
            match &ss.spans {
                Spans::Encoded(v) => dests.extend(v.iter().map(|s| dest_of(&s.trace_id))),
                Spans::Decoded(v) => {
                    dests.extend(v.iter().map(|s| dest_of(&to_trace_id(&s.trace_id))))
                }
            }
        }
        let Some(&first) = dests.first() else {
            // No spans: nothing to sample; kept here so nothing is lost silently.
            to_local(rs, &mut out);
            continue;
        };
        if dests.iter().all(|d| *d == first) {
            send(first, rs, &mut out);
            continue;
        }
        // (destination, its share of this resource)
        let mut parts: Vec<(usize, WireResourceSpans)> = Vec::new();
        let mut k = 0;
        for ss in std::mem::take(&mut rs.scope_spans) {
            let n = ss.spans.len();
            let here = &dests[k..k + n];
            k += n;
            // A scope's share keeps the form its spans came in.
            let shares: Vec<(usize, Spans)> = match ss.spans {
                Spans::Encoded(v) => by_dest(v, here)
                    .into_iter()
                    .map(|(d, v)| (d, Spans::Encoded(v)))
                    .collect(),
                Spans::Decoded(v) => by_dest(v, here)
                    .into_iter()
                    .map(|(d, v)| (d, Spans::Decoded(v)))
                    .collect(),
            };
            for (dest, spans) in shares {
                let p = match parts.iter().position(|(d, _)| *d == dest) {
                    Some(p) => p,
                    None => {
                        parts.push((
                            dest,
                            WireResourceSpans {
                                resource: rs.resource.clone(),
                                scope_spans: Vec::new(),
                                schema_url: rs.schema_url.clone(),
                            },
                        ));
                        parts.len() - 1
                    }
                };
                parts[p].1.scope_spans.push(WireScopeSpans {
                    scope: ss.scope.clone(),
                    spans,
                    schema_url: ss.schema_url.clone(),
                });
            }
        }
        for (dest, part) in parts {
            send(dest, part, &mut out);
        }
    }
    out.remote = remote
        .into_iter()
        .map(|(i, v)| (members[i].addr_arc(), v))
        .collect();
    out
}

impl Dispatch {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        self_addr: Arc<str>,
        view: watch::Receiver<Arc<View>>,
        local: QueueSender<ResourceSpans>,
        secret: Option<String>,
        opts: ForwardOptions,
        metrics: Metrics,
        stop: CancellationToken,
    ) -> Result<Arc<Self>, String> {
        let secret = match secret {
            Some(s) => Some(
                MetadataValue::try_from(s.trim())
                    .map_err(|_| "the ring secret must be printable ASCII".to_string())?,
            ),
            None => None,
        };
        Ok(Arc::new(Self {
            self_addr,
            view,
            local,
            forwarders: Mutex::new(HashMap::new()),
            pruned_generation: AtomicU64::new(0),
            suspects: Mutex::new(HashMap::new()),
            secret,
            opts,
            metrics,
            stop,
            closed: AtomicBool::new(false),
        }))
    }

    /// The ring to route over: the view's, minus owners found unreachable lately.
    fn ring(&self, view: &View) -> Option<Ring> {
        let Ok(mut s) = self.suspects.lock() else {
            return None;
        };
        let now = Instant::now();
        s.retain(|_, until| *until > now);
        if s.is_empty() {
            return None;
        }
        let mut ring = view.ring.clone();
        for addr in s.keys() {
            ring = ring.without(addr);
        }
        Some(ring)
    }

    fn suspect(&self, addr: &Arc<str>) {
        if let Ok(mut s) = self.suspects.lock() {
            s.insert(addr.clone(), Instant::now() + self.opts.suspect);
        }
    }

    fn still_member(&self, addr: &str) -> bool {
        let view = self.view.borrow().clone();
        view.enabled && view.ring.contains(addr)
    }

    fn split(&self, items: Vec<WireResourceSpans>) -> Split {
        let view = self.view.borrow().clone();
        if !view.enabled || view.ring.is_empty() {
            return split(&Ring::default(), &self.self_addr, items);
        }
        self.prune(&view);
        match self.ring(&view) {
            Some(r) => split(&r, &self.self_addr, items),
            None => split(&view.ring, &self.self_addr, items),
        }
    }

    /// Drops the forwarders of peers that left the ring; they flush and end.
    fn prune(&self, view: &View) {
        if self
            .pruned_generation
            .swap(view.generation, Ordering::Relaxed)
            == view.generation
        {
            return;
        }
        if let Ok(mut f) = self.forwarders.lock() {
            f.retain(|addr, _| view.ring.contains(addr));
        }
    }

    fn forwarder(
        self: &Arc<Self>,
        addr: &Arc<str>,
    ) -> Option<mpsc::Sender<Batch<WireResourceSpans>>> {
        if self.closed.load(Ordering::SeqCst) {
            return None;
        }
        let mut f = self.forwarders.lock().ok()?;
        if let Some(tx) = f.get(addr) {
            return Some(tx.clone());
        }
        let (tx, rx) = mpsc::channel(self.opts.queue_capacity.max(1));
        f.insert(addr.clone(), tx.clone());
        tokio::spawn(run_forwarder(addr.clone(), rx, self.clone()));
        Some(tx)
    }

    /// `charge`: the byte-budget charge the items carry on to the sampler.
    async fn to_local(&self, tenant: Arc<str>, items: Vec<ResourceSpans>, charge: Charge) {
        if items.is_empty() {
            return;
        }
        let n = count_items(&items);
        if self
            .local
            .enqueue(Batch {
                tenant: tenant.clone(),
                items,
                charge,
            })
            .await
            .is_err()
        {
            self.metrics.dropped(
                &tenant,
                crate::signal::Signal::Traces,
                DropReason::Shutdown,
                n,
                "sampler stopped before the ring delivered these spans",
            );
        }
    }

    /// [`Dispatch::to_local`] for spans in either form: encoded ones are decoded.
    async fn to_local_wire(&self, tenant: Arc<str>, items: Vec<WireResourceSpans>, charge: Charge) {
        let mut out = Split::default();
        let decoded = items
            .into_iter()
            .map(|rs| {
                let (rs, bad) = rs.into_decoded();
                out.undecodable += bad;
                rs
            })
            .collect();
        self.undecodable(&tenant, out.undecodable);
        self.to_local(tenant, decoded, charge).await;
    }

    /// Counts spans a split could not decode for the sampler. Spans read by
    /// [`super::wire::decode_request`] were checked to decode, so this stays at
    /// zero unless that check and prost disagree.
    fn undecodable(&self, tenant: &str, n: usize) {
        if n > 0 {
            self.metrics.dropped(
                tenant,
                crate::signal::Signal::Traces,
                DropReason::Encode,
                n,
                "a span checked at receipt did not decode for the sampler",
            );
        }
    }

    /// Routes one tenant batch. `reroute`: from a forwarder, which must not wait
    /// on another forwarder's queue (two forwarders waiting on each other would
    /// deadlock), so a full queue sends the spans to this replica's sampler.
    /// `charge` (the request's byte-budget charge) goes with the local part, or
    /// with the first forwarded part when nothing stays here.
    async fn route(
        self: &Arc<Self>,
        tenant: Arc<str>,
        items: Vec<WireResourceSpans>,
        reroute: bool,
        charge: Charge,
    ) {
        let Split {
            local,
            remote,
            undecodable,
        } = self.split(items);
        self.undecodable(&tenant, undecodable);
        let mut charge = Some(charge);
        if !local.is_empty() {
            self.to_local(tenant.clone(), local, charge.take().unwrap_or_default())
                .await;
        }
        for (addr, frags) in remote {
            let batch = Batch {
                tenant: tenant.clone(),
                items: frags,
                charge: charge.take().unwrap_or_default(),
            };
            let Some(tx) = self.forwarder(&addr) else {
                self.to_local_wire(batch.tenant, batch.items, batch.charge)
                    .await;
                continue;
            };
            let failed = if reroute {
                tx.try_send(batch).err().map(|e| match e {
                    mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b) => b,
                })
            } else {
                tx.send(batch).await.err().map(|e| e.0)
            };
            if let Some(b) = failed {
                self.metrics.ring.orphaned(
                    &b.tenant,
                    OrphanReason::QueueFull,
                    count_items(&b.items),
                    &format!("forward queue of {addr} is full or closed"),
                );
                self.to_local_wire(b.tenant, b.items, b.charge).await;
            }
        }
    }

    /// No more input: forwarders flush what they hold and end.
    fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        if let Ok(mut f) = self.forwarders.lock() {
            f.clear();
        }
    }
}

/// Hands a sampler's open traces to their new owner when membership changes.
///
/// Holds the dispatch weakly: the dispatch owns a sender of the sampler's own
/// input queue, and the sampler (which owns this) must see that queue close once
/// the router and the forwarders are done, or shutdown would never end.
pub struct Handoff {
    view: watch::Receiver<Arc<View>>,
    dispatch: std::sync::Weak<Dispatch>,
}

impl Handoff {
    pub fn new(dispatch: &Arc<Dispatch>) -> Self {
        Self {
            view: dispatch.view.clone(),
            dispatch: Arc::downgrade(dispatch),
        }
    }

    /// Resolves when the view changed; never for `None` or a closed channel.
    pub async fn changed_opt(h: &mut Option<Self>) -> Option<&Self> {
        let Some(me) = h else {
            return std::future::pending().await;
        };
        if me.view.changed().await.is_err() {
            return std::future::pending().await;
        }
        Some(me)
    }

    /// Whether this replica owns a trace under the current view (everything,
    /// when the ring is off or empty: nothing is handed off then).
    pub fn owns(&self) -> impl Fn(&crate::sampling::TraceId) -> bool + use<> {
        let view = self.view.borrow().clone();
        let d = self.dispatch.upgrade();
        let ring = d
            .as_ref()
            .and_then(|d| d.ring(&view))
            .unwrap_or_else(|| view.ring.clone());
        let me: Arc<str> = d.map_or_else(|| Arc::from(""), |d| d.self_addr.clone());
        // Shutting down (dispatch gone) or ring off: keep everything here.
        let active = view.enabled && !ring.is_empty() && !me.is_empty();
        move |id| !active || ring.owner(id).is_none_or(|m| *m.addr() == *me)
    }

    /// Queues `frags` for their owners without waiting (the sampler must not
    /// block on a forwarder); returns what could not be queued, which stays here.
    pub fn send(&self, tenant: &Arc<str>, frags: Vec<ResourceSpans>) -> Vec<ResourceSpans> {
        let Some(dispatch) = self.dispatch.upgrade() else {
            return frags;
        };
        let frags = frags.into_iter().map(WireResourceSpans::from).collect();
        // Decoded spans stay decoded: nothing here can fail to decode.
        let Split {
            mut local, remote, ..
        } = dispatch.split(frags);
        let back = |items: Vec<WireResourceSpans>, local: &mut Vec<ResourceSpans>| {
            local.extend(items.into_iter().map(|rs| rs.into_decoded().0));
        };
        for (addr, items) in remote {
            let n = count_items(&items);
            let batch = Batch::new(tenant.clone(), items);
            let Some(tx) = dispatch.forwarder(&addr) else {
                back(batch.items, &mut local);
                continue;
            };
            match tx.try_send(batch) {
                Ok(()) => {
                    dispatch
                        .metrics
                        .ring
                        .handed_off
                        .get_or_create(&TenantLabel {
                            tenant: tenant.to_string(),
                        })
                        .inc_by(n as u64);
                }
                Err(mpsc::error::TrySendError::Full(b) | mpsc::error::TrySendError::Closed(b)) => {
                    back(b.items, &mut local)
                }
            }
        }
        local
    }
}

/// The router stage between the receivers and the sampler.
pub async fn run_router(mut rx: QueueReceiver<WireResourceSpans>, dispatch: Arc<Dispatch>) {
    while let Some(batch) = rx.recv().await {
        dispatch
            .route(batch.tenant, batch.items, false, batch.charge)
            .await;
    }
    dispatch.close();
}

struct Pending {
    items: Vec<WireResourceSpans>,
    count: usize,
    deadline: Instant,
    /// Given back once the items are sent (or handed on).
    charge: Charge,
}

async fn run_forwarder(
    addr: Arc<str>,
    mut rx: mpsc::Receiver<Batch<WireResourceSpans>>,
    d: Arc<Dispatch>,
) {
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e,
        Err(e) => {
            // Not an address: nothing can be sent there; sample here.
            while let Some(b) = rx.recv().await {
                d.metrics.ring.orphaned(
                    &b.tenant,
                    OrphanReason::Refused,
                    count_items(&b.items),
                    &format!("ring member {addr:?} is not a valid address: {e}"),
                );
                d.to_local_wire(b.tenant, b.items, b.charge).await;
            }
            return;
        }
    };
    let channel = endpoint
        .connect_timeout(Duration::from_secs(1))
        .tcp_nodelay(true)
        .connect_lazy();
    let mut grpc = tonic::client::Grpc::new(channel);
    let mut pending: HashMap<Arc<str>, Pending> = HashMap::new();
    loop {
        let next = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            m = rx.recv() => {
                let Some(b) = m else { break };
                let n = count_items(&b.items);
                let p = pending.entry(b.tenant.clone()).or_insert_with(|| Pending {
                    items: Vec::new(),
                    count: 0,
                    deadline: Instant::now() + d.opts.batch_timeout,
                    charge: Charge::none(),
                });
                p.items.extend(b.items);
                p.count += n;
                p.charge.merge(b.charge);
                // As the exporter does: a batch holding half the byte budget
                // goes now, or it could hold all of it until its timeout.
                if (p.count >= d.opts.batch_max_items || p.charge.holds_half_budget())
                    && let Some(p) = pending.remove(&b.tenant)
                {
                    send(&d, &mut grpc, &addr, b.tenant, p.items, p.count).await;
                    drop(p.charge);
                }
            }
            _ = sleep_until_opt(next) => {
                let now = Instant::now();
                let due: Vec<Arc<str>> = pending
                    .iter()
                    .filter(|(_, p)| p.deadline <= now)
                    .map(|(t, _)| t.clone())
                    .collect();
                for t in due {
                    if let Some(p) = pending.remove(&t) {
                        send(&d, &mut grpc, &addr, t, p.items, p.count).await;
                        drop(p.charge);
                    }
                }
            }
        }
    }
    for (t, p) in pending.drain().collect::<Vec<_>>() {
        send(&d, &mut grpc, &addr, t, p.items, p.count).await;
        drop(p.charge);
    }
}

enum Outcome {
    Sent,
    Busy,
    Unreachable(String),
    Refused(String),
}

async fn attempt(
    d: &Dispatch,
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    tenant: &str,
    body: &Bytes,
) -> Outcome {
    let mut req = tonic::Request::new(body.clone());
    req.set_timeout(d.opts.request_timeout);
    match MetadataValue::try_from(tenant) {
        Ok(v) => {
            req.metadata_mut().insert(super::TENANT_HEADER, v);
        }
        Err(_) => return Outcome::Refused(format!("tenant {tenant:?} is not valid metadata")),
    }
    if let Some(s) = &d.secret {
        req.metadata_mut().insert(super::SECRET_HEADER, s.clone());
    }
    if let Err(e) = grpc.ready().await {
        return Outcome::Unreachable(e.to_string());
    }
    match grpc
        .unary(req, PathAndQuery::from_static(EXPORT_PATH), RawCodec)
        .await
    {
        Ok(_) => Outcome::Sent,
        Err(st) => match st.code() {
            tonic::Code::ResourceExhausted => Outcome::Busy,
            tonic::Code::Unavailable
            | tonic::Code::DeadlineExceeded
            | tonic::Code::Unknown
            | tonic::Code::Cancelled => Outcome::Unreachable(st.to_string()),
            _ => Outcome::Refused(st.to_string()),
        },
    }
}

/// Sends one tenant batch to its owner until it is acknowledged, the owner is
/// given up on, or ownership moved.
async fn send(
    d: &Arc<Dispatch>,
    grpc: &mut tonic::client::Grpc<tonic::transport::Channel>,
    addr: &Arc<str>,
    tenant: Arc<str>,
    items: Vec<WireResourceSpans>,
    count: usize,
) {
    // Encoded once, sent as bytes: a retry costs no re-encode. The body is the
    // `ExportTraceServiceRequest` prost would encode; spans received encoded are
    // copied as they came (ring/wire.rs).
    let body = super::wire::encode_request(&items);
    // Spans received encoded are slices of the client requests they came in:
    // kept through retries, they would hold those whole requests (other
    // owners' spans included) for as long as this owner is busy. The body is
    // all a retry needs; the fallbacks below read the items back from it.
    drop(items);
    let items = || items_of(d, &tenant, &body, count);
    let started = Instant::now();
    let mut backoff = d.opts.retry_initial;
    loop {
        let why = match attempt(d, grpc, &tenant, &body).await {
            Outcome::Sent => {
                d.metrics
                    .ring
                    .forwarded
                    .get_or_create(&TenantLabel {
                        tenant: tenant.to_string(),
                    })
                    .inc_by(count as u64);
                return;
            }
            Outcome::Refused(why) => {
                tracing::error!(peer = %addr, tenant = %tenant, error = %why, "ring peer refused forwarded spans; check --ring-secret-file and that both run with the ring on");
                d.metrics
                    .ring
                    .orphaned(&tenant, OrphanReason::Refused, count, &why);
                d.to_local_wire(tenant.clone(), items(), Charge::none())
                    .await;
                return;
            }
            Outcome::Busy => {
                d.metrics
                    .ring
                    .retries
                    .get_or_create(&RetryLabels {
                        reason: RetryReason::Busy,
                    })
                    .inc();
                None
            }
            Outcome::Unreachable(why) => {
                d.metrics
                    .ring
                    .retries
                    .get_or_create(&RetryLabels {
                        reason: RetryReason::Unreachable,
                    })
                    .inc();
                Some(why)
            }
        };
        if let Some(why) = &why
            && started.elapsed() >= d.opts.unreachable
        {
            d.suspect(addr);
            d.metrics
                .ring
                .orphaned(&tenant, OrphanReason::Unreachable, count, why);
            d.route(tenant.clone(), items(), true, Charge::none()).await;
            return;
        }
        if !d.still_member(addr) {
            // The owner left the ring while we retried: route to the new owners.
            d.route(tenant.clone(), items(), true, Charge::none()).await;
            return;
        }
        let jittered = backoff.mul_f64(0.5 + fastrand::f64() * 0.5);
        tokio::select! {
            _ = tokio::time::sleep(jittered) => {}
            _ = d.stop.cancelled() => {
                d.metrics.ring.orphaned(&tenant, OrphanReason::Shutdown, count, "shutdown deadline passed while the owner was busy or unreachable");
                d.to_local_wire(tenant.clone(), items(), Charge::none()).await;
                return;
            }
        }
        backoff = (backoff * 2).min(d.opts.retry_max);
    }
}

/// The items of a forward body this replica encoded (spans kept encoded).
/// It decodes: its spans were checked on receipt, or encoded by prost. Were it
/// not to, its spans are counted as dropped rather than lost silently.
fn items_of(d: &Dispatch, tenant: &str, body: &Bytes, count: usize) -> Vec<WireResourceSpans> {
    match super::wire::decode_request(body.clone()) {
        Ok(items) => items,
        Err(e) => {
            d.metrics.dropped(
                tenant,
                crate::signal::Signal::Traces,
                DropReason::Encode,
                count,
                &format!("a forward body this replica encoded does not decode: {e}"),
            );
            Vec::new()
        }
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Sends an already encoded `ExportTraceServiceRequest`; decodes the response.
#[derive(Debug, Clone, Copy, Default)]
pub struct RawCodec;

pub struct RawEncoder;
pub struct ResponseDecoder;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = ExportTraceServiceResponse;
    type Encoder = RawEncoder;
    type Decoder = ResponseDecoder;
    fn encoder(&mut self) -> RawEncoder {
        RawEncoder
    }
    fn decoder(&mut self) -> ResponseDecoder {
        ResponseDecoder
    }
}

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for ResponseDecoder {
    type Item = ExportTraceServiceResponse;
    type Error = tonic::Status;
    fn decode(
        &mut self,
        src: &mut DecodeBuf<'_>,
    ) -> Result<Option<ExportTraceServiceResponse>, tonic::Status> {
        ExportTraceServiceResponse::decode(src)
            .map(Some)
            .map_err(|e| tonic::Status::internal(e.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span};

    /// [`split`] of decoded spans, the forwarded parts decoded to compare.
    fn split(ring: &Ring, me: &str, items: Vec<ResourceSpans>) -> DecodedSplit {
        let s = super::split(ring, me, items.into_iter().map(Into::into).collect());
        assert_eq!(s.undecodable, 0);
        DecodedSplit {
            local: s.local,
            remote: s
                .remote
                .into_iter()
                .map(|(a, v)| (a, v.into_iter().map(|r| r.into_decoded().0).collect()))
                .collect(),
        }
    }

    struct DecodedSplit {
        local: Vec<ResourceSpans>,
        remote: Vec<(Arc<str>, Vec<ResourceSpans>)>,
    }

    fn spans(trace_ids: &[u8]) -> ResourceSpans {
        ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: trace_ids
                    .iter()
                    .map(|t| Span {
                        trace_id: vec![*t; 16],
                        span_id: vec![1; 8],
                        ..Default::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    #[test]
    fn split_keeps_owned_and_groups_the_rest_by_owner() {
        let ring = Ring::new(["a:1", "b:1", "c:1"]);
        let ids: Vec<u8> = (0..60).collect();
        let s = split(&ring, "a:1", vec![spans(&ids)]);
        let local: usize = count_items(&s.local);
        let remote: usize = s.remote.iter().map(|(_, v)| count_items(v)).sum();
        assert_eq!(local + remote, 60);
        assert!(s.remote.iter().all(|(a, _)| &**a != "a:1"));
        for f in &s.local {
            let id: [u8; 16] = f.scope_spans[0].spans[0].trace_id[..].try_into().unwrap();
            assert_eq!(ring.owner(&id).unwrap().addr(), "a:1");
        }
        // Not a member (not Ready): owns nothing, forwards everything.
        let s = split(&ring, "d:1", vec![spans(&ids)]);
        assert!(s.local.is_empty());
        // Empty ring: everything local.
        let s = split(&Ring::default(), "a:1", vec![spans(&ids)]);
        assert_eq!(count_items(&s.local), 60);
    }

    #[test]
    fn split_keeps_resource_and_scope_and_sends_one_part_per_owner() {
        use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
        use opentelemetry_proto::tonic::resource::v1::Resource;
        let ring = Ring::new(["a:1", "b:1", "c:1"]);
        let mut rs = spans(&(0..40).collect::<Vec<u8>>());
        let mut second = spans(&(40..90).collect::<Vec<u8>>()).scope_spans.remove(0);
        second.scope = Some(InstrumentationScope {
            name: "second".into(),
            ..Default::default()
        });
        rs.scope_spans.push(second);
        rs.resource = Some(Resource {
            attributes: vec![],
            dropped_attributes_count: 7,
            ..Default::default()
        });
        rs.schema_url = "https://opentelemetry.io/schemas/1.26.0".into();
        let s = split(&ring, "a:1", vec![rs.clone()]);
        let mut parts: Vec<(&str, &ResourceSpans)> = s.local.iter().map(|r| ("a:1", r)).collect();
        for (addr, v) in &s.remote {
            parts.extend(v.iter().map(|r| (&**addr, r)));
        }
        // One part per owner for the one input resource, each a copy of it.
        assert_eq!(parts.len(), 3);
        let mut seen = 0;
        for (addr, part) in parts {
            assert_eq!(part.resource, rs.resource);
            assert_eq!(part.schema_url, rs.schema_url);
            for ss in &part.scope_spans {
                for span in &ss.spans {
                    let id: [u8; 16] = span.trace_id[..].try_into().unwrap();
                    assert_eq!(ring.owner(&id).unwrap().addr(), addr);
                    // Each span keeps the scope it came in with.
                    let second = span.trace_id[0] >= 40;
                    assert_eq!(
                        ss.scope.as_ref().map(|s| s.name.as_str()),
                        second.then_some("second")
                    );
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 90);
        // A resource whose spans all belong to one owner moves whole.
        let one = (0..=255u8)
            .find(|t| ring.owner(&[*t; 16]).unwrap().addr() == "b:1")
            .unwrap();
        let s = split(&ring, "a:1", vec![spans(&[one, one, one])]);
        assert!(s.local.is_empty());
        assert_eq!(s.remote.len(), 1);
        assert_eq!(count_items(&s.remote[0].1), 3);
    }
}
