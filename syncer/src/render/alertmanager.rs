//! Mimir's Alertmanager: one configuration per tenant with an `alerting.yaml`.
//!
//! The body is what `POST /api/v1/alerts` takes
//! (<https://grafana.com/docs/mimir/latest/references/http-api/#set-alertmanager-configuration>),
//! with the Alertmanager configuration as a structure rather than a string, so
//! plans compare it field by field:
//!
//! ```json
//! {"alertmanager_config": {"route": …, "receivers": […], …},
//!  "template_files": {},
//!  "secrets": {"/receivers/0/slack_configs/0/api_url": {"secret": {"name": …, "key": …}}}}
//! ```
//!
//! Every credential field holds `<secret>`, Alertmanager's own placeholder for a
//! hidden secret (`config.SecretURL.UnmarshalYAML` accepts it where a URL is
//! due), so the rendered configuration is exactly what Alertmanager reads and
//! `amtool check-config` accepts, and never holds a credential. `secrets` maps
//! each placeholder (a JSON pointer into `alertmanager_config`) to its
//! reference; the applier resolves them when it sends the configuration.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use super::{Builder, Kind, RenderError, Result, Target};
use crate::model::alerting::{AlertingFile, PlatformAlertingFile, Receiver};
use crate::repo::Repo;

/// The one resource name of a tenant's configuration.
pub const CONFIG_NAME: &str = "alertmanager";

/// Alertmanager's placeholder for a secret it does not show.
pub const SECRET_PLACEHOLDER: &str = "<secret>";

/// The placeholder of a webhook's `url`: Alertmanager 0.25 (Debian's, which the
/// tests run) parses it as a plain URL and refuses `<secret>` there; `.invalid`
/// is a reserved top-level domain (RFC 2606), so it can never be reached.
pub const URL_PLACEHOLDER: &str = "https://secret.invalid/";

/// The placeholder of a credential field.
pub fn placeholder(integration: &str, field: &str) -> &'static str {
    if (integration, field) == ("webhook_configs", "url") {
        URL_PLACEHOLDER
    } else {
        SECRET_PLACEHOLDER
    }
}

/// Credential fields of each integration, as paths below one entry of its list.
/// Both render (placeholders) and the applier (hashing what Mimir holds) use it.
pub const SECRET_FIELDS: &[(&str, &[&str])] = &[
    ("slack_configs", &["api_url"]),
    ("pagerduty_configs", &["routing_key", "service_key"]),
    ("email_configs", &["auth_password", "auth_secret"]),
    (
        "webhook_configs",
        &[
            "url",
            "http_config/basic_auth/password",
            "http_config/authorization/credentials",
        ],
    ),
    ("opsgenie_configs", &["api_key"]),
    ("msteams_configs", &["webhook_url"]),
];

pub(super) fn render(repo: &Repo, b: &mut Builder) -> Result<()> {
    for t in &repo.tenants {
        let Some(file) = &t.alerting else {
            continue;
        };
        let body = body(file, repo.alerting.as_ref(), &t.alert_templates).map_err(|source| {
            RenderError::Serialise {
                what: format!("alertmanager config of tenant {}", t.key),
                source,
            }
        })?;
        b.add(
            Target::MimirAlertmanager,
            Some(&t.key),
            Kind::AlertmanagerConfig,
            CONFIG_NAME,
            None,
            &body,
        )?;
    }
    Ok(())
}

/// The tenant's configuration with the platform's routes first under the root
/// and the platform's receivers after the tenant's.
fn body(
    file: &AlertingFile,
    platform: Option<&PlatformAlertingFile>,
    templates: &BTreeMap<String, String>,
) -> std::result::Result<Value, serde_json::Error> {
    let mut route = serde_json::to_value(&file.route)?;
    let platform_routes: Vec<Value> = platform
        .map(|p| p.routes.iter().map(serde_json::to_value).collect())
        .transpose()?
        .unwrap_or_default();
    if !platform_routes.is_empty()
        && let Some(r) = route.as_object_mut()
    {
        let mut routes = platform_routes;
        if let Some(Value::Array(own)) = r.remove("routes") {
            routes.extend(own);
        }
        r.insert("routes".into(), Value::Array(routes));
    }
    let receivers: Vec<&Receiver> = file
        .receivers
        .iter()
        .chain(platform.iter().flat_map(|p| &p.receivers))
        .collect();
    let mut receivers = serde_json::to_value(receivers)?;
    let mut secrets = BTreeMap::new();
    placeholders(&mut receivers, &mut secrets);
    let mut config = Map::new();
    config.insert("route".into(), route);
    config.insert("receivers".into(), receivers);
    if !file.inhibit_rules.is_empty() {
        config.insert(
            "inhibit_rules".into(),
            serde_json::to_value(&file.inhibit_rules)?,
        );
    }
    if !file.time_intervals.is_empty() {
        config.insert(
            "time_intervals".into(),
            serde_json::to_value(&file.time_intervals)?,
        );
    }
    if !templates.is_empty() {
        // Mimir writes each template file into the tenant's directory and
        // resolves these names there (`pkg/alertmanager/api.go`); Alertmanager
        // and amtool resolve them beside the configuration file.
        config.insert(
            "templates".into(),
            json!(templates.keys().collect::<Vec<_>>()),
        );
    }
    Ok(json!({
        "alertmanager_config": config,
        "template_files": templates,
        "secrets": secrets,
    }))
}

/// Every credential field of `receivers` (as serialised: the reference) is
/// replaced by [`SECRET_PLACEHOLDER`]; `secrets` gets pointer → reference.
fn placeholders(receivers: &mut Value, secrets: &mut BTreeMap<String, Value>) {
    for_each_secret(receivers, |pointer, placeholder, v| {
        let reference = std::mem::replace(v, Value::String(placeholder.into()));
        secrets.insert(pointer.to_string(), reference);
    });
}

/// Calls `f` with the pointer (from the configuration's root), the placeholder
/// and the value of every credential field present in a `receivers` list.
pub fn for_each_secret(receivers: &mut Value, mut f: impl FnMut(&str, &'static str, &mut Value)) {
    let Some(list) = receivers.as_array_mut() else {
        return;
    };
    for (i, r) in list.iter_mut().enumerate() {
        for (integration, fields) in SECRET_FIELDS {
            let Some(configs) = r.get_mut(*integration).and_then(Value::as_array_mut) else {
                continue;
            };
            for (j, c) in configs.iter_mut().enumerate() {
                for field in *fields {
                    let pointer = format!("/{field}");
                    if let Some(v) = c.pointer_mut(&pointer)
                        && !v.is_null()
                    {
                        f(
                            &format!("/receivers/{i}/{integration}/{j}/{field}"),
                            placeholder(integration, field),
                            v,
                        );
                    }
                }
            }
        }
    }
}

/// Whether any alerting file of `repo` references a Kubernetes Secret (so
/// applying needs a cluster connection).
pub fn uses_kubernetes_secrets(repo: &Repo) -> bool {
    repo.tenants
        .iter()
        .filter_map(|t| t.alerting.as_ref())
        .filter_map(|a| serde_json::to_value(&a.receivers).ok())
        .chain(
            repo.alerting
                .iter()
                .filter_map(|p| serde_json::to_value(&p.receivers).ok()),
        )
        .any(|mut receivers| {
            let mut any = false;
            for_each_secret(&mut receivers, |_, _, v| any |= v.get("secret").is_some());
            any
        })
}
