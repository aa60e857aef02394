//! The ruler fakes refuse what Mimir and Loki refuse (issue 12 item 3); each
//! test names the source it follows (see `tests/README.md`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use mop_fakes::ruler::{Api, FakeRuler, RulerApis, RulerLimits};
use mop_syncer::apply::Applier;
use mop_syncer::apply::engine;
use mop_syncer::apply::http::RetryPolicy;
use mop_syncer::apply::ruler::RulerApplier;
use mop_syncer::render::{Desired, Target};
use reqwest::StatusCode;
use serde_json::Value;

async fn post(
    fake: &FakeRuler,
    api: Api,
    tenant: &str,
    ns: &str,
    body: &str,
) -> (StatusCode, String) {
    let r = reqwest::Client::new()
        .post(format!("{}{}/{ns}", fake.url(), api.prefix()))
        .header("X-Scope-OrgID", tenant)
        .header("Content-Type", "application/yaml")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    (r.status(), r.text().await.unwrap())
}

fn group(name: &str, rules: usize, expr: &str) -> String {
    let mut s = format!("name: {name}\nrules:\n");
    for i in 0..rules {
        s.push_str(&format!("  - record: job:r{i}:sum\n    expr: {expr}\n"));
    }
    s
}

/// Mimir `pkg/ruler/manager.go` `ValidateRuleGroup` + Prometheus
/// `model/rulefmt/rulefmt.go`; Loki `pkg/ruler/compat.go` `ValidateGroups`.
#[tokio::test]
async fn rule_groups_are_parsed_as_mimir_and_loki_do() {
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let cases: [(Api, &str, &str); 9] = [
        (
            Api::Mimir,
            "name: g\nrules:\n  - record: a:b\n    expr: sum(rate(x[5m])\n",
            "could not parse expression",
        ),
        (
            Api::Mimir,
            "name: g\nrules: []\n",
            "rule group 'g' has no rules",
        ),
        (
            Api::Mimir,
            "rules:\n  - record: a\n    expr: up\n",
            "rule group name must not be empty",
        ),
        (
            Api::Mimir,
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    annotations:\n      summary: '{{ $labels.job '\n",
            "annotation \"summary\"",
        ),
        (
            Api::Mimir,
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    labels:\n      __name__: x\n",
            "invalid label name: __name__",
        ),
        (
            Api::Mimir,
            "name: g\nsource_tenants: [a, b]\nrules:\n  - record: a\n    expr: up\n",
            "rules federation is disabled",
        ),
        (
            Api::Mimir,
            "name: g\nrules:\n  - alert: A\n    expr: up == 0\n    for: 5 minutes\n",
            "unable to decoded rule group",
        ),
        (
            Api::Loki,
            "name: g\nrules:\n  - alert: A\n    expr: rate(app[5m]) > 1\n",
            "could not parse expression for alert 'A' in group 'g'",
        ),
        (
            Api::Loki,
            "name: g\nrules:\n  - alert: A\n    expr: sum(rate({app=\"x\"}[5m])) > 1\n    annotations:\n      s: '{{ $externalURL }}'\n",
            "annotation \"s\"",
        ),
    ];
    for (api, body, want) in cases {
        let (st, text) = post(&fake, api, "t", "ns", body).await;
        assert_eq!(st, StatusCode::BAD_REQUEST, "{api:?} {body}: {text}");
        assert!(text.contains(want), "{api:?} {body}: {text}");
    }
    assert_eq!(
        fake.group_count(Api::Mimir, "t") + fake.group_count(Api::Loki, "t"),
        0
    );
    // Loki, unlike Mimir, takes an empty group and `$externalURL`-free templates.
    let (st, text) = post(&fake, Api::Loki, "t", "ns", "name: g\nrules: []\n").await;
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
    let (st, text) = post(
        &fake,
        Api::Mimir,
        "t",
        "ns",
        "name: g\nrules:\n  - alert: A\n    expr: sum by (job) (rate(errors_total[5m])) > 0.1\n    for: 5m\n    annotations:\n      summary: '{{ $labels.job }}: {{ $value | humanizePercentage }} ({{ $externalURL }})'\n",
    )
    .await;
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");
}

