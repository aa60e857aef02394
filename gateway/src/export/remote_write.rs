//! Metrics to Prometheus / Mimir over remote-write 1.0: a snappy-compressed (block
//! format) protobuf `prometheus.WriteRequest` with `Content-Encoding: snappy`,
//! `Content-Type: application/x-protobuf` and
//! `X-Prometheus-Remote-Write-Version: 0.1.0`, labels sorted by name
//! (<https://prometheus.io/docs/specs/prw/remote_write_spec/>).
//!
//! OTLP → Prometheus translation follows the OpenTelemetry spec "Prometheus and
//! OpenMetrics Compatibility": names sanitised, unit suffixes added, `_total` on
//! monotonic cumulative sums, histograms as `_bucket`/`_sum`/`_count`, summaries as
//! quantiles + `_sum`/`_count`, `service.namespace/service.name` → `job`,
//! `service.instance.id` → `instance`, the other resource attributes on a
//! `target_info` series. Delta temporality and exponential histograms have no
//! remote-write 1.0 float representation and are dropped, counted as `unsupported`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Metric, ResourceMetrics, metric, number_data_point,
};
use prost::Message;

use super::{Encoded, Encoder};
use crate::signal::{any_value_to_string, string_attr};
use crate::telemetry::DropReason;

#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Label {
    #[prost(string, tag = "1")]
    pub name: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// `prometheus.MetricMetadata.MetricType`.
    #[prost(int32, tag = "1")]
    pub r#type: i32,
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    #[prost(string, tag = "4")]
    pub help: String,
    #[prost(string, tag = "5")]
    pub unit: String,
}

const TYPE_COUNTER: i32 = 1;
const TYPE_GAUGE: i32 = 2;
const TYPE_HISTOGRAM: i32 = 3;
const TYPE_SUMMARY: i32 = 5;

/// Prometheus staleness marker, written for points flagged "no recorded value".
const STALE_NAN: u64 = 0x7ff0_0000_0000_0002;
const FLAG_NO_RECORDED_VALUE: u32 = 1;

#[derive(Debug, Default)]
pub struct RemoteWriteEncoder;

/// Label names: `[a-zA-Z_][a-zA-Z0-9_]*`; anything else becomes `_`, and a leading
/// digit gets a `key_` prefix.
pub fn sanitize_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        out.insert_str(0, "key_");
    }
    if out.is_empty() {
        out.push('_');
    }
    out
}

/// Metric names: invalid characters become `_`, runs of `_` collapse, a leading
/// digit gets a `_` prefix.
pub fn sanitize_metric_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            c
        } else {
            '_'
        };
        if c == '_' && out.ends_with('_') {
            continue;
        }
        out.push(c);
    }
    if out.chars().next().is_some_and(|c| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "d" => "days",
        "h" => "hours",
        "min" => "minutes",
        "s" => "seconds",
        "ms" => "milliseconds",
        "us" => "microseconds",
        "ns" => "nanoseconds",
        "By" => "bytes",
        "KiBy" => "kibibytes",
        "MiBy" => "mebibytes",
        "GiBy" => "gibibytes",
        "TiBy" => "tibibytes",
        "KBy" => "kilobytes",
        "MBy" => "megabytes",
        "GBy" => "gigabytes",
        "TBy" => "terabytes",
        "m" => "meters",
        "V" => "volts",
        "A" => "amperes",
        "J" => "joules",
        "W" => "watts",
        "g" => "grams",
        "Cel" => "celsius",
        "Hz" => "hertz",
        "%" => "percent",
        _ => return None,
    })
}

fn per_unit_word(u: &str) -> Option<&'static str> {
    Some(match u {
        "s" => "second",
        "m" => "minute",
        "h" => "hour",
        "d" => "day",
        "w" => "week",
        "mo" => "month",
        "y" => "year",
        _ => return None,
    })
}

