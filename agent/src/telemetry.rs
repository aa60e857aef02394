//! Exchanges become OpenTelemetry spans (semantic-convention attributes) and
//! RED histogram observations; resources become OTLP resources.
use std::{collections::HashMap, net::IpAddr, sync::Arc};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, metric,
    },
    resource::v1::Resource,
    trace::v1::{Span, Status, span::SpanKind, status::StatusCode},
};

use crate::{
    ebpf::event::{Role, Tuple},
    process::ResourceInfo,
    protocol::{Detail, Exchange},
};

pub const SCOPE_NAME: &str = "mop-agent";

pub fn kv(key: &str, value: impl Into<Val>) -> KeyValue {
    let v = match value.into() {
        Val::S(s) => any_value::Value::StringValue(s),
        Val::I(i) => any_value::Value::IntValue(i),
        Val::B(b) => any_value::Value::BoolValue(b),
    };
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(v) }),
        ..KeyValue::default()
    }
}

pub enum Val {
    S(String),
    I(i64),
    B(bool),
}
impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::S(s)
    }
}
impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::S(s.to_owned())
    }
}
impl From<i64> for Val {
    fn from(i: i64) -> Self {
        Val::I(i)
    }
}
impl From<bool> for Val {
    fn from(b: bool) -> Self {
        Val::B(b)
    }
}

/// A W3C `traceparent` (version 00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

fn hex_into(s: &str, out: &mut [u8]) -> Option<()> {
    if s.len() != out.len() * 2 {
        return None;
    }
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(())
}

impl TraceParent {
    pub fn parse(s: &str) -> Option<TraceParent> {
        let mut parts = s.trim().split('-');
        let (v, t, p, f) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if v.len() != 2 || v == "ff" || (v == "00" && parts.next().is_some()) {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        hex_into(t, &mut tp.trace_id)?;
        hex_into(p, &mut tp.span_id)?;
        let mut fl = [0u8; 1];
        hex_into(f, &mut fl)?;
        tp.flags = fl[0];
        if tp.trace_id == [0; 16] || tp.span_id == [0; 8] {
            return None;
        }
        Some(tp)
    }
}

thread_local! {
    /// Span/trace id generator state; seeded once from the OS, then a
    /// SplitMix64 sequence: ids must be unique, not secret, and a syscall
    /// per id showed up in the agent's profile.
    static ID_STATE: std::cell::Cell<u64> = std::cell::Cell::new(seed());
}

fn seed() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9e37_79b9_7f4a_7c15);
        b = (t ^ u64::from(std::process::id()).rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(b)
}

fn next_u64() -> u64 {
    ID_STATE.with(|s| {
        let mut z = s.get().wrapping_add(0x9e37_79b9_7f4a_7c15);
        s.set(z);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    loop {
        for chunk in b.chunks_mut(8) {
            let v = next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
        // An all-zero id is invalid in OTLP and W3C trace context.
        if b.iter().any(|x| *x != 0) {
            return b;
        }
    }
}

/// Replaces path segments that look like identifiers with `{id}` so that a
/// route names a handler, not a record: numbers, UUIDs, long hex strings and
/// long tokens mixing letters and digits.
pub fn route_template(target: &str) -> String {
    let path = target.split(['?', '#']).next().unwrap_or_default();
    if path.is_empty() {
        return "/".into();
    }
    let templated: Vec<&str> = path
        .split('/')
        .map(|seg| if is_identifier(seg) { "{id}" } else { seg })
        .collect();
    templated.join("/")
}

fn is_identifier(seg: &str) -> bool {
    if seg.is_empty() {
        return false;
    }
    let b = seg.as_bytes();
    let digits = b.iter().filter(|c| c.is_ascii_digit()).count();
    if digits == b.len() {
        return true;
    }
    let is_uuid = b.len() == 36
        && b.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        });
    let hexish = b.len() >= 16 && b.iter().all(|c| c.is_ascii_hexdigit());
    let token = b.len() >= 16
        && digits > 0
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_'));
    is_uuid || hexish || token
}

/// One RED observation of an exchange.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub metric: &'static str,
    pub attributes: Vec<(String, String)>,
    pub seconds: f64,
}

/// What an exchange turns into.
#[derive(Debug, Clone)]
pub struct Built {
    pub span: Span,
    pub observation: Option<Observation>,
}

fn addr_str(a: IpAddr) -> String {
    a.to_string()
}

