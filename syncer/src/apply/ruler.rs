//! The Mimir and Loki rulers' rule-configuration APIs: one [`RulerApplier`] per
//! ruler, rule groups per tenant by `X-Scope-OrgID`.
//!
//! Follows <https://grafana.com/docs/mimir/latest/references/http-api/#ruler>
//! (`GET /prometheus/config/v1/rules`, `POST …/{namespace}` with one bare group as
//! YAML answered by 202, `DELETE …/{namespace}/{group}`) and
//! <https://grafana.com/docs/loki/latest/reference/loki-http-api/#ruler>, the same
//! operations under `/loki/api/v1/rules`.
//!
//! Every rule group of a tenant MOP manages is MOP's: the tenant's rules live only
//! in its repository directory, so there is no ownership marker to read.

use std::sync::Arc;

use futures::StreamExt;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, StatusCode};
use serde_json::{Map, Value};

use super::http::{Client, RetryPolicy, check};
use super::{Applier, ApplyError, ObserveFailure, Observed, Scope, TenantRef};
use crate::model::common::Duration;
use crate::plan::{Action, Change};
use crate::render::{Desired, Kind, Resource, ResourceId, Target};

/// Tenants read at once: enough to hide latency with many tenants, few enough not
/// to look like a flood to the ruler.
const READ_CONCURRENCY: usize = 8;

/// RFC 3986 unreserved characters stay; everything else in a path segment is
/// %-encoded, so `/`, `%`, spaces or `?` in a group name cannot change the path.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Group and rule fields holding durations, which the ruler re-formats.
const GROUP_DURATIONS: [&str; 3] = ["interval", "query_offset", "evaluation_delay"];
const RULE_DURATIONS: [&str; 2] = ["for", "keep_firing_for"];
/// Fields whose values are strings; YAML may hand them back as numbers or booleans
/// (`severity: 1`) when another tool wrote them unquoted.
const GROUP_STRINGS: [&str; 1] = ["name"];
const RULE_STRINGS: [&str; 3] = ["record", "alert", "expr"];
const STRING_MAPS: [&str; 2] = ["labels", "annotations"];

/// The rule-configuration API of one ruler (Mimir's or Loki's).
pub struct RulerApplier {
    target: Target,
    client: Client,
    prefix: &'static str,
}

impl RulerApplier {
    /// `target` is [`Target::MimirRuler`] or [`Target::LokiRuler`]; `base` the
    /// ruler's URL (`backends.mimir.url` / `backends.loki.url` of `mop.yaml`).
    pub fn new(target: Target, base: &str, retry: RetryPolicy) -> Result<Self, ApplyError> {
        let prefix = match target {
            Target::MimirRuler => "/prometheus/config/v1/rules",
            Target::LokiRuler => "/loki/api/v1/rules",
            other => {
                return Err(ApplyError::new(format!(
                    "a ruler applier cannot apply to {other}"
                )));
            }
        };
        Ok(Self {
            target,
            client: Client::new(base, retry)?,
            prefix,
        })
    }

    /// One tenant's rule groups, or why they could not be read.
    async fn read_tenant(&self, t: &TenantRef) -> Result<Vec<Resource>, String> {
        let req = self
            .client
            .request(Method::GET, self.prefix)
            .header("X-Scope-OrgID", &t.id);
        let resp = self.client.send(req).await.map_err(|e| e.message)?;
        if resp.status() == StatusCode::NOT_FOUND {
            // The ruler's answer for a tenant without rules; any other 404 (a
            // wrong URL, the ruler API not enabled) is a failed read.
            let body = resp.text().await.unwrap_or_default();
            if body.trim() == "no rule groups found" {
                return Ok(Vec::new());
            }
            return Err(format!(
                "GET {}: HTTP 404: {}",
                self.prefix,
                body.trim().chars().take(200).collect::<String>()
            ));
        }
        let resp = check(resp).await.map_err(|e| e.message)?;
        let text = resp
            .text()
            .await
            .map_err(|e| format!("GET {}: reading the answer: {e}", self.prefix))?;
        let namespaces: std::collections::BTreeMap<String, Vec<Value>> =
            serde_saphyr::from_str(&text).map_err(|e| {
                format!(
                    "GET {}: the ruler's answer is not a map of namespaces to rule groups: {e}",
                    self.prefix
                )
            })?;
        let mut out = Vec::new();
        for (ns, groups) in namespaces {
            for g in groups {
                let g = normalise_group(g);
                let name = g
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                out.push(Resource {
                    id: ResourceId {
                        target: self.target,
                        tenant: Some(t.key.clone()),
                        kind: Kind::RuleGroup,
                        name: format!("{ns}/{name}"),
                    },
                    title: None,
                    body: Arc::from(g.to_string()),
                });
            }
        }
        Ok(out)
    }

