//! The ring port: receives spans other replicas forwarded to this one, their
//! trace's owner, and hands them straight to the sampler (never to the router:
//! forwarded spans are never forwarded again, whatever this replica thinks of
//! their ownership).
//!
//! Trust model: the tenant of a forwarded batch was decided by the replica that
//! received it from the client; it travels in the `x-mop-ring-tenant` metadata.
//! That metadata is read only on this port, and only from a sender whose address
//! is a known replica (an endpoint of the ring Service, Ready or not, or a static
//! peer), carrying the shared secret when `--ring-secret-file` is set. Clients
//! never reach this port through the gateway's Service (it is not one of its
//! ports); a NetworkPolicy should also limit it to the gateway's own pods.

use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use tokio::sync::watch;
use tonic::{Request, Response, Status};

use super::{TenantLabel, View};
use crate::pipeline::{Batch, EnqueueError, QueueSender};
use crate::signal::count_items;
use crate::telemetry::Metrics;

#[derive(Clone)]
pub struct PeerReceiver {
    pub view: watch::Receiver<Arc<View>>,
    pub sampler: QueueSender<ResourceSpans>,
    pub secret: Option<Arc<str>>,
    pub metrics: Metrics,
}

/// Equal in time independent of where the first difference is.
fn secret_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl PeerReceiver {
    pub fn router(self, max_bytes: usize) -> tonic::service::Routes {
        tonic::service::Routes::new(
            TraceServiceServer::new(self).max_decoding_message_size(max_bytes),
        )
    }

    fn check(&self, req: &Request<ExportTraceServiceRequest>) -> Result<Arc<str>, Status> {
        let view = self.view.borrow().clone();
        if !view.enabled {
            return Err(Status::failed_precondition(
                "the ring is off on this replica (gateway.json has no ring section)",
            ));
        }
        let ip = req.remote_addr().map(|a| a.ip());
        if !ip.is_some_and(|ip| view.trusted.contains(&ip)) {
            return Err(Status::permission_denied(format!(
                "{} is not a known ring member",
                ip.map_or_else(|| "unknown address".to_string(), |ip| ip.to_string())
            )));
        }
        let md = req.metadata();
        if let Some(secret) = &self.secret {
            let given = md
                .get(super::SECRET_HEADER)
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !secret_eq(given, secret.as_bytes()) {
                return Err(Status::unauthenticated("ring secret missing or wrong"));
            }
        }
        let tenant = md
            .get(super::TENANT_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|t| mop_gateway_config::is_valid_tenant_id(t))
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "{} metadata missing or not a tenant id",
                    super::TENANT_HEADER
                ))
            })?;
        Ok(Arc::from(tenant))
    }
}

#[tonic::async_trait]
impl TraceService for PeerReceiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let tenant = self.check(&request)?;
        let items = request.into_inner().resource_spans;
        let n = count_items(&items);
        self.sampler
            .try_enqueue_all(vec![Batch::new(tenant.clone(), items)])
            .map_err(|e| match e {
                // The forwarder retries with backoff: backpressure between replicas.
                EnqueueError::Full => Status::resource_exhausted("sampler queue is full"),
                EnqueueError::Closed => Status::unavailable("replica is shutting down"),
            })?;
        self.metrics
            .ring
            .received_from_peer
            .get_or_create(&TenantLabel {
                tenant: tenant.to_string(),
            })
            .inc_by(n as u64);
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}
