//! Unknown fields in a server-side apply, found against the OpenAPI schemas of
//! the API server's types, as structured-merge-diff's typed conversion finds them.
//!
//! The schemas are the ones the `kubernetes-validate` PyPI package ships
//! (`.ci/pip.d/deploy.txt`; `kubernetes_validate/kubernetes-json-schema/
//! v<version>-local-strict/_definitions.json`), loaded at run time from the
//! installed package (or from the directory in `MOP_KUBE_SCHEMAS`), newest
//! version first: nothing generated is vendored here, and a missing package is
//! an error, never a silently lenient fake.
//!
//! Real behaviour (`kubernetes/kubernetes`):
//! `staging/src/k8s.io/apimachinery/pkg/util/managedfields/internal/structuredmerge.go`
//! refuses an applied object with a field its schema does not declare,
//! whatever `fieldValidation` says (apply is always strict about unknown
//! fields, kubernetes#105916), as a plain error the API server answers with 500:
//! `failed to create typed patch object (<ns>/<name>; <group>/<version>,
//! Kind=<Kind>): .spec.foo: field not declared in schema` (kubernetes#122480,
//! #139253).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use crate::resources::Resource;

pub(crate) type Defs = BTreeMap<String, Value>;

fn schema_dir() -> Result<PathBuf, String> {
    let root = match std::env::var_os("MOP_KUBE_SCHEMAS") {
        Some(d) => PathBuf::from(d),
        None => {
            let out = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import kubernetes_validate, os; print(os.path.dirname(kubernetes_validate.__file__))",
                ])
                .output()
                .map_err(|e| format!("cannot run python3 to find kubernetes-validate: {e}"))?;
            if !out.status.success() {
                return Err(format!(
                    "the Kubernetes fake needs the OpenAPI schemas of the kubernetes-validate package (pip install -r .ci/pip.d/deploy.txt): {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
                .join("kubernetes-json-schema")
        }
    };
    if root.join("_definitions.json").is_file() {
        return Ok(root);
    }
    // Newest `vX.Y.Z-local-strict` first.
    let mut versions: Vec<(Vec<u64>, PathBuf)> = std::fs::read_dir(&root)
        .map_err(|e| format!("{}: {e}", root.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let v = name.strip_prefix('v')?.strip_suffix("-local-strict")?;
            let parts: Option<Vec<u64>> = v.split('.').map(|p| p.parse().ok()).collect();
            Some((parts?, e.path()))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .ok_or_else(|| format!("no v*-local-strict schemas under {}", root.display()))
}

fn load() -> Result<Defs, String> {
    let dir = schema_dir()?;
    let path = dir.join("_definitions.json");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut v: Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    match v.get_mut("$defs").map(Value::take) {
        Some(Value::Object(m)) => Ok(m.into_iter().collect()),
        _ => Err(format!("{}: no $defs", path.display())),
    }
}

fn defs() -> Result<&'static Defs, String> {
    static DEFS: OnceLock<Result<Defs, String>> = OnceLock::new();
    DEFS.get_or_init(load).as_ref().map_err(Clone::clone)
}

/// Loads the schemas now (a missing package stays an error of the requests
/// that need them): done when the fake starts, so that the first write is not
/// the one that waits for python3 and a multi-megabyte parse, which on a
/// current-thread runtime would also stall the client under test.
pub(crate) fn preload() {
    let _ = defs();
}

/// `io.k8s.api.<group>.<version>.<Kind>` as the OpenAPI document names a type.
fn definition_name(res: &Resource) -> String {
    let group = if res.group.is_empty() {
        "core"
    } else {
        res.group.split('.').next().unwrap_or(res.group)
    };
    format!("io.k8s.api.{group}.{}.{}", res.version, res.kind)
}

fn resolve<'a>(defs: &'a Defs, mut s: &'a Value) -> &'a Value {
    while let Some(r) = s.get("$ref").and_then(Value::as_str) {
        match r.rsplit_once("/$defs/").and_then(|(_, n)| defs.get(n)) {
            Some(d) => s = d,
            None => break,
        }
    }
    s
}

fn walk(defs: &Defs, v: &Value, schema: &Value, path: &str, out: &mut Vec<String>) {
    let s = resolve(defs, schema);
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return;
    }
    match v {
        Value::Object(m) => {
            let props = s.get("properties").and_then(Value::as_object);
            let extra = s.get("additionalProperties");
            if props.is_none() && extra.is_none() {
                // A leaf type (IntOrString, Quantity, Time, RawExtension) or
                // `oneOf` alternatives: nothing declared to check against.
                return;
            }
            for (k, child) in m {
                let p = format!("{path}.{k}");
                match (props.and_then(|ps| ps.get(k)), extra) {
                    (Some(cs), _) => walk(defs, child, cs, &p, out),
                    (None, Some(e)) if e.is_object() => walk(defs, child, e, &p, out),
                    _ => out.push(format!("{p}: field not declared in schema")),
                }
            }
        }
        Value::Array(items) => {
            if let Some(is) = s.get("items") {
                for (i, item) in items.iter().enumerate() {
                    let key = match item.get("name").and_then(Value::as_str) {
                        Some(n) => format!("[name=\"{n}\"]"),
                        None => format!("[{i}]"),
                    };
                    walk(defs, item, is, &format!("{path}{key}"), out);
                }
            }
        }
        _ => {}
    }
}

/// What a schema node decodes into, as Go's typed decoding sees it.
pub(crate) enum Shape<'a> {
    /// A struct: its declared fields, and the value schema of a map-valued
    /// fallback (`additionalProperties`) when the schema has one.
    Struct(&'a serde_json::Map<String, Value>, Option<&'a Value>),
    /// A map (`map[string]T`): the schema of its values.
    MapOf(&'a Value),
    /// Something with its own decoding (IntOrString, Quantity, Time,
    /// RawExtension, FieldsV1, `x-kubernetes-preserve-unknown-fields`): nothing
    /// inside is checked.
    Leaf,
}

pub(crate) fn shape<'a>(defs: &'a Defs, schema: &'a Value) -> Shape<'a> {
    let s = resolve(defs, schema);
    if s.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true)) {
        return Shape::Leaf;
    }
    let extra = s.get("additionalProperties").filter(|e| e.is_object());
    match (s.get("properties").and_then(Value::as_object), extra) {
        (Some(p), e) => Shape::Struct(p, e),
        (None, Some(e)) => Shape::MapOf(e),
        (None, None) => Shape::Leaf,
    }
}

