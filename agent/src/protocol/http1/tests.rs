use super::*;

fn seg(ts: u64, data: &[u8]) -> Segment<'_> {
    Segment {
        ts_ns: ts,
        data,
        gap: 0,
    }
}

fn http(e: &Exchange) -> &HttpExchange {
    match &e.detail {
        Detail::Http(h) => h,
        other => panic!("not http: {other:?}"),
    }
}

const REQ: &[u8] = b"GET /users/42?x=1 HTTP/1.1\r\nHost: example.test\r\nUser-Agent: curl/7.88\r\ntraceparent: 00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01\r\n\r\n";
const RESP: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";

#[test]
fn keep_alive_pairs_each_request_with_its_response() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    for i in 0..3u64 {
        c.feed(true, seg(10 * i + 1, REQ), &mut out);
        c.feed(false, seg(10 * i + 5, RESP), &mut out);
    }
    assert_eq!(out.len(), 3);
    let h = http(&out[2]);
    assert_eq!(
        (h.method(), h.target(), h.status),
        ("GET", "/users/42?x=1", 200)
    );
    assert_eq!(h.host(), Some("example.test"));
    assert_eq!(
        h.traceparent(),
        Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    );
    assert_eq!(h.response_body_size, 5);
    assert_eq!((out[2].start_ns, out[2].end_ns), (21, 25));
}

#[test]
fn request_head_split_across_reads_starts_at_first_byte() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    for (i, part) in REQ.chunks(7).enumerate() {
        c.feed(true, seg(100 + i as u64, part), &mut out);
    }
    for (i, part) in RESP.chunks(3).enumerate() {
        c.feed(false, seg(1000 + i as u64, part), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start_ns, 100);
    assert_eq!(out[0].end_ns, 1000 + (RESP.len() as u64).div_ceil(3) - 1);
}

#[test]
fn pipelined_requests_and_responses_in_one_segment_each() {
    let mut reqs = Vec::new();
    reqs.extend_from_slice(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n");
    reqs.extend_from_slice(b"POST /b HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabc");
    reqs.extend_from_slice(b"HEAD /c HTTP/1.1\r\nHost: h\r\n\r\n");
    let mut resps = Vec::new();
    resps.extend_from_slice(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    resps.extend_from_slice(
        b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    );
    // A HEAD response announces a length but carries no body.
    resps.extend_from_slice(b"HTTP/1.1 404 Not Found\r\nContent-Length: 99\r\n\r\n");
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, &reqs), &mut out);
    c.feed(false, seg(2, &resps), &mut out);
    let got: Vec<_> = out
        .iter()
        .map(|e| (http(e).method().to_owned(), http(e).status))
        .collect();
    assert_eq!(
        got,
        vec![
            ("GET".into(), 200),
            ("POST".into(), 201),
            ("HEAD".into(), 404)
        ]
    );
    assert_eq!(http(&out[1]).request_body_size, 3);
    assert_eq!(http(&out[1]).response_body_size, 3);
}

#[test]
fn chunked_body_split_at_every_byte() {
    let body = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nX-Trailer: 1\r\n\r\n";
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, b"GET / HTTP/1.1\r\n\r\n"), &mut out);
    for (i, b) in body.iter().enumerate() {
        c.feed(false, seg(10 + i as u64, std::slice::from_ref(b)), &mut out);
    }
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).response_body_size, 9);
    assert_eq!(out[0].end_ns, 10 + body.len() as u64 - 1);
}

#[test]
fn uncaptured_body_bytes_are_skipped_by_length() {
    // sendfile: the kernel reports the length but captures no bytes.
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, b"GET /big HTTP/1.1\r\n\r\n"), &mut out);
    c.feed(
        false,
        seg(2, b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"),
        &mut out,
    );
    c.feed(
        false,
        Segment {
            ts_ns: 3,
            data: &[],
            gap: 60000,
        },
        &mut out,
    );
    assert!(out.is_empty());
    c.feed(
        false,
        Segment {
            ts_ns: 4,
            data: b"abc",
            gap: 40000 - 3,
        },
        &mut out,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_ns, 4);
    // The connection stays in sync for the next request.
    c.feed(true, seg(5, REQ), &mut out);
    c.feed(false, seg(6, RESP), &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn truncated_head_keeps_the_first_line_and_resyncs() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(
        true,
        Segment {
            ts_ns: 1,
            data: &REQ[..30],
            gap: 500,
        },
        &mut out,
    );
    c.feed(false, seg(2, RESP), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).target(), "/users/42?x=1");
    c.feed(true, seg(3, REQ), &mut out);
    c.feed(false, seg(4, RESP), &mut out);
    assert_eq!(out.len(), 2);
}

