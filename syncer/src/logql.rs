//! LogQL parser and validator used by `mop validate`.
//!
//! [`parse`] checks a query against the LogQL grammar of Grafana Loki 3.x
//! (`pkg/logql/syntax`: `syntax.y` and `lex.go`) and the checks Loki runs when
//! it parses a query, and answers with the kind of query or the first error,
//! pinned to a byte offset into the query. No AST is built.
//!
//! Covered:
//! - lexing as Loki does it: `#` comments, double-quoted strings with Go
//!   escapes, backtick raw strings, numbers, durations (`5m`, `1h30m`, `1.5s`,
//!   `-5m`), byte sizes (`20KB`, `1.5MiB`), ranges (`[5m]`, Prometheus duration
//!   syntax), `--strict`/`--keep-empty` flags, case-insensitive keywords, and the
//!   keywords that cannot be used as label names (`on`, `json`, `keep`, ...);
//! - stream selectors with `=`, `!=`, `=~`, `!~`, including Loki's rule that at
//!   least one matcher must not match the empty string (`{app=~".*"}` alone is
//!   rejected);
//! - line filters `|=`, `!=`, `|~`, `!~`, `|>`, `!>` with `or` chains and
//!   `ip("...")` (only with `|=`/`!=`);
//! - stages `json`/`logfmt` (flags and extraction parameters), `regexp` (at
//!   least one named capture, no duplicate names), `pattern` (at least one named
//!   capture, no adjacent captures, no duplicate names), `unpack`,
//!   `line_format`, `label_format`, `drop`, `keep`, `decolorize`, and label
//!   filter expressions (strings, regexes, `ip()`, numbers, durations, sizes,
//!   `and`/`or`/`,`/juxtaposition and parentheses);
//! - `| unwrap label`, `| unwrap bytes(..)`/`duration(..)`/`duration_seconds(..)`
//!   followed only by label filters, and only inside a range aggregation;
//! - range aggregations with the range before or after the pipeline, optional
//!   `offset`, the quantile parameter, Loki's unwrap rules (count_over_time and
//!   bytes_* reject an unwrap; the `*_over_time` value functions and
//!   rate_counter need one; rate and absent_over_time take either) and its
//!   grouping rules;
//! - vector aggregations with `by`/`without` before or after the arguments,
//!   the `topk`/`bottomk`/`approx_topk` parameter, `sort` grouping rules;
//! - binary operators with PromQL precedence (`^` right-associative), `bool`,
//!   `on`/`ignoring`, `group_left`/`group_right`, set operators without number
//!   literals, signed number literals, `vector(n)`, `label_replace(...)`;
//! - the maximum query size (128 KiB) and a nesting limit of
//!   [`MAX_NESTING`] levels, so hostile input never overflows the stack.
//!
//! Regular expressions are checked structurally against Go's RE2 syntax:
//! balanced groups and classes, group syntax, escapes, repetition operators
//! and repeat counts, character ranges; lookaround and backreferences are
//! rejected because RE2 does not support them. Not validated: Unicode class
//! names (`\p{...}`), RE2 program-size limits, `line_format`/`label_format`
//! templates, `json` extraction paths, the syntax of `|>`/`!>` line patterns,
//! and the experimental `variants(...) of (...)` and `| xml` forms, which are
//! reported as unsupported.

use std::collections::{BTreeSet, HashSet};
use std::fmt;
use std::net::IpAddr;

/// Loki refuses queries of this many bytes or more.
const MAX_QUERY_BYTES: usize = 131_072;
/// Maximum nesting of parentheses, function calls and right-associative
/// operators before the parser gives up (it never recurses deeper).
pub const MAX_NESTING: usize = 128;
/// Go's regexp parser refuses expressions nested deeper than this.
const MAX_REGEX_NESTING: usize = 1000;

/// What a query returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// A log query: a stream selector and a pipeline; returns log lines.
    Log,
    /// A metric query: returns samples.
    Metric,
}

/// The first problem found in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogqlError {
    /// Byte offset into the query where the problem is.
    pub offset: usize,
    /// What is wrong and what was expected.
    pub message: String,
}

impl LogqlError {
    fn new(offset: usize, message: impl Into<String>) -> Self {
        LogqlError {
            offset,
            message: message.into(),
        }
    }
}

impl fmt::Display for LogqlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at byte {})", self.message, self.offset)
    }
}

impl std::error::Error for LogqlError {}

/// Parses a LogQL query; returns its kind or the first error.
pub fn parse(query: &str) -> Result<QueryKind, LogqlError> {
    if query.len() >= MAX_QUERY_BYTES {
        return Err(LogqlError::new(
            0,
            format!(
                "query is too long ({} bytes): Loki accepts at most {} bytes",
                query.len(),
                MAX_QUERY_BYTES - 1
            ),
        ));
    }
    let mut p = Parser::new(query);
    let expr = p.parse_expr(0)?;
    p.finish(expr)?;
    Ok(expr.kind)
}

// ---------------------------------------------------------------------------
// Vocabulary
// ---------------------------------------------------------------------------

/// Words Loki's lexer always turns into keywords (compared case-insensitively),
/// so they can never be label names.
const RESERVED: &[&str] = &[
    "by",
    "without",
    "bool",
    "offset",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "or",
    "and",
    "unless",
    "json",
    "regexp",
    "logfmt",
    "unpack",
    "pattern",
    "label_format",
    "line_format",
    "decolorize",
    "drop",
    "keep",
    "unwrap",
];

/// Pipeline stages introduced by a keyword after `|`.
const STAGES: &[&str] = &[
    "json",
    "logfmt",
    "regexp",
    "pattern",
    "unpack",
    "line_format",
    "label_format",
    "drop",
    "keep",
    "decolorize",
    "unwrap",
];

const RANGE_OPS: &[&str] = &[
    "rate",
    "rate_counter",
    "count_over_time",
    "bytes_rate",
    "bytes_over_time",
    "absent_over_time",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
];

/// Range aggregations that aggregate unwrapped values and so need `| unwrap`.
const NEEDS_UNWRAP: &[&str] = &[
    "rate_counter",
    "sum_over_time",
    "avg_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
    "stdvar_over_time",
    "stddev_over_time",
    "quantile_over_time",
];

/// Range aggregations that count lines or bytes and so refuse `| unwrap`.
const REFUSES_UNWRAP: &[&str] = &["count_over_time", "bytes_rate", "bytes_over_time"];

/// Range aggregations that accept `by`/`without`.
const RANGE_GROUPING: &[&str] = &[
    "avg_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
];

const VECTOR_OPS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "stddev",
    "stdvar",
    "count",
    "topk",
    "bottomk",
    "sort",
    "sort_desc",
    "approx_topk",
];

/// PromQL functions people reach for that LogQL does not have.
const PROMQL_ONLY: &[&str] = &[
    "abs",
    "absent",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_values",
    "delta",
    "deriv",
    "exp",
    "floor",
    "group",
    "histogram_quantile",
    "holt_winters",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "limitk",
    "ln",
    "log2",
    "log10",
    "predict_linear",
    "present_over_time",
    "quantile",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort_by_label",
    "sqrt",
    "time",
    "timestamp",
];

fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|k| word.eq_ignore_ascii_case(k))
}

fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
        _ => return false,
    }
    bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Quotes a piece of the query in a message, shortened to a readable length.
fn clip(s: &str) -> String {
    shorten(s, 48)
}

/// Shortens `s` to at most `max` characters for use in a message.
fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or(s)),
        None => s.to_string(),
    }
}

// ---------------------------------------------------------------------------
// Lexer
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum K {
    Ident,
    Str,
    Number,
    Duration,
    Bytes,
    Range,
    Flag,
    LBrace,
    RBrace,
    LParen,
    RParen,
    Comma,
    /// `=`
    Eq,
    /// `!=`
    Neq,
    /// `=~`
    Re,
    /// `!~`
    Nre,
    /// `!>`
    Npa,
    /// `|=`
    PipeExact,
    /// `|~`
    PipeMatch,
    /// `|>`
    PipePattern,
    /// `|`
    Pipe,
    /// `==`
    CmpEq,
    Gt,
    Gte,
    Lt,
    Lte,
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Eof,
    /// A lexing error; always the last token.
    Error,
}

#[derive(Debug, Clone)]
struct Token {
    kind: K,
    start: usize,
    end: usize,
    /// Decoded value of a string literal.
    value: String,
    /// The decoded string equals its source text byte for byte (raw string,
    /// or no escapes), so offsets inside it map 1:1 onto the query.
    verbatim: bool,
    error: Option<LogqlError>,
}

impl Token {
    fn simple(kind: K, start: usize, end: usize) -> Self {
        Token {
            kind,
            start,
            end,
            value: String::new(),
            verbatim: true,
            error: None,
        }
    }

    fn error(e: LogqlError) -> Self {
        let mut t = Token::simple(K::Error, e.offset, e.offset);
        t.error = Some(e);
        t
    }
}

/// Splits the query into tokens. The list always ends with `Eof`, or with an
/// `Error` token at the first lexing problem.
fn lex(src: &str) -> Vec<Token> {
    let mut lx = Lexer {
        src,
        b: src.as_bytes(),
        pos: 0,
    };
    let mut out = Vec::new();
    loop {
        match lx.next_token() {
            Ok(t) => {
                let eof = t.kind == K::Eof;
                out.push(t);
                if eof {
                    break;
                }
            }
            Err(e) => {
                out.push(Token::error(e));
                break;
            }
        }
    }
    out
}

struct Lexer<'a> {
    src: &'a str,
    b: &'a [u8],
    pos: usize,
}

fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

fn is_duration_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.' || b"numshdwy".contains(&c)
}

fn is_bytes_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.' || b"BikKMGTP".contains(&c)
}

/// The micro sign `µ` (U+00B5), accepted in durations like `5µs`.
const MICRO: &[u8] = "µ".as_bytes();

