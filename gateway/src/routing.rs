//! Tenant routing: who is calling, and which tenant each resource goes to.
//!
//! Auth model (also in `docs/gateway.md` and `docs/security.md`): the tenant comes
//! from who *sent* a request, never from what its resources claim.
//! - A request with a valid tenant token is that tenant's, whole: every resource is
//!   routed to the token's tenant whatever namespace it names (re-tagged, counted).
//! - A mop-agent (its ServiceAccount token verified by TokenReview, see
//!   `identity/`) may name namespaces, but only of pods on its own node.
//! - An anonymous client's tenant comes from its source address: the pod owning
//!   it (→ namespace → tenant), else a static source network, else the configured
//!   unknown-source rule. What its resources claim is re-tagged or refused.
//! - A request that names a tenant with `X-Scope-OrgID` is refused (403 /
//!   PERMISSION_DENIED) unless a token of that same tenant authenticates it.
//! - A bearer token that matches no tenant and that the Kubernetes API does not
//!   vouch for is refused (401 / UNAUTHENTICATED).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use mop_gateway_config::{
    Cidr, ConfigError, ForeignNamespace, GatewayConfig, Sampling, UnknownSource, glob_match,
};

use crate::identity::pods::NodePods;
use crate::signal::{ResourceItems, count_items, namespace_of, pod_of, set_namespace};
use crate::telemetry::RejectReason;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("config is invalid: {}", join(.0))]
    Invalid(Vec<ConfigError>),
    #[error("cannot read token file {path}: {source} (is the tenant's Secret mounted?)")]
    TokenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    EmptyToken(PathBuf),
    #[error("tenants {first} and {second} share a token; a token must identify one tenant")]
    DuplicateToken { first: String, second: String },
    #[error("authorization header must be `Bearer <token>`")]
    MalformedAuthorization,
    #[error("bearer token is not valid for any tenant")]
    UnknownToken,
    #[error(
        "X-Scope-OrgID {requested:?} is not allowed: a client may name a tenant only with that tenant's token"
    )]
    TenantNotAllowed { requested: String },
    #[error("bearer token refused: {0}")]
    TokenRejected(String),
    #[error(
        "the token is not issued for audience {audience:?}; mount a projected ServiceAccount token with that audience"
    )]
    WrongAudience { audience: String },
    #[error("{username} may not send as a mop-agent: only {allowed} may")]
    NotAgent { username: String, allowed: String },
    #[error(
        "the agent's token is not bound to a pod on a known node; use a projected ServiceAccount token"
    )]
    NoNode,
    #[error("source address {0} is no known pod and matches no static source")]
    UnknownSource(IpAddr),
    #[error("the sender cannot be identified yet: {0}; retry later")]
    IdentityUnavailable(String),
}

fn join(errs: &[ConfigError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl Error {
    /// The `mop_gateway_rejected_items_total` reason of a refused request.
    pub fn reason(&self) -> RejectReason {
        match self {
            Error::TenantNotAllowed { .. } => RejectReason::Forbidden,
            Error::WrongAudience { .. } => RejectReason::WrongAudience,
            Error::NotAgent { .. } | Error::NoNode => RejectReason::NotAgent,
            Error::UnknownSource(_) => RejectReason::UnknownSource,
            Error::IdentityUnavailable(_) => RejectReason::IdentityUnavailable,
            _ => RejectReason::Unauthenticated,
        }
    }
}

/// What a static source network may send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// Everything goes to this tenant.
    Tenant(Arc<str>),
    /// A trusted collector: may name these namespaces (exact or glob).
    Namespaces(Arc<[String]>),
}

/// Who sent a request, as verified by the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Authenticated with this tenant's token: all data goes to this tenant.
    Tenant(Arc<str>),
    /// A mop-agent verified by TokenReview, with the pods of its node.
    Agent { node: Arc<str>, pods: Arc<NodePods> },
    /// Anonymous, from the address of a pod in this namespace.
    Pod { namespace: Arc<str> },
    /// Anonymous, from a static source network (or an unknown address sent to the
    /// default tenant).
    Network(Grant),
}

/// What the `Authorization` header holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential<'a> {
    None,
    /// A tenant's token.
    Tenant(Arc<str>),
    /// A bearer token that is no tenant's: possibly a ServiceAccount token.
    Bearer(&'a str),
}

