//! Wiring: listeners, queues, sampler, exporters, config watcher, and the staged
//! shutdown (stop receivers → drain queues → flush exporters within a deadline).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower::limit::GlobalConcurrencyLimitLayer;

use crate::disk_queue::{self, DiskQueue};
use crate::export::loki::LokiEncoder;
use crate::export::otlp_metrics::OtlpMetricsEncoder;
use crate::export::remote_write::RemoteWriteEncoder;
use crate::export::tempo::TempoEncoder;
use crate::export::{Encoder, RetryPolicy, Sender};
use crate::identity::{self, Identifier};
use crate::pipeline::{ExportOptions, QueueSender, Spool, queue, run_drainer, run_exporter};
use crate::receiver::Ingest;
use crate::receiver::grpc::GrpcReceiver;
use crate::receiver::http::{HttpState, router};
use crate::settings::Settings;
use crate::signal::{ResourceItems, Signal};
use crate::telemetry::Metrics;
use crate::{reload, ring, sampling};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("initial config: {0}")]
    Config(#[from] reload::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Identity(#[from] identity::StartError),
    #[error("set either --remote-write-url or --metrics-otlp-url, not both")]
    TwoMetricsBackends,
    #[error(transparent)]
    DiskQueue(#[from] crate::disk_queue::Error),
    #[error("ring: {0}")]
    Ring(String),
    #[error("cannot build HTTP client for {url}: {source}")]
    Client {
        url: String,
        #[source]
        source: reqwest::Error,
    },
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    admin_addr: SocketAddr,
    ring_addr: Option<SocketAddr>,
    stop_receivers: CancellationToken,
    stop_admin: CancellationToken,
    receivers: Vec<JoinHandle<()>>,
    pipelines: Vec<JoinHandle<()>>,
    admin: JoinHandle<()>,
    reloader: JoinHandle<()>,
    ring_membership: Option<JoinHandle<()>>,
    pod_watch: Option<JoinHandle<()>>,
    drainers: Vec<JoinHandle<()>>,
    /// Pipelines are done: drainers finish once their disk queue is empty.
    closing: CancellationToken,
    /// Shutdown deadline passed: drainers and disk-space waits stop now.
    deadline: CancellationToken,
    shutdown_timeout: Duration,
    ready: Arc<AtomicBool>,
    metrics: Metrics,
    identity: Identifier,
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Error> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| Error::Bind { addr, source })
}

fn local(l: &TcpListener, addr: SocketAddr) -> Result<SocketAddr, Error> {
    l.local_addr()
        .map_err(|source| Error::Bind { addr, source })
}

#[derive(Clone)]
struct AdminState {
    metrics: Metrics,
    ready: Arc<AtomicBool>,
    identity: Identifier,
}

async fn metrics_handler(State(s): State<AdminState>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.encode(),
    )
}

async fn ready_handler(State(s): State<AdminState>) -> impl IntoResponse {
    if !s.identity.ready() {
        // Anonymous senders cannot be told apart before the pod list loaded.
        (StatusCode::SERVICE_UNAVAILABLE, "pod index not loaded")
    } else if s.ready.load(Ordering::SeqCst) {
        (StatusCode::OK, "ready")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready")
    }
}

/// Tasks and tokens of the exporter stages.
struct Stages {
    pipelines: Vec<JoinHandle<()>>,
    drainers: Vec<JoinHandle<()>>,
    closing: CancellationToken,
    deadline: CancellationToken,
}

/// Requests a queue between two internal stages of the traces path holds (router
/// → sampler, sampler → Tempo exporter). Clients are pushed back when the
/// receivers' queue (`--queue-capacity` requests) is full; with the stages behind
/// it as large, the traces path held three times what the flag says, all of it
/// decoded (up to 450 MiB in the end-to-end benchmark, docs/performance.md
/// "Gateway vs rotel"). A sixteenth each keeps the stages fed and the whole path
/// near the flag.
pub(crate) fn stage_queue_capacity(queue_capacity: usize) -> usize {
    (queue_capacity / 16).max(1)
}

