//! Push webhooks from GitHub, Gitea/Forgejo and GitLab: authenticate, then parse.
//!
//! A push event only *triggers* a fetch; the commit it names is never trusted on
//! its own (the server fetches the branch and uses what the branch points at). The
//! caller hands over the raw body exactly as received: signatures are computed over
//! those bytes.
//!
//! Authentication, per provider:
//! - GitHub: `X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body>`
//!   (<https://docs.github.com/en/webhooks/using-webhooks/validating-webhook-deliveries>).
//! - Gitea/Forgejo: `X-Gitea-Signature: <hex HMAC-SHA256 of the body>`
//!   (<https://docs.gitea.com/usage/webhooks>); Forgejo also sends it, beside its
//!   own `X-Forgejo-*` headers.
//! - GitLab: `X-Gitlab-Token: <the secret>`, no signature
//!   (<https://docs.gitlab.com/user/project/integrations/webhooks/>).
//!
//! Comparisons are constant-time, and neither the secret nor a received signature
//! or token is ever logged or put in an error.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Where a webhook came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    GitHub,
    Gitea,
    GitLab,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Provider::GitHub => "github",
            Provider::Gitea => "gitea",
            Provider::GitLab => "gitlab",
        })
    }
}

/// An authenticated webhook delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookEvent {
    /// A push: the server fetches when it is for its branch.
    Push(PushEvent),
    /// GitHub's `ping` sent when a hook is created: answer 200, sync nothing.
    Ping { provider: Provider },
}

/// A push to some ref of the repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushEvent {
    pub provider: Provider,
    /// The full ref pushed, e.g. `refs/heads/main` (or `refs/tags/v1`).
    pub git_ref: String,
    /// The commit the ref points at after the push (all zeros when it was deleted).
    pub after: String,
    /// The commit it pointed at before (all zeros when it was created).
    pub before: Option<String>,
}

impl PushEvent {
    /// The branch name when the ref is a branch (`refs/heads/<branch>`).
    pub fn branch(&self) -> Option<&str> {
        self.git_ref.strip_prefix("refs/heads/")
    }

    /// Whether the push deleted the ref.
    pub fn deleted(&self) -> bool {
        !self.after.is_empty() && self.after.bytes().all(|b| b == b'0')
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WebhookError {
    /// Missing or wrong signature/token. Answer 401 and do nothing.
    #[error("webhook not authenticated: {0}")]
    Unauthorized(&'static str),
    /// A provider or event this endpoint does not handle.
    #[error("unsupported webhook: {0}")]
    Unsupported(String),
    /// Authenticated, but the body is not the expected payload.
    #[error("bad webhook payload: {0}")]
    BadRequest(String),
}

impl WebhookError {
    /// The HTTP status to answer with.
    pub fn status(&self) -> http::StatusCode {
        match self {
            WebhookError::Unauthorized(_) => http::StatusCode::UNAUTHORIZED,
            WebhookError::Unsupported(_) | WebhookError::BadRequest(_) => {
                http::StatusCode::BAD_REQUEST
            }
        }
    }
}

/// Authenticates a webhook delivery against `secret`, then parses it.
///
/// The provider is told by its event header. Authentication comes first: an
/// unauthenticated caller learns nothing about what would have been accepted. An
/// empty `secret` authenticates nothing (a server without a configured secret
/// must not accept anonymous triggers).
pub fn verify_and_parse(
    headers: &HeaderMap,
    body: &[u8],
    secret: &[u8],
) -> Result<WebhookEvent, WebhookError> {
    // Gitea and Forgejo also send `X-GitHub-Event` for compatibility, so they are
    // recognised first.
    let (provider, event) = if let Some(e) = header(headers, "x-gitea-event")? {
        (Provider::Gitea, e)
    } else if let Some(e) = header(headers, "x-github-event")? {
        (Provider::GitHub, e)
    } else if let Some(e) = header(headers, "x-gitlab-event")? {
        (Provider::GitLab, e)
    } else {
        return Err(WebhookError::Unsupported(
            "no X-GitHub-Event, X-Gitea-Event or X-Gitlab-Event header".into(),
        ));
    };
    if secret.is_empty() {
        return Err(WebhookError::Unauthorized(
            "no webhook secret is configured",
        ));
    }
    match provider {
        Provider::GitHub => {
            let sig = header(headers, "x-hub-signature-256")?
                .ok_or(WebhookError::Unauthorized("missing X-Hub-Signature-256"))?;
            let hex_sig = sig
                .strip_prefix("sha256=")
                .ok_or(WebhookError::Unauthorized(
                    "X-Hub-Signature-256 is not of the form sha256=<hex>",
                ))?;
            verify_hmac(body, secret, hex_sig)?;
        }
        Provider::Gitea => {
            let sig = header(headers, "x-gitea-signature")?
                .ok_or(WebhookError::Unauthorized("missing X-Gitea-Signature"))?;
            verify_hmac(body, secret, sig)?;
        }
        Provider::GitLab => {
            let token = header(headers, "x-gitlab-token")?
                .ok_or(WebhookError::Unauthorized("missing X-Gitlab-Token"))?;
            if !bool::from(token.as_bytes().ct_eq(secret)) {
                return Err(WebhookError::Unauthorized("wrong X-Gitlab-Token"));
            }
        }
    }

    match (provider, event) {
        (Provider::GitHub, "ping") => Ok(WebhookEvent::Ping { provider }),
        (Provider::GitHub | Provider::Gitea, "push") | (Provider::GitLab, "Push Hook") => {
            let p: PushPayload = serde_json::from_slice(body)
                .map_err(|e| WebhookError::BadRequest(format!("{provider} push event: {e}")))?;
            if p.git_ref.is_empty() || p.after.is_empty() {
                return Err(WebhookError::BadRequest(format!(
                    "{provider} push event without `ref` or `after`"
                )));
            }
            Ok(WebhookEvent::Push(PushEvent {
                provider,
                git_ref: p.git_ref,
                after: p.after,
                before: p.before.filter(|b| !b.is_empty()),
            }))
        }
        (_, other) => Err(WebhookError::Unsupported(format!(
            "{provider} event `{other}`; only push events trigger a sync"
        ))),
    }
}

/// The fields MOP reads; GitHub, Gitea and GitLab push payloads all have them
/// under the same names.
#[derive(Deserialize)]
struct PushPayload {
    #[serde(rename = "ref")]
    git_ref: String,
    after: String,
    #[serde(default)]
    before: Option<String>,
}

fn header<'a>(headers: &'a HeaderMap, name: &'static str) -> Result<Option<&'a str>, WebhookError> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .map(|s| Some(s.trim()))
            .map_err(|_| WebhookError::BadRequest(format!("header {name} is not visible ASCII"))),
    }
}

fn verify_hmac(body: &[u8], secret: &[u8], hex_sig: &str) -> Result<(), WebhookError> {
    let sig = hex::decode(hex_sig)
        .map_err(|_| WebhookError::Unauthorized("the signature is not hexadecimal"))?;
    let mut mac = Hmac::<Sha256>::new_from_slice(secret)
        .map_err(|_| WebhookError::Unauthorized("unusable webhook secret"))?;
    mac.update(body);
    mac.verify_slice(&sig)
        .map_err(|_| WebhookError::Unauthorized("the signature does not match the body"))
}

#[cfg(test)]
mod tests;
