//! Exchanges become OpenTelemetry spans (semantic-convention attributes) and
//! RED histogram observations; resources become OTLP resources.
use std::{collections::HashMap, sync::Arc};

use opentelemetry_proto::tonic::{
    common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value},
    metrics::v1::{
        AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics,
        ScopeMetrics, metric,
    },
    resource::v1::Resource,
    trace::v1::{span::SpanKind, status::StatusCode},
};

use crate::{
    ebpf::event::{Role, Tuple},
    process::ResourceInfo,
    protocol::{Detail, Exchange},
    wire,
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

impl TraceParent {
    /// W3C Trace Context `traceparent`: version "-" trace-id "-" parent-id
    /// "-" flags, lowercase hex only, 55 bytes; a version after 00 may add
    /// fields behind another '-' (Trace Context §4.3, "Versioning of
    /// traceparent"). The OTel SDKs read it the same way
    /// (opentelemetry-go propagation/trace_context.go:
    /// `^[0-9a-f]{2}-[a-f0-9]{32}-[a-f0-9]{16}-[a-f0-9]{2}(?:-.*)?$`, version
    /// ff and all-zero ids refused).
    pub fn parse(s: &str) -> Option<TraceParent> {
        let b = s.trim().as_bytes();
        if b.len() < 55 || b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let (v, t, p, f) = (&b[..2], &b[3..35], &b[36..52], &b[53..55]);
        if v == b"ff" || (b.len() > 55 && (v == b"00" || b[55] != b'-')) {
            return None;
        }
        // Checked first: the decoder would also take uppercase.
        let lower_hex = |x: &[u8]| x.iter().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
        if !(lower_hex(v) && lower_hex(t) && lower_hex(p) && lower_hex(f)) {
            return None;
        }
        let mut tp = TraceParent {
            trace_id: [0; 16],
            span_id: [0; 8],
            flags: 0,
        };
        let mut fl = [0u8; 1];
        const_hex::decode_to_slice(t, &mut tp.trace_id).ok()?;
        const_hex::decode_to_slice(p, &mut tp.span_id).ok()?;
        const_hex::decode_to_slice(f, &mut fl).ok()?;
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
    let mut out = String::new();
    route_template_into(target, &mut out);
    out
}

/// The definition [`route_template_into`] implements, kept for its test.
#[cfg(test)]
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

/// The attribute keys the span builder gives RED series, written into a
/// [`SeriesKey`] as their index: the key names were ~80 of a series key's
/// ~110 bytes, copied, hashed and compared for every observation.
const SERIES_KEYS: [&str; 15] = [
    "http.request.method",
    "network.protocol.version",
    "http.response.status_code",
    "http.route",
    "url.scheme",
    "server.address",
    "server.port",
    "error.type",
    "rpc.system",
    "rpc.service",
    "rpc.method",
    "rpc.grpc.status_code",
    "db.system.name",
    "db.operation.name",
    OVERFLOW_ATTR,
];
/// A key not in [`SERIES_KEYS`]: its text follows.
const TEXT_KEY: u8 = 0xff;

/// The index of `k` in [`SERIES_KEYS`]. Inlined: the builder's keys are
/// literals, so the comparisons fold away at its call sites.
#[inline(always)]
fn series_key_id(k: &str) -> Option<u8> {
    let mut i = 0;
    while i < SERIES_KEYS.len() {
        if SERIES_KEYS[i].len() == k.len() && SERIES_KEYS[i] == k {
            return Some(i as u8);
        }
        i += 1;
    }
    None
}

/// The attributes of one metric series as a canonical byte key, in the
/// fixed order `build` emits them: each key as its index in
/// [`SERIES_KEYS`] (one byte) or, for another key, [`TEXT_KEY`] and its
/// text; each value (and such a key's text) as a little-endian `u16`
/// length and its bytes. Looked up by borrowed bytes, so recording an
/// observation of an existing series allocates nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SeriesKey(Vec<u8>);

impl SeriesKey {
    pub fn clear(&mut self) {
        self.0.clear();
    }

    fn push_text(&mut self, s: &str) {
        let s = &s.as_bytes()[..s.len().min(usize::from(u16::MAX))];
        self.0.extend_from_slice(&(s.len() as u16).to_le_bytes());
        self.0.extend_from_slice(s);
    }

    #[inline(always)]
    pub fn push(&mut self, k: &str, v: &str) {
        match series_key_id(k) {
            Some(id) => self.0.push(id),
            None => {
                self.0.push(TEXT_KEY);
                self.push_text(k);
            }
        }
        self.push_text(v);
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The (key, value) pairs of an encoded key.
    pub fn attrs(mut b: &[u8]) -> Vec<(String, String)> {
        let text = |b: &mut &[u8]| -> Option<String> {
            let n = usize::from(u16::from_le_bytes([*b.first()?, *b.get(1)?]));
            let s = b.get(2..2 + n)?;
            *b = &b[2 + n..];
            Some(String::from_utf8_lossy(s).into_owned())
        };
        let key = |b: &mut &[u8]| -> Option<String> {
            let (&id, rest) = b.split_first()?;
            *b = rest;
            match SERIES_KEYS.get(usize::from(id)) {
                Some(k) => Some((*k).to_owned()),
                None => text(b),
            }
        };
        let mut out = Vec::new();
        while let Some(k) = key(&mut b)
            && let Some(v) = text(&mut b)
        {
            out.push((k, v));
        }
        out
    }
}

/// One RED observation of an exchange; its attributes are in
/// [`Scratch::series`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Observation {
    pub metric: &'static str,
    pub seconds: f64,
}

/// Buffers reused from span to span.
#[derive(Debug, Default)]
pub struct Scratch {
    /// The metric series of the last `build`'s observation.
    pub series: SeriesKey,
    attrs: Vec<u8>,
    name: String,
    route: String,
    /// `peer` formatted, cached while consecutive spans share the address.
    peer: String,
    peer_ip: Option<std::net::IpAddr>,
    text: String,
}

/// Byte classes for route templating: which identifier shapes a byte
/// may belong to, and the bytes that end a segment or the path.
const C_DIGIT: u8 = 1;
const C_HEX: u8 = 2;
const C_TOKEN: u8 = 4;
const C_SLASH: u8 = 8;
const C_END: u8 = 16;

const fn route_classes() -> [u8; 256] {
    let mut m = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        let mut v = 0;
        if c.is_ascii_digit() {
            v |= C_DIGIT;
        }
        if c.is_ascii_hexdigit() {
            v |= C_HEX;
        }
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            v |= C_TOKEN;
        }
        if c == b'/' {
            v |= C_SLASH;
        }
        if c == b'?' || c == b'#' {
            v |= C_END;
        }
        m[b] = v;
        b += 1;
    }
    m
}
static ROUTE_CLASS: [u8; 256] = route_classes();

