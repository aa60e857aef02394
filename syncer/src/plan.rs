//! Planning: `desired (base or live) + desired (head) → ordered changes`, a pure
//! function. `mop plan` compares two commits; the syncer will compare live state
//! with the same function.
//!
//! Updates carry field-level details a reviewer can read: for dashboards, which
//! panels, queries and variables changed rather than a wall of JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use crate::render::{Desired, Kind, Resource, ResourceId, Target};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Create,
    Update,
    Delete,
}

/// One field that differs. `old`/`new` are `None` when the field is added/removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Detail {
    pub path: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Change {
    pub action: Action,
    #[serde(flatten)]
    pub id: ResourceId,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub details: Vec<Detail>,
}

/// Changes in apply order: by target, kind (dependency order), tenant and name;
/// deletes of a kind come after creates and updates.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Plan {
    pub changes: Vec<Change>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub create: usize,
    pub update: usize,
    pub delete: usize,
}

impl Plan {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    pub fn counts(&self) -> Counts {
        let mut c = Counts::default();
        for ch in &self.changes {
            match ch.action {
                Action::Create => c.create += 1,
                Action::Update => c.update += 1,
                Action::Delete => c.delete += 1,
            }
        }
        c
    }
}

/// Compares two desired states. `base = None` plans everything as a create.
pub fn diff(base: Option<&Desired>, head: &Desired) -> Plan {
    let empty = BTreeMap::new();
    let old = base.map_or(&empty, |b| &b.resources);
    let new = &head.resources;
    let mut changes = Vec::new();
    for (id, r) in new {
        match old.get(id) {
            None => changes.push(Change {
                action: Action::Create,
                id: id.clone(),
                title: r.title.clone(),
                details: Vec::new(),
            }),
            Some(o) if o.body != r.body => changes.push(Change {
                action: Action::Update,
                id: id.clone(),
                title: r.title.clone(),
                details: details(o, r),
            }),
            Some(_) => {}
        }
    }
    for (id, r) in old {
        if !new.contains_key(id) {
            changes.push(Change {
                action: Action::Delete,
                id: id.clone(),
                title: r.title.clone(),
                details: Vec::new(),
            });
        }
    }
    changes.sort_by(|a, b| apply_key(a).cmp(&apply_key(b)));
    Plan { changes }
}

/// Creates and updates in dependency order (organisations before dashboards), then
/// deletes in reverse (dashboards before their folder, members before their org).
fn apply_key(c: &Change) -> (Target, bool, u8, &Option<String>, &str) {
    let delete = c.action == Action::Delete;
    let rank = c.id.kind as u8;
    let rank = if delete { u8::MAX - rank } else { rank };
    (c.id.target, delete, rank, &c.id.tenant, &c.id.name)
}

fn details(old: &Resource, new: &Resource) -> Vec<Detail> {
    let (Ok(a), Ok(b)) = (
        serde_json::from_str::<Value>(&old.body),
        serde_json::from_str::<Value>(&new.body),
    ) else {
        return vec![Detail {
            path: String::new(),
            old: Some(old.body.to_string()),
            new: Some(new.body.to_string()),
        }];
    };
    let mut out = Vec::new();
    if new.id.kind == Kind::Dashboard {
        dashboard_details(&a, &b, &mut out);
    } else if new.id.kind == Kind::RuleGroup {
        rule_group_details(&a, &b, &mut out);
    } else {
        value_diff("", &a, &b, &mut out);
    }
    out
}

fn show(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Leaf-level differences between two JSON values.
fn value_diff(path: &str, a: &Value, b: &Value, out: &mut Vec<Detail>) {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            for (k, va) in x {
                match y.get(k) {
                    Some(vb) => value_diff(&join(path, k), va, vb, out),
                    None => out.push(Detail {
                        path: join(path, k),
                        old: Some(show(va)),
                        new: None,
                    }),
                }
            }
            for (k, vb) in y {
                if !x.contains_key(k) {
                    out.push(Detail {
                        path: join(path, k),
                        old: None,
                        new: Some(show(vb)),
                    });
                }
            }
        }
        (Value::Array(x), Value::Array(y)) => {
            // Arrays of scalars read best as one value; arrays of objects index-wise.
            if x.iter().chain(y).all(|v| !v.is_object() && !v.is_array()) {
                if x != y {
                    out.push(Detail {
                        path: path.to_string(),
                        old: Some(show(a)),
                        new: Some(show(b)),
                    });
                }
                return;
            }
            for i in 0..x.len().max(y.len()) {
                let p = format!("{path}[{i}]");
                match (x.get(i), y.get(i)) {
                    (Some(va), Some(vb)) => value_diff(&p, va, vb, out),
                    (Some(va), None) => out.push(Detail {
                        path: p,
                        old: Some(show(va)),
                        new: None,
                    }),
                    (None, Some(vb)) => out.push(Detail {
                        path: p,
                        old: None,
                        new: Some(show(vb)),
                    }),
                    (None, None) => {}
                }
            }
        }
        _ if a != b => out.push(Detail {
            path: path.to_string(),
            old: Some(show(a)),
            new: Some(show(b)),
        }),
        _ => {}
    }
}

