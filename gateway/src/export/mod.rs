//! Exporters: encoding per backend and one HTTP sender with retries.
//!
//! Every request carries `X-Scope-OrgID` of the batch's tenant: [`Sender::send`]
//! takes the tenant as an argument and sets the header itself, so no exporter can
//! forget it.

pub mod loki;
pub mod otlp_metrics;
pub mod remote_write;
pub mod tempo;

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, RETRY_AFTER};
use tokio::time::Instant;

use crate::signal::Signal;
use crate::telemetry::{DropReason, Metrics, SignalLabel};

/// Header that carries the tenant to Tempo, Mimir and Loki.
pub const ORG_ID_HEADER: &str = "X-Scope-OrgID";

/// A request body ready to send, and what could not be put into it.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Shared so that retries do not copy it.
    pub body: bytes::Bytes,
    pub content_type: String,
    pub content_encoding: Option<String>,
    pub extra_headers: Vec<(String, String)>,
    /// Items inside `body`.
    pub items: usize,
    /// Items left out, by reason, with a message for the log.
    pub dropped: Vec<(DropReason, usize, String)>,
}

/// Turns one tenant's batch into a backend request body.
pub trait Encoder<R>: Send + Sync + 'static {
    fn encode(&self, tenant: &str, items: Vec<R>) -> Encoded;
}

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    pub max_elapsed: Duration,
}

/// What one attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// Retry after at least this long (from `Retry-After`, if the backend sent it).
    Retry(Option<Duration>, String),
    /// Do not retry: the backend refused the data.
    Rejected(String),
}

/// Classifies a response as the OTLP exporter spec and the issue describe:
/// 429/502/503/504 are retried, any other 4xx/5xx is a permanent refusal.
pub fn classify(status: StatusCode, headers: &HeaderMap, body: &str) -> Outcome {
    if status.is_success() {
        return Outcome::Delivered;
    }
    let msg = format!("{status}: {}", body.chars().take(300).collect::<String>());
    match status.as_u16() {
        429 | 502 | 503 | 504 => Outcome::Retry(retry_after(headers), msg),
        _ => Outcome::Rejected(msg),
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 section 10.2.3).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(v).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Exponential backoff with full jitter, never shorter than what the backend asked.
pub fn backoff(policy: &RetryPolicy, attempt: u32, asked: Option<Duration>) -> Duration {
    let exp = policy
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.min(20)))
        .min(policy.max);
    let jittered = exp.mul_f64(fastrand::f64());
    match asked {
        Some(a) => a.min(policy.max).max(jittered),
        None => jittered.max(Duration::from_millis(1)),
    }
}

/// One backend endpoint.
#[derive(Debug)]
pub struct Sender {
    client: reqwest::Client,
    url: String,
    retry: RetryPolicy,
}

impl Sender {
    pub fn new(url: String, timeout: Duration, retry: RetryPolicy) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { client, url, retry })
    }

    async fn attempt(&self, tenant: &str, e: &Encoded) -> Outcome {
        let mut req = self
            .client
            .post(&self.url)
            .header(ORG_ID_HEADER, tenant)
            .header(CONTENT_TYPE, e.content_type.as_str())
            .body(e.body.clone());
        if let Some(enc) = &e.content_encoding {
            req = req.header(CONTENT_ENCODING, enc.as_str());
        }
        for (k, v) in &e.extra_headers {
            req = req.header(k.as_str(), v.as_str());
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let headers = resp.headers().clone();
                let body = resp.text().await.unwrap_or_default();
                classify(status, &headers, &body)
            }
            Err(err) => Outcome::Retry(None, format!("request failed: {err}")),
        }
    }

    /// Sends until delivered, refused, or out of retry time; counts the result.
    pub async fn send(&self, tenant: &str, signal: Signal, e: Encoded, metrics: &Metrics) {
        self.send_until(tenant, signal, &e, metrics, None).await;
    }

    /// Like [`Sender::send`]; with `stop` (the disk queue's mode) retryable failures
    /// are retried until delivered or `stop` fires, never dropped: the disk budget,
    /// not a retry budget, bounds an outage. Returns whether the batch is done
    /// with (delivered or permanently refused) rather than interrupted.
    pub async fn send_until(
        &self,
        tenant: &str,
        signal: Signal,
        e: &Encoded,
        metrics: &Metrics,
        stop: Option<&tokio_util::sync::CancellationToken>,
    ) -> bool {
        if e.items == 0 {
            return true;
        }
        let bytes = metrics
            .queue_bytes
            .get_or_create(&SignalLabel { signal })
            .clone();
        bytes.inc_by(e.body.len() as i64);
        let started = Instant::now();
        let mut attempt = 0u32;
        let done = loop {
            match self.attempt(tenant, e).await {
                Outcome::Delivered => {
                    metrics.exported(tenant, signal, e.items);
                    break true;
                }
                Outcome::Rejected(msg) => {
                    metrics.dropped(tenant, signal, DropReason::Rejected4xx, e.items, &msg);
                    break true;
                }
                Outcome::Retry(asked, msg) => {
                    let wait = backoff(&self.retry, attempt, asked);
                    if stop.is_none() && started.elapsed() + wait > self.retry.max_elapsed {
                        metrics.dropped(
                            tenant,
                            signal,
                            DropReason::RetriesExhausted,
                            e.items,
                            &msg,
                        );
                        break true;
                    }
                    tracing::debug!(tenant, signal = %signal, attempt, wait_ms = wait.as_millis() as u64, error = %msg, "export failed, retrying");
                    metrics.retried(tenant, signal);
                    attempt += 1;
                    match stop {
                        Some(stop) => {
                            tokio::select! {
                                _ = stop.cancelled() => break false,
                                _ = tokio::time::sleep(wait) => {}
                            }
                        }
                        None => tokio::time::sleep(wait).await,
                    }
                }
            }
        };
        bytes.dec_by(e.body.len() as i64);
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    #[test]
    fn only_throttling_and_gateway_errors_are_retried() {
        let h = HeaderMap::new();
        for s in [429, 502, 503, 504] {
            assert!(matches!(
                classify(StatusCode::from_u16(s).unwrap(), &h, ""),
                Outcome::Retry(..)
            ));
        }
        for s in [400, 401, 403, 404, 413, 500] {
            assert!(matches!(
                classify(StatusCode::from_u16(s).unwrap(), &h, ""),
                Outcome::Rejected(_)
            ));
        }
        assert_eq!(classify(StatusCode::NO_CONTENT, &h, ""), Outcome::Delivered);
    }

    #[test]
    fn retry_after_seconds_and_dates_are_honoured() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        let later = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_str(&httpdate::fmt_http_date(later)).unwrap(),
        );
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(110) && d <= Duration::from_secs(120),
            "{d:?}"
        );
        let p = RetryPolicy {
            initial: Duration::from_millis(10),
            max: Duration::from_secs(60),
            max_elapsed: Duration::from_secs(600),
        };
        assert!(backoff(&p, 0, Some(Duration::from_secs(3))) >= Duration::from_secs(3));
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(600),
        };
        for attempt in 0..30 {
            let d = backoff(&p, attempt, None);
            assert!(d <= Duration::from_secs(2), "{attempt}: {d:?}");
        }
        // The asked delay is capped by max too, so a hostile header cannot stall us.
        assert_eq!(
            backoff(&p, 0, Some(Duration::from_secs(3600))),
            Duration::from_secs(2)
        );
    }
}
