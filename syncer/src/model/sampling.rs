//! `tenants/<tenant>/sampling.yaml`: tail-sampling policies for the tenant's traces.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc};

/// `tenants/<tenant>/sampling.yaml`. A trace is kept when any policy keeps it.
/// Without this file the tenant keeps every trace.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SamplingFile {
    /// How long the gateway waits after a trace's last span before deciding.
    #[serde(default = "default_decision_wait")]
    pub decision_wait: Duration,
    /// Most traces held in memory at once for this tenant, per gateway replica.
    #[serde(default = "default_max_traces")]
    pub max_traces: u64,
    /// Upper bound on kept spans per second for the tenant, per gateway replica.
    #[serde(default)]
    pub max_spans_per_second: Option<u64>,
    /// Policies for every trace.
    pub policies: Vec<PolicySpec>,
    /// Policies that replace `policies` for traces whose root service is the key.
    #[serde(default)]
    pub services: BTreeMap<String, Vec<PolicySpec>>,
}

fn default_decision_wait() -> Duration {
    Duration::from_secs(10)
}
fn default_max_traces() -> u64 {
    50_000
}

/// One tail-sampling policy. `type` chooses what it keeps; the other fields belong
/// to particular types, as noted on each.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PolicySpec {
    /// Policy name, reported in the gateway's metrics (`policy` label).
    pub name: Loc<String>,
    /// What the policy keeps: `errors` (any span with status ERROR), `latency`
    /// (traces lasting at least `threshold`), `probabilistic` (`percentage` of
    /// traces, decided from the trace id so every replica agrees), `attribute`
    /// (a span or resource attribute `key` with one of `values`), `always`.
    #[serde(rename = "type")]
    pub kind: Loc<PolicyKind>,
    /// `latency` only: minimum trace duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold: Option<Duration>,
    /// `probabilistic` only: share to keep, in percent (0 to 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub percentage: Option<Loc<f64>>,
    /// `attribute` only: attribute key, e.g. `http.route`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// `attribute` only: accepted values, compared as strings; empty or unset
    /// matches any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub values: Option<Vec<String>>,
}

/// Kinds of sampling policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    Errors,
    Latency,
    Probabilistic,
    Attribute,
    Always,
}

impl PolicySpec {
    pub fn name(&self) -> &Loc<String> {
        &self.name
    }
}
