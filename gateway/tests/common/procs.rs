//! External programs the tests drive: Prometheus and the Python OpenTelemetry SDK.
//! Both are installed by `.ci/install-deps` (`.ci/apt.d/gateway.txt`,
//! `.ci/pip.d/gateway.txt`); a missing one fails the test with a message saying so.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// A Prometheus server with the remote-write receiver on, killed on drop.
#[allow(unused_imports)] // not every test binary starts one
pub use mop_test_support::prometheus::Prometheus;
pub use mop_test_support::which;

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
