//! A direct reader of rule files on the YAML parser's events, for the files it is
//! sure about; everything else goes to `serde_saphyr`.
//!
//! Why: a realistic repository holds about 50 MB of rule YAML, and
//! `serde_saphyr::from_str::<RuleFile>` reads it at ~35 MB/s on this machine,
//! while the parser under it (`granit-parser`) produces the same events at
//! ~70 MB/s (docs/performance.md, "Realistic repository"). The difference is
//! serde-saphyr's general deserializer machinery (event buffering, redaction
//! scopes, span maps), which a three-level schema does not need.
//!
//! The contract, checked by the differential tests below: when [`read`] returns
//! `Some(file)`, `file` is exactly what `serde_saphyr::from_str::<RuleFile>`
//! returns for the same text, positions included. When the text uses anything
//! this reader does not handle the way serde-saphyr does — anchors, aliases,
//! tags, directives, null-like or non-decimal scalars, duplicate or unknown keys,
//! several documents, a value that does not parse, sizes near serde-saphyr's
//! budget — it returns `None`, and the caller asks serde-saphyr, whose answer
//! (value or diagnostics) is then the one used. So this reader can only ever be
//! faster, never different. Both read the same `granit-parser` (one version in
//! the lock file; the crates require the same major), with the options
//! serde-saphyr's defaults give it, so scalars and positions come from the same
//! scanner.

use std::borrow::Cow;
use std::collections::BTreeMap;

use granit_parser::{Event, Parser, ScalarStyle, Span, StrInput};

use super::common::{Duration, Loc};
use super::rules::{Rule, RuleFile, RuleGroup};

/// serde-saphyr's default budget allows 250,000 nodes and 64 MiB of scalar
/// text; staying well inside both means no input this reader accepts could have
/// been refused by serde-saphyr's budget.
const MAX_EVENTS: usize = 150_000;
const MAX_BYTES: usize = 16 << 20;

/// The file, or `None` when serde-saphyr must decide (see the module docs).
pub fn read(text: &str) -> Option<RuleFile> {
    if text.len() > MAX_BYTES || text.starts_with('\u{feff}') {
        return None;
    }
    let mut ev = Events::new(text);
    ev.next_is(|e| matches!(e, Event::StreamStart))?;
    ev.next_is(|e| matches!(e, Event::DocumentStart(_, None)))?;
    let file = rule_file(&mut ev)?;
    ev.next_is(|e| matches!(e, Event::DocumentEnd))?;
    ev.next_is(|e| matches!(e, Event::StreamEnd))?;
    Some(file)
}

struct Events<'a> {
    parser: Parser<'a, StrInput<'a>>,
    seen: usize,
}

impl<'a> Events<'a> {
    fn new(text: &'a str) -> Self {
        // The options serde-saphyr 2.1 derives from its default `Options` and
        // `Budget` (serde-saphyr src/de/options.rs `parser_options`, src/de/budget.rs
        // `Budget::parser_options`): the same limits make the same inputs fail.
        let mut options = granit_parser::Options::default();
        options.simple_key_max_lookahead = 1024;
        options.flow_nesting_limit = 255;
        options.block_nesting_limit = options.block_nesting_limit.max(65);
        options.emit_comments = true;
        options.max_buffered_comment_events = 32;
        options.strict_indentation = false;
        Self {
            parser: Parser::with_options(StrInput::new(text), options),
            seen: 0,
        }
    }

    /// The next event that is not a comment; `None` on a scan error or past the
    /// event budget.
    fn next(&mut self) -> Option<(Event<'a>, Span)> {
        loop {
            let (event, span) = self.parser.next()?.ok()?;
            self.seen += 1;
            if self.seen > MAX_EVENTS {
                return None;
            }
            if !matches!(event, Event::Comment(..)) {
                return Some((event, span));
            }
        }
    }