/// The unit suffix for an OTLP unit: `{...}` annotations dropped, `x/y` → `x_per_y`,
/// `1` → `ratio` for gauges only.
pub fn unit_suffix(unit: &str, is_gauge: bool) -> Option<String> {
    let without_braces: String = {
        let mut depth = 0;
        unit.chars()
            .filter(|c| match c {
                '{' => {
                    depth += 1;
                    false
                }
                '}' => {
                    depth -= 1;
                    false
                }
                _ => depth == 0,
            })
            .collect()
    };
    let u = without_braces.trim();
    if u.is_empty() {
        return None;
    }
    if u == "1" {
        return is_gauge.then(|| "ratio".to_string());
    }
    match u.split_once('/') {
        Some((num, den)) => {
            let num = unit_word(num)
                .map(String::from)
                .unwrap_or_else(|| num.to_string());
            let den = per_unit_word(den)
                .map(String::from)
                .unwrap_or_else(|| den.to_string());
            let s = if num.is_empty() {
                format!("per_{den}")
            } else {
                format!("{num}_per_{den}")
            };
            Some(sanitize_metric_name(&s).trim_matches('_').to_string())
        }
        None => Some(
            unit_word(u)
                .map(String::from)
                .unwrap_or_else(|| sanitize_metric_name(u).trim_matches('_').to_string()),
        ),
    }
}

/// The Prometheus metric family name of an OTLP metric.
pub fn metric_name(m: &Metric, is_gauge: bool, is_counter: bool) -> String {
    let mut name = sanitize_metric_name(&m.name);
    if let Some(unit) = unit_suffix(&m.unit, is_gauge)
        && !unit.is_empty()
        && !name.split('_').any(|w| w == unit)
    {
        name.push('_');
        name.push_str(&unit);
    }
    if is_counter && !name.ends_with("_total") {
        name.push_str("_total");
    }
    name
}

struct Series<'a> {
    out: &'a mut Vec<TimeSeries>,
    base: &'a BTreeMap<String, String>,
}

impl Series<'_> {
    fn push(
        &mut self,
        name: &str,
        attrs: &[KeyValue],
        extra: Option<(&str, String)>,
        value: f64,
        ts_ms: i64,
    ) {
        let mut labels = self.base.clone();
        add_attrs(&mut labels, attrs);
        if let Some((k, v)) = extra {
            labels.insert(k.to_string(), v);
        }
        labels.insert("__name__".into(), name.to_string());
        self.out.push(TimeSeries {
            labels: labels
                .into_iter()
                .map(|(name, value)| Label { name, value })
                .collect(),
            samples: vec![Sample {
                value,
                timestamp: ts_ms,
            }],
        });
    }
}

/// Adds attributes as labels; names that collide after sanitising join their
/// values with `;`, as the spec says.
fn add_attrs(labels: &mut BTreeMap<String, String>, attrs: &[KeyValue]) {
    for kv in attrs {
        let name = sanitize_label_name(&kv.key);
        let value = kv
            .value
            .as_ref()
            .map(any_value_to_string)
            .unwrap_or_default();
        if value.is_empty() {
            continue;
        }
        labels
            .entry(name)
            .and_modify(|v| {
                v.push(';');
                v.push_str(&value);
            })
            .or_insert(value);
    }
}

fn ms(nanos: u64) -> i64 {
    (nanos / 1_000_000) as i64
}

fn format_bound(b: f64) -> String {
    if b.is_infinite() && b > 0.0 {
        "+Inf".into()
    } else {
        format!("{b}")
    }
}

fn value_of(flags: u32, v: f64) -> f64 {
    if flags & FLAG_NO_RECORDED_VALUE != 0 {
        f64::from_bits(STALE_NAN)
    } else {
        v
    }
}

