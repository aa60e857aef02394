//! Diagnostics: every problem found in a config repository, with where it is and how
//! to fix it. Validation collects them all instead of stopping at the first.

use std::fmt;

use serde::Serialize;

/// How bad a problem is. Only errors make a repository invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
}

/// One problem in one file.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Path relative to the repository root, with `/` separators.
    pub file: String,
    /// 1-based line; 0 when the problem concerns the whole file.
    pub line: u32,
    /// 1-based column; 0 when unknown.
    pub column: u32,
    pub severity: Severity,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn error(
        file: impl Into<String>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            file: file.into(),
            line,
            column,
            severity: Severity::Error,
            message: message.into(),
            hint: None,
        }
    }

    pub fn warning(
        file: impl Into<String>,
        line: u32,
        column: u32,
        message: impl Into<String>,
    ) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::error(file, line, column, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    /// `file:line:col: error: message`, then `  hint: …` on its own line, as compilers
    /// print them so editors and CI annotators can jump to the place.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {sev}: {}", self.file, self.message)?,
            (l, 0) => write!(f, "{}:{l}: {sev}: {}", self.file, self.message)?,
            (l, c) => write!(f, "{}:{l}:{c}: {sev}: {}", self.file, self.message)?,
        }
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

/// The closest candidate to `word`, if it is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Turns a serde-saphyr error into a diagnostic: location, a message without the
/// library's own position prefix, and a "did you mean" hint for unknown names.
pub fn from_yaml_error(file: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let (line, column) = err
        .location()
        .map(|l| {
            (
                u32::try_from(l.line()).unwrap_or(0),
                u32::try_from(l.column()).unwrap_or(0),
            )
        })
        .unwrap_or((0, 0));
    let rendered = err.render_with_options(serde_saphyr::render_options! {
        snippets: serde_saphyr::SnippetMode::Off,
    });
    let message = strip_position_prefix(rendered.trim());
    // The inline-secret refusal (model::common::SecretRef) carries its fix after
    // "; ": print it as the hint, like every other diagnostic.
    if let Some((what, fix)) = message.split_once("; ")
        && what.starts_with("inline secret")
    {
        return Diagnostic::error(file, line, column, what).with_hint(fix);
    }
    let mut d = Diagnostic::error(file, line, column, message.clone());
    if let Some(h) = hint_for_message(&message) {
        d = d.with_hint(h);
    }
    d
}

/// Like [`from_yaml_error`], with the file's text to say in plain words what
/// was wrong with a number, and what a YAML size limit means.
pub fn from_yaml_error_in(file: &str, text: &str, err: &serde_saphyr::Error) -> Diagnostic {
    let mut d = from_yaml_error(file, err);
    // The error may come wrapped with context, so read the breach from the
    // message ("budget breached: Depth { depth: 65 }").
    if let Some(breach) = d
        .message
        .split_once("budget breached: ")
        .or_else(|| d.message.split_once("limits breached: "))
        .map(|(_, b)| b.to_string())
    {
        let (message, hint) = budget_in_words(&breach);
        d.message = message;
        d.hint = Some(hint);
        return d;
    }
    let Some(ty) = d.message.strip_prefix("invalid ") else {
        return d;
    };
    let unsigned = matches!(ty, "u8" | "u16" | "u32" | "u64" | "usize");
    let signed = matches!(ty, "i8" | "i16" | "i32" | "i64" | "isize");
    let float = matches!(ty, "f32" | "f64");
    if !(unsigned || signed || float) {
        return d;
    }
    let scalar = scalar_at(text, d.line, d.column);
    let (message, hint) = if unsigned && scalar.starts_with('-') {
        (
            format!("{scalar} is negative; this field takes a whole number, 0 or more"),
            "write 0 or a positive whole number (see docs/config-reference.md for what 0 means here)",
        )
    } else if (unsigned || signed) && scalar.parse::<f64>().is_ok() {
        (
            format!(
                "{scalar} is not a whole number, or too large; this field takes a whole number"
            ),
            "write a whole number without a decimal point, e.g. 20",
        )
    } else {
        (
            format!("{scalar:?} is not a number; this field takes a number"),
            "write a plain number, without quotes or units",
        )
    };
    d.message = message;
    d.hint = Some(hint.to_string());
    d
}

