//! HTTP/2 (RFC 9113) with HPACK (RFC 7541), and gRPC on top of it: frames
//! are followed per direction, header blocks decoded in order (the dynamic
//! table depends on every block), one exchange per stream.
use std::collections::HashMap;

use loona_hpack::Decoder;

use super::{ConnParser, Detail, Exchange, MAX_BUFFERED, Segment};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const FRAME_HEADER: usize = 9;
/// Streams followed at once per connection.
const MAX_STREAMS: usize = 1024;
/// Largest header block kept (HEADERS + CONTINUATION).
const MAX_HEADER_BLOCK: usize = 64 * 1024;

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const RST_STREAM: u8 = 3;
const CONTINUATION: u8 = 9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

pub fn looks_like_preface(b: &[u8]) -> bool {
    let n = b.len().min(PREFACE.len());
    n >= 8 && b[..n] == PREFACE[..n]
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct H2Exchange {
    pub method: String,
    pub path: String,
    pub authority: Option<String>,
    pub content_type: Option<String>,
    pub traceparent: Option<String>,
    pub user_agent: Option<String>,
    /// 0 when the response head was not seen (stream reset).
    pub status: u16,
    /// From the trailers (or a trailers-only response).
    pub grpc_status: Option<i64>,
    pub grpc_message: Option<String>,
    pub reset: bool,
}

impl H2Exchange {
    pub fn is_grpc(&self) -> bool {
        self.content_type
            .as_deref()
            .is_some_and(|c| c.starts_with("application/grpc"))
    }
}

/// What one direction yields.
#[derive(Debug)]
enum FrameEvent {
    Headers {
        stream: u32,
        fields: Vec<(Vec<u8>, Vec<u8>)>,
        end_stream: bool,
    },
    EndStream {
        stream: u32,
    },
    Reset {
        stream: u32,
    },
}

struct Direction {
    needs_preface: bool,
    buf: Vec<u8>,
    /// Payload bytes of the current frame still to skip (not captured or not
    /// needed: DATA).
    skip: u64,
    skip_end: Option<u32>,
    block: Vec<u8>,
    block_stream: u32,
    block_end_stream: bool,
    hpack: Decoder<'static>,
    dead: bool,
    desyncs: u64,
}

impl Direction {
    fn new(needs_preface: bool) -> Self {
        Direction {
            needs_preface,
            buf: Vec::new(),
            skip: 0,
            skip_end: None,
            block: Vec::new(),
            block_stream: 0,
            block_end_stream: false,
            hpack: Decoder::new(),
            dead: false,
            desyncs: 0,
        }
    }

    fn kill(&mut self) {
        // HPACK state cannot be recovered once a header block is missed.
        self.dead = true;
        self.desyncs += 1;
        self.buf.clear();
    }

    fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<FrameEvent>) {
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
            self.skip -= g;
            gap -= g;
            if self.skip == 0
                && let Some(stream) = self.skip_end.take()
            {
                out.push(FrameEvent::EndStream { stream });
            }
        }
        self.buf.extend_from_slice(data);
        if self.needs_preface {
            if self.buf.len() < PREFACE.len() {
                if gap > 0 || !PREFACE.starts_with(&self.buf) {
                    self.kill();
                }
                return;
            }
            if !self.buf.starts_with(PREFACE) {
                self.kill();
                return;
            }
            self.buf.drain(..PREFACE.len());
            self.needs_preface = false;
        }
        let buf = std::mem::take(&mut self.buf);
        let mut at = 0;
        while buf.len() - at >= FRAME_HEADER {
            let h = &buf[at..at + FRAME_HEADER];
            let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
            let (ty, flags) = (h[3], h[4]);
            let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
            let start = at + FRAME_HEADER;
            let have = buf.len() - start;
            if have < len {
                if ty == DATA && gap > 0 {
                    // DATA payload is never needed: skip it by length.
                    let missing = (len - have) as u64;
                    let g = gap.min(missing);
                    gap -= g;
                    self.skip = missing - g;
                    if flags & END_STREAM != 0 {
                        if self.skip == 0 {
                            out.push(FrameEvent::EndStream { stream });
                        } else {
                            self.skip_end = Some(stream);
                        }
                    }
                    at = buf.len();
                    break;
                }
                if gap > 0 || len > MAX_HEADER_BLOCK.max(MAX_BUFFERED) {
                    if ty == DATA || ty == HEADERS || ty == CONTINUATION {
                        self.kill();
                        return;
                    }
                    // A control frame we do not read: skip it.
                    let missing = (len - have) as u64;
                    let g = gap.min(missing);
                    gap -= g;
                    self.skip = missing - g;
                    at = buf.len();
                    break;
                }
                break;
            }
            let payload = &buf[start..start + len];
            at = start + len;
            match ty {
                DATA if flags & END_STREAM != 0 => out.push(FrameEvent::EndStream { stream }),
                HEADERS => {
                    let mut p = payload;
                    let mut pad = 0usize;
                    if flags & PADDED != 0 {
                        let Some((&n, rest)) = p.split_first() else {
                            self.kill();
                            return;
                        };
                        pad = usize::from(n);
                        p = rest;
                    }
                    if flags & PRIORITY != 0 {
                        if p.len() < 5 {
                            self.kill();
                            return;
                        }
                        p = &p[5..];
                    }
                    if pad > p.len() {
                        self.kill();
                        return;
                    }
                    self.block.clear();
                    self.block.extend_from_slice(&p[..p.len() - pad]);
                    self.block_stream = stream;
                    self.block_end_stream = flags & END_STREAM != 0;
                    if flags & END_HEADERS != 0 && !self.finish_block(out) {
                        return;
                    }
                }
                CONTINUATION => {
                    if stream != self.block_stream
                        || self.block.len() + payload.len() > MAX_HEADER_BLOCK
                    {
                        self.kill();
                        return;
                    }
                    self.block.extend_from_slice(payload);
                    if flags & END_HEADERS != 0 && !self.finish_block(out) {
                        return;
                    }
                }
                RST_STREAM => out.push(FrameEvent::Reset { stream }),
                _ => {}
            }
        }
        self.buf = buf[at..].to_vec();
        if gap > 0 && self.skip == 0 {
            // Uncaptured bytes at a frame boundary: framing is lost.
            self.kill();
        }
    }

    fn finish_block(&mut self, out: &mut Vec<FrameEvent>) -> bool {
        let mut fields = Vec::new();
        let block = std::mem::take(&mut self.block);
        let ok = self
            .hpack
            .decode_with_cb(&block, |n, v| {
                if fields.len() < 128 {
                    fields.push((n.into_owned(), v.into_owned()));
                }
            })
            .is_ok();
        if !ok {
            self.kill();
            return false;
        }
        out.push(FrameEvent::Headers {
            stream: self.block_stream,
            fields,
            end_stream: self.block_end_stream,
        });
        true
    }
}

