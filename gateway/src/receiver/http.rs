//! OTLP/HTTP receiver (<https://opentelemetry.io/docs/specs/otlp/#otlphttp>):
//! `POST /v1/traces|metrics|logs`, binary protobuf or JSON, optional gzip; the
//! response uses the request's content type; failures carry a `google.rpc.Status`.

use std::io::Read;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::{Error, HeaderText, Ingest, OtlpRequest};
use crate::telemetry::RejectReason;

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// `google.rpc.Status`, the OTLP/HTTP error body.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
pub struct RpcStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(string, tag = "2")]
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct HttpState {
    pub ingest: Ingest,
    pub max_bytes: usize,
}

pub fn router(state: HttpState) -> Router {
    let limit = state.max_bytes;
    Router::new()
        .route("/v1/traces", post(handle::<ExportTraceServiceRequest>))
        .route("/v1/metrics", post(handle::<ExportMetricsServiceRequest>))
        .route("/v1/logs", post(handle::<ExportLogsServiceRequest>))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(state)
}

#[derive(Clone, Copy, PartialEq)]
enum Format {
    Protobuf,
    Json,
}

fn error(
    format: Format,
    status: StatusCode,
    grpc_code: i32,
    message: String,
    retry_after: Option<u64>,
) -> Response {
    let body = RpcStatus {
        code: grpc_code,
        message,
    };
    let (ct, bytes) = match format {
        Format::Protobuf => (PROTOBUF, body.encode_to_vec()),
        Format::Json => (JSON, serde_json::to_vec(&body).unwrap_or_default()),
    };
    let mut resp = (status, [(header::CONTENT_TYPE, ct)], bytes).into_response();
    if let Some(s) = retry_after
        && let Ok(v) = HeaderValue::from_str(&s.to_string())
    {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}

async fn handle<Req: OtlpRequest>(
    State(state): State<HttpState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let signal = <Req::Item as crate::signal::ResourceItems>::SIGNAL;
    let telemetry = &state.ingest.telemetry;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let format = match content_type.as_str() {
        PROTOBUF => Format::Protobuf,
        JSON => Format::Json,
        other => {
            return error(
                Format::Protobuf,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                format!("content type {other:?} is not supported; use {PROTOBUF} or {JSON}"),
                None,
            );
        }
    };
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    let raw: Bytes = match encoding.as_str() {
        "identity" | "" => body,
        "gzip" => {
            let mut out = Vec::new();
            // Reading one byte past the limit tells "too big" from "exactly the limit"
            // without inflating a zip bomb into memory.
            let limit = state.max_bytes as u64 + 1;
            match flate2::read::GzDecoder::new(&body[..])
                .take(limit)
                .read_to_end(&mut out)
            {
                Ok(_) if out.len() > state.max_bytes => {
                    telemetry.rejected(signal, RejectReason::TooLarge, 0);
                    return error(
                        format,
                        StatusCode::PAYLOAD_TOO_LARGE,
                        8,
                        format!("decompressed body exceeds {} bytes", state.max_bytes),
                        None,
                    );
                }
                Ok(_) => Bytes::from(out),
                Err(e) => {
                    telemetry.rejected(signal, RejectReason::Malformed, 0);
                    return error(
                        format,
                        StatusCode::BAD_REQUEST,
                        3,
                        format!("invalid gzip body: {e}"),
                        None,
                    );
                }
            }
        }
        other => {
            return error(
                format,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                3,
                format!("content encoding {other:?} is not supported; use gzip or none"),
                None,
            );
        }
    };
    let retry = state.ingest.retry_after_s;
    // A full queue refuses the request before it is decoded: decoding is most of
    // what a span costs, and the client sends the same body again after
    // Retry-After. Only the items are counted, for the refusal's metric; a body
    // that cannot even be counted goes on to be refused as malformed.
    if format == Format::Protobuf
        && Ingest::full(Req::queue(&state.ingest))
        && let Some(items) = super::count::items(signal, &raw)
    {
        let auth = HeaderText::of(headers.get(header::AUTHORIZATION).map(|v| v.to_str()));
        let org = HeaderText::of(headers.get("x-scope-orgid").map(|v| v.to_str()));
        let e = state
            .ingest
            .refuse_full(signal, auth, org, Some(peer.ip()), items)
            .await;
        return refusal(format, e, retry);
    }
    let request = match format {
        Format::Protobuf => {
            Req::decode_items(raw.clone(), &state.ingest).map_err(|e| e.to_string())
        }
        Format::Json => serde_json::from_slice::<Req>(&raw)
            .map(Req::into_items)
            .map_err(|e| e.to_string()),
    };
    let items = match request {
        Ok(r) => r,
        Err(e) => {
            telemetry.rejected(signal, RejectReason::Malformed, 0);
            return error(
                format,
                StatusCode::BAD_REQUEST,
                3,
                format!("cannot decode request: {e}"),
                None,
            );
        }
    };
    let auth = HeaderText::of(headers.get(header::AUTHORIZATION).map(|v| v.to_str()));
    let org = HeaderText::of(headers.get("x-scope-orgid").map(|v| v.to_str()));
    match state
        .ingest
        .ingest_headers(
            Req::queue(&state.ingest),
            auth,
            org,
            Some(peer.ip()),
            items,
            raw.len(),
        )
        .await
    {
        Ok(accepted) => {
            let resp = Req::response(&accepted);
            let bytes = match format {
                Format::Protobuf => resp.encode_to_vec(),
                Format::Json => serde_json::to_vec(&resp).unwrap_or_default(),
            };
            let ct = if format == Format::Protobuf {
                PROTOBUF
            } else {
                JSON
            };
            (StatusCode::OK, [(header::CONTENT_TYPE, ct)], bytes).into_response()
        }
        Err(e) => refusal(format, e, retry),
    }
}

fn refusal(format: Format, e: Error, retry: u64) -> Response {
    let msg = e.to_string();
    match e {
        Error::Unauthenticated(_) => error(format, StatusCode::UNAUTHORIZED, 16, msg, None),
        Error::Forbidden(_) => error(format, StatusCode::FORBIDDEN, 7, msg, None),
        Error::Rejected(_) => error(format, StatusCode::BAD_REQUEST, 3, msg, None),
        Error::QueueFull(_) => error(format, StatusCode::TOO_MANY_REQUESTS, 8, msg, Some(retry)),
        Error::ShuttingDown => error(
            format,
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            msg,
            Some(retry),
        ),
        Error::NotConfigured(_) => error(format, StatusCode::NOT_FOUND, 12, msg, None),
        Error::Unavailable(_) => error(
            format,
            StatusCode::SERVICE_UNAVAILABLE,
            14,
            msg,
            Some(retry),
        ),
    }
}
