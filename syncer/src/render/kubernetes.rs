//! Kubernetes objects: tenant namespace labels, the gateway's routing and sampling
//! ConfigMap, the backends' runtime-overrides ConfigMaps, and the gateway and agent
//! workloads at the versions pinned in `versions.yaml`.

use std::collections::BTreeMap;

use mop_gateway_config as gw;
use serde_json::{Value, json};

use super::overrides::{self, Backend};
use super::{Builder, Kind, RenderError, Result, Target};
use crate::model::SecretRef;
use crate::model::sampling::{PolicyKind, PolicySpec};
use crate::repo::{Repo, Tenant};

/// Name of the ConfigMap holding the gateway's routing and sampling config.
pub const GATEWAY_CONFIGMAP: &str = "mop-gateway-routing";
const GATEWAY: &str = "mop-gateway";
const AGENT: &str = "mop-agent";
const AGENT_CONFIG_DIR: &str = "/etc/mop/agent";
/// Audience of the projected ServiceAccount token the agent sends to the gateway.
pub const AGENT_TOKEN_AUDIENCE: &str = "mop-gateway";
const AGENT_GATEWAY_TOKEN_DIR: &str = "/var/run/secrets/mop-gateway";
/// Name of the ConfigMap holding the agent's configuration.
pub const AGENT_CONFIGMAP: &str = "mop-agent-config";
const TOKENS_DIR: &str = "/etc/mop/tokens";
const CONFIG_DIR: &str = "/etc/mop/gateway";
const QUEUE_DIR: &str = "/var/lib/mop-gateway";
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "mop");
pub const TENANT_LABEL: &str = "mop.dev/tenant";
/// Annotation on the gateway Deployment and agent DaemonSet: seconds the syncer
/// waits for a rollout to become healthy before rolling it back (`versions.yaml`'s
/// `health_timeout`). It travels with the object, so the applier needs no model.
pub const HEALTH_TIMEOUT_ANNOTATION: &str = "mop.dev/health-timeout-seconds";

/// A Kubernetes int-or-string: the API takes counts only as numbers (a string must
/// be a percentage), while `versions.yaml` accepts both as strings.
fn int_or_percent(v: &str) -> Value {
    match v.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(v),
    }
}

fn labels(name: &str, tenant: Option<&str>, extra: &[(&str, &str)]) -> Value {
    let mut m = BTreeMap::new();
    m.insert(MANAGED_BY.0, MANAGED_BY.1);
    if !name.is_empty() {
        m.insert("app.kubernetes.io/name", name);
        m.insert("app.kubernetes.io/part-of", "mop");
    }
    if let Some(t) = tenant {
        m.insert(TENANT_LABEL, t);
    }
    for (k, v) in extra {
        m.insert(k, v);
    }
    json!(m)
}

fn add(b: &mut Builder, tenant: Option<&str>, kind: Kind, body: Value) -> Result<()> {
    let ns = body["metadata"]["namespace"].as_str().unwrap_or("");
    let name = body["metadata"]["name"].as_str().unwrap_or("");
    let id = if ns.is_empty() {
        name.to_string()
    } else {
        format!("{ns}/{name}")
    };
    b.add(Target::Kubernetes, tenant, kind, id, None, &body)
}

fn image_ref(image: &str, version: &str) -> String {
    if version.starts_with("sha256:") {
        format!("{image}@{version}")
    } else {
        format!("{image}:{version}")
    }
}

/// The gateway's routing and sampling config, as the gateway reads it.
pub fn gateway_config(repo: &Repo) -> gw::GatewayConfig {
    let mut tenants: Vec<gw::TenantRoute> = repo.tenants.iter().map(tenant_route).collect();
    tenants.sort_by(|a, b| a.id.cmp(&b.id));
    gw::GatewayConfig {
        version: gw::FORMAT_VERSION,
        // Not the commit: a config that did not change must not change the ConfigMap.
        revision: None,
        default_tenant: repo
            .platform
            .gateway
            .default_tenant
            .as_ref()
            .map(|t| t.value.clone()),
        tenants,
        ring: gateway_ring(repo),
        identity: gateway_identity(repo),
    }
}

/// The gateway's sender-identity settings: the agents' ServiceAccount in the
/// platform namespace, with the audience of the token the agent DaemonSet projects.
fn gateway_identity(repo: &Repo) -> gw::Identity {
    gw::Identity {
        agent_service_account: format!("{}/{AGENT}", repo.platform.namespace.as_str()),
        agent_audience: AGENT_TOKEN_AUDIENCE.into(),
        ..gw::Identity::default()
    }
}

