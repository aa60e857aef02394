//! The gateway's own metrics, served on `/metrics` in Prometheus text format.
//! Every drop has a reason label; nothing leaves the gateway uncounted.

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::signal::Signal;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantSignal {
    pub tenant: String,
    pub signal: Signal,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum DropReason {
    /// The backend answered with a 4xx other than 429: retrying cannot help.
    Rejected4xx,
    /// Retries ran out of time.
    RetriesExhausted,
    /// The data cannot be expressed in the backend's format (delta sums, ...).
    Unsupported,
    /// The request could not be encoded.
    Encode,
    /// Shutdown deadline passed before the data was flushed.
    Shutdown,
    /// The disk queue could not be written.
    DiskIo,
    /// A disk-queue record failed its checksum (counted in records, not items).
    Corrupt,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DropLabels {
    pub tenant: String,
    pub signal: Signal,
    pub reason: DropReason,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RejectReason {
    /// No tenant owns the namespace and there is no default tenant.
    UnknownNamespace,
    /// The exporter queue was full; the client was told to retry.
    QueueFull,
    Unauthenticated,
    Forbidden,
    TooLarge,
    Malformed,
    /// An anonymous request from an address that is no known pod or static source.
    UnknownSource,
    /// An anonymous client's resource named a namespace other than its own
    /// (with `foreign_namespace: reject`).
    ForeignNamespace,
    /// A mop-agent named a pod or namespace with no pod on its own node.
    NotOnAgentNode,
    /// A trusted static source named a namespace it may not.
    NamespaceNotAllowed,
    /// A ServiceAccount token that is not the agents' (or not bound to a pod).
    NotAgent,
    /// A ServiceAccount token issued for another audience.
    WrongAudience,
    /// The sender could not be verified yet (pod index not loaded, Kubernetes
    /// API unreachable); the client was told to retry.
    IdentityUnavailable,
}

impl RejectReason {
    /// What the client is told, per reason, for items refused in a request that
    /// was otherwise taken.
    pub fn explain(self) -> &'static str {
        match self {
            RejectReason::UnknownNamespace => {
                "with a namespace no tenant owns and no default tenant configured"
            }
            RejectReason::ForeignNamespace => "naming a namespace other than the sender's pod's",
            RejectReason::NotOnAgentNode => "for pods not on the agent's node",
            RejectReason::NamespaceNotAllowed => "naming a namespace this source may not",
            RejectReason::UnknownSource => "from an unknown source address",
            _ => "refused",
        }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub signal: Signal,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SignalLabel {
    pub signal: Signal,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantPolicy {
    pub tenant: String,
    pub decision: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// All counters and gauges; cheap to clone (shared handles).
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    pub received: Family<TenantSignal, Counter>,
    pub exported: Family<TenantSignal, Counter>,
    pub retagged: Family<TenantSignal, Counter>,
    pub dropped: Family<DropLabels, Counter>,
    pub rejected: Family<RejectLabels, Counter>,
    pub retries: Family<TenantSignal, Counter>,
    pub queue_depth: Family<SignalLabel, Gauge>,
    pub queue_items: Family<TenantSignal, Gauge>,
    pub queue_bytes: Family<SignalLabel, Gauge>,
    pub queue_budget_bytes: Family<SignalLabel, Gauge>,
    pub disk_queue_bytes: Family<SignalLabel, Gauge>,
    pub sampling_decisions: Family<TenantPolicy, Counter>,
    pub sampled_out_spans: Family<TenantLabel, Counter>,
    pub sampler_traces: Family<TenantLabel, Gauge>,
    pub sampler_evictions: Family<TenantLabel, Counter>,
    pub config_reloads: Family<ResultLabel, Counter>,
    pub ring: crate::ring::RingMetrics,
}

impl Metrics {
    pub fn registry(&self) -> Registry {
        let mut r = Registry::with_prefix("mop_gateway");
        r.register(
            "received_items",
            "Spans, data points and log records accepted from clients",
            self.received.clone(),
        );
        r.register(
            "exported_items",
            "Items the backend acknowledged",
            self.exported.clone(),
        );
        r.register(
            "retagged_items",
            "Items whose claimed namespace named another tenant than the verified sender's (token client, pod address or static source); routed to the sender's tenant",
            self.retagged.clone(),
        );
        r.register(
            "dropped_items",
            "Items accepted but never delivered, by reason",
            self.dropped.clone(),
        );
        r.register(
            "rejected_items",
            "Items refused to the client with an error, by reason",
            self.rejected.clone(),
        );
        r.register(
            "export_retries",
            "Export attempts retried after a retryable failure",
            self.retries.clone(),
        );
        r.register(
            "queue_depth",
            "Requests waiting in each exporter queue",
            self.queue_depth.clone(),
        );
        r.register(
            "queue_items",
            "Items waiting in the in-memory queues, per tenant",
            self.queue_items.clone(),
        );
        r.register(
            "queue_bytes",
            "Encoded bytes being sent (in flight, including retries) per exporter",
            self.queue_bytes.clone(),
        );
        r.register(
            "queue_budget_bytes",
            "Encoded bytes of accepted requests whose items are still decoded in memory (queued, in a stage or a partial batch), per signal; bounded by --queue-max-bytes",
            self.queue_budget_bytes.clone(),
        );
        r.register(
            "disk_queue_bytes",
            "Bytes waiting in each exporter's disk queue",
            self.disk_queue_bytes.clone(),
        );
        r.register(
            "sampling_decisions",
            "Tail-sampling decisions per tenant (decision is the keeping policy, or dropped / rate_limited)",
            self.sampling_decisions.clone(),
        );
        r.register(
            "sampled_out_spans",
            "Spans dropped by tail sampling (by design, not loss)",
            self.sampled_out_spans.clone(),
        );
        r.register(
            "sampler_traces",
            "Traces held by the tail sampler",
            self.sampler_traces.clone(),
        );
        r.register(
            "sampler_evictions",
            "Traces decided early because max_traces was reached",
            self.sampler_evictions.clone(),
        );
        r.register(
            "config_reloads",
            "Config reload attempts by result",
            self.config_reloads.clone(),
        );
        self.ring.register(&mut r);
        r
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry());
        out
    }

    pub fn received(&self, tenant: &str, signal: Signal, n: usize) {
        self.received
            .get_or_create(&TenantSignal {
                tenant: tenant.into(),
                signal,
            })
            .inc_by(n as u64);
    }

    pub fn exported(&self, tenant: &str, signal: Signal, n: usize) {
        self.exported
            .get_or_create(&TenantSignal {
                tenant: tenant.into(),
                signal,
            })
            .inc_by(n as u64);
    }

    pub fn retried(&self, tenant: &str, signal: Signal) {
        self.retries
            .get_or_create(&TenantSignal {
                tenant: tenant.into(),
                signal,
            })
            .inc();
    }

    /// Counts a drop and logs it in one place, so logs and metrics never disagree.
    pub fn dropped(&self, tenant: &str, signal: Signal, reason: DropReason, n: usize, why: &str) {
        if n == 0 {
            return;
        }
        tracing::warn!(tenant, signal = %signal, reason = ?reason, items = n, error = why, "items dropped");
        self.dropped
            .get_or_create(&DropLabels {
                tenant: tenant.into(),
                signal,
                reason,
            })
            .inc_by(n as u64);
    }

    pub fn rejected(&self, signal: Signal, reason: RejectReason, n: usize) {
        self.rejected
            .get_or_create(&RejectLabels { signal, reason })
            .inc_by(n as u64);
    }
}
