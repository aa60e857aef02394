//! One test per class of bad input, each pinning the exact location and message.

use super::dashboards::minify_json_into;
use super::*;

pub(super) const MOP: &str = "\
cluster: test
grafana:
  url: http://grafana:3000
  admin_password:
    file: /run/secrets/grafana
backends:
  mimir:
    url: http://mimir
    overrides: { namespace: monitoring, name: mimir-overrides }
  loki:
    url: http://loki
    overrides: { namespace: monitoring, name: loki-overrides }
  tempo:
    url: http://tempo
    overrides: { namespace: monitoring, name: tempo-overrides }
";

pub(super) const VERSIONS: &str = "\
agent:
  image: ghcr.io/example/mop-agent
  version: 1.2.3
gateway:
  image: ghcr.io/example/mop-gateway
  version: 1.2.3
";

pub(super) const TEAM_A: &str = "\
id: team-a
namespaces:
  - a
  - a-*
grafana:
  members:
    - user: alice
      role: Admin
";

pub(super) const TEAM_B: &str = "\
id: team-b
namespaces: [b]
";

const RULES: &str = "\
groups:
  - name: slo
    rules:
      - alert: HighErrorRate
        expr: sum(rate(errors_total[5m])) > 1
        for: 5m
";

const LOG_RULES: &str = "\
groups:
  - name: log-errors
    rules:
      - alert: ManyErrors
        expr: sum(count_over_time({namespace=\"a\"} |= \"error\" [5m])) > 10
";

pub(super) fn dashboard(uid: &str) -> String {
    format!("{{\n  \"uid\": \"{uid}\",\n  \"title\": \"Dash {uid}\",\n  \"panels\": []\n}}\n")
}

pub(super) fn base() -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    m.insert("mop.yaml".into(), MOP.into());
    m.insert("versions.yaml".into(), VERSIONS.into());
    m.insert("tenants/a/tenant.yaml".into(), TEAM_A.into());
    m.insert("tenants/b/tenant.yaml".into(), TEAM_B.into());
    m.insert("tenants/a/rules/metrics/slo.yaml".into(), RULES.into());
    m.insert("tenants/a/rules/logs/errors.yaml".into(), LOG_RULES.into());
    m.insert(
        "tenants/a/dashboards/main/one.json".into(),
        dashboard("a-one"),
    );
    m
}

pub(super) fn run(files: BTreeMap<String, String>) -> Outcome {
    let snapshot = Snapshot::from_memory(
        files
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect(),
    );
    validate(&snapshot)
}

/// Validates `base()` with one file replaced; returns the rendered diagnostics.
pub(super) fn errors_with(path: &str, text: &str) -> Vec<String> {
    let mut files = base();
    files.insert(path.into(), text.into());
    let out = run(files);
    assert!(out.repo.is_none(), "expected errors for {path}");
    out.diagnostics.iter().map(ToString::to_string).collect()
}

pub(super) fn assert_has(diags: &[String], expected: &str) {
    assert!(
        diags.iter().any(|d| d == expected),
        "expected diagnostic:\n{expected}\ngot:\n{}",
        diags.join("\n")
    );
}

#[test]
fn base_repository_is_valid() {
    let out = run(base());
    assert_eq!(out.diagnostics, vec![]);
    let repo = out.repo.expect("valid");
    assert_eq!(repo.tenants.len(), 2);
    assert_eq!(repo.tenants[0].dashboards[0].uid, "a-one");
}

#[test]
fn yaml_syntax_error_points_at_the_token() {
    let d = errors_with("tenants/b/tenant.yaml", "id: team-b\nnamespaces: [b\n");
    assert_eq!(
        d,
        vec!["tenants/b/tenant.yaml:2:13: error: unclosed bracket '['".to_string()]
    );
}

#[test]
fn json_syntax_error_points_at_the_token() {
    let d = errors_with(
        "tenants/a/dashboards/main/one.json",
        "{\n  \"uid\": \"x\",\n  \"title\": \"t\"\n  \"panels\": []\n}\n",
    );
    assert_has(
        &d,
        "tenants/a/dashboards/main/one.json:4:3: error: invalid JSON: expected `,` or `}`\n  hint: dashboards are Grafana's JSON model as 'Export → JSON' writes it",
    );
}

#[test]
fn unknown_field_says_did_you_mean() {
    let d = errors_with(
        "tenants/b/tenant.yaml",
        "id: team-b\nnamespaces: [b]\ngrafna:\n  members: []\n",
    );
    assert_has(
        &d,
        "tenants/b/tenant.yaml:3:1: error: unknown field `grafna`, expected one of id, display_name, namespaces, grafana, ingest, limits, labels\n  hint: did you mean `grafana`?",
    );
}

#[test]
fn missing_required_field_is_named() {
    let d = errors_with("tenants/b/tenant.yaml", "id: team-b\n");
    assert_has(
        &d,
        "tenants/b/tenant.yaml:1:1: error: missing field `namespaces`\n  hint: add `namespaces:`; see docs/config-reference.md for what it means",
    );
}

#[test]
fn every_problem_is_reported_in_one_run() {
    let mut files = base();
    files.insert(
        "tenants/b/tenant.yaml".into(),
        "id: team-a\nnamespaces: [a]\n".into(),
    );
    files.insert(
        "versions.yaml".into(),
        VERSIONS.replace("version: 1.2.3\ngateway", "version: latest\ngateway"),
    );
    files.insert("tenants/a/dashboards/x/dup.json".into(), dashboard("a-one"));
    let out = run(files);
    let errors = out.error_count();
    assert!(errors >= 4, "{:#?}", out.diagnostics);
}

#[test]
fn duplicate_tenant_id() {
    let d = errors_with("tenants/b/tenant.yaml", "id: team-a\nnamespaces: [b]\n");
    assert_has(
        &d,
        "tenants/b/tenant.yaml:1:5: error: tenant id \"team-a\" is also used by tenants/a\n  hint: tenant ids separate stored data; every tenant needs its own",
    );
}

#[test]
fn namespace_owned_by_two_tenants_exactly_or_by_pattern() {
    let d = errors_with(
        "tenants/b/tenant.yaml",
        "id: team-b\nnamespaces:\n  - b\n  - a\n  - a-prod\n",
    );
    assert_has(
        &d,
        "tenants/b/tenant.yaml:4:5: error: namespace \"a\" is also owned by tenants/a (\"a\")\n  hint: a namespace belongs to exactly one tenant; remove it from one of them or narrow the pattern",
    );
    assert_has(
        &d,
        "tenants/b/tenant.yaml:5:5: error: namespace \"a-prod\" is also owned by tenants/a (\"a-*\")\n  hint: a namespace belongs to exactly one tenant; remove it from one of them or narrow the pattern",
    );
}

#[test]
fn dashboard_uid_over_40_characters() {
    let uid = "u".repeat(41);
    let d = errors_with("tenants/a/dashboards/main/one.json", &dashboard(&uid));
    assert_has(
        &d,
        &format!(
            "tenants/a/dashboards/main/one.json:2:3: error: dashboard uid \"{uid}\" is 41 characters; Grafana allows at most 40\n  hint: shorten the uid; links to the dashboard use it, so pick one and keep it"
        ),
    );
}

#[test]
fn invalid_promql() {
    let d = errors_with(
        "tenants/a/rules/metrics/slo.yaml",
        &RULES.replace(
            "sum(rate(errors_total[5m])) > 1",
            "sum(rate(errors_total[5m]) > 1",
        ),
    );
    let hit = d
        .iter()
        .find(|l| l.starts_with("tenants/a/rules/metrics/slo.yaml:5:15: error: invalid PromQL: "))
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(
        hit.ends_with(
            "\n  hint: check the query with `promtool check rules` or in Grafana Explore"
        ),
        "{hit}"
    );
}

#[test]
fn invalid_logql() {
    // One-line plain scalar: the error points at the `|=` inside it.
    let d = errors_with(
        "tenants/a/rules/logs/errors.yaml",
        &LOG_RULES.replace("{namespace=\"a\"}", "{namespace=\"a\""),
    );
    assert_has(
        &d,
        "tenants/a/rules/logs/errors.yaml:5:50: error: invalid LogQL: expected `,` or `}` in stream selector, found `|=`\n  hint: check the query in Grafana Explore against Loki; syntax: https://grafana.com/docs/loki/latest/query/",
    );
    // Literal block: the error points at the right line and column of the block.
    let block = "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: |\n          sum(\n            rate({app=\"x\"}[5x])\n          ) > 0\n";
    let d = errors_with("tenants/a/rules/logs/errors.yaml", block);
    let hit = d
        .iter()
        .find(|l| l.starts_with("tenants/a/rules/logs/errors.yaml:7:28: error: invalid LogQL: "))
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(hit.contains("5x"), "{hit}");
}

#[test]
fn log_query_is_not_a_rule() {
    let d = errors_with(
        "tenants/a/rules/logs/errors.yaml",
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: '{namespace=\"a\"} |= \"error\"'\n",
    );
    assert_has(
        &d,
        "tenants/a/rules/logs/errors.yaml:5:15: error: alert expression is a log query; the Loki ruler evaluates metric queries only\n  hint: turn it into a metric, e.g. sum(count_over_time({…} |= \"error\" [5m])) > 0",
    );
}

/// Regression (issue 10): a popular alert collection repeats group names across
/// files; Mimir and Loki key groups by (namespace, name) and the file is the
/// namespace, so only a repeat inside one file is an error.
#[test]
fn rule_group_names_are_unique_per_file_not_per_tenant() {
    let mut files = base();
    files.insert(
        "tenants/a/rules/metrics/more.yaml".into(),
        RULES.replace("HighErrorRate", "Other"),
    );
    let out = run(files.clone());
    assert_eq!(out.diagnostics, vec![]);
    let repo = out.repo.expect("valid");
    assert_eq!(repo.tenants[0].metric_rules.len(), 2);

    files.insert(
        "tenants/a/rules/metrics/more.yaml".into(),
        format!("{RULES}  - name: slo\n    rules:\n      - record: a:b\n        expr: up\n"),
    );
    let d: Vec<String> = run(files)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        vec![
            "tenants/a/rules/metrics/more.yaml:7:11: error: rule group \"slo\" is defined twice in this file (first on line 2)\n  hint: a rule file is one ruler namespace and group names are unique within it (Prometheus rulefmt: \"groupname is repeated in the same file\"); rename one or move it to another file"
        ]
    );
}

/// Regression (issue 10): `rules:` with no value read as "expected sequence
/// start"; promtool accepts it, Mimir refuses an empty group, so MOP warns and
/// sends nothing.
#[test]
fn empty_rule_groups_are_dropped_with_a_warning() {
    for rules in ["rules:\n", "rules: []\n"] {
        let mut files = base();
        files.insert(
            "tenants/a/rules/metrics/more.yaml".into(),
            format!("groups:\n  - name: empty\n    {rules}  - name: full\n    rules:\n      - record: a:b\n        expr: up\n"),
        );
        let out = run(files);
        let d: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
        assert_eq!(
            d,
            vec![
                "tenants/a/rules/metrics/more.yaml:2:11: warning: rule group \"empty\" has no rules, so MOP does not send it to the ruler\n  hint: Mimir refuses empty rule groups; add rules or delete the group"
            ],
            "{rules}"
        );
        let repo = out.repo.expect("a warning does not invalidate");
        let more = &repo.tenants[0].metric_rules[0];
        assert_eq!(more.path, "tenants/a/rules/metrics/more.yaml");
        let names: Vec<&str> = more
            .file
            .groups
            .iter()
            .map(|g| g.name.value.as_str())
            .collect();
        assert_eq!(names, ["full"]);
    }
    for empty in ["", "groups:\n", "groups: []\n"] {
        let mut files = base();
        files.insert("tenants/a/rules/metrics/none.yaml".into(), empty.into());
        assert_eq!(run(files).diagnostics, vec![], "{empty:?}");
    }
}

#[test]
fn reserved_and_invalid_label_names() {
    let d = errors_with(
        "tenants/a/rules/metrics/slo.yaml",
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up\n        labels:\n          __name__: x\n          severity: page\n        annotations:\n          bad-name: y\n",
    );
    assert_eq!(
        d,
        vec![
            "tenants/a/rules/metrics/slo.yaml:7:11: error: label \"__name__\" is reserved: `__name__` is the metric name and a rule cannot set it\n  hint: label names are letters, digits and '_', not starting with a digit; `__name__` is the metric name and cannot be set (Prometheus rulefmt: \"invalid label name\")",
            "tenants/a/rules/metrics/slo.yaml:10:11: error: annotation name \"bad-name\" is not a valid name\n  hint: annotation names follow label-name rules: letters, digits and '_', not starting with a digit (Prometheus rulefmt: \"invalid annotation name\")",
        ]
    );
}

#[test]
fn broken_templates_are_refused_where_they_break() {
    let d = errors_with(
        "tenants/a/rules/metrics/slo.yaml",
        "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: up\n        annotations:\n          summary: '{{ $labels.instance }} at {{ $value | humanise }}'\n          description: |\n            Instance {{ $labels.instance\n            is down.\n",
    );
    assert_eq!(
        d,
        vec![
            "tenants/a/rules/metrics/slo.yaml:7:59: error: annotation \"summary\": invalid template: function \"humanise\" not defined\n  hint: did you mean `humanize`? Mimir refuses the group when a template of alert \"X\" does not parse; template syntax: https://prometheus.io/docs/prometheus/latest/configuration/template_reference/",
            "tenants/a/rules/metrics/slo.yaml:10:13: error: annotation \"description\": invalid template: function \"is\" not defined\n  hint: Mimir refuses the group when a template of alert \"X\" does not parse; template syntax: https://prometheus.io/docs/prometheus/latest/configuration/template_reference/",
        ]
    );
}

/// Regression (issue 10): a file in another encoding gave two errors (the
/// encoding, then "tenant.yaml is missing"); now one, at the first bad byte.
#[test]
fn non_utf8_file_is_one_error_at_the_bad_byte() {
    let mut files: BTreeMap<String, Vec<u8>> = base()
        .into_iter()
        .map(|(k, v)| (k, v.into_bytes()))
        .collect();
    files.insert(
        "tenants/a/tenant.yaml".into(),
        b"id: team-a\nnamespaces: [caf\xe9]\n".to_vec(),
    );
    let out = validate(&Snapshot::from_memory(files));
    let d: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        vec![
            "tenants/a/tenant.yaml:2:17: error: file is not valid UTF-8 (byte 0xE9)\n  hint: save the file as UTF-8: MOP, Grafana and the rulers read UTF-8 only (an editor's \"Reopen with encoding\" shows what it is now)"
        ]
    );
}