/// Builds the span and metric observation of one exchange. `wall_offset_ns`
/// converts the kernel's monotonic clock to Unix time.
pub fn build(ex: &Exchange, tuple: &Tuple, role: Role, wall_offset_ns: i128) -> Built {
    let to_wall = |mono: u64| (i128::from(mono) + wall_offset_ns).max(0) as u64;
    let start = to_wall(ex.start_ns);
    let end = to_wall(ex.end_ns).max(start);
    let server = role != Role::Client;
    let mut span = Span {
        span_id: random_bytes::<8>().to_vec(),
        kind: if server {
            SpanKind::Server
        } else {
            SpanKind::Client
        } as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    };
    let mut attrs = Vec::new();
    let mut error = false;
    let seconds = (end - start) as f64 / 1e9;
    let observation;
    if server {
        attrs.push(kv("client.address", addr_str(tuple.peer)));
        attrs.push(kv("client.port", i64::from(tuple.peer_port)));
        attrs.push(kv("server.port", i64::from(tuple.local_port)));
    } else {
        attrs.push(kv("server.address", addr_str(tuple.peer)));
        attrs.push(kv("server.port", i64::from(tuple.peer_port)));
    }
    attrs.push(kv("network.transport", "tcp"));
    match &ex.detail {
        Detail::Http(h) => {
            let route = route_template(&h.target);
            let (path, query) = match h.target.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (h.target.as_str(), None),
            };
            attrs.push(kv("http.request.method", h.method.clone()));
            attrs.push(kv("network.protocol.name", "http"));
            attrs.push(kv("network.protocol.version", h.version));
            if h.status > 0 {
                attrs.push(kv("http.response.status_code", i64::from(h.status)));
            }
            attrs.push(kv("http.response.body.size", h.response_body_size as i64));
            if h.request_body_size > 0 {
                attrs.push(kv("http.request.body.size", h.request_body_size as i64));
            }
            if let Some(ua) = &h.user_agent {
                attrs.push(kv("user_agent.original", ua.clone()));
            }
            let status_str = h.status.to_string();
            let mut mattrs = vec![
                ("http.request.method".to_owned(), h.method.clone()),
                ("network.protocol.version".to_owned(), h.version.to_owned()),
            ];
            if h.status > 0 {
                mattrs.push(("http.response.status_code".to_owned(), status_str.clone()));
            }
            if server {
                error = h.status >= 500 || h.status == 0;
                attrs.push(kv("url.scheme", "http"));
                attrs.push(kv("url.path", path.to_owned()));
                if let Some(q) = query {
                    attrs.push(kv("url.query", q.to_owned()));
                }
                attrs.push(kv("http.route", route.clone()));
                if let Some(host) = &h.host {
                    attrs.push(kv(
                        "server.address",
                        host.split(':').next().unwrap_or_default().to_owned(),
                    ));
                }
                span.name = format!("{} {}", h.method, route);
                mattrs.push(("http.route".to_owned(), route));
                mattrs.push(("url.scheme".to_owned(), "http".to_owned()));
                if let Some(tp) = h.traceparent.as_deref().and_then(TraceParent::parse) {
                    span.trace_id = tp.trace_id.to_vec();
                    span.parent_span_id = tp.span_id.to_vec();
                    span.flags = u32::from(tp.flags);
                }
            } else {
                error = h.status >= 400 || h.status == 0;
                let host = h.host.clone().unwrap_or_else(|| addr_str(tuple.peer));
                attrs.push(kv("url.full", format!("http://{}{}", host, h.target)));
                span.name = h.method.clone();
                mattrs.push(("server.address".to_owned(), addr_str(tuple.peer)));
                mattrs.push(("server.port".to_owned(), tuple.peer_port.to_string()));
            }
            if error {
                let et = if h.status == 0 {
                    "incomplete".to_owned()
                } else {
                    status_str
                };
                attrs.push(kv("error.type", et.clone()));
                mattrs.push(("error.type".to_owned(), et));
            }
            observation = Some(Observation {
                metric: if server {
                    "http.server.request.duration"
                } else {
                    "http.client.request.duration"
                },
                attributes: mattrs,
                seconds,
            });
        }
        Detail::Http2(h) if !h.is_grpc() => {
            // Plain HTTP/2: same conventions as HTTP/1, protocol version 2.
            let as_http = Exchange {
                start_ns: ex.start_ns,
                end_ns: ex.end_ns,
                detail: Detail::Http(crate::protocol::http1::HttpExchange {
                    method: h.method.clone(),
                    target: h.path.clone(),
                    status: h.status,
                    version: "2",
                    host: h.authority.clone(),
                    user_agent: h.user_agent.clone(),
                    traceparent: h.traceparent.clone(),
                    request_body_size: 0,
                    response_body_size: 0,
                }),
            };
            return build(&as_http, tuple, role, wall_offset_ns);
        }
        Detail::Http2(h) => {
            let full = h.path.trim_start_matches('/');
            let (service, method) = full.rsplit_once('/').unwrap_or((full, ""));
            span.name = full.to_owned();
            attrs.push(kv("rpc.system", "grpc"));
            attrs.push(kv("rpc.service", service.to_owned()));
            attrs.push(kv("rpc.method", method.to_owned()));
            attrs.push(kv("network.protocol.name", "http"));
            attrs.push(kv("network.protocol.version", "2"));
            // A reset stream or a missing status is reported as UNKNOWN (2).
            let code = h.grpc_status.unwrap_or(2);
            attrs.push(kv("rpc.grpc.status_code", code));
            if let Some(m) = &h.grpc_message {
                attrs.push(kv("rpc.grpc.status_message", m.clone()));
            }
            // Server side: only codes that mean the server failed are errors
            // (semantic conventions for gRPC); client side: any non-OK code.
            error = if server {
                matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
            } else {
                code != 0
            };
            if server && let Some(tp) = h.traceparent.as_deref().and_then(TraceParent::parse) {
                span.trace_id = tp.trace_id.to_vec();
                span.parent_span_id = tp.span_id.to_vec();
                span.flags = u32::from(tp.flags);
            }
            if error {
                attrs.push(kv("error.type", code.to_string()));
            }
            observation = Some(Observation {
                metric: if server {
                    "rpc.server.duration"
                } else {
                    "rpc.client.duration"
                },
                attributes: vec![
                    ("rpc.system".to_owned(), "grpc".to_owned()),
                    ("rpc.service".to_owned(), service.to_owned()),
                    ("rpc.method".to_owned(), method.to_owned()),
                    ("rpc.grpc.status_code".to_owned(), code.to_string()),
                ],
                seconds,
            });
        }
        Detail::Redis(r) => {
            span.name = r.command.clone();
            attrs.push(kv("db.system.name", "redis"));
            attrs.push(kv("db.operation.name", r.command.clone()));
            let mut mattrs = vec![
                ("db.system.name".to_owned(), "redis".to_owned()),
                ("db.operation.name".to_owned(), r.command.clone()),
            ];
            if let Some(e) = &r.error {
                error = true;
                attrs.push(kv("db.response.status_code", e.clone()));
                attrs.push(kv("error.type", e.clone()));
                mattrs.push(("error.type".to_owned(), e.clone()));
            }
            observation = (!server).then_some(Observation {
                metric: "db.client.operation.duration",
                attributes: mattrs,
                seconds,
            });
        }
        Detail::Postgres(p) => {
            span.name = if p.operation.is_empty() {
                "postgresql".to_owned()
            } else {
                p.operation.clone()
            };
            attrs.push(kv("db.system.name", "postgresql"));
            if !p.operation.is_empty() {
                attrs.push(kv("db.operation.name", p.operation.clone()));
            }
            attrs.push(kv("db.query.text", p.query.clone()));
            let mut mattrs = vec![
                ("db.system.name".to_owned(), "postgresql".to_owned()),
                ("db.operation.name".to_owned(), p.operation.clone()),
            ];
            if let Some(code) = &p.error_code {
                error = true;
                attrs.push(kv("db.response.status_code", code.clone()));
                attrs.push(kv("error.type", code.clone()));
                mattrs.push(("error.type".to_owned(), code.clone()));
            }
            observation = (!server).then_some(Observation {
                metric: "db.client.operation.duration",
                attributes: mattrs,
                seconds,
            });
        }
    }
    if span.trace_id.is_empty() {
        span.trace_id = random_bytes::<16>().to_vec();
        span.flags = 1;
    }
    if error {
        span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
    }
    span.attributes = attrs;
    Built { span, observation }
}

