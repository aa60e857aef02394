//! Dashboards as Grafana exports them: one test per class, each pinning the exact
//! message and location.

use super::tests::{MOP, assert_has, base, dashboard, run};
use super::*;

const PATH: &str = "tenants/a/dashboards/main/one.json";

/// Validates `base()` with `files` added; every diagnostic rendered, and the repo.
fn check(files: &[(&str, &str)]) -> (Vec<String>, Option<Repo>) {
    let mut all = base();
    for (p, t) in files {
        all.insert((*p).into(), (*t).into());
    }
    let out = run(all);
    (
        out.diagnostics.iter().map(ToString::to_string).collect(),
        out.repo,
    )
}

fn body_of(repo: &Repo, path: &str) -> serde_json::Value {
    let d = repo
        .tenants
        .iter()
        .flat_map(|t| &t.dashboards)
        .find(|d| d.path == path)
        .expect("dashboard in repo");
    serde_json::from_str(&d.body).expect("body is JSON")
}

/// An "Export for sharing externally" of a Prometheus dashboard.
const SHARED: &str = r#"{
  "__inputs": [
    {
      "name": "DS_PROMETHEUS",
      "label": "Prometheus",
      "type": "datasource",
      "pluginId": "prometheus",
      "pluginName": "Prometheus"
    },
    {
      "name": "VAR_JOB",
      "type": "constant",
      "label": "job",
      "value": "node \"exporter\""
    }
  ],
  "__requires": [{ "type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0" }],
  "title": "Node",
  "uid": "node",
  "panels": [
    {
      "id": 1,
      "title": "CPU",
      "datasource": { "type": "prometheus", "uid": "${DS_PROMETHEUS}" },
      "targets": [{ "refId": "A", "expr": "rate(node_cpu_seconds_total{job=\"${VAR_JOB}\"}[5m])", "datasource": "${DS_PROMETHEUS}" }]
    }
  ],
  "templating": { "list": [
    { "name": "instance", "type": "query", "datasource": "${DS_PROMETHEUS}", "query": "label_values(up{job=\"${VAR_JOB}\"}, instance)" },
    { "name": "keep", "type": "custom", "query": "${DS_PROMETHEUS:raw},${UNKNOWN}" }
  ] }
}"#;

#[test]
fn shared_export_inputs_map_to_the_tenants_datasources() {
    let (d, repo) = check(&[(PATH, SHARED)]);
    let repo = repo.unwrap_or_else(|| panic!("valid, got {d:#?}"));
    assert!(d.is_empty(), "{d:#?}");
    let b = body_of(&repo, PATH);
    let dash = &b["dashboard"];
    assert_eq!(dash["panels"][0]["datasource"]["uid"], "mop-a-mimir");
    assert_eq!(dash["panels"][0]["targets"][0]["datasource"], "mop-a-mimir");
    assert_eq!(
        dash["panels"][0]["targets"][0]["expr"],
        "rate(node_cpu_seconds_total{job=\"node \"exporter\"\"}[5m])"
    );
    assert_eq!(dash["templating"]["list"][0]["datasource"], "mop-a-mimir");
    // Only an exact `${NAME}` of an input is replaced, as Grafana's evaluator does.
    assert_eq!(
        dash["templating"]["list"][1]["query"],
        "${DS_PROMETHEUS:raw},${UNKNOWN}"
    );
    // What Grafana's import drops.
    for k in ["__inputs", "__requires", "__elements"] {
        assert!(dash.get(k).is_none(), "{k} kept");
    }
}

#[test]
fn empty_inputs_are_accepted() {
    let text = dashboard("a-one").replacen('{', "{\n  \"__inputs\": [],", 1);
    let (d, repo) = check(&[(PATH, &text)]);
    assert!(repo.is_some() && d.is_empty(), "{d:#?}");
}

#[test]
fn a_ds_reference_resolved_by_a_variable_is_kept() {
    let text = r#"{
  "uid": "a-one",
  "title": "T",
  "templating": { "list": [{ "name": "DS_PROMETHEUS", "type": "datasource", "query": "prometheus" }] },
  "panels": [{ "id": 1, "title": "CPU", "datasource": "${DS_PROMETHEUS}" }]
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    let repo = repo.unwrap_or_else(|| panic!("valid, got {d:#?}"));
    assert!(d.is_empty(), "{d:#?}");
    assert_eq!(
        body_of(&repo, PATH)["dashboard"]["panels"][0]["datasource"],
        "${DS_PROMETHEUS}"
    );
}

