//! `clusters/<name>.yaml`: the per-cluster view and the promotion rule.

use super::tests::{assert_has, base, run};

const DEV: &str = "\
environment: dev
versions:
  agent: 1.3.0
grafana:
  url: http://grafana.dev:3000
  admin_password:
    file: /run/secrets/grafana
";

const STAGING: &str = "\
environment: staging
promote_after: dev
tenants:
  names: [a]
versions:
  agent: 1.3.0
";

const PROD: &str = "\
cluster: prod-eu-1
environment: prod
promote_after: staging
tenants:
  labels: { tier: prod }
";

fn multi() -> std::collections::BTreeMap<String, String> {
    let mut m = base();
    m.insert("clusters/dev.yaml".into(), DEV.into());
    m.insert("clusters/staging.yaml".into(), STAGING.into());
    m.insert("clusters/prod.yaml".into(), PROD.into());
    m.insert(
        "tenants/b/tenant.yaml".into(),
        "id: team-b\nnamespaces: [b]\nlabels: { tier: prod }\n".into(),
    );
    m
}

fn diags(files: std::collections::BTreeMap<String, String>) -> Vec<String> {
    let out = run(files);
    assert!(out.repo.is_none(), "expected errors");
    out.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn each_cluster_sees_its_sections_pins_and_tenants() {
    let out = run(multi());
    assert_eq!(out.diagnostics, vec![]);
    let repo = out.repo.expect("valid");
    let keys: Vec<_> = repo.clusters.iter().map(|c| c.key.as_str()).collect();
    assert_eq!(keys, ["dev", "prod", "staging"]);

    let dev = repo.for_cluster("dev").unwrap();
    assert_eq!(dev.platform.cluster, "dev");
    assert_eq!(dev.platform.grafana.url.value, "http://grafana.dev:3000");
    assert_eq!(dev.versions.agent.version.value, "1.3.0");
    assert_eq!(dev.versions.gateway.version.value, "1.2.3");
    assert_eq!(dev.tenants.len(), 2);

    let staging = repo.for_cluster("staging").unwrap();
    assert_eq!(staging.platform.grafana.url.value, "http://grafana:3000");
    let keys: Vec<_> = staging.tenants.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["a"]);

    let prod = repo.for_cluster("prod").unwrap();
    assert_eq!(prod.platform.cluster, "prod-eu-1");
    assert_eq!(prod.versions.agent.version.value, "1.2.3");
    let keys: Vec<_> = prod.tenants.iter().map(|t| t.key.as_str()).collect();
    assert_eq!(keys, ["b"], "the label selector");
    assert!(repo.for_cluster("qa").is_none());
}

#[test]
fn a_repository_without_clusters_is_one_cluster() {
    let repo = run(base()).repo.expect("valid");
    assert!(!repo.is_multi_cluster());
    let views = repo.cluster_views();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].0, None);
}

#[test]
fn mop_yaml_names_its_cluster_unless_clusters_do() {
    let mut m = base();
    let mop = m["mop.yaml"].replace("cluster: test\n", "");
    m.insert("mop.yaml".into(), mop.clone());
    assert_has(
        &diags(m),
        "mop.yaml:1:1: error: missing field `cluster`\n  hint: name the cluster (`cluster: prod-eu-1`), or describe several in clusters/<name>.yaml (docs/environments.md)",
    );
    let mut m = multi();
    m.insert("mop.yaml".into(), mop);
    assert_eq!(run(m).diagnostics, vec![]);
}

#[test]
fn prod_before_staging_is_refused_with_both_pins() {
    let mut m = multi();
    m.insert(
        "clusters/prod.yaml".into(),
        format!("{PROD}versions:\n  agent: 1.4.0\n"),
    );
    assert_has(
        &diags(m),
        "clusters/prod.yaml:7:10: error: cluster prod runs agent 1.4.0, newer than 1.3.0 on cluster staging (pinned at clusters/staging.yaml:6:10), and prod is promoted after \"staging\"\n  hint: promote in order: pin 1.4.0 on staging first (clusters/staging.yaml), or keep prod at 1.3.0",
    );
}

#[test]
fn an_inherited_pin_is_checked_where_versions_yaml_writes_it() {
    // staging pins the gateway back to 1.1.0; prod inherits versions.yaml's 1.2.3.
    let mut m = multi();
    m.insert(
        "clusters/staging.yaml".into(),
        format!("{STAGING}  gateway: 1.1.0\n"),
    );
    assert_has(
        &diags(m),
        "versions.yaml:6:12: error: cluster prod runs gateway 1.2.3, newer than 1.1.0 on cluster staging (pinned at clusters/staging.yaml:7:12), and prod is promoted after \"staging\"\n  hint: promote in order: pin 1.2.3 on staging first (clusters/staging.yaml), or keep prod at 1.1.0",
    );
}

