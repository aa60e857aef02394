//! The gateway's routing and sampling configuration.
//!
//! This crate is the contract between the syncer, which renders this file from the
//! config repository (`tenants/*/tenant.yaml` and `tenants/*/sampling.yaml`), and the
//! gateway, which reads it from a mounted ConfigMap and hot-reloads it. It is
//! machine-written: durations are plain milliseconds and every field is explicit, so
//! the gateway never has to guess a default the syncer meant differently.
//!
//! It depends on serde and schemars only, so the syncer can use it without pulling in
//! the gateway's network stack.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Current format version. The gateway refuses a file with another version rather
/// than guessing what a newer syncer meant.
pub const FORMAT_VERSION: u32 = 1;

/// Name of the file inside the gateway ConfigMap.
pub const FILE_NAME: &str = "gateway.json";

/// The whole routing and sampling configuration of one gateway deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Format version; must equal [`FORMAT_VERSION`].
    pub version: u32,
    /// Git commit the file was rendered from, for `/status` and logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Tenant id (`X-Scope-OrgID`) that receives data whose namespace no tenant owns.
    /// `None` means such data is rejected with an error to the client, never dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_tenant: Option<String>,
    /// Every tenant, ordered by id.
    pub tenants: Vec<TenantRoute>,
    /// Trace-complete tail sampling across replicas: when present, the replicas
    /// form a consistent-hash ring by trace id and forward spans to the trace's
    /// owner before sampling. Absent: every replica samples what it receives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ring: Option<RingConfig>,
    /// How the gateway verifies who sent a request (mop-agent tokens, anonymous
    /// clients' source addresses). Absent in files written before it existed: the
    /// defaults then apply.
    #[serde(default)]
    pub identity: Identity,
}

/// Where the gateway finds its ring peers in Kubernetes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RingConfig {
    /// Headless Service (in the gateway's own namespace) whose EndpointSlices list
    /// the replicas; only Ready endpoints are ring members. Ignored when the
    /// gateway is given a static peer list (`--peers`, `--peers-file`).
    pub service: String,
    /// Name of the Service port peers forward spans to.
    pub port_name: String,
}

/// Sender identity: what the gateway trusts instead of what a client claims.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The ServiceAccount (`namespace/name`) whose projected tokens authenticate
    /// mop-agents. A token of any other ServiceAccount is refused.
    #[serde(default = "default_agent_service_account")]
    pub agent_service_account: String,
    /// Audience the agents' projected tokens are issued for; the gateway asks the
    /// TokenReview API for exactly this audience.
    #[serde(default = "default_agent_audience")]
    pub agent_audience: String,
    /// How long a verified token is trusted before TokenReview is asked again
    /// (never beyond the token's own expiry).
    #[serde(default = "default_token_review_ttl_ms")]
    pub token_review_ttl_ms: u64,
    /// An anonymous client's resource that names a namespace other than the one
    /// its source address belongs to: `retag` (route it to the verified tenant,
    /// rewrite the attribute, count it) or `reject` (refuse those items).
    #[serde(default)]
    pub foreign_namespace: ForeignNamespace,
    /// An anonymous request from an address that is no known pod and matches no
    /// static source: `reject`, or `default_tenant` (route it to `default_tenant`).
    #[serde(default)]
    pub unknown_source: UnknownSource,
    /// Source networks of anonymous clients that are not pods the gateway can see
    /// (static mode without Kubernetes, or senders outside the cluster). The most
    /// specific network containing the client's address decides its tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub static_sources: Vec<StaticSource>,
}

impl Default for Identity {
    fn default() -> Self {
        Self {
            agent_service_account: default_agent_service_account(),
            agent_audience: default_agent_audience(),
            token_review_ttl_ms: default_token_review_ttl_ms(),
            foreign_namespace: ForeignNamespace::default(),
            unknown_source: UnknownSource::default(),
            static_sources: Vec::new(),
        }
    }
}

fn default_agent_service_account() -> String {
    "mop-system/mop-agent".into()
}

fn default_agent_audience() -> String {
    "mop-gateway".into()
}

fn default_token_review_ttl_ms() -> u64 {
    60_000
}

/// What to do with an anonymous client's resource naming another namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ForeignNamespace {
    /// Route it to the verified tenant with the verified namespace (counted).
    #[default]
    Retag,
    /// Refuse those items (counted, reported to the client).
    Reject,
}

/// What to do with an anonymous request from an unknown address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum UnknownSource {
    /// Refuse it (counted).
    #[default]
    Reject,
    /// Route it to `default_tenant` (refused when there is none).
    DefaultTenant,
}

