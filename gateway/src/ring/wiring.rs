//! Starts the ring's tasks for one gateway: the ring port, the router in front of
//! the sampler, and the membership source.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use super::wire::WireResourceSpans;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::View;
use super::forward::{Dispatch, ForwardOptions, Handoff, run_router};
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
    pub input: QueueSender<WireResourceSpans>,
    /// The ring as this replica sees it: receivers keep spans encoded while it
    /// is on ([`super::View::forwards`]).
    pub view: watch::Receiver<Arc<View>>,
    /// The bound ring port; `None` without `--ring-listen`.
    pub addr: Option<SocketAddr>,
    pub peer_server: JoinHandle<()>,
    pub router: JoinHandle<()>,
    pub membership: JoinHandle<()>,
    /// For the sampler: hands open traces to their new owner on a change.
    pub handoff: Handoff,
}

fn forward_options(settings: &Settings) -> ForwardOptions {
    let rs = &settings.ring;
    ForwardOptions {
        batch_max_items: settings.batch_max_items,
        batch_timeout: Duration::from_millis(rs.ring_batch_timeout_ms),
        queue_capacity: settings.queue_capacity,
        request_timeout: Duration::from_millis(settings.request_timeout_ms),
        retry_initial: Duration::from_millis(settings.retry_initial_ms),
        retry_max: Duration::from_millis(settings.retry_max_ms),
        unreachable: Duration::from_millis(rs.ring_unreachable_ms),
        suspect: Duration::from_millis(rs.ring_suspect_ms),
    }
}

fn read_secret(settings: &Settings) -> Result<Option<String>, Error> {
    let Some(p) = &settings.ring.ring_secret_file else {
        return Ok(None);
    };
    let s = std::fs::read_to_string(p)
        .map_err(|e| Error::Ring(format!("--ring-secret-file {}: {e}", p.display())))?;
    let s = s.trim().to_string();
    if s.is_empty() {
        return Err(Error::Ring(format!(
            "--ring-secret-file {} is empty",
            p.display()
        )));
    }
    Ok(Some(s))
}

/// The shutdown stages the ring takes part in.
pub struct Stops {
    /// Shutdown deadline: stop retrying owners.
    pub deadline: CancellationToken,
    /// Closes the ring port with the other receivers.
    pub receivers: CancellationToken,
    /// Ends the membership watch last.
    pub admin: CancellationToken,
}

/// `sampler`: the sampler's input queue. `kube`: the gateway's Kubernetes client
/// (EndpointSlice membership), if it has one.
pub async fn start(
    settings: &Settings,
    kube: Option<kube::Client>,
    sampler: QueueSender<ResourceSpans>,
    routes: watch::Receiver<Arc<RouteTable>>,
    metrics: &Metrics,
    stops: Stops,
) -> Result<Wiring, Error> {
    let Stops {
        deadline,
        receivers: stop_receivers,
        admin: stop_admin,
    } = stops;
    let rs = &settings.ring;
    let (input, input_rx) =
        queue::<WireResourceSpans>(settings.queue_capacity, Signal::Traces, metrics.clone());
    let input = input.with_byte_budget(settings.queue_max_bytes);
    let Some(listen) = rs.ring_listen else {
        // No ring port: the router passes everything to the sampler (the view
        // stays disabled).
        let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
        let dispatch = Dispatch::new(
            Arc::from(""),
            view_rx.clone(),
            sampler,
            None,
            forward_options(settings),
            metrics.clone(),
            deadline,
        )
        .map_err(Error::Ring)?;
        let handoff = Handoff::new(&dispatch);
        let router = tokio::spawn(run_router(input_rx, dispatch));
        let membership = tokio::spawn(warn_if_ring_configured(routes, stop_admin, view_tx));
        return Ok(Wiring {
            input,
            view: view_rx,
            addr: None,
            peer_server: tokio::spawn(async {}),
            router,
            membership,
            handoff,
        });
    };
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| Error::Bind {
        addr: listen,
        source,
    })?;
    let self_addr: Arc<str> = Arc::from(
        rs.ring_advertise
            .clone()
            .unwrap_or_else(|| addr.to_string())
            .as_str(),
    );
    let secret = read_secret(settings)?;
    let (view_tx, view_rx) = watch::channel(Arc::new(View::default()));
    let dispatch = Dispatch::new(
        self_addr.clone(),
        view_rx.clone(),
        sampler.clone(),
        secret.clone(),
        forward_options(settings),
        metrics.clone(),
        deadline,
    )
    .map_err(Error::Ring)?;
    let handoff = Handoff::new(&dispatch);
    let router = tokio::spawn(run_router(input_rx, dispatch));

    let peer = PeerReceiver {
        view: view_rx.clone(),
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
        kube.map(|client| {
            let namespace = settings
                .kubernetes_namespace
                .clone()
                .unwrap_or_else(|| client.default_namespace().to_string());
            (client, namespace)
        }),
        routes,
        Publisher::new(view_tx, self_addr, metrics.clone()),
        Duration::from_millis(settings.reload_interval_ms.max(10)),
        stop_admin,
    ));
    Ok(Wiring {
        input,
        view: view_rx,
        addr: Some(addr),
        peer_server,
        router,
        membership,
        handoff,
    })
}

/// Without a ring port the ring stays off; say so whenever the config asks for
/// it. Holds the view's sender so the (disabled) view stays open until shutdown.
async fn warn_if_ring_configured(
    mut routes: watch::Receiver<Arc<RouteTable>>,
    stop: CancellationToken,
    _view: watch::Sender<Arc<View>>,
) {
    loop {
        if routes.borrow_and_update().ring().is_some() {
            tracing::error!(
                "gateway.json enables the trace ring but this replica has no --ring-listen; it samples what it receives, and kept traces may be incomplete"
            );
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = routes.changed() => if r.is_err() { return },
        }
    }
}
