//! HTTP/1.x: keep-alive, pipelining, chunked bodies, heads split across reads,
//! and payloads of which the kernel captured only a prefix.
use std::collections::VecDeque;

use super::{ConnParser, Detail, Exchange, MAX_BUFFERED, Segment};

const METHODS: &[&[u8]] = &[
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
/// Requests that may be outstanding on one connection (pipelining depth).
const MAX_PENDING: usize = 64;
const MAX_HEADERS: usize = 96;

pub fn looks_like_request(b: &[u8]) -> bool {
    METHODS.iter().any(|m| {
        b.len() >= m.len() && b[..m.len()] == **m
            || (b.len() < m.len() && b.len() >= 3 && m.starts_with(b))
    })
}

fn looks_like_response(b: &[u8]) -> bool {
    b.starts_with(b"HTTP/1.")
}

/// Start and end of a field in [`RequestText::text`].
type Field = (u32, u32);

/// The text a span needs from a request head, in one allocation: an owned
/// `String` per field was up to five allocations (and frees) per request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestText {
    text: String,
    method: Field,
    target: Field,
    host: Option<Field>,
    user_agent: Option<Field>,
    traceparent: Option<Field>,
}

impl RequestText {
    pub fn new(
        method: &str,
        target: &str,
        host: Option<&str>,
        user_agent: Option<&str>,
        traceparent: Option<&str>,
    ) -> RequestText {
        let len = |s: Option<&str>| s.map_or(0, str::len);
        let mut text = String::with_capacity(
            method.len() + target.len() + len(host) + len(user_agent) + len(traceparent),
        );
        // Heads are bounded by MAX_BUFFERED, so offsets fit in u32.
        let mut put = |s: &str| {
            let start = text.len() as u32;
            text.push_str(s);
            (start, text.len() as u32)
        };
        let method = put(method);
        let target = put(target);
        let host = host.map(&mut put);
        let user_agent = user_agent.map(&mut put);
        let traceparent = traceparent.map(&mut put);
        RequestText {
            text,
            method,
            target,
            host,
            user_agent,
            traceparent,
        }
    }

    fn get(&self, (start, end): Field) -> &str {
        self.text
            .get(start as usize..end as usize)
            .unwrap_or_default()
    }
}

/// What a span needs from one request/response pair.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpExchange {
    pub request: RequestText,
    /// 0 when the response head was not seen.
    pub status: u16,
    pub version: &'static str,
    pub request_body_size: u64,
    pub response_body_size: u64,
}

impl HttpExchange {
    pub fn method(&self) -> &str {
        self.request.get(self.request.method)
    }

    pub fn target(&self) -> &str {
        self.request.get(self.request.target)
    }

    pub fn host(&self) -> Option<&str> {
        self.request.host.map(|f| self.request.get(f))
    }

    pub fn user_agent(&self) -> Option<&str> {
        self.request.user_agent.map(|f| self.request.get(f))
    }

