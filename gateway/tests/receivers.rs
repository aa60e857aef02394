//! OTLP/HTTP and OTLP/gRPC receivers: encodings, limits, partial success,
//! backpressure.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::io::Write;
use std::time::Duration;

use common::fakes;
use common::otlp::{logs_from, spans_from, spans_seen};
use common::{eventually, metric_value, start_gateway, tenant};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

fn traces(
    items: Vec<opentelemetry_proto::tonic::trace::v1::ResourceSpans>,
) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: items,
    }
}

#[tokio::test]
async fn http_protobuf_json_and_gzip_are_accepted_and_exported() {
    let tempo = fakes::tempo().await;
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    })
    .await;
    let client = reqwest::Client::new();

    let body = traces(vec![spans_from(Some("shop"), "protobuf", 1, 3)]).encode_to_vec();
    let r = client
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/x-protobuf");
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    assert_eq!(resp.partial_success, None);

    // JSON as the OTLP spec encodes it: hex ids, lowerCamelCase, int64 as strings.
    let json = serde_json::json!({
        "resourceSpans": [{
            "resource": {"attributes": [
                {"key": "k8s.namespace.name", "value": {"stringValue": "shop"}},
                {"key": "service.name", "value": {"stringValue": "json-svc"}}
            ]},
            "scopeSpans": [{"spans": [{
                "traceId": "5b8efff798038103d269b633813fc60c",
                "spanId": "eee19b7ec3c1b174",
                "name": "GET /",
                "kind": 2,
                "startTimeUnixNano": "1544712660000000000",
                "endTimeUnixNano": "1544712661000000000",
                "attributes": [{"key": "test.origin", "value": {"stringValue": "json"}}]
            }]}]
        }]
    });
    let r = client
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/json")
        .body(json.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&traces(vec![spans_from(Some("shop"), "gzip", 10, 2)]).encode_to_vec())
        .unwrap();
    let r = client
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    assert!(
        eventually(Duration::from_secs(5), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == 6)
        .await,
        "{:?}",
        spans_seen(&tempo.state.received())
    );
    let seen = spans_seen(&tempo.state.received());
    for origin in ["protobuf", "json", "gzip"] {
        assert!(
            seen.iter()
                .any(|(t, ns, o)| t == "team-a" && ns == "shop" && o == origin),
            "{seen:?}"
        );
    }
    let json_span = tempo
        .state
        .received()
        .iter()
        .flat_map(|(_, r)| r.resource_spans.clone())
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .find(|s| s.name == "GET /")
        .unwrap();
    assert_eq!(hex(&json_span.trace_id), "5b8efff798038103d269b633813fc60c");
    assert_eq!(json_span.start_time_unix_nano, 1_544_712_660_000_000_000);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[tokio::test]
