//! Field ownership for server-side apply: field sets, `managedFields`, merge and
//! conflicts.
//!
//! Follows "Server-Side Apply": <https://kubernetes.io/docs/reference/using-api/server-side-apply/>
//! (sections "Field management", "Conflicts", "Merge strategy" and "Merging lists").
//! Field sets are written in the documented `FieldsV1` form (`f:name`, `k:{...}`,
//! `.`). Maps and structs are granular, lists of objects with a known merge key
//! (`containers` by `name`, `volumeMounts` by `mountPath`, …) are associative, every
//! other list is atomic, as the built-in types declare them. Ownership is tracked on
//! `metadata.labels`/`annotations`/`ownerReferences`/`finalizers` and the body, never
//! on `status` (a subresource the main endpoint cannot write).

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// One path element in `FieldsV1` spelling: `f:name` or `k:{"name":"x"}`.
pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Fields holding `map[string]string`: owned as a whole (`.`) and per key.
fn is_map_field(field: &str) -> bool {
    matches!(
        field,
        "labels"
            | "annotations"
            | "data"
            | "binaryData"
            | "stringData"
            | "nodeSelector"
            | "selector"
    )
}

/// Merge keys of the associative lists of the built-in types MOP renders.
fn merge_keys(field: &str, items: &[Value]) -> Option<Vec<&'static str>> {
    let keys: &[&'static str] = match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets" => &["name"],
        "volumeMounts" => &["mountPath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "ports" => {
            if items.iter().all(|i| i.get("containerPort").is_some()) {
                &["containerPort"]
            } else {
                &["port"]
            }
        }
        _ => return None,
    };
    let all_keyed = items
        .iter()
        .all(|i| keys.iter().all(|k| i.get(*k).is_some_and(|v| !v.is_null())));
    all_keyed.then(|| keys.to_vec())
}

fn key_elem(item: &Value, keys: &[&str]) -> String {
    let mut m = Map::new();
    for k in keys {
        m.insert((*k).to_string(), item[*k].clone());
    }
    format!("k:{}", Value::Object(m))
}

