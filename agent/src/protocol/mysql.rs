//! MySQL/MariaDB client/server protocol: the handshake (to learn the
//! client's capabilities and to step aside when it switches to TLS), then
//! one command at a time: `COM_QUERY` and prepared statements
//! (`COM_STMT_PREPARE`, `COM_STMT_EXECUTE`) become exchanges, other commands
//! are followed so that their replies are not taken for a statement's.
//!
//! Packets are `len:3 LE, seq:1, payload`; a command starts a sequence
//! (seq 0). A statement's reply ends with an OK, an ERR, or a result set's
//! closing EOF/OK (`0xFE`), unless its status says more results follow
//! (MySQL documentation, "Client/Server Protocol": "COM_QUERY Response",
//! "Text Resultset", "COM_STMT_PREPARE Response"; MariaDB's server code,
//! sql/protocol.cc, writes the same packets).
use std::collections::{HashMap, VecDeque};

use super::{
    ConnParser, Detail, Exchange, MAX_BUFFERED, Segment,
    sql::{Dialect, SqlExchange, clip, operation, sanitize, sanitize_unless_parameterized},
};

const COM_QUIT: u8 = 0x01;
const COM_QUERY: u8 = 0x03;
const COM_STMT_PREPARE: u8 = 0x16;
const COM_STMT_EXECUTE: u8 = 0x17;
const COM_STMT_SEND_LONG_DATA: u8 = 0x18;
const COM_STMT_CLOSE: u8 = 0x19;

const CLIENT_PROTOCOL_41: u32 = 0x0200;
const CLIENT_SSL: u32 = 0x0800;
const CLIENT_DEPRECATE_EOF: u32 = 1 << 24;
const SERVER_MORE_RESULTS_EXISTS: u16 = 0x0008;
/// MariaDB's "the statement prepared last" id for COM_STMT_EXECUTE sent
/// right behind its COM_STMT_PREPARE.
const LAST_PREPARED: u32 = 0xFFFF_FFFF;
const MAX_PACKET: u32 = 0xFF_FFFF;
const MAX_PENDING: usize = 64;
const MAX_STATEMENTS: usize = 256;

/// A client's HandshakeResponse41 (or the SSLRequest that precedes it under
/// TLS): sequence 1 (2 after an SSLRequest), PROTOCOL_41 capabilities and
/// the 19 filler bytes that are zero for MySQL and MariaDB clients alike
/// (MariaDB puts its own capabilities in the last 4 of the 23).
pub fn looks_like_handshake_response(b: &[u8]) -> bool {
    if b.len() < 4 + 32 {
        return false;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], 0]);
    let p = &b[4..];
    let caps = u32::from_le_bytes([p[0], p[1], p[2], p[3]]);
    (32..=MAX_PACKET).contains(&len)
        && matches!(b[3], 1 | 2)
        && caps & CLIENT_PROTOCOL_41 != 0
        && p[9..28].iter().all(|c| *c == 0)
}

/// The server's Initial Handshake packet (protocol version 10): sequence 0,
/// a printable server version ending in NUL, then thread id (4 bytes), the
/// first 8 bytes of the scramble and a zero filler. Servers write it whole.
pub fn looks_like_greeting(b: &[u8]) -> bool {
    if b.len() < 4 + 1 + 2 + 13 {
        return false;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize;
    if len + 4 != b.len() || b[3] != 0 || b[4] != 10 {
        return false;
    }
    let version = &b[5..];
    let Some(nul) = version.iter().position(|c| *c == 0) else {
        return false;
    };
    nul > 0
        && version[..nul].iter().all(|c| c.is_ascii_graphic())
        && version.get(nul + 13) == Some(&0)
}

/// A lone COM_QUERY or COM_STMT_PREPARE on a connection joined midway: the
/// whole packet in one segment, its text starting like a statement.
pub fn looks_like_command(b: &[u8]) -> bool {
    if b.len() < 6 {
        return false;
    }
    let len = u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize;
    len + 4 == b.len()
        && b[3] == 0
        && matches!(b[4], COM_QUERY | COM_STMT_PREPARE)
        && (b[5].is_ascii_alphabetic() || b[5] == b'(')
        && std::str::from_utf8(&b[5..]).is_ok()
}

#[derive(Debug, Default)]
struct Framer {
    buf: Vec<u8>,
    /// Uncaptured bytes of the current packet still to skip.
    skip: u64,
    dead: bool,
    desyncs: u64,
}

/// One packet: header fields and the captured part of its payload.
struct Packet<'a> {
    len: u32,
    seq: u8,
    payload: &'a [u8],
}