/// `capacity`: requests the exporter's queue holds (`--queue-capacity` where the
/// receivers feed it directly).
fn exporter<R: ResourceItems>(
    settings: &Settings,
    capacity: usize,
    url: Option<&String>,
    encoder: Arc<dyn Encoder<R>>,
    metrics: &Metrics,
    stages: &mut Stages,
) -> Result<Option<QueueSender<R>>, Error> {
    let Some(url) = url else { return Ok(None) };
    let retry = RetryPolicy {
        initial: Duration::from_millis(settings.retry_initial_ms),
        max: Duration::from_millis(settings.retry_max_ms),
        max_elapsed: Duration::from_millis(settings.retry_max_elapsed_ms),
    };
    let sender = Sender::new(
        url.clone(),
        Duration::from_millis(settings.request_timeout_ms),
        retry,
    )
    .map_err(|source| Error::Client {
        url: url.clone(),
        source,
    })?;
    let (tx, rx) = queue::<R>(capacity, R::SIGNAL, metrics.clone());
    // Receivers enqueue straight into the metrics and logs exporters' queues,
    // which therefore carry the signal's byte budget; the traces exporter is fed
    // by the sampler, and its spans arrive charged to the ring input's budget.
    let tx = if R::SIGNAL == Signal::Traces {
        tx
    } else {
        tx.with_byte_budget(settings.queue_max_bytes)
    };
    let opts = ExportOptions {
        batch_max_items: settings.batch_max_items,
        batch_timeout: settings.batch_timeout(),
        // Prometheus and Mimir refuse a sample older than the newest one of its
        // series, so concurrent remote-write requests could reorder a series into
        // rejection; metrics go one request at a time.
        max_in_flight: if R::SIGNAL == Signal::Metrics {
            1
        } else {
            settings.max_in_flight
        },
        shutdown_timeout: Duration::from_millis(settings.shutdown_timeout_ms),
    };
    let sender = Arc::new(sender);
    let spool = match &settings.disk_queue_dir {
        Some(dir) => {
            let (dq, recovery) = DiskQueue::open(disk_queue::Options {
                dir: dir.join(R::SIGNAL.as_str()),
                segment_bytes: settings.disk_queue_segment_bytes,
                max_bytes: settings.disk_queue_max_bytes,
                fsync: settings.disk_queue_fsync,
            })?;
            if recovery.pending_bytes > 0 || recovery.truncated_bytes > 0 {
                tracing::info!(signal = %R::SIGNAL, pending_bytes = recovery.pending_bytes, truncated_bytes = recovery.truncated_bytes, "disk queue recovered");
            }
            let dq = Arc::new(dq);
            stages.drainers.push(tokio::spawn(run_drainer(
                dq.clone(),
                sender.clone(),
                R::SIGNAL,
                metrics.clone(),
                stages.closing.clone(),
                stages.deadline.clone(),
            )));
            if settings.disk_queue_fsync == disk_queue::FsyncPolicy::Interval {
                // Ends with a last sync once the pipelines stopped appending.
                let (dq, closing) = (dq.clone(), stages.closing.clone());
                let every = Duration::from_millis(settings.disk_queue_fsync_interval_ms.max(10));
                stages.drainers.push(tokio::spawn(async move {
                    loop {
                        let q = dq.clone();
                        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || q.sync()).await {
                            tracing::error!(error = %e, "disk queue fsync failed");
                        }
                        if closing.is_cancelled() {
                            break;
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(every) => {}
                            _ = closing.cancelled() => {}
                        }
                    }
                }));
            }
            Some(Spool {
                queue: dq,
                stop: stages.deadline.clone(),
            })
        }
        None => None,
    };
    stages.pipelines.push(tokio::spawn(run_exporter(
        rx,
        encoder,
        sender,
        opts,
        metrics.clone(),
        spool,
    )));
    Ok(Some(tx))
}