/// The part of an object whose fields are owned: no `apiVersion`/`kind`, no `status`,
/// and of `metadata` only what appliers set.
pub fn tracked_view(obj: &Value) -> Value {
    let mut out = Map::new();
    if let Some(m) = obj.as_object() {
        for (k, v) in m {
            match k.as_str() {
                "apiVersion" | "kind" | "status" => {}
                "metadata" => {
                    let mut md = Map::new();
                    for f in ["labels", "annotations", "ownerReferences", "finalizers"] {
                        if let Some(x) = v.get(f) {
                            md.insert(f.to_string(), x.clone());
                        }
                    }
                    if !md.is_empty() {
                        out.insert(k.clone(), Value::Object(md));
                    }
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
    }
    Value::Object(out)
}

/// Every owned path of a tracked view.
pub fn collect(view: &Value) -> FieldSet {
    let mut out = FieldSet::new();
    let mut path = Path::new();
    if let Some(m) = view.as_object() {
        for (k, v) in m {
            path.push(format!("f:{k}"));
            walk(v, k, &mut path, &mut out);
            path.pop();
        }
    }
    out
}

/// `LabelSelector` (`spec.selector` of workloads) is declared atomic
/// (`x-kubernetes-map-type: atomic`): owned, compared and replaced as one value.
/// A Service's `spec.selector` is a plain string map and stays granular.
fn is_atomic_struct(field: &str, v: &Value) -> bool {
    field == "selector" && (v.get("matchLabels").is_some() || v.get("matchExpressions").is_some())
}

fn walk(v: &Value, field: &str, path: &mut Path, out: &mut FieldSet) {
    match v {
        Value::Object(_) if is_atomic_struct(field, v) => {
            out.insert(path.clone());
        }
        Value::Object(m) if !m.is_empty() => {
            if is_map_field(field) {
                out.insert(path.clone());
            }
            for (k, c) in m {
                path.push(format!("f:{k}"));
                walk(c, k, path, out);
                path.pop();
            }
        }
        Value::Array(items) if !items.is_empty() => match merge_keys(field, items) {
            Some(keys) => {
                for item in items {
                    path.push(key_elem(item, &keys));
                    out.insert(path.clone());
                    if let Some(m) = item.as_object() {
                        for (k, c) in m {
                            path.push(format!("f:{k}"));
                            walk(c, k, path, out);
                            path.pop();
                        }
                    }
                    path.pop();
                }
            }
            None => {
                out.insert(path.clone());
            }
        },
        _ => {
            out.insert(path.clone());
        }
    }
}

fn find_item(items: &[Value], key: &str) -> Option<usize> {
    let want: Value = serde_json::from_str(key).ok()?;
    let want = want.as_object()?;
    items
        .iter()
        .position(|i| want.iter().all(|(k, v)| i.get(k) == Some(v)))
}

/// The value at a path, if present.
pub fn get<'a>(view: &'a Value, path: &[String]) -> Option<&'a Value> {
    let mut cur = view;
    for e in path {
        cur = if let Some(f) = e.strip_prefix("f:") {
            cur.as_object()?.get(f)?
        } else if let Some(k) = e.strip_prefix("k:") {
            let items = cur.as_array()?;
            &items[find_item(items, k)?]
        } else {
            return None;
        };
    }
    Some(cur)
}

/// Whether a path names a leaf (a value compared for conflicts), not a container.
pub fn is_leaf(view: &Value, path: &[String]) -> bool {
    let field = path.last().and_then(|e| e.strip_prefix("f:")).unwrap_or("");
    match get(view, path) {
        Some(v) if is_atomic_struct(field, v) => true,
        Some(Value::Object(m)) => m.is_empty(),
        Some(Value::Array(a)) => a.is_empty() || !path.last().is_some_and(|e| e.starts_with("k:")),
        _ => true,
    }
}

/// Removes the field or list item at a path; missing paths are ignored.
pub fn remove(view: &mut Value, path: &[String]) {
    let Some((last, parent)) = path.split_last() else {
        return;
    };
    let mut cur = view;
    for e in parent {
        let next = if let Some(f) = e.strip_prefix("f:") {
            cur.as_object_mut().and_then(|m| m.get_mut(f))
        } else if let Some(k) = e.strip_prefix("k:") {
            match cur.as_array_mut() {
                Some(items) => match find_item(items, k) {
                    Some(i) => items.get_mut(i),
                    None => None,
                },
                None => None,
            }
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(f) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(f);
        }
    } else if let Some(k) = last.strip_prefix("k:")
        && let Some(items) = cur.as_array_mut()
        && let Some(i) = find_item(items, k)
    {
        items.remove(i);
    }
}

/// Merges an applied configuration into a live view: maps field by field,
/// associative lists item by item, everything else replaced.
pub fn merge(dst: &mut Value, src: &Value, field: &str) {
    if is_atomic_struct(field, src) {
        *dst = src.clone();
        return;
    }
    match (dst, src) {
        (Value::Object(d), Value::Object(s)) => {
            for (k, sv) in s {
                if sv.is_null() {
                    d.remove(k);
                } else if let Some(dv) = d.get_mut(k) {
                    merge(dv, sv, k);
                } else {
                    d.insert(k.clone(), sv.clone());
                }
            }
        }
        (Value::Array(d), Value::Array(s)) => match (merge_keys(field, s), merge_keys(field, d)) {
            (Some(keys), Some(_)) => {
                for item in s {
                    let k = key_elem(item, &keys);
                    match find_item(d, &k[2..]) {
                        Some(i) => merge(&mut d[i], item, ""),
                        None => d.push(item.clone()),
                    }
                }
            }
            _ => *d = s.clone(),
        },
        (d, s) => *d = s.clone(),
    }
}

/// `.spec.template.spec.containers[name="x"].image`, as conflict messages spell it.
pub fn display(path: &[String]) -> String {
    let mut s = String::new();
    for e in path {
        if let Some(f) = e.strip_prefix("f:") {
            s.push('.');
            s.push_str(f);
        } else if let Some(k) = e.strip_prefix("k:") {
            let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            s.push('[');
            s.push_str(&parts.join(","));
            s.push(']');
        }
    }
    s
}

/// Serialises a field set as `FieldsV1`.
pub fn to_fields_v1(set: &FieldSet) -> Value {
    let mut root = json!({});
    for path in set {
        let mut cur = &mut root;
        for e in path {
            cur = &mut cur[e.as_str()];
            if cur.is_null() {
                *cur = json!({});
            }
        }
        // A member with members below it marks itself with ".".
        let has_children = set
            .iter()
            .any(|p| p.len() > path.len() && p.starts_with(path));
        if has_children {
            cur["."] = json!({});
        }
    }
    root
}

/// Parses `FieldsV1` back into a field set.
pub fn from_fields_v1(v: &Value) -> FieldSet {
    fn go(v: &Value, path: &mut Path, out: &mut FieldSet) {
        let Some(m) = v.as_object() else {
            return;
        };
        if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
            out.insert(path.clone());
        }
        for (k, c) in m {
            if k == "." {
                continue;
            }
            path.push(k.clone());
            go(c, path, out);
            path.pop();
        }
    }
    let mut out = FieldSet::new();
    go(v, &mut Path::new(), &mut out);
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    /// `Apply` or `Update`.
    pub operation: String,
    pub api_version: String,
    pub time: String,
    pub subresource: Option<String>,
    pub set: FieldSet,
}