impl Framer {
    fn feed(&mut self, seg: Segment<'_>, mut on_packet: impl FnMut(Packet<'_>)) {
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
        while buf.len() - at >= 4 {
            let len = u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], 0]);
            let seq = buf[at + 3];
            let total = 4 + u64::from(len);
            let have = (buf.len() - at) as u64;
            if have >= total {
                let end = at + total as usize;
                on_packet(Packet {
                    len,
                    seq,
                    payload: &buf[at + 4..end],
                });
                at = end;
            } else if gap > 0 || have > MAX_BUFFERED as u64 {
                // The packet's tail was not captured (or is too big to keep):
                // use its prefix, skip the rest by length.
                on_packet(Packet {
                    len,
                    seq,
                    payload: &buf[at + 4..],
                });
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
            // Uncaptured bytes at a packet boundary: framing is lost.
            self.desyncs += 1;
            self.dead = true;
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the server's OK to the handshake.
    Handshake,
    Command,
    /// Switched to TLS (this stream carries ciphertext now) or the
    /// handshake failed.
    Done,
}

/// Where the reply to the oldest pending command stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    First,
    /// Column definitions still to come.
    Columns(u64),
    /// Column definitions done: an EOF may close them (without
    /// CLIENT_DEPRECATE_EOF), then rows.
    AfterColumns,
    Rows,
    /// Packets of a prepared statement's parameter and column definitions
    /// (and their EOFs) still to come.
    Prepared(u64),
}

#[derive(Debug)]
struct Pending {
    command: u8,
    /// (text for the span, operation); empty for commands that get none.
    query: String,
    operation: String,
    start_ns: u64,
}

#[derive(Debug)]
pub struct MySqlConn {
    client: Framer,
    server: Framer,
    phase: Phase,
    /// From the handshake; `None` when the connection was joined midway.
    deprecate_eof: Option<bool>,
    pending: VecDeque<Pending>,
    reply: Reply,
    /// Statement id → (text, operation).
    statements: HashMap<u32, (String, String)>,
    last_prepared: Option<(String, String)>,
    overflow: u64,
}

impl MySqlConn {
    /// A parser for a connection seen from its handshake.
    pub fn from_handshake() -> MySqlConn {
        MySqlConn::new(Phase::Handshake)
    }

    /// A parser for a connection joined midway, at a command.
    pub fn from_command() -> MySqlConn {
        MySqlConn::new(Phase::Command)
    }

    fn new(phase: Phase) -> MySqlConn {
        MySqlConn {
            client: Framer::default(),
            server: Framer::default(),
            phase,
            deprecate_eof: None,
            pending: VecDeque::new(),
            reply: Reply::First,
            statements: HashMap::new(),
            last_prepared: None,
            overflow: 0,
        }
    }

    fn client_packet(&mut self, p: Packet<'_>, ts: u64) {
        match self.phase {
            Phase::Handshake if p.payload.len() >= 4 => {
                let b = p.payload;
                let caps = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                if caps & CLIENT_PROTOCOL_41 != 0 {
                    self.deprecate_eof = Some(caps & CLIENT_DEPRECATE_EOF != 0);
                }
                // An SSLRequest is the 32-byte head of a response alone:
                // what follows on this stream is ciphertext.
                if caps & CLIENT_SSL != 0 && p.len == 32 {
                    self.phase = Phase::Done;
                }
            }
            Phase::Command if p.seq == 0 => self.command(p.payload, ts),
            // Later packets of a sequence (LOCAL INFILE data, auth data of
            // COM_CHANGE_USER) are not commands.
            _ => {}
        }
    }

