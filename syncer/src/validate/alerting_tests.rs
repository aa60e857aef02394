//! `alerting.yaml` (tenant and platform): one test per class of bad input, each
//! pinning location, message and hint.

use super::tests::{assert_has, base, run};

const TENANT: &str = r##"route:
  receiver: team-slack
  group_by: [alertname, namespace]
  group_wait: 30s
  routes:
    - matchers: ['severity="critical"']
      receiver: team-pager
      continue: true
receivers:
  - name: team-slack
    slack_configs:
      - api_url: {secret: {name: mop-alerting-a, key: slack-url}}
        channel: "#team-a"
  - name: team-pager
    pagerduty_configs:
      - routing_key: {secret: {name: mop-alerting-a, key: pagerduty}}
"##;

const PLATFORM: &str = r#"receivers:
  - name: sre-oncall
    pagerduty_configs:
      - routing_key: {secret: {name: mop-alerting-platform, key: pagerduty}}
routes:
  - matchers: ['severity="critical"']
    receiver: sre-oncall
    continue: true
"#;

fn with(files: &[(&str, &str)]) -> Vec<String> {
    let mut all = base();
    for (p, t) in files {
        all.insert((*p).into(), (*t).into());
    }
    let out = run(all);
    assert!(out.repo.is_none(), "expected errors");
    out.diagnostics.iter().map(ToString::to_string).collect()
}

#[test]
fn a_tenant_and_a_platform_file_validate() {
    let mut all = base();
    all.insert("tenants/a/alerting.yaml".into(), TENANT.into());
    all.insert("alerting.yaml".into(), PLATFORM.into());
    let out = run(all);
    assert_eq!(out.diagnostics, vec![]);
    let repo = out.repo.expect("valid");
    assert!(repo.alerting.is_some());
    assert_eq!(
        repo.tenants[0].alerting.as_ref().map(|a| a.receivers.len()),
        Some(2)
    );
    assert!(repo.tenants[1].alerting.is_none());
}

#[test]
fn an_inline_webhook_url_is_an_inline_secret() {
    let text = TENANT.replace(
        "{secret: {name: mop-alerting-a, key: slack-url}}",
        "https://hooks.slack.com/services/T000/B000/XXXXXXXX",
    );
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert_has(
        &d,
        "tenants/a/alerting.yaml:12:18: error: inline secret: credentials must not be written into the repository\n  hint: reference the credential instead: `file: /path/to/mounted/secret` or `secret: {name: my-secret, key: password}`",
    );
}

#[test]
fn an_unknown_receiver_type_is_named_with_the_supported_ones() {
    let text = TENANT.replace("slack_configs:", "telegram_configs:");
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    let hit = d
        .iter()
        .find(|l| {
            l.starts_with("tenants/a/alerting.yaml:11:5: error: unknown field `telegram_configs`")
        })
        .unwrap_or_else(|| panic!("{d:#?}"));
    assert!(hit.contains("hint: MOP offers the receiver types slack_configs, pagerduty_configs, email_configs, webhook_configs, opsgenie_configs, msteams_configs; use a webhook_configs receiver for others"), "{hit}");
    let text = TENANT.replace("slack_configs:", "slak_configs:");
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert!(
        d.iter()
            .any(|l| l.ends_with("hint: did you mean `slack_configs`?")),
        "{d:#?}"
    );
}

#[test]
fn a_route_to_an_undefined_receiver() {
    let text = TENANT.replace("receiver: team-pager", "receiver: team-pagr");
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert_has(
        &d,
        "tenants/a/alerting.yaml:7:17: error: route sends to receiver \"team-pagr\", which is not among this file's receivers or the platform's\n  hint: did you mean \"team-pager\"?",
    );
    // A tenant may route to the platform's receivers, the platform only to its own.
    let text = TENANT.replace("receiver: team-pager", "receiver: sre-oncall");
    let mut all = base();
    all.insert("tenants/a/alerting.yaml".into(), text);
    all.insert("alerting.yaml".into(), PLATFORM.into());
    assert_eq!(run(all).diagnostics, vec![]);
    let d = with(&[(
        "alerting.yaml",
        &PLATFORM.replace("receiver: sre-oncall", "receiver: team-slack"),
    )]);
    assert!(
        d.iter().any(|l| l.starts_with("alerting.yaml:7:15: error: route sends to receiver \"team-slack\", which is not among the platform's receivers in alerting.yaml")),
        "{d:#?}"
    );
}