impl RemoteWriteEncoder {
    /// Translates metrics; returns the request, the data points in it and the data
    /// points left out (with why).
    pub fn build(
        &self,
        items: Vec<ResourceMetrics>,
    ) -> (WriteRequest, usize, Vec<(usize, String)>) {
        let mut out = Vec::new();
        let mut metadata: BTreeMap<String, MetricMetadata> = BTreeMap::new();
        let mut n = 0;
        let mut unsupported = Vec::new();
        for rm in items {
            let rattrs = rm.resource.map(|r| r.attributes).unwrap_or_default();
            let service = string_attr(&rattrs, "service.name");
            let job = match (string_attr(&rattrs, "service.namespace"), service) {
                (Some(ns), Some(s)) => Some(format!("{ns}/{s}")),
                (None, Some(s)) => Some(s.to_string()),
                _ => None,
            };
            let instance = string_attr(&rattrs, "service.instance.id").map(String::from);
            let mut base = BTreeMap::new();
            if let Some(j) = &job {
                base.insert("job".to_string(), j.clone());
            }
            if let Some(i) = &instance {
                base.insert("instance".to_string(), i.clone());
            }
            let mut latest_ts = 0u64;
            for sm in rm.scope_metrics {
                let mut scoped = base.clone();
                if let Some(scope) = &sm.scope {
                    if !scope.name.is_empty() {
                        scoped.insert("otel_scope_name".into(), scope.name.clone());
                    }
                    if !scope.version.is_empty() {
                        scoped.insert("otel_scope_version".into(), scope.version.clone());
                    }
                }
                let mut s = Series {
                    out: &mut out,
                    base: &scoped,
                };
                for m in sm.metrics {
                    let Some(data) = &m.data else { continue };
                    match data {
                        metric::Data::Gauge(g) => {
                            let name = metric_name(&m, true, false);
                            meta(&mut metadata, &name, TYPE_GAUGE, &m);
                            for p in &g.data_points {
                                latest_ts = latest_ts.max(p.time_unix_nano);
                                s.push(
                                    &name,
                                    &p.attributes,
                                    None,
                                    value_of(p.flags, number(&p.value)),
                                    ms(p.time_unix_nano),
                                );
                                n += 1;
                            }
                        }
                        metric::Data::Sum(sum) => {
                            if sum.aggregation_temporality
                                != AggregationTemporality::Cumulative as i32
                            {
                                unsupported.push((
                                    sum.data_points.len(),
                                    format!(
                                        "{}: delta sums cannot be written to Prometheus",
                                        m.name
                                    ),
                                ));
                                continue;
                            }
                            let counter = sum.is_monotonic;
                            let name = metric_name(&m, !counter, counter);
                            meta(
                                &mut metadata,
                                &name,
                                if counter { TYPE_COUNTER } else { TYPE_GAUGE },
                                &m,
                            );
                            for p in &sum.data_points {
                                latest_ts = latest_ts.max(p.time_unix_nano);
                                s.push(
                                    &name,
                                    &p.attributes,
                                    None,
                                    value_of(p.flags, number(&p.value)),
                                    ms(p.time_unix_nano),
                                );
                                n += 1;
                            }
                        }
                        metric::Data::Histogram(h) => {
                            if h.aggregation_temporality
                                != AggregationTemporality::Cumulative as i32
                            {
                                unsupported.push((
                                    h.data_points.len(),
                                    format!(
                                        "{}: delta histograms cannot be written to Prometheus",
                                        m.name
                                    ),
                                ));
                                continue;
                            }
                            let name = metric_name(&m, false, false);
                            meta(&mut metadata, &name, TYPE_HISTOGRAM, &m);
                            for p in &h.data_points {
                                latest_ts = latest_ts.max(p.time_unix_nano);
                                let t = ms(p.time_unix_nano);
                                let mut cumulative = 0u64;
                                for (i, bound) in p.explicit_bounds.iter().enumerate() {
                                    cumulative += p.bucket_counts.get(i).copied().unwrap_or(0);
                                    s.push(
                                        &format!("{name}_bucket"),
                                        &p.attributes,
                                        Some(("le", format_bound(*bound))),
                                        value_of(p.flags, cumulative as f64),
                                        t,
                                    );
                                }
                                s.push(
                                    &format!("{name}_bucket"),
                                    &p.attributes,
                                    Some(("le", "+Inf".into())),
                                    value_of(p.flags, p.count as f64),
                                    t,
                                );
                                if let Some(sum) = p.sum {
                                    s.push(
                                        &format!("{name}_sum"),
                                        &p.attributes,
                                        None,
                                        value_of(p.flags, sum),
                                        t,
                                    );
                                }
                                s.push(
                                    &format!("{name}_count"),
                                    &p.attributes,
                                    None,
                                    value_of(p.flags, p.count as f64),
                                    t,
                                );
                                n += 1;
                            }
                        }
                        metric::Data::Summary(sm) => {
                            let name = metric_name(&m, false, false);
                            meta(&mut metadata, &name, TYPE_SUMMARY, &m);
                            for p in &sm.data_points {
                                latest_ts = latest_ts.max(p.time_unix_nano);
                                let t = ms(p.time_unix_nano);
                                for q in &p.quantile_values {
                                    s.push(
                                        &name,
                                        &p.attributes,
                                        Some(("quantile", format!("{}", q.quantile))),
                                        value_of(p.flags, q.value),
                                        t,
                                    );
                                }
                                s.push(
                                    &format!("{name}_sum"),
                                    &p.attributes,
                                    None,
                                    value_of(p.flags, p.sum),
                                    t,
                                );
                                s.push(
                                    &format!("{name}_count"),
                                    &p.attributes,
                                    None,
                                    value_of(p.flags, p.count as f64),
                                    t,
                                );
                                n += 1;
                            }
                        }
                        metric::Data::ExponentialHistogram(h) => {
                            unsupported.push((h.data_points.len(), format!("{}: exponential histograms need native histograms, not supported yet", m.name)));
                        }
                    }
                }
            }
            // target_info carries the resource attributes that job/instance do not.
            if latest_ts > 0 && (job.is_some() || instance.is_some()) {
                let rest: Vec<KeyValue> = rattrs
                    .iter()
                    .filter(|kv| {
                        !matches!(
                            kv.key.as_str(),
                            "service.name" | "service.namespace" | "service.instance.id"
                        )
                    })
                    .cloned()
                    .collect();
                if !rest.is_empty() {
                    let mut s = Series {
                        out: &mut out,
                        base: &base,
                    };
                    s.push("target_info", &rest, None, 1.0, ms(latest_ts));
                    meta(
                        &mut metadata,
                        "target_info",
                        TYPE_GAUGE,
                        &Metric {
                            description: "Target metadata".into(),
                            ..Default::default()
                        },
                    );
                }
            }
        }
        (
            WriteRequest {
                timeseries: out,
                metadata: metadata.into_values().collect(),
            },
            n,
            unsupported,
        )
    }
}

