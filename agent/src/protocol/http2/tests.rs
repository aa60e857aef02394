use loona_hpack::Encoder;

use super::*;

fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut v = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, ty, flags];
    v.extend_from_slice(&stream.to_be_bytes());
    v.extend_from_slice(payload);
    v
}

fn seg(ts: u64, data: &[u8]) -> Segment<'_> {
    Segment {
        ts_ns: ts,
        data,
        gap: 0,
    }
}

fn h2(e: &Exchange) -> &H2Exchange {
    match &e.detail {
        Detail::Http2(h) => h,
        other => panic!("not h2: {other:?}"),
    }
}

fn grpc_call(enc_c: &mut Encoder<'_>, stream: u32, path: &str) -> Vec<u8> {
    let block = enc_c.encode([
        (&b":method"[..], &b"POST"[..]),
        (b":scheme", b"http"),
        (b":path", path.as_bytes()),
        (b":authority", b"localhost:50051"),
        (b"content-type", b"application/grpc"),
        (
            b"traceparent",
            b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ),
    ]);
    let mut v = frame(HEADERS, END_HEADERS, stream, &block);
    v.extend(frame(DATA, END_STREAM, stream, b"\0\0\0\0\x02hi"));
    v
}

fn grpc_reply(enc_s: &mut Encoder<'_>, stream: u32, status: &str) -> Vec<u8> {
    let head = enc_s.encode([
        (&b":status"[..], &b"200"[..]),
        (b"content-type", b"application/grpc"),
    ]);
    let trailers = enc_s.encode([(&b"grpc-status"[..], status.as_bytes())]);
    let mut v = frame(HEADERS, END_HEADERS, stream, &head);
    v.extend(frame(DATA, 0, stream, b"\0\0\0\0\x02hi"));
    v.extend(frame(HEADERS, END_HEADERS | END_STREAM, stream, &trailers));
    v
}

#[test]
fn grpc_calls_with_dynamic_table_and_interleaving() {
    let (mut ec, mut es) = (Encoder::new(), Encoder::new());
    let mut client = PREFACE.to_vec();
    client.extend(frame(4, 0, 0, &[])); // SETTINGS
    client.extend(grpc_call(&mut ec, 1, "/demo.Echo/Say"));
    client.extend(grpc_call(&mut ec, 3, "/demo.Echo/Fail"));
    let mut server = frame(4, 0, 0, &[]);
    // Stream 3 answers first: streams complete independently.
    server.extend(grpc_reply(&mut es, 3, "5"));
    server.extend(grpc_reply(&mut es, 1, "0"));
    let mut c = Http2Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(10, &client), &mut out);
    // Byte-by-byte server side: frames and header blocks split anywhere.
    for (i, b) in server.iter().enumerate() {
        c.feed(false, seg(20 + i as u64, std::slice::from_ref(b)), &mut out);
    }
    assert_eq!(out.len(), 2, "{out:?}");
    let (a, b) = (h2(&out[0]), h2(&out[1]));
    assert_eq!(
        (a.path.as_str(), a.grpc_status),
        ("/demo.Echo/Fail", Some(5))
    );
    assert_eq!(
        (b.path.as_str(), b.grpc_status, b.status),
        ("/demo.Echo/Say", Some(0), 200)
    );
    assert!(b.is_grpc());
    assert_eq!(
        b.traceparent.as_deref(),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
    assert_eq!(c.desyncs(), 0);
}

#[test]
fn huffman_coded_request_from_rfc7541_c4_1() {
    // RFC 7541 appendix C.4.1: GET http://www.example.com/ with Huffman.
    let block = [
        0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab, 0x90,
        0xf4, 0xff,
    ];
    let mut client = PREFACE.to_vec();
    client.extend(frame(HEADERS, END_HEADERS | END_STREAM, 1, &block));
    let mut es = Encoder::new();
    let resp = es.encode([(&b":status"[..], &b"404"[..])]);
    let mut c = Http2Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, &client), &mut out);
    c.feed(
        false,
        seg(2, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &resp)),
        &mut out,
    );
    assert_eq!(out.len(), 1);
    let h = h2(&out[0]);
    assert_eq!(
        (h.method.as_str(), h.path.as_str(), h.status),
        ("GET", "/", 404)
    );
    assert_eq!(h.authority.as_deref(), Some("www.example.com"));
    assert!(!h.is_grpc());
}

#[test]
fn uncaptured_data_payload_is_skipped_by_length() {
    let (mut ec, mut es) = (Encoder::new(), Encoder::new());
    let mut client = PREFACE.to_vec();
    client.extend(grpc_call(&mut ec, 1, "/a.B/C"));
    let head = es.encode([(&b":status"[..], &b"200"[..])]);
    let mut server = frame(HEADERS, END_HEADERS, 1, &head);
    let big = vec![7u8; 50_000];
    let data = frame(DATA, END_STREAM, 1, &big);
    server.extend_from_slice(&data[..100]);
    let mut c = Http2Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, &client), &mut out);
    c.feed(
        false,
        Segment {
            ts_ns: 2,
            data: &server,
            gap: 20_000,
        },
        &mut out,
    );
    assert!(out.is_empty());
    c.feed(
        false,
        Segment {
            ts_ns: 3,
            data: &[],
            gap: (data.len() - 100 - 20_000) as u64,
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_ns, 3);
    // Still in sync for the next stream.
    c.feed(true, seg(4, &grpc_call(&mut ec, 3, "/a.B/D")), &mut out);
    c.feed(false, seg(5, &grpc_reply(&mut es, 3, "0")), &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn a_connection_without_preface_is_given_up() {
    let mut c = Http2Conn::default();
    let mut out = Vec::new();
    c.feed(
        true,
        seg(1, b"GET / HTTP/1.1\r\n\r\nxxxxxxxxxxxxxxxx"),
        &mut out,
    );
    assert!(out.is_empty());
    assert_eq!(c.desyncs(), 1);
    assert!(looks_like_preface(PREFACE));
    assert!(!looks_like_preface(b"PRI"));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_input(
        chunks in proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..80), 0u64..40),
            0..20,
        ),
        with_preface in proptest::bool::ANY,
    ) {
        let mut c = Http2Conn::default();
        let mut out = Vec::new();
        if with_preface {
            c.feed(true, seg(0, PREFACE), &mut out);
        }
        for (i, (dir, data, gap)) in chunks.iter().enumerate() {
            c.feed(*dir, Segment { ts_ns: i as u64, data, gap: *gap }, &mut out);
        }
    }

    #[test]
    fn random_header_blocks_never_panic_the_hpack_decoder(
        block in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200),
    ) {
        let mut c = Http2Conn::default();
        let mut out = Vec::new();
        let mut client = PREFACE.to_vec();
        client.extend(frame(HEADERS, END_HEADERS, 1, &block));
        c.feed(true, seg(0, &client), &mut out);
        c.feed(false, seg(1, &frame(HEADERS, END_HEADERS | END_STREAM, 1, &block)), &mut out);
    }
}