    fn tenant<'a>(&self, scope: &'a Scope, id: &ResourceId) -> Result<&'a TenantRef, ApplyError> {
        id.tenant
            .as_deref()
            .and_then(|k| scope.tenant(k))
            .ok_or_else(|| ApplyError::new(format!("{id}: no tenant in scope for this rule group")))
    }

    fn path(&self, parts: &[&str]) -> String {
        let mut p = self.prefix.to_string();
        for s in parts {
            p.push('/');
            p.extend(utf8_percent_encode(s, SEGMENT));
        }
        p
    }
}

/// Splits a resource name `namespace/group` using the group's own name, so a `/`
/// inside the group name cannot move the split.
fn namespace_of<'a>(id: &'a ResourceId, group: &str) -> Result<&'a str, ApplyError> {
    id.name
        .strip_suffix(group)
        .and_then(|ns| ns.strip_suffix('/'))
        .filter(|ns| !ns.is_empty())
        .ok_or_else(|| {
            ApplyError::new(format!(
                "{id}: the name is not `namespace/{group}` for rule group {group:?}"
            ))
        })
}

fn group_name(r: &Resource) -> Result<(Value, String), ApplyError> {
    let v: Value = serde_json::from_str(&r.body)
        .map_err(|e| ApplyError::new(format!("{}: body is not JSON: {e}", r.id)))?;
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or_else(|| ApplyError::new(format!("{}: rule group without a name", r.id)))?;
    Ok((v, name))
}

#[async_trait::async_trait]
impl Applier for RulerApplier {
    fn target(&self) -> Target {
        self.target
    }

    async fn observe(&self, scope: &Scope, _desired: &Desired) -> Observed {
        let tenants: Vec<TenantRef> = scope.tenants.values().cloned().collect();
        let reads = futures::stream::iter(tenants)
            .map(|t| async move {
                let read = self.read_tenant(&t).await;
                (t, read)
            })
            .buffered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        let mut observed = Observed::default();
        for (t, read) in reads {
            match read {
                Ok(groups) => {
                    for g in groups {
                        observed.live.insert(g.id.clone(), g);
                    }
                }
                Err(error) => observed.failures.push(ObserveFailure {
                    tenant: Some(t.key.clone()),
                    error,
                }),
            }
        }
        observed
    }

    fn canonical(&self, desired: &Resource) -> Resource {
        match serde_json::from_str::<Value>(&desired.body) {
            Ok(v) => Resource {
                body: Arc::from(normalise_group(v).to_string()),
                ..desired.clone()
            },
            Err(_) => desired.clone(),
        }
    }

    async fn apply(
        &self,
        scope: &Scope,
        change: &Change,
        desired: Option<&Resource>,
        live: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = self.tenant(scope, &change.id)?;
        match change.action {
            Action::Create | Action::Update => {
                let desired = desired.ok_or_else(|| {
                    ApplyError::new(format!("{}: no desired rule group", change.id))
                })?;
                let (group, name) = group_name(desired)?;
                let ns = namespace_of(&change.id, &name)?;
                let yaml = serde_saphyr::to_string(&group).map_err(|e| {
                    ApplyError::new(format!("{}: cannot write YAML: {e}", change.id))
                })?;
                let req = self
                    .client
                    .request(Method::POST, &self.path(&[ns]))
                    .header("X-Scope-OrgID", &tenant.id)
                    .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                    .body(yaml);
                check(self.client.send(req).await?).await?;
                Ok(())
            }
            Action::Delete => {
                let live = live.ok_or_else(|| {
                    ApplyError::new(format!("{}: no live rule group to delete", change.id))
                })?;
                let (_, name) = group_name(live)?;
                let ns = namespace_of(&change.id, &name)?;
                let req = self
                    .client
                    .request(Method::DELETE, &self.path(&[ns, &name]))
                    .header("X-Scope-OrgID", &tenant.id);
                check(self.client.send(req).await?).await?;
                Ok(())
            }
        }
    }
}

