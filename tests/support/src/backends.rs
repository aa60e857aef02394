//! Strict fakes of the backends the gateway exports to (Tempo, Loki, Mimir's
//! OTLP endpoint) and a remote-write relay that plays Mimir's distributor in
//! front of a real Prometheus. They speak the documented wire format and refuse
//! what the real servers refuse; they decode with their own message
//! definitions, not the gateway's, so a wrong tag in the product fails here.
// An axum `Response` is the natural error of a handler helper.
#![allow(clippy::result_large_err)]

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

/// What a fake received and how it should misbehave.
pub struct FakeState<T> {
    /// Accepted requests with their tenant.
    pub received: Mutex<Vec<(String, T)>>,
    /// Responses to give instead of success, front first: (status, Retry-After).
    pub failures: Mutex<VecDeque<(u16, Option<String>)>>,
    /// While set, every request gets 503 (a backend outage).
    pub down: AtomicBool,
    pub requests: AtomicUsize,
}

impl<T> Default for FakeState<T> {
    fn default() -> Self {
        Self {
            received: Mutex::new(Vec::new()),
            failures: Mutex::new(VecDeque::new()),
            down: AtomicBool::new(false),
            requests: AtomicUsize::new(0),
        }
    }
}

impl<T: Clone> FakeState<T> {
    pub fn fail_next(&self, status: u16, retry_after: Option<&str>) {
        self.failures
            .lock()
            .unwrap()
            .push_back((status, retry_after.map(String::from)));
    }
    pub fn received(&self) -> Vec<(String, T)> {
        self.received.lock().unwrap().clone()
    }
}

pub struct Fake<T> {
    pub addr: SocketAddr,
    pub state: Arc<FakeState<T>>,
    task: tokio::task::JoinHandle<()>,
}

impl<T> Fake<T> {
    /// `http://<addr><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

impl<T> Drop for Fake<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn injected_failure<T>(state: &FakeState<T>) -> Option<Response> {
    state.requests.fetch_add(1, Ordering::SeqCst);
    if state.down.load(Ordering::SeqCst) {
        return Some((StatusCode::SERVICE_UNAVAILABLE, "backend down").into_response());
    }
    let (status, retry_after) = state.failures.lock().unwrap().pop_front()?;
    let mut resp = (StatusCode::from_u16(status).unwrap(), "injected failure").into_response();
    if let Some(r) = retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, r.parse().unwrap());
    }
    Some(resp)
}

/// Tempo and Loki with `multitenancy_enabled` refuse a write without a tenant with
/// 401 "no org id".
fn org_id(headers: &HeaderMap) -> Result<String, Response> {
    match headers.get("x-scope-orgid").and_then(|v| v.to_str().ok()) {
        Some(v) if !v.is_empty() => Ok(v.to_string()),
        _ => Err((StatusCode::UNAUTHORIZED, "no org id").into_response()),
    }
}

fn content_type(headers: &HeaderMap) -> &str {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

async fn serve(router: Router) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(l, router).await;
    });
    (addr, task)
}

// ---------------------------------------------------------------- Tempo

