//! What SQL protocols share: the exchange a statement becomes, its
//! operation name, and the sanitizing of its text for `db.query.text`.
//!
//! The semantic conventions (database spans, "Sanitization of
//! db.query.text") ask that text which is not parameterized have every
//! literal replaced by `?`, and that parameterized text (a prepared
//! statement, whose values travel separately) be kept as sent. A lexer, not
//! a parser: the agent often holds only the first kilobyte of a statement,
//! and must still never pass on part of a literal; the OpenTelemetry Java
//! agent's sanitizer is a lexer for the same reason.

/// One executed statement, ready to become a span.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct SqlExchange {
    /// `db.query.text`: sanitized unless it was parameterized.
    pub query: String,
    /// First keyword of the query, upper-cased (`SELECT`, `INSERT`, …).
    pub operation: String,
    /// The server's error code (PostgreSQL SQLSTATE, MySQL error number).
    pub error_code: Option<String>,
    /// PostgreSQL's command tag (`SELECT 3`), when complete.
    pub tag: Option<String>,
}

/// Longest query text kept on a span.
pub const MAX_QUERY: usize = 2048;

/// Lexical rules that differ between the servers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// `"…"` is an identifier; `$n` a parameter; `$tag$…$tag$` a string;
    /// backslash escapes only in `E'…'`.
    Postgres,
    /// `"…"` is a string (unless `ANSI_QUOTES`, which the agent cannot
    /// see: a string is the safe guess); `` `…` `` an identifier;
    /// backslash escapes in every string; `#` starts a comment.
    MySql,
}

/// The first keyword of a statement, upper-cased.
pub fn operation(query: &str) -> String {
    query
        .trim_start()
        .split(|c: char| !c.is_ascii_alphabetic())
        .next()
        .unwrap_or_default()
        .to_ascii_uppercase()
}

/// Bytes of a (possibly truncated) statement as text, trimmed and bounded.
pub fn clip(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(MAX_QUERY)]);
    s.trim().to_owned()
}

fn ident_byte(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_' || c == b'$' || c >= 0x80
}

/// The end of a quoted run opened at `start`; a doubled quote is an escaped
/// one, and with `backslash` so is `\`-anything. `None` when the text ends
/// first (a truncated capture).
fn quoted_end(b: &[u8], start: usize, quote: u8, backslash: bool) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        let c = b[i];
        if backslash && c == b'\\' {
            i += 2;
        } else if c == quote {
            if b.get(i + 1) == Some(&quote) {
                i += 2;
            } else {
                return Some(i + 1);
            }
        } else {
            i += 1;
        }
    }
    None
}

/// `$tag$` opening a PostgreSQL dollar-quoted string at `i`: its length.
fn dollar_tag(b: &[u8], i: usize) -> Option<usize> {
    let mut j = i + 1;
    while j < b.len() && (b[j].is_ascii_alphanumeric() || b[j] == b'_' || b[j] >= 0x80) {
        j += 1;
    }
    // `$1` is a parameter, not a tag.
    if b.get(i + 1).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    (b.get(j) == Some(&b'$')).then_some(j + 1 - i)
}

/// The end of a number starting at `i`.
fn number_end(b: &[u8], i: usize) -> usize {
    let mut j = i;
    if b[i] == b'0' && matches!(b.get(i + 1), Some(b'x' | b'X' | b'b' | b'B')) {
        j += 2;
        while j < b.len() && b[j].is_ascii_hexdigit() {
            j += 1;
        }
        return j;
    }
    while j < b.len() && (b[j].is_ascii_digit() || b[j] == b'.' || b[j] == b'_') {
        j += 1;
    }
    if matches!(b.get(j), Some(b'e' | b'E')) {
        let mut k = j + 1;
        if matches!(b.get(k), Some(b'+' | b'-')) {
            k += 1;
        }
        if b.get(k).is_some_and(u8::is_ascii_digit) {
            j = k;
            while j < b.len() && b[j].is_ascii_digit() {
                j += 1;
            }
        }
    }
    j
}

/// `sql` with every string and number literal replaced by `?`. Comments,
/// identifiers, keywords and placeholders stay. A literal cut off by the
/// end of the text becomes `?` too.
pub fn sanitize(sql: &str, dialect: Dialect) -> String {
    lex(sql, dialect).0
}

/// The text of a prepared statement: kept as sent when it has parameters
/// (`$1`, `?`), sanitized when its values are written inline.
pub fn sanitize_unless_parameterized(sql: &str, dialect: Dialect) -> String {
    match lex(sql, dialect) {
        (_, true) => sql.to_owned(),
        (clean, false) => clean,
    }
}

