//! JSON Schemas of the config files, generated from the serde types (so the schema
//! can never disagree with what `mop validate` accepts) and shipped in `docs/schema/`.

use std::path::Path;

use schemars::{JsonSchema, generate::SchemaSettings};

use crate::model::{
    AlertingFile, ClusterFile, PlatformAlertingFile, PlatformFile, RuleFile, SamplingFile,
    TenantFile, VersionsFile,
};

/// The root schema of one type, as the docs ship it.
pub fn root<T: JsonSchema>() -> serde_json::Value {
    SchemaSettings::draft2020_12()
        .into_generator()
        .into_root_schema_for::<T>()
        .to_value()
}

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
            "cluster.schema.json",
            one::<ClusterFile>("clusters/<name>.yaml"),
        ),
        (
            "tenant.schema.json",
            one::<TenantFile>("tenants/<tenant>/tenant.yaml"),
        ),
        (
            "sampling.schema.json",
            one::<SamplingFile>("tenants/<tenant>/sampling.yaml"),
        ),
        (
            "alerting.schema.json",
            one::<AlertingFile>("tenants/<tenant>/alerting.yaml"),
        ),
        (
            "platform-alerting.schema.json",
            one::<PlatformAlertingFile>("alerting.yaml"),
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

/// `docs/config-reference.md`: every field of every file, from the doc comments on
/// the types (through the generated schemas), so the reference cannot drift.
pub fn reference_markdown() -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "# Configuration reference\n\n\
         Generated from the types that `mop validate` uses (`mop schema`, then\n\
         `cargo test -p mop-syncer --test docs` checks it is current; regenerate with\n\
         `UPDATE_GOLDEN=1 cargo test -p mop-syncer --test docs`). JSON Schemas for editors\n\
         are in [`docs/schema/`](schema/): point your YAML language server at them, e.g.\n\
         `# yaml-language-server: $schema=../../docs/schema/tenant.schema.json`.\n\n\
         Dashboards (`tenants/<tenant>/dashboards/<folder>/<name>.json`) are Grafana's own\n\
         JSON model, unchanged; what MOP does with them is in\n\
         [Importing existing dashboards and rules](#importing-existing-dashboards-and-rules).\n",
    );
    out.push_str(
        "\n## Importing existing dashboards and rules\n\n\
         Dashboards and rule files that teams already have go in unchanged. What\n\
         MOP accepts and refuses follows what Grafana, Mimir and Loki accept and\n\
         refuse; each check names the server rule it mirrors.\n\n",
    );
    // Each part is kept beside the validation it describes.
    out.push_str(include_str!("validate/importing_dashboards.md"));
    out.push('\n');
    out.push_str(include_str!("validate/rules.md"));
    for (file, schema) in all() {
        let title = schema["title"].as_str().unwrap_or(file);
        let _ = writeln!(
            out,
            "\n## `{title}`\n\nSchema: [`docs/schema/{file}`](schema/{file})\n"
        );
        if let Some(d) = schema["description"].as_str() {
            let _ = writeln!(out, "{}\n", one_paragraph(d));
        }
        table(&mut out, &schema);
        let defs = schema["$defs"].as_object().cloned().unwrap_or_default();
        for (name, def) in &defs {
            if def["properties"].is_object() {
                let _ = writeln!(out, "\n### {title} › `{name}`\n");
                if let Some(d) = def["description"].as_str() {
                    let _ = writeln!(out, "{}\n", one_paragraph(d));
                }
                table(&mut out, def);
            } else if def["oneOf"].is_array() || def["enum"].is_array() || def["anyOf"].is_array() {
                let _ = writeln!(out, "\n### {title} › `{name}`\n");
                if let Some(d) = def["description"].as_str() {
                    let _ = writeln!(out, "{}\n", one_paragraph(d));
                }
                let _ = writeln!(out, "Type: {}", type_of(def));
            }
        }
    }
    out
}

fn one_paragraph(s: &str) -> String {
    s.split("\n\n")
        .map(|p| p.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn table(out: &mut String, schema: &serde_json::Value) {
    use std::fmt::Write as _;
    let Some(props) = schema["properties"].as_object() else {
        return;
    };
    let required: Vec<&str> = schema["required"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str())
        .collect();
    let _ = writeln!(
        out,
        "| field | type | required | default | description |\n|---|---|---|---|---|"
    );
    for (name, p) in props {
        let req = if required.contains(&name.as_str()) {
            "yes"
        } else {
            "no"
        };
        let default = match &p["default"] {
            // Object defaults are the nested type's own defaults, listed in its table.
            serde_json::Value::Null | serde_json::Value::Object(_) => String::new(),
            v => format!("`{v}`"),
        };
        let desc = one_paragraph(p["description"].as_str().unwrap_or(""))
            .replace('\n', " ")
            .replace('|', "\\|");
        let _ = writeln!(
            out,
            "| `{name}` | {} | {req} | {default} | {desc} |",
            type_of(p).replace('|', "\\|")
        );
    }
}

fn type_of(p: &serde_json::Value) -> String {
    if let Some(r) = p["$ref"].as_str() {
        let name = r.rsplit('/').next().unwrap_or(r);
        return format!("`{name}`");
    }
    if let Some(e) = p["enum"].as_array() {
        return e
            .iter()
            .map(|v| format!("`{}`", v.as_str().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(" or ");
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = p[key].as_array() {
            let parts: Vec<String> = alts
                .iter()
                .filter(|a| a["type"] != "null")
                .map(|a| {
                    if let Some(c) = a["const"].as_str() {
                        format!("`{c}`")
                    } else if let Some(req) =
                        a["required"].as_array().filter(|_| a["type"] == "object")
                    {
                        let keys: Vec<String> = req
                            .iter()
                            .filter_map(|k| k.as_str())
                            .map(|k| format!("`{k}:`"))
                            .collect();
                        format!("{{{}}}", keys.join(", "))
                    } else {
                        type_of(a)
                    }
                })
                .collect();
            return parts.join(" or ");
        }
    }
    match &p["type"] {
        serde_json::Value::String(t) if t == "array" => format!("list of {}", type_of(&p["items"])),
        serde_json::Value::String(t) if t == "object" => match &p["additionalProperties"] {
            v if v.is_object() => format!("map of {}", type_of(v)),
            _ => "object".into(),
        },
        serde_json::Value::String(t) => t.clone(),
        serde_json::Value::Array(ts) => {
            let ts: Vec<&str> = ts
                .iter()
                .filter_map(|t| t.as_str())
                .filter(|t| *t != "null")
                .collect();
            if ts == ["array"] {
                format!("list of {}", type_of(&p["items"]))
            } else {
                ts.join(" or ")
            }
        }
        _ => "any".into(),
    }
}