/// Rule groups: rules keyed by their alert or record name, so inserting a rule does
/// not read as a change of every rule after it.
fn rule_group_details(a: &Value, b: &Value, out: &mut Vec<Detail>) {
    let strip = |g: &Value| {
        let mut g = g.clone();
        if let Some(o) = g.as_object_mut() {
            o.remove("rules");
        }
        g
    };
    value_diff("", &strip(a), &strip(b), out);
    let rules = |g: &Value| -> BTreeMap<String, Value> {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        g["rules"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let base = match (r["alert"].as_str(), r["record"].as_str()) {
                    (Some(a), _) => format!("alert {a}"),
                    (_, Some(rec)) => format!("record {rec}"),
                    _ => "rule".to_string(),
                };
                let n = seen.entry(base.clone()).or_default();
                *n += 1;
                let key = if *n == 1 {
                    base
                } else {
                    format!("{base} #{n}")
                };
                (key, r.clone())
            })
            .collect()
    };
    let (ra, rb) = (rules(a), rules(b));
    for (k, x) in &ra {
        match rb.get(k) {
            Some(y) => value_diff(k, x, y, out),
            None => out.push(Detail {
                path: k.clone(),
                old: Some("removed".into()),
                new: None,
            }),
        }
    }
    for k in rb.keys().filter(|k| !ra.contains_key(*k)) {
        out.push(Detail {
            path: k.clone(),
            old: None,
            new: Some("added".into()),
        });
    }
}

/// Changes grouped for reading: by target and tenant, creates and updates before
/// deletes. (The plan itself stays in apply order.)
fn display_order(plan: &Plan) -> Vec<&Change> {
    let mut v: Vec<&Change> = plan.changes.iter().collect();
    v.sort_by(|a, b| {
        let (ka, kb) = (apply_key(a), apply_key(b));
        (a.id.target, &a.id.tenant, ka).cmp(&(b.id.target, &b.id.tenant, kb))
    });
    v
}

/// Panels in display order, rows' collapsed children included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().into_iter().flatten() {
        out.push(p);
        for c in p["panels"].as_array().into_iter().flatten() {
            out.push(c);
        }
    }
    out
}

fn panel_key(p: &Value) -> String {
    match (&p["id"], p["title"].as_str()) {
        (Value::Number(n), _) => format!("id:{n}"),
        (_, Some(t)) => format!("title:{t}"),
        _ => "?".into(),
    }
}

fn panel_label(p: &Value) -> String {
    let title = p["title"].as_str().unwrap_or("");
    match &p["id"] {
        Value::Number(n) => format!("panel {title:?} (id {n})"),
        _ => format!("panel {title:?}"),
    }
}

