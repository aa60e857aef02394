//! A simulated workload controller (Deployment and DaemonSet controllers plus the
//! kubelet, reduced to what a rollout watcher observes).
//!
//! Follows "Deployments", sections "Deployment status", "Failed Deployment" and
//! "Rolling Update Deployment":
//! <https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#deployment-status>,
//! "Perform a Rolling Update on a DaemonSet":
//! <https://kubernetes.io/docs/tasks/manage-daemon/update-daemon-set/>, and
//! "Pod Lifecycle", section "Container states" (`waiting` with reason
//! `CrashLoopBackOff`): <https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#container-states>.
//!
//! When a workload's generation changes, new pods replace old ones one step at a
//! time (`step_delay` each: one pod for a Deployment, `maxUnavailable` pods for a
//! DaemonSet), and `status` (`observedGeneration`, updated/ready/available counts,
//! conditions) follows. If any container image is marked bad, the first new pods
//! crash-loop, the rollout stops there and never becomes available; after
//! `progressDeadlineSeconds` a Deployment reports `ProgressDeadlineExceeded`.
//! Simplification: pods are owned by the workload directly (no ReplicaSets or
//! ControllerRevisions).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::Inner;
use crate::fields;
use crate::resources::{NameRule, Resource};
use crate::server::{Mode, commit};
use crate::store::{State, now_rfc3339};

pub const POD: Resource = Resource {
    group: "",
    version: "v1",
    plural: "pods",
    kind: "Pod",
    namespaced: true,
    name_rule: NameRule::Subdomain,
};

const MANAGER: &str = "kube-controller-manager";

/// Names of the pods a workload (by uid) owns in a namespace.
pub fn owned_pods(s: &State, ns: &str, uid: &Value) -> Vec<String> {
    s.list(&POD, Some(ns))
        .into_iter()
        .filter(|p| {
            p["metadata"]["ownerReferences"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| &r["uid"] == uid))
        })
        .filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string))
        .collect()
}

/// FNV-1a: a stable short hash of the pod template, like `pod-template-hash`.
fn template_hash(template: &Value) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in template.to_string().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    (0..10)
        .map(|i| ALPHABET[((h >> (i * 6)) % ALPHABET.len() as u64) as usize] as char)
        .collect()
}

fn hash_label(res: &Resource) -> &'static str {
    if res.plural == "deployments" {
        "pod-template-hash"
    } else {
        "controller-revision-hash"
    }
}

/// Starts (or restarts) the rollout of a workload whose generation changed.
pub fn kick(inner: &Arc<Inner>, res: &Resource, obj: &Value) {
    let Some(generation) = obj["metadata"]["generation"].as_i64() else {
        return;
    };
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
    let inner = inner.clone();
    let res = *res;
    tokio::spawn(async move { roll(inner, res, ns, name, generation).await });
}

/// Resolves an int-or-percent against a total (rounding up, as for maxSurge; at least 1).
fn int_or_percent(v: &Value, total: i64, default: i64) -> i64 {
    let n = match v {
        Value::Number(n) => n.as_i64().unwrap_or(default),
        Value::String(s) => match s.strip_suffix('%').and_then(|p| p.parse::<i64>().ok()) {
            Some(p) => (total * p + 99) / 100,
            None => default,
        },
        _ => default,
    };
    n.max(1)
}

struct Plan {
    desired: i64,
    batch: i64,
    hash: String,
    bad: bool,
    uid: Value,
    step: Duration,
    deadline: Duration,
}

async fn roll(inner: Arc<Inner>, res: Resource, ns: String, name: String, generation: i64) {
    let plan = {
        let Ok(s) = inner.state.lock() else { return };
        if !s.rollout.enabled {
            return;
        }
        let Some(obj) = current(&s, &res, &ns, &name, generation) else {
            return;
        };
        let spec = &obj["spec"];
        let images: Vec<&str> = spec["template"]["spec"]["containers"]
            .as_array()
            .map(|cs| cs.iter().filter_map(|c| c["image"].as_str()).collect())
            .unwrap_or_default();
        let desired = if res.plural == "deployments" {
            spec["replicas"].as_i64().unwrap_or(1)
        } else {
            i64::from(s.rollout.nodes)
        };
        let batch = if res.plural == "deployments" {
            1
        } else {
            int_or_percent(
                &spec["updateStrategy"]["rollingUpdate"]["maxUnavailable"],
                desired,
                1,
            )
        };
        Plan {
            desired,
            batch,
            hash: template_hash(&spec["template"]),
            bad: images.iter().any(|i| s.bad_images.contains(*i)),
            uid: obj["metadata"]["uid"].clone(),
            step: s.rollout.step_delay,
            deadline: Duration::from_secs(spec["progressDeadlineSeconds"].as_u64().unwrap_or(600)),
        }
    };

    // The controller notices the new generation at once.
    if !step(&inner, &res, &ns, &name, generation, &plan, 0) {
        return;
    }
    let target = if plan.bad {
        plan.batch.min(plan.desired)
    } else {
        plan.desired
    };
    let mut done = 0;
    while done < target {
        tokio::time::sleep(plan.step).await;
        done = (done + plan.batch).min(target);
        if !step(&inner, &res, &ns, &name, generation, &plan, done) {
            return;
        }
    }
    if plan.bad && res.plural == "deployments" {
        tokio::time::sleep(plan.deadline).await;
        let Ok(mut s) = inner.state.lock() else {
            return;
        };
        let Some(obj) = current(&s, &res, &ns, &name, generation).cloned() else {
            return;
        };
        let mut status = obj["status"].clone();
        set_condition(
            &mut status,
            "Progressing",
            "False",
            "ProgressDeadlineExceeded",
            &format!(
                "ReplicaSet \"{name}-{}\" has timed out progressing.",
                plan.hash
            ),
        );
        write_status(&mut s, &res, &obj, status);
        let rv = s.rv;
        drop(s);
        inner.changed.send_replace(rv);
    }
}