/// The validated, immutable routing table built from one `gateway.json`.
#[derive(Debug)]
pub struct RouteTable {
    exact: HashMap<String, Arc<str>>,
    globs: Vec<(String, Arc<str>)>,
    default_tenant: Option<Arc<str>>,
    tokens: HashMap<String, Arc<str>>,
    sampling: HashMap<Arc<str>, Sampling>,
    revision: Option<String>,
    ring: Option<mop_gateway_config::RingConfig>,
    /// Most specific first.
    static_sources: Vec<(Cidr, Grant)>,
    foreign_namespace: ForeignNamespace,
    unknown_source: UnknownSource,
    agent_username: String,
    agent_namespace: String,
    agent_audience: String,
    token_review_ttl: std::time::Duration,
}

/// One request's resources, grouped by tenant.
#[derive(Debug)]
pub struct Routed<R> {
    pub per_tenant: Vec<(Arc<str>, Vec<R>)>,
    /// Items refused, by reason.
    pub rejected: Vec<(RejectReason, usize)>,
    /// Items refused in total.
    pub rejected_items: usize,
    /// What caused rejections, for the client's error message.
    pub rejected_namespaces: Vec<String>,
    /// Items whose claimed namespace was replaced by the verified sender's tenant.
    pub retagged_items: usize,
}

impl<R> Routed<R> {
    fn new() -> Self {
        Routed {
            per_tenant: Vec::new(),
            rejected: Vec::new(),
            rejected_items: 0,
            rejected_namespaces: Vec::new(),
            retagged_items: 0,
        }
    }

    fn push(&mut self, tenant: &Arc<str>, r: R) {
        match self.per_tenant.iter_mut().find(|(t, _)| t == tenant) {
            Some((_, v)) => v.push(r),
            None => self.per_tenant.push((tenant.clone(), vec![r])),
        }
    }

    fn reject(&mut self, reason: RejectReason, n: usize, what: String) {
        self.rejected_items += n;
        match self.rejected.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, c)) => *c += n,
            None => self.rejected.push((reason, n)),
        }
        if !self.rejected_namespaces.contains(&what) {
            self.rejected_namespaces.push(what);
        }
    }
}

const NO_NAMESPACE: &str = "<no k8s.namespace.name>";

impl RouteTable {
    /// Validates the config and reads every tenant's token files.
    pub fn build(config: &GatewayConfig) -> Result<Self, Error> {
        config.validate().map_err(Error::Invalid)?;
        let mut exact = HashMap::new();
        let mut globs = Vec::new();
        let mut tokens: HashMap<String, Arc<str>> = HashMap::new();
        let mut sampling = HashMap::new();
        for t in &config.tenants {
            let id: Arc<str> = Arc::from(t.id.as_str());
            for ns in &t.namespaces {
                if ns.contains(['*', '?']) {
                    globs.push((ns.clone(), id.clone()));
                } else {
                    // First tenant wins, as for globs; the syncer rejects overlaps.
                    exact.entry(ns.clone()).or_insert_with(|| id.clone());
                }
            }
            for f in &t.token_files {
                let path = PathBuf::from(f);
                let text = std::fs::read_to_string(&path).map_err(|source| Error::TokenFile {
                    path: path.clone(),
                    source,
                })?;
                let token = text.trim().to_string();
                if token.is_empty() {
                    return Err(Error::EmptyToken(path));
                }
                if let Some(other) = tokens.get(&token)
                    && **other != *t.id
                {
                    return Err(Error::DuplicateToken {
                        first: other.to_string(),
                        second: t.id.clone(),
                    });
                }
                tokens.insert(token, id.clone());
            }
            sampling.insert(id, t.sampling.clone());
        }
        let id = &config.identity;
        let mut static_sources: Vec<(Cidr, Grant)> = id
            .static_sources
            .iter()
            .filter_map(|s| {
                let grant = match &s.tenant {
                    Some(t) => Grant::Tenant(sampling.get_key_value(t.as_str())?.0.clone()),
                    None => Grant::Namespaces(s.namespaces.clone().into()),
                };
                Some((Cidr::parse(&s.cidr)?, grant))
            })
            .collect();
        static_sources.sort_by_key(|s| std::cmp::Reverse(s.0.prefix));
        let (sa_ns, sa_name) = id.agent_service_account.split_once('/').unwrap_or(("", ""));
        Ok(Self {
            exact,
            globs,
            default_tenant: config.default_tenant.as_deref().map(Arc::from),
            tokens,
            sampling,
            revision: config.revision.clone(),
            ring: config.ring.clone(),
            static_sources,
            foreign_namespace: id.foreign_namespace,
            unknown_source: id.unknown_source,
            agent_username: format!("system:serviceaccount:{sa_ns}:{sa_name}"),
            agent_namespace: sa_ns.to_string(),
            agent_audience: id.agent_audience.clone(),
            token_review_ttl: std::time::Duration::from_millis(id.token_review_ttl_ms),
        })
    }