/// Mimir `pkg/ruler/api.go` `CreateRuleGroup` with `AssertMaxRulesPerRuleGroup`
/// / `AssertMaxRuleGroups` of `pkg/ruler/ruler.go`; defaults from
/// `pkg/util/validation/limits.go` (20 rules, 70 groups); Loki none.
#[tokio::test]
async fn per_tenant_limits_from_defaults_and_runtime_overrides() {
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    // Mimir's default: at most 20 rules per group; Loki has no default limit.
    let (st, text) = post(&fake, Api::Mimir, "t", "ns", &group("big", 21, "up")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        text,
        "per-user rules per rule group limit (limit: 20 actual: 21) exceeded\n"
    );
    let (st, _) = post(&fake, Api::Mimir, "t", "ns", &group("ok", 20, "up")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let loki = "sum(count_over_time({app=\"x\"}[1m]))";
    let (st, text) = post(&fake, Api::Loki, "t", "ns", &group("big", 21, loki)).await;
    assert_eq!(st, StatusCode::ACCEPTED, "{text}");

    // Overrides as the syncer renders them: a tenant block over the defaults.
    fake.load_runtime_overrides(
        Api::Mimir,
        "overrides:\n  t:\n    ingestion_rate: 5\n    ruler_max_rule_groups_per_tenant: 2\n  u:\n    ruler_max_rules_per_rule_group: 3\n",
    )
    .unwrap();
    assert_eq!(
        fake.with_state(|s| s.limits_of(Api::Mimir, "t")),
        RulerLimits {
            max_rule_groups_per_tenant: 2,
            max_rules_per_rule_group: 20
        }
    );
    let (st, _) = post(&fake, Api::Mimir, "t", "other", &group("second", 1, "up")).await;
    assert_eq!(st, StatusCode::ACCEPTED);
    let (st, text) = post(&fake, Api::Mimir, "t", "ns", &group("third", 1, "up")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert_eq!(
        text,
        "per-user rule groups limit (limit: 2 actual: 3) exceeded\n"
    );
    // At the limit even replacing an existing group is refused: Mimir counts
    // the posted group as one more (len(rgs)+1).
    let (st, text) = post(&fake, Api::Mimir, "t", "ns", &group("ok", 2, "up")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST, "{text}");
    assert_eq!(fake.group_count(Api::Mimir, "t"), 2);
    let (st, text) = post(&fake, Api::Mimir, "u", "ns", &group("g", 4, "up")).await;
    assert_eq!(st, StatusCode::BAD_REQUEST);
    assert!(text.contains("(limit: 3 actual: 4)"), "{text}");
    // A limit that is not a count makes the file unloadable, as for Mimir.
    assert!(
        fake.load_runtime_overrides(
            Api::Mimir,
            "overrides:\n  t:\n    ruler_max_rule_groups_per_tenant: many\n"
        )
        .is_err()
    );
}

fn overrides_yaml(desired: &Desired, configmap: &str) -> String {
    let (_, r) = desired
        .resources
        .iter()
        .find(|(id, _)| id.target == Target::Kubernetes && id.name.ends_with(configmap))
        .unwrap_or_else(|| panic!("no {configmap} rendered"));
    let v: Value = serde_json::from_str(&r.body).unwrap();
    v["data"]["overrides.yaml"].as_str().unwrap().to_string()
}

/// The syncer's rendered rule groups pass the strict rulers under the limits
/// it rendered itself into the runtime overrides.
#[tokio::test]
async fn repo_template_rules_apply_under_the_rendered_limits() {
    let (desired, scope) = support::rendered_template();
    let fake = FakeRuler::start(RulerApis::ALL).await.unwrap();
    fake.load_runtime_overrides(
        Api::Mimir,
        &overrides_yaml(&desired, "mimir-runtime-overrides"),
    )
    .unwrap();
    fake.load_runtime_overrides(
        Api::Loki,
        &overrides_yaml(&desired, "loki-runtime-overrides"),
    )
    .unwrap();
    assert!(fake.with_state(|s| !s.limits.is_empty()));
    let retry = RetryPolicy {
        attempts: 2,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(10),
    };
    let appliers: Vec<Box<dyn Applier>> = vec![
        Box::new(RulerApplier::new(Target::MimirRuler, &fake.url(), retry).unwrap()),
        Box::new(RulerApplier::new(Target::LokiRuler, &fake.url(), retry).unwrap()),
    ];
    let report = engine::reconcile(
        &desired,
        &scope,
        &appliers,
        &support::prune_opts(50.0),
        &|_, _| {},
    )
    .await;
    assert!(report.converged(), "{:#?}", report.targets);
    let groups = desired
        .resources
        .keys()
        .filter(|id| matches!(id.target, Target::MimirRuler | Target::LokiRuler))
        .count();
    assert!(groups > 5);
    assert_eq!(fake.recorder().writes(), groups as u64);
}
