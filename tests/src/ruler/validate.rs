//! What the rulers check in a posted rule group, per API.
//!
//! Mimir: `ValidateRuleGroup` in `pkg/ruler/manager.go` (group name, no rules,
//! federation) and, per rule, Prometheus' `model/rulefmt/rulefmt.go`
//! `Rule.Validate` (record xor alert, expression parses as PromQL, recording-rule
//! fields and name, label and annotation names, templates of alerting rules).
//! Loki: `ValidateGroups` / `validateRuleNode` in `pkg/ruler/compat.go` (group
//! name, the first problem of each rule, LogQL expression, no check for empty
//! groups or `keep_firing_for`).
//!
//! Differences from the real servers, all on the side of messages, not verdicts:
//! Mimir prefixes rule errors with the YAML line:column of the field, the fake
//! does not; PromQL is parsed with the `promql-parser` crate (Prometheus'
//! grammar, its own error texts); Go templates are parsed with `gtmpl`; LogQL
//! gets a lighter structural check (a stream selector of well-formed matchers,
//! balanced brackets and quotes) instead of Loki's parser, so a LogQL
//! expression that is well-formed in that sense but not valid LogQL is accepted.

use super::{Api, Rule, RuleGroup};

/// The rule group's problems, in the order the ruler reports them (joined
/// with ", " into the 400 body).
pub(super) fn problems(api: Api, g: &RuleGroup, federation_enabled: bool) -> Vec<String> {
    match api {
        Api::Mimir => mimir(g, federation_enabled),
        Api::Loki => loki(g),
    }
}

fn mimir(g: &RuleGroup, federation_enabled: bool) -> Vec<String> {
    if g.name.is_empty() {
        return vec!["invalid rules configuration: rule group name must not be empty".into()];
    }
    if g.rules.is_empty() {
        return vec![format!(
            "invalid rules configuration: rule group '{}' has no rules",
            g.name
        )];
    }
    let mut errs = Vec::new();
    if !federation_enabled && g.source_tenants.as_ref().is_some_and(|s| !s.is_empty()) {
        errs.push(format!(
            "invalid rules configuration: rule group '{}' is a federated rule group, but rules federation is disabled; please contact your service administrator to have it enabled",
            g.name
        ));
    }
    for (i, r) in g.rules.iter().enumerate() {
        for e in prometheus_rule(r) {
            // rulefmt.Error without the node position; Mimir numbers rules from 0.
            errs.push(format!(
                "group {:?}, rule {i}, {:?}: {e}",
                g.name,
                rule_name(r)
            ));
        }
    }
    errs
}

fn rule_name(r: &Rule) -> &str {
    r.alert
        .as_deref()
        .filter(|a| !a.is_empty())
        .or(r.record.as_deref())
        .unwrap_or("")
}

fn set(v: &Option<String>) -> bool {
    v.as_deref().is_some_and(|s| !s.is_empty())
}

/// Prometheus' `Rule.Validate`, every problem.
fn prometheus_rule(r: &Rule) -> Vec<String> {
    let mut errs = Vec::new();
    let (record, alert) = (set(&r.record), set(&r.alert));
    if record && alert {
        errs.push("only one of 'record' and 'alert' must be set".into());
    }
    if !record && !alert {
        errs.push("one of 'record' or 'alert' must be set".into());
    }
    if r.expr.is_empty() {
        errs.push("field 'expr' must be set in rule".into());
    } else if let Err(e) = promql_parser::parser::parse(&r.expr) {
        errs.push(format!("could not parse expression: {e}"));
    }
    if let Some(name) = r.record.as_deref().filter(|s| !s.is_empty()) {
        if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
            errs.push("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some() {
            errs.push("invalid field 'for' in recording rule".into());
        }
        if r.keep_firing_for.is_some() {
            errs.push("invalid field 'keep_firing_for' in recording rule".into());
        }
        if !valid_metric_name(name) {
            errs.push(format!("invalid recording rule name: {name}"));
        }
        if name.contains(['{', '}']) {
            errs.push(format!(
                "braces present in the recording rule name; should it be in expr?: {name}"
            ));
        }
    }
    errs.extend(names_and_templates(r, TemplateDefs::Prometheus));
    errs
}