impl Lexer<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    fn slice(&self, from: usize, to: usize) -> &str {
        self.src.get(from..to).unwrap_or("")
    }

    fn emit(&mut self, kind: K, start: usize, end: usize) -> Result<Token, LogqlError> {
        self.pos = end;
        Ok(Token::simple(kind, start, end))
    }

    fn skip_trivia(&mut self) {
        while let Some(c) = self.at(self.pos) {
            match c {
                b' ' | b'\t' | b'\n' | b'\r' => self.pos += 1,
                b'#' => {
                    while let Some(c) = self.at(self.pos) {
                        if c == b'\n' {
                            break;
                        }
                        self.pos += 1;
                    }
                }
                _ => break,
            }
        }
    }

    fn next_token(&mut self) -> Result<Token, LogqlError> {
        self.skip_trivia();
        let s = self.pos;
        let Some(c) = self.at(s) else {
            return self.emit(K::Eof, s, s);
        };
        let next = self.at(s + 1);
        match c {
            b'"' => self.lex_quoted(s),
            b'`' => self.lex_raw(s),
            b'\'' => Err(LogqlError::new(
                s,
                "single-quoted strings are not supported in LogQL: use double quotes \"...\" \
                 or backticks `...`",
            )),
            b'[' => self.lex_range(s),
            b'0'..=b'9' => self.lex_numeric(s),
            b'.' if next.is_some_and(|n| n.is_ascii_digit()) => self.lex_numeric(s),
            b'-' => {
                if next == Some(b'-') && self.at(s + 2).is_some_and(|n| n.is_ascii_alphabetic()) {
                    return self.lex_flag(s);
                }
                if next.is_some_and(|n| n.is_ascii_digit() || n == b'.') {
                    let num_end = self.scan_number(s + 1);
                    let dur_end = self.duration_run(num_end);
                    if dur_end > num_end && go_duration(self.slice(s, dur_end)) {
                        return self.finish_numeric(K::Duration, s, dur_end);
                    }
                }
                self.emit(K::Sub, s, s + 1)
            }
            b'|' => match next {
                Some(b'=') => self.emit(K::PipeExact, s, s + 2),
                Some(b'~') => self.emit(K::PipeMatch, s, s + 2),
                Some(b'>') => self.emit(K::PipePattern, s, s + 2),
                _ => self.emit(K::Pipe, s, s + 1),
            },
            b'!' => match next {
                Some(b'=') => self.emit(K::Neq, s, s + 2),
                Some(b'~') => self.emit(K::Nre, s, s + 2),
                Some(b'>') => self.emit(K::Npa, s, s + 2),
                _ => Err(LogqlError::new(
                    s,
                    "unexpected `!`: expected `!=`, `!~` or `!>`",
                )),
            },
            b'=' => match next {
                Some(b'=') => self.emit(K::CmpEq, s, s + 2),
                Some(b'~') => self.emit(K::Re, s, s + 2),
                _ => self.emit(K::Eq, s, s + 1),
            },
            b'>' => match next {
                Some(b'=') => self.emit(K::Gte, s, s + 2),
                _ => self.emit(K::Gt, s, s + 1),
            },
            b'<' => match next {
                Some(b'=') => self.emit(K::Lte, s, s + 2),
                _ => self.emit(K::Lt, s, s + 1),
            },
            b'{' => self.emit(K::LBrace, s, s + 1),
            b'}' => self.emit(K::RBrace, s, s + 1),
            b'(' => self.emit(K::LParen, s, s + 1),
            b')' => self.emit(K::RParen, s, s + 1),
            b',' => self.emit(K::Comma, s, s + 1),
            b'+' => self.emit(K::Add, s, s + 1),
            b'*' => self.emit(K::Mul, s, s + 1),
            b'/' => self.emit(K::Div, s, s + 1),
            b'%' => self.emit(K::Mod, s, s + 1),
            b'^' => self.emit(K::Pow, s, s + 1),
            c if c.is_ascii_alphabetic() || c == b'_' => {
                let end = self.run(s, is_word_byte);
                self.emit(K::Ident, s, end)
            }
            b']' => Err(LogqlError::new(s, "unexpected `]` without a matching `[`")),
            _ => {
                let ch = self
                    .src
                    .get(s..)
                    .and_then(|r| r.chars().next())
                    .unwrap_or('?');
                Err(LogqlError::new(
                    s,
                    format!("unexpected character `{}`", ch.escape_debug()),
                ))
            }
        }
    }

    /// End of the run of bytes satisfying `pred` starting at `i`.
    fn run(&self, mut i: usize, pred: fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(pred) {
            i += 1;
        }
        i
    }

    /// End of the run of duration characters starting at `i`, including the
    /// two-byte micro sign.
    fn duration_run(&self, mut i: usize) -> usize {
        loop {
            if self.at(i).is_some_and(is_duration_byte) {
                i += 1;
            } else if self.b.get(i..i + MICRO.len()) == Some(MICRO) {
                i += MICRO.len();
            } else {
                return i;
            }
        }
    }

    /// Scans a decimal number (`12`, `1.5`, `.5`, `1e3`) starting at `i`.
    fn scan_number(&self, mut i: usize) -> usize {
        let digits = |lx: &Self, mut j: usize| {
            while lx.at(j).is_some_and(|c| c.is_ascii_digit()) {
                j += 1;
            }
            j
        };
        let int_start = i;
        i = digits(self, i);
        let has_int = i > int_start;
        if self.at(i) == Some(b'.') {
            let frac_end = digits(self, i + 1);
            if has_int || frac_end > i + 1 {
                i = frac_end;
            }
        }
        if matches!(self.at(i), Some(b'e' | b'E')) {
            let mut j = i + 1;
            if matches!(self.at(j), Some(b'+' | b'-')) {
                j += 1;
            }
            if self.at(j).is_some_and(|c| c.is_ascii_digit()) {
                i = digits(self, j);
            }
        }
        i
    }

    /// A number, possibly followed directly by duration or size units, the
    /// way Loki's lexer reads it.
    fn lex_numeric(&mut self, s: usize) -> Result<Token, LogqlError> {
        let num_end = self.scan_number(s);
        let dur_end = self.duration_run(num_end);
        if dur_end > num_end && valid_duration(self.slice(s, dur_end)) {
            return self.finish_numeric(K::Duration, s, dur_end);
        }
        let bytes_end = self.run(num_end, is_bytes_byte);
        if bytes_end > num_end && valid_bytes(self.slice(s, bytes_end)) {
            return self.finish_numeric(K::Bytes, s, bytes_end);
        }
        self.finish_numeric(K::Number, s, num_end)
    }

    /// Rejects letters glued to a number, like `5x` or `20kb`.
    fn finish_numeric(&mut self, kind: K, s: usize, end: usize) -> Result<Token, LogqlError> {
        let glued = self.at(end).is_some_and(|c| is_word_byte(c) || c == b'.')
            || self.b.get(end..end + MICRO.len()) == Some(MICRO);
        if glued {
            let mut j = end;
            loop {
                if self.at(j).is_some_and(|c| is_word_byte(c) || c == b'.') {
                    j += 1;
                } else if self.b.get(j..j + MICRO.len()) == Some(MICRO) {
                    j += MICRO.len();
                } else {
                    break;
                }
            }
            return Err(LogqlError::new(
                s,
                format!(
                    "invalid number, duration or size `{}`: durations use the units ns, us, ms, \
                     s, m, h, d, w, y (e.g. 5m, 1h30m) and sizes the units B, kB, KB, KiB, MB, \
                     MiB, GB, GiB, TB, TiB (e.g. 20KB)",
                    clip(self.slice(s, j))
                ),
            ));
        }
        self.emit(kind, s, end)
    }

    fn lex_flag(&mut self, s: usize) -> Result<Token, LogqlError> {
        let end = self.run(s + 2, |c| c.is_ascii_alphabetic() || c == b'-');
        let flag = self.slice(s, end);
        if flag == "--strict" || flag == "--keep-empty" {
            return self.emit(K::Flag, s, end);
        }
        Err(LogqlError::new(
            s,
            format!(
                "unknown parser flag `{}`: logfmt accepts --strict and --keep-empty",
                clip(flag)
            ),
        ))
    }

    fn lex_range(&mut self, s: usize) -> Result<Token, LogqlError> {
        let from = s + 1;
        let Some(len) = self.src.get(from..).and_then(|r| r.find(']')) else {
            return Err(LogqlError::new(
                s,
                "missing `]` to close the range: write a range like [5m]",
            ));
        };
        let content = self.slice(from, from + len);
        let shown = clip(content);
        if content.trim().is_empty() {
            return Err(LogqlError::new(
                s,
                "empty range `[]`: write a duration like [5m]",
            ));
        }
        if content.contains(':') {
            return Err(LogqlError::new(
                from,
                format!(
                    "subqueries like `[{shown}]` are not supported in LogQL: write a plain \
                     range like [5m]"
                ),
            ));
        }
        if content.chars().any(char::is_whitespace) {
            return Err(LogqlError::new(
                from,
                format!(
                    "invalid duration `{shown}`: spaces are not allowed inside a range, \
                     write e.g. [5m]"
                ),
            ));
        }
        if let Err(detail) = prom_duration(content) {
            return Err(LogqlError::new(
                from,
                format!("invalid duration `{shown}`: use units ms, s, m, h, d, w, y{detail}"),
            ));
        }
        self.emit(K::Range, s, from + len + 1)
    }

    fn lex_quoted(&mut self, s: usize) -> Result<Token, LogqlError> {
        let mut i = s + 1;
        let mut out: Vec<u8> = Vec::new();
        let mut verbatim = true;
        loop {
            match self.at(i) {
                None => {
                    return Err(LogqlError::new(
                        s,
                        "unterminated string: missing the closing `\"`",
                    ));
                }
                Some(b'"') => {
                    i += 1;
                    break;
                }
                Some(b'\n') => {
                    return Err(LogqlError::new(
                        s,
                        "unterminated string: a double-quoted string must be closed on the same \
                         line (use backticks `...` for multi-line strings)",
                    ));
                }
                Some(b'\\') => {
                    verbatim = false;
                    i = self.lex_escape(i, &mut out)?;
                }
                Some(c) => {
                    out.push(c);
                    i += 1;
                }
            }
        }
        self.pos = i;
        Ok(Token {
            kind: K::Str,
            start: s,
            end: i,
            value: String::from_utf8_lossy(&out).into_owned(),
            verbatim,
            error: None,
        })
    }

    /// Decodes the Go escape sequence at `bs` (the backslash); returns the
    /// index after it.
    fn lex_escape(&self, bs: usize, out: &mut Vec<u8>) -> Result<usize, LogqlError> {
        let Some(c) = self.at(bs + 1) else {
            return Err(LogqlError::new(
                bs,
                "unterminated string: missing the closing `\"`",
            ));
        };
        let simple = match c {
            b'a' => Some(7),
            b'b' => Some(8),
            b'f' => Some(12),
            b'n' => Some(b'\n'),
            b'r' => Some(b'\r'),
            b't' => Some(b'\t'),
            b'v' => Some(11),
            b'\\' => Some(b'\\'),
            b'"' => Some(b'"'),
            _ => None,
        };
        if let Some(v) = simple {
            out.push(v);
            return Ok(bs + 2);
        }
        let hex = |from: usize, n: usize| -> Option<u32> {
            let digits = self.slice(from, from + n);
            if digits.len() == n && digits.bytes().all(|d| d.is_ascii_hexdigit()) {
                u32::from_str_radix(digits, 16).ok()
            } else {
                None
            }
        };
        match c {
            b'0'..=b'7' => {
                let digits = self.slice(bs + 1, bs + 4);
                let value =
                    if digits.len() == 3 && digits.bytes().all(|d| (b'0'..=b'7').contains(&d)) {
                        u32::from_str_radix(digits, 8).ok()
                    } else {
                        None
                    };
                match value.and_then(|v| u8::try_from(v).ok()) {
                    Some(v) => {
                        out.push(v);
                        Ok(bs + 4)
                    }
                    None => Err(LogqlError::new(
                        bs,
                        "invalid octal escape: write exactly three octal digits with a value of \
                         at most \\377",
                    )),
                }
            }
            b'x' => match hex(bs + 2, 2).and_then(|v| u8::try_from(v).ok()) {
                Some(v) => {
                    out.push(v);
                    Ok(bs + 4)
                }
                None => Err(LogqlError::new(
                    bs,
                    "invalid escape `\\x`: write exactly two hex digits like \\x41",
                )),
            },
            b'u' | b'U' => {
                let n = if c == b'u' { 4 } else { 8 };
                match hex(bs + 2, n).and_then(char::from_u32) {
                    Some(ch) => {
                        let mut buf = [0u8; 4];
                        out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                        Ok(bs + 2 + n)
                    }
                    None => Err(LogqlError::new(
                        bs,
                        format!(
                            "invalid escape `\\{}`: write {n} hex digits of a valid Unicode code \
                             point",
                            char::from(c)
                        ),
                    )),
                }
            }
            _ => {
                let ch = self
                    .src
                    .get(bs + 1..)
                    .and_then(|r| r.chars().next())
                    .unwrap_or('?');
                let shown = ch.escape_debug();
                Err(LogqlError::new(
                    bs,
                    format!(
                        "invalid escape `\\{shown}` in a double-quoted string: escape the \
                         backslash (`\\\\{shown}`) or use a backtick string like `\\{shown}`"
                    ),
                ))
            }
        }
    }

    fn lex_raw(&mut self, s: usize) -> Result<Token, LogqlError> {
        let from = s + 1;
        let Some(len) = self.src.get(from..).and_then(|r| r.find('`')) else {
            return Err(LogqlError::new(
                s,
                "unterminated raw string: missing the closing backtick",
            ));
        };
        let end = from + len + 1;
        self.pos = end;
        Ok(Token {
            kind: K::Str,
            start: s,
            end,
            value: self.slice(from, from + len).to_string(),
            verbatim: true,
            error: None,
        })
    }
}

// ---------------------------------------------------------------------------
// Durations and sizes
// ---------------------------------------------------------------------------

/// Prometheus duration syntax (`model.ParseDuration`), used for ranges:
/// whole numbers with units from largest to smallest, each at most once.
/// On error returns a detail to append to the message.
fn prom_duration(s: &str) -> Result<(), &'static str> {
    const FORMAT: &str = ", e.g. [5m], [90s] or [1h30m]";
    const FRACTION: &str = " with whole numbers: fractions are not allowed in a range, write \
                            e.g. [90s] instead of [1.5m]";
    const ORDER: &str = ": units must go from largest to smallest and appear at most once, e.g. \
                         [1h30m]";
    if s == "0" {
        return Ok(());
    }
    if s.is_empty() {
        return Err(FORMAT);
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut last: Option<usize> = None;
    while i < b.len() {
        let digits_start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        if i == digits_start {
            return Err(if b.get(i) == Some(&b'.') {
                FRACTION
            } else {
                FORMAT
            });
        }
        let rest = s.get(i..).unwrap_or("");
        let (unit, len) = if rest.starts_with("ms") {
            (6, 2)
        } else {
            match b.get(i) {
                Some(b'y') => (0, 1),
                Some(b'w') => (1, 1),
                Some(b'd') => (2, 1),
                Some(b'h') => (3, 1),
                Some(b'm') => (4, 1),
                Some(b's') => (5, 1),
                Some(b'.') => return Err(FRACTION),
                _ => return Err(FORMAT),
            }
        };
        if last.is_some_and(|l| unit <= l) {
            return Err(ORDER);
        }
        last = Some(unit);
        i += len;
    }
    Ok(())
}

/// Go's `time.ParseDuration` syntax: optional sign, then decimal numbers
/// (fractions allowed), each with a unit ns, us, µs, ms, s, m, h.
fn go_duration(s: &str) -> bool {
    let s = s.strip_prefix(['-', '+']).unwrap_or(s);
    if s == "0" {
        return true;
    }
    if s.is_empty() {
        return false;
    }
    let mut rest = s;
    while !rest.is_empty() {
        let int_len = rest.bytes().take_while(u8::is_ascii_digit).count();
        let mut j = int_len;
        let mut frac_len = 0;
        if rest.as_bytes().get(j) == Some(&b'.') {
            j += 1;
            frac_len = rest
                .get(j..)
                .unwrap_or("")
                .bytes()
                .take_while(u8::is_ascii_digit)
                .count();
            j += frac_len;
        }
        if int_len == 0 && frac_len == 0 {
            return false;
        }
        let after = rest.get(j..).unwrap_or("");
        let unit_len = after
            .char_indices()
            .find(|&(_, c)| c == '.' || c.is_ascii_digit())
            .map_or(after.len(), |(k, _)| k);
        let unit = after.get(..unit_len).unwrap_or("");
        if !matches!(unit, "ns" | "us" | "µs" | "μs" | "ms" | "s" | "m" | "h") {
            return false;
        }
        rest = after.get(unit_len..).unwrap_or("");
    }
    true
}

/// Durations in label filters and after `offset`: Prometheus syntax first,
/// then Go's.
fn valid_duration(s: &str) -> bool {
    prom_duration(s).is_ok() || go_duration(s)
}

/// Byte sizes as `humanize.ParseBytes` reads them (`20KB`, `1.5MiB`, `10M`).
fn valid_bytes(s: &str) -> bool {
    let num_len = s
        .bytes()
        .take_while(|c| c.is_ascii_digit() || *c == b'.')
        .count();
    let num = s.get(..num_len).unwrap_or("");
    let digits = num.bytes().filter(u8::is_ascii_digit).count();
    if digits == 0 || num.bytes().filter(|&c| c == b'.').count() > 1 {
        return false;
    }
    let unit = s.get(num_len..).unwrap_or("").to_ascii_lowercase();
    matches!(
        unit.as_str(),
        "" | "b"
            | "k"
            | "kb"
            | "ki"
            | "kib"
            | "m"
            | "mb"
            | "mi"
            | "mib"
            | "g"
            | "gb"
            | "gi"
            | "gib"
            | "t"
            | "tb"
            | "ti"
            | "tib"
            | "p"
            | "pb"
            | "pi"
            | "pib"
    )
}

