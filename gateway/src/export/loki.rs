//! Logs to Loki's push API: `POST /loki/api/v1/push`, body a snappy-compressed
//! (block format) protobuf `logproto.PushRequest`
//! (<https://grafana.com/docs/loki/latest/reference/loki-http-api/#ingest-logs>,
//! messages from Loki's `pkg/push/push.proto`).
//!
//! Stream labels come from a configured set of resource attributes (names
//! sanitised as Loki's own OTLP ingestion does: `k8s.namespace.name` →
//! `k8s_namespace_name`); every other resource and log attribute, the severity and
//! the trace context go to structured metadata; the body is the line.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::logs::v1::ResourceLogs;
use prost::Message;

use super::{Encoded, Encoder};
use crate::export::remote_write::sanitize_label_name;
use crate::signal::any_value_to_string;
use crate::telemetry::DropReason;

/// `logproto.PushRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct PushRequest {
    #[prost(message, repeated, tag = "1")]
    pub streams: Vec<StreamAdapter>,
}

/// `logproto.StreamAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct StreamAdapter {
    /// Prometheus-style label set: `{a="b", c="d"}`.
    #[prost(string, tag = "1")]
    pub labels: String,
    #[prost(message, repeated, tag = "2")]
    pub entries: Vec<EntryAdapter>,
    #[prost(uint64, tag = "3")]
    pub hash: u64,
}

/// `logproto.EntryAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct EntryAdapter {
    #[prost(message, optional, tag = "1")]
    pub timestamp: Option<Timestamp>,
    #[prost(string, tag = "2")]
    pub line: String,
    #[prost(message, repeated, tag = "3")]
    pub structured_metadata: Vec<LabelPairAdapter>,
}

/// `logproto.LabelPairAdapter`.
#[derive(Clone, PartialEq, Message)]
pub struct LabelPairAdapter {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `google.protobuf.Timestamp`.
#[derive(Clone, PartialEq, Message)]
pub struct Timestamp {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

#[derive(Debug, Clone)]
pub struct LokiEncoder {
    /// OTLP resource attribute names that become stream labels.
    pub label_attributes: Vec<String>,
}

/// Renders a label set the way Loki parses it (Prometheus syntax, sorted).
pub fn format_labels(labels: &BTreeMap<String, String>) -> String {
    let parts: Vec<String> = labels
        .iter()
        .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
        .collect();
    format!("{{{}}}", parts.join(", "))
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

impl LokiEncoder {
    pub fn build(&self, items: Vec<ResourceLogs>) -> (PushRequest, usize) {
        let mut streams: BTreeMap<String, Vec<(u64, EntryAdapter)>> = BTreeMap::new();
        let mut n = 0;
        for rl in items {
            let attrs = rl.resource.map(|r| r.attributes).unwrap_or_default();
            let mut labels = BTreeMap::new();
            let mut resource_meta = Vec::new();
            for kv in &attrs {
                let value = kv
                    .value
                    .as_ref()
                    .map(any_value_to_string)
                    .unwrap_or_default();
                let name = sanitize_label_name(&kv.key);
                if self.label_attributes.contains(&kv.key) {
                    labels.insert(name, value);
                } else {
                    resource_meta.push(LabelPairAdapter { name, value });
                }
            }
            if labels.is_empty() {
                // Loki refuses a stream without labels; this is what its own OTLP
                // endpoint uses for the same case.
                labels.insert("service_name".into(), "unknown_service".into());
            }
            let key = format_labels(&labels);
            let entries = streams.entry(key).or_default();
            for sl in rl.scope_logs {
                for rec in sl.log_records {
                    n += 1;
                    let ts = match (rec.time_unix_nano, rec.observed_time_unix_nano) {
                        (0, 0) => now_nanos(),
                        (0, o) => o,
                        (t, _) => t,
                    };
                    let mut meta = resource_meta.clone();
                    for kv in &rec.attributes {
                        meta.push(LabelPairAdapter {
                            name: sanitize_label_name(&kv.key),
                            value: kv
                                .value
                                .as_ref()
                                .map(any_value_to_string)
                                .unwrap_or_default(),
                        });
                    }
                    if !rec.severity_text.is_empty() {
                        meta.push(LabelPairAdapter {
                            name: "severity_text".into(),
                            value: rec.severity_text.clone(),
                        });
                    }
                    if !rec.trace_id.is_empty() {
                        meta.push(LabelPairAdapter {
                            name: "trace_id".into(),
                            value: hex(&rec.trace_id),
                        });
                    }
                    if !rec.span_id.is_empty() {
                        meta.push(LabelPairAdapter {
                            name: "span_id".into(),
                            value: hex(&rec.span_id),
                        });
                    }
                    let line = rec
                        .body
                        .as_ref()
                        .map(any_value_to_string)
                        .unwrap_or_default();
                    entries.push((
                        ts,
                        EntryAdapter {
                            timestamp: Some(Timestamp {
                                seconds: (ts / 1_000_000_000) as i64,
                                nanos: (ts % 1_000_000_000) as i32,
                            }),
                            line,
                            structured_metadata: meta,
                        },
                    ));
                }
            }
        }
        let streams = streams
            .into_iter()
            .filter(|(_, e)| !e.is_empty())
            .map(|(labels, mut entries)| {
                // Loki accepts out-of-order writes only within a window; sorting
                // keeps one request's entries in order per stream.
                entries.sort_by_key(|(ts, _)| *ts);
                StreamAdapter {
                    labels,
                    entries: entries.into_iter().map(|(_, e)| e).collect(),
                    hash: 0,
                }
            })
            .collect();
        (PushRequest { streams }, n)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl Encoder<ResourceLogs> for LokiEncoder {
    fn encode(&self, _tenant: &str, items: Vec<ResourceLogs>) -> Encoded {
        let (req, n) = self.build(items);
        let raw = req.encode_to_vec();
        match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(body) => Encoded {
                body: body.into(),
                content_type: "application/x-protobuf".into(),
                items: n,
                ..Default::default()
            },
            Err(e) => Encoded {
                dropped: vec![(DropReason::Encode, n, format!("snappy: {e}"))],
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped_and_sorted() {
        let mut l = BTreeMap::new();
        l.insert("service_name".to_string(), "a\"b\\c".to_string());
        l.insert("k8s_namespace_name".to_string(), "shop".to_string());
        assert_eq!(
            format_labels(&l),
            r#"{k8s_namespace_name="shop", service_name="a\"b\\c"}"#
        );
    }
}