impl Gateway {
    /// Loads the config (refusing to start on a bad one), binds every listener and
    /// starts all tasks.
    pub async fn start(settings: Settings) -> Result<Self, Error> {
        let metrics = Metrics::default();
        let loaded = reload::load(&settings.config)?;
        let (routes_tx, routes_rx) = watch::channel(Arc::new(loaded.table));
        let mut stages = Stages {
            pipelines: Vec::new(),
            drainers: Vec::new(),
            closing: CancellationToken::new(),
            deadline: CancellationToken::new(),
        };

        let tempo_q = exporter::<ResourceSpans>(
            &settings,
            stage_queue_capacity(settings.queue_capacity),
            settings.tempo_url.as_ref(),
            Arc::new(TempoEncoder),
            &metrics,
            &mut stages,
        )?;
        let stop_receivers = CancellationToken::new();
        let stop_admin = CancellationToken::new();
        let mut receivers = Vec::new();
        let mut ring_addr = None;
        let mut ring_membership = None;
        let kube = match settings.kube_access() {
            Some(access) => Some(identity::connect(&access).await?),
            None => None,
        };
        // Traces pass through the ring router (forwarding to each trace's owner
        // replica) and the tail sampler on their way to Tempo.
        let traces_in = match tempo_q {
            Some(out) => {
                let (tx, rx) = queue::<ResourceSpans>(
                    stage_queue_capacity(settings.queue_capacity),
                    Signal::Traces,
                    metrics.clone(),
                );
                let wiring = ring::wiring::start(
                    &settings,
                    kube.clone(),
                    tx,
                    routes_rx.clone(),
                    &metrics,
                    ring::wiring::Stops {
                        deadline: stages.deadline.clone(),
                        receivers: stop_receivers.clone(),
                        admin: stop_admin.clone(),
                    },
                )
                .await?;
                ring_addr = wiring.addr;
                receivers.push(wiring.peer_server);
                stages.pipelines.push(wiring.router);
                ring_membership = Some(wiring.membership);
                stages.pipelines.push(tokio::spawn(sampling::run(
                    rx,
                    out,
                    routes_rx.clone(),
                    Duration::from_millis(settings.sampler_tick_ms.max(1)),
                    metrics.clone(),
                    Some(wiring.handoff),
                )));
                Some((wiring.input, wiring.view))
            }
            None => None,
        };
        let (traces_in, ring_view) = traces_in.unzip();
        let metrics_q = match (&settings.remote_write_url, &settings.metrics_otlp_url) {
            (Some(_), Some(_)) => return Err(Error::TwoMetricsBackends),
            (None, Some(url)) => exporter::<ResourceMetrics>(
                &settings,
                settings.queue_capacity,
                Some(url),
                Arc::new(OtlpMetricsEncoder),
                &metrics,
                &mut stages,
            )?,
            (rw, None) => exporter::<ResourceMetrics>(
                &settings,
                settings.queue_capacity,
                rw.as_ref(),
                Arc::new(RemoteWriteEncoder),
                &metrics,
                &mut stages,
            )?,
        };
        let logs_q = exporter::<ResourceLogs>(
            &settings,
            settings.queue_capacity,
            settings.loki_url.as_ref(),
            Arc::new(LokiEncoder {
                label_attributes: settings.loki_label_attributes.clone(),
            }),
            &metrics,
            &mut stages,
        )?;

        let (identity, pod_watch) = match kube {
            Some(client) => {
                let (id, task) = Identifier::with_kubernetes(client, stop_admin.clone());
                (id, Some(task))
            }
            None => (Identifier::without_kubernetes(), None),
        };
        let ingest = Ingest {
            identity: identity.clone(),
            routes: routes_rx,
            traces: traces_in,
            ring: ring_view,
            metrics_queue: metrics_q,
            logs: logs_q,
            telemetry: metrics.clone(),
            retry_after_s: settings.client_retry_after_s,
        };

        let grpc_l = bind(settings.grpc_listen).await?;
        let http_l = bind(settings.http_listen).await?;
        let admin_l = bind(settings.admin_listen).await?;
        let grpc_addr = local(&grpc_l, settings.grpc_listen)?;
        let http_addr = local(&http_l, settings.http_listen)?;
        let admin_addr = local(&admin_l, settings.admin_listen)?;

        // One budget for both receivers: a request holds a permit while its body
        // is read and decoded.
        let permits = Arc::new(tokio::sync::Semaphore::new(
            settings.max_concurrent_requests.max(1),
        ));
        let grpc_permits = permits.clone();
        let grpc_routes = GrpcReceiver {
            ingest: ingest.clone(),
        }
        .router(settings.max_request_bytes);
        let stop = stop_receivers.clone();
        receivers.push(tokio::spawn(async move {
            let incoming = tonic::transport::server::TcpIncoming::from(grpc_l);
            let result = tonic::transport::Server::builder()
                .layer(GlobalConcurrencyLimitLayer::with_semaphore(grpc_permits))
                .add_routes(grpc_routes)
                .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "gRPC receiver failed");
            }
        }));

        let http_app = router(HttpState {
            ingest,
            max_bytes: settings.max_request_bytes,
        })
        .layer(GlobalConcurrencyLimitLayer::with_semaphore(permits));
        let stop = stop_receivers.clone();
        receivers.push(tokio::spawn(async move {
            let result = axum::serve(
                http_l,
                http_app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(stop.cancelled_owned())
            .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "HTTP receiver failed");
            }
        }));

        let ready = Arc::new(AtomicBool::new(true));
        let admin_app = Router::new()
            .route("/metrics", get(metrics_handler))
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(ready_handler))
            .with_state(AdminState {
                metrics: metrics.clone(),
                ready: ready.clone(),
                identity: identity.clone(),
            });
        let stop = stop_admin.clone();
        let admin = tokio::spawn(async move {
            let result = axum::serve(admin_l, admin_app)
                .with_graceful_shutdown(stop.cancelled_owned())
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "admin server failed");
            }
        });

        let reloader = tokio::spawn(reload::watch_config(
            settings.config.clone(),
            Duration::from_millis(settings.reload_interval_ms.max(10)),
            loaded.fingerprint,
            routes_tx,
            metrics.clone(),
            stop_admin.clone(),
        ));

        Ok(Self {
            grpc_addr,
            http_addr,
            admin_addr,
            ring_addr,
            stop_receivers,
            stop_admin,
            receivers,
            pipelines: stages.pipelines,
            drainers: stages.drainers,
            closing: stages.closing,
            deadline: stages.deadline,
            shutdown_timeout: Duration::from_millis(settings.shutdown_timeout_ms),
            admin,
            reloader,
            ring_membership,
            pod_watch,
            ready,
            metrics,
            identity,
        })
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        self.grpc_addr
    }
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }
    /// The ring port (spans forwarded by peers); `None` without a traces backend.
    pub fn ring_addr(&self) -> Option<SocketAddr> {
        self.ring_addr
    }
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }
    pub fn identity(&self) -> &Identifier {
        &self.identity
    }

    /// Staged shutdown: not ready → receivers stop (in-flight requests finish) →
    /// queues close and drain through sampler and exporters → exporters get
    /// their deadline (see `ExportOptions::shutdown_timeout`).
    pub async fn shutdown(self) {
        self.ready.store(false, Ordering::SeqCst);
        self.stop_receivers.cancel();
        for r in self.receivers {
            let _ = r.await;
        }
        // Receivers held the last queue senders; with them gone each stage sees its
        // input close, flushes, and closes the next.
        let deadline = self.deadline.clone();
        let pipelines = async {
            for p in self.pipelines {
                let _ = p.await;
            }
        };
        let mut pipelines = std::pin::pin!(pipelines);
        if tokio::time::timeout(self.shutdown_timeout, &mut pipelines)
            .await
            .is_err()
        {
            deadline.cancel();
            pipelines.await;
        }
        // With a disk queue, what the drainers cannot deliver by the deadline stays
        // on disk for the next start.
        self.closing.cancel();
        let drainers = async {
            for d in self.drainers {
                let _ = d.await;
            }
        };
        let mut drainers = std::pin::pin!(drainers);
        if tokio::time::timeout(self.shutdown_timeout, &mut drainers)
            .await
            .is_err()
        {
            deadline.cancel();
            drainers.await;
        }
        deadline.cancel();
        self.stop_admin.cancel();
        let _ = self.admin.await;
        let _ = self.reloader.await;
        if let Some(m) = self.ring_membership {
            let _ = m.await;
        }
        if let Some(w) = self.pod_watch {
            let _ = w.await;
        }
    }
}
