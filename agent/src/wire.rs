//! OTLP messages written straight into protobuf bytes with prost's encoding
//! primitives, for the per-span hot path.
//!
//! Building `Span`/`KeyValue` structs cost an owned `String` per attribute
//! key and value, and prost then measured each nested message once per
//! level. Here every field is written once, in tag order and with prost's
//! rules for default values (empty strings, zero numbers are not written),
//! so the bytes equal what `prost::Message::encode` gives for the same span;
//! the tests in `telemetry` check exactly that.
//!
//! Field numbers: `opentelemetry/proto/trace/v1/trace.proto` and
//! `opentelemetry/proto/common/v1/common.proto` (opentelemetry-proto 1.x).
use prost::encoding::{WireType, encode_key, encode_varint, encoded_len_varint};

/// `Span` fields.
pub mod span {
    pub const TRACE_ID: u32 = 1;
    pub const SPAN_ID: u32 = 2;
    pub const PARENT_SPAN_ID: u32 = 4;
    pub const NAME: u32 = 5;
    pub const KIND: u32 = 6;
    pub const START: u32 = 7;
    pub const END: u32 = 8;
    pub const ATTRIBUTES: u32 = 9;
    pub const STATUS: u32 = 15;
    pub const FLAGS: u32 = 16;
    /// `Status.code`.
    pub const STATUS_CODE: u32 = 3;
}

/// `KeyValue.key`, `KeyValue.value`; `AnyValue` string, bool and int cases.
const KV_KEY: u32 = 1;
const KV_VALUE: u32 = 2;
const ANY_STRING: u32 = 1;
const ANY_BOOL: u32 = 2;
const ANY_INT: u32 = 3;

fn key_len(tag: u32) -> usize {
    prost::encoding::key_len(tag)
}