    fn command(&mut self, payload: &[u8], ts: u64) {
        let Some((&cmd, body)) = payload.split_first() else {
            return;
        };
        let (query, operation) = match cmd {
            // No reply comes to these.
            COM_QUIT | COM_STMT_CLOSE | COM_STMT_SEND_LONG_DATA => {
                if cmd == COM_STMT_CLOSE && body.len() >= 4 {
                    let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                    self.statements.remove(&id);
                }
                return;
            }
            COM_QUERY => {
                let q = clip(body);
                (sanitize(&q, Dialect::MySql), operation(&q))
            }
            COM_STMT_PREPARE => {
                let q = clip(body);
                (
                    sanitize_unless_parameterized(&q, Dialect::MySql),
                    operation(&q),
                )
            }
            COM_STMT_EXECUTE if body.len() >= 4 => {
                let id = u32::from_le_bytes([body[0], body[1], body[2], body[3]]);
                let known = if id == LAST_PREPARED {
                    self.last_prepared.clone()
                } else {
                    self.statements.get(&id).cloned()
                };
                known.unwrap_or_default()
            }
            _ => (String::new(), String::new()),
        };
        if self.pending.len() >= MAX_PENDING {
            self.pending.pop_front();
            self.reply = Reply::First;
            self.overflow += 1;
        }
        if cmd == COM_STMT_PREPARE {
            self.last_prepared = Some((query.clone(), operation.clone()));
        }
        self.pending.push_back(Pending {
            command: cmd,
            query,
            operation,
            start_ns: ts,
        });
    }

    fn server_packet(&mut self, p: Packet<'_>, ts: u64, out: &mut Vec<Exchange>) {
        let first = p.payload.first().copied();
        if self.phase == Phase::Handshake {
            match first {
                Some(0x00) => self.phase = Phase::Command,
                Some(0xFF) => self.phase = Phase::Done,
                // Greeting, auth switch, auth data: the handshake goes on.
                _ => {}
            }
            return;
        }
        if self.phase != Phase::Command {
            return;
        }
        let Some(command) = self.pending.front().map(|f| f.command) else {
            return;
        };
        let eof = |p: &Packet<'_>| first == Some(0xFE) && p.len < MAX_PACKET;
        match self.reply {
            Reply::First => match first {
                Some(0xFF) => self.finish(Some(error_code(p.payload)), ts, out),
                Some(0x00) if command == COM_STMT_PREPARE => {
                    let b = p.payload;
                    if b.len() < 9 {
                        self.finish(None, ts, out);
                        return;
                    }
                    let id = u32::from_le_bytes([b[1], b[2], b[3], b[4]]);
                    let columns = u64::from(u16::from_le_bytes([b[5], b[6]]));
                    let params = u64::from(u16::from_le_bytes([b[7], b[8]]));
                    if self.statements.len() >= MAX_STATEMENTS {
                        self.statements.clear();
                    }
                    if let Some(f) = self.pending.front() {
                        self.statements
                            .insert(id, (f.query.clone(), f.operation.clone()));
                    }
                    // Without CLIENT_DEPRECATE_EOF an EOF closes each list.
                    let eofs = if self.deprecate_eof == Some(false) {
                        u64::from(params > 0) + u64::from(columns > 0)
                    } else {
                        0
                    };
                    let n = columns + params + eofs;
                    if n == 0 {
                        self.finish(None, ts, out);
                    } else {
                        self.reply = Reply::Prepared(n);
                    }
                }
                Some(0x00) | Some(0xFE) => {
                    let more = ok_status(p.payload) & SERVER_MORE_RESULTS_EXISTS != 0;
                    if !more {
                        self.finish(None, ts, out);
                    }
                }
                // LOCAL INFILE request: the client sends a file, then the
                // server's OK would have nothing to answer. End here.
                Some(0xFB) => self.finish(None, ts, out),
                _ => {
                    let n = lenenc(p.payload).unwrap_or(0);
                    self.reply = if n == 0 {
                        Reply::AfterColumns
                    } else {
                        Reply::Columns(n)
                    };
                }
            },
            Reply::Columns(n) => {
                self.reply = if n <= 1 {
                    Reply::AfterColumns
                } else {
                    Reply::Columns(n - 1)
                };
            }
            Reply::AfterColumns | Reply::Rows => {
                // An EOF packet is 5 bytes; an OK closing a result set under
                // CLIENT_DEPRECATE_EOF is at least 7. So a 5-byte EOF right
                // after the columns is theirs, not the end of the rows.
                if self.reply == Reply::AfterColumns
                    && eof(&p)
                    && p.len == 5
                    && self.deprecate_eof != Some(true)
                {
                    self.deprecate_eof = Some(false);
                    self.reply = Reply::Rows;
                    return;
                }
                self.reply = Reply::Rows;
                if first == Some(0xFF) {
                    self.finish(Some(error_code(p.payload)), ts, out);
                } else if eof(&p) {
                    let status = if p.len == 5 {
                        // EOF: 0xFE, warnings:2, status:2.
                        p.payload
                            .get(3..5)
                            .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
                    } else {
                        ok_status(p.payload)
                    };
                    if status & SERVER_MORE_RESULTS_EXISTS != 0 {
                        self.reply = Reply::First;
                    } else {
                        self.finish(None, ts, out);
                    }
                }
            }
            Reply::Prepared(n) => {
                if n <= 1 {
                    self.finish(None, ts, out);
                } else {
                    self.reply = Reply::Prepared(n - 1);
                }
            }
        }
    }

