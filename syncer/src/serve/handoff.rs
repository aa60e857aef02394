//! Passing a webhook from a standby replica to the leader.
//!
//! Both replicas are Ready (a standby serves `/status` and `/metrics`), so the
//! Service sends a push webhook to either. A standby cannot sync; it records the
//! request in the ConfigMap `mop-sync-request` in MOP's namespace, which the
//! leader watches and turns into a sync at once — the pattern of Flux's
//! notification-controller (a receiver annotates, the controller watches). The
//! Lease itself is not used: writing it would race the leader's renewals.

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::{mpsc, watch};

use super::server::Trigger;

pub const NAME: &str = "mop-sync-request";
const KEY: &str = "requested";
const FIELD_MANAGER: &str = "mop-webhook";

/// Records a sync request for the leader (called on a standby).
pub async fn request(client: &kube::Client, namespace: &str, t: &Trigger) -> Result<(), String> {
    let what = match t {
        Trigger::Push { provider, commit } => format!("{provider} push {commit}"),
        Trigger::FileChange => "file change".to_string(),
        Trigger::Requested(r) => r.clone(),
    };
    // The time makes every request a change the watch sees, even for one commit.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let data = serde_json::json!({ KEY: format!("{nanos} {what}") });
    crate::apply::kubernetes::apply_own_config_map(client, namespace, NAME, FIELD_MANAGER, data)
        .await
        .map_err(|e| format!("cannot record the sync request in ConfigMap {namespace}/{NAME}: {e}"))
}

/// Watches for sync requests and, while this replica leads, triggers a sync for
/// each new one. Runs until the trigger channel closes.
pub async fn watch_requests(
    client: kube::Client,
    namespace: String,
    leader: watch::Receiver<bool>,
    triggers: mpsc::Sender<Trigger>,
) {
    let api = Api::<ConfigMap>::namespaced(client, &namespace);
    let cfg = watcher::Config::default().fields(&format!("metadata.name={NAME}"));
    let mut seen: Option<String> = None;
    let mut first = true;
    // kube's watcher retries a failed list or watch at once, forever: without
    // a backoff a watch the API server refuses (403 after an RBAC change, 5xx)
    // would spin, hammering the API server.
    let mut stream = watcher(api, cfg).default_backoff().boxed();
    while let Some(ev) = stream.next().await {
        let cm = match ev {
            Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm)) => cm,
            Ok(watcher::Event::InitDone) => {
                first = false;
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                // The watcher re-lists after the backoff; requests made
                // meanwhile are still picked up by the next poll.
                tracing::debug!(error = %e, "sync-request watch interrupted");
                continue;
            }
        };
        let value = cm.data.and_then(|mut d| d.remove(KEY));
        // What was requested before this process started has been served by the
        // start-up sync.
        if first || value == seen {
            seen = value;
            continue;
        }
        seen = value;
        if *leader.borrow() {
            tracing::info!(
                request = seen.as_deref().unwrap_or(""),
                "sync requested through a standby replica"
            );
            if triggers.is_closed() {
                return;
            }
            let _ = triggers.try_send(Trigger::Requested(seen.clone().unwrap_or_default()));
        }
    }
}
