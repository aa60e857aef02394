//! What both fakes share: binding a loopback server, counting write requests by
//! route, and failing requests on demand.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::task::JoinHandle;

/// Errors starting a fake.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The loopback listener could not be bound.
    #[error("cannot bind a fake server on 127.0.0.1:0: {0}")]
    Bind(#[source] std::io::Error),
}

/// Which requests an injected failure applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Any request, reads included (observe failures).
    Any,
    /// Only POST/PUT/PATCH/DELETE (apply failures).
    Writes,
}

#[derive(Debug, Default)]
struct Inner {
    /// `"METHOD /route/{pattern}"` → number of write requests received.
    writes: BTreeMap<String, u64>,
    /// Every request received, in order, as `"METHOD /actual/path"`.
    log: Vec<String>,
    /// Pending injected failures: (status, how many left, which requests).
    fail: Option<(StatusCode, u32, FailOn)>,
}

/// Counts requests by route and injects failures. Shared by the fakes' handles.
///
/// Write requests are counted when they arrive, before any injected failure, so
/// "zero writes" means the client sent none, whatever the server answered.
#[derive(Debug, Default, Clone)]
pub struct Recorder {
    inner: Arc<Mutex<Inner>>,
}

/// The fakes never panic while holding a lock, but a test thread might; the data
/// is still consistent then, so a poisoned lock is used as is.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn is_write(m: &Method) -> bool {
    matches!(
        *m,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

impl Recorder {
    /// Total write requests (POST/PUT/PATCH/DELETE) received.
    pub fn writes(&self) -> u64 {
        lock(&self.inner).writes.values().sum()
    }

    /// Write requests by route, keyed `"METHOD /route/{param}"` (the route
    /// pattern, e.g. `"POST /api/dashboards/db"`, `"DELETE /api/datasources/uid/{uid}"`).
    pub fn write_counts(&self) -> BTreeMap<String, u64> {
        lock(&self.inner).writes.clone()
    }

    /// Write requests to one route pattern, e.g. `"POST /api/dashboards/db"`.
    pub fn writes_to(&self, route: &str) -> u64 {
        lock(&self.inner).writes.get(route).copied().unwrap_or(0)
    }

    /// Every request received so far, in order, as `"METHOD /path"` (the
    /// actual path, not the pattern).
    pub fn requests(&self) -> Vec<String> {
        lock(&self.inner).log.clone()
    }

    /// Forgets counted writes and logged requests (e.g. after the first apply,
    /// before asserting that a second one writes nothing).
    pub fn reset(&self) {
        let mut g = lock(&self.inner);
        g.writes.clear();
        g.log.clear();
    }

    /// Answers the next `n` requests (of the kind `on`) with `status` instead of
    /// handling them; state is not touched by a failed request.
    pub fn fail_next(&self, n: u32, status: u16, on: FailOn) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        lock(&self.inner).fail = (n > 0).then_some((status, n, on));
    }

    /// Records the request; returns the status to fail it with, if one is due.
    fn observe(&self, method: &Method, route: Option<&str>, path: &str) -> Option<StatusCode> {
        let mut g = lock(&self.inner);
        g.log.push(format!("{method} {path}"));
        let write = is_write(method);
        if write {
            let key = format!("{method} {}", route.unwrap_or("<no route>"));
            *g.writes.entry(key).or_insert(0) += 1;
        }
        let (status, left, on) = g.fail?;
        if on == FailOn::Writes && !write {
            return None;
        }
        g.fail = (left > 1).then_some((status, left - 1, on));
        Some(status)
    }
}

/// Middleware: count the request, then fail it if a failure is due.
async fn record(State(rec): State<Recorder>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string());
    let path = req.uri().path().to_string();
    if let Some(status) = rec.observe(req.method(), route.as_deref(), &path) {
        return (status, Body::from("injected failure")).into_response();
    }
    next.run(req).await
}

/// A running fake server; aborted when dropped so tests never leak servers.
#[derive(Debug)]
pub(crate) struct Server {
    pub(crate) addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Binds `127.0.0.1:0` and serves `router` with the recorder in front of every
/// routed request. Unrouted requests are recorded too (route `<no route>`) and
/// answered by `not_found`, so a client calling a wrong path still shows up in
/// the write counts and gets the real server's 404.
pub(crate) async fn serve(
    router: Router,
    rec: Recorder,
    not_found: fn() -> Response,
) -> Result<Server, Error> {
    let fallback_rec = rec.clone();
    // `route_layer` (not `layer`) so the middleware runs after routing and sees
    // the matched route pattern.
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(rec, record))
        .fallback(move |method: Method, uri: axum::http::Uri| {
            let rec = fallback_rec.clone();
            async move {
                if let Some(status) = rec.observe(&method, None, uri.path()) {
                    return (status, Body::from("injected failure")).into_response();
                }
                not_found()
            }
        });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(Error::Bind)?;
    let addr = listener.local_addr().map_err(Error::Bind)?;
    let task = tokio::spawn(async move {
        // The server only stops when the handle is dropped (abort); an accept
        // error ends the fake, and the test then fails on connection errors.
        let _ = axum::serve(listener, router).await;
    });
    Ok(Server { addr, task })
}
