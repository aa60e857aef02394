//! The LogQL lexer (Loki `pkg/logql/syntax/lex.go`), durations and byte sizes.

use super::*;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum K {
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
pub(super) struct Token {
    pub(super) kind: K,
    pub(super) start: usize,
    pub(super) end: usize,
    /// Decoded value of a string literal.
    pub(super) value: String,
    /// The decoded string equals its source text byte for byte (raw string,
    /// or no escapes), so offsets inside it map 1:1 onto the query.
    pub(super) verbatim: bool,
    pub(super) error: Option<LogqlError>,
}

impl Token {
    pub(super) fn simple(kind: K, start: usize, end: usize) -> Self {
        Token {
            kind,
            start,
            end,
            value: String::new(),
            verbatim: true,
            error: None,
        }
    }

    pub(super) fn error(e: LogqlError) -> Self {
        let mut t = Token::simple(K::Error, e.offset, e.offset);
        t.error = Some(e);
        t
    }
}

/// Splits the query into tokens. The list always ends with `Eof`, or with an
/// `Error` token at the first lexing problem.
pub(super) fn lex(src: &str) -> Vec<Token> {
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

pub(super) struct Lexer<'a> {
    pub(super) src: &'a str,
    pub(super) b: &'a [u8],
    pub(super) pos: usize,
}

pub(super) fn is_word_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

pub(super) fn is_duration_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.' || b"numshdwy".contains(&c)
}

pub(super) fn is_bytes_byte(c: u8) -> bool {
    c.is_ascii_digit() || c == b'.' || b"BikKMGTP".contains(&c)
}

/// The micro sign `µ` (U+00B5), accepted in durations like `5µs`.
pub(super) const MICRO: &[u8] = "µ".as_bytes();

impl Lexer<'_> {
    pub(super) fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    pub(super) fn slice(&self, from: usize, to: usize) -> &str {
        self.src.get(from..to).unwrap_or("")
    }

    pub(super) fn emit(&mut self, kind: K, start: usize, end: usize) -> Result<Token, LogqlError> {
        self.pos = end;
        Ok(Token::simple(kind, start, end))
    }

    pub(super) fn skip_trivia(&mut self) {
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

    pub(super) fn next_token(&mut self) -> Result<Token, LogqlError> {
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
    pub(super) fn run(&self, mut i: usize, pred: fn(u8) -> bool) -> usize {
        while self.at(i).is_some_and(pred) {
            i += 1;
        }
        i
    }

    /// End of the run of duration characters starting at `i`, including the
    /// two-byte micro sign.
    pub(super) fn duration_run(&self, mut i: usize) -> usize {
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
    pub(super) fn scan_number(&self, mut i: usize) -> usize {
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
    pub(super) fn lex_numeric(&mut self, s: usize) -> Result<Token, LogqlError> {
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
    pub(super) fn finish_numeric(
        &mut self,
        kind: K,
        s: usize,
        end: usize,
    ) -> Result<Token, LogqlError> {
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

    pub(super) fn lex_flag(&mut self, s: usize) -> Result<Token, LogqlError> {
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

    pub(super) fn lex_range(&mut self, s: usize) -> Result<Token, LogqlError> {
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

    pub(super) fn lex_quoted(&mut self, s: usize) -> Result<Token, LogqlError> {
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
    pub(super) fn lex_escape(&self, bs: usize, out: &mut Vec<u8>) -> Result<usize, LogqlError> {
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

    pub(super) fn lex_raw(&mut self, s: usize) -> Result<Token, LogqlError> {
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
pub(super) fn prom_duration(s: &str) -> Result<(), &'static str> {
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
pub(super) fn go_duration(s: &str) -> bool {
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
pub(super) fn valid_duration(s: &str) -> bool {
    prom_duration(s).is_ok() || go_duration(s)
}

/// Byte sizes as `humanize.ParseBytes` reads them (`20KB`, `1.5MiB`, `10M`).
pub(super) fn valid_bytes(s: &str) -> bool {
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
