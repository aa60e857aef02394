//! Redis serialization protocol (RESP2 and RESP3): commands are arrays of
//! bulk strings, every command gets exactly one reply, in order.
use std::collections::VecDeque;

use super::{ConnParser, Detail, Exchange, MAX_BUFFERED, Segment};

const MAX_PENDING: usize = 1024;
/// Nesting deeper than this is not something a real server sends.
const MAX_DEPTH: usize = 16;

pub fn looks_like_command(b: &[u8]) -> bool {
    if b.first() != Some(&b'*') {
        return false;
    }
    let digits = b[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    digits > 0 && b[1 + digits..].starts_with(b"\r\n$")
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RedisExchange {
    /// Upper-cased command name (`GET`, `SET`, …).
    pub command: String,
    /// The reply was an error; its first word (`ERR`, `WRONGTYPE`, …).
    pub error: Option<String>,
}

/// What the parser keeps of one value.
#[derive(Debug, PartialEq, Eq)]
enum Value {
    /// The first few strings of an array (command name first).
    Strings(Vec<String>),
    Error(String),
    Other,
    /// A RESP3 push (pub/sub message): not a reply to a command.
    Push,
}

enum Parse {
    Done(Value, usize),
    Incomplete,
    Invalid,
}

fn line(b: &[u8], at: usize) -> Option<(&[u8], usize)> {
    let rest = b.get(at..)?;
    let end = rest.windows(2).position(|w| w == b"\r\n")?;
    Some((&rest[..end], at + end + 2))
}

fn int(b: &[u8]) -> Option<i64> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// Parses one value at `at`. Keeps at most the first strings of an array.
fn parse(b: &[u8], at: usize, depth: usize) -> Parse {
    if depth > MAX_DEPTH {
        return Parse::Invalid;
    }
    let Some(&t) = b.get(at) else {
        return Parse::Incomplete;
    };
    let Some((l, next)) = line(b, at + 1) else {
        return if b.len() - at > MAX_BUFFERED {
            Parse::Invalid
        } else {
            Parse::Incomplete
        };
    };
    match t {
        b'+' | b':' | b',' | b'#' | b'(' | b'_' => Parse::Done(Value::Other, next),
        b'-' => {
            let word = String::from_utf8_lossy(l.split(|c| *c == b' ').next().unwrap_or(&[]));
            Parse::Done(Value::Error(word.into_owned()), next)
        }
        b'$' | b'!' | b'=' => {
            let Some(n) = int(l) else {
                return Parse::Invalid;
            };
            if n < 0 {
                return Parse::Done(Value::Other, next);
            }
            let Some(end) = next.checked_add(n as usize).filter(|e| *e < usize::MAX - 2) else {
                return Parse::Invalid;
            };
            if b.len() < end + 2 {
                return Parse::Incomplete;
            }
            if &b[end..end + 2] != b"\r\n" {
                return Parse::Invalid;
            }
            if t == b'!' {
                let word = String::from_utf8_lossy(
                    b[next..end].split(|c| *c == b' ').next().unwrap_or(&[]),
                );
                return Parse::Done(Value::Error(word.into_owned()), end + 2);
            }
            Parse::Done(
                Value::Strings(vec![String::from_utf8_lossy(&b[next..end]).into_owned()]),
                end + 2,
            )
        }
        b'*' | b'~' | b'%' | b'>' | b'|' => {
            let Some(n) = int(l) else {
                return Parse::Invalid;
            };
            if n < 0 {
                return Parse::Done(Value::Other, next);
            }
            let count = if matches!(t, b'%' | b'|') {
                n.saturating_mul(2)
            } else {
                n
            };
            if count > 1_000_000 {
                return Parse::Invalid;
            }
            let mut pos = next;
            let mut strings = Vec::new();
            for _ in 0..count {
                match parse(b, pos, depth + 1) {
                    Parse::Done(v, p) => {
                        if let Value::Strings(mut s) = v
                            && strings.len() < 2
                        {
                            strings.append(&mut s);
                        }
                        pos = p;
                    }
                    other => return other,
                }
            }
            if t == b'|' {
                // An attribute precedes the real value.
                return parse(b, pos, depth + 1);
            }
            let v = if t == b'>' {
                Value::Push
            } else {
                Value::Strings(strings)
            };
            Parse::Done(v, pos)
        }
        _ => Parse::Invalid,
    }
}

#[derive(Debug, Default)]
struct Stream {
    buf: Vec<u8>,
    desyncs: u64,
}

impl Stream {
    /// Appends a segment and returns the complete values it finishes.
    fn feed(&mut self, seg: Segment<'_>, out: &mut Vec<Value>) {
        let waiting = !self.buf.is_empty();
        self.buf.extend_from_slice(seg.data);
        // Every RESP value ends with CRLF: a value still incomplete cannot
        // have completed unless this segment brought a '\n'. Skipping the
        // re-parse keeps a large value arriving in small reads from costing
        // quadratic time.
        if waiting && seg.gap == 0 && !seg.data.contains(&b'\n') && self.buf.len() <= MAX_BUFFERED {
            return;
        }
        let mut at = 0;
        loop {
            match parse(&self.buf, at, 0) {
                Parse::Done(v, next) => {
                    out.push(v);
                    at = next;
                }
                Parse::Incomplete if seg.gap == 0 && self.buf.len() - at <= MAX_BUFFERED => break,
                Parse::Incomplete => {
                    // The rest of this value was not captured: count it as
                    // one value and start afresh with the next segment.
                    if at < self.buf.len() {
                        out.push(partial(&self.buf[at..]));
                    }
                    at = self.buf.len();
                    break;
                }
                Parse::Invalid => {
                    self.desyncs += 1;
                    at = self.buf.len();
                    break;
                }
            }
        }
        self.buf.drain(..at);
    }
}

/// Best reading of a value whose tail is missing.
fn partial(b: &[u8]) -> Value {
    match b.first() {
        Some(b'-') | Some(b'!') => Value::Error(
            String::from_utf8_lossy(
                b[1..]
                    .split(|c| *c == b' ' || *c == b'\r')
                    .next()
                    .unwrap_or(&[]),
            )
            .into_owned(),
        ),
        Some(b'*') => {
            // The command name is the first bulk string, usually captured.
            let name = line(b, 0)
                .and_then(|(_, p)| line(b, p))
                .and_then(|(_, p)| line(b, p))
                .map(|(s, _)| String::from_utf8_lossy(s).into_owned());
            Value::Strings(name.into_iter().collect())
        }
        _ => Value::Other,
    }
}

#[derive(Debug, Default)]
pub struct RedisConn {
    commands: Stream,
    replies: Stream,
    pending: VecDeque<(String, u64)>,
    overflow: u64,
}

impl ConnParser for RedisConn {
    fn feed(&mut self, from_client: bool, seg: Segment<'_>, out: &mut Vec<Exchange>) {
        let mut values = Vec::new();
        if from_client {
            self.commands.feed(seg, &mut values);
            for v in values {
                let name = match v {
                    Value::Strings(s) => s
                        .into_iter()
                        .next()
                        .unwrap_or_default()
                        .to_ascii_uppercase(),
                    _ => continue,
                };
                if self.pending.len() >= MAX_PENDING {
                    self.pending.pop_front();
                    self.overflow += 1;
                }
                self.pending.push_back((name, seg.ts_ns));
            }
        } else {
            self.replies.feed(seg, &mut values);
            for v in values {
                if v == Value::Push {
                    continue;
                }
                let Some((command, start_ns)) = self.pending.pop_front() else {
                    continue;
                };
                let error = match v {
                    Value::Error(e) => Some(e),
                    _ => None,
                };
                out.push(Exchange {
                    start_ns,
                    end_ns: seg.ts_ns.max(start_ns),
                    detail: Detail::Redis(RedisExchange { command, error }),
                });
            }
        }
    }

    fn close(&mut self, _ts_ns: u64, _out: &mut Vec<Exchange>) {}

    fn desyncs(&self) -> u64 {
        self.commands.desyncs + self.replies.desyncs + self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(ts: u64, data: &[u8]) -> Segment<'_> {
        Segment {
            ts_ns: ts,
            data,
            gap: 0,
        }
    }
    fn redis(e: &Exchange) -> &RedisExchange {
        match &e.detail {
            Detail::Redis(r) => r,
            other => panic!("not redis: {other:?}"),
        }
    }

    #[test]
    fn pipelined_commands_match_replies_in_order() {
        let cmds = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n*2\r\n$3\r\nget\r\n$1\r\nk\r\n*1\r\n$4\r\nLPOP\r\n";
        let replies = b"+OK\r\n$1\r\nv\r\n-WRONGTYPE Operation against a key\r\n";
        let mut c = RedisConn::default();
        let mut out = Vec::new();
        c.feed(true, seg(1, cmds), &mut out);
        c.feed(false, seg(2, replies), &mut out);
        let got: Vec<_> = out
            .iter()
            .map(|e| (redis(e).command.clone(), redis(e).error.clone()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("SET".into(), None),
                ("GET".into(), None),
                ("LPOP".into(), Some("WRONGTYPE".into()))
            ]
        );
    }

    #[test]
    fn split_reply_and_nested_arrays() {
        let mut c = RedisConn::default();
        let mut out = Vec::new();
        c.feed(true, seg(1, b"*2\r\n$4\r\nSCAN\r\n$1\r\n0\r\n"), &mut out);
        let reply = b"*2\r\n$1\r\n0\r\n*2\r\n$1\r\na\r\n$1\r\nb\r\n";
        for (i, b) in reply.iter().enumerate() {
            c.feed(false, seg(10 + i as u64, std::slice::from_ref(b)), &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end_ns, 10 + reply.len() as u64 - 1);
    }

    #[test]
    fn truncated_large_value_counts_as_one_reply() {
        let mut c = RedisConn::default();
        let mut out = Vec::new();
        c.feed(
            true,
            seg(
                1,
                b"*2\r\n$3\r\nGET\r\n$3\r\nbig\r\n*2\r\n$3\r\nGET\r\n$1\r\nk\r\n",
            ),
            &mut out,
        );
        c.feed(
            false,
            Segment {
                ts_ns: 2,
                data: b"$100000\r\nxxxx",
                gap: 99_000,
            },
            &mut out,
        );
        c.feed(false, seg(3, b"$-1\r\n"), &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn detects_commands_only() {
        assert!(looks_like_command(b"*1\r\n$4\r\nPING\r\n"));
        assert!(!looks_like_command(b"GET / HTTP/1.1"));
        assert!(!looks_like_command(b"*x"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_input(
            chunks in proptest::collection::vec(
                (proptest::bool::ANY, proptest::collection::vec(
                    proptest::sample::select(b"*$+-:\r\n0123456789abc!%~>|_#,(=".to_vec()), 0..64), 0u64..50),
                0..20,
            )
        ) {
            let mut c = RedisConn::default();
            let mut out = Vec::new();
            for (i, (dir, data, gap)) in chunks.iter().enumerate() {
                c.feed(*dir, Segment { ts_ns: i as u64, data, gap: *gap }, &mut out);
            }
        }
    }
}
