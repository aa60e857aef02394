//! Prometheus (Mimir ruler) and LogQL (Loki ruler) rule groups.

use super::err_at;
use crate::diag::Diagnostic;
use crate::model::common::Loc;
use crate::model::rules::{RuleFile, RuleGroup};

pub(super) fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

pub(super) fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

pub(super) fn check_rule_file(
    path: &str,
    text: &str,
    file: &RuleFile,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    for g in &file.groups {
        check_group(path, text, g, logs, diags);
    }
}

/// Where byte `offset` of a scalar's value is in the file, for the two layouts whose
/// mapping is exact: a one-line plain or quoted scalar, and a `|` block whose lines
/// keep their indentation. Folded or multi-line flow scalars map to their start.
pub(super) fn position_in_scalar(text: &str, at: &Loc<String>, offset: usize) -> (u32, u32) {
    let value = &at.value;
    let offset = offset.min(value.len());
    let line_text = text
        .lines()
        .nth(at.line.saturating_sub(1) as usize)
        .unwrap_or("");
    let first = line_text.chars().nth(at.column.saturating_sub(1) as usize);
    let before = &value[..offset];
    let col_of = |s: &str| u32::try_from(s.chars().count()).unwrap_or(0);
    if !value.trim_end_matches('\n').contains('\n') {
        let quote = u32::from(matches!(first, Some('"' | '\'')));
        // Escapes inside quotes shift columns; only map exactly when there are none.
        if quote == 0 || !line_text.contains('\\') {
            return (at.line, at.column + quote + col_of(before));
        }
        return (at.line, at.column);
    }
    // A literal block: the scalar starts at the first content line's indentation.
    let block_line_ok = value
        .lines()
        .next()
        .is_some_and(|l| line_text.trim_start() == l);
    if !block_line_ok {
        return (at.line, at.column);
    }
    let newlines = before.matches('\n').count();
    let last = before.rfind('\n').map_or(before, |p| &before[p + 1..]);
    (
        at.line + u32::try_from(newlines).unwrap_or(0),
        at.column + col_of(last),
    )
}

pub(super) fn check_group(
    path: &str,
    text: &str,
    g: &RuleGroup,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    if g.name.value.trim().is_empty() {
        diags.push(err_at(path, &g.name, "rule group name is empty"));
    }
    let labels = g.labels.iter().flatten().map(|(k, _)| k);
    for k in labels {
        if !is_label_name(k) {
            diags.push(err_at(
                path,
                &g.name,
                format!("group label name {k:?} is not a valid label name"),
            ));
        }
    }
    for r in &g.rules {
        let kind = match (&r.alert, &r.record) {
            (Some(a), None) => {
                if a.value.trim().is_empty() {
                    diags.push(err_at(path, a, "alert name is empty"));
                }
                "alert"
            }
            (None, Some(rec)) => {
                if !is_metric_name(&rec.value) {
                    diags.push(
                        err_at(
                            path,
                            rec,
                            format!("record name {:?} is not a valid metric name", rec.value),
                        )
                        .with_hint(
                            "use letters, digits, '_' and ':', e.g. job:http_requests:rate5m",
                        ),
                    );
                }
                if r.for_.is_some() || r.keep_firing_for.is_some() || r.annotations.is_some() {
                    diags.push(
                        err_at(path, rec, "a recording rule cannot have `for`, `keep_firing_for` or `annotations`")
                            .with_hint("those belong to alerting rules (`alert:`)"),
                    );
                }
                "record"
            }
            (Some(a), Some(_)) => {
                diags.push(
                    err_at(path, a, "a rule has both `alert` and `record`")
                        .with_hint("split it into an alerting rule and a recording rule"),
                );
                continue;
            }
            (None, None) => {
                diags.push(err_at(
                    path,
                    &r.expr,
                    "a rule needs `alert` (alerting rule) or `record` (recording rule)",
                ));
                continue;
            }
        };
        for k in r.labels.iter().flatten().map(|(k, _)| k) {
            if !is_label_name(k) {
                diags.push(err_at(
                    path,
                    &r.expr,
                    format!("label name {k:?} is not a valid label name"),
                ));
            }
        }
        if logs {
            match super::logql::parse(&r.expr.value) {
                Ok(super::logql::QueryKind::Metric) => {}
                Ok(super::logql::QueryKind::Log) => diags.push(
                    err_at(path, &r.expr, format!("{kind} expression is a log query; the Loki ruler evaluates metric queries only"))
                        .with_hint("turn it into a metric, e.g. sum(count_over_time({…} |= \"error\" [5m])) > 0"),
                ),
                Err(e) => {
                    let (line, column) = position_in_scalar(text, &r.expr, e.offset);
                    diags.push(
                    Diagnostic::error(path, line, column, format!("invalid LogQL: {}", e.message))
                        .with_hint("check the query in Grafana Explore against Loki; syntax: https://grafana.com/docs/loki/latest/query/"),
                    );
                }
            }
        } else if let Err(e) = promql_parser::parser::parse(&r.expr.value) {
            let e = e.trim().replace('\n', " ");
            diags.push(
                err_at(path, &r.expr, format!("invalid PromQL: {e}"))
                    .with_hint("check the query with `promtool check rules` or in Grafana Explore"),
            );
        }
    }
}