    fn finish(&mut self, error: Option<String>, ts: u64, out: &mut Vec<Exchange>) {
        self.reply = Reply::First;
        let Some(req) = self.pending.pop_front() else {
            return;
        };
        // Statements become spans; a failed PREPARE too, since nothing
        // else would show it. Pings, USE and the like do not.
        let report = match req.command {
            COM_QUERY | COM_STMT_EXECUTE => true,
            COM_STMT_PREPARE => error.is_some(),
            _ => false,
        };
        if !report {
            return;
        }
        out.push(Exchange {
            start_ns: req.start_ns,
            end_ns: ts.max(req.start_ns),
            detail: Detail::MySql(SqlExchange {
                query: req.query,
                operation: req.operation,
                error_code: error,
                tag: None,
            }),
        });
    }
}

/// A length-encoded integer at the start of `b`.
fn lenenc(b: &[u8]) -> Option<u64> {
    let (&first, rest) = b.split_first()?;
    let n = match first {
        0..=0xFA => return Some(u64::from(first)),
        0xFC => 2,
        0xFD => 3,
        0xFE => 8,
        _ => return None,
    };
    let bytes = rest.get(..n)?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(bytes);
    Some(u64::from_le_bytes(v))
}

fn lenenc_size(b: &[u8]) -> usize {
    match b.first() {
        Some(0xFC) => 3,
        Some(0xFD) => 4,
        Some(0xFE) => 9,
        _ => 1,
    }
}

/// Status flags of an OK packet (`0x00` or `0xFE` header, affected rows and
/// last insert id as length-encoded integers, then status:2).
fn ok_status(b: &[u8]) -> u16 {
    let mut at = 1;
    for _ in 0..2 {
        at += b.get(at..).map_or(1, lenenc_size);
    }
    b.get(at..at + 2)
        .map_or(0, |s| u16::from_le_bytes([s[0], s[1]]))
}

/// The error number of an ERR packet (`0xFF`, code:2 LE, …), as text.
fn error_code(b: &[u8]) -> String {
    match b.get(1..3) {
        Some(c) => u16::from_le_bytes([c[0], c[1]]).to_string(),
        None => String::new(),
    }
}

impl ConnParser for MySqlConn {
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>) {
        let ts = seg.ts_ns;
        // The framer borrows its own buffer; packets are handled after.
        let mut packets: Vec<(u32, u8, Vec<u8>)> = Vec::new();
        let framer = if from_client {
            &mut self.client
        } else {
            &mut self.server
        };
        framer.feed(seg, |p| packets.push((p.len, p.seq, p.payload.to_vec())));
        for (len, seq, payload) in packets {
            let p = Packet {
                len,
                seq,
                payload: &payload,
            };
            if from_client {
                self.client_packet(p, ts);
            } else {
                self.server_packet(p, ts, out);
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
