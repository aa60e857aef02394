//! The tenants MOP has applied, kept in the cluster so that the objects of a
//! tenant the repository removes can still be found (Grafana orgs and ruler
//! tenants carry no owner label) after a restart, or from `mop sync` on another
//! machine.
//!
//! A ConfigMap `mop-inventory` in MOP's namespace, written with its own field
//! manager and without the `managed-by: mop` label (so the Kubernetes applier never
//! prunes it). It is rewritten only after a reconcile converged: until a removed
//! tenant's objects are really gone, the tenant stays in the inventory and in scope.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams};

use super::TenantRef;

pub const NAME: &str = "mop-inventory";
const KEY: &str = "tenants.json";
const FIELD_MANAGER: &str = "mop-inventory";

/// The tenants recorded in the cluster; empty when there is no inventory yet.
pub async fn load(client: &kube::Client, namespace: &str) -> Result<Vec<TenantRef>, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(NAME)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{NAME}: {e}"))?;
    let Some(text) = cm.and_then(|c| c.data).and_then(|mut d| d.remove(KEY)) else {
        return Ok(Vec::new());
    };
    let map: BTreeMap<String, Entry> = serde_json::from_str(&text).map_err(|e| {
        format!("ConfigMap {namespace}/{NAME} key {KEY} is not MOP's inventory: {e}")
    })?;
    Ok(map
        .into_iter()
        .map(|(key, e)| TenantRef {
            key,
            id: e.id,
            org: e.org,
        })
        .collect())
}

#[derive(serde::Serialize, serde::Deserialize, PartialEq, Eq)]
struct Entry {
    id: String,
    org: String,
}

fn encode<'a>(tenants: impl IntoIterator<Item = &'a TenantRef>) -> String {
    let map: BTreeMap<&str, Entry> = tenants
        .into_iter()
        .map(|t| {
            (
                t.key.as_str(),
                Entry {
                    id: t.id.clone(),
                    org: t.org.clone(),
                },
            )
        })
        .collect();
    serde_json::to_string_pretty(&map).unwrap_or_default()
}

/// Records `tenants` as the applied ones, unless the inventory already says so
/// (an unchanged repository writes nothing).
pub async fn save(
    client: &kube::Client,
    namespace: &str,
    previous: &[TenantRef],
    tenants: &[TenantRef],
) -> Result<bool, String> {
    let text = encode(tenants);
    if encode(previous) == text {
        return Ok(false);
    }
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let body = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": NAME,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/part-of": "mop" },
        },
        "data": { KEY: text },
    });
    api.patch(
        NAME,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| format!("cannot write ConfigMap {namespace}/{NAME}: {e}"))?;
    Ok(true)
}
