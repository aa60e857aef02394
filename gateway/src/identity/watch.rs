//! Feeds the pod index from a Kubernetes watch of every Pod (`list`/`watch` on
//! pods, cluster-wide). kube-runtime's watcher lists, then watches from the list's
//! `resourceVersion`, relists on 410 Gone, and delivers events in the API server's
//! order, which the index relies on for reused addresses. A relist is applied as a
//! whole at its end, so a request never sees a half-loaded index.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use tokio_util::sync::CancellationToken;

use super::pods::{PodFacts, PodIndex};

/// What the index keeps of a Pod object.
pub fn facts(p: &Pod) -> PodFacts {
    let spec = p.spec.as_ref();
    let status = p.status.as_ref();
    let mut ips: Vec<IpAddr> = status
        .and_then(|s| s.pod_ips.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|i| i.ip.parse().ok())
        .collect();
    if let Some(ip) = status
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|s| s.parse::<IpAddr>().ok())
        && !ips.contains(&ip)
    {
        ips.push(ip);
    }
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("");
    PodFacts {
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        name: p.metadata.name.clone().unwrap_or_default(),
        uid: p.metadata.uid.clone().unwrap_or_default(),
        node: spec.and_then(|s| s.node_name.clone()),
        ips,
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
        terminal: matches!(phase, "Succeeded" | "Failed"),
    }
}

fn write(index: &RwLock<PodIndex>) -> std::sync::RwLockWriteGuard<'_, PodIndex> {
    // A panic while holding the lock cannot leave the index half-updated in a way
    // that matters more than stopping identity altogether would.
    index
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Runs until cancelled.
pub async fn run(client: kube::Client, index: Arc<RwLock<PodIndex>>, cancel: CancellationToken) {
    let api: Api<Pod> = Api::all(client);
    let stream = watcher::watcher(api, watcher::Config::default()).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut building: Vec<PodFacts> = Vec::new();
    loop {
        let next = tokio::select! {
            _ = cancel.cancelled() => return,
            next = stream.next() => next,
        };
        match next {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "pod watch failed; retrying (anonymous senders are refused as unavailable until the first list)");
            }
            Some(Ok(Event::Init)) => building.clear(),
            Some(Ok(Event::InitApply(p))) => building.push(facts(&p)),
            Some(Ok(Event::InitDone)) => {
                let n = building.len();
                write(&index).replace_all(std::mem::take(&mut building));
                tracing::info!(pods = n, "pod index loaded");
            }
            Some(Ok(Event::Apply(p))) => write(&index).apply(facts(&p)),
            Some(Ok(Event::Delete(p))) => {
                let f = facts(&p);
                write(&index).delete(&f.namespace, &f.name, &f.uid);
            }
        }
    }
}
