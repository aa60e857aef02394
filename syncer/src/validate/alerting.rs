//! `tenants/<t>/alerting.yaml` and the platform's `alerting.yaml`: what
//! Alertmanager refuses when it loads a configuration, checked before Mimir sees
//! it, with the place in the file.
//!
//! The rules follow Alertmanager's `config/config.go` (`Config.UnmarshalYAML`:
//! root route, undefined receivers and time intervals, unique names;
//! `Route.UnmarshalYAML`: `group_by`, zero intervals), `pkg/labels/parse.go`
//! (`ParseMatchers`, `ParseMatcher`: the matcher syntax) and
//! `timeinterval/timeinterval.go` (time ranges). Mimir loads tenants' configs
//! with that same `config.Load` (`pkg/alertmanager/api.go`, `validateUserConfig`).

use std::collections::{HashMap, HashSet};

use super::err_at;
use super::logql::regex::check_regex_syntax;
use crate::diag::{Diagnostic, did_you_mean};
use crate::model::alerting::{
    AlertingFile, PlatformAlertingFile, Receiver, Route, TimeInterval, TimeRange,
};
use crate::model::common::Loc;

/// Where a route tree's names resolve.
struct Names<'a> {
    receivers: Vec<&'a str>,
    intervals: HashSet<&'a str>,
}

/// Checks of one tenant file that need nothing else.
pub(super) fn check_alerting(path: &str, f: &AlertingFile, diags: &mut Vec<Diagnostic>) {
    check_receivers(path, &f.receivers, diags);
    let intervals = check_time_intervals(path, &f.time_intervals, diags);
    check_root(path, &f.route, diags);
    walk_routes(&f.route, &mut |r| check_route(path, r, &intervals, diags));
    for rule in &f.inhibit_rules {
        for m in rule.source_matchers.iter().chain(&rule.target_matchers) {
            check_matchers(path, m, diags);
        }
        for l in &rule.equal {
            check_label_name(path, l, "equal", diags);
        }
    }
}

/// Checks of the platform file that need nothing else: its routes may name only
/// its own receivers, and each must go on to the tenant's routes.
pub(super) fn check_platform_alerting(
    path: &str,
    f: &PlatformAlertingFile,
    diags: &mut Vec<Diagnostic>,
) {
    check_receivers(path, &f.receivers, diags);
    let names = Names {
        receivers: f.receivers.iter().map(|r| r.name.value.as_str()).collect(),
        intervals: HashSet::new(),
    };
    for top in &f.routes {
        if !top.continue_.as_ref().is_some_and(|c| c.value) {
            diags.push(
                err_at(path, top, "a platform route must set `continue: true`")
                    .with_hint("platform routes come first under every tenant's root route; without `continue: true` the alerts they match would never reach the tenant's own routes"),
            );
        }
        walk_routes(top, &mut |r| {
            check_route(path, r, &names.intervals, diags);
            check_receiver_ref(
                path,
                r,
                &names,
                "the platform's receivers in alerting.yaml",
                diags,
            );
        });
    }
}

/// Checks between a tenant's file and the platform's: receiver references and
/// names shared with the platform's receivers.
pub(super) fn check_alerting_refs(
    path: &str,
    f: &AlertingFile,
    platform: Option<&PlatformAlertingFile>,
    diags: &mut Vec<Diagnostic>,
) {
    let platform_receivers: Vec<&str> = platform
        .map(|p| p.receivers.iter().map(|r| r.name.value.as_str()).collect())
        .unwrap_or_default();
    for r in &f.receivers {
        if platform_receivers.contains(&r.name.value.as_str()) {
            diags.push(
                err_at(path, &r.name, format!("receiver {:?} is also a receiver of the platform's alerting.yaml", r.name.value))
                    .with_hint("every tenant gets the platform's receivers in its Alertmanager configuration, where names must be unique: rename this one (e.g. prefix it with the team's name)"),
            );
        }
    }
    let names = Names {
        receivers: f
            .receivers
            .iter()
            .map(|r| r.name.value.as_str())
            .chain(platform_receivers.iter().copied())
            .collect(),
        intervals: HashSet::new(),
    };
    walk_routes(&f.route, &mut |r| {
        check_receiver_ref(
            path,
            r,
            &names,
            "this file's receivers or the platform's",
            diags,
        );
    });
}

fn walk_routes<'a>(r: &'a Loc<Route>, f: &mut impl FnMut(&'a Loc<Route>)) {
    f(r);
    for child in &r.value.routes {
        walk_routes(child, f);
    }
}

