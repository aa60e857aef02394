//! `mop plan` against a real git repository with several commits, as a CI job runs
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report
//! it: golden text, Markdown and JSON, exit codes, bare clones, invalid heads.

mod common;

use common::*;

/// base: the template; change: a dashboard query and title, a rule's `for`, a
/// sampling percentage, a new tenant member, a deleted dashboard.
fn repo_with_change() -> (GitRepo, String, String) {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");

    let red = "tenants/checkout/dashboards/services/red.json";
    let mut d: serde_json::Value = serde_json::from_str(&repo.read(red)).unwrap();
    d["title"] = "Checkout / HTTP RED (v2)".into();
    let panel = d["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|p| p["targets"][0]["expr"].is_string())
        .unwrap();
    let expr = panel["targets"][0]["expr"]
        .as_str()
        .unwrap()
        .replace("[$__rate_interval]", "[5m]");
    panel["targets"][0]["expr"] = expr.into();
    repo.write(red, &serde_json::to_string_pretty(&d).unwrap());

    let sat = "tenants/checkout/rules/metrics/saturation.yaml";
    let text = repo.read(sat);
    assert!(text.contains("for: 10m"));
    repo.write(sat, &text.replacen("for: 10m", "for: 15m", 1));

    let s = "tenants/checkout/sampling.yaml";
    repo.write(s, &repo.read(s).replace("percentage: 10", "percentage: 20"));

    let t = "tenants/catalog/tenant.yaml";
    repo.write(t, &repo.read(t).replace("    - { user: sam@example.com, role: Editor }", "    - { user: sam@example.com, role: Editor }\n    - { user: kim@example.com, role: Viewer }"));

    repo.remove("tenants/catalog/dashboards/logs/logs.json");
    let head = repo.commit("change dashboards, rules, sampling, members");
    (repo, base, head)
}

fn plan(repo: &GitRepo, base: &str, head: &str, format: &str) -> (i32, String, String) {
    run(mop()
        .arg("plan")
        .arg(repo.path())
        .args(["--base", base, "--head", head, "--format", format]))
}

#[test]
fn plan_text_markdown_and_json_match_golden_files() {
    let (repo, base, head) = repo_with_change();
    for (format, file) in [
        ("text", "plan/change.txt"),
        ("markdown", "plan/change.md"),
        ("json", "plan/change.json"),
    ] {
        let (code, out, err) = plan(&repo, &base, &head, format);
        assert_eq!(code, 2, "changes exit 2 ({format}): {out}{err}");
        // Commit ids follow the template's content; the golden files should not.
        let out = out
            .replace(&base, "<base>")
            .replace(&head, "<head>")
            .replace(&base[..12], "<base>")
            .replace(&head[..12], "<head>");
        assert_golden(file, &out);
    }
}

#[test]
fn plan_summary_counts_the_changes() {
    let (repo, base, head) = repo_with_change();
    let (_, out, _) = plan(&repo, &base, &head, "json");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    // create: org member kim; update: dashboard, rule group, gateway ConfigMap;
    // delete: the logs dashboard and its now empty folder.
    assert_eq!(
        v["summary"],
        serde_json::json!({ "create": 1, "update": 3, "delete": 2 })
    );
    let (_, text, _) = plan(&repo, &base, &head, "text");
    assert!(
        text.trim_end()
            .ends_with("Plan: 1 to create, 3 to update, 2 to delete."),
        "{text}"
    );
}

#[test]
fn dashboard_update_names_the_panel_and_query() {
    let (repo, base, head) = repo_with_change();
    let (_, text, _) = plan(&repo, &base, &head, "text");
    assert!(
        text.contains("~ dashboard checkout-red (\"Checkout / HTTP RED (v2)\")"),
        "{text}"
    );
    assert!(text.contains("query A.expr:"), "{text}");
    assert!(
        text.contains("title: Checkout / HTTP RED → Checkout / HTTP RED (v2)"),
        "{text}"
    );
    assert!(!text.contains("\"gridPos\""), "no wall of JSON: {text}");
}

#[test]
fn no_change_exits_zero() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");
    repo.write("README.md", "docs only\n");
    let head = repo.commit("docs");
    let (code, out, err) = plan(&repo, &base, &head, "text");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
}

/// JSON text with every object's keys in reverse order and tabs for indentation.
fn reordered_json(v: &serde_json::Value, depth: usize, out: &mut String) {
    let pad = |n: usize| "\t".repeat(n);
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            keys.reverse();
            out.push_str("{\n");
            for (i, k) in keys.iter().enumerate() {
                out.push_str(&pad(depth + 1));
                out.push_str(&serde_json::to_string(k).unwrap());
                out.push_str(" : ");
                reordered_json(&m[*k], depth + 1, out);
                if i + 1 < keys.len() {
                    out.push(',');
                }
                out.push('\n');
            }
            out.push_str(&pad(depth));
            out.push('}');
        }
        serde_json::Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                reordered_json(x, depth, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[test]
fn reordered_keys_and_reindented_dashboards_plan_no_change() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");
    let red = "tenants/checkout/dashboards/services/red.json";
    let before = repo.read(red);
    let mut after = String::new();
    reordered_json(&serde_json::from_str(&before).unwrap(), 0, &mut after);
    assert_ne!(before, after);
    repo.write(red, &after);
    let head = repo.commit("reformat a dashboard");
    let (code, out, err) = plan(&repo, &base, &head, "text");
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("No changes."), "{out}");
}

