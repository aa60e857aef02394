//! `mop.yaml`: the platform itself: cluster, namespaces, backend endpoints, sync policy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc, SecretRef};
use super::tenant::Limits;

/// `mop.yaml`, at the root of the config repository.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformFile {
    /// Name of the cluster. Required when the repository has no `clusters/`
    /// directory; with one, each `clusters/<name>.yaml` names its cluster.
    #[serde(default)]
    pub cluster: String,
    /// Namespace where MOP's own workloads (gateway, agent) and ConfigMaps live.
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// How the syncer reconciles.
    #[serde(default)]
    pub sync: SyncPolicy,
    /// Grafana, where each tenant gets an organisation.
    pub grafana: GrafanaEndpoint,
    /// The storage backends.
    pub backends: Backends,
    /// The tenant-routing gateway.
    #[serde(default)]
    pub gateway: GatewaySettings,
    /// What the node agent instruments.
    #[serde(default)]
    pub agent: AgentSettings,
    /// Limits for every tenant that does not set its own (per field).
    #[serde(default)]
    pub defaults: Limits,
}

/// What the eBPF node agent instruments on every node.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentSettings {
    /// Processes listening on one of these TCP ports are captured.
    #[serde(default = "default_agent_ports")]
    pub ports: Vec<u16>,
    /// Processes whose executable has one of these file names (or full paths) are
    /// captured.
    #[serde(default)]
    pub executables: Vec<String>,
    /// Bytes of each message copied from the kernel for parsing (1 to 4096): more
    /// sees longer headers and costs more per system call.
    #[serde(default = "default_capture_bytes")]
    pub capture_bytes: u32,
}

impl Default for AgentSettings {
    fn default() -> Self {
        Self {
            ports: default_agent_ports(),
            executables: Vec::new(),
            capture_bytes: default_capture_bytes(),
        }
    }
}

fn default_agent_ports() -> Vec<u16> {
    vec![80, 443, 3000, 5432, 6379, 8000, 8080, 9090]
}
fn default_capture_bytes() -> u32 {
    1024
}

fn default_namespace() -> String {
    "mop-system".into()
}

/// How the syncer reconciles.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SyncPolicy {
    /// How often the syncer polls the repository (a webhook triggers sooner).
    #[serde(default = "default_interval")]
    pub interval: Duration,
    /// Delete objects MOP owns that the repository no longer holds.
    #[serde(default = "yes")]
    pub prune: bool,
    /// What to do when a live object differs from the repository.
    #[serde(default)]
    pub drift: DriftPolicy,
    /// Refuse to prune more than this percentage of MOP-owned objects of one target
    /// in one sync, unless forced (`--allow-mass-prune`).
    #[serde(default = "default_max_prune")]
    pub max_prune_percent: f64,
}

impl Default for SyncPolicy {
    fn default() -> Self {
        Self {
            interval: default_interval(),
            prune: true,
            drift: DriftPolicy::default(),
            max_prune_percent: default_max_prune(),
        }
    }
}

fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_max_prune() -> f64 {
    30.0
}
fn yes() -> bool {
    true
}

/// What the syncer does about drift.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DriftPolicy {
    /// Report drift (metrics, events, `/drift`) and leave the live object alone.
    #[default]
    Report,
    /// Report drift and put the live object back to what the repository says.
    Heal,
}

/// Grafana's address and server-admin credentials (org and user management need a
/// server admin over basic auth; service-account tokens cannot do it).
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GrafanaEndpoint {
    /// Base URL, e.g. `http://grafana.monitoring.svc:3000`.
    pub url: Loc<String>,
    /// Server-admin user name.
    #[serde(default = "default_admin")]
    pub admin_user: String,
    /// Server-admin password, by reference only.
    pub admin_password: SecretRef,
    /// Name of the platform organisation whose datasources see every tenant.
    #[serde(default = "default_platform_org")]
    pub platform_org: String,
}

fn default_admin() -> String {
    "admin".into()
}
fn default_platform_org() -> String {
    "Platform".into()
}

/// The LGTM+P backends MOP configures.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backends {
    /// Mimir: metrics and the metrics ruler.
    pub mimir: Backend,
    /// Loki: logs and the logs ruler.
    pub loki: Backend,
    /// Tempo: traces.
    pub tempo: Backend,
    /// Pyroscope: profiles (optional).
    #[serde(default)]
    pub pyroscope: Option<Backend>,
}

/// One backend.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Backend {
    /// Base URL used by Grafana datasources and, for Mimir and Loki, the ruler API.
    pub url: Loc<String>,
    /// URL the gateway sends data to, when it differs from `url`: Tempo's OTLP/HTTP
    /// traces URL (`…:4318/v1/traces`), Mimir's remote-write `…/api/v1/push`, Loki's
    /// `…/loki/api/v1/push`.
    #[serde(default)]
    pub push_url: Option<Loc<String>>,
    /// The ConfigMap holding this backend's runtime `overrides:` file, which MOP
    /// renders for every tenant.
    pub overrides: ConfigMapKey,
}

/// A key of a ConfigMap.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigMapKey {
    /// Namespace of the ConfigMap.
    pub namespace: String,
    /// Name of the ConfigMap.
    pub name: String,
    /// Key (file name) inside the ConfigMap.
    #[serde(default = "default_overrides_key")]
    pub key: String,
}

fn default_overrides_key() -> String {
    "overrides.yaml".into()
}

/// Gateway routing settings that are not per tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewaySettings {
    /// Tenant id that receives data from namespaces no tenant owns. Unset: such data is rejected with an error to the sender.
    #[serde(default)]
    pub default_tenant: Option<Loc<String>>,
    /// Trace-complete tail sampling across gateway replicas: the replicas form a
    /// consistent-hash ring by trace id (members from the EndpointSlices of a
    /// headless Service) and forward each span to its trace's owner before
    /// sampling, so a kept trace is complete even when its spans reached different
    /// replicas. Off: each replica samples the fragments it received.
    #[serde(default)]
    pub ring: RingSettings,
}

/// The gateway ring (`gateway.ring` in `mop.yaml`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RingSettings {
    /// Forward spans to their trace's owner replica before tail sampling.
    #[serde(default)]
    pub enabled: bool,
    /// Name of the headless Service the syncer renders for the ring (default
    /// `mop-gateway-peers`); its EndpointSlices tell each replica which peers are
    /// Ready.
    #[serde(default)]
    pub service: Option<Loc<String>>,
}

impl RingSettings {
    pub const DEFAULT_SERVICE: &'static str = "mop-gateway-peers";

    pub fn service_name(&self) -> &str {
        self.service
            .as_ref()
            .map_or(Self::DEFAULT_SERVICE, |s| s.value.as_str())
    }
}
