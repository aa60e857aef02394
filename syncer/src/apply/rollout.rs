//! Rollouts of the workloads `versions.yaml` pins (the gateway Deployment and the
//! agent DaemonSet): after the Kubernetes applier changed one, wait until the
//! controller reports it healthy or the health timeout passes; on failure put the
//! last healthy image(s) back and say so.
//!
//! Health follows what `kubectl rollout status` checks ("Deployment status",
//! <https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status>,
//! and "Perform a Rolling Update on a DaemonSet",
//! <https://kubernetes.io/docs/tasks/manage-daemon/update-daemon-set/>): the
//! controller has seen the new generation, every pod runs the new template, and as
//! many are ready and available as wanted. A Deployment whose `Progressing`
//! condition says `ProgressDeadlineExceeded` has failed before the timeout.
//!
//! A rolled-back workload carries [`ROLLED_BACK_FROM`] (the images that failed),
//! written by the same field manager in the same apply as the rollback. While the
//! repository still pins those images, reconciles hold the workload (report the
//! pin as drift, apply nothing), so a revision is never re-tried against a version
//! known to crash; a new pin is applied, and that apply drops the annotation.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, DynamicObject, ListParams};
use kube::runtime::wait::await_condition;
use serde::Serialize;
use serde_json::{Value, json};

use crate::render::{HEALTH_TIMEOUT_ANNOTATION, Kind};

/// Annotation on a workload MOP rolled back: the images (container → image, JSON)
/// whose rollout failed.
pub const ROLLED_BACK_FROM: &str = "mop.dev/rolled-back-from";
const VERSION_LABEL: &str = "app.kubernetes.io/version";
/// Used when a workload has no (readable) health-timeout annotation: the default
/// of `versions.yaml`.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);
/// Container waiting reasons that mean the pod will not become ready by itself.
const STUCK_REASONS: [&str; 6] = [
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
];

/// Whether a kind is a workload MOP rolls out.
pub fn is_workload(kind: Kind) -> bool {
    matches!(kind, Kind::Deployment | Kind::DaemonSet)
}

/// Where a rollout stands, for `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RolloutState {
    /// Running the pinned images, every pod updated and available.
    Healthy,
    /// Not (yet) healthy and not given up on.
    Progressing,
    /// The pinned images failed; the last healthy ones run instead.
    RolledBack,
    /// The pinned images failed and there was nothing healthy to go back to.
    Failed,
}

/// One workload's rollout, as the last reconcile saw or left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RolloutReport {
    /// `deployment/mop-gateway`, as `kubectl rollout status` names it.
    pub workload: String,
    pub namespace: String,
    /// Images the repository pins (comma-separated when several containers).
    pub pinned: String,
    /// Images the live pod template runs.
    pub running: String,
    pub state: RolloutState,
    /// This reconcile rolled the workload back.
    pub rolled_back: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What the workload controller reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Healthy,
    /// Still moving; what it waits for.
    Progressing(String),
    /// Given up by the controller itself (progress deadline exceeded).
    Failed(String),
}

fn int(v: &Value) -> i64 {
    v.as_i64().unwrap_or(0)
}

/// Health of a live Deployment or DaemonSet (the whole object as JSON).
pub fn health(kind: Kind, obj: &Value) -> Health {
    let generation = int(&obj["metadata"]["generation"]);
    let status = &obj["status"];
    if int(&status["observedGeneration"]) < generation {
        return Health::Progressing(format!(
            "the controller has not seen generation {generation} yet"
        ));
    }
    if kind == Kind::Deployment {
        if let Some(c) = status["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == "Progressing"))
            && c["reason"] == "ProgressDeadlineExceeded"
        {
            return Health::Failed(format!(
                "ProgressDeadlineExceeded: {}",
                c["message"].as_str().unwrap_or("")
            ));
        }
        let want = obj["spec"]["replicas"].as_i64().unwrap_or(1);
        let updated = int(&status["updatedReplicas"]);
        let total = int(&status["replicas"]);
        let ready = int(&status["readyReplicas"]);
        let available = int(&status["availableReplicas"]);
        if updated < want {
            Health::Progressing(format!("{updated} of {want} pods updated, {ready} ready"))
        } else if total > updated {
            Health::Progressing(format!("{} old pods still running", total - updated))
        } else if available < want || ready < want {
            Health::Progressing(format!(
                "{ready} of {want} pods ready, {available} available"
            ))
        } else {
            Health::Healthy
        }
    } else {
        let want = int(&status["desiredNumberScheduled"]);
        let updated = int(&status["updatedNumberScheduled"]);
        let ready = int(&status["numberReady"]);
        let available = int(&status["numberAvailable"]);
        if updated < want {
            Health::Progressing(format!(
                "{updated} of {want} nodes updated, {ready} pods ready"
            ))
        } else if available < want || ready < want {
            Health::Progressing(format!(
                "{ready} of {want} pods ready, {available} available"
            ))
        } else {
            Health::Healthy
        }
    }
}

/// Container name → image of a workload's pod template.
pub fn images(obj: &Value) -> BTreeMap<String, String> {
    obj["spec"]["template"]["spec"]["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .filter_map(|c| Some((c["name"].as_str()?.into(), c["image"].as_str()?.into())))
                .collect()
        })
        .unwrap_or_default()
}