/// A network of anonymous senders and what they may write: one tenant, or (a
/// trusted collector, the static counterpart of a mop-agent) the namespaces it may
/// name. Set exactly one of `tenant` and `namespaces`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StaticSource {
    /// IPv4 or IPv6 network in CIDR form, e.g. `10.20.0.0/16` or `fd00::/64`.
    pub cidr: String,
    /// Tenant id of everything sent from this network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Namespaces (exact or glob) this network may name in `k8s.namespace.name`;
    /// each resource goes to the tenant owning its namespace, others are refused.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
}

/// A parsed CIDR network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    pub addr: std::net::IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `addr/prefix`; IPv4-mapped IPv6 networks are refused (write them as IPv4).
    pub fn parse(s: &str) -> Option<Cidr> {
        let (a, p) = s.split_once('/')?;
        let addr: std::net::IpAddr = a.parse().ok()?;
        let prefix: u8 = p.parse().ok()?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max || addr.to_canonical() != addr {
            return None;
        }
        Some(Cidr { addr, prefix })
    }

    /// Whether `ip` (already canonical: IPv4-mapped addresses as IPv4) is inside.
    pub fn contains(&self, ip: std::net::IpAddr) -> bool {
        use std::net::IpAddr::{V4, V6};
        match (self.addr, ip) {
            (V4(net), V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (V6(net), V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// Where one tenant's data comes from and how its traces are sampled.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantRoute {
    /// Tenant id, sent to the backends as `X-Scope-OrgID`.
    pub id: String,
    /// Kubernetes namespaces owned by this tenant: exact names, or glob patterns
    /// with `*` (any run of characters) and `?` (one character).
    pub namespaces: Vec<String>,
    /// Files holding bearer tokens that authenticate clients of this tenant
    /// (mounted Secrets). An authenticated client can only write to this tenant.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub token_files: Vec<String>,
    /// Tail-sampling settings for this tenant's traces.
    pub sampling: Sampling,
}

/// Tail sampling for one tenant. A trace is kept when any policy keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Sampling {
    /// How long to wait after a trace's last span before deciding.
    pub decision_wait_ms: u64,
    /// Most traces held in memory at once for this tenant; the oldest is decided
    /// early (and the eviction counted) when a new trace would exceed it.
    pub max_traces: u64,
    /// Upper bound on kept spans per second for the tenant; `None` is unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_spans_per_second: Option<u64>,
    /// Policies applied to every trace unless a service override matches.
    pub policies: Vec<Policy>,
    /// Per-service policy lists, keyed by the `service.name` of the trace's root span
    /// (or of its first span when the root was not seen). They replace `policies`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub service_overrides: BTreeMap<String, Vec<Policy>>,
}

/// One sampling policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Name, reported in metrics (`policy` label) and logs.
    pub name: String,
    /// What the policy keeps.
    pub rule: PolicyRule,
}

/// What a policy keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyRule {
    /// Keep traces where any span has status code ERROR.
    Errors,
    /// Keep traces whose duration (earliest start to latest end) is at least this.
    Latency {
        /// Threshold in milliseconds.
        threshold_ms: u64,
    },
    /// Keep this share of traces, decided from the trace id so every replica agrees.
    Probabilistic {
        /// Share in percent, 0 to 100.
        percentage: f64,
    },
    /// Keep traces where any span or its resource has this attribute with one of
    /// these values (string form). An empty `values` list matches any value.
    Attribute {
        /// Attribute key, for example `http.route`.
        key: String,
        /// Accepted values.
        #[serde(default)]
        values: Vec<String>,
    },
    /// Keep every trace.
    Always,
}

/// A config that is well-formed but not usable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("unsupported format version {found}; this gateway reads version {FORMAT_VERSION}")]
    Version { found: u32 },
    #[error("tenant id {0:?} appears twice")]
    DuplicateTenant(String),
    #[error("tenant id {0:?} is not valid: use 1-150 characters of [A-Za-z0-9!-_.*'()]")]
    InvalidTenantId(String),
    #[error("default_tenant {0:?} is not one of the tenants")]
    UnknownDefaultTenant(String),
    #[error("tenant {tenant}: policy {policy}: percentage {value} is outside 0..=100")]
    Percentage {
        tenant: String,
        policy: String,
        value: f64,
    },
    #[error("tenant {tenant}: max_traces must be at least 1")]
    MaxTraces { tenant: String },
    #[error(
        "ring.service {0:?} is not a Service name (an RFC 1035 label: 1-63 of [a-z0-9-], starting with a letter)"
    )]
    RingService(String),
    #[error("ring.port_name must not be empty")]
    RingPortName,
    #[error(
        "identity.static_sources: {0:?} is not a network in CIDR form (e.g. 10.0.0.0/16 or fd00::/64)"
    )]
    InvalidCidr(String),
    #[error("identity.static_sources: {0} must set exactly one of `tenant` and `namespaces`")]
    SourceGrant(String),
    #[error(
        "identity.static_sources: {cidr} names tenant {tenant:?}, which is not one of the tenants"
    )]
    UnknownSourceTenant { cidr: String, tenant: String },
    #[error("identity.static_sources: {0} appears twice")]
    DuplicateCidr(String),
    #[error("identity.agent_service_account {0:?} must be `namespace/name`")]
    InvalidServiceAccount(String),
    #[error("identity.agent_audience must not be empty")]
    EmptyAudience,
}

