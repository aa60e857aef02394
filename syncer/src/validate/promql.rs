//! PromQL checks with each distinct regular expression compiled once per thread.
//!
//! `promql-parser` builds a `regex::Regex` for every `=~`/`!~` label matcher it
//! parses (`Matcher::new_matcher`), so checking 100,000 rule expressions compiled
//! the same few patterns (`5..`, `tmpfs|overlay`, …) over and over: a quarter of
//! the CPU time of a large `mop validate` (with the SipHash of the regex crate's
//! DFA construction), profiled on the realistic synthetic repository. We only need the verdict, so [`check`] gives exactly
//! `promql_parser::parser::parse(expr)`'s verdict and message while compiling each
//! distinct pattern once:
//!
//! 1. Find each regex matcher inside braces, skipping string literals and
//!    comments the way promql-parser's lexer does (`lex.rs`: `"`/`'` strings with
//!    backslash escapes, raw backtick strings, `#` line comments).
//! 2. Decide its pattern with promql-parser's own `unquote_string` and
//!    `Matcher::new_matcher` (cached by operator and pattern): whether it is
//!    accepted, and whether the matcher matches the empty string — the only
//!    property of its value the parser's checks read (a selector whose matchers all
//!    match "" is refused, `check_ast_for_vector_selector` in `ast.rs`).
//! 3. Parse a copy in which each such matcher is an equality matcher with the same
//!    empty-string behaviour (`=""` matches "", `!=""` does not), which compiles
//!    nothing.
//!
//! 4. In the same copy, the value of each equality matcher (`=`, `!=`) becomes
//!    `""` if it is empty and `"_"` if not: the parser reads a value only for that
//!    (the same check of `ast.rs`), once the lexer has accepted its escapes. Rule
//!    files repeat expressions that differ only in such values (one per team,
//!    namespace or service), so copies that parsed are remembered, and a repeat is
//!    answered without parsing: promql-parser's LR parse costs about 12 µs per
//!    expression, the largest part of a large repository's rule checks.
//!
//! 5. A matrix selector's range of one number and one unit (`[5m]`, `[1h]`)
//!    becomes `[1m]`: the parser checks a range only for being a valid, non-zero
//!    duration (`util/duration.rs` `parse_duration`), which is checked here first.
//!    Range is the other thing rule expressions of one shape vary in: on 1,500 of
//!    the realistic benchmark repository's rule files, 13,614 distinct copies
//!    become 8,456 (counted with a script approximating these steps).
//!
//! Anything else — a refused string or pattern, or a copy that does not parse —
//! takes the plain `parse` of the original, so every error message is
//! promql-parser's own, byte for byte. A differential test holds both paths to the
//! same verdicts.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, Mutex};

use promql_parser::label::Matcher;
use promql_parser::parser::token::{T_EQL_REGEX, T_NEQ_REGEX, TokenId};

/// Distinct patterns kept per thread before the cache starts over: `mop serve`
/// validates revision after revision, so the cache must not grow without bound.
const MAX_CACHED_PATTERNS: usize = 16_384;

/// Copies that parsed, kept before the cache starts over.
const MAX_CACHED_SHAPES: usize = 65_536;

thread_local! {
    /// (operator, pattern) → `Some(matches "")` when promql-parser accepts the
    /// pattern, `None` when it refuses it.
    static PATTERNS: RefCell<HashMap<(TokenId, String), Option<bool>>> =
        RefCell::new(HashMap::new());
}

/// Copies ([`without_regexes`]) that promql-parser accepted, shared by the
/// worker threads: with a set per thread, a shape met on both threads was parsed
/// twice, and a parse costs ~12 µs against well under a microsecond for the lock.
static ACCEPTED: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

/// `promql_parser::parser::parse(expr)`'s verdict, with its message on error.
pub(crate) fn check(expr: &str) -> Result<(), String> {
    if let Some(copy) = without_regexes(expr) {
        // A poisoned lock only means another thread panicked holding it; the set
        // holds nothing but verdicts already given, still true.
        let accepted = || ACCEPTED.lock().unwrap_or_else(|e| e.into_inner());
        if accepted().contains(copy.as_ref()) {
            return Ok(());
        }
        if promql_parser::parser::parse(&copy).is_ok() {
            let mut a = accepted();
            if a.len() >= MAX_CACHED_SHAPES {
                a.clear();
            }
            a.insert(copy.into_owned());
            return Ok(());
        }
    }
    promql_parser::parser::parse(expr).map(|_| ())
}

