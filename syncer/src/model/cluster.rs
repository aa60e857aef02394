//! `clusters/<name>.yaml`: one cluster of a repository that serves several
//! (dev, staging, prod). A repository without `clusters/` is one cluster, the one
//! `mop.yaml` describes.
//!
//! `mop.yaml` holds the shared defaults; a cluster file names its environment,
//! the tenants it serves, its version pins, and replaces whole top-level sections
//! of `mop.yaml` (`grafana`, `backends`, `sync`, …) where the cluster differs.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::Loc;
use super::platform::{AgentSettings, Backends, GatewaySettings, GrafanaEndpoint, SyncPolicy};
use super::tenant::Limits;

/// `clusters/<name>.yaml`: one cluster the repository serves. The file name
/// (without `.yaml`) is the cluster's key: what `mop render --cluster`,
/// `mop serve --cluster` and `promote_after` name. Every section besides
/// `environment`, `promote_after`, `tenants` and `versions` replaces the section
/// of the same name in `mop.yaml` as a whole (not field by field); a section left
/// out is taken from `mop.yaml`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ClusterFile {
    /// Name of the cluster as MOP records it; defaults to the file name.
    #[serde(default)]
    pub cluster: Option<Loc<String>>,
    /// The environment this cluster belongs to (`dev`, `staging`, `prod`, …): a
    /// label for people and the stage `promote_after` may name.
    pub environment: Loc<String>,
    /// The stage before this one: a cluster key or an environment. `mop validate`
    /// refuses an agent or gateway version here that is newer than what every
    /// cluster of that stage runs, so a version reaches this cluster only after
    /// the earlier stage.
    #[serde(default)]
    pub promote_after: Option<Loc<String>>,
    /// Which tenants this cluster serves; all when left out.
    #[serde(default)]
    pub tenants: Option<Loc<TenantSelector>>,
    /// Versions that override `versions.yaml` on this cluster (image and rollout
    /// settings stay as `versions.yaml` says).
    #[serde(default)]
    pub versions: VersionPins,
    /// Replaces `namespace` of `mop.yaml`.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Replaces `sync` of `mop.yaml`.
    #[serde(default)]
    pub sync: Option<SyncPolicy>,
    /// Replaces `grafana` of `mop.yaml`.
    #[serde(default)]
    pub grafana: Option<GrafanaEndpoint>,
    /// Replaces `backends` of `mop.yaml`.
    #[serde(default)]
    pub backends: Option<Backends>,
    /// Replaces `gateway` of `mop.yaml`.
    #[serde(default)]
    pub gateway: Option<GatewaySettings>,
    /// Replaces `agent` of `mop.yaml` (what the node agent captures).
    #[serde(default)]
    pub agent: Option<AgentSettings>,
    /// Replaces `defaults` of `mop.yaml` (tenant limits).
    #[serde(default)]
    pub defaults: Option<Limits>,
}

/// The tenants a cluster serves: those listed in `names`, and those whose
/// `labels` (in `tenant.yaml`) include every label of `labels`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSelector {
    /// Tenant directory names under `tenants/`.
    #[serde(default)]
    pub names: Vec<Loc<String>>,
    /// A label selector (like Kubernetes' `matchLabels`): a tenant carrying every
    /// one of these labels is served.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Version pins of one cluster.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionPins {
    /// The agent's version here (`1.4.2`, `v1.4.2`, `sha256:…`), instead of
    /// `agent.version` of `versions.yaml`.
    #[serde(default)]
    pub agent: Option<Loc<String>>,
    /// The gateway's version here, instead of `gateway.version` of `versions.yaml`.
    #[serde(default)]
    pub gateway: Option<Loc<String>>,
}