/// The plain scalar that starts at (line, column): up to a space, comma,
/// closing bracket or comment.
fn scalar_at(text: &str, line: u32, column: u32) -> String {
    let l = text
        .lines()
        .nth(line.saturating_sub(1) as usize)
        .unwrap_or("");
    let rest: String = l.chars().skip(column.saturating_sub(1) as usize).collect();
    let end = rest
        .find(|c: char| c.is_whitespace() || ",]}#".contains(c))
        .unwrap_or(rest.len());
    rest[..end].trim_matches(['"', '\'']).to_string()
}

/// serde-saphyr refuses YAML beyond fixed budgets (`serde_saphyr::Budget`
/// defaults: 250,000 nodes, depth 64, …) so a hostile file cannot exhaust
/// memory; say which limit and what to do. `breach` is the breach's Debug form.
fn budget_in_words(breach: &str) -> (String, String) {
    let kind = breach.split([' ', '{']).next().unwrap_or("");
    let n: Option<usize> = breach
        .split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .and_then(|w| w.parse().ok());
    let split = "split it into several files (rule groups can go in more files under rules/; a tenant can have many)".to_string();
    match (kind, n) {
        ("Nodes", Some(n)) => (
            format!("the file has more than {} YAML values (keys, values and list items), more than MOP reads from one file", n.saturating_sub(1)),
            split,
        ),
        ("Depth", Some(n)) => (
            format!("lists and maps are nested {n} levels deep, deeper than MOP reads"),
            "a config file needs a few levels; look for a runaway `- - - …` or `[[[…` structure".into(),
        ),
        ("ScalarBytes", Some(n)) => (
            format!("the file holds {n} bytes of text values, more than MOP reads from one file"),
            split,
        ),
        ("Aliases" | "Anchors" | "AliasAnchorRatio" | "MergeKeys", _) => (
            "the file uses more YAML anchors, aliases or merge keys (`&a`, `*a`, `<<`) than MOP expands".into(),
            "write the values out instead of repeating them through aliases".into(),
        ),
        _ => (
            format!("the file is too large or too complex for MOP's YAML reader ({breach})"),
            split,
        ),
    }
}

/// serde-saphyr prefixes `error: line N column M: `; we print the position ourselves.
fn strip_position_prefix(msg: &str) -> String {
    let mut m = msg.strip_prefix("error: ").unwrap_or(msg);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((_, after)) = rest.split_once(": ")
        && rest.split(' ').nth(1) == Some("column")
    {
        m = after;
    }
    // Keep the first line: the rest is a snippet or a repeat.
    let mut first = m.lines().next().unwrap_or(m);
    // Some messages end in " at line L, column C"; the position is printed in front.
    if let Some(pos) = first.rfind(" at line ")
        && first[pos..].contains(", column ")
    {
        first = &first[..pos];
    }
    let first = first.trim_end_matches(", set DuplicateKeyPolicy in Options if acceptable");
    first.to_string()
}

