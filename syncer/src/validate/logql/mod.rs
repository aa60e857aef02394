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
pub(super) const MAX_QUERY_BYTES: usize = 131_072;
/// Maximum nesting of parentheses, function calls and right-associative
/// operators before the parser gives up (it never recurses deeper).
pub const MAX_NESTING: usize = 128;
/// Go's regexp parser refuses expressions nested deeper than this.
pub(super) const MAX_REGEX_NESTING: usize = 1000;

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
pub(super) const RESERVED: &[&str] = &[
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
pub(super) const STAGES: &[&str] = &[
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

pub(super) const RANGE_OPS: &[&str] = &[
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
pub(super) const NEEDS_UNWRAP: &[&str] = &[
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
pub(super) const REFUSES_UNWRAP: &[&str] = &["count_over_time", "bytes_rate", "bytes_over_time"];

/// Range aggregations that accept `by`/`without`.
pub(super) const RANGE_GROUPING: &[&str] = &[
    "avg_over_time",
    "stddev_over_time",
    "stdvar_over_time",
    "quantile_over_time",
    "max_over_time",
    "min_over_time",
    "first_over_time",
    "last_over_time",
];

pub(super) const VECTOR_OPS: &[&str] = &[
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
pub(super) const PROMQL_ONLY: &[&str] = &[
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

pub(super) fn is_reserved(word: &str) -> bool {
    RESERVED.iter().any(|k| word.eq_ignore_ascii_case(k))
}

pub(super) fn is_label_name(s: &str) -> bool {
    let mut bytes = s.bytes();
    match bytes.next() {
        Some(c) if c.is_ascii_alphabetic() || c == b'_' => {}
        _ => return false,
    }
    bytes.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

/// Quotes a piece of the query in a message, shortened to a readable length.
pub(super) fn clip(s: &str) -> String {
    shorten(s, 48)
}

/// Shortens `s` to at most `max` characters for use in a message.
pub(super) fn shorten(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", s.get(..cut).unwrap_or(s)),
        None => s.to_string(),
    }
}

mod lexer;
mod parser;
pub(crate) mod regex;

use lexer::*;
use parser::*;
use regex::*;

#[cfg(test)]
mod tests;
