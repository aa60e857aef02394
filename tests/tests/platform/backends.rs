//! The backends of the platform end-to-end test: a strict Tempo fake, a real
//! Prometheus, and in front of Prometheus a relay that plays Mimir's distributor
//! (tenant header required) and records which tenant sent which series.
// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    (addr, task)
}

/// Tempo and Mimir with multi-tenancy on refuse a write without a tenant with
/// 401 "no org id".
fn org_id(headers: &HeaderMap) -> Result<String, Response> {
    match headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err((StatusCode::UNAUTHORIZED, "no org id").into_response()),
    }
}

fn header_is(headers: &HeaderMap, name: impl header::AsHeaderName, value: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()) == Some(value)
}

// ---------------------------------------------------------------- Tempo

/// Tempo's distributor OTLP/HTTP receiver (the gateway's strict fake, copied from
/// `gateway/tests/common/fakes.rs`): `POST /v1/traces`, binary protobuf
/// `ExportTraceServiceRequest`, tenant in `X-Scope-OrgID`
/// (<https://grafana.com/docs/tempo/latest/api_docs/#ingest>,
/// <https://grafana.com/docs/tempo/latest/operations/manage-advanced-systems/multitenancy/>;
/// OTLP/HTTP per <https://opentelemetry.io/docs/specs/otlp/#otlphttp-request>).
pub struct Tempo {
    pub addr: SocketAddr,
    received: Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Tempo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Tempo {
    pub async fn start() -> Tempo {
        type Shared = Arc<Mutex<Vec<(String, ExportTraceServiceRequest)>>>;
        async fn push(State(s): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
            let tenant = match org_id(&headers) {
                Ok(t) => t,
                Err(r) => return r,
            };
            if !header_is(&headers, header::CONTENT_TYPE, "application/x-protobuf") {
                return (
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "expected application/x-protobuf",
                )
                    .into_response();
            }
            match ExportTraceServiceRequest::decode(&body[..]) {
                Ok(req) => {
                    s.lock().unwrap().push((tenant, req));
                    (
                        StatusCode::OK,
                        [(header::CONTENT_TYPE, "application/x-protobuf")],
                        Vec::<u8>::new(),
                    )
                        .into_response()
                }
                Err(e) => (StatusCode::BAD_REQUEST, format!("cannot decode: {e}")).into_response(),
            }
        }
        let received = Shared::default();
        let router = Router::new()
            .route("/v1/traces", post(push))
            .with_state(received.clone());
        let (addr, task) = serve(router).await;
        Tempo {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/v1/traces", self.addr)
    }

    pub fn received(&self) -> Vec<(String, ExportTraceServiceRequest)> {
        self.received.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- remote-write relay

/// `prometheus.WriteRequest` and friends, written from Prometheus's
/// `prompb/types.proto` and `prompb/remote.proto` (only the fields read here).
mod prompb {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct WriteRequest {
        #[prost(message, repeated, tag = "1")]
        pub timeseries: Vec<TimeSeries>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct TimeSeries {
        #[prost(message, repeated, tag = "1")]
        pub labels: Vec<Label>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Label {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
}

/// Plays Mimir's distributor in front of a real Prometheus: `POST /api/v1/push`
/// takes remote-write 1.0 (snappy-compressed `WriteRequest`, `Content-Encoding:
/// snappy`, `X-Prometheus-Remote-Write-Version: 0.1.0`, per
/// <https://prometheus.io/docs/specs/prw/remote_write_spec/>) and needs the tenant
/// in `X-Scope-OrgID` (401 without, as Mimir:
/// <https://grafana.com/docs/mimir/latest/references/http-api/#distributor>). It
/// records the metric names each tenant sent and forwards the request unchanged to
/// Prometheus, whose answer it returns — Prometheus itself ignores tenants.
/// (tenant, metric names of one request) per accepted request.
type Writes = Arc<Mutex<Vec<(String, Vec<String>)>>>;

pub struct RemoteWriteRelay {
    pub addr: SocketAddr,
    received: Writes,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for RemoteWriteRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

#[derive(Clone)]
struct RelayState {
    received: Writes,
    upstream: String,
    http: reqwest::Client,
}

impl RemoteWriteRelay {
    pub async fn start(upstream: String) -> RemoteWriteRelay {
        async fn push(State(s): State<RelayState>, headers: HeaderMap, body: Bytes) -> Response {
            let tenant = match org_id(&headers) {
                Ok(t) => t,
                Err(r) => return r,
            };
            if !header_is(&headers, header::CONTENT_ENCODING, "snappy")
                || !header_is(&headers, "x-prometheus-remote-write-version", "0.1.0")
                || !header_is(&headers, header::CONTENT_TYPE, "application/x-protobuf")
            {
                return (
                    StatusCode::BAD_REQUEST,
                    "expected remote-write 1.0 headers (snappy, 0.1.0, application/x-protobuf)",
                )
                    .into_response();
            }
            let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
                Ok(r) => r,
                Err(e) => return (StatusCode::BAD_REQUEST, format!("snappy: {e}")).into_response(),
            };
            let req = match prompb::WriteRequest::decode(&raw[..]) {
                Ok(r) => r,
                Err(e) => {
                    return (StatusCode::BAD_REQUEST, format!("cannot decode: {e}"))
                        .into_response();
                }
            };
            let names = req
                .timeseries
                .iter()
                .filter_map(|ts| ts.labels.iter().find(|l| l.name == "__name__"))
                .map(|l| l.value.clone())
                .collect();
            let mut fwd = s.http.post(&s.upstream).body(body);
            for name in [
                header::CONTENT_TYPE.as_str(),
                header::CONTENT_ENCODING.as_str(),
                "x-prometheus-remote-write-version",
            ] {
                if let Some(v) = headers.get(name) {
                    fwd = fwd.header(name, v.as_bytes());
                }
            }
            match fwd.send().await {
                Ok(r) => {
                    let code = r.status().as_u16();
                    if (200..300).contains(&code) {
                        s.received.lock().unwrap().push((tenant, names));
                    }
                    let text = r.text().await.unwrap_or_default();
                    (StatusCode::from_u16(code).unwrap(), text).into_response()
                }
                Err(e) => (StatusCode::BAD_GATEWAY, format!("prometheus: {e}")).into_response(),
            }
        }
        let received = Arc::new(Mutex::new(Vec::new()));
        let state = RelayState {
            received: received.clone(),
            upstream,
            http: reqwest::Client::new(),
        };
        let router = Router::new()
            .route("/api/v1/push", post(push))
            .with_state(state);
        let (addr, task) = serve(router).await;
        RemoteWriteRelay {
            addr,
            received,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/api/v1/push", self.addr)
    }

    pub fn received(&self) -> Vec<(String, Vec<String>)> {
        self.received.lock().unwrap().clone()
    }
}

// ---------------------------------------------------------------- Prometheus

/// A real Prometheus with the remote-write receiver on, killed on drop.
pub use mop_test_support::prometheus::Prometheus;