impl GatewayConfig {
    /// Checks what serde cannot: version, unique tenants, valid ids and ranges.
    /// Returns every problem found.
    pub fn validate(&self) -> Result<(), Vec<ConfigError>> {
        let mut errors = Vec::new();
        if self.version != FORMAT_VERSION {
            errors.push(ConfigError::Version {
                found: self.version,
            });
        }
        let mut seen = std::collections::BTreeSet::new();
        for t in &self.tenants {
            if !seen.insert(t.id.as_str()) {
                errors.push(ConfigError::DuplicateTenant(t.id.clone()));
            }
            if !is_valid_tenant_id(&t.id) {
                errors.push(ConfigError::InvalidTenantId(t.id.clone()));
            }
            if t.sampling.max_traces == 0 {
                errors.push(ConfigError::MaxTraces {
                    tenant: t.id.clone(),
                });
            }
            let all = t
                .sampling
                .policies
                .iter()
                .chain(t.sampling.service_overrides.values().flatten());
            for p in all {
                if let PolicyRule::Probabilistic { percentage } = p.rule
                    && !(0.0..=100.0).contains(&percentage)
                {
                    errors.push(ConfigError::Percentage {
                        tenant: t.id.clone(),
                        policy: p.name.clone(),
                        value: percentage,
                    });
                }
            }
        }
        if let Some(d) = &self.default_tenant
            && !seen.contains(d.as_str())
        {
            errors.push(ConfigError::UnknownDefaultTenant(d.clone()));
        }
        if let Some(r) = &self.ring {
            if !is_rfc1035_label(&r.service) {
                errors.push(ConfigError::RingService(r.service.clone()));
            }
            if r.port_name.is_empty() {
                errors.push(ConfigError::RingPortName);
            }
        }
        let id = &self.identity;
        let sa_ok = id
            .agent_service_account
            .split_once('/')
            .is_some_and(|(ns, n)| !ns.is_empty() && !n.is_empty() && !n.contains('/'));
        if !sa_ok {
            errors.push(ConfigError::InvalidServiceAccount(
                id.agent_service_account.clone(),
            ));
        }
        if id.agent_audience.is_empty() {
            errors.push(ConfigError::EmptyAudience);
        }
        let mut nets = Vec::new();
        for src in &id.static_sources {
            match Cidr::parse(&src.cidr) {
                Some(c) if nets.contains(&c) => {
                    errors.push(ConfigError::DuplicateCidr(src.cidr.clone()))
                }
                Some(c) => nets.push(c),
                None => errors.push(ConfigError::InvalidCidr(src.cidr.clone())),
            }
            if src.tenant.is_some() != src.namespaces.is_empty() {
                errors.push(ConfigError::SourceGrant(src.cidr.clone()));
            }
            if let Some(t) = &src.tenant
                && !seen.contains(t.as_str())
            {
                errors.push(ConfigError::UnknownSourceTenant {
                    cidr: src.cidr.clone(),
                    tenant: t.clone(),
                });
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Mimir's rule for tenant ids: at most 150 bytes of alphanumerics and
/// `!-_.*'()`, and not `.` or `..`
/// (<https://grafana.com/docs/mimir/latest/configure/about-tenant-ids/>).
pub fn is_valid_tenant_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 150
        && id != "."
        && id != ".."
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!-_.*'()".contains(&b))
}

/// Service names are RFC 1035 labels (Kubernetes `ValidateServiceName`,
/// pkg/apis/core/validation/validation.go).
fn is_rfc1035_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
}

/// Matches a namespace against a pattern with `*` and `?` wildcards.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    // Iterative matcher with single backtrack point: linear in practice, no recursion.
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == b'?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> GatewayConfig {
        GatewayConfig {
            version: FORMAT_VERSION,
            revision: Some("abc".into()),
            default_tenant: Some("platform".into()),
            tenants: vec![TenantRoute {
                id: "platform".into(),
                namespaces: vec!["mop-system".into(), "kube-*".into()],
                token_files: vec!["/etc/mop/tokens/platform".into()],
                sampling: Sampling {
                    decision_wait_ms: 10_000,
                    max_traces: 50_000,
                    max_spans_per_second: Some(1000),
                    policies: vec![
                        Policy {
                            name: "errors".into(),
                            rule: PolicyRule::Errors,
                        },
                        Policy {
                            name: "base".into(),
                            rule: PolicyRule::Probabilistic { percentage: 10.0 },
                        },
                    ],
                    service_overrides: BTreeMap::new(),
                },
            }],
            ring: Some(RingConfig {
                service: "mop-gateway-peers".into(),
                port_name: "ring".into(),
            }),
            identity: Identity {
                static_sources: vec![StaticSource {
                    cidr: "10.20.0.0/16".into(),
                    tenant: Some("platform".into()),
                    namespaces: vec![],
                }],
                ..Identity::default()
            },
        }
    }