#[test]
fn response_without_length_ends_at_close() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(true, seg(1, b"GET / HTTP/1.0\r\n\r\n"), &mut out);
    c.feed(
        false,
        seg(2, b"HTTP/1.0 200 OK\r\nServer: SimpleHTTP/0.6\r\n\r\n"),
        &mut out,
    );
    c.feed(false, seg(3, b"<html>...</html>"), &mut out);
    assert!(out.is_empty());
    c.close(9, &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_ns, 3);
    assert_eq!(http(&out[0]).version, "1.0");
    assert_eq!(http(&out[0]).response_body_size, 16);
}

#[test]
fn interim_100_continue_is_not_the_answer() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(
        true,
        seg(
            1,
            b"PUT /x HTTP/1.1\r\nContent-Length: 2\r\nExpect: 100-continue\r\n\r\n",
        ),
        &mut out,
    );
    c.feed(false, seg(2, b"HTTP/1.1 100 Continue\r\n\r\n"), &mut out);
    c.feed(true, seg(3, b"hi"), &mut out);
    c.feed(false, seg(4, b"HTTP/1.1 204 No Content\r\n\r\n"), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(http(&out[0]).status, 204);
}

#[test]
fn garbage_desyncs_then_recovers() {
    let mut c = Http1Conn::default();
    let mut out = Vec::new();
    c.feed(
        true,
        seg(1, b"\x16\x03\x01 not http at all\r\n\r\n"),
        &mut out,
    );
    c.feed(true, seg(2, REQ), &mut out);
    c.feed(false, seg(3, RESP), &mut out);
    assert_eq!(out.len(), 1);
    assert!(c.desyncs() >= 1);
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_input(
        chunks in proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0u64..100),
            0..20,
        )
    ) {
        let mut c = Http1Conn::default();
        let mut out = Vec::new();
        for (i, (dir, data, gap)) in chunks.iter().enumerate() {
            c.feed(*dir, Segment { ts_ns: i as u64, data, gap: *gap }, &mut out);
        }
        c.close(1000, &mut out);
    }

    #[test]
    fn any_split_of_a_valid_stream_gives_the_same_exchanges(cut in 1usize..200, cut2 in 1usize..200) {
        let mut reqs = REQ.to_vec();
        reqs.extend_from_slice(b"POST /b HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc");
        let mut resps = RESP.to_vec();
        resps.extend_from_slice(b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\n\r\n");
        let mut c = Http1Conn::default();
        let mut out = Vec::new();
        for p in reqs.chunks(cut) { c.feed(true, seg(1, p), &mut out); }
        for p in resps.chunks(cut2) { c.feed(false, seg(2, p), &mut out); }
        let got: Vec<_> = out.iter().map(|e| http(e).status).collect();
        proptest::prop_assert_eq!(got, vec![200, 500]);
    }
}

/// What httparse (default config, `MAX_HEADERS` slots) makes of a response
/// head, in the fast path's terms; `None` unless it is complete.
fn httparse_response_head(buf: &[u8]) -> Option<PlainHead> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let httparse::Status::Complete(len) = resp.parse(buf).ok()? else {
        return None;
    };
    let mut framing = Framing::default();
    for h in resp.headers.iter() {
        framing.header(h.name.as_bytes(), h.value);
    }
    Some(PlainHead {
        status: resp.code?,
        minor: resp.version?,
        len,
        framing,
    })
}

#[test]
fn plain_response_heads_take_the_fast_path_and_agree_with_httparse() {
    let nginx: &[u8] = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nDate: Mon, 30 Nov 2026 07:40:00 GMT\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nok\n";
    for head in [
        nginx,
        RESP,
        b"HTTP/1.0 204\r\n\r\n",
        b"HTTP/1.1 500 Oops\r\nTransfer-Encoding: gzip, chunked \r\nX-Empty:\r\nX-Tab:\tv\t\r\n\r\n",
        b"HTTP/1.1 200 caf\xc3\xa9\r\nX: \x80\xff\r\n\r\n",
    ] {
        let fast = plain_response_head(head);
        assert!(fast.is_some(), "{:?}", String::from_utf8_lossy(head));
        assert_eq!(fast, httparse_response_head(head));
    }
    assert_eq!(
        plain_response_head(nginx).map(|h| h.framing),
        Some(Framing {
            length: Some(3),
            chunked: false
        })
    );
    // As many headers as httparse has room for, and one more.
    let many = |n: usize| {
        let mut h = b"HTTP/1.1 200 OK\r\n".to_vec();
        for _ in 0..n {
            h.extend_from_slice(b"X: y\r\n");
        }
        h.extend_from_slice(b"\r\n");
        h
    };
    assert!(plain_response_head(&many(MAX_HEADERS)).is_some());
    assert_eq!(
        plain_response_head(&many(MAX_HEADERS)),
        httparse_response_head(&many(MAX_HEADERS))
    );
    assert_eq!(plain_response_head(&many(MAX_HEADERS + 1)), None);
    assert_eq!(httparse_response_head(&many(MAX_HEADERS + 1)), None);
    // Left to httparse: bare LF, leading empty line, space before the colon,
    // a control byte, an incomplete head.
    for head in [
        &b"HTTP/1.1 200 OK\nContent-Length: 1\n\n"[..],
        b"\r\nHTTP/1.1 200 OK\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length : 1\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX: a\x01b\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
    ] {
        assert_eq!(plain_response_head(head), None);
    }
}