/// Regression (issue 10): a byte order mark is named, not "expected value".
#[test]
fn byte_order_marks_are_named_or_skipped() {
    let mut files = base();
    files.insert(
        "tenants/a/dashboards/main/one.json".into(),
        format!("\u{feff}{}", dashboard("a-one")),
    );
    files.insert(
        "tenants/a/rules/metrics/slo.yaml".into(),
        format!("\u{feff}{RULES}"),
    );
    let out = run(files);
    let d: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        vec![
            "tenants/a/dashboards/main/one.json:1:1: warning: file starts with a UTF-8 byte order mark (BOM); MOP ignores it\n  hint: Grafana's own import refuses JSON with a BOM: save the file as UTF-8 without BOM"
        ]
    );
    assert!(out.repo.is_some());
}

/// Regression (issue 10): "invalid u64" said nothing about a negative number.
#[test]
fn negative_limits_are_explained() {
    let d = errors_with(
        "tenants/a/tenant.yaml",
        &format!("{TEAM_A}limits:\n  metrics:\n    max_rules_per_group: -1\n"),
    );
    assert_eq!(
        d,
        vec![
            "tenants/a/tenant.yaml:11:26: error: -1 is negative; this field takes a whole number, 0 or more\n  hint: write 0 or a positive whole number (see docs/config-reference.md for what 0 means here)"
        ]
    );
}

