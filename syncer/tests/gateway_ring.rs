//! `gateway.ring` in mop.yaml: validated with a position, rendered into the
//! gateway config, a headless Service and a namespaced read-only Role.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test crate: a panic is a failure report

mod common;

use common::*;

fn template_with(mop_yaml_edit: impl FnOnce(String) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&template(), dir.path());
    let p = dir.path().join("mop.yaml");
    let text = std::fs::read_to_string(&p).unwrap();
    std::fs::write(&p, mop_yaml_edit(text)).unwrap();
    dir
}

#[test]
fn a_ring_service_that_is_not_a_service_name_is_an_error_at_its_position() {
    let dir = template_with(|t| {
        t.replace(
            "  ring:\n    enabled: true\n",
            "  ring:\n    enabled: true\n    service: Gateway_Peers\n",
        )
    });
    let (code, out, err) = run(mop().arg("validate").arg(dir.path()));
    assert_ne!(code, 0, "{out}{err}");
    let all = format!("{out}{err}");
    let line = std::fs::read_to_string(dir.path().join("mop.yaml"))
        .unwrap()
        .lines()
        .position(|l| l.contains("Gateway_Peers"))
        .unwrap()
        + 1;
    assert!(
        all.contains(&format!("mop.yaml:{line}:"))
            && all.contains("gateway.ring.service \"Gateway_Peers\""),
        "{all}"
    );
}

#[test]
fn ring_off_renders_no_ring_objects_and_no_ring_section() {
    let dir = template_with(|t| t.replace("  ring:\n    enabled: true\n", ""));
    let out = tempfile::tempdir().unwrap();
    let (code, o, e) = run(mop()
        .arg("render")
        .arg(dir.path())
        .arg("--out")
        .arg(out.path()));
    assert_eq!(code, 0, "{o}{e}");
    let all: String = read_tree(out.path())
        .into_iter()
        .map(|(rel, b)| format!("{rel}\n{}", String::from_utf8(b).unwrap()))
        .collect();
    assert!(!all.contains("mop-gateway-peers"), "no headless Service");
    assert!(!all.contains("endpointslices"), "no Role");
    assert!(
        !all.contains("\\\"ring\\\""),
        "no ring section in gateway.json"
    );
    assert!(!all.contains("--ring-advertise"));
}
