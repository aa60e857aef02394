//! A present but unreadable (not visible ASCII) `authorization` or
//! `X-Scope-OrgID` header is refused, never taken as absent: an unreadable token
//! must not turn a request into an anonymous one routed by namespace, and an
//! unreadable tenant name must not skip the "name only your own tenant" check.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::task::{Context, Poll};
use std::time::Duration;

use common::fakes;
use common::otlp::spans_from;
use common::{metric_value, start_gateway, tenant, token_of};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;
use tonic::codegen::http;
use tonic::transport::Channel;

fn request() -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        // "shop" is team-a's namespace: an anonymous request would be accepted.
        resource_spans: vec![spans_from(Some("shop"), "svc", 1_000, 3)],
    }
}

/// A gRPC channel that adds one raw header to every request: tonic's own
/// metadata API only takes visible ASCII, but HTTP/2 carries any byte ≥ 0x80.
#[derive(Clone)]
struct RawHeader {
    inner: Channel,
    name: &'static str,
    value: &'static [u8],
}

impl tower::Service<http::Request<tonic::body::Body>> for RawHeader {
    type Response = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Response;
    type Error = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Error;
    type Future = <Channel as tower::Service<http::Request<tonic::body::Body>>>::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<tonic::body::Body>) -> Self::Future {
        req.headers_mut().insert(
            self.name,
            http::HeaderValue::from_bytes(self.value).unwrap(),
        );
        self.inner.call(req)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_ascii_authorization_or_org_id_is_refused_over_http_and_grpc() {
    let tempo = fakes::tempo().await;
    let gw = start_gateway(&[tenant("team-a", &["shop"], true)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    })
    .await;
    let http = reqwest::Client::new();
    let post = |name: &'static str, value: &'static [u8]| {
        http.post(gw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .header(
                name,
                reqwest::header::HeaderValue::from_bytes(value).unwrap(),
            )
            .body(request().encode_to_vec())
            .send()
    };

    // HTTP: 401 for the token, 400 for the tenant.
    let r = post("authorization", b"Bearer token-team-a-s3cr3t\xe9")
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("not visible ASCII"));
    let r = post("x-scope-orgid", b"team-\xe9").await.unwrap();
    assert_eq!(r.status(), 400);
    // The same tenant name in ASCII with its token is fine: the refusal above is
    // about the bytes, not the request.
    let r = http
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token_of("team-a"))
        .header("x-scope-orgid", "team-a")
        .body(request().encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // gRPC: UNAUTHENTICATED and INVALID_ARGUMENT.
    let channel = Channel::from_shared(gw.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    for (name, value, code) in [
        (
            "authorization",
            &b"Bearer \xff\xfe"[..],
            tonic::Code::Unauthenticated,
        ),
        (
            "x-scope-orgid",
            &b"t\xe9am-a"[..],
            tonic::Code::InvalidArgument,
        ),
    ] {
        let mut c = TraceServiceClient::new(RawHeader {
            inner: channel.clone(),
            name,
            value,
        });
        let err = c.export(request()).await.unwrap_err();
        assert_eq!(err.code(), code, "{name}: {err:?}");
    }

    // Only the one valid request was delivered, and the four refusals counted.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let delivered: usize = tempo
        .state
        .received()
        .iter()
        .map(|(_, r)| r.resource_spans.len())
        .sum();
    assert_eq!(delivered, 1);
    let text = gw.metrics_text().await;
    let rejected = |reason| {
        metric_value(
            &text,
            "mop_gateway_rejected_items_total",
            &["signal=\"Traces\"", reason],
        )
    };
    assert_eq!(rejected("reason=\"Unauthenticated\""), 6.0);
    assert_eq!(rejected("reason=\"Malformed\""), 6.0);
}
