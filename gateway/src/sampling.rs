//! Per-tenant tail sampling.
//!
//! Spans are held per trace until the trace is due, then every policy of the
//! tenant (or of the root service's override) is asked; the trace is kept when
//! any policy keeps it. A tenant with no policies at all is not sampled (every
//! span passes straight through): an empty list means "sampling not configured",
//! never "drop everything".
//!
//! When a trace is due:
//! - `decision_wait_ms` after its last span arrived; or
//! - early, to keep only: once its root span (no parent) has arrived, a fifth of
//!   `decision_wait_ms` passed since the last span and a policy already keeps it.
//!   An early verdict of "drop" is not final: a span of another service (another
//!   SDK's export batch, another node, a hop through the ring) may still arrive
//!   within `decision_wait_ms` and match a policy, so a drop always waits the
//!   full `decision_wait_ms`. Spans of a kept trace that arrive later follow it
//!   (remembered decisions, below); or
//! - ten times `decision_wait_ms` after its first span, so a trace that never
//!   stops growing is still decided; or
//! - when a new trace would exceed `max_traces`: the oldest is decided at once
//!   and the eviction counted.
//!
//! Probabilistic decisions use the trace id's rightmost 56 bits, which W3C Trace
//! Context level 2 and OpenTelemetry's consistent-probability sampling treat as
//! random, so every gateway replica decides the same for the same trace.
//!
//! Memory per tenant is bounded: at most `max_traces` open traces and at most
//! `max_traces` remembered decisions (for spans that arrive after the decision).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use mop_gateway_config::{Policy, PolicyRule, Sampling};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, status};
use tokio::sync::watch;

use crate::pipeline::{Batch, Charge, QueueReceiver, QueueSender};
use crate::routing::RouteTable;
use crate::signal::{Signal, any_value_to_string, count_items, string_attr};
use crate::telemetry::{DropReason, Metrics, TenantLabel, TenantPolicy};

pub type TraceId = [u8; 16];

/// Randomness of a trace id: its rightmost 56 bits.
pub fn trace_randomness(id: &TraceId) -> u64 {
    id[9..16]
        .iter()
        .fold(0u64, |acc, b| (acc << 8) | u64::from(*b))
}

/// Whether a probabilistic policy of `percentage` keeps this trace. Pure function
/// of the trace id, so replicas agree.
pub fn probabilistic_keep(id: &TraceId, percentage: f64) -> bool {
    let threshold = (percentage.clamp(0.0, 100.0) / 100.0 * (1u64 << 56) as f64) as u64;
    trace_randomness(id) < threshold
}

pub(crate) fn to_trace_id(b: &[u8]) -> TraceId {
    let mut id = [0u8; 16];
    let n = b.len().min(16);
    id[16 - n..].copy_from_slice(&b[b.len() - n..]);
    id
}

#[derive(Debug)]
struct OpenTrace {
    fragments: Vec<ResourceSpans>,
    spans: usize,
    first_seen: u64,
    last_seen: u64,
    root_seen: bool,
    /// The early (keep-only) check ran since the last span arrived.
    early_checked: bool,
}

#[derive(Debug)]
struct TokenBucket {
    tokens: f64,
    last_ms: u64,
}

#[derive(Debug, Default)]
struct TenantBuffer {
    open: HashMap<TraceId, OpenTrace>,
    /// Trace ids by first arrival; may hold ids already decided (skipped lazily).
    order: VecDeque<TraceId>,
    decided: HashMap<TraceId, bool>,
    decided_order: VecDeque<TraceId>,
    bucket: Option<TokenBucket>,
}

/// What became of a decided trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Kept by this policy.
    Kept(String),
    Dropped,
    /// A policy kept it but the tenant's `max_spans_per_second` was used up.
    RateLimited,
}

