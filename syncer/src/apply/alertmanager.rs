//! Mimir's Alertmanager configuration API, one configuration per tenant by
//! `X-Scope-OrgID` (<https://grafana.com/docs/mimir/latest/references/http-api/#alertmanager>).
//!
//! What Mimir does, from `pkg/alertmanager/api.go`:
//! - `GET /api/v1/alerts` answers the stored configuration as YAML
//!   `{template_files: {…}, alertmanager_config: "<the raw text>"}`, the text
//!   exactly as it was posted (`cfg.RawConfig`), credentials included; 404
//!   `alertmanager storage object not found` when the tenant has none. Any
//!   other 404 (no Alertmanager in that Mimir, a wrong URL) is a failed read
//!   for a tenant with an `alerting.yaml`, and nothing for one without.
//! - `POST /api/v1/alerts` takes the same YAML, loads the text with
//!   Alertmanager's `config.Load`, refuses `*_file` settings, proxies and TLS
//!   files, checks the template files, stores it and answers 201.
//! - `DELETE /api/v1/alerts` removes it and answers 200 (also when there is none).
//!
//! Credentials: the rendered configuration holds placeholders and, beside it,
//! the references ([`crate::render::alertmanager`]). `observe` resolves every
//! reference of the desired configurations (Kubernetes Secrets in MOP's
//! namespace, one read per Secret, or files), then compares in one normal form:
//! credential fields replaced by their placeholders and a salted SHA-256 of the
//! values, both for what Mimir holds and for the resolved desired state. A
//! rotated Secret is an update; nothing in a plan, log or report shows a value.
//! A tenant whose references cannot be resolved, or whose configuration cannot
//! be read, is an observe failure: nothing of it is created, updated or deleted.
//!
//! Ownership: the text MOP posts starts with [`MARKER`]. A configuration
//! without it (made with mimirtool or by hand) is left alone unless the
//! repository has one for that tenant, which then replaces it.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::http::{Client, RetryPolicy, check};
use super::{Applier, ApplyError, ObserveFailure, Observed, Scope, TenantRef};
use crate::model::SecretRef;
use crate::plan::{Action, Change};
use crate::render::alertmanager::{CONFIG_NAME, for_each_secret};
use crate::render::{Desired, Kind, Resource, ResourceId, Target};

/// The API path (`pkg/api/api.go` registers the three methods on it).
pub const PATH: &str = "/api/v1/alerts";

/// The first line of every configuration MOP posts: how `observe` tells MOP's
/// configurations from others. Alertmanager ignores comments, and Mimir keeps
/// the text as posted.
pub const MARKER: &str = "# Managed by MOP from the config repository (tenants/<tenant>/alerting.yaml); edits here are overwritten.\n";

/// Key of the hash of the credential values in the normal form.
pub const SECRETS_HASH_KEY: &str = "secrets_sha256";

/// What Mimir answers for a tenant without a configuration (`alertspb.ErrNotFound`).
const NOT_FOUND: &str = "alertmanager storage object not found";

const READ_CONCURRENCY: usize = 8;

/// The body of `GET`/`POST /api/v1/alerts` (`api.go`, `UserConfig`).
#[derive(Debug, Serialize, Deserialize)]
struct UserConfig {
    #[serde(default)]
    template_files: BTreeMap<String, String>,
    #[serde(default)]
    alertmanager_config: String,
}

/// Pointer → credential value, for one desired configuration.
type Resolved = BTreeMap<String, String>;

/// Mimir's Alertmanager configuration API.
pub struct AlertmanagerApplier {
    client: Client,
    kube: Option<kube::Client>,
    /// Where `secret:` references are read: MOP's namespace.
    namespace: String,
    /// Credentials of each desired configuration, resolved by the last
    /// `observe`; `canonical` and `apply` read them from here.
    resolved: Mutex<HashMap<ResourceId, Resolved>>,
}

impl AlertmanagerApplier {
    /// `base` is Mimir's URL (`backends.mimir.url`); `kube` reads the Secrets
    /// the configurations reference, in `namespace`.
    pub fn new(
        base: &str,
        retry: RetryPolicy,
        kube: Option<kube::Client>,
        namespace: &str,
    ) -> Result<Self, ApplyError> {
        Ok(Self {
            client: Client::new(base, retry)?,
            kube,
            namespace: namespace.to_string(),
            resolved: Mutex::new(HashMap::new()),
        })
    }

