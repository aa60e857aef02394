#![allow(clippy::unwrap_used)]

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, any_value,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span, status};
use proptest::prelude::*;
use prost::Message;

use super::*;
use crate::ring::Ring;
use crate::ring::forward::split;

const MEMBERS: [&str; 3] = ["a:1", "b:1", "c:1"];

fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

fn span(trace: u8, i: usize) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
        name: format!("span-{i}"),
        kind: 2,
        start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
        attributes: vec![
            kv("http.route", any_value::Value::StringValue("/x".into())),
            kv("n", any_value::Value::IntValue(i as i64)),
        ],
        events: i
            .is_multiple_of(3)
            .then(|| span::Event {
                name: "e".into(),
                attributes: vec![kv("b", any_value::Value::BoolValue(true))],
                ..Default::default()
            })
            .into_iter()
            .collect(),
        links: i
            .is_multiple_of(4)
            .then(|| span::Link {
                trace_id: vec![9; 16],
                span_id: vec![1; 8],
                ..Default::default()
            })
            .into_iter()
            .collect(),
        status: i
            .is_multiple_of(2)
            .then(|| opentelemetry_proto::tonic::trace::v1::Status {
                code: status::StatusCode::Error as i32,
                message: "boom".into(),
            }),
        ..Default::default()
    }
}

/// The split as it was before spans stayed encoded (the decoded form only):
/// the reference the byte-level split is compared with.
fn old_split(
    ring: &Ring,
    me: &str,
    items: Vec<ResourceSpans>,
) -> (Vec<ResourceSpans>, Vec<(String, Vec<ResourceSpans>)>) {
    let owner = |s: &Span| -> Option<String> {
        let o = ring.owner(&to_trace_id(&s.trace_id))?.addr().to_string();
        (o != me).then_some(o)
    };
    let mut local = Vec::new();
    let mut remote: Vec<(String, Vec<ResourceSpans>)> = Vec::new();
    let mut send = |d: Option<String>, rs: ResourceSpans, local: &mut Vec<ResourceSpans>| match d {
        None => local.push(rs),
        Some(d) => match remote.iter_mut().find(|(a, _)| *a == d) {
            Some((_, v)) => v.push(rs),
            None => remote.push((d, vec![rs])),
        },
    };
    for rs in items {
        let dests: Vec<Option<String>> = rs
            .scope_spans
            .iter()
            .flat_map(|ss| &ss.spans)
            .map(owner)
            .collect();
        if dests.is_empty() || dests.iter().all(|d| *d == dests[0]) {
            send(dests.first().cloned().flatten(), rs, &mut local);
            continue;
        }
        let mut parts: Vec<(Option<String>, usize, ResourceSpans)> = Vec::new();
        let mut k = 0;
        for (si, ss) in rs.scope_spans.iter().enumerate() {
            for s in &ss.spans {
                let d = dests[k].clone();
                k += 1;
                let p = match parts.iter().position(|(x, _, _)| *x == d) {
                    Some(p) => p,
                    None => {
                        parts.push((
                            d,
                            usize::MAX,
                            ResourceSpans {
                                resource: rs.resource.clone(),
                                scope_spans: vec![],
                                schema_url: rs.schema_url.clone(),
                            },
                        ));
                        parts.len() - 1
                    }
                };
                let (_, last, part) = &mut parts[p];
                if *last != si {
                    part.scope_spans.push(ScopeSpans {
                        scope: ss.scope.clone(),
                        spans: vec![],
                        schema_url: ss.schema_url.clone(),
                    });
                    *last = si;
                }
                part.scope_spans.last_mut().unwrap().spans.push(s.clone());
            }
        }
        for (d, _, part) in parts {
            send(d, part, &mut local);
        }
    }
    (local, remote)
}

/// Byte split, then what each owner's ring port decodes.
fn byte_split(ring: &Ring, me: &str, body: &[u8]) -> (Vec<ResourceSpans>, Vec<(String, Vec<u8>)>) {
    let items = decode_request(Bytes::copy_from_slice(body)).unwrap();
    // Every span stayed encoded.
    assert!(
        items
            .iter()
            .flat_map(|r| &r.scope_spans)
            .all(|s| matches!(s.spans, Spans::Encoded(_)))
    );
    let s = split(ring, me, items);
    assert_eq!(s.undecodable, 0);
    (
        s.local,
        s.remote
            .into_iter()
            .map(|(a, v)| (a.to_string(), encode_request(&v).to_vec()))
            .collect(),
    )
}

