//! Loading and hot-reloading `gateway.json`.
//!
//! Kubernetes updates a mounted ConfigMap by writing a new directory and swapping
//! the `..data` symlink, so file events on the path itself are unreliable. The
//! watcher therefore re-reads the file through its path (following the symlinks)
//! at a short interval and reloads when the bytes of the config or of any token
//! file change. A config that fails to parse or validate is logged and counted and
//! the running table stays; a good one replaces it atomically (`watch` channel),
//! while requests already routed keep the table they started with.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use mop_gateway_config::GatewayConfig;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::routing::{self, RouteTable};
use crate::telemetry::{Metrics, ResultLabel};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid gateway config: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: {source}")]
    Routing {
        path: PathBuf,
        #[source]
        source: routing::Error,
    },
}

/// A loaded table and the fingerprint of the bytes it came from.
#[derive(Debug)]
pub struct Loaded {
    pub table: RouteTable,
    pub fingerprint: u64,
}

fn read(path: &Path) -> Result<Vec<u8>, Error> {
    std::fs::read(path).map_err(|source| Error::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Fingerprint of the config file and every token file it names; `None` when a
/// file cannot be read (the reload then reports the error).
pub fn fingerprint(path: &Path) -> Option<u64> {
    let bytes = std::fs::read(path).ok()?;
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    if let Ok(cfg) = serde_json::from_slice::<GatewayConfig>(&bytes) {
        for f in cfg.tenants.iter().flat_map(|t| &t.token_files) {
            std::fs::read(f).ok().hash(&mut h);
        }
    }
    Some(h.finish())
}

pub fn load(path: &Path) -> Result<Loaded, Error> {
    let fp = fingerprint(path);
    let bytes = read(path)?;
    let cfg: GatewayConfig = serde_json::from_slice(&bytes).map_err(|source| Error::Parse {
        path: path.to_path_buf(),
        source,
    })?;
    let table = RouteTable::build(&cfg).map_err(|source| Error::Routing {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Loaded {
        table,
        fingerprint: fp.unwrap_or_default(),
    })
}

/// Polls the config until cancelled, publishing every good new version.
pub async fn watch_config(
    path: PathBuf,
    interval: Duration,
    mut current: u64,
    tx: watch::Sender<Arc<RouteTable>>,
    metrics: Metrics,
    cancel: CancellationToken,
) {
    let mut last_bad: Option<u64> = None;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        let Some(fp) = fingerprint(&path) else {
            continue;
        };
        if fp == current || Some(fp) == last_bad {
            continue;
        }
        match load(&path) {
            Ok(loaded) => {
                tracing::info!(path = %path.display(), revision = loaded.table.revision().unwrap_or(""), "gateway config reloaded");
                metrics
                    .config_reloads
                    .get_or_create(&ResultLabel {
                        result: "success".into(),
                    })
                    .inc();
                current = loaded.fingerprint;
                last_bad = None;
                tx.send_replace(Arc::new(loaded.table));
            }
            Err(e) => {
                // Logged once per bad version, not every poll.
                tracing::error!(error = %e, "new gateway config rejected; keeping the running one");
                metrics
                    .config_reloads
                    .get_or_create(&ResultLabel {
                        result: "failure".into(),
                    })
                    .inc();
                last_bad = Some(fp);
            }
        }
    }
}