/// [`is_identifier`] of a segment from the classes of its bytes: `all`
/// is the AND and `any` the OR of them.
fn is_identifier_classes(seg: &[u8], all: u8, any: u8) -> bool {
    let n = seg.len();
    if n == 0 {
        return false;
    }
    if all & C_DIGIT != 0 {
        return true;
    }
    if n >= 16 && (all & C_HEX != 0 || (any & C_DIGIT != 0 && all & C_TOKEN != 0)) {
        return true;
    }
    n == 36
        && seg.iter().enumerate().all(|(i, c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                *c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Writes `route_template(target)` into `out`.
///
/// One pass over the bytes with a class table, copying runs of kept
/// segments at once: the split-then-test version was ~500 instructions
/// for `/api/items/42` (callgrind, session 25). '?', '#' and '/' are
/// ASCII, so every cut is on a character boundary. The property test
/// below checks it against the split-and-join definition.
fn route_template_into(target: &str, out: &mut String) {
    out.clear();
    let b = target.as_bytes();
    // Bytes of `target` up to `copied` are in `out` already.
    let mut copied = 0;
    let mut seg = 0;
    let (mut all, mut any) = (u8::MAX, 0u8);
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        let k = ROUTE_CLASS[usize::from(c)];
        if k & (C_SLASH | C_END) == 0 {
            all &= k;
            any |= k;
            continue;
        }
        if is_identifier_classes(&b[seg..i], all, any) {
            out.push_str(&target[copied..seg]);
            out.push_str("{id}");
            copied = i;
        }
        if k & C_END != 0 {
            end = i;
            break;
        }
        seg = i + 1;
        (all, any) = (u8::MAX, 0);
    }
    if end == b.len() && is_identifier_classes(&b[seg..], all, any) {
        out.push_str(&target[copied..seg]);
        out.push_str("{id}");
        copied = end;
    }
    if end == 0 {
        out.push('/');
        return;
    }
    out.push_str(&target[copied..end]);
}

/// A span attribute whose key and value are both literals, encoded at
/// compile time (`wire::key_value_const`).
macro_rules! const_attr {
    ($key:literal, $value:literal) => {{
        const B: [u8; 8 + $key.len() + $value.len()] =
            wire::key_value_const(wire::span::ATTRIBUTES, $key, $value);
        &B
    }};
}

#[inline(always)]
fn kv_str(out: &mut Vec<u8>, key: &str, v: &str) {
    wire::key_value(
        out,
        wire::span::ATTRIBUTES,
        key,
        wire::Value::Str(v.as_bytes()),
    );
}

#[inline(always)]
fn kv_int(out: &mut Vec<u8>, key: &str, v: i64) {
    wire::key_value(out, wire::span::ATTRIBUTES, key, wire::Value::Int(v));
}

/// Formats `ip` into `peer` unless it holds it already (`at`).
fn peer_text(peer: &mut String, at: &mut Option<std::net::IpAddr>, ip: std::net::IpAddr) {
    use std::fmt::Write as _;
    if *at != Some(ip) {
        peer.clear();
        let _ = write!(peer, "{ip}");
        *at = Some(ip);
    }
}

/// Appends the span of one exchange to `out` (an encoded OTLP `Span`
/// message) and returns its metric observation, whose series is left in
/// `s.series`.
/// `wall_offset_ns` converts the kernel's monotonic clock to Unix time.
/// `conn` holds the encoded attributes that depend only on the connection
/// (addresses, ports, transport): empty, they are written into it; the
/// caller keeps it with the connection, so that its later spans copy them
/// as bytes (the connection's tuple and role do not change once it has
/// exchanges).
#[allow(clippy::too_many_arguments)]
pub fn build(
    ex: &Exchange,
    tuple: &Tuple,
    role: Role,
    tls: bool,
    wall_offset_ns: i128,
    conn: &mut Vec<u8>,
    s: &mut Scratch,
    out: &mut Vec<u8>,
) -> Option<Observation> {
    let to_wall = |mono: u64| (i128::from(mono) + wall_offset_ns).max(0) as u64;
    let start = to_wall(ex.start_ns);
    let end = to_wall(ex.end_ns).max(start);
    let server = role != Role::Client;
    let seconds = (end - start) as f64 / 1e9;
    s.attrs.clear();
    s.series.clear();
    s.name.clear();
    if conn.is_empty() {
        peer_text(&mut s.peer, &mut s.peer_ip, tuple.peer);
        if server {
            kv_str(conn, "client.address", &s.peer);
            kv_int(conn, "client.port", i64::from(tuple.peer_port));
            kv_int(conn, "server.port", i64::from(tuple.local_port));
        } else {
            kv_str(conn, "server.address", &s.peer);
            kv_int(conn, "server.port", i64::from(tuple.peer_port));
        }
        kv_str(conn, "network.transport", "tcp");
    }
    let mut parent: Option<TraceParent> = None;
    let mut error = false;
    let observation;
    let mut num = itoa::Buffer::new();
    let scheme = if tls { "https" } else { "http" };
    match &ex.detail {
        Detail::Http(h) => {
            // The name, parent and error are known before any attribute,
            // so the span's head is written first and the attributes go
            // straight into `out`, not through `s.attrs` (a copy of ~330
            // bytes per span).
            let (method, target) = (h.method(), h.target());
            route_template_into(target, &mut s.route);
            s.name.push_str(method);
            if server {
                error = h.status >= 500 || h.status == 0;
                s.name.push(' ');
                s.name.push_str(&s.route);
                parent = h.traceparent().and_then(TraceParent::parse);
            } else {
                error = h.status >= 400 || h.status == 0;
            }
            let flags = span_head(out, parent, &s.name, server, start, end);
            let a = &mut *out;
            a.extend_from_slice(conn);
            // Byte searches: the char-pattern `split_once`/`split` were
            // ~250 instructions per span (callgrind, session 25).
            let (path, query) = match target.bytes().position(|b| b == b'?') {
                Some(i) => (&target[..i], Some(&target[i + 1..])),
                None => (target, None),
            };
            kv_str(a, "http.request.method", method);
            a.extend_from_slice(const_attr!("network.protocol.name", "http"));
            match h.version {
                "1.1" => a.extend_from_slice(const_attr!("network.protocol.version", "1.1")),
                "1.0" => a.extend_from_slice(const_attr!("network.protocol.version", "1.0")),
                v => kv_str(a, "network.protocol.version", v),
            }
            if h.status > 0 {
                kv_int(a, "http.response.status_code", i64::from(h.status));
            }
            kv_int(a, "http.response.body.size", h.response_body_size as i64);
            if h.request_body_size > 0 {
                kv_int(a, "http.request.body.size", h.request_body_size as i64);
            }
            if let Some(ua) = h.user_agent() {
                kv_str(a, "user_agent.original", ua);
            }
            let status_str = num.format(h.status);
            s.series.push("http.request.method", method);
            s.series.push("network.protocol.version", h.version);
            if h.status > 0 {
                s.series.push("http.response.status_code", status_str);
            }
            if server {
                a.extend_from_slice(if tls {
                    const_attr!("url.scheme", "https")
                } else {
                    const_attr!("url.scheme", "http")
                });
                kv_str(a, "url.path", path);
                if let Some(q) = query {
                    kv_str(a, "url.query", q);
                }
                kv_str(a, "http.route", &s.route);
                if let Some(host) = h.host() {
                    let name = host
                        .bytes()
                        .position(|b| b == b':')
                        .map_or(host, |i| &host[..i]);
                    kv_str(a, "server.address", name);
                }
                s.series.push("http.route", &s.route);
                s.series.push("url.scheme", scheme);
            } else {
                peer_text(&mut s.peer, &mut s.peer_ip, tuple.peer);
                s.text.clear();
                s.text.push_str(scheme);
                s.text.push_str("://");
                s.text.push_str(h.host().unwrap_or(&s.peer));
                s.text.push_str(target);
                kv_str(a, "url.full", &s.text);
                s.series.push("server.address", &s.peer);
                s.series
                    .push("server.port", itoa::Buffer::new().format(tuple.peer_port));
            }
            if error {
                let et = if h.status == 0 {
                    "incomplete"
                } else {
                    status_str
                };
                kv_str(a, "error.type", et);
                s.series.push("error.type", et);
            }
            span_tail(out, error, flags);
            return Some(Observation {
                metric: if server {
                    "http.server.request.duration"
                } else {
                    "http.client.request.duration"
                },
                seconds,
            });
        }
        Detail::Http2(h) if !h.is_grpc() => {
            // Plain HTTP/2: same conventions as HTTP/1, protocol version 2.
            let as_http = Exchange {
                start_ns: ex.start_ns,
                end_ns: ex.end_ns,
                detail: Detail::Http(crate::protocol::http1::HttpExchange {
                    request: crate::protocol::http1::RequestText::new(
                        &h.method,
                        &h.path,
                        h.authority.as_deref(),
                        h.user_agent.as_deref(),
                        h.traceparent.as_deref(),
                    ),
                    status: h.status,
                    version: "2",
                    request_body_size: 0,
                    response_body_size: 0,
                }),
            };
            return build(&as_http, tuple, role, tls, wall_offset_ns, conn, s, out);
        }
        Detail::Http2(h) => {
            let a = &mut s.attrs;
            a.extend_from_slice(conn);
            let full = h.path.trim_start_matches('/');
            let (service, method) = full.rsplit_once('/').unwrap_or((full, ""));
            s.name.push_str(full);
            a.extend_from_slice(const_attr!("rpc.system", "grpc"));
            kv_str(a, "rpc.service", service);
            kv_str(a, "rpc.method", method);
            a.extend_from_slice(const_attr!("network.protocol.name", "http"));
            a.extend_from_slice(const_attr!("network.protocol.version", "2"));
            // A reset stream or a missing status is reported as UNKNOWN (2).
            let code = h.grpc_status.unwrap_or(2);
            kv_int(a, "rpc.grpc.status_code", code);
            if let Some(m) = &h.grpc_message {
                kv_str(a, "rpc.grpc.status_message", m);
            }
            // Server side: only codes that mean the server failed are errors
            // (semantic conventions for gRPC); client side: any non-OK code.
            error = if server {
                matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
            } else {
                code != 0
            };
            if server {
                parent = h.traceparent.as_deref().and_then(TraceParent::parse);
            }
            let code_str = num.format(code);
            if error {
                kv_str(a, "error.type", code_str);
            }
            s.series.push("rpc.system", "grpc");
            s.series.push("rpc.service", service);
            s.series.push("rpc.method", method);
            s.series.push("rpc.grpc.status_code", code_str);
            observation = Some(Observation {
                metric: if server {
                    "rpc.server.duration"
                } else {
                    "rpc.client.duration"
                },
                seconds,
            });
        }
        Detail::Redis(r) => {
            let a = &mut s.attrs;
            a.extend_from_slice(conn);
            s.name.push_str(&r.command);
            a.extend_from_slice(const_attr!("db.system.name", "redis"));
            kv_str(a, "db.operation.name", &r.command);
            s.series.push("db.system.name", "redis");
            s.series.push("db.operation.name", &r.command);
            if let Some(e) = &r.error {
                error = true;
                kv_str(a, "db.response.status_code", e);
                kv_str(a, "error.type", e);
                s.series.push("error.type", e);
            }
            observation = (!server).then_some(Observation {
                metric: "db.client.operation.duration",
                seconds,
            });
        }
        Detail::Postgres(p) | Detail::MySql(p) => {
            let a = &mut s.attrs;
            a.extend_from_slice(conn);
            let system = match &ex.detail {
                Detail::MySql(_) => "mysql",
                _ => "postgresql",
            };
            s.name.push_str(if p.operation.is_empty() {
                system
            } else {
                &p.operation
            });
            kv_str(a, "db.system.name", system);
            if !p.operation.is_empty() {
                kv_str(a, "db.operation.name", &p.operation);
            }
            // Empty when a prepared statement was prepared before the agent
            // started: no text is better than a wrong one.
            if !p.query.is_empty() {
                kv_str(a, "db.query.text", &p.query);
            }
            s.series.push("db.system.name", system);
            s.series.push("db.operation.name", &p.operation);
            if let Some(code) = &p.error_code {
                error = true;
                kv_str(a, "db.response.status_code", code);
                kv_str(a, "error.type", code);
                s.series.push("error.type", code);
            }
            observation = (!server).then_some(Observation {
                metric: "db.client.operation.duration",
                seconds,
            });
        }
    }
    let flags = span_head(out, parent, &s.name, server, start, end);
    out.extend_from_slice(&s.attrs);
    span_tail(out, error, flags);
    observation
}

/// The span's fields before its attributes, in tag order as prost writes
/// them; returns the flags for [`span_tail`].
fn span_head(
    out: &mut Vec<u8>,
    parent: Option<TraceParent>,
    name: &str,
    server: bool,
    start: u64,
    end: u64,
) -> u32 {
    let (trace_id, parent_id, flags) = match parent {
        Some(tp) => (tp.trace_id, Some(tp.span_id), u32::from(tp.flags)),
        None => (random_bytes::<16>(), None, 1),
    };
    wire::bytes(out, wire::span::TRACE_ID, &trace_id);
    wire::bytes(out, wire::span::SPAN_ID, &random_bytes::<8>());
    if let Some(p) = parent_id {
        wire::bytes(out, wire::span::PARENT_SPAN_ID, &p);
    }
    wire::bytes(out, wire::span::NAME, name.as_bytes());
    let kind = if server {
        SpanKind::Server
    } else {
        SpanKind::Client
    };
    wire::varint(out, wire::span::KIND, kind as u64);
    wire::fixed64(out, wire::span::START, start);
    wire::fixed64(out, wire::span::END, end);
    flags
}

/// The span's fields after its attributes.
fn span_tail(out: &mut Vec<u8>, error: bool, flags: u32) {
    if error {
        wire::status(out, StatusCode::Error as i32);
    }
    wire::fixed32(out, wire::span::FLAGS, flags);
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

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// One series: its resource, its metric and where its attributes start in
/// its key.
#[derive(Debug)]
struct Series {
    resource: u32,
    metric: &'static str,
    attrs_at: usize,
    hist: Hist,
}

/// Cumulative RED histograms per resource and metric, with a cap on series
/// per (resource, metric); beyond it observations land in one overflow
/// series, as the OpenTelemetry SDKs do.
#[derive(Debug)]
pub struct Metrics {
    start_unix_ns: u64,
    limit: usize,
    /// Resources by value, numbered in first-seen order.
    resource_ids: HashMap<Arc<ResourceInfo>, u32>,
    resources: Vec<Arc<ResourceInfo>>,
    /// Resource pointer → id. The reader hands out one `Arc` per resource
    /// per rescan period, so the hash of a resource's strings is computed
    /// once per period instead of once per observation; the held `Arc`
    /// keeps the address from being reused while it is a key.
    by_ptr: FastMap<usize, (Arc<ResourceInfo>, u32)>,
    /// Key: resource id, metric name, `SeriesKey` bytes.
    series: FastMap<Box<[u8]>, Series>,
    per_metric: FastMap<(u32, &'static str), usize>,
    key: Vec<u8>,
    pub overflowed: u64,
}

pub const OVERFLOW_ATTR: &str = "otel.metric.overflow";

impl Metrics {
    pub fn new(start_unix_ns: u64, limit: usize) -> Self {
        Metrics {
            start_unix_ns,
            limit: limit.max(1),
            resource_ids: HashMap::new(),
            resources: Vec::new(),
            by_ptr: FastMap::default(),
            series: FastMap::default(),
            per_metric: FastMap::default(),
            key: Vec::new(),
            overflowed: 0,
        }
    }

    fn resource_id(&mut self, r: &Arc<ResourceInfo>) -> u32 {
        let ptr = Arc::as_ptr(r) as usize;
        if let Some((_, id)) = self.by_ptr.get(&ptr) {
            return *id;
        }
        let next = self.resources.len() as u32;
        let id = *self.resource_ids.entry(r.clone()).or_insert(next);
        if id == next {
            self.resources.push(r.clone());
        }
        self.by_ptr.insert(ptr, (r.clone(), id));
        id
    }

    /// Drops the pointer cache; called when the reader rebuilds its
    /// resources, so that the cache holds no stale `Arc`s.
    pub fn forget_pointers(&mut self) {
        self.by_ptr.clear();
    }

    fn make_key(&mut self, resource: u32, metric: &'static str, series: &[u8]) -> usize {
        self.key.clear();
        self.key.extend_from_slice(&resource.to_le_bytes());
        self.key.extend_from_slice(metric.as_bytes());
        self.key.push(0);
        let at = self.key.len();
        self.key.extend_from_slice(series);
        at
    }

    pub fn record(
        &mut self,
        resource: &Arc<ResourceInfo>,
        metric: &'static str,
        series: &SeriesKey,
        seconds: f64,
    ) {
        let rid = self.resource_id(resource);
        let at = self.make_key(rid, metric, series.as_bytes());
        if let Some(s) = self.series.get_mut(&self.key[..]) {
            s.hist.record(seconds);
            return;
        }
        let count = self.per_metric.entry((rid, metric)).or_default();
        let at = if *count >= self.limit {
            self.overflowed += 1;
            let mut overflow = SeriesKey::default();
            overflow.push(OVERFLOW_ATTR, "true");
            self.make_key(rid, metric, overflow.as_bytes())
        } else {
            *count += 1;
            at
        };
        // The overflow series may exist already; a new attribute set does not.
        if let Some(s) = self.series.get_mut(&self.key[..]) {
            s.hist.record(seconds);
            return;
        }
        let mut hist = Hist::new();
        hist.record(seconds);
        self.series.insert(
            self.key.clone().into_boxed_slice(),
            Series {
                resource: rid,
                metric,
                attrs_at: at,
                hist,
            },
        );
    }

    /// Number of series of one metric across resources (for tests/metrics).
    pub fn series(&self, metric: &str) -> usize {
        self.series.values().filter(|s| s.metric == metric).count()
    }

    pub fn to_otlp(&self, now_unix_ns: u64, host: &str) -> Vec<ResourceMetrics> {
        let mut grouped: std::collections::BTreeMap<u32, std::collections::BTreeMap<&str, Vec<_>>> =
            Default::default();
        for (key, s) in &self.series {
            grouped
                .entry(s.resource)
                .or_default()
                .entry(s.metric)
                .or_default()
                .push((SeriesKey::attrs(&key[s.attrs_at..]), &s.hist));
        }
        let mut out = Vec::new();
        for (rid, metrics) in grouped {
            let Some(res) = self.resources.get(rid as usize) else {
                continue;
            };
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
                    name: name.to_owned(),
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
mod golden;

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use opentelemetry_proto::tonic::{
        common::v1::{AnyValue, any_value},
        trace::v1::Span,
    };
    use prost::Message as _;

    use super::*;
    use crate::protocol::http1::{HttpExchange, RequestText};

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
        assert_eq!(route_template("/a/7/"), "/a/{id}/");
        assert_eq!(route_template("?q=1"), "/");
        assert_eq!(route_template("/é/42#x"), "/é/{id}");
    }

    proptest::proptest! {
        /// The byte-search templating equals the plain split-and-join
        /// definition on any input.
        #[test]
        fn route_template_matches_its_definition(
            t in proptest::prop_oneof![
                "[/a-zA-Z0-9é?#_-]{0,40}",
                // Segments of every identifier shape and near misses.
                "(/([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-fA-G]{4}-[0-9a-f]{4}-[0-9a-f]{11,13}|[0-9a-fA-Z_-]{0,20}|[0-9]{0,3}é?|)){0,6}([?#][a-z/?#]{0,5})?",
            ]
        ) {
            let path = t.split(['?', '#']).next().unwrap_or_default();
            let want = if path.is_empty() {
                "/".to_owned()
            } else {
                path.split('/')
                    .map(|seg| if is_identifier(seg) { "{id}" } else { seg })
                    .collect::<Vec<_>>()
                    .join("/")
            };
            proptest::prop_assert_eq!(route_template(&t), want);
        }
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
        // A later version may carry more fields; a bad separator is refused.
        let v1 = TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what");
        assert_eq!(v1.map(|t| t.flags), Some(1));
        assert!(
            TraceParent::parse("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x")
                .is_none()
        );
        assert!(
            TraceParent::parse("0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        // Only lowercase hex digits (from_str_radix took "+f" and "AB").
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-+1").is_none()
        );
        assert!(
            TraceParent::parse("00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01").is_none()
        );
        assert!(
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g").is_none()
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

    /// Builds one span into a fresh buffer; returns it with its bytes.
    fn built(
        ex: &Exchange,
        role: Role,
        off: i128,
        s: &mut Scratch,
    ) -> (Option<Observation>, Span, Vec<u8>) {
        let mut out = Vec::new();
        let o = build(ex, &tuple(), role, false, off, &mut Vec::new(), s, &mut out);
        (o, Span::decode(&out[..]).unwrap(), out)
    }

    #[test]
    fn server_span_continues_traceparent() {
        let ex = Exchange {
            start_ns: 1_000,
            end_ns: 3_000,
            detail: Detail::Http(HttpExchange {
                request: RequestText::new(
                    "GET",
                    "/items/7?q=1",
                    Some("shop:8080"),
                    None,
                    Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                ),
                status: 503,
                version: "1.1",
                ..HttpExchange::default()
            }),
        };
        let mut s = Scratch::default();
        let (o, span, bytes) = built(&ex, Role::Server, 10, &mut s);
        let o = o.unwrap();
        assert_eq!(span.name, "GET /items/{id}");
        assert_eq!(
            span.parent_span_id,
            vec![0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]
        );
        assert_eq!(span.trace_id[..2], [0x4b, 0xf9]);
        assert_eq!(span.end_time_unix_nano - span.start_time_unix_nano, 2_000);
        assert_eq!(span.start_time_unix_nano, 1_010);
        assert_eq!(span.kind, SpanKind::Server as i32);
        assert_eq!(span.status.clone().unwrap().code, StatusCode::Error as i32);
        let attr = |k: &str| {
            span.attributes
                .iter()
                .find(|a| a.key == k)
                .and_then(|a| a.value.clone())
                .and_then(|v| v.value)
        };
        assert_eq!(
            attr("http.route"),
            Some(any_value::Value::StringValue("/items/{id}".into()))
        );
        assert_eq!(
            attr("url.query"),
            Some(any_value::Value::StringValue("q=1".into()))
        );
        assert_eq!(
            attr("server.address"),
            Some(any_value::Value::StringValue("shop".into()))
        );
        assert_eq!(
            attr("http.response.status_code"),
            Some(any_value::Value::IntValue(503))
        );
        assert_eq!(
            attr("error.type"),
            Some(any_value::Value::StringValue("503".into()))
        );
        // Written field by field, the bytes are exactly prost's encoding.
        assert_eq!(span.encode_to_vec(), bytes);
        assert_eq!(o.metric, "http.server.request.duration");
        let series = SeriesKey::attrs(s.series.as_bytes());
        assert!(series.contains(&("http.route".into(), "/items/{id}".into())));
        assert!(series.contains(&("error.type".into(), "503".into())));
    }

    #[test]
    fn http_inside_tls_is_https() {
        let mut s = Scratch::default();
        let ex = Exchange {
            start_ns: 5,
            end_ns: 9,
            detail: Detail::Http(HttpExchange {
                request: RequestText::new("GET", "/a?b=1", Some("shop.example:8443"), None, None),
                status: 200,
                version: "1.1",
                ..HttpExchange::default()
            }),
        };
        let text = |span: &Span, key: &str| {
            span.attributes.iter().find(|a| a.key == key).and_then(|a| {
                match a.value.as_ref()?.value.as_ref()? {
                    any_value::Value::StringValue(v) => Some(v.clone()),
                    _ => None,
                }
            })
        };
        for (role, key, want) in [
            (Role::Client, "url.full", "https://shop.example:8443/a?b=1"),
            (Role::Server, "url.scheme", "https"),
        ] {
            let mut out = Vec::new();
            build(
                &ex,
                &tuple(),
                role,
                true,
                0,
                &mut Vec::new(),
                &mut s,
                &mut out,
            );
            let span = Span::decode(&out[..]).unwrap();
            assert_eq!(text(&span, key).as_deref(), Some(want));
        }
        // The RED series carries the scheme too.
        let mut out = Vec::new();
        build(
            &ex,
            &tuple(),
            Role::Server,
            true,
            0,
            &mut Vec::new(),
            &mut s,
            &mut out,
        );
        assert!(
            SeriesKey::attrs(s.series.as_bytes())
                .contains(&("url.scheme".to_owned(), "https".to_owned()))
        );
    }

    #[test]
    fn spans_without_parent_get_fresh_ids_and_match_prost() {
        let mut s = Scratch::default();
        let exchanges = [
            Detail::Http(HttpExchange {
                request: RequestText::new("POST", "/v1/x", None, Some("curl/8"), None),
                status: 200,
                version: "1.1",
                request_body_size: 3,
                ..HttpExchange::default()
            }),
            Detail::Redis(crate::protocol::redis::RedisExchange {
                command: "GET".into(),
                error: Some("ERR".into()),
            }),
        ];
        let mut ids = std::collections::HashSet::new();
        for (i, d) in exchanges.into_iter().enumerate() {
            let ex = Exchange {
                start_ns: 5,
                end_ns: 9,
                detail: d,
            };
            let role = if i == 0 { Role::Client } else { Role::Server };
            let (_, span, bytes) = built(&ex, role, 0, &mut s);
            assert_eq!(span.encode_to_vec(), bytes);
            assert_eq!(span.trace_id.len(), 16);
            assert_eq!(span.span_id.len(), 8);
            assert!(span.parent_span_id.is_empty());
            assert_eq!(span.flags, 1);
            assert!(ids.insert(span.trace_id.clone()));
            if i == 0 {
                assert_eq!(span.name, "POST");
                assert!(span.status.is_none());
                assert!(span.attributes.iter().any(|a| a.key == "url.full"
                    && a.value
                        == Some(AnyValue {
                            value: Some(any_value::Value::StringValue(
                                "http://127.0.0.1/v1/x".into()
                            ))
                        })));
            } else {
                assert_eq!(span.name, "GET");
                assert!(span.status.is_some());
            }
        }
    }

    #[test]
    fn series_keys_decode_to_what_was_pushed() {
        let long = "v".repeat(70_000);
        let pairs = [
            ("http.route", "/a/{id}"),
            ("k", "1"),
            ("error.type", ""),
            (OVERFLOW_ATTR, "true"),
            ("", "x"),
            ("db.operation.name", long.as_str()),
        ];
        let mut k = SeriesKey::default();
        for (a, b) in pairs {
            k.push(a, b);
        }
        let got = SeriesKey::attrs(k.as_bytes());
        let want: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| ((*a).to_owned(), b[..b.len().min(65_535)].to_owned()))
            .collect();
        assert_eq!(got, want);
        // Every known key is one byte; an equal set gives equal bytes.
        let mut a = SeriesKey::default();
        a.push("http.route", "/x");
        assert_eq!(a.as_bytes(), [3, 2, 0, b'/', b'x']);
        for (i, key) in SERIES_KEYS.iter().enumerate() {
            assert_eq!(series_key_id(key), Some(i as u8));
        }
        assert_eq!(series_key_id("http.rout"), None);
    }

    fn series(k: &str, v: &str) -> SeriesKey {
        let mut s = SeriesKey::default();
        s.push(k, v);
        s
    }

    #[test]
    fn cardinality_cap_uses_overflow_series() {
        let info = ResourceInfo {
            service_name: "s".into(),
            namespace: None,
            pod: None,
            pid: 1,
            exe_name: String::new(),
            exe_path: String::new(),
            container_id: None,
        };
        let mut m = Metrics::new(0, 3);
        for i in 0..10 {
            // A new Arc of an equal resource every few observations, as the
            // reader's rescans produce: still the same series.
            let res = Arc::new(info.clone());
            if i % 4 == 0 {
                m.forget_pointers();
            }
            m.record(&res, "m", &series("k", &i.to_string()), 0.01);
        }
        m.record(&Arc::new(info.clone()), "m", &series("k", "1"), 0.02);
        assert_eq!(m.series("m"), 4);
        assert_eq!(m.overflowed, 7);
        let otlp = m.to_otlp(5, "h");
        assert_eq!(otlp.len(), 1);
        let Some(metric::Data::Histogram(h)) = &otlp[0].scope_metrics[0].metrics[0].data else {
            panic!()
        };
        assert_eq!(h.data_points.iter().map(|p| p.count).sum::<u64>(), 11);
        let one = h
            .data_points
            .iter()
            .find(|p| p.attributes == vec![kv("k", "1")])
            .unwrap();
        assert_eq!(one.count, 2);
        assert!(
            h.data_points
                .iter()
                .any(|p| p.attributes == vec![kv(OVERFLOW_ATTR, true)] && p.count == 7)
        );
    }
}
