//! External programs the tests drive: Prometheus and the Python OpenTelemetry SDK.
//! Both are installed by `.ci/install-deps` (`.ci/apt.d/gateway.txt`,
//! `.ci/pip.d/gateway.txt`); a missing one fails the test with a message saying so.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A Prometheus server with the remote-write receiver on, killed on drop.
pub struct Prometheus {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Prometheus {
    pub async fn start() -> Prometheus {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!("`prometheus` not found on PATH: install Debian's `prometheus` package (bash .ci/install-deps)")
        });
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let child = Command::new(&bin)
                .arg(format!("--config.file={}", cfg.display()))
                .arg(format!(
                    "--storage.tsdb.path={}",
                    dir.path().join("data").display()
                ))
                .arg(format!("--web.listen-address={addr}"))
                .arg("--web.enable-remote-write-receiver")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut p = Prometheus {
                child,
                addr,
                _dir: tempfile::tempdir().unwrap(),
            };
            for _ in 0..200 {
                if let Ok(r) = reqwest::get(format!("http://{addr}/-/ready")).await
                    && r.status().is_success()
                {
                    p._dir = dir;
                    return p;
                }
                if let Ok(Some(_)) = p.child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        panic!("prometheus did not become ready");
    }

    pub fn write_url(&self) -> String {
        format!("http://{}/api/v1/write", self.addr)
    }

    /// Runs an instant query and returns the `result` array.
    pub async fn query(&self, q: &str) -> Vec<serde_json::Value> {
        let text = reqwest::Client::new()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", q)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["status"], "success", "{v}");
        v["data"]["result"].as_array().cloned().unwrap_or_default()
    }
}

pub fn which(name: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join(name))
            .find(|p| p.is_file())
    })
}

/// Runs a Python script using the OpenTelemetry SDK; panics with its output if it
/// fails, and with install instructions if the SDK is missing.
pub async fn run_python(script: &Path, env: &[(&str, String)]) -> String {
    let python = which("python3").expect("python3 not found on PATH");
    let check = Command::new(&python)
        .args(["-c", "import opentelemetry.sdk, opentelemetry.exporter.otlp.proto.grpc, opentelemetry.exporter.otlp.proto.http"])
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "the OpenTelemetry Python SDK is missing: pip install -r .ci/pip.d/gateway.txt (bash .ci/install-deps)\n{}",
        String::from_utf8_lossy(&check.stderr)
    );
    let mut cmd = tokio::process::Command::new(python);
    cmd.arg(script).kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .expect("python script timed out")
        .unwrap();
    let text = format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "python script failed: {text}");
    text
}