/// Tempo's distributor OTLP/HTTP receiver: `POST /v1/traces`, binary protobuf
/// `ExportTraceServiceRequest`, tenant in `X-Scope-OrgID`
/// (<https://grafana.com/docs/tempo/latest/api_docs/#ingest> and
/// <https://grafana.com/docs/tempo/latest/operations/manage-advanced-systems/multitenancy/>;
/// OTLP/HTTP per <https://opentelemetry.io/docs/specs/otlp/#otlphttp-request>).
pub async fn tempo() -> Fake<ExportTraceServiceRequest> {
    async fn push(
        State(s): State<Arc<FakeState<ExportTraceServiceRequest>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = injected_failure(&s) {
            return r;
        }
        let tenant = match org_id(&headers) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if content_type(&headers) != "application/x-protobuf" {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected application/x-protobuf",
            )
                .into_response();
        }
        match ExportTraceServiceRequest::decode(&body[..]) {
            Ok(req) => {
                s.received.lock().unwrap().push((tenant, req));
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
    let state = Arc::new(FakeState::default());
    let router = Router::new()
        .route("/v1/traces", post(push))
        .with_state(state.clone());
    let (addr, task) = serve(router).await;
    Fake { addr, state, task }
}

// ---------------------------------------------------------------- Loki

/// `logproto.PushRequest` and friends, written from Loki's `pkg/push/push.proto`.
pub mod logproto {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct PushRequest {
        #[prost(message, repeated, tag = "1")]
        pub streams: Vec<Stream>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Stream {
        #[prost(string, tag = "1")]
        pub labels: String,
        #[prost(message, repeated, tag = "2")]
        pub entries: Vec<Entry>,
        #[prost(uint64, tag = "3")]
        pub hash: u64,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Entry {
        #[prost(message, optional, tag = "1")]
        pub timestamp: Option<Timestamp>,
        #[prost(string, tag = "2")]
        pub line: String,
        #[prost(message, repeated, tag = "3")]
        pub structured_metadata: Vec<LabelPair>,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct LabelPair {
        #[prost(string, tag = "1")]
        pub name: String,
        #[prost(string, tag = "2")]
        pub value: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Timestamp {
        #[prost(int64, tag = "1")]
        pub seconds: i64,
        #[prost(int32, tag = "2")]
        pub nanos: i32,
    }
}

/// Parses a Loki stream selector `{a="b", c="d"}` strictly; `None` if malformed.
pub fn parse_labels(s: &str) -> Option<Vec<(String, String)>> {
    let inner = s.strip_prefix('{')?.strip_suffix('}')?;
    let mut out = Vec::new();
    let mut rest = inner.trim();
    while !rest.is_empty() {
        let eq = rest.find('=')?;
        let name = rest[..eq].trim();
        if name.is_empty()
            || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            || name.starts_with(|c: char| c.is_ascii_digit())
        {
            return None;
        }
        let after = rest[eq + 1..].strip_prefix('"')?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => value.push(chars.next()?.1),
                '"' => break i,
                c => value.push(c),
            }
        };
        out.push((name.to_string(), value));
        rest = after[end + 1..].trim_start();
        rest = rest.strip_prefix(',').unwrap_or(rest).trim_start();
    }
    Some(out)
}

/// Loki's push API: `POST /loki/api/v1/push`, snappy-compressed protobuf
/// `PushRequest`, `Content-Type: application/x-protobuf`, tenant in
/// `X-Scope-OrgID`, 204 on success
/// (<https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>).
/// Refuses streams without labels or with an unparsable label set, as Loki does.
pub async fn loki() -> Fake<logproto::PushRequest> {
    async fn push(
        State(s): State<Arc<FakeState<logproto::PushRequest>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = injected_failure(&s) {
            return r;
        }
        let tenant = match org_id(&headers) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if content_type(&headers) != "application/x-protobuf" {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected application/x-protobuf",
            )
                .into_response();
        }
        let raw = match snap::raw::Decoder::new().decompress_vec(&body) {
            Ok(r) => r,
            Err(e) => return (StatusCode::BAD_REQUEST, format!("snappy: {e}")).into_response(),
        };
        let req = match logproto::PushRequest::decode(&raw[..]) {
            Ok(r) => r,
            Err(e) => {
                return (StatusCode::BAD_REQUEST, format!("cannot decode: {e}")).into_response();
            }
        };
        for st in &req.streams {
            match parse_labels(&st.labels) {
                Some(l) if !l.is_empty() => {}
                _ => {
                    return (
                        StatusCode::BAD_REQUEST,
                        format!("error parsing labels {:?}", st.labels),
                    )
                        .into_response();
                }
            }
            if st.entries.iter().any(|e| e.timestamp.is_none()) {
                return (StatusCode::BAD_REQUEST, "entry without timestamp").into_response();
            }
        }
        s.received.lock().unwrap().push((tenant, req));
        StatusCode::NO_CONTENT.into_response()
    }
    let state = Arc::new(FakeState::default());
    let router = Router::new()
        .route("/loki/api/v1/push", post(push))
        .with_state(state.clone());
    let (addr, task) = serve(router).await;
    Fake { addr, state, task }
}

// ---------------------------------------------------------------- Mimir OTLP

/// Mimir's OTLP ingestion: `POST /otlp/v1/metrics`, OTLP/HTTP protobuf
/// `ExportMetricsServiceRequest`, tenant in `X-Scope-OrgID`
/// (<https://grafana.com/docs/mimir/latest/references/http-api/#otlp>).
pub async fn mimir_otlp()
-> Fake<opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest as Req;
    async fn push(
        State(s): State<Arc<FakeState<Req>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        if let Some(r) = injected_failure(&s) {
            return r;
        }
        let tenant = match org_id(&headers) {
            Ok(t) => t,
            Err(r) => return r,
        };
        if content_type(&headers) != "application/x-protobuf" {
            return (
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "expected application/x-protobuf",
            )
                .into_response();
        }
        match Req::decode(&body[..]) {
            Ok(req) => {
                s.received.lock().unwrap().push((tenant, req));
                StatusCode::OK.into_response()
            }
            Err(e) => (StatusCode::BAD_REQUEST, format!("cannot decode: {e}")).into_response(),
        }
    }
    let state = Arc::new(FakeState::default());
    let router = Router::new()
        .route("/otlp/v1/metrics", post(push))
        .with_state(state.clone());
    let (addr, task) = serve(router).await;
    Fake { addr, state, task }
}

fn header_is(headers: &HeaderMap, name: impl header::AsHeaderName, value: &str) -> bool {
    headers.get(name).and_then(|v| v.to_str().ok()) == Some(value)
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
