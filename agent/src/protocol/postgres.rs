//! PostgreSQL frontend/backend protocol 3.0: startup (with the SSL request
//! answered by one byte), simple query (`Q`) and extended query
//! (`P`/`B`/`E`/`S`). One exchange per executed statement, ended by the
//! server's `CommandComplete`, `EmptyQueryResponse` or `ErrorResponse`.
use std::collections::{HashMap, VecDeque};

use super::{
    ConnParser, Detail, Exchange, MAX_BUFFERED, Segment,
    sql::{Dialect, clip, operation, sanitize, sanitize_unless_parameterized},
};

/// A PostgreSQL statement's exchange.
pub type PgExchange = super::sql::SqlExchange;

const PROTOCOL_3: u32 = 196_608;
const SSL_REQUEST: u32 = 80_877_103;
const GSSENC_REQUEST: u32 = 80_877_104;
const CANCEL_REQUEST: u32 = 80_877_102;
const MAX_PENDING: usize = 256;
const MAX_STATEMENTS: usize = 256;

pub fn looks_like_startup(b: &[u8]) -> bool {
    if b.len() < 8 {
        return false;
    }
    let len = be32(&b[0..4]);
    let code = be32(&b[4..8]);
    (8..=10_000).contains(&len) && matches!(code, PROTOCOL_3 | SSL_REQUEST | GSSENC_REQUEST)
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// One framed message; `payload` may be a captured prefix only.
struct Msg<'a> {
    tag: u8,
    payload: &'a [u8],
}

#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    /// Untyped startup-phase messages still expected (client side).
    untyped: bool,
    /// The next byte is the one-byte answer to an SSL/GSS request.
    ssl_answer: bool,
    /// Uncaptured bytes of the current message still to skip.
    skip: u64,
    dead: bool,
    desyncs: u64,
}

impl Stream {
    fn feed(&mut self, seg: Segment<'_>, mut on_msg: impl FnMut(&mut Self, Msg<'_>)) {
        if self.dead {
            return;
        }
        let mut data = seg.data;
        let mut gap = seg.gap;
        if self.skip > 0 {
            let n = (data.len() as u64).min(self.skip);
            data = &data[n as usize..];
            self.skip -= n;
            let g = gap.min(self.skip);
            gap -= g;
            self.skip -= g;
        }
        self.buf.extend_from_slice(data);
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0;
        while at < buf.len() {
            if self.ssl_answer {
                self.ssl_answer = false;
                if buf[at] != b'N' {
                    // Encrypted from here on: nothing more to read.
                    self.dead = true;
                    return;
                }
                at += 1;
                continue;
            }
            let hdr = if self.untyped { 4 } else { 5 };
            if buf.len() - at < hdr {
                break;
            }
            let len_at = if self.untyped { at } else { at + 1 };
            let len = be32(&buf[len_at..len_at + 4]) as u64;
            if !(4..=1 << 30).contains(&len) {
                self.desyncs += 1;
                self.dead = true;
                return;
            }
            let total = len + if self.untyped { 0 } else { 1 };
            let tag = if self.untyped { 0 } else { buf[at] };
            let body_start = at + hdr;
            let have = (buf.len() - at) as u64;
            if have >= total {
                let end = at + total as usize;
                on_msg(
                    self,
                    Msg {
                        tag,
                        payload: &buf[body_start..end],
                    },
                );
                at = end;
            } else if gap > 0 || have > MAX_BUFFERED as u64 {
                // The tail of this message was not captured (or is too big to
                // keep): use the prefix, skip the rest by length.
                on_msg(
                    self,
                    Msg {
                        tag,
                        payload: &buf[body_start..],
                    },
                );
                let missing = total - have;
                let g = gap.min(missing);
                gap -= g;
                self.skip = missing - g;
                at = buf.len();
            } else {
                break;
            }
        }
        self.buf = buf[at..].to_vec();
        if gap > 0 && self.skip == 0 {
            // Uncaptured bytes at a message boundary: framing is lost.
            self.desyncs += 1;
            self.dead = true;
        }
    }
}

