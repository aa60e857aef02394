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
            Some(o) if o.body != r.body => {
                // Bodies that differ only in key order or formatting are the same
                // object to the server: no change.
                if let Some(details) = details(o, r) {
                    changes.push(Change {
                        action: Action::Update,
                        id: id.clone(),
                        title: r.title.clone(),
                        details,
                    });
                }
            }
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

/// What differs between two bodies; `None` when they are the same JSON value
/// (object keys compare regardless of order).
fn details(old: &Resource, new: &Resource) -> Option<Vec<Detail>> {
    let (Ok(a), Ok(b)) = (
        serde_json::from_str::<Value>(&old.body),
        serde_json::from_str::<Value>(&new.body),
    ) else {
        return Some(vec![Detail {
            path: String::new(),
            old: Some(old.body.to_string()),
            new: Some(new.body.to_string()),
        }]);
    };
    if a == b {
        return None;
    }
    let mut out = Vec::new();
    if new.id.kind == Kind::Dashboard {
        dashboard_details(&a, &b, &mut out);
    } else if new.id.kind == Kind::RuleGroup {
        rule_group_details(&a, &b, &mut out);
    } else if new.id.kind == Kind::AlertmanagerConfig {
        value_diff("", &receivers_by_name(a), &receivers_by_name(b), &mut out);
    } else {
        value_diff("", &a, &b, &mut out);
    }
    Some(out)
}

/// An Alertmanager configuration with its receivers keyed by name, so a change
/// reads `receivers.team-pager.pagerduty_configs[0].severity` and a receiver
/// added in the middle does not shift every later one. Route changes keep
/// their position (`route.routes[1].matchers`): order is meaning there.
fn receivers_by_name(mut v: Value) -> Value {
    if let Some(r) = v.pointer_mut("/alertmanager_config/receivers")
        && let Value::Array(list) = r.take()
    {
        *r = Value::Object(
            list.into_iter()
                .map(|mut rcv| {
                    let name = match rcv.as_object_mut().and_then(|o| o.remove("name")) {
                        Some(Value::String(n)) => n,
                        _ => String::new(),
                    };
                    (name, rcv)
                })
                .collect(),
        );
    }
    v
}

/// The marker `new` value of a [`Detail`] whose list kept its members but not
/// their order.
pub const REORDERED: &str = "reordered";

