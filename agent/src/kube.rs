//! Kubernetes pod metadata: lists and watches the pods of this node through
//! the API server and indexes them by container id, so a process (whose
//! cgroup names its container) resolves to namespace, pod and workload.
//!
//! A small hand-written client (hyper over TCP or TLS): the agent needs one
//! list and one watch call, not a full Kubernetes client.
use std::{
    collections::HashMap,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::Duration,
};

use http_body_util::{BodyExt as _, Empty};
use hyper::{Request, StatusCode, body::Bytes};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid API server URL {0:?}: expected http(s)://host[:port]")]
    Url(String),
    #[error("connecting to the API server {addr}: {source}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS to the API server: {0}")]
    Tls(String),
    #[error("HTTP to the API server: {0}")]
    Http(#[from] hyper::Error),
    #[error("building the request: {0}")]
    Request(#[from] hyper::http::Error),
    #[error("the API server answered {status} to {path}: {body}")]
    Status {
        status: StatusCode,
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What the agent puts on resources from a pod.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct PodMeta {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub node: String,
    /// Owning workload kind (`Deployment`, `StatefulSet`, `DaemonSet`, …).
    pub workload_kind: Option<String>,
    pub workload_name: Option<String>,
}

// The subset of the Pod object (core/v1) the agent reads.
#[derive(Debug, Deserialize)]
struct PodList {
    metadata: ListMeta,
    #[serde(default)]
    items: Vec<Pod>,
}
#[derive(Debug, Deserialize)]
struct ListMeta {
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
}
#[derive(Debug, Deserialize, Default)]
struct Pod {
    #[serde(default)]
    metadata: ObjectMeta,
    #[serde(default)]
    spec: PodSpec,
    #[serde(default)]
    status: PodStatus,
}
#[derive(Debug, Deserialize, Default)]
struct ObjectMeta {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: String,
    #[serde(default)]
    uid: String,
    #[serde(rename = "resourceVersion", default)]
    resource_version: String,
    #[serde(rename = "ownerReferences", default)]
    owner_references: Vec<OwnerReference>,
}
#[derive(Debug, Deserialize, Default)]
struct OwnerReference {
    kind: String,
    name: String,
    #[serde(default)]
    controller: Option<bool>,
}
#[derive(Debug, Deserialize, Default)]
struct PodSpec {
    #[serde(rename = "nodeName", default)]
    node_name: String,
}
#[derive(Debug, Deserialize, Default)]
struct PodStatus {
    #[serde(rename = "containerStatuses", default)]
    container_statuses: Vec<ContainerStatus>,
    #[serde(rename = "initContainerStatuses", default)]
    init_container_statuses: Vec<ContainerStatus>,
}
#[derive(Debug, Deserialize, Default)]
struct ContainerStatus {
    #[serde(rename = "containerID", default)]
    container_id: String,
}
#[derive(Debug, Deserialize)]
struct WatchEvent {
    #[serde(rename = "type")]
    kind: String,
    object: serde_json::Value,
}

impl Pod {
    fn meta(&self) -> PodMeta {
        let owner = self
            .metadata
            .owner_references
            .iter()
            .find(|o| o.controller == Some(true))
            .or(self.metadata.owner_references.first());
        let (kind, name) = match owner {
            // A Deployment's pods are owned by a ReplicaSet named
            // `<deployment>-<hash>`; report the Deployment.
            Some(o) if o.kind == "ReplicaSet" => match o.name.rsplit_once('-') {
                Some((deploy, hash))
                    if !deploy.is_empty() && hash.bytes().all(|b| b.is_ascii_alphanumeric()) =>
                {
                    (Some("Deployment".to_owned()), Some(deploy.to_owned()))
                }
                _ => (Some(o.kind.clone()), Some(o.name.clone())),
            },
            Some(o) => (Some(o.kind.clone()), Some(o.name.clone())),
            None => (None, None),
        };
        PodMeta {
            namespace: self.metadata.namespace.clone(),
            name: self.metadata.name.clone(),
            uid: self.metadata.uid.clone(),
            node: self.spec.node_name.clone(),
            workload_kind: kind,
            workload_name: name,
        }
    }

    /// Container ids without the runtime prefix (`containerd://`).
    fn container_ids(&self) -> impl Iterator<Item = String> + '_ {
        self.status
            .container_statuses
            .iter()
            .chain(&self.status.init_container_statuses)
            .filter_map(|c| c.container_id.rsplit("://").next())
            .filter(|id| !id.is_empty())
            .map(|id| id.to_ascii_lowercase())
    }
}

/// Pods of this node by container id. Shared with the resolver.
#[derive(Debug, Default)]
pub struct PodIndex {
    by_container: HashMap<String, Arc<PodMeta>>,
    by_uid: HashMap<String, Vec<String>>,
}

impl PodIndex {
    pub fn get(&self, container_id: &str) -> Option<Arc<PodMeta>> {
        self.by_container.get(container_id).cloned()
    }

    pub fn pods(&self) -> usize {
        self.by_uid.len()
    }

    fn upsert(&mut self, pod: &Pod) {
        self.remove(&pod.metadata.uid);
        let meta = Arc::new(pod.meta());
        let ids: Vec<String> = pod.container_ids().collect();
        for id in &ids {
            self.by_container.insert(id.clone(), meta.clone());
        }
        self.by_uid.insert(pod.metadata.uid.clone(), ids);
    }

    fn remove(&mut self, uid: &str) {
        if let Some(ids) = self.by_uid.remove(uid) {
            for id in ids {
                self.by_container.remove(&id);
            }
        }
    }
}

pub type SharedIndex = Arc<RwLock<PodIndex>>;

/// Where and how to reach the API server.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// `https://10.0.0.1:443`, or `http://…` (tests, kubectl proxy).
    pub url: String,
    pub token_file: Option<PathBuf>,
    pub ca_file: Option<PathBuf>,
    pub node_name: String,
}

struct Target {
    tls: bool,
    host: String,
    port: u16,
}

fn parse_url(url: &str) -> Result<Target> {
    let (tls, rest) = if let Some(r) = url.strip_prefix("https://") {
        (true, r)
    } else if let Some(r) = url.strip_prefix("http://") {
        (false, r)
    } else {
        return Err(Error::Url(url.to_owned()));
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || h.starts_with('[') => match p.parse() {
            Ok(p) => (
                h.trim_start_matches('[').trim_end_matches(']').to_owned(),
                p,
            ),
            Err(_) => return Err(Error::Url(url.to_owned())),
        },
        _ => (rest.to_owned(), if tls { 443 } else { 80 }),
    };
    if host.is_empty() {
        return Err(Error::Url(url.to_owned()));
    }
    Ok(Target { tls, host, port })
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let mut roots = rustls::RootCertStore::empty();
    if let Some(path) = ca_file {
        for cert in CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?
        {
            let cert = cert.map_err(|e| Error::Tls(format!("{}: {e}", path.display())))?;
            roots.add(cert).map_err(|e| Error::Tls(e.to_string()))?;
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// Streams response bodies of GET requests.
struct Client {
    cfg: ApiConfig,
    target: Target,
    tls: Option<tokio_rustls::TlsConnector>,
}

type Body = hyper::body::Incoming;

impl Client {
    fn new(cfg: ApiConfig) -> Result<Client> {
        let target = parse_url(&cfg.url)?;
        let tls = if target.tls {
            Some(tls_connector(cfg.ca_file.as_ref())?)
        } else {
            None
        };
        Ok(Client { cfg, target, tls })
    }

    fn token(&self) -> Result<Option<String>> {
        // Re-read per request: projected service-account tokens rotate.
        match &self.cfg.token_file {
            Some(p) => std::fs::read_to_string(p)
                .map(|t| Some(t.trim().to_owned()))
                .map_err(|source| Error::File {
                    path: p.clone(),
                    source,
                }),
            None => Ok(None),
        }
    }

    async fn get(&self, path: &str) -> Result<hyper::Response<Body>> {
        let addr = format!("{}:{}", self.target.host, self.target.port);
        let tcp = TcpStream::connect(&addr)
            .await
            .map_err(|source| Error::Connect {
                addr: addr.clone(),
                source,
            })?;
        let mut req = Request::get(path)
            .header("host", &self.target.host)
            .header("accept", "application/json");
        if let Some(t) = self.token()? {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req.body(Empty::<Bytes>::new())?;
        let resp = match &self.tls {
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.target.host.clone())
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| Error::Tls(e.to_string()))?;
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
            None => {
                let (mut send, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
                tokio::spawn(conn);
                send.send_request(req).await?
            }
        };
        if resp.status() == StatusCode::GONE {
            return Err(Error::Expired);
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let body = resp
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(Error::Status {
                status,
                path: path.to_owned(),
                body: String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned(),
            });
        }
        Ok(resp)
    }

    fn pods_path(&self) -> String {
        format!(
            "/api/v1/pods?fieldSelector=spec.nodeName%3D{}",
            self.cfg.node_name
        )
    }

    async fn list(&self, index: &SharedIndex) -> Result<String> {
        let body = self
            .get(&self.pods_path())
            .await?
            .into_body()
            .collect()
            .await?
            .to_bytes();
        let list: PodList = serde_json::from_slice(&body).map_err(|source| Error::Json {
            what: "pod list",
            source,
        })?;
        let mut fresh = PodIndex::default();
        for p in &list.items {
            fresh.upsert(p);
        }
        let n = fresh.pods();
        if let Ok(mut idx) = index.write() {
            *idx = fresh;
        }
        info!(pods = n, node = %self.cfg.node_name, "listed pods");
        Ok(list.metadata.resource_version)
    }

    /// Applies watch events until the stream ends; returns the last
    /// resourceVersion seen.
    async fn watch(
        &self,
        index: &SharedIndex,
        mut rv: String,
        cancel: &CancellationToken,
    ) -> Result<String> {
        let path = format!(
            "{}&watch=1&allowWatchBookmarks=true&resourceVersion={rv}",
            self.pods_path()
        );
        let mut body = self.get(&path).await?.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                _ = cancel.cancelled() => return Ok(rv),
                f = body.frame() => f,
            };
            let Some(frame) = frame else { return Ok(rv) };
            let Ok(data) = frame?.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
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
                    let code = ev.object.get("code").and_then(|c| c.as_i64());
                    if code == Some(410) {
                        return Err(Error::Expired);
                    }
                    return Err(Error::Status {
                        status: StatusCode::from_u16(code.unwrap_or(500) as u16)
                            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                        path: path.clone(),
                        body: ev.object.to_string(),
                    });
                }
                let pod: Pod = serde_json::from_value(ev.object).map_err(|source| Error::Json {
                    what: "watched pod",
                    source,
                })?;
                if !pod.metadata.resource_version.is_empty() {
                    rv = pod.metadata.resource_version.clone();
                }
                if let Ok(mut idx) = index.write() {
                    match ev.kind.as_str() {
                        "ADDED" | "MODIFIED" => idx.upsert(&pod),
                        "DELETED" => idx.remove(&pod.metadata.uid),
                        _ => {} // BOOKMARK: only the resourceVersion matters
                    }
                }
                debug!(event = %ev.kind, pod = %pod.metadata.name, "pod watch event");
            }
            if buf.len() > 16 * 1024 * 1024 {
                return Err(Error::Tls("watch event larger than 16 MiB".into()));
            }
        }
    }
}

