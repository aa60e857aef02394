//! Counting the items of an OTLP protobuf request without decoding them, for a
//! request refused because the queue is full: the refusal is counted in items as
//! every other refusal is, but building the span tree (the most expensive step of
//! the whole pipeline, see docs/performance.md "Gateway vs rotel") only to drop it
//! is skipped. prost decodes these skeleton messages from the same wire format:
//! fields not declared are skipped, and an item decodes into a zero-sized value,
//! so a `Vec` of them never allocates.
//!
//! Field numbers are those of opentelemetry-proto's `trace.proto`, `metrics.proto`
//! and `logs.proto` (v1), as the generated types in `opentelemetry_proto` use them.

/// A message whose fields are all skipped.
#[derive(Clone, PartialEq, prost::Message)]
struct Item {}

/// `ExportTraceServiceRequest.resource_spans = 1` (and
/// `ExportLogsServiceRequest.resource_logs = 1`).
#[derive(Clone, PartialEq, prost::Message)]
struct Traces {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<Scoped>,
}

/// `ResourceX.scope_x = 2` for spans and logs.
#[derive(Clone, PartialEq, prost::Message)]
struct Scoped {
    #[prost(message, repeated, tag = "2")]
    scopes: Vec<Items>,
}

/// `ScopeSpans.spans = 2`, `ScopeLogs.log_records = 2`.
#[derive(Clone, PartialEq, prost::Message)]
struct Items {
    #[prost(message, repeated, tag = "2")]
    items: Vec<Item>,
}

/// `ExportLogsServiceRequest.resource_logs = 1`: the same skeleton as traces.
type Logs = Traces;

/// `ExportMetricsServiceRequest.resource_metrics = 1`.
#[derive(Clone, PartialEq, prost::Message)]
struct Metrics {
    #[prost(message, repeated, tag = "1")]
    resources: Vec<MetricResource>,
}

/// `ResourceMetrics.scope_metrics = 2`.
#[derive(Clone, PartialEq, prost::Message)]
struct MetricResource {
    #[prost(message, repeated, tag = "2")]
    scopes: Vec<MetricScope>,
}

/// `ScopeMetrics.metrics = 2`.
#[derive(Clone, PartialEq, prost::Message)]
struct MetricScope {
    #[prost(message, repeated, tag = "2")]
    metrics: Vec<Metric>,
}

