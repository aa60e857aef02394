//! Who is in the ring: a static list (`--peers`, `--peers-file`) or the
//! EndpointSlices of the headless Service named in `gateway.json`, watched with
//! kube-runtime's watcher (list → watch from the list's `resourceVersion` →
//! relist on 410 Gone) through the gateway's one Kubernetes client
//! (`--kubernetes`), the same that feeds sender identity's pod watch.
//!
//! Readiness gating: only endpoints whose `conditions.ready` is not false are
//! members ("EndpointConditions": a nil `ready` means ready; terminating
//! endpoints are not ready —
//! <https://kubernetes.io/docs/reference/kubernetes-api/service-resources/endpoint-slice-v1/>),
//! so a replica owns traces only while Kubernetes routes traffic to it. A failed
//! read never empties the ring: the last membership stays until a read succeeds.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use mop_gateway_config::RingConfig;
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use futures::StreamExt;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};

use super::{ResultLabel, Ring, RingSettings, View};
use crate::routing::RouteTable;
use crate::telemetry::Metrics;

/// Publishes `View`s for one replica.
pub struct Publisher {
    tx: watch::Sender<Arc<View>>,
    self_addr: Arc<str>,
    metrics: Metrics,
}

impl Publisher {
    pub fn new(tx: watch::Sender<Arc<View>>, self_addr: Arc<str>, metrics: Metrics) -> Self {
        Self {
            tx,
            self_addr,
            metrics,
        }
    }

    /// Replaces the view when anything changed.
    pub fn publish(&self, enabled: bool, members: &[String], trusted: HashSet<IpAddr>) {
        let ring = if enabled {
            Ring::new(members.iter().map(String::as_str))
        } else {
            Ring::default()
        };
        let cur = self.tx.borrow().clone();
        if cur.enabled == enabled && cur.ring == ring && cur.trusted == trusted {
            return;
        }
        let owner = ring.contains(&self.self_addr);
        tracing::info!(
            enabled,
            members = ?ring.members().iter().map(|m| m.addr()).collect::<Vec<_>>(),
            this_replica = %self.self_addr,
            owner,
            "ring membership changed"
        );
        self.metrics.ring.members.set(ring.len() as i64);
        self.metrics.ring.owner.set(i64::from(owner));
        self.tx.send_replace(Arc::new(View {
            enabled,
            ring,
            trusted,
            generation: cur.generation + 1,
        }));
    }

    fn count(&self, ok: bool) {
        self.metrics
            .ring
            .membership_updates
            .get_or_create(&ResultLabel {
                result: if ok { "success" } else { "failure" }.into(),
            })
            .inc();
    }
}

/// Follows `gateway.json`'s ring section: off → an empty, disabled view; on →
/// the static or Kubernetes source, restarted when the section changes.
pub async fn run(
    settings: RingSettings,
    kube: Option<(kube::Client, String)>,
    mut routes: watch::Receiver<Arc<RouteTable>>,
    publisher: Publisher,
    interval: Duration,
    cancel: CancellationToken,
) {
    loop {
        let cfg = routes.borrow_and_update().ring().cloned();
        let source = async {
            match &cfg {
                None => {
                    publisher.publish(false, &[], HashSet::new());
                    std::future::pending::<()>().await;
                }
                Some(_) if settings.is_static() => {
                    run_static(&settings, &publisher, interval).await;
                }
                Some(c) => match &kube {
                    Some((client, namespace)) => {
                        run_kube(client.clone(), namespace, c, &publisher).await;
                    }
                    None => {
                        // Nothing to learn the members from: this replica
                        // samples what it receives rather than guess a ring.
                        publisher.count(false);
                        tracing::error!(
                            service = %c.service,
                            "gateway.json enables the trace ring from EndpointSlices but the gateway has no --kubernetes (nor --peers); it samples what it receives, and kept traces may be incomplete"
                        );
                        publisher.publish(false, &[], HashSet::new());
                        std::future::pending::<()>().await;
                    }
                },
            }
        };
        let changed = async {
            loop {
                if routes.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
                if routes.borrow().ring() != cfg.as_ref() {
                    return;
                }
            }
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = source => {}
            _ = changed => {}
        }
    }
}

/// Static members: `--peers` plus the lines of `--peers-file`, re-read every
/// interval.
async fn run_static(settings: &RingSettings, publisher: &Publisher, interval: Duration) {
    loop {
        match static_members(settings).await {
            Ok((members, trusted)) => {
                publisher.count(true);
                publisher.publish(true, &members, trusted);
            }
            Err(e) => {
                publisher.count(false);
                tracing::error!(error = %e, "cannot read the ring peers; keeping the last membership");
            }
        }
        tokio::time::sleep(interval).await;
    }
}

async fn static_members(settings: &RingSettings) -> Result<(Vec<String>, HashSet<IpAddr>), String> {
    let mut members: Vec<String> = settings.peers.clone();
    if let Some(p) = &settings.peers_file {
        let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
        for (i, line) in text.lines().enumerate() {
            let line = line.split('#').next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            if !line.contains(':') {
                return Err(format!(
                    "{}:{}: {line:?} is not host:port of a ring listener",
                    p.display(),
                    i + 1
                ));
            }
            members.push(line.to_string());
        }
    }
    let mut trusted = HashSet::new();
    for m in &members {
        let addrs = tokio::net::lookup_host(m.as_str())
            .await
            .map_err(|e| format!("peer {m}: {e}"))?;
        trusted.extend(addrs.map(|a| a.ip()));
    }
    Ok((members, trusted))
}