/// All tenants' sampling state. Pure: time comes in as milliseconds.
#[derive(Debug, Default)]
pub struct Sampler {
    tenants: HashMap<Arc<str>, TenantBuffer>,
}

/// Output of one call: spans to export and what was decided.
#[derive(Debug, Default)]
pub struct Output {
    pub kept: Vec<(Arc<str>, Vec<ResourceSpans>)>,
    pub decisions: Vec<(Arc<str>, Verdict, usize)>,
    pub evictions: Vec<Arc<str>>,
    /// Spans that arrived after their trace was dropped.
    pub late_dropped: Vec<(Arc<str>, usize)>,
}

/// Whether a tenant's config samples at all.
pub fn is_sampled(cfg: &Sampling) -> bool {
    !cfg.policies.is_empty() || !cfg.service_overrides.is_empty()
}

impl Sampler {
    pub fn open_traces(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.open.len())
    }

    pub fn remembered_decisions(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, |t| t.decided.len())
    }

    /// Takes a tenant's spans in.
    pub fn add(
        &mut self,
        tenant: &Arc<str>,
        cfg: &Sampling,
        items: Vec<ResourceSpans>,
        now: u64,
        out: &mut Output,
    ) {
        if !is_sampled(cfg) {
            out.kept.push((tenant.clone(), items));
            return;
        }
        let max = cfg.max_traces.max(1) as usize;
        let buf = self.tenants.entry(tenant.clone()).or_default();
        for (id, frag) in split_by_trace(items) {
            if let Some(kept) = buf.decided.get(&id) {
                if *kept {
                    out.kept.push((tenant.clone(), vec![frag]));
                } else {
                    out.late_dropped
                        .push((tenant.clone(), frag.item_count_spans()));
                }
                continue;
            }
            let root = frag
                .scope_spans
                .iter()
                .flat_map(|s| &s.spans)
                .any(|s| s.parent_span_id.is_empty());
            let spans = frag.item_count_spans();
            if let Some(t) = buf.open.get_mut(&id) {
                t.fragments.push(frag);
                t.spans += spans;
                t.last_seen = now;
                t.root_seen |= root;
                t.early_checked = false;
                continue;
            }
            while buf.open.len() >= max {
                let Some(oldest) = buf.order.pop_front() else {
                    break;
                };
                if let Some(t) = buf.open.remove(&oldest) {
                    out.evictions.push(tenant.clone());
                    decide(tenant, cfg, buf, (oldest, None), t, now, out);
                }
            }
            buf.open.insert(
                id,
                OpenTrace {
                    fragments: vec![frag],
                    spans,
                    first_seen: now,
                    last_seen: now,
                    root_seen: root,
                    early_checked: false,
                },
            );
            buf.order.push_back(id);
            if buf.order.len() > 2 * max {
                let open = &buf.open;
                buf.order.retain(|id| open.contains_key(id));
            }
        }
    }

    /// Decides every trace that is due.
    pub fn tick<'a>(
        &mut self,
        now: u64,
        cfg_of: impl Fn(&str) -> Option<&'a Sampling>,
        out: &mut Output,
    ) {
        let fallback = Sampling {
            decision_wait_ms: 0,
            max_traces: 1,
            max_spans_per_second: None,
            policies: vec![],
            service_overrides: Default::default(),
        };
        for (tenant, buf) in &mut self.tenants {
            // A tenant removed by a reload: decide with its last policies gone, i.e.
            // keep everything rather than drop data nobody decided about.
            let cfg = cfg_of(tenant).unwrap_or(&fallback);
            let wait = cfg.decision_wait_ms;
            // An early keep carries its verdict to `decide`, which then does not
            // run the policies a second time.
            let mut due: Vec<(TraceId, Option<Verdict>)> = Vec::new();
            for (id, t) in &mut buf.open {
                if now >= t.last_seen + wait || now >= t.first_seen + wait.saturating_mul(10) {
                    due.push((*id, None));
                } else if t.root_seen && !t.early_checked && now >= t.last_seen + wait / 5 {
                    t.early_checked = true;
                    let verdict = evaluate(cfg, id, &t.fragments);
                    if matches!(verdict, Verdict::Kept(_)) {
                        due.push((*id, Some(verdict)));
                    }
                }
            }
            for (id, verdict) in due {
                if let Some(t) = buf.open.remove(&id) {
                    decide(tenant, cfg, buf, (id, verdict), t, now, out);
                }
            }
            if buf.order.len() > 2 * buf.open.len() + 64 {
                let open = &buf.open;
                buf.order.retain(|id| open.contains_key(id));
            }
        }
    }

    /// Removes the open traces `owns` says belong elsewhere (the ring's owner
    /// changed), for handing them to their new owner undecided.
    pub fn take_not_owned(
        &mut self,
        owns: impl Fn(&TraceId) -> bool,
    ) -> Vec<(Arc<str>, Vec<ResourceSpans>)> {
        let mut out = Vec::new();
        for (tenant, buf) in &mut self.tenants {
            let moving: Vec<TraceId> = buf.open.keys().filter(|id| !owns(id)).copied().collect();
            let mut frags = Vec::new();
            for id in moving {
                if let Some(t) = buf.open.remove(&id) {
                    frags.extend(t.fragments);
                }
            }
            if !frags.is_empty() {
                out.push((tenant.clone(), frags));
            }
        }
        out
    }

    /// Decides everything now (shutdown).
    pub fn flush<'a>(&mut self, cfg_of: impl Fn(&str) -> Option<&'a Sampling>, out: &mut Output) {
        self.tick(u64::MAX / 4, cfg_of, out);
    }
}

