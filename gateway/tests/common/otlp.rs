//! Builders of OTLP test data.

use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};

pub fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
    }
}

pub fn resource(ns: Option<&str>, service: &str) -> Resource {
    let mut attributes = vec![kv("service.name", service)];
    if let Some(ns) = ns {
        attributes.push(kv("k8s.namespace.name", ns));
    }
    Resource {
        attributes,
        ..Default::default()
    }
}

pub fn trace_id(n: u64) -> Vec<u8> {
    let mut id = vec![0u8; 16];
    id[0] = 0xab;
    id[8..].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
    id
}

pub fn span(trace: u64, idx: u64, parent: bool, start_ns: u64, dur_ns: u64, error: bool) -> Span {
    Span {
        trace_id: trace_id(trace),
        span_id: (idx + 1).to_be_bytes().to_vec(),
        parent_span_id: if parent {
            vec![]
        } else {
            1u64.to_be_bytes().to_vec()
        },
        name: format!("op-{idx}"),
        start_time_unix_nano: start_ns,
        end_time_unix_nano: start_ns + dur_ns,
        status: Some(Status {
            code: if error {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Ok as i32
            },
            message: String::new(),
        }),
        ..Default::default()
    }
}

/// `n` root spans of distinct traces, all from namespace `ns`, marked with
/// `test.origin` so the receiving side can tell where each came from.
pub fn spans_from(ns: Option<&str>, origin: &str, first_trace: u64, n: u64) -> ResourceSpans {
    let spans = (0..n)
        .map(|i| {
            let mut s = span(first_trace + i, 0, true, 1_000_000_000, 1_000_000, false);
            s.attributes.push(kv("test.origin", origin));
            s
        })
        .collect();
    ResourceSpans {
        resource: Some(resource(ns, "svc")),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

pub fn logs_from(ns: Option<&str>, service: &str, lines: &[&str]) -> ResourceLogs {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    ResourceLogs {
        resource: Some(resource(ns, service)),
        scope_logs: vec![ScopeLogs {
            log_records: lines
                .iter()
                .enumerate()
                .map(|(i, l)| LogRecord {
                    time_unix_nano: now + i as u64,
                    severity_text: "INFO".into(),
                    body: Some(AnyValue {
                        value: Some(any_value::Value::StringValue((*l).into())),
                    }),
                    attributes: vec![kv("test.origin", l)],
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// (tenant, namespace, origin) of every span a fake Tempo received.
pub fn spans_seen(
    received: &[(
        String,
        opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest,
    )],
) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (tenant, req) in received {
        for rs in &req.resource_spans {
            let ns = rs
                .resource
                .as_ref()
                .and_then(|r| attr(&r.attributes, "k8s.namespace.name"))
                .unwrap_or_default();
            for ss in &rs.scope_spans {
                for s in &ss.spans {
                    let origin = attr(&s.attributes, "test.origin").unwrap_or_default();
                    out.push((tenant.clone(), ns.clone(), origin));
                }
            }
        }
    }
    out
}

pub fn attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
}
