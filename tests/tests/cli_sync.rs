//! `mop sync` and `mop drift`, the real binary, against the strict Grafana, ruler
//! and Kubernetes fakes, on a copy of `repo-template` pointed at them.
//!
//! Needs the `mop` binary built next to this test (`cargo build -p mop-syncer`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use mop_fakes::ruler::Api;
use serde_json::Value;
use support::{Fakes, dashboard_title, edit_file};

const RED: &str = "tenants/checkout/dashboards/services/red.json";

/// Syncs the untouched repository, asserting it converged.
async fn synced() -> Fakes {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap().to_string();
    f.run(&["sync", &repo]).await.expect(0);
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED")
    );
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_applies_everything_then_a_second_sync_writes_nothing() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    let r = f.run(&["sync", repo]).await;
    r.expect(0);

    // What the fakes hold is the rendered repository.
    for org in ["Checkout", "Catalog", "Platform"] {
        assert!(f.grafana.org_id(org).is_some(), "org {org}");
    }
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED")
    );
    for t in ["checkout", "catalog", "platform"] {
        assert!(
            f.ruler.group_count(Api::Mimir, t) > 0,
            "mimir groups of {t}"
        );
    }
    assert!(f.ruler.group_count(Api::Loki, "catalog") > 0);
    assert!(
        f.kube
            .get("v1", "ConfigMap", Some("mop-system"), "mop-gateway-routing")
            .is_some()
    );
    let inventory = f
        .kube
        .get("v1", "ConfigMap", Some("mop-system"), "mop-inventory")
        .expect("the tenant inventory is recorded");
    let tenants = inventory["data"]["tenants.json"].as_str().unwrap();
    for t in ["checkout", "catalog", "platform"] {
        assert!(tenants.contains(&format!("\"{t}\"")), "{tenants}");
    }

    // The summary: one line per target, then the verdict, on stdout.
    let applied = f.writes();
    assert!(
        applied.0 > 0 && applied.1 > 0 && applied.2 > 0,
        "{applied:?}"
    );
    for target in [
        "grafana",
        "mimir-ruler",
        "loki-ruler",
        "mimir-alertmanager",
        "kubernetes",
    ] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{target}: ")) && l.contains(" applied, 0 failed")),
            "no summary line for {target}:\n{}",
            r.stdout
        );
    }
    let last = r.stdout.lines().last().unwrap();
    assert!(
        last.starts_with("Sync of the working tree: ")
            && last.contains(", 0 failed; everything is as the repository says."),
        "{last}"
    );
    let n: usize = last
        .trim_start_matches("Sync of the working tree: ")
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!(n > 10, "{last}");

    // Not a terminal: stdout is the summary only, the progress went to the
    // structured (JSON) log on stderr, one event per change.
    for l in r.stdout.lines() {
        assert!(
            l.starts_with("grafana: ")
                || l.starts_with("mimir-ruler: ")
                || l.starts_with("loki-ruler: ")
                || l.starts_with("mimir-alertmanager: ")
                || l.starts_with("kubernetes: ")
                || l.starts_with("Sync of "),
            "not a summary line on stdout: {l:?}"
        );
    }
    let change_events: Vec<Value> = r
        .stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["fields"]["message"] == "change")
        .collect();
    assert_eq!(change_events.len(), n, "one log event per applied change");
    assert!(
        change_events.iter().any(|e| e["fields"]["id"]
            .as_str()
            .unwrap_or("")
            .contains("checkout-red")),
        "{change_events:?}"
    );
    assert!(
        !r.stderr.contains('\u{2026}'),
        "the terminal progress lines are not printed without a terminal"
    );

    // A second sync of the unchanged repository sends no write anywhere.
    let r = f.run(&["sync", repo]).await;
    r.expect(0);
    assert_eq!(f.writes(), applied, "the second sync wrote");
    assert!(
        r.stdout
            .contains("Sync of the working tree: 0 applied, 0 failed;"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_prints_the_plan_and_writes_nothing() {
    let f = synced().await;
    let repo = f.repo.to_str().unwrap();
    let before = f.writes();

    // Nothing changed: exit 0.
    let r = f.run(&["sync", "--dry-run", repo]).await;
    r.expect(0);
    assert!(r.stdout.contains("No changes"), "{}", r.stdout);

    edit_file(
        &f.repo.join(RED),
        "\"Checkout / HTTP RED\"",
        "\"Checkout / HTTP RED v2\"",
    );
    let r = f.run(&["sync", "--dry-run", repo]).await;
    r.expect(2);
    let line = r
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("~ ") && l.contains("checkout-red"))
        .unwrap_or_else(|| panic!("no `~ … checkout-red` line:\n{}", r.stdout));
    assert!(line.contains("dashboard"), "{line}");
    // The field-level detail: the title, old and new.
    assert!(
        r.stdout.lines().any(|l| l.contains("title")
            && l.contains("Checkout / HTTP RED")
            && l.contains("Checkout / HTTP RED v2")),
        "{}",
        r.stdout
    );
    let plan_line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Plan: "))
        .unwrap_or_else(|| panic!("no `Plan:` summary:\n{}", r.stdout));
    assert!(plan_line.contains("1 to update"), "{plan_line}");
    // The same plan for scripts: JSON on stdout, nothing else.
    let r = f
        .run(&["sync", "--dry-run", "--format", "json", repo])
        .await;
    r.expect(2);
    let doc: Value = serde_json::from_str(&r.stdout).expect("--format json is JSON");
    let changes = doc["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{doc:#}");
    assert!(changes[0].to_string().contains("checkout-red"), "{doc:#}");
    assert_eq!(f.writes(), before, "a dry run wrote");
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED")
    );

    // And a real sync's report as JSON.
    let r = f.run(&["sync", "--format", "json", repo]).await;
    r.expect(0);
    let doc: Value = serde_json::from_str(&r.stdout).expect("--format json is JSON");
    assert_eq!(doc["dry_run"], false, "{doc:#}");
    assert!(doc.to_string().contains("checkout-red"), "{doc:#}");
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED v2")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_reports_an_edit_made_in_grafana() {
    let f = synced().await;
    let repo = f.repo.to_str().unwrap();

    let r = f.run(&["drift", repo]).await;
    r.expect(0);
    assert!(r.stdout.contains("No drift"), "{}", r.stdout);

    let org = f.grafana.org_id("Checkout").unwrap();
    assert!(f.grafana.edit_dashboard(org, "checkout-red", |d| {
        d["title"] = Value::String("edited by hand".into());
    }));
    let before = f.writes();

    let r = f.run(&["drift", repo]).await;
    r.expect(2);
    let row = r
        .stdout
        .lines()
        .find(|l| l.contains("checkout-red"))
        .unwrap_or_else(|| panic!("no row for checkout-red:\n{}", r.stdout));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        ["grafana", "checkout", "dashboard", "checkout-red", "update"],
        "{row}"
    );
    assert!(
        r.stdout.lines().any(|l| l.contains("title")
            && l.contains("edited by hand")
            && l.contains("Checkout / HTTP RED")),
        "the changed field is named:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("1 object(s) drifted."), "{}", r.stdout);

    let r = f.run(&["drift", "--format", "json", repo]).await;
    r.expect(2);
    let doc: Value = serde_json::from_str(&r.stdout).expect("--format json is JSON");
    assert_eq!(doc["drifted"], 1, "{doc:#}");
    let obj = &doc["objects"][0];
    assert_eq!(obj["target"], "grafana", "{doc:#}");
    assert_eq!(obj["tenant"], "checkout", "{doc:#}");
    assert_eq!(obj["kind"], "dashboard", "{doc:#}");
    assert_eq!(obj["name"], "checkout-red", "{doc:#}");
    assert!(
        obj["details"].to_string().contains("edited by hand"),
        "{doc:#}"
    );
    assert_eq!(f.writes(), before, "drift only reads");
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout", "checkout-red").as_deref(),
        Some("edited by hand")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_prune_is_refused_unless_allowed() {
    let f = synced().await;
    let repo = f.repo.to_str().unwrap();
    assert!(f.grafana.org_id("Catalog").is_some());
    let groups = |t: &str| f.ruler.group_count(Api::Mimir, t) + f.ruler.group_count(Api::Loki, t);
    assert!(groups("catalog") > 0 && groups("checkout") > 0);

    std::fs::remove_dir_all(f.repo.join("tenants/catalog")).unwrap();
    std::fs::remove_dir_all(f.repo.join("tenants/checkout")).unwrap();

    let r = f.run(&["sync", repo]).await;
    r.expect(1);
    assert!(
        r.stdout.contains("--allow-mass-prune"),
        "the refusal says how to go on:\n{}",
        r.stdout
    );
    assert!(r.stdout.contains("NOT converged"), "{}", r.stdout);
    // Grafana refused its deletes: the orgs are all there.
    assert!(r.stdout.contains("refusing to prune"), "{}", r.stdout);
    assert!(f.grafana.org_id("Catalog").is_some());
    assert!(f.grafana.org_id("Checkout").is_some());
    assert!(dashboard_title(&f.grafana, "Checkout", "checkout-red").is_some());
    // Every target the refusal names kept its objects of the removed tenants.
    let refused: Vec<&str> = r
        .stdout
        .lines()
        .scan("", |target, l| {
            if !l.starts_with(' ') {
                *target = l.split(':').next().unwrap_or("");
            }
            Some((*target, l))
        })
        .filter(|(_, l)| l.contains("refusing to prune"))
        .map(|(t, _)| t)
        .collect();
    assert!(refused.contains(&"grafana"), "{refused:?}");
    for (api, target) in [(Api::Mimir, "mimir-ruler"), (Api::Loki, "loki-ruler")] {
        if refused.contains(&target) {
            assert!(
                f.ruler.group_count(api, "checkout") + f.ruler.group_count(api, "catalog") > 0,
                "{target} refused but deleted"
            );
        }
    }

    let r = f.run(&["sync", "--allow-mass-prune", repo]).await;
    r.expect(0);
    assert!(f.grafana.org_id("Catalog").is_none(), "Catalog org pruned");
    assert!(
        f.grafana.org_id("Checkout").is_none(),
        "Checkout org pruned"
    );
    assert!(f.grafana.org_id("Platform").is_some(), "Platform stays");
    assert_eq!(groups("catalog"), 0, "catalog's rule groups pruned");
    assert_eq!(groups("checkout"), 0, "checkout's rule groups pruned");
    assert!(groups("platform") > 0, "platform's rule groups stay");
    let inventory = f
        .kube
        .get("v1", "ConfigMap", Some("mop-system"), "mop-inventory")
        .unwrap();
    let tenants = inventory["data"]["tenants.json"].as_str().unwrap();
    assert!(
        tenants.contains("\"platform\"")
            && !tenants.contains("\"checkout\"")
            && !tenants.contains("\"catalog\""),
        "{tenants}"
    );
    // Converged: nothing left to do.
    let before = f.writes();
    f.run(&["sync", repo]).await.expect(0);
    assert_eq!(f.writes(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_grafana_needs_no_kubernetes_and_touches_nothing_else() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    let mut cmd = f.mop(&["sync", "--only", "grafana", repo]);
    cmd.env_remove("KUBECONFIG");
    let r = support::Run::of(cmd.output().await.unwrap(), &["sync", "--only", "grafana"]);
    r.expect(0);
    assert!(f.grafana.org_id("Checkout").is_some());
    assert!(dashboard_title(&f.grafana, "Checkout", "checkout-red").is_some());
    assert_eq!(f.ruler.recorder().requests(), Vec::<String>::new());
    assert!(f.kube.requests().is_empty(), "{:?}", f.kube.requests());
    assert!(r.stdout.starts_with("grafana: "), "{}", r.stdout);
    assert!(
        !r.stdout.contains("ruler") && !r.stdout.contains("kubernetes"),
        "{}",
        r.stdout
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_repository_is_not_applied() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    let tenant = f.repo.join("tenants/catalog/tenant.yaml");
    let text = std::fs::read_to_string(&tenant).unwrap();
    let line = text
        .lines()
        .position(|l| l.starts_with("display_name:"))
        .unwrap()
        + 1;
    edit_file(&tenant, "display_name:", "dispaly_name:");

    let r = f.run(&["sync", repo]).await;
    r.expect(1);
    let at = format!("tenants/catalog/tenant.yaml:{line}:1: error:");
    assert!(
        r.stdout
            .lines()
            .any(|l| l.contains(&at) && l.contains("dispaly_name")),
        "no `{at}` diagnostic:\n{}",
        r.stdout
    );
    assert!(r.stderr.contains("nothing was applied"), "{}", r.stderr);
    assert!(f.grafana.recorder().requests().is_empty());
    assert!(f.ruler.recorder().requests().is_empty());
    assert!(f.kube.requests().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_grafana_does_not_block_the_other_targets() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    // A port nobody listens on.
    let closed = format!("http://127.0.0.1:{}", support::free_port());
    edit_file(&f.repo.join("mop.yaml"), &f.grafana.url(), &closed);

    let t0 = std::time::Instant::now();
    let r = f.run(&["sync", repo]).await;
    eprintln!("took {:?}", t0.elapsed());
    r.expect(1);
    let grafana_block: Vec<&str> = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("grafana: "))
        .take_while(|l| l.starts_with("grafana: ") || l.starts_with(' '))
        .collect();
    assert!(
        grafana_block.iter().any(|l| l.contains("cannot read")),
        "the summary says Grafana could not be read:\n{}",
        r.stdout
    );
    assert!(
        grafana_block[0].starts_with("grafana: 0 applied"),
        "{grafana_block:?}"
    );
    assert!(r.stdout.contains("NOT converged"), "{}", r.stdout);
    // The rulers and Kubernetes were applied all the same.
    for t in ["checkout", "catalog", "platform"] {
        assert!(
            f.ruler.group_count(Api::Mimir, t) > 0,
            "mimir groups of {t}"
        );
    }
    assert!(f.ruler.group_count(Api::Loki, "platform") > 0);
    assert!(
        f.kube
            .get("v1", "ConfigMap", Some("mop-system"), "mop-gateway-routing")
            .is_some()
    );
    for target in ["mimir-ruler", "loki-ruler", "kubernetes"] {
        assert!(
            r.stdout
                .lines()
                .any(|l| l.starts_with(&format!("{target}: ")) && l.contains(" applied, 0 failed")),
            "{target}:\n{}",
            r.stdout
        );
    }
    // Nothing reached the real fake, of course.
    assert!(f.grafana.recorder().requests().is_empty());

    // Drift cannot be judged for what cannot be read: exit 1, and said so.
    let r = f.run(&["drift", repo]).await;
    r.expect(1);
    assert!(
        r.stdout
            .lines()
            .any(|l| l.starts_with("cannot read grafana")),
        "{}",
        r.stdout
    );
}

/// Regression: a sync of some targets only (`--only grafana --only kubernetes`)
/// that converged rewrote the tenant inventory without the removed tenant, so the
/// next full sync no longer found (and never pruned) its rule groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_sync_keeps_removed_tenants_in_the_inventory() {
    let f = synced().await;
    let repo = f.repo.to_str().unwrap();
    let groups = |t: &str| f.ruler.group_count(Api::Mimir, t) + f.ruler.group_count(Api::Loki, t);
    assert!(groups("catalog") > 0);
    std::fs::remove_dir_all(f.repo.join("tenants/catalog")).unwrap();

    let r = f
        .run(&[
            "sync",
            "--only",
            "grafana",
            "--only",
            "kubernetes",
            "--allow-mass-prune",
            repo,
        ])
        .await;
    r.expect(0);
    assert!(f.grafana.org_id("Catalog").is_none(), "Catalog org pruned");
    assert!(groups("catalog") > 0, "the rulers were not selected");

    f.run(&["sync", "--allow-mass-prune", repo]).await.expect(0);
    assert_eq!(
        groups("catalog"),
        0,
        "catalog's rule groups pruned by the full sync"
    );
    let inventory = f
        .kube
        .get("v1", "ConfigMap", Some("mop-system"), "mop-inventory")
        .unwrap();
    let tenants = inventory["data"]["tenants.json"].as_str().unwrap();
    assert!(!tenants.contains("\"catalog\""), "{tenants}");
}

/// A sync of some targets records the tenants it applied: their objects must be
/// found when the repository later drops them, whatever synced them first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_sync_records_the_tenants_it_applied() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    f.run(&["sync", "--only", "grafana", "--only", "kubernetes", repo])
        .await
        .expect(0);
    assert!(f.grafana.org_id("Catalog").is_some());
    std::fs::remove_dir_all(f.repo.join("tenants/catalog")).unwrap();

    f.run(&["sync", "--allow-mass-prune", repo]).await.expect(0);
    assert!(
        f.grafana.org_id("Catalog").is_none(),
        "the org of the removed tenant is found through the inventory and pruned"
    );
    assert!(f.grafana.org_id("Checkout").is_some());
}

/// Regression: an error (here: no cluster to reach) made `mop drift` and
/// `mop sync --dry-run` exit 2, which they use for "drifted" and "changes", so a
/// CI job read a broken run as a pending change.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_of_drift_and_dry_run_are_not_reported_as_changes() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    for args in [
        &["drift", repo][..],
        &["drift", "--format", "json", repo][..],
        &["sync", "--dry-run", repo][..],
    ] {
        let mut cmd = f.mop(args);
        cmd.env_remove("KUBECONFIG");
        let r = support::Run::of(cmd.output().await.unwrap(), args);
        r.expect(1);
        assert!(r.stderr.contains("cannot reach Kubernetes"), "{}", r.stderr);
    }
    let missing = f.tmp.path().join("no-such-repo");
    let r = f.run(&["drift", missing.to_str().unwrap()]).await;
    r.expect(1);
    assert!(f.grafana.recorder().requests().is_empty());
    assert!(f.kube.requests().is_empty());
}