fn dashboard_details(a: &Value, b: &Value, out: &mut Vec<Detail>) {
    if a["folderUid"] != b["folderUid"] {
        out.push(Detail {
            path: "folder".into(),
            old: Some(show(&a["folderUid"])),
            new: Some(show(&b["folderUid"])),
        });
    }
    let (da, db) = (&a["dashboard"], &b["dashboard"]);
    // Everything but panels and variables, as plain fields.
    let strip = |d: &Value| {
        let mut d = d.clone();
        if let Some(o) = d.as_object_mut() {
            o.remove("panels");
            o.remove("templating");
        }
        d
    };
    value_diff("", &strip(da), &strip(db), out);

    let index = |d: &Value| -> BTreeMap<String, Value> {
        d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| (v["name"].as_str().unwrap_or("?").to_string(), v.clone()))
            .collect()
    };
    let (va, vb) = (index(da), index(db));
    for (name, x) in &va {
        match vb.get(name) {
            Some(y) => value_diff(&format!("variable ${name}"), x, y, out),
            None => out.push(Detail {
                path: format!("variable ${name}"),
                old: Some("removed".into()),
                new: None,
            }),
        }
    }
    for name in vb.keys().filter(|n| !va.contains_key(*n)) {
        out.push(Detail {
            path: format!("variable ${name}"),
            old: None,
            new: Some("added".into()),
        });
    }

    let pa: BTreeMap<String, &Value> = panels(da).into_iter().map(|p| (panel_key(p), p)).collect();
    let pb: Vec<&Value> = panels(db);
    let pb_keys: BTreeMap<String, &Value> = pb.iter().map(|p| (panel_key(p), *p)).collect();
    for p in &pb {
        let key = panel_key(p);
        let label = panel_label(p);
        let Some(old) = pa.get(&key) else {
            out.push(Detail {
                path: label,
                old: None,
                new: Some("added".into()),
            });
            continue;
        };
        // Queries by refId, so a reordered target list is not a change of every query.
        let targets = |v: &Value| -> BTreeMap<String, Value> {
            v["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, t)| {
                    (
                        t["refId"]
                            .as_str()
                            .map_or_else(|| i.to_string(), str::to_string),
                        t.clone(),
                    )
                })
                .collect()
        };
        let strip_panel = |v: &Value| {
            let mut v = v.clone();
            if let Some(o) = v.as_object_mut() {
                o.remove("targets");
                o.remove("panels");
            }
            v
        };
        value_diff(&label, &strip_panel(old), &strip_panel(p), out);
        let (ta, tb) = (targets(old), targets(p));
        for (r, x) in &ta {
            match tb.get(r) {
                Some(y) => value_diff(&format!("{label} query {r}"), x, y, out),
                None => out.push(Detail {
                    path: format!("{label} query {r}"),
                    old: Some(show(&x["expr"])),
                    new: None,
                }),
            }
        }
        for (r, y) in tb.iter().filter(|(r, _)| !ta.contains_key(*r)) {
            out.push(Detail {
                path: format!("{label} query {r}"),
                old: None,
                new: Some(show(&y["expr"])),
            });
        }
    }
    for (key, p) in &pa {
        if !pb_keys.contains_key(key) {
            out.push(Detail {
                path: panel_label(p),
                old: Some("removed".into()),
                new: None,
            });
        }
    }
}

/// Identifies the two sides of a plan in its output.
pub struct Meta {
    pub base: String,
    pub head: String,
    /// The base did not validate; everything is planned as created.
    pub base_invalid: bool,
}

fn short(rev: &str) -> &str {
    if rev.len() == 40 && rev.bytes().all(|b| b.is_ascii_hexdigit()) {
        &rev[..12]
    } else {
        rev
    }
}

fn summary(c: Counts) -> String {
    format!(
        "Plan: {} to create, {} to update, {} to delete.",
        c.create, c.update, c.delete
    )
}

fn sigil(a: Action) -> char {
    match a {
        Action::Create => '+',
        Action::Update => '~',
        Action::Delete => '-',
    }
}

fn group_key(c: &Change) -> (Target, Option<String>) {
    (c.id.target, c.id.tenant.clone())
}

fn heading(target: Target, tenant: &Option<String>) -> String {
    match tenant {
        Some(t) => format!("{target} · tenant {t}"),
        None => format!("{target} · platform-wide"),
    }
}

fn headline(c: &Change) -> String {
    match &c.title {
        Some(t) if *t != c.id.name => format!("{} {} ({t:?})", c.id.kind, c.id.name),
        _ => format!("{} {}", c.id.kind, c.id.name),
    }
}

const MAX_INLINE: usize = 80;

/// Detail lines, indented, without colour; `+`/`-` lead multi-line values.
fn detail_lines(d: &Detail) -> Vec<String> {
    let one_line = |s: &Option<String>| {
        s.as_ref()
            .is_none_or(|s| !s.contains('\n') && s.len() <= MAX_INLINE)
    };
    let mut lines = Vec::new();
    match (&d.old, &d.new) {
        (Some(o), Some(n)) if one_line(&d.old) && one_line(&d.new) => {
            lines.push(format!("{}: {o} → {n}", d.path))
        }
        (None, Some(n)) if n == "added" => lines.push(format!("{}: added", d.path)),
        (Some(o), None) if o == "removed" => lines.push(format!("{}: removed", d.path)),
        _ => {
            lines.push(format!("{}:", d.path));
            let (o, n) = (
                d.old.as_deref().unwrap_or(""),
                d.new.as_deref().unwrap_or(""),
            );
            if o.contains('\n') || n.contains('\n') {
                let diff = similar::TextDiff::from_lines(o, n);
                for op in diff.iter_all_changes() {
                    let s = match op.tag() {
                        similar::ChangeTag::Delete => '-',
                        similar::ChangeTag::Insert => '+',
                        similar::ChangeTag::Equal => continue,
                    };
                    lines.push(format!("  {s} {}", op.value().trim_end_matches('\n')));
                }
            } else {
                if d.old.is_some() {
                    lines.push(format!("  - {o}"));
                }
                if d.new.is_some() {
                    lines.push(format!("  + {n}"));
                }
            }
        }
    }
    lines
}