    pub fn revision(&self) -> Option<&str> {
        self.revision.as_deref()
    }

    /// The ring section: `None` when replicas do not forward to each other.
    pub fn ring(&self) -> Option<&mop_gateway_config::RingConfig> {
        self.ring.as_ref()
    }

    pub fn sampling(&self, tenant: &str) -> Option<&Sampling> {
        self.sampling.get(tenant)
    }

    /// `system:serviceaccount:NS:NAME` of the agents.
    pub fn agent_username(&self) -> &str {
        &self.agent_username
    }

    /// Namespace of the agents' ServiceAccount (and so of their pods).
    pub fn agent_namespace(&self) -> &str {
        &self.agent_namespace
    }

    pub fn agent_audience(&self) -> &str {
        &self.agent_audience
    }

    pub fn token_review_ttl(&self) -> std::time::Duration {
        self.token_review_ttl
    }

    /// The tenant owning a namespace, or the default tenant.
    pub fn tenant_for_namespace(&self, ns: Option<&str>) -> Option<&Arc<str>> {
        let owned = ns.and_then(|ns| {
            self.exact.get(ns).or_else(|| {
                self.globs
                    .iter()
                    .find(|(p, _)| glob_match(p, ns))
                    .map(|(_, t)| t)
            })
        });
        owned.or(self.default_tenant.as_ref())
    }