#[test]
fn promote_after_an_environment_waits_for_every_cluster_of_it() {
    let mut m = multi();
    m.insert(
        "clusters/staging-us.yaml".into(),
        "environment: staging\npromote_after: dev\nversions:\n  agent: 1.2.3\n".into(),
    );
    // prod (agent 1.2.3 from versions.yaml) is fine: both staging clusters run ≥ 1.2.3.
    assert_eq!(run(m.clone()).diagnostics, vec![]);
    m.insert(
        "clusters/prod.yaml".into(),
        format!("{PROD}versions:\n  agent: 1.3.0\n"),
    );
    let d = diags(m);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("clusters/prod.yaml:7:10: error: cluster prod runs agent 1.3.0, newer than 1.2.3 on cluster staging-us (pinned at clusters/staging-us.yaml:4:10)"),
        "{d:#?}"
    );
}

#[test]
fn bad_cluster_files_say_where() {
    let mut m = multi();
    m.insert(
        "clusters/prod.yaml".into(),
        "environment: prod\npromote_after: stagin\ntenants:\n  names: [c]\nversions:\n  gateway: latest\ngrafana:\n  url: grafana\n  admin_password: { file: /x }\n".into(),
    );
    let d = diags(m);
    assert_has(
        &d,
        "clusters/prod.yaml:2:16: error: promote_after \"stagin\" is neither a cluster nor an environment of one\n  hint: did you mean \"staging\"?",
    );
    assert_has(
        &d,
        "clusters/prod.yaml:4:11: error: tenants.names: there is no tenants/c\n  hint: name a directory under tenants/",
    );
    assert_has(
        &d,
        "clusters/prod.yaml:6:12: error: versions.gateway floats: `latest` is a moving tag, not a version\n  hint: pin an exact release such as 1.4.2 or a digest sha256:<64 hex digits>",
    );
    assert!(
        d.iter().any(|x| x.starts_with("clusters/prod.yaml:8:8: error: grafana.url: \"grafana\" is not an http:// or https:// URL")),
        "{d:#?}"
    );
    let mut m = multi();
    m.insert(
        "clusters/dev.yaml".into(),
        "environment: dev\npromote_after: prod\nversions:\n  agent: 1.3.0\n".into(),
    );
    let d = diags(m);
    assert!(
        d.iter().any(|x| x
            .starts_with("clusters/staging.yaml:2:16: error: promote_after \"dev\" makes a cycle")),
        "{d:#?}"
    );
    let mut m = multi();
    m.insert(
        "clusters/prod.yaml".into(),
        "environment: prod\nextra: 1\n".into(),
    );
    m.insert("clusters/qa/x.yaml".into(), "environment: qa\n".into());
    let d = diags(m);
    assert!(
        d.iter()
            .any(|x| x.starts_with("clusters/prod.yaml:2:1: error: unknown field `extra`")),
        "{d:#?}"
    );
    assert!(
        d.iter()
            .any(|x| x.starts_with("clusters/qa/x.yaml: error: MOP does not read this file")),
        "{d:#?}"
    );
}

#[test]
fn a_cluster_without_pyroscope_warns_about_its_profile_dashboards() {
    let mut m = multi();
    m.insert(
        "mop.yaml".into(),
        format!("{}  pyroscope:\n    url: http://pyroscope\n    overrides: {{ namespace: monitoring, name: pyroscope-overrides }}\n", super::tests::MOP),
    );
    m.insert(
        "tenants/a/dashboards/main/one.json".into(),
        r#"{
  "__inputs": [{ "name": "DS_PYRO", "type": "datasource", "pluginId": "grafana-pyroscope-datasource" }],
  "uid": "a-one",
  "title": "T",
  "panels": [{ "id": 1, "title": "Flame", "datasource": "${DS_PYRO}" }]
}"#
        .into(),
    );
    // staging (serves a) replaces backends without Pyroscope; prod does not serve a.
    m.insert(
        "clusters/staging.yaml".into(),
        format!("{STAGING}backends:\n  mimir:\n    url: http://mimir\n    overrides: {{ namespace: monitoring, name: mimir-overrides }}\n  loki:\n    url: http://loki\n    overrides: {{ namespace: monitoring, name: loki-overrides }}\n  tempo:\n    url: http://tempo\n    overrides: {{ namespace: monitoring, name: tempo-overrides }}\n"),
    );
    let out = run(m);
    assert!(out.repo.is_some(), "warnings only: {:#?}", out.diagnostics);
    let d: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(d, vec!["tenants/a/dashboards/main/one.json:5:43: warning: this dashboard uses the tenant's Pyroscope datasource, but cluster staging (clusters/staging.yaml) configures no Pyroscope backend\n  hint: add backends.pyroscope to clusters/staging.yaml, or serve this tenant elsewhere".to_string()]);
}
