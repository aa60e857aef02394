//! Fake of Mimir's Alertmanager configuration API: one configuration per tenant
//! by `X-Scope-OrgID`.
//!
//! Follows <https://grafana.com/docs/mimir/latest/references/http-api/#alertmanager>
//! and Mimir's handlers in `pkg/alertmanager/api.go`:
//! - `GET /api/v1/alerts`: 200 with YAML `template_files` then
//!   `alertmanager_config` (Go's `yaml.Marshal` of `UserConfig`, fields in that
//!   order), the configuration text exactly as it was posted (`cfg.RawConfig`,
//!   credentials included); 404 `alertmanager storage object not found`
//!   (`alertspb.ErrNotFound`) when the tenant has none.
//! - `POST /api/v1/alerts`: the body is YAML-decoded into `UserConfig` (400
//!   `error marshalling YAML Alertmanager config: …` when it does not decode),
//!   then `validateUserConfig`: an empty configuration is 400; the text is
//!   loaded with Alertmanager's `config.Load` (here: the real loader, Debian's
//!   `amtool check-config`, with the template files beside it as Mimir writes
//!   them to a temporary directory); `validateAlertmanagerConfig` refuses
//!   `password_file`/`bearer_token_file`/`credentials_file`, OAuth2
//!   `client_secret_file`, `proxy_url`, TLS `ca_file`/`cert_file`/`key_file`,
//!   Slack `api_url_file` and VictorOps `api_key_file`; template file names must
//!   be bare names (`validateTemplateFilename`). Every refusal is 400 `error
//!   validating Alertmanager config: …`. Stored: 201 with an empty body.
//! - `DELETE /api/v1/alerts`: 200, also when there is nothing to delete.
//! - Without `X-Scope-OrgID`: 401 `no org id` (dskit's auth middleware, which
//!   Mimir puts in front of these routes, `pkg/api/api.go`).
//!
//! The real Mimir runs Grafana's fork of a newer Alertmanager; the fake's
//! loader is Alertmanager 0.25, which lacks some integrations (`msteams_configs`
//! came in 0.26): such a configuration is refused here although Mimir accepts it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};

use crate::common::{self, Error, Recorder, lock};

/// The path of all three methods.
pub const PATH: &str = "/api/v1/alerts";

/// One tenant's stored configuration, as Mimir stores it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserConfig {
    #[serde(default)]
    pub template_files: BTreeMap<String, String>,
    #[serde(default)]
    pub alertmanager_config: String,
}

/// Every tenant's configuration, by tenant id.
#[derive(Debug, Default)]
pub struct AlertmanagerState {
    pub configs: BTreeMap<String, UserConfig>,
    /// Tenants whose reads fail with 500 (a broken bucket), to test that a
    /// failed read never becomes a delete.
    pub failing_reads: Vec<String>,
}

/// The state, shared with the Mimir fake that serves this API beside the ruler.
#[derive(Debug, Default, Clone)]
pub struct Shared(Arc<Mutex<AlertmanagerState>>);

impl Shared {
    pub fn with<R>(&self, f: impl FnOnce(&mut AlertmanagerState) -> R) -> R {
        f(&mut lock(&self.0))
    }
}

/// A running fake of Mimir's Alertmanager API alone. Dropping it stops it.
#[derive(Debug)]
pub struct FakeAlertmanager {
    server: common::Server,
    shared: Shared,
    recorder: Recorder,
}

impl FakeAlertmanager {
    pub async fn start() -> Result<Self, Error> {
        let shared = Shared::default();
        let recorder = Recorder::default();
        let server = common::serve(routes(shared.clone()), recorder.clone(), not_found).await?;
        Ok(Self {
            server,
            shared,
            recorder,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.server.addr)
    }

    pub fn recorder(&self) -> &Recorder {
        &self.recorder
    }

    pub fn state(&self) -> &Shared {
        &self.shared
    }

    /// The stored configuration of a tenant.
    pub fn config(&self, tenant: &str) -> Option<UserConfig> {
        self.shared.with(|s| s.configs.get(tenant).cloned())
    }
}

fn not_found() -> Response {
    text(StatusCode::NOT_FOUND, "404 page not found")
}

/// The routes, for a fake serving them beside others (Mimir serves the ruler
/// and the Alertmanager API under one URL).
pub fn routes(shared: Shared) -> Router {
    Router::new()
        .route(PATH, get(get_config).post(set_config).delete(delete_config))
        .with_state(shared)
}

/// Go's `http.Error`: plain text and a newline.
fn text(status: StatusCode, msg: &str) -> Response {
    let mut r = (status, format!("{msg}\n")).into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// The tenant, or the status and message Mimir refuses the request with.
fn tenant(h: &HeaderMap) -> Result<String, (StatusCode, &'static str)> {
    match h.get("X-Scope-OrgID").and_then(|v| v.to_str().ok()) {
        Some(v) if !v.is_empty() && !v.contains('|') => Ok(v.to_string()),
        Some(v) if v.contains('|') => Err((
            StatusCode::UNAUTHORIZED,
            "unable to determine the OrgID: multiple org IDs present",
        )),
        _ => Err((StatusCode::UNAUTHORIZED, "no org id")),
    }
}

async fn get_config(State(s): State<Shared>, h: HeaderMap) -> Response {
    let t = match tenant(&h) {
        Ok(t) => t,
        Err((status, msg)) => return text(status, msg),
    };
    let (failing, cfg) = s.with(|st| (st.failing_reads.contains(&t), st.configs.get(&t).cloned()));
    if failing {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "bucket read failed");
    }
    let Some(cfg) = cfg else {
        return text(
            StatusCode::NOT_FOUND,
            "alertmanager storage object not found",
        );
    };
    match serde_saphyr::to_string(&cfg) {
        Ok(body) => {
            let mut r = (StatusCode::OK, body).into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/yaml"),
            );
            r
        }
        Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

async fn set_config(State(s): State<Shared>, h: HeaderMap, body: Bytes) -> Response {
    let t = match tenant(&h) {
        Ok(t) => t,
        Err((status, msg)) => return text(status, msg),
    };
    let Ok(body) = std::str::from_utf8(&body) else {
        return text(
            StatusCode::BAD_REQUEST,
            "error marshalling YAML Alertmanager config: body is not UTF-8",
        );
    };
    let cfg: UserConfig = match serde_saphyr::from_str(body) {
        Ok(c) => c,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("error marshalling YAML Alertmanager config: {e}"),
            );
        }
    };
    let check = cfg.clone();
    let verdict = tokio::task::spawn_blocking(move || validate_user_config(&check))
        .await
        .unwrap_or_else(|e| Err(format!("validation task failed: {e}")));
    if let Err(e) = verdict {
        return text(
            StatusCode::BAD_REQUEST,
            &format!("error validating Alertmanager config: {e}"),
        );
    }
    s.with(|st| st.configs.insert(t, cfg));
    StatusCode::CREATED.into_response()
}