fn three_owner_request() -> ExportTraceServiceRequest {
    let ring = Ring::new(MEMBERS);
    // Trace ids owned by each member, in order.
    let by_owner: Vec<Vec<u8>> = MEMBERS
        .iter()
        .map(|m| {
            (0..=255u8)
                .filter(|t| ring.owner(&[*t; 16]).unwrap().addr() == *m)
                .take(4)
                .collect()
        })
        .collect();
    let mixed: Vec<u8> = (0..4)
        .flat_map(|i| by_owner.iter().map(move |v| v[i]))
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![
            ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![kv(
                        "k8s.namespace.name",
                        any_value::Value::StringValue("shop".into()),
                    )],
                    dropped_attributes_count: 3,
                    ..Default::default()
                }),
                scope_spans: vec![
                    ScopeSpans {
                        scope: Some(InstrumentationScope {
                            name: "one".into(),
                            version: "1".into(),
                            ..Default::default()
                        }),
                        spans: mixed.iter().enumerate().map(|(i, t)| span(*t, i)).collect(),
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    },
                    // An empty scope and one without a scope.
                    ScopeSpans::default(),
                    ScopeSpans {
                        scope: None,
                        spans: mixed
                            .iter()
                            .rev()
                            .enumerate()
                            .map(|(i, t)| span(*t, 100 + i))
                            .collect(),
                        schema_url: String::new(),
                    },
                ],
                schema_url: "https://opentelemetry.io/schemas/1.25.0".into(),
            },
            // No resource at all, spans of one owner only (moved whole).
            ResourceSpans {
                resource: None,
                scope_spans: vec![ScopeSpans {
                    spans: by_owner[1]
                        .iter()
                        .enumerate()
                        .map(|(i, t)| span(*t, 200 + i))
                        .collect(),
                    ..Default::default()
                }],
                schema_url: String::new(),
            },
            // An empty resource.
            ResourceSpans::default(),
        ],
    }
}

#[test]
fn a_request_for_three_owners_forwards_each_its_spans_with_their_resource_and_scope() {
    let ring = Ring::new(MEMBERS);
    let req = three_owner_request();
    let body = req.encode_to_vec();
    for me in MEMBERS.iter().chain(&["d:1"]) {
        let (old_local, old_remote) = old_split(&ring, me, req.resource_spans.clone());
        let (local, remote) = byte_split(&ring, me, &body);
        assert_eq!(local, old_local, "owned by {me}");
        assert_eq!(remote.len(), old_remote.len());
        for ((addr, body), (old_addr, old)) in remote.iter().zip(&old_remote) {
            assert_eq!(addr, old_addr);
            assert_ne!(addr, me);
            let got = ExportTraceServiceRequest::decode(&body[..]).unwrap();
            assert_eq!(got.resource_spans, *old, "forwarded by {me} to {addr}");
            // Every span is its owner's, in the order it came.
            for s in got
                .resource_spans
                .iter()
                .flat_map(|r| &r.scope_spans)
                .flat_map(|s| &s.spans)
            {
                assert_eq!(ring.owner(&to_trace_id(&s.trace_id)).unwrap().addr(), addr);
            }
            // Byte for byte what prost encodes for those spans.
            assert_eq!(
                *body,
                ExportTraceServiceRequest {
                    resource_spans: old.clone()
                }
                .encode_to_vec()
            );
        }
        let n: usize = remote
            .iter()
            .map(|(_, b)| count(&ExportTraceServiceRequest::decode(&b[..]).unwrap()))
            .sum::<usize>()
            + crate::signal::count_items(&local);
        assert_eq!(n, count(&req));
    }
}

fn count(r: &ExportTraceServiceRequest) -> usize {
    crate::signal::count_items(&r.resource_spans)
}

