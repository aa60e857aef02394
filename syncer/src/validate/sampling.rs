//! `tenants/<t>/sampling.yaml`: tail-sampling policies and their fields.

use std::collections::HashMap;

use super::err_at;
use crate::diag::Diagnostic;
use crate::model::common::Loc;
use crate::model::sampling::{PolicyKind, PolicySpec, SamplingFile};

pub(super) fn check_sampling(path: &str, s: &SamplingFile, diags: &mut Vec<Diagnostic>) {
    if s.max_traces == 0 {
        diags.push(Diagnostic::error(
            path,
            0,
            0,
            "max_traces must be at least 1",
        ));
    }
    if s.decision_wait.millis == 0 {
        diags.push(Diagnostic::error(
            path,
            0,
            0,
            "decision_wait must be longer than 0s",
        ));
    }
    let lists = std::iter::once(&s.policies).chain(s.services.values());
    for list in lists {
        let mut names: HashMap<&str, &Loc<String>> = HashMap::new();
        for p in list {
            let name = p.name();
            if let Some(first) = names.insert(name.value.as_str(), name) {
                diags.push(
                    err_at(path, name, format!("policy name {:?} is used twice in the same list", name.value))
                        .with_hint(format!("first used at line {}; policy names label the gateway's metrics, so make them unique", first.line)),
                );
            }
            check_policy_fields(path, p, diags);
            if let Some(percentage) = &p.percentage
                && !(0.0..=100.0).contains(&percentage.value)
            {
                diags.push(
                    err_at(path, percentage, format!("percentage {} is outside 0 to 100", percentage.value))
                        .with_hint("write the share of traces to keep in percent, e.g. 10 for one trace in ten"),
                );
            }
        }
    }
}

/// Each policy type takes its own fields: required ones present, foreign ones absent.
pub(super) fn check_policy_fields(path: &str, p: &PolicySpec, diags: &mut Vec<Diagnostic>) {
    let kind = p.kind.value;
    let name = format!("{kind:?}").to_lowercase();
    let present = [
        ("threshold", p.threshold.is_some()),
        ("percentage", p.percentage.is_some()),
        ("key", p.key.is_some()),
        ("values", p.values.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match kind {
        PolicyKind::Errors | PolicyKind::Always => (&[], &[]),
        PolicyKind::Latency => (&["threshold"], &["threshold"]),
        PolicyKind::Probabilistic => (&["percentage"], &["percentage"]),
        PolicyKind::Attribute => (&["key"], &["key", "values"]),
    };
    for r in required {
        if !present.iter().any(|(f, set)| f == r && *set) {
            diags.push(
                err_at(
                    path,
                    &p.kind,
                    format!("policy {:?} of type {name} needs `{r}`", p.name.value),
                )
                .with_hint(match *r {
                    "threshold" => "add e.g. `threshold: 500ms`",
                    "percentage" => "add e.g. `percentage: 10`",
                    _ => "add e.g. `key: http.route`",
                }),
            );
        }
    }
    for (f, set) in present {
        if set && !allowed.contains(&f) {
            diags.push(
                err_at(
                    path,
                    &p.kind,
                    format!("`{f}` does not apply to a policy of type {name}"),
                )
                .with_hint("remove it, or change `type` to the policy kind that uses it"),
            );
        }
    }
}
