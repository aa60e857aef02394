//! Field validation (`fieldValidation=Strict|Warn|Ignore`) of POST, PUT and
//! the patches, as the API server does it (`kubernetes/kubernetes`):
//!
//! - the directive: absent or empty is `Warn`
//!   (`staging/src/k8s.io/apiserver/pkg/endpoints/handlers/rest.go`,
//!   `fieldValidation`); anything but the three names is 422 from
//!   `ValidateCreateOptions`/`ValidateUpdateOptions`/`ValidatePatchOptions`
//!   (`apimachinery/pkg/apis/meta/v1/validation/validation.go`);
//! - POST and PUT decode the body with the strict serializer under `Strict` and
//!   `Warn` (`endpoints/handlers/create.go`, `update.go`): a JSON body's unknown
//!   and duplicate fields in document order, one error each (sigs.k8s.io/json
//!   `UnmarshalStrict`: `unknown field "spec.x"`, `duplicate field
//!   "spec.template.spec.containers[0].image"`; a field both unknown and
//!   duplicated is reported once, as unknown); a YAML body's duplicate keys
//!   first, as one `yaml: unmarshal errors:` error with a `line N: key "k"
//!   already set in map` line each, then the unknown fields of the converted
//!   JSON (keys sorted) (`apimachinery/pkg/runtime/serializer/json/json.go`,
//!   `unmarshal`). `Strict` answers 400 `<Kind> in version "<v>" cannot be
//!   handled as a <Kind>: strict decoding error: <e1>, <e2>`
//!   (`transformDecodeError` in `handlers/rest.go`);
//! - merge, JSON and strategic-merge patches (`endpoints/handlers/patch.go`):
//!   the patch's own duplicate fields (for a JSON patch, the unknown and
//!   duplicate fields of its operations, prefixed `json patch `), then the
//!   unknown fields of the patched object, keys sorted. `Strict` answers 422
//!   `"" is invalid: patch: Invalid value: "<patched object, or the patch map
//!   for a strategic merge>": strict decoding error: ...` (`NewInvalid` with an
//!   empty kind);
//! - server-side apply: the duplicate keys of the YAML (`yaml.UnmarshalStrict`,
//!   after the apply itself) answer 400 `error strict decoding YAML: error
//!   converting YAML to JSON: yaml: unmarshal errors:\n  line N: ...` under
//!   `Strict`; its unknown fields are refused whatever the directive
//!   (schema.rs);
//! - `Warn` adds one `Warning: 299 - "<text>"` header per problem, a YAML error
//!   split into its lines (`addStrictDecodingWarnings`, `parseYAMLWarnings` in
//!   `handlers/rest.go`), deduplicated and quoted as
//!   `apiserver/pkg/endpoints/filters/warning.go` and
//!   `apimachinery/pkg/util/net/http.go` (`NewWarningHeader`) do;
//! - `Ignore` says nothing; under `Warn` and `Ignore` the unknown fields are
//!   dropped from what is stored (typed decoding has nowhere to put them), and
//!   of duplicates the last one counts.
//!
//! Expected texts are those of `test/integration/apiserver/field_validation_test.go`.
//! Not simulated: the truncation of warnings past 4 KiB (`filters/warning.go`).

use std::collections::HashSet;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::resources::Resource;
use crate::schema::{self, Defs, Shape};
use crate::server::Query;
use crate::status::ApiError;

/// `fieldValidation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Directive {
    Strict,
    Warn,
    Ignore,
}

/// The directive of a request; `options_kind` names the options type in the
/// 422 (`CreateOptions`, `UpdateOptions`, `PatchOptions`).
pub fn directive(q: &Query, options_kind: &str) -> Result<Directive, ApiError> {
    match q.get("fieldValidation").map(String::as_str) {
        None | Some("") | Some("Warn") => Ok(Directive::Warn),
        Some("Strict") => Ok(Directive::Strict),
        Some("Ignore") => Ok(Directive::Ignore),
        Some(other) => Err(ApiError::invalid(
            options_kind,
            "",
            "meta.k8s.io",
            &[(
                "fieldValidation".into(),
                format!(
                    "Unsupported value: \"{other}\": supported values: \"Ignore\", \"Strict\", \"Warn\""
                ),
            )],
        )),
    }
}

