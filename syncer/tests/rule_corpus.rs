//! The rule-file corpus (`tests/corpus/rules/`, see its README): rule files
//! shaped like a popular public alert collection and a Kubernetes monitoring
//! mixin, plus one file per class the rulers refuse. `mop validate` gives
//! exactly the verdicts in `expected.txt`, and on every Prometheus rule file
//! its verdict is the one the real `promtool check rules` gives, down to the
//! group and rule it blames.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;

use common::*;
use mop_syncer::diag::Diagnostic;

fn corpus() -> PathBuf {
    workspace_root().join("syncer/tests/corpus/rules")
}

fn diagnostics() -> Vec<Diagnostic> {
    let snap = mop_syncer::source::Snapshot::from_dir(&corpus()).unwrap();
    mop_syncer::validate::validate(&snap).diagnostics
}

fn rule_files(kind: &str) -> Vec<String> {
    let mut out = Vec::new();
    let tenants = corpus().join("tenants");
    for t in std::fs::read_dir(&tenants).unwrap() {
        let t = t.unwrap().file_name().into_string().unwrap();
        let dir = tenants.join(&t).join("rules").join(kind);
        let Ok(files) = std::fs::read_dir(&dir) else {
            continue;
        };
        for f in files {
            let f = f.unwrap().file_name().into_string().unwrap();
            out.push(format!("tenants/{t}/rules/{kind}/{f}"));
        }
    }
    out.sort();
    out
}

/// `file:line:col: severity: message`, without the hint.
fn headline(d: &Diagnostic) -> String {
    d.to_string().lines().next().unwrap_or_default().to_string()
}

#[test]
fn corpus_validates_with_exactly_the_expected_verdicts() {
    let metrics = rule_files("metrics");
    let logs = rule_files("logs");
    assert!(
        metrics.len() + logs.len() >= 60,
        "the corpus has {} rule files",
        metrics.len() + logs.len()
    );
    let diags = diagnostics();
    // Independent of the expected file: the `broken` tenant's files are each
    // refused, and nothing else is.
    for f in metrics.iter().chain(&logs) {
        let errors = diags
            .iter()
            .filter(|d| &d.file == f && d.is_error())
            .count();
        if f.starts_with("tenants/broken/") {
            assert_eq!(errors, 1, "{f} should have exactly one error");
        } else {
            assert_eq!(errors, 0, "{f} should be valid: {diags:#?}");
        }
    }
    let actual: String = diags.iter().map(|d| headline(d) + "\n").collect();
    let path = corpus().join("expected.txt");
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap();
    assert!(
        expected == actual,
        "verdicts differ from {} (UPDATE_GOLDEN=1 to accept):\n{}",
        path.display(),
        similar::TextDiff::from_lines(&expected, &actual)
            .unified_diff()
            .context_radius(1)
    );
}

/// Which group (by name) and rule (1-based, as promtool counts) a line of a
/// rule file is in, read from the file's own layout.
fn place_of_line(text: &str, line: u32) -> (Option<String>, Option<usize>) {
    let (mut group, mut rule, mut in_rules) = (None, None, false);
    for (i, l) in text.lines().enumerate() {
        if i + 1 > line as usize {
            break;
        }
        let t = l.trim_start();
        if let Some(name) = t.strip_prefix("- name:") {
            group = Some(name.trim().trim_matches(['"', '\'']).to_string());
            rule = None;
            in_rules = false;
        } else if t.starts_with("rules:") {
            in_rules = true;
        } else if in_rules && t.starts_with("- ") {
            rule = Some(rule.unwrap_or(0) + 1);
        }
    }
    (group, rule)
}

/// What promtool blamed: a group and rule, or a line.
#[derive(Debug)]
enum Blame {
    Rule(String, usize),
    Group(String),
    Line(u32),
    /// No location at all (YAML decoding errors such as a bad duration): the
    /// quoted value it names.
    Value(String),
}

fn blame(message: &str) -> Option<Blame> {
    if let Some((_, rest)) = message.split_once("group \"") {
        let (group, rest) = rest.split_once('"')?;
        if let Some(n) = rest.strip_prefix(", rule ") {
            let n: String = n.chars().take_while(char::is_ascii_digit).collect();
            return Some(Blame::Rule(group.to_string(), n.parse().ok()?));
        }
    }
    if let Some((_, rest)) = message.split_once("groupname: \"") {
        return Some(Blame::Group(rest.split('"').next()?.to_string()));
    }
    // "line 6: field anotations not found" or "2:3: Groupname must not be empty".
    let digits = |s: &str| -> Option<u32> {
        s.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse()
            .ok()
    };
    if let Some((_, rest)) = message.split_once("line ") {
        return digits(rest).map(Blame::Line);
    }
    if let Some(l) = digits(message) {
        return Some(Blame::Line(l));
    }
    let (_, quoted) = message.split_once('"')?;
    Some(Blame::Value(quoted.rsplit_once('"')?.0.to_string()))
}

