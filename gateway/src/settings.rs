//! The gateway's own runtime settings: listen addresses, backend URLs, queue and
//! retry tuning. These belong to the deployment, not to the config repository, so
//! they are CLI flags (each also readable from an environment variable) and never
//! part of `gateway.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// `--queue-max-bytes` unless set: see docs/performance.md, "Gateway vs rotel",
/// for what it costs and saves.
pub const DEFAULT_QUEUE_MAX_BYTES: usize = 8 << 20;

/// Runtime settings of one gateway process.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "mop-gateway", version, about = "Tenant-routing OTLP gateway")]
pub struct Settings {
    /// Routing and sampling config rendered by the syncer (`gateway.json`). Re-read
    /// whenever its content changes, including a Kubernetes `..data` symlink swap.
    #[arg(
        long,
        env = "MOP_GATEWAY_CONFIG",
        default_value = "/etc/mop-gateway/gateway.json"
    )]
    pub config: PathBuf,
    /// OTLP/gRPC listen address.
    #[arg(long, env = "MOP_GATEWAY_GRPC_LISTEN", default_value = "0.0.0.0:4317")]
    pub grpc_listen: SocketAddr,
    /// OTLP/HTTP listen address.
    #[arg(long, env = "MOP_GATEWAY_HTTP_LISTEN", default_value = "0.0.0.0:4318")]
    pub http_listen: SocketAddr,
    /// `/metrics`, `/healthz` and `/readyz` listen address.
    #[arg(long, env = "MOP_GATEWAY_ADMIN_LISTEN", default_value = "0.0.0.0:8888")]
    pub admin_listen: SocketAddr,
    /// Tempo OTLP/HTTP traces URL, e.g. `http://tempo:4318/v1/traces`. Without it the
    /// gateway refuses traces (404/UNIMPLEMENTED) instead of accepting and losing them.
    #[arg(long, env = "MOP_GATEWAY_TEMPO_URL")]
    pub tempo_url: Option<String>,
    /// Prometheus remote-write 1.0 URL, e.g. `http://mimir:8080/api/v1/push`.
    #[arg(long, env = "MOP_GATEWAY_REMOTE_WRITE_URL")]
    pub remote_write_url: Option<String>,
    /// Mimir OTLP metrics URL, e.g. `http://mimir:8080/otlp/v1/metrics`: metrics
    /// are sent as OTLP instead of remote-write. Set this or `--remote-write-url`.
    #[arg(
        long,
        env = "MOP_GATEWAY_METRICS_OTLP_URL",
        conflicts_with = "remote_write_url"
    )]
    pub metrics_otlp_url: Option<String>,
    /// Loki push URL, e.g. `http://loki:3100/loki/api/v1/push`.
    #[arg(long, env = "MOP_GATEWAY_LOKI_URL")]
    pub loki_url: Option<String>,
    /// Resource attributes that become Loki stream labels (after sanitising the
    /// name); every other attribute goes to structured metadata.
    #[arg(
        long,
        env = "MOP_GATEWAY_LOKI_LABEL_ATTRIBUTES",
        value_delimiter = ',',
        default_value = "k8s.namespace.name,service.name,k8s.pod.name"
    )]
    pub loki_label_attributes: Vec<String>,
    /// Requests each exporter queue holds before clients are pushed back.
    #[arg(long, env = "MOP_GATEWAY_QUEUE_CAPACITY", default_value_t = 1024)]
    pub queue_capacity: usize,
    /// Bytes of accepted requests (their OTLP protobuf encoding, uncompressed)
    /// each signal holds decoded in memory — queued, in a stage or in a partial
    /// batch — before clients are pushed back (429 / RESOURCE_EXHAUSTED). Decoded
    /// spans take about 3–4 times their encoded size; the bytes are given back
    /// once a batch is encoded for export. With `--queue-capacity` the lower
    /// bound of the two applies.
    #[arg(long, env = "MOP_GATEWAY_QUEUE_MAX_BYTES", default_value_t = DEFAULT_QUEUE_MAX_BYTES)]
    pub queue_max_bytes: usize,
    /// Items (spans, data points, log records) per exported request at most.
    #[arg(long, env = "MOP_GATEWAY_BATCH_MAX_ITEMS", default_value_t = 8192)]
    pub batch_max_items: usize,
    /// Longest time an item waits in a partial batch.
    #[arg(long, env = "MOP_GATEWAY_BATCH_TIMEOUT_MS", default_value_t = 200)]
    pub batch_timeout_ms: u64,
    /// Concurrent requests per exporter.
    #[arg(long, env = "MOP_GATEWAY_MAX_IN_FLIGHT", default_value_t = 4)]
    pub max_in_flight: usize,
    /// First retry delay; doubles per attempt, with full jitter.
    #[arg(long, env = "MOP_GATEWAY_RETRY_INITIAL_MS", default_value_t = 100)]
    pub retry_initial_ms: u64,
    /// Cap on one retry delay (also caps a backend's `Retry-After`).
    #[arg(long, env = "MOP_GATEWAY_RETRY_MAX_MS", default_value_t = 5_000)]
    pub retry_max_ms: u64,
    /// Give up on a batch (and count it dropped) after retrying this long.
    #[arg(
        long,
        env = "MOP_GATEWAY_RETRY_MAX_ELAPSED_MS",
        default_value_t = 300_000
    )]
    pub retry_max_elapsed_ms: u64,
    /// Timeout of one export request.
    #[arg(long, env = "MOP_GATEWAY_REQUEST_TIMEOUT_MS", default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// Largest accepted request body, compressed and decompressed (HTTP 413 /
    /// gRPC RESOURCE_EXHAUSTED above it).
    #[arg(long, env = "MOP_GATEWAY_MAX_REQUEST_BYTES", default_value_t = 16 * 1024 * 1024)]
    pub max_request_bytes: usize,
    /// Requests decoded at once, over gRPC and HTTP together; further requests
    /// wait unread. With `max_request_bytes` this bounds the receivers' memory.
    #[arg(
        long,
        env = "MOP_GATEWAY_MAX_CONCURRENT_REQUESTS",
        default_value_t = 256
    )]
    pub max_concurrent_requests: usize,
    /// `Retry-After` seconds sent to clients that are pushed back.
    #[arg(long, env = "MOP_GATEWAY_CLIENT_RETRY_AFTER_S", default_value_t = 1)]
    pub client_retry_after_s: u64,
    /// How often the config file is checked for changes.
    #[arg(long, env = "MOP_GATEWAY_RELOAD_INTERVAL_MS", default_value_t = 1_000)]
    pub reload_interval_ms: u64,
    /// How often the tail sampler looks for traces that are due.
    #[arg(long, env = "MOP_GATEWAY_SAMPLER_TICK_MS", default_value_t = 100)]
    pub sampler_tick_ms: u64,
    /// Directory of the on-disk export queues (one subdirectory per signal). When
    /// set, every batch is written there before it is sent, and a backend outage or
    /// a restart loses nothing up to `disk_queue_max_bytes` per signal.
    #[arg(long, env = "MOP_GATEWAY_DISK_QUEUE_DIR")]
    pub disk_queue_dir: Option<PathBuf>,
    /// Disk budget per signal; above it the gateway pushes back to clients.
    #[arg(long, env = "MOP_GATEWAY_DISK_QUEUE_MAX_BYTES", default_value_t = 1 << 30)]
    pub disk_queue_max_bytes: u64,
    /// Size at which a new segment file is started.
    #[arg(long, env = "MOP_GATEWAY_DISK_QUEUE_SEGMENT_BYTES", default_value_t = 16 << 20)]
    pub disk_queue_segment_bytes: u64,
    /// When appended records are fsynced.
    #[arg(
        long,
        env = "MOP_GATEWAY_DISK_QUEUE_FSYNC",
        value_enum,
        default_value = "interval"
    )]
    pub disk_queue_fsync: crate::disk_queue::FsyncPolicy,
    /// Interval of the `interval` fsync policy.
    #[arg(
        long,
        env = "MOP_GATEWAY_DISK_QUEUE_FSYNC_INTERVAL_MS",
        default_value_t = 1_000
    )]
    pub disk_queue_fsync_interval_ms: u64,
    /// Where the Kubernetes API is, for sender identity (the pod watch behind
    /// anonymous clients' addresses and TokenReview of mop-agent tokens):
    /// `in-cluster`, `kubeconfig`, or a URL (with `--kubernetes-token-file`).
    /// Without it the gateway runs in static mode: tenant tokens and
    /// `identity.static_sources` only.
    #[arg(long, env = "MOP_GATEWAY_KUBERNETES")]
    pub kubernetes: Option<String>,
    /// Bearer token file for `--kubernetes URL` (the gateway's own ServiceAccount
    /// token); re-read as it rotates.
    #[arg(long, env = "MOP_GATEWAY_KUBERNETES_TOKEN_FILE")]
    pub kubernetes_token_file: Option<PathBuf>,
    /// Namespace this gateway runs in, where the ring's EndpointSlices are (the
    /// downward API's `metadata.namespace`). Default: the Kubernetes client's
    /// (in a pod, the ServiceAccount's namespace).
    #[arg(long, env = "POD_NAMESPACE")]
    pub kubernetes_namespace: Option<String>,
    /// Deadline for draining and flushing on shutdown.
    #[arg(
        long,
        env = "MOP_GATEWAY_SHUTDOWN_TIMEOUT_MS",
        default_value_t = 10_000
    )]
    pub shutdown_timeout_ms: u64,
    /// The trace ring (forwarding to each trace's owner replica).
    #[command(flatten)]
    pub ring: crate::ring::RingSettings,
}