fn token_files(t: &Tenant) -> Vec<String> {
    t.spec
        .ingest
        .tokens
        .iter()
        .enumerate()
        .map(|(i, r)| match r {
            SecretRef::File(f) => f.clone(),
            SecretRef::Secret(s) => format!("{TOKENS_DIR}/{}/{i}/{}", t.key, s.key),
        })
        .collect()
}

fn policy(p: &PolicySpec) -> gw::Policy {
    // Validation guarantees each type's fields are present.
    let rule = match p.kind.value {
        PolicyKind::Errors => gw::PolicyRule::Errors,
        PolicyKind::Latency => gw::PolicyRule::Latency {
            threshold_ms: p.threshold.map_or(0, |t| t.millis),
        },
        PolicyKind::Probabilistic => gw::PolicyRule::Probabilistic {
            percentage: p.percentage.as_ref().map_or(0.0, |v| v.value),
        },
        PolicyKind::Attribute => gw::PolicyRule::Attribute {
            key: p.key.clone().unwrap_or_default(),
            values: p.values.clone().unwrap_or_default(),
        },
        PolicyKind::Always => gw::PolicyRule::Always,
    };
    gw::Policy {
        name: p.name.value.clone(),
        rule,
    }
}

fn tenant_route(t: &Tenant) -> gw::TenantRoute {
    let sampling = match &t.sampling {
        Some(s) => gw::Sampling {
            decision_wait_ms: s.decision_wait.millis,
            max_traces: s.max_traces,
            max_spans_per_second: s.max_spans_per_second,
            policies: s.policies.iter().map(policy).collect(),
            service_overrides: s
                .services
                .iter()
                .map(|(svc, ps)| (svc.clone(), ps.iter().map(policy).collect()))
                .collect(),
        },
        // No sampling.yaml: keep every trace, decide as soon as the wait allows.
        None => gw::Sampling {
            decision_wait_ms: 5_000,
            max_traces: 50_000,
            max_spans_per_second: None,
            policies: vec![gw::Policy {
                name: "keep-all".into(),
                rule: gw::PolicyRule::Always,
            }],
            service_overrides: BTreeMap::new(),
        },
    };
    gw::TenantRoute {
        id: t.id().to_string(),
        namespaces: t.spec.namespaces.iter().map(|n| n.value.clone()).collect(),
        token_files: token_files(t),
        sampling,
    }
}

pub(super) fn render(repo: &Repo, b: &mut Builder) -> Result<()> {
    let mop_ns = repo.platform.namespace.as_str();

    for t in &repo.tenants {
        for ns in &t.spec.namespaces {
            // Patterns name no object; the gateway matches them at routing time.
            if ns.value.contains(['*', '?']) {
                continue;
            }
            add(
                b,
                Some(&t.key),
                Kind::Namespace,
                json!({
                    "apiVersion": "v1",
                    "kind": "Namespace",
                    "metadata": { "name": ns.value, "labels": labels("", Some(&t.key), &[]) },
                }),
            )?;
        }
    }

    let cfg = gateway_config(repo);
    let cfg_text = serde_json::to_string_pretty(&cfg).map_err(|source| RenderError::Serialise {
        what: "gateway config".into(),
        source,
    })?;
    add(
        b,
        None,
        Kind::ConfigMap,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": GATEWAY_CONFIGMAP, "namespace": mop_ns, "labels": labels(GATEWAY, None, &[]) },
            "data": { gw::FILE_NAME: cfg_text + "\n" },
        }),
    )?;

    let be = &repo.platform.backends;
    let mut backends = vec![
        (Backend::Mimir, &be.mimir),
        (Backend::Loki, &be.loki),
        (Backend::Tempo, &be.tempo),
    ];
    if let Some(p) = &be.pyroscope {
        backends.push((Backend::Pyroscope, p));
    }
    for (kind, backend) in backends {
        let doc = overrides::document(repo, kind);
        let text = super::to_yaml(&doc, &backend.overrides.name)?;
        add(
            b,
            None,
            Kind::ConfigMap,
            json!({
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": backend.overrides.name,
                    "namespace": backend.overrides.namespace,
                    "labels": labels("", None, &[("mop.dev/overrides", &format!("{kind:?}").to_lowercase())]),
                },
                "data": { backend.overrides.key.clone(): text },
            }),
        )?;
    }

    gateway_workload(repo, b)?;
    gateway_identity_access(repo, b)?;
    agent_workload(repo, b)?;
    Ok(())
}