    pub fn traceparent(&self) -> Option<&str> {
        self.request.traceparent.map(|f| self.request.get(f))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyMode {
    Empty,
    Length(u64),
    Chunked,
    UntilClose,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Head {
    /// Empty (no allocation) for a response.
    request: RequestText,
    status: u16,
    version: &'static str,
}

#[derive(Debug, PartialEq, Eq)]
enum MsgEvent {
    Head { head: Head, ts: u64 },
    End { ts: u64, body_bytes: u64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    Size,
    Data(u64),
    DataCrlf(u8),
    Trailer,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Head,
    Body(u64),
    Chunked(Chunk),
    UntilClose,
    /// Lost track (gap in a head or chunk framing, unparsable bytes, an
    /// upgrade): wait for a segment that starts a new message.
    Desync,
}

/// One direction of an HTTP/1 connection.
#[derive(Debug)]
struct Stream {
    requests: bool,
    buf: Vec<u8>,
    gap: u64,
    ts: u64,
    head_ts: Option<u64>,
    seg_start: bool,
    state: State,
    body_bytes: u64,
    desyncs: u64,
}

/// The headers that frame a message's body.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Framing {
    length: Option<u64>,
    chunked: bool,
}

impl Framing {
    /// Takes `Content-Length` and `Transfer-Encoding`; false for any other
    /// header. A later header of the same name wins, as before.
    fn header(&mut self, name: &[u8], value: &[u8]) -> bool {
        if name.eq_ignore_ascii_case(b"content-length") {
            self.length = content_length(value);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let v = value.trim_ascii_end();
            self.chunked = v.len() >= 7 && v[v.len() - 7..].eq_ignore_ascii_case(b"chunked");
        } else {
            return false;
        }
        true
    }
}

/// A `Content-Length` value: what `str::trim` and `u64`'s `parse` make
/// of it. Plain digits — what servers send — are read directly; the
/// UTF-8 check, the trim and the general parse were ~150 instructions of
/// every response (callgrind, session 25).
fn content_length(value: &[u8]) -> Option<u64> {
    // Up to 19 digits cannot overflow a u64.
    if (1..=19).contains(&value.len()) && value.iter().all(u8::is_ascii_digit) {
        return Some(value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')));
    }
    std::str::from_utf8(value)
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
}

fn body_mode(request: bool, head_request: bool, status: u16, f: Framing) -> BodyMode {
    let no_body =
        !request && (head_request || (100..200).contains(&status) || matches!(status, 204 | 304));
    if no_body {
        BodyMode::Empty
    } else if f.chunked {
        BodyMode::Chunked
    } else if let Some(n) = f.length {
        BodyMode::Length(n)
    } else if request {
        BodyMode::Empty
    } else {
        BodyMode::UntilClose
    }
}

/// A response head parsed by [`plain_response_head`].
#[derive(Debug, PartialEq, Eq)]
struct PlainHead {
    status: u16,
    minor: u8,
    /// Bytes of the head, final CRLF included.
    len: usize,
    framing: Framing,
}

/// `tchar` of RFC 9110 section 5.6.2, the bytes httparse accepts in a
/// header name (its `TOKEN_MAP`, httparse 1.10 `src/lib.rs`).
const fn token_map() -> [bool; 256] {
    let mut m = [false; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        m[b] = c.is_ascii_alphanumeric()
            || matches!(
                c,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        b += 1;
    }
    m
}
static TOKEN: [bool; 256] = token_map();

/// A response head in the strict form servers write (`HTTP/1.x NNN
/// reason` CRLF, `name: value` CRLF lines, CRLF), read without httparse:
/// it was 1,390 of the reader's ~8,800 instructions per request (callgrind,
/// nginx's six-header response), mostly checking each header-name byte
/// on its own. `None` for anything else — leading empty lines, bare LF line
/// ends, bytes httparse refuses, too many headers, an incomplete head —
/// which then goes to httparse, so the outcome is httparse's either way.
///
/// When this returns a head, httparse (default config, `MAX_HEADERS`) would
/// have returned the same status, version, length and header values; the
/// rules followed are those of httparse 1.10's `Response::parse`,
/// `parse_code`, `parse_reason` and `parse_headers_iter_uninit`, and a
/// property test compares the two.
fn plain_response_head(b: &[u8]) -> Option<PlainHead> {
    // Status line: version, SP, three digits, then SP reason or CRLF.
    let minor = match b.get(..9)? {
        b"HTTP/1.0 " => 0,
        b"HTTP/1.1 " => 1,
        _ => return None,
    };
    let digits = b.get(9..12)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let status = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    let mut i = match b.get(12..14)? {
        b"\r\n" => 14,
        [b' ', _] => line_end(b, 13)?,
        _ => return None,
    };
    let mut framing = Framing::default();
    let mut headers = 0;
    loop {
        match b.get(i..i + 2)? {
            b"\r\n" => {
                return Some(PlainHead {
                    status,
                    minor,
                    len: i + 2,
                    framing,
                });
            }
            _ if headers == MAX_HEADERS => return None,
            _ => {}
        }
        // Name: one or more token bytes, then the colon.
        let name_end = i + b.get(i..)?.iter().position(|&c| !TOKEN[usize::from(c)])?;
        if name_end == i || b[name_end] != b':' {
            return None;
        }
        // Value: after optional SP/HTAB, up to the CRLF; trailing SP/HTAB
        // trimmed.
        let mut v = name_end + 1;
        while matches!(b.get(v), Some(b' ' | b'\t')) {
            v += 1;
        }
        let next = line_end(b, v)?;
        let value = b[v..next - 2].trim_ascii_end();
        framing.header(&b[i..name_end], value);
        headers += 1;
        i = next;
    }
}

/// From `from`, the end (after CRLF) of a line whose bytes are all HTAB,
/// SP, visible ASCII or obs-text (>= 0x80) — what httparse allows in a
/// reason phrase and a header value. `None` if another control byte or a
/// bare LF comes first, or the line is incomplete.
fn line_end(b: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    loop {
        let c = at + first_control(b.get(at..)?)?;
        match b[c] {
            // HTAB is allowed; look on after it.
            b'\t' => at = c + 1,
            b'\r' if b.get(c + 1) == Some(&b'\n') => return Some(c + 2),
            _ => return None,
        }
    }
}

/// Index of the first byte below 0x20 or equal to 0x7f, eight bytes per
/// step: a byte-by-byte loop here cost more than httparse's whole parse.
fn first_control(b: &[u8]) -> Option<usize> {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGH: u64 = 0x8080_8080_8080_8080;
    let mut words = b.chunks_exact(8);
    let mut base = 0;
    for w in words.by_ref() {
        let x = u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        // High bit set in the lowest byte below 0x20 ("hasless", exact for
        // the first such byte: borrows only run upwards) ...
        let below = x.wrapping_sub(ONES * 0x20) & !x & HIGH;
        // ... or equal to 0x7f ("haszero" of x ^ 0x7f7f...).
        let y = x ^ (ONES * 0x7f);
        let del = y.wrapping_sub(ONES) & !y & HIGH;
        let m = below | del;
        if m != 0 {
            return Some(base + (m.trailing_zeros() / 8) as usize);
        }
        base += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&c| c < 0x20 || c == 0x7f)
        .map(|i| base + i)
}

fn header_value(v: &[u8]) -> Option<&str> {
    std::str::from_utf8(v).ok().map(str::trim)
}

fn version_str(v: Option<u8>) -> &'static str {
    if v == Some(0) { "1.0" } else { "1.1" }
}

impl Stream {
    fn new(requests: bool) -> Self {
        Stream {
            requests,
            buf: Vec::new(),
            gap: 0,
            ts: 0,
            head_ts: None,
            seg_start: false,
            state: State::Head,
            body_bytes: 0,
            desyncs: 0,
        }
    }

    fn push(&mut self, seg: Segment<'_>) {
        if self.gap > 0 {
            // The previous segment's uncaptured tail was never consumed: the
            // parser stopped following it.
            self.gap = 0;
        }
        self.buf.extend_from_slice(seg.data);
        self.gap = seg.gap;
        self.ts = seg.ts_ns;
        self.seg_start = true;
    }

    /// Drops the first `n` buffered bytes. Usually they are all of them
    /// (a head or body that ended with its segment): then a `clear`, not
    /// a `drain`, whose drop was ~100 instructions per request (callgrind,
    /// session 25).
    fn discard(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }

    /// Consumes up to `n` bytes, known bytes first, then the gap.
    fn consume(&mut self, n: u64) -> u64 {
        let from_buf = (self.buf.len() as u64).min(n);
        self.discard(from_buf as usize);
        let from_gap = self.gap.min(n - from_buf);
        self.gap -= from_gap;
        from_buf + from_gap
    }

    fn desync(&mut self) {
        self.desyncs += 1;
        self.state = State::Desync;
        self.buf.clear();
        self.gap = 0;
        self.head_ts = None;
    }

    fn starts_message(&self) -> bool {
        if self.requests {
            looks_like_request(&self.buf)
        } else {
            looks_like_response(&self.buf)
        }
    }

    fn end(&mut self) -> MsgEvent {
        self.state = State::Head;
        let body_bytes = std::mem::take(&mut self.body_bytes);
        MsgEvent::End {
            ts: self.ts,
            body_bytes,
        }
    }

    /// Advances by at most one message event. `head_request` tells a response
    /// stream whether the request it answers was a HEAD (no body follows).
    fn poll(&mut self, head_request: bool) -> Option<MsgEvent> {
        loop {
            let seg_start = std::mem::replace(&mut self.seg_start, false);
            match self.state {
                State::Desync => {
                    if seg_start && self.starts_message() {
                        self.state = State::Head;
                        continue;
                    }
                    self.buf.clear();
                    self.gap = 0;
                    return None;
                }
                State::Head => {
                    if self.buf.is_empty() {
                        if self.gap > 0 {
                            self.desync();
                        }
                        return None;
                    }
                    let ts = *self.head_ts.get_or_insert(self.ts);
                    return match self.parse_head(head_request) {
                        Ok(Some((head, n, mode))) => {
                            self.discard(n);
                            self.head_ts = None;
                            self.body_bytes = 0;
                            self.state = match mode {
                                BodyMode::Empty => State::Body(0),
                                BodyMode::Length(n) => State::Body(n),
                                BodyMode::Chunked => State::Chunked(Chunk::Size),
                                BodyMode::UntilClose => State::UntilClose,
                            };
                            if head.status == 101 {
                                // Upgraded (WebSocket, h2c): no longer HTTP/1.
                                self.state = State::Desync;
                            }
                            Some(MsgEvent::Head { head, ts })
                        }
                        Ok(None) if self.gap > 0 || self.buf.len() > MAX_BUFFERED => {
                            // The head is longer than what was captured: keep
                            // the first line, give up on the rest.
                            let head = self.partial_head();
                            self.desync();
                            head.map(|head| MsgEvent::Head { head, ts })
                        }
                        Ok(None) => None,
                        Err(()) => {
                            self.desync();
                            None
                        }
                    };
                }
                State::Body(remaining) => {
                    if remaining == 0 {
                        return Some(self.end());
                    }
                    let n = self.consume(remaining);
                    self.body_bytes += n;
                    if n == remaining {
                        return Some(self.end());
                    }
                    self.state = State::Body(remaining - n);
                    return None;
                }
                State::UntilClose => {
                    let n = self.consume(u64::MAX);
                    self.body_bytes += n;
                    return None;
                }
                State::Chunked(c) => match self.chunk_step(c) {
                    ChunkStep::Continue => continue,
                    ChunkStep::Wait => return None,
                    ChunkStep::Done => return Some(self.end()),
                    ChunkStep::Lost => {
                        // The end is somewhere in bytes we did not capture;
                        // this segment is the best estimate of it.
                        let end = self.end();
                        self.desync();
                        return Some(end);
                    }
                },
            }
        }
    }

    fn chunk_step(&mut self, c: Chunk) -> ChunkStep {
        match c {
            Chunk::Size | Chunk::Trailer => {
                let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") else {
                    if self.gap > 0 || self.buf.len() > 1024 {
                        return ChunkStep::Lost;
                    }
                    return ChunkStep::Wait;
                };
                let line: Vec<u8> = self.buf.drain(..pos + 2).take(pos).collect();
                if c == Chunk::Trailer {
                    if line.is_empty() {
                        return ChunkStep::Done;
                    }
                    return ChunkStep::Continue;
                }
                let hex: &[u8] = line.split(|b| *b == b';').next().unwrap_or(&[]);
                let Some(size) = std::str::from_utf8(hex)
                    .ok()
                    .and_then(|s| u64::from_str_radix(s.trim(), 16).ok())
                else {
                    return ChunkStep::Lost;
                };
                self.state = State::Chunked(if size == 0 {
                    Chunk::Trailer
                } else {
                    Chunk::Data(size)
                });
                ChunkStep::Continue
            }
            Chunk::Data(remaining) => {
                let n = self.consume(remaining);
                self.body_bytes += n;
                if n == remaining {
                    self.state = State::Chunked(Chunk::DataCrlf(2));
                    ChunkStep::Continue
                } else {
                    self.state = State::Chunked(Chunk::Data(remaining - n));
                    ChunkStep::Wait
                }
            }
            Chunk::DataCrlf(left) => {
                let n = self.consume(u64::from(left)) as u8;
                if n == left {
                    self.state = State::Chunked(Chunk::Size);
                    ChunkStep::Continue
                } else {
                    self.state = State::Chunked(Chunk::DataCrlf(left - n));
                    ChunkStep::Wait
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn parse_head(&self, head_request: bool) -> Result<Option<(Head, usize, BodyMode)>, ()> {
        // Uninitialised: zeroing 96 headers (3 KiB) per message showed up
        // in the agent's profile; httparse writes only what it returns.
        let mut headers =
            [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_HEADERS];
        let config = httparse::ParserConfig::default();
        let mut head = Head::default();
        let (mut method, mut target) = ("", "");
        let (n, hdrs): (usize, &[httparse::Header<'_>]) = if self.requests {
            let mut req = httparse::Request::new(&mut []);
            match config.parse_request_with_uninit_headers(&mut req, &self.buf, &mut headers) {
                Ok(httparse::Status::Complete(n)) => {
                    method = req.method.unwrap_or_default();
                    target = req.path.unwrap_or_default();
                    head.version = version_str(req.version);
                    (n, req.headers)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            }
        } else if let Some(fast) = plain_response_head(&self.buf) {
            // The common strict form, parsed without httparse; it gives
            // exactly what httparse would (see `plain_response_head`).
            head.status = fast.status;
            head.version = version_str(Some(fast.minor));
            let mode = body_mode(false, head_request, fast.status, fast.framing);
            return Ok(Some((head, fast.len, mode)));
        } else {
            let mut resp = httparse::Response::new(&mut []);
            match config.parse_response_with_uninit_headers(&mut resp, &self.buf, &mut headers) {
                Ok(httparse::Status::Complete(n)) => {
                    head.status = resp.code.unwrap_or_default();
                    head.version = version_str(resp.version);
                    (n, resp.headers)
                }
                Ok(httparse::Status::Partial) => return Ok(None),
                Err(_) => return Err(()),
            }
        };
        let mut framing = Framing::default();
        let (mut host, mut user_agent, mut traceparent) = (None, None, None);
        for h in hdrs {
            let name = h.name;
            if framing.header(name.as_bytes(), h.value) {
                continue;
            }
            if name.eq_ignore_ascii_case("host") {
                host = header_value(h.value);
            } else if name.eq_ignore_ascii_case("user-agent") {
                user_agent = header_value(h.value);
            } else if name.eq_ignore_ascii_case("traceparent") {
                traceparent = header_value(h.value);
            }
        }
        if self.requests {
            head.request = RequestText::new(method, target, host, user_agent, traceparent);
        }
        let mode = body_mode(self.requests, head_request, head.status, framing);
        Ok(Some((head, n, mode)))
    }

    /// The first line of a head whose remainder was not captured.
    fn partial_head(&self) -> Option<Head> {
        let end = self.buf.windows(2).position(|w| w == b"\r\n")?;
        let line = std::str::from_utf8(&self.buf[..end]).ok()?;
        let mut parts = line.splitn(3, ' ');
        let (a, b, c) = (parts.next()?, parts.next()?, parts.next());
        let mut head = Head::default();
        if self.requests {
            head.request = RequestText::new(a, b, None, None, None);
            head.version = if c == Some("HTTP/1.0") { "1.0" } else { "1.1" };
        } else {
            head.version = if a == "HTTP/1.0" { "1.0" } else { "1.1" };
            head.status = b.parse().ok()?;
        }
        Some(head)
    }
}

enum ChunkStep {
    Continue,
    Wait,
    Done,
    Lost,
}

#[derive(Debug)]
struct Pending {
    head: Head,
    start_ns: u64,
    body_bytes: u64,
}

/// Both directions of one HTTP/1 connection, matched in order (pipelining).
#[derive(Debug)]
pub struct Http1Conn {
    requests: Stream,
    responses: Stream,
    pending: VecDeque<Pending>,
    response: Option<Head>,
    overflow: u64,
}

impl Default for Http1Conn {
    fn default() -> Self {
        Http1Conn {
            requests: Stream::new(true),
            responses: Stream::new(false),
            pending: VecDeque::new(),
            response: None,
            overflow: 0,
        }
    }
}

impl Http1Conn {
    fn finish(&mut self, ts: u64, body_bytes: u64, out: &mut Vec<Exchange>) {
        let Some(resp) = self.response.take() else {
            return;
        };
        if (100..200).contains(&resp.status) && resp.status != 101 {
            // An interim response (100 Continue): the real one follows.
            return;
        }
        let Some(req) = self.pending.pop_front() else {
            return;
        };
        out.push(Exchange {
            start_ns: req.start_ns,
            end_ns: ts.max(req.start_ns),
            detail: Detail::Http(HttpExchange {
                request: req.head.request,
                status: resp.status,
                version: req.head.version,
                request_body_size: req.body_bytes,
                response_body_size: body_bytes,
            }),
        });
    }
}

impl ConnParser for Http1Conn {
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>) {
        if from_client {
            self.requests.push(seg);
            while let Some(ev) = self.requests.poll(false) {
                match ev {
                    MsgEvent::Head { head, ts } => {
                        if self.pending.len() >= MAX_PENDING {
                            self.pending.pop_front();
                            self.overflow += 1;
                        }
                        self.pending.push_back(Pending {
                            head,
                            start_ns: ts,
                            body_bytes: 0,
                        });
                    }
                    MsgEvent::End { body_bytes, .. } => {
                        if let Some(p) = self.pending.back_mut() {
                            p.body_bytes = body_bytes;
                        }
                    }
                }
            }
        } else {
            self.responses.push(seg);
            loop {
                let head_request = self
                    .pending
                    .front()
                    .is_some_and(|p| p.head.request.get(p.head.request.method) == "HEAD");
                let Some(ev) = self.responses.poll(head_request) else {
                    break;
                };
                match ev {
                    MsgEvent::Head { head, .. } => self.response = Some(head),
                    MsgEvent::End { ts, body_bytes } => self.finish(ts, body_bytes, out),
                }
            }
        }
    }

    fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>) {
        if self.responses.state == State::UntilClose {
            let body = self.responses.body_bytes;
            let ts = if self.responses.ts > 0 {
                self.responses.ts
            } else {
                ts_ns
            };
            self.finish(ts, body, out);
        }
    }

    fn desyncs(&self) -> u64 {
        self.requests.desyncs + self.responses.desyncs + self.overflow
    }
}

#[cfg(test)]
mod tests;