/// `Metric.data` is a oneof of gauge = 5, sum = 7, histogram = 9,
/// exponential_histogram = 10, summary = 11; each holds `data_points = 1`. A oneof
/// has the wire format of separate optional fields.
#[derive(Clone, PartialEq, prost::Message)]
struct Metric {
    #[prost(message, optional, tag = "5")]
    gauge: Option<Points>,
    #[prost(message, optional, tag = "7")]
    sum: Option<Points>,
    #[prost(message, optional, tag = "9")]
    histogram: Option<Points>,
    #[prost(message, optional, tag = "10")]
    exponential_histogram: Option<Points>,
    #[prost(message, optional, tag = "11")]
    summary: Option<Points>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Points {
    #[prost(message, repeated, tag = "1")]
    data_points: Vec<Item>,
}

fn scoped(r: &[Scoped]) -> usize {
    r.iter()
        .flat_map(|r| &r.scopes)
        .map(|s| s.items.len())
        .sum()
}

/// Spans, data points or log records in an encoded export request of `signal`;
/// `None` if the body is not a valid protobuf message of that shape.
pub fn items(signal: crate::signal::Signal, body: &[u8]) -> Option<usize> {
    use crate::signal::Signal;
    use prost::Message;
    match signal {
        Signal::Traces => Traces::decode(body).ok().map(|t| scoped(&t.resources)),
        Signal::Logs => Logs::decode(body).ok().map(|l| scoped(&l.resources)),
        Signal::Metrics => Metrics::decode(body).ok().map(|m| {
            m.resources
                .iter()
                .flat_map(|r| &r.scopes)
                .flat_map(|s| &s.metrics)
                .map(|m| {
                    // A valid metric sets one of them; a sender that sets several
                    // has each counted.
                    [
                        &m.gauge,
                        &m.sum,
                        &m.histogram,
                        &m.exponential_histogram,
                        &m.summary,
                    ]
                    .into_iter()
                    .flatten()
                    .map(|p| p.data_points.len())
                    .sum::<usize>()
                })
                .sum()
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::logs::v1::{LogRecord, ResourceLogs, ScopeLogs};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram, HistogramDataPoint,
        Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary, SummaryDataPoint,
        metric,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
    use proptest::prelude::*;
    use prost::Message;

    use super::items;
    use crate::signal::{Signal, count_items};

    fn attrs(n: usize) -> Vec<KeyValue> {
        (0..n)
            .map(|i| KeyValue {
                key: format!("k{i}"),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue("v".repeat(i))),
                }),
            })
            .collect()
    }

    fn resource() -> Option<Resource> {
        Some(Resource {
            attributes: attrs(3),
            ..Default::default()
        })
    }

    fn metric(kind: usize, n: usize) -> Metric {
        let data = match kind {
            0 => metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); n],
            }),
            1 => metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint::default(); n],
                ..Default::default()
            }),
            2 => metric::Data::Histogram(Histogram {
                data_points: vec![HistogramDataPoint::default(); n],
                ..Default::default()
            }),
            3 => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: vec![ExponentialHistogramDataPoint::default(); n],
                ..Default::default()
            }),
            _ => metric::Data::Summary(Summary {
                data_points: vec![SummaryDataPoint::default(); n],
            }),
        };
        Metric {
            name: "m".into(),
            data: Some(data),
            ..Default::default()
        }
    }

    // shape[r][s] = items in scope s of resource r
    fn shape() -> impl Strategy<Value = Vec<Vec<usize>>> {
        proptest::collection::vec(proptest::collection::vec(0usize..6, 0..4), 0..4)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn counts_what_the_full_decode_counts(shape in shape(), kinds in proptest::collection::vec(0usize..5, 16)) {
            let traces = ExportTraceServiceRequest {
                resource_spans: shape.iter().map(|scopes| ResourceSpans {
                    resource: resource(),
                    scope_spans: scopes.iter().map(|&n| ScopeSpans {
                        spans: (0..n).map(|i| Span {
                            name: "s".into(),
                            attributes: attrs(i),
                            events: vec![span::Event { name: "e".into(), ..Default::default() }; i % 2],
                            ..Default::default()
                        }).collect(),
                        ..Default::default()
                    }).collect(),
                    ..Default::default()
                }).collect(),
            };
            let body = traces.encode_to_vec();
            let decoded = ExportTraceServiceRequest::decode(&body[..]).unwrap();
            prop_assert_eq!(items(Signal::Traces, &body), Some(count_items(&decoded.resource_spans)));

            let logs = ExportLogsServiceRequest {
                resource_logs: shape.iter().map(|scopes| ResourceLogs {
                    resource: resource(),
                    scope_logs: scopes.iter().map(|&n| ScopeLogs {
                        log_records: vec![LogRecord { attributes: attrs(2), ..Default::default() }; n],
                        ..Default::default()
                    }).collect(),
                    ..Default::default()
                }).collect(),
            };
            let body = logs.encode_to_vec();
            let decoded = ExportLogsServiceRequest::decode(&body[..]).unwrap();
            prop_assert_eq!(items(Signal::Logs, &body), Some(count_items(&decoded.resource_logs)));

            let mut k = kinds.iter().cycle();
            let metrics = ExportMetricsServiceRequest {
                resource_metrics: shape.iter().map(|scopes| ResourceMetrics {
                    resource: resource(),
                    scope_metrics: scopes.iter().map(|&n| ScopeMetrics {
                        metrics: (0..n).map(|i| metric(*k.next().unwrap(), i)).collect(),
                        ..Default::default()
                    }).collect(),
                    ..Default::default()
                }).collect(),
            };
            let body = metrics.encode_to_vec();
            let decoded = ExportMetricsServiceRequest::decode(&body[..]).unwrap();
            prop_assert_eq!(items(Signal::Metrics, &body), Some(count_items(&decoded.resource_metrics)));
        }
    }

    #[test]
    fn a_body_that_is_not_protobuf_is_not_counted() {
        // A length-delimited field 1 claiming more bytes than follow.
        assert_eq!(items(Signal::Traces, &[0x0a, 0x10, 0x01]), None);
    }
}
