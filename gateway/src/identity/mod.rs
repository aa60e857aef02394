//! Sender identity: who sent a request, decided from the connection (its bearer
//! token, its source address), never from what the request's resources claim.
//!
//! In order: a tenant's token (that tenant); any other bearer token is reviewed
//! with the Kubernetes TokenReview API and must be the mop-agents' ServiceAccount
//! (an agent, allowed the pods of its node); no token: the pod owning the source
//! address (pod watch), else a static source network, else the unknown-source rule.
//! The result is one [`Caller`] per request; routing then looks at each resource
//! only to check it against that caller.

pub mod pods;
pub mod review;
pub mod watch;

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::routing::{Caller, Credential, Error, RouteTable};
use pods::PodIndex;
use review::{ReviewError, Reviewer};

/// How the gateway reaches the Kubernetes API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KubeAccess {
    /// The pod's own ServiceAccount token, CA and `KUBERNETES_SERVICE_*`.
    InCluster,
    /// `KUBECONFIG` or `~/.kube/config`.
    Kubeconfig,
    /// This URL, with the bearer token in `token_file` (re-read as it rotates).
    Url {
        url: String,
        token_file: Option<std::path::PathBuf>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot configure the Kubernetes client: {0}")]
    Config(String),
    #[error("cannot create the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
}

/// One client for everything the gateway asks the API server (the pod watch,
/// TokenReviews, the ring's EndpointSlices), from `--kubernetes`.
pub async fn connect(access: &KubeAccess) -> Result<kube::Client, StartError> {
    // rustls needs one process-wide crypto provider when several are compiled in;
    // an error only means one is installed already.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let config = match access {
        KubeAccess::InCluster => {
            kube::Config::incluster().map_err(|e| StartError::Config(e.to_string()))?
        }
        KubeAccess::Kubeconfig => kube::Config::infer()
            .await
            .map_err(|e| StartError::Config(e.to_string()))?,
        KubeAccess::Url { url, token_file } => {
            let uri = url
                .parse()
                .map_err(|e| StartError::Config(format!("--kubernetes {url:?}: {e}")))?;
            let mut c = kube::Config::new(uri);
            c.auth_info.token_file = token_file.as_ref().map(|p| p.display().to_string());
            c
        }
    };
    kube::Client::try_from(config).map_err(StartError::Client)
}

/// Verifies senders; cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Identifier {
    kube: Option<(Arc<RwLock<PodIndex>>, Reviewer)>,
}

impl Identifier {
    /// Without Kubernetes: tenant tokens and static sources only.
    pub fn without_kubernetes() -> Self {
        Self::default()
    }

    /// With Kubernetes: starts the pod watch; TokenReviews go to the same API.
    pub fn with_kubernetes(
        client: kube::Client,
        cancel: CancellationToken,
    ) -> (Self, JoinHandle<()>) {
        let index = Arc::new(RwLock::new(PodIndex::default()));
        let task = tokio::spawn(watch::run(client.clone(), index.clone(), cancel));
        (
            Self {
                kube: Some((index, Reviewer::new(client))),
            },
            task,
        )
    }

    /// Whether the pod index has loaded (always true without Kubernetes).
    pub fn ready(&self) -> bool {
        self.kube
            .as_ref()
            .is_none_or(|(i, _)| i.read().is_ok_and(|i| i.synced()))
    }

    /// TokenReviews sent so far (0 without Kubernetes).
    pub fn token_reviews_sent(&self) -> u64 {
        self.kube.as_ref().map_or(0, |(_, r)| r.reviews_sent())
    }

    /// Who sent a request: `authorization` and `X-Scope-OrgID` as received, `peer`
    /// the connection's source address.
    pub async fn identify(
        &self,
        table: &RouteTable,
        authorization: Option<&str>,
        org_id: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<Caller, Error> {
        match table.credential(authorization, org_id)? {
            Credential::Tenant(t) => Ok(Caller::Tenant(t)),
            Credential::Bearer(token) => self.agent(table, token).await,
            Credential::None => self.anonymous(table, peer),
        }
    }

    async fn agent(&self, table: &RouteTable, token: &str) -> Result<Caller, Error> {
        let Some((index, reviewer)) = &self.kube else {
            return Err(Error::UnknownToken);
        };
        let audience = table.agent_audience();
        let reviewed = reviewer
            .review(token, audience, table.token_review_ttl())
            .await
            .map_err(|e| match e {
                ReviewError::Unauthenticated(m) => Error::TokenRejected(m),
                ReviewError::Unavailable(m) => Error::IdentityUnavailable(m),
            })?;
        if !reviewed.audiences.iter().any(|a| a == audience) {
            return Err(Error::WrongAudience {
                audience: audience.to_string(),
            });
        }
        if reviewed.username != table.agent_username() {
            return Err(Error::NotAgent {
                username: reviewed.username.clone(),
                allowed: table.agent_username().to_string(),
            });
        }
        let index = index
            .read()
            .map_err(|_| Error::IdentityUnavailable("pod index poisoned".into()))?;
        // Kubernetes 1.30+ names the node in the token; before that, the bound
        // pod's node comes from the pod watch.
        let node: Arc<str> = match (&reviewed.node, &reviewed.pod) {
            (Some(n), _) => Arc::from(n.as_str()),
            (None, Some(pod)) => index
                .node_of(table.agent_namespace(), pod)
                .ok_or(Error::NoNode)?,
            (None, None) => return Err(Error::NoNode),
        };
        let pods = index.node(&node);
        Ok(Caller::Agent { node, pods })
    }

    fn anonymous(&self, table: &RouteTable, peer: Option<IpAddr>) -> Result<Caller, Error> {
        let Some(ip) = peer.map(|ip| ip.to_canonical()) else {
            return Err(Error::IdentityUnavailable(
                "the connection has no source address".into(),
            ));
        };
        if let Some((index, _)) = &self.kube {
            let index = index
                .read()
                .map_err(|_| Error::IdentityUnavailable("pod index poisoned".into()))?;
            if !index.synced() {
                return Err(Error::IdentityUnavailable(
                    "the pod list has not loaded yet".into(),
                ));
            }
            if let Some(namespace) = index.namespace_of(ip) {
                return Ok(Caller::Pod { namespace });
            }
        }
        table.source(ip)
    }
}