fn check_receiver_ref(
    path: &str,
    r: &Loc<Route>,
    names: &Names<'_>,
    where_: &str,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(name) = &r.value.receiver else {
        return;
    };
    if names.receivers.contains(&name.value.as_str()) {
        return;
    }
    let hint = match did_you_mean(&name.value, names.receivers.iter().copied()) {
        Some(c) => format!("did you mean {c:?}?"),
        None if names.receivers.is_empty() => {
            "define a receiver with this name under `receivers:`".into()
        }
        None => format!(
            "define it under `receivers:`, or use one of: {}",
            names.receivers.join(", ")
        ),
    };
    diags.push(
        err_at(
            path,
            name,
            format!(
                "route sends to receiver {:?}, which is not among {where_}",
                name.value
            ),
        )
        .with_hint(hint),
    );
}

/// Unique receiver names (`Config.UnmarshalYAML`: "notification config name %q
/// is not unique") and what each integration needs.
fn check_receivers(path: &str, receivers: &[Receiver], diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, &Loc<String>> = HashMap::new();
    for r in receivers {
        if r.name.value.is_empty() {
            diags.push(
                err_at(path, &r.name, "a receiver needs a name")
                    .with_hint("routes refer to receivers by name"),
            );
        }
        if let Some(first) = seen.insert(r.name.value.as_str(), &r.name) {
            diags.push(
                err_at(
                    path,
                    &r.name,
                    format!("receiver name {:?} is used twice", r.name.value),
                )
                .with_hint(format!(
                    "first defined at line {}; Alertmanager refuses duplicate receiver names",
                    first.line
                )),
            );
        }
        // `Config.UnmarshalYAML`: "missing service or routing key in PagerDuty config".
        for pd in &r.pagerduty_configs {
            if pd.routing_key.is_some() == pd.service_key.is_some() {
                diags.push(
                    err_at(path, &r.name, format!("receiver {:?}: a pagerduty config needs exactly one of `routing_key` or `service_key`", r.name.value))
                        .with_hint("`routing_key` for an Events API v2 integration, `service_key` for v1"),
                );
            }
        }
        // `email_configs[].smarthost` is a `HostPort` (`config.go`): "address …:
        // missing port in address".
        for e in &r.email_configs {
            let ok = e
                .smarthost
                .value
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && !p.is_empty());
            if !ok {
                diags.push(
                    err_at(
                        path,
                        &e.smarthost,
                        format!("smarthost {:?} is not host:port", e.smarthost.value),
                    )
                    .with_hint("write the SMTP server with its port, e.g. smtp.example.com:587"),
                );
            }
            if !e.from.value.contains('@') {
                diags.push(
                    err_at(
                        path,
                        &e.from,
                        format!("{:?} is not an e-mail address", e.from.value),
                    )
                    .with_hint("write the sender address, e.g. alertmanager@example.com"),
                );
            }
        }
    }
}

fn check_root(path: &str, root: &Loc<Route>, diags: &mut Vec<Diagnostic>) {
    let r = &root.value;
    let mut err = |msg: &str, hint: &str| {
        diags.push(err_at(path, root, msg).with_hint(hint));
    };
    if r.receiver.is_none() {
        err(
            "the root route must name a `receiver`",
            "the root route's receiver gets every alert no child route takes; add e.g. `receiver: team-slack`",
        );
    }
    if !r.matchers.is_empty() {
        err(
            "the root route must not have `matchers`",
            "every alert enters at the root; put the matchers on a route under `routes:`",
        );
    }
    if r.continue_.as_ref().is_some_and(|c| c.value) {
        err(
            "the root route cannot have `continue: true`",
            "remove it: there are no routes after the root",
        );
    }
    if !r.mute_time_intervals.is_empty() || !r.active_time_intervals.is_empty() {
        err(
            "the root route cannot have time intervals",
            "put `mute_time_intervals`/`active_time_intervals` on a route under `routes:`",
        );
    }
}

