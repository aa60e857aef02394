//! Prometheus (Mimir ruler) and LogQL (Loki ruler) rule groups.

use std::collections::{BTreeMap, HashMap};

use super::{TenantParts, err_at, gotemplate};
use crate::diag::{Diagnostic, did_you_mean};
use crate::model::common::Loc;
use crate::model::platform::PlatformFile;
use crate::model::rules::{Rule, RuleFile, RuleGroup};
use crate::repo::RuleNamespace;

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

/// Checks one rule file on its own, then drops its empty groups (see
/// [`check_group`]): what stays is what the ruler is sent.
pub(super) fn check_rule_file(
    path: &str,
    text: &str,
    file: &mut RuleFile,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    // Mimir and Loki key a group by (namespace, name) and MOP's namespace is the
    // file, so names are unique per file, not per tenant. Prometheus' rulefmt
    // (`model/rulefmt/rulefmt.go`, RuleGroups.Validate: "groupname is repeated in
    // the same file") and Loki's `pkg/ruler/compat.go` (ValidateGroups) refuse a
    // repeat within one file.
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for g in &file.groups {
        if let Some(first) = seen.insert(g.name.value.as_str(), g.name.line) {
            diags.push(
                err_at(
                    path,
                    &g.name,
                    format!(
                        "rule group {:?} is defined twice in this file (first on line {first})",
                        g.name.value
                    ),
                )
                .with_hint("a rule file is one ruler namespace and group names are unique within it (Prometheus rulefmt: \"groupname is repeated in the same file\"); rename one or move it to another file"),
            );
        }
    }
    for g in &file.groups {
        check_group(path, text, g, logs, diags);
    }
    file.groups.retain(|g| !g.rules.is_empty());
}

/// Mimir's ruler refuses a group with more rules than the tenant's
/// `ruler_max_rules_per_rule_group`, and a new group beyond
/// `ruler_max_rule_groups_per_tenant` (`pkg/ruler/api.go` CreateRuleGroup,
/// `AssertMaxRulesPerRuleGroup` / `AssertMaxRuleGroups` in `pkg/ruler/ruler.go`:
/// over the limit when greater, and 0 means no limit). MOP renders both limits
/// into Mimir's runtime overrides (`render/overrides.rs`), so the values checked
/// here are the ones the ruler enforces. Loki's defaults are 0 (no limit) and
/// MOP sets none there.
pub(super) fn check_ruler_limits(
    platform: &PlatformFile,
    tenants: &BTreeMap<String, TenantParts>,
    diags: &mut Vec<Diagnostic>,
) {
    for (key, t) in tenants {
        let Some(spec) = &t.spec else { continue };
        let (max_groups, max_rules) = spec.limits.metrics.ruler_limits(&platform.defaults.metrics);
        let tenant_file = format!("tenants/{key}/tenant.yaml");
        let mut files: Vec<&RuleNamespace> = t.metric_rules.iter().collect();
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let mut count: u64 = 0;
        let mut last = None;
        for ns in files {
            for g in &ns.file.groups {
                last = Some((&ns.path, &g.name));
                let rules = u64::try_from(g.rules.len()).unwrap_or(u64::MAX);
                if max_rules > 0 && rules > max_rules {
                    diags.push(
                        err_at(&ns.path, &g.name, format!("rule group {:?} has {rules} rules; this tenant's Mimir ruler takes at most {max_rules} per group", g.name.value))
                            .with_hint(format!("split the group, or raise `limits.metrics.max_rules_per_group` in {tenant_file} (Mimir's `ruler_max_rules_per_rule_group`, default {})", crate::model::tenant::MIMIR_MAX_RULES_PER_RULE_GROUP)),
                    );
                }
                count += 1;
                if max_groups > 0 && count == max_groups + 1 {
                    diags.push(
                        err_at(&ns.path, &g.name, format!("rule group {:?} is this tenant's rule group number {count}; its Mimir ruler takes at most {max_groups}", g.name.value))
                            .with_hint(format!("merge or remove groups, or raise `limits.metrics.max_rule_groups` in {tenant_file} (Mimir's `ruler_max_rule_groups_per_tenant`, default {})", crate::model::tenant::MIMIR_MAX_RULE_GROUPS_PER_TENANT)),
                    );
                }
            }
        }
        // Exactly at the limit is accepted once, then never again: Mimir checks
        // the tenant's stored groups plus the one being written, even when that
        // one replaces a stored group (`len(rgs)+1` in CreateRuleGroup).
        if let Some((path, name)) = last
            && max_groups > 0
            && count == max_groups
        {
            diags.push(
                Diagnostic::warning(path, name.line, name.column, format!("this tenant has {count} rule groups, exactly its Mimir ruler's limit: once all are stored, Mimir refuses every change to any of them (it counts the group being written as one more)"))
                    .with_hint(format!("raise `limits.metrics.max_rule_groups` in {tenant_file} to at least {}, or merge groups", count + 1)),
            );
        }
    }
}