async fn oversized_bad_and_partially_routable_requests_get_the_right_answers() {
    let tempo = fakes::tempo().await;
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.max_request_bytes = 4096;
    })
    .await;
    let client = reqwest::Client::new();
    let post = |ct: &'static str, enc: Option<&'static str>, body: Vec<u8>| {
        let mut r = client
            .post(gw.http_url("/v1/traces"))
            .header("content-type", ct)
            .body(body);
        if let Some(e) = enc {
            r = r.header("content-encoding", e);
        }
        r.send()
    };

    let big = traces(vec![spans_from(Some("shop"), "big", 1, 200)]).encode_to_vec();
    assert!(big.len() > 4096);
    assert_eq!(
        post("application/x-protobuf", None, big.clone())
            .await
            .unwrap()
            .status(),
        413
    );

    // Small on the wire, big once inflated: still refused, and not inflated whole.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![0u8; 1 << 20]).unwrap();
    let bomb = gz.finish().unwrap();
    assert!(bomb.len() < 4096);
    assert_eq!(
        post("application/x-protobuf", Some("gzip"), bomb)
            .await
            .unwrap()
            .status(),
        413
    );

    assert_eq!(
        post("text/plain", None, vec![1, 2]).await.unwrap().status(),
        415
    );
    assert_eq!(
        post("application/x-protobuf", None, vec![0xff, 0xff, 0xff])
            .await
            .unwrap()
            .status(),
        400
    );

    // One resource routable, one not: 200 with partial_success naming the namespace.
    let mixed = traces(vec![
        spans_from(Some("shop"), "ok", 1, 2),
        spans_from(Some("stranger"), "lost", 5, 3),
    ]);
    let r = post("application/x-protobuf", None, mixed.encode_to_vec())
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let resp = ExportTraceServiceResponse::decode(r.bytes().await.unwrap()).unwrap();
    let ps = resp.partial_success.unwrap();
    assert_eq!(ps.rejected_spans, 3);
    assert!(
        ps.error_message.contains("stranger"),
        "{}",
        ps.error_message
    );

    // Nothing routable: a clear 400, not a silent drop.
    let r = post(
        "application/x-protobuf",
        None,
        traces(vec![spans_from(Some("stranger"), "lost", 9, 1)]).encode_to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("stranger"));

    // Logs have no backend configured here: refused, not accepted and lost.
    let r = client
        .post(gw.http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(
            ExportLogsServiceRequest {
                resource_logs: vec![logs_from(Some("shop"), "s", &["x"])],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_rejected_items_total",
            &["reason=\"UnknownNamespace\""]
        ),
        4.0,
        "{text}"
    );
}