/// Renaming a tenant's Grafana organisation in the repository renames the live
/// org (same id, its dashboards kept): the org is found by its old name, which
/// the inventory recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renaming_a_tenants_org_renames_it_in_place() {
    let f = Fakes::start().await;
    let repo = f.repo.to_str().unwrap();
    f.run(&["sync", repo]).await.expect(0);
    let id = f.grafana.org_id("Checkout").expect("org Checkout");

    edit_file(
        &f.repo.join("tenants/checkout/tenant.yaml"),
        "display_name: Checkout",
        "display_name: Checkout Team",
    );
    let before = f.grafana.recorder().writes();
    let r = f.run(&["sync", repo]).await;
    r.expect(0);
    assert_eq!(
        f.grafana.org_id("Checkout Team"),
        Some(id),
        "renamed in place"
    );
    assert_eq!(
        f.grafana.org_id("Checkout"),
        None,
        "no org left with the old name"
    );
    assert_eq!(
        dashboard_title(&f.grafana, "Checkout Team", "checkout-red").as_deref(),
        Some("Checkout / HTTP RED"),
        "the org's dashboards stay"
    );
    assert_eq!(
        f.grafana.recorder().writes() - before,
        1,
        "one write: the rename ({})",
        r.stdout
    );
    // Converged: the next sync writes nothing.
    let before = f.writes();
    f.run(&["sync", repo]).await.expect(0);
    assert_eq!(f.writes(), before);
}
