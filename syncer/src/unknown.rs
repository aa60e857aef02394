//! Every unknown field of a YAML file, not only the first.
//!
//! serde stops at the first error of a file. When a file fails to parse, this pass
//! walks the document against the JSON Schema generated from the same types and
//! reports each key the schema does not allow, with its location, so a user fixing
//! typos sees all of them in one run.

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::diag::{Diagnostic, hint_for_message};
use crate::model::common::Loc;

/// A YAML document with the location of every mapping key.
#[derive(Debug)]
enum Node {
    Map(Vec<(Loc<String>, Node)>),
    Seq(Vec<Node>),
    Scalar,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any YAML value")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(k) = m.next_key::<Loc<KeyText>>()? {
                    let v = m.next_value::<Node>()?;
                    out.push((Loc::new(k.value.0, k.line, k.column), v));
                }
                Ok(Node::Map(out))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = s.next_element::<Node>()? {
                    out.push(v);
                }
                Ok(Node::Seq(out))
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_unit<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_none<E: de::Error>(self) -> Result<Node, E> {
                Ok(Node::Scalar)
            }
            fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Node, D2::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

/// A mapping key of any scalar type, as text.
struct KeyText(String);

impl<'de> Deserialize<'de> for KeyText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = KeyText;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mapping key")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<KeyText, E> {
                Ok(KeyText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

/// Unknown fields in `text` according to `schema` (a root schema with `$defs`).
/// Returns nothing when the text is not even YAML; serde reports that.
pub fn unknown_fields(path: &str, text: &str, schema: &Value) -> Vec<Diagnostic> {
    let Ok(node) = serde_saphyr::from_str::<Node>(text) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    walk(path, &node, schema, schema, &mut out);
    out
}

fn resolve<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    match s["$ref"].as_str().and_then(|r| r.strip_prefix("#/$defs/")) {
        Some(name) => &root["$defs"][name],
        None => s,
    }
}

/// The one non-null alternative of an `anyOf`/`oneOf` (how `Option<T>` is written),
/// or the schema itself.
fn unwrap_optional<'a>(root: &'a Value, s: &'a Value) -> &'a Value {
    let s = resolve(root, s);
    for key in ["anyOf", "oneOf"] {
        if let Some(alts) = s[key].as_array() {
            let non_null: Vec<&Value> = alts.iter().filter(|a| a["type"] != "null").collect();
            if let [one] = non_null.as_slice() {
                return resolve(root, one);
            }
        }
    }
    s
}

fn walk(path: &str, node: &Node, schema: &Value, root: &Value, out: &mut Vec<Diagnostic>) {
    let schema = unwrap_optional(root, schema);
    match node {
        Node::Map(entries) => {
            let props = schema["properties"].as_object();
            let closed = schema["additionalProperties"] == false;
            for (key, value) in entries {
                match props.and_then(|p| p.get(&key.value)) {
                    Some(sub) => walk(path, value, sub, root, out),
                    None if closed => {
                        let expected: Vec<&str> = props
                            .map(|p| p.keys().map(String::as_str).collect())
                            .unwrap_or_default();
                        // Same wording as serde's, so the two passes deduplicate.
                        let msg = format!(
                            "unknown field `{}`, expected one of {}",
                            key.value,
                            expected.join(", ")
                        );
                        let mut d = Diagnostic::error(path, key.line, key.column, msg.clone());
                        if let Some(h) = hint_for_message(&msg) {
                            d = d.with_hint(h);
                        }
                        out.push(d);
                    }
                    None => {
                        if let Some(extra) =
                            schema.get("additionalProperties").filter(|v| v.is_object())
                        {
                            walk(path, value, extra, root, out);
                        }
                    }
                }
            }
        }
        Node::Seq(items) => {
            let item_schema = &schema["items"];
            if !item_schema.is_null() {
                for item in items {
                    walk(path, item, item_schema, root, out);
                }
            }
        }
        Node::Scalar => {}
    }
}
