//! Tail sampling: policies, consistent probabilistic decisions, bounded memory.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use common::fakes;
use common::otlp::{kv, resource, span, spans_seen};
use common::{TenantSpec, eventually, metric_value, start_gateway};
use mop_gateway::sampling::{Output, Sampler, Verdict, evaluate, probabilistic_keep};
use mop_gateway_config::{Policy, PolicyRule, Sampling};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use proptest::prelude::*;
use prost::Message;

fn policy(name: &str, rule: PolicyRule) -> Policy {
    Policy {
        name: name.into(),
        rule,
    }
}

fn cfg(policies: Vec<Policy>) -> Sampling {
    Sampling {
        decision_wait_ms: 1_000,
        max_traces: 1_000_000,
        max_spans_per_second: None,
        policies,
        service_overrides: BTreeMap::new(),
    }
}

fn rs(service: &str, spans: Vec<Span>) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource(Some("shop"), service)),
        scope_spans: vec![ScopeSpans {
            spans,
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn random_id(rng: &mut fastrand::Rng) -> Vec<u8> {
    (0..16).map(|_| rng.u8(..)).collect()
}

fn kept_ids(out: &Output) -> HashSet<Vec<u8>> {
    out.kept
        .iter()
        .flat_map(|(_, v)| v.iter())
        .flat_map(|rs| rs.scope_spans.iter())
        .flat_map(|ss| ss.spans.iter())
        .map(|s| s.trace_id.clone())
        .collect()
}

fn tenant() -> Arc<str> {
    Arc::from("team-a")
}

#[test]
fn errors_and_slow_traces_are_always_kept() {
    let c = cfg(vec![
        policy("errors", PolicyRule::Errors),
        policy("slow", PolicyRule::Latency { threshold_ms: 500 }),
        policy("base", PolicyRule::Probabilistic { percentage: 0.0 }),
    ]);
    let mut s = Sampler::default();
    let mut out = Output::default();
    let t = tenant();
    for i in 0..3_000u64 {
        let kind = i % 3;
        // Two spans per trace, child first; the root decides the duration.
        let child = span(i, 1, false, 1_000_000_000, 1_000_000, kind == 0);
        let root = span(
            i,
            0,
            true,
            1_000_000_000,
            if kind == 1 { 600_000_000 } else { 5_000_000 },
            false,
        );
        s.add(&t, &c, vec![rs("api", vec![child])], 0, &mut out);
        s.add(&t, &c, vec![rs("api", vec![root])], 1, &mut out);
    }
    s.tick(10_000, |_| Some(&c), &mut out);
    let kept = kept_ids(&out);
    assert_eq!(kept.len(), 2_000);
    for i in 0..3_000u64 {
        let id = common::otlp::trace_id(i);
        assert_eq!(kept.contains(&id), i % 3 != 2, "trace {i}");
    }
    // Both spans of a kept trace are kept.
    let spans: usize = out
        .kept
        .iter()
        .map(|(_, v)| {
            v.iter()
                .map(|r| r.scope_spans[0].spans.len())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(spans, 4_000);
}

#[test]
fn probabilistic_rate_is_within_tolerance_over_100k_traces() {
    let c = cfg(vec![policy(
        "base",
        PolicyRule::Probabilistic { percentage: 10.0 },
    )]);
    let mut s = Sampler::default();
    let mut out = Output::default();
    let t = tenant();
    let mut rng = fastrand::Rng::with_seed(42);
    for i in 0..100_000u64 {
        let mut sp = span(0, 0, true, 0, 1, false);
        sp.trace_id = random_id(&mut rng);
        s.add(&t, &c, vec![rs("api", vec![sp])], i / 1000, &mut out);
    }
    s.tick(1_000_000, |_| Some(&c), &mut out);
    let kept = kept_ids(&out).len() as f64;
    // Binomial sd is ~95 traces; 0.6 percentage points is over 6 sd.
    let rate = kept / 100_000.0;
    assert!((rate - 0.10).abs() < 0.006, "kept {rate}");
    assert_eq!(out.decisions.len(), 100_000);
}

#[test]
fn two_instances_decide_the_same_for_the_same_trace() {
    let c = cfg(vec![policy(
        "base",
        PolicyRule::Probabilistic { percentage: 37.5 },
    )]);
    let mut rng = fastrand::Rng::with_seed(7);
    let traces: Vec<Vec<Span>> = (0..5_000)
        .map(|_| {
            let id = random_id(&mut rng);
            (0..3)
                .map(|k| {
                    let mut sp = span(0, k, k == 0, 0, 1, false);
                    sp.trace_id = id.clone();
                    sp
                })
                .collect()
        })
        .collect();
    let t = tenant();
    // Replica A gets each trace whole; replica B gets spans one by one, reversed,
    // at other times.
    let (mut a, mut b) = (Sampler::default(), Sampler::default());
    let (mut out_a, mut out_b) = (Output::default(), Output::default());
    for tr in &traces {
        a.add(&t, &c, vec![rs("api", tr.clone())], 0, &mut out_a);
    }
    for (i, tr) in traces.iter().enumerate().rev() {
        for sp in tr.iter().rev() {
            b.add(
                &t,
                &c,
                vec![rs("api", vec![sp.clone()])],
                500 + i as u64,
                &mut out_b,
            );
        }
    }
    a.tick(1_000_000, |_| Some(&c), &mut out_a);
    b.tick(1_000_000, |_| Some(&c), &mut out_b);
    let (ka, kb) = (kept_ids(&out_a), kept_ids(&out_b));
    assert_eq!(ka, kb);
    assert!(ka.len() > 1_000 && ka.len() < 2_800, "{}", ka.len());
    // And it is the documented function of the id alone.
    for tr in &traces {
        let mut id = [0u8; 16];
        id.copy_from_slice(&tr[0].trace_id);
        assert_eq!(ka.contains(&tr[0].trace_id), probabilistic_keep(&id, 37.5));
    }
}

#[test]
fn service_overrides_attribute_match_and_rate_limit() {
    let mut c = cfg(vec![
        policy(
            "vip",
            PolicyRule::Attribute {
                key: "customer.tier".into(),
                values: vec!["gold".into()],
            },
        ),
        policy("none", PolicyRule::Probabilistic { percentage: 0.0 }),
    ]);
    c.service_overrides.insert(
        "checkout".into(),
        vec![policy("all-checkout", PolicyRule::Always)],
    );
    let id = [0u8; 16];
    let mut gold = span(1, 0, true, 0, 1, false);
    gold.attributes.push(kv("customer.tier", "gold"));
    let plain = span(2, 0, true, 0, 1, false);
    assert_eq!(
        evaluate(&c, &id, &[rs("api", vec![gold])]),
        Verdict::Kept("vip".into())
    );
    assert_eq!(
        evaluate(&c, &id, &[rs("api", vec![plain.clone()])]),
        Verdict::Dropped
    );
    assert_eq!(
        evaluate(&c, &id, &[rs("checkout", vec![plain])]),
        Verdict::Kept("all-checkout".into())
    );

    let mut limited = cfg(vec![policy("all", PolicyRule::Always)]);
    limited.max_spans_per_second = Some(10);
    let mut s = Sampler::default();
    let mut out = Output::default();
    for i in 0..100u64 {
        s.add(
            &tenant(),
            &limited,
            vec![rs("api", vec![span(i, 0, true, 0, 1, false)])],
            0,
            &mut out,
        );
    }
    s.tick(2_000, |_| Some(&limited), &mut out);
    let kept = out
        .decisions
        .iter()
        .filter(|(_, v, _)| matches!(v, Verdict::Kept(_)))
        .count();
    let limited_n = out
        .decisions
        .iter()
        .filter(|(_, v, _)| *v == Verdict::RateLimited)
        .count();
    assert_eq!(kept, 10);
    assert_eq!(limited_n, 90);
}

#[test]
fn root_span_allows_an_early_decision() {
    let c = cfg(vec![policy("all", PolicyRule::Always)]);
    let t = tenant();
    let mut s = Sampler::default();
    let mut out = Output::default();
    s.add(
        &t,
        &c,
        vec![rs("api", vec![span(1, 1, false, 0, 1, false)])],
        0,
        &mut out,
    );
    s.add(
        &t,
        &c,
        vec![rs(
            "api",
            vec![
                span(2, 1, false, 0, 1, false),
                span(2, 0, true, 0, 1, false),
            ],
        )],
        0,
        &mut out,
    );
    // A fifth of decision_wait later only the trace whose root arrived is decided.
    s.tick(200, |_| Some(&c), &mut out);
    assert_eq!(kept_ids(&out), HashSet::from([common::otlp::trace_id(2)]));
    s.tick(999, |_| Some(&c), &mut out);
    assert_eq!(s.open_traces("team-a"), 1);
    s.tick(1_000, |_| Some(&c), &mut out);
    assert_eq!(s.open_traces("team-a"), 0);
    // A late span of a kept trace follows its trace's decision.
    let before = out.kept.len();
    s.add(
        &t,
        &c,
        vec![rs("api", vec![span(2, 5, false, 0, 1, false)])],
        1_100,
        &mut out,
    );
    assert_eq!(out.kept.len(), before + 1);
}

/// Regression (found by the ring test with three Python SDKs): the root came
/// first from one service, the failing child from another service's export batch
/// 0.3 s later, and the early decision had already dropped the trace.
#[test]
fn an_early_root_never_drops_a_trace_before_decision_wait() {
    let c = cfg(vec![policy("errors", PolicyRule::Errors)]);
    let t = tenant();
    let mut s = Sampler::default();
    let mut out = Output::default();
    s.add(
        &t,
        &c,
        vec![rs("frontend", vec![span(7, 0, true, 0, 1, false)])],
        0,
        &mut out,
    );
    // The early check runs (root seen, a fifth of decision_wait quiet): nothing
    // keeps the trace yet, and it stays open.
    s.tick(200, |_| Some(&c), &mut out);
    s.tick(300, |_| Some(&c), &mut out);
    assert!(out.kept.is_empty());
    assert_eq!(s.open_traces("team-a"), 1);
    // The other service's failing span, within decision_wait of the root.
    s.add(
        &t,
        &c,
        vec![rs("checkout", vec![span(7, 1, false, 0, 1, true)])],
        300,
        &mut out,
    );
    s.tick(500, |_| Some(&c), &mut out);
    assert_eq!(kept_ids(&out), HashSet::from([common::otlp::trace_id(7)]));
    let kept_spans: usize = out
        .kept
        .iter()
        .flat_map(|(_, f)| f)
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum();
    assert_eq!(kept_spans, 2, "the whole trace, root included");

    // A trace nothing keeps is dropped at decision_wait after its last span.
    s.add(
        &t,
        &c,
        vec![rs("frontend", vec![span(8, 0, true, 0, 1, false)])],
        1_000,
        &mut out,
    );
    s.tick(1_999, |_| Some(&c), &mut out);
    assert_eq!(s.open_traces("team-a"), 1);
    s.tick(2_000, |_| Some(&c), &mut out);
    assert_eq!(s.open_traces("team-a"), 0);
    assert_eq!(kept_ids(&out), HashSet::from([common::otlp::trace_id(7)]));
}

#[test]
fn traces_held_when_a_reload_removes_sampling_are_kept() {
    let c = cfg(vec![policy(
        "none",
        PolicyRule::Probabilistic { percentage: 0.0 },
    )]);
    let t = tenant();
    let mut s = Sampler::default();
    let mut out = Output::default();
    s.add(
        &t,
        &c,
        vec![rs("api", vec![span(1, 0, true, 0, 1, false)])],
        0,
        &mut out,
    );
    // The reload took the tenant's policies away; then the tenant itself.
    let unsampled = cfg(vec![]);
    s.tick(5_000, |_| Some(&unsampled), &mut out);
    assert_eq!(kept_ids(&out).len(), 1);
    s.add(
        &t,
        &c,
        vec![rs("api", vec![span(2, 0, true, 0, 1, false)])],
        5_000,
        &mut out,
    );
    s.tick(10_000, |_| None, &mut out);
    assert_eq!(kept_ids(&out).len(), 2);
}

#[test]
fn flood_of_never_ending_traces_stays_within_max_traces() {
    let mut c = cfg(vec![policy("errors", PolicyRule::Errors)]);
    c.max_traces = 1_000;
    let t = tenant();
    let mut s = Sampler::default();
    let mut out = Output::default();
    // 50k distinct traces, none with a root, arriving faster than decision_wait.
    for i in 0..50_000u64 {
        s.add(
            &t,
            &c,
            vec![rs("api", vec![span(i, 1, false, 0, 1, false)])],
            i / 100,
            &mut out,
        );
        assert!(s.open_traces("team-a") <= 1_000);
        assert!(s.remembered_decisions("team-a") <= 1_000);
    }
    assert!(
        out.evictions.len() >= 49_000 - 1_000,
        "{}",
        out.evictions.len()
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    /// Against a model: every span that goes in is, at any time, exactly one of
    /// kept (emitted), sampled out, or still held; held traces never exceed
    /// `max_traces`.
    #[test]
    fn spans_are_conserved_and_memory_is_bounded(
        ops in proptest::collection::vec((0u64..40, 0u64..3, any::<bool>(), 0u64..50, any::<bool>()), 1..300),
        max_traces in 1u64..8,
        wait in 1u64..100,
    ) {
        let mut c = cfg(vec![policy("errors", PolicyRule::Errors), policy("half", PolicyRule::Probabilistic { percentage: 50.0 })]);
        c.max_traces = max_traces;
        c.decision_wait_ms = wait;
        let t = tenant();
        let mut s = Sampler::default();
        let mut now = 0u64;
        let (mut spans_in, mut kept, mut out_dropped) = (0usize, 0usize, 0usize);
        for (trace, idx, is_root, dt, is_tick) in ops {
            now += dt;
            let mut out = Output::default();
            if is_tick {
                s.tick(now, |_| Some(&c), &mut out);
            } else {
                s.add(&t, &c, vec![rs("api", vec![span(trace, idx, is_root, 0, 1, trace % 5 == 0)])], now, &mut out);
                spans_in += 1;
            }
            kept += out.kept.iter().map(|(_, v)| v.iter().map(|r| r.scope_spans.iter().map(|ss| ss.spans.len()).sum::<usize>()).sum::<usize>()).sum::<usize>();
            out_dropped += out.decisions.iter().filter(|(_, v, _)| !matches!(v, Verdict::Kept(_))).map(|(_, _, n)| *n).sum::<usize>();
            out_dropped += out.late_dropped.iter().map(|(_, n)| *n).sum::<usize>();
            prop_assert!(s.open_traces("team-a") as u64 <= max_traces);
            prop_assert!(s.remembered_decisions("team-a") as u64 <= max_traces);
        }
        let mut out = Output::default();
        s.flush(|_| Some(&c), &mut out);
        kept += out.kept.iter().map(|(_, v)| v.iter().map(|r| r.scope_spans.iter().map(|ss| ss.spans.len()).sum::<usize>()).sum::<usize>()).sum::<usize>();
        out_dropped += out.decisions.iter().filter(|(_, v, _)| !matches!(v, Verdict::Kept(_))).map(|(_, _, n)| *n).sum::<usize>();
        prop_assert_eq!(s.open_traces("team-a"), 0);
        prop_assert_eq!(kept + out_dropped, spans_in);
    }
}

#[tokio::test]
async fn gateway_samples_per_tenant_and_counts_what_it_drops() {
    let tempo = fakes::tempo().await;
    let mut sampled = common::tenant("team-a", &["shop"], false);
    sampled.sampling = Sampling {
        decision_wait_ms: 100,
        max_traces: 1000,
        max_spans_per_second: None,
        policies: vec![policy("errors", PolicyRule::Errors)],
        service_overrides: BTreeMap::new(),
    };
    let unsampled: TenantSpec = common::tenant("team-b", &["billing"], false);
    let gw = start_gateway(&[sampled, unsampled], None, |s| {
        s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
    })
    .await;
    let mut ok_trace = rs(
        "api",
        vec![
            span(1, 0, true, 0, 1, false),
            span(1, 1, false, 0, 1, false),
        ],
    );
    let err_trace = rs("api", vec![span(2, 0, true, 0, 1, true)]);
    let mut billing = rs("api", vec![span(3, 0, true, 0, 1, false)]);
    billing.resource = Some(resource(Some("billing"), "api"));
    for s in ok_trace.scope_spans[0].spans.iter_mut() {
        s.attributes.push(kv("test.origin", "ok"));
    }
    let body = ExportTraceServiceRequest {
        resource_spans: vec![ok_trace, err_trace, billing],
    }
    .encode_to_vec();
    let r = reqwest::Client::new()
        .post(gw.http_url("/v1/traces"))
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(5), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            >= 2)
        .await
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let seen = spans_seen(&tempo.state.received());
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.iter().all(|(_, _, origin)| origin != "ok"));
    assert!(
        seen.iter().any(|(t, _, _)| t == "team-b"),
        "unsampled tenant passes through"
    );
    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_sampled_out_spans_total",
            &["tenant=\"team-a\""]
        ),
        2.0,
        "{text}"
    );
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_sampling_decisions_total",
            &["decision=\"errors\""]
        ),
        1.0,
        "{text}"
    );
}