#[test]
fn an_unresolved_ds_reference_is_refused_naming_the_panel() {
    let text = r#"{
  "uid": "a-one",
  "title": "T",
  "panels": [
    { "id": 7, "title": "Errors",
      "datasource": { "type": "prometheus", "uid": "${DS_THANOS}" } }
  ]
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    assert!(repo.is_none());
    assert_has(
        &d,
        "tenants/a/dashboards/main/one.json:6:7: error: panel \"Errors\" (id 7): datasource ${DS_THANOS} is neither an `__inputs` entry nor a dashboard variable\n  hint: add a variable named DS_THANOS of type datasource to `templating.list`, or an `__inputs` entry {\"name\": \"DS_THANOS\", \"type\": \"datasource\", \"pluginId\": \"prometheus\"}",
    );
}

#[test]
fn an_input_of_a_type_the_tenant_lacks_is_refused_where_used() {
    let text = r#"{
  "__inputs": [{ "name": "DS_INFLUX", "type": "datasource", "pluginId": "influxdb" }],
  "uid": "a-one",
  "title": "T",
  "rows": [{ "panels": [
    { "id": 2, "title": "Disk", "targets": [
      { "refId": "A", "datasource": "${DS_INFLUX}" }
    ] }
  ] }],
  "schemaVersion": 14
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    assert!(repo.is_none());
    assert_has(
        &d,
        "tenants/a/dashboards/main/one.json:7:23: error: panel \"Disk\" (id 2): datasource ${DS_INFLUX} is an `__inputs` entry of type \"influxdb\", and this tenant has no influxdb datasource\n  hint: MOP gives each tenant Mimir (prometheus), Loki, Tempo and Pyroscope datasources; point the panel at one of them or remove it",
    );
}

#[test]
fn a_dashboard_without_uid_gets_one_derived_from_its_path() {
    let text = "{\"title\": \"x\", \"panels\": []}";
    let (d, repo) = check(&[(PATH, text)]);
    let repo = repo.unwrap_or_else(|| panic!("valid, got {d:#?}"));
    let want = crate::uid::derived_dashboard_uid("main", "one.json");
    assert!(want.starts_with("main-one-"), "{want}");
    assert_eq!(repo.tenants[0].dashboards[0].uid, want);
    assert_eq!(body_of(&repo, PATH)["dashboard"]["uid"], want.as_str());
    // An empty uid and a null one are what Grafana treats as none.
    for text in [
        "{\"title\": \"x\", \"uid\": \"\"}",
        "{\"title\": \"x\", \"uid\": null}",
    ] {
        let (_, repo) = check(&[(PATH, text)]);
        let repo = repo.unwrap_or_else(|| panic!("valid: {text}"));
        assert_eq!(repo.tenants[0].dashboards[0].uid, want);
    }
}

#[test]
fn old_row_dashboards_are_accepted_and_checked() {
    let text = r#"{
  "uid": "old-node",
  "title": "Old node",
  "schemaVersion": 14,
  "rows": [
    { "title": "CPU", "collapse": false, "panels": [
      { "id": 1, "title": "Load", "type": "graph", "datasource": "Mimir", "targets": [{ "expr": "node_load1", "refId": "A" }] },
      { "id": 2, "title": "Legacy", "type": "graph", "datasource": "graphite-prod" }
    ] }
  ]
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    assert!(repo.is_some(), "{d:#?}");
    assert_eq!(
        d,
        vec!["tenants/a/dashboards/main/one.json:8:54: warning: panel \"Legacy\" (id 2): datasource \"graphite-prod\" is not one of this tenant's datasources\n  hint: the tenant's organisation has the datasources Mimir, Loki, Tempo (and Pyroscope) that MOP creates; use a datasource variable or `__inputs` so the panel follows the tenant".to_string()]
    );
}

#[test]
fn uids_are_unique_per_tenant_not_across_tenants() {
    let (d, repo) = check(&[("tenants/b/dashboards/x/copy.json", &dashboard("a-one"))]);
    assert!(repo.is_some() && d.is_empty(), "{d:#?}");

    let (d, repo) = check(&[("tenants/a/dashboards/x/copy.json", &dashboard("a-one"))]);
    assert!(repo.is_none());
    assert_has(
        &d,
        "tenants/a/dashboards/x/copy.json:2:3: error: dashboard uid \"a-one\" is also used by tenants/a/dashboards/main/one.json:2\n  hint: give each dashboard of a tenant its own uid; in one Grafana organisation one would overwrite the other",
    );
}

#[test]
fn a_derived_uid_that_collides_is_reported_at_the_derived_file() {
    let derived = crate::uid::derived_dashboard_uid("x", "b.json");
    let (d, repo) = check(&[
        ("tenants/a/dashboards/x/a.json", &dashboard(&derived)),
        ("tenants/a/dashboards/x/b.json", "{\"title\": \"B\"}"),
    ]);
    assert!(repo.is_none());
    assert_has(
        &d,
        &format!(
            "tenants/a/dashboards/x/b.json:1:1: error: this dashboard's uid \"{derived}\", derived from its path, is also used by tenants/a/dashboards/x/a.json:2\n  hint: give each dashboard of a tenant its own uid; in one Grafana organisation one would overwrite the other"
        ),
    );
}