    /// Reads the `authorization` value: no token, a tenant's token, or another
    /// bearer token (for TokenReview). A client-supplied `X-Scope-OrgID` is allowed
    /// only with a token of that same tenant.
    pub fn credential<'a>(
        &self,
        authorization: Option<&'a str>,
        org_id: Option<&str>,
    ) -> Result<Credential<'a>, Error> {
        let cred = match authorization {
            None => Credential::None,
            Some(value) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or(Error::MalformedAuthorization)?;
                match self.tokens.get(token) {
                    Some(t) => Credential::Tenant(t.clone()),
                    None => Credential::Bearer(token),
                }
            }
        };
        if let Some(requested) = org_id {
            let allowed = matches!(&cred, Credential::Tenant(t) if **t == *requested);
            if !allowed {
                return Err(Error::TenantNotAllowed {
                    requested: requested.to_string(),
                });
            }
        }
        Ok(cred)
    }

    /// The grant of the most specific static source containing `ip`, else the
    /// unknown-source rule.
    pub fn source(&self, ip: IpAddr) -> Result<Caller, Error> {
        let ip = ip.to_canonical();
        if let Some((_, g)) = self.static_sources.iter().find(|(c, _)| c.contains(ip)) {
            return Ok(Caller::Network(g.clone()));
        }
        match (self.unknown_source, &self.default_tenant) {
            (UnknownSource::DefaultTenant, Some(t)) => {
                Ok(Caller::Network(Grant::Tenant(t.clone())))
            }
            _ => Err(Error::UnknownSource(ip)),
        }
    }

    /// Splits a request's resources by tenant.
    pub fn route<R: ResourceItems>(&self, caller: &Caller, items: Vec<R>) -> Routed<R> {
        let mut routed = Routed::new();
        match caller {
            Caller::Tenant(t) => {
                routed.retagged_items = items
                    .iter()
                    .filter(|r| {
                        self.tenant_for_namespace(namespace_of(*r))
                            .is_some_and(|owner| owner != t)
                    })
                    .map(ResourceItems::item_count)
                    .sum();
                if !items.is_empty() {
                    routed.per_tenant.push((t.clone(), items));
                }
            }
            Caller::Network(Grant::Tenant(t)) => {
                for r in items {
                    let foreign = self
                        .tenant_for_namespace(namespace_of(&r))
                        .is_some_and(|owner| owner != t)
                        && namespace_of(&r).is_some();
                    if !foreign {
                        routed.push(t, r);
                    } else if self.foreign_namespace == ForeignNamespace::Reject {
                        let ns = namespace_of(&r).unwrap_or(NO_NAMESPACE).to_string();
                        routed.reject(RejectReason::ForeignNamespace, r.item_count(), ns);
                    } else {
                        routed.retagged_items += r.item_count();
                        routed.push(t, r);
                    }
                }
            }
            Caller::Pod { namespace } => {
                let Some(tenant) = self.tenant_for_namespace(Some(namespace)) else {
                    let n = count_items(&items);
                    routed.reject(RejectReason::UnknownNamespace, n, namespace.to_string());
                    return routed;
                };
                for mut r in items {
                    match namespace_of(&r) {
                        Some(ns) if ns == &**namespace => routed.push(tenant, r),
                        None => {
                            // As the collector's k8sattributes processor does for
                            // a sender identified by its address.
                            set_namespace(&mut r, namespace);
                            routed.push(tenant, r);
                        }
                        Some(ns) if self.foreign_namespace == ForeignNamespace::Reject => {
                            let ns = ns.to_string();
                            routed.reject(RejectReason::ForeignNamespace, r.item_count(), ns);
                        }
                        Some(_) => {
                            routed.retagged_items += r.item_count();
                            set_namespace(&mut r, namespace);
                            routed.push(tenant, r);
                        }
                    }
                }
            }
            Caller::Network(Grant::Namespaces(allowed)) => {
                for r in items {
                    let ns = namespace_of(&r);
                    if let Some(ns) = ns
                        && !allowed.iter().any(|p| glob_match(p, ns))
                    {
                        let what = format!("{ns} (not allowed for this source)");
                        routed.reject(RejectReason::NamespaceNotAllowed, r.item_count(), what);
                        continue;
                    }
                    match self.tenant_for_namespace(ns) {
                        Some(t) => routed.push(t, r),
                        None => {
                            let ns = ns.unwrap_or(NO_NAMESPACE).to_string();
                            routed.reject(RejectReason::UnknownNamespace, r.item_count(), ns);
                        }
                    }
                }
            }
            Caller::Agent { pods, .. } => {
                for r in items {
                    let ns = namespace_of(&r);
                    if let Some(ns) = ns
                        && !pods.allows(ns, pod_of(&r))
                    {
                        let what = match pod_of(&r) {
                            Some(p) => format!("{ns}/{p} (not on the agent's node)"),
                            None => format!("{ns} (no pod on the agent's node)"),
                        };
                        routed.reject(RejectReason::NotOnAgentNode, r.item_count(), what);
                        continue;
                    }
                    match self.tenant_for_namespace(ns) {
                        Some(t) => routed.push(t, r),
                        None => {
                            let ns = ns.unwrap_or(NO_NAMESPACE).to_string();
                            routed.reject(RejectReason::UnknownNamespace, r.item_count(), ns);
                        }
                    }
                }
            }
        }
        routed
    }
}

impl<R: ResourceItems> Routed<R> {
    pub fn accepted_items(&self) -> usize {
        self.per_tenant.iter().map(|(_, v)| count_items(v)).sum()
    }

    /// The message a client sees for rejected items.
    pub fn rejection_message(&self) -> String {
        let reasons: Vec<String> = self
            .rejected
            .iter()
            .map(|(r, n)| format!("{n} {}", r.explain()))
            .collect();
        format!(
            "{} item(s) rejected ({}): {}",
            self.rejected_items,
            reasons.join("; "),
            self.rejected_namespaces.join(", ")
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mop_gateway_config::{FORMAT_VERSION, TenantRoute};
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn sampling() -> Sampling {
        Sampling {
            decision_wait_ms: 1000,
            max_traces: 10,
            max_spans_per_second: None,
            policies: vec![],
            service_overrides: Default::default(),
        }
    }

    fn config(dir: &std::path::Path, default: Option<&str>) -> GatewayConfig {
        std::fs::write(dir.join("a"), "token-a\n").unwrap();
        std::fs::write(dir.join("b"), "token-b").unwrap();
        GatewayConfig {
            version: FORMAT_VERSION,
            revision: None,
            default_tenant: default.map(String::from),
            ring: None,
            identity: Default::default(),
            tenants: vec![
                TenantRoute {
                    id: "team-a".into(),
                    namespaces: vec!["shop".into(), "team-a-*".into()],
                    token_files: vec![dir.join("a").display().to_string()],
                    sampling: sampling(),
                },
                TenantRoute {
                    id: "team-b".into(),
                    namespaces: vec!["billing".into()],
                    token_files: vec![dir.join("b").display().to_string()],
                    sampling: sampling(),
                },
            ],
        }
    }

    fn rs(ns: Option<&str>, spans: usize) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes: ns
                    .map(|ns| KeyValue {
                        key: "k8s.namespace.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(ns.into())),
                        }),
                    })
                    .into_iter()
                    .collect(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: vec![Span::default(); spans],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn exact_and_glob_namespaces_route_and_mixed_requests_split() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        let items = vec![
            rs(Some("shop"), 2),
            rs(Some("billing"), 3),
            rs(Some("team-a-dev"), 1),
            rs(Some("nobody"), 4),
            rs(None, 5),
        ];
        let collector = Caller::Network(Grant::Namespaces(vec!["*".to_string()].into()));
        let r = table.route(&collector, items);
        let summary: Vec<(String, usize)> = r
            .per_tenant
            .iter()
            .map(|(t, v)| (t.to_string(), count_items(v)))
            .collect();
        assert_eq!(summary, vec![("team-a".into(), 3), ("team-b".into(), 3)]);
        assert_eq!(r.rejected_items, 9);
        assert!(
            r.rejection_message().contains("nobody"),
            "{}",
            r.rejection_message()
        );
    }