/// The plan for a terminal or a log.
pub fn format_text(plan: &Plan, meta: &Meta, color: bool) -> String {
    let paint = |a: Action, s: String| {
        if !color {
            return s;
        }
        let code = match a {
            Action::Create => "32",
            Action::Update => "33",
            Action::Delete => "31",
        };
        format!("\x1b[{code}m{s}\x1b[0m")
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mop plan {} → {}",
        short(&meta.base),
        short(&meta.head)
    );
    if meta.base_invalid {
        let _ = writeln!(
            out,
            "note: the base revision does not validate; everything is shown as created"
        );
    }
    if plan.is_empty() {
        let _ = writeln!(out, "\nNo changes. The desired state is up to date.");
        return out;
    }
    let mut last = None;
    for c in display_order(plan) {
        let key = group_key(c);
        if last.as_ref() != Some(&key) {
            let _ = writeln!(out, "\n{}", heading(key.0, &key.1));
            last = Some(key);
        }
        let _ = writeln!(
            out,
            "  {}",
            paint(c.action, format!("{} {}", sigil(c.action), headline(c)))
        );
        for d in &c.details {
            for l in detail_lines(d) {
                let _ = writeln!(out, "      {l}");
            }
        }
    }
    let _ = writeln!(out, "\n{}", summary(plan.counts()));
    out
}

/// The plan as a pull-request comment (GitHub/GitLab Markdown).
pub fn format_markdown(plan: &Plan, meta: &Meta) -> String {
    let mut out = String::new();
    let c = plan.counts();
    let _ = writeln!(
        out,
        "### MOP plan: `{}` → `{}`\n",
        short(&meta.base),
        short(&meta.head)
    );
    if meta.base_invalid {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> The base revision does not validate; everything is shown as created.\n"
        );
    }
    if plan.is_empty() {
        let _ = writeln!(out, "**No changes.** The desired state is up to date.");
        return out;
    }
    let _ = writeln!(out, "**{}**\n", summary(c));
    let _ = writeln!(
        out,
        "| target | tenant | create | update | delete |\n|---|---|---:|---:|---:|"
    );
    let mut groups: BTreeMap<(Target, Option<String>), Counts> = BTreeMap::new();
    for ch in &plan.changes {
        let g = groups.entry(group_key(ch)).or_default();
        match ch.action {
            Action::Create => g.create += 1,
            Action::Update => g.update += 1,
            Action::Delete => g.delete += 1,
        }
    }
    for ((t, tenant), n) in &groups {
        let _ = writeln!(
            out,
            "| {t} | {} | {} | {} | {} |",
            tenant.as_deref().unwrap_or("(platform-wide)"),
            n.create,
            n.update,
            n.delete
        );
    }
    let mut last = None;
    let mut open = false;
    for ch in display_order(plan) {
        let key = group_key(ch);
        if last.as_ref() != Some(&key) {
            if open {
                let _ = writeln!(out, "```\n\n</details>");
            }
            let _ = writeln!(
                out,
                "\n<details open><summary><b>{}</b></summary>\n\n```diff",
                heading(key.0, &key.1)
            );
            open = true;
            last = Some(key);
        }
        // `diff` highlighting colours lines by their first character.
        let lead = match ch.action {
            Action::Create => '+',
            Action::Delete => '-',
            Action::Update => '!',
        };
        let _ = writeln!(out, "{lead} {}", headline(ch));
        for d in &ch.details {
            for l in detail_lines(d) {
                let l = l.replace("```", "ʼʼʼ");
                // Old and new values lead with -/+ so the diff highlighter colours them.
                let line = match l
                    .strip_prefix("  - ")
                    .map(|r| ('-', r))
                    .or_else(|| l.strip_prefix("  + ").map(|r| ('+', r)))
                {
                    Some((sign, rest)) => format!("{sign}       {rest}"),
                    None => format!("#     {l}"),
                };
                let _ = writeln!(out, "{line}");
            }
        }
    }
    if open {
        let _ = writeln!(out, "```\n\n</details>");
    }
    out
}

/// The plan for machines.
pub fn format_json(plan: &Plan, meta: &Meta) -> Result<String, serde_json::Error> {
    let mut s = serde_json::to_string_pretty(&serde_json::json!({
        "base": meta.base,
        "head": meta.head,
        "base_invalid": meta.base_invalid,
        "summary": plan.counts(),
        "changes": plan.changes,
    }))?;
    s.push('\n');
    Ok(s)
}