/// Mimir refuses a group over `ruler_max_rules_per_rule_group` (default 20)
/// and groups beyond `ruler_max_rule_groups_per_tenant` (default 70); MOP
/// renders both, so validate knows the numbers.
#[test]
fn ruler_limits_per_group_and_per_tenant() {
    let rules = |n: usize| -> String {
        (0..n)
            .map(|i| format!("      - record: r:{i}\n        expr: up\n"))
            .collect()
    };
    let mut files = base();
    files.insert(
        "tenants/a/rules/metrics/big.yaml".into(),
        format!("groups:\n  - name: big\n    rules:\n{}", rules(21)),
    );
    let d: Vec<String> = run(files.clone())
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        d,
        vec![
            "tenants/a/rules/metrics/big.yaml:2:11: error: rule group \"big\" has 21 rules; this tenant's Mimir ruler takes at most 20 per group\n  hint: split the group, or raise `limits.metrics.max_rules_per_group` in tenants/a/tenant.yaml (Mimir's `ruler_max_rules_per_rule_group`, default 20)"
        ]
    );
    // Raised for the tenant, the same group passes and the limit is rendered.
    files.insert(
        "tenants/a/tenant.yaml".into(),
        format!(
            "{TEAM_A}limits:\n  metrics:\n    max_rules_per_group: 30\n    max_rule_groups: 2\n"
        ),
    );
    let out = run(files.clone());
    // Exactly at the group limit: valid, with a warning, since Mimir counts the
    // group being written as one more and would refuse any later change.
    let d: Vec<String> = out.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(
        d,
        vec![
            "tenants/a/rules/metrics/slo.yaml:2:11: warning: this tenant has 2 rule groups, exactly its Mimir ruler's limit: once all are stored, Mimir refuses every change to any of them (it counts the group being written as one more)\n  hint: raise `limits.metrics.max_rule_groups` in tenants/a/tenant.yaml to at least 3, or merge groups"
        ]
    );
    let desired = crate::render::render(&out.repo.expect("valid")).expect("renders");
    let overrides: String = desired
        .resources
        .values()
        .filter(|r| r.body.contains("ruler_max"))
        .map(|r| r.body.to_string())
        .collect();
    assert!(
        overrides.contains("ruler_max_rules_per_rule_group: 30")
            && overrides.contains("ruler_max_rule_groups_per_tenant: 2")
            && overrides.contains("ruler_max_rules_per_rule_group: 20"),
        "{overrides}"
    );
    files.insert(
        "tenants/a/rules/metrics/third.yaml".into(),
        "groups:\n  - name: third\n    rules:\n      - record: a:b\n        expr: up\n  - name: empty\n    rules: []\n".into(),
    );
    let d: Vec<String> = run(files)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_has(
        &d,
        "tenants/a/rules/metrics/third.yaml:2:11: error: rule group \"third\" is this tenant's rule group number 3; its Mimir ruler takes at most 2\n  hint: merge or remove groups, or raise `limits.metrics.max_rule_groups` in tenants/a/tenant.yaml (Mimir's `ruler_max_rule_groups_per_tenant`, default 70)",
    );
}