#[test]
fn a_malformed_span_in_a_forwarded_group_refuses_the_request_as_the_full_decode_does() {
    let ring = Ring::new(MEMBERS);
    let req = three_owner_request();
    // A span owned by b:1, with a name that is not UTF-8, amid spans of all
    // three owners.
    let t = (0..=255u8)
        .find(|t| ring.owner(&[*t; 16]).unwrap().addr() == "b:1")
        .unwrap();
    let mut bad = req.clone();
    let marker = "MARKER-NAME";
    bad.resource_spans[0].scope_spans[0].spans[4] = Span {
        name: marker.into(),
        ..span(t, 4)
    };
    let mut body = bad.encode_to_vec();
    let at = body
        .windows(marker.len())
        .position(|w| w == marker.as_bytes())
        .unwrap();
    body[at] = 0xff;
    let full = ExportTraceServiceRequest::decode(&body[..]).unwrap_err();
    let wire = decode_request(Bytes::from(body.clone())).unwrap_err();
    assert_eq!(wire.to_string(), full.to_string());
    assert!(WireRequest::decode(&body[..]).is_err());
    // A truncated attribute inside a forwarded span, likewise.
    let mut body = req.encode_to_vec();
    let at = body.windows(2).position(|w| w == b"/x").unwrap();
    body[at - 1] = 0x7f; // the string's length, now beyond its message
    let full = ExportTraceServiceRequest::decode(&body[..]).unwrap_err();
    let wire = decode_request(Bytes::from(body)).unwrap_err();
    assert_eq!(wire.to_string(), full.to_string());
}

#[test]
fn unknown_fields_in_a_span_travel_to_the_owner_which_drops_them_as_the_receiver_did() {
    let ring = Ring::new(MEMBERS);
    let t = (0..=255u8)
        .find(|t| ring.owner(&[*t; 16]).unwrap().addr() == "b:1")
        .unwrap();
    let s = span(t, 1);
    let mut span_bytes = s.encode_to_vec();
    // Field 100, varint 7; and field 101, a string.
    prost::encoding::uint64::encode(100, &7, &mut span_bytes);
    prost::encoding::string::encode(101, &"later".to_string(), &mut span_bytes);
    let mut scope = Vec::new();
    prost::encoding::bytes::encode(2, &span_bytes, &mut scope);
    let mut rs = Vec::new();
    prost::encoding::bytes::encode(2, &scope, &mut rs);
    // An unknown field in the resource container too.
    prost::encoding::uint64::encode(50, &1, &mut rs);
    let mut body = Vec::new();
    prost::encoding::bytes::encode(1, &rs, &mut body);
    let (_, remote) = byte_split(&ring, "a:1", &body);
    assert_eq!(remote.len(), 1);
    let (addr, fwd) = &remote[0];
    assert_eq!(addr, "b:1");
    // The span's unknown fields are in the forwarded bytes...
    assert!(fwd.windows(span_bytes.len()).any(|w| w == span_bytes));
    // ...and the owner decodes what the receiver used to decode.
    assert_eq!(
        ExportTraceServiceRequest::decode(&fwd[..]).unwrap(),
        ExportTraceServiceRequest::decode(&body[..]).unwrap()
    );
}

// --- refused exactly as prost refuses ---------------------------------------

fn field(tag: u32, wt: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    encode_varint(u64::from(tag << 3 | u32::from(wt)), &mut v);
    v.extend_from_slice(payload);
    v
}

fn delimited(tag: u32, inner: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    prost::encoding::bytes::encode(tag, &inner.to_vec(), &mut v);
    v
}

/// `inner` as the content of the message at `path` (field numbers from the
/// request down), with a valid span around it where the path passes a span.
fn nest(path: &[u32], inner: Vec<u8>) -> Vec<u8> {
    path.iter()
        .rev()
        .fold(inner, |acc, tag| delimited(*tag, &acc))
}

fn agree(body: &[u8]) -> Result<(), String> {
    let full = ExportTraceServiceRequest::decode(body);
    let wire = WireRequest::decode(body);
    if full.is_ok() != wire.is_ok() {
        return Err(format!(
            "full decode {:?}, wire decode {:?} for {body:02x?}",
            full.as_ref().map(|_| ()),
            wire.as_ref().map(|_| ())
        ));
    }
    if let Err(e) = &full {
        let got = decode_request(Bytes::copy_from_slice(body)).unwrap_err();
        if got.to_string() != e.to_string() {
            return Err(format!("{got} != {e}"));
        }
    }
    Ok(())
}