fn number(v: &Option<number_data_point::Value>) -> f64 {
    match v {
        Some(number_data_point::Value::AsDouble(d)) => *d,
        Some(number_data_point::Value::AsInt(i)) => *i as f64,
        None => 0.0,
    }
}

fn meta(out: &mut BTreeMap<String, MetricMetadata>, name: &str, ty: i32, m: &Metric) {
    out.entry(name.to_string())
        .or_insert_with(|| MetricMetadata {
            r#type: ty,
            metric_family_name: name.to_string(),
            help: m.description.clone(),
            unit: m.unit.clone(),
        });
}

impl Encoder<ResourceMetrics> for RemoteWriteEncoder {
    fn encode(&self, _tenant: &str, items: Vec<ResourceMetrics>) -> Encoded {
        let (req, n, unsupported) = self.build(items);
        let dropped = unsupported
            .into_iter()
            .map(|(k, why)| (DropReason::Unsupported, k, why))
            .collect();
        let raw = req.encode_to_vec();
        match snap::raw::Encoder::new().compress_vec(&raw) {
            Ok(body) => Encoded {
                body: body.into(),
                content_type: "application/x-protobuf".into(),
                content_encoding: Some("snappy".into()),
                extra_headers: vec![("X-Prometheus-Remote-Write-Version".into(), "0.1.0".into())],
                items: n,
                dropped,
            },
            Err(e) => {
                let mut dropped = dropped;
                dropped.push((DropReason::Encode, n, format!("snappy: {e}")));
                Encoded {
                    dropped,
                    ..Default::default()
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, unit: &str) -> Metric {
        Metric {
            name: name.into(),
            unit: unit.into(),
            ..Default::default()
        }
    }

    #[test]
    fn names_follow_the_otel_prometheus_rules() {
        assert_eq!(
            metric_name(&m("http.server.request.duration", "s"), false, false),
            "http_server_request_duration_seconds"
        );
        assert_eq!(
            metric_name(&m("requests", "{request}"), false, true),
            "requests_total"
        );
        assert_eq!(
            metric_name(&m("network.io", "By"), false, true),
            "network_io_bytes_total"
        );
        assert_eq!(
            metric_name(&m("cpu.utilization", "1"), true, false),
            "cpu_utilization_ratio"
        );
        assert_eq!(
            metric_name(&m("throughput", "By/s"), true, false),
            "throughput_bytes_per_second"
        );
        assert_eq!(
            metric_name(&m("latency_seconds", "s"), false, false),
            "latency_seconds"
        );
        assert_eq!(metric_name(&m("done_total", ""), false, true), "done_total");
        assert_eq!(sanitize_label_name("k8s.pod.name"), "k8s_pod_name");
        assert_eq!(sanitize_label_name("2xx"), "key_2xx");
        assert_eq!(sanitize_metric_name("a..b-c"), "a_b_c");
    }

    use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, any_value};
    use opentelemetry_proto::tonic::metrics::v1::{
        ExponentialHistogram, ExponentialHistogramDataPoint, NumberDataPoint, ScopeMetrics, Sum,
        Summary, SummaryDataPoint, summary_data_point::ValueAtQuantile,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;

    fn kv(k: &str, v: &str) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(v.into())),
            }),
        }
    }

    fn series_names(req: &WriteRequest) -> Vec<String> {
        req.timeseries
            .iter()
            .map(|t| {
                t.labels
                    .iter()
                    .map(|l| format!("{}={}", l.name, l.value))
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .collect()
    }

    #[test]
    fn summaries_translate_and_unsupported_points_are_reported() {
        let t = 1_700_000_000_000_000_000u64;
        let rm = ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![kv("service.name", "api"), kv("zone", "eu-1")],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    ..Default::default()
                }),
                metrics: vec![
                    Metric {
                        name: "rpc.latency".into(),
                        unit: "ms".into(),
                        data: Some(metric::Data::Summary(Summary {
                            data_points: vec![SummaryDataPoint {
                                time_unix_nano: t,
                                count: 4,
                                sum: 10.0,
                                quantile_values: vec![ValueAtQuantile {
                                    quantile: 0.99,
                                    value: 7.0,
                                }],
                                attributes: vec![kv("z.attr", "1"), kv("a.attr", "2")],
                                ..Default::default()
                            }],
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "deltas".into(),
                        data: Some(metric::Data::Sum(Sum {
                            data_points: vec![NumberDataPoint::default(); 2],
                            aggregation_temporality: AggregationTemporality::Delta as i32,
                            is_monotonic: true,
                        })),
                        ..Default::default()
                    },
                    Metric {
                        name: "exp".into(),
                        data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: vec![ExponentialHistogramDataPoint::default(); 3],
                            aggregation_temporality: AggregationTemporality::Cumulative as i32,
                        })),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        };
        let (req, n, unsupported) = RemoteWriteEncoder.build(vec![rm]);
        assert_eq!(n, 1);
        assert_eq!(unsupported.iter().map(|(k, _)| k).sum::<usize>(), 5);
        let names = series_names(&req);
        assert_eq!(
            names,
            vec![
                "__name__=rpc_latency_milliseconds,a_attr=2,job=api,otel_scope_name=lib,quantile=0.99,z_attr=1",
                "__name__=rpc_latency_milliseconds_sum,a_attr=2,job=api,otel_scope_name=lib,z_attr=1",
                "__name__=rpc_latency_milliseconds_count,a_attr=2,job=api,otel_scope_name=lib,z_attr=1",
                "__name__=target_info,job=api,zone=eu-1",
            ]
        );
        // Remote-write requires labels sorted by name in every series.
        for ts in &req.timeseries {
            let names: Vec<&str> = ts.labels.iter().map(|l| l.name.as_str()).collect();
            let mut sorted = names.clone();
            sorted.sort_unstable();
            assert_eq!(names, sorted);
            assert_eq!(ts.samples[0].timestamp, 1_700_000_000_000);
        }
    }
}
