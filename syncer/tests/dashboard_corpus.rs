//! The dashboard corpus (`tests/corpus/dashboards/`, written by
//! `tests/corpus/gen_dashboards.py`): dashboards shaped like the ones platform
//! teams bring, each with the verdict Grafana's rules call for
//! (`tests/corpus/dashboards.expected`). `mop validate` must give exactly those.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

use std::collections::BTreeSet;
use std::path::Path;

use mop_syncer::diag::Severity;
use mop_syncer::source::Snapshot;

fn corpus() -> &'static Path {
    Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/corpus/dashboards"
    ))
}

fn expected() -> (BTreeSet<String>, BTreeSet<String>) {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/dashboards.expected"),
    )
    .unwrap();
    let (mut valid, mut diags) = (BTreeSet::new(), BTreeSet::new());
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match line.split_once('\t') {
            Some((path, "valid")) => {
                valid.insert(path.to_string());
            }
            _ => {
                diags.insert(line.to_string());
            }
        }
    }
    (valid, diags)
}

#[test]
fn every_corpus_dashboard_gets_exactly_its_expected_verdict() {
    let snapshot = Snapshot::from_dir(corpus()).unwrap();
    let out = mop_syncer::validate::validate(&snapshot);
    let got: BTreeSet<String> = out
        .diagnostics
        .iter()
        .map(|d| {
            let sev = match d.severity {
                Severity::Error => "error",
                Severity::Warning => "warning",
            };
            format!(
                "{}\t{sev}\t{}:{}\t{}\t{}",
                d.file,
                d.line,
                d.column,
                d.message,
                d.hint.as_deref().unwrap_or("")
            )
        })
        .collect();
    let (valid, want) = expected();
    let dashboards = snapshot
        .files
        .keys()
        .filter(|p| p.ends_with(".json"))
        .count();
    assert!(dashboards >= 40, "{dashboards} dashboards");
    assert_eq!(
        valid.len()
            + want
                .iter()
                .map(|l| l.split('\t').next().unwrap())
                .collect::<BTreeSet<_>>()
                .len(),
        dashboards,
        "every dashboard has a verdict"
    );
    let missing: Vec<&String> = want.difference(&got).collect();
    let unexpected: Vec<&String> = got.difference(&want).collect();
    assert!(
        missing.is_empty() && unexpected.is_empty(),
        "missing:\n{}\n\nunexpected:\n{}",
        missing
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    );
    for v in &valid {
        assert!(
            !got.iter().any(|g| g.starts_with(&format!("{v}\t"))),
            "{v} should be valid"
        );
    }
}

/// Without the dashboards that must be refused, the corpus renders: every
/// `${DS_*}` of an input is replaced, and every uid is one Grafana accepts.
#[test]
fn the_accepted_corpus_renders_with_resolved_inputs_and_valid_uids() {
    let (_, want) = expected();
    let refused: BTreeSet<&str> = want
        .iter()
        .filter(|l| l.split('\t').nth(1) == Some("error"))
        .map(|l| l.split('\t').next().unwrap())
        .collect();
    let mut snapshot = Snapshot::from_dir(corpus()).unwrap();
    snapshot.files.retain(|p, _| !refused.contains(p.as_str()));
    let out = mop_syncer::validate::validate(&snapshot);
    let repo = out.repo.unwrap_or_else(|| panic!("{:#?}", out.diagnostics));
    let desired = mop_syncer::render::render(&repo).unwrap();
    let mut dashboards = 0;
    for r in desired.resources.values() {
        // `ds-variable` resolves its `${DS_PROMETHEUS}` by a variable, kept as it is.
        if r.id.kind == mop_syncer::render::Kind::Dashboard && r.id.name != "ds-variable" {
            dashboards += 1;
            for input in [
                "${DS_PROMETHEUS}",
                "${DS_LOKI}",
                "${DS_TEMPO}",
                "${DS_PYROSCOPE}",
                "${VAR_CLUSTER}",
                "__inputs",
                "__requires",
            ] {
                assert!(!r.body.contains(input), "{} still has {input}", r.id.name);
            }
        }
        if matches!(
            r.id.kind,
            mop_syncer::render::Kind::Dashboard | mop_syncer::render::Kind::Folder
        ) {
            assert!(mop_syncer::uid::is_valid_uid(&r.id.name), "{}", r.id.name);
        }
    }
    assert!(dashboards >= 35, "{dashboards}");
}