/// The OTLP resource of a process (+ port) as the gateway expects it.
pub fn resource(r: &ResourceInfo, host: &str) -> Resource {
    let mut attrs = vec![
        kv("service.name", r.service_name.clone()),
        kv("process.pid", i64::from(r.pid)),
        kv("telemetry.sdk.name", "mop-agent"),
        kv("telemetry.sdk.language", "rust"),
        kv("telemetry.sdk.version", env!("CARGO_PKG_VERSION")),
        kv("host.name", host.to_owned()),
    ];
    if !r.exe_name.is_empty() {
        attrs.push(kv("process.executable.name", r.exe_name.clone()));
        attrs.push(kv("process.executable.path", r.exe_path.clone()));
    }
    if let Some(ns) = &r.namespace {
        attrs.push(kv("k8s.namespace.name", ns.clone()));
    }
    if let Some(c) = &r.container_id {
        attrs.push(kv("container.id", c.clone()));
    }
    if let Some(p) = &r.pod {
        attrs.push(kv("k8s.pod.name", p.name.clone()));
        attrs.push(kv("k8s.pod.uid", p.uid.clone()));
        attrs.push(kv("k8s.node.name", p.node.clone()));
        if let (Some(kind), Some(name)) = (&p.workload_kind, &p.workload_name) {
            let key = match kind.as_str() {
                "Deployment" => Some("k8s.deployment.name"),
                "StatefulSet" => Some("k8s.statefulset.name"),
                "DaemonSet" => Some("k8s.daemonset.name"),
                "ReplicaSet" => Some("k8s.replicaset.name"),
                "Job" => Some("k8s.job.name"),
                "CronJob" => Some("k8s.cronjob.name"),
                _ => None,
            };
            if let Some(key) = key {
                attrs.push(kv(key, name.clone()));
            }
        }
    }
    Resource {
        attributes: attrs,
        ..Resource::default()
    }
}

