//! Connection reassembly: kernel events in, exchanges (with their
//! connection's tuple and role) out. One parser per connection, chosen from
//! the first bytes the client sends.
//!
//! A TLS connection has two streams under one (process, fd): what its
//! socket syscalls moved before TLS began (PostgreSQL's SSLRequest, the
//! handshake when the agent came late) and the plaintext of its SSL calls.
//! Each gets its own parser; the close of the fd ends both.
use std::collections::HashMap;

use crate::{
    ebpf::event::{Direction, Event, EventKind, Role, Tuple},
    protocol::{self, ConnParser, Exchange, Protocol, Segment},
};

/// Client segments inspected before a connection is declared unknown.
const DETECT_ATTEMPTS: u8 = 4;

struct Conn {
    comm: Comm,
    tuple: Tuple,
    role: Role,
    parser: Option<Box<dyn ConnParser>>,
    /// What `parser` parses.
    protocol: Option<Protocol>,
    attempts: u8,
    last_ts: u64,
    seen: u64,
    /// Kept for the span builder: the encoded span attributes that depend
    /// only on the connection (`telemetry::build` fills it on the first
    /// exchange; later spans copy the bytes).
    span_attrs: Vec<u8>,
}

/// A task name (`comm`, at most 15 bytes), kept inline: it is copied into
/// every exchange but read only when a span's resource is first built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Comm {
    len: u8,
    bytes: [u8; 16],
}

impl Comm {
    /// From the kernel's bytes, invalid UTF-8 replaced (the kernel copies
    /// whatever the task named itself).
    pub fn from_bytes(b: &[u8]) -> Comm {
        Comm::new(&String::from_utf8_lossy(b))
    }