trait SpanCount {
    fn item_count_spans(&self) -> usize;
}

impl SpanCount for ResourceSpans {
    fn item_count_spans(&self) -> usize {
        self.scope_spans.iter().map(|s| s.spans.len()).sum()
    }
}

fn decide(
    tenant: &Arc<str>,
    cfg: &Sampling,
    buf: &mut TenantBuffer,
    (id, verdict): (TraceId, Option<Verdict>),
    t: OpenTrace,
    now: u64,
    out: &mut Output,
) {
    let mut verdict = verdict.unwrap_or_else(|| evaluate(cfg, &id, &t.fragments));
    if matches!(verdict, Verdict::Kept(_))
        && let Some(limit) = cfg.max_spans_per_second
    {
        let b = buf.bucket.get_or_insert(TokenBucket {
            tokens: limit as f64,
            last_ms: now,
        });
        let elapsed = now.saturating_sub(b.last_ms) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * limit as f64).min(limit as f64);
        b.last_ms = now;
        if b.tokens >= t.spans as f64 {
            b.tokens -= t.spans as f64;
        } else {
            verdict = Verdict::RateLimited;
        }
    }
    let kept = matches!(verdict, Verdict::Kept(_));
    out.decisions.push((tenant.clone(), verdict, t.spans));
    if kept {
        out.kept.push((tenant.clone(), t.fragments));
    }
    let max = cfg.max_traces.max(1) as usize;
    buf.decided.insert(id, kept);
    buf.decided_order.push_back(id);
    while buf.decided_order.len() > max {
        if let Some(old) = buf.decided_order.pop_front() {
            buf.decided.remove(&old);
        }
    }
}

