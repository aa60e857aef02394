//! Traces to Tempo over OTLP/HTTP protobuf (`POST /v1/traces` on Tempo's
//! distributor OTLP receiver; the tenant in `X-Scope-OrgID`).
//!
//! The body is encoded here rather than with prost's `encode_to_vec`, byte for
//! byte the same (a test compares them). prost writes a nested message's length
//! before the message, computing it on the spot: for a batch of
//! `ExportTraceServiceRequest → ResourceSpans → ScopeSpans → Span`, every span's
//! length was computed four times (once for the buffer's capacity, once per
//! enclosing level), and `Span::encoded_len` was the largest single item of the
//! gateway's end-to-end profile (docs/performance.md, "Gateway vs rotel"). Here
//! each span's length is computed once, kept, and the three outer levels are
//! written from the kept lengths; below the span, prost encodes as before.

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use super::{Encoded, Encoder};
use crate::signal::count_items;

#[derive(Debug, Default)]
pub struct TempoEncoder;

impl Encoder<ResourceSpans> for TempoEncoder {
    fn encode(&self, _tenant: &str, items: Vec<ResourceSpans>) -> Encoded {
        let n = count_items(&items);
        let body = encode_request(&items);
        Encoded {
            body: body.into(),
            content_type: "application/x-protobuf".into(),
            items: n,
            ..Default::default()
        }
    }
}

/// The key of a length-delimited field (wire type 2) with a field number below 16,
/// which is one byte. Field numbers are those of opentelemetry-proto v1
/// `collector/trace/v1/trace_service.proto` and `trace/v1/trace.proto`:
/// `ExportTraceServiceRequest.resource_spans = 1`; `ResourceSpans.resource = 1`,
/// `scope_spans = 2`, `schema_url = 3`; `ScopeSpans.scope = 1`, `spans = 2`,
/// `schema_url = 3`.
const fn key(field: u8) -> u8 {
    (field << 3) | 2
}

fn varint_len(v: usize) -> usize {
    prost::encoding::encoded_len_varint(v as u64)
}

fn put_varint(buf: &mut Vec<u8>, v: usize) {
    prost::encoding::encode_varint(v as u64, buf);
}

/// A length-delimited field of `len` bytes, with its key and length.
fn field_len(len: usize) -> usize {
    1 + varint_len(len) + len
}

/// A proto3 string field: absent when empty.
fn string_field_len(s: &str) -> usize {
    if s.is_empty() { 0 } else { field_len(s.len()) }
}

fn put_string_field(buf: &mut Vec<u8>, field: u8, s: &str) {
    if !s.is_empty() {
        buf.push(key(field));
        put_varint(buf, s.len());
        buf.extend_from_slice(s.as_bytes());
    }
}

/// A nested message field whose length is already known.
fn put_message_field<M: Message>(buf: &mut Vec<u8>, field: u8, len: usize, m: &M) {
    buf.push(key(field));
    put_varint(buf, len);
    m.encode_raw(buf);
}