/// Keeps `index` in sync with the node's pods until cancelled: list, then
/// watch from the list's resourceVersion; on any error back off and relist.
pub async fn run(cfg: ApiConfig, index: SharedIndex, cancel: CancellationToken) {
    let client = match Client::new(cfg) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "Kubernetes metadata disabled");
            return;
        }
    };
    let mut backoff = Duration::from_millis(500);
    while !cancel.is_cancelled() {
        let result = async {
            let mut rv = client.list(&index).await?;
            loop {
                rv = client.watch(&index, rv, &cancel).await?;
                if cancel.is_cancelled() {
                    return Ok::<(), Error>(());
                }
            }
        }
        .await;
        match result {
            Ok(()) => return,
            Err(Error::Expired) => {
                backoff = Duration::from_millis(500);
                continue;
            }
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "pod watch failed");
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replica_set_owner_is_reported_as_its_deployment() {
        let pod: Pod = serde_json::from_str(
            r#"{"metadata":{"name":"web-7d4b9c6f5d-x2x9z","namespace":"shop","uid":"u1",
                "ownerReferences":[{"kind":"ReplicaSet","name":"web-7d4b9c6f5d","controller":true}]},
               "spec":{"nodeName":"n1"},
               "status":{"containerStatuses":[{"containerID":"containerd://ABCDEF"}]}}"#,
        )
        .unwrap();
        let m = pod.meta();
        assert_eq!(m.workload_kind.as_deref(), Some("Deployment"));
        assert_eq!(m.workload_name.as_deref(), Some("web"));
        assert_eq!(
            pod.container_ids().collect::<Vec<_>>(),
            vec!["abcdef".to_owned()]
        );
    }

    #[test]
    fn urls() {
        let t = parse_url("https://10.96.0.1:443").unwrap();
        assert!(t.tls && t.host == "10.96.0.1" && t.port == 443);
        let t = parse_url("http://127.0.0.1").unwrap();
        assert!(!t.tls && t.port == 80);
        assert!(parse_url("10.0.0.1:443").is_err());
    }
}
