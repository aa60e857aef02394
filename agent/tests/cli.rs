//! The `mop-agent` binary: the kernel probe, and configuration errors that
//! say what is wrong before anything is loaded.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_mop-agent");

#[test]
fn probe_reports_what_the_kernel_offers() {
    let out = Command::new(BIN).arg("--probe").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "BTF: true",
        "tracefs: true",
        "ring buffer: true",
        "tracepoint programs: true",
    ] {
        assert!(stdout.contains(line), "{line} missing from:\n{stdout}");
    }
}

#[test]
fn unknown_config_fields_are_rejected_with_the_field_named() {
    let dir = common::temp_dir("cli");
    let cfg = dir.join("agent.yaml");
    std::fs::write(
        &cfg,
        "otlp_endpoint: http://127.0.0.1:4317\ninstrument:\n  portz: [80]\n",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("portz"), "{stderr}");
    assert!(stderr.contains("agent.yaml"), "{stderr}");
}

#[test]
fn config_is_required_to_run() {
    let out = Command::new(BIN).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--config"));
}