    async fn read_tenant(&self, t: &TenantRef, wanted: bool) -> Result<Option<Resource>, String> {
        let req = self
            .client
            .request(Method::GET, PATH)
            .header("X-Scope-OrgID", &t.id);
        let resp = self.client.send(req).await.map_err(|e| e.message)?;
        if resp.status() == StatusCode::NOT_FOUND {
            let body = resp.text().await.unwrap_or_default();
            // Any other 404 (a wrong URL, no Alertmanager in this Mimir) is a
            // failed read for a tenant the repository wants configured. For
            // one it does not, "nothing here" is the truth as far as it
            // matters: an absent object is never deleted, so a platform without
            // Mimir's Alertmanager and without alerting.yaml syncs quietly.
            if body.trim() == NOT_FOUND || !wanted {
                return Ok(None);
            }
            return Err(format!(
                "GET {PATH}: HTTP 404: {}",
                body.trim().chars().take(200).collect::<String>()
            ));
        }
        let resp = check(resp).await.map_err(|e| e.message)?;
        let text = resp
            .text()
            .await
            .map_err(|e| format!("GET {PATH}: reading the answer: {e}"))?;
        let live: UserConfig = serde_saphyr::from_str(&text).map_err(|e| {
            format!("GET {PATH}: the answer is not Mimir's configuration YAML: {e}")
        })?;
        if !live.alertmanager_config.starts_with(MARKER) && !wanted {
            return Ok(None);
        }
        let config: Value = serde_saphyr::from_str(&live.alertmanager_config).map_err(|e| {
            format!("GET {PATH}: the stored Alertmanager configuration is not YAML: {e}")
        })?;
        let templates = serde_json::to_value(&live.template_files).unwrap_or_default();
        Ok(Some(Resource {
            id: id_of(&t.key),
            title: None,
            body: Arc::from(normal_form(config, templates, &t.id).to_string()),
        }))
    }

    /// Reads every credential a desired configuration references: one `get`
    /// per Secret (`cache`), a file per use.
    async fn resolve(
        &self,
        r: &Resource,
        cache: &mut HashMap<String, Result<BTreeMap<String, String>, String>>,
    ) -> Result<Resolved, String> {
        let v: Value = serde_json::from_str(&r.body).map_err(|e| format!("body: {e}"))?;
        let mut out = Resolved::new();
        let Some(secrets) = v.get("secrets").and_then(Value::as_object) else {
            return Ok(out);
        };
        for (pointer, reference) in secrets {
            let reference: SecretRef = serde_json::from_value(reference.clone())
                .map_err(|e| format!("{pointer}: not a secret reference: {e}"))?;
            let value = match &reference {
                SecretRef::File(path) => std::fs::read_to_string(path)
                    .map_err(|e| format!("cannot read the credential file {path}: {e}"))?,
                SecretRef::Secret(s) => {
                    if !cache.contains_key(&s.name) {
                        let read = self.read_secret(&s.name).await;
                        cache.insert(s.name.clone(), read);
                    }
                    let data = match cache.get(&s.name) {
                        Some(Ok(d)) => d,
                        Some(Err(e)) => return Err(e.clone()),
                        None => return Err(format!("Secret {} was not read", s.name)),
                    };
                    data.get(&s.key).cloned().ok_or_else(|| {
                        format!("Secret {}/{} has no key {}", self.namespace, s.name, s.key)
                    })?
                }
            };
            // A file or Secret written by an editor ends in a newline that is
            // no part of a URL or key.
            out.insert(
                pointer.clone(),
                value.trim_end_matches(['\n', '\r']).to_string(),
            );
        }
        Ok(out)
    }

    async fn read_secret(&self, name: &str) -> Result<BTreeMap<String, String>, String> {
        let Some(client) = &self.kube else {
            return Err(format!(
                "Secret {}/{name} is a Kubernetes Secret but no cluster is configured; use `file:` or set KUBECONFIG",
                self.namespace
            ));
        };
        let api: kube::Api<k8s_openapi::api::core::v1::Secret> =
            kube::Api::namespaced(client.clone(), &self.namespace);
        let secret = api
            .get(name)
            .await
            .map_err(|e| format!("cannot read Secret {}/{name}: {e}", self.namespace))?;
        let mut out = BTreeMap::new();
        for (k, v) in secret.data.unwrap_or_default() {
            let s = String::from_utf8(v.0)
                .map_err(|_| format!("Secret {}/{name} key {k} is not UTF-8", self.namespace))?;
            out.insert(k, s);
        }
        Ok(out)
    }

    fn resolved_of(&self, id: &ResourceId) -> Option<Resolved> {
        self.resolved
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
    }
}

fn id_of(tenant: &str) -> ResourceId {
    ResourceId {
        target: Target::MimirAlertmanager,
        tenant: Some(tenant.to_string()),
        kind: Kind::AlertmanagerConfig,
        name: CONFIG_NAME.to_string(),
    }
}

