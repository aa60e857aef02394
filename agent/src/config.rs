//! Agent configuration (YAML). Every struct rejects unknown fields; the doc
//! comments are the user documentation (docs/agent.md shows an example).
use std::{net::SocketAddr, path::Path, time::Duration};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: Box<serde_saphyr::Error>,
    },
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// OTLP gRPC endpoint of the gateway, e.g. `http://mop-gateway:4317`.
    pub otlp_endpoint: String,
    /// Projected ServiceAccount token (audience `mop-gateway`) sent to the gateway
    /// as `Authorization: Bearer`, re-read for every request as the kubelet
    /// rotates it. The gateway verifies it with TokenReview and then accepts the
    /// namespaces of this node's pods; without it the agent is an anonymous sender.
    #[serde(default)]
    pub gateway_token_file: Option<std::path::PathBuf>,
    /// What to instrument. A process matching any rule is captured.
    #[serde(default)]
    pub instrument: Instrument,
    /// Resource attributes by executable and/or port, first match wins. This
    /// is how a process outside Kubernetes gets `k8s.namespace.name` (the
    /// gateway routes tenants by it) and `service.name`.
    #[serde(default)]
    pub services: Vec<ServiceRule>,
    #[serde(default)]
    pub capture: Capture,
    #[serde(default)]
    pub export: Export,
    /// Where to serve the agent's own Prometheus metrics; none if absent.
    #[serde(default)]
    pub metrics_listen: Option<SocketAddr>,
    /// How often /proc is rescanned for processes to instrument.
    #[serde(default = "default_rescan_ms")]
    pub rescan_interval_ms: u64,
    /// Histogram series per metric before new attribute sets go to the
    /// overflow series (`otel.metric.overflow=true`).
    #[serde(default = "default_cardinality")]
    pub metric_cardinality_limit: usize,
    /// Pod metadata from the Kubernetes API (pods of this node).
    #[serde(default)]
    pub kubernetes: Kubernetes,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Kubernetes {
    /// `true`/`false`; absent means "on when running in a pod"
    /// (KUBERNETES_SERVICE_HOST is set).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// API server URL; default `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    #[serde(default)]
    pub api_server: Option<String>,
    /// Bearer token; default the pod's service-account token.
    #[serde(default)]
    pub token_file: Option<std::path::PathBuf>,
    /// CA bundle for the API server; default the service-account CA.
    #[serde(default)]
    pub ca_file: Option<std::path::PathBuf>,
    /// This node's name (watch only its pods); default `$NODE_NAME` (set it
    /// from `spec.nodeName` with the downward API).
    #[serde(default)]
    pub node_name: Option<String>,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl Kubernetes {
    /// The API client settings, or `None` when pod metadata is off.
    pub fn resolve(&self) -> Result<Option<crate::kube::ApiConfig>, Error> {
        let in_cluster = std::env::var("KUBERNETES_SERVICE_HOST").ok();
        if !self.enabled.unwrap_or(in_cluster.is_some()) {
            return Ok(None);
        }
        let url = match (&self.api_server, &in_cluster) {
            (Some(u), _) => u.clone(),
            (None, Some(host)) => {
                let port =
                    std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
                if host.contains(':') {
                    format!("https://[{host}]:{port}")
                } else {
                    format!("https://{host}:{port}")
                }
            }
            (None, None) => {
                return Err(Error::Invalid(
                    "kubernetes.enabled is true but neither kubernetes.api_server nor KUBERNETES_SERVICE_HOST is set".into(),
                ));
            }
        };
        let node_name = match self
            .node_name
            .clone()
            .or_else(|| std::env::var("NODE_NAME").ok())
        {
            Some(n) if !n.is_empty() => n,
            _ => {
                return Err(Error::Invalid(
                    "Kubernetes metadata needs this node's name: set kubernetes.node_name or NODE_NAME (downward API spec.nodeName)".into(),
                ));
            }
        };
        let default_file = |f: &str| {
            let p = std::path::Path::new(SA_DIR).join(f);
            p.exists().then_some(p)
        };
        Ok(Some(crate::kube::ApiConfig {
            url,
            token_file: self.token_file.clone().or_else(|| default_file("token")),
            ca_file: self.ca_file.clone().or_else(|| default_file("ca.crt")),
            node_name,
        }))
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instrument {
    /// Processes listening on one of these TCP ports.
    #[serde(default)]
    pub ports: Vec<u16>,
    /// Executables by file name (`nginx`) or full path (`/usr/sbin/nginx`).
    #[serde(default)]
    pub executables: Vec<String>,
    /// Explicit process ids (their children are followed too).
    #[serde(default)]
    pub pids: Vec<u32>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceRule {
    /// Match on the executable's file name or full path.
    #[serde(default)]
    pub executable: Option<String>,
    /// Match on the local port of the connection (the server's port).
    #[serde(default)]
    pub port: Option<u16>,
    /// `service.name`; defaults to the executable's file name.
    #[serde(default)]
    pub service_name: Option<String>,
    /// `k8s.namespace.name`.
    #[serde(default)]
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capture {
    /// Bytes of each message copied from the kernel (1..=4096). Larger sees
    /// longer headers, costs more per syscall.
    #[serde(default = "default_capture_bytes")]
    pub bytes: u32,
    /// Ring buffer size in bytes (rounded up to a power of two).
    #[serde(default = "default_ring_bytes")]
    pub ring_buffer_bytes: u32,
    /// Data waiting before the kernel wakes the reader early.
    #[serde(default = "default_wakeup_bytes")]
    pub wakeup_bytes: u64,
    /// The reader drains the ring buffer at least this often.
    #[serde(default = "default_poll_ms")]
    pub poll_interval_ms: u64,
    /// Connections followed at once; the oldest idle one is evicted beyond.
    #[serde(default = "default_max_conns")]
    pub max_connections: usize,
    /// TLS plaintext through uprobes on OpenSSL's libssl. Every process
    /// mapping a hooked libssl then traps at each SSL_read/SSL_write, which
    /// costs (docs/performance.md, Agent); off leaves TLS as ciphertext.
    #[serde(default = "default_tls")]
    pub tls: bool,
    /// How syscalls are followed: `auto` takes the BTF raw tracepoint on
    /// `sys_exit` where the kernel offers it (one program run per syscall)
    /// and the syscall tracepoints elsewhere; `tracepoints` always the
    /// latter (docs/performance.md, "Issue 16, session 24").
    #[serde(default)]
    pub attach: Attach,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    #[default]
    Auto,
    Tracepoints,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Export {
    /// Spans per OTLP request.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Longest a span waits before its batch is sent; also the metric period.
    #[serde(default = "default_interval_ms")]
    pub interval_ms: u64,
    /// Spans buffered for export; beyond, new spans are dropped and counted.
    #[serde(default = "default_queue")]
    pub queue_size: usize,
    /// Attempts per batch before it is dropped (and counted).
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    /// Per-request timeout.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

fn default_rescan_ms() -> u64 {
    1000
}
fn default_cardinality() -> usize {
    2000
}
fn default_capture_bytes() -> u32 {
    1024
}
fn default_ring_bytes() -> u32 {
    8 * 1024 * 1024
}
// A quarter of the default ring: each wake-up drains more, and fewer forced
// wake-ups cut both the agent's and the programs' time per request
// (docs/performance.md, Agent: 256 KiB/20 ms → 2 MiB/100 ms), while 6 MiB stay
// free for bursts.
fn default_wakeup_bytes() -> u64 {
    2 * 1024 * 1024
}
fn default_poll_ms() -> u64 {
    100
}
fn default_max_conns() -> usize {
    65536
}
fn default_tls() -> bool {
    true
}
fn default_batch() -> usize {
    512
}
fn default_interval_ms() -> u64 {
    1000
}
fn default_queue() -> usize {
    16384
}
fn default_attempts() -> u32 {
    5
}
fn default_timeout_ms() -> u64 {
    5000
}

impl Default for Capture {
    fn default() -> Self {
        Capture {
            bytes: default_capture_bytes(),
            ring_buffer_bytes: default_ring_bytes(),
            wakeup_bytes: default_wakeup_bytes(),
            poll_interval_ms: default_poll_ms(),
            max_connections: default_max_conns(),
            tls: default_tls(),
            attach: Attach::Auto,
        }
    }
}

impl Default for Export {
    fn default() -> Self {
        Export {
            batch_size: default_batch(),
            interval_ms: default_interval_ms(),
            queue_size: default_queue(),
            max_attempts: default_attempts(),
            timeout_ms: default_timeout_ms(),
        }
    }
}

impl Config {
    pub fn from_yaml(path: &str, text: &str) -> Result<Config, Error> {
        let c: Config = serde_saphyr::from_str(text).map_err(|source| Error::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        c.validate()?;
        Ok(c)
    }

    pub fn load(path: &Path) -> Result<Config, Error> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: p.clone(),
            source,
        })?;
        Config::from_yaml(&p, &text)
    }

    /// A config that only says where to export; used by tests.
    pub fn new(otlp_endpoint: impl Into<String>) -> Config {
        Config {
            otlp_endpoint: otlp_endpoint.into(),
            gateway_token_file: None,
            instrument: Instrument::default(),
            services: Vec::new(),
            capture: Capture::default(),
            export: Export::default(),
            metrics_listen: None,
            rescan_interval_ms: default_rescan_ms(),
            metric_cardinality_limit: default_cardinality(),
            kubernetes: Kubernetes {
                enabled: Some(false),
                ..Kubernetes::default()
            },
        }
    }

    pub fn validate(&self) -> Result<(), Error> {
        if !(1..=crate::ebpf::event::MAX_CAPTURE as u32).contains(&self.capture.bytes) {
            return Err(Error::Invalid(format!(
                "capture.bytes must be 1..={}, got {}",
                crate::ebpf::event::MAX_CAPTURE,
                self.capture.bytes
            )));
        }
        if !self.otlp_endpoint.starts_with("http://") && !self.otlp_endpoint.starts_with("https://")
        {
            return Err(Error::Invalid(format!(
                "otlp_endpoint must be an http:// or https:// URL, got {:?}",
                self.otlp_endpoint
            )));
        }
        let ring = u64::from(self.capture.ring_buffer_bytes)
            .next_power_of_two()
            .max(4096);
        if self.capture.wakeup_bytes == 0 || self.capture.wakeup_bytes > ring / 2 {
            return Err(Error::Invalid(format!(
                "capture.wakeup_bytes ({}) must be between 1 and half of the ring buffer \
                 ({} of {ring} bytes): the reader must be woken while there is room left \
                 for what arrives before it drains",
                self.capture.wakeup_bytes,
                ring / 2
            )));
        }
        if self.export.batch_size == 0
            || self.export.queue_size == 0
            || self.export.max_attempts == 0
        {
            return Err(Error::Invalid(
                "export.batch_size, queue_size and max_attempts must be > 0".into(),
            ));
        }
        self.kubernetes.resolve()?;
        for (i, r) in self.services.iter().enumerate() {
            if r.executable.is_none() && r.port.is_none() {
                return Err(Error::Invalid(format!(
                    "services[{i}] matches nothing: give executable and/or port"
                )));
            }
        }
        Ok(())
    }

    pub fn poll_interval(&self) -> Duration {
        Duration::from_millis(self.capture.poll_interval_ms.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
otlp_endpoint: http://127.0.0.1:4317
instrument:
  ports: [8080]
  executables: [nginx]
services:
  - executable: nginx
    port: 8080
    service_name: shop-web
    namespace: shop
capture:
  bytes: 2048
export:
  batch_size: 100
metrics_listen: 127.0.0.1:9464
"#;

    #[test]
    fn attach_mode_is_auto_or_tracepoints() {
        let yaml = |v: &str| format!("otlp_endpoint: http://x:4317\ncapture:\n  attach: {v}\n");
        let c = Config::from_yaml("agent.yaml", &yaml("tracepoints")).unwrap();
        assert_eq!(c.capture.attach, Attach::Tracepoints);
        let c = Config::from_yaml("agent.yaml", &yaml("auto")).unwrap();
        assert_eq!(c.capture.attach, Attach::Auto);
        assert!(Config::from_yaml("agent.yaml", &yaml("kprobes")).is_err());
    }

    #[test]
    fn example_round_trips() {
        let c = Config::from_yaml("agent.yaml", EXAMPLE).unwrap();
        assert_eq!(c.instrument.ports, vec![8080]);
        assert_eq!(c.services[0].namespace.as_deref(), Some("shop"));
        assert_eq!(c.capture.bytes, 2048);
        assert_eq!(c.capture.poll_interval_ms, 100);
        assert_eq!(c.capture.wakeup_bytes, 2 << 20);
        assert_eq!(c.capture.attach, Attach::Auto);
        assert_eq!(c.export.batch_size, 100);
    }

    #[test]
    fn wakeup_threshold_must_leave_room_in_the_ring() {
        let err = Config::from_yaml(
            "a.yaml",
            "otlp_endpoint: http://x:4317\ncapture:\n  ring_buffer_bytes: 1048576\n  wakeup_bytes: 1048576\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("capture.wakeup_bytes (1048576)"), "{err}");
        assert!(err.contains("524288 of 1048576"), "{err}");
        let ok = Config::from_yaml(
            "a.yaml",
            "otlp_endpoint: http://x:4317\ncapture:\n  ring_buffer_bytes: 1048576\n  wakeup_bytes: 524288\n",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn unknown_fields_are_errors() {
        let err = Config::from_yaml("a.yaml", "otlp_endpoint: http://x\ncapture:\n  byte: 3\n")
            .unwrap_err();
        assert!(err.to_string().contains("byte"), "{err}");
    }

    #[test]
    fn kubernetes_needs_a_node_name_and_an_api_server() {
        let c = Config::from_yaml(
            "a.yaml",
            "otlp_endpoint: http://x\nkubernetes:\n  enabled: true\n  api_server: https://10.96.0.1\n  node_name: n1\n",
        )
        .unwrap();
        let api = c.kubernetes.resolve().unwrap().unwrap();
        assert_eq!(
            (api.url.as_str(), api.node_name.as_str()),
            ("https://10.96.0.1", "n1")
        );
        let off = Config::from_yaml(
            "a.yaml",
            "otlp_endpoint: http://x\nkubernetes:\n  enabled: false\n",
        )
        .unwrap();
        assert!(off.kubernetes.resolve().unwrap().is_none());
        if std::env::var_os("NODE_NAME").is_none() {
            let err = Config::from_yaml(
                "a.yaml",
                "otlp_endpoint: http://x\nkubernetes:\n  enabled: true\n  api_server: https://10.96.0.1\n",
            )
            .unwrap_err();
            assert!(err.to_string().contains("NODE_NAME"), "{err}");
        }
    }

    #[test]
    fn capture_size_is_bounded() {
        let err = Config::from_yaml(
            "a.yaml",
            "otlp_endpoint: http://x\ncapture:\n  bytes: 5000\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("capture.bytes"), "{err}");
    }
}