    fn next_is(&mut self, want: impl Fn(&Event<'a>) -> bool) -> Option<()> {
        let (event, _) = self.next()?;
        want(&event).then_some(())
    }

    /// The start of a mapping or sequence without anchor or tag (`Some(true)`),
    /// YAML null in its place (`Some(false)`), or `None`.
    fn open(&mut self, mapping: bool) -> Option<bool> {
        match self.next()? {
            (Event::MappingStart(_, 0, None), _) if mapping => Some(true),
            (Event::SequenceStart(_, 0, None), _) if !mapping => Some(true),
            (event, _) if is_null(&event) => Some(false),
            _ => None,
        }
    }

    /// An optional string: YAML null is `None`, as serde's `Option` reads it.
    fn opt_string(&mut self) -> Option<Option<Loc<String>>> {
        let (event, span) = self.next()?;
        if is_null(&event) {
            return Some(None);
        }
        string_scalar(event, span).map(Some)
    }

    fn opt_duration(&mut self) -> Option<Option<Duration>> {
        match self.opt_string()? {
            None => Some(None),
            Some(s) => Duration::parse(&s.value).ok().map(Some),
        }
    }

    /// The next key of the mapping being read, or `Ok(None)` at its end.
    /// Borrowed from the text unless the key has escapes: keys are only compared,
    /// except a map's.
    fn key(&mut self) -> Option<Option<Cow<'a, str>>> {
        match self.next()? {
            (Event::MappingEnd, _) => Some(None),
            (event, _) if is_null(&event) => None,
            (Event::Scalar(text, _, 0, None), _) => Some(Some(text)),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<Loc<String>> {
        let (event, span) = self.next()?;
        string_scalar(event, span)
    }

    /// A plain decimal integer, the only form whose meaning all YAML schemas
    /// agree on, or null.
    fn opt_integer(&mut self) -> Option<Option<i64>> {
        let (event, _) = self.next()?;
        if is_null(&event) {
            return Some(None);
        }
        let Event::Scalar(text, ScalarStyle::Plain, 0, None) = event else {
            return None;
        };
        let digits = text.strip_prefix('-').unwrap_or(&text);
        let decimal = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        if decimal {
            text.parse().ok().map(Some)
        } else {
            None
        }
    }

    fn opt_string_map(&mut self) -> Option<Option<BTreeMap<String, Loc<String>>>> {
        if !self.open(true)? {
            return Some(None);
        }
        let mut map = BTreeMap::new();
        while let Some(key) = self.key()? {
            let value = self.string()?;
            if map.insert(key.into_owned(), value).is_some() {
                return None;
            }
        }
        Some(Some(map))
    }

    /// A sequence of mappings read by `item`; null is empty (`null_as_empty`
    /// in model/rules.rs).
    fn list<T>(&mut self, item: fn(&mut Events<'a>) -> Option<T>) -> Option<Vec<T>> {
        let mut list = Vec::new();
        if !self.open(false)? {
            return Some(list);
        }
        loop {
            match self.next()? {
                (Event::SequenceEnd, _) => return Some(list),
                (Event::MappingStart(_, 0, None), _) => list.push(item(self)?),
                _ => return None,
            }
        }
    }
}

/// YAML null as serde-saphyr resolves an untagged plain scalar (src/parse_scalars.rs
/// `scalar_is_nullish`).
fn is_null(event: &Event<'_>) -> bool {
    matches!(event, Event::Scalar(text, ScalarStyle::Plain, 0, None)
        if matches!(&**text, "" | "~" | "null" | "Null" | "NULL"))
}

/// A scalar serde-saphyr would give a `String` field as its text: no anchor, no
/// tag, not YAML null (serde-saphyr refuses null for a `String`, src/parse_scalars.rs
/// `scalar_is_nullish`). The position is the one `Spanned` records: the
/// scalar's start, column counted from 1 (src/location.rs `location_from_span`).
fn string_scalar(event: Event<'_>, span: Span) -> Option<Loc<String>> {
    if is_null(&event) {
        return None;
    }
    let Event::Scalar(text, _, 0, None) = event else {
        return None;
    };
    let line = u32::try_from(span.start.line()).ok()?;
    let column = u32::try_from(span.start.col() + 1).ok()?;
    Some(Loc::new(text.into_owned(), line, column))
}

/// Sets a field once; a second occurrence is serde's "duplicate field" error,
/// which serde-saphyr reports.
fn once<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

fn rule_file(ev: &mut Events<'_>) -> Option<RuleFile> {
    if !ev.open(true)? {
        return None;
    }
    let mut groups = None;
    while let Some(key) = ev.key()? {
        match &*key {
            "groups" => once(&mut groups, ev.list(rule_group)?)?,
            _ => return None,
        }
    }
    Some(RuleFile {
        groups: groups.unwrap_or_default(),
    })
}

fn rule_group(ev: &mut Events<'_>) -> Option<RuleGroup> {
    let (mut name, mut interval, mut query_offset, mut limit) = (None, None, None, None);
    let (mut labels, mut rules) = (None, None);
    while let Some(key) = ev.key()? {
        match &*key {
            "name" => once(&mut name, ev.string()?)?,
            "interval" => once(&mut interval, ev.opt_duration()?)?,
            "query_offset" => once(&mut query_offset, ev.opt_duration()?)?,
            "limit" => once(&mut limit, ev.opt_integer()?)?,
            "labels" => once(&mut labels, ev.opt_string_map()?)?,
            "rules" => once(&mut rules, ev.list(rule)?)?,
            _ => return None,
        }
    }
    Some(RuleGroup {
        name: name?,
        interval: interval.flatten(),
        query_offset: query_offset.flatten(),
        limit: limit.flatten(),
        labels: labels.flatten(),
        rules: rules.unwrap_or_default(),
    })
}

fn rule(ev: &mut Events<'_>) -> Option<Rule> {
    let (mut record, mut alert, mut expr, mut for_) = (None, None, None, None);
    let (mut keep_firing_for, mut labels, mut annotations) = (None, None, None);
    while let Some(key) = ev.key()? {
        match &*key {
            "record" => once(&mut record, ev.opt_string()?)?,
            "alert" => once(&mut alert, ev.opt_string()?)?,
            "expr" => once(&mut expr, ev.string()?)?,
            "for" => once(&mut for_, ev.opt_duration()?)?,
            "keep_firing_for" => once(&mut keep_firing_for, ev.opt_duration()?)?,
            "labels" => once(&mut labels, ev.opt_string_map()?)?,
            "annotations" => once(&mut annotations, ev.opt_string_map()?)?,
            _ => return None,
        }
    }
    Some(Rule {
        record: record.flatten(),
        alert: alert.flatten(),
        expr: expr?,
        for_: for_.flatten(),
        keep_firing_for: keep_firing_for.flatten(),
        labels: labels.flatten(),
        annotations: annotations.flatten(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The contract: whenever `read` answers, serde-saphyr gives the same value
    /// with the same positions. Returns whether `read` answered.
    fn agrees(text: &str) -> bool {
        let fast = read(text);
        let slow = serde_saphyr::from_str::<RuleFile>(text);
        if let Some(fast) = &fast {
            match &slow {
                Ok(slow) => assert_eq!(
                    format!("{fast:?}"),
                    format!("{slow:?}"),
                    "the direct reader and serde-saphyr differ on:\n{text}"
                ),
                Err(e) => {
                    panic!("the direct reader accepted what serde-saphyr refuses ({e}):\n{text}")
                }
            }
        }
        fast.is_some()
    }

    fn rule_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                rule_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml")
                && ["/rules/metrics/", "/rules/logs/"]
                    .iter()
                    .any(|d| p.to_string_lossy().contains(d))
            {
                out.push(p);
            }
        }
    }

    #[test]
    fn agrees_with_serde_saphyr_on_every_rule_file_of_the_template_and_the_corpus() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let mut files = Vec::new();
        rule_files(&root.join("repo-template"), &mut files);
        rule_files(&root.join("syncer/tests/corpus"), &mut files);
        assert!(files.len() > 80, "found only {} rule files", files.len());
        let mut fell_back = Vec::new();
        for f in &files {
            let text = std::fs::read_to_string(f).unwrap();
            if !agrees(&text) && !f.to_string_lossy().contains("/broken/") {
                fell_back.push(f.file_name().unwrap().to_string_lossy().into_owned());
            }
        }
        // Real-shaped rule files are what the direct reader is for; only an
        // empty document goes to serde-saphyr.
        fell_back.sort();
        assert_eq!(fell_back, ["empty-file.yaml"]);
    }

    #[test]
    fn scalar_styles_comments_and_flow_collections_are_read_directly() {
        let cases = [
            "groups:\n- name: a\n  rules:\n  - record: x\n    expr: up\n",
            "# header\ngroups: # trailing\n  # before\n  - name: 'a b'\n    interval: 30s\n    rules:\n      - alert: \"A\\tB\"\n        expr: |-\n          sum(up)\n            > 1\n        for: 1h30m\n        labels: {severity: page, team: \"x\"}\n        annotations:\n          summary: >\n            folded\n            text\n",
            "---\ngroups: []\n",
            "groups:\n  - name: g\n    limit: 10\n    query_offset: 1m\n    labels:\n      a: '1'\n    rules: []\n",
            "groups: [{name: g, rules: [{record: r, expr: 'vector(1)'}]}]\n",
            "groups:\r\n  - name: g\r\n    rules:\r\n      - record: r\r\n        expr: up == 1\r\n",
            "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n        keep_firing_for: 5m\n        labels:\n          yes: no\n          n: 1.5\n",
            "groups:\n",
            "groups: ~\n",
            "groups:\n  - name: g\n    rules:\n  - name: h\n    interval: null\n    labels:\n    rules:\n      - record: r\n        expr: up\n        for: ~\n        labels: NULL\n        alert: Null\n",
            "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: >-\n          a\n\n          b\n        annotations:\n          d: |+\n            kept\n\n",
        ];
        for c in cases {
            assert!(agrees(c), "fell back on:\n{c}");
        }
    }

    #[test]
    fn what_only_serde_saphyr_decides_goes_to_it() {
        let cases = [
            // anchors, aliases, tags, merge keys
            "groups:\n  - name: &n g\n    rules:\n      - record: *n\n        expr: up\n",
            "groups:\n  - name: !!str g\n    rules: []\n",
            "base: &b {severity: page}\ngroups: []\n",
            "groups:\n  - name: g\n    labels:\n      <<: {a: b}\n",
            // null-like values, missing required fields, unknown and repeated keys
            "groups:\n  - name: ~\n",
            "groups:\n  - name:\n",
            "groups:\n  - rules: []\n",
            "groups:\n  - name: g\n    rules:\n      - record: r\n",
            "groups:\n  - name: g\n    bogus: 1\n",
            "groups:\n  - name: g\n    name: h\n",
            "groups:\n  - name: g\n    labels: {a: b, a: c}\n",
            "groups: []\ngroups: []\n",
            // numbers only serde-saphyr's schema resolves, durations that do not parse
            "groups:\n  - name: g\n    limit: 0x10\n",
            "groups:\n  - name: g\n    limit: 010\n",
            "groups:\n  - name: g\n    limit: '5'\n",
            "groups:\n  - name: g\n    interval: 5\n",
            "groups:\n  - name: g\n    interval: 5 m\n",
            // documents, directives, syntax errors, emptiness
            "%YAML 1.2\n---\ngroups: []\n",
            "groups: []\n---\ngroups: []\n",
            "",
            "# only a comment\n",
            "groups: [\n",
            "\u{feff}groups: []\n",
            "- name: g\n",
        ];
        for c in cases {
            assert!(
                !agrees(c),
                "read directly, but serde-saphyr should decide:\n{c}"
            );
        }
    }

    /// Rule files assembled from pieces in every style the scanner knows,
    /// including ones the reader must leave to serde-saphyr.
    fn scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("up".to_string()),
            Just("sum(rate(x{a=\"b\"}[5m])) > 0.5".to_string()),
            Just("'single ''quoted'''".to_string()),
            Just("\"double \\\"quoted\\\" \\u00e9\"".to_string()),
            Just("|-\n          literal\n          block".to_string()),
            Just(">\n          folded\n          block\n".to_string()),
            Just("~".to_string()),
            Just("".to_string()),
            Just("null".to_string()),
            Just("true".to_string()),
            Just("12".to_string()),
            Just("1.5e3".to_string()),
            Just("&a anchored".to_string()),
            Just("!!str tagged".to_string()),
            Just("a # comment".to_string()),
            Just("x: y".to_string()),
            Just("[a, b]".to_string()),
            Just("{a: b}".to_string()),
            Just("5m".to_string()),
            Just("1h30m".to_string()),
            "[a-z][a-z0-9_ -]{0,12}",
        ]
    }

    fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("record"),
            Just("alert"),
            Just("expr"),
            Just("expr"),
            Just("for"),
            Just("keep_firing_for"),
            Just("labels"),
            Just("annotations"),
            Just("bogus"),
        ]
        .prop_map(str::to_string)
    }

    fn rule_text() -> impl Strategy<Value = String> {
        prop::collection::vec((key(), scalar(), any::<bool>()), 1..6).prop_map(|fields| {
            let mut out = String::new();
            for (i, (k, v, map)) in fields.into_iter().enumerate() {
                let lead = if i == 0 { "      - " } else { "        " };
                if map && (k == "labels" || k == "annotations") {
                    out.push_str(&format!("{lead}{k}:\n          a: {v}\n          b: x\n"));
                } else {
                    out.push_str(&format!("{lead}{k}: {v}\n"));
                }
            }
            out
        })
    }

    /// A rule file from the generated pieces, one group.
    fn assemble(
        (name, interval, rules, comment): (String, Option<String>, Vec<String>, bool),
    ) -> String {
        let mut text = String::new();
        if comment {
            text.push_str("# rules\n");
        }
        text.push_str(&format!("groups:\n  - name: {name}\n"));
        if let Some(i) = interval {
            text.push_str(&format!("    interval: {i}\n"));
        }
        text.push_str("    rules:\n");
        for r in rules {
            text.push_str(&r);
        }
        text
    }

    #[test]
    fn whenever_the_reader_answers_serde_saphyr_gives_the_same() {
        use proptest::strategy::ValueTree;
        let strategy = (
            scalar(),
            prop::option::of(scalar()),
            prop::collection::vec(rule_text(), 0..4),
            any::<bool>(),
        );
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let (mut direct, total) = (0, 3000);
        for _ in 0..total {
            let text = assemble(strategy.new_tree(&mut runner).unwrap().current());
            if agrees(&text) {
                direct += 1;
            }
        }
        // Both sides of the contract must be exercised: files read directly (and
        // compared) and files left to serde-saphyr.
        assert!(
            direct * 10 > total && direct * 10 < total * 9,
            "{direct} of {total} read directly"
        );
    }
}