/// Where a map key is written, found from its value's location: the key is on
/// the value's line or, for a block scalar, a line or two above it.
fn key_position(text: &str, value: &Loc<String>, key: &str) -> (u32, u32) {
    let first = value.line.saturating_sub(3).max(1);
    for line_no in (first..=value.line).rev() {
        let Some(line) = text.lines().nth(line_no as usize - 1) else {
            continue;
        };
        for quoted in [key.to_string(), format!("{key:?}"), format!("'{key}'")] {
            if let Some(at) = line.find(&format!("{quoted}:")) {
                let column = line[..at].chars().count() + 1;
                return (line_no, u32::try_from(column).unwrap_or(value.column));
            }
        }
    }
    (value.line, value.column)
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

/// Checks one group as the rulers do when it is posted: Mimir's
/// `pkg/ruler/manager.go` (ValidateRuleGroup) and Loki's `pkg/ruler/compat.go`
/// (ValidateGroups), both running Prometheus' `model/rulefmt/rulefmt.go` rule
/// checks (Loki with LogQL for the expression).
pub(super) fn check_group(
    path: &str,
    text: &str,
    g: &RuleGroup,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    if g.name.value.trim().is_empty() {
        diags.push(err_at(path, &g.name, "rule group name is empty").with_hint(
            "Mimir and Loki refuse a group without a name (\"rule group name must not be empty\")",
        ));
    }
    if g.rules.is_empty() {
        // Mimir refuses a group with no rules ("rule group '…' has no rules",
        // `pkg/ruler/manager.go`) while promtool and Loki accept one that does
        // nothing. MOP drops it instead of failing the sync: the file means the
        // same as under promtool, and nothing is lost (there is nothing to run).
        diags.push(
            Diagnostic::warning(
                path,
                g.name.line,
                g.name.column,
                format!(
                    "rule group {:?} has no rules, so MOP does not send it to the ruler",
                    g.name.value
                ),
            )
            .with_hint("Mimir refuses empty rule groups; add rules or delete the group"),
        );
    }
    for (k, v) in g.labels.iter().flatten() {
        if let Some(problem) = label_name_problem(k) {
            let (line, column) = key_position(text, v, k);
            diags.push(
                Diagnostic::error(path, line, column, format!("group label {k:?} {problem}"))
                    .with_hint(LABEL_NAME_HINT),
            );
        }
    }
    for r in &g.rules {
        check_rule(path, text, r, logs, diags);
    }
}

const LABEL_NAME_HINT: &str = "label names are letters, digits and '_', not starting with a digit; `__name__` is the metric name and cannot be set (Prometheus rulefmt: \"invalid label name\")";

/// Why `k` cannot be a label a rule sets, if it cannot. Prometheus' rulefmt
/// refuses invalid names and `__name__` (`model.MetricNameLabel`). Names use
/// the legacy character set, as Mimir's default `name_validation_scheme` and
/// Loki's `model.LabelName.IsValid` do.
fn label_name_problem(k: &str) -> Option<&'static str> {
    if k == "__name__" {
        Some("is reserved: `__name__` is the metric name and a rule cannot set it")
    } else if !is_label_name(k) {
        Some("is not a valid label name")
    } else {
        None
    }
}

