//! Tenant routing: who is calling (bearer token → tenant) and which tenant owns each
//! resource (`k8s.namespace.name` → tenant through the tenant table).
//!
//! Auth model (also in `docs/gateway.md`):
//! - A request with a valid tenant token is that tenant's, whole: every resource is
//!   routed to the token's tenant whatever namespace it names (re-tagged, counted).
//!   Resource attributes are data, not credentials.
//! - A request that names a tenant explicitly with `X-Scope-OrgID` is refused (403 /
//!   PERMISSION_DENIED) unless a token of that same tenant authenticates it, so an
//!   impersonation attempt is loud rather than quietly re-tagged.
//! - A bearer token that matches no tenant is refused (401 / UNAUTHENTICATED).
//! - Requests without a token (the in-cluster agent) are routed by namespace; the
//!   gateway's OTLP port must therefore only be reachable from inside the cluster
//!   (NetworkPolicy) or every client must carry a token.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use mop_gateway_config::{ConfigError, GatewayConfig, Sampling, glob_match};

use crate::signal::{ResourceItems, count_items, namespace_of};

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
}

fn join(errs: &[ConfigError]) -> String {
    errs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who sent a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token: data is routed by namespace.
    Anonymous,
    /// Authenticated with this tenant's token: all data goes to this tenant.
    Tenant(Arc<str>),
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
}

/// One request's resources, grouped by tenant.
#[derive(Debug)]
pub struct Routed<R> {
    pub per_tenant: Vec<(Arc<str>, Vec<R>)>,
    /// Items refused because no tenant owns their namespace and there is no default.
    pub rejected_items: usize,
    /// Namespaces that caused rejections, for the client's error message.
    pub rejected_namespaces: Vec<String>,
    /// Items of an authenticated caller whose namespace named another tenant.
    pub retagged_items: usize,
}

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
        Ok(Self {
            exact,
            globs,
            default_tenant: config.default_tenant.as_deref().map(Arc::from),
            tokens,
            sampling,
            revision: config.revision.clone(),
            ring: config.ring.clone(),
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

    /// Decides who the caller is from the `authorization` value and a client-supplied
    /// `X-Scope-OrgID`.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        org_id: Option<&str>,
    ) -> Result<Caller, Error> {
        let caller = match authorization {
            None => Caller::Anonymous,
            Some(value) => {
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or(Error::MalformedAuthorization)?;
                let tenant = self.tokens.get(token).ok_or(Error::UnknownToken)?;
                Caller::Tenant(tenant.clone())
            }
        };
        if let Some(requested) = org_id {
            let allowed = matches!(&caller, Caller::Tenant(t) if **t == *requested);
            if !allowed {
                return Err(Error::TenantNotAllowed {
                    requested: requested.to_string(),
                });
            }
        }
        Ok(caller)
    }

    /// Splits a request's resources by tenant.
    pub fn route<R: ResourceItems>(&self, caller: &Caller, items: Vec<R>) -> Routed<R> {
        let mut routed = Routed {
            per_tenant: Vec::new(),
            rejected_items: 0,
            rejected_namespaces: Vec::new(),
            retagged_items: 0,
        };
        if let Caller::Tenant(t) = caller {
            let foreign: usize = items
                .iter()
                .filter(|r| {
                    self.tenant_for_namespace(namespace_of(*r))
                        .is_some_and(|owner| owner != t)
                })
                .map(ResourceItems::item_count)
                .sum();
            routed.retagged_items = foreign;
            if !items.is_empty() {
                routed.per_tenant.push((t.clone(), items));
            }
            return routed;
        }
        for r in items {
            let ns = namespace_of(&r);
            match self.tenant_for_namespace(ns) {
                Some(tenant) => match routed.per_tenant.iter_mut().find(|(t, _)| t == tenant) {
                    Some((_, v)) => v.push(r),
                    None => routed.per_tenant.push((tenant.clone(), vec![r])),
                },
                None => {
                    routed.rejected_items += r.item_count();
                    let ns = ns.unwrap_or("<no k8s.namespace.name>").to_string();
                    if !routed.rejected_namespaces.contains(&ns) {
                        routed.rejected_namespaces.push(ns);
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
        format!(
            "{} item(s) rejected: no tenant owns namespace(s) {} and no default tenant is configured",
            self.rejected_items,
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
        let r = table.route(&Caller::Anonymous, items);
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
        let r = table.route(&Caller::Anonymous, vec![rs(Some("nobody"), 4), rs(None, 1)]);
        assert_eq!(r.rejected_items, 0);
        assert_eq!(r.per_tenant.len(), 1);
        assert_eq!(&*r.per_tenant[0].0, "team-b");
    }

    #[test]
    fn token_pins_all_data_to_its_tenant() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        let caller = table.authenticate(Some("Bearer token-a"), None).unwrap();
        let r = table.route(&caller, vec![rs(Some("billing"), 3), rs(Some("shop"), 1)]);
        assert_eq!(r.per_tenant.len(), 1);
        assert_eq!(&*r.per_tenant[0].0, "team-a");
        assert_eq!(r.retagged_items, 3);
    }

    #[test]
    fn impersonation_and_bad_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let table = RouteTable::build(&config(dir.path(), None)).unwrap();
        assert!(matches!(
            table.authenticate(Some("Bearer token-a"), Some("team-b")),
            Err(Error::TenantNotAllowed { requested }) if requested == "team-b"
        ));
        assert!(matches!(
            table.authenticate(None, Some("team-a")),
            Err(Error::TenantNotAllowed { .. })
        ));
        assert!(matches!(
            table.authenticate(Some("Bearer nope"), None),
            Err(Error::UnknownToken)
        ));
        assert!(matches!(
            table.authenticate(Some("Basic abc"), None),
            Err(Error::MalformedAuthorization)
        ));
        assert_eq!(
            table
                .authenticate(Some("Bearer token-b"), Some("team-b"))
                .unwrap(),
            Caller::Tenant(Arc::from("team-b"))
        );
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
