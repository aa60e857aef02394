//! The pod index: which pod owns a source address, which node a pod runs on and
//! which pods run on a node. Pure state, fed in watch order by `watch.rs`.
//!
//! Rules, from the Kubernetes Pod API
//! (<https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/pod-v1/>):
//! - `status.podIPs` (or the older single `status.podIP`) are the pod's addresses.
//!   A `spec.hostNetwork` pod reports the node's address there, which every other
//!   host-network process shares, so such pods own no address here.
//! - A pod in phase `Succeeded` or `Failed` keeps `status.podIP` after its sandbox
//!   is gone and the address may already belong to a new pod, so it owns none.
//! - An address is owned by the pod whose event claiming it came last; a delete (or
//!   a later event without the address) releases only that pod's claim, so a stale
//!   DELETED of the previous holder, delivered after the new pod's ADDED, does not
//!   unmap the new pod.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

/// What the index needs to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: Option<String>,
    /// Addresses from `status.podIPs`/`podIP`, canonical (IPv4-mapped as IPv4).
    pub ips: Vec<IpAddr>,
    pub host_network: bool,
    /// Phase `Succeeded` or `Failed`.
    pub terminal: bool,
}

/// The pods of one node, by namespace: what an agent on that node may report for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePods {
    by_namespace: HashMap<Arc<str>, HashSet<Arc<str>>>,
}

impl NodePods {
    /// Whether a pod of `namespace` (named `pod`, when the sender named one) runs
    /// on this node.
    pub fn allows(&self, namespace: &str, pod: Option<&str>) -> bool {
        match (self.by_namespace.get(namespace), pod) {
            (Some(pods), Some(p)) => pods.contains(p),
            (Some(pods), None) => !pods.is_empty(),
            (None, _) => false,
        }
    }