/// Hints for serde's standard messages.
pub fn hint_for_message(msg: &str) -> Option<String> {
    for kind in ["unknown field `", "unknown variant `"] {
        if let Some(rest) = msg.strip_prefix(kind)
            && let Some((word, tail)) = rest.split_once('`')
        {
            if kind == "unknown field `" && looks_like_secret_key(word) {
                return Some(crate::model::common::INLINE_SECRET_HINT.to_string());
            }
            // An Alertmanager receiver type MOP does not offer: compare the
            // integration names without the common `_configs`, so `telegram`
            // is not taken for a typo of `pagerduty`.
            if let Some(kind_word) = word.strip_suffix("_configs")
                && tail.contains("slack_configs")
            {
                let types: Vec<&str> = tail
                    .split(|c: char| c == ',' || c.is_whitespace() || c == '`')
                    .filter_map(|c| c.strip_suffix("_configs"))
                    .collect();
                return Some(match did_you_mean(kind_word, types.iter().copied()) {
                    Some(t) => format!("did you mean `{t}_configs`?"),
                    None => format!(
                        "MOP offers the receiver types {}; use a webhook_configs receiver for others",
                        types
                            .iter()
                            .map(|t| format!("{t}_configs"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                });
            }
            let expected = tail
                .split_once("expected one of ")
                .or_else(|| tail.split_once("expected "))
                .map(|(_, list)| list)
                .unwrap_or("");
            let candidates: Vec<&str> = expected
                .split(", ")
                .map(|c| c.trim_matches(|ch: char| ch == '`' || ch == ' '))
                .filter(|c| !c.is_empty())
                .collect();
            return match did_you_mean(word, candidates.iter().copied()) {
                Some(c) => Some(format!("did you mean `{c}`?")),
                None if !candidates.is_empty() => {
                    Some(format!("valid names here: {}", candidates.join(", ")))
                }
                None => None,
            };
        }
    }
    if let Some(field) = msg.strip_prefix("missing field `") {
        let field = field.trim_end_matches('`');
        return Some(format!(
            "add `{field}:`; see docs/config-reference.md for what it means"
        ));
    }
    None
}

/// Keys that, written with a literal value, mean a credential was pasted into git.
pub fn looks_like_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    [
        "password",
        "passwd",
        "token",
        "secret",
        "api_key",
        "apikey",
        "bearer",
        "credentials",
        "private_key",
    ]
    .iter()
    .any(|s| k.contains(s))
        && !k.ends_with("_file")
        && !k.ends_with("_ref")
}

/// Token prefixes of well-known providers, and what they are.
pub const CREDENTIAL_PREFIXES: &[(&str, &str)] = &[
    ("ghp_", "a GitHub token"),
    ("gho_", "a GitHub token"),
    ("ghs_", "a GitHub token"),
    ("github_pat_", "a GitHub token"),
    ("glpat-", "a GitLab token"),
    ("glsa_", "a Grafana service-account token"),
    ("glc_", "a Grafana Cloud token"),
    ("xoxb-", "a Slack token"),
    ("xoxp-", "a Slack token"),
    ("sk_live_", "a Stripe key"),
    ("AKIA", "an AWS access key id"),
];

/// Values with the unmistakable shape of a credential: provider token prefixes and
/// PEM private keys. Deliberately narrow, so it never flags ordinary text.
pub fn looks_like_credential(value: &str) -> Option<&'static str> {
    let v = value.trim();
    // AWS key ids have a fixed shape, checked below.
    for (p, what) in CREDENTIAL_PREFIXES.iter().filter(|(p, _)| *p != "AKIA") {
        if v.starts_with(p) && v.len() >= p.len() + 16 {
            return Some(what);
        }
    }
    if v.contains("-----BEGIN") && v.contains("PRIVATE KEY-----") {
        return Some("a private key");
    }
    if v.len() == 20
        && v.starts_with("AKIA")
        && v.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    {
        return Some("an AWS access key id");
    }
    None
}

/// 1-based line and column of a byte offset in `text`.
pub fn line_col(text: &str, offset: usize) -> (u32, u32) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = memchr::memchr_iter(b'\n', before).count() + 1;
    let line_start = memchr::memrchr(b'\n', before).map_or(0, |p| p + 1);
    let column = String::from_utf8_lossy(&before[line_start..])
        .chars()
        .count()
        + 1;
    (
        u32::try_from(line).unwrap_or(u32::MAX),
        u32::try_from(column).unwrap_or(u32::MAX),
    )
}

/// [`line_col`] of several offsets, in one pass over the text up to the last.
pub fn line_cols<const N: usize>(text: &str, offsets: [usize; N]) -> [(u32, u32); N] {
    let b = text.as_bytes();
    let mut order: [usize; N] = std::array::from_fn(|i| i);
    order.sort_by_key(|&i| offsets[i]);
    let mut out = [(1, 1); N];
    let (mut pos, mut line, mut line_start) = (0usize, 1usize, 0usize);
    for i in order {
        let o = offsets[i].min(b.len());
        let seg = &b[pos..o];
        line += memchr::memchr_iter(b'\n', seg).count();
        if let Some(p) = memchr::memrchr(b'\n', seg) {
            line_start = pos + p + 1;
        }
        pos = o;
        let column = String::from_utf8_lossy(&b[line_start..o]).chars().count() + 1;
        out[i] = (
            u32::try_from(line).unwrap_or(u32::MAX),
            u32::try_from(column).unwrap_or(u32::MAX),
        );
    }
    out
}

