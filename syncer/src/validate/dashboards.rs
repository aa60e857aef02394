//! Grafana dashboards: the JSON model checks and the canonical body render posts.

use std::collections::BTreeMap;

use crate::diag::{self, Diagnostic};
use crate::repo::Dashboard;
use crate::uid::MAX_UID_LEN;

pub(super) fn parse_dashboard(
    path: &str,
    tenant: &str,
    folder: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Dashboard> {
    // Only the top level is parsed into a map; nested values stay raw text (still
    // syntax-checked). A full tree for 10,000 dashboards costs more than all the
    // rest of validation.
    if !text.trim_start().starts_with('{') {
        diags.push(Diagnostic::error(
            path,
            1,
            1,
            "a dashboard must be a JSON object",
        ));
        return None;
    }
    let mut obj: BTreeMap<String, &serde_json::value::RawValue> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            // serde_json appends " at line L column C"; we print the position ourselves.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            diags.push(
                Diagnostic::error(
                    path,
                    u32::try_from(e.line()).unwrap_or(0),
                    u32::try_from(e.column()).unwrap_or(0),
                    format!("invalid JSON: {msg}"),
                )
                .with_hint("dashboards are Grafana's JSON model as 'Export → JSON' writes it"),
            );
            return None;
        }
    };
    let at = |key: &str| {
        diag::json_top_level_key(text, key)
            .map(|o| diag::line_col(text, o))
            .unwrap_or((1, 1))
    };
    let mut ok = true;
    if obj.contains_key("__inputs") {
        let (l, c) = at("__inputs");
        diags.push(
            Diagnostic::error(path, l, c, "dashboard was exported 'for sharing externally': its ${DS_…} datasource inputs will not resolve")
                .with_hint("export again with 'Export for sharing externally' off, or replace the inputs with a datasource variable"),
        );
        ok = false;
    }
    let as_string = |k: &str| {
        obj.get(k)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    };
    let uid = match as_string("uid") {
        Some(u) => {
            // Positions only for errors: finding a key's line costs a scan of the file.
            if u.is_empty() {
                let (l, c) = at("uid");
                diags.push(
                    Diagnostic::error(path, l, c, "dashboard uid is empty")
                        .with_hint("set a stable uid such as \"checkout-red\""),
                );
                ok = false;
            } else if u.chars().count() > MAX_UID_LEN {
                let (l, c) = at("uid");
                diags.push(
                    Diagnostic::error(path, l, c, format!("dashboard uid {u:?} is {} characters; Grafana allows at most {MAX_UID_LEN}", u.chars().count()))
                        .with_hint("shorten the uid; links to the dashboard use it, so pick one and keep it"),
                );
                ok = false;
            } else if !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                let (l, c) = at("uid");
                diags.push(
                    Diagnostic::error(
                        path,
                        l,
                        c,
                        format!("dashboard uid {u:?} has characters Grafana does not accept"),
                    )
                    .with_hint("use letters, digits, '-' and '_'"),
                );
                ok = false;
            }
            u
        }
        _ => {
            let (l, c) = if obj.contains_key("uid") {
                at("uid")
            } else {
                (1, 1)
            };
            diags.push(
                Diagnostic::error(path, l, c, "dashboard has no string `uid`")
                    .with_hint("set a stable uid such as \"checkout-red\": without one, Grafana makes a new dashboard on every sync"),
            );
            ok = false;
            String::new()
        }
    };
    let title = match as_string("title") {
        Some(t) if !t.trim().is_empty() => t,
        _ => {
            diags.push(
                Diagnostic::error(path, 1, 1, "dashboard has no `title`")
                    .with_hint("add \"title\": \"…\""),
            );
            ok = false;
            String::new()
        }
    };
    if !ok {
        return None;
    }
    // Instance-specific fields: Grafana assigns them, and they differ per org.
    obj.remove("id");
    obj.remove("version");
    let folder_uid = crate::uid::folder_uid(tenant, folder);
    // The body Grafana takes, built once per file content and shared from here on.
    let mut body = String::with_capacity(text.len());
    body.push_str(r#"{"dashboard":{"#);
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::Value::from(k.as_str()).to_string());
        body.push(':');
        minify_json_into(v.get(), &mut body);
    }
    body.push_str(r#"},"folderUid":"#);
    body.push_str(&serde_json::Value::from(folder_uid).to_string());
    body.push('}');
    Some(Dashboard {
        path: path.to_string(),
        folder: folder.to_string(),
        uid,
        title,
        body: body.into(),
    })
}

/// Appends JSON text without the whitespace between tokens. The text is valid JSON
/// (serde_json checked it), so only strings need care; runs between whitespace are
/// copied whole, and every cut is at an ASCII byte, so at a character boundary.
pub(super) fn minify_json_into(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.push_str(&json[run..i]);
                i += 1;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&json[run.min(json.len())..]);
}