pub fn show(images: &BTreeMap<String, String>) -> String {
    images.values().cloned().collect::<Vec<_>>().join(", ")
}

/// The images a workload was rolled back from, if MOP rolled it back.
pub fn rolled_back_from(obj: &Value) -> Option<BTreeMap<String, String>> {
    obj["metadata"]["annotations"][ROLLED_BACK_FROM]
        .as_str()
        .and_then(|s| serde_json::from_str(s).ok())
}

/// The health timeout a rendered workload carries.
pub fn timeout(desired: &Value) -> Duration {
    desired["metadata"]["annotations"][HEALTH_TIMEOUT_ANNOTATION]
        .as_str()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs)
}

/// `deployment/NAME` or `daemonset/NAME`.
pub fn workload_name(kind: Kind, obj: &Value) -> String {
    let k = if kind == Kind::Deployment {
        "deployment"
    } else {
        "daemonset"
    };
    format!("{k}/{}", obj["metadata"]["name"].as_str().unwrap_or(""))
}

/// What a failed rollout can go back to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastHealthy {
    pub images: BTreeMap<String, String>,
    /// `app.kubernetes.io/version` of the healthy template, restored with the images.
    pub version: Option<String>,
}

/// The last healthy version of a workload, read from the live object before a new
/// version is applied: what it runs when that is healthy, or what a rollback put
/// there (known good, even while it is still coming back up). `None` when neither
/// holds: then nothing is known to be better than the new version.
pub fn last_healthy(kind: Kind, live: &Value) -> Option<LastHealthy> {
    let known_good = health(kind, live) == Health::Healthy || rolled_back_from(live).is_some();
    let images = images(live);
    (known_good && !images.is_empty()).then(|| LastHealthy {
        images,
        version: live["spec"]["template"]["metadata"]["labels"][VERSION_LABEL]
            .as_str()
            .map(str::to_string),
    })
}

/// `desired` with the last healthy images (and their version label) put back and
/// the failed images recorded in [`ROLLED_BACK_FROM`].
pub fn rollback_body(desired: &Value, to: &LastHealthy) -> Value {
    let mut body = desired.clone();
    let failed = images(desired);
    if let Some(cs) = body["spec"]["template"]["spec"]["containers"].as_array_mut() {
        for c in cs {
            let image = c["name"].as_str().and_then(|n| to.images.get(n)).cloned();
            if let Some(image) = image {
                c["image"] = json!(image);
            }
        }
    }
    if let Some(v) = &to.version {
        for path in ["/metadata/labels", "/spec/template/metadata/labels"] {
            if let Some(l) = body
                .pointer_mut(path)
                .and_then(Value::as_object_mut)
                .filter(|l| l.contains_key(VERSION_LABEL))
            {
                l.insert(VERSION_LABEL.into(), json!(v));
            }
        }
    }
    if !body["metadata"]["annotations"].is_object() {
        body["metadata"]["annotations"] = json!({});
    }
    body["metadata"]["annotations"][ROLLED_BACK_FROM] =
        json!(serde_json::to_string(&failed).unwrap_or_default());
    body
}

