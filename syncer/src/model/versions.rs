//! `versions.yaml`: the exact versions of the agent and gateway that run.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{Duration, Loc};

/// `versions.yaml`, at the root of the config repository.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VersionsFile {
    /// The eBPF agent DaemonSet.
    pub agent: AgentVersion,
    /// The tenant-routing gateway Deployment.
    pub gateway: GatewayVersion,
}

/// The agent's image and how it rolls out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentVersion {
    /// Image repository without tag, e.g. `ghcr.io/example/mop-agent`.
    pub image: Loc<String>,
    /// Exact version (`1.4.2`, `v1.4.2`) or digest (`sha256:…`); never `latest`.
    pub version: Loc<String>,
    /// Rollout settings.
    #[serde(default)]
    pub rollout: AgentRollout,
}

/// How the agent DaemonSet rolls out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRollout {
    /// Nodes updated at once: a count (`1`) or a percentage (`10%`).
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: Loc<String>,
    /// How long the rollout may take to become healthy (every pod updated, ready
    /// and available) before the syncer rolls it back to the last healthy version.
    /// At least `1s`.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: Duration,
}

impl Default for AgentRollout {
    fn default() -> Self {
        Self {
            max_unavailable: default_max_unavailable(),
            health_timeout: default_health_timeout(),
        }
    }
}

fn default_max_unavailable() -> Loc<String> {
    Loc::new("1".into(), 0, 0)
}
fn default_health_timeout() -> Duration {
    Duration::from_secs(300)
}

/// The gateway's image, size and rollout. The gateway always rolls with
/// `maxUnavailable: 0` so ingestion never loses capacity during an update.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayVersion {
    /// Image repository without tag, e.g. `ghcr.io/example/mop-gateway`.
    pub image: Loc<String>,
    /// Exact version (`1.4.2`, `v1.4.2`) or digest (`sha256:…`); never `latest`.
    pub version: Loc<String>,
    /// Number of gateway replicas.
    #[serde(default = "default_replicas")]
    pub replicas: u32,
    /// Rollout settings.
    #[serde(default)]
    pub rollout: GatewayRollout,
}

fn default_replicas() -> u32 {
    2
}

/// How the gateway Deployment rolls out.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayRollout {
    /// Extra pods started during an update (count or percentage). At least one,
    /// since the gateway never takes a pod down before its replacement is ready.
    #[serde(default = "default_max_surge")]
    pub max_surge: Loc<String>,
    /// How long the rollout may take to become healthy (every pod updated, ready
    /// and available) before the syncer rolls it back to the last healthy version.
    /// At least `1s`.
    #[serde(default = "default_health_timeout")]
    pub health_timeout: Duration,
}

impl Default for GatewayRollout {
    fn default() -> Self {
        Self {
            max_surge: default_max_surge(),
            health_timeout: default_health_timeout(),
        }
    }
}

fn default_max_surge() -> Loc<String> {
    Loc::new("1".into(), 0, 0)
}

/// Why a version pin is not exact, or `None` when it is.
pub fn floating_pin_problem(version: &str) -> Option<String> {
    let v = version.trim();
    if v.is_empty() {
        return Some("the version is empty".into());
    }
    let lower = v.to_ascii_lowercase();
    if [
        "latest", "main", "master", "stable", "edge", "nightly", "dev", "head",
    ]
    .contains(&lower.as_str())
    {
        return Some(format!("`{v}` is a moving tag, not a version"));
    }
    if let Some(hex) = v.strip_prefix("sha256:") {
        return if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            None
        } else {
            Some("a sha256 digest has exactly 64 hex digits".into())
        };
    }
    // `1.2.3@sha256:…` pins both.
    let (tag, digest) = match v.split_once('@') {
        Some((t, d)) => (t, Some(d)),
        None => (v, None),
    };
    if let Some(d) = digest
        && let Some(p) = floating_pin_problem(d)
    {
        return Some(p);
    }
    let core = tag.strip_prefix('v').unwrap_or(tag);
    let core = core.split(['-', '+']).next().unwrap_or(core);
    let parts: Vec<&str> = core.split('.').collect();
    if parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
    {
        None
    } else {
        Some(format!(
            "`{v}` is not an exact version: a partial version or range picks up whatever is newest"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::floating_pin_problem as p;

    #[test]
    fn exact_pins_pass_and_floating_ones_fail() {
        for ok in [
            "1.2.3",
            "v0.14.0",
            "1.2.3-rc.1",
            "1.2.3+build.5",
            &format!("sha256:{}", "a".repeat(64)),
            &format!("1.2.3@sha256:{}", "0".repeat(64)),
        ] {
            assert_eq!(p(ok), None, "{ok}");
        }
        for bad in [
            "",
            "latest",
            "main",
            "MASTER",
            "1",
            "1.2",
            "1.x",
            "^1.2.3",
            "sha256:abc",
            "1.2.3@sha256:zz",
        ] {
            assert!(p(bad).is_some(), "{bad:?} should float");
        }
    }
}
