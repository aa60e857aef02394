//! Label and field selectors on list and watch.
//!
//! Follows "Labels and Selectors", sections "Equality-based requirement" and
//! "Set-based requirement":
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors>
//! and "Field Selectors" (only `metadata.name` and `metadata.namespace` are
//! supported on every resource):
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/>.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::validate::{is_label_key, is_label_value};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Req {
    Eq(String, String),
    NotEq(String, String),
    In(String, BTreeSet<String>),
    NotIn(String, BTreeSet<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed label selector; all requirements must hold.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LabelSelector(Vec<Req>);

/// Splits at commas outside parentheses (`a in (x,y),b`).
fn split_top(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn key(k: &str) -> Result<String, String> {
    let k = k.trim();
    if is_label_key(k) {
        Ok(k.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label key \"{k}\""
        ))
    }
}

fn value(v: &str) -> Result<String, String> {
    let v = v.trim();
    if is_label_value(v) {
        Ok(v.to_string())
    } else {
        Err(format!(
            "unable to parse requirement: invalid label value: \"{v}\""
        ))
    }
}

fn set(rest: &str) -> Result<BTreeSet<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("unable to parse requirement: found '{rest}', expected: '('"))?;
    inner.split(',').map(value).collect()
}

impl LabelSelector {
    /// Parses the `labelSelector` query parameter; the error text becomes a 400.
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in split_top(s) {
            let p = part.trim();
            let req = if let Some(k) = p.strip_prefix('!') {
                Req::NotExists(key(k)?)
            } else if let Some((k, v)) = p.split_once("!=") {
                Req::NotEq(key(k)?, value(v)?)
            } else if let Some((k, v)) = p.split_once("==") {
                Req::Eq(key(k)?, value(v)?)
            } else if let Some((k, v)) = p.split_once('=') {
                Req::Eq(key(k)?, value(v)?)
            } else if let Some((k, rest)) = p.split_once(" notin ") {
                Req::NotIn(key(k)?, set(rest)?)
            } else if let Some((k, rest)) = p.split_once(" in ") {
                Req::In(key(k)?, set(rest)?)
            } else {
                Req::Exists(key(p)?)
            };
            reqs.push(req);
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        self.0.iter().all(|r| match r {
            Req::Eq(k, v) => get(k) == Some(v.as_str()),
            // `!=` and `notin` also match objects without the label, as documented.
            Req::NotEq(k, v) => get(k) != Some(v.as_str()),
            Req::In(k, vs) => get(k).is_some_and(|x| vs.contains(x)),
            Req::NotIn(k, vs) => get(k).is_none_or(|x| !vs.contains(x)),
            Req::Exists(k) => get(k).is_some(),
            Req::NotExists(k) => get(k).is_none(),
        })
    }
}

/// A parsed field selector over `metadata.name` / `metadata.namespace`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

impl FieldSelector {
    pub fn parse(s: &str) -> Result<Self, String> {
        let mut reqs = Vec::new();
        if s.trim().is_empty() {
            return Ok(Self(reqs));
        }
        for part in s.split(',') {
            let (k, eq, v) = if let Some((k, v)) = part.split_once("!=") {
                (k, false, v)
            } else if let Some((k, v)) = part.split_once("==") {
                (k, true, v)
            } else if let Some((k, v)) = part.split_once('=') {
                (k, true, v)
            } else {
                return Err(format!(
                    "invalid selector: '{s}'; can't understand '{part}'"
                ));
            };
            let k = k.trim();
            if k != "metadata.name" && k != "metadata.namespace" {
                return Err(format!("field label not supported: {k}"));
            }
            reqs.push((k.to_string(), eq, v.trim().to_string()));
        }
        Ok(Self(reqs))
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.0.iter().all(|(k, eq, v)| {
            let field = k.trim_start_matches("metadata.");
            let actual = obj["metadata"][field].as_str().unwrap_or("");
            (actual == v) == *eq
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn forms() {
        let l = json!({"app.kubernetes.io/managed-by": "mop", "mop.dev/tenant": "a"});
        let m = |s: &str| LabelSelector::parse(s).unwrap().matches(&l);
        assert!(m("app.kubernetes.io/managed-by=mop"));
        assert!(m("app.kubernetes.io/managed-by==mop,mop.dev/tenant"));
        assert!(m("mop.dev/tenant in (a,b)"));
        assert!(!m("mop.dev/tenant notin (a,b)"));
        assert!(m("mop.dev/tenant!=b"));
        assert!(m("!other"));
        assert!(!m("other"));
        assert!(m(""));
        assert!(LabelSelector::parse("bad key=x").is_err());
        assert!(FieldSelector::parse("spec.nodeName=x").is_err());
    }
}