fn loki(g: &RuleGroup) -> Vec<String> {
    let mut errs = Vec::new();
    if g.name.is_empty() {
        errs.push("group 0: Groupname must not be empty".into());
    }
    for r in &g.rules {
        if let Some(e) = loki_rule(r, &g.name) {
            errs.push(e);
        }
    }
    errs
}

/// Loki's `validateRuleNode`: the first problem only.
fn loki_rule(r: &Rule, group: &str) -> Option<String> {
    let (record, alert) = (set(&r.record), set(&r.alert));
    if record && alert {
        return Some("only one of 'record' and 'alert' must be set".into());
    }
    if !record && !alert {
        return Some("one of 'record' or 'alert' must be set".into());
    }
    if r.expr.is_empty() {
        return Some("field 'expr' must be set in rule".into());
    }
    if let Err(e) = logql_shape(&r.expr) {
        let (kind, name) = if record {
            ("record", r.record.as_deref().unwrap_or(""))
        } else {
            ("alert", r.alert.as_deref().unwrap_or(""))
        };
        return Some(format!(
            "could not parse expression for {kind} '{name}' in group '{group}': {e}"
        ));
    }
    if let Some(name) = r.record.as_deref().filter(|s| !s.is_empty()) {
        if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
            return Some("invalid field 'annotations' in recording rule".into());
        }
        if r.for_.is_some() {
            return Some("invalid field 'for' in recording rule".into());
        }
        if !valid_metric_name(name) {
            return Some(format!("invalid recording rule name: {name}"));
        }
    }
    names_and_templates(r, TemplateDefs::Loki)
        .into_iter()
        .next()
}

/// Label names valid and not `__name__`, annotation names valid, and, for
/// alerting rules, every label and annotation value a Go template that parses
/// with Prometheus' functions.
fn names_and_templates(r: &Rule, defs: TemplateDefs) -> Vec<String> {
    let mut errs = Vec::new();
    for k in r.labels.iter().flatten().map(|(k, _)| k) {
        if !valid_label_name(k) || k == "__name__" {
            errs.push(format!("invalid label name: {k}"));
        }
    }
    for k in r.annotations.iter().flatten().map(|(k, _)| k) {
        if !valid_label_name(k) {
            errs.push(format!("invalid annotation name: {k}"));
        }
    }
    if let Some(alert) = r.alert.as_deref().filter(|a| !a.is_empty()) {
        for (what, map) in [("label", &r.labels), ("annotation", &r.annotations)] {
            for (k, v) in map.iter().flatten() {
                if let Err(e) = parse_template(alert, v, defs) {
                    errs.push(format!("{what} {k:?}: {e}"));
                }
            }
        }
    }
    errs
}

/// Prometheus' legacy metric-name rule (`model.IsValidLegacyMetricName`).
pub(super) fn valid_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Prometheus' legacy label-name rule (`model.LabelName.IsValidLegacy`).
fn valid_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[derive(Clone, Copy)]
enum TemplateDefs {
    /// `testTemplateParsing` in Prometheus' rulefmt.go.
    Prometheus,
    /// Loki's copy, which does not define `$externalURL`.
    Loki,
}

/// The functions Prometheus' template expander adds (`template/template.go`
/// `NewTemplateExpander`) and the text/template built-ins gtmpl lacks; only
/// their names matter to the parser.
const PROMETHEUS_FUNCS: [&str; 31] = [
    "query",
    "first",
    "label",
    "value",
    "strvalue",
    "args",
    "reReplaceAll",
    "safeHtml",
    "match",
    "title",
    "toUpper",
    "toLower",
    "graphLink",
    "tableLink",
    "sortByLabel",
    "stripPort",
    "stripDomain",
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toTime",
    "toDuration",
    "now",
    "pathPrefix",
    "externalURL",
    "parseDuration",
    "urlQueryEscape",
    "tmpl",
    // Go text/template built-ins missing from gtmpl's set.
    "html",
];
const GO_BUILTINS_MISSING: [&str; 2] = ["js", "slice"];

fn no_op(_: &[gtmpl::Value]) -> Result<gtmpl::Value, gtmpl::FuncError> {
    Ok(gtmpl::Value::NoValue)
}