/// The schema of an array's items, when the schema is an array's.
pub(crate) fn items<'a>(defs: &'a Defs, schema: &'a Value) -> Option<&'a Value> {
    resolve(defs, schema).get("items")
}

/// The loaded definitions and the schema of `res`'s type.
pub(crate) fn root(res: &Resource) -> Result<(&'static Defs, &'static Value), String> {
    let defs = defs()?;
    let name = definition_name(res);
    defs.get(&name)
        .map(|s| (defs, s))
        .ok_or_else(|| format!("no OpenAPI schema {name} in kubernetes-validate's definitions"))
}

/// The undeclared fields of an applied object, as structured-merge-diff words
/// them; `Err` when the schemas cannot be loaded.
pub fn unknown_fields(res: &Resource, obj: &Value) -> Result<Vec<String>, String> {
    let defs = defs()?;
    let name = definition_name(res);
    let Some(schema) = defs.get(&name) else {
        return Err(format!(
            "no OpenAPI schema {name} in kubernetes-validate's definitions"
        ));
    };
    let mut out = Vec::new();
    walk(defs, obj, schema, "", &mut out);
    Ok(out)
}

/// The 500 `Status` message of an apply with undeclared fields.
pub fn apply_error(res: &Resource, namespace: &str, name: &str, errors: &[String]) -> String {
    let gvk = format!("{}/{}, Kind={}", res.group, res.version, res.kind);
    let errs = match errors {
        [one] => one.clone(),
        many => format!("errors:\n  {}", many.join("\n  ")),
    };
    format!("failed to create typed patch object ({namespace}/{name}; {gvk}): {errs}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;
    use serde_json::json;

    #[test]
    fn undeclared_fields_are_found_at_any_depth() {
        let d = by_kind("apps/v1", "Deployment").unwrap();
        let obj = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "gw", "labels": {"a": "b"}},
            "spec": {"replicas": 1, "replica": 2,
                     "template": {"spec": {"containers": [{"name": "gw", "image": "x", "imagePolicy": "Always",
                                                            "resources": {"limits": {"cpu": "1"}}}]}}}});
        let errs = unknown_fields(&d, &obj).unwrap();
        assert_eq!(
            errs,
            [
                ".spec.replica: field not declared in schema",
                ".spec.template.spec.containers[name=\"gw\"].imagePolicy: field not declared in schema"
            ]
        );
        let cm = by_kind("v1", "ConfigMap").unwrap();
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}, "data": {"k": "v"}});
        assert!(unknown_fields(&cm, &ok).unwrap().is_empty());
        assert_eq!(
            apply_error(&d, "mop", "gw", &errs[..1]),
            "failed to create typed patch object (mop/gw; apps/v1, Kind=Deployment): .spec.replica: field not declared in schema"
        );
    }
}