#[test]
fn every_field_number_with_every_wire_type_is_refused_exactly_as_prost_does() {
    // The messages inside a span, by their path from the request.
    let paths: [&[u32]; 9] = [
        &[1, 2, 2],          // Span
        &[1, 2, 2, 11],      // Span.Event
        &[1, 2, 2, 13],      // Span.Link
        &[1, 2, 2, 15],      // Status
        &[1, 2, 2, 9],       // KeyValue
        &[1, 2, 2, 9, 2],    // AnyValue
        &[1, 2, 2, 9, 2, 5], // ArrayValue
        &[1, 2, 2, 9, 2, 6], // KeyValueList
        &[1, 2],             // ScopeSpans (decoded by prost's derive but for spans)
    ];
    let payloads: Vec<(u8, Vec<u8>)> = vec![
        (0, vec![1]),             // varint
        (0, vec![0xff; 10]),      // over-long varint
        (0, vec![0x80]),          // truncated varint
        (1, vec![0; 8]),          // 64-bit
        (1, vec![0; 3]),          // 64-bit, short
        (5, vec![0; 4]),          // 32-bit
        (5, vec![0; 2]),          // 32-bit, short
        (2, vec![2, b'o', b'k']), // delimited, text
        (2, vec![1, 0xff]),       // delimited, not UTF-8
        (2, vec![1, 0x08]),       // delimited, a truncated message
        (2, vec![2, 0x08, 0x01]), // delimited, a message
        (2, vec![9, 1]),          // delimited, too long
        (2, vec![0]),             // delimited, empty
        (3, vec![]),              // start group (end missing)
        (4, vec![]),              // end group
        (6, vec![]),              // no such wire type
    ];
    let mut checked = 0;
    for path in paths {
        for tag in 1..=20 {
            for (wt, payload) in &payloads {
                let body = nest(path, field(tag, *wt, payload));
                agree(&body).unwrap();
                // After valid content too (a trace id first, as a span has it).
                let mut inner = delimited(1, &[7; 16]);
                inner.extend(field(tag, *wt, payload));
                agree(&nest(path, inner)).unwrap();
                checked += 2;
            }
            // A group that is closed.
            let mut inner = field(tag, 3, &[]);
            inner.extend(field(tag, 4, &[]));
            agree(&nest(path, inner)).unwrap();
        }
    }
    assert!(checked > 5_000);
}

#[test]
fn the_recursion_limit_counts_from_the_request_as_in_the_full_decode() {
    // Arrays of arrays inside an attribute: prost refuses past 100 messages deep.
    for depth in 85..105 {
        let mut v = AnyValue {
            value: Some(any_value::Value::IntValue(1)),
        };
        for _ in 0..depth {
            v = AnyValue {
                value: Some(any_value::Value::ArrayValue(ArrayValue { values: vec![v] })),
            };
        }
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        attributes: vec![KeyValue {
                            key: "deep".into(),
                            value: Some(v),
                        }],
                        ..span(1, 1)
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        agree(&req.encode_to_vec()).unwrap();
    }
}

// --- properties ---------------------------------------------------------------

fn value() -> impl Strategy<Value = any_value::Value> {
    let leaf = prop_oneof![
        "[a-z/{}.]{0,12}".prop_map(any_value::Value::StringValue),
        any::<bool>().prop_map(any_value::Value::BoolValue),
        any::<i64>().prop_map(any_value::Value::IntValue),
        any::<f64>().prop_map(any_value::Value::DoubleValue),
        proptest::collection::vec(any::<u8>(), 0..6).prop_map(any_value::Value::BytesValue),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        proptest::collection::vec(inner, 0..3).prop_map(|v| {
            any_value::Value::ArrayValue(ArrayValue {
                values: v.into_iter().map(|x| AnyValue { value: Some(x) }).collect(),
            })
        })
    })
}

