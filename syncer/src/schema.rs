//! JSON Schemas of the config files, generated from the serde types (so the schema
//! can never disagree with what `mop validate` accepts) and shipped in `docs/schema/`.

use std::path::Path;

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::model::{PlatformFile, RuleFile, SamplingFile, TenantFile, VersionsFile};

/// Every file kind: (file name in docs/schema, schema).
pub fn all() -> Vec<(&'static str, serde_json::Value)> {
    fn one<T: JsonSchema>(title: &str) -> serde_json::Value {
        let generator = SchemaSettings::draft2020_12().into_generator();
        let mut s = generator.into_root_schema_for::<T>().to_value();
        if let Some(o) = s.as_object_mut() {
            o.insert("title".into(), title.into());
        }
        s
    }
    vec![
        ("mop.schema.json", one::<PlatformFile>("mop.yaml")),
        ("versions.schema.json", one::<VersionsFile>("versions.yaml")),
        (
            "tenant.schema.json",
            one::<TenantFile>("tenants/<tenant>/tenant.yaml"),
        ),
        (
            "sampling.schema.json",
            one::<SamplingFile>("tenants/<tenant>/sampling.yaml"),
        ),
        (
            "rules.schema.json",
            one::<RuleFile>("tenants/<tenant>/rules/{metrics,logs}/*.yaml"),
        ),
        (
            "gateway-config.schema.json",
            one::<mop_gateway_config::GatewayConfig>(
                "gateway.json (rendered by mop, read by mop-gateway)",
            ),
        ),
    ]
}

/// Pretty JSON with a trailing newline, as committed.
pub fn text(value: &serde_json::Value) -> String {
    let mut s = serde_json::to_string_pretty(value).unwrap_or_default();
    s.push('\n');
    s
}

pub fn write_all(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, schema) in all() {
        std::fs::write(dir.join(name), text(&schema))?;
    }
    Ok(())
}