struct StreamState {
    start_ns: u64,
    ex: H2Exchange,
    response_headers_seen: bool,
}

pub struct Http2Conn {
    client: Direction,
    server: Direction,
    streams: HashMap<u32, StreamState>,
    overflow: u64,
}

impl Default for Http2Conn {
    fn default() -> Self {
        Http2Conn {
            client: Direction::new(true),
            server: Direction::new(false),
            streams: HashMap::new(),
            overflow: 0,
        }
    }
}

fn text(v: &[u8]) -> String {
    String::from_utf8_lossy(v).into_owned()
}

impl Http2Conn {
    fn complete(&mut self, stream: u32, ts: u64, out: &mut Vec<Exchange>) {
        if let Some(s) = self.streams.remove(&stream) {
            out.push(Exchange {
                start_ns: s.start_ns,
                end_ns: ts.max(s.start_ns),
                detail: Detail::Http2(s.ex),
            });
        }
    }
}

impl ConnParser for Http2Conn {
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>) {
        let ts = seg.ts_ns;
        let mut events = Vec::new();
        if from_client {
            self.client.feed(seg, &mut events);
            for ev in events {
                match ev {
                    FrameEvent::Headers { stream, fields, .. } => {
                        if self.streams.contains_key(&stream) {
                            continue; // request trailers
                        }
                        if self.streams.len() >= MAX_STREAMS {
                            self.overflow += 1;
                            continue;
                        }
                        let mut ex = H2Exchange::default();
                        for (n, v) in fields {
                            match n.as_slice() {
                                b":method" => ex.method = text(&v),
                                b":path" => ex.path = text(&v),
                                b":authority" => ex.authority = Some(text(&v)),
                                b"content-type" => ex.content_type = Some(text(&v)),
                                b"traceparent" => ex.traceparent = Some(text(&v)),
                                b"user-agent" => ex.user_agent = Some(text(&v)),
                                _ => {}
                            }
                        }
                        self.streams.insert(
                            stream,
                            StreamState {
                                start_ns: ts,
                                ex,
                                response_headers_seen: false,
                            },
                        );
                    }
                    FrameEvent::Reset { stream } => {
                        if let Some(s) = self.streams.get_mut(&stream) {
                            s.ex.reset = true;
                        }
                        self.complete(stream, ts, out);
                    }
                    FrameEvent::EndStream { .. } => {}
                }
            }
        } else {
            self.server.feed(seg, &mut events);
            for ev in events {
                match ev {
                    FrameEvent::Headers {
                        stream,
                        fields,
                        end_stream,
                    } => {
                        if let Some(s) = self.streams.get_mut(&stream) {
                            for (n, v) in fields {
                                match n.as_slice() {
                                    b":status" => s.ex.status = text(&v).parse().unwrap_or(0),
                                    b"grpc-status" => s.ex.grpc_status = text(&v).parse().ok(),
                                    b"grpc-message" => s.ex.grpc_message = Some(text(&v)),
                                    b"content-type" if s.ex.content_type.is_none() => {
                                        s.ex.content_type = Some(text(&v))
                                    }
                                    _ => {}
                                }
                            }
                            s.response_headers_seen = true;
                        }
                        if end_stream {
                            self.complete(stream, ts, out);
                        }
                    }
                    FrameEvent::EndStream { stream } => self.complete(stream, ts, out),
                    FrameEvent::Reset { stream } => {
                        if let Some(s) = self.streams.get_mut(&stream) {
                            s.ex.reset = true;
                        }
                        self.complete(stream, ts, out);
                    }
                }
            }
        }
    }

    fn close(&mut self, _ts_ns: u64, _out: &mut Vec<Exchange>) {}

    fn desyncs(&self) -> u64 {
        self.client.desyncs + self.server.desyncs + self.overflow
    }
}

#[cfg(test)]
mod tests;