/// What one EndpointSlice contributes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct SliceMembers {
    /// `ip:port` of Ready endpoints.
    pub ready: Vec<String>,
    /// Every endpoint address, Ready or not.
    pub known: Vec<IpAddr>,
}

/// Reads one `discovery.k8s.io/v1` EndpointSlice: the port named `port_name`,
/// and per endpoint its first address (the API says addresses are fungible and
/// consumers may use the first) and its `ready` condition.
pub fn slice_members(slice: &Value, port_name: &str) -> SliceMembers {
    let mut out = SliceMembers::default();
    let addr_type = slice["addressType"].as_str().unwrap_or("");
    if addr_type != "IPv4" && addr_type != "IPv6" {
        return out;
    }
    let port = slice["ports"].as_array().and_then(|ps| {
        ps.iter()
            .find(|p| p["name"].as_str() == Some(port_name))
            .and_then(|p| p["port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
    });
    for ep in slice["endpoints"].as_array().into_iter().flatten() {
        let ips: Vec<IpAddr> = ep["addresses"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str()?.parse().ok())
            .collect();
        out.known.extend(&ips);
        let ready = ep["conditions"]["ready"].as_bool().unwrap_or(true);
        if let (true, Some(port), Some(ip)) = (ready, port, ips.first()) {
            out.ready.push(super::peer_addr(*ip, port));
        }
    }
    out
}

fn publish_slices(publisher: &Publisher, slices: &BTreeMap<String, SliceMembers>) {
    let members: Vec<String> = slices.values().flat_map(|s| s.ready.clone()).collect();
    let trusted: HashSet<IpAddr> = slices.values().flat_map(|s| s.known.clone()).collect();
    publisher.publish(true, &members, trusted);
}

async fn run_kube(client: kube::Client, namespace: &str, cfg: &RingConfig, publisher: &Publisher) {
    let api: Api<EndpointSlice> = Api::namespaced(client, namespace);
    let selector = format!("kubernetes.io/service-name={}", cfg.service);
    let stream =
        watcher::watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let mut slices: BTreeMap<String, SliceMembers> = BTreeMap::new();
    // A relist (first list, or after 410 Gone) is built aside and replaces the
    // membership only once complete: a half-read list never shrinks the ring.
    let mut building: BTreeMap<String, SliceMembers> = BTreeMap::new();
    while let Some(next) = stream.next().await {
        match next {
            Err(e) => {
                publisher.count(false);
                tracing::warn!(error = %e, service = %cfg.service, "EndpointSlice watch failed; keeping the last membership");
                continue;
            }
            Ok(Event::Init) => {
                building.clear();
                continue;
            }
            Ok(Event::InitApply(slice)) => {
                let (name, members) = read_slice(&slice, &cfg.port_name);
                building.insert(name, members);
                continue;
            }
            Ok(Event::InitDone) => slices = std::mem::take(&mut building),
            Ok(Event::Apply(slice)) => {
                let (name, members) = read_slice(&slice, &cfg.port_name);
                slices.insert(name, members);
            }
            Ok(Event::Delete(slice)) => {
                slices.remove(&slice.metadata.name.clone().unwrap_or_default());
            }
        }
        publisher.count(true);
        publish_slices(publisher, &slices);
    }
}

fn read_slice(slice: &EndpointSlice, port_name: &str) -> (String, SliceMembers) {
    let name = slice.metadata.name.clone().unwrap_or_default();
    // The typed object back to its wire form: `slice_members` reads the fields
    // the API documents, and is tested on that form.
    let value = serde_json::to_value(slice).unwrap_or(Value::Null);
    (name, slice_members(&value, port_name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn only_ready_endpoints_with_the_named_port_are_members() {
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": "peers-abc", "labels": {"kubernetes.io/service-name": "peers"}},
            "addressType": "IPv4",
            "ports": [{"name": "admin", "port": 8888}, {"name": "ring", "port": 4319, "protocol": "TCP"}],
            "endpoints": [
                {"addresses": ["10.0.0.1"], "conditions": {"ready": true}},
                {"addresses": ["10.0.0.2"], "conditions": {"ready": false, "terminating": true}},
                {"addresses": ["10.0.0.3"]},
            ],
        });
        let m = slice_members(&slice, "ring");
        assert_eq!(m.ready, vec!["10.0.0.1:4319", "10.0.0.3:4319"]);
        assert_eq!(m.known.len(), 3);
        // No port of that name: known (trusted) but no members.
        assert!(slice_members(&slice, "otlp").ready.is_empty());
        let v6 = json!({"addressType": "IPv6", "ports": [{"name": "ring", "port": 4319}],
            "endpoints": [{"addresses": ["fd00::1"]}]});
        assert_eq!(slice_members(&v6, "ring").ready, vec!["[fd00::1]:4319"]);
    }
}