fn parse_template(alert: &str, text: &str, defs: TemplateDefs) -> Result<(), String> {
    let prefix = match defs {
        TemplateDefs::Prometheus => {
            "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$externalURL := .ExternalURL}}{{$value := .Value}}"
        }
        TemplateDefs::Loki => {
            "{{$labels := .Labels}}{{$externalLabels := .ExternalLabels}}{{$value := .Value}}"
        }
    };
    let name = format!("__alert_{alert}");
    // gtmpl loops forever on an action or string left open at the end of the
    // text; Go's lexer reports those, so they are caught here first.
    actions_closed(text).map_err(|e| format!("error parsing template {name}: {e}"))?;
    let mut t = gtmpl::Template::with_name(name.clone());
    let funcs: Vec<(&str, gtmpl::Func)> = PROMETHEUS_FUNCS
        .iter()
        .chain(GO_BUILTINS_MISSING.iter())
        .map(|&n| (n, no_op as gtmpl::Func))
        .collect();
    t.add_funcs(&funcs);
    t.parse(format!("{prefix}{text}"))
        .map_err(|e| format!("error parsing template {name}: {e}"))
}

/// Every `{{` has its `}}`, and strings inside actions end (Go's
/// `text/template/parse/lex.go`: "unclosed action", "unterminated quoted
/// string", "unterminated raw quoted string", "unclosed comment").
fn actions_closed(text: &str) -> Result<(), &'static str> {
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        rest = &rest[open + 2..];
        if let Some(comment) = rest.trim_start_matches('-').trim_start().strip_prefix("/*") {
            let end = comment.find("*/").ok_or("unclosed comment")?;
            rest = &comment[end + 2..];
        }
        let mut chars = rest.char_indices();
        let mut close = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '"' | '\'' => loop {
                    match chars.next() {
                        None => return Err("unterminated quoted string"),
                        Some((_, '\\')) => {
                            chars.next();
                        }
                        Some((_, q)) if q == c => break,
                        Some((_, '\n')) => return Err("unterminated quoted string"),
                        Some(_) => {}
                    }
                },
                '`' if !chars.by_ref().any(|(_, q)| q == '`') => {
                    return Err("unterminated raw quoted string");
                }
                '}' if rest[i..].starts_with("}}") => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let close = close.ok_or("unclosed action")?;
        rest = &rest[close + 2..];
    }
    Ok(())
}

/// A structural check of a LogQL expression (see the module docs): brackets and
/// quotes balance, and there is a stream selector `{…}` of matchers
/// `label op "value"` with `op` one of `=`, `!=`, `=~`, `!~`.
fn logql_shape(expr: &str) -> Result<(), String> {
    let mut stack = Vec::new();
    let mut chars = expr.char_indices().peekable();
    let mut selectors = Vec::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => {
                let mut closed = false;
                while let Some((_, c)) = chars.next() {
                    if c == '\\' {
                        chars.next();
                    } else if c == '"' {
                        closed = true;
                        break;
                    }
                }
                if !closed {
                    return Err(format!("unterminated string at {i}"));
                }
            }
            '`' if !chars.by_ref().any(|(_, c)| c == '`') => {
                return Err(format!("unterminated raw string at {i}"));
            }
            '(' | '[' | '{' => stack.push((c, i)),
            ')' | ']' | '}' => {
                let want = match c {
                    ')' => '(',
                    ']' => '[',
                    _ => '{',
                };
                match stack.pop() {
                    Some((open, at)) if open == want => {
                        if c == '}' {
                            selectors.push(&expr[at + 1..i]);
                        }
                    }
                    _ => return Err(format!("unexpected {c:?} at {i}")),
                }
            }
            _ => {}
        }
    }
    if let Some((open, at)) = stack.pop() {
        return Err(format!("unclosed {open:?} at {at}"));
    }
    let Some(first) = selectors.first() else {
        return Err("a LogQL query needs a stream selector `{label=\"value\"}`".into());
    };
    // Selectors other than the first may be label_format/line_format templates
    // or json paths; the stream selector comes first.
    for m in split_matchers(first) {
        let m = m.trim();
        let op_at = m
            .find(['=', '!'])
            .ok_or_else(|| format!("invalid matcher {m:?}"))?;
        let (name, rest) = m.split_at(op_at);
        let value = ["=~", "!~", "!=", "="]
            .iter()
            .find_map(|op| rest.strip_prefix(op))
            .ok_or_else(|| format!("invalid matcher operator in {m:?}"))?
            .trim();
        if !valid_label_name(name.trim()) {
            return Err(format!("invalid label name in matcher {m:?}"));
        }
        let quoted = (value.starts_with('"') && value.ends_with('"') && value.len() >= 2)
            || (value.starts_with('`') && value.ends_with('`') && value.len() >= 2);
        if !quoted {
            return Err(format!("matcher value must be a quoted string in {m:?}"));
        }
    }
    if split_matchers(first).all(|m| m.trim().is_empty()) {
        return Err("the stream selector needs at least one matcher".into());
    }
    Ok(())
}