#[tokio::test]
async fn grpc_with_gzip_routes_and_reports_partial_success() {
    let tempo = fakes::tempo().await;
    let gw = start_gateway(&[tenant("team-a", &["shop-*"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    })
    .await;
    let mut client = TraceServiceClient::connect(gw.grpc_url())
        .await
        .unwrap()
        .send_compressed(tonic::codec::CompressionEncoding::Gzip);
    let resp = client
        .export(traces(vec![
            spans_from(Some("shop-eu"), "grpc", 1, 4),
            spans_from(None, "no-namespace", 10, 1),
        ]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.partial_success.unwrap().rejected_spans, 1);
    assert!(
        eventually(Duration::from_secs(5), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == 4)
        .await
    );
    assert!(
        spans_seen(&tempo.state.received())
            .iter()
            .all(|(t, ns, _)| t == "team-a" && ns == "shop-eu")
    );

    let err = client
        .export(traces(vec![spans_from(Some("elsewhere"), "x", 20, 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn full_queue_pushes_back_with_429_and_resource_exhausted() {
    let tempo = fakes::tempo().await;
    // Backend down: the exporter holds its only in-flight slot retrying, the queue
    // fills, and clients must be told to back off rather than be silently dropped.
    tempo
        .state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.queue_capacity = 2;
        s.max_in_flight = 1;
        s.batch_max_items = 1;
        s.client_retry_after_s = 7;
    })
    .await;
    let client = reqwest::Client::new();
    let mut statuses = Vec::new();
    for i in 0..20 {
        let r = client
            .post(gw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(traces(vec![spans_from(Some("shop"), "bp", i * 10, 1)]).encode_to_vec())
            .send()
            .await
            .unwrap();
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "7");
        }
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let text = gw.metrics_text().await;
    // Refused before decoding, yet counted in spans as every refusal is.
    let refused = statuses.iter().filter(|s| **s == 429).count() as f64;
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_rejected_items_total",
            &["reason=\"QueueFull\""]
        ),
        refused,
        "{text}"
    );
    assert!(
        metric_value(&text, "mop_gateway_queue_items", &["tenant=\"team-a\""]) >= 1.0,
        "{text}"
    );
    // A full queue does not skip identifying the sender: a bad credential is
    // still answered 401, not 429.
    let r = client
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .header("authorization", "Bearer not-a-known-token")
        .body(traces(vec![spans_from(Some("shop"), "bp", 998, 1)]).encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let mut grpc = TraceServiceClient::connect(gw.grpc_url()).await.unwrap();
    let err = grpc
        .export(traces(vec![spans_from(Some("shop"), "bp", 999, 1)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);
    // RetryInfo makes OTLP SDKs retry instead of dropping (OTLP spec, "Failures").
    let details = mop_gateway::receiver::grpc::RpcStatus::decode(err.details()).unwrap();
    assert_eq!(
        details.details[0].type_url,
        "type.googleapis.com/google.rpc.RetryInfo"
    );
    let info =
        mop_gateway::receiver::grpc::RetryInfo::decode(&details.details[0].value[..]).unwrap();
    assert_eq!(info.retry_delay.unwrap().seconds, 7);

    // Backend back: everything accepted arrives.
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    tempo
        .state
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == accepted)
        .await,
        "accepted {accepted}, got {}",
        spans_seen(&tempo.state.received()).len()
    );
    let text = gw.metrics_text().await;
    assert!(
        metric_value(
            &text,
            "mop_gateway_rejected_items_total",
            &["reason=\"QueueFull\""]
        ) >= 1.0
    );
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "{text}"
    );
    assert_eq!(
        metric_value(&text, "mop_gateway_queue_items", &[]),
        0.0,
        "{text}"
    );
}

/// Issue 13: with a stalled backend the gateway buffers at most
/// `--queue-max-bytes` of decoded requests (here far fewer than
/// `--queue-capacity` requests), answers 429 / RESOURCE_EXHAUSTED beyond it, and
/// takes requests again once the backlog drained; nothing accepted is lost.
#[tokio::test]
async fn byte_budget_bounds_buffered_requests_and_frees_after_drain() {
    let tempo = fakes::tempo().await;
    tempo
        .state
        .down
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let body = |i: u64| traces(vec![spans_from(Some("shop"), "budget", i * 10, 5)]).encode_to_vec();
    let len = body(0).len();
    // Room for four requests and a half: the fifth does not fit.
    let budget = 4 * len + len / 2;
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.queue_capacity = 1024;
        s.queue_max_bytes = budget;
        s.max_in_flight = 1;
        s.batch_max_items = 5;
        s.client_retry_after_s = 3;
    })
    .await;
    let client = reqwest::Client::new();
    let post = async |b: Vec<u8>| {
        client
            .post(gw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(b)
            .send()
            .await
            .unwrap()
    };
    let mut statuses = Vec::new();
    for i in 0..40 {
        let b = body(i);
        assert_eq!(
            b.len(),
            len,
            "bodies of equal size keep the arithmetic exact"
        );
        let r = post(b).await;
        if r.status() == 429 {
            assert_eq!(r.headers()["retry-after"], "3");
        }
        statuses.push(r.status().as_u16());
        // Let the stages move what was accepted, so the count below is what
        // the budget allows rather than what the stages had not reached yet.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let accepted = statuses.iter().filter(|s| **s == 200).count();
    // Four requests are charged at a time; one more left the budget when the
    // exporter encoded it into the request it keeps retrying (max_in_flight 1).
    // Without the budget all 40 would have been taken (queue capacity 1024).
    assert!(
        (4..=5).contains(&accepted),
        "accepted {accepted}: {statuses:?}"
    );
    assert!(
        statuses[accepted..].iter().all(|s| *s == 429),
        "{statuses:?}"
    );
    let text = gw.metrics_text().await;
    let charged = metric_value(
        &text,
        "mop_gateway_queue_budget_bytes",
        &["signal=\"Traces\""],
    );
    assert!(
        charged > 0.0 && charged <= budget as f64,
        "charged {charged} of {budget}: {text}"
    );
    let mut grpc = TraceServiceClient::connect(gw.grpc_url()).await.unwrap();
    let err = grpc
        .export(traces(vec![spans_from(Some("shop"), "budget", 9_000, 5)]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::ResourceExhausted);

    // Backend back: the backlog drains, the budget is given back, and the
    // gateway takes requests again.
    tempo
        .state
        .down
        .store(false, std::sync::atomic::Ordering::SeqCst);
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == 5 * accepted)
        .await,
        "accepted {accepted} requests, got {} spans",
        spans_seen(&tempo.state.received()).len()
    );
    assert!(
        eventually(Duration::from_secs(5), async || metric_value(
            &gw.metrics_text().await,
            "mop_gateway_queue_budget_bytes",
            &["signal=\"Traces\""],
        ) == 0.0)
        .await
    );
    for i in 100..110 {
        assert_eq!(post(body(i)).await.status(), 200);
    }
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            == 5 * (accepted + 10))
        .await
    );
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(&text, "mop_gateway_dropped_items_total", &[]),
        0.0,
        "{text}"
    );
}