impl Settings {
    /// Settings for tests and embedding: every listener on an ephemeral loopback port.
    pub fn for_config(config: PathBuf) -> Self {
        let local: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 0));
        Self {
            config,
            grpc_listen: local,
            http_listen: local,
            admin_listen: local,
            tempo_url: None,
            remote_write_url: None,
            metrics_otlp_url: None,
            loki_url: None,
            loki_label_attributes: vec![
                "k8s.namespace.name".into(),
                "service.name".into(),
                "k8s.pod.name".into(),
            ],
            queue_capacity: 1024,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            batch_max_items: 8192,
            batch_timeout_ms: 50,
            max_in_flight: 4,
            retry_initial_ms: 50,
            retry_max_ms: 1_000,
            retry_max_elapsed_ms: 60_000,
            request_timeout_ms: 5_000,
            max_request_bytes: 16 * 1024 * 1024,
            max_concurrent_requests: 256,
            client_retry_after_s: 1,
            reload_interval_ms: 100,
            sampler_tick_ms: 20,
            disk_queue_dir: None,
            disk_queue_max_bytes: 1 << 30,
            disk_queue_segment_bytes: 16 << 20,
            disk_queue_fsync: crate::disk_queue::FsyncPolicy::Interval,
            disk_queue_fsync_interval_ms: 1_000,
            shutdown_timeout_ms: 5_000,
            ring: crate::ring::RingSettings::default(),
            kubernetes: None,
            kubernetes_token_file: None,
            kubernetes_namespace: None,
        }
    }

    /// How to reach the Kubernetes API, if at all.
    pub fn kube_access(&self) -> Option<crate::identity::KubeAccess> {
        use crate::identity::KubeAccess;
        Some(match self.kubernetes.as_deref()? {
            "in-cluster" => KubeAccess::InCluster,
            "kubeconfig" => KubeAccess::Kubeconfig,
            url => KubeAccess::Url {
                url: url.to_string(),
                token_file: self.kubernetes_token_file.clone(),
            },
        })
    }

    pub fn batch_timeout(&self) -> Duration {
        Duration::from_millis(self.batch_timeout_ms)
    }
}
