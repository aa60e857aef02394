//! Protocol parsers: byte streams of one connection in, request/response
//! exchanges out. Parsers never fail outright: on bytes they cannot follow
//! they count the problem and resynchronise at the next message boundary.
//!
//! Input arrives as [`Segment`]s: what one syscall moved. The kernel copies
//! only a prefix of each, so a segment is `data` followed by `gap` bytes that
//! were moved but not captured.
pub mod http1;
pub mod http2;
pub mod mysql;
pub mod postgres;
pub mod redis;
pub mod sql;

use crate::ebpf::event::Direction;

/// One syscall's worth of a stream.
#[derive(Debug, Clone, Copy)]
pub struct Segment<'a> {
    pub ts_ns: u64,
    pub data: &'a [u8],
    /// Bytes moved after `data` that were not captured.
    pub gap: u64,
}

/// Application protocols the agent understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Http1,
    Http2,
    Redis,
    Postgres,
    /// From the client's handshake response.
    MySql,
    /// From a command on a connection joined midway.
    MySqlCommand,
}

/// Which protocol a connection speaks, guessed from the first bytes the client
/// sent. `None` means "not recognised (yet)".
pub fn detect(client_bytes: &[u8]) -> Option<Protocol> {
    if http2::looks_like_preface(client_bytes) {
        Some(Protocol::Http2)
    } else if http1::looks_like_request(client_bytes) {
        Some(Protocol::Http1)
    } else if redis::looks_like_command(client_bytes) {
        Some(Protocol::Redis)
    } else if postgres::looks_like_startup(client_bytes) {
        Some(Protocol::Postgres)
    } else if mysql::looks_like_handshake_response(client_bytes) {
        Some(Protocol::MySql)
    } else if mysql::looks_like_command(client_bytes) {
        Some(Protocol::MySqlCommand)
    } else {
        None
    }
}

/// Which protocol a connection speaks, guessed from the first bytes the
/// server sent, for protocols whose server speaks first (MySQL's greeting).
pub fn detect_server_greeting(server_bytes: &[u8]) -> Option<Protocol> {
    mysql::looks_like_greeting(server_bytes).then_some(Protocol::MySql)
}

/// A completed request/response pair, ready to become a span.
#[derive(Debug, Clone, PartialEq)]
pub struct Exchange {
    /// Monotonic ns of the first request byte and of the last response byte.
    pub start_ns: u64,
    pub end_ns: u64,
    pub detail: Detail,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Detail {
    Http(http1::HttpExchange),
    Http2(http2::H2Exchange),
    Redis(redis::RedisExchange),
    Postgres(postgres::PgExchange),
    MySql(sql::SqlExchange),
}

/// A per-connection parser of both directions.
pub trait ConnParser: Send {
    /// Feeds what the client sent (`Direction` is from the client's view
    /// translated by the caller: `Egress` = client → server).
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>);
    /// The connection closed at `ts_ns`: flush what a close completes.
    fn close(&mut self, ts_ns: u64, out: &mut Vec<Exchange>);
    /// Bytes the parser could not follow (for self-metrics).
    fn desyncs(&self) -> u64;
}

/// Maps the kernel's direction to "sent by the client" for a given role.
pub fn from_client(direction: Direction, we_are_server: bool) -> bool {
    matches!(
        (direction, we_are_server),
        (Direction::Ingress, true) | (Direction::Egress, false)
    )
}

/// Upper bound on bytes a parser buffers while waiting for a message head.
pub const MAX_BUFFERED: usize = 16 * 1024;
