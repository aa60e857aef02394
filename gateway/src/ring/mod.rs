//! Trace-complete tail sampling across replicas, in one tier.
//!
//! Replicas form a consistent-hash ring by trace id ([`hash`]): each trace has one
//! owner among the Ready replicas, and every replica forwards the spans it
//! receives for traces it does not own to their owner ([`forward`]) before tail
//! sampling, over OTLP/gRPC on a separate ring port ([`peer`]). The owner samples
//! the union of its own and its peers' fragments, so a kept trace is complete.
//!
//! ```text
//!  clients ─► receivers ─► ring router ─┬─ owned here ─────────────► sampler ─► Tempo
//!                                       └─ owned by P ─► forwarder(P) ──┐
//!  peers ──► ring port (tenant from metadata, never re-forwarded) ─► sampler
//! ```
//!
//! Membership ([`membership`]) comes from a static peer list or from the
//! EndpointSlices of a headless Service; only Ready endpoints are members, so a
//! replica that is not Ready owns nothing and forwards everything.
//!
//! Invariants:
//! - Spans received from a peer go straight to the sampler: never re-forwarded
//!   (loop guard), whatever this replica thinks of their ownership.
//! - Metrics and logs never enter the ring.
//! - Nothing leaves the ring uncounted: a forward that cannot reach its owner is
//!   sampled by another replica and counted `orphaned`.

pub mod forward;
pub mod hash;
pub mod membership;
pub mod peer;
pub mod wire;
pub mod wiring;

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use hash::{Member, Ring};

/// gRPC metadata carrying the tenant a forwarded batch was routed to on receipt.
/// Only read on the ring port, and only from a trusted peer.
pub const TENANT_HEADER: &str = "x-mop-ring-tenant";
/// gRPC metadata carrying the shared ring secret, when one is configured.
pub const SECRET_HEADER: &str = "x-mop-ring-secret";

/// Runtime settings of the ring (the on/off switch and the Service name come from
/// `gateway.json`, rendered by the syncer).
#[derive(Debug, Clone, clap::Args)]
pub struct RingSettings {
    /// Listen address for spans forwarded by peers (the ring port), e.g.
    /// `0.0.0.0:4319`. Without it this replica takes no part in a ring, whatever
    /// `gateway.json` says (and logs so): it samples what it receives.
    #[arg(long, env = "MOP_GATEWAY_RING_LISTEN")]
    pub ring_listen: Option<SocketAddr>,
    /// This replica's address as its peers name it (`host:port` of the ring
    /// port). In Kubernetes `$(POD_IP):4319`, which is how the EndpointSlices name
    /// it. Default: the bound ring listen address.
    #[arg(long, env = "MOP_GATEWAY_RING_ADVERTISE")]
    pub ring_advertise: Option<String>,
    /// Static ring members (`host:port` of their ring ports, this replica
    /// included), instead of the Kubernetes EndpointSlices. Every replica must be
    /// given the same list.
    #[arg(long, env = "MOP_GATEWAY_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// File with one static member per line (`#` comments), re-read every
    /// `--reload-interval-ms`: membership changes without restarts. Combined
    /// with `--peers`.
    #[arg(long, env = "MOP_GATEWAY_PEERS_FILE")]
    pub peers_file: Option<PathBuf>,
    /// File holding a secret shared by all replicas; when set, forwarded batches
    /// carry it and the ring port refuses batches without it.
    #[arg(long, env = "MOP_GATEWAY_RING_SECRET_FILE")]
    pub ring_secret_file: Option<PathBuf>,
    /// Longest wait in a partial forward batch.
    #[arg(long, env = "MOP_GATEWAY_RING_BATCH_TIMEOUT_MS", default_value_t = 20)]
    pub ring_batch_timeout_ms: u64,
    /// How long a forward to an unreachable owner is retried before its spans are
    /// sampled elsewhere (counted `orphaned`) and the owner is skipped for
    /// `--ring-suspect-ms`.
    #[arg(long, env = "MOP_GATEWAY_RING_UNREACHABLE_MS", default_value_t = 2_000)]
    pub ring_unreachable_ms: u64,
    /// How long an unreachable owner is left out of this replica's ring.
    #[arg(long, env = "MOP_GATEWAY_RING_SUSPECT_MS", default_value_t = 10_000)]
    pub ring_suspect_ms: u64,
}