impl Entry {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": to_fields_v1(&self.set),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    pub fn from_json(v: &Value) -> Self {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        Entry {
            manager: s("manager"),
            operation: s("operation"),
            api_version: s("apiVersion"),
            time: s("time"),
            subresource: v["subresource"].as_str().map(str::to_string),
            set: from_fields_v1(&v["fieldsV1"]),
        }
    }

    /// How conflict messages name a manager (apimachinery's `printManager`):
    /// `"mop"` for an applier, `"kubectl-edit" using apps/v1 at TIME` for an updater,
    /// with ` with subresource "status"` when it wrote a subresource.
    pub fn print_manager(&self) -> String {
        let mut s = format!("{:?}", self.manager);
        if let Some(sub) = &self.subresource {
            s.push_str(&format!(" with subresource {sub:?}"));
        }
        if self.operation == "Update" {
            s.push_str(&format!(" using {}", self.api_version));
            if !self.time.is_empty() {
                s.push_str(&format!(" at {}", self.time));
            }
        }
        s
    }

    fn same_slot(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

pub fn entries(obj: &Value) -> Vec<Entry> {
    obj["metadata"]["managedFields"]
        .as_array()
        .map(|a| a.iter().map(Entry::from_json).collect())
        .unwrap_or_default()
}

/// Result of planning an apply.
pub struct Applied {
    pub view: Value,
    pub entries: Vec<Entry>,
}

/// Server-side apply of `config` (a tracked view) by `manager` onto `live` (a tracked
/// view with its entries). Returns the conflicts when there are any and `force` is off.
pub fn apply(
    live: &Value,
    live_entries: &[Entry],
    config: &Value,
    manager: &str,
    api_version: &str,
    force: bool,
    now: &str,
) -> Result<Applied, Vec<(String, String)>> {
    let applied = collect(config);
    let mut entries: Vec<Entry> = live_entries.to_vec();

    let mut conflicts = Vec::new();
    let mut taken: Vec<(usize, Path)> = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        if e.same_slot(manager, "Apply", None) || e.subresource.is_some() {
            continue;
        }
        for p in applied.intersection(&e.set) {
            if !is_leaf(config, p) {
                continue;
            }
            if get(live, p) != get(config, p) {
                conflicts.push((e.print_manager(), display(p)));
                taken.push((i, p.clone()));
            }
        }
    }
    if !conflicts.is_empty() && !force {
        conflicts.sort();
        conflicts.dedup();
        return Err(conflicts);
    }
    // Forced: the other managers lose the fields they disagreed on.
    for (i, p) in taken {
        entries[i].set.remove(&p);
    }

    let previous = entries
        .iter()
        .find(|e| e.same_slot(manager, "Apply", None))
        .map(|e| e.set.clone())
        .unwrap_or_default();

    let mut view = live.clone();
    merge(&mut view, config, "");

    // Fields this manager applied before and no longer applies are removed, unless
    // another manager still owns them (or something below them).
    let others: Vec<&FieldSet> = entries
        .iter()
        .filter(|e| !e.same_slot(manager, "Apply", None) && e.subresource.is_none())
        .map(|e| &e.set)
        .collect();
    let owned_elsewhere = |p: &Path| others.iter().any(|s| s.iter().any(|q| q.starts_with(p)));
    let mut dropped: Vec<&Path> = previous
        .difference(&applied)
        .filter(|p| !applied.iter().any(|q| q.starts_with(p)))
        .filter(|p| !owned_elsewhere(p))
        .collect();
    dropped.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in dropped {
        remove(&mut view, p);
        prune_empty_parents(&mut view, p, &owned_elsewhere);
    }

    match entries
        .iter_mut()
        .find(|e| e.same_slot(manager, "Apply", None))
    {
        Some(e) => {
            if e.set != applied {
                e.time = now.to_string();
            }
            e.set = applied;
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version: api_version.to_string(),
            time: now.to_string(),
            subresource: None,
            set: applied,
        }),
    }
    retain_present(&mut entries, &view, None);
    Ok(Applied { view, entries })
}

fn prune_empty_parents(view: &mut Value, path: &[String], owned: &dyn Fn(&Path) -> bool) {
    for len in (1..path.len()).rev() {
        let parent: Path = path[..len].to_vec();
        let empty = match get(view, &parent) {
            Some(Value::Object(m)) => m.is_empty(),
            Some(Value::Array(a)) => a.is_empty(),
            _ => false,
        };
        if !empty || owned(&parent) {
            return;
        }
        remove(view, &parent);
    }
}

