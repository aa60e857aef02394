//! The tenants MOP has applied, and the revision it last applied everywhere,
//! kept in the cluster so that the objects of a tenant the repository removes can
//! still be found (Grafana orgs and ruler tenants carry no owner label) after a
//! restart or from `mop sync` on another machine, and so that a restarted or newly
//! elected syncer knows the applied revision: re-applying it would revert hand
//! edits that the drift policy `report` promises to leave alone.
//!
//! A ConfigMap `mop-inventory` in MOP's namespace, written with its own field
//! manager and without the `managed-by: mop` label (so the Kubernetes applier never
//! prunes it). It is rewritten only after a reconcile converged: until a removed
//! tenant's objects are really gone, the tenant stays in the inventory and in scope.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;

use super::TenantRef;

pub const NAME: &str = "mop-inventory";
const KEY: &str = "tenants.json";
const KEY_REVISION: &str = "applied-revision";

/// What the inventory records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Inventory {
    pub tenants: Vec<TenantRef>,
    /// The revision last applied to every target; `None` after partial syncs only.
    pub revision: Option<String>,
}
const FIELD_MANAGER: &str = "mop-inventory";

/// What the cluster records; empty when there is no inventory yet.
pub async fn load(client: &kube::Client, namespace: &str) -> Result<Inventory, String> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let cm = api
        .get_opt(NAME)
        .await
        .map_err(|e| format!("cannot read ConfigMap {namespace}/{NAME}: {e}"))?;
    let mut data = cm.and_then(|c| c.data).unwrap_or_default();
    let revision = data.remove(KEY_REVISION).filter(|r| !r.is_empty());
    let Some(text) = data.remove(KEY) else {
        return Ok(Inventory {
            tenants: Vec::new(),
            revision,
        });
    };
    let map: BTreeMap<String, Entry> = serde_json::from_str(&text).map_err(|e| {
        format!("ConfigMap {namespace}/{NAME} key {KEY} is not MOP's inventory: {e}")
    })?;
    let tenants = map
        .into_iter()
        .map(|(key, e)| TenantRef {
            key,
            id: e.id,
            org: e.org,
        })
        .collect();
    Ok(Inventory { tenants, revision })
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

/// Records `now`, unless the inventory already says so (an unchanged repository
/// writes nothing).
pub async fn save(
    client: &kube::Client,
    namespace: &str,
    previous: &Inventory,
    now: &Inventory,
) -> Result<bool, String> {
    let text = encode(&now.tenants);
    if encode(&previous.tenants) == text && previous.revision == now.revision {
        return Ok(false);
    }
    let data = serde_json::json!({
        KEY: text,
        KEY_REVISION: now.revision.clone().unwrap_or_default(),
    });
    super::kubernetes::apply_own_config_map(client, namespace, NAME, FIELD_MANAGER, data)
        .await
        .map_err(|e| format!("cannot write ConfigMap {namespace}/{NAME}: {e}"))?;
    Ok(true)
}