    pub fn new(s: &str) -> Comm {
        let mut c = Comm::default();
        // Cut at a character boundary so that as_str() stays valid UTF-8.
        let mut n = s.len().min(16);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        c.bytes[..n].copy_from_slice(&s.as_bytes()[..n]);
        c.len = n as u8;
        c
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Where a connection's exchanges happen.
#[derive(Debug, Clone, Copy)]
pub struct Site {
    pub tgid: u32,
    pub comm: Comm,
    pub tuple: Tuple,
    pub role: Role,
    /// Carried inside TLS (seen at the SSL calls).
    pub tls: bool,
}

/// An exchange and where it happened.
#[derive(Debug, Clone)]
pub struct Located {
    pub tgid: u32,
    pub comm: Comm,
    pub tuple: Tuple,
    pub role: Role,
    /// Carried inside TLS (seen at the SSL calls).
    pub tls: bool,
    pub exchange: Exchange,
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub evicted: u64,
    pub undetected: u64,
    pub desyncs: u64,
}

pub struct Tracker {
    conns: HashMap<(u32, i32, bool), Conn, foldhash::fast::RandomState>,
    max: usize,
    seq: u64,
    pub stats: Stats,
    /// Reused for each segment's exchanges.
    exchanges: Vec<Exchange>,
}

fn new_parser(p: Protocol) -> Box<dyn ConnParser> {
    match p {
        Protocol::Http1 => Box::<protocol::http1::Http1Conn>::default(),
        Protocol::Http2 => Box::<protocol::http2::Http2Conn>::default(),
        Protocol::Redis => Box::<protocol::redis::RedisConn>::default(),
        Protocol::Postgres => Box::<protocol::postgres::PgConn>::default(),
        Protocol::MySql => Box::new(protocol::mysql::MySqlConn::from_handshake()),
        Protocol::MySqlCommand => Box::new(protocol::mysql::MySqlConn::from_command()),
    }
}

impl Tracker {
    pub fn new(max: usize) -> Self {
        Tracker {
            conns: HashMap::default(),
            max: max.max(1),
            seq: 0,
            stats: Stats::default(),
            exchanges: Vec::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.conns.is_empty()
    }

    fn evict_oldest(&mut self) {
        if let Some(key) = self
            .conns
            .iter()
            .min_by_key(|(_, c)| c.seen)
            .map(|(k, _)| *k)
        {
            self.conns.remove(&key);
            self.stats.evicted += 1;
        }
    }

    /// Follows one event; what it completes lands in `out`.
    pub fn handle(&mut self, ev: &Event<'_>, out: &mut Vec<Located>) {
        self.handle_with(ev, |site, exchange, _| {
            out.push(Located {
                tgid: site.tgid,
                comm: site.comm,
                tuple: site.tuple,
                role: site.role,
                tls: site.tls,
                exchange: exchange.clone(),
            });
        });
    }

    /// Follows one event and calls `f` with each exchange it completes, by
    /// reference where the parser left it, its site and its connection's
    /// `span_attrs` cache: no intermediate list, no copy of the exchange
    /// (each move of one was a ~100-byte `memcpy`), and the cache needs no
    /// lookup of its own.
    pub fn handle_with(
        &mut self,
        ev: &Event<'_>,
        mut f: impl FnMut(&Site, &Exchange, &mut Vec<u8>),
    ) {
        let key = (ev.tgid, ev.fd, ev.tls);
        self.seq += 1;
        match ev.kind {
            EventKind::Open => {
                for tls in [false, true] {
                    if let Some(old) = self.conns.remove(&(ev.tgid, ev.fd, tls)) {
                        self.flush(key.0, tls, old, ev.ts_ns, &mut f);
                    }
                }
                if self.conns.len() >= self.max {
                    self.evict_oldest();
                }
                self.conns.insert(
                    key,
                    Conn {
                        comm: Comm::from_bytes(ev.comm),
                        tuple: ev.tuple,
                        role: ev.tuple.role,
                        parser: None,
                        protocol: None,
                        attempts: 0,
                        last_ts: ev.ts_ns,
                        seen: self.seq,
                        span_attrs: Vec::new(),
                    },
                );
            }
            EventKind::Close => {
                for tls in [false, true] {
                    if let Some(c) = self.conns.remove(&(ev.tgid, ev.fd, tls)) {
                        self.flush(key.0, tls, c, ev.ts_ns, &mut f);
                    }
                }
            }
            EventKind::Data => {
                let Some(direction) = ev.direction else {
                    return;
                };
                if let Some(c) = self.conns.get_mut(&key) {
                    // One lookup for the usual event of a known connection.
                    Self::data(
                        c,
                        self.seq,
                        ev,
                        direction,
                        key,
                        &mut self.stats,
                        &mut self.exchanges,
                        &mut f,
                    );
                    return;
                }
                // The first plaintext of a TLS connection, or its OPEN
                // event was lost (ring buffer full): the data event
                // carries the tuple, so start from it.
                if self.conns.len() >= self.max {
                    self.evict_oldest();
                }
                let plain = self.conns.get(&(ev.tgid, ev.fd, false));
                let comm = plain.map_or_else(|| Comm::from_bytes(ev.comm), |p| p.comm);
                // MySQL switches to TLS inside its handshake, after the
                // greeting that identified it: the TLS stream goes on
                // with the protocol the cleartext one found.
                let (role, protocol) = match plain {
                    Some(p)
                        if ev.tls
                            && matches!(
                                p.protocol,
                                Some(Protocol::MySql | Protocol::MySqlCommand)
                            ) =>
                    {
                        (p.role, Some(Protocol::MySql))
                    }
                    _ => (ev.tuple.role, None),
                };
                let c = self.conns.entry(key).or_insert(Conn {
                    comm,
                    tuple: ev.tuple,
                    role,
                    parser: protocol.map(new_parser),
                    protocol,
                    attempts: 0,
                    last_ts: ev.ts_ns,
                    seen: self.seq,
                    span_attrs: Vec::new(),
                });
                Self::data(
                    c,
                    self.seq,
                    ev,
                    direction,
                    key,
                    &mut self.stats,
                    &mut self.exchanges,
                    &mut f,
                );
            }
        }
    }

    /// A data event of the known connection `c`.
    #[allow(clippy::too_many_arguments)]
    fn data(
        c: &mut Conn,
        seq: u64,
        ev: &Event<'_>,
        direction: Direction,
        key: (u32, i32, bool),
        stats: &mut Stats,
        exchanges: &mut Vec<Exchange>,
        f: &mut impl FnMut(&Site, &Exchange, &mut Vec<u8>),
    ) {
        c.seen = seq;
        c.last_ts = ev.ts_ns;
        if c.parser.is_none() {
            if c.attempts >= DETECT_ATTEMPTS {
                return;
            }
            // Detect from whichever side sent a recognisable request;
            // for a connection of unknown role this also settles it.
            let sender_is_us = direction == Direction::Egress;
            let client_side = match c.role {
                Role::Server => direction == Direction::Ingress,
                Role::Client => direction == Direction::Egress,
                Role::Unknown => true,
            };
            let detected = if client_side {
                c.attempts += 1;
                protocol::detect(ev.data)
            } else {
                None
            };
            // MySQL's server speaks first; its clients may send their
            // first packet in pieces (header, then body).
            let server_first = if detected.is_none() {
                protocol::detect_server_greeting(ev.data)
            } else {
                None
            };
            match detected.or(server_first) {
                Some(p) => {
                    if c.role == Role::Unknown {
                        // The sender of a request is the client, of
                        // a greeting the server.
                        let sender_is_client = server_first.is_none();
                        c.role = if sender_is_us == sender_is_client {
                            Role::Client
                        } else {
                            Role::Server
                        };
                    }
                    c.parser = Some(new_parser(p));
                    c.protocol = Some(p);
                }
                None if !client_side => return,
                None => {
                    if c.attempts == DETECT_ATTEMPTS {
                        stats.undetected += 1;
                    }
                    return;
                }
            }
        }
        let from_client = protocol::from_client(direction, c.role != Role::Client);
        let seg = Segment {
            ts_ns: ev.ts_ns,
            data: ev.data,
            gap: u64::from(ev.total_len).saturating_sub(ev.data.len() as u64),
        };
        if let Some(p) = c.parser.as_mut() {
            p.feed(from_client, seg, exchanges);
        }
        let site = Site {
            tgid: key.0,
            comm: c.comm,
            tuple: c.tuple,
            role: c.role,
            tls: key.2,
        };
        for exchange in exchanges.iter() {
            f(&site, exchange, &mut c.span_attrs);
        }
        exchanges.clear();
    }

    fn flush(
        &mut self,
        tgid: u32,
        tls: bool,
        mut c: Conn,
        ts: u64,
        f: &mut impl FnMut(&Site, &Exchange, &mut Vec<u8>),
    ) {
        if let Some(p) = c.parser.as_mut() {
            let mut exchanges = Vec::new();
            p.close(ts, &mut exchanges);
            self.stats.desyncs += p.desyncs();
            let site = Site {
                tgid,
                comm: c.comm,
                tuple: c.tuple,
                role: c.role,
                tls,
            };
            for exchange in &exchanges {
                f(&site, exchange, &mut c.span_attrs);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ebpf::event::tests::sample;

    #[test]
    fn unknown_role_is_settled_by_who_sends_the_request() {
        let mut t = Tracker::new(8);
        let mut out = Vec::new();
        let mut req = sample();
        req.tuple.role = Role::Unknown;
        req.data = b"GET /x HTTP/1.1\r\n\r\n";
        req.total_len = req.data.len() as u32;
        req.direction = Some(Direction::Egress);
        t.handle(&req, &mut out);
        let mut resp = req.clone();
        resp.direction = Some(Direction::Ingress);
        resp.data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        resp.total_len = resp.data.len() as u32;
        resp.ts_ns += 5;
        t.handle(&resp, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].role, Role::Client);
    }

    #[test]
    fn tls_plaintext_is_a_stream_of_its_own_closed_with_the_fd() {
        let mut t = Tracker::new(8);
        let mut out = Vec::new();
        let mut open = sample();
        open.kind = EventKind::Open;
        open.comm = b"psql";
        t.handle(&open, &mut out);
        // PostgreSQL's SSLRequest in the clear, then its answer.
        let mut ssl_req = sample();
        ssl_req.direction = Some(Direction::Ingress);
        ssl_req.data = &[0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        ssl_req.total_len = 8;
        t.handle(&ssl_req, &mut out);
        // The plaintext inside TLS: an HTTP request and its response.
        let mut req = sample();
        req.tls = true;
        req.data = b"GET /x HTTP/1.1\r\n\r\n";
        req.total_len = req.data.len() as u32;
        t.handle(&req, &mut out);
        assert_eq!(t.len(), 2, "one parser per stream");
        let mut resp = req.clone();
        resp.direction = Some(Direction::Egress);
        resp.data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        resp.total_len = resp.data.len() as u32;
        t.handle(&resp, &mut out);
        assert_eq!(out.len(), 1);
        assert!(out[0].tls);
        assert_eq!(out[0].comm.as_str(), "psql", "named by the fd's OPEN");
        let mut close = sample();
        close.kind = EventKind::Close;
        t.handle(&close, &mut out);
        assert!(t.is_empty());
    }

    #[test]
    fn comm_keeps_at_most_16_bytes_on_a_character_boundary() {
        assert_eq!(Comm::new("nginx").as_str(), "nginx");
        assert_eq!(Comm::new("abcdefghijklmnopq").as_str(), "abcdefghijklmnop");
        // 15 ASCII bytes then a 2-byte character: cut before it.
        assert_eq!(Comm::new("abcdefghijklmnoé").as_str(), "abcdefghijklmno");
        // The kernel's bytes: invalid UTF-8 is replaced, as decoding did
        // before the check moved here.
        assert_eq!(Comm::from_bytes(b"ng\xffinx").as_str(), "ng\u{fffd}inx");
        assert_eq!(Comm::from_bytes(b"").as_str(), "");
    }

    #[test]
    fn connection_table_is_bounded() {
        let mut t = Tracker::new(2);
        let mut out = Vec::new();
        for fd in 0..5 {
            let mut e = sample();
            e.fd = fd;
            e.kind = EventKind::Open;
            t.handle(&e, &mut out);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(t.stats.evicted, 3);
    }
}
