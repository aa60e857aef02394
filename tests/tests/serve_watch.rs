//! The local development loop: `mop serve --repo DIR --watch --only grafana`, the
//! real binary, with no git and no Kubernetes, against the Grafana fake. Edits
//! of files in DIR are applied without a webhook or a poll.
//!
//! Needs the `mop` binary built next to this test (`cargo build -p mop-syncer`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use support::{Fakes, Proc, dashboard_title, edit_file, free_port, get, sync_count, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watched_directory_edits_are_applied() {
    let f = Fakes::start().await;
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let mut cmd = std::process::Command::new(support::mop_bin());
    cmd.args([
        "serve",
        "--repo",
        f.repo.to_str().unwrap(),
        "--watch",
        "--only",
        "grafana",
        "--listen",
        &format!("127.0.0.1:{port}"),
        // Neither a poll nor a webhook: only the watcher can trigger a sync.
        "--interval",
        "1h",
    ])
    .env_clear()
    .env("PATH", std::env::var_os("PATH").unwrap_or_default())
    .env("HOME", f.tmp.path())
    .env("RUST_LOG", "info")
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    let mut mop = Proc::adopt(cmd.spawn().unwrap());

    // Applied at start.
    wait_for(
        "the first sync (readyz)",
        Duration::from_secs(20),
        || async { get(&http, &base, "/readyz").await.0 == 200 },
    )
    .await;
    let st = get(&http, &base, "/status").await.1;
    assert_eq!(st["last_result"], "success", "{st:#}");
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED")
    );
    let first = st["applied_revision"].as_str().unwrap().to_string();
    assert_eq!(
        st["targets"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["grafana"],
        "{st:#}"
    );
    assert!(f.ruler.recorder().requests().is_empty());
    assert!(f.kube.requests().is_empty());
    assert_eq!(sync_count(&get(&http, &base, "/metrics").await.1), 1);

    // An edit of a dashboard file is applied within a few seconds.
    let red = f.repo.join("tenants/checkout/dashboards/services/red.json");
    edit_file(
        &red,
        "\"Checkout / HTTP RED\"",
        "\"Checkout / HTTP RED v2\"",
    );
    let took = wait_for("the edit to be applied", Duration::from_secs(5), || async {
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref()
            == Some("Checkout / HTTP RED v2")
    })
    .await;
    eprintln!("edit → applied: {took:?}");
    wait_for(
        "the new revision on /status",
        Duration::from_secs(5),
        || async {
            let st = get(&http, &base, "/status").await.1;
            st["last_result"] == "success" && st["applied_revision"] != first.as_str()
        },
    )
    .await;
    let v2 = get(&http, &base, "/status").await.1["applied_revision"].clone();
    // One save is one sync: the watcher waits for the directory to go quiet, so the
    // save's several events (truncate, write) do not queue a second sync that would
    // read the next edit half-done (a mix of old and new files that can validate).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        sync_count(&get(&http, &base, "/metrics").await.1),
        2,
        "the first sync and one for the save"
    );

    // An invalid edit (with a title change in the same save) is not applied, and
    // /status says where the error is.
    let tenant = f.repo.join("tenants/catalog/tenant.yaml");
    let line = std::fs::read_to_string(&tenant)
        .unwrap()
        .lines()
        .position(|l| l.starts_with("display_name:"))
        .unwrap()
        + 1;
    let writes = f.grafana.recorder().writes();
    edit_file(&tenant, "display_name:", "dispaly_name:");
    edit_file(
        &red,
        "\"Checkout / HTTP RED v2\"",
        "\"Checkout / HTTP RED v3\"",
    );
    let at = format!("tenants/catalog/tenant.yaml:{line}:1: error:");
    wait_for(
        "/status to show the error",
        Duration::from_secs(5),
        || async {
            let st = get(&http, &base, "/status").await.1;
            st["last_result"] == "invalid"
                && st["validation_errors"]
                    .as_array()
                    .is_some_and(|e| e.iter().any(|e| e.as_str().unwrap_or("").contains(&at)))
        },
    )
    .await;
    // Let every event of both saves be handled before checking nothing moved.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let st: Value = get(&http, &base, "/status").await.1;
    assert_eq!(st["last_result"], "invalid", "{st:#}");
    assert_eq!(st["applied_revision"], v2, "the last good stays: {st:#}");
    assert!(
        st["last_error"].as_str().unwrap().contains("invalid"),
        "{st:#}"
    );
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v2"),
        "an invalid directory is not applied"
    );
    assert_eq!(
        f.grafana.recorder().writes(),
        writes,
        "nothing written while invalid (a drift check of the last good only reads)"
    );

    // Fixed: the pending title change is applied.
    edit_file(&tenant, "dispaly_name:", "display_name:");
    wait_for(
        "the fixed directory to be applied",
        Duration::from_secs(5),
        || async {
            dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref()
                == Some("Checkout / HTTP RED v3")
        },
    )
    .await;
    wait_for("/status to recover", Duration::from_secs(5), || async {
        let st = get(&http, &base, "/status").await.1;
        st["last_result"] == "success"
            && st["applied_revision"] != v2
            && st["validation_errors"]
                .as_array()
                .is_some_and(Vec::is_empty)
    })
    .await;

    let status = mop.terminate(Duration::from_secs(10)).await;
    assert!(status.success(), "mop serve exited with {status}");
}
