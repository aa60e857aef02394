//! `mop serve` never fetches over ssh without checking the server's host key
//! unless told to in so many words (issue 12: unsafe defaults).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn serve_args(dir: &std::path::Path, url: &str) -> Vec<String> {
    std::fs::write(dir.join("key"), "not a real key").unwrap();
    [
        "serve",
        // Only Grafana: the test needs no Kubernetes.
        "--only",
        "grafana",
        "--git-url",
        url,
        "--ssh-key-file",
        dir.join("key").to_str().unwrap(),
        "--mirror-dir",
        dir.join("mirror").to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec()
}

#[test]
fn ssh_without_known_hosts_refuses_to_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    for url in [
        "ssh://git.invalid/config.git",
        "git@git.invalid:org/config.git",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_mop"))
            .args(serve_args(dir.path(), url))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{url}: started anyway: {stderr}");
        assert!(stderr.contains("refusing to fetch"), "{stderr}");
        assert!(stderr.contains("--ssh-known-hosts-file"), "{stderr}");
        assert!(
            stderr.contains("--insecure-accept-any-host-key"),
            "{stderr}"
        );
        assert!(
            !dir.path().join("mirror").exists(),
            "a refused source made a mirror"
        );
    }
}

#[test]
fn insecure_accept_any_host_key_starts() {
    let dir = tempfile::tempdir().unwrap();
    let mut args = serve_args(dir.path(), "ssh://git.invalid/config.git");
    args.push("--insecure-accept-any-host-key".into());
    let mut child = Command::new(env!("CARGO_BIN_EXE_mop"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // It serves (and keeps failing to fetch from the unresolvable host).
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let mut serving = false;
    while Instant::now() < deadline && !serving {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(200)) {
            serving = line.contains("serving /healthz");
            seen.push(line);
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("mop serve exited with {status}: {seen:#?}");
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(serving, "never started serving: {seen:#?}");
}