/// rulefmt refuses `for`, `keep_firing_for` and annotations in recording rules
/// only when they say something (`for: 0s`, `annotations: {}` pass promtool).
#[test]
fn recording_rules_with_zero_for_pass() {
    let mut files = base();
    files.insert(
        "tenants/a/rules/metrics/rec.yaml".into(),
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: up\n        for: 0m\n        annotations: {}\n".into(),
    );
    assert_eq!(run(files).diagnostics, vec![]);
    let d = errors_with(
        "tenants/a/rules/metrics/rec.yaml",
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: up\n        for: 1m\n        keep_firing_for: 5m\n",
    );
    assert_has(
        &d,
        "tenants/a/rules/metrics/rec.yaml:4:17: error: a recording rule cannot have `for` or `keep_firing_for`\n  hint: those belong to alerting rules (`alert:`); the rulers refuse them in recording rules",
    );
}

#[test]
fn rule_needs_alert_or_record() {
    let d = errors_with(
        "tenants/a/rules/metrics/slo.yaml",
        "groups:\n  - name: g\n    rules:\n      - expr: up\n",
    );
    assert_has(
        &d,
        "tenants/a/rules/metrics/slo.yaml:4:15: error: a rule needs `alert` (alerting rule) or `record` (recording rule)",
    );
}