// ---------------------------------------------------------------------------
// Regular expressions (structural RE2 check)
// ---------------------------------------------------------------------------

struct RegexInfo {
    /// The regex matches the empty string (as Prometheus matchers anchor it).
    nullable: bool,
    /// Names of the named capture groups.
    names: BTreeSet<String>,
}

/// A regex error: byte offset into the regex and a message.
type RegexError = (usize, String);

struct RegexFrame {
    open: usize,
    /// Some alternative closed so far matches the empty string.
    alt_nullable: bool,
    /// Every item of the current alternative so far matches the empty string.
    cat_nullable: bool,
}

enum Escape {
    /// A single character (can be the end of a class range).
    Char(char),
    /// A class like `\d` or `\pL`.
    Class,
    /// A zero-width assertion like `\A`; the flag says whether it matches "".
    Assert(bool),
    /// `\Q...\E`; the flag says whether the quoted text is empty.
    Quote(bool),
}

/// Checks `re` against Go's RE2 syntax without compiling it, and works out
/// whether it matches the empty string and which named groups it has.
fn check_regex_syntax(re: &str) -> Result<RegexInfo, RegexError> {
    let cs: Vec<(usize, char)> = re.char_indices().collect();
    let at = |i: usize| cs.get(i).map(|&(_, c)| c);
    let off = |i: usize| cs.get(i).map_or(re.len(), |&(o, _)| o);

    let mut frames = vec![RegexFrame {
        open: 0,
        alt_nullable: false,
        cat_nullable: true,
    }];
    // The last item of the current alternative and whether it matches "".
    let mut pending: Option<bool> = None;
    let mut last_was_repeat = false;
    let mut names: BTreeSet<String> = BTreeSet::new();
    let mut i = 0;

    fn commit(frames: &mut [RegexFrame], pending: &mut Option<bool>) {
        if let (Some(n), Some(f)) = (pending.take(), frames.last_mut()) {
            f.cat_nullable &= n;
        }
    }

    while let Some(c) = at(i) {
        // Repetition operators.
        let repeat = match c {
            '*' | '?' => Some((true, i + 1)),
            '+' => Some((false, i + 1)),
            '{' => match repeat_count(&cs, i) {
                Some(Ok((min, next))) => Some((min == 0, next)),
                Some(Err(())) => {
                    return Err((
                        off(i),
                        "invalid repeat count: use {n}, {n,} or {n,m} with n <= m <= 1000"
                            .to_string(),
                    ));
                }
                None => None,
            },
            _ => None,
        };
        if let Some((allows_zero, mut next)) = repeat {
            let op: String = cs
                .get(i..next)
                .map(|s| s.iter().take(48).map(|&(_, ch)| ch).collect())
                .unwrap_or_default();
            let Some(item) = pending else {
                return Err((
                    off(i),
                    format!("missing argument to repetition operator `{op}`"),
                ));
            };
            if last_was_repeat {
                return Err((off(i), format!("invalid nested repetition operator `{op}`")));
            }
            pending = Some(item || allows_zero);
            if at(next) == Some('?') {
                next += 1; // non-greedy
            }
            last_was_repeat = true;
            i = next;
            continue;
        }
        last_was_repeat = false;
        match c {
            '|' => {
                commit(&mut frames, &mut pending);
                if let Some(f) = frames.last_mut() {
                    f.alt_nullable |= f.cat_nullable;
                    f.cat_nullable = true;
                }
                i += 1;
            }
            '(' => {
                let (next, opens) = regex_group_open(&cs, i, &mut names, re.len())?;
                // A bare flag group like `(?i)` is no item: what precedes it
                // can still take a repetition operator, as in Go.
                if opens {
                    commit(&mut frames, &mut pending);
                    if frames.len() > MAX_REGEX_NESTING {
                        return Err((off(i), "regular expression nests too deeply".to_string()));
                    }
                    frames.push(RegexFrame {
                        open: i,
                        alt_nullable: false,
                        cat_nullable: true,
                    });
                }
                i = next;
            }
            ')' => {
                if frames.len() <= 1 {
                    return Err((off(i), "unexpected `)` without a matching `(`".to_string()));
                }
                commit(&mut frames, &mut pending);
                if let Some(f) = frames.pop() {
                    pending = Some(f.alt_nullable || f.cat_nullable);
                }
                i += 1;
            }
            '[' => {
                commit(&mut frames, &mut pending);
                i = regex_class_end(&cs, i, re.len())?;
                pending = Some(false);
            }
            '\\' => {
                commit(&mut frames, &mut pending);
                let (esc, next) = regex_escape(&cs, i, false, re.len())?;
                pending = match esc {
                    Escape::Char(_) | Escape::Class => Some(false),
                    Escape::Assert(nullable) => Some(nullable),
                    Escape::Quote(true) => pending,
                    Escape::Quote(false) => Some(false),
                };
                i = next;
            }
            '^' | '$' => {
                commit(&mut frames, &mut pending);
                pending = Some(true);
                i += 1;
            }
            _ => {
                commit(&mut frames, &mut pending);
                pending = Some(false);
                i += 1;
            }
        }
    }
    if frames.len() > 1 {
        let open = frames.last().map_or(0, |f| f.open);
        return Err((off(open), "missing closing `)` for this group".to_string()));
    }
    commit(&mut frames, &mut pending);
    let nullable = frames
        .first()
        .is_some_and(|f| f.alt_nullable || f.cat_nullable);
    Ok(RegexInfo { nullable, names })
}

/// Parses `{n}`, `{n,}` or `{n,m}` at `i`. `None`: not a repeat (a literal
/// `{`); `Some(Err)`: a repeat with a bad count.
fn repeat_count(cs: &[(usize, char)], i: usize) -> Option<Result<(u32, usize), ()>> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let number = |mut j: usize| -> (Option<u32>, usize) {
        let start = j;
        let mut value: u32 = 0;
        while let Some(d) = at(j).and_then(|c| c.to_digit(10)) {
            value = value.saturating_mul(10).saturating_add(d);
            j += 1;
        }
        ((j > start).then_some(value), j)
    };
    let (min, j) = number(i + 1);
    let min = min?;
    let (max, j) = match at(j) {
        Some('}') => (Some(min), j),
        Some(',') => {
            let (max, k) = number(j + 1);
            (max, k)
        }
        _ => return None,
    };
    if at(j) != Some('}') {
        return None;
    }
    let bad = min > 1000 || max.is_some_and(|m| m > 1000 || m < min);
    Some(if bad { Err(()) } else { Ok((min, j + 1)) })
}

