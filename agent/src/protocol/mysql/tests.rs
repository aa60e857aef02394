use super::*;

fn pkt(seq: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = (payload.len() as u32).to_le_bytes()[..3].to_vec();
    v.push(seq);
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

fn handshake_response(caps: u32, ssl_only: bool) -> Vec<u8> {
    let mut p = caps.to_le_bytes().to_vec();
    p.extend_from_slice(&(16u32 << 20).to_le_bytes());
    p.push(45);
    p.extend_from_slice(&[0; 23]);
    if !ssl_only {
        p.extend_from_slice(b"root\0\0mysql_native_password\0");
    }
    pkt(1, &p)
}

fn sql(e: &Exchange) -> &SqlExchange {
    match &e.detail {
        Detail::MySql(s) => s,
        other => panic!("not mysql: {other:?}"),
    }
}

const CAPS: u32 = CLIENT_PROTOCOL_41 | 0x8000 | 0x0001_0000;

/// A connected parser; `deprecate_eof` as the client announced.
fn connected(deprecate_eof: bool) -> MySqlConn {
    let mut c = MySqlConn::from_handshake();
    let mut out = Vec::new();
    let caps = CAPS
        | if deprecate_eof {
            CLIENT_DEPRECATE_EOF
        } else {
            0
        };
    let resp = handshake_response(caps, false);
    assert!(looks_like_handshake_response(&resp));
    c.feed(true, seg(1, &resp), &mut out);
    c.feed(false, seg(2, &pkt(2, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert!(out.is_empty());
    c
}

fn column(name: &str) -> Vec<u8> {
    let mut p = b"\x03def\x00\x00\x00".to_vec();
    p.push(name.len() as u8);
    p.extend_from_slice(name.as_bytes());
    p.extend_from_slice(&[0, 0x0c, 0x3f, 0, 0x0b, 0, 0, 0, 3, 0x81, 0, 0, 0, 0]);
    p
}

fn result_set(deprecate_eof: bool, more: bool) -> Vec<u8> {
    let status: u16 = 2 | if more { SERVER_MORE_RESULTS_EXISTS } else { 0 };
    let mut r = pkt(1, &[2]);
    r.extend(pkt(2, &column("a")));
    r.extend(pkt(3, &column("b")));
    let mut seq = 4;
    if !deprecate_eof {
        r.extend(pkt(seq, &[0xFE, 0, 0, 2, 0]));
        seq += 1;
    }
    r.extend(pkt(seq, b"\x011\x012"));
    seq += 1;
    if deprecate_eof {
        let mut ok = vec![0xFE, 0, 0];
        ok.extend_from_slice(&status.to_le_bytes());
        ok.extend_from_slice(&[0, 0]);
        r.extend(pkt(seq, &ok));
    } else {
        let mut eof = vec![0xFE, 0, 0];
        eof.extend_from_slice(&status.to_le_bytes());
        r.extend(pkt(seq, &eof));
    }
    r
}

#[test]
fn query_with_result_set_both_eof_styles() {
    for deprecate in [true, false] {
        let mut c = connected(deprecate);
        let mut out = Vec::new();
        let q = pkt(0, b"\x03SELECT a, b FROM t WHERE id = 42 AND name = 'x'");
        assert!(looks_like_command(&q));
        c.feed(true, seg(10, &q), &mut out);
        let r = result_set(deprecate, false);
        // The reply split in two segments.
        c.feed(false, seg(11, &r[..20]), &mut out);
        assert!(out.is_empty());
        c.feed(false, seg(12, &r[20..]), &mut out);
        assert_eq!(out.len(), 1, "deprecate_eof={deprecate}");
        let s = sql(&out[0]);
        assert_eq!(s.query, "SELECT a, b FROM t WHERE id = ? AND name = ?");
        assert_eq!(s.operation, "SELECT");
        assert_eq!(s.error_code, None);
        assert_eq!((out[0].start_ns, out[0].end_ns), (10, 12));
    }
}

#[test]
fn multi_results_end_at_the_last() {
    let mut c = connected(true);
    let mut out = Vec::new();
    c.feed(true, seg(1, &pkt(0, b"\x03CALL p()")), &mut out);
    c.feed(false, seg(2, &result_set(true, true)), &mut out);
    assert!(out.is_empty());
    // The final OK of a CALL.
    c.feed(false, seg(3, &pkt(7, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].end_ns, 3);
}

#[test]
fn errors_carry_the_error_number() {
    let mut c = connected(true);
    let mut out = Vec::new();
    c.feed(true, seg(1, &pkt(0, b"\x03select * from nope")), &mut out);
    let mut err = vec![0xFF];
    err.extend_from_slice(&1146u16.to_le_bytes());
    err.extend_from_slice(b"#42S02Table 'test.nope' doesn't exist");
    c.feed(false, seg(2, &pkt(1, &err)), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(sql(&out[0]).error_code.as_deref(), Some("1146"));
}

#[test]
fn prepared_statement_executes_with_its_text() {
    for deprecate in [true, false] {
        let mut c = connected(deprecate);
        let mut out = Vec::new();
        let text = "SELECT a, b FROM t WHERE id = ?";
        let mut prep = vec![COM_STMT_PREPARE];
        prep.extend_from_slice(text.as_bytes());
        c.feed(true, seg(1, &pkt(0, &prep)), &mut out);
        // OK: id 7, 2 columns, 1 parameter.
        let mut r = pkt(1, &[0, 7, 0, 0, 0, 2, 0, 1, 0, 0, 0, 0]);
        r.extend(pkt(2, &column("?")));
        let mut seq = 3;
        if !deprecate {
            r.extend(pkt(seq, &[0xFE, 0, 0, 2, 0]));
            seq += 1;
        }
        r.extend(pkt(seq, &column("a")));
        r.extend(pkt(seq + 1, &column("b")));
        if !deprecate {
            r.extend(pkt(seq + 2, &[0xFE, 0, 0, 2, 0]));
        }
        c.feed(false, seg(2, &r), &mut out);
        assert!(out.is_empty(), "a successful PREPARE is no span");
        let mut exec = vec![COM_STMT_EXECUTE, 7, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 3, 0];
        exec.extend_from_slice(&42u32.to_le_bytes());
        c.feed(true, seg(3, &pkt(0, &exec)), &mut out);
        // Binary result set: count, columns, rows (0x00 header), end.
        let mut r = pkt(1, &[2]);
        r.extend(pkt(2, &column("a")));
        r.extend(pkt(3, &column("b")));
        let mut seq = 4;
        if !deprecate {
            r.extend(pkt(seq, &[0xFE, 0, 0, 2, 0]));
            seq += 1;
        }
        r.extend(pkt(seq, &[0, 0, 1, b'x', 1, b'y']));
        r.extend(pkt(
            seq + 1,
            if deprecate {
                &[0xFE, 0, 0, 2, 0, 0, 0][..]
            } else {
                &[0xFE, 0, 0, 2, 0][..]
            },
        ));
        c.feed(false, seg(4, &r), &mut out);
        assert_eq!(out.len(), 1, "deprecate_eof={deprecate}");
        let s = sql(&out[0]);
        assert_eq!(s.query, text, "parameterized text is kept");
        assert_eq!((out[0].start_ns, out[0].end_ns), (3, 4));
        // Closing it needs no reply; the next query is matched correctly.
        c.feed(
            true,
            seg(5, &pkt(0, &[COM_STMT_CLOSE, 7, 0, 0, 0])),
            &mut out,
        );
        c.feed(true, seg(6, &pkt(0, b"\x03COMMIT")), &mut out);
        c.feed(false, seg(7, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(sql(&out[1]).operation, "COMMIT");
    }
}

#[test]
fn pings_are_followed_but_not_reported() {
    let mut c = connected(true);
    let mut out = Vec::new();
    c.feed(true, seg(1, &pkt(0, &[0x0e])), &mut out);
    c.feed(false, seg(2, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    c.feed(true, seg(3, &pkt(0, b"\x03select 1")), &mut out);
    c.feed(false, seg(4, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].start_ns, 3);
}

#[test]
fn ssl_request_ends_the_cleartext_stream() {
    let mut c = MySqlConn::from_handshake();
    let mut out = Vec::new();
    let req = handshake_response(CAPS | CLIENT_SSL, true);
    assert!(looks_like_handshake_response(&req));
    c.feed(true, seg(1, &req), &mut out);
    // Ciphertext that happens to frame as packets is ignored.
    c.feed(true, seg(2, &pkt(0, b"\x03select 1")), &mut out);
    c.feed(false, seg(3, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert!(out.is_empty());
}

#[test]
fn long_query_with_uncaptured_tail_keeps_framing() {
    let mut c = connected(true);
    let mut out = Vec::new();
    let mut q = b"\x03INSERT INTO t VALUES ('".to_vec();
    q.extend(std::iter::repeat_n(b'x', 10_000));
    q.extend_from_slice(b"')");
    let p = pkt(0, &q);
    c.feed(
        true,
        Segment {
            ts_ns: 1,
            data: &p[..1000],
            gap: (p.len() - 1000) as u64,
        },
        &mut out,
    );
    c.feed(false, seg(2, &pkt(1, &[0, 1, 0, 2, 0, 0, 0])), &mut out);
    c.feed(true, seg(3, &pkt(0, b"\x03select 2")), &mut out);
    c.feed(false, seg(4, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert_eq!(out.len(), 2);
    assert_eq!(sql(&out[0]).query, "INSERT INTO t VALUES (?");
    assert_eq!(sql(&out[1]).query, "select ?");
}

#[test]
fn the_server_greeting_is_recognised() {
    let mut g = vec![10];
    g.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
    g.extend_from_slice(&[7, 0, 0, 0]);
    g.extend_from_slice(b"abcdefgh\0");
    g.extend_from_slice(&[0xfe, 0xf7, 45, 2, 0]);
    let p = pkt(0, &g);
    assert!(looks_like_greeting(&p));
    assert!(!looks_like_greeting(&p[..p.len() - 1]));
    assert!(!looks_like_greeting(&pkt(1, &g)));
    // A client that sends its handshake response as header, then body.
    let mut c = MySqlConn::from_handshake();
    let mut out = Vec::new();
    c.feed(false, seg(1, &p), &mut out);
    let resp = handshake_response(CAPS | CLIENT_DEPRECATE_EOF, false);
    c.feed(true, seg(2, &resp[..4]), &mut out);
    c.feed(true, seg(3, &resp[4..]), &mut out);
    c.feed(false, seg(4, &pkt(2, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    c.feed(true, seg(5, &pkt(0, b"\x03select 1")), &mut out);
    c.feed(false, seg(6, &pkt(1, &[0, 0, 0, 2, 0, 0, 0])), &mut out);
    assert_eq!(out.len(), 1);
}

#[test]
fn other_protocols_are_not_taken_for_mysql() {
    assert!(!looks_like_handshake_response(
        b"GET / HTTP/1.1\r\nHost: x\r\nUser-Agent: curl/8\r\n\r\n"
    ));
    assert!(!looks_like_command(b"*1\r\n$4\r\nPING\r\n"));
    assert!(!looks_like_command(&pkt(0, b"\x03\x00\x01binary")));
}

proptest::proptest! {
    #[test]
    fn never_panics_on_any_input(
        chunks in proptest::collection::vec(
            (proptest::bool::ANY, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0u64..50),
            0..20,
        ),
        midway in proptest::bool::ANY,
    ) {
        let mut c = if midway { MySqlConn::from_command() } else { MySqlConn::from_handshake() };
        let mut out = Vec::new();
        for (i, (dir, data, gap)) in chunks.iter().enumerate() {
            c.feed(*dir, Segment { ts_ns: i as u64, data, gap: *gap }, &mut out);
        }
    }
}