pub fn scope() -> InstrumentationScope {
    InstrumentationScope {
        name: SCOPE_NAME.to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
        ..InstrumentationScope::default()
    }
}

/// Explicit bucket bounds (seconds) recommended by the HTTP semantic
/// conventions for duration histograms.
pub const BOUNDS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

#[derive(Debug, Clone)]
struct Hist {
    counts: Vec<u64>,
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Hist {
    fn new() -> Self {
        Hist {
            counts: vec![0; BOUNDS.len() + 1],
            count: 0,
            sum: 0.0,
            min: f64::MAX,
            max: f64::MIN,
        }
    }
    fn record(&mut self, v: f64) {
        let i = BOUNDS.iter().position(|b| v <= *b).unwrap_or(BOUNDS.len());
        self.counts[i] += 1;
        self.count += 1;
        self.sum += v;
        self.min = self.min.min(v);
        self.max = self.max.max(v);
    }
}

type Series = HashMap<Vec<(String, String)>, Hist>;

/// Cumulative RED histograms per resource and metric, with a cap on series
/// per (resource, metric); beyond it observations land in one overflow
/// series, as the OpenTelemetry SDKs do.
#[derive(Debug)]
pub struct Metrics {
    start_unix_ns: u64,
    limit: usize,
    by_resource: HashMap<Arc<ResourceInfo>, HashMap<&'static str, Series>>,
    pub overflowed: u64,
}

pub const OVERFLOW_ATTR: &str = "otel.metric.overflow";

impl Metrics {
    pub fn new(start_unix_ns: u64, limit: usize) -> Self {
        Metrics {
            start_unix_ns,
            limit: limit.max(1),
            by_resource: HashMap::new(),
            overflowed: 0,
        }
    }

    pub fn record(&mut self, resource: &Arc<ResourceInfo>, obs: Observation) {
        let series = self
            .by_resource
            .entry(resource.clone())
            .or_default()
            .entry(obs.metric)
            .or_default();
        // build() emits each metric's attributes in a fixed order, so the
        // vector is already a canonical key.
        let mut attrs = obs.attributes;
        if !series.contains_key(&attrs) && series.len() >= self.limit {
            self.overflowed += 1;
            attrs = vec![(OVERFLOW_ATTR.to_owned(), "true".to_owned())];
        }
        series
            .entry(attrs)
            .or_insert_with(Hist::new)
            .record(obs.seconds);
    }

    /// Number of series of one metric across resources (for tests/metrics).
    pub fn series(&self, metric: &str) -> usize {
        self.by_resource
            .values()
            .filter_map(|m| m.get(metric))
            .map(|s| s.len())
            .sum()
    }