/// The workload, if it still exists at this generation (a newer one takes over).
fn current<'a>(
    s: &'a State,
    res: &Resource,
    ns: &str,
    name: &str,
    generation: i64,
) -> Option<&'a Value> {
    s.get(res, ns, name)
        .filter(|o| o["metadata"]["generation"].as_i64() == Some(generation))
}

fn set_condition(status: &mut Value, kind: &str, value: &str, reason: &str, message: &str) {
    let now = now_rfc3339();
    let cond = json!({
        "type": kind, "status": value, "reason": reason, "message": message,
        "lastUpdateTime": now, "lastTransitionTime": now,
    });
    if !status["conditions"].is_array() {
        status["conditions"] = json!([]);
    }
    if let Some(cs) = status["conditions"].as_array_mut() {
        match cs.iter_mut().find(|c| c["type"] == kind) {
            Some(c) => {
                if c["status"] == value && c["reason"] == reason {
                    return;
                }
                *c = cond;
            }
            None => cs.push(cond),
        }
    }
}

fn write_status(s: &mut State, res: &Resource, old: &Value, status: Value) {
    let mut obj = old.clone();
    obj["status"] = status;
    // Status writes are owned by the controller through the status subresource.
    let mut view = fields::tracked_view(&obj);
    view["status"] = obj["status"].clone();
    let mut old_view = fields::tracked_view(old);
    old_view["status"] = old["status"].clone();
    let entries = fields::update(
        Some(&old_view),
        &fields::entries(old),
        &view,
        MANAGER,
        &res.api_version(),
        Some("status"),
        &now_rfc3339(),
    );
    let _ = commit(s, res, Some(old), obj, &entries, Mode::CONTROLLER);
}

fn pod(res: &Resource, wl: &Value, plan: &Plan, name: String, node: &str) -> Value {
    let template = &wl["spec"]["template"];
    let mut labels = template["metadata"]["labels"].clone();
    labels[hash_label(res)] = json!(plan.hash);
    let mut spec = template["spec"].clone();
    spec["nodeName"] = json!(node);
    let now = now_rfc3339();
    let statuses: Vec<Value> = spec["containers"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    let mut st = json!({
                        "name": c["name"], "image": c["image"], "imageID": "",
                        "containerID": format!("containerd://{}", plan.hash),
                    });
                    if plan.bad {
                        st["ready"] = json!(false);
                        st["started"] = json!(false);
                        st["restartCount"] = json!(3);
                        st["state"] = json!({"waiting": {
                            "reason": "CrashLoopBackOff",
                            "message": format!("back-off 40s restarting failed container={} pod={name}", c["name"].as_str().unwrap_or("")),
                        }});
                        st["lastState"] = json!({"terminated": {"exitCode": 1, "reason": "Error", "startedAt": now, "finishedAt": now}});
                    } else {
                        st["ready"] = json!(true);
                        st["started"] = json!(true);
                        st["restartCount"] = json!(0);
                        st["state"] = json!({"running": {"startedAt": now}});
                    }
                    st
                })
                .collect()
        })
        .unwrap_or_default();
    let ready = if plan.bad { "False" } else { "True" };
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": wl["metadata"]["namespace"],
            "labels": labels,
            "ownerReferences": [{
                "apiVersion": res.api_version(), "kind": res.kind,
                "name": wl["metadata"]["name"], "uid": plan.uid,
                "controller": true, "blockOwnerDeletion": true,
            }],
        },
        "spec": spec,
        "status": {
            "phase": "Running",
            "conditions": [
                {"type": "Ready", "status": ready, "lastTransitionTime": now},
                {"type": "ContainersReady", "status": ready, "lastTransitionTime": now},
            ],
            "containerStatuses": statuses,
            "hostIP": "10.0.0.1",
            "podIP": "10.244.0.10",
            "startTime": now,
            "qosClass": "BestEffort",
        },
    })
}

fn pod_ready(p: &Value) -> bool {
    p["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Ready" && c["status"] == "True")
    })
}

