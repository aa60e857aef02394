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
