//! A repository of several clusters (`clusters/<name>.yaml`) through the CLI:
//! `mop validate` per cluster and the promotion rule, `mop render --cluster`,
//! and `mop plan` grouped by cluster, pinned by golden files.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

mod common;

use common::*;

/// repo-template with its example clusters in place (`examples/clusters/` moved
/// to `clusters/`, as docs/environments.md says): dev, staging and prod with
/// their own endpoints, the catalog tenant only on prod, agent 0.2.0 on dev only
/// so far.
fn multi_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.copy_template();
    let examples = template().join("examples/clusters");
    for name in ["dev", "staging", "prod"] {
        let text = std::fs::read_to_string(examples.join(format!("{name}.yaml"))).unwrap();
        repo.write(&format!("clusters/{name}.yaml"), &text);
    }
    repo
}

#[test]
fn validate_reports_every_cluster() {
    let repo = multi_repo();
    let (code, out, err) = run(mop().arg("validate").arg(repo.path()));
    assert_eq!(code, 0, "{out}{err}");
    let lines: Vec<&str> = out.lines().skip(1).collect();
    assert_eq!(
        lines,
        [
            "  cluster dev (dev): 2 tenants, agent 0.2.0, gateway 0.1.0",
            "  cluster prod (prod): 3 tenants, agent 0.1.0, gateway 0.1.0",
            "  cluster staging (staging): 2 tenants, agent 0.1.0, gateway 0.1.0",
        ],
        "{out}"
    );
}