fn cstr(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|c| *c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

#[derive(Debug)]
struct Pending {
    /// Sanitized already, so the operation comes from `operation`.
    query: String,
    operation: String,
    start_ns: u64,
}

#[derive(Debug)]
pub struct PgConn {
    client: Stream,
    server: Stream,
    /// Name → (text for the span, operation).
    statements: HashMap<String, (String, String)>,
    portals: HashMap<String, (String, String)>,
    pending: VecDeque<Pending>,
    overflow: u64,
}

impl Default for PgConn {
    fn default() -> Self {
        PgConn {
            client: Stream {
                untyped: true,
                ..Stream::default()
            },
            server: Stream::default(),
            statements: HashMap::new(),
            portals: HashMap::new(),
            pending: VecDeque::new(),
            overflow: 0,
        }
    }
}

impl PgConn {
    fn push(&mut self, (query, operation): (String, String), start_ns: u64) {
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.overflow += 1;
        }
        self.pending.push_back(Pending {
            query,
            operation,
            start_ns,
        });
    }

    fn remember(map: &mut HashMap<String, (String, String)>, k: String, v: (String, String)) {
        if map.len() >= MAX_STATEMENTS && !map.contains_key(&k) {
            map.clear();
        }
        map.insert(k, v);
    }
}

impl ConnParser for PgConn {
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>) {
        let ts = seg.ts_ns;
        if from_client {
            let mut msgs: Vec<(u8, Vec<u8>)> = Vec::new();
            let mut ssl = false;
            self.client.feed(seg, |st, m| {
                if st.untyped {
                    let code = if m.payload.len() >= 4 {
                        be32(m.payload)
                    } else {
                        0
                    };
                    match code {
                        SSL_REQUEST | GSSENC_REQUEST => ssl = true,
                        CANCEL_REQUEST => {}
                        _ => st.untyped = false,
                    }
                    return;
                }
                msgs.push((m.tag, m.payload.to_vec()));
            });
            if ssl {
                self.server.ssl_answer = true;
            }
            for (tag, p) in msgs {
                match tag {
                    b'Q' => {
                        let q = clip(cstr(&p).0);
                        self.push((sanitize(&q, Dialect::Postgres), operation(&q)), ts);
                    }
                    b'P' => {
                        let (name, rest) = cstr(&p);
                        let (query, _) = cstr(rest);
                        let q = clip(query);
                        Self::remember(
                            &mut self.statements,
                            String::from_utf8_lossy(name).into_owned(),
                            (
                                sanitize_unless_parameterized(&q, Dialect::Postgres),
                                operation(&q),
                            ),
                        );
                    }
                    b'B' => {
                        let (portal, rest) = cstr(&p);
                        let (stmt, _) = cstr(rest);
                        let q = self
                            .statements
                            .get(String::from_utf8_lossy(stmt).as_ref())
                            .cloned()
                            .unwrap_or_default();
                        Self::remember(
                            &mut self.portals,
                            String::from_utf8_lossy(portal).into_owned(),
                            q,
                        );
                    }
                    b'E' => {
                        let (portal, _) = cstr(&p);
                        let q = self
                            .portals
                            .get(String::from_utf8_lossy(portal).as_ref())
                            .cloned()
                            .unwrap_or_default();
                        self.push(q, ts);
                    }
                    _ => {}
                }
            }
        } else {
            let mut msgs: Vec<(u8, Vec<u8>)> = Vec::new();
            self.server.feed(seg, |_, m| {
                if matches!(m.tag, b'C' | b'E' | b'I' | b'Z') {
                    msgs.push((m.tag, m.payload.to_vec()));
                }
            });
            for (tag, p) in msgs {
                let (tag_text, error_code) = match tag {
                    b'C' => (Some(clip(cstr(&p).0)), None),
                    b'I' => (None, None),
                    b'E' => (None, Some(sqlstate(&p))),
                    _ => {
                        // ReadyForQuery: statements skipped after an error
                        // in the same sync will never complete.
                        self.pending.clear();
                        continue;
                    }
                };
                let Some(req) = self.pending.pop_front() else {
                    continue;
                };
                out.push(Exchange {
                    start_ns: req.start_ns,
                    end_ns: ts.max(req.start_ns),
                    detail: Detail::Postgres(PgExchange {
                        operation: req.operation,
                        query: req.query,
                        error_code,
                        tag: tag_text,
                    }),
                });
            }
        }
    }

    fn close(&mut self, _ts_ns: u64, _out: &mut Vec<Exchange>) {}

    fn desyncs(&self) -> u64 {
        self.client.desyncs + self.server.desyncs + self.overflow
    }
}

