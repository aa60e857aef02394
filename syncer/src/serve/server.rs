//! The HTTP side of `mop serve`: `/healthz`, `/readyz`, `/metrics`, `/status`,
//! `/drift` and the push webhook.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State as Extract};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use super::status::State;

/// Why the loop should sync now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trigger {
    /// A verified push webhook for the watched branch.
    Push { provider: String, commit: String },
    /// A file changed in the watched directory.
    FileChange,
    /// A standby replica passed on a webhook (see `handoff`).
    Requested(String),
}

/// Where a verified webhook's trigger goes: the local sync loop on the leader,
/// the leader through `handoff` on a standby.
pub type TriggerSink = Arc<dyn Fn(Trigger) + Send + Sync>;

/// Checks a webhook request; returns the trigger to send, or the HTTP answer.
pub type WebhookCheck =
    dyn Fn(&HeaderMap, &[u8]) -> Result<Option<Trigger>, (StatusCode, String)> + Send + Sync;

/// The largest webhook body accepted: GitHub caps its payloads at 25 MB
/// (<https://docs.github.com/en/webhooks/webhook-events-and-payloads#payload-cap>)
/// and GitLab's and Gitea's pushes are smaller. axum's implicit default (2 MB)
/// would refuse a big but genuine push; larger bodies are answered 413 before
/// they are read into memory.
pub const WEBHOOK_BODY_LIMIT: usize = 25 * 1024 * 1024;

#[derive(Clone)]
struct App {
    state: State,
    triggers: TriggerSink,
    webhook: Option<Arc<WebhookCheck>>,
}

pub fn router(state: State, triggers: TriggerSink, webhook: Option<Arc<WebhookCheck>>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/drift", get(drift))
        .route(
            "/webhook",
            post(webhook_handler).layer(DefaultBodyLimit::max(WEBHOOK_BODY_LIMIT)),
        )
        .with_state(App {
            state,
            triggers,
            webhook,
        })
}

async fn readyz(Extract(app): Extract<App>) -> Response {
    let s = app.state.snapshot();
    if s.ready || s.standby {
        // A standby is ready to serve /status, /metrics and webhooks (which it
        // passes to the leader); the leader once it synced.
        (
            StatusCode::OK,
            if s.standby {
                "ready (standby)\n"
            } else {
                "ready\n"
            },
        )
            .into_response()
    } else {
        let why = s
            .last_error
            .unwrap_or_else(|| "no successful sync yet".to_string());
        (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response()
    }
}

async fn metrics(Extract(app): Extract<App>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.state.encode_metrics(),
    )
        .into_response()
}

async fn status(Extract(app): Extract<App>) -> Response {
    axum::Json(app.state.snapshot()).into_response()
}

async fn drift(Extract(app): Extract<App>) -> Response {
    let s = app.state.snapshot();
    axum::Json(serde_json::json!({
        "revision": s.applied_revision,
        "drifted": s.drift.len(),
        "objects": s.drift,
    }))
    .into_response()
}

async fn webhook_handler(Extract(app): Extract<App>, headers: HeaderMap, body: Bytes) -> Response {
    let Some(check) = &app.webhook else {
        return (
            StatusCode::NOT_FOUND,
            "webhook not configured: start mop serve with --webhook-secret-file\n",
        )
            .into_response();
    };
    match check(&headers, &body) {
        Ok(Some(t)) => {
            (app.triggers)(t);
            (StatusCode::ACCEPTED, "sync triggered\n").into_response()
        }
        Ok(None) => (StatusCode::OK, "ignored\n").into_response(),
        Err((code, msg)) => (code, format!("{msg}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve(router: Router) -> (String, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/webhook", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            axum::serve(listener, router).await.unwrap();
        });
        (url, task)
    }

    #[tokio::test]
    async fn webhook_bodies_up_to_githubs_cap_are_read_larger_are_413() {
        let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen_in = Arc::clone(&seen);
        let check: Arc<WebhookCheck> = Arc::new(move |_h: &HeaderMap, body: &[u8]| {
            seen_in.lock().unwrap().push(body.len());
            Ok(None)
        });
        let router = router(State::default(), Arc::new(|_t| {}), Some(check));
        let (url, task) = serve(router).await;
        let client = reqwest::Client::new();

        // Bigger than axum's implicit 2 MB, within GitHub's 25 MB: read whole.
        let below = WEBHOOK_BODY_LIMIT - 1024;
        let r = client
            .post(&url)
            .body(vec![b'x'; below])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(*seen.lock().unwrap(), vec![below]);

        let r = client
            .post(&url)
            .body(vec![b'x'; WEBHOOK_BODY_LIMIT + 1])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        // Never handed to the signature check.
        assert_eq!(seen.lock().unwrap().len(), 1);
        task.abort();
    }
}