fn promtool(files: &[String]) -> BTreeMap<String, Result<(), String>> {
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", "--lint=none"])
        .args(files)
        .current_dir(corpus())
        .output()
        .expect("promtool is installed (Debian package prometheus; .ci/install-deps)");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let mut verdicts = BTreeMap::new();
    for f in files {
        // Errors are printed as "<file>: …" lines, possibly continued on
        // indented lines; a file without any passed.
        let mut errors = Vec::new();
        let mut lines = text.lines().peekable();
        while let Some(l) = lines.next() {
            if let Some(rest) = l.strip_prefix(&format!("{f}: ")) {
                let mut msg = rest.to_string();
                while let Some(cont) = lines.peek().filter(|c| {
                    c.starts_with("  ")
                        && !c.trim_start().starts_with("SUCCESS")
                        && !c.trim_start().starts_with("FAILED")
                }) {
                    msg.push(' ');
                    msg.push_str(cont.trim());
                    lines.next();
                }
                errors.push(msg);
            }
        }
        let checked = text.contains(&format!("Checking {f}\n"));
        assert!(checked, "promtool did not check {f}:\n{text}");
        verdicts.insert(
            f.clone(),
            if errors.is_empty() {
                Ok(())
            } else {
                Err(errors.join("\n"))
            },
        );
    }
    verdicts
}

/// Debian's promtool is Prometheus 2.42; the corpus uses only what it knows
/// (no group `labels` or `query_offset`, no `toDuration`/`now`/`urlUnescape`,
/// no `{{else with}}`), which MOP also accepts for today's Mimir. Lint is off:
/// the rulers do not lint, and promtool's duplicate-rule lint exits 0 anyway.
#[test]
fn verdicts_agree_with_promtool_on_every_prometheus_rule_file() {
    let files = rule_files("metrics");
    let promtool = promtool(&files);
    let diags = diagnostics();
    let mut disagreements = Vec::new();
    for f in &files {
        let ours: Vec<&Diagnostic> = diags
            .iter()
            .filter(|d| &d.file == f && d.is_error())
            .collect();
        match (&promtool[f], ours.is_empty()) {
            (Ok(()), true) => {}
            (Ok(()), false) => disagreements.push(format!(
                "{f}: promtool accepts, MOP refuses: {}",
                headline(ours[0])
            )),
            (Err(e), true) => {
                disagreements.push(format!("{f}: promtool refuses ({e}), MOP accepts"))
            }
            (Err(e), false) => {
                let text = std::fs::read_to_string(corpus().join(f)).unwrap();
                let Some(b) = blame(e) else {
                    disagreements.push(format!("{f}: cannot tell what promtool blames in {e:?}"));
                    continue;
                };
                let same = ours.iter().any(|d| {
                    let (group, rule) = place_of_line(&text, d.line);
                    match &b {
                        Blame::Rule(g, n) => group.as_deref() == Some(g) && rule == Some(*n),
                        Blame::Group(g) => group.as_deref() == Some(g),
                        Blame::Line(l) => d.line == *l,
                        Blame::Value(v) => d.message.contains(&format!("{v:?}")),
                    }
                });
                if !same {
                    disagreements.push(format!(
                        "{f}: promtool blames {b:?} ({e}), MOP {}",
                        headline(ours[0])
                    ));
                }
            }
        }
    }
    let refused = promtool.values().filter(|v| v.is_err()).count();
    assert!(
        refused >= 15 && files.len() - refused >= 40,
        "{refused} of {} refused",
        files.len()
    );
    assert!(disagreements.is_empty(), "{}", disagreements.join("\n"));
}

#[test]
fn corpus_renders_and_shared_group_names_stay_apart() {
    let snap = mop_syncer::source::Snapshot::from_dir(&corpus()).unwrap();
    let mut out = mop_syncer::validate::validate(&snap);
    // Only the broken tenant makes the corpus invalid; without it, it renders.
    let files: BTreeMap<String, Vec<u8>> = snap
        .files
        .keys()
        .filter(|p| !p.starts_with("tenants/broken/"))
        .map(|p| (p.clone(), std::fs::read(corpus().join(p)).unwrap()))
        .collect();
    assert!(out.repo.is_none());
    out = mop_syncer::validate::validate(&mop_syncer::source::Snapshot::from_memory(files));
    let repo = out
        .repo
        .expect("the corpus without the broken tenant is valid");
    let desired = mop_syncer::render::render(&repo).unwrap();
    // Eleven files of the collection name their group EmbeddedExporter: each
    // is its own rule group in its own ruler namespace.
    let embedded: Vec<&str> = desired
        .resources
        .keys()
        .map(|id| id.name.as_str())
        .filter(|n| n.ends_with("/EmbeddedExporter"))
        .collect();
    assert!(embedded.len() >= 10, "{embedded:?}");
    // Empty groups are not sent.
    assert!(!desired.resources.keys().any(
        |id| id.name.ends_with("/placeholder-for-later") || id.name.ends_with("/empty-for-now")
    ),);
}
