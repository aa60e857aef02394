//! The object store: objects by (resource, namespace, name), the global
//! `resourceVersion` counter, server-set metadata, defaults, and the log of changes
//! that watches replay.
//!
//! Server-set metadata (`uid`, `resourceVersion`, `generation`, `creationTimestamp`)
//! follows "Kubernetes API Concepts" and the object metadata reference:
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions>,
//! <https://kubernetes.io/docs/reference/kubernetes-api/common-definitions/object-meta/>.
//! Like the API server, a write that changes nothing is not stored and keeps the
//! object's `resourceVersion` ("no-op updates"). Defaults follow the API reference of
//! each type, e.g. <https://kubernetes.io/docs/reference/kubernetes-api/workload-resources/deployment-v1/>.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::resources::Resource;

/// `(group/plural, namespace, name)`; namespace is empty for cluster-scoped objects.
pub type Key = (String, String, String);

pub fn key(res: &Resource, ns: &str, name: &str) -> Key {
    (
        format!("{}/{}", res.group, res.plural),
        ns.to_string(),
        name.to_string(),
    )
}

/// One change, as a watch reports it.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: u64,
    pub res: Resource,
    pub namespace: String,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind: &'static str,
    pub object: Value,
}

/// One HTTP request the fake received, in arrival order.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Raw query string, without `?`.
    pub query: String,
    pub content_type: Option<String>,
    /// `fieldManager` query parameter.
    pub field_manager: Option<String>,
    /// `force=true` was sent.
    pub force: bool,
    /// Body as JSON (YAML bodies are converted), `None` when empty.
    pub body: Option<Value>,
    /// HTTP status code answered.
    pub status: u16,
    /// Who sent it: the authenticated user name (`system:anonymous` without
    /// credentials, empty when authentication failed).
    pub user: String,
    /// What the authorizer was asked (verb, group, resource, namespace, name).
    pub attributes: crate::rbac::Attributes,
}

impl RecordedRequest {
    /// Whether the request asked to change state (POST, PUT, PATCH, DELETE).
    pub fn is_write(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH" | "DELETE")
    }

    /// Whether the request sent an object or a patch (POST, PUT, PATCH): what
    /// `fieldValidation` applies to.
    pub fn sends_object(&self) -> bool {
        matches!(self.method.as_str(), "POST" | "PUT" | "PATCH")
    }

    /// Whether this was a server-side apply (`application/apply-patch+yaml`).
    pub fn is_apply(&self) -> bool {
        self.method == "PATCH"
            && self
                .content_type
                .as_deref()
                .is_some_and(|c| c.starts_with("application/apply-patch+yaml"))
    }
}

/// How the simulated workload controller behaves.
#[derive(Debug, Clone)]
pub struct RolloutSettings {
    /// Time per rollout step (one pod, or one batch of `maxUnavailable` DaemonSet pods).
    pub step_delay: Duration,
    /// Nodes a DaemonSet schedules on.
    pub nodes: u32,
    /// When off, workloads are never rolled: status only changes through
    /// [`crate::FakeKube::set_status`].
    pub enabled: bool,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        RolloutSettings {
            step_delay: Duration::from_millis(20),
            nodes: 3,
            enabled: true,
        }
    }
}

#[derive(Debug, Default)]
pub struct State {
    pub objects: BTreeMap<Key, Value>,
    pub rv: u64,
    uid_seq: u64,
    pub log: Vec<Change>,
    pub requests: Vec<RecordedRequest>,
    /// Stored changes caused by clients (not by the simulated controller).
    pub client_mutations: u64,
    pub bad_images: BTreeSet<String>,
    pub rollout: RolloutSettings,
    /// When set, the only bearer token accepted (as the admin); see
    /// [`crate::FakeKube::set_token`].
    pub token: Option<String>,
    /// Bearer tokens the fake authenticates, and who they are.
    pub tokens: BTreeMap<String, Credential>,
    /// Watches from before this version answer 410 Expired (etcd compaction).
    pub compacted: u64,
    ip_seq: u32,
}

/// What a bearer token authenticates as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Credential {
    /// A ServiceAccount token: valid only while the ServiceAccount exists, as the
    /// API server's service-account token authenticator checks.
    ServiceAccount { namespace: String, name: String },
    /// A user (or admin) credential, like a client certificate.
    User(crate::rbac::User),
}

/// RFC 3339 UTC timestamp with seconds, as `metav1.Time` serialises.
pub fn now_rfc3339() -> String {
    format_time(SystemTime::now(), false)
}

fn format_time(t: SystemTime, micros: bool) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    if micros {
        format!(
            "{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{:06}Z",
            d.subsec_micros()
        )
    } else {
        format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}Z")
    }
}

/// Resources whose `status` is a subresource: the main endpoint neither sets nor
/// changes it.
fn has_status(res: &Resource) -> bool {
    res.is_workload() || res.is("", "namespaces") || res.is("", "services") || res.is("", "pods")
}

