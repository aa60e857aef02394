//! `tenants/<tenant>/rules/{metrics,logs}/*.yaml`: Prometheus rule groups, exactly the
//! format `promtool check rules`, `mimirtool` and Loki's ruler read.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc};

/// A rule file: a list of rule groups. The file is one ruler namespace (named
/// after the file), as a `promtool check rules` file is one rule file.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// The rule groups. An empty file, `groups:` with no value and `groups: []`
    /// all mean no groups, as Prometheus reads them.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schemars(with = "Option<Vec<RuleGroup>>")]
    pub groups: Vec<RuleGroup>,
}

/// `key:` with no value is YAML null; Prometheus' rulefmt reads it as an empty
/// list, and so does MOP (then says what an empty list means).
fn null_as_empty<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// A rule group: rules evaluated together at one interval.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    /// Group name, unique within the file: the file is the group's ruler
    /// namespace, and Mimir and Loki key groups by (namespace, name), so files
    /// may share group names.
    pub name: Loc<String>,
    /// Evaluation interval; the ruler's default when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Evaluate this far in the past, to let late samples arrive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_offset: Option<Duration>,
    /// Most alerts or series a rule of the group may produce (0 or less: no
    /// limit, as in Prometheus).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    /// Labels added to every rule of the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Loc<String>>>,
    /// The rules. A group with no rules (`rules: []` or `rules:` with no value)
    /// is not sent to the ruler (Mimir refuses it) and validation warns.
    #[serde(default, deserialize_with = "null_as_empty")]
    #[schemars(with = "Option<Vec<Rule>>")]
    pub rules: Vec<Rule>,
}

/// An alerting rule (`alert`) or a recording rule (`record`).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Name of the series a recording rule writes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<Loc<String>>,
    /// Name of the alert an alerting rule fires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alert: Option<Loc<String>>,
    /// PromQL (metrics rules) or LogQL (logs rules) expression.
    pub expr: Loc<String>,
    /// How long the condition must hold before the alert fires.
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<Duration>,
    /// How long an alert keeps firing after its condition cleared.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<Duration>,
    /// Labels added to the alert or series. In alerting rules, values are Go
    /// templates (`{{ $labels.instance }}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, Loc<String>>>,
    /// Annotations of the alert (alerting rules only); values are Go templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, Loc<String>>>,
}
