//! `tenants/<tenant>/tenant.yaml`: who the tenant is, what it owns, who may see it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc, SecretRef};

/// `tenants/<tenant>/tenant.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantFile {
    /// Tenant id, sent to Mimir, Loki, Tempo and Pyroscope as `X-Scope-OrgID`.
    /// 1-150 characters of `A-Z a-z 0-9 ! - _ . * ' ( )`. Changing it orphans the
    /// tenant's stored data, so treat it as permanent.
    pub id: Loc<String>,
    /// Human-readable name; also the Grafana organisation name unless
    /// `grafana.org` says otherwise.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Kubernetes namespaces this tenant owns: exact names, or patterns with `*`
    /// and `?`. Telemetry from these namespaces is stored under this tenant.
    pub namespaces: Vec<Loc<String>>,
    /// The tenant's Grafana organisation.
    #[serde(default)]
    pub grafana: TenantGrafana,
    /// How applications of this tenant authenticate to the gateway when they send
    /// OTLP directly (not through the node agent).
    #[serde(default)]
    pub ingest: Ingest,
    /// Per-signal limits and retention; unset fields take `defaults` from `mop.yaml`.
    #[serde(default)]
    pub limits: Limits,
    /// Labels a cluster's `tenants.labels` selector matches
    /// (`clusters/<name>.yaml`), e.g. `tier: prod-only`.
    #[serde(default)]
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The tenant's Grafana organisation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantGrafana {
    /// Organisation name; defaults to `display_name`, then to the tenant id.
    #[serde(default)]
    pub org: Option<Loc<String>>,
    /// Users and their organisation role.
    #[serde(default)]
    pub members: Vec<Member>,
    /// Teams inside the organisation.
    #[serde(default)]
    pub teams: Vec<Team>,
}

/// A Grafana user's membership in the tenant's organisation.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// Login or e-mail of an existing Grafana user (SSO creates users on first login).
    pub user: Loc<String>,
    /// Organisation role.
    pub role: Role,
}

/// Grafana organisation role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Role {
    Viewer,
    Editor,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "Viewer",
            Role::Editor => "Editor",
            Role::Admin => "Admin",
        }
    }
}

/// A Grafana team.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Team {
    /// Team name, unique in the organisation.
    pub name: Loc<String>,
    /// Team e-mail (optional).
    #[serde(default)]
    pub email: Option<String>,
    /// Logins or e-mails of the members; each must also be listed in `members`.
    #[serde(default)]
    pub members: Vec<Loc<String>>,
}

/// Gateway authentication for applications that send OTLP directly.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Ingest {
    /// Bearer tokens accepted for this tenant, each a reference to a Kubernetes
    /// Secret key (mounted into the gateway) or a file.
    #[serde(default)]
    pub tokens: Vec<SecretRef>,
}

/// Per-signal limits and retention.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Metrics (Mimir).
    #[serde(default)]
    pub metrics: MetricLimits,
    /// Logs (Loki).
    #[serde(default)]
    pub logs: LogLimits,
    /// Traces (Tempo).
    #[serde(default)]
    pub traces: TraceLimits,
    /// Profiles (Pyroscope).
    #[serde(default)]
    pub profiles: ProfileLimits,
}

/// Mimir limits (names as in Mimir's `limits` block).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct MetricLimits {
    /// Samples per second accepted (`ingestion_rate`).
    #[serde(default)]
    pub ingestion_rate: Option<u64>,
    /// Burst of samples accepted (`ingestion_burst_size`).
    #[serde(default)]
    pub ingestion_burst_size: Option<u64>,
    /// Active series across the cluster (`max_global_series_per_user`).
    #[serde(default)]
    pub max_global_series_per_user: Option<u64>,
    /// How long blocks are kept (`compactor_blocks_retention_period`).
    #[serde(default)]
    pub retention: Option<Duration>,
    /// Rule groups the tenant may have in Mimir's ruler
    /// (`ruler_max_rule_groups_per_tenant`; 0: no limit). Defaults to Mimir's
    /// default, 70. MOP renders the value into Mimir's runtime overrides and
    /// `mop validate` refuses a tenant with more metric rule groups.
    #[serde(default)]
    pub max_rule_groups: Option<u64>,
    /// Rules one rule group may have in Mimir's ruler
    /// (`ruler_max_rules_per_rule_group`; 0: no limit). Defaults to Mimir's
    /// default, 20. MOP renders the value into Mimir's runtime overrides and
    /// `mop validate` refuses a metric rule group with more rules.
    #[serde(default)]
    pub max_rules_per_group: Option<u64>,
}

/// Mimir's default `ruler_max_rule_groups_per_tenant`
/// (grafana/mimir `pkg/util/validation/limits.go`, flag
/// `-ruler.max-rule-groups-per-tenant`).
pub const MIMIR_MAX_RULE_GROUPS_PER_TENANT: u64 = 70;
/// Mimir's default `ruler_max_rules_per_rule_group`
/// (grafana/mimir `pkg/util/validation/limits.go`, flag
/// `-ruler.max-rules-per-rule-group`).
pub const MIMIR_MAX_RULES_PER_RULE_GROUP: u64 = 20;

impl MetricLimits {
    /// The ruler limits in force for a tenant: its own, else the platform
    /// default from `mop.yaml`, else Mimir's default. Returns
    /// (rule groups per tenant, rules per group); 0 means no limit.
    pub fn ruler_limits(&self, defaults: &MetricLimits) -> (u64, u64) {
        (
            self.max_rule_groups
                .or(defaults.max_rule_groups)
                .unwrap_or(MIMIR_MAX_RULE_GROUPS_PER_TENANT),
            self.max_rules_per_group
                .or(defaults.max_rules_per_group)
                .unwrap_or(MIMIR_MAX_RULES_PER_RULE_GROUP),
        )
    }
}

/// Loki limits (names as in Loki's `limits_config`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct LogLimits {
    /// Ingestion rate in MB/s (`ingestion_rate_mb`).
    #[serde(default)]
    pub ingestion_rate_mb: Option<f64>,
    /// Ingestion burst in MB (`ingestion_burst_size_mb`).
    #[serde(default)]
    pub ingestion_burst_size_mb: Option<f64>,
    /// Active streams across the cluster (`max_global_streams_per_user`).
    #[serde(default)]
    pub max_global_streams_per_user: Option<u64>,
    /// How long logs are kept (`retention_period`).
    #[serde(default)]
    pub retention: Option<Duration>,
}

/// Tempo limits (names as in Tempo's per-tenant overrides).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TraceLimits {
    /// Bytes per second accepted (`ingestion.rate_limit_bytes`).
    #[serde(default)]
    pub rate_limit_bytes: Option<u64>,
    /// Burst in bytes (`ingestion.burst_size_bytes`).
    #[serde(default)]
    pub burst_size_bytes: Option<u64>,
    /// Live traces per ingester (`ingestion.max_traces_per_user`).
    #[serde(default)]
    pub max_traces_per_user: Option<u64>,
    /// How long traces are kept (`compaction.block_retention`).
    #[serde(default)]
    pub retention: Option<Duration>,
}

/// Pyroscope limits (names as in Pyroscope's `limits`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileLimits {
    /// Ingestion rate in MB/s (`ingestion_rate_mb`).
    #[serde(default)]
    pub ingestion_rate_mb: Option<f64>,
    /// Ingestion burst in MB (`ingestion_burst_size_mb`).
    #[serde(default)]
    pub ingestion_burst_size_mb: Option<f64>,
    /// How long profiles are kept (`compactor_blocks_retention_period`).
    #[serde(default)]
    pub retention: Option<Duration>,
}