impl State {
    pub fn new() -> Self {
        let mut s = State::default();
        // A cluster starts with these namespaces.
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            let res = crate::resources::RESOURCES[0];
            let obj = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            let obj = s.prepare(&res, None, obj, false);
            s.store(&res, obj, "ADDED", false);
        }
        for obj in crate::rbac::bootstrap_objects() {
            let kind = obj["kind"].as_str().unwrap_or("");
            if let Some(res) = crate::resources::RESOURCES
                .iter()
                .find(|r| r.kind == kind && r.group == "rbac.authorization.k8s.io")
                .copied()
            {
                let obj = s.prepare(&res, None, obj, false);
                s.store(&res, obj, "ADDED", false);
            }
        }
        s
    }

    pub fn get(&self, res: &Resource, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&key(res, ns, name))
    }

    pub fn namespace_exists(&self, ns: &str) -> bool {
        self.objects
            .contains_key(&(String::from("/namespaces"), String::new(), ns.to_string()))
    }

    /// Objects of one resource, in one namespace or all, sorted by namespace and name.
    pub fn list(&self, res: &Resource, ns: Option<&str>) -> Vec<&Value> {
        let prefix = format!("{}/{}", res.group, res.plural);
        self.objects
            .iter()
            .filter(|((r, n, _), _)| *r == prefix && ns.is_none_or(|want| want == n))
            .map(|(_, v)| v)
            .collect()
    }

    /// Server-set metadata, status handling and defaults for an object about to be
    /// stored. `keep_status` lets the simulated controller write status.
    pub fn prepare(
        &mut self,
        res: &Resource,
        old: Option<&Value>,
        mut obj: Value,
        keep_status: bool,
    ) -> Value {
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let md = &mut obj["metadata"];
        match old {
            Some(o) => {
                for f in ["uid", "creationTimestamp", "generation", "resourceVersion"] {
                    match o["metadata"].get(f) {
                        Some(v) => md[f] = v.clone(),
                        None => {
                            if let Some(m) = md.as_object_mut() {
                                m.remove(f);
                            }
                        }
                    }
                }
            }
            None => {
                self.uid_seq += 1;
                md["uid"] = json!(format!(
                    "6d6f7000-{:04x}-4000-8000-{:012x}",
                    (self.uid_seq >> 48) & 0xffff,
                    self.uid_seq & 0xffff_ffff_ffff
                ));
                md["creationTimestamp"] = json!(now_rfc3339());
                if let Some(m) = md.as_object_mut() {
                    m.remove("resourceVersion");
                    m.remove("generation");
                }
            }
        }
        if res.namespaced {
            md["namespace"] = json!(ns);
        } else if let Some(m) = md.as_object_mut() {
            // Cluster-scoped objects have no namespace, whatever the body said.
            m.remove("namespace");
        }
        if has_status(res) && !keep_status {
            match old {
                Some(o) if !o["status"].is_null() => obj["status"] = o["status"].clone(),
                _ => {
                    if let Some(m) = obj.as_object_mut() {
                        m.remove("status");
                    }
                }
            }
        }
        self.defaults(res, old, &mut obj);
        if res.is_workload() {
            let generation = match old {
                None => 1,
                Some(o) => {
                    let g = o["metadata"]["generation"].as_i64().unwrap_or(1);
                    if o["spec"] != obj["spec"] { g + 1 } else { g }
                }
            };
            obj["metadata"]["generation"] = json!(generation);
        }
        obj
    }

    fn defaults(&mut self, res: &Resource, old: Option<&Value>, obj: &mut Value) {
        fn set(v: &mut Value, k: &str, d: Value) {
            if v.get(k).is_none_or(Value::is_null) {
                v[k] = d;
            }
        }
        match (res.group, res.plural) {
            ("", "namespaces") => {
                let name = obj["metadata"]["name"].clone();
                obj["metadata"]["labels"]["kubernetes.io/metadata.name"] = name;
                set(obj, "spec", json!({"finalizers": ["kubernetes"]}));
                set(obj, "status", json!({"phase": "Active"}));
            }
            ("", "services") => {
                let spec = &mut obj["spec"];
                set(spec, "type", json!("ClusterIP"));
                set(spec, "sessionAffinity", json!("None"));
                set(spec, "internalTrafficPolicy", json!("Cluster"));
                set(spec, "ipFamilies", json!(["IPv4"]));
                set(spec, "ipFamilyPolicy", json!("SingleStack"));
                if spec.get("clusterIP").is_none_or(Value::is_null) {
                    let ip = match old.and_then(|o| o["spec"]["clusterIP"].as_str()) {
                        Some(ip) => ip.to_string(),
                        None => {
                            self.ip_seq += 1;
                            format!("10.96.{}.{}", self.ip_seq / 250, self.ip_seq % 250 + 1)
                        }
                    };
                    spec["clusterIP"] = json!(ip);
                    spec["clusterIPs"] = json!([ip]);
                }
                if let Some(ports) = spec["ports"].as_array_mut() {
                    for p in ports {
                        set(p, "protocol", json!("TCP"));
                        let port = p["port"].clone();
                        set(p, "targetPort", port);
                    }
                }
                set(obj, "status", json!({"loadBalancer": {}}));
            }
            ("apps", "deployments") => {
                let spec = &mut obj["spec"];
                set(spec, "replicas", json!(1));
                set(spec, "revisionHistoryLimit", json!(10));
                set(spec, "progressDeadlineSeconds", json!(600));
                set(spec, "strategy", json!({"type": "RollingUpdate"}));
                if spec["strategy"]["type"] == "RollingUpdate" {
                    set(&mut spec["strategy"], "rollingUpdate", json!({}));
                    set(
                        &mut spec["strategy"]["rollingUpdate"],
                        "maxSurge",
                        json!("25%"),
                    );
                    set(
                        &mut spec["strategy"]["rollingUpdate"],
                        "maxUnavailable",
                        json!("25%"),
                    );
                }
                pod_defaults(&mut spec["template"]["spec"]);
                set(obj, "status", json!({}));
            }
            ("apps", "daemonsets") => {
                let spec = &mut obj["spec"];
                set(spec, "revisionHistoryLimit", json!(10));
                set(spec, "updateStrategy", json!({"type": "RollingUpdate"}));
                if spec["updateStrategy"]["type"] == "RollingUpdate" {
                    set(&mut spec["updateStrategy"], "rollingUpdate", json!({}));
                    set(
                        &mut spec["updateStrategy"]["rollingUpdate"],
                        "maxUnavailable",
                        json!(1),
                    );
                    set(
                        &mut spec["updateStrategy"]["rollingUpdate"],
                        "maxSurge",
                        json!(0),
                    );
                }
                pod_defaults(&mut spec["template"]["spec"]);
                set(
                    obj,
                    "status",
                    json!({
                        "currentNumberScheduled": 0, "desiredNumberScheduled": 0,
                        "numberMisscheduled": 0, "numberReady": 0,
                    }),
                );
            }
            ("", "pods") => {
                pod_defaults(&mut obj["spec"]);
                set(
                    obj,
                    "status",
                    json!({"phase": "Pending", "qosClass": "BestEffort"}),
                );
            }
            _ => {}
        }
    }

    /// Stores a prepared object under a new `resourceVersion` and logs the change.
    pub fn store(
        &mut self,
        res: &Resource,
        mut obj: Value,
        kind: &'static str,
        by_client: bool,
    ) -> Value {
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        self.objects.insert(key(res, &ns, &name), obj.clone());
        self.log.push(Change {
            rv: self.rv,
            res: *res,
            namespace: ns,
            kind,
            object: obj.clone(),
        });
        if by_client {
            self.client_mutations += 1;
        }
        obj
    }

    /// Removes an object; the DELETED event carries a fresh `resourceVersion`.
    pub fn remove(
        &mut self,
        res: &Resource,
        ns: &str,
        name: &str,
        by_client: bool,
    ) -> Option<Value> {
        let mut obj = self.objects.remove(&key(res, ns, name))?;
        self.rv += 1;
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.log.push(Change {
            rv: self.rv,
            res: *res,
            namespace: ns.to_string(),
            kind: "DELETED",
            object: obj.clone(),
        });
        if by_client {
            self.client_mutations += 1;
        }
        Some(obj)
    }
}