    pub fn to_otlp(&self, now_unix_ns: u64, host: &str) -> Vec<ResourceMetrics> {
        let mut out = Vec::new();
        for (res, metrics) in &self.by_resource {
            let mut ms = Vec::new();
            for (name, series) in metrics {
                // rpc.*.duration is specified in milliseconds, the HTTP and
                // database durations in seconds.
                let (unit, scale) = if name.starts_with("rpc.") {
                    ("ms", 1000.0)
                } else {
                    ("s", 1.0)
                };
                let points = series
                    .iter()
                    .map(|(attrs, h)| HistogramDataPoint {
                        attributes: attrs
                            .iter()
                            .map(|(k, v)| {
                                if k == OVERFLOW_ATTR {
                                    kv(k, true)
                                } else if k.ends_with("status_code") || k == "server.port" {
                                    v.parse::<i64>()
                                        .map_or_else(|_| kv(k, v.clone()), |i| kv(k, i))
                                } else {
                                    kv(k, v.clone())
                                }
                            })
                            .collect(),
                        start_time_unix_nano: self.start_unix_ns,
                        time_unix_nano: now_unix_ns,
                        count: h.count,
                        sum: Some(h.sum * scale),
                        bucket_counts: h.counts.clone(),
                        explicit_bounds: BOUNDS.iter().map(|b| b * scale).collect(),
                        min: Some(h.min * scale),
                        max: Some(h.max * scale),
                        ..HistogramDataPoint::default()
                    })
                    .collect();
                ms.push(Metric {
                    name: (*name).to_owned(),
                    unit: unit.to_owned(),
                    description: format!("Duration of {name} (mop-agent, eBPF)"),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    })),
                    ..Metric::default()
                });
            }
            out.push(ResourceMetrics {
                resource: Some(resource(res, host)),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(scope()),
                    metrics: ms,
                    ..ScopeMetrics::default()
                }],
                ..ResourceMetrics::default()
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::http1::HttpExchange;

    #[test]
    fn routes_template_identifiers() {
        assert_eq!(route_template("/users/42/orders?x=1"), "/users/{id}/orders");
        assert_eq!(
            route_template("/o/550e8400-e29b-41d4-a716-446655440000"),
            "/o/{id}"
        );
        assert_eq!(route_template("/blob/0123456789abcdef0123"), "/blob/{id}");
        assert_eq!(
            route_template("/session/aB3dEf9hIjKlMnOpQ"),
            "/session/{id}"
        );
        assert_eq!(route_template("/static/app.js"), "/static/app.js");
        assert_eq!(route_template("/v1/health"), "/v1/health");
        assert_eq!(route_template(""), "/");
    }

    #[test]
    fn traceparent_parsing() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(tp.span_id, [0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]);
        assert_eq!(tp.flags, 1);
        assert!(
            TraceParent::parse("00-00000000000000000000000000000000-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x")
                .is_none()
        );
    }

    fn tuple() -> Tuple {
        Tuple {
            local: IpAddr::from([127, 0, 0, 1]),
            local_port: 80,
            peer: IpAddr::from([127, 0, 0, 1]),
            peer_port: 5555,
            role: Role::Server,
        }
    }

    #[test]
    fn server_span_continues_traceparent() {
        let ex = Exchange {
            start_ns: 1_000,
            end_ns: 3_000,
            detail: Detail::Http(HttpExchange {
                method: "GET".into(),
                target: "/items/7".into(),
                status: 503,
                version: "1.1",
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
                ..HttpExchange::default()
            }),
        };
        let b = build(&ex, &tuple(), Role::Server, 10);
        assert_eq!(b.span.name, "GET /items/{id}");
        assert_eq!(
            b.span.parent_span_id,
            vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(
            b.span.end_time_unix_nano - b.span.start_time_unix_nano,
            2_000
        );
        assert_eq!(b.span.status.unwrap().code, StatusCode::Error as i32);
        let o = b.observation.unwrap();
        assert_eq!(o.metric, "http.server.request.duration");
        assert!(
            o.attributes
                .contains(&("http.route".into(), "/items/{id}".into()))
        );
    }

    #[test]
    fn cardinality_cap_uses_overflow_series() {
        let res = Arc::new(ResourceInfo {
            service_name: "s".into(),
            namespace: None,
            pod: None,
            pid: 1,
            exe_name: String::new(),
            exe_path: String::new(),
            container_id: None,
        });
        let mut m = Metrics::new(0, 3);
        for i in 0..10 {
            m.record(
                &res,
                Observation {
                    metric: "m",
                    attributes: vec![("k".into(), i.to_string())],
                    seconds: 0.01,
                },
            );
        }
        assert_eq!(m.series("m"), 4);
        assert_eq!(m.overflowed, 7);
        let otlp = m.to_otlp(5, "h");
        let Some(metric::Data::Histogram(h)) = &otlp[0].scope_metrics[0].metrics[0].data else {
            panic!()
        };
        assert_eq!(h.data_points.iter().map(|p| p.count).sum::<u64>(), 10);
    }
}