/// The rendered configuration with every placeholder replaced by its resolved
/// credential: what is posted. `None` when a placeholder has no value.
pub fn resolved_config(body: &Value, resolved: &Resolved) -> Result<Value, String> {
    let mut config = body
        .get("alertmanager_config")
        .cloned()
        .ok_or("the rendered body has no alertmanager_config")?;
    let secrets = body.get("secrets").and_then(Value::as_object);
    for pointer in secrets.into_iter().flat_map(|s| s.keys()) {
        let value = resolved
            .get(pointer)
            .ok_or_else(|| format!("the credential at {pointer} was not resolved"))?;
        let slot = config
            .pointer_mut(pointer)
            .ok_or_else(|| format!("the rendered configuration has nothing at {pointer}"))?;
        *slot = Value::String(value.clone());
    }
    Ok(config)
}

/// The text posted as `alertmanager_config`: [`MARKER`], then the YAML.
pub fn config_text(config: &Value) -> Result<String, String> {
    let yaml = serde_saphyr::to_string(config).map_err(|e| format!("cannot write YAML: {e}"))?;
    Ok(format!("{MARKER}{yaml}"))
}

/// The normal form both sides are compared in: credentials replaced by their
/// placeholders, and a hash of their values salted with the tenant id (so two
/// tenants' equal credentials do not show as equal).
pub fn normal_form(mut config: Value, templates: Value, tenant_id: &str) -> Value {
    let mut h = Sha256::new();
    h.update(tenant_id.as_bytes());
    let mut any = false;
    if let Some(receivers) = config.get_mut("receivers") {
        for_each_secret(receivers, |pointer, placeholder, v| {
            let value = match std::mem::replace(v, Value::String(placeholder.into())) {
                Value::String(s) => s,
                other => other.to_string(),
            };
            any = true;
            for part in [pointer, &value] {
                h.update([0u8]);
                h.update(part.as_bytes());
            }
        });
    }
    let mut out = serde_json::json!({
        "alertmanager_config": config,
        "template_files": templates,
    });
    if any {
        out[SECRETS_HASH_KEY] = Value::String(hex::encode(h.finalize()));
    }
    out
}

#[async_trait::async_trait]
impl Applier for AlertmanagerApplier {
    fn target(&self) -> Target {
        Target::MimirAlertmanager
    }