/// Waits until the workload is healthy or has failed, or `timeout` passes;
/// returns its health then. Follows the object with a watch
/// (`kube::runtime::wait::await_condition`); a broken watch is re-opened.
pub async fn wait(api: &Api<DynamicObject>, name: &str, kind: Kind, timeout: Duration) -> Health {
    let deadline = tokio::time::Instant::now() + timeout;
    let settled = move |o: Option<&DynamicObject>| {
        o.and_then(|o| serde_json::to_value(o).ok())
            .is_some_and(|v| !matches!(health(kind, &v), Health::Progressing(_)))
    };
    loop {
        match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, settled)).await {
            Ok(Ok(Some(o))) => {
                return serde_json::to_value(&o)
                    .map(|v| health(kind, &v))
                    .unwrap_or_else(|e| Health::Progressing(format!("unreadable status: {e}")));
            }
            Ok(Ok(None)) => return Health::Failed("the workload was deleted".into()),
            Ok(Err(e)) => {
                tracing::warn!(workload = name, error = %e, "watching the rollout failed; watching again");
                tokio::time::sleep_until(
                    deadline.min(tokio::time::Instant::now() + Duration::from_secs(1)),
                )
                .await;
                if tokio::time::Instant::now() >= deadline {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    // The last word is a fresh read: the watch may have missed the final update.
    match api.get(name).await {
        Ok(o) => serde_json::to_value(&o)
            .map(|v| health(kind, &v))
            .unwrap_or_else(|e| Health::Progressing(format!("unreadable status: {e}"))),
        Err(e) => Health::Progressing(format!("cannot read the workload: {e}")),
    }
}

/// Pods of a workload whose containers wait for a reason that does not pass by
/// itself (crash loop, image pull), described for the report (at most three).
pub async fn stuck_pods(api: &Api<DynamicObject>, workload: &Value) -> Vec<String> {
    let selector = workload["spec"]["selector"]["matchLabels"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    if selector.is_empty() {
        return Vec::new();
    }
    let Ok(list) = api.list(&ListParams::default().labels(&selector)).await else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for p in list.items {
        let Ok(v) = serde_json::to_value(&p) else {
            continue;
        };
        let name = v["metadata"]["name"].as_str().unwrap_or("");
        for c in v["status"]["containerStatuses"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let w = &c["state"]["waiting"];
            if let Some(reason) = w["reason"].as_str().filter(|r| STUCK_REASONS.contains(r)) {
                out.push(format!(
                    "pod {name} ({}) {reason}{}",
                    c["image"].as_str().unwrap_or(""),
                    w["message"]
                        .as_str()
                        .map(|m| format!(": {m}"))
                        .unwrap_or_default()
                ));
            }
        }
    }
    out.sort();
    out.truncate(3);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(generation: i64, status: Value) -> Value {
        json!({"metadata": {"name": "gw", "generation": generation},
               "spec": {"replicas": 2, "template": {"metadata": {"labels": {VERSION_LABEL: "1.0.0"}},
                        "spec": {"containers": [{"name": "gateway", "image": "gw:1.0.0"}]}}},
               "status": status})
    }

    #[test]
    fn deployment_health_follows_the_status() {
        let healthy = json!({"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2,
                             "readyReplicas": 2, "availableReplicas": 2});
        assert_eq!(
            health(Kind::Deployment, &deployment(2, healthy.clone())),
            Health::Healthy
        );
        assert!(matches!(
            health(Kind::Deployment, &deployment(3, healthy)),
            Health::Progressing(_)
        ));
        let surplus = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2,
                             "readyReplicas": 3, "availableReplicas": 3});
        assert!(matches!(
            health(Kind::Deployment, &deployment(2, surplus)),
            Health::Progressing(m) if m.contains("old pods")
        ));
        let stuck = json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 1,
                           "readyReplicas": 2, "availableReplicas": 2,
                           "conditions": [{"type": "Progressing", "status": "False",
                                           "reason": "ProgressDeadlineExceeded", "message": "timed out"}]});
        assert!(matches!(
            health(Kind::Deployment, &deployment(2, stuck)),
            Health::Failed(m) if m.contains("timed out")
        ));
    }

    #[test]
    fn daemonset_health_needs_every_node_updated_and_available() {
        let ds = |updated: i64, ready: i64| {
            json!({"metadata": {"generation": 1}, "status": {"observedGeneration": 1,
                "desiredNumberScheduled": 3, "updatedNumberScheduled": updated,
                "numberReady": ready, "numberAvailable": ready}})
        };
        assert_eq!(health(Kind::DaemonSet, &ds(3, 3)), Health::Healthy);
        assert!(matches!(
            health(Kind::DaemonSet, &ds(1, 2)),
            Health::Progressing(_)
        ));
        assert!(matches!(
            health(Kind::DaemonSet, &ds(3, 2)),
            Health::Progressing(_)
        ));
    }

    #[test]
    fn rollback_restores_images_and_version_and_records_the_failed_ones() {
        let healthy = json!({"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2,
                             "readyReplicas": 2, "availableReplicas": 2});
        let live = deployment(1, healthy);
        let to = last_healthy(Kind::Deployment, &live).unwrap();
        let mut desired = deployment(0, json!(null));
        desired["metadata"]["labels"] = json!({VERSION_LABEL: "2.0.0"});
        desired["spec"]["template"]["metadata"]["labels"][VERSION_LABEL] = json!("2.0.0");
        desired["spec"]["template"]["spec"]["containers"][0]["image"] = json!("gw:2.0.0");
        let back = rollback_body(&desired, &to);
        assert_eq!(images(&back)["gateway"], "gw:1.0.0");
        assert_eq!(back["metadata"]["labels"][VERSION_LABEL], "1.0.0");
        assert_eq!(
            back["spec"]["template"]["metadata"]["labels"][VERSION_LABEL],
            "1.0.0"
        );
        assert_eq!(rolled_back_from(&back).unwrap()["gateway"], "gw:2.0.0");
        // An unhealthy live object that MOP did not roll back is no rollback target.
        let unhealthy = deployment(2, json!({"observedGeneration": 2, "updatedReplicas": 1}));
        assert_eq!(last_healthy(Kind::Deployment, &unhealthy), None);
        // One that MOP rolled back is, while its pods come back.
        let mut returning = unhealthy;
        returning["metadata"]["annotations"] =
            json!({ROLLED_BACK_FROM: "{\"gateway\":\"gw:2.0.0\"}"});
        assert!(last_healthy(Kind::Deployment, &returning).is_some());
    }
}
