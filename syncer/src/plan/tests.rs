//! Plans without noise, and Markdown plans that fit where they are posted.

use std::sync::Arc;

use proptest::prelude::*;

use super::*;

fn desired(items: &[(Kind, &str, &str)]) -> Desired {
    let mut d = Desired::default();
    for (kind, name, body) in items {
        let id = ResourceId {
            target: if *kind == Kind::RuleGroup {
                Target::MimirRuler
            } else {
                Target::Grafana
            },
            tenant: Some("a".into()),
            kind: *kind,
            name: (*name).into(),
        };
        d.resources.insert(
            id.clone(),
            Resource {
                id,
                title: None,
                body: Arc::from(*body),
            },
        );
    }
    d
}

fn meta() -> Meta {
    Meta {
        base: "base".into(),
        head: "head".into(),
        base_invalid: false,
    }
}

#[test]
fn reordered_keys_and_reindented_bodies_plan_no_change() {
    let a = r#"{"dashboard":{"panels":[{"id":1,"title":"CPU","gridPos":{"h":8,"w":12,"x":0,"y":0},"targets":[{"expr":"up","refId":"A"}]}],"title":"T","uid":"u"},"folderUid":"f"}"#;
    let b = r#"{"folderUid": "f", "dashboard": {"uid": "u", "title": "T",
      "panels": [{"targets": [{"refId": "A", "expr": "up"}], "gridPos": {"y": 0, "x": 0, "w": 12, "h": 8}, "title": "CPU", "id": 1}]}}"#;
    let plan = diff(
        Some(&desired(&[(Kind::Dashboard, "u", a)])),
        &desired(&[(Kind::Dashboard, "u", b)]),
    );
    assert!(plan.is_empty(), "{:#?}", plan.changes);
}

#[test]
fn reordered_panels_variables_queries_and_rules_say_reordered() {
    let a = r#"{"dashboard":{"panels":[{"id":1,"title":"A","targets":[{"refId":"A","expr":"a"},{"refId":"B","expr":"b"}]},{"id":2,"title":"B"}],"templating":{"list":[{"name":"x"},{"name":"y"}]}},"folderUid":"f"}"#;
    let b = r#"{"dashboard":{"panels":[{"id":2,"title":"B"},{"id":1,"title":"A","targets":[{"refId":"B","expr":"b"},{"refId":"A","expr":"a"}]}],"templating":{"list":[{"name":"y"},{"name":"x"}]}},"folderUid":"f"}"#;
    let ga = r#"{"name":"g","rules":[{"alert":"One","expr":"up == 0"},{"record":"two","expr":"sum(up)"}]}"#;
    let gb = r#"{"name":"g","rules":[{"record":"two","expr":"sum(up)"},{"alert":"One","expr":"up == 0"}]}"#;
    let plan = diff(
        Some(&desired(&[
            (Kind::Dashboard, "u", a),
            (Kind::RuleGroup, "ns/g", ga),
        ])),
        &desired(&[(Kind::Dashboard, "u", b), (Kind::RuleGroup, "ns/g", gb)]),
    );
    let text = format_text(&plan, &meta(), false);
    assert_eq!(
        text,
        "mop plan base → head

grafana · tenant a
  ~ dashboard u
      variables: reordered
      panels: reordered
      panel \"A\" (id 1) queries: reordered

mimir-ruler · tenant a
  ~ rule-group ns/g
      rules: reordered

Plan: 0 to create, 2 to update, 0 to delete.
"
    );
}

/// A plan of `n` dashboard updates, each with `lines` detail lines of `width`.
fn big_plan(n: usize, lines: usize, width: usize, tenants: usize) -> Plan {
    let changes = (0..n)
        .map(|i| Change {
            action: [Action::Create, Action::Update, Action::Delete][i % 3],
            id: ResourceId {
                target: [Target::Grafana, Target::MimirRuler, Target::Kubernetes][i % 3],
                tenant: (i % 7 != 0).then(|| format!("tenant-{}", i % tenants.max(1))),
                kind: Kind::Dashboard,
                name: format!("dashboard-{i:05}"),
            },
            title: Some(format!("Title ``` of {i}")),
            details: (0..lines)
                .map(|j| Detail {
                    path: format!("panel \"p{j}\" query A.expr"),
                    old: Some("x".repeat(width)),
                    new: Some(format!(
                        "{}\n{}",
                        "y".repeat(width / 2),
                        "z".repeat(width / 2)
                    )),
                })
                .collect(),
        })
        .collect();
    Plan { changes }
}

#[test]
fn a_small_plan_is_printed_whole_and_open() {
    let plan = big_plan(4, 2, 20, 2);
    let md = format_markdown(&plan, &meta());
    assert!(md.contains("<details open>"), "{md}");
    assert!(!md.contains("[!NOTE]"), "{md}");
    assert!(!md.contains("```\n! dashboard") || md.matches("```diff").count() > 0);
    // Fence text inside values never closes the code block.
    assert!(!md.contains("Title ``` of"), "{md}");
}

#[test]
fn one_huge_dashboard_edit_keeps_headers_and_says_what_was_cut() {
    // One regex edit of a big dashboard: about 70 KB of details, and two small changes.
    let mut plan = big_plan(3, 2, 20, 1);
    plan.changes[1].details = big_plan(1, 20, 1750, 1).changes.remove(0).details;
    let md = format_markdown(&plan, &meta());
    assert!(md.len() <= MARKDOWN_LIMIT, "{}", md.len());
    assert!(
        md.len() > MARKDOWN_LIMIT - 4000,
        "the room is used: {}",
        md.len()
    );
    for c in &plan.changes {
        assert!(md.contains(&c.id.name), "header of {} kept", c.id.name);
    }
    assert!(
        md.contains("**Plan: 1 to create, 1 to update, 1 to delete.**"),
        "{md}"
    );
    assert!(md.contains(" more detail lines not shown\n"), "{md}");
    assert!(md.contains("<details><summary><b>mimir-ruler · tenant tenant-0</b>: 0 to create, 1 to update, 0 to delete</summary>"), "{md}");
    assert!(md.ends_with("so it leaves out: details of 1 change. Run `mop plan --format text` (or `--format json`) to see all of it.\n"), "{}", &md[md.len() - 300..]);
}