/// `ExportTraceServiceRequest { resource_spans: items }` encoded as prost encodes
/// it (fields in field-number order, optional messages when present even if
/// empty, strings when not empty), with each span's length computed once.
pub fn encode_request(items: &[ResourceSpans]) -> Vec<u8> {
    let mut span_lens = Vec::with_capacity(count_items(items));
    let mut scope_lens = Vec::new();
    let mut resource_lens = Vec::with_capacity(items.len());
    let mut total = 0;
    for rs in items {
        let mut rs_len = rs
            .resource
            .as_ref()
            .map_or(0, |r| field_len(r.encoded_len()));
        for ss in &rs.scope_spans {
            let mut ss_len = ss.scope.as_ref().map_or(0, |s| field_len(s.encoded_len()));
            for span in &ss.spans {
                let len = span.encoded_len();
                span_lens.push(len);
                ss_len += field_len(len);
            }
            ss_len += string_field_len(&ss.schema_url);
            scope_lens.push(ss_len);
            rs_len += field_len(ss_len);
        }
        rs_len += string_field_len(&rs.schema_url);
        resource_lens.push(rs_len);
        total += field_len(rs_len);
    }
    let mut buf = Vec::with_capacity(total);
    let mut span_lens = span_lens.into_iter();
    let mut scope_lens = scope_lens.into_iter();
    for (rs, rs_len) in items.iter().zip(resource_lens) {
        buf.push(key(1));
        put_varint(&mut buf, rs_len);
        if let Some(r) = &rs.resource {
            put_message_field(&mut buf, 1, r.encoded_len(), r);
        }
        for (ss, ss_len) in rs.scope_spans.iter().zip(&mut scope_lens) {
            buf.push(key(2));
            put_varint(&mut buf, ss_len);
            if let Some(s) = &ss.scope {
                put_message_field(&mut buf, 1, s.encoded_len(), s);
            }
            for (span, len) in ss.spans.iter().zip(&mut span_lens) {
                put_message_field(&mut buf, 2, len, span);
            }
            put_string_field(&mut buf, 3, &ss.schema_url);
        }
        put_string_field(&mut buf, 3, &rs.schema_url);
    }
    debug_assert_eq!(buf.len(), total);
    buf
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{
        AnyValue, InstrumentationScope, KeyValue, any_value,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, span};

    fn prost_body(items: &[ResourceSpans]) -> Vec<u8> {
        ExportTraceServiceRequest {
            resource_spans: items.to_vec(),
        }
        .encode_to_vec()
    }

    fn attr(k: &str, v: String) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v)),
            }),
        }
    }

    fn span(i: usize, attr_bytes: usize) -> Span {
        Span {
            trace_id: vec![i as u8; 16],
            span_id: vec![i as u8; 8],
            parent_span_id: if i.is_multiple_of(3) {
                vec![]
            } else {
                vec![1; 8]
            },
            name: format!("span {i}"),
            kind: span::SpanKind::Server as i32,
            start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
            end_time_unix_nano: 1_700_000_000_000_500_000 + i as u64,
            attributes: vec![attr("payload", "x".repeat(attr_bytes))],
            events: vec![span::Event {
                name: "e".into(),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn body_is_what_prost_encodes() {
        let cases: Vec<Vec<ResourceSpans>> = vec![
            vec![],
            // Everything absent or empty: an empty ResourceSpans still counts.
            vec![ResourceSpans::default()],
            // Present but empty resource and scope are written (as prost does).
            vec![ResourceSpans {
                resource: Some(Resource::default()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope::default()),
                    spans: vec![],
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
            // Schema URLs, several scopes and resources, lengths that need 1, 2 and
            // 3 varint bytes at every level (attributes of 10 B, 200 B, 20 kB).
            (0..3)
                .map(|r| ResourceSpans {
                    resource: Some(Resource {
                        attributes: vec![
                            attr("k8s.namespace.name", format!("ns{r}")),
                            attr("service.name", "checkout".into()),
                        ],
                        dropped_attributes_count: r,
                        ..Default::default()
                    }),
                    scope_spans: (0..2)
                        .map(|s| ScopeSpans {
                            scope: (s == 0).then(|| InstrumentationScope {
                                name: "io.opentelemetry.http".into(),
                                version: "1.2.3".into(),
                                ..Default::default()
                            }),
                            spans: (0..5)
                                .map(|i| span(i, [10, 200, 20_000][(i + s) % 3]))
                                .collect(),
                            schema_url: if s == 1 {
                                "https://opentelemetry.io/schemas/1.21.0".into()
                            } else {
                                String::new()
                            },
                        })
                        .collect(),
                    schema_url: if r == 2 {
                        "https://opentelemetry.io/schemas/1.24.0".into()
                    } else {
                        String::new()
                    },
                })
                .collect(),
        ];
        for (i, items) in cases.iter().enumerate() {
            let ours = encode_request(items);
            assert_eq!(ours, prost_body(items), "case {i}");
            let back = ExportTraceServiceRequest::decode(&ours[..]).unwrap();
            assert_eq!(&back.resource_spans, items, "case {i}");
        }
    }

    #[test]
    fn varint_lengths_match_the_bytes_written() {
        for v in [
            0usize,
            1,
            127,
            128,
            16_383,
            16_384,
            2_097_151,
            2_097_152,
            usize::MAX,
        ] {
            let mut buf = Vec::new();
            put_varint(&mut buf, v);
            assert_eq!(buf.len(), varint_len(v), "{v}");
            assert_eq!(buf.len(), prost::length_delimiter_len(v), "{v}");
        }
    }
}