/// Byte offset of a top-level key of a JSON object, without building a tree: used to
/// point at `uid` in a dashboard only when something is wrong with it.
pub fn json_top_level_key(text: &str, key: &str) -> Option<usize> {
    let b = text.as_bytes();
    let (mut i, mut depth) = (0usize, 0i32);
    while i < b.len() {
        match b[i] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth -= 1,
            b'"' => {
                let start = i;
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
                if depth == 1 && text.get(start + 1..i) == Some(key) {
                    let mut j = i + 1;
                    while j < b.len() && b[j].is_ascii_whitespace() {
                        j += 1;
                    }
                    if b.get(j) == Some(&b':') {
                        return Some(start);
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_is_compiler_style() {
        let d = Diagnostic::error("tenants/a/tenant.yaml", 3, 5, "bad").with_hint("fix it");
        assert_eq!(
            d.to_string(),
            "tenants/a/tenant.yaml:3:5: error: bad\n  hint: fix it"
        );
        assert_eq!(
            Diagnostic::error("mop.yaml", 0, 0, "missing").to_string(),
            "mop.yaml: error: missing"
        );
    }

    #[test]
    fn unknown_field_gets_did_you_mean() {
        let h =
            hint_for_message("unknown field `namspaces`, expected one of id, namespaces, grafana");
        assert_eq!(h.as_deref(), Some("did you mean `namespaces`?"));
        let h = hint_for_message("unknown field `password`, expected one of url, admin_user");
        assert!(h.unwrap().contains("file:"));
    }

    #[test]
    fn finds_top_level_json_keys_only() {
        let t = r#"{"panels":[{"uid":"inner"}],
  "uid": "outer"}"#;
        let off = json_top_level_key(t, "uid").unwrap();
        assert_eq!(line_col(t, off), (2, 3));
        assert_eq!(json_top_level_key(t, "nope"), None);
    }

    #[test]
    fn numbers_and_budgets_in_plain_words() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u64,
        }
        let text = "n: -1\n";
        let e = serde_saphyr::from_str::<T>(text).unwrap_err();
        let d = from_yaml_error_in("t.yaml", text, &e);
        assert_eq!(
            d.to_string(),
            "t.yaml:1:4: error: -1 is negative; this field takes a whole number, 0 or more\n  hint: write 0 or a positive whole number (see docs/config-reference.md for what 0 means here)"
        );
        let text = "n: 2.5\n";
        let e = serde_saphyr::from_str::<T>(text).unwrap_err();
        assert!(
            from_yaml_error_in("t.yaml", text, &e)
                .message
                .starts_with("2.5 is not a whole number"),
        );
        let deep = format!("n: {}1{}\n", "[".repeat(80), "]".repeat(80));
        let e = serde_saphyr::from_str::<serde_json::Value>(&deep).unwrap_err();
        let d = from_yaml_error_in("t.yaml", &deep, &e);
        assert!(
            d.message.contains("levels deep, deeper than MOP reads"),
            "{d}"
        );
        let many: String = (0..130_000).map(|i| format!("- {i}\n")).collect();
        let many = format!("{many}{many}");
        let e = serde_saphyr::from_str::<serde_json::Value>(&many).unwrap_err();
        let d = from_yaml_error_in("t.yaml", &many, &e);
        assert!(
            d.message
                .starts_with("the file has more than 250000 YAML values"),
            "{d}"
        );
    }

    #[test]
    fn credentials_are_recognised_narrowly() {
        assert!(looks_like_credential("glsa_0123456789abcdef0123456789abcdef_0a1b2c3d").is_some());
        assert!(looks_like_credential("-----BEGIN OPENSSH PRIVATE KEY-----\nabc").is_some());
        assert!(looks_like_credential("ghp_short").is_none());
        assert!(looks_like_credential("the token bucket refills").is_none());
    }

    #[test]
    fn line_cols_in_one_pass_are_line_col_of_each() {
        use proptest::prelude::*;
        let text = prop::collection::vec(
            prop::sample::select(vec!["a", "\n", "é", " ", "\r\n"]),
            0..60,
        )
        .prop_map(|v| v.concat());
        proptest!(|(text in text, a in 0usize..200, b in 0usize..200, c in 0usize..200)| {
            // Offsets at character boundaries, as the callers' are.
            let fix = |o: usize| (0..=o.min(text.len())).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
            let (a, b, c) = (fix(a), fix(b), fix(c));
            prop_assert_eq!(
                line_cols(&text, [a, b, c]),
                [line_col(&text, a), line_col(&text, b), line_col(&text, c)]
            );
        });
    }
}
