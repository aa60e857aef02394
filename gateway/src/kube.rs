//! A small Kubernetes API client: list and watch one collection as JSON.
//!
//! The gateway needs two calls (list, then watch from the list's
//! `resourceVersion`), not a full Kubernetes client; the discipline is the one of
//! "Efficient detection of changes"
//! (<https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes>)
//! and of the agent's pod watch (`agent/src/kube.rs`): list, watch from the list's
//! version, and on `410 Gone` (an `ERROR` event with code 410, or the status)
//! list again. In a pod it reads the ServiceAccount token (re-read per request:
//! projected tokens rotate) and CA from the standard mount.

use std::path::PathBuf;
use std::time::Duration;

/// Where the API server is and how to authenticate to it.
#[derive(Debug, Clone, clap::Args)]
pub struct KubeSettings {
    /// API server URL. Default: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`,
    /// as every pod has them.
    #[arg(long, env = "MOP_GATEWAY_KUBE_API_URL")]
    pub kube_api_url: Option<String>,
    /// Bearer token file (re-read on every request).
    #[arg(
        long,
        env = "MOP_GATEWAY_KUBE_TOKEN_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/token"
    )]
    pub kube_token_file: PathBuf,
    /// CA bundle of the API server.
    #[arg(
        long,
        env = "MOP_GATEWAY_KUBE_CA_FILE",
        default_value = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
    )]
    pub kube_ca_file: PathBuf,
    /// Namespace the gateway runs in (the downward API's `metadata.namespace`).
    /// Default: the ServiceAccount mount's `namespace` file.
    #[arg(long, env = "POD_NAMESPACE")]
    pub kube_namespace: Option<String>,
}

impl Default for KubeSettings {
    fn default() -> Self {
        Self {
            kube_api_url: None,
            kube_token_file: "/var/run/secrets/kubernetes.io/serviceaccount/token".into(),
            kube_ca_file: "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt".into(),
            kube_namespace: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "no API server: set --kube-api-url, or run in a pod (KUBERNETES_SERVICE_HOST is not set)"
    )]
    NoApiServer,
    #[error(
        "no namespace: set --kube-namespace or POD_NAMESPACE, or mount the ServiceAccount ({0})"
    )]
    NoNamespace(String),
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CA bundle {path}: {source}")]
    Ca {
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
    #[error("request to the API server: {0}")]
    Http(#[from] reqwest::Error),
    #[error("the API server answered {status} to {path}: {body}")]
    Status {
        status: u16,
        path: String,
        body: String,
    },
    #[error("decoding {what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the watch expired (410 Gone); relisting")]
    Expired,
    #[error("a watch event is larger than 16 MiB")]
    EventTooLarge,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An authenticated client for GETs against one API server.
#[derive(Debug, Clone)]
pub struct Client {
    base: String,
    token_file: Option<PathBuf>,
    http: reqwest::Client,
    pub namespace: String,
}

/// One line of a watch stream.
#[derive(Debug, serde::Deserialize)]
pub struct WatchEvent {
    #[serde(rename = "type")]
    pub kind: String,
    pub object: serde_json::Value,
}

impl Client {
    pub fn from_settings(s: &KubeSettings) -> Result<Self> {
        let base = match &s.kube_api_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => {
                let host =
                    std::env::var("KUBERNETES_SERVICE_HOST").map_err(|_| Error::NoApiServer)?;
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
        };
        let namespace = match &s.kube_namespace {
            Some(n) => n.clone(),
            None => {
                let p = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";
                std::fs::read_to_string(p)
                    .map(|n| n.trim().to_string())
                    .map_err(|e| Error::NoNamespace(format!("{p}: {e}")))?
            }
        };
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            // A watch is a long GET; only idle reads time out.
            .read_timeout(Duration::from_secs(330));
        if base.starts_with("https://") {
            let pem = std::fs::read(&s.kube_ca_file).map_err(|source| Error::File {
                path: s.kube_ca_file.clone(),
                source,
            })?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| Error::Ca {
                path: s.kube_ca_file.clone(),
                source,
            })? {
                http = http.add_root_certificate(cert);
            }
        }
        let token_file = s
            .kube_token_file
            .exists()
            .then(|| s.kube_token_file.clone());
        Ok(Self {
            base,
            token_file,
            http: http.build()?,
            namespace,
        })
    }

    async fn get(&self, path: &str) -> Result<reqwest::Response> {
        let mut req = self
            .http
            .get(format!("{}{path}", self.base))
            .header("accept", "application/json");
        if let Some(p) = &self.token_file {
            let t = std::fs::read_to_string(p).map_err(|source| Error::File {
                path: p.clone(),
                source,
            })?;
            req = req.bearer_auth(t.trim());
        }
        let resp = req.send().await?;
        let status = resp.status().as_u16();
        if status == 410 {
            return Err(Error::Expired);
        }
        if !resp.status().is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(Error::Status {
                status,
                path: path.to_string(),
                body: body.chars().take(512).collect(),
            });
        }
        Ok(resp)
    }

    /// GETs a list; returns the body.
    pub async fn list(&self, path: &str) -> Result<serde_json::Value> {
        let bytes = self.get(path).await?.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|source| Error::Json {
            what: "list",
            source,
        })
    }

    /// Watches `path` (which must already carry its query) from `rv`, handing each
    /// event to `on_event`, until the server ends the stream (`Ok` with the last
    /// version seen) or it expires (`Err(Expired)`).
    pub async fn watch(
        &self,
        path: &str,
        mut rv: String,
        mut on_event: impl FnMut(WatchEvent),
    ) -> Result<String> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let full = format!(
            "{path}{sep}watch=1&allowWatchBookmarks=true&timeoutSeconds=300&resourceVersion={rv}"
        );
        let mut resp = self.get(&full).await?;
        let mut buf: Vec<u8> = Vec::new();
        while let Some(chunk) = resp.chunk().await? {
            buf.extend_from_slice(&chunk);
            while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = buf.drain(..=pos).collect();
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                let ev: WatchEvent =
                    serde_json::from_slice(&line).map_err(|source| Error::Json {
                        what: "watch event",
                        source,
                    })?;
                if ev.kind == "ERROR" {
                    // A Status object; 410 means our resourceVersion is gone.
                    let code = ev.object.get("code").and_then(|c| c.as_u64());
                    if code == Some(410) {
                        return Err(Error::Expired);
                    }
                    return Err(Error::Status {
                        status: code.unwrap_or(500) as u16,
                        path: full,
                        body: ev.object.to_string(),
                    });
                }
                if let Some(v) = ev.object["metadata"]["resourceVersion"].as_str()
                    && !v.is_empty()
                {
                    rv = v.to_string();
                }
                on_event(ev);
            }
            if buf.len() > 16 * 1024 * 1024 {
                return Err(Error::EventTooLarge);
            }
        }
        Ok(rv)
    }
}