/// What sender identity needs around the gateway (gateway/src/identity/): RBAC to
/// watch pods and review agents' tokens, and a NetworkPolicy so that only agents
/// and tenants' pods reach the OTLP ports, only the monitoring namespace the
/// admin port, and only the gateway's own replicas the ring port. The syncer
/// must hold every verb granted here (RBAC escalation prevention): keep
/// deploy/base/rbac.yaml in step.
fn gateway_identity_access(repo: &Repo, b: &mut Builder) -> Result<()> {
    let ns = repo.platform.namespace.as_str();
    add(
        b,
        None,
        Kind::ClusterRole,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": GATEWAY, "labels": labels(GATEWAY, None, &[]) },
            "rules": [
                // identity/review.rs: POST tokenreviews for agents' tokens.
                { "apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"] },
                // identity/watch.rs: every pod's address, node and hostNetwork.
                { "apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"] },
            ],
        }),
    )?;
    add(
        b,
        None,
        Kind::ClusterRoleBinding,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": GATEWAY, "labels": labels(GATEWAY, None, &[]) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": GATEWAY },
            "subjects": [{ "kind": "ServiceAccount", "name": GATEWAY, "namespace": ns }],
        }),
    )?;
    // The metrics backend's namespace is where the monitoring stack that scrapes
    // the gateway's admin port runs (`monitoring` in the template).
    let monitoring = repo.platform.backends.mimir.overrides.namespace.as_str();
    let otlp_ports =
        json!([{ "protocol": "TCP", "port": 4317 }, { "protocol": "TCP", "port": 4318 }]);
    let mut ingress = vec![
        json!({ "from": [{ "podSelector": { "matchLabels": { "app.kubernetes.io/name": AGENT } } }], "ports": otlp_ports }),
        // Namespaces the repository names are labelled with their tenant.
        json!({ "from": [{ "namespaceSelector": { "matchExpressions": [{ "key": TENANT_LABEL, "operator": "Exists" }] } }], "ports": otlp_ports }),
        json!({ "from": [{ "namespaceSelector": { "matchLabels": { "kubernetes.io/metadata.name": monitoring } } }], "ports": [{ "protocol": "TCP", "port": 8888 }] }),
    ];
    // The trace ring: replicas forward spans to each other on the ring port.
    if repo.platform.gateway.ring.enabled {
        ingress.push(json!({ "from": [{ "podSelector": { "matchLabels": { "app.kubernetes.io/name": GATEWAY } } }], "ports": [{ "protocol": "TCP", "port": RING_PORT }] }));
    }
    add(
        b,
        None,
        Kind::NetworkPolicy,
        json!({
            "apiVersion": "networking.k8s.io/v1",
            "kind": "NetworkPolicy",
            "metadata": { "name": GATEWAY, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "spec": {
                "podSelector": { "matchLabels": { "app.kubernetes.io/name": GATEWAY } },
                "policyTypes": ["Ingress"],
                "ingress": ingress,
            },
        }),
    )
}

fn push_url(b: &crate::model::platform::Backend) -> String {
    b.push_url.as_ref().unwrap_or(&b.url).value.clone()
}