/// Brings `updated` pods to the new template and writes the status; false once the
/// workload is gone or has moved on to a newer generation.
fn step(
    inner: &Inner,
    res: &Resource,
    ns: &str,
    name: &str,
    generation: i64,
    plan: &Plan,
    updated: i64,
) -> bool {
    let Ok(mut s) = inner.state.lock() else {
        return false;
    };
    let Some(wl) = current(&s, res, ns, name, generation).cloned() else {
        return false;
    };
    let label = hash_label(res);
    let mut seq = s.rv;
    let pods: Vec<Value> = owned_pods(&s, ns, &plan.uid)
        .iter()
        .filter_map(|p| s.get(&POD, ns, p).cloned())
        .collect();
    let (new, old): (Vec<Value>, Vec<Value>) = pods
        .into_iter()
        .partition(|p| p["metadata"]["labels"][label] == json!(plan.hash));

    // Create the missing new pods; a DaemonSet (and a healthy Deployment) retires
    // as many old ones, a crash-looping Deployment keeps its old pods (maxUnavailable 0).
    let missing = (updated - new.len() as i64).max(0);
    let finished = !plan.bad && updated >= plan.desired;
    let retire = if plan.bad && res.plural == "deployments" {
        0
    } else if finished {
        // The last step retires every old pod, however many there were.
        old.len() as i64
    } else {
        missing
    };
    if finished {
        // Scaled down: the surplus new pods go too.
        for p in new.iter().skip(plan.desired.max(0) as usize) {
            if let Some(n) = p["metadata"]["name"].as_str() {
                s.remove(&POD, ns, n, false);
            }
        }
    }
    for (i, old_pod) in old.iter().enumerate() {
        if (i as i64) < retire
            && let Some(n) = old_pod["metadata"]["name"].as_str()
        {
            s.remove(&POD, ns, n, false);
        }
    }
    for i in 0..missing {
        seq += 1;
        let pod_name = if res.plural == "deployments" {
            format!("{name}-{}-{}", plan.hash, &template_hash(&json!(seq))[..5])
        } else {
            format!("{name}-{}", &template_hash(&json!(seq))[..5])
        };
        let node = format!("node-{}", (new.len() as i64 + i) % plan.desired.max(1));
        let p = pod(res, &wl, plan, pod_name, &node);
        let view = fields::tracked_view(&p);
        let entries = fields::update(None, &[], &view, MANAGER, "v1", None, &now_rfc3339());
        let _ = commit(&mut s, &POD, None, p, &entries, Mode::CONTROLLER);
    }

    let all: Vec<Value> = owned_pods(&s, ns, &plan.uid)
        .iter()
        .filter_map(|p| s.get(&POD, ns, p).cloned())
        .collect();
    let total = all.len() as i64;
    let n_updated = all
        .iter()
        .filter(|p| p["metadata"]["labels"][label] == json!(plan.hash))
        .count() as i64;
    let ready = all.iter().filter(|p| pod_ready(p)).count() as i64;
    let unavailable = (plan.desired - ready).max(0);
    let complete =
        !plan.bad && n_updated >= plan.desired && total == plan.desired && ready >= plan.desired;

    let mut status = wl["status"].clone();
    if !status.is_object() {
        status = json!({});
    }
    status["observedGeneration"] = json!(generation);
    if res.plural == "deployments" {
        status["replicas"] = json!(total);
        status["updatedReplicas"] = json!(n_updated);
        status["readyReplicas"] = json!(ready);
        status["availableReplicas"] = json!(ready);
        if unavailable > 0 {
            status["unavailableReplicas"] = json!(unavailable);
        } else if let Some(m) = status.as_object_mut() {
            m.remove("unavailableReplicas");
        }
        let max_unavailable = int_or_percent(
            &wl["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"],
            plan.desired,
            0,
        );
        let available =
            ready >= plan.desired - max_unavailable.min(plan.desired) || plan.desired == 0;
        if available {
            set_condition(
                &mut status,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            );
        } else {
            set_condition(
                &mut status,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            );
        }
        let rs = format!("{name}-{}", plan.hash);
        if complete {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                &format!("ReplicaSet \"{rs}\" has successfully progressed."),
            );
        } else {
            set_condition(
                &mut status,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                &format!("ReplicaSet \"{rs}\" is progressing."),
            );
        }
    } else {
        status["desiredNumberScheduled"] = json!(plan.desired);
        status["currentNumberScheduled"] = json!(total);
        status["numberMisscheduled"] = json!(0);
        status["updatedNumberScheduled"] = json!(n_updated);
        status["numberReady"] = json!(ready);
        status["numberAvailable"] = json!(ready);
        if unavailable > 0 {
            status["numberUnavailable"] = json!(unavailable);
        } else if let Some(m) = status.as_object_mut() {
            m.remove("numberUnavailable");
        }
    }
    write_status(&mut s, res, &wl, status);
    let rv = s.rv;
    drop(s);
    inner.changed.send_replace(rv);
    true
}