#[test]
fn invalid_head_prints_errors_not_a_plan() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");
    let v = repo
        .read("versions.yaml")
        .replacen("version: 0.1.0", "version: latest", 1);
    repo.write("versions.yaml", &v);
    let head = repo.commit("float the agent");
    let (code, out, err) = plan(&repo, &base, &head, "text");
    assert_eq!(code, 1, "{out}{err}");
    assert!(!out.contains("Plan:"), "{out}");
    assert!(
        out.contains("versions.yaml:4:12: error: agent.version floats"),
        "{out}"
    );
    // Regression (issue 10): the verdict comes first, on the same stream.
    assert!(
        out.starts_with(&format!("head {head} is invalid; no plan:\n")),
        "{out}"
    );
}

/// Regression (issue 10): a symbolic link gets the same verdict from a
/// directory, a git revision and a plan, and what it points to is never read.
#[test]
fn symlinks_are_refused_from_a_directory_a_revision_and_a_plan() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.yaml");
    std::fs::write(&secret, "groups: [this is outside the repository]\n").unwrap();
    let rules = repo
        .path()
        .join("tenants/catalog/rules/metrics/linked.yaml");
    std::os::unix::fs::symlink(&secret, &rules).unwrap();
    std::os::unix::fs::symlink(
        "../../platform",
        repo.path().join("tenants/catalog/dashboards/linked-dir"),
    )
    .unwrap();
    let head = repo.commit("link files");
    let expected = [
        "tenants/catalog/dashboards/linked-dir: error: is a symbolic link (to \"../../platform\"); MOP does not follow links\n  hint: replace the link with a copy of what it points to: a link resolves differently in a work tree, a git revision and the syncer's clone, and can point outside the repository".to_string(),
        format!(
            "tenants/catalog/rules/metrics/linked.yaml: error: is a symbolic link (to {:?}); MOP does not follow links\n  hint: replace the link with a copy of what it points to: a link resolves differently in a work tree, a git revision and the syncer's clone, and can point outside the repository",
            secret.display().to_string()
        ),
    ];
    let check = |what: &str, out: &str| {
        for e in &expected {
            assert!(out.contains(e.as_str()), "{what}: expected\n{e}\nin\n{out}");
        }
        assert!(out.contains("2 error(s)"), "{what}: {out}");
        assert!(
            !out.contains("outside the repository]"),
            "{what} read the link: {out}"
        );
    };
    let (code, out, err) = run(mop().arg("validate").arg(repo.path()));
    assert_eq!(code, 1, "{out}{err}");
    check("directory", &out);
    let (code, out, err) = run(mop()
        .arg("validate")
        .arg(repo.path())
        .args(["--rev", &head]));
    assert_eq!(code, 1, "{out}{err}");
    check("revision", &out);
    let (code, out, err) = plan(&repo, &base, &head, "text");
    assert_eq!(code, 1, "{out}{err}");
    check("plan", &out);
}

#[test]
fn plan_works_in_a_bare_clone_and_ignores_the_work_tree() {
    let (repo, base, head) = repo_with_change();
    let (_, expected, _) = plan(&repo, &base, &head, "json");
    let bare = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("git")
        .args(["clone", "-q", "--bare"])
        .arg(repo.path())
        .arg(bare.path().join("r.git"))
        .status()
        .unwrap();
    assert!(status.success());
    let (code, out, err) = run(mop()
        .arg("plan")
        .arg(bare.path().join("r.git"))
        .args(["--base", &base, "--head", &head, "--format", "json"]));
    assert_eq!(code, 2, "{err}");
    assert_eq!(out, expected);

    // A dirty work tree does not change a plan between commits.
    repo.write("tenants/checkout/tenant.yaml", "not: [valid");
    let (code, out, _) = plan(&repo, &base, &head, "json");
    assert_eq!(code, 2);
    assert_eq!(out, expected);
}

#[test]
fn unknown_revision_is_an_error_not_a_plan() {
    let (repo, base, _) = repo_with_change();
    let (code, _, err) = plan(&repo, &base, "no-such-branch", "text");
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("cannot resolve git revision `no-such-branch`"),
        "{err}"
    );
}

#[test]
fn alerting_changes_name_receivers_and_routes_and_show_references_only() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let base = repo.commit("template");
    let a = "tenants/checkout/alerting.yaml";
    repo.write(
        a,
        &repo
            .read(a)
            .replace(
                "channel: \"#checkout-alerts\"",
                "channel: \"#checkout-oncall\"",
            )
            .replace(
                "{ name: mop-alerting-checkout, key: pagerduty-routing-key }",
                "{ name: mop-alerting-checkout, key: pagerduty-key-v2 }",
            ),
    );
    let p = "alerting.yaml";
    repo.write(
        p,
        &repo.read(p).replace(
            "matchers: ['severity=\"critical\"']",
            "matchers: ['severity=~\"critical|page\"']",
        ),
    );
    let head = repo.commit("alert routing");
    let (code, text, err) = plan(&repo, &base, &head, "text");
    assert_eq!(code, 2, "{text}{err}");
    for want in [
        "~ alertmanager-config alertmanager",
        "alertmanager_config.receivers.checkout-slack.slack_configs[0].channel: #checkout-alerts → #checkout-oncall",
        "alertmanager_config.route.routes[0].matchers: [\"severity=\\\"critical\\\"\"] → [\"severity=~\\\"critical|page\\\"\"]",
        "secrets./receivers/1/pagerduty_configs/0/routing_key.secret.key: pagerduty-routing-key → pagerduty-key-v2",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    // The platform route is in every tenant's configuration.
    assert!(
        text.trim_end()
            .ends_with("Plan: 0 to create, 3 to update, 0 to delete."),
        "{text}"
    );
}