fn gateway_workload(repo: &Repo, b: &mut Builder) -> Result<()> {
    let ns = repo.platform.namespace.as_str();
    let v = &repo.versions.gateway;
    let version_label = v.version.value.replace(['@', ':'], "_");
    let sel = json!({ "app.kubernetes.io/name": GATEWAY });
    add(
        b,
        None,
        Kind::ServiceAccount,
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": GATEWAY, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "automountServiceAccountToken": false,
        }),
    )?;
    add(
        b,
        None,
        Kind::Service,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": GATEWAY, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "spec": {
                "selector": sel,
                "ports": [
                    { "name": "otlp-grpc", "port": 4317, "targetPort": "otlp-grpc", "protocol": "TCP", "appProtocol": "grpc" },
                    { "name": "otlp-http", "port": 4318, "targetPort": "otlp-http", "protocol": "TCP" },
                    { "name": "admin", "port": 8888, "targetPort": "admin", "protocol": "TCP" },
                ],
            },
        }),
    )?;

    let mut volumes =
        vec![json!({ "name": "routing", "configMap": { "name": GATEWAY_CONFIGMAP } })];
    let mut mounts = vec![json!({ "name": "routing", "mountPath": CONFIG_DIR, "readOnly": true })];
    volumes.push(json!({ "name": "queue", "emptyDir": { "sizeLimit": "2Gi" } }));
    mounts.push(json!({ "name": "queue", "mountPath": QUEUE_DIR }));
    for t in &repo.tenants {
        for (i, r) in t.spec.ingest.tokens.iter().enumerate() {
            if let SecretRef::Secret(s) = r {
                let name = format!("token-{}-{i}", t.key);
                volumes.push(json!({ "name": name, "secret": { "secretName": s.name, "items": [{ "key": s.key, "path": s.key }] } }));
                mounts.push(json!({ "name": name, "mountPath": format!("{TOKENS_DIR}/{}/{i}", t.key), "readOnly": true }));
            }
        }
    }
    let be = &repo.platform.backends;
    let mut deployment = json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": GATEWAY,
            "namespace": ns,
            "labels": labels(GATEWAY, None, &[("app.kubernetes.io/version", &version_label)]),
            "annotations": { HEALTH_TIMEOUT_ANNOTATION: (v.rollout.health_timeout.millis / 1000).to_string() },
        },
        "spec": {
            "replicas": v.replicas,
            "selector": { "matchLabels": sel },
            // Never below full capacity during a rollout: ingestion must not shrink.
            "strategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": 0, "maxSurge": int_or_percent(&v.rollout.max_surge.value) } },
            "progressDeadlineSeconds": v.rollout.health_timeout.millis / 1000,
            "template": {
                "metadata": { "labels": labels(GATEWAY, None, &[("app.kubernetes.io/version", &version_label)]) },
                "spec": {
                    "serviceAccountName": GATEWAY,
                    // `--kubernetes=in-cluster`: the pod watch and TokenReview
                    // authenticate as this ServiceAccount.
                    "automountServiceAccountToken": true,
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "fsGroup": 65532, "seccompProfile": { "type": "RuntimeDefault" } },
                    "terminationGracePeriodSeconds": 60,
                    "containers": [{
                        "name": "gateway",
                        "image": image_ref(&v.image.value, &v.version.value),
                        "args": [
                            format!("--config={CONFIG_DIR}/{}", gw::FILE_NAME),
                            "--grpc-listen=0.0.0.0:4317".to_string(),
                            "--http-listen=0.0.0.0:4318".to_string(),
                            "--admin-listen=0.0.0.0:8888".to_string(),
                            "--kubernetes=in-cluster".to_string(),
                            format!("--disk-queue-dir={QUEUE_DIR}"),
                            format!("--tempo-url={}", push_url(&be.tempo)),
                            format!("--remote-write-url={}", push_url(&be.mimir)),
                            format!("--loki-url={}", push_url(&be.loki)),
                        ],
                        "ports": [
                            { "name": "otlp-grpc", "containerPort": 4317 },
                            { "name": "otlp-http", "containerPort": 4318 },
                            { "name": "admin", "containerPort": 8888 },
                        ],
                        "readinessProbe": { "httpGet": { "path": "/readyz", "port": "admin" }, "periodSeconds": 5 },
                        "livenessProbe": { "httpGet": { "path": "/healthz", "port": "admin" }, "periodSeconds": 10, "failureThreshold": 6 },
                        "resources": { "requests": { "cpu": "500m", "memory": "512Mi" }, "limits": { "memory": "2Gi" } },
                        "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true, "capabilities": { "drop": ["ALL"] } },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    });
    gateway_ring_pod(repo, &mut deployment);
    add(b, None, Kind::Deployment, deployment)?;
    gateway_ring_objects(repo, b)
}

/// Port of the gateway's ring listener (peer-to-peer forwarding).
const RING_PORT: u16 = 4319;
const RING_PORT_NAME: &str = "ring";

/// The `ring` section of `gateway.json`, when `mop.yaml` turns the ring on.
fn gateway_ring(repo: &Repo) -> Option<gw::RingConfig> {
    let r = &repo.platform.gateway.ring;
    r.enabled.then(|| gw::RingConfig {
        service: r.service_name().to_string(),
        port_name: RING_PORT_NAME.into(),
    })
}

/// What the gateway pod needs for the ring: the ring port, its own address and
/// namespace from the downward API (it advertises `POD_IP:4319`, which is how the
/// EndpointSlices name it), and a ServiceAccount token to watch EndpointSlices.
fn gateway_ring_pod(repo: &Repo, deployment: &mut Value) {
    if !repo.platform.gateway.ring.enabled {
        return;
    }
    let pod = &mut deployment["spec"]["template"]["spec"];
    pod["automountServiceAccountToken"] = json!(true);
    let c = &mut pod["containers"][0];
    if let Some(args) = c["args"].as_array_mut() {
        args.push(json!(format!("--ring-listen=0.0.0.0:{RING_PORT}")));
        args.push(json!(format!("--ring-advertise=$(POD_IP):{RING_PORT}")));
    }
    if let Some(ports) = c["ports"].as_array_mut() {
        ports.push(json!({ "name": RING_PORT_NAME, "containerPort": RING_PORT }));
    }
    let env = c["env"].as_array().cloned().unwrap_or_default();
    let mut env = env;
    env.push(
        json!({ "name": "POD_IP", "valueFrom": { "fieldRef": { "fieldPath": "status.podIP" } } }),
    );
    env.push(json!({ "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }));
    c["env"] = json!(env);
}

/// The headless Service whose EndpointSlices list the ring's members, and the
/// namespaced Role letting the gateway read them. Ready endpoints only are ring
/// members (the gateway checks `conditions.ready`); not-ready ones are published
/// too (`publishNotReadyAddresses`) so a starting replica is already known, and
/// trusted as a sender, before it owns anything.
fn gateway_ring_objects(repo: &Repo, b: &mut Builder) -> Result<()> {
    let r = &repo.platform.gateway.ring;
    if !r.enabled {
        return Ok(());
    }
    let ns = repo.platform.namespace.as_str();
    let svc = r.service_name();
    add(
        b,
        None,
        Kind::Service,
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": svc, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "spec": {
                "clusterIP": "None",
                "publishNotReadyAddresses": true,
                "selector": { "app.kubernetes.io/name": GATEWAY },
                "ports": [
                    { "name": RING_PORT_NAME, "port": RING_PORT, "targetPort": RING_PORT_NAME, "protocol": "TCP", "appProtocol": "grpc" },
                ],
            },
        }),
    )?;
    // Read-only, one resource, the gateway's own namespace. The gateway
    // (gateway/src/ring/membership.rs) lists and watches by label selector; `get`
    // completes the read-only set and grants nothing more.
    // The syncer must hold every verb granted here (RBAC escalation prevention):
    // keep deploy/base/rbac.yaml in step.
    let role = format!("{GATEWAY}-ring");
    add(
        b,
        None,
        Kind::Role,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": { "name": role, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "rules": [{ "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"] }],
        }),
    )?;
    add(
        b,
        None,
        Kind::RoleBinding,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": { "name": role, "namespace": ns, "labels": labels(GATEWAY, None, &[]) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": role },
            "subjects": [{ "kind": "ServiceAccount", "name": GATEWAY, "namespace": ns }],
        }),
    )
}