/// One route on its own: matchers, `group_by`, intervals, time interval names.
fn check_route(path: &str, r: &Loc<Route>, intervals: &HashSet<&str>, diags: &mut Vec<Diagnostic>) {
    let route = &r.value;
    for m in &route.matchers {
        check_matchers(path, m, diags);
    }
    if let Some(group_by) = &route.group_by {
        // `Route.UnmarshalYAML`: label names, `...` alone, no duplicates.
        let mut seen = HashSet::new();
        if let Some(all) = group_by.iter().find(|l| l.value == "...")
            && group_by.len() > 1
        {
            diags.push(
                err_at(
                    path,
                    all,
                    "`...` (group by every label) cannot be combined with other labels in group_by",
                )
                .with_hint("keep either `...` alone or the list of labels"),
            );
        }
        for l in group_by {
            if l.value == "..." {
                continue;
            }
            check_label_name(path, l, "group_by", diags);
            if !seen.insert(l.value.as_str()) {
                diags.push(
                    err_at(
                        path,
                        l,
                        format!("label {:?} appears twice in group_by", l.value),
                    )
                    .with_hint("remove the second one"),
                );
            }
        }
    }
    for (name, d) in [
        ("group_interval", &route.group_interval),
        ("repeat_interval", &route.repeat_interval),
    ] {
        if let Some(d) = d
            && d.value.millis == 0
        {
            diags.push(
                err_at(path, d, format!("{name} cannot be zero"))
                    .with_hint("Alertmanager refuses 0 here; write a duration such as 5m"),
            );
        }
    }
    for name in route
        .mute_time_intervals
        .iter()
        .chain(&route.active_time_intervals)
    {
        if !intervals.contains(name.value.as_str()) {
            let hint = match did_you_mean(&name.value, intervals.iter().copied()) {
                Some(c) => format!("did you mean {c:?}?"),
                None => "define it under `time_intervals:` in this file".into(),
            };
            diags.push(
                err_at(
                    path,
                    name,
                    format!("time interval {:?} is not defined", name.value),
                )
                .with_hint(hint),
            );
        }
    }
}

/// A label name as Alertmanager 0.25 (and Mimir without UTF-8 names) accepts it:
/// `model.LabelName.IsValid`, `^[a-zA-Z_][a-zA-Z0-9_]*$`.
fn check_label_name(path: &str, l: &Loc<String>, field: &str, diags: &mut Vec<Diagnostic>) {
    if !is_label_name(&l.value) {
        diags.push(
            err_at(
                path,
                l,
                format!("{:?} in {field} is not a valid label name", l.value),
            )
            .with_hint("label names are letters, digits and `_`, not starting with a digit"),
        );
    }
}

fn is_label_name(s: &str) -> bool {
    let mut cs = s.chars();
    cs.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn check_matchers(path: &str, m: &Loc<String>, diags: &mut Vec<Diagnostic>) {
    if let Err(e) = parse_matchers(&m.value) {
        diags.push(
            err_at(path, m, format!("matcher {:?} does not parse: {e}", m.value))
                .with_hint("write `label=\"value\"`, with = != =~ or !~, e.g. severity=\"critical\" or service=~\"pay.*\"; quote the YAML string when it starts with a quote or contains `: `"),
        );
    }
}

/// One parsed matcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Matcher {
    pub name: String,
    pub op: &'static str,
    pub value: String,
}

/// Alertmanager's `labels.ParseMatchers` (`pkg/labels/parse.go`): an optional
/// `{`…`}`, matchers separated by commas outside double quotes, a trailing comma
/// allowed.
pub fn parse_matchers(s: &str) -> Result<Vec<Matcher>, String> {
    let s = s.strip_prefix('{').unwrap_or(s);
    let s = s.strip_suffix('}').unwrap_or(s);
    let (mut inside, mut escaped) = (false, false);
    let mut token = String::new();
    let mut tokens = Vec::new();
    for c in s.chars() {
        match c {
            ',' if !inside => {
                tokens.push(std::mem::take(&mut token));
                continue;
            }
            ',' => {}
            '"' => {
                if escaped {
                    escaped = false;
                } else {
                    inside = !inside;
                }
            }
            '\\' => escaped = !escaped,
            _ => escaped = false,
        }
        token.push(c);
    }
    let last = token.trim_matches(GO_SPACE);
    if !last.is_empty() {
        tokens.push(last.to_string());
    }
    tokens.iter().map(|t| parse_matcher(t)).collect()
}

/// Go regexp's `\s`.
const GO_SPACE: &[char] = &[' ', '\t', '\n', '\r', '\x0c'];