    async fn observe(&self, scope: &Scope, desired: &Desired) -> Observed {
        let mut observed = Observed::default();
        // Credentials first: a tenant whose configuration cannot be completed is
        // not touched at all.
        let mut cache = HashMap::new();
        let mut resolved = HashMap::new();
        for r in desired
            .resources
            .values()
            .filter(|r| r.id.target == Target::MimirAlertmanager)
        {
            match self.resolve(r, &mut cache).await {
                Ok(values) => {
                    resolved.insert(r.id.clone(), values);
                }
                Err(e) => observed.failures.push(ObserveFailure {
                    tenant: r.id.tenant.clone(),
                    error: format!("the Alertmanager configuration's credentials: {e}"),
                }),
            }
        }
        *self.resolved.lock().unwrap_or_else(PoisonError::into_inner) = resolved;

        let tenants: Vec<(TenantRef, bool)> = scope
            .tenants
            .values()
            .map(|t| {
                let wanted = desired.resources.contains_key(&id_of(&t.key));
                (t.clone(), wanted)
            })
            .collect();
        let reads = futures::stream::iter(tenants)
            .map(|(t, wanted)| async move {
                let read = self.read_tenant(&t, wanted).await;
                (t, read)
            })
            .buffered(READ_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (t, read) in reads {
            match read {
                Ok(Some(r)) => {
                    observed.live.insert(r.id.clone(), r);
                }
                Ok(None) => {}
                Err(error) => observed.failures.push(ObserveFailure {
                    tenant: Some(t.key.clone()),
                    error,
                }),
            }
        }
        observed
    }

    fn canonical(&self, desired: &Resource) -> Resource {
        let Ok(body) = serde_json::from_str::<Value>(&desired.body) else {
            return desired.clone();
        };
        let templates = body.get("template_files").cloned().unwrap_or_default();
        // Unresolved (the tenant is an observe failure, or no observe ran): the
        // placeholders stand for themselves, which never equals a live
        // configuration with credentials.
        let config = match self.resolved_of(&desired.id) {
            Some(values) => resolved_config(&body, &values).ok(),
            None => None,
        }
        .or_else(|| body.get("alertmanager_config").cloned())
        .unwrap_or_default();
        let tenant_id = desired.id.tenant.as_deref().unwrap_or_default();
        Resource {
            body: Arc::from(normal_form(config, templates, tenant_id).to_string()),
            ..desired.clone()
        }
    }

    async fn apply(
        &self,
        scope: &Scope,
        change: &Change,
        desired: Option<&Resource>,
        _live: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = change
            .id
            .tenant
            .as_deref()
            .and_then(|k| scope.tenant(k))
            .ok_or_else(|| ApplyError::new(format!("{}: no tenant in scope", change.id)))?;
        match change.action {
            Action::Create | Action::Update => {
                let desired = desired.ok_or_else(|| {
                    ApplyError::new(format!("{}: no desired configuration", change.id))
                })?;
                let body: Value = serde_json::from_str(&desired.body)
                    .map_err(|e| ApplyError::new(format!("{}: body: {e}", change.id)))?;
                let values = self.resolved_of(&change.id).ok_or_else(|| {
                    ApplyError::new(format!(
                        "{}: its credentials were not resolved in this reconcile",
                        change.id
                    ))
                })?;
                let config = resolved_config(&body, &values)
                    .and_then(|c| config_text(&c))
                    .map_err(|e| ApplyError::new(format!("{}: {e}", change.id)))?;
                let template_files: BTreeMap<String, String> = body
                    .get("template_files")
                    .cloned()
                    .map(serde_json::from_value)
                    .transpose()
                    .map_err(|e| ApplyError::new(format!("{}: template_files: {e}", change.id)))?
                    .unwrap_or_default();
                let yaml = serde_saphyr::to_string(&UserConfig {
                    template_files,
                    alertmanager_config: config,
                })
                .map_err(|e| ApplyError::new(format!("{}: cannot write YAML: {e}", change.id)))?;
                let req = self
                    .client
                    .request(Method::POST, PATH)
                    .header("X-Scope-OrgID", &tenant.id)
                    .header(reqwest::header::CONTENT_TYPE, "application/yaml")
                    .body(yaml);
                check(self.client.send(req).await?).await?;
                Ok(())
            }
            Action::Delete => {
                let req = self
                    .client
                    .request(Method::DELETE, PATH)
                    .header("X-Scope-OrgID", &tenant.id);
                check(self.client.send(req).await?).await?;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_normal_form_hides_values_and_tells_them_apart() {
        let config = |url: &str| {
            serde_json::json!({
                "route": {"receiver": "a"},
                "receivers": [{"name": "a", "slack_configs": [{"api_url": url, "channel": "#a"}]}],
            })
        };
        let one = normal_form(
            config("https://hooks.example/T1"),
            serde_json::json!({}),
            "t",
        );
        let same = normal_form(
            config("https://hooks.example/T1"),
            serde_json::json!({}),
            "t",
        );
        let other = normal_form(
            config("https://hooks.example/T2"),
            serde_json::json!({}),
            "t",
        );
        let other_tenant = normal_form(
            config("https://hooks.example/T1"),
            serde_json::json!({}),
            "u",
        );
        assert_eq!(one, same);
        assert_ne!(one[SECRETS_HASH_KEY], other[SECRETS_HASH_KEY]);
        assert_ne!(one[SECRETS_HASH_KEY], other_tenant[SECRETS_HASH_KEY]);
        assert!(!one.to_string().contains("hooks.example"), "{one}");
        assert_eq!(
            one["alertmanager_config"]["receivers"][0]["slack_configs"][0]["api_url"],
            "<secret>"
        );
    }

    #[test]
    fn resolving_fills_every_placeholder_or_fails() {
        let body = serde_json::json!({
            "alertmanager_config": {"route": {"receiver": "a"},
                "receivers": [{"name": "a", "webhook_configs": [{"url": "https://secret.invalid/"}]}]},
            "secrets": {"/receivers/0/webhook_configs/0/url": {"secret": {"name": "s", "key": "k"}}},
            "template_files": {},
        });
        let mut values = Resolved::new();
        assert!(resolved_config(&body, &values).is_err());
        values.insert(
            "/receivers/0/webhook_configs/0/url".into(),
            "http://127.0.0.1:9/hook".into(),
        );
        let c = resolved_config(&body, &values).unwrap();
        assert_eq!(
            c["receivers"][0]["webhook_configs"][0]["url"],
            "http://127.0.0.1:9/hook"
        );
        let text = config_text(&c).unwrap();
        assert!(text.starts_with(MARKER));
        let back: Value = serde_saphyr::from_str(&text).unwrap();
        assert_eq!(back, c);
    }
}