/// Runs the policies over a complete (or given-up-on) trace.
pub fn evaluate(cfg: &Sampling, id: &TraceId, fragments: &[ResourceSpans]) -> Verdict {
    // Traces held when a reload removed the tenant's policies (or the tenant):
    // not sampled any more means kept, as new spans of such a tenant are.
    if !is_sampled(cfg) {
        return Verdict::Kept("unsampled".into());
    }
    let spans = || {
        fragments.iter().flat_map(|rs| {
            rs.scope_spans
                .iter()
                .flat_map(move |ss| ss.spans.iter().map(move |s| (rs, s)))
        })
    };
    let service_of = |rs: &ResourceSpans| {
        rs.resource
            .as_ref()
            .and_then(|r| string_attr(&r.attributes, "service.name"))
            .map(str::to_string)
    };
    let root_service = spans()
        .find(|(_, s)| s.parent_span_id.is_empty())
        .and_then(|(rs, _)| service_of(rs))
        .or_else(|| fragments.first().and_then(service_of));
    let policies: &[Policy] = root_service
        .as_deref()
        .and_then(|s| cfg.service_overrides.get(s))
        .map_or(&cfg.policies, |v| v);
    for p in policies {
        let keep = match &p.rule {
            PolicyRule::Always => true,
            PolicyRule::Errors => spans().any(|(_, s)| {
                s.status
                    .as_ref()
                    .is_some_and(|st| st.code == status::StatusCode::Error as i32)
            }),
            PolicyRule::Latency { threshold_ms } => {
                let start = spans()
                    .map(|(_, s)| s.start_time_unix_nano)
                    .min()
                    .unwrap_or(0);
                let end = spans()
                    .map(|(_, s)| s.end_time_unix_nano)
                    .max()
                    .unwrap_or(0);
                end.saturating_sub(start) >= threshold_ms.saturating_mul(1_000_000)
            }
            PolicyRule::Probabilistic { percentage } => probabilistic_keep(id, *percentage),
            PolicyRule::Attribute { key, values } => {
                let matches = |attrs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
                    attrs.iter().any(|kv| {
                        kv.key == *key
                            && (values.is_empty()
                                || kv
                                    .value
                                    .as_ref()
                                    .is_some_and(|v| values.contains(&any_value_to_string(v))))
                    })
                };
                spans().any(|(rs, s)| {
                    matches(&s.attributes)
                        || rs.resource.as_ref().is_some_and(|r| matches(&r.attributes))
                })
            }
        };
        if keep {
            return Verdict::Kept(p.name.clone());
        }
    }
    Verdict::Dropped
}

/// Regroups spans by trace id, each group keeping its resource and scope.
pub fn split_by_trace(items: Vec<ResourceSpans>) -> Vec<(TraceId, ResourceSpans)> {
    let mut out: Vec<(TraceId, ResourceSpans)> = Vec::new();
    for rs in items {
        let mut index: HashMap<TraceId, (usize, usize)> = HashMap::new();
        for (scope_idx, ss) in rs.scope_spans.into_iter().enumerate() {
            for span in ss.spans {
                let id = to_trace_id(&span.trace_id);
                let (pos, last_scope) = index.entry(id).or_insert_with(|| {
                    out.push((
                        id,
                        ResourceSpans {
                            resource: rs.resource.clone(),
                            scope_spans: Vec::new(),
                            schema_url: rs.schema_url.clone(),
                        },
                    ));
                    (out.len() - 1, usize::MAX)
                });
                let frag = &mut out[*pos].1;
                if *last_scope != scope_idx {
                    frag.scope_spans.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: Vec::new(),
                        schema_url: ss.schema_url.clone(),
                    });
                    *last_scope = scope_idx;
                }
                if let Some(last) = frag.scope_spans.last_mut() {
                    last.spans.push(span);
                }
            }
        }
    }
    out
}