#[test]
fn the_same_title_twice_in_a_folder_is_refused() {
    let one = "{\n  \"uid\": \"cpu-1\",\n  \"title\": \"CPU usage\"\n}";
    let two = "{\n  \"uid\": \"cpu-2\",\n  \"title\": \" cpu Usage \"\n}";
    let (d, repo) = check(&[
        ("tenants/a/dashboards/infra/one.json", one),
        ("tenants/a/dashboards/infra/two.json", two),
        // Another folder, another tenant: no conflict.
        (
            "tenants/a/dashboards/apps/three.json",
            &one.replace("cpu-1", "cpu-3"),
        ),
        ("tenants/b/dashboards/infra/one.json", one),
    ]);
    assert!(repo.is_none());
    let errors: Vec<&String> = d.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors,
        vec![
            "tenants/a/dashboards/infra/two.json:3:3: error: dashboard title \"cpu Usage\" is also used in folder \"infra\" by tenants/a/dashboards/infra/one.json:3\n  hint: Grafana keeps one dashboard per title in a folder and would replace one with the other; rename one or move it to another folder"
        ]
    );
}

#[test]
fn unknown_datasource_uids_and_library_panels_are_warnings_with_the_panel() {
    let text = r#"{
  "uid": "a-one",
  "title": "T",
  "annotations": { "list": [{ "name": "Annotations & Alerts", "builtIn": 1, "datasource": { "type": "grafana", "uid": "-- Grafana --" } }] },
  "panels": [
    { "id": 1, "title": "Own", "datasource": { "type": "loki", "uid": "mop-a-loki" } },
    { "id": 2, "title": "Foreign", "datasource": { "type": "prometheus", "uid": "P1809F7CD0C75ACF3" } },
    { "id": 3, "title": "Row", "type": "row", "collapsed": true, "panels": [
      { "id": 4, "title": "Shared",
        "libraryPanel": { "uid": "lib-cpu", "name": "CPU (shared)" } }
    ] }
  ]
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    assert!(repo.is_some(), "warnings only: {d:#?}");
    assert_eq!(d, vec![
        "tenants/a/dashboards/main/one.json:7:36: warning: panel \"Foreign\" (id 2): datasource \"P1809F7CD0C75ACF3\" is not one of this tenant's datasources\n  hint: the tenant's organisation has the datasources Mimir, Loki, Tempo (and Pyroscope) that MOP creates; use a datasource variable or `__inputs` so the panel follows the tenant".to_string(),
        "tenants/a/dashboards/main/one.json:10:9: warning: panel \"Shared\" (id 4): library panel \"CPU (shared)\" (uid \"lib-cpu\") is not created by MOP; the tenant's organisation shows it only if someone created it there\n  hint: unlink the library panel in Grafana (its JSON then lives in the dashboard) and export again".to_string(),
    ]);
}

#[test]
fn another_tenants_datasource_uid_is_a_warning() {
    let text = "{\"uid\": \"u\", \"title\": \"T\", \"panels\": [{\"title\": \"P\", \"datasource\": {\"uid\": \"mop-b-mimir\"}}]}";
    let (d, _) = check(&[(PATH, text)]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].starts_with("tenants/a/dashboards/main/one.json:1:54: warning: panel \"P\": datasource \"mop-b-mimir\" is not one of this tenant's datasources"), "{}", d[0]);
}

#[test]
fn pyroscope_without_a_backend_is_a_warning() {
    let text = r#"{
  "__inputs": [{ "name": "DS_PYRO", "type": "datasource", "pluginId": "grafana-pyroscope-datasource" }],
  "uid": "a-one",
  "title": "T",
  "panels": [{ "id": 1, "title": "Flame", "datasource": "${DS_PYRO}" }]
}"#;
    let (d, repo) = check(&[(PATH, text)]);
    assert!(repo.is_some(), "{d:#?}");
    assert_eq!(d, vec!["tenants/a/dashboards/main/one.json:5:43: warning: this dashboard uses the tenant's Pyroscope datasource, but mop.yaml configures no Pyroscope backend\n  hint: add backends.pyroscope to mop.yaml, or remove the profile panels".to_string()]);
    let with = format!(
        "{MOP}  pyroscope:\n    url: http://pyroscope\n    overrides: {{ namespace: monitoring, name: pyroscope-overrides }}\n"
    );
    let (d, repo) = check(&[(PATH, text), ("mop.yaml", &with)]);
    assert!(repo.is_some() && d.is_empty(), "{d:#?}");
}