async fn delete_config(State(s): State<Shared>, h: HeaderMap) -> Response {
    let t = match tenant(&h) {
        Ok(t) => t,
        Err((status, msg)) => return text(status, msg),
    };
    s.with(|st| st.configs.remove(&t));
    StatusCode::OK.into_response()
}

/// `validateUserConfig` of `pkg/alertmanager/api.go`, in its order.
pub fn validate_user_config(cfg: &UserConfig) -> Result<(), String> {
    if cfg.alertmanager_config.is_empty() {
        return Err("configuration provided is empty, if you'd like to remove your configuration please use the delete configuration endpoint".into());
    }
    for name in cfg.template_files.keys() {
        validate_template_filename(name)?;
    }
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    for (name, body) in &cfg.template_files {
        std::fs::write(dir.path().join(name), body).map_err(|e| e.to_string())?;
    }
    let file = dir.path().join("alertmanager.yaml");
    std::fs::write(&file, &cfg.alertmanager_config).map_err(|e| e.to_string())?;
    // `config.Load` (and the templates it names), by the real loader.
    let out = std::process::Command::new("amtool")
        .arg("check-config")
        .arg(&file)
        .output()
        .map_err(|e| format!("cannot run amtool (Debian package prometheus-alertmanager): {e}"))?;
    if !out.status.success() {
        let said = String::from_utf8_lossy(&out.stdout);
        let why = said
            .lines()
            .find_map(|l| l.split_once("FAILED: ").map(|(_, w)| w.trim().to_string()))
            .unwrap_or_else(|| said.trim().to_string());
        return Err(why);
    }
    let parsed: serde_json::Value =
        serde_saphyr::from_str(&cfg.alertmanager_config).map_err(|e| e.to_string())?;
    refuse_local_files(&parsed, None)
}

/// `validateAlertmanagerConfig`: settings that would read the Alertmanager's own
/// disk or reach through a proxy are refused for tenants.
fn refuse_local_files(v: &serde_json::Value, integration: Option<&str>) -> Result<(), String> {
    match v {
        serde_json::Value::Object(m) => {
            for (k, child) in m {
                let set = !child.is_null() && child.as_str() != Some("");
                let refused = match k.as_str() {
                    "password_file" | "bearer_token_file" | "credentials_file" => Some(
                        "setting password_file, bearer_token_file and credentials_file is not allowed",
                    ),
                    "client_secret_file" => {
                        Some("setting OAuth2 client_secret_file is not allowed")
                    }
                    "proxy_url" => Some("setting proxy_url is not allowed"),
                    "ca_file" | "cert_file" | "key_file" => {
                        Some("setting TLS ca_file, cert_file and key_file is not allowed")
                    }
                    "slack_api_url_file" => Some(
                        "setting Slack api_url_file and global slack_api_url_file is not allowed",
                    ),
                    "api_url_file" if integration == Some("slack_configs") => Some(
                        "setting Slack api_url_file and global slack_api_url_file is not allowed",
                    ),
                    "api_key_file" if integration == Some("victorops_configs") => {
                        Some("setting VictorOps api_key_file is not allowed")
                    }
                    _ => None,
                };
                if let (Some(msg), true) = (refused, set) {
                    return Err(msg.into());
                }
                let inner = if k.ends_with("_configs") {
                    Some(k.as_str())
                } else {
                    integration
                };
                refuse_local_files(child, inner)?;
            }
            Ok(())
        }
        serde_json::Value::Array(items) => items
            .iter()
            .try_for_each(|i| refuse_local_files(i, integration)),
        _ => Ok(()),
    }
}

/// `validateTemplateFilename` (`pkg/alertmanager/multitenant.go`): Go's
/// `filepath.Base(name) == name` (so not empty, no `/`); `.` and `..` pass it
/// and then fail to be written (`unable to store template file`).
fn validate_template_filename(name: &str) -> Result<(), String> {
    if name.is_empty() || name.contains('/') {
        return Err(format!(
            "invalid template name {name:?}: the template name cannot contain any path"
        ));
    }
    if name == "." || name == ".." {
        return Err(format!("unable to store template file '{name}'"));
    }
    Ok(())
}
