//! `mop render` of the bundled repo-template: pinned by golden files, and
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report
//! deterministic.

mod common;

use common::*;

#[test]
fn repo_template_validates() {
    let (code, out, err) = run(mop().arg("validate").arg(template()));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("valid (3 tenants, 6 dashboards"), "{out}");
}

#[test]
fn render_of_repo_template_matches_golden_files() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("rendered");
    let (code, stdout, err) = run(mop().arg("render").arg(template()).arg("--out").arg(&dir));
    assert_eq!(code, 0, "{stdout}{err}");
    // One golden file holding every rendered file keeps the review diff readable.
    let mut all = String::new();
    for (rel, bytes) in read_tree(&dir) {
        all.push_str(&format!("===== {rel}\n"));
        all.push_str(&String::from_utf8(bytes).unwrap());
    }
    assert_golden("render/repo-template.txt", &all);
}

#[test]
fn render_is_byte_identical_across_runs() {
    let out = tempfile::tempdir().unwrap();
    let (a, b) = (out.path().join("a"), out.path().join("b"));
    for d in [&a, &b] {
        let (code, o, e) = run(mop().arg("render").arg(template()).arg("--out").arg(d));
        assert_eq!(code, 0, "{o}{e}");
    }
    let (ta, tb) = (read_tree(&a), read_tree(&b));
    assert!(ta.len() > 50, "rendered only {} files", ta.len());
    assert_eq!(ta, tb);
}

#[test]
fn render_from_git_equals_render_from_directory() {
    let mut repo = GitRepo::new();
    repo.copy_template();
    let head = repo.commit("template");
    // Uncommitted edits must not leak into a render of the commit.
    repo.write("tenants/checkout/tenant.yaml", "broken: [");
    let out = tempfile::tempdir().unwrap();
    let (from_git, from_dir) = (out.path().join("git"), out.path().join("dir"));
    let (c1, o1, e1) = run(mop()
        .arg("render")
        .arg(repo.path())
        .args(["--rev", &head, "--out"])
        .arg(&from_git));
    assert_eq!(c1, 0, "{o1}{e1}");
    let (c2, o2, e2) = run(mop()
        .arg("render")
        .arg(template())
        .arg("--out")
        .arg(&from_dir));
    assert_eq!(c2, 0, "{o2}{e2}");
    let strip_index = |v: Vec<(String, Vec<u8>)>| {
        v.into_iter()
            .filter(|(p, _)| p != "index.json")
            .collect::<Vec<_>>()
    };
    assert_eq!(
        strip_index(read_tree(&from_git)),
        strip_index(read_tree(&from_dir))
    );
    let index = std::fs::read_to_string(from_git.join("index.json")).unwrap();
    assert!(index.contains(&head), "index.json records the revision");
}

#[test]
fn render_refuses_to_replace_a_directory_it_did_not_write() {
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("precious.txt"), "keep me").unwrap();
    let (code, _, err) = run(mop()
        .arg("render")
        .arg(template())
        .arg("--out")
        .arg(out.path()));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing to replace"), "{err}");
    assert!(out.path().join("precious.txt").exists());
}

#[test]
fn validate_exit_codes_and_json() {
    let repo = tempfile::tempdir().unwrap();
    copy_dir(&template(), repo.path());
    std::fs::write(
        repo.path().join("versions.yaml"),
        std::fs::read_to_string(template().join("versions.yaml"))
            .unwrap()
            .replacen("version: 0.1.0", "version: latest", 1),
    )
    .unwrap();
    let (code, out, _) = run(mop()
        .arg("validate")
        .arg(repo.path())
        .args(["--format", "json"]));
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false);
    let d = &v["diagnostics"][0];
    assert_eq!(d["file"], "versions.yaml");
    assert_eq!(d["line"], 4);
    assert_eq!(d["column"], 12);
    assert_eq!(d["severity"], "error");
    assert_eq!(
        d["message"],
        "agent.version floats: `latest` is a moving tag, not a version"
    );

    let (code, _, err) = run(mop().arg("validate").arg("/nonexistent/repo"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("is not a directory"), "{err}");
}

/// Rendered Mimir rule groups are what Mimir's ruler receives; Prometheus's own
/// checker (Debian's `promtool`) must accept each of them.
#[test]
fn rendered_metric_rule_groups_pass_promtool() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().join("r");
    let (code, o, e) = run(mop().arg("render").arg(template()).arg("--out").arg(&dir));
    assert_eq!(code, 0, "{o}{e}");
    let mut checked = 0;
    for (rel, bytes) in read_tree(&dir) {
        if !rel.starts_with("mimir-ruler/") {
            continue;
        }
        // The ruler API takes one bare group; promtool reads a `groups:` file.
        let group: serde_json::Value = serde_saphyr::from_slice(&bytes).unwrap();
        let file = out.path().join(format!("check-{checked}.yaml"));
        std::fs::write(
            &file,
            serde_saphyr::to_string(&serde_json::json!({ "groups": [group] })).unwrap(),
        )
        .unwrap();
        let result = std::process::Command::new("promtool")
            .args(["check", "rules"])
            .arg(&file)
            .output()
            .expect("promtool is installed (Debian package prometheus; .ci/install-deps)");
        assert!(
            result.status.success(),
            "promtool rejected {rel}:\n{}{}",
            String::from_utf8_lossy(&result.stdout),
            String::from_utf8_lossy(&result.stderr)
        );
        checked += 1;
    }
    assert_eq!(
        checked, 10,
        "every metric rule group of repo-template was checked"
    );
}