/// The sanitized text, and whether it has parameter placeholders.
fn lex(sql: &str, dialect: Dialect) -> (String, bool) {
    let mut params = false;
    let b = sql.as_bytes();
    let mut out: Vec<u8> = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let prev_ident = i > 0 && ident_byte(b[i - 1]);
        match c {
            b'\'' => {
                // A one-letter prefix (E'', X'', B'', N'') belongs to the
                // literal; E'' is PostgreSQL's string with escapes.
                let mut backslash = dialect == Dialect::MySql;
                if let Some(&p) = out.last()
                    && matches!(p, b'e' | b'E' | b'x' | b'X' | b'b' | b'B' | b'n' | b'N')
                    && prev_ident
                    && (i < 2 || !ident_byte(b[i - 2]))
                {
                    backslash |= matches!(p, b'e' | b'E');
                    out.pop();
                }
                out.push(b'?');
                match quoted_end(b, i, b'\'', backslash) {
                    Some(end) => i = end,
                    None => break,
                }
            }
            b'"' if dialect == Dialect::MySql => {
                out.push(b'?');
                match quoted_end(b, i, b'"', true) {
                    Some(end) => i = end,
                    None => break,
                }
            }
            b'"' | b'`' => {
                let end = quoted_end(b, i, c, false).unwrap_or(b.len());
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'$' if dialect == Dialect::Postgres && !prev_ident => match dollar_tag(b, i) {
                Some(len) => {
                    let tag = &b[i..i + len];
                    out.push(b'?');
                    let body = &b[i + len..];
                    match body.windows(len).position(|w| w == tag) {
                        Some(p) => i += len + p + len,
                        None => break,
                    }
                }
                None => {
                    params |= b.get(i + 1).is_some_and(u8::is_ascii_digit);
                    out.push(c);
                    i += 1;
                }
            },
            b'-' if b.get(i + 1) == Some(&b'-') => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'#' if dialect == Dialect::MySql => {
                let end = b[i..]
                    .iter()
                    .position(|&x| x == b'\n')
                    .map_or(b.len(), |p| i + p);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = b[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(b.len(), |p| i + 2 + p + 2);
                out.extend_from_slice(&b[i..end]);
                i = end;
            }
            b'0'..=b'9' if !prev_ident => {
                out.push(b'?');
                i = number_end(b, i);
            }
            b'.' if !prev_ident && b.get(i + 1).is_some_and(u8::is_ascii_digit) => {
                out.push(b'?');
                i = number_end(b, i);
            }
            _ => {
                params |= c == b'?' && dialect == Dialect::MySql;
                out.push(c);
                i += 1;
            }
        }
    }
    // Only ASCII bytes were replaced or dropped, and only whole runs of the
    // input were copied, so this is the input's valid UTF-8.
    (String::from_utf8(out).unwrap_or_default(), params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postgres_literals_become_placeholders() {
        let s = |q| sanitize(q, Dialect::Postgres);
        assert_eq!(s("select 41 + 1"), "select ? + ?");
        assert_eq!(
            s("SELECT * FROM users WHERE name = 'O''Brien' AND id = 42"),
            "SELECT * FROM users WHERE name = ? AND id = ?"
        );
        assert_eq!(
            s("select \"Col1\", t2.c3 from t2 where x = 1.5e-3"),
            "select \"Col1\", t2.c3 from t2 where x = ?"
        );
        assert_eq!(s("select $1, $body$ it's $body$"), "select $1, ?");
        assert_eq!(s("select E'a\\'b', X'ff', 0x1F"), "select ?, ?, ?");
        assert_eq!(s("select 1 -- keep 2\n, 3"), "select ? -- keep 2\n, ?");
        assert_eq!(s("select abc1, a1b from t"), "select abc1, a1b from t");
        assert_eq!(s("select .5"), "select ?");
    }

    #[test]
    fn mysql_double_quotes_and_backslashes_are_strings() {
        let s = |q| sanitize(q, Dialect::MySql);
        assert_eq!(
            s("INSERT INTO `t` VALUES (\"a\\\"b\", 'c\\'d', -7)"),
            "INSERT INTO `t` VALUES (?, ?, -?)"
        );
        assert_eq!(s("select 1 # two\n"), "select ? # two\n");
    }

    #[test]
    fn parameterized_text_is_kept_as_sent() {
        let q = "select * from t where a = $1 and b = 'x'";
        assert_eq!(sanitize_unless_parameterized(q, Dialect::Postgres), q);
        let q = "select * from t where a = ? and b = 2";
        assert_eq!(sanitize_unless_parameterized(q, Dialect::MySql), q);
        assert_eq!(
            sanitize_unless_parameterized(
                "select count(*) from c where k = 'r'",
                Dialect::Postgres
            ),
            "select count(*) from c where k = ?"
        );
        // '?' inside a literal is no parameter.
        assert_eq!(
            sanitize_unless_parameterized("select 'why?'", Dialect::MySql),
            "select ?"
        );
    }

    #[test]
    fn a_truncated_literal_is_never_passed_on() {
        assert_eq!(
            sanitize("select * from t where secret = 'hunter", Dialect::Postgres),
            "select * from t where secret = ?"
        );
        assert_eq!(sanitize("select $x$ secret", Dialect::Postgres), "select ?");
    }

    #[test]
    fn non_ascii_text_survives() {
        assert_eq!(
            sanitize("select 'é' as naïve, 3", Dialect::Postgres),
            "select ? as naïve, ?"
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_removes_every_digit_outside_words(q in "[ -~é]{0,64}") {
            let out = sanitize(&q, Dialect::MySql);
            let _ = sanitize(&q, Dialect::Postgres);
            // No literal digit survives unless it is part of a word, a
            // quoted identifier or a comment.
            if !q.contains(['`', '-', '#', '/']) {
                let b = out.as_bytes();
                for (i, c) in b.iter().enumerate() {
                    if c.is_ascii_digit() {
                        proptest::prop_assert!(i > 0 && ident_byte(b[i - 1]), "{q:?} → {out:?}");
                    }
                }
            }
        }
    }
}