#[test]
fn prod_before_staging_is_refused_with_both_locations() {
    let repo = multi_repo();
    let prod = repo.read("clusters/prod.yaml");
    repo.write(
        "clusters/prod.yaml",
        &prod.replace(
            "promote_after: staging\n",
            "promote_after: staging\nversions:\n  agent: 0.2.0\n",
        ),
    );
    let (code, out, _) = run(mop().arg("validate").arg(repo.path()));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("clusters/prod.yaml:9:10: error: cluster prod runs agent 0.2.0, newer than 0.1.0 on cluster staging (pinned at versions.yaml:4:12), and prod is promoted after \"staging\"\n  hint: promote in order: pin 0.2.0 on staging first (clusters/staging.yaml), or keep prod at 0.1.0"),
        "{out}"
    );
    // Promoting to staging first makes the same pin valid.
    let staging = repo.read("clusters/staging.yaml");
    repo.write(
        "clusters/staging.yaml",
        &staging.replace(
            "promote_after: dev\n",
            "promote_after: dev\nversions:\n  agent: 0.2.0\n",
        ),
    );
    let (code, out, err) = run(mop().arg("validate").arg(repo.path()));
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn render_one_cluster_or_every_cluster() {
    let repo = multi_repo();
    let out = tempfile::tempdir().unwrap();
    let prod = out.path().join("prod");
    let (code, stdout, err) = run(mop()
        .arg("render")
        .arg(repo.path())
        .args(["--cluster", "prod", "--out"])
        .arg(&prod));
    assert_eq!(code, 0, "{stdout}{err}");
    let files = read_tree(&prod);
    let has = |p: &str| files.iter().any(|(f, _)| f.contains(p));
    assert!(has("catalog"), "catalog is on prod");
    let datasources: String = files
        .iter()
        .filter(|(f, _)| f.contains("datasource"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .collect();
    assert!(datasources.contains("mimir-nginx.monitoring.svc.cluster.local"));
    assert!(!datasources.contains("mimir-nginx.monitoring-dev.svc.dev.example.internal"));

    let all = out.path().join("all");
    let (code, stdout, err) = run(mop().arg("render").arg(repo.path()).arg("--out").arg(&all));
    assert_eq!(code, 0, "{stdout}{err}");
    assert_eq!(stdout.lines().count(), 3, "a line per cluster: {stdout}");
    // The prod directory of the whole render is the render of prod alone.
    assert_eq!(read_tree(&all.join("prod")), files);
    let dev = read_tree(&all.join("dev"));
    assert!(
        !dev.iter().any(|(f, _)| f.contains("catalog")),
        "catalog is not on dev"
    );
    let agent = dev
        .iter()
        .find(|(f, _)| f.contains("daemonset") || f.contains("daemon-set"))
        .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
        .expect("dev's agent DaemonSet");
    assert!(agent.contains("mop-agent:0.2.0"), "{agent}");

    let (code, stdout, err) = run(mop()
        .arg("render")
        .arg(repo.path())
        .args(["--cluster", "qa", "--out"])
        .arg(out.path().join("qa")));
    assert_eq!(code, 2, "{stdout}{err}");
    assert!(
        err.contains("there is no clusters/qa.yaml (clusters: dev, prod, staging)"),
        "{err}"
    );
}

/// base: the three clusters; change: staging gets agent 0.2.0 (after dev), and
/// catalog's dashboard (a tenant only prod serves) a new title.
fn repo_with_change() -> (GitRepo, String, String) {
    let mut repo = multi_repo();
    let base = repo.commit("three clusters");
    let staging = repo.read("clusters/staging.yaml");
    repo.write(
        "clusters/staging.yaml",
        &staging.replace(
            "promote_after: dev\n",
            "promote_after: dev\nversions:\n  agent: 0.2.0\n",
        ),
    );
    let logs = "tenants/catalog/dashboards/logs/logs.json";
    let mut d: serde_json::Value = serde_json::from_str(&repo.read(logs)).unwrap();
    d["title"] = "Catalog / Logs (v2)".into();
    repo.write(logs, &serde_json::to_string_pretty(&d).unwrap());
    let head = repo.commit("agent 0.2.0 to staging; catalog logs title");
    (repo, base, head)
}

#[test]
fn plan_per_cluster_matches_golden_files() {
    let (repo, base, head) = repo_with_change();
    for (args, file) in [
        (vec!["--format", "text"], "plan/clusters.txt"),
        (vec!["--format", "markdown"], "plan/clusters.md"),
        (vec!["--format", "json"], "plan/clusters.json"),
        (
            vec!["--format", "markdown", "--cluster", "staging"],
            "plan/cluster-staging.md",
        ),
    ] {
        let (code, out, err) = run(mop()
            .arg("plan")
            .arg(repo.path())
            .args(["--base", &base, "--head", &head])
            .args(&args));
        assert_eq!(code, 2, "changes exit 2 ({args:?}): {out}{err}");
        let out = out
            .replace(&base, "<base>")
            .replace(&head, "<head>")
            .replace(&base[..12], "<base>")
            .replace(&head[..12], "<head>");
        assert_golden(file, &out);
    }
    let (code, out, err) = run(mop().arg("plan").arg(repo.path()).args([
        "--base",
        &base,
        "--head",
        &head,
        "--cluster",
        "dev",
    ]));
    assert_eq!(code, 0, "dev does not change: {out}{err}");
    assert!(out.contains("cluster dev (dev): no changes"), "{out}");
}

#[test]
fn sync_without_a_cluster_refuses_a_repository_of_several() {
    let repo = multi_repo();
    let (code, out, err) = run(mop()
        .arg("sync")
        .arg(repo.path())
        .env_remove("MOP_CLUSTER")
        .env("KUBECONFIG", "/nonexistent"));
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        err.contains("the repository describes several clusters (dev, prod, staging): give --cluster <name> (or MOP_CLUSTER)"),
        "{err}"
    );
}

#[test]
fn a_syncer_takes_its_cluster_or_refuses() {
    use mop_syncer::serve::run::scope_to_cluster;
    let repo = multi_repo();
    let snap = mop_syncer::source::Snapshot::from_dir(repo.path()).unwrap();
    let valid = mop_syncer::validate::validate(&snap).repo.unwrap();
    let e = scope_to_cluster(valid.clone(), None).unwrap_err();
    assert!(e.contains("several clusters (dev, prod, staging)"), "{e}");
    let prod = scope_to_cluster(valid.clone(), Some("prod")).unwrap();
    assert_eq!(prod.cluster.as_deref(), Some("prod"));
    assert_eq!(prod.platform.cluster, "prod-eu-1");
    assert_eq!(prod.tenants.len(), 3);
    assert!(scope_to_cluster(valid, Some("qa")).is_err());

    // One cluster: its own name is accepted, another is not.
    let snap = mop_syncer::source::Snapshot::from_dir(&template()).unwrap();
    let single = mop_syncer::validate::validate(&snap).repo.unwrap();
    assert!(scope_to_cluster(single.clone(), None).is_ok());
    assert!(scope_to_cluster(single.clone(), Some("prod-eu-1")).is_ok());
    assert!(scope_to_cluster(single, Some("dev")).is_err());
}