#[test]
fn sampling_percentage_out_of_range() {
    let d = errors_with(
        "tenants/a/sampling.yaml",
        "policies:\n  - name: base\n    type: probabilistic\n    percentage: 120\n",
    );
    assert_has(
        &d,
        "tenants/a/sampling.yaml:4:17: error: percentage 120 is outside 0 to 100\n  hint: write the share of traces to keep in percent, e.g. 10 for one trace in ten",
    );
}

#[test]
fn sampling_unknown_policy_kind() {
    let d = errors_with(
        "tenants/a/sampling.yaml",
        "policies:\n  - name: x\n    type: probabilistc\n    percentage: 5\n",
    );
    assert_has(
        &d,
        "tenants/a/sampling.yaml:3:11: error: unknown variant `probabilistc`, expected one of errors, latency, probabilistic, attribute, always\n  hint: did you mean `probabilistic`?",
    );
}

#[test]
fn floating_version_pins() {
    for (pin, problem) in [
        ("latest", "`latest` is a moving tag, not a version"),
        ("main", "`main` is a moving tag, not a version"),
        ("\"\"", "the version is empty"),
        (
            "\"1.2\"",
            "`1.2` is not an exact version: a partial version or range picks up whatever is newest",
        ),
        (
            "\"^1.2.3\"",
            "`^1.2.3` is not an exact version: a partial version or range picks up whatever is newest",
        ),
        (
            "\">=1.2.3\"",
            "`>=1.2.3` is not an exact version: a partial version or range picks up whatever is newest",
        ),
        (
            "\"1.2.x\"",
            "`1.2.x` is not an exact version: a partial version or range picks up whatever is newest",
        ),
    ] {
        let d = errors_with(
            "versions.yaml",
            &VERSIONS.replacen("version: 1.2.3", &format!("version: {pin}"), 1),
        );
        assert_has(
            &d,
            &format!(
                "versions.yaml:3:12: error: agent.version floats: {problem}\n  hint: pin an exact release such as 1.4.2 or a digest sha256:<64 hex digits>, so what runs is what the repository says"
            ),
        );
    }
}