/// Alertmanager's `labels.ParseMatcher`: `^\s*([a-zA-Z_:][a-zA-Z0-9_:]*)\s*(=~|=|!=|!~)\s*((?s).*?)\s*$`,
/// then the value's OpenMetrics escapes, then (for `=~`, `!~`) the anchored
/// regex compiled by Go's RE2 (`labels.NewMatcher`).
pub fn parse_matcher(s: &str) -> Result<Matcher, String> {
    let bad = || format!("bad matcher format: {s}");
    let rest = s.trim_start_matches(GO_SPACE);
    let name_len = rest
        .char_indices()
        .find(|&(i, c)| {
            !(c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit()))
        })
        .map_or(rest.len(), |(i, _)| i);
    if name_len == 0 {
        return Err(bad());
    }
    let name = &rest[..name_len];
    let rest = rest[name_len..].trim_start_matches(GO_SPACE);
    let op = ["=~", "=", "!=", "!~"]
        .into_iter()
        .find(|op| rest.starts_with(op))
        .ok_or_else(bad)?;
    let raw = rest[op.len()..]
        .trim_start_matches(GO_SPACE)
        .trim_end_matches(GO_SPACE);
    if raw.is_empty() {
        // parse.go indexes the first byte of the value, which an empty value
        // does not have: Alertmanager fails on it rather than match "".
        return Err(format!(
            "empty value in {s:?}: write {name}{op}\"\" to match an empty or missing label"
        ));
    }
    let (raw, mut expect_quote) = match raw.strip_prefix('"') {
        Some(r) => (r, true),
        None => (raw, false),
    };
    let mut value = String::new();
    let mut escaped = false;
    let chars: Vec<char> = raw.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if escaped {
            escaped = false;
            match c {
                'n' => value.push('\n'),
                '"' | '\\' => value.push(c),
                _ => {
                    value.push('\\');
                    value.push(c);
                }
            }
            continue;
        }
        match c {
            '\\' if i < chars.len() - 1 => escaped = true,
            '\\' => value.push('\\'),
            '"' => {
                if !expect_quote || i < chars.len() - 1 {
                    return Err(format!(
                        "matcher value contains unescaped double quote: {raw}"
                    ));
                }
                expect_quote = false;
            }
            _ => value.push(c),
        }
    }
    if expect_quote {
        return Err(format!(
            "matcher value contains unescaped double quote: \"{raw}"
        ));
    }
    if op == "=~" || op == "!~" {
        check_regex_syntax(&value).map_err(|(at, msg)| {
            format!("invalid regular expression {value:?} at byte {at}: {msg}")
        })?;
    }
    Ok(Matcher {
        name: name.to_string(),
        op,
        value,
    })
}

/// Unique names (`Config.UnmarshalYAML`: "time interval %q is not unique") and
/// ranges `timeinterval.go` can read. Returns the names.
fn check_time_intervals<'a>(
    path: &str,
    intervals: &'a [TimeInterval],
    diags: &mut Vec<Diagnostic>,
) -> HashSet<&'a str> {
    let mut names = HashSet::new();
    for ti in intervals {
        if !names.insert(ti.name.value.as_str()) {
            diags.push(
                err_at(
                    path,
                    &ti.name,
                    format!("time interval {:?} is defined twice", ti.name.value),
                )
                .with_hint("give each time interval its own name"),
            );
        }
        for r in &ti.time_intervals {
            check_time_range(path, r, diags);
        }
    }
    names
}

const WEEKDAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];
const MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];

fn check_time_range(path: &str, r: &TimeRange, diags: &mut Vec<Diagnostic>) {
    for t in &r.times {
        let (s, e) = (minutes(&t.start_time.value), minutes(&t.end_time.value));
        for (v, at) in [(s, &t.start_time), (e, &t.end_time)] {
            if v.is_none() {
                diags.push(
                    err_at(path, at, format!("{:?} is not a time of day", at.value))
                        .with_hint("write HH:MM from 00:00 to 24:00, e.g. 09:00"),
                );
            }
        }
        if let (Some(s), Some(e)) = (s, e)
            && s >= e
        {
            diags.push(
                err_at(path, &t.end_time, "end_time must be after start_time").with_hint(
                    "a range over midnight is two ranges: 22:00 to 24:00 and 00:00 to 06:00",
                ),
            );
        }
    }
    let named = |names: &'static [&'static str]| {
        move |v: &str| {
            names
                .iter()
                .position(|n| n.eq_ignore_ascii_case(v))
                .map(|i| i as i64 + 1)
        }
    };
    let number =
        |lo: i64, hi: i64| move |v: &str| v.parse::<i64>().ok().filter(|n| (lo..=hi).contains(n));
    let months_named = named(&MONTHS);
    let month = move |v: &str| months_named(v).or_else(|| number(1, 12)(v));
    let day = move |v: &str| number(-31, 31)(v).filter(|n| *n != 0);
    let year = number(1, 9999);
    check_ranges(
        path,
        &r.weekdays,
        "weekdays",
        &named(&WEEKDAYS),
        "a day name such as monday, or monday:friday",
        diags,
    );
    check_ranges(
        path,
        &r.months,
        "months",
        &month,
        "a month name or number 1-12, or a range such as january:march",
        diags,
    );
    check_ranges(
        path,
        &r.days_of_month,
        "days_of_month",
        &day,
        "a day 1-31 (or -31 to -1 from the end), or a range such as 1:5",
        diags,
    );
    check_ranges(
        path,
        &r.years,
        "years",
        &year,
        "a year such as 2027, or a range such as 2026:2027",
        diags,
    );
}