/// Drops owned paths that no longer exist, and entries left empty. Only entries of
/// the subresource written are checked: the main resource's view has no `status`, so
/// a status writer's entry must survive main-resource writes untouched.
fn retain_present(entries: &mut Vec<Entry>, view: &Value, subresource: Option<&str>) {
    for e in entries.iter_mut() {
        if e.subresource.as_deref() == subresource {
            e.set.retain(|p| get(view, p).is_some());
        }
    }
    entries.retain(|e| e.subresource.as_deref() != subresource || !e.set.is_empty());
}

/// Ownership after a non-apply write (create, update, patch) by `manager`: the fields
/// it changed become its own and leave every other manager.
pub fn update(
    old: Option<&Value>,
    old_entries: &[Entry],
    new: &Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    now: &str,
) -> Vec<Entry> {
    let changed: FieldSet = collect(new)
        .into_iter()
        .filter(|p| {
            old.and_then(|o| get(o, p)) != get(new, p) || old.and_then(|o| get(o, p)).is_none()
        })
        .filter(|p| is_leaf(new, p) || old.and_then(|o| get(o, p)).is_none())
        .collect();
    let mut entries = old_entries.to_vec();
    if !changed.is_empty() {
        for e in entries.iter_mut() {
            if !e.same_slot(manager, "Update", subresource) {
                e.set.retain(|p| !changed.contains(p));
            }
        }
        match entries
            .iter_mut()
            .find(|e| e.same_slot(manager, "Update", subresource))
        {
            Some(e) => {
                e.set.extend(changed);
                e.time = now.to_string();
            }
            None => entries.push(Entry {
                manager: manager.to_string(),
                operation: "Update".into(),
                api_version: api_version.to_string(),
                time: now.to_string(),
                subresource: subresource.map(str::to_string),
                set: changed,
            }),
        }
    }
    retain_present(&mut entries, new, subresource);
    entries
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(image: &str) -> Value {
        json!({
            "metadata": {"labels": {"app": "x"}},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "c", "image": image, "args": ["-a"]}]}}}
        })
    }

    #[test]
    fn workload_selector_is_atomic() {
        let d = json!({"spec": {"selector": {"matchLabels": {"a": "b"}}}});
        let v = to_fields_v1(&collect(&d));
        assert_eq!(v, json!({"f:spec": {"f:selector": {}}}));
        let svc = json!({"spec": {"selector": {"a": "b"}}});
        let v = to_fields_v1(&collect(&svc));
        assert_eq!(v, json!({"f:spec": {"f:selector": {".": {}, "f:a": {}}}}));
    }

    #[test]
    fn fields_v1_round_trip() {
        let set = collect(&deployment("i:1"));
        let v = to_fields_v1(&set);
        assert_eq!(v["f:metadata"]["f:labels"]["."], json!({}));
        assert_eq!(
            v["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:image"],
            json!({})
        );
        assert_eq!(from_fields_v1(&v), set);
    }

    #[test]
    fn conflict_then_force() {
        let live = deployment("i:1");
        let kubectl = update(None, &[], &live, "kubectl", "apps/v1", None, "t");
        let err = apply(
            &live,
            &kubectl,
            &deployment("i:2"),
            "mop",
            "apps/v1",
            false,
            "t",
        )
        .err()
        .unwrap();
        assert_eq!(
            err,
            vec![(
                "\"kubectl\" using apps/v1 at t".to_string(),
                ".spec.template.spec.containers[name=\"c\"].image".to_string()
            )]
        );
        let ok = apply(
            &live,
            &kubectl,
            &deployment("i:2"),
            "mop",
            "apps/v1",
            true,
            "t",
        )
        .ok()
        .unwrap();
        assert_eq!(get(&ok.view, &collect_image_path()), Some(&json!("i:2")));
        let k = ok.entries.iter().find(|e| e.manager == "kubectl").unwrap();
        assert!(!k.set.contains(&collect_image_path()));
    }

    fn collect_image_path() -> Path {
        [
            "f:spec",
            "f:template",
            "f:spec",
            "f:containers",
            "k:{\"name\":\"c\"}",
            "f:image",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    #[test]
    fn dropped_fields_are_removed() {
        let first = apply(
            &json!({}),
            &[],
            &deployment("i:1"),
            "mop",
            "apps/v1",
            false,
            "t",
        )
        .ok()
        .unwrap();
        let mut less = deployment("i:1");
        less["metadata"]["labels"] = json!(null);
        less.as_object_mut().unwrap().remove("metadata");
        less["spec"].as_object_mut().unwrap().remove("replicas");
        let second = apply(
            &first.view,
            &first.entries,
            &less,
            "mop",
            "apps/v1",
            false,
            "t",
        )
        .ok()
        .unwrap();
        assert!(second.view.get("metadata").is_none(), "{}", second.view);
        assert!(second.view["spec"].get("replicas").is_none());
    }
}