    pub fn len(&self) -> usize {
        self.by_namespace.values().map(HashSet::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[derive(Debug, Clone)]
struct Entry {
    uid: String,
    node: Option<Arc<str>>,
    ips: Vec<IpAddr>,
}

type PodKey = (Arc<str>, Arc<str>);

/// Pods by address, by node and by name.
#[derive(Debug, Default)]
pub struct PodIndex {
    pods: HashMap<PodKey, Entry>,
    /// Claimants of an address in event order; the last one owns it.
    by_ip: HashMap<IpAddr, Vec<PodKey>>,
    by_node: HashMap<Arc<str>, Arc<NodePods>>,
    synced: bool,
}

impl PodIndex {
    /// Whether a full list has been loaded (before that, nothing is known).
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Replaces everything with a fresh list (the watch's initial list or a relist).
    pub fn replace_all(&mut self, pods: Vec<PodFacts>) {
        *self = PodIndex::default();
        for p in pods {
            self.apply(p);
        }
        self.synced = true;
    }

    /// An ADDED or MODIFIED pod.
    pub fn apply(&mut self, p: PodFacts) {
        let key: PodKey = (Arc::from(p.namespace.as_str()), Arc::from(p.name.as_str()));
        let ips: Vec<IpAddr> = if p.host_network || p.terminal {
            Vec::new()
        } else {
            let mut v: Vec<IpAddr> = p.ips.iter().map(|ip| ip.to_canonical()).collect();
            v.dedup();
            v
        };
        let node: Option<Arc<str>> = p.node.as_deref().map(Arc::from);
        let old = self.pods.remove(&key);
        if let Some(old) = &old {
            if old.node != node {
                self.leave_node(&key, old.node.as_ref());
            }
            for ip in old.ips.iter().filter(|ip| !ips.contains(ip)) {
                self.release(ip, &key);
            }
        }
        for ip in &ips {
            let claims = self.by_ip.entry(*ip).or_default();
            if !old.as_ref().is_some_and(|o| o.ips.contains(ip)) || !claims.contains(&key) {
                claims.retain(|k| k != &key);
                claims.push(key.clone());
            }
        }
        if let Some(n) = &node {
            let view = Arc::make_mut(self.by_node.entry(n.clone()).or_default());
            view.by_namespace
                .entry(key.0.clone())
                .or_default()
                .insert(key.1.clone());
        }
        self.pods.insert(
            key,
            Entry {
                uid: p.uid,
                node,
                ips,
            },
        );
    }

    /// A DELETED pod. A delete for another incarnation (other uid) of the same name
    /// is stale and ignored.
    pub fn delete(&mut self, namespace: &str, name: &str, uid: &str) {
        let key: PodKey = (Arc::from(namespace), Arc::from(name));
        let Some(old) = self.pods.get(&key) else {
            return;
        };
        if !uid.is_empty() && !old.uid.is_empty() && old.uid != uid {
            return;
        }
        let Some(old) = self.pods.remove(&key) else {
            return;
        };
        for ip in &old.ips {
            self.release(ip, &key);
        }
        self.leave_node(&key, old.node.as_ref());
    }

    fn release(&mut self, ip: &IpAddr, key: &PodKey) {
        if let Some(claims) = self.by_ip.get_mut(ip) {
            claims.retain(|k| k != key);
            if claims.is_empty() {
                self.by_ip.remove(ip);
            }
        }
    }

    fn leave_node(&mut self, key: &PodKey, node: Option<&Arc<str>>) {
        let Some(n) = node else { return };
        if let Some(view) = self.by_node.get_mut(n) {
            let view = Arc::make_mut(view);
            if let Some(names) = view.by_namespace.get_mut(&key.0) {
                names.remove(&key.1);
                if names.is_empty() {
                    view.by_namespace.remove(&key.0);
                }
            }
            if view.by_namespace.is_empty() {
                self.by_node.remove(n);
            }
        }
    }

    /// The namespace of the pod owning `ip` (any form: IPv4-mapped is IPv4).
    pub fn namespace_of(&self, ip: IpAddr) -> Option<Arc<str>> {
        let key = self.by_ip.get(&ip.to_canonical())?.last()?;
        Some(key.0.clone())
    }

    /// The node a pod runs on.
    pub fn node_of(&self, namespace: &str, name: &str) -> Option<Arc<str>> {
        self.pods
            .get(&(Arc::from(namespace), Arc::from(name)))?
            .node
            .clone()
    }

    /// The pods of a node (empty when none is known).
    pub fn node(&self, node: &str) -> Arc<NodePods> {
        self.by_node.get(node).cloned().unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ns: &str, name: &str, uid: &str, node: &str, ips: &[&str]) -> PodFacts {
        PodFacts {
            namespace: ns.into(),
            name: name.into(),
            uid: uid.into(),
            node: Some(node.into()),
            ips: ips.iter().map(|s| s.parse().unwrap()).collect(),
            host_network: false,
            terminal: false,
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn addresses_map_to_namespaces_in_both_families() {
        let mut idx = PodIndex::default();
        idx.replace_all(vec![pod("shop", "a", "1", "n1", &["10.0.0.5", "fd00::5"])]);
        assert!(idx.synced());
        assert_eq!(idx.namespace_of(ip("10.0.0.5")).as_deref(), Some("shop"));
        assert_eq!(
            idx.namespace_of(ip("::ffff:10.0.0.5")).as_deref(),
            Some("shop")
        );
        assert_eq!(idx.namespace_of(ip("fd00::5")).as_deref(), Some("shop"));
        assert_eq!(idx.namespace_of(ip("10.0.0.6")), None);
    }

    #[test]
    fn host_network_and_finished_pods_own_no_address_but_stay_on_their_node() {
        let mut idx = PodIndex::default();
        let mut host = pod("kube-system", "proxy", "1", "n1", &["192.168.1.10"]);
        host.host_network = true;
        let mut done = pod("batch", "job", "2", "n1", &["10.0.0.9"]);
        done.terminal = true;
        idx.replace_all(vec![host, done]);
        assert_eq!(idx.namespace_of(ip("192.168.1.10")), None);
        assert_eq!(idx.namespace_of(ip("10.0.0.9")), None);
        assert!(idx.node("n1").allows("kube-system", Some("proxy")));
        assert!(idx.node("n1").allows("batch", None));
    }

    #[test]
    fn a_reused_address_belongs_to_the_new_pod_whatever_order_the_delete_comes_in() {
        // DELETED of the old holder after the new pod's ADDED (late delete).
        let mut idx = PodIndex::default();
        idx.replace_all(vec![pod("shop", "old", "1", "n1", &["10.0.0.7"])]);
        idx.apply(pod("billing", "new", "2", "n1", &["10.0.0.7"]));
        assert_eq!(idx.namespace_of(ip("10.0.0.7")).as_deref(), Some("billing"));
        idx.delete("shop", "old", "1");
        assert_eq!(idx.namespace_of(ip("10.0.0.7")).as_deref(), Some("billing"));
        // Delete first, then the new pod.
        let mut idx = PodIndex::default();
        idx.replace_all(vec![pod("shop", "old", "1", "n1", &["10.0.0.7"])]);
        idx.delete("shop", "old", "1");
        assert_eq!(idx.namespace_of(ip("10.0.0.7")), None);
        idx.apply(pod("billing", "new", "2", "n1", &["10.0.0.7"]));
        assert_eq!(idx.namespace_of(ip("10.0.0.7")).as_deref(), Some("billing"));
    }

    #[test]
    fn a_stale_delete_of_a_recreated_name_is_ignored() {
        let mut idx = PodIndex::default();
        idx.replace_all(vec![pod("shop", "web-0", "new-uid", "n1", &["10.0.0.3"])]);
        idx.delete("shop", "web-0", "old-uid");
        assert_eq!(idx.namespace_of(ip("10.0.0.3")).as_deref(), Some("shop"));
        assert_eq!(idx.node_of("shop", "web-0").as_deref(), Some("n1"));
    }

    #[test]
    fn node_views_follow_pods_and_are_snapshots() {
        let mut idx = PodIndex::default();
        idx.replace_all(vec![
            pod("shop", "a", "1", "n1", &["10.0.0.1"]),
            pod("billing", "b", "2", "n2", &["10.0.0.2"]),
        ]);
        let n1 = idx.node("n1");
        assert!(n1.allows("shop", Some("a")));
        assert!(!n1.allows("shop", Some("b")));
        assert!(!n1.allows("billing", None));
        idx.delete("shop", "a", "1");
        assert!(!idx.node("n1").allows("shop", None));
        // A view taken before keeps its content (requests route with one view).
        assert!(n1.allows("shop", None));
        // A pod moving its address keeps only the new one.
        idx.apply(pod("billing", "b", "2", "n2", &["10.0.0.20"]));
        assert_eq!(idx.namespace_of(ip("10.0.0.2")), None);
        assert_eq!(
            idx.namespace_of(ip("10.0.0.20")).as_deref(),
            Some("billing")
        );
    }
}