#[test]
fn rollout_settings_that_cannot_roll_are_refused() {
    let d = errors_with(
        "versions.yaml",
        &(VERSIONS.replace(
            "  version: 1.2.3\ngateway:",
            "  version: 1.2.3\n  rollout:\n    max_unavailable: \"0\"\n    health_timeout: 0s\ngateway:",
        ) + "  rollout:\n    max_surge: \"0%\"\n"),
    );
    assert_has(
        &d,
        "versions.yaml:5:22: error: agent.rollout.max_unavailable \"0\" is not a count or a percentage\n  hint: write a number of nodes (\"1\") or a share (\"10%\"); 0 would block the rollout",
    );
    assert_has(
        &d,
        "versions.yaml:11:16: error: gateway.rollout.max_surge \"0%\" is not a count or a percentage\n  hint: the gateway rolls with maxUnavailable 0, so it needs at least one extra pod (\"1\" or \"25%\") to make progress",
    );
    assert_has(
        &d,
        "versions.yaml: error: agent.rollout.health_timeout must be at least 1s\n  hint: a rollout needs time to start pods; 5m suits most clusters",
    );
    assert!(
        !d.iter()
            .any(|x| x.to_string().contains("gateway.rollout.health_timeout")),
        "{d:?}"
    );
}

#[test]
fn image_with_tag_is_refused() {
    let d = errors_with(
        "versions.yaml",
        &VERSIONS.replace(
            "ghcr.io/example/mop-gateway",
            "ghcr.io/example/mop-gateway:1.0.0",
        ),
    );
    assert_has(
        &d,
        "versions.yaml:5:10: error: gateway.image must be a repository without tag or digest\n  hint: move the tag or digest into `version`",
    );
}

#[test]
fn inline_secret_in_a_credential_field() {
    let d = errors_with(
        "mop.yaml",
        &MOP.replace(
            "admin_password:\n    file: /run/secrets/grafana",
            "admin_password: hunter2",
        ),
    );
    assert_has(
        &d,
        "mop.yaml:4:19: error: inline secret: credentials must not be written into the repository\n  hint: reference the credential instead: `file: /path/to/mounted/secret` or `secret: {name: my-secret, key: password}`",
    );
}

#[test]
fn inline_secret_under_an_unknown_key() {
    let d = errors_with(
        "mop.yaml",
        &MOP.replace("  admin_password:", "  password: s3cret\n  admin_password:"),
    );
    let hit = d
        .iter()
        .find(|l| l.starts_with("mop.yaml:4:3: error: unknown field `password`"))
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(hit.ends_with("hint: reference the credential instead: `file: /path/to/mounted/secret` or `secret: {name: my-secret, key: password}`"), "{hit}");
}

#[test]
fn token_shaped_value_anywhere_is_an_inline_secret() {
    let text = dashboard("a-one").replace(
        "\"panels\": []",
        "\"panels\": [],\n  \"description\": \"glsa_abcdefghijklmnopqrstuvwxyz012345_abcdef01\"",
    );
    let d = errors_with("tenants/a/dashboards/main/one.json", &text);
    assert_has(
        &d,
        "tenants/a/dashboards/main/one.json:5:19: error: inline secret: this value looks like a Grafana service-account token\n  hint: reference the credential instead: `file: /path/to/mounted/secret` or `secret: {name: my-secret, key: password}`",
    );
}