#[test]
fn matchers_that_do_not_parse() {
    let text = TENANT.replace(
        r#"['severity="critical"']"#,
        r#"['severity="critical', 'env=~"(prod"']"#,
    );
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert_has(
        &d,
        "tenants/a/alerting.yaml:6:18: error: matcher \"severity=\\\"critical\" does not parse: matcher value contains unescaped double quote: \"critical\n  hint: write `label=\"value\"`, with = != =~ or !~, e.g. severity=\"critical\" or service=~\"pay.*\"; quote the YAML string when it starts with a quote or contains `: `",
    );
    assert!(
        d.iter().any(|l| l.starts_with("tenants/a/alerting.yaml:6:40: error: matcher \"env=~\\\"(prod\\\"\" does not parse: invalid regular expression")),
        "{d:#?}"
    );
}

#[test]
fn duplicate_receivers_and_root_route_rules() {
    let text = TENANT
        .replace("name: team-pager", "name: team-slack")
        .replace(
            "  group_wait: 30s\n",
            "  group_wait: 30s\n  matchers: [a=b]\n",
        );
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert_has(
        &d,
        "tenants/a/alerting.yaml:15:11: error: receiver name \"team-slack\" is used twice\n  hint: first defined at line 11; Alertmanager refuses duplicate receiver names",
    );
    assert_has(
        &d,
        "tenants/a/alerting.yaml:2:3: error: the root route must not have `matchers`\n  hint: every alert enters at the root; put the matchers on a route under `routes:`",
    );
}

#[test]
fn durations_group_by_and_time_intervals() {
    let text = TENANT.replace("group_wait: 30s", "group_wait: 30 seconds");
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert!(
        d.iter().any(|l| l
            .starts_with("tenants/a/alerting.yaml:4:15: error: invalid duration \"30 seconds\"")),
        "{d:#?}"
    );
    let text = TENANT
        .replace("group_by: [alertname, namespace]", "group_by: [alertname, ..., alertname, 1x]")
        .replace("      continue: true\n", "      continue: true\n      repeat_interval: 0s\n      mute_time_intervals: [weekend]\n");
    let text = format!(
        "{text}time_intervals:\n  - name: weekends\n    time_intervals:\n      - weekdays: ['monday:friday', 'saturday:sunday', funday]\n        times: [{{start_time: '18:00', end_time: '09:00'}}]\n"
    );
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    for want in [
        "tenants/a/alerting.yaml:3:25: error: `...` (group by every label) cannot be combined with other labels in group_by",
        "tenants/a/alerting.yaml:3:30: error: label \"alertname\" appears twice in group_by",
        "tenants/a/alerting.yaml:3:41: error: \"1x\" in group_by is not a valid label name",
        "tenants/a/alerting.yaml:9:24: error: repeat_interval cannot be zero",
        "tenants/a/alerting.yaml:10:29: error: time interval \"weekend\" is not defined\n  hint: did you mean \"weekends\"?",
        "tenants/a/alerting.yaml:22:37: error: \"saturday:sunday\" in weekdays is not valid",
        "tenants/a/alerting.yaml:22:56: error: \"funday\" in weekdays is not valid",
        "tenants/a/alerting.yaml:23:49: error: end_time must be after start_time",
    ] {
        assert!(
            d.iter().any(|l| l.starts_with(want)),
            "missing {want}\n{d:#?}"
        );
    }
}