impl Default for RingSettings {
    fn default() -> Self {
        Self {
            ring_listen: None,
            ring_advertise: None,
            peers: Vec::new(),
            peers_file: None,
            ring_secret_file: None,
            ring_batch_timeout_ms: 20,
            ring_unreachable_ms: 2_000,
            ring_suspect_ms: 10_000,
        }
    }
}

impl RingSettings {
    pub fn is_static(&self) -> bool {
        !self.peers.is_empty() || self.peers_file.is_some()
    }
}

/// The ring as this replica currently sees it.
#[derive(Debug, Clone, Default)]
pub struct View {
    /// `gateway.json` has a `ring` section.
    pub enabled: bool,
    /// Ready members.
    pub ring: Ring,
    /// Addresses allowed to forward to this replica: every known replica, Ready
    /// or not (a starting replica forwards everything before it is Ready).
    pub trusted: HashSet<IpAddr>,
    /// Bumped on every change, so a forwarder can tell its routing is stale.
    pub generation: u64,
}

impl View {
    /// Whether spans may be forwarded: receivers then keep spans encoded
    /// ([`wire`]), so that those owned by a peer are never decoded here.
    pub fn forwards(&self) -> bool {
        self.enabled && !self.ring.is_empty()
    }
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum OrphanReason {
    /// The owner did not answer within `--ring-unreachable-ms`.
    Unreachable,
    /// The owner refused the batch (not a member, bad secret, ring off there).
    Refused,
    /// The shutdown deadline passed while the owner was busy.
    Shutdown,
    /// A re-route found the new owner's forward queue full.
    QueueFull,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OrphanLabels {
    pub tenant: String,
    pub reason: OrphanReason,
}

#[derive(Debug, Clone, Copy, Hash, PartialEq, Eq, EncodeLabelValue)]
pub enum RetryReason {
    /// The owner answered RESOURCE_EXHAUSTED (its sampler queue is full).
    Busy,
    Unreachable,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RetryLabels {
    pub reason: RetryReason,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabel {
    pub tenant: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabel {
    pub result: String,
}

/// The ring's own counters (all spans, per tenant where it applies).
#[derive(Debug, Clone, Default)]
pub struct RingMetrics {
    pub forwarded: Family<TenantLabel, Counter>,
    pub received_from_peer: Family<TenantLabel, Counter>,
    pub orphaned: Family<OrphanLabels, Counter>,
    pub retries: Family<RetryLabels, Counter>,
    pub handed_off: Family<TenantLabel, Counter>,
    pub members: Gauge,
    pub owner: Gauge,
    pub membership_updates: Family<ResultLabel, Counter>,
}

impl RingMetrics {
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "ring_forwarded_spans",
            "Spans forwarded to the replica owning their trace (acknowledged by it)",
            self.forwarded.clone(),
        );
        r.register(
            "ring_received_from_peer_spans",
            "Spans received from another replica that forwarded them here, their owner",
            self.received_from_peer.clone(),
        );
        r.register(
            "ring_orphaned_spans",
            "Spans whose owner could not take them, sampled by another replica instead",
            self.orphaned.clone(),
        );
        r.register(
            "ring_forward_retries",
            "Forward attempts retried, by reason",
            self.retries.clone(),
        );
        r.register(
            "ring_handed_off_spans",
            "Spans of open traces handed to their new owner after a membership change",
            self.handed_off.clone(),
        );
        r.register(
            "ring_members",
            "Ready ring members this replica routes over",
            self.members.clone(),
        );
        r.register(
            "ring_owner",
            "1 while this replica is a ring member (owns traces), else 0",
            self.owner.clone(),
        );
        r.register(
            "ring_membership_updates",
            "Membership refreshes (list, watch event, peers file) by result",
            self.membership_updates.clone(),
        );
    }

    pub fn orphaned(&self, tenant: &str, reason: OrphanReason, n: usize, why: &str) {
        if n == 0 {
            return;
        }
        tracing::warn!(tenant, reason = ?reason, spans = n, error = why, "spans sampled away from their trace's owner");
        self.orphaned
            .get_or_create(&OrphanLabels {
                tenant: tenant.into(),
                reason,
            })
            .inc_by(n as u64);
    }
}

/// Formats `ip:port` the way EndpointSlices and `--ring-advertise` spell it.
pub fn peer_addr(ip: IpAddr, port: u16) -> String {
    SocketAddr::new(ip, port).to_string()
}