/// Splits a selector's body at commas outside quotes.
fn split_matchers(body: &str) -> impl Iterator<Item = &str> {
    let mut parts = Vec::new();
    let mut start = 0;
    let mut quote = None;
    let mut escaped = false;
    for (i, c) in body.char_indices() {
        match quote {
            Some(q) => {
                if escaped {
                    escaped = false;
                } else if c == '\\' && q == '"' {
                    escaped = true;
                } else if c == q {
                    quote = None;
                }
            }
            None if c == '"' || c == '`' => quote = Some(c),
            None if c == ',' => {
                parts.push(&body[start..i]);
                start = i + 1;
            }
            None => {}
        }
    }
    parts.push(&body[start..]);
    parts
        .into_iter()
        .filter(|p| !p.trim().is_empty() || body.trim().is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(expr: &str, labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> Rule {
        Rule {
            record: None,
            alert: Some("HighErrors".into()),
            expr: expr.into(),
            for_: None,
            keep_firing_for: None,
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
        }
    }

    #[test]
    fn prometheus_rules_are_judged_like_rulefmt() {
        let ok = alert(
            "sum(rate(http_requests_total{code=~\"5..\"}[5m])) > 1",
            &[("severity", "page")],
            &[(
                "summary",
                "{{ $labels.job }} at {{ $value | humanizePercentage }} ({{ $externalURL }})",
            )],
        );
        assert!(
            prometheus_rule(&ok).is_empty(),
            "{:?}",
            prometheus_rule(&ok)
        );
        let bad = alert(
            "sum(rate(x[5m]) > ",
            &[("__name__", "x"), ("bad-name", "y")],
            &[
                ("summary", "{{ $labels.job "),
                ("desc", "{{ nosuchfunc 1 }}"),
            ],
        );
        let errs = prometheus_rule(&bad);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("could not parse expression")),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"invalid label name: __name__".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.contains(&"invalid label name: bad-name".to_string()),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("annotation \"summary\"")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with("annotation \"desc\"")),
            "{errs:?}"
        );
        for open in ["{{ \"x }}", "{{ `x }}", "{{/* x }}", "a {{ b"] {
            assert!(
                parse_template("A", open, TemplateDefs::Prometheus).is_err(),
                "{open}"
            );
        }
        // `__`-prefixed label names other than __name__ are allowed by rulefmt.
        let reserved = alert("up == 0", &[("__tenant", "x")], &[]);
        assert!(prometheus_rule(&reserved).is_empty());
    }

    #[test]
    fn loki_has_no_external_url_and_reports_the_first_problem() {
        let r = alert(
            "sum(rate({app=\"x\"} |= \"error\" [5m])) > 1",
            &[],
            &[("summary", "see {{ $externalURL }}")],
        );
        let e = loki_rule(&r, "g").unwrap();
        assert!(e.starts_with("annotation \"summary\""), "{e}");
        let r = alert(
            "sum(rate({app=\"x\"}[5m])) > 1",
            &[],
            &[("s", "{{ $labels.app }}")],
        );
        assert_eq!(loki_rule(&r, "g"), None);
    }

    #[test]
    fn logql_shape_catches_what_cannot_parse() {
        for ok in [
            "{app=\"x\"}",
            "sum by (pod) (count_over_time({namespace=\"shop\", app=~\"api|web\"} |= `timeout` [5m])) > 10",
            "rate({app=\"x\"} | json | line_format \"{{.msg}}\" [1m])",
        ] {
            assert_eq!(logql_shape(ok), Ok(()), "{ok}");
        }
        for bad in [
            "rate(app[5m])",
            "{app=\"x\"",
            "{app=x}",
            "{}",
            "{app=\"x\"} |= \"unterminated",
            "sum(rate({app=\"x\"}[5m])",
        ] {
            assert!(logql_shape(bad).is_err(), "{bad}");
        }
    }
}