/// Parses the opening of a group at `i` (`(`, `(?:`, `(?P<name>`, `(?<name>`,
/// `(?flags)`, `(?flags:`). Returns the index after it and whether a group
/// was opened (a bare flag group `(?i)` opens none).
fn regex_group_open(
    cs: &[(usize, char)],
    i: usize,
    names: &mut BTreeSet<String>,
    len: usize,
) -> Result<(usize, bool), RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    if at(i + 1) != Some('?') {
        return Ok((i + 1, true));
    }
    let name_from = match (at(i + 2), at(i + 3)) {
        (Some(':'), _) => return Ok((i + 3, true)),
        (Some('='), _) | (Some('!'), _) => {
            return Err((
                off(i),
                "lookahead `(?=...)`/`(?!...)` is not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        (Some('<'), Some('=')) | (Some('<'), Some('!')) => {
            return Err((
                off(i),
                "lookbehind `(?<=...)`/`(?<!...)` is not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        (Some('P'), Some('<')) => Some(i + 4),
        (Some('<'), _) => Some(i + 3),
        (Some('P'), _) => {
            return Err((
                off(i),
                "named backreferences `(?P=name)` are not supported: Loki uses Go's RE2 engine"
                    .to_string(),
            ));
        }
        _ => None,
    };
    if let Some(from) = name_from {
        let mut j = from;
        let mut name = String::new();
        while let Some(c) = at(j) {
            if c == '>' {
                break;
            }
            name.push(c);
            j += 1;
        }
        let valid = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if at(j) != Some('>') || !valid {
            return Err((
                off(i),
                "invalid named capture group: write (?P<name>...) with a name made of letters, \
                 digits and `_`"
                    .to_string(),
            ));
        }
        if names.contains(&name) {
            return Err((
                off(i),
                format!("duplicate capture group name `{}`", clip(&name)),
            ));
        }
        names.insert(name);
        return Ok((j + 1, true));
    }
    // Flags: (?i) (?-s) (?im-sU:...)
    let mut j = i + 2;
    let mut negated = false;
    let mut flags_since_sign = 0;
    let mut flags = 0;
    loop {
        match at(j) {
            Some('i' | 'm' | 's' | 'U') => {
                flags += 1;
                flags_since_sign += 1;
            }
            Some('-') if !negated => {
                negated = true;
                flags_since_sign = 0;
            }
            Some(end @ (')' | ':')) if flags > 0 && (!negated || flags_since_sign > 0) => {
                return Ok((j + 1, end == ':'));
            }
            _ => {
                return Err((
                    off(i),
                    "invalid or unsupported group syntax `(?`: RE2 supports (?:...), \
                     (?P<name>...) and flags like (?i)"
                        .to_string(),
                ));
            }
        }
        j += 1;
    }
}

/// Parses the escape at `i` (a backslash); returns what it is and the index
/// after it.
fn regex_escape(
    cs: &[(usize, char)],
    i: usize,
    in_class: bool,
    len: usize,
) -> Result<(Escape, usize), RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    let Some(c) = at(i + 1) else {
        return Err((
            off(i),
            "trailing backslash at the end of the expression".to_string(),
        ));
    };
    let is_octal = |ch: Option<char>| ch.is_some_and(|d| ('0'..='7').contains(&d));
    let backref = || {
        Err((
            off(i),
            format!(
                "backreference `\\{c}` is not supported: Loki uses Go's RE2 engine, which has no \
                 backreferences"
            ),
        ))
    };
    match c {
        '1'..='7' if !is_octal(at(i + 2)) => backref(),
        '0'..='7' => {
            let mut j = i + 2;
            let mut value = c.to_digit(8).unwrap_or(0);
            while j < i + 4 && is_octal(at(j)) {
                value = value * 8 + at(j).and_then(|d| d.to_digit(8)).unwrap_or(0);
                j += 1;
            }
            Ok((Escape::Char(char::from_u32(value).unwrap_or('\0')), j))
        }
        '8' | '9' => backref(),
        'x' => {
            if at(i + 2) == Some('{') {
                let mut j = i + 3;
                let mut value: u32 = 0;
                while let Some(d) = at(j).and_then(|h| h.to_digit(16)) {
                    value = value.saturating_mul(16).saturating_add(d);
                    j += 1;
                }
                match (j > i + 3, at(j), char::from_u32(value)) {
                    (true, Some('}'), Some(ch)) => Ok((Escape::Char(ch), j + 1)),
                    _ => Err((
                        off(i),
                        "invalid escape `\\x{...}`: write hex digits of a valid code point"
                            .to_string(),
                    )),
                }
            } else {
                match (
                    at(i + 2).and_then(|h| h.to_digit(16)),
                    at(i + 3).and_then(|h| h.to_digit(16)),
                ) {
                    (Some(h), Some(l)) => Ok((
                        Escape::Char(char::from_u32(h * 16 + l).unwrap_or('\0')),
                        i + 4,
                    )),
                    _ => Err((
                        off(i),
                        "invalid escape `\\x`: write two hex digits like \\x41 or \\x{263a}"
                            .to_string(),
                    )),
                }
            }
        }
        'a' => Ok((Escape::Char('\u{7}'), i + 2)),
        'f' => Ok((Escape::Char('\u{c}'), i + 2)),
        'n' => Ok((Escape::Char('\n'), i + 2)),
        'r' => Ok((Escape::Char('\r'), i + 2)),
        't' => Ok((Escape::Char('\t'), i + 2)),
        'v' => Ok((Escape::Char('\u{b}'), i + 2)),
        'd' | 'D' | 's' | 'S' | 'w' | 'W' => Ok((Escape::Class, i + 2)),
        'p' | 'P' => {
            if at(i + 2) == Some('{') {
                let mut j = i + 3;
                while at(j).is_some_and(|ch| ch != '}') {
                    j += 1;
                }
                if at(j) == Some('}') && j > i + 3 {
                    Ok((Escape::Class, j + 1))
                } else {
                    Err((
                        off(i),
                        "invalid Unicode class: write \\p{Name} or \\pL".to_string(),
                    ))
                }
            } else if at(i + 2).is_some_and(|ch| ch.is_ascii_alphabetic()) {
                Ok((Escape::Class, i + 3))
            } else {
                Err((
                    off(i),
                    "invalid Unicode class: write \\p{Name} or \\pL".to_string(),
                ))
            }
        }
        'b' if !in_class => Ok((Escape::Assert(false), i + 2)),
        'B' | 'A' | 'z' if !in_class => Ok((Escape::Assert(true), i + 2)),
        'Q' if !in_class => {
            let mut j = i + 2;
            while let Some(ch) = at(j) {
                if ch == '\\' && at(j + 1) == Some('E') {
                    return Ok((Escape::Quote(j == i + 2), j + 2));
                }
                j += 1;
            }
            Ok((Escape::Quote(j == i + 2), j))
        }
        c if c.is_ascii() && !c.is_ascii_alphanumeric() => Ok((Escape::Char(c), i + 2)),
        _ => Err((
            off(i),
            format!(
                "invalid escape `\\{}` in regular expression",
                c.escape_debug()
            ),
        )),
    }
}

const POSIX_CLASSES: &[&str] = &[
    "alnum", "alpha", "ascii", "blank", "cntrl", "digit", "graph", "lower", "print", "punct",
    "space", "upper", "word", "xdigit",
];

/// Parses the character class starting at `i` (a `[`); returns the index
/// after its closing `]`.
fn regex_class_end(cs: &[(usize, char)], i: usize, len: usize) -> Result<usize, RegexError> {
    let at = |j: usize| cs.get(j).map(|&(_, c)| c);
    let off = |j: usize| cs.get(j).map_or(len, |&(o, _)| o);
    let mut j = i + 1;
    if at(j) == Some('^') {
        j += 1;
    }
    let mut first = true;
    loop {
        let item_start = j;
        // One class item; `lo` is set when it is a single character.
        let lo: Option<char> = match at(j) {
            None => {
                return Err((
                    off(i),
                    "missing closing `]` for this character class".to_string(),
                ));
            }
            Some(']') if !first => return Ok(j + 1),
            Some('[') if at(j + 1) == Some(':') => {
                let mut k = j + 2;
                while at(k).is_some_and(|c| c != ':' && c != ']') {
                    k += 1;
                }
                if at(k) == Some(':') && at(k + 1) == Some(']') {
                    let name: String = cs
                        .get(j + 2..k)
                        .map(|s| s.iter().map(|&(_, c)| c).collect())
                        .unwrap_or_default();
                    let name = name.strip_prefix('^').unwrap_or(&name);
                    if !POSIX_CLASSES.contains(&name) {
                        return Err((
                            off(j),
                            format!("invalid character class `[:{}:]`", clip(name)),
                        ));
                    }
                    j = k + 2;
                    None
                } else {
                    j += 1;
                    Some('[')
                }
            }
            Some('\\') => {
                let (esc, next) = regex_escape(cs, j, true, len)?;
                j = next;
                match esc {
                    Escape::Char(c) => Some(c),
                    _ => None,
                }
            }
            Some(c) => {
                j += 1;
                Some(c)
            }
        };
        first = false;
        // A range `lo-hi`.
        if let Some(lo) = lo
            && at(j) == Some('-')
            && at(j + 1).is_some_and(|c| c != ']')
        {
            let hi = if at(j + 1) == Some('\\') {
                let (esc, next) = regex_escape(cs, j + 1, true, len)?;
                j = next;
                match esc {
                    Escape::Char(c) => c,
                    _ => {
                        return Err((off(item_start), "invalid character class range".to_string()));
                    }
                }
            } else {
                let hi = at(j + 1).unwrap_or(lo);
                j += 2;
                hi
            };
            if hi < lo {
                return Err((
                    off(item_start),
                    format!("invalid character class range `{lo}-{hi}`"),
                ));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Other literal checks
// ---------------------------------------------------------------------------

/// Checks a `| pattern` expression the way Loki's pattern parser does.
fn check_pattern(p: &str) -> Result<(), RegexError> {
    enum Node {
        Literal,
        Capture(String, usize),
    }
    let b = p.as_bytes();
    let capture_end = |i: usize| -> Option<usize> {
        let first = *b.get(i + 1)?;
        if !(first.is_ascii_alphabetic() || first == b'_') {
            return None;
        }
        let mut j = i + 2;
        while b.get(j).is_some_and(|&c| is_word_byte(c)) {
            j += 1;
        }
        (b.get(j) == Some(&b'>')).then_some(j)
    };
    let mut nodes: Vec<Node> = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b.get(i) == Some(&b'<')
            && let Some(end) = capture_end(i)
        {
            nodes.push(Node::Capture(
                p.get(i + 1..end).unwrap_or("").to_string(),
                i,
            ));
            i = end + 1;
            continue;
        }
        if !matches!(nodes.last(), Some(Node::Literal)) {
            nodes.push(Node::Literal);
        }
        i += 1;
    }
    let named = |n: &Node| matches!(n, Node::Capture(name, _) if name != "_");
    if !nodes.iter().any(named) {
        return Err((
            0,
            "a pattern needs at least one named capture like <status>; <_> only skips text"
                .to_string(),
        ));
    }
    // Loki compares the nodes pairwise from the start.
    for pair in nodes.chunks(2) {
        if let [Node::Capture(..), Node::Capture(name, at)] = pair {
            return Err((
                *at,
                format!(
                    "captures next to each other are not allowed (before `<{}>`): put \
                     literal text between them",
                    clip(name)
                ),
            ));
        }
    }
    let mut seen: HashSet<&str> = HashSet::new();
    for node in &nodes {
        if let Node::Capture(name, at) = node
            && name != "_"
            && !seen.insert(name.as_str())
        {
            return Err((
                *at,
                format!("duplicate capture name `<{}>` in pattern", clip(name)),
            ));
        }
    }
    Ok(())
}

fn parse_ip(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    // IPv6 with a zone, like fe80::1%eth0.
    let (addr, zone) = s.split_once('%')?;
    if zone.is_empty() {
        return None;
    }
    addr.parse::<std::net::Ipv6Addr>().ok().map(IpAddr::V6)
}

/// Checks the argument of `ip("...")`: an address, a CIDR prefix or a range.
fn check_ip_pattern(p: &str) -> Result<(), String> {
    const EXPECTED: &str = "expected an IP address (192.168.0.1, ::1), a CIDR prefix \
                            (10.0.0.0/8) or a range (192.168.0.1-192.168.0.9)";
    if parse_ip(p).is_some() {
        return Ok(());
    }
    if let Some((addr, bits)) = p.split_once('/') {
        let ip = addr.parse::<IpAddr>().map_err(|_| EXPECTED.to_string())?;
        let max = if ip.is_ipv4() { 32 } else { 128 };
        let well_formed = !bits.is_empty()
            && bits.bytes().all(|c| c.is_ascii_digit())
            && (bits == "0" || !bits.starts_with('0'));
        return match bits.parse::<u32>() {
            Ok(n) if well_formed && n <= max => Ok(()),
            _ => Err(format!(
                "invalid prefix length `/{}`: must be 0 to {max}",
                clip(bits)
            )),
        };
    }
    if let Some((from, to)) = p.split_once('-') {
        return match (from.parse::<IpAddr>(), to.parse::<IpAddr>()) {
            (Ok(a), Ok(b)) if a.is_ipv4() != b.is_ipv4() => {
                Err("both ends of an IP range must be of the same family".to_string())
            }
            (Ok(a), Ok(b)) if a > b => Err("an IP range must not end before it starts".to_string()),
            (Ok(_), Ok(_)) => Ok(()),
            _ => Err(EXPECTED.to_string()),
        };
    }
    Err(EXPECTED.to_string())
}

// ---------------------------------------------------------------------------
// Parser
// ---------------------------------------------------------------------------

/// What an expression evaluates to.
#[derive(Debug, Clone, Copy)]
struct Expr {
    kind: QueryKind,
    /// A number literal, or arithmetic on number literals only.
    literal: bool,
    start: usize,
}

impl Expr {
    fn metric(start: usize) -> Self {
        Expr {
            kind: QueryKind::Metric,
            literal: false,
            start,
        }
    }
}

struct BinOp {
    prec: u8,
    name: &'static str,
    set: bool,
}

/// What a log range inside a range aggregation contained.
struct LogRange {
    /// Offset of the `unwrap` keyword, if any.
    unwrap: Option<usize>,
}

struct Parser<'a> {
    src: &'a str,
    toks: Vec<Token>,
    pos: usize,
    /// End of the last consumed token.
    prev_end: usize,
    depth: usize,
    eof: Token,
}

impl<'a> Parser<'a> {
    fn new(src: &'a str) -> Self {
        Parser {
            src,
            toks: lex(src),
            pos: 0,
            prev_end: 0,
            depth: 0,
            eof: Token::simple(K::Eof, src.len(), src.len()),
        }
    }

    // -- token access -------------------------------------------------------

    fn peek(&self, n: usize) -> &Token {
        self.toks
            .get(self.pos + n)
            .or_else(|| self.toks.last())
            .unwrap_or(&self.eof)
    }

    fn tok(&self) -> &Token {
        self.peek(0)
    }

    fn kind(&self) -> K {
        self.tok().kind
    }

    fn bump(&mut self) {
        if let Some(t) = self.toks.get(self.pos) {
            self.prev_end = t.end;
        }
        if self.pos + 1 < self.toks.len() {
            self.pos += 1;
        }
    }

    fn text(&self, t: &Token) -> &'a str {
        self.src.get(t.start..t.end).unwrap_or("")
    }

    fn lower(&self, t: &Token) -> String {
        self.text(t).to_ascii_lowercase()
    }

    fn is_kw(&self, t: &Token, kw: &str) -> bool {
        t.kind == K::Ident && self.text(t).eq_ignore_ascii_case(kw)
    }

    fn at_kw(&self, kw: &str) -> bool {
        self.is_kw(self.tok(), kw)
    }

    fn at_grouping(&self) -> bool {
        self.at_kw("by") || self.at_kw("without")
    }

    fn starts_pipeline(&self) -> bool {
        matches!(
            self.kind(),
            K::Pipe | K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa
        )
    }

    fn describe(&self, t: &Token) -> String {
        match t.kind {
            K::Eof => "the end of the query".to_string(),
            K::Error => "invalid input".to_string(),
            K::Str => format!("the string {}", shorten(self.text(t), 40)),
            K::Range => format!("the range `{}`", shorten(self.text(t), 40)),
            _ => format!("`{}`", shorten(self.text(t), 40)),
        }
    }

    // -- errors -------------------------------------------------------------

    /// An error at the current token (or the lexing error it stands for).
    fn fail<T>(&self, msg: impl Into<String>) -> Result<T, LogqlError> {
        let t = self.tok();
        if let Some(e) = &t.error {
            return Err(e.clone());
        }
        Err(LogqlError::new(t.start, msg))
    }

    fn expected<T>(&self, what: &str) -> Result<T, LogqlError> {
        self.fail(format!(
            "expected {what}, found {}",
            self.describe(self.tok())
        ))
    }

    fn require(&mut self, kind: K, what: &str) -> Result<(), LogqlError> {
        if self.kind() != kind {
            return self.expected(what);
        }
        self.bump();
        Ok(())
    }

    fn expect_string(&mut self, what: &str) -> Result<Token, LogqlError> {
        if self.kind() != K::Str {
            return self.expected(what);
        }
        let t = self.tok().clone();
        self.bump();
        Ok(t)
    }

    /// Runs `f` one nesting level deeper, refusing to go past the limit.
    fn nest<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, LogqlError>,
    ) -> Result<T, LogqlError> {
        if self.depth >= MAX_NESTING {
            return Err(LogqlError::new(
                self.tok().start,
                format!(
                    "query is nested too deeply: at most {MAX_NESTING} levels of parentheses, \
                     function calls and `^` operators are supported"
                ),
            ));
        }
        self.depth += 1;
        let r = f(self);
        self.depth -= 1;
        r
    }

    /// Offset of position `rel` inside the string token `t`.
    fn offset_in(t: &Token, rel: usize) -> usize {
        if t.verbatim {
            t.start + 1 + rel
        } else {
            t.start
        }
    }

    fn check_regex(&self, t: &Token) -> Result<RegexInfo, LogqlError> {
        check_regex_syntax(&t.value).map_err(|(rel, msg)| {
            LogqlError::new(
                Self::offset_in(t, rel),
                format!("invalid regular expression {}: {msg}", clip(self.text(t))),
            )
        })
    }

    // -- expressions --------------------------------------------------------

    fn finish(&self, e: Expr) -> Result<(), LogqlError> {
        match self.kind() {
            K::Eof => Ok(()),
            K::RParen => self.fail("unexpected `)` without a matching `(`"),
            K::Eq => self.fail("unexpected `=`: use `==` to compare values"),
            K::Range => self.fail(
                "a range like [5m] cannot follow a metric expression: LogQL has no subqueries",
            ),
            _ if self.at_kw("offset") => self.fail(
                "`offset` must directly follow the range inside the aggregation, e.g. \
                 rate({app=\"x\"}[5m] offset 1h)",
            ),
            _ if e.kind == QueryKind::Log && self.starts_pipeline() => self.fail(
                "a pipeline must directly follow its stream selector: move it inside the \
                 parentheses",
            ),
            _ if e.kind == QueryKind::Log => self.expected(
                "a pipeline stage like `| json` or `|= \"text\"`, or the end of the query",
            ),
            _ => self.expected("a binary operator or the end of the query"),
        }
    }

    fn peek_binop(&self) -> Option<BinOp> {
        let t = self.tok();
        let (prec, name, set) = match t.kind {
            K::Ident => match self.lower(t).as_str() {
                "or" => (1, "or", true),
                "and" => (2, "and", true),
                "unless" => (2, "unless", true),
                _ => return None,
            },
            K::CmpEq => (3, "==", false),
            K::Neq => (3, "!=", false),
            K::Gt => (3, ">", false),
            K::Gte => (3, ">=", false),
            K::Lt => (3, "<", false),
            K::Lte => (3, "<=", false),
            K::Add => (4, "+", false),
            K::Sub => (4, "-", false),
            K::Mul => (5, "*", false),
            K::Div => (5, "/", false),
            K::Mod => (5, "%", false),
            K::Pow => (6, "^", false),
            _ => return None,
        };
        Some(BinOp { prec, name, set })
    }

    fn parse_expr(&mut self, min_prec: u8) -> Result<Expr, LogqlError> {
        self.nest(|p| p.parse_expr_inner(min_prec))
    }

    fn parse_expr_inner(&mut self, min_prec: u8) -> Result<Expr, LogqlError> {
        let mut lhs = self.parse_unary()?;
        if lhs.kind == QueryKind::Log && self.kind() == K::Range {
            return self.fail(
                "a range like [5m] is only allowed inside a range aggregation, e.g. \
                 count_over_time({app=\"x\"}[5m])",
            );
        }
        while let Some(op) = self.peek_binop() {
            if op.prec < min_prec {
                break;
            }
            if lhs.kind == QueryKind::Log {
                return self.fail(format!(
                    "binary operator `{}` needs metric queries on both sides, but its left side \
                     is a log query: turn it into a metric first, e.g. \
                     count_over_time({{app=\"x\"}}[5m])",
                    op.name
                ));
            }
            self.bump();
            self.parse_binop_modifiers()?;
            let next_min = if op.name == "^" { op.prec } else { op.prec + 1 };
            let rhs = self.parse_expr(next_min)?;
            if rhs.kind == QueryKind::Log {
                return Err(LogqlError::new(
                    rhs.start,
                    format!(
                        "binary operator `{}` needs metric queries on both sides, but its right \
                         side is a log query: turn it into a metric first, e.g. \
                         count_over_time({{app=\"x\"}}[5m])",
                        op.name
                    ),
                ));
            }
            if op.set && (lhs.literal || rhs.literal) {
                let (at, side) = if lhs.literal {
                    (lhs.start, "left")
                } else {
                    (rhs.start, "right")
                };
                return Err(LogqlError::new(
                    at,
                    format!(
                        "set operator `{}` needs vectors on both sides, but its {side} side is a \
                         number literal (use vector(n) instead)",
                        op.name
                    ),
                ));
            }
            lhs = Expr {
                kind: QueryKind::Metric,
                literal: lhs.literal && rhs.literal,
                start: lhs.start,
            };
        }
        Ok(lhs)
    }

    /// `bool`, `on(...)`/`ignoring(...)`, `group_left(...)`/`group_right(...)`.
    fn parse_binop_modifiers(&mut self) -> Result<(), LogqlError> {
        if self.at_kw("bool") {
            self.bump();
        }
        if self.at_kw("on") || self.at_kw("ignoring") {
            let kw = self.lower(self.tok());
            self.bump();
            self.require(K::LParen, &format!("`(` after `{kw}`"))?;
            self.parse_label_list(&format!("in `{kw}(...)`"))?;
            if self.at_kw("group_left") || self.at_kw("group_right") {
                let kw = self.lower(self.tok());
                self.bump();
                if self.kind() == K::LParen {
                    self.bump();
                    self.parse_label_list(&format!("in `{kw}(...)`"))?;
                }
            }
        } else if self.at_kw("group_left") || self.at_kw("group_right") {
            return self
                .fail("`group_left`/`group_right` must follow `on(...)` or `ignoring(...)`");
        }
        Ok(())
    }

    /// Label names up to and including `)`; the `(` is already consumed.
    /// Returns whether the list is non-empty.
    fn parse_label_list(&mut self, ctx: &str) -> Result<bool, LogqlError> {
        if self.kind() == K::RParen {
            self.bump();
            return Ok(false);
        }
        loop {
            self.label_name(ctx)?;
            match self.kind() {
                K::Comma => self.bump(),
                K::RParen => {
                    self.bump();
                    return Ok(true);
                }
                _ => return self.expected(&format!("`,` or `)` {ctx}")),
            }
        }
    }

    fn label_name(&mut self, ctx: &str) -> Result<String, LogqlError> {
        let t = self.tok();
        match t.kind {
            K::Ident => {
                let text = self.text(t);
                if is_reserved(text) {
                    return self.fail(format!(
                        "`{text}` is a LogQL keyword and cannot be used as a label name {ctx}"
                    ));
                }
                self.bump();
                Ok(clip(text))
            }
            K::Str => self.fail(format!(
                "expected a label name {ctx}, found {}: label names are written without quotes",
                self.describe(t)
            )),
            _ => self.expected(&format!("a label name {ctx}")),
        }
    }

    fn parse_unary(&mut self) -> Result<Expr, LogqlError> {
        if matches!(self.kind(), K::Add | K::Sub) {
            let start = self.tok().start;
            let sign = self.text(self.tok());
            if self.peek(1).kind == K::Number {
                self.bump();
                self.bump();
                return Ok(Expr {
                    kind: QueryKind::Metric,
                    literal: true,
                    start,
                });
            }
            self.bump();
            return self.expected(&format!(
                "a number after `{sign}` (LogQL only allows a sign directly before a number)"
            ));
        }
        self.parse_primary()
    }

    fn parse_primary(&mut self) -> Result<Expr, LogqlError> {
        let start = self.tok().start;
        match self.kind() {
            K::Number => {
                self.bump();
                Ok(Expr {
                    kind: QueryKind::Metric,
                    literal: true,
                    start,
                })
            }
            K::LParen => {
                self.bump();
                let inner = self.parse_expr(0)?;
                self.require(K::RParen, "`)` to close the parenthesis")?;
                Ok(Expr { start, ..inner })
            }
            K::LBrace => {
                self.parse_selector()?;
                self.parse_pipeline(false)?;
                Ok(Expr {
                    kind: QueryKind::Log,
                    literal: false,
                    start,
                })
            }
            K::Ident => self.parse_call(),
            K::Duration | K::Bytes => self.fail(format!(
                "unexpected {}: durations and sizes are only allowed in a range like [5m], after \
                 `offset` and in label filters like `| latency > 5s`",
                self.describe(self.tok())
            )),
            K::Range => self.fail(
                "a range like [5m] must follow a log query inside a range aggregation, e.g. \
                 count_over_time({app=\"x\"}[5m])",
            ),
            _ => self.expected(
                "a stream selector like {app=\"x\"}, a function like rate(...), a number or `(`",
            ),
        }
    }

    fn parse_call(&mut self) -> Result<Expr, LogqlError> {
        let t = self.tok();
        let start = t.start;
        let name = self.text(t).to_ascii_lowercase();
        let text = clip(self.text(t));
        let next = self.peek(1).kind;
        if RANGE_OPS.contains(&name.as_str()) {
            self.bump();
            if next == K::LParen {
                return self.parse_range_agg(&name, start);
            }
            if self.at_grouping() {
                return self.fail(format!(
                    "`by`/`without` goes after the parentheses of {name}(...), and only for the \
                     *_over_time functions that support it"
                ));
            }
            return self.expected(&format!("`(` after `{name}`"));
        }
        if VECTOR_OPS.contains(&name.as_str()) {
            return self.parse_vector_agg(&name, start);
        }
        match name.as_str() {
            "label_replace" => return self.parse_label_replace(start),
            "vector" => return self.parse_vector(start),
            _ => {}
        }
        if next == K::LParen {
            if name == "variants" {
                return self.fail(
                    "`variants(...) of (...)` queries are experimental and not supported by mop \
                     validate",
                );
            }
            if PROMQL_ONLY.contains(&name.as_str()) {
                return self.fail(format!(
                    "`{text}` is a PromQL function that LogQL does not have; LogQL functions are \
                     the range aggregations ({}), the vector aggregations ({}), label_replace and \
                     vector",
                    RANGE_OPS.join(", "),
                    VECTOR_OPS.join(", ")
                ));
            }
            return self.fail(format!(
                "unknown function `{text}`: LogQL functions are the range aggregations ({}), the \
                 vector aggregations ({}), label_replace and vector",
                RANGE_OPS.join(", "),
                VECTOR_OPS.join(", ")
            ));
        }
        self.fail(format!(
            "unexpected `{text}`: expected a stream selector like {{app=\"x\"}}, a function like \
             rate(...) or a number"
        ))
    }

    fn parse_grouping(&mut self) -> Result<(usize, bool), LogqlError> {
        let at = self.tok().start;
        let kw = self.lower(self.tok());
        self.bump();
        self.require(K::LParen, &format!("`(` after `{kw}`"))?;
        let labels = self.parse_label_list(&format!("in `{kw} (...)`"))?;
        Ok((at, labels))
    }

    fn parse_range_agg(&mut self, name: &str, start: usize) -> Result<Expr, LogqlError> {
        self.require(K::LParen, &format!("`(` after `{name}`"))?;
        let is_quantile = name == "quantile_over_time";
        let mut param = None;
        if self.kind() == K::Number && self.peek(1).kind == K::Comma {
            param = Some(self.tok().start);
            self.bump();
            self.bump();
        }
        if is_quantile && param.is_none() {
            return self.expected(
                "the quantile as the first argument of quantile_over_time, e.g. \
                 quantile_over_time(0.99, {app=\"x\"} | unwrap latency [5m])",
            );
        }
        if let Some(at) = param
            && !is_quantile
        {
            return Err(LogqlError::new(
                at,
                format!("{name} does not take a parameter: write {name}({{app=\"x\"}}[5m])"),
            ));
        }
        let range = self.nest(|p| p.parse_log_range(name))?;
        match range.unwrap {
            Some(at) if REFUSES_UNWRAP.contains(&name) => {
                return Err(LogqlError::new(
                    at,
                    format!(
                        "{name} works on log lines and cannot be used with `| unwrap`: remove the \
                         unwrap, or aggregate the unwrapped values with sum_over_time, \
                         avg_over_time, max_over_time, ..."
                    ),
                ));
            }
            None if NEEDS_UNWRAP.contains(&name) => {
                return Err(LogqlError::new(
                    start,
                    format!(
                        "{name} aggregates sample values and needs `| unwrap <label>` in its \
                         pipeline, e.g. {name}({}{{app=\"x\"}} | logfmt | unwrap duration [5m])",
                        if name == "quantile_over_time" {
                            "0.99, "
                        } else {
                            ""
                        }
                    ),
                ));
            }
            _ => {}
        }
        if self.kind() != K::RParen {
            if self.at_kw("offset") {
                return self.fail(format!(
                    "`offset` must directly follow the range, e.g. {name}({{app=\"x\"}}[5m] \
                     offset 1h)"
                ));
            }
            return self.expected(&format!("`)` to close {name}("));
        }
        self.bump();
        if self.at_grouping() {
            if !RANGE_GROUPING.contains(&name) {
                return self.fail(format!(
                    "{name} does not support `by`/`without`: aggregate its result instead, e.g. \
                     sum by (label) ({name}(...))"
                ));
            }
            self.parse_grouping()?;
        }
        Ok(Expr::metric(start))
    }

    /// The log query and range inside a range aggregation, in any of the
    /// shapes Loki accepts.
    fn parse_log_range(&mut self, name: &str) -> Result<LogRange, LogqlError> {
        let start = self.tok().start;
        match self.kind() {
            K::LParen => {
                self.bump();
                match self.kind() {
                    K::LParen => {
                        let inner = self.nest(|p| p.parse_log_range(name))?;
                        self.require(K::RParen, "`)`")?;
                        Ok(inner)
                    }
                    K::LBrace => {
                        self.parse_selector()?;
                        let (piped, unwrap) = self.parse_pipeline(true)?;
                        if self.kind() == K::Range {
                            let range = self.parse_range_tail(name, start, piped, unwrap)?;
                            self.require(K::RParen, "`)`")?;
                            return Ok(range);
                        }
                        self.require(K::RParen, "`)` or a range like [5m]")?;
                        if self.kind() == K::RParen {
                            return self.expected(
                                "a range like [5m] after the parenthesised log query (only one \
                                 pair of parentheses may enclose a log query before its range)",
                            );
                        }
                        if self.kind() != K::Range {
                            return self.missing_range(name, start, false);
                        }
                        self.bump();
                        self.parse_offset()?;
                        Ok(LogRange { unwrap })
                    }
                    _ => self.expected("a stream selector like {app=\"x\"}"),
                }
            }
            K::LBrace => {
                self.parse_selector()?;
                let (piped, unwrap) = self.parse_pipeline(true)?;
                self.parse_range_tail(name, start, piped, unwrap)
            }
            K::Ident if self.peek(1).kind == K::LParen => self.fail(format!(
                "{name} needs a log query with a range, like {name}({{app=\"x\"}}[5m]), not \
                 another function: LogQL has no subqueries"
            )),
            _ => self.expected(&format!(
                "a log query with a range inside {name}(...), like {name}({{app=\"x\"}}[5m])"
            )),
        }
    }

    fn parse_range_tail(
        &mut self,
        name: &str,
        log_start: usize,
        piped: bool,
        unwrap: Option<usize>,
    ) -> Result<LogRange, LogqlError> {
        let piped = piped || unwrap.is_some();
        if self.kind() != K::Range {
            return self.missing_range(name, log_start, piped);
        }
        self.bump();
        self.parse_offset()?;
        if !piped {
            let (_, unwrap) = self.parse_pipeline(true)?;
            return Ok(LogRange { unwrap });
        }
        if self.starts_pipeline() {
            return self.fail(
                "the log pipeline must be written entirely before or entirely after the range, \
                 not on both sides",
            );
        }
        Ok(LogRange { unwrap })
    }

    fn missing_range<T>(&self, name: &str, log_start: usize, piped: bool) -> Result<T, LogqlError> {
        if self.kind() == K::RParen {
            let src = self.src.get(log_start..self.prev_end).unwrap_or("").trim();
            let shown = if src.chars().count() <= 80 {
                src
            } else {
                "<log query>"
            };
            let sep = if piped { " " } else { "" };
            return self.fail(format!(
                "{name} needs a range: write `{name}({shown}{sep}[5m])`"
            ));
        }
        let after = if piped {
            "the log pipeline"
        } else {
            "the stream selector"
        };
        self.expected(&format!("a range like [5m] after {after}"))
    }

    fn parse_offset(&mut self) -> Result<(), LogqlError> {
        if self.at_kw("offset") {
            self.bump();
            self.require(K::Duration, "a duration like 1h after `offset`")?;
        }
        Ok(())
    }

    fn parse_vector_agg(&mut self, name: &str, start: usize) -> Result<Expr, LogqlError> {
        self.bump();
        let mut grouping = None;
        if self.at_grouping() {
            grouping = Some(self.parse_grouping()?);
        }
        let what = match grouping {
            Some(_) => format!("`(` and the argument of {name} after its `by`/`without` clause"),
            None => format!("`(` after `{name}`"),
        };
        self.require(K::LParen, &what)?;
        let mut param = None;
        if self.kind() == K::Number && self.peek(1).kind == K::Comma {
            param = Some((self.tok().start, clip(self.text(self.tok()))));
            self.bump();
            self.bump();
        }
        let takes_param = matches!(name, "topk" | "bottomk" | "approx_topk");
        let inner = self.parse_expr(0)?;
        if inner.kind == QueryKind::Log {
            return Err(LogqlError::new(
                inner.start,
                format!(
                    "{name}(...) aggregates samples, but its argument is a log query: turn it \
                     into a metric first, e.g. {name}(count_over_time({{app=\"x\"}}[5m]))"
                ),
            ));
        }
        if takes_param && self.kind() == K::Comma {
            return self.fail(format!(
                "{name} takes the number of series first: {name}(5, <expression>)"
            ));
        }
        self.require(K::RParen, &format!("`)` to close {name}("))?;
        if self.at_grouping() {
            if grouping.is_some() {
                return self.fail(format!(
                    "{name} already has a `by`/`without` clause before its parentheses"
                ));
            }
            grouping = Some(self.parse_grouping()?);
        }
        if takes_param {
            let Some((at, text)) = param else {
                return Err(LogqlError::new(
                    start,
                    format!(
                        "{name} needs the number of series as its first argument, e.g. {name}(5, \
                         sum by (app) (rate({{app=\"x\"}}[5m])))"
                    ),
                ));
            };
            match text.parse::<i64>() {
                Ok(n) if n > 0 => {}
                Ok(_) => {
                    return Err(LogqlError::new(
                        at,
                        format!("the parameter of {name} must be greater than 0, found `{text}`"),
                    ));
                }
                Err(_) => {
                    return Err(LogqlError::new(
                        at,
                        format!("the parameter of {name} must be a whole number, found `{text}`"),
                    ));
                }
            }
            if name == "approx_topk"
                && let Some((at, _)) = grouping
            {
                return Err(LogqlError::new(
                    at,
                    "approx_topk does not support `by`/`without`",
                ));
            }
        } else if let Some((at, _)) = param {
            return Err(LogqlError::new(
                at,
                format!("{name} does not take a parameter; only topk, bottomk and approx_topk do"),
            ));
        }
        if matches!(name, "sort" | "sort_desc")
            && let Some((at, true)) = grouping
        {
            return Err(LogqlError::new(
                at,
                format!("{name} does not support grouping by labels"),
            ));
        }
        Ok(Expr::metric(start))
    }

    fn parse_label_replace(&mut self, start: usize) -> Result<Expr, LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `label_replace`")?;
        let inner = self.parse_expr(0)?;
        if inner.kind == QueryKind::Log {
            return Err(LogqlError::new(
                inner.start,
                "label_replace needs a metric query as its first argument, e.g. \
                 label_replace(rate({app=\"x\"}[5m]), \"dst\", \"$1\", \"src\", \"(.*)\")",
            ));
        }
        let args = [
            "destination label",
            "replacement",
            "source label",
            "regular expression",
        ];
        for (i, what) in args.iter().enumerate() {
            self.require(
                K::Comma,
                &format!(
                    "`,` and the {what}: label_replace takes 5 arguments, \
                     label_replace(<expr>, \"dst\", \"replacement\", \"src\", \"regex\")"
                ),
            )?;
            let s =
                self.expect_string(&format!("the {what} of label_replace as a quoted string"))?;
            if i == 0 && !is_label_name(&s.value) {
                return Err(LogqlError::new(
                    s.start,
                    format!(
                        "invalid destination label name {} in label_replace: label names match \
                         [a-zA-Z_][a-zA-Z0-9_]*",
                        clip(self.text(&s))
                    ),
                ));
            }
            if i == 3 {
                self.check_regex(&s)?;
            }
        }
        self.require(K::RParen, "`)` to close label_replace(")?;
        Ok(Expr::metric(start))
    }

    fn parse_vector(&mut self, start: usize) -> Result<Expr, LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `vector`")?;
        self.require(K::Number, "a number inside vector(...), e.g. vector(0)")?;
        self.require(K::RParen, "`)` to close vector(")?;
        Ok(Expr::metric(start))
    }

    // -- log queries --------------------------------------------------------

    fn parse_selector(&mut self) -> Result<(), LogqlError> {
        let open = self.tok().start;
        self.require(K::LBrace, "`{`")?;
        if self.kind() == K::RBrace {
            return Err(LogqlError::new(
                open,
                "a stream selector needs at least one label matcher, e.g. {app=\"x\"}",
            ));
        }
        let mut selective = false;
        loop {
            let name = self.label_name("in the stream selector")?;
            let op = self.kind();
            if !matches!(op, K::Eq | K::Neq | K::Re | K::Nre) {
                if op == K::CmpEq {
                    return self.fail("use `=` instead of `==` in a stream selector");
                }
                return self.expected(&format!(
                    "a matcher operator (=, !=, =~, !~) after `{name}` in the stream selector"
                ));
            }
            let op_text = self.text(self.tok());
            self.bump();
            let value = self.expect_string(&format!("a quoted string after `{name}{op_text}`"))?;
            let matches_empty = match op {
                K::Eq => value.value.is_empty(),
                K::Neq => !value.value.is_empty(),
                K::Re => self.check_regex(&value)?.nullable,
                _ => !self.check_regex(&value)?.nullable,
            };
            selective |= !matches_empty;
            match self.kind() {
                K::Comma => {
                    self.bump();
                    if self.kind() == K::RBrace {
                        return self.expected("a label matcher after `,`");
                    }
                }
                K::RBrace => {
                    self.bump();
                    break;
                }
                _ => return self.expected("`,` or `}` in stream selector"),
            }
        }
        if !selective {
            return Err(LogqlError::new(
                open,
                "stream selector needs at least one matcher that does not match the empty \
                 string, e.g. {app=\"x\"} or {app=~\".+\"}; matchers like app=\"\", app!=\"x\" \
                 or app=~\".*\" alone would select every stream",
            ));
        }
        Ok(())
    }

    /// Pipeline stages after a selector (or a range). Returns whether there
    /// was any stage and the offset of `unwrap`, which ends the pipeline.
    fn parse_pipeline(&mut self, allow_unwrap: bool) -> Result<(bool, Option<usize>), LogqlError> {
        let mut piped = false;
        loop {
            match self.kind() {
                K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa => {
                    self.parse_line_filter()?;
                }
                K::Pipe => {
                    let next = self.peek(1);
                    let stage = if next.kind == K::Ident {
                        self.lower(next)
                    } else {
                        String::new()
                    };
                    if stage == "unwrap" {
                        let at = next.start;
                        self.bump();
                        if !allow_unwrap {
                            return self.fail(
                                "`| unwrap` is only allowed inside a range aggregation over \
                                 unwrapped values, e.g. sum_over_time({app=\"x\"} | logfmt | \
                                 unwrap bytes [5m])",
                            );
                        }
                        self.bump();
                        self.parse_unwrap()?;
                        return Ok((piped, Some(at)));
                    }
                    self.bump();
                    self.parse_stage(&stage)?;
                }
                _ => return Ok((piped, None)),
            }
            piped = true;
        }
    }

    fn parse_stage(&mut self, stage: &str) -> Result<(), LogqlError> {
        match stage {
            "json" => {
                self.bump();
                self.parse_extractions("json")
            }
            "logfmt" => {
                self.bump();
                while self.kind() == K::Flag {
                    self.bump();
                }
                self.parse_extractions("logfmt")
            }
            "regexp" => {
                self.bump();
                let s = self.expect_string("a quoted regular expression after `| regexp`")?;
                let info = self.check_regex(&s)?;
                if info.names.is_empty() {
                    return Err(LogqlError::new(
                        s.start,
                        "`| regexp` needs at least one named capture group like (?P<name>...) \
                         to extract labels",
                    ));
                }
                if let Some(bad) = info.names.iter().find(|n| !is_label_name(n)) {
                    return Err(LogqlError::new(
                        s.start,
                        format!(
                            "invalid extracted label name `{}` in `| regexp`: label names \
                             match [a-zA-Z_][a-zA-Z0-9_]*",
                            clip(bad)
                        ),
                    ));
                }
                Ok(())
            }
            "pattern" => {
                self.bump();
                let s = self.expect_string("a quoted pattern after `| pattern`")?;
                check_pattern(&s.value).map_err(|(rel, msg)| {
                    LogqlError::new(Self::offset_in(&s, rel), format!("invalid pattern: {msg}"))
                })
            }
            "unpack" | "decolorize" => {
                self.bump();
                Ok(())
            }
            "line_format" => {
                self.bump();
                self.expect_string("a quoted template after `| line_format`")?;
                Ok(())
            }
            "label_format" => {
                self.bump();
                self.parse_label_formats()
            }
            "drop" | "keep" => {
                self.bump();
                self.parse_named_matchers(stage)
            }
            _ if matches!(self.kind(), K::Ident | K::LParen) => self.parse_label_filter_expr(true),
            _ => self.expected(
                "a pipeline stage after `|`: json, logfmt, regexp, pattern, unpack, line_format, \
                 label_format, drop, keep, decolorize, unwrap, or a label filter like \
                 level=\"error\"",
            ),
        }
    }

    /// Optional `label="expression", label, ...` after `| json`/`| logfmt`.
    fn parse_extractions(&mut self, parser: &str) -> Result<(), LogqlError> {
        if self.kind() != K::Ident || is_reserved(self.text(self.tok())) {
            return Ok(());
        }
        let ctx = format!("in `| {parser}`");
        loop {
            self.label_name(&ctx)?;
            if self.kind() == K::Eq {
                self.bump();
                self.expect_string(&format!("a quoted expression after `=` {ctx}"))?;
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    fn parse_label_formats(&mut self) -> Result<(), LogqlError> {
        loop {
            let name = self.label_name("in `| label_format`")?;
            self.require(
                K::Eq,
                &format!(
                    "`=` after `{name}` in `| label_format` (e.g. `{name}=other_label` or \
                     `{name}=\"{{{{.other_label}}}}\"`)"
                ),
            )?;
            match self.kind() {
                K::Str => self.bump(),
                K::Ident => {
                    self.label_name("after `=` in `| label_format`")?;
                }
                _ => {
                    return self.expected(
                        "a label name or a quoted template after `=` in `| label_format`",
                    );
                }
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    fn parse_named_matchers(&mut self, stage: &str) -> Result<(), LogqlError> {
        let ctx = format!("in `| {stage}`");
        loop {
            self.label_name(&ctx)?;
            let op = self.kind();
            if matches!(op, K::Eq | K::Neq | K::Re | K::Nre) {
                self.bump();
                let s = self.expect_string(&format!("a quoted string after the operator {ctx}"))?;
                if matches!(op, K::Re | K::Nre) {
                    self.check_regex(&s)?;
                }
            }
            if self.kind() != K::Comma {
                return Ok(());
            }
            self.bump();
        }
    }

    fn parse_line_filter(&mut self) -> Result<(), LogqlError> {
        let op = self.kind();
        let op_text = self.text(self.tok());
        self.bump();
        self.parse_line_filter_value(op, op_text)?;
        // A log query is never the left side of the binary `or`, so an `or`
        // here always continues the line filter.
        while self.at_kw("or") {
            self.bump();
            self.parse_line_filter_value(op, op_text)?;
        }
        Ok(())
    }

    fn parse_line_filter_value(&mut self, op: K, op_text: &str) -> Result<(), LogqlError> {
        match self.kind() {
            K::Str => {
                if matches!(op, K::PipeMatch | K::Nre) {
                    let t = self.tok().clone();
                    self.check_regex(&t)?;
                }
                self.bump();
                Ok(())
            }
            K::Ident if self.at_kw("ip") && self.peek(1).kind == K::LParen => {
                if !matches!(op, K::PipeExact | K::Neq) {
                    return self.fail(format!(
                        "ip(...) can only be used with the `|=` and `!=` line filters, not with \
                         `{op_text}`"
                    ));
                }
                self.parse_ip_call()
            }
            _ => self.expected(&format!(
                "a quoted string after the line filter `{op_text}` or its `or`"
            )),
        }
    }

    /// `ip("...")`, at the `ip` keyword.
    fn parse_ip_call(&mut self) -> Result<(), LogqlError> {
        self.bump();
        self.require(K::LParen, "`(` after `ip`")?;
        let s = self.expect_string("a quoted IP address, CIDR prefix or range inside ip(...)")?;
        if let Err(why) = check_ip_pattern(&s.value) {
            return Err(LogqlError::new(
                s.start,
                format!("invalid ip() pattern {}: {why}", clip(self.text(&s))),
            ));
        }
        self.require(K::RParen, "`)` to close ip(")
    }

    /// A label filter expression: terms joined by `and`, `or`, `,` or
    /// nothing, with parentheses.
    fn parse_label_filter_expr(&mut self, after_pipe: bool) -> Result<(), LogqlError> {
        self.parse_label_filter_term(after_pipe)?;
        loop {
            let t = self.tok();
            if self.is_kw(t, "and") || self.is_kw(t, "or") || t.kind == K::Comma {
                self.bump();
                self.parse_label_filter_term(false)?;
            } else if t.kind == K::LParen || (t.kind == K::Ident && !is_reserved(self.text(t))) {
                self.parse_label_filter_term(false)?;
            } else {
                return Ok(());
            }
        }
    }

    fn parse_label_filter_term(&mut self, after_pipe: bool) -> Result<(), LogqlError> {
        match self.kind() {
            K::LParen => self.nest(|p| {
                p.bump();
                p.parse_label_filter_expr(false)?;
                p.require(K::RParen, "`)` to close the label filter group")
            }),
            K::Ident => {
                let name = self.label_name("in the label filter")?;
                let op = self.kind();
                let op_text = self.text(self.tok());
                match op {
                    K::Eq | K::Neq => {
                        self.bump();
                        match self.kind() {
                            K::Str => {
                                self.bump();
                                Ok(())
                            }
                            K::Ident if self.at_kw("ip") && self.peek(1).kind == K::LParen => {
                                self.parse_ip_call()
                            }
                            _ => self.parse_filter_value(op_text, true),
                        }
                    }
                    K::Re | K::Nre => {
                        self.bump();
                        let s = self.expect_string(&format!(
                            "a quoted regular expression after `{name}{op_text}`"
                        ))?;
                        self.check_regex(&s)?;
                        Ok(())
                    }
                    K::CmpEq | K::Gt | K::Gte | K::Lt | K::Lte => {
                        self.bump();
                        self.parse_filter_value(op_text, false)
                    }
                    _ => {
                        let hint = if after_pipe && name == "distinct" {
                            " (`| distinct` was removed from LogQL before it was ever released)"
                                .to_string()
                        } else if after_pipe {
                            format!(
                                " (`{name}` is not a pipeline stage either; stages are json, \
                                 logfmt, regexp, pattern, unpack, line_format, label_format, \
                                 drop, keep, decolorize and unwrap)"
                            )
                        } else {
                            String::new()
                        };
                        self.expected(&format!(
                            "a comparison operator (=, !=, =~, !~, ==, >, >=, <, <=) after label \
                             `{name}`{hint}"
                        ))
                    }
                }
            }
            _ => self.expected("a label filter like level=\"error\" or status >= 500"),
        }
    }

    /// The right-hand side of a numeric, duration or size label filter.
    fn parse_filter_value(&mut self, op_text: &str, strings_ok: bool) -> Result<(), LogqlError> {
        match self.kind() {
            K::Number | K::Duration | K::Bytes => {
                self.bump();
                Ok(())
            }
            K::Add | K::Sub if self.peek(1).kind == K::Number => {
                self.bump();
                self.bump();
                Ok(())
            }
            K::Str => self.expected(&format!(
                "a number, a duration like 5s or a size like 20KB after `{op_text}` (compare \
                 strings with `=`, `!=`, `=~` or `!~`)"
            )),
            _ if strings_ok => self.expected(&format!(
                "a quoted string, ip(\"...\"), a number, a duration like 5s or a size like 20KB \
                 after `{op_text}`"
            )),
            _ => self.expected(&format!(
                "a number, a duration like 5s or a size like 20KB after `{op_text}`"
            )),
        }
    }

    /// After `| unwrap`: the label, optionally converted, then only label
    /// filters.
    fn parse_unwrap(&mut self) -> Result<(), LogqlError> {
        if self.kind() == K::Ident && self.peek(1).kind == K::LParen {
            let conv = clip(&self.lower(self.tok()));
            if !matches!(conv.as_str(), "bytes" | "duration" | "duration_seconds") {
                return self.fail(format!(
                    "unknown conversion `{conv}(...)` in `| unwrap`: use bytes(label), \
                     duration(label) or duration_seconds(label)"
                ));
            }
            self.bump();
            self.bump();
            self.label_name(&format!("inside `{conv}(...)`"))?;
            self.require(K::RParen, &format!("`)` to close {conv}("))?;
        } else if self.kind() == K::Ident {
            self.label_name("after `| unwrap`")?;
        } else {
            return self.expected(
                "a label name after `| unwrap`, e.g. `| unwrap latency` or `| unwrap \
                 duration(latency)`",
            );
        }
        loop {
            match self.kind() {
                K::Pipe => {
                    let next = self.peek(1);
                    if next.kind == K::Ident && STAGES.contains(&self.lower(next).as_str()) {
                        return Err(LogqlError::new(
                            next.start,
                            format!(
                                "only label filters (e.g. `| __error__=\"\"`) may follow `| \
                                 unwrap`: move `| {}` before the unwrap",
                                self.text(next)
                            ),
                        ));
                    }
                    self.bump();
                    self.parse_label_filter_expr(false)?;
                }
                K::PipeExact | K::PipeMatch | K::PipePattern | K::Neq | K::Nre | K::Npa => {
                    return self.fail(
                        "line filters must come before `| unwrap`; only label filters (e.g. `| \
                         __error__=\"\"`) may follow it",
                    );
                }
                _ => return Ok(()),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;
    use QueryKind::{Log, Metric};

    /// Valid queries in the shapes of the Loki documentation.
    const VALID: &[(&str, QueryKind)] = &[
        // Stream selectors.
        (r#"{app="mysql",name="mysql-backup"}"#, Log),
        (r#"{name=~"mysql.+"}"#, Log),
        (r#"{name!~"mysql.+", env="prod"}"#, Log),
        (r#"{name!~"mysql-\\d+", cluster="us-central1"}"#, Log),
        (r#"{app!=""}"#, Log),
        ("{app=`raw\\string`}", Log),
        // Line filters.
        (r#"{job="mysql"} |= "error""#, Log),
        (r#"{job="mysql"} |= "error" != "timeout""#, Log),
        (
            r#"{container="frontend"} |~ "(?i)error|fatal" !~ `debug\d+`"#,
            Log,
        ),
        (r#"{job="mysql"} |= "error" or "fatal" or "panic""#, Log),
        (
            r#"{app="x"} |> "<_> level=error <_>" !> "<_> debug <_>""#,
            Log,
        ),
        (r#"{job_name="myapp"} |= ip("192.168.4.5/16")"#, Log),
        (
            r#"{job_name="myapp"} != ip("192.168.4.5-192.168.4.20")"#,
            Log,
        ),
        (r#"{app="x"}|="metrics.go"|logfmt"#, Log),
        // Parsers and formatting.
        (
            r#"{container="query-frontend",namespace="loki-dev"} |= "metrics.go" | logfmt | duration > 10s and throughput_mb < 500"#,
            Log,
        ),
        (
            r#"{app="x"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]""#,
            Log,
        ),
        (r#"{app="x"} | json | json servers"#, Log),
        (
            r#"{app="x"} | logfmt --strict --keep-empty host, status="response.status""#,
            Log,
        ),
        (
            r#"{job="x"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+) \\((?P<status>\\d+?)\\) (?P<duration>.*)""#,
            Log,
        ),
        (
            r#"{job="nginx"} | pattern "<ip> - - <_> \"<method> <uri> <_>\" <status> <size> <_> \"<agent>\" <_>""#,
            Log,
        ),
        (r#"{job="x"} | unpack | decolorize"#, Log),
        (
            r#"{job="x"} | json | line_format "{{.query}} {{.duration}}""#,
            Log,
        ),
        (
            r#"{job="x"} | logfmt | label_format foo=bar, status="{{.status_code}}""#,
            Log,
        ),
        (
            r#"{job="x"} | logfmt | drop level, method="GET", path=~"/api.*", __error__"#,
            Log,
        ),
        (r#"{job="x"} | logfmt | keep level, method!="GET""#, Log),
        // Label filters.
        (
            r#"{job="x"} | logfmt | duration >= 20ms or (method="GET" and size <= 20KB)"#,
            Log,
        ),
        (
            r#"{job="x"} | json | status >= 500, size > 1.5MiB, latency < 1.5s, ratio == -0.5"#,
            Log,
        ),
        (
            r#"{job="x"} | logfmt | level="error" status_code!="200" | __error__="""#,
            Log,
        ),
        (
            r#"{job="x"} | logfmt | remote_addr = ip("2001:db8::1-2001:db8::8") | level =~ "err|warn""#,
            Log,
        ),
        (r#"{job="x"} | json | duration > 1h30m | bytes < 10M"#, Log),
        // Comments and parentheses.
        ("{app=\"x\"} # only app x\n  |= \"foo\" # and foo", Log),
        (r#"({app="x"} |= "a")"#, Log),
        // Range aggregations.
        (r#"count_over_time({job="mysql"}[5m])"#, Metric),
        (r#"count_over_time({app="x"} |= "a" [5m])"#, Metric),
        (r#"count_over_time({app="x"}[5m] |= "a" | json)"#, Metric),
        (r#"bytes_rate({app="x"}[30s])"#, Metric),
        (r#"sum(bytes_over_time({app="x"}[1h] offset 1d))"#, Metric),
        (r#"absent_over_time({app="x"}[100ms])"#, Metric),
        (
            r#"rate({app="x"}[1w]) * 0 + count_over_time({app="x"}[1d])"#,
            Metric,
        ),
        (
            r#"sum by (host) (rate({job="mysql"} |= "error" != "timeout" | json | duration > 10s [1m]))"#,
            Metric,
        ),
        (
            r#"avg(rate(({job="nginx"} |= "GET")[10s])) by (region)"#,
            Metric,
        ),
        (
            r#"sum by (org_id) (sum_over_time({cluster="ops-tools1",container="loki-dev"} |= "metrics.go" | logfmt | unwrap bytes_processed [1m]))"#,
            Metric,
        ),
        (
            r#"quantile_over_time(0.99, {cluster="ops-tools1",container="ingress-nginx"} | json | __error__ = "" | unwrap request_time [1m]) by (path)"#,
            Metric,
        ),
        (
            r#"avg_over_time({app="x"} | logfmt | unwrap duration(latency) | __error__="" [5m]) by (pod)"#,
            Metric,
        ),
        (
            r#"max_over_time({app="x"} | json | unwrap duration_seconds(elapsed) [5m]) without (instance)"#,
            Metric,
        ),
        (
            r#"rate({app="x"} | logfmt | unwrap bytes(size) [5m])"#,
            Metric,
        ),
        (
            r#"min_over_time({app="x"}[5m] offset -1h | logfmt | unwrap latency)"#,
            Metric,
        ),
        (
            r#"first_over_time({app="x"} | unwrap latency [5m]) by (pod)"#,
            Metric,
        ),
        (
            r#"last_over_time(({app="x"} | logfmt | unwrap latency)[5m])"#,
            Metric,
        ),
        (
            r#"stddev_over_time({app="x"} | logfmt | unwrap latency [5m])"#,
            Metric,
        ),
        (
            r#"stdvar_over_time({app="x"} | logfmt | unwrap latency [1h30m])"#,
            Metric,
        ),
        (
            r#"rate_counter({app="x"} | logfmt | unwrap requests_total [5m])"#,
            Metric,
        ),
        // Vector aggregations.
        (
            r#"topk(10, sum(rate({region="us-east1"}[5m])) by (name))"#,
            Metric,
        ),
        (r#"bottomk by (app) (3, rate({app="x"}[5m]))"#, Metric),
        (
            r#"approx_topk(5, sum by (path) (rate({app="x"}[5m])))"#,
            Metric,
        ),
        (r#"sum without (instance) (rate({app="x"}[5m]))"#, Metric),
        (r#"sort_desc(sum by (app) (rate({app="x"}[5m])))"#, Metric),
        (
            r#"count(avg by (level) (count_over_time({app="x"} | logfmt [5m]))) > bool 1"#,
            Metric,
        ),
        (r#"SUM(Rate({app="x"}[5m])) BY (app)"#, Metric),
        // Binary operations, literals, functions.
        (
            r#"sum(rate({app="foo", level="warn"}[1m])) / sum(rate({app="foo", level="error"}[1m])) * 100"#,
            Metric,
        ),
        (
            r#"sum by (job) (count_over_time({app="foo"} |= "error" [5m])) > 10 and on (job) sum by (job) (rate({app="bar"}[5m])) unless sum(rate({app="baz"}[5m]))"#,
            Metric,
        ),
        (
            r#"sum by (a) (rate({app="x"}[1m])) / ignoring(b) group_left(c) sum by (a, b) (rate({app="x"}[1m]))"#,
            Metric,
        ),
        (
            r#"rate({app="x"}[1m]) * on() group_right rate({app="y"}[1m])"#,
            Metric,
        ),
        (
            r#"label_replace(rate({job="api-server",service="a:c"} |= "err" [5m]), "foo", "$1", "service", "(.*):.*")"#,
            Metric,
        ),
        (
            r#"sum(count_over_time({app="x"}[5m])) or vector(0)"#,
            Metric,
        ),
        (r#"vector(1)"#, Metric),
        (r#"-1 * 2 ^ 3 ^ 2 + 1e3 - -.5 % 4"#, Metric),
        (r#"(((count_over_time({app="x"}[5m]))))"#, Metric),
        // Alerting-rule shapes.
        (
            r#"sum(rate({namespace="prod", container=~"api|web"} |~ `(?i)(error|exception)` [5m])) by (container) / sum(rate({namespace="prod", container=~"api|web"}[5m])) by (container) > 0.05"#,
            Metric,
        ),
        (
            r#"topk(3, sum by (path) (count_over_time({app="nginx"} | pattern `<ip> - - [<_>] "<method> <path> <_>" <status> <_>` | status >= 500 [5m])))"#,
            Metric,
        ),
        (
            r#"max_over_time({app="x"} | regexp `took (?P<took>\d+)ms` | unwrap took [5m]) by (instance) > 5000"#,
            Metric,
        ),
        (r#"count_over_time({app="x"}|="oom"[5m])>=1"#, Metric),
        (r#"sum(rate({app="x"}[1m]))by(pod)"#, Metric),
        (
            "sum by (job) (\n  count_over_time({namespace=\"tns\"} |= \"level=error\"[5m])\n/\n  count_over_time({namespace=\"tns\"}[5m])\n) * 100",
            Metric,
        ),
        (
            r#"{app="foo"} |= "bar" | json | latency >= 250ms or ( status_code < 500 and status_code > 200) | foo="bar" buzz!="blip", blop=~"boop" or fuzz==5"#,
            Log,
        ),
        (
            r#"{ foo = "bar" , ip="foo"}|logfmt|= ip("127.0.0.1")|ip="2.3.4.5"|ipaddr=ip("4.5.6.7")"#,
            Log,
        ),
        (r#"1 >= 1 > bool 1"#, Metric),
    ];

    #[track_caller]
    fn assert_invalid(query: &str, offset: usize, phrase: &str) {
        match parse(query) {
            Ok(kind) => panic!("expected an error for {query:?}, got {kind:?}"),
            Err(e) => {
                assert_eq!(e.offset, offset, "wrong offset for {query:?}: {e}");
                assert!(
                    e.message.contains(phrase),
                    "message for {query:?} lacks {phrase:?}: {}",
                    e.message
                );
            }
        }
    }

    #[test]
    fn valid_queries_parse_with_the_right_kind() {
        assert!(VALID.len() >= 40);
        for &(query, kind) in VALID {
            match parse(query) {
                Ok(k) => assert_eq!(k, kind, "wrong kind for {query:?}"),
                Err(e) => panic!("{query:?} was rejected: {e}"),
            }
        }
    }

    #[test]
    fn brief_examples() {
        assert_invalid(
            r#"{app="x" |= "foo""#,
            9,
            "expected `,` or `}` in stream selector",
        );
        assert_invalid(
            r#"rate({app="x"})"#,
            14,
            r#"rate needs a range: write `rate({app="x"}[5m])`"#,
        );
        assert_invalid(
            r#"sum(rate({app="x"}[5x]))"#,
            19,
            "invalid duration `5x`: use units ms, s, m, h, d, w, y",
        );
    }

    #[test]
    fn invalid_selectors() {
        assert_invalid("{}", 0, "at least one label matcher");
        assert_invalid(r#"{app=~".*"}"#, 0, "does not match the empty string");
        assert_invalid(
            r#"{app="", env!="prod"}"#,
            0,
            "does not match the empty string",
        );
        assert_invalid(r#"{on="x"}"#, 1, "`on` is a LogQL keyword");
        assert_invalid(r#"{"app"="x"}"#, 1, "without quotes");
        assert_invalid(r#"{app=="x"}"#, 4, "use `=` instead of `==`");
        assert_invalid(r#"{app="x",}"#, 9, "expected a label matcher after `,`");
        assert_invalid(r#"{app="x}"#, 5, "unterminated string");
        assert_invalid(r#"{app='x'}"#, 5, "single-quoted strings are not supported");
    }

    #[test]
    fn invalid_strings_and_regexes() {
        assert_invalid(r#"{app="x"} |= "\d+""#, 14, "invalid escape `\\d`");
        assert_invalid(r#"{app="x"} |~ "(foo""#, 14, "missing closing `)`");
        assert_invalid(r#"{app="x"} |~ "(?=foo)""#, 14, "lookahead");
        assert_invalid(r#"{app="x"} |~ `(a)\1`"#, 17, "backreference");
        assert_invalid(r#"{app="x"} |~ "a**""#, 16, "nested repetition");
        assert_invalid(
            r#"{app="x"} | level=~"[z-a]""#,
            21,
            "invalid character class range",
        );
        assert_invalid(r#"{app="x"} | regexp "(\\w+)""#, 19, "named capture");
        assert_invalid(r#"{app="x"} | pattern "<a><b>""#, 24, "next to each other");
        assert_invalid(
            r#"{app="x"} | pattern "<_> foo""#,
            21,
            "at least one named capture",
        );
    }

    #[test]
    fn invalid_pipelines() {
        assert_invalid(
            r#"{app="x"} | json | level="error" | distinct"#,
            43,
            "expected a comparison operator",
        );
        assert_invalid(
            r#"{app="x"} |= ip("300.1.1.1")"#,
            16,
            "invalid ip() pattern",
        );
        assert_invalid(
            r#"{app="x"} |~ ip("1.2.3.4")"#,
            13,
            "only be used with the `|=` and `!=`",
        );
        assert_invalid(
            r#"{app="x"} | status >= 5x"#,
            22,
            "invalid number, duration or size `5x`",
        );
        assert_invalid(
            r#"{app="x"} | status == "500""#,
            22,
            "compare strings with `=`",
        );
        assert_invalid(
            r#"{app="x"} | logfmt --bogus"#,
            19,
            "unknown parser flag `--bogus`",
        );
        assert_invalid(
            r#"{app="x"} | unwrap latency"#,
            12,
            "only allowed inside a range aggregation",
        );
        assert_invalid(
            r#"sum_over_time({app="x"} | unwrap latency | json [5m])"#,
            43,
            "only label filters",
        );
        assert_invalid(
            r#"count_over_time({app="x"} |= "a" [5m] |= "b")"#,
            38,
            "entirely before or entirely after the range",
        );
    }

    #[test]
    fn invalid_aggregations() {
        assert_invalid(
            r#"count_over_time({app="x"} | unwrap latency [5m])"#,
            28,
            "cannot be used with `| unwrap`",
        );
        assert_invalid(
            r#"sum_over_time({app="x"}[5m])"#,
            0,
            "needs `| unwrap <label>`",
        );
        assert_invalid(
            r#"quantile_over_time({app="x"} | unwrap l [5m])"#,
            19,
            "the quantile as the first argument",
        );
        assert_invalid(
            r#"rate(5, {app="x"}[5m])"#,
            5,
            "rate does not take a parameter",
        );
        assert_invalid(
            r#"rate({app="x"}[5m]) by (a)"#,
            20,
            "rate does not support `by`/`without`",
        );
        assert_invalid(r#"rate({app="x"}[1.5m])"#, 15, "fractions are not allowed");
        assert_invalid(r#"rate({app="x"}[30m1h])"#, 15, "largest to smallest");
        assert_invalid(r#"rate(sum(rate({app="x"}[5m])))"#, 5, "no subqueries");
        assert_invalid(
            r#"count_over_time({app="x"}[5m]) offset 1h"#,
            31,
            "`offset` must directly follow",
        );
        assert_invalid(r#"sum({app="x"})"#, 4, "its argument is a log query");
        assert_invalid(
            r#"sum({app="x"}[5m])"#,
            13,
            "only allowed inside a range aggregation",
        );
        assert_invalid(
            r#"topk(rate({app="x"}[5m]))"#,
            0,
            "needs the number of series",
        );
        assert_invalid(r#"topk(0, rate({app="x"}[5m]))"#, 5, "greater than 0");
        assert_invalid(r#"topk(1.5, rate({app="x"}[5m]))"#, 5, "whole number");
        assert_invalid(
            r#"sum(5, rate({app="x"}[5m]))"#,
            4,
            "sum does not take a parameter",
        );
        assert_invalid(
            r#"sort by (a) (rate({app="x"}[5m]))"#,
            5,
            "does not support grouping",
        );
        assert_invalid(
            r#"sum by (a) (rate({app="x"}[5m])) by (b)"#,
            33,
            "already has a `by`/`without` clause",
        );
        assert_invalid(r#"increase({app="x"}[5m])"#, 0, "PromQL function");
        assert_invalid(r#"foo({app="x"})"#, 0, "unknown function `foo`");
    }

    #[test]
    fn invalid_misc() {
        assert_invalid(
            r#"{app="x"} |= "a" or"#,
            19,
            "a quoted string after the line filter `|=`",
        );
        assert_invalid(
            r#"count_over_time((({app="x"}))[5m])"#,
            28,
            "only one pair of parentheses",
        );
        assert_invalid(r#"{app="x"} | json | distinct"#, 27, "removed from LogQL");
        assert_invalid(
            r#"sum by (a) rate({app="x"}[5m])"#,
            11,
            "after its `by`/`without` clause",
        );
        assert_invalid(
            r#"stddev({ foo = "bar" })"#,
            7,
            "its argument is a log query",
        );
        assert_invalid(r#"bool 1 > 1"#, 0, "unexpected `bool`");
        assert_invalid(r#"{app="x"} |~ "\\1""#, 13, "backreference");
        assert_invalid(
            r#"label_replace(rate({app="x"}[5m]), "a", "$1", "b", "x\\q")"#,
            51,
            "invalid escape `\\q`",
        );
        // Quoted input is clipped, so messages stay readable.
        let long = format!("{}(1)", "f".repeat(10_000));
        match parse(&long) {
            Ok(kind) => panic!("accepted as {kind:?}"),
            Err(e) => assert!(e.message.len() < 600, "{}", e.message.len()),
        }
    }

    #[test]
    fn invalid_binary_operations() {
        assert_invalid(r#"{app="x"} + 1"#, 10, "its left side is a log query");
        assert_invalid(r#"1 + {app="x"}"#, 4, "its right side is a log query");
        assert_invalid(r#"sum(rate({app="x"}[5m])) and 1"#, 29, "number literal");
        assert_invalid(
            r#"1 * group_left rate({app="x"}[5m])"#,
            4,
            "must follow `on(...)`",
        );
        assert_invalid(
            r#"-rate({app="x"}[5m])"#,
            1,
            "a sign directly before a number",
        );
        assert_invalid(
            r#"{app="x"}[5m]"#,
            9,
            "only allowed inside a range aggregation",
        );
        assert_invalid(r#"{app="x"} foo"#, 10, "a pipeline stage");
        assert_invalid(r#"sum(rate({app="x"}[5m])"#, 23, "`)` to close sum(");
        assert_invalid("", 0, "a stream selector");
    }

    #[test]
    fn error_display_and_size_limit() {
        let e = LogqlError::new(3, "boom");
        assert_eq!(e.to_string(), "boom (at byte 3)");
        let long = format!("{{app=\"x\"}} |= \"{}\"", "a".repeat(MAX_QUERY_BYTES));
        assert_invalid(&long, 0, "too long");
    }

    /// Tiny deterministic PRNG for the mutation test.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    #[track_caller]
    fn assert_no_panic(query: &str) {
        if let Err(e) = parse(query) {
            assert!(
                e.offset <= query.len() && query.is_char_boundary(e.offset),
                "offset {} out of range for {query:?}",
                e.offset
            );
            assert!(!e.message.is_empty() && e.message.len() < 1000);
        }
    }

    #[test]
    fn every_prefix_of_every_valid_query_is_handled() {
        for &(query, _) in VALID {
            for (i, _) in query.char_indices() {
                assert_no_panic(&query[..i]);
            }
        }
    }

    #[test]
    fn random_mutations_are_handled() {
        const ALPHABET: &[u8] = b"{}()[]|=!~<>\"`,.#-+*/%^ \n\\0159ahmsxyzBKM_:?";
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        for _ in 0..1000 {
            let (query, _) = VALID[rng.below(VALID.len())];
            let mut bytes = query.as_bytes().to_vec();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(bytes.len() + 1);
                let byte = ALPHABET[rng.below(ALPHABET.len())];
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] = byte,
                    1 => bytes.insert(at, byte),
                    2 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    _ => {
                        let end = (at + rng.below(8)).min(bytes.len());
                        let chunk = bytes[at.min(end)..end].to_vec();
                        bytes.splice(at..at, chunk);
                    }
                }
            }
            assert_no_panic(&String::from_utf8_lossy(&bytes));
        }
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let n = 10_000;
        let cases = [
            format!("{}1{}", "(".repeat(n), ")".repeat(n)),
            format!("{}rate({{a=\"b\"}}[5m]){}", "sum(".repeat(n), ")".repeat(n)),
            format!("{{a=\"b\"}} | {}x=\"y\"{}", "(".repeat(n), ")".repeat(n)),
            format!("rate({}{{a=\"b\"}}[5m]{})", "(".repeat(n), ")".repeat(n)),
            format!("1{}", " ^ 1".repeat(n)),
            format!("{{a=~\"{}a{}\"}}", "(".repeat(n), ")".repeat(n)),
        ];
        for query in &cases {
            match parse(query) {
                Ok(kind) => panic!("deep query accepted as {kind:?}"),
                Err(e) => assert!(e.message.contains("too deeply"), "{}", e.message),
            }
        }
        // Reasonable nesting stays fine.
        let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
        assert_eq!(parse(&ok), Ok(Metric));
    }

    #[test]
    fn helpers() {
        assert!(prom_duration("1h30m").is_ok());
        assert!(prom_duration("5m1h").is_err());
        assert!(go_duration("1.5s") && go_duration("-5m") && go_duration("10µs"));
        assert!(!go_duration("5d") && !go_duration("5"));
        assert!(valid_bytes("20KB") && valid_bytes("1.5MiB") && !valid_bytes("20KBB"));
        assert!(check_ip_pattern("10.0.0.0/8").is_ok());
        assert!(check_ip_pattern("10.0.0.9-10.0.0.1").is_err());
        assert!(check_ip_pattern("::1").is_ok());
        let nullable = |re: &str| check_regex_syntax(re).map(|i| i.nullable);
        assert_eq!(nullable(".*"), Ok(true));
        assert_eq!(nullable(".+"), Ok(false));
        assert_eq!(nullable("a|"), Ok(true));
        assert_eq!(nullable("(a|b)?c*"), Ok(true));
        assert_eq!(nullable("[a-z]{0,3}x"), Ok(false));
        assert_eq!(nullable(r"\Qa.b\E"), Ok(false));
        assert!(check_regex_syntax("a{2}{3}").is_err());
        assert!(check_regex_syntax("a{,3}").is_ok());
        assert!(check_regex_syntax("[[:alpha:]_-]+").is_ok());
        assert!(check_regex_syntax("(?i)foo(?-s:.)").is_ok());
        assert!(check_regex_syntax("a(?i)*").is_ok());
        assert!(check_regex_syntax("(?i)*").is_err());
        assert!(check_regex_syntax(r"[\b]").is_err());
    }
}