/// A "reordered" detail when the members of both lists (by key) that are in both
/// come in a different order.
fn reordered(path: &str, a: &[String], b: &[String], out: &mut Vec<Detail>) {
    let in_b: std::collections::HashSet<&String> = b.iter().collect();
    let in_a: std::collections::HashSet<&String> = a.iter().collect();
    let kept_a = a.iter().filter(|k| in_b.contains(k));
    let kept_b = b.iter().filter(|k| in_a.contains(k));
    if !kept_a.eq(kept_b) {
        out.push(Detail {
            path: path.to_string(),
            old: None,
            new: Some(REORDERED.into()),
        });
    }
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
    let rules = |g: &Value| -> Vec<(String, Value)> {
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
    let (la, lb) = (rules(a), rules(b));
    // Rules of a group are evaluated in order, so a new order is a change.
    let keys =
        |l: &[(String, Value)]| -> Vec<String> { l.iter().map(|(k, _)| k.clone()).collect() };
    reordered("rules", &keys(&la), &keys(&lb), out);
    let ra: BTreeMap<String, Value> = la.into_iter().collect();
    let rb: BTreeMap<String, Value> = lb.into_iter().collect();
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
    let var_order = |d: &Value| -> Vec<String> {
        d["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|v| v["name"].as_str().unwrap_or("?").to_string())
            .collect()
    };
    reordered("variables", &var_order(da), &var_order(db), out);
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
    let order = |ps: &[&Value]| -> Vec<String> { ps.iter().map(|p| panel_key(p)).collect() };
    reordered("panels", &order(&panels(da)), &order(&pb), out);
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
        let ref_order = |v: &Value| -> Vec<String> {
            v["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .enumerate()
                .map(|(i, t)| {
                    t["refId"]
                        .as_str()
                        .map_or_else(|| i.to_string(), str::to_string)
                })
                .collect()
        };
        reordered(
            &format!("{label} queries"),
            &ref_order(old),
            &ref_order(p),
            out,
        );
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
        (None, Some(n)) if n == REORDERED => lines.push(format!("{}: {REORDERED}", d.path)),
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

/// GitHub refuses issue and pull-request comment bodies longer than this many
/// characters ("Body is too long (maximum is 65536 characters)").
pub const MARKDOWN_LIMIT: usize = 65_536;

/// The plan as a pull-request comment (GitHub/GitLab Markdown), at most
/// [`MARKDOWN_LIMIT`] bytes (so characters) long.
pub fn format_markdown(plan: &Plan, meta: &Meta) -> String {
    format_markdown_within(plan, meta, MARKDOWN_LIMIT)
}

/// One `<details>` section of the Markdown plan: a target and tenant.
struct MdGroup {
    heading: String,
    counts: Counts,
    /// Per change: its header line and its detail lines (each with `\n`).
    changes: Vec<(String, String)>,
}

fn md_groups(plan: &Plan) -> Vec<MdGroup> {
    let mut groups: Vec<MdGroup> = Vec::new();
    let mut last = None;
    for ch in display_order(plan) {
        let key = group_key(ch);
        if last.as_ref() != Some(&key) {
            groups.push(MdGroup {
                heading: heading(key.0, &key.1),
                counts: Counts::default(),
                changes: Vec::new(),
            });
            last = Some(key);
        }
        let Some(g) = groups.last_mut() else { continue };
        match ch.action {
            Action::Create => g.counts.create += 1,
            Action::Update => g.counts.update += 1,
            Action::Delete => g.counts.delete += 1,
        }
        // `diff` highlighting colours lines by their first character.
        let lead = match ch.action {
            Action::Create => '+',
            Action::Delete => '-',
            Action::Update => '!',
        };
        let header = format!("{lead} {}\n", headline(ch).replace("```", "ʼʼʼ"));
        let mut details = String::new();
        for d in &ch.details {
            for l in detail_lines(d) {
                let l = l.replace("```", "ʼʼʼ");
                // Old and new values lead with -/+ so the diff highlighter colours them.
                match l
                    .strip_prefix("  - ")
                    .map(|r| ('-', r))
                    .or_else(|| l.strip_prefix("  + ").map(|r| ('+', r)))
                {
                    Some((sign, rest)) => {
                        let _ = writeln!(details, "{sign}       {rest}");
                    }
                    None => {
                        let _ = writeln!(details, "#     {l}");
                    }
                }
            }
        }
        g.changes.push((header, details));
    }
    groups
}

fn md_group_open(g: &MdGroup, open: bool) -> String {
    if open {
        format!(
            "\n<details open><summary><b>{}</b></summary>\n\n```diff\n",
            g.heading
        )
    } else {
        let c = g.counts;
        format!(
            "\n<details><summary><b>{}</b>: {} to create, {} to update, {} to delete</summary>\n\n```diff\n",
            g.heading, c.create, c.update, c.delete
        )
    }
}

const MD_GROUP_CLOSE: &str = "```\n\n</details>\n";

/// The line that says how many detail lines of a change were left out.
fn md_more_lines(n: usize) -> String {
    format!("#     … {n} more detail lines not shown\n")
}

/// The longest [`md_more_lines`] can be.
const MD_MORE_LINES_MAX: usize = 64;

/// `n thing` or `n things`.
fn count_of(n: usize, thing: &str) -> String {
    if n == 1 {
        format!("1 {thing}")
    } else {
        format!("{n} {thing}s")
    }
}

/// What was left out of a plan cut to fit.
#[derive(Default)]
struct Cut {
    rows: usize,
    details: usize,
    changes: usize,
}

fn md_cut_note(cut: &Cut, limit: usize) -> String {
    let mut parts = Vec::new();
    if cut.details > 0 {
        parts.push(format!("details of {}", count_of(cut.details, "change")));
    }
    if cut.changes > 0 {
        parts.push(count_of(cut.changes, "further change"));
    }
    if cut.rows > 0 {
        parts.push(count_of(cut.rows, "table row"));
    }
    format!(
        "\n> [!NOTE]\n> This plan is longer than a pull-request comment can be ({limit} characters), so it leaves out: {}. Run `mop plan --format text` (or `--format json`) to see all of it.\n",
        parts.join(", ")
    )
}

/// [`format_markdown`] within `limit` bytes. A plan that fits is printed whole,
/// each section open. One that does not keeps the summary, then as much of the
/// table and of the per-object headers as fits, with sections collapsed; the
/// details of changes go in while there is room left after every header, and a
/// note says what was cut and how to see all.
pub fn format_markdown_within(plan: &Plan, meta: &Meta, limit: usize) -> String {
    let mut head = String::new();
    let _ = writeln!(
        head,
        "### MOP plan: `{}` → `{}`\n",
        short(&meta.base),
        short(&meta.head)
    );
    if meta.base_invalid {
        let _ = writeln!(
            head,
            "> [!WARNING]\n> The base revision does not validate; everything is shown as created.\n"
        );
    }
    if plan.is_empty() {
        let _ = writeln!(head, "**No changes.** The desired state is up to date.");
        return head;
    }
    let _ = writeln!(head, "**{}**\n", summary(plan.counts()));
    let table_head = "| target | tenant | create | update | delete |\n|---|---|---:|---:|---:|\n";
    let groups = md_groups(plan);
    let rows: Vec<String> = groups
        .iter()
        .map(|g| {
            // The heading is "target · tenant t" or "target · platform-wide".
            let (t, rest) = g.heading.split_once(" · ").unwrap_or((&g.heading, ""));
            let tenant = rest.strip_prefix("tenant ").unwrap_or("(platform-wide)");
            format!(
                "| {t} | {tenant} | {} | {} | {} |\n",
                g.counts.create, g.counts.update, g.counts.delete
            )
        })
        .collect();

    let mut full = head.clone();
    full.push_str(table_head);
    rows.iter().for_each(|r| full.push_str(r));
    for g in &groups {
        full.push_str(&md_group_open(g, true));
        for (h, d) in &g.changes {
            full.push_str(h);
            full.push_str(d);
        }
        full.push_str(MD_GROUP_CLOSE);
    }
    if full.len() <= limit {
        return full;
    }

    // Room for the note with the largest numbers it can hold.
    let worst = Cut {
        rows: usize::MAX,
        details: usize::MAX,
        changes: usize::MAX,
    };
    let reserve = md_cut_note(&worst, limit).len();
    let mut out = head;
    let mut cut = Cut::default();
    let mut room = limit.saturating_sub(out.len() + reserve);
    // The table gets at most a third of the room; the headers need the rest more.
    let mut table = String::from(table_head);
    for r in &rows {
        if cut.rows > 0 || table.len() + r.len() > room / 3 {
            cut.rows += 1;
        } else {
            table.push_str(r);
        }
    }
    if table.len() <= room {
        out.push_str(&table);
        room -= table.len();
    } else {
        cut.rows = rows.len();
    }
    let headers: usize = groups
        .iter()
        .map(|g| {
            md_group_open(g, false).len()
                + MD_GROUP_CLOSE.len()
                + g.changes.iter().map(|(h, _)| h.len()).sum::<usize>()
        })
        .sum();
    // Details only when every header fits; then as many as the rest of the room holds.
    let mut detail_room = room.saturating_sub(headers);
    let with_details = headers <= room;
    // Smallest details first, so one huge change does not crowd out the rest; the
    // room left over shows the start of the others.
    let mut whole = vec![false; groups.iter().map(|g| g.changes.len()).sum()];
    let mut sizes: Vec<(usize, usize)> = groups
        .iter()
        .flat_map(|g| &g.changes)
        .map(|(_, d)| d.len())
        .enumerate()
        .collect();
    sizes.sort_by_key(|&(i, len)| (len, i));
    for (i, len) in sizes {
        if !with_details || len > detail_room {
            break;
        }
        whole[i] = true;
        detail_room -= len;
    }
    let mut index = 0;
    for g in &groups {
        let open = md_group_open(g, false);
        let first = g.changes.first().map_or(0, |(h, _)| h.len());
        if open.len() + first + MD_GROUP_CLOSE.len() > room {
            cut.changes += g.changes.len();
            index += g.changes.len();
            continue;
        }
        out.push_str(&open);
        room -= open.len() + MD_GROUP_CLOSE.len();
        for (h, d) in &g.changes {
            let is_whole = whole.get(index).copied().unwrap_or(false);
            index += 1;
            if h.len() > room {
                cut.changes += 1;
                continue;
            }
            out.push_str(h);
            room -= h.len();
            if d.is_empty() {
                continue;
            }
            if !with_details {
                cut.details += 1;
                continue;
            }
            if is_whole {
                out.push_str(d);
                continue;
            }
            // As many whole lines as fit, then how many were left out.
            cut.details += 1;
            let total = d.lines().count();
            let mut shown = 0;
            for line in d.split_inclusive('\n') {
                if line.len() + MD_MORE_LINES_MAX > detail_room {
                    break;
                }
                out.push_str(line);
                detail_room -= line.len();
                shown += 1;
            }
            let more = md_more_lines(total - shown);
            if more.len() <= detail_room {
                out.push_str(&more);
                detail_room -= more.len();
            }
        }
        out.push_str(MD_GROUP_CLOSE);
    }
    out.push_str(&md_cut_note(&cut, limit));
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

/// One cluster's plan, in a repository of several (`clusters/<name>.yaml`).
pub struct ClusterPlan {
    /// The cluster key (file name).
    pub cluster: String,
    pub environment: String,
    pub plan: Plan,
    /// The base revision has no such cluster: everything is planned as created.
    pub new_cluster: bool,
}

fn cluster_label(c: &ClusterPlan) -> String {
    let mut l = format!("cluster {} ({})", c.cluster, c.environment);
    if c.new_cluster {
        l.push_str(", new");
    }
    l
}

/// Every cluster's plan for a terminal: one summary line per cluster, then
/// each cluster with changes as [`format_text`] shows one.
pub fn format_text_clusters(plans: &[ClusterPlan], meta: &Meta, color: bool) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "mop plan {} → {}, {} cluster(s)",
        short(&meta.base),
        short(&meta.head),
        plans.len()
    );
    for c in plans {
        let _ = writeln!(out, "  {}: {}", cluster_label(c), cluster_summary(c));
    }
    for c in plans.iter().filter(|c| !c.plan.is_empty()) {
        let _ = writeln!(out, "\n=== {} ===", cluster_label(c));
        // Without its first line, which repeats the revisions.
        let text = format_text(&c.plan, meta, color);
        out.push_str(
            text.split_once('\n')
                .map_or(text.as_str(), |(_, rest)| rest),
        );
    }
    out
}

fn cluster_summary(c: &ClusterPlan) -> String {
    if c.plan.is_empty() {
        "no changes".into()
    } else {
        summary(c.plan.counts())
    }
}

/// Every cluster's plan as one pull-request comment: a table with a line per
/// cluster, then a section per cluster with changes, each as
/// [`format_markdown_within`] writes one, sharing [`MARKDOWN_LIMIT`].
pub fn format_markdown_clusters(plans: &[ClusterPlan], meta: &Meta) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### MOP plan: `{}` → `{}`, {} clusters\n",
        short(&meta.base),
        short(&meta.head),
        plans.len()
    );
    if meta.base_invalid {
        let _ = writeln!(
            out,
            "> [!WARNING]\n> The base revision does not validate; everything is shown as created.\n"
        );
    }
    out.push_str(
        "| cluster | environment | create | update | delete |\n|---|---|---:|---:|---:|\n",
    );
    for c in plans {
        let n = c.plan.counts();
        let _ = writeln!(
            out,
            "| {}{} | {} | {} | {} | {} |",
            c.cluster,
            if c.new_cluster { " (new)" } else { "" },
            c.environment,
            n.create,
            n.update,
            n.delete
        );
    }
    let changed: Vec<&ClusterPlan> = plans.iter().filter(|c| !c.plan.is_empty()).collect();
    if changed.is_empty() {
        let _ = writeln!(
            out,
            "\n**No changes.** The desired state of every cluster is up to date."
        );
        return out;
    }
    // Each cluster's section gets an equal share of what is left.
    let share = MARKDOWN_LIMIT.saturating_sub(out.len()) / changed.len();
    for c in changed {
        let heading = format!("\n#### Cluster `{}` ({})\n\n", c.cluster, c.environment);
        let body = format_markdown_within(&c.plan, meta, share.saturating_sub(heading.len()));
        // The section's own title line repeats the revisions; the heading replaces it.
        let body = body
            .split_once("\n\n")
            .map_or(body.as_str(), |(_, rest)| rest);
        let body = body
            .strip_prefix("> [!WARNING]\n> The base revision does not validate; everything is shown as created.\n\n")
            .unwrap_or(body);
        out.push_str(&heading);
        out.push_str(body);
    }
    out
}

/// Every cluster's plan for machines: `clusters` holds one [`format_json`]
/// document per cluster, with its name and environment.
pub fn format_json_clusters(
    plans: &[ClusterPlan],
    meta: &Meta,
) -> Result<String, serde_json::Error> {
    let clusters: Vec<serde_json::Value> = plans
        .iter()
        .map(|c| {
            serde_json::json!({
                "cluster": c.cluster,
                "environment": c.environment,
                "new_cluster": c.new_cluster,
                "summary": c.plan.counts(),
                "changes": c.plan.changes,
            })
        })
        .collect();
    let mut s = serde_json::to_string_pretty(&serde_json::json!({
        "base": meta.base,
        "head": meta.head,
        "base_invalid": meta.base_invalid,
        "clusters": clusters,
    }))?;
    s.push('\n');
    Ok(s)
}

#[cfg(test)]
mod tests;