/// The expression with every regex matcher replaced by an equality matcher of the
/// same empty-string behaviour, and every equality matcher's value by `""` or
/// `"_"`; `None` when the plain parse must decide.
fn without_regexes(expr: &str) -> Option<Cow<'_, str>> {
    let b = expr.as_bytes();
    let mut out = String::new();
    let (mut copied, mut depth, mut i) = (0usize, 0i32, 0usize);
    while i < b.len() {
        match b[i] {
            q @ (b'"' | b'\'' | b'`') => i = string_end(b, i, q)?,
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'{' => {
                depth += 1;
                i += 1;
            }
            b'}' => {
                depth -= 1;
                i += 1;
            }
            op @ (b'=' | b'!') if depth > 0 && b.get(i + 1) == Some(&b'~') => {
                let (_, end, pattern) = matcher_value(expr, i + 2)?;
                let op = if op == b'=' { T_EQL_REGEX } else { T_NEQ_REGEX };
                let matches_empty = decide(op, pattern)?;
                out.push_str(expr.get(copied..i)?);
                out.push_str(if matches_empty { r#"="""# } else { r#"!="""# });
                copied = end;
                i = end;
            }
            // A range `[5m]`: one duration of one unit becomes `[1m]` in the copy.
            b'[' if depth == 0 => {
                let len = b[i + 1..]
                    .iter()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .count();
                let end = i + 1 + len;
                if b.get(end) == Some(&b']') && is_simple_range(&expr[i + 1..end]) {
                    out.push_str(expr.get(copied..=i)?);
                    out.push_str("1m");
                    copied = end;
                    i = end;
                } else {
                    i += 1;
                }
            }
            // An equality matcher: `=` (not `=~`) or `!=`, then its value.
            b'=' | b'!' if depth > 0 => {
                let op_end = match (b[i], b.get(i + 1)) {
                    (b'=', _) => i + 1,
                    (b'!', Some(b'=')) => i + 2,
                    _ => {
                        i += 1;
                        continue;
                    }
                };
                let (s, end, value) = matcher_value(expr, op_end)?;
                out.push_str(expr.get(copied..s)?);
                out.push_str(if value.is_empty() { r#""""# } else { r#""_""# });
                copied = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    if copied == 0 {
        return Some(Cow::Borrowed(expr));
    }
    out.push_str(expr.get(copied..)?);
    Some(Cow::Owned(out))
}

/// A range duration the parser reads only for being a valid, non-zero duration:
/// one number without a leading zero and one unit (`5m`, `30s`, `250ms`, `1h`,
/// `7d`, `1w`, `1y`), which promql-parser's lexer takes as one `DURATION` token and
/// its `parse_duration` (`util/duration.rs`: syntax, zero, overflow, the only
/// checks of a matrix selector's range) accepts. Compound (`1h30m`), numeric
/// (`[300]`) and other forms stay as written.
fn is_simple_range(d: &str) -> bool {
    let digits = d.bytes().take_while(u8::is_ascii_digit).count();
    let unit = &d[digits..];
    (1..=9).contains(&digits)
        && !d.starts_with('0')
        && matches!(unit, "ms" | "s" | "m" | "h" | "d" | "w" | "y")
        && promql_parser::util::parse_duration(d).is_ok()
}

/// The string literal after a matcher operator ending at `from` (spaces
/// between): where it starts and ends, and its value. `None` when there is no
/// literal there, or the parser would refuse it: the plain parse then decides
/// and says why.
fn matcher_value(expr: &str, from: usize) -> Option<(usize, usize, String)> {
    let b = expr.as_bytes();
    let start = from
        + b.get(from..)?
            .iter()
            .take_while(|c| matches!(c, b' ' | b'\t' | b'\n' | b'\r'))
            .count();
    let &q @ (b'"' | b'\'' | b'`') = b.get(start)? else {
        return None;
    };
    let end = string_end(b, start, q)?;
    Some((start, end, unquoted(expr.get(start..end)?)?))
}

/// A string literal's value as promql-parser reads it; `None` when the lexer or
/// `unquote_string` refuses it (the copy drops the literal, so ask them here).
fn unquoted(literal: &str) -> Option<String> {
    // The lexer refuses unknown escapes in every kind of string, raw backtick
    // strings too.
    if literal.contains('\\') && promql_parser::parser::lexer(literal).is_err() {
        return None;
    }
    promql_parser::util::unquote_string(literal).ok()
}

/// The byte after the string literal opening at `start` with quote `q`; `None`
/// when it is not terminated.
fn string_end(b: &[u8], start: usize, q: u8) -> Option<usize> {
    let mut i = start + 1;
    while i < b.len() {
        match b[i] {
            c if c == q => return Some(i + 1),
            b'\\' if q != b'`' => i += 2,
            _ => i += 1,
        }
    }
    None
}

/// Whether the matcher `op pattern` matches the empty string, as promql-parser
/// builds it; `None` when promql-parser refuses the pattern.
fn decide(op: TokenId, pattern: String) -> Option<bool> {
    PATTERNS.with(|cache| {
        let mut cache = cache.borrow_mut();
        let key = (op, pattern);
        if let Some(v) = cache.get(&key) {
            return *v;
        }
        let verdict = Matcher::new_matcher(op, String::new(), key.1.clone())
            .ok()
            .map(|m| m.is_match(""));
        if cache.len() >= MAX_CACHED_PATTERNS {
            cache.clear();
        }
        cache.insert(key, verdict);
        verdict
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both paths give the same verdict and message on expressions that exercise
    /// every branch: valid and refused patterns, empty-matching selectors, quoted
    /// label names, escapes, backticks, regexes outside braces, lexer errors.
    #[test]
    fn same_verdict_and_message_as_promql_parser() {
        let cases = [
            r#"up"#,
            r#"sum(rate(http_requests_total{job=~"api|web", code=~"5.."}[5m]))"#,
            r#"rate(x{job=~"$job", namespace=~"$namespace", pod=~"${pod:regex}"}[$__rate_interval])"#,
            r#"x{a!~"b"}"#,
            r#"{job=~".*"}"#,
            r#"{job=~".+"}"#,
            r#"{job!~".*"}"#,
            r#"{job!~""}"#,
            r#"{job=~""}"#,
            r#"{job=~".*", env="prod"}"#,
            r#"{__name__=~"http_.*"}"#,
            r#"foo{__name__=~"bar"}"#,
            r#"x{a=~"("}"#,
            r#"x{a=~"a{1,2"}"#,
            r#"x{a=~"aaa{bbb}ccc"}"#,
            r#"x{a=~"\\d+"}"#,
            r#"x{a=~"\d+"}"#,
            r#"x{a=~'single'}"#,
            r#"x{a=~`back\d`}"#,
            r#"x{a=~`back\\d`}"#,
            r#"x{a=~`back\.d`}"#,
            r#"x{a=~"\.d"}"#,
            r#"x{a=~'\x41'}"#,
            r#"x{a=~"\u00e9"}"#,
            r#"x{"quoted.name"=~"v.*"}"#,
            r#"{"some.metric", a=~"x"}"#,
            r#"x{a=~"v" or b=~".*"}"#,
            r#"x{a=~}"#,
            r#"x{a=~"unterminated}"#,
            r#"x =~ "y""#,
            r#"x{a=~"[[:alpha:]]"}"#,
            r#"x{a=~"(?i)abc"}"#,
            r#"x{a=~"\p{Greek}+"}"#,
            r#"x{a=~"é+"} / y{b=~"ü|ö"}"#,
            r#"sum by (le) (rate(h_bucket{a=~"x"}[5m])) > bool 1"#,
            r#"label_replace(up{job=~"api"}, "dst", "$1", "src", "(.*)")"#,
            r#"max_over_time(sum(rate(x{a=~"b"}[5m]))[1h:1m] offset 1d)"#,
            r#"x{a=~"b"} # trailing comment"#,
            r#"x{a=~ # comment
                "b"}"#,
            r#"x{a=~"a{1000}{1000}{1000}"}"#,
            r#"sum(x{a=~"b"}"#,
            r#""#,
            r#"x{a="b"}"#,
            r#"x{a="c"}"#,
            r#"{a=""}"#,
            r#"{a="x"}"#,
            r#"{a!=""}"#,
            r#"{a!="x"}"#,
            r#"{a="", b=~".*"}"#,
            r#"{a="", b=~".+"}"#,
            r#"x{a="\q"}"#,
            r#"x{a="\n"}"#,
            r#"x{a='\x41'}"#,
            r#"x{a=`raw\d`}"#,
            r#"x{a="é", b!="ü"}"#,
            r#"{"__name__"="x"}"#,
            r#"foo{"__name__"="bar"}"#,
            r#"foo{__name__="bar"}"#,
            r#"{"a.b"="c"}"#,
            r#"{"metric.name", a="b"}"#,
            r#"{"", a="b"}"#,
            r#"x{a==“b”}"#,
            r#"x{a=="b"}"#,
            r#"x{a= # comment
                "b"}"#,
            r#"x{a=}"#,
            r#"x{a!}"#,
            r#"x{a="unterminated}"#,
            r#"x{a="b",}"#,
            r#"label_replace(x{a="b"}, "dst", "$1", "src", "(.*)")"#,
            r#"count_values("value", x{a="b"})"#,
            r#"x{a="b"} == bool x{a="c"}"#,
            r#"x{a="b"} offset 5m @ 100"#,
            r#"rate(x{a="b"}[0s])"#,
            r#"rate(x[5m])"#,
            r#"rate(x[1h])"#,
            r#"rate(x[250ms])"#,
            r#"rate(x[7d]) / rate(x[1w]) > rate(x[1y])"#,
            r#"rate(x[0m])"#,
            r#"rate(x[00m])"#,
            r#"rate(x[05m])"#,
            r#"rate(x[5M])"#,
            r#"rate(x[5mm])"#,
            r#"rate(x[5ms5])"#,
            r#"rate(x[m])"#,
            r#"rate(x[5])"#,
            r#"rate(x[0])"#,
            r#"rate(x[])"#,
            r#"rate(x[1h30m])"#,
            r#"rate(x[30m1h])"#,
            r#"rate(x[999999999y])"#,
            r#"rate(x[9999999999y])"#,
            r#"rate(x[5m:1m])"#,
            r#"rate(x[5m] offset 1h)"#,
            r#"x[5m]"#,
            r#"sum(x)[5m]"#,
            r#"rate(5[5m])"#,
            r#"rate(x{a="[5m]"}[5m])"#,
            r#"rate(x{a=~"[0-9]"}[5m])"#,
            r#"rate(x[5m] # [0m]
            )"#,
            r#"[5m]"#,
        ];
        for expr in cases {
            let slow = promql_parser::parser::parse(expr).map(|_| ());
            assert_eq!(check(expr), slow, "{expr}");
            // Again, now answered from the cache.
            assert_eq!(check(expr), slow, "{expr} (cached)");
        }
    }

    #[test]
    fn matchers_become_equality_matchers_of_the_same_emptiness() {
        let copy = without_regexes(r#"x{a=~".*", b!~".*", c=~".+", d="e", f!="", g=`h`}"#);
        assert_eq!(
            copy.as_deref(),
            Some(r#"x{a="", b!="", c!="", d="_", f!="", g="_"}"#)
        );
        assert_eq!(without_regexes(r#"x{a=~"("}"#), None);
        assert_eq!(without_regexes(r#"x{a="\q"}"#), None);
        assert!(matches!(without_regexes("up"), Some(Cow::Borrowed("up"))));
        assert_eq!(
            without_regexes(r#"rate(x{a="[5m]"}[30s]) / rate(x[0m]) + rate(y[1h30m])"#).as_deref(),
            Some(r#"rate(x{a="_"}[1m]) / rate(x[0m]) + rate(y[1h30m])"#)
        );
    }

    /// A remembered copy answers for other values only where they read the same:
    /// a value the lexer refuses, or an empty one, is decided afresh.
    #[test]
    fn a_remembered_copy_does_not_answer_for_a_value_of_another_verdict() {
        assert_eq!(check(r#"{a="x"}"#), Ok(()));
        assert!(check(r#"{a=""}"#).is_err());
        assert_eq!(check(r#"x{a="b"}"#), Ok(()));
        assert_eq!(
            check(r#"x{a="\q"}"#),
            promql_parser::parser::parse(r#"x{a="\q"}"#).map(|_| ())
        );
        assert!(check(r#"x{a="\q"}"#).is_err());
    }
}
