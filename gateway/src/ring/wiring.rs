//! Starts the ring's tasks for one gateway: the ring port, the router in front of
//! the sampler, and the membership source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::View;
use super::forward::{Dispatch, ForwardOptions, run_router};
use super::membership::{self, Publisher};
use super::peer::PeerReceiver;
use crate::gateway::Error;
use crate::pipeline::{QueueSender, queue};
use crate::routing::RouteTable;
use crate::settings::Settings;
use crate::signal::Signal;
use crate::telemetry::Metrics;

pub struct Wiring {
    /// Where receivers put accepted trace batches (the router's input).
    pub input: QueueSender<ResourceSpans>,
    pub addr: SocketAddr,
    pub peer_server: JoinHandle<()>,
    pub router: JoinHandle<()>,
    pub membership: JoinHandle<()>,
    /// For the sampler: hands open traces to their new owner on a change.
    pub handoff: super::forward::Handoff,
}

/// `sampler`: the sampler's input queue. `deadline`: shutdown deadline (stop
/// retrying owners). `stop_receivers`: closes the ring port with the other
/// receivers. `stop_admin`: ends the membership watch last.
pub async fn start(
    settings: &Settings,
    sampler: QueueSender<ResourceSpans>,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: &Metrics,
    deadline: CancellationToken,
    stop_receivers: CancellationToken,
    stop_admin: CancellationToken,
) -> Result<Wiring, Error> {
    let rs = &settings.ring;
    let listener = tokio::net::TcpListener::bind(rs.ring_listen)
        .await
        .map_err(|source| Error::Bind {
            addr: rs.ring_listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: rs.ring_listen,
        source,
    })?;
    let self_addr: Arc<str> = Arc::from(
        rs.ring_advertise
            .clone()
            .unwrap_or_else(|| addr.to_string())
            .as_str(),
    );
    let secret = match &rs.ring_secret_file {
        Some(p) => Some(
            std::fs::read_to_string(p)
                .map_err(|e| Error::Ring(format!("--ring-secret-file {}: {e}", p.display())))?
                .trim()
                .to_string(),
        )
        .filter(|s| !s.is_empty())
        .ok_or_else(|| Error::Ring(format!("--ring-secret-file {} is empty", p.display())))
        .map(Some)?,
        None => None,
    };
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let dispatch = Dispatch::new(
        self_addr.clone(),
        view_rx.clone(),
        sampler.clone(),
        secret.clone(),
        ForwardOptions {
            batch_max_items: settings.batch_max_items,
            batch_timeout: Duration::from_millis(rs.ring_batch_timeout_ms),
            queue_capacity: settings.queue_capacity,
            request_timeout: Duration::from_millis(settings.request_timeout_ms),
            retry_initial: Duration::from_millis(settings.retry_initial_ms),
            retry_max: Duration::from_millis(settings.retry_max_ms),
            unreachable: Duration::from_millis(rs.ring_unreachable_ms),
            suspect: Duration::from_millis(rs.ring_suspect_ms),
        },
        metrics.clone(),
        deadline,
    )
    .map_err(Error::Ring)?;
    let (input, input_rx) =
        queue::<ResourceSpans>(settings.queue_capacity, Signal::Traces, metrics.clone());
    let handoff = super::forward::Handoff::new(&dispatch);
    let router = tokio::spawn(run_router(input_rx, dispatch));

    let peer = PeerReceiver {
        view: view_rx,
        sampler,
        secret: secret.map(|s| Arc::from(s.as_str())),
        metrics: metrics.clone(),
    }
    .router(settings.max_request_bytes);
    let peer_server = tokio::spawn(async move {
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        let result = tonic::transport::Server::builder()
            .add_routes(peer)
            .serve_with_incoming_shutdown(incoming, stop_receivers.cancelled_owned())
            .await;
        if let Err(e) = result {
            tracing::error!(error = %e, "ring port failed");
        }
    });

    let membership = tokio::spawn(membership::run(
        rs.clone(),
        routes,
        Publisher::new(view_tx, self_addr, metrics.clone()),
        Duration::from_millis(settings.reload_interval_ms.max(10)),
        stop_admin,
    ));
    Ok(Wiring {
        input,
        addr,
        peer_server,
        router,
        membership,
        handoff,
    })
}