fn check_rule(path: &str, text: &str, r: &Rule, logs: bool, diags: &mut Vec<Diagnostic>) {
    let (kind, name) = match (&r.alert, &r.record) {
        (Some(a), None) if !a.value.is_empty() => ("alert", a),
        (None, Some(rec)) if !rec.value.is_empty() => {
            if rec.value.contains(['{', '}']) {
                diags.push(
                    err_at(path, rec, format!("record name {:?} has braces; should they be in `expr`?", rec.value))
                        .with_hint("a recording rule's name is a metric name: letters, digits, '_' and ':', e.g. job:http_requests:rate5m"),
                );
            } else if !is_metric_name(&rec.value) {
                diags.push(
                    err_at(
                        path,
                        rec,
                        format!("record name {:?} is not a valid metric name", rec.value),
                    )
                    .with_hint("use letters, digits, '_' and ':', e.g. job:http_requests:rate5m"),
                );
            }
            // rulefmt refuses these only when they say something: `for: 0s` and
            // `annotations: {}` pass (Rule.Validate checks `!= 0` and `len > 0`).
            let non_zero =
                |d: &Option<crate::model::common::Duration>| d.is_some_and(|d| d.millis > 0);
            let mut extra = Vec::new();
            if non_zero(&r.for_) {
                extra.push("`for`");
            }
            if non_zero(&r.keep_firing_for) && !logs {
                extra.push("`keep_firing_for`");
            }
            if r.annotations.as_ref().is_some_and(|a| !a.is_empty()) {
                extra.push("`annotations`");
            }
            if !extra.is_empty() {
                diags.push(
                    err_at(path, rec, format!("a recording rule cannot have {}", extra.join(" or ")))
                        .with_hint("those belong to alerting rules (`alert:`); the rulers refuse them in recording rules"),
                );
            }
            ("record", rec)
        }
        (Some(a), Some(_)) if !a.value.is_empty() => {
            diags.push(
                err_at(path, a, "a rule has both `alert` and `record`")
                    .with_hint("split it into an alerting rule and a recording rule"),
            );
            return;
        }
        (Some(a), _) => {
            diags.push(err_at(path, a, "alert name is empty"));
            return;
        }
        (_, Some(rec)) => {
            diags.push(err_at(path, rec, "record name is empty"));
            return;
        }
        (None, None) => {
            diags.push(err_at(
                path,
                &r.expr,
                "a rule needs `alert` (alerting rule) or `record` (recording rule)",
            ));
            return;
        }
    };
    for (k, v) in r.labels.iter().flatten() {
        if let Some(problem) = label_name_problem(k) {
            let (line, column) = key_position(text, v, k);
            diags.push(
                Diagnostic::error(path, line, column, format!("label {k:?} {problem}"))
                    .with_hint(LABEL_NAME_HINT),
            );
        }
    }
    for (k, v) in r.annotations.iter().flatten() {
        if !is_label_name(k) {
            let (line, column) = key_position(text, v, k);
            diags.push(
                Diagnostic::error(path, line, column, format!("annotation name {k:?} is not a valid name"))
                    .with_hint("annotation names follow label-name rules: letters, digits and '_', not starting with a digit (Prometheus rulefmt: \"invalid annotation name\")"),
            );
        }
    }
    if kind == "alert" {
        check_templates(path, text, r, name, logs, diags);
    }
    if r.expr.value.trim().is_empty() {
        diags.push(
            err_at(
                path,
                &r.expr,
                format!("{kind} {:?} has an empty `expr`", name.value),
            )
            .with_hint("write the query the rule evaluates"),
        );
        return;
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
    } else if let Err(e) = super::promql::check(&r.expr.value) {
        let e = e.trim().replace('\n', " ");
        diags.push(
            err_at(path, &r.expr, format!("invalid PromQL: {e}"))
                .with_hint("check the query with `promtool check rules` or in Grafana Explore"),
        );
    }
}

/// Alerting rules' labels and annotations are Go templates; the rulers parse
/// them when a group is posted and refuse one that does not parse (rulefmt's
/// `testTemplateParsing`, Loki's copy in `pkg/ruler/compat.go`).
fn check_templates(
    path: &str,
    text: &str,
    r: &Rule,
    alert: &Loc<String>,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    let dialect = if logs {
        gotemplate::Dialect::Loki
    } else {
        gotemplate::Dialect::Prometheus
    };
    let maps = [("label", &r.labels), ("annotation", &r.annotations)];
    for (what, map) in maps {
        for (k, v) in map.iter().flatten() {
            if !v.value.contains("{{") {
                continue;
            }
            if let Err(e) = gotemplate::parse(&v.value, dialect) {
                let (line, column) = position_in_scalar(text, v, e.offset);
                let server = if logs { "Loki" } else { "Mimir" };
                let mut hint = format!(
                    "{server} refuses the group when a template of alert {:?} does not parse; template syntax: https://prometheus.io/docs/prometheus/latest/configuration/template_reference/",
                    alert.value
                );
                if let Some(f) = &e.unknown_function
                    && let Some(s) = did_you_mean(f, gotemplate::function_names(dialect))
                {
                    hint = format!("did you mean `{s}`? {hint}");
                }
                diags.push(
                    Diagnostic::error(
                        path,
                        line,
                        column,
                        format!("{what} {k:?}: invalid template: {}", e.message),
                    )
                    .with_hint(hint),
                );
            }
        }
    }
}
