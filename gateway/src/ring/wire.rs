//! Trace requests with their spans still encoded, for the ring.
//!
//! A replica in a 3-member ring forwards 2/3 of what it receives. Decoding those
//! spans only to encode them again for their owner, which decodes them once more,
//! was most of the ring's CPU (docs/performance.md, "Gateway ring"). Here a
//! received `ExportTraceServiceRequest` is decoded by prost into resources and
//! scopes as usual, but each span is kept as the bytes it arrived in, with its
//! trace id; the router decodes only the spans this replica owns and copies the
//! others' bytes into the request it forwards.
//!
//! **Refused exactly as the full decode refuses.** The OTLP receiver refuses an
//! undecodable request as a whole. A span that is kept encoded is therefore
//! checked here as prost would decode it, at the depth it has in the request
//! (prost's recursion limit counts from the request): every field of
//! `opentelemetry.proto.trace.v1.Span` and of the messages inside it is read with
//! prost's own `encoding` functions (scalars, nested messages, unknown fields),
//! except that strings and bytes are checked in place instead of copied; when
//! that check does not pass, prost's own string or bytes decode is asked, so it
//! is also prost that refuses. A request this module accepts therefore decodes
//! with `ExportTraceServiceRequest::decode`, and the owner never refuses bytes
//! its peer accepted from a client (which would lose the other spans of the
//! forwarded batch). `tests` compares the two on mutated requests.
//!
//! Unknown fields inside a span travel with its bytes to the owner, whose prost
//! decode drops them, as the receiving replica's decode used to. Unknown fields
//! of resources and scopes are dropped here (they are decoded and encoded again
//! once per forwarded group), as before.
//!
//! The message shapes mirror `opentelemetry-proto` 0.31 (the version in
//! Cargo.toml); a new field there is an unknown field here, skipped by prost's
//! `skip_field` and still carried in the span's bytes, so it is not lost — but a
//! new field's type errors would not be caught here, hence the test that sets
//! every field number with every wire type.

use bytes::{Buf, BufMut, Bytes};
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::encoding::{
    DecodeContext, WireType, bool as pbool, bytes as pbytes, check_wire_type, decode_varint,
    double, encode_key, encode_varint, encoded_len_varint, fixed32, fixed64, int32, int64, key_len,
    message, skip_field, string, uint32,
};
use prost::{DecodeError, Message};

use crate::sampling::{TraceId, to_trace_id};
use crate::signal::{ResourceItems, Signal};

/// `ExportTraceServiceRequest` whose spans stay encoded when decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireRequest {
    #[prost(message, repeated, tag = "1")]
    pub resource_spans: Vec<WireResourceSpans>,
}

/// `ResourceSpans`, its scopes' spans encoded or decoded.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WireResourceSpans {
    #[prost(message, optional, tag = "1")]
    pub resource: Option<Resource>,
    #[prost(message, repeated, tag = "2")]
    pub scope_spans: Vec<WireScopeSpans>,
    #[prost(string, tag = "3")]
    pub schema_url: String,
}

/// `ScopeSpans`; `spans` as received over protobuf ([`Spans::Encoded`]) or as
/// decoded elsewhere (OTLP/JSON, spans handed off by the sampler).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct WireScopeSpans {
    pub scope: Option<InstrumentationScope>,
    pub spans: Spans,
    pub schema_url: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Spans {
    Encoded(Vec<EncodedSpan>),
    Decoded(Vec<Span>),
}

impl Default for Spans {
    /// What a protobuf decode fills.
    fn default() -> Self {
        Spans::Encoded(Vec::new())
    }
}