#[test]
fn unexpected_file_in_a_tenant_directory() {
    let d = errors_with("tenants/a/sampling.yml", "policies: []\n");
    assert_has(
        &d,
        "tenants/a/sampling.yml: error: MOP does not read this file\n  hint: did you mean `sampling.yaml`? MOP reads tenant.yaml, sampling.yaml and alerting.yaml in a tenant directory",
    );
}

#[test]
fn tenant_directory_without_tenant_yaml() {
    let mut files = base();
    files.insert("tenants/c/dashboards/x/d.json".into(), dashboard("c-d"));
    let d: Vec<String> = run(files)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_has(
        &d,
        "tenants/c/tenant.yaml: error: file is missing\n  hint: every tenant directory needs a tenant.yaml with at least `id` and `namespaces`",
    );
}

#[test]
fn team_member_must_be_org_member() {
    let d = errors_with(
        "tenants/a/tenant.yaml",
        &format!("{TEAM_A}  teams:\n    - name: oncall\n      members: [alcie]\n"),
    );
    assert_has(
        &d,
        "tenants/a/tenant.yaml:11:17: error: team member \"alcie\" is not a member of the organisation\n  hint: did you mean \"alice\"? Team members must also be organisation members",
    );
}

#[test]
fn default_tenant_must_exist() {
    let d = errors_with(
        "mop.yaml",
        &format!("{MOP}gateway:\n  default_tenant: team-c\n"),
    );
    let hit = d
        .iter()
        .find(|l| {
            l.starts_with(
                "mop.yaml:17:19: error: gateway.default_tenant \"team-c\" is not a tenant id",
            )
        })
        .unwrap_or_else(|| panic!("{d:?}"));
    assert!(hit.contains("hint: "), "{hit}");
}

/// One typo in the default tenant's file is one error: the default tenant is
/// not also reported missing because its file could not be read.
#[test]
fn an_unparsable_tenant_file_does_not_also_fail_the_default_tenant() {
    let mut files = base();
    files.insert(
        "mop.yaml".into(),
        format!("{MOP}gateway:\n  default_tenant: team-a\n"),
    );
    files.insert(
        "tenants/a/tenant.yaml".into(),
        TEAM_A.replacen("namespaces:", "namespacs:", 1),
    );
    let d: Vec<String> = run(files)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("tenants/a/tenant.yaml:2:1: error: unknown field `namespacs`"),
        "{d:#?}"
    );
}

#[test]
fn invalid_tenant_id_characters() {
    let d = errors_with("tenants/b/tenant.yaml", "id: team|b\nnamespaces: [b]\n");
    assert_has(
        &d,
        "tenants/b/tenant.yaml:1:5: error: tenant id \"team|b\" is not a valid X-Scope-OrgID\n  hint: use 1-150 characters of letters, digits and ! - _ . * ' ( )",
    );
}

#[test]
fn missing_root_files() {
    let mut files = base();
    files.remove("mop.yaml");
    files.remove("versions.yaml");
    let d: Vec<String> = run(files)
        .diagnostics
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_has(
        &d,
        "mop.yaml: error: file is missing\n  hint: every config repository has a mop.yaml at its root; start from repo-template/mop.yaml",
    );
    assert_has(
        &d,
        "versions.yaml: error: file is missing\n  hint: pin the agent and gateway versions in versions.yaml; start from repo-template/versions.yaml",
    );
}

#[test]
fn sampling_policy_fields_follow_the_type() {
    let d = errors_with(
        "tenants/a/sampling.yaml",
        "policies:\n  - name: slow\n    type: latency\n    percentage: 5\n",
    );
    assert_has(
        &d,
        "tenants/a/sampling.yaml:3:11: error: policy \"slow\" of type latency needs `threshold`\n  hint: add e.g. `threshold: 500ms`",
    );
    assert_has(
        &d,
        "tenants/a/sampling.yaml:3:11: error: `percentage` does not apply to a policy of type latency\n  hint: remove it, or change `type` to the policy kind that uses it",
    );
}