/// A partial batch holding half the byte budget is sent at once: otherwise,
/// with items large against the budget, one partial batch could hold all of it
/// and every client would be refused until the batch timeout.
#[tokio::test]
async fn a_partial_batch_holding_half_the_byte_budget_is_sent_without_waiting() {
    let tempo = fakes::tempo().await;
    let body = |i: u64| traces(vec![spans_from(Some("shop"), "half", i * 10, 5)]).encode_to_vec();
    let len = body(0).len();
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.queue_max_bytes = 4 * len;
        // Neither the item count nor the timeout would send a batch in time.
        s.batch_max_items = 1_000_000;
        s.batch_timeout_ms = 60_000;
    })
    .await;
    let client = reqwest::Client::new();
    let started = std::time::Instant::now();
    let mut accepted = 0;
    let mut i = 0;
    while accepted < 20 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "only {accepted} requests accepted: the budget stays held"
        );
        let r = client
            .post(gw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body(i))
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => {
                accepted += 1;
                i += 1;
            }
            429 => tokio::time::sleep(Duration::from_millis(10)).await,
            other => panic!("unexpected {other}"),
        }
    }
    // Everything but a last partial batch under half the budget has arrived.
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            >= 5 * 18)
        .await,
        "got {} spans",
        spans_seen(&tempo.state.received()).len()
    );
}

/// The OTLP/gRPC trace service is the gateway's own (it hands its handler the
/// request's bytes, for the ring): it must refuse as the generated servers of
/// the other signals do.
#[tokio::test]
async fn grpc_trace_service_refuses_oversized_malformed_and_unknown_calls_as_the_generated_server_does()
 {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
    use opentelemetry_proto::tonic::metrics::v1::ResourceMetrics;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    let tempo = fakes::tempo().await;
    // No metrics backend: the size limit refuses before that matters.
    let gw = start_gateway(&[tenant("team-a", &["shop"], false)], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
        s.max_request_bytes = 4096;
    })
    .await;

    let big = traces(vec![spans_from(Some("shop"), "big", 1, 200)]);
    assert!(big.encoded_len() > 4096);
    let mut client = TraceServiceClient::connect(gw.grpc_url()).await.unwrap();
    let traces_st = client.export(big).await.unwrap_err();
    let big_metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![common::otlp::kv("x", &"y".repeat(5000))],
                ..Default::default()
            }),
            ..Default::default()
        }],
    };
    let mut metrics = MetricsServiceClient::connect(gw.grpc_url()).await.unwrap();
    let metrics_st = metrics.export(big_metrics).await.unwrap_err();
    assert_eq!(
        traces_st.code(),
        metrics_st.code(),
        "{traces_st} / {metrics_st}"
    );
    assert_eq!(traces_st.code(), tonic::Code::OutOfRange, "{traces_st}");

    let channel = tonic::transport::Endpoint::from_shared(gw.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = |path: &'static str, body: Vec<u8>| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            grpc.unary(
                tonic::Request::new(bytes::Bytes::from(body)),
                tonic::codegen::http::uri::PathAndQuery::from_static(path),
                mop_gateway::ring::forward::RawCodec,
            )
            .await
        }
    };
    let bad = vec![0x0a, 0x10, 0x01];
    let full = ExportTraceServiceRequest::decode(&bad[..])
        .unwrap_err()
        .to_string();
    let st = call(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
        bad,
    )
    .await
    .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Internal);
    assert_eq!(st.message(), full);
    let st = call(
        "/opentelemetry.proto.collector.trace.v1.TraceService/Nope",
        vec![],
    )
    .await
    .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Unimplemented);
    grpc.ready().await.unwrap();
}
