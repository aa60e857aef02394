//! The OTLP load every gateway bench decodes: 200 requests shaped like an
//! agent's, shared so the ring, pipeline and end-to-end figures measure the
//! same bytes.
#![allow(dead_code)] // each bench uses part of it

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;

pub mod sdk;

pub const REQUESTS: usize = 200;
pub const RESOURCES_PER_REQUEST: usize = 4;
pub const SPANS_PER_RESOURCE: usize = 25;
pub const SPANS_PER_REQUEST: usize = RESOURCES_PER_REQUEST * SPANS_PER_RESOURCE;
pub const SPANS_PER_TRACE: usize = 5;
pub const NAMESPACES: [&str; 4] = ["shop", "billing", "search", "infra-eu"];

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

/// Requests shaped like an agent's: every request mixes four namespaces; spans
/// carry the HTTP semantic-convention attributes.
pub fn requests() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(1);
    (0..REQUESTS)
        .map(|r| {
            let resource_spans = (0..RESOURCES_PER_REQUEST)
                .map(|i| {
                    let ns = NAMESPACES[(r + i) % NAMESPACES.len()];
                    let mut trace_id = vec![0u8; 16];
                    let spans = (0..SPANS_PER_RESOURCE)
                        .map(|s| {
                            if s % SPANS_PER_TRACE == 0 {
                                trace_id = (0..16).map(|_| rng.u8(..)).collect();
                            }
                            let start = 1_700_000_000_000_000_000u64 + rng.u64(..1_000_000_000);
                            Span {
                                trace_id: trace_id.clone(),
                                span_id: rng.u64(..).to_be_bytes().to_vec(),
                                parent_span_id: if s % SPANS_PER_TRACE == 0 {
                                    vec![]
                                } else {
                                    rng.u64(..).to_be_bytes().to_vec()
                                },
                                name: "GET /api/v1/items/{id}".into(),
                                kind: 2,
                                start_time_unix_nano: start,
                                end_time_unix_nano: start + rng.u64(..50_000_000),
                                attributes: vec![
                                    kv("http.request.method", "GET"),
                                    kv("http.route", "/api/v1/items/{id}"),
                                    kv("url.path", "/api/v1/items/12345"),
                                    kv("server.address", "items.shop.svc.cluster.local"),
                                    kv("network.peer.address", "10.1.2.3"),
                                    kv("user_agent.original", "Mozilla/5.0 (X11; Linux x86_64)"),
                                ],
                                status: Some(Status {
                                    code: if rng.u8(..100) == 0 { 2 } else { 1 },
                                    message: String::new(),
                                }),
                                ..Default::default()
                            }
                        })
                        .collect();
                    ResourceSpans {
                        resource: Some(Resource {
                            attributes: vec![
                                kv("service.name", "items"),
                                kv("k8s.namespace.name", ns),
                                kv("k8s.pod.name", "items-7c9f8d6b5-x2x4q"),
                                kv("k8s.node.name", "node-12"),
                                kv("telemetry.sdk.language", "go"),
                            ],
                            ..Default::default()
                        }),
                        scope_spans: vec![ScopeSpans {
                            scope: Some(InstrumentationScope {
                                name: "mop-agent".into(),
                                version: "0.1.0".into(),
                                ..Default::default()
                            }),
                            spans,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }.encode_to_vec()
        })
        .collect()
}
