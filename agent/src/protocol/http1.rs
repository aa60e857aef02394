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

    /// Consumes up to `n` bytes, known bytes first, then the gap.
    fn consume(&mut self, n: u64) -> u64 {
        let from_buf = (self.buf.len() as u64).min(n);
        self.buf.drain(..from_buf as usize);
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
                            self.buf.drain(..n);
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
        let mut length = None;
        let mut chunked = false;
        let (mut host, mut user_agent, mut traceparent) = (None, None, None);
        for h in hdrs {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                length = std::str::from_utf8(h.value)
                    .ok()
                    .and_then(|v| v.trim().parse::<u64>().ok());
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                let v = h.value.trim_ascii_end();
                chunked = v.len() >= 7 && v[v.len() - 7..].eq_ignore_ascii_case(b"chunked");
            } else if name.eq_ignore_ascii_case("host") {
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
        let no_body = !self.requests
            && (head_request
                || (100..200).contains(&head.status)
                || matches!(head.status, 204 | 304));
        let mode = if no_body {
            BodyMode::Empty
        } else if chunked {
            BodyMode::Chunked
        } else if let Some(n) = length {
            BodyMode::Length(n)
        } else if self.requests {
            BodyMode::Empty
        } else {
            BodyMode::UntilClose
        };
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