/// Bytes a response head is made of, weighted towards the ones whose
/// handling differs (separators, line ends, control and non-ASCII bytes).
fn head_byte() -> impl proptest::strategy::Strategy<Value = u8> {
    use proptest::prelude::*;
    prop_oneof![
        4 => proptest::sample::select(b"aZ09-_.!~:; \t\r\n".to_vec()),
        1 => any::<u8>(),
    ]
}

proptest::proptest! {
    /// The fast path never disagrees with httparse: whatever it accepts,
    /// httparse parses to the same status, version, head length and
    /// framing headers.
    #[test]
    fn the_fast_response_head_agrees_with_httparse(
        status_line in proptest::sample::select(vec![
            &b"HTTP/1.1 200 OK\r\n"[..], b"HTTP/1.0 404 Not Found\r\n", b"HTTP/1.1 101\r\n",
            b"HTTP/1.1 2x0 OK\r\n", b"HTTP/1.2 200 OK\r\n", b"HTTP/1.1 200 OK\n", b"HTTP/1.1  200 OK\r\n",
        ]),
        headers in proptest::collection::vec(
            (
                proptest::sample::select(vec![
                    &b"Content-Length"[..], b"content-length", b"Transfer-Encoding", b"Server", b"X-A", b"", b"Bad Name",
                ]),
                proptest::sample::select(vec![&b": "[..], b":", b" :", b":\t"]),
                proptest::collection::vec(head_byte(), 0..12),
                proptest::sample::select(vec![&b"\r\n"[..], b"\n", b"\r", b""]),
            ),
            0..8,
        ),
        end in proptest::sample::select(vec![&b"\r\n"[..], b"\n", b"", b"\r\nbody"]),
    ) {
        let mut buf = status_line.to_vec();
        for (name, sep, value, eol) in &headers {
            buf.extend_from_slice(name);
            buf.extend_from_slice(sep);
            buf.extend_from_slice(value);
            buf.extend_from_slice(eol);
        }
        buf.extend_from_slice(end);
        if let Some(fast) = plain_response_head(&buf) {
            proptest::prop_assert_eq!(Some(fast), httparse_response_head(&buf));
        }
    }

    /// Random bytes after a valid start: the same agreement.
    #[test]
    fn the_fast_response_head_agrees_with_httparse_on_any_bytes(
        tail in proptest::collection::vec(head_byte(), 0..120),
    ) {
        let mut buf = b"HTTP/1.1 200 OK\r\n".to_vec();
        buf.extend_from_slice(&tail);
        if let Some(fast) = plain_response_head(&buf) {
            proptest::prop_assert_eq!(Some(fast), httparse_response_head(&buf));
        }
    }
}

proptest::proptest! {
    /// The word-at-a-time scan finds what a byte loop finds.
    #[test]
    fn first_control_matches_a_byte_loop(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
        let want = b.iter().position(|&c| c < 0x20 || c == 0x7f);
        proptest::prop_assert_eq!(first_control(&b), want);
    }
}

proptest::proptest! {
    /// The digits-only shortcut for `Content-Length` reads what the
    /// general UTF-8 + trim + parse path reads, overflow included.
    #[test]
    fn content_length_matches_trim_and_parse(
        v in proptest::prop_oneof![
            "[0-9]{0,22}",
            "[ \t+]?[0-9]{0,20}[ \t]?",
            "[0-9a\u{a0}\u{3000} +-]{0,8}",
        ]
    ) {
        let want = v.trim().parse::<u64>().ok();
        proptest::prop_assert_eq!(content_length(v.as_bytes()), want);
    }
}
