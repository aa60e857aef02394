//! The gateway's identity in the Kubernetes fake, which enforces RBAC: its
//! ServiceAccount with the rules the syncer renders for it
//! (`syncer/src/render/kubernetes.rs`: the `mop-gateway` ClusterRole for sender
//! identity, the `mop-gateway-ring` Role for the ring's EndpointSlices). Whether
//! those rendered rules cover every call the gateway makes is checked against
//! the code's API-call table (`tests/tests/api_calls.rs`); here they make the
//! gateway's own tests run with no more than it will have in a cluster.

use mop_kube_fake::FakeKube;
use serde_json::json;

/// Creates the gateway's ServiceAccount (in `namespace`) and its RBAC; returns
/// the ServiceAccount's bearer token.
pub fn gateway_service_account(kube: &FakeKube, namespace: &str) -> String {
    let sa = json!({"kind": "ServiceAccount", "name": "mop-gateway", "namespace": namespace});
    for obj in [
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "mop-gateway", "namespace": namespace}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": "mop-gateway"},
            "rules": [
                {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]},
                {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": "mop-gateway"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "mop-gateway"},
            "subjects": [sa]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "mop-gateway-ring", "namespace": namespace},
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": {"name": "mop-gateway-ring", "namespace": namespace},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "mop-gateway-ring"},
            "subjects": [sa]}),
    ] {
        let exists = kube
            .get(
                obj["apiVersion"].as_str().unwrap(),
                obj["kind"].as_str().unwrap(),
                obj["metadata"]["namespace"].as_str(),
                obj["metadata"]["name"].as_str().unwrap(),
            )
            .is_some();
        if !exists {
            kube.put("test-setup", obj).unwrap();
        }
    }
    kube.service_account_token(namespace, "mop-gateway")
}