/// The `C` field of an ErrorResponse.
fn sqlstate(p: &[u8]) -> String {
    let mut rest = p;
    while let Some((&field, tail)) = rest.split_first() {
        if field == 0 {
            break;
        }
        let (value, next) = cstr(tail);
        if field == b'C' {
            return String::from_utf8_lossy(value).into_owned();
        }
        rest = next;
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as u32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn startup() -> Vec<u8> {
        let body = b"user\0postgres\0database\0db\0\0";
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(&PROTOCOL_3.to_be_bytes());
        v.extend_from_slice(body);
        v
    }
    fn ssl_request() -> Vec<u8> {
        let mut v = 8u32.to_be_bytes().to_vec();
        v.extend_from_slice(&SSL_REQUEST.to_be_bytes());
        v
    }
    fn seg(ts: u64, data: &[u8]) -> Segment<'_> {
        Segment {
            ts_ns: ts,
            data,
            gap: 0,
        }
    }
    fn pg(e: &Exchange) -> &PgExchange {
        match &e.detail {
            Detail::Postgres(p) => p,
            other => panic!("not pg: {other:?}"),
        }
    }

    fn handshake(c: &mut PgConn, out: &mut Vec<Exchange>) {
        c.feed(true, seg(1, &ssl_request()), out);
        c.feed(false, seg(2, b"N"), out);
        c.feed(true, seg(3, &startup()), out);
        let mut s = msg(b'R', &0u32.to_be_bytes());
        s.extend(msg(b'S', b"server_version\x0016\0"));
        s.extend(msg(b'Z', b"I"));
        c.feed(false, seg(4, &s), out);
    }

    #[test]
    fn simple_query_after_ssl_refusal() {
        let mut c = PgConn::default();
        let mut out = Vec::new();
        handshake(&mut c, &mut out);
        assert!(looks_like_startup(&startup()));
        c.feed(true, seg(10, &msg(b'Q', b"select 1;\0")), &mut out);
        let mut r = msg(b'T', b"\0\x01?column?\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0");
        r.extend(msg(b'D', b"\0\x01\0\0\0\x011"));
        r.extend(msg(b'C', b"SELECT 1\0"));
        r.extend(msg(b'Z', b"I"));
        c.feed(false, seg(15, &r), &mut out);
        assert_eq!(out.len(), 1);
        let p = pg(&out[0]);
        assert_eq!(
            (p.operation.as_str(), p.query.as_str()),
            ("SELECT", "select ?;")
        );
        assert_eq!(p.tag.as_deref(), Some("SELECT 1"));
        assert_eq!((out[0].start_ns, out[0].end_ns), (10, 15));
    }

    #[test]
    fn extended_query_and_error() {
        let mut c = PgConn::default();
        let mut out = Vec::new();
        handshake(&mut c, &mut out);
        let mut m = msg(b'P', b"s1\0INSERT INTO t VALUES ($1)\0\0\0");
        m.extend(msg(b'B', b"\0s1\0\0\0\0\x01\0\0\0\x011\0\0"));
        m.extend(msg(b'E', b"\0\0\0\0\0"));
        m.extend(msg(b'S', b""));
        c.feed(true, seg(20, &m), &mut out);
        let mut r = msg(b'1', b"");
        r.extend(msg(b'2', b""));
        r.extend(msg(b'E', b"SERROR\0C23505\0Mduplicate key\0\0"));
        // Split the reply in the middle of the error message.
        c.feed(false, seg(21, &r[..12]), &mut out);
        c.feed(false, seg(22, &r[12..]), &mut out);
        c.feed(false, seg(23, &msg(b'Z', b"I")), &mut out);
        assert_eq!(out.len(), 1);
        let p = pg(&out[0]);
        assert_eq!(p.operation, "INSERT");
        assert_eq!(p.error_code.as_deref(), Some("23505"));
    }

    #[test]
    fn long_query_with_uncaptured_tail_keeps_framing() {
        let mut c = PgConn::default();
        let mut out = Vec::new();
        handshake(&mut c, &mut out);
        let mut q = b"SELECT ".to_vec();
        q.extend(std::iter::repeat_n(b'x', 10_000));
        q.push(0);
        let m = msg(b'Q', &q);
        c.feed(
            true,
            Segment {
                ts_ns: 30,
                data: &m[..1000],
                gap: (m.len() - 1000) as u64,
            },
            &mut out,
        );
        let mut r = msg(b'C', b"SELECT 0\0");
        r.extend(msg(b'Z', b"I"));
        c.feed(false, seg(31, &r), &mut out);
        c.feed(true, seg(32, &msg(b'Q', b"select 2\0")), &mut out);
        c.feed(false, seg(33, &r), &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(pg(&out[1]).query, "select ?");
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_input(
            chunks in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64), 0u64..50),
                0..20,
            )
        ) {
            let mut c = PgConn::default();
            let mut out = Vec::new();
            for (i, (dir, data, gap)) in chunks.iter().enumerate() {
                c.feed(*dir, Segment { ts_ns: i as u64, data, gap: *gap }, &mut out);
            }
        }
    }
}
