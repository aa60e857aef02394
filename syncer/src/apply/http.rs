//! The one HTTP client of the HTTP appliers (Grafana, rulers): retries with
//! exponential backoff and jitter on 429, 5xx and connection errors, honouring
//! `Retry-After`; every other answer goes back to the caller as it is.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};

use super::ApplyError;

/// How hard to retry.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub initial_backoff: Duration,
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 5,
            initial_backoff: Duration::from_millis(200),
            max_backoff: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `n + 1` (n ≥ 1): exponential, capped, with up to
    /// 50% jitter so many syncers do not retry in step.
    fn backoff(&self, n: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << n.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let jitter = base.mul_f64(jitter_fraction() * 0.5);
        base.saturating_sub(jitter)
    }
}

/// A value in [0, 1) that differs between calls and processes; good enough for
/// spreading retries, not for anything secret.
fn jitter_fraction() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

fn retryable(status: StatusCode) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error()
}

/// `Retry-After` in seconds (the HTTP-date form is rare on these APIs and is
/// treated as absent).
fn retry_after(resp: &Response) -> Option<Duration> {
    resp.headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// An HTTP client bound to one API's base URL.
#[derive(Debug, Clone)]
pub struct Client {
    inner: reqwest::Client,
    base: String,
    retry: RetryPolicy,
}

impl Client {
    pub fn new(base: &str, retry: RetryPolicy) -> Result<Self, ApplyError> {
        let inner = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("mop/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ApplyError::new(format!("cannot build HTTP client: {e}")))?;
        Ok(Self {
            inner,
            base: base.trim_end_matches('/').to_string(),
            retry,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) under the base URL.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.inner.request(method, format!("{}{path}", self.base))
    }

    /// Sends `req`, retrying 429, 5xx and connection errors. Returns the final
    /// response whatever its status (after the last retry a 5xx is returned, not
    /// turned into an error), or an error when no response could be had.
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, ApplyError> {
        let what = describe(&req);
        let mut attempt = 1;
        loop {
            let Some(this) = req.try_clone() else {
                // Streaming bodies cannot be retried; none of ours stream.
                return req
                    .send()
                    .await
                    .map_err(|e| ApplyError::new(format!("{what}: {e}")));
            };
            let wait = match this.send().await {
                Ok(resp) if retryable(resp.status()) && attempt < self.retry.attempts => {
                    let wait = retry_after(&resp)
                        .map(|d| d.min(self.retry.max_backoff))
                        .unwrap_or_else(|| self.retry.backoff(attempt));
                    tracing::debug!(%what, status = %resp.status(), attempt, ?wait, "retrying");
                    wait
                }
                Ok(resp) => return Ok(resp),
                Err(e) if attempt < self.retry.attempts && (e.is_connect() || e.is_timeout()) => {
                    let wait = self.retry.backoff(attempt);
                    tracing::debug!(%what, error = %e, attempt, ?wait, "retrying");
                    wait
                }
                Err(e) => {
                    return Err(ApplyError::new(format!(
                        "{what}: {} (after {attempt} attempt(s))",
                        error_chain(&e)
                    )));
                }
            };
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }
}

fn describe(req: &RequestBuilder) -> String {
    match req.try_clone().and_then(|r| r.build().ok()) {
        Some(r) => format!("{} {}", r.method(), r.url().path()),
        None => "request".to_string(),
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

/// Turns a non-success response into an error naming the request and the
/// server's message.
pub async fn check(resp: Response) -> Result<Response, ApplyError> {
    if resp.status().is_success() {
        return Ok(resp);
    }
    let status = resp.status();
    let url = resp.url().path().to_string();
    let body = resp.text().await.unwrap_or_default();
    let body = body.trim();
    let body: String = body.chars().take(500).collect();
    Err(ApplyError::new(format!("{url}: HTTP {status}: {body}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            attempts: 10,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        };
        for n in 1..10 {
            let b = p.backoff(n);
            let full = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
            assert!(b <= full && b >= full / 2, "attempt {n}: {b:?} vs {full:?}");
        }
    }
}