/// A JSON or YAML document as written: object members in order, duplicates
/// kept, each value with the (1-based) line it starts on (YAML only; 0 for JSON).
#[derive(Debug)]
pub(crate) enum Node {
    Map(Vec<(String, Node, u64)>),
    Seq(Vec<Node>),
    Leaf,
}

struct NodeVisitor {
    yaml: bool,
}

/// JSON flavour: `serde_json` forwards repeated members to the visitor.
struct JNode(Node);
/// YAML flavour: values wrapped in `Spanned` for their line.
struct YNode(Node);

impl<'de> Deserialize<'de> for JNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor { yaml: false }).map(JNode)
    }
}

impl<'de> Deserialize<'de> for YNode {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NodeVisitor { yaml: true }).map(YNode)
    }
}

/// A mapping key: YAML allows scalars of any type there.
struct Key(String);

impl<'de> Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KV;
        impl Visitor<'_> for KV {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a scalar key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Key, E> {
                Ok(Key(v.to_string()))
            }
            fn visit_unit<E: de::Error>(self) -> Result<Key, E> {
                Ok(Key("null".into()))
            }
        }
        d.deserialize_any(KV)
    }
}

impl<'de> Visitor<'de> for NodeVisitor {
    type Value = Node;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON or YAML value")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_none<E: de::Error>(self) -> Result<Node, E> {
        Ok(Node::Leaf)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        if self.yaml {
            while let Some(YNode(n)) = seq.next_element()? {
                out.push(n);
            }
        } else {
            while let Some(JNode(n)) = seq.next_element()? {
                out.push(n);
            }
        }
        Ok(Node::Seq(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Node, A::Error> {
        let mut out = Vec::new();
        while let Some(Key(k)) = map.next_key()? {
            if self.yaml {
                let v: serde_saphyr::Spanned<YNode> = map.next_value()?;
                out.push((k, v.value.0, v.referenced.line()));
            } else {
                let JNode(v) = map.next_value()?;
                out.push((k, v, 0));
            }
        }
        Ok(Node::Map(out))
    }
}

/// The member structure of a JSON text.
pub(crate) fn json_tree(body: &[u8]) -> Result<Node, String> {
    serde_json::from_slice::<JNode>(body)
        .map(|n| n.0)
        .map_err(|e| e.to_string())
}

/// The member structure of a YAML text (JSON is YAML).
pub(crate) fn yaml_tree(text: &str) -> Result<Node, String> {
    let opts = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::PassThrough,
    };
    serde_saphyr::from_str_with_options::<YNode>(text, opts)
        .map(|n| n.0)
        .map_err(|e| e.to_string())
}

/// A YAML text as JSON, the last of duplicate keys counting (what a
/// non-strict decode keeps).
pub(crate) fn yaml_value(text: &str) -> Result<Value, String> {
    let opts = serde_saphyr::options! {
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::LastWins,
    };
    serde_saphyr::from_str_with_options::<Value>(text, opts).map_err(|e| e.to_string())
}

/// Go's `%q` of a string (strconv.Quote, for the characters objects hold).
pub(crate) fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// sigs.k8s.io/json's strict errors: deduplicated, at most 100.
#[derive(Default)]
struct Errs {
    list: Vec<String>,
    seen: HashSet<String>,
}

impl Errs {
    fn push(&mut self, e: String) {
        if self.list.len() < 100 && self.seen.insert(e.clone()) {
            self.list.push(e);
        }
    }
    fn unknown(&mut self, path: &str) {
        self.push(format!("unknown field {}", go_quote(path)));
    }
    fn duplicate(&mut self, path: &str) {
        self.push(format!("duplicate field {}", go_quote(path)));
    }
}

/// Typed strict decoding of a JSON document: unknown and duplicate fields in
/// document order.
fn typed(defs: &Defs, node: &Node, schema: &serde_json::Value, path: &str, out: &mut Errs) {
    match node {
        Node::Map(entries) => match schema::shape(defs, schema) {
            Shape::Struct(props, extra) => {
                let mut seen = HashSet::new();
                for (k, v, _) in entries {
                    let p = join(path, k);
                    if let Some(cs) = props.get(k) {
                        if !seen.insert(k.as_str()) {
                            out.duplicate(&p);
                        }
                        typed(defs, v, cs, &p, out);
                    } else if let Some(e) = extra {
                        if !seen.insert(k.as_str()) {
                            out.duplicate(&p);
                        }
                        typed(defs, v, e, &p, out);
                    } else {
                        out.unknown(&p);
                    }
                }
            }
            Shape::MapOf(e) => {
                let mut seen = HashSet::new();
                for (k, v, _) in entries {
                    let p = join(path, k);
                    if !seen.insert(k.as_str()) {
                        out.duplicate(&p);
                    }
                    typed(defs, v, e, &p, out);
                }
            }
            Shape::Leaf => {}
        },
        Node::Seq(items) => {
            if let Some(is) = schema::items(defs, schema) {
                for (i, n) in items.iter().enumerate() {
                    typed(defs, n, is, &format!("{path}[{i}]"), out);
                }
            }
        }
        Node::Leaf => {}
    }
}

/// Strict decoding into `map[string]interface{}`: duplicates at any depth.
fn untyped(node: &Node, path: &str, out: &mut Errs) {
    match node {
        Node::Map(entries) => {
            let mut seen = HashSet::new();
            for (k, v, _) in entries {
                let p = join(path, k);
                if !seen.insert(k.as_str()) {
                    out.duplicate(&p);
                }
                untyped(v, &p, out);
            }
        }
        Node::Seq(items) => {
            for (i, n) in items.iter().enumerate() {
                untyped(n, &format!("{path}[{i}]"), out);
            }
        }
        Node::Leaf => {}
    }
}

/// yaml.v2's strict duplicate-key errors, as `setMapIndex` records them: after
/// the repeated key's value is decoded, on the line that value starts.
fn yaml_dups(node: &Node, out: &mut Vec<String>) {
    match node {
        Node::Map(entries) => {
            let mut seen = HashSet::new();
            for (k, v, line) in entries {
                yaml_dups(v, out);
                if !seen.insert(k.as_str()) {
                    out.push(format!(
                        "line {line}: key {} already set in map",
                        go_quote(k)
                    ));
                }
            }
        }
        Node::Seq(items) => items.iter().for_each(|n| yaml_dups(n, out)),
        Node::Leaf => {}
    }
}

/// The one error YAMLToJSONStrict returns for duplicate keys, if any.
fn yaml_error(node: &Node) -> Option<String> {
    let mut lines = Vec::new();
    yaml_dups(node, &mut lines);
    (!lines.is_empty()).then(|| format!("yaml: unmarshal errors:\n  {}", lines.join("\n  ")))
}

/// The unknown fields of a decoded object, keys in sorted order (the order Go
/// marshals a map in, which is what the server decodes after a patch or a
/// YAML→JSON conversion). With `prune`, they are removed.
fn unknown_in(defs: &Defs, v: &mut Value, schema: &Value, path: &str, prune: bool, out: &mut Errs) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<String> = m.keys().cloned().collect();
            keys.sort();
            match schema::shape(defs, schema) {
                Shape::Struct(props, extra) => {
                    for k in keys {
                        let p = join(path, &k);
                        match (props.get(&k).or(extra), m.get_mut(&k)) {
                            (Some(cs), Some(child)) => unknown_in(defs, child, cs, &p, prune, out),
                            (None, _) => {
                                out.unknown(&p);
                                if prune {
                                    m.remove(&k);
                                }
                            }
                            (Some(_), None) => {}
                        }
                    }
                }
                Shape::MapOf(e) => {
                    for k in keys {
                        if let Some(child) = m.get_mut(&k) {
                            unknown_in(defs, child, e, &join(path, &k), prune, out);
                        }
                    }
                }
                Shape::Leaf => {}
            }
        }
        Value::Array(items) => {
            if let Some(is) = schema::items(defs, schema) {
                for (i, item) in items.iter_mut().enumerate() {
                    unknown_in(defs, item, is, &format!("{path}[{i}]"), prune, out);
                }
            }
        }
        _ => {}
    }
}

