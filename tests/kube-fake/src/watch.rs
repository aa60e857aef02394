//! Watches: `?watch=true` streams one JSON object per line,
//! `{"type":"ADDED|MODIFIED|DELETED|BOOKMARK|ERROR","object":{...}}`.
//!
//! Follows "Kubernetes API Concepts", sections "Efficient detection of changes",
//! "Watch bookmarks" and "Streaming lists":
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>.
//! Without `resourceVersion` (or with `0`) a watch first reports every matching
//! object as ADDED, then changes; with a version it reports the changes after it.
//! `sendInitialEvents=true` ends the initial ADDED events with a BOOKMARK annotated
//! `k8s.io/initial-events-end: "true"`. A watch from a version older than the last
//! [`crate::FakeKube::compact`] gets one ERROR event with a 410 `Expired` Status
//! ("410 Gone responses" in the same page).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::Response;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::Inner;
use crate::resources::Target;
use crate::selector::{FieldSelector, LabelSelector};
use crate::server::{Query, Reply, selectors};
use crate::status::ApiError;
use crate::store::Change;

struct Filter {
    target: Target,
    labels: LabelSelector,
    fields: FieldSelector,
}

impl Filter {
    fn matches(&self, c: &Change) -> bool {
        c.res.group == self.target.resource.group
            && c.res.plural == self.target.resource.plural
            && self
                .target
                .namespace
                .as_deref()
                .is_none_or(|ns| ns == c.namespace)
            && self.labels.matches(&c.object["metadata"]["labels"])
            && self.fields.matches(&c.object)
    }
}

fn line(kind: &str, object: &Value) -> Bytes {
    let mut s = json!({"type": kind, "object": object}).to_string();
    s.push('\n');
    Bytes::from(s)
}

pub fn start(inner: &Arc<Inner>, t: &Target, q: &Query) -> Result<Reply, ApiError> {
    let (labels, fields) = selectors(q)?;
    let filter = Filter {
        target: t.clone(),
        labels,
        fields,
    };
    let timeout = match q.get("timeoutSeconds") {
        Some(v) => v
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("invalid timeoutSeconds: {v}")))?,
        None => 1800,
    };
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let from: Option<u64> = match q.get("resourceVersion").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(v) => Some(
            v.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid resource version: {v}")))?,
        ),
    };
    if send_initial && q.get("resourceVersionMatch").map(String::as_str) != Some("NotOlderThan") {
        return Err(ApiError::bad_request(
            "sendInitialEvents is only supported with resourceVersionMatch=NotOlderThan",
        ));
    }

    // Subscribe before reading the store, so no change falls between the two.
    let changed = inner.changed.subscribe();
    let (initial, start_rv) = {
        let s = inner
            .state
            .lock()
            .map_err(|_| ApiError::bad_request("fake state poisoned"))?;
        let mut lines = Vec::new();
        let start_rv = match from {
            Some(rv) if !send_initial => {
                if rv < s.compacted {
                    // Older than the history kept: one ERROR event, then the stream
                    // ends and the client must list again.
                    lines.push(line("ERROR", &ApiError::gone(rv).body));
                    return Ok(stream(inner, filter, lines, None, timeout));
                }
                rv
            }
            _ => {
                for o in s.list(&t.resource, t.namespace.as_deref()) {
                    let c = Change {
                        rv: 0,
                        res: t.resource,
                        namespace: o["metadata"]["namespace"]
                            .as_str()
                            .unwrap_or("")
                            .to_string(),
                        kind: "ADDED",
                        object: o.clone(),
                    };
                    if filter.matches(&c) {
                        lines.push(line("ADDED", o));
                    }
                }
                if send_initial {
                    lines.push(line(
                        "BOOKMARK",
                        &json!({
                            "kind": t.resource.kind,
                            "apiVersion": t.resource.api_version(),
                            "metadata": {
                                "resourceVersion": s.rv.to_string(),
                                "annotations": {"k8s.io/initial-events-end": "true"},
                            },
                        }),
                    ));
                }
                s.rv
            }
        };
        (lines, start_rv)
    };

    Ok(stream(
        inner,
        filter,
        initial,
        Some((start_rv, changed)),
        timeout,
    ))
}

/// Streams `initial`, then (with a start version) every matching change after it
/// until the timeout or until the client goes away.
fn stream(
    inner: &Arc<Inner>,
    filter: Filter,
    initial: Vec<Bytes>,
    follow: Option<(u64, tokio::sync::watch::Receiver<u64>)>,
    timeout: u64,
) -> Reply {
    let (tx, rx) = mpsc::channel::<Result<Bytes, Infallible>>(64);
    let inner = inner.clone();
    let mut ended = inner.watch_epoch.subscribe();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
        for l in initial {
            if tx.send(Ok(l)).await.is_err() {
                return;
            }
        }
        let Some((mut pos, mut changed)) = follow else {
            return;
        };
        loop {
            changed.borrow_and_update();
            let batch: Vec<Bytes> = match inner.state.lock() {
                Ok(s) => {
                    // The log is ordered by version: skip straight to the new part.
                    let from = s.log.partition_point(|c| c.rv <= pos);
                    let lines = s.log[from..]
                        .iter()
                        .filter(|c| filter.matches(c))
                        .map(|c| line(c.kind, &c.object))
                        .collect();
                    pos = s.rv;
                    lines
                }
                Err(_) => return,
            };
            for l in batch {
                if tx.send(Ok(l)).await.is_err() {
                    return;
                }
            }
            tokio::select! {
                r = changed.changed() => if r.is_err() { return },
                () = tokio::time::sleep_until(deadline) => return,
                () = tx.closed() => return,
                _ = ended.changed() => return,
            }
        }
    });

    let mut response = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    Reply::Stream(response)
}
