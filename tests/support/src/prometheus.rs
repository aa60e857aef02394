//! A real Prometheus (Debian's `prometheus`, `.ci/apt.d`) with the
//! remote-write receiver on, on a free loopback port, killed on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::{Proc, free_port, which};

pub struct Prometheus {
    _proc: Proc,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// The `prometheus` on `PATH`; fails saying how to install it when missing.
    pub async fn start() -> Prometheus {
        let bin = which("prometheus").unwrap_or_else(|| {
            panic!("`prometheus` not found on PATH: install Debian's `prometheus` package (bash .ci/install-deps)")
        });
        Self::start_with(&bin).await
    }

    pub async fn start_with(bin: &Path) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("prometheus.yml");
        // Nothing is scraped: every sample comes through remote-write.
        std::fs::write(&cfg, "global:\n  scrape_interval: 1h\n").unwrap();
        for _attempt in 0..3 {
            let port = free_port();
            let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let mut proc = Proc::spawn(
                "prometheus",
                Command::new(bin)
                    .arg(format!("--config.file={}", cfg.display()))
                    .arg(format!(
                        "--storage.tsdb.path={}",
                        dir.path().join("data").display()
                    ))
                    .arg(format!("--web.listen-address={addr}"))
                    .arg("--web.enable-remote-write-receiver"),
            );
            for _ in 0..200 {
                if let Ok(r) = reqwest::get(format!("http://{addr}/-/ready")).await
                    && r.status().is_success()
                {
                    return Prometheus {
                        _proc: proc,
                        addr,
                        _dir: dir,
                    };
                }
                if let Ok(Some(_)) = proc.child.try_wait() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // The port was taken between probing and binding, or it is stuck:
            // `proc` is killed here.
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