fn arb_span() -> impl Strategy<Value = Span> {
    (
        0u8..12,
        any::<u64>(),
        "[a-zA-Z /{}]{0,16}",
        proptest::collection::vec(("[a-z.]{1,10}", value()), 0..4),
        0usize..3,
        proptest::option::of(0i32..3),
        proptest::collection::vec(0u8..4, 0..3),
    )
        .prop_map(|(t, id, name, attrs, events, status, link_ids)| Span {
            // Some trace ids shorter than 16 bytes (padded alike on both sides).
            trace_id: if t == 11 { vec![t; 3] } else { vec![t; 16] },
            span_id: id.to_be_bytes().to_vec(),
            name,
            attributes: attrs.into_iter().map(|(k, v)| kv(&k, v)).collect(),
            events: (0..events)
                .map(|i| span::Event {
                    name: format!("e{i}"),
                    time_unix_nano: i as u64,
                    ..Default::default()
                })
                .collect(),
            links: link_ids
                .into_iter()
                .map(|l| span::Link {
                    trace_id: vec![l; 16],
                    flags: 1,
                    ..Default::default()
                })
                .collect(),
            status: status.map(|code| opentelemetry_proto::tonic::trace::v1::Status {
                code,
                message: String::new(),
            }),
            flags: id as u32 & 0x301,
            ..Default::default()
        })
}

fn arb_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope = (
        proptest::option::of("[a-z]{0,6}"),
        proptest::collection::vec(arb_span(), 0..8),
        "[a-z]{0,3}",
    )
        .prop_map(|(name, spans, schema_url)| ScopeSpans {
            scope: name.map(|name| InstrumentationScope {
                name,
                ..Default::default()
            }),
            spans,
            schema_url,
        });
    let resource = (
        proptest::option::of("[a-z]{0,6}"),
        proptest::collection::vec(scope, 0..4),
        "[a-z]{0,3}",
    )
        .prop_map(|(ns, scope_spans, schema_url)| ResourceSpans {
            resource: ns.map(|ns| Resource {
                attributes: vec![kv("k8s.namespace.name", any_value::Value::StringValue(ns))],
                ..Default::default()
            }),
            scope_spans,
            schema_url,
        });
    proptest::collection::vec(resource, 0..4)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Byte split + the owner's decode == decode + the old split, for every
    /// member as receiver (and a replica outside the ring, which forwards all).
    #[test]
    fn byte_split_then_decode_equals_decode_then_split(req in arb_request()) {
        let ring = Ring::new(MEMBERS);
        let body = req.encode_to_vec();
        for me in MEMBERS.iter().chain(&["d:1"]) {
            let (old_local, old_remote) = old_split(&ring, me, req.resource_spans.clone());
            let (local, remote) = byte_split(&ring, me, &body);
            prop_assert_eq!(&local, &old_local);
            prop_assert_eq!(remote.len(), old_remote.len());
            for ((addr, fwd), (old_addr, old)) in remote.iter().zip(&old_remote) {
                prop_assert_eq!(addr, old_addr);
                let got = ExportTraceServiceRequest::decode(&fwd[..]).unwrap();
                prop_assert_eq!(&got.resource_spans, old);
                prop_assert_eq!(
                    fwd,
                    &ExportTraceServiceRequest { resource_spans: old.clone() }.encode_to_vec()
                );
            }
        }
        // The decoded form (OTLP/JSON, gRPC) splits alike and encodes alike.
        let items: Vec<WireResourceSpans> =
            req.resource_spans.iter().cloned().map(Into::into).collect();
        let s = split(&ring, "a:1", items);
        let (old_local, old_remote) = old_split(&ring, "a:1", req.resource_spans.clone());
        prop_assert_eq!(s.local, old_local);
        for ((_, v), (_, old)) in s.remote.iter().zip(&old_remote) {
            prop_assert_eq!(
                encode_request(v).to_vec(),
                ExportTraceServiceRequest { resource_spans: old.clone() }.encode_to_vec()
            );
        }
    }

    /// Mutated requests: the wire decode accepts exactly what prost accepts,
    /// and refuses with prost's error.
    #[test]
    fn mutated_requests_are_refused_exactly_as_prost_refuses(
        req in arb_request(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..4), 1..4),
    ) {
        let mut body = req.encode_to_vec();
        for (at, byte, how) in edits {
            if body.is_empty() {
                body.push(byte);
                continue;
            }
            let i = at.index(body.len());
            match how {
                0 => body[i] = byte,
                1 => body[i] ^= 1 << (byte % 8),
                2 => body.insert(i, byte),
                _ => body.truncate(i),
            }
        }
        prop_assert!(agree(&body).is_ok(), "{}", agree(&body).unwrap_err());
    }
}