    #[test]
    fn unknown_namespaces_go_to_the_default_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), Some("team-b"))).unwrap();
        let collector = Caller::Network(Grant::Namespaces(vec!["*".to_string()].into()));
        let r = table.route(&collector, vec![rs(Some("nobody"), 4), rs(None, 1)]);
        assert_eq!(r.rejected_items, 0);
        assert_eq!(r.per_tenant.len(), 1);
        assert_eq!(&*r.per_tenant[0].0, "team-b");
    }

    #[test]
    fn token_pins_all_data_to_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        let Credential::Tenant(t) = table.credential(Some("Bearer token-a"), None).unwrap() else {
            panic!("token-a is team-a's")
        };
        let r = table.route(
            &Caller::Tenant(t),
            vec![rs(Some("billing"), 3), rs(Some("shop"), 1)],
        );
        assert_eq!(r.per_tenant.len(), 1);
        assert_eq!(&*r.per_tenant[0].0, "team-a");
        assert_eq!(r.retagged_items, 3);
    }

    #[test]
    fn impersonation_and_bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        assert!(matches!(
            table.credential(Some("Bearer token-a"), Some("team-b")),
            Err(Error::TenantNotAllowed { requested }) if requested == "team-b"
        ));
        assert!(matches!(
            table.credential(None, Some("team-a")),
            Err(Error::TenantNotAllowed { .. })
        ));
        // A ServiceAccount token naming a tenant is refused before any TokenReview.
        assert!(matches!(
            table.credential(Some("Bearer eyJ.sa.token"), Some("team-a")),
            Err(Error::TenantNotAllowed { .. })
        ));
        assert_eq!(
            table.credential(Some("Bearer nope"), None).unwrap(),
            Credential::Bearer("nope")
        );
        assert!(matches!(
            table.credential(Some("Basic abc"), None),
            Err(Error::MalformedAuthorization)
        ));
        assert_eq!(
            table
                .credential(Some("Bearer token-b"), Some("team-b"))
                .unwrap(),
            Credential::Tenant(Arc::from("team-b"))
        );
    }

    fn static_config(
        dir: &std::path::Path,
        foreign: ForeignNamespace,
        unknown: UnknownSource,
    ) -> RouteTable {
        let mut c = config(dir, Some("team-b"));
        c.identity.foreign_namespace = foreign;
        c.identity.unknown_source = unknown;
        c.identity.static_sources = vec![
            mop_gateway_config::StaticSource {
                cidr: "10.1.0.0/16".into(),
                tenant: Some("team-a".into()),
                namespaces: vec![],
            },
            mop_gateway_config::StaticSource {
                cidr: "10.1.2.0/24".into(),
                tenant: Some("team-b".into()),
                namespaces: vec![],
            },
            mop_gateway_config::StaticSource {
                cidr: "fd00::/64".into(),
                tenant: None,
                namespaces: vec!["team-a-*".into()],
            },
        ];
        RouteTable::build(&c).unwrap()
    }

    fn tenants_of<R: ResourceItems>(r: &Routed<R>) -> Vec<(String, usize)> {
        r.per_tenant
            .iter()
            .map(|(t, v)| (t.to_string(), count_items(v)))
            .collect()
    }

    #[test]
    fn the_most_specific_static_source_decides_and_mapped_addresses_are_ipv4() {
        let dir = tempfile::tempdir().unwrap();
        let table = static_config(dir.path(), ForeignNamespace::Retag, UnknownSource::Reject);
        let a: Arc<str> = Arc::from("team-a");
        let b: Arc<str> = Arc::from("team-b");
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(
            table.source(ip("10.1.9.9")).unwrap(),
            Caller::Network(Grant::Tenant(a))
        );
        assert_eq!(
            table.source(ip("::ffff:10.1.2.3")).unwrap(),
            Caller::Network(Grant::Tenant(b))
        );
        assert!(matches!(
            table.source(ip("10.2.0.1")),
            Err(Error::UnknownSource(_))
        ));
        let to_default = static_config(
            dir.path(),
            ForeignNamespace::Retag,
            UnknownSource::DefaultTenant,
        );
        assert_eq!(
            to_default.source(ip("10.2.0.1")).unwrap(),
            Caller::Network(Grant::Tenant(Arc::from("team-b")))
        );
        // A trusted collector may name only its namespaces.
        let Caller::Network(g @ Grant::Namespaces(_)) = table.source(ip("fd00::7")).unwrap() else {
            panic!("fd00::/64 is a collector network")
        };
        let r = table.route(
            &Caller::Network(g),
            vec![rs(Some("team-a-dev"), 2), rs(Some("billing"), 3)],
        );
        assert_eq!(tenants_of(&r), vec![("team-a".into(), 2)]);
        assert_eq!(r.rejected, vec![(RejectReason::NamespaceNotAllowed, 3)]);
    }

    #[test]
    fn a_pod_sender_is_its_namespace_whatever_it_claims() {
        let dir = tempfile::tempdir().unwrap();
        let retag = static_config(dir.path(), ForeignNamespace::Retag, UnknownSource::Reject);
        let pod = Caller::Pod {
            namespace: Arc::from("shop"),
        };
        let r = retag.route(
            &pod,
            vec![rs(Some("billing"), 3), rs(None, 1), rs(Some("shop"), 2)],
        );
        assert_eq!(tenants_of(&r), vec![("team-a".into(), 6)]);
        assert_eq!(r.retagged_items, 3);
        for item in &r.per_tenant[0].1 {
            assert_eq!(namespace_of(item), Some("shop"), "rewritten or added");
        }
        let reject = static_config(dir.path(), ForeignNamespace::Reject, UnknownSource::Reject);
        let r = reject.route(&pod, vec![rs(Some("billing"), 3), rs(Some("shop"), 2)]);
        assert_eq!(tenants_of(&r), vec![("team-a".into(), 2)]);
        assert_eq!(r.rejected, vec![(RejectReason::ForeignNamespace, 3)]);
    }

    #[test]
    fn an_agent_may_name_only_pods_of_its_node() {
        use crate::identity::pods::{PodFacts, PodIndex};
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        let mut idx = PodIndex::default();
        let pod = |ns: &str, name: &str, node: &str| PodFacts {
            namespace: ns.into(),
            name: name.into(),
            uid: format!("{ns}-{name}"),
            node: Some(node.into()),
            ips: vec![],
            host_network: false,
            terminal: false,
        };
        idx.replace_all(vec![pod("shop", "web", "n1"), pod("billing", "api", "n2")]);
        let agent = Caller::Agent {
            node: Arc::from("n1"),
            pods: idx.node("n1"),
        };
        let mut named = rs(Some("shop"), 1);
        named.resource.as_mut().unwrap().attributes.push(KeyValue {
            key: "k8s.pod.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue("api".into())),
            }),
        });
        let r = table.route(
            &agent,
            vec![rs(Some("shop"), 2), rs(Some("billing"), 3), named],
        );
        assert_eq!(tenants_of(&r), vec![("team-a".into(), 2)]);
        assert_eq!(r.rejected, vec![(RejectReason::NotOnAgentNode, 4)]);
    }

    #[test]
    fn shared_token_is_a_config_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path(), None);
        c.tenants[1].token_files = c.tenants[0].token_files.clone();
        assert!(matches!(
            RouteTable::build(&c),
            Err(Error::DuplicateToken { .. })
        ));
    }
}