/// The one form both sides are compared in: durations parsed and re-formatted
/// (`300s` and `5m` are the same), and what the ruler omits when empty or zero
/// (`limit: 0`, empty label maps, zero durations) left out on both sides.
fn normalise_group(v: Value) -> Value {
    let Value::Object(mut g) = v else {
        return v;
    };
    normalise_fields(&mut g, &GROUP_DURATIONS, &GROUP_STRINGS);
    if let Some(Value::Array(rules)) = g.get_mut("rules") {
        for r in rules.iter_mut() {
            if let Value::Object(r) = r {
                normalise_fields(r, &RULE_DURATIONS, &RULE_STRINGS);
            }
        }
    }
    Value::Object(g)
}

fn normalise_fields(m: &mut Map<String, Value>, durations: &[&str], strings: &[&str]) {
    for k in durations {
        if let Some(Value::String(s)) = m.get(*k) {
            match parse_duration(s) {
                Some(0) => {
                    m.remove(*k);
                }
                Some(ms) => {
                    m.insert(
                        (*k).to_string(),
                        Value::String(Duration { millis: ms }.to_prometheus()),
                    );
                }
                // Not a duration: keep it, so the difference shows and is overwritten.
                None => {}
            }
        }
    }
    for k in strings {
        if let Some(v) = m.get_mut(*k) {
            stringify(v);
        }
    }
    for k in STRING_MAPS {
        if let Some(Value::Object(labels)) = m.get_mut(k) {
            labels.values_mut().for_each(stringify);
        }
    }
    m.retain(|k, v| k == "rules" || !is_empty(v));
}

/// Prometheus' `model.ParseDuration`, which also takes a bare `0`.
fn parse_duration(s: &str) -> Option<u64> {
    if s == "0" {
        return Some(0);
    }
    Duration::parse(s).ok().map(|d| d.millis)
}

fn stringify(v: &mut Value) {
    match v {
        Value::Number(n) => *v = Value::String(n.to_string()),
        Value::Bool(b) => *v = Value::String(b.to_string()),
        _ => {}
    }
}

/// What Go's `omitempty` leaves out of the ruler's YAML.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn durations_and_omitted_fields_normalise_to_one_form() {
        let rendered = json!({
            "name": "g", "interval": "300s", "limit": 0, "labels": {},
            "rules": [{"alert": "A", "expr": "up == 0", "for": "90m", "keep_firing_for": "0s",
                       "labels": {"severity": 1}}]
        });
        let returned = json!({
            "name": "g", "interval": "5m",
            "rules": [{"alert": "A", "expr": "up == 0", "for": "1h30m", "labels": {"severity": "1"}}]
        });
        assert_eq!(normalise_group(rendered), normalise_group(returned));
    }

    #[test]
    fn a_changed_value_stays_a_difference() {
        let a = json!({"name": "g", "interval": "1m", "rules": [{"record": "r", "expr": "up"}]});
        let b = json!({"name": "g", "interval": "2m", "rules": [{"record": "r", "expr": "up"}]});
        assert_ne!(normalise_group(a), normalise_group(b));
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        let a = RulerApplier::new(Target::MimirRuler, "http://ruler", RetryPolicy::default())
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            a.path(&["slo", "a/b c%"]),
            "/prometheus/config/v1/rules/slo/a%2Fb%20c%25"
        );
    }

    #[test]
    fn namespace_split_uses_the_group_name() {
        let id = ResourceId {
            target: Target::LokiRuler,
            tenant: Some("t".into()),
            kind: Kind::RuleGroup,
            name: "errors/5xx/min".into(),
        };
        assert_eq!(namespace_of(&id, "5xx/min").ok(), Some("errors"));
        assert!(namespace_of(&id, "other").is_err());
    }
}