/// `HH:MM` as minutes of the day, 00:00 to 24:00 (`timeinterval.go`, `parseTime`).
fn minutes(s: &str) -> Option<u32> {
    let (h, m) = s.split_once(':')?;
    if h.len() != 2 || m.len() != 2 {
        return None;
    }
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
}

fn check_ranges(
    path: &str,
    items: &[Loc<String>],
    field: &str,
    one: &dyn Fn(&str) -> Option<i64>,
    want: &str,
    diags: &mut Vec<Diagnostic>,
) {
    for item in items {
        let v = item.value.trim();
        let ok = match v.split_once(':') {
            Some((a, b)) => {
                matches!((one(a), one(b)), (Some(a), Some(b)) if a <= b || (a < 0) != (b < 0))
            }
            None => one(v).is_some(),
        };
        if !ok {
            diags.push(
                err_at(
                    path,
                    item,
                    format!("{:?} in {field} is not valid", item.value),
                )
                .with_hint(format!(
                    "write {want}; a range goes from the earlier to the later"
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Vec<(String, &'static str, String)> {
        parse_matchers(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .into_iter()
            .map(|m| (m.name, m.op, m.value))
            .collect()
    }

    fn m(n: &str, op: &'static str, v: &str) -> (String, &'static str, String) {
        (n.into(), op, v.into())
    }

    /// The examples of `ParseMatchers`' doc comment, and its tests'
    /// (`pkg/labels/parse_test.go`).
    #[test]
    fn matchers_parse_like_alertmanager() {
        assert_eq!(
            ok(r#"{foo = "bar", dings != "bums", }"#),
            vec![m("foo", "=", "bar"), m("dings", "!=", "bums")]
        );
        assert_eq!(
            ok("foo=bar,dings!=bums"),
            vec![m("foo", "=", "bar"), m("dings", "!=", "bums")]
        );
        assert_eq!(
            ok(r#"{quote="She said: \"Hi, ladies! That's gender-neutral…\""}"#),
            vec![m(
                "quote",
                "=",
                "She said: \"Hi, ladies! That's gender-neutral…\""
            )]
        );
        assert_eq!(
            ok(r#"statuscode=~"5..""#),
            vec![m("statuscode", "=~", "5..")]
        );
        assert_eq!(
            ok("severity=critical"),
            vec![m("severity", "=", "critical")]
        );
        assert_eq!(ok(r#"foo=~"bar\\d""#), vec![m("foo", "=~", "bar\\d")]);
        assert_eq!(
            ok(r#"trickier==\\=\=\""#),
            vec![m("trickier", "=", "=\\=\\=\"")]
        );
        assert_eq!(ok(r#"foo="""#), vec![m("foo", "=", "")]);
        assert_eq!(ok("foo:bar=baz"), vec![m("foo:bar", "=", "baz")]);
    }

    #[test]
    fn bad_matchers_are_refused() {
        for bad in [
            "severity",
            "=critical",
            "1abc=x",
            r#"foo="bar"baz""#,
            r#"foo="bar"#,
            "foo=~(",
            "foo=~a{2,1}",
            "foo ~= bar",
            "foo=",
            "a=b,,c=d",
        ] {
            assert!(parse_matchers(bad).is_err(), "{bad} parsed");
        }
    }

    #[test]
    fn times_and_ranges() {
        assert_eq!(minutes("09:30"), Some(570));
        assert_eq!(minutes("24:00"), Some(1440));
        assert_eq!(minutes("24:01"), None);
        assert_eq!(minutes("9:30"), None);
    }
}