    #[test]
    fn round_trips_through_json() {
        let c = example();
        let text = serde_json::to_string_pretty(&c).unwrap();
        assert!(text.contains(r#""type": "probabilistic""#), "{text}");
        let back: GatewayConfig = serde_json::from_str(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn validate_reports_every_problem() {
        let mut c = example();
        c.version = 9;
        c.default_tenant = Some("nobody".into());
        c.tenants.push(c.tenants[0].clone());
        c.tenants[1].sampling.policies[1].rule = PolicyRule::Probabilistic { percentage: 101.0 };
        c.ring = Some(RingConfig {
            service: "Peers_1".into(),
            port_name: String::new(),
        });
        let errs = c.validate().unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs.contains(&ConfigError::RingService("Peers_1".into())));
        assert!(errs.contains(&ConfigError::DuplicateTenant("platform".into())));
    }

    #[test]
    fn identity_defaults_apply_to_files_without_it_and_bad_sources_are_reported() {
        let c: GatewayConfig = serde_json::from_str(r#"{"version":1,"tenants":[]}"#).unwrap();
        assert_eq!(c.identity, Identity::default());
        assert_eq!(c.identity.unknown_source, UnknownSource::Reject);
        assert_eq!(c.identity.foreign_namespace, ForeignNamespace::Retag);
        let mut c = example();
        c.identity.static_sources = vec![
            StaticSource {
                cidr: "10.0.0.0/33".into(),
                tenant: Some("platform".into()),
                namespaces: vec![],
            },
            StaticSource {
                cidr: "::ffff:10.0.0.0/104".into(),
                tenant: None,
                namespaces: vec!["*".into()],
            },
            StaticSource {
                cidr: "10.0.0.0/8".into(),
                tenant: Some("nobody".into()),
                namespaces: vec![],
            },
            StaticSource {
                cidr: "10.0.0.0/8".into(),
                tenant: Some("platform".into()),
                namespaces: vec!["shop".into()],
            },
        ];
        c.identity.agent_service_account = "mop-agent".into();
        let errs = c.validate().unwrap_err();
        assert_eq!(errs.len(), 6, "{errs:?}");
        assert!(errs.contains(&ConfigError::SourceGrant("10.0.0.0/8".into())));
        assert!(errs.contains(&ConfigError::DuplicateCidr("10.0.0.0/8".into())));
    }

    #[test]
    fn cidrs_contain_their_addresses_only() {
        let net = Cidr::parse("10.20.0.0/16").unwrap();
        assert!(net.contains("10.20.255.1".parse().unwrap()));
        assert!(!net.contains("10.21.0.1".parse().unwrap()));
        assert!(!net.contains("::1".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("192.0.2.1".parse().unwrap()));
        let v6 = Cidr::parse("fd00:1::/64").unwrap();
        assert!(v6.contains("fd00:1::abcd".parse().unwrap()));
        assert!(!v6.contains("fd00:2::1".parse().unwrap()));
        assert!(
            Cidr::parse("::1/128")
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.1"), None);
    }

    #[test]
    fn unknown_policy_type_is_rejected() {
        let err = serde_json::from_str::<Policy>(r#"{"name":"x","rule":{"type":"sometimes"}}"#)
            .unwrap_err();
        assert!(err.to_string().contains("sometimes"), "{err}");
    }

    #[test]
    fn glob_matches_like_shell_patterns() {
        assert!(glob_match("team-a-*", "team-a-prod"));
        assert!(glob_match("team-?", "team-b"));
        assert!(!glob_match("team-?", "team-bc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
    }

    #[test]
    fn tenant_ids_follow_mimir_rules() {
        assert!(is_valid_tenant_id("team-a"));
        assert!(!is_valid_tenant_id(""));
        assert!(!is_valid_tenant_id(".."));
        assert!(!is_valid_tenant_id("a|b"));
        assert!(!is_valid_tenant_id(&"x".repeat(151)));
    }
}