fn agent_workload(repo: &Repo, b: &mut Builder) -> Result<()> {
    let ns = repo.platform.namespace.as_str();
    let v = &repo.versions.agent;
    let version_label = v.version.value.replace(['@', ':'], "_");
    let sel = json!({ "app.kubernetes.io/name": AGENT });
    add(
        b,
        None,
        Kind::ServiceAccount,
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": AGENT, "namespace": ns, "labels": labels(AGENT, None, &[]) },
        }),
    )?;
    // The agent lists and watches the pods of its own node (agent/src/kube.rs) to
    // name namespaces and workloads; it never reads one pod by name, so no `get`.
    // The syncer must hold every verb granted here (RBAC escalation prevention):
    // keep deploy/base/rbac.yaml in step.
    add(
        b,
        None,
        Kind::ClusterRole,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": AGENT, "labels": labels(AGENT, None, &[]) },
            "rules": [{ "apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"] }],
        }),
    )?;
    add(
        b,
        None,
        Kind::ClusterRoleBinding,
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": AGENT, "labels": labels(AGENT, None, &[]) },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": AGENT },
            "subjects": [{ "kind": "ServiceAccount", "name": AGENT, "namespace": ns }],
        }),
    )?;
    // The agent's own config file (agent/src/config.rs reads it; docs/agent.md).
    let a = &repo.platform.agent;
    let agent_config = json!({
        "otlp_endpoint": format!("http://{GATEWAY}.{ns}.svc:4317"),
        "metrics_listen": "0.0.0.0:8889",
        "instrument": { "ports": a.ports, "executables": a.executables },
        "capture": { "bytes": a.capture_bytes },
        "kubernetes": { "enabled": true },
        "gateway_token_file": format!("{AGENT_GATEWAY_TOKEN_DIR}/token"),
    });
    add(
        b,
        None,
        Kind::ConfigMap,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": AGENT_CONFIGMAP, "namespace": ns, "labels": labels(AGENT, None, &[]) },
            "data": { "agent.yaml": super::to_yaml(&agent_config, AGENT_CONFIGMAP)? },
        }),
    )?;
    add(
        b,
        None,
        Kind::DaemonSet,
        json!({
            "apiVersion": "apps/v1",
            "kind": "DaemonSet",
            "metadata": {
                "name": AGENT,
                "namespace": ns,
                "labels": labels(AGENT, None, &[("app.kubernetes.io/version", &version_label)]),
                "annotations": { HEALTH_TIMEOUT_ANNOTATION: (v.rollout.health_timeout.millis / 1000).to_string() },
            },
            "spec": {
                "selector": { "matchLabels": sel },
                "updateStrategy": { "type": "RollingUpdate", "rollingUpdate": { "maxUnavailable": int_or_percent(&v.rollout.max_unavailable.value) } },
                "template": {
                    "metadata": { "labels": labels(AGENT, None, &[("app.kubernetes.io/version", &version_label)]) },
                    "spec": {
                        "serviceAccountName": AGENT,
                        // Host PIDs: the agent maps kernel events' pids to processes and containers.
                        "hostPID": true,
                        "priorityClassName": "system-node-critical",
                        "tolerations": [{ "operator": "Exists" }],
                        "securityContext": { "seccompProfile": { "type": "RuntimeDefault" } },
                        "containers": [{
                            "name": "agent",
                            "image": image_ref(&v.image.value, &v.version.value),
                            "args": [
                                format!("--config={AGENT_CONFIG_DIR}/agent.yaml"),
                            ],
                            "env": [{ "name": "NODE_NAME", "valueFrom": { "fieldRef": { "fieldPath": "spec.nodeName" } } }],
                            "ports": [{ "name": "admin", "containerPort": 8889 }],
                            "readinessProbe": { "httpGet": { "path": "/healthz", "port": "admin" }, "periodSeconds": 10 },
                            "livenessProbe": { "httpGet": { "path": "/healthz", "port": "admin" }, "periodSeconds": 10, "failureThreshold": 6 },
                            "resources": { "requests": { "cpu": "100m", "memory": "128Mi" }, "limits": { "memory": "512Mi" } },
                            "securityContext": {
                                "runAsUser": 0,
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                // BPF+PERFMON: load programs and attach tracepoints; SYS_PTRACE:
                                // resolve other processes' /proc/<pid>/exe and fd links;
                                // DAC_READ_SEARCH: list /proc/<pid>/fd of processes of other
                                // users (mode 0500, owner only); SYS_RESOURCE: raise
                                // RLIMIT_MEMLOCK on kernels before 5.11. No SYS_ADMIN: tracefs
                                // is mounted from the host, not by the agent.
                                "capabilities": { "drop": ["ALL"], "add": ["BPF", "PERFMON", "SYS_PTRACE", "SYS_RESOURCE", "DAC_READ_SEARCH"] },
                            },
                            "volumeMounts": [
                                { "name": "tracefs", "mountPath": "/sys/kernel/tracing", "readOnly": true },
                                { "name": "config", "mountPath": AGENT_CONFIG_DIR, "readOnly": true },
                                { "name": "gateway-token", "mountPath": AGENT_GATEWAY_TOKEN_DIR, "readOnly": true },
                            ],
                        }],
                        "volumes": [
                            { "name": "tracefs", "hostPath": { "path": "/sys/kernel/tracing", "type": "Directory" } },
                            { "name": "config", "configMap": { "name": AGENT_CONFIGMAP } },
                            // A token only the gateway accepts (audience), bound to
                            // this pod, rotated by the kubelet before it expires.
                            { "name": "gateway-token", "projected": { "sources": [{ "serviceAccountToken": {
                                "audience": AGENT_TOKEN_AUDIENCE, "expirationSeconds": 3600, "path": "token",
                            } }] } },
                        ],
                    },
                },
            },
        }),
    )
}