#[test]
fn more_headers_than_fit_are_counted() {
    let plan = big_plan(6000, 0, 0, 900);
    let md = format_markdown(&plan, &meta());
    assert!(md.len() <= MARKDOWN_LIMIT, "{}", md.len());
    assert!(md.contains("further changes"), "{}", &md[md.len() - 400..]);
    assert!(md.contains("table rows"), "{}", &md[md.len() - 400..]);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn markdown_never_exceeds_the_comment_limit(
        n in 0usize..1500,
        lines in 0usize..5,
        width in 0usize..2000,
        tenants in 1usize..1500,
        base_invalid in any::<bool>(),
    ) {
        let plan = big_plan(n, lines, width, tenants);
        let m = Meta { base_invalid, ..meta() };
        let md = format_markdown(&plan, &m);
        prop_assert!(md.chars().count() <= MARKDOWN_LIMIT, "{} characters", md.chars().count());
        prop_assert!(md.len() <= MARKDOWN_LIMIT);
        let c = plan.counts();
        if n > 0 {
            let summary = format!("**Plan: {} to create, {} to update, {} to delete.**", c.create, c.update, c.delete);
            prop_assert!(md.contains(&summary));
        }
        let cut = md.contains("[!NOTE]");
        if cut {
            prop_assert!(md.contains("Run `mop plan --format text`"));
        }
        // Every header is there unless the note says changes were left out.
        if !md.contains("further change") {
            for ch in &plan.changes {
                prop_assert!(md.contains(&format!("{} {}", ch.id.kind, ch.id.name)), "{} missing", ch.id.name);
            }
        }
        // Code fences stay balanced.
        prop_assert_eq!(md.matches("```diff").count() * 2, md.matches("```").count());
    }
}

#[test]
fn alertmanager_changes_name_the_receiver_and_the_route() {
    let a = r##"{"alertmanager_config":{"route":{"receiver":"slack","routes":[{"matchers":["severity=\"critical\""],"receiver":"pager"}]},"receivers":[{"name":"slack","slack_configs":[{"api_url":"<secret>","channel":"#a"}]},{"name":"pager","pagerduty_configs":[{"routing_key":"<secret>"}]}]},"secrets":{},"template_files":{}}"##;
    let b = r##"{"alertmanager_config":{"route":{"receiver":"slack","routes":[{"matchers":["severity=~\"critical|page\""],"receiver":"pager"}]},"receivers":[{"name":"mail","email_configs":[{"to":"a@example.com"}]},{"name":"slack","slack_configs":[{"api_url":"<secret>","channel":"#b"}]},{"name":"pager","pagerduty_configs":[{"routing_key":"<secret>"}]}]},"secrets":{},"template_files":{}}"##;
    let one = |body: &str| {
        let mut d = Desired::default();
        let id = ResourceId {
            target: Target::MimirAlertmanager,
            tenant: Some("a".into()),
            kind: Kind::AlertmanagerConfig,
            name: "alertmanager".into(),
        };
        d.resources.insert(
            id.clone(),
            Resource {
                id,
                title: None,
                body: Arc::from(body),
            },
        );
        d
    };
    let plan = diff(Some(&one(a)), &one(b));
    let details: Vec<(String, Option<String>, Option<String>)> = plan.changes[0]
        .details
        .iter()
        .map(|d| (d.path.clone(), d.old.clone(), d.new.clone()))
        .collect();
    assert_eq!(
        details,
        vec![
            (
                "alertmanager_config.receivers.slack.slack_configs[0].channel".into(),
                Some("#a".into()),
                Some("#b".into())
            ),
            (
                "alertmanager_config.receivers.mail".into(),
                None,
                Some(r#"{"email_configs":[{"to":"a@example.com"}]}"#.into())
            ),
            (
                "alertmanager_config.route.routes[0].matchers".into(),
                Some(r#"["severity=\"critical\""]"#.into()),
                Some(r#"["severity=~\"critical|page\""]"#.into())
            ),
        ]
    );
}

#[test]
fn several_clusters_share_one_comment() {
    // Three clusters, each with a plan that alone would fill a comment.
    let plans: Vec<ClusterPlan> = ["dev", "prod", "staging"]
        .into_iter()
        .map(|c| ClusterPlan {
            cluster: c.to_string(),
            environment: c.to_string(),
            plan: big_plan(400, 6, 60, 40),
            new_cluster: false,
        })
        .collect();
    assert!(format_markdown(&plans[0].plan, &meta()).len() > MARKDOWN_LIMIT - 4000);
    let md = format_markdown_clusters(&plans, &meta());
    assert!(md.len() <= MARKDOWN_LIMIT, "{}", md.len());
    for c in ["dev", "prod", "staging"] {
        assert!(md.contains(&format!("| {c} | {c} | ")), "the row of {c}");
        assert!(
            md.contains(&format!("#### Cluster `{c}` ({c})")),
            "the section of {c}"
        );
    }
    assert_eq!(
        md.matches("so it leaves out").count(),
        3,
        "each section says what it cut"
    );
}
