//! The offline checks of MOP's Kubernetes manifests (`deploy/check.sh`): the
//! install in `deploy/` and what `mop render` makes of `repo-template` pass, and
//! the check itself fails on a typo'd field, a wrong type, an unknown kind and a
//! wildcard RBAC rule, so a green run means something.
//!
//! Needs `kubectl` (its client renders kustomizations offline),
//! `pip install -r .ci/pip.d/deploy.txt`, and the `mop` binary built next to this
//! test (`cargo build -p mop-syncer`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

mod support;

use support::{copy_dir, edit_file, mop_bin};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Runs a `check.sh` with `args`; exit status and everything it printed.
fn run_check(script: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Exit 2 is the script's own trouble (a tool missing), not a verdict.
    assert_ne!(
        out.status.code(),
        Some(2),
        "check.sh could not run:\n{text}"
    );
    (out.status.success(), text)
}

/// A copy of `deploy/` with `find` replaced by `replace` once in `file`
/// (relative to `deploy/`), and the verdict of the copy's own `check.sh` on it.
fn check_broken_copy(file: &str, find: &str, replace: &str) -> (bool, String) {
    let tmp = tempfile::tempdir().unwrap();
    let deploy = tmp.path().join("deploy");
    copy_dir(&root().join("deploy"), &deploy);
    edit_file(&deploy.join(file), find, replace);
    run_check(&deploy.join("check.sh"), &[])
}

#[test]
fn deploy_manifests_render_and_pass_the_schema_and_rbac_checks() {
    let (ok, out) = run_check(&root().join("deploy/check.sh"), &[]);
    assert!(ok, "deploy/check.sh failed:\n{out}");
    // Every kustomization was checked, not silently skipped.
    assert!(out.contains("ok   deploy/base"), "{out}");
    assert!(out.contains("ok   deploy/overlays/example"), "{out}");
}

#[test]
fn a_typo_in_a_field_name_fails_the_check() {
    let (ok, out) = check_broken_copy(
        "base/deployment.yaml",
        "readOnlyRootFilesystem",
        "readOnlyRootFileSystem",
    );
    assert!(!ok, "a typo'd field passed:\n{out}");
    assert!(
        out.contains("'readOnlyRootFileSystem' was unexpected"),
        "{out}"
    );
}

#[test]
fn a_wrong_type_fails_the_check() {
    let (ok, out) = check_broken_copy("base/deployment.yaml", "replicas: 2", "replicas: two");
    assert!(!ok, "a string replica count passed:\n{out}");
    assert!(out.contains("'two' is not of type 'integer'"), "{out}");
}

#[test]
fn an_unknown_kind_fails_the_check() {
    // kubernetes-validate only warns about a kind it has no schema for.
    let (ok, out) = check_broken_copy("base/service.yaml", "kind: Service", "kind: Servcie");
    assert!(!ok, "an unknown kind passed:\n{out}");
    assert!(out.contains("Servcie"), "{out}");
}

#[test]
fn a_wildcard_rbac_verb_fails_the_check() {
    // Schema-valid, so only the RBAC rule catches it.
    let (ok, out) = check_broken_copy("base/rbac.yaml", "verbs: [get, update]", "verbs: [\"*\"]");
    assert!(!ok, "a wildcard verb passed:\n{out}");
    assert!(
        out.contains("Role/mop-syncer rule") && out.contains("wildcard in verbs"),
        "{out}"
    );
}

#[test]
fn a_wildcard_rbac_resource_fails_the_check() {
    let (ok, out) = check_broken_copy("base/rbac.yaml", "resources: [pods]", "resources: [\"*\"]");
    assert!(!ok, "a wildcard resource passed:\n{out}");
    assert!(out.contains("wildcard in resources"), "{out}");
}

#[test]
fn a_broken_kustomization_fails_the_check() {
    let (ok, out) = check_broken_copy(
        "base/kustomization.yaml",
        "  - service.yaml\n",
        "  - service.yml\n",
    );
    assert!(!ok, "a kustomization naming a missing file passed:\n{out}");
    assert!(out.contains("kubectl kustomize"), "{out}");
}

#[test]
fn rendered_kubernetes_objects_of_repo_template_pass_the_schema_check() {
    let tmp = tempfile::tempdir().unwrap();
    let out_dir = tmp.path().join("out");
    let render = Command::new(mop_bin())
        .arg("render")
        .arg(root().join("repo-template"))
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    assert!(
        render.status.success(),
        "mop render failed: {}",
        String::from_utf8_lossy(&render.stderr)
    );
    let kube_dir = out_dir.join("kubernetes");
    // The workloads are among what is checked, not only namespaces.
    let mut kinds = Vec::new();
    for e in std::fs::read_dir(kube_dir.join("_platform")).unwrap() {
        kinds.push(e.unwrap().file_name().to_string_lossy().into_owned());
    }
    for k in ["daemon-set", "deployment", "cluster-role", "config-map"] {
        assert!(
            kinds.iter().any(|x| x == k),
            "render made no {k}: {kinds:?}"
        );
    }
    let (ok, out) = run_check(
        &root().join("deploy/check.sh"),
        &["--files", kube_dir.to_str().unwrap()],
    );
    assert!(ok, "rendered objects failed the check:\n{out}");
}

#[test]
fn a_broken_rendered_object_fails_the_files_check() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: v}\n",
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("ds.yaml"),
        "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: a}\nspec:\n  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n    spec:\n      hostPid: true\n      containers: [{name: a, image: a}]\n",
    )
    .unwrap();
    let (ok, out) = run_check(
        &root().join("deploy/check.sh"),
        &["--files", tmp.path().to_str().unwrap()],
    );
    assert!(!ok, "hostPid (for hostPID) passed:\n{out}");
    assert!(out.contains("'hostPid' was unexpected"), "{out}");
}