#[test]
fn platform_routes_must_continue_and_names_must_not_clash() {
    let d = with(&[
        (
            "alerting.yaml",
            &PLATFORM.replace("    continue: true\n", ""),
        ),
        (
            "tenants/a/alerting.yaml",
            &TENANT
                .replace("name: team-pager", "name: sre-oncall")
                .replace("receiver: team-pager", "receiver: sre-oncall"),
        ),
    ]);
    assert_has(
        &d,
        "alerting.yaml:6:5: error: a platform route must set `continue: true`\n  hint: platform routes come first under every tenant's root route; without `continue: true` the alerts they match would never reach the tenant's own routes",
    );
    assert!(
        d.iter().any(|l| l.starts_with("tenants/a/alerting.yaml:14:11: error: receiver \"sre-oncall\" is also a receiver of the platform's alerting.yaml")),
        "{d:#?}"
    );
}

#[test]
fn pagerduty_needs_one_key_and_email_a_port() {
    let text = TENANT.replace(
        "      - routing_key: {secret: {name: mop-alerting-a, key: pagerduty}}\n",
        "      - url: https://events.pagerduty.com/v2/enqueue\n",
    );
    let text = format!(
        "{text}  - name: mail\n    email_configs:\n      - to: team@example.com\n        from: am@example.com\n        smarthost: smtp.example.com\n"
    );
    let d = with(&[("tenants/a/alerting.yaml", &text)]);
    assert!(d.iter().any(|l| l.starts_with("tenants/a/alerting.yaml:14:11: error: receiver \"team-pager\": a pagerduty config needs exactly one of `routing_key` or `service_key`")), "{d:#?}");
    assert!(
        d.iter().any(|l| l.starts_with(
            "tenants/a/alerting.yaml:21:20: error: smarthost \"smtp.example.com\" is not host:port"
        )),
        "{d:#?}"
    );
}

#[test]
fn notification_templates_parse_and_need_an_alerting_file() {
    let d = with(&[
        ("tenants/a/alerting.yaml", TENANT),
        (
            "tenants/a/alert-templates/slack.tmpl",
            "{{ define \"a.text\" }}\n  {{ range .Alerts }}{{ .Labels.x }}\n{{ end }}",
        ),
        (
            "tenants/b/alert-templates/x.tmpl",
            "{{ define \"b\" }}{{ end }}",
        ),
    ]);
    assert!(
        d.iter().any(|l| l.starts_with("tenants/a/alert-templates/slack.tmpl:3:10: error: template does not parse: unexpected EOF")),
        "{d:#?}"
    );
    assert_has(
        &d,
        "tenants/b/alert-templates/x.tmpl: error: notification template without an alerting.yaml in this tenant\n  hint: templates are sent with the tenant's Alertmanager configuration: add alerting.yaml, or remove the template",
    );
    // Functions of any Alertmanager release are left to Mimir; syntax is not.
    let mut all = base();
    all.insert("tenants/a/alerting.yaml".into(), TENANT.into());
    all.insert(
        "tenants/a/alert-templates/ok.tmpl".into(),
        "{{ define \"a\" }}{{ .CommonLabels.alertname | toUpper | safeUrl }}{{ end }}".into(),
    );
    let out = run(all);
    assert_eq!(out.diagnostics, vec![]);
    let t = &out.repo.unwrap().tenants[0];
    assert_eq!(t.alert_templates.keys().collect::<Vec<_>>(), ["ok.tmpl"]);
}

/// An alerting.yaml that is present but refused (here an inline webhook URL)
/// is the one error: its templates are not reported as orphans on top.
#[test]
fn an_invalid_alerting_file_does_not_orphan_its_templates() {
    let inline = TENANT.replace(
        "{secret: {name: mop-alerting-a, key: slack-url}}",
        "https://hooks.slack.com/services/T000/B000/XXXX",
    );
    let d = with(&[
        ("tenants/a/alerting.yaml", &inline),
        (
            "tenants/a/alert-templates/slack.tmpl",
            "{{ define \"a\" }}{{ end }}",
        ),
    ]);
    assert_eq!(d.len(), 1, "{d:#?}");
    assert!(
        d[0].starts_with("tenants/a/alerting.yaml:12:18: error: inline secret"),
        "{d:#?}"
    );
}