#[test]
fn folder_directories_grafana_would_refuse_get_valid_uids() {
    let p = "tenants/a/dashboards/My Folder/one.json";
    let (d, repo) = check(&[(p, &dashboard("x-one"))]);
    let repo = repo.unwrap_or_else(|| panic!("valid, got {d:#?}"));
    let folder = body_of(&repo, p)["folderUid"].as_str().map(str::to_string);
    let folder = folder.unwrap_or_default();
    assert!(crate::uid::is_valid_uid(&folder), "{folder}");
    assert!(folder.starts_with("mop-a-My-Folder-"), "{folder}");
}

#[test]
fn uid_with_refused_characters_points_at_the_uid() {
    let (d, repo) = check(&[(PATH, &dashboard("a one"))]);
    assert!(repo.is_none());
    assert_has(
        &d,
        "tenants/a/dashboards/main/one.json:2:3: error: dashboard uid \"a one\" has characters Grafana does not accept\n  hint: use letters, digits, '-' and '_' (Grafana's `IsValidShortUID`)",
    );
}

#[test]
fn substitution_leaves_keys_and_other_text_alone() {
    let mut out = String::new();
    let vars = std::collections::HashMap::from([("DS", "mop-a-mimir")]);
    dashboards::minify_substituting_into(
        r#"{ "${DS}": "a ${DS} b ${DS:raw} ${}} ${", "n": [1, true, null] }"#,
        &vars,
        &mut out,
    );
    assert_eq!(
        out,
        r#"{"${DS}":"a mop-a-mimir b ${DS:raw} ${}} ${","n":[1,true,null]}"#
    );
}

#[test]
fn a_panel_of_unusual_shape_does_not_hide_the_others() {
    let text = r#"{"uid": "u", "title": "T", "panels": [
{"title": "Odd", "targets": "not a list", "datasource": "${DS_NONE}"},
{"id": 2, "title": "Foreign", "datasource": "graphite"}]}"#;
    let (d, _) = check(&[(PATH, text)]);
    assert_eq!(d.len(), 2, "{d:#?}");
    assert!(d[0].starts_with("tenants/a/dashboards/main/one.json:2:43: error: panel \"Odd\": datasource ${DS_NONE} is neither"), "{}", d[0]);
    assert!(d[1].starts_with("tenants/a/dashboards/main/one.json:3:31: warning: panel \"Foreign\" (id 2): datasource \"graphite\""), "{}", d[1]);
}

#[test]
fn a_dashboard_named_like_a_folder_is_refused() {
    let text = "{\n  \"uid\": \"svc\",\n  \"title\": \"Services\"\n}";
    let (d, repo) = check(&[
        ("tenants/a/dashboards/services/x.json", &dashboard("x")),
        ("tenants/a/dashboards/main/services.json", text),
        // Another tenant's organisation has no such folder.
        ("tenants/b/dashboards/main/services.json", text),
    ]);
    assert!(repo.is_none());
    let errors: Vec<&String> = d.iter().filter(|l| l.contains("error")).collect();
    assert_eq!(
        errors,
        vec![
            "tenants/a/dashboards/main/services.json:3:3: error: dashboard title \"Services\" is also the name of the folder \"services\"; Grafana refuses a dashboard named like a folder of its organisation\n  hint: rename the dashboard's title or the folder directory"
        ]
    );
}

#[test]
fn a_query_of_unusual_shape_does_not_hide_the_panels_other_queries() {
    // The panel is read in one pass; a `null` query is skipped, not the list.
    let text = r#"{"uid": "u", "title": "T", "panels": [
{"title": "P", "targets": [null, "x", {"refId": "A", "datasource": "${DS_NONE}"}]}]}"#;
    let (d, _) = check(&[(PATH, text)]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(d[0].starts_with("tenants/a/dashboards/main/one.json:2:54: error: panel \"P\": datasource ${DS_NONE} is neither"), "{}", d[0]);
}

#[test]
fn keys_are_read_as_go_reads_them_escaped_and_repeated() {
    // `encoding/json` (Grafana) decodes escapes in keys, and a repeated key's
    // later value replaces the earlier one.
    let text = r#"{"uid": "u", "title": "T", "pan\u0065ls": [{"title": "P", "datasource": "${DS_A}"}],
"rows": [{"panels": [{"title": "R", "datasource": "${DS_B}"}]}], "rows": []}"#;
    let (d, _) = check(&[(PATH, text)]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].contains("panel \"P\": datasource ${DS_A} is neither"),
        "{}",
        d[0]
    );
}