impl Spans {
    pub fn len(&self) -> usize {
        match self {
            Spans::Encoded(v) => v.len(),
            Spans::Decoded(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A `Span` message's bytes (without its key and length), checked to decode.
#[derive(Debug, Clone, PartialEq)]
pub struct EncodedSpan {
    /// As [`to_trace_id`] makes it of the decoded span's `trace_id`.
    pub trace_id: TraceId,
    pub bytes: Bytes,
}

impl EncodedSpan {
    /// Reads one `spans` field of `ScopeSpans` (the caller read its key) and
    /// checks it as prost would decode it with `ctx`, the context prost passes
    /// to the fields of that `ScopeSpans`.
    fn merge(
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<Self, DecodeError> {
        let mut bytes = Bytes::new();
        // Wire type, length and bounds as prost checks them; zero-copy when
        // decoding from `Bytes` (the HTTP body, tonic's buffer).
        pbytes::merge(wire_type, &mut bytes, buf, ctx.clone())?;
        // The field again, key aside, so that prost's `message::merge` reads the
        // length, enters the recursion and checks the end as for a decoded span.
        let mut prefix = [0u8; 10];
        let n = {
            let mut p = &mut prefix[..];
            encode_varint(bytes.len() as u64, &mut p);
            10 - p.len()
        };
        let mut check = Check::new(Shape::Span);
        let mut framed = (&prefix[..n]).chain(&bytes[..]);
        message::merge(WireType::LengthDelimited, &mut check, &mut framed, ctx)?;
        Ok(EncodedSpan {
            trace_id: check.trace_id,
            bytes,
        })
    }

    /// The span; `Err` only if `bytes` were not checked by a decode here.
    pub fn decode(&self) -> Result<Span, DecodeError> {
        Span::decode(self.bytes.clone())
    }
}

impl Message for WireScopeSpans {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        if let Some(scope) = &self.scope {
            message::encode(1, scope, buf);
        }
        match &self.spans {
            Spans::Encoded(v) => {
                for s in v {
                    // A message field is its bytes behind the key and length.
                    pbytes::encode(2, &s.bytes, buf);
                }
            }
            Spans::Decoded(v) => message::encode_repeated(2, v, buf),
        }
        if !self.schema_url.is_empty() {
            string::encode(3, &self.schema_url, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match tag {
            1 => message::merge(
                wire_type,
                self.scope.get_or_insert_with(Default::default),
                buf,
                ctx,
            ),
            2 => {
                let span = EncodedSpan::merge(wire_type, buf, ctx)?;
                match &mut self.spans {
                    Spans::Encoded(v) => v.push(span),
                    // Not reached by a decode (it starts from `Encoded`); kept
                    // whole rather than panicking.
                    Spans::Decoded(v) => v.push(span.decode()?),
                }
                Ok(())
            }
            3 => string::merge(wire_type, &mut self.schema_url, buf, ctx),
            _ => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        let scope = self
            .scope
            .as_ref()
            .map_or(0, |s| message::encoded_len(1, s));
        let spans = match &self.spans {
            Spans::Encoded(v) => v
                .iter()
                .map(|s| key_len(2) + encoded_len_varint(s.bytes.len() as u64) + s.bytes.len())
                .sum(),
            Spans::Decoded(v) => message::encoded_len_repeated(2, v),
        };
        let schema = if self.schema_url.is_empty() {
            0
        } else {
            string::encoded_len(3, &self.schema_url)
        };
        scope + spans + schema
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}

impl ResourceItems for WireResourceSpans {
    const SIGNAL: Signal = Signal::Traces;
    fn resource(&self) -> Option<&Resource> {
        self.resource.as_ref()
    }
    fn resource_mut(&mut self) -> &mut Option<Resource> {
        &mut self.resource
    }
    fn item_count(&self) -> usize {
        self.scope_spans.iter().map(|s| s.spans.len()).sum()
    }
}

impl From<ResourceSpans> for WireResourceSpans {
    /// Moves the decoded spans; nothing is encoded.
    fn from(rs: ResourceSpans) -> Self {
        WireResourceSpans {
            resource: rs.resource,
            scope_spans: rs
                .scope_spans
                .into_iter()
                .map(|ss| WireScopeSpans {
                    scope: ss.scope,
                    spans: Spans::Decoded(ss.spans),
                    schema_url: ss.schema_url,
                })
                .collect(),
            schema_url: rs.schema_url,
        }
    }
}

impl WireResourceSpans {
    /// Decodes the encoded spans. A span that does not decode (impossible for
    /// one read by [`WireRequest::decode`], which checked it) is left out and
    /// counted in the returned number.
    pub fn into_decoded(self) -> (ResourceSpans, usize) {
        let mut undecodable = 0;
        let scope_spans = self
            .scope_spans
            .into_iter()
            .map(|ss| ScopeSpans {
                scope: ss.scope,
                spans: match ss.spans {
                    Spans::Decoded(v) => v,
                    Spans::Encoded(v) => v
                        .iter()
                        .filter_map(|s| {
                            let d = s.decode().ok();
                            undecodable += usize::from(d.is_none());
                            d
                        })
                        .collect(),
                },
                schema_url: ss.schema_url,
            })
            .collect();
        (
            ResourceSpans {
                resource: self.resource,
                scope_spans,
                schema_url: self.schema_url,
            },
            undecodable,
        )
    }
}

/// Decodes a protobuf `ExportTraceServiceRequest`, spans kept encoded. Refuses
/// exactly what `ExportTraceServiceRequest::decode` refuses, with its error:
/// when the check here fails, the full decode is run for its message (and, were
/// the two ever to disagree, its result is taken, spans decoded).
pub fn decode_request(body: Bytes) -> Result<Vec<WireResourceSpans>, DecodeError> {
    match WireRequest::decode(body.clone()) {
        Ok(r) => Ok(r.resource_spans),
        Err(_) => {
            use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
            ExportTraceServiceRequest::decode(body)
                .map(|r| r.resource_spans.into_iter().map(Into::into).collect())
        }
    }
}

/// The messages inside a `Span` (opentelemetry-proto 0.31, `trace.proto` and
/// `common.proto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Span,
    Event,
    Link,
    Status,
    KeyValue,
    AnyValue,
    ArrayValue,
    KeyValueList,
}

/// A field's type, as prost-derive decodes it.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Bytes,
    String,
    Fixed32,
    Fixed64,
    Double,
    Int32,
    Int64,
    Uint32,
    Bool,
    Message(Shape),
    /// Not a field of the message: skipped.
    Unknown,
}

fn kind(shape: Shape, tag: u32) -> Kind {
    use Kind::*;
    match (shape, tag) {
        // Span
        (Shape::Span, 1 | 2 | 4) => Bytes, // trace_id, span_id, parent_span_id
        (Shape::Span, 3 | 5) => String,    // trace_state, name
        (Shape::Span, 6) => Int32,         // kind (enumeration)
        (Shape::Span, 7 | 8) => Fixed64,   // start/end_time_unix_nano
        (Shape::Span, 9) => Message(Shape::KeyValue), // attributes
        (Shape::Span, 10 | 12 | 14) => Uint32, // dropped_*_count
        (Shape::Span, 11) => Message(Shape::Event),
        (Shape::Span, 13) => Message(Shape::Link),
        (Shape::Span, 15) => Message(Shape::Status),
        (Shape::Span, 16) => Fixed32, // flags
        // Span.Event
        (Shape::Event, 1) => Fixed64, // time_unix_nano
        (Shape::Event, 2) => String,  // name
        (Shape::Event, 3) => Message(Shape::KeyValue),
        (Shape::Event, 4) => Uint32, // dropped_attributes_count
        // Span.Link
        (Shape::Link, 1 | 2) => Bytes, // trace_id, span_id
        (Shape::Link, 3) => String,    // trace_state
        (Shape::Link, 4) => Message(Shape::KeyValue),
        (Shape::Link, 5) => Uint32,  // dropped_attributes_count
        (Shape::Link, 6) => Fixed32, // flags
        // Status
        (Shape::Status, 2) => String, // message
        (Shape::Status, 3) => Int32,  // code (enumeration)
        // KeyValue
        (Shape::KeyValue, 1) => String, // key
        (Shape::KeyValue, 2) => Message(Shape::AnyValue),
        // AnyValue: a oneof, each member decoded as its own field
        (Shape::AnyValue, 1) => String,
        (Shape::AnyValue, 2) => Bool,
        (Shape::AnyValue, 3) => Int64,
        (Shape::AnyValue, 4) => Double,
        (Shape::AnyValue, 5) => Message(Shape::ArrayValue),
        (Shape::AnyValue, 6) => Message(Shape::KeyValueList),
        (Shape::AnyValue, 7) => Bytes,
        (Shape::ArrayValue, 1) => Message(Shape::AnyValue),
        (Shape::KeyValueList, 1) => Message(Shape::KeyValue),
        _ => Unknown,
    }
}

/// Checks a message of `shape` as prost decodes it, keeping nothing but the
/// span's trace id.
#[derive(Debug)]
struct Check {
    shape: Shape,
    trace_id: TraceId,
}

impl Check {
    fn new(shape: Shape) -> Self {
        Check {
            shape,
            trace_id: [0; 16],
        }
    }
}

/// A length-delimited field's content, if it can be read in place: its length
/// is a valid varint, and it lies within the buffer's current chunk (always,
/// for the contiguous buffers decoded here). Does not advance `buf`.
fn peek_delimited(buf: &impl Buf) -> Option<(usize, &[u8])> {
    let chunk = buf.chunk();
    let mut rest = chunk;
    let len = decode_varint(&mut rest).ok()?;
    let len = usize::try_from(len).ok()?;
    let content = rest.get(..len)?;
    Some((chunk.len() - rest.len() + len, content))
}

impl Message for Check {
    fn encode_raw(&self, _buf: &mut impl BufMut) {
        // Never encoded: it holds no field.
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        match kind(self.shape, tag) {
            Kind::Bytes | Kind::String => {
                let utf8 = matches!(kind(self.shape, tag), Kind::String);
                check_wire_type(WireType::LengthDelimited, wire_type)?;
                if let Some((used, content)) = peek_delimited(buf)
                    && (!utf8 || std::str::from_utf8(content).is_ok())
                {
                    if self.shape == Shape::Span && tag == 1 {
                        // The last occurrence wins, as in prost.
                        self.trace_id = to_trace_id(content);
                    }
                    buf.advance(used);
                    return Ok(());
                }
                // Not readable in place: prost's own decode accepts or refuses.
                if utf8 {
                    string::merge(wire_type, &mut String::new(), buf, ctx)
                } else {
                    let mut v = Vec::new();
                    pbytes::merge(wire_type, &mut v, buf, ctx)?;
                    if self.shape == Shape::Span && tag == 1 {
                        self.trace_id = to_trace_id(&v);
                    }
                    Ok(())
                }
            }
            Kind::Fixed32 => fixed32::merge(wire_type, &mut 0, buf, ctx),
            Kind::Fixed64 => fixed64::merge(wire_type, &mut 0, buf, ctx),
            Kind::Double => double::merge(wire_type, &mut 0.0, buf, ctx),
            Kind::Int32 => int32::merge(wire_type, &mut 0, buf, ctx),
            Kind::Int64 => int64::merge(wire_type, &mut 0, buf, ctx),
            Kind::Uint32 => uint32::merge(wire_type, &mut 0, buf, ctx),
            Kind::Bool => pbool::merge(wire_type, &mut false, buf, ctx),
            Kind::Message(shape) => message::merge(wire_type, &mut Check::new(shape), buf, ctx),
            Kind::Unknown => skip_field(wire_type, tag, buf, ctx),
        }
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        self.trace_id = [0; 16];
    }
}

/// A length-delimited field of `len` bytes, with its key and length.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

fn put_len_field(tag: u32, len: usize, buf: &mut impl BufMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(len as u64, buf);
}

/// `ExportTraceServiceRequest { resource_spans: items }` encoded as prost
/// encodes it, an encoded span copied as it is and a decoded one's length
/// computed once (as `export::tempo::encode_request` does): the body a
/// forwarder sends to a trace's owner.
///
/// Written into a `BytesMut`, not a `Vec`: prost's `encode_raw` of a decoded
/// span is then another instance than the Tempo encoder's (which writes a
/// `Vec`), and the compiler keeps inlining that one into the Tempo encoder
/// (sharing it cost every local span 1% in `benches/ring.rs`).
pub fn encode_request(items: &[WireResourceSpans]) -> Bytes {
    let mut span_lens = Vec::new();
    let mut scope_lens = Vec::new();
    let mut resource_lens = Vec::with_capacity(items.len());
    let mut total = 0;
    for rs in items {
        let mut rs_len = rs
            .resource
            .as_ref()
            .map_or(0, |r| message::encoded_len(1, r));
        for ss in &rs.scope_spans {
            let mut ss_len = ss.scope.as_ref().map_or(0, |s| message::encoded_len(1, s));
            match &ss.spans {
                Spans::Encoded(v) => {
                    ss_len += v.iter().map(|s| field_len(2, s.bytes.len())).sum::<usize>();
                }
                Spans::Decoded(v) => {
                    for span in v {
                        let len = span.encoded_len();
                        span_lens.push(len);
                        ss_len += field_len(2, len);
                    }
                }
            }
            if !ss.schema_url.is_empty() {
                ss_len += string::encoded_len(3, &ss.schema_url);
            }
            scope_lens.push(ss_len);
            rs_len += field_len(2, ss_len);
        }
        if !rs.schema_url.is_empty() {
            rs_len += string::encoded_len(3, &rs.schema_url);
        }
        resource_lens.push(rs_len);
        total += field_len(1, rs_len);
    }
    let mut buf = bytes::BytesMut::with_capacity(total);
    let mut span_lens = span_lens.into_iter();
    let mut scope_lens = scope_lens.into_iter();
    for (rs, rs_len) in items.iter().zip(resource_lens) {
        put_len_field(1, rs_len, &mut buf);
        if let Some(r) = &rs.resource {
            message::encode(1, r, &mut buf);
        }
        for (ss, ss_len) in rs.scope_spans.iter().zip(&mut scope_lens) {
            put_len_field(2, ss_len, &mut buf);
            if let Some(s) = &ss.scope {
                message::encode(1, s, &mut buf);
            }
            match &ss.spans {
                Spans::Encoded(v) => {
                    for s in v {
                        // A message field is its bytes behind the key and length.
                        put_len_field(2, s.bytes.len(), &mut buf);
                        buf.put_slice(&s.bytes);
                    }
                }
                Spans::Decoded(v) => {
                    for (span, len) in v.iter().zip(&mut span_lens) {
                        put_len_field(2, len, &mut buf);
                        span.encode_raw(&mut buf);
                    }
                }
            }
            if !ss.schema_url.is_empty() {
                string::encode(3, &ss.schema_url, &mut buf);
            }
        }
        if !rs.schema_url.is_empty() {
            string::encode(3, &rs.schema_url, &mut buf);
        }
    }
    debug_assert_eq!(buf.len(), total);
    buf.freeze()
}

#[cfg(test)]
mod tests;