/// The sampler stage between the trace receivers and the Tempo exporter.
pub async fn run(
    mut rx: QueueReceiver<ResourceSpans>,
    tx: QueueSender<ResourceSpans>,
    routes: watch::Receiver<Arc<RouteTable>>,
    tick: Duration,
    metrics: Metrics,
    mut handoff: Option<crate::ring::forward::Handoff>,
) {
    let mut sampler = Sampler::default();
    let start = tokio::time::Instant::now();
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let now_ms = || start.elapsed().as_millis() as u64;
    loop {
        let mut out = Output::default();
        // The byte-budget charge of a batch taken in: it goes on with the spans
        // that pass straight through; spans the sampler keeps open are bounded
        // by its trace limit instead.
        let mut charge = Charge::none();
        tokio::select! {
            maybe = rx.recv() => {
                let Some(batch) = maybe else { break };
                charge = batch.charge;
                let table = routes.borrow().clone();
                match table.sampling(&batch.tenant) {
                    Some(cfg) => sampler.add(&batch.tenant, cfg, batch.items, now_ms(), &mut out),
                    // Tenant gone after a reload while its data was queued: export
                    // it unsampled rather than lose it.
                    None => out.kept.push((batch.tenant, batch.items)),
                }
            }
            _ = interval.tick() => {
                let table = routes.borrow().clone();
                sampler.tick(now_ms(), |t| table.sampling(t), &mut out);
                for (t, b) in &sampler.tenants {
                    metrics.sampler_traces.get_or_create(&TenantLabel { tenant: t.to_string() }).set(b.open.len() as i64);
                }
            }
            // Ring membership changed: open traces this replica no longer owns go
            // to their new owner undecided, to be decided with the rest of them.
            Some(h) = crate::ring::forward::Handoff::changed_opt(&mut handoff) => {
                let table = routes.borrow().clone();
                let owns = h.owns();
                for (tenant, frags) in sampler.take_not_owned(owns) {
                    let kept = h.send(&tenant, frags);
                    if !kept.is_empty() {
                        match table.sampling(&tenant) {
                            Some(cfg) => sampler.add(&tenant, cfg, kept, now_ms(), &mut out),
                            None => out.kept.push((tenant, kept)),
                        }
                    }
                }
            }
        }
        if emit(out, &tx, &metrics, charge).await.is_err() {
            // The exporter is gone. Batches still queued here are lost: refuse
            // new ones (clients are told to retry elsewhere) and count the rest;
            // what the sampler holds is flushed below, fails the same way and is
            // counted too.
            rx.close();
            while let Some(batch) = rx.recv().await {
                let n = count_items(&batch.items);
                metrics.dropped(
                    &batch.tenant,
                    Signal::Traces,
                    DropReason::Shutdown,
                    n,
                    "queued for the sampler after the exporter stopped",
                );
            }
            break;
        }
    }
    let table = routes.borrow().clone();
    let mut out = Output::default();
    sampler.flush(|t| table.sampling(t), &mut out);
    if emit(out, &tx, &metrics, Charge::none()).await.is_err() {
        tracing::warn!(
            "traces kept by the sampler were lost at shutdown: the exporter had stopped (counted in mop_gateway_dropped_items_total{{reason=\"Shutdown\"}})"
        );
    }
}

