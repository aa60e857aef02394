//! Verifies bearer tokens that are not tenant tokens with the Kubernetes
//! TokenReview API (`POST /apis/authentication.k8s.io/v1/tokenreviews`, the
//! gateway's ServiceAccount needs `create` on `tokenreviews`).
//!
//! The request names the audience the token must be issued for (`spec.audiences`);
//! the API server then authenticates the token only for that audience and answers
//! `status.audiences` (the intersection), `status.user.username`
//! (`system:serviceaccount:NS:NAME`) and, for a token bound to a pod,
//! `status.user.extra` with `authentication.kubernetes.io/pod-name`, `pod-uid` and,
//! since Kubernetes 1.30, `node-name` (kubernetes `pkg/registry/authentication/
//! tokenreview/storage.go`, `pkg/serviceaccount/claims.go`).
//!
//! Answers are cached by token for the configured TTL, never past the token's own
//! `exp`; a rotated token is a new key and is reviewed afresh. Refusals are cached
//! briefly so a client retrying a bad token does not turn into API-server load.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use kube::Api;
use kube::api::PostParams;

pub const NODE_NAME_KEY: &str = "authentication.kubernetes.io/node-name";
pub const POD_NAME_KEY: &str = "authentication.kubernetes.io/pod-name";

/// Most cached answers; beyond it expired ones are dropped, then all.
const CACHE_MAX: usize = 4096;
/// How long a refusal is remembered.
const NEGATIVE_TTL: Duration = Duration::from_secs(5);
/// TokenReviews in flight at once.
const MAX_IN_FLIGHT: usize = 16;

/// Who the API server says a token belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reviewed {
    pub username: String,
    pub audiences: Vec<String>,
    pub node: Option<String>,
    pub pod: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewError {
    /// The API server does not accept the token (unknown, expired, revoked, bound
    /// object gone, or issued for another audience).
    #[error("the Kubernetes API does not authenticate this token: {0}")]
    Unauthenticated(String),
    /// The API server could not be asked.
    #[error("cannot verify the token with the Kubernetes API: {0}")]
    Unavailable(String),
}

#[derive(Debug, Clone)]
struct Cached {
    answer: Result<Arc<Reviewed>, ReviewError>,
    until: Instant,
}

/// A TokenReview client with a cache.
#[derive(Clone)]
pub struct Reviewer {
    client: kube::Client,
    cache: Arc<Mutex<HashMap<String, Cached>>>,
    permits: Arc<tokio::sync::Semaphore>,
    reviews: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for Reviewer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reviewer").finish_non_exhaustive()
    }
}

/// The `exp` claim of a JWT, read without verifying it: the API server verified
/// the token; this only keeps the cache from outliving it.
pub fn jwt_expiry(token: &str) -> Option<SystemTime> {
    let payload = token.split('.').nth(1)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .ok()?;
    let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    let exp = claims.get("exp")?.as_u64()?;
    Some(UNIX_EPOCH + Duration::from_secs(exp))
}

impl Reviewer {
    pub fn new(client: kube::Client) -> Self {
        Self {
            client,
            cache: Arc::default(),
            permits: Arc::new(tokio::sync::Semaphore::new(MAX_IN_FLIGHT)),
            reviews: Arc::default(),
        }
    }

    /// TokenReview requests sent so far.
    pub fn reviews_sent(&self) -> u64 {
        self.reviews.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn cached(&self, token: &str) -> Option<Result<Arc<Reviewed>, ReviewError>> {
        let cache = self.cache.lock().ok()?;
        let c = cache.get(token)?;
        (c.until > Instant::now()).then(|| c.answer.clone())
    }

    fn remember(&self, token: &str, answer: Result<Arc<Reviewed>, ReviewError>, ttl: Duration) {
        let ttl = match &answer {
            Ok(_) => {
                let left = jwt_expiry(token)
                    .and_then(|exp| exp.duration_since(SystemTime::now()).ok())
                    .unwrap_or(ttl);
                ttl.min(left)
            }
            Err(ReviewError::Unauthenticated(_)) => ttl.min(NEGATIVE_TTL),
            Err(ReviewError::Unavailable(_)) => return,
        };
        let Ok(mut cache) = self.cache.lock() else {
            return;
        };
        let now = Instant::now();
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.until > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(
            token.to_string(),
            Cached {
                answer,
                until: now + ttl,
            },
        );
    }

    /// Reviews `token` for `audience`, from the cache when it is fresh.
    pub async fn review(
        &self,
        token: &str,
        audience: &str,
        ttl: Duration,
    ) -> Result<Arc<Reviewed>, ReviewError> {
        if let Some(answer) = self.cached(token) {
            return answer;
        }
        let answer = self.ask(token, audience).await;
        self.remember(token, answer.clone(), ttl);
        answer
    }

    async fn ask(&self, token: &str, audience: &str) -> Result<Arc<Reviewed>, ReviewError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        self.reviews
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let api: Api<TokenReview> = Api::all(self.client.clone());
        let req = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![audience.to_string()]),
            },
            ..Default::default()
        };
        let resp = api
            .create(&PostParams::default(), &req)
            .await
            .map_err(|e| ReviewError::Unavailable(e.to_string()))?;
        let status = resp.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            return Err(ReviewError::Unauthenticated(
                status
                    .error
                    .unwrap_or_else(|| "authenticated: false".into()),
            ));
        }
        let user = status.user.unwrap_or_default();
        let extra = user.extra.unwrap_or_default();
        let first = |k: &str| extra.get(k).and_then(|v| v.first()).cloned();
        Ok(Arc::new(Reviewed {
            username: user.username.unwrap_or_default(),
            audiences: status.audiences.unwrap_or_default(),
            node: first(NODE_NAME_KEY),
            pod: first(POD_NAME_KEY),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_is_read_from_the_payload_and_garbage_has_none() {
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"exp":1700000000}"#);
        let token = format!("eyJhbGciOiJSUzI1NiJ9.{payload}.sig");
        assert_eq!(
            jwt_expiry(&token),
            Some(UNIX_EPOCH + Duration::from_secs(1_700_000_000))
        );
        assert_eq!(jwt_expiry("not-a-jwt"), None);
        assert_eq!(jwt_expiry("a.%%%.c"), None);
    }
}