fn len_delimited_size(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A length-delimited field whose body is the concatenation of `parts`.
pub fn str_parts(out: &mut Vec<u8>, tag: u32, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    if len == 0 {
        return;
    }
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(len as u64, out);
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// A `bytes` or `string` field; skipped when empty, as prost does.
pub fn bytes(out: &mut Vec<u8>, tag: u32, b: &[u8]) {
    str_parts(out, tag, &[b]);
}

pub fn fixed64(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::SixtyFourBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

pub fn fixed32(out: &mut Vec<u8>, tag: u32, v: u32) {
    if v != 0 {
        encode_key(tag, WireType::ThirtyTwoBit, out);
        out.extend_from_slice(&v.to_le_bytes());
    }
}

/// An `int32`/`enum`/`uint64` field.
pub fn varint(out: &mut Vec<u8>, tag: u32, v: u64) {
    if v != 0 {
        encode_key(tag, WireType::Varint, out);
        encode_varint(v, out);
    }
}

/// Opens a nested message of known body length.
pub fn message_header(out: &mut Vec<u8>, tag: u32, body_len: usize) {
    encode_key(tag, WireType::LengthDelimited, out);
    encode_varint(body_len as u64, out);
}

/// An attribute value: the `AnyValue` case and its encoded body size.
#[derive(Debug, Clone, Copy)]
pub enum Value<'a> {
    Str(&'a [u8]),
    Int(i64),
    Bool(bool),
}

impl Value<'_> {
    fn any_len(&self) -> usize {
        match self {
            // An empty string is the default value: prost leaves the field
            // out but keeps the (present) oneof, i.e. an empty tag + length.
            Value::Str(s) => len_delimited_size(ANY_STRING, s.len()),
            Value::Int(i) => key_len(ANY_INT) + encoded_len_varint(*i as u64),
            Value::Bool(_) => key_len(ANY_BOOL) + 1,
        }
    }
}

/// One `KeyValue` as field `tag` of the enclosing message (9 in `Span`, 1
/// in `Resource`, 7 in `HistogramDataPoint`).
///
/// Inlined so that at the span builder's call sites, whose keys are string
/// literals, the key's length is a constant: its copy becomes a few moves
/// instead of a `memcpy` call, and the lengths fold (callgrind: 22 `memcpy`
/// calls per request came from here). The general case stays out of line.
#[inline(always)]
pub fn key_value(out: &mut Vec<u8>, tag: u32, key: &str, value: Value<'_>) {
    if let Value::Str(s) = value
        && tag < 16
        && key.len() + s.len() < 120
    {
        // Every length fits one varint byte and every key one tag byte:
        // the common case, written without the general length arithmetic.
        let any = 2 + s.len();
        let body = 2 + key.len() + 2 + any;
        out.reserve(2 + body);
        out.extend_from_slice(&[(tag << 3 | 2) as u8, body as u8, 0x0a, key.len() as u8]);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&[0x12, any as u8, 0x0a, s.len() as u8]);
        out.extend_from_slice(s);
        return;
    }
    if let Value::Int(i) = value
        && tag < 16
        && key.len() < 100
    {
        // Likewise for integers (ports, status codes, sizes): a varint is
        // at most 10 bytes, so every length still fits one byte.
        let v = i as u64;
        let any = 1 + encoded_len_varint(v);
        let body = 2 + key.len() + 2 + any;
        out.reserve(2 + body);
        out.extend_from_slice(&[(tag << 3 | 2) as u8, body as u8, 0x0a, key.len() as u8]);
        out.extend_from_slice(key.as_bytes());
        out.extend_from_slice(&[0x12, any as u8, 0x18]);
        encode_varint(v, out);
        return;
    }
    key_value_general(out, tag, key, value);
}

/// The bytes [`key_value`] writes for a string key and value known at
/// compile time, as a constant (see `telemetry`'s `const_attr!`): copied
/// with one `extend_from_slice` instead of four writes and a `reserve`.
/// `N` must be `8 + key.len() + value.len()`, the tag below 16 and the
/// lengths short enough for one-byte varints; the build fails otherwise.
pub const fn key_value_const<const N: usize>(tag: u32, key: &str, value: &str) -> [u8; N] {
    let (k, v) = (key.as_bytes(), value.as_bytes());
    assert!(N == 8 + k.len() + v.len() && tag < 16 && k.len() + v.len() < 120);
    let any = 2 + v.len();
    let body = 2 + k.len() + 2 + any;
    let mut out = [0u8; N];
    out[0] = (tag << 3 | 2) as u8;
    out[1] = body as u8;
    out[2] = 0x0a;
    out[3] = k.len() as u8;
    let mut i = 0;
    while i < k.len() {
        out[4 + i] = k[i];
        i += 1;
    }
    let at = 4 + k.len();
    out[at] = 0x12;
    out[at + 1] = any as u8;
    out[at + 2] = 0x0a;
    out[at + 3] = v.len() as u8;
    let mut j = 0;
    while j < v.len() {
        out[at + 4 + j] = v[j];
        j += 1;
    }
    out
}

#[inline(never)]
fn key_value_general(out: &mut Vec<u8>, tag: u32, key: &str, value: Value<'_>) {
    let any = value.any_len();
    let body = len_delimited_size(KV_KEY, key.len()) + len_delimited_size(KV_VALUE, any);
    message_header(out, tag, body);
    encode_key(KV_KEY, WireType::LengthDelimited, out);
    encode_varint(key.len() as u64, out);
    out.extend_from_slice(key.as_bytes());
    message_header(out, KV_VALUE, any);
    match value {
        Value::Str(s) => {
            encode_key(ANY_STRING, WireType::LengthDelimited, out);
            encode_varint(s.len() as u64, out);
            out.extend_from_slice(s);
        }
        Value::Int(i) => {
            encode_key(ANY_INT, WireType::Varint, out);
            encode_varint(i as u64, out);
        }
        Value::Bool(b) => {
            encode_key(ANY_BOOL, WireType::Varint, out);
            out.push(u8::from(b));
        }
    }
}

/// A `Status` with only its code set (the agent never sets a message).
pub fn status(out: &mut Vec<u8>, code: i32) {
    let body = key_len(span::STATUS_CODE) + encoded_len_varint(code as u64);
    message_header(out, span::STATUS, body);
    varint(out, span::STATUS_CODE, code as u64);
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use prost::Message as _;

    use super::*;

    /// A `KeyValue` as the only field of a message equals prost's encoding
    /// of the same struct as field `tag`.
    fn same_as_prost(key: &str, value: Value<'_>, want: any_value::Value) {
        let mut ours = Vec::new();
        key_value(&mut ours, 1, key, value);
        let kv = KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(want) }),
            ..KeyValue::default()
        };
        let mut theirs = Vec::new();
        prost::encoding::message::encode(1, &kv, &mut theirs);
        assert_eq!(ours, theirs, "{key}");
        // And it decodes back.
        let mut slice = &ours[..];
        let (tag, _) = prost::encoding::decode_key(&mut slice).unwrap();
        assert_eq!(tag, 1);
        let len = prost::encoding::decode_varint(&mut slice).unwrap() as usize;
        assert_eq!(KeyValue::decode(&slice[..len]).unwrap(), kv);
    }

    #[test]
    fn constant_key_values_are_what_key_value_writes() {
        const B: [u8; 8 + 10 + 4] = key_value_const(9, "url.scheme", "http");
        let mut v = Vec::new();
        key_value(&mut v, 9, "url.scheme", Value::Str(b"http"));
        assert_eq!(B.as_slice(), v);
        const E: [u8; 8 + 1] = key_value_const(1, "k", "");
        let mut v = Vec::new();
        key_value(&mut v, 1, "k", Value::Str(b""));
        assert_eq!(E.as_slice(), v);
    }

    #[test]
    fn key_values_match_prost() {
        same_as_prost(
            "http.route",
            Value::Str(b"/a/{id}"),
            any_value::Value::StringValue("/a/{id}".into()),
        );
        same_as_prost(
            "e",
            Value::Str(b""),
            any_value::Value::StringValue("".into()),
        );
        same_as_prost("p", Value::Int(8080), any_value::Value::IntValue(8080));
        same_as_prost("n", Value::Int(-3), any_value::Value::IntValue(-3));
        same_as_prost("z", Value::Int(0), any_value::Value::IntValue(0));
        same_as_prost(
            "http.response.body.size",
            Value::Int(i64::MAX),
            any_value::Value::IntValue(i64::MAX),
        );
        same_as_prost(
            "m",
            Value::Int(i64::MIN),
            any_value::Value::IntValue(i64::MIN),
        );
        same_as_prost("b", Value::Bool(true), any_value::Value::BoolValue(true));
        same_as_prost("f", Value::Bool(false), any_value::Value::BoolValue(false));
        let long = "x".repeat(300);
        same_as_prost(
            &long,
            Value::Str(long.as_bytes()),
            any_value::Value::StringValue(long.clone()),
        );
    }
}