#[test]
fn minify_keeps_strings_intact() {
    let mut out = String::new();
    minify_json_into(
        "{ \"a b\" : [ 1 , \"x \\\" y\" ],\n  \"é\": \"\\\\\" }",
        &mut out,
    );
    assert_eq!(out, r#"{"a b":[1,"x \" y"],"é":"\\"}"#);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["a b"][1], "x \" y");
}

#[test]
fn dashboard_body_is_canonical_at_the_top_and_drops_instance_fields() {
    let mut files = base();
    files.insert(
        "tenants/a/dashboards/main/one.json".into(),
        "{\n  \"title\": \"T\",\n  \"id\": 12,\n  \"version\": 3,\n  \"uid\": \"a-one\",\n  \"panels\": [ { \"id\": 1 } ]\n}\n".into(),
    );
    let repo = run(files).repo.expect("valid");
    let d = &repo.tenants[0].dashboards[0];
    assert_eq!(
        &*d.body,
        r#"{"dashboard":{"panels":[{"id":1}],"title":"T","uid":"a-one"},"folderUid":"mop-a-main"}"#
    );
}

#[test]
fn every_unknown_field_of_a_file_is_reported() {
    let d = errors_with(
        "tenants/b/tenant.yaml",
        "id: team-b\nnamespaces: [b]\ngrafana:\n  memebers: []\n  teams:\n    - name: t\n      membrs: []\nlimts: {}\n",
    );
    // The first comes from serde (fields in declaration order), the others from the
    // schema pass (fields in alphabetical order).
    assert_has(
        &d,
        "tenants/b/tenant.yaml:4:3: error: unknown field `memebers`, expected one of org, members, teams\n  hint: did you mean `members`?",
    );
    assert_has(
        &d,
        "tenants/b/tenant.yaml:7:7: error: unknown field `membrs`, expected one of email, members, name\n  hint: did you mean `members`?",
    );
    assert_has(
        &d,
        "tenants/b/tenant.yaml:8:1: error: unknown field `limts`, expected one of display_name, grafana, id, ingest, labels, limits, namespaces\n  hint: did you mean `limits`?",
    );
    assert_eq!(d.len(), 3, "{d:#?}");
}

#[test]
fn empty_sampling_policies_are_ambiguous() {
    let d = errors_with("tenants/a/sampling.yaml", "policies: []\n");
    assert_has(
        &d,
        "tenants/a/sampling.yaml: error: `policies` is empty, so it is unclear whether to keep all traces or none\n  hint: to keep every trace, delete sampling.yaml or add `- {name: all, type: always}`; to keep few, add a probabilistic policy",
    );
}

/// The credential scan finds exactly the tokens a byte-by-byte reading finds: at
/// each offset, a known prefix that starts a token (not inside a word) and whose
/// token passes `looks_like_credential`; the scan continues after the prefix.
#[test]
fn credential_scan_matches_a_byte_by_byte_reading() {
    use proptest::prelude::*;
    fn naive(text: &str) -> Vec<(u32, u32)> {
        let b = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            let Some((p, _)) = diag::CREDENTIAL_PREFIXES
                .iter()
                .find(|(p, _)| b[i..].starts_with(p.as_bytes()))
            else {
                i += 1;
                continue;
            };
            if i == 0 || !b[i - 1].is_ascii_alphanumeric() {
                let end = text[i..]
                    .find(|c: char| c.is_whitespace() || "\"',:=[]{}".contains(c))
                    .map_or(text.len(), |e| i + e);
                if diag::looks_like_credential(&text[i..end]).is_some() {
                    out.push(diag::line_col(text, i));
                }
            }
            i += p.len();
        }
        out
    }
    let pieces = prop::sample::select(vec![
        "ghp_",
        "gho_",
        "ghs_",
        "github_pat_",
        "glpat-",
        "glsa_",
        "glc_",
        "xoxb-",
        "xoxp-",
        "sk_live_",
        "AKIA",
        "AKIAAKIA",
        "A",
        "g",
        "gh",
        "x",
        "s",
        "0123456789ABCDEF",
        "abcdefghijklmnop",
        "\"",
        " ",
        "\n",
        ":",
        "é",
        "_",
        "-",
        "xo",
        "AK",
        "KIA",
    ]);
    proptest!(ProptestConfig::with_cases(2000), |(parts in prop::collection::vec(pieces, 0..40))| {
        let text: String = parts.concat();
        let mut diags = Vec::new();
        scan_credentials("f.json", &text, &mut diags);
        let found: Vec<(u32, u32)> = diags.iter().map(|d| (d.line, d.column)).collect();
        prop_assert_eq!(found, naive(&text), "text {:?}", text);
    });
}