fn schema_root(res: &Resource) -> Result<(&'static Defs, &'static Value), ApiError> {
    schema::root(res).map_err(ApiError::internal_unknown)
}

/// The unknown fields of `obj` (keys sorted), removed from it.
pub(crate) fn drop_unknown(res: &Resource, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    let (defs, s) = schema_root(res)?;
    let mut errs = Errs::default();
    unknown_in(defs, obj, s, "", true, &mut errs);
    Ok(errs.list)
}

/// What the strict decoding of a POST or PUT body found.
pub(crate) struct Decoded {
    /// The object as stored: unknown fields dropped, the last of duplicates.
    pub obj: Value,
    /// The strict errors, each as the server words it.
    pub errors: Vec<String>,
}

/// Decodes a POST/PUT body as the strict serializer does: YAML when the
/// content type says so, JSON otherwise.
pub(crate) fn decode_body(
    res: &Resource,
    body: &[u8],
    content_type: Option<&str>,
) -> Result<Option<Decoded>, ApiError> {
    let yaml = content_type.is_some_and(|c| c.starts_with("application/yaml"));
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let (defs, s) = schema_root(res)?;
    if !yaml && let Ok(tree) = json_tree(body) {
        let mut errs = Errs::default();
        typed(defs, &tree, s, "", &mut errs);
        let mut obj: Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
        unknown_in(defs, &mut obj, s, "", true, &mut Errs::default());
        return Ok(Some(Decoded {
            obj,
            errors: errs.list,
        }));
    }
    let text = std::str::from_utf8(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    let tree = yaml_tree(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    let mut obj = yaml_value(text)
        .map_err(|e| ApiError::bad_request(format!("error decoding request body: {e}")))?;
    let mut errors: Vec<String> = yaml_error(&tree).into_iter().collect();
    let mut errs = Errs::default();
    unknown_in(defs, &mut obj, s, "", true, &mut errs);
    errors.extend(errs.list);
    Ok(Some(Decoded { obj, errors }))
}

/// The 400 of a POST/PUT body that failed strict decoding.
pub(crate) fn decode_error(res: &Resource, obj: &Value, errors: &[String]) -> ApiError {
    let kind = obj["kind"]
        .as_str()
        .filter(|k| !k.is_empty())
        .unwrap_or(res.kind);
    let version = obj["apiVersion"]
        .as_str()
        .map(|av| av.rsplit('/').next().unwrap_or(av))
        .filter(|v| !v.is_empty())
        .unwrap_or(res.version);
    ApiError::bad_request(format!(
        "{kind} in version {} cannot be handled as a {}: strict decoding error: {}",
        go_quote(version),
        res.kind,
        errors.join(", ")
    ))
}

/// The warnings of strict errors: one per error, a YAML error one per line
/// (`parseYAMLWarnings`).
pub(crate) fn warnings(errors: &[String]) -> Vec<String> {
    const SHORT: &str = "yaml: unmarshal errors:\n";
    const LONG: &str = "error converting YAML to JSON: yaml: unmarshal errors:\n";
    let mut out = Vec::new();
    for e in errors {
        match e.strip_prefix(SHORT).or_else(|| e.strip_prefix(LONG)) {
            Some(rest) => out.extend(rest.split('\n').map(|l| l.trim().to_string())),
            None => out.push(e.clone()),
        }
    }
    out
}

/// The patch's own strict errors: duplicates of a merge or strategic-merge
/// patch; unknown and duplicate fields of a JSON patch's operations.
pub(crate) fn patch_errors(content_type: &str, body: &[u8]) -> Result<Vec<String>, ApiError> {
    let tree =
        json_tree(body).map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let mut errs = Errs::default();
    if content_type == "application/json-patch+json" {
        // `[]jsonPatchOp{op, path, from, value interface{}}`.
        if let Node::Seq(ops) = &tree {
            for (i, op) in ops.iter().enumerate() {
                let Node::Map(entries) = op else { continue };
                let mut seen = HashSet::new();
                for (k, v, _) in entries {
                    let p = format!("[{i}].{k}");
                    if !matches!(k.as_str(), "op" | "path" | "from" | "value") {
                        errs.unknown(&p);
                        continue;
                    }
                    if !seen.insert(k.as_str()) {
                        errs.duplicate(&p);
                    }
                    if k == "value" {
                        untyped(v, &p, &mut errs);
                    }
                }
            }
        }
        return Ok(errs
            .list
            .into_iter()
            .map(|e| format!("json patch {e}"))
            .collect());
    }
    untyped(&tree, "", &mut errs);
    Ok(errs.list)
}

/// The unknown fields of a patched object (keys sorted), removed from it.
pub(crate) fn patched_unknown(res: &Resource, obj: &mut Value) -> Result<Vec<String>, ApiError> {
    drop_unknown(res, obj)
}

/// The 422 of a patch that failed strict decoding. `value` is what the server
/// shows: the patched object as Go marshals it (merge and JSON patches) or the
/// patch as Go prints a map (strategic merge).
pub(crate) fn patch_error(value: &str, errors: &[String]) -> ApiError {
    ApiError::invalid(
        "",
        "",
        "",
        &[(
            "patch".into(),
            format!(
                "Invalid value: {}: strict decoding error: {}",
                go_quote(value),
                errors.join(", ")
            ),
        )],
    )
}

/// A JSON value as Go's `json.Marshal` of a map writes it: compact, keys
/// sorted, `<`, `>` and `&` escaped.
pub(crate) fn go_json(v: &Value) -> String {
    fn write(v: &Value, out: &mut String) {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(&Value::String((*k).clone()), out);
                    out.push(':');
                    write(&m[*k], out);
                }
                out.push('}');
            }
            Value::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write(x, out);
                }
                out.push(']');
            }
            Value::String(s) => {
                let quoted = Value::String(s.clone()).to_string();
                out.push_str(
                    &quoted
                        .replace('<', "\\u003c")
                        .replace('>', "\\u003e")
                        .replace('&', "\\u0026"),
                );
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut out = String::new();
    write(v, &mut out);
    out
}

