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

/// One tail-sampling policy, chosen by `type`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// Keep traces where any span has status ERROR.
    Errors {
        /// Policy name, reported in the gateway's metrics.
        name: Loc<String>,
    },
    /// Keep traces that last at least `threshold`.
    Latency {
        /// Policy name, reported in the gateway's metrics.
        name: Loc<String>,
        /// Minimum trace duration.
        threshold: Duration,
    },
    /// Keep a share of traces, decided from the trace id (every replica agrees).
    Probabilistic {
        /// Policy name, reported in the gateway's metrics.
        name: Loc<String>,
        /// Share to keep, in percent (0 to 100).
        percentage: Loc<f64>,
    },
    /// Keep traces where a span or resource attribute has one of `values`
    /// (any value when `values` is empty).
    Attribute {
        /// Policy name, reported in the gateway's metrics.
        name: Loc<String>,
        /// Attribute key, e.g. `http.route`.
        key: String,
        /// Accepted values, compared as strings.
        #[serde(default)]
        values: Vec<String>,
    },
    /// Keep every trace.
    Always {
        /// Policy name, reported in the gateway's metrics.
        name: Loc<String>,
    },
}

impl PolicySpec {
    pub fn name(&self) -> &Loc<String> {
        match self {
            PolicySpec::Errors { name }
            | PolicySpec::Latency { name, .. }
            | PolicySpec::Probabilistic { name, .. }
            | PolicySpec::Attribute { name, .. }
            | PolicySpec::Always { name } => name,
        }
    }
}

/// Policy kinds, for "did you mean" hints.
pub const POLICY_KINDS: &[&str] = &["errors", "latency", "probabilistic", "attribute", "always"];