/// `charge` goes with the first kept batch (dropped if nothing is kept).
async fn emit(
    out: Output,
    tx: &QueueSender<ResourceSpans>,
    metrics: &Metrics,
    charge: Charge,
) -> Result<(), crate::pipeline::EnqueueError> {
    let mut charge = Some(charge);
    for (tenant, verdict, spans) in out.decisions {
        let decision = match &verdict {
            Verdict::Kept(p) => p.clone(),
            Verdict::Dropped => "dropped".into(),
            Verdict::RateLimited => "rate_limited".into(),
        };
        metrics
            .sampling_decisions
            .get_or_create(&TenantPolicy {
                tenant: tenant.to_string(),
                decision,
            })
            .inc();
        if !matches!(verdict, Verdict::Kept(_)) {
            metrics
                .sampled_out_spans
                .get_or_create(&TenantLabel {
                    tenant: tenant.to_string(),
                })
                .inc_by(spans as u64);
        }
    }
    for (tenant, n) in out.late_dropped {
        metrics
            .sampled_out_spans
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n as u64);
    }
    for tenant in out.evictions {
        metrics
            .sampler_evictions
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc();
    }
    let mut kept = out.kept.into_iter();
    while let Some((tenant, items)) = kept.next() {
        let n = count_items(&items);
        if n == 0 {
            continue;
        }
        if let Err(e) = tx
            .enqueue(Batch {
                tenant: Arc::clone(&tenant),
                items,
                charge: charge.take().unwrap_or_default(),
            })
            .await
        {
            // The exporter queue is closed (shutdown): this batch and every one
            // after it are lost; count them, never drop them silently.
            let why = "kept by the sampler after the exporter stopped";
            metrics.dropped(&tenant, Signal::Traces, DropReason::Shutdown, n, why);
            for (tenant, items) in kept {
                let n = count_items(&items);
                if n > 0 {
                    metrics.dropped(&tenant, Signal::Traces, DropReason::Shutdown, n, why);
                }
            }
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline;
    use crate::telemetry::DropLabels;
    use mop_gateway_config::{FORMAT_VERSION, GatewayConfig};
    use opentelemetry_proto::tonic::trace::v1::Span;

    fn spans(n: usize) -> ResourceSpans {
        ResourceSpans {
            resource: None,
            scope_spans: vec![ScopeSpans {
                scope: None,
                spans: (0..n)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![u8::try_from(i).unwrap(); 8],
                        ..Span::default()
                    })
                    .collect(),
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }
    }

    fn lost(metrics: &Metrics, tenant: &str) -> u64 {
        metrics
            .dropped
            .get_or_create(&DropLabels {
                tenant: tenant.into(),
                signal: Signal::Traces,
                reason: DropReason::Shutdown,
            })
            .get()
    }

    /// Regression: spans the sampler kept were dropped with `let _ =` when the
    /// exporter queue had already closed at shutdown.
    #[tokio::test]
    async fn kept_spans_lost_at_shutdown_are_counted() {
        let metrics = Metrics::default();
        let (in_tx, in_rx) = pipeline::queue(8, Signal::Traces, metrics.clone());
        let (out_tx, out_rx) = pipeline::queue(8, Signal::Traces, metrics.clone());
        // The exporter has stopped.
        drop(out_rx);
        // No tenant in the table: the batches pass the sampler unsampled (kept).
        let table = RouteTable::build(&GatewayConfig {
            version: FORMAT_VERSION,
            revision: None,
            default_tenant: None,
            tenants: vec![],
            ring: None,
            identity: Default::default(),
        })
        .unwrap();
        let (_routes_tx, routes) = watch::channel(Arc::new(table));
        for (tenant, n) in [("team-a", 3), ("team-b", 2), ("team-a", 4)] {
            in_tx
                .enqueue(Batch::new(Arc::from(tenant), vec![spans(n)]))
                .await
                .unwrap();
        }
        drop(in_tx);
        run(
            in_rx,
            out_tx,
            routes,
            Duration::from_secs(3600),
            metrics.clone(),
            None,
        )
        .await;
        // The first batch fails; it and the two still queued are counted:
        // nothing accepted vanishes.
        assert_eq!(lost(&metrics, "team-a"), 7);
        assert_eq!(lost(&metrics, "team-b"), 2);
    }

    #[tokio::test]
    async fn emit_counts_every_batch_after_the_failed_one() {
        let metrics = Metrics::default();
        let (tx, rx) = pipeline::queue(8, Signal::Traces, metrics.clone());
        drop(rx);
        let out = Output {
            kept: vec![
                (Arc::from("team-a"), vec![spans(3)]),
                (Arc::from("team-b"), vec![spans(2)]),
                (Arc::from("team-a"), vec![spans(4)]),
            ],
            ..Output::default()
        };
        assert!(emit(out, &tx, &metrics, Charge::none()).await.is_err());
        assert_eq!(lost(&metrics, "team-a"), 7);
        assert_eq!(lost(&metrics, "team-b"), 2);
    }
}
