//! The committed JSON Schemas and configuration reference match the types.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

mod common;

use common::*;

#[test]
fn committed_schemas_match_the_types() {
    let dir = workspace_root().join("docs/schema");
    for (name, schema) in mop_syncer::schema::all() {
        let text = mop_syncer::schema::text(&schema);
        let path = dir.join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, &text).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == text,
            "{} is stale: run `mop schema --out docs/schema` (or UPDATE_GOLDEN=1 cargo test -p mop-syncer --test docs)",
            path.display()
        );
    }
}

#[test]
fn committed_config_reference_matches_the_types() {
    let path = workspace_root().join("docs/config-reference.md");
    let text = mop_syncer::schema::reference_markdown();
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/config-reference.md is stale: UPDATE_GOLDEN=1 cargo test -p mop-syncer --test docs"
    );
}

#[test]
fn schema_rejects_unknown_fields_like_validate_does() {
    let (_, schema) = mop_syncer::schema::all()
        .into_iter()
        .find(|(n, _)| *n == "tenant.schema.json")
        .unwrap();
    assert_eq!(schema["additionalProperties"], false);
    let props = schema["properties"].as_object().unwrap();
    assert!(props.contains_key("namespaces") && props.contains_key("limits"));
    assert!(
        props["id"]["description"]
            .as_str()
            .unwrap()
            .contains("X-Scope-OrgID")
    );
}

/// The README's first command prints what the README says it prints (its count
/// of rendered resources went stale once, unnoticed).
#[test]
fn the_readme_shows_what_its_first_command_prints() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    // The README opens with the two commands' block, then the first's output.
    let blocks: Vec<&str> = readme.split("```").collect();
    let first = blocks[1].lines().nth(1).unwrap();
    assert_eq!(
        first,
        "cargo run --release -p mop-syncer -- validate repo-template && cargo run --release -p mop-syncer -- render repo-template --out out/",
        "the README's first command changed: update this test with it"
    );
    let out = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_mop"))
            .current_dir(&root)
            .args(args)
            .output()
            .unwrap();
        assert!(o.status.success(), "mop {args:?}: {o:?}");
        String::from_utf8(o.stdout).unwrap()
    };
    let out_dir = out.path().to_str().unwrap();
    let printed = run(&["validate", "repo-template"])
        + &run(&["render", "repo-template", "--out", out_dir]).replace(out_dir, "out/");
    assert_eq!(
        printed.trim(),
        blocks[3].trim(),
        "README.md says the first command prints something else: update it"
    );
}