/// A JSON value as Go's `fmt.Sprintf("%+v")` prints a `map[string]interface{}`.
pub(crate) fn go_map(v: &Value) -> String {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_map(&m[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
        Value::Array(a) => {
            let parts: Vec<String> = a.iter().map(go_map).collect();
            format!("[{}]", parts.join(" "))
        }
        Value::String(s) => s.clone(),
        Value::Null => "<nil>".into(),
        Value::Number(n) if n.is_f64() => {
            let f = n.as_f64().unwrap_or(0.0);
            // Go's %v of a float64 is %g: exponent from 1e21 on.
            if f.abs() >= 1e21 || (f != 0.0 && f.abs() < 1e-4) {
                format!("{f:e}").replace('e', "e+").replace("e+-", "e-")
            } else {
                format!("{f}")
            }
        }
        other => other.to_string(),
    }
}

/// The duplicate keys of a server-side apply body, as the 400 or the warnings
/// `applyPatcher` gives (`None` when there are none).
pub(crate) fn apply_duplicates(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let tree = yaml_tree(text).ok()?;
    yaml_error(&tree).map(|e| format!("error converting YAML to JSON: {e}"))
}

/// The 400 of an apply whose YAML has duplicate keys under `Strict`.
pub(crate) fn apply_error(err: &str) -> ApiError {
    ApiError::bad_request(format!("error strict decoding YAML: {err}"))
}

/// A `Warning` header value: `299 - "<text>"` with `"` and `\` escaped.
pub fn warning_header(text: &str) -> String {
    let mut out = String::from("299 - \"");
    for c in text.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::by_kind;
    use serde_json::json;

    // The body of field_validation_test.go's `invalidBodyJSON`, the
    // `unknownMeta` and repeated `name` of the current version included.
    const INVALID_JSON: &str = r#"{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {"name": "d", "name": "d", "unknownMeta": "x", "labels": {"app": "nginx"}},
  "spec": {
    "unknown1": "val1",
    "unknownDupe": "valDupe",
    "unknownDupe": "valDupe2",
    "paused": true,
    "paused": false,
    "selector": {"matchLabels": {"app": "nginx"}},
    "template": {
      "metadata": {"labels": {"app": "nginx"}},
      "spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "unknownNested": "val1",
                               "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}
    }
  }
}"#;

    #[test]
    fn json_bodies_are_judged_like_sigs_k8s_io_json() {
        let d = by_kind("apps/v1", "Deployment").unwrap();
        let got = decode_body(&d, INVALID_JSON.as_bytes(), Some("application/json"))
            .unwrap()
            .unwrap();
        assert_eq!(
            got.errors,
            [
                r#"duplicate field "metadata.name""#,
                r#"unknown field "metadata.unknownMeta""#,
                r#"unknown field "spec.unknown1""#,
                r#"unknown field "spec.unknownDupe""#,
                r#"duplicate field "spec.paused""#,
                r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
                r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
            ]
        );
        assert_eq!(got.obj["spec"]["paused"], json!(false));
        assert!(got.obj["spec"].get("unknown1").is_none());
        assert!(got.obj["metadata"].get("unknownMeta").is_none());
        assert_eq!(
            got.obj["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
            "Never"
        );
    }

    #[test]
    fn yaml_bodies_report_duplicate_lines_then_sorted_unknowns() {
        let d = by_kind("apps/v1", "Deployment").unwrap();
        let yaml = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: d\n  name: d\n  unknownMeta: x\nspec:\n  unknown1: val1\n  paused: true\n  paused: false\n  template:\n    spec:\n      containers:\n      - name: nginx\n        unknownNested: v\n        imagePullPolicy: Always\n        imagePullPolicy: Never\n";
        let got = decode_body(&d, yaml.as_bytes(), Some("application/yaml"))
            .unwrap()
            .unwrap();
        assert_eq!(
            got.errors,
            [
                "yaml: unmarshal errors:\n  line 5: key \"name\" already set in map\n  line 10: key \"paused\" already set in map\n  line 17: key \"imagePullPolicy\" already set in map",
                r#"unknown field "metadata.unknownMeta""#,
                r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
                r#"unknown field "spec.unknown1""#,
            ]
        );
        assert_eq!(
            warnings(&got.errors)[..3],
            [
                r#"line 5: key "name" already set in map"#,
                r#"line 10: key "paused" already set in map"#,
                r#"line 17: key "imagePullPolicy" already set in map"#,
            ]
        );
    }

    #[test]
    fn patches_report_their_duplicates_and_json_patch_ops_their_fields() {
        let merge = br#"{"spec": {"paused": true, "paused": false, "template": {"spec": {"containers": [{"name": "a", "image": "x", "image": "y"}]}}}}"#;
        assert_eq!(
            patch_errors("application/merge-patch+json", merge).unwrap(),
            [
                r#"duplicate field "spec.paused""#,
                r#"duplicate field "spec.template.spec.containers[0].image""#
            ]
        );
        let ops = br#"[{"op": "add", "path": "/spec/u1", "value": "v", "foo": "bar"},
                      {"op": "add", "path": "/spec/u2", "path": "/spec/u3", "value": "v"}]"#;
        assert_eq!(
            patch_errors("application/json-patch+json", ops).unwrap(),
            [
                r#"json patch unknown field "[0].foo""#,
                r#"json patch duplicate field "[1].path""#
            ]
        );
    }

    #[test]
    fn go_formats() {
        let v = json!({"b": [1, "x <y>"], "a": {"c": null, "d": true, "e": 1.5}});
        assert_eq!(
            go_json(&v),
            r#"{"a":{"c":null,"d":true,"e":1.5},"b":[1,"x \u003cy\u003e"]}"#
        );
        assert_eq!(go_map(&v), "map[a:map[c:<nil> d:true e:1.5] b:[1 x <y>]]");
        assert_eq!(go_quote("a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(
            warning_header(r#"unknown field "x""#),
            r#"299 - "unknown field \"x\"""#
        );
    }
}