fn pod_defaults(spec: &mut Value) {
    fn set(v: &mut Value, k: &str, d: Value) {
        if v.get(k).is_none_or(Value::is_null) {
            v[k] = d;
        }
    }
    if !spec.is_object() {
        return;
    }
    set(spec, "restartPolicy", json!("Always"));
    set(spec, "dnsPolicy", json!("ClusterFirst"));
    set(spec, "schedulerName", json!("default-scheduler"));
    set(spec, "securityContext", json!({}));
    set(spec, "terminationGracePeriodSeconds", json!(30));
    for list in ["containers", "initContainers"] {
        if let Some(cs) = spec[list].as_array_mut() {
            for c in cs {
                let image = c["image"].as_str().unwrap_or("");
                let tagless = !image.contains('@')
                    && image
                        .rsplit('/')
                        .next()
                        .is_none_or(|last| !last.contains(':'));
                let policy = if image.ends_with(":latest") || tagless {
                    "Always"
                } else {
                    "IfNotPresent"
                };
                set(c, "imagePullPolicy", json!(policy));
                set(c, "terminationMessagePath", json!("/dev/termination-log"));
                set(c, "terminationMessagePolicy", json!("File"));
                set(c, "resources", json!({}));
                if let Some(ports) = c["ports"].as_array_mut() {
                    for p in ports {
                        set(p, "protocol", json!("TCP"));
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_788_949);
        assert_eq!(format_time(t, false), "2026-11-27T14:15:49Z");
        assert_eq!(format_time(UNIX_EPOCH, true), "1970-01-01T00:00:00.000000Z");
    }
}
