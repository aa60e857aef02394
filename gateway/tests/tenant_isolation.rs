//! No item ever reaches another tenant: mixed-namespace batches from several
//! concurrent clients, plus a token-holding client trying to write into another
//! tenant in every way a client can (namespace attribute, `X-Scope-OrgID`, a
//! guessed token).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::time::Duration;

use common::fakes::{self, parse_labels};
use common::otlp::{logs_from, spans_from, spans_seen};
use common::{eventually, metric_value, start_gateway, tenant, token_of};
use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use prost::Message;

/// Which tenant owns a namespace in this test's table.
fn owner(ns: &str) -> &'static str {
    match ns {
        "shop" => "team-a",
        ns if ns.starts_with("shop-") => "team-a",
        "billing" => "team-b",
        ns if ns.starts_with("infra-") => "team-c",
        _ => "none",
    }
}

const NAMESPACES: [&str; 5] = ["shop", "billing", "infra-1", "shop-eu", "infra-2"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_item_reaches_another_tenant() {
    let tempo = fakes::tempo().await;
    let loki = fakes::loki().await;
    let gw = start_gateway(
        &[
            tenant("team-a", &["shop", "shop-*"], true),
            tenant("team-b", &["billing"], true),
            tenant("team-c", &["infra-*"], false),
        ],
        None,
        |s| {
            s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
            s.loki_url = Some(format!("http://{}/loki/api/v1/push", loki.addr));
        },
    )
    .await;

    // Anonymous agents (routed by namespace), four at once over gRPC, each request
    // mixing all namespaces.
    let mut agents = Vec::new();
    for agent in 0..4u64 {
        let url = gw.grpc_url();
        agents.push(tokio::spawn(async move {
            let mut c = TraceServiceClient::connect(url).await.unwrap();
            for round in 0..10u64 {
                let items = NAMESPACES
                    .iter()
                    .enumerate()
                    .map(|(i, ns)| {
                        spans_from(
                            Some(ns),
                            "agent",
                            agent * 1_000_000 + round * 1000 + i as u64 * 10,
                            3,
                        )
                    })
                    .collect();
                c.export(ExportTraceServiceRequest {
                    resource_spans: items,
                })
                .await
                .unwrap();
            }
        }));
    }
    for a in agents {
        a.await.unwrap();
    }

    let http = reqwest::Client::new();
    let post_traces = |body: Vec<u8>, token: Option<String>, org: Option<&'static str>| {
        let mut r = http
            .post(gw.http_url("/v1/traces"))
            .header("content-type", "application/x-protobuf")
            .body(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(o) = org {
            r = r.header("X-Scope-OrgID", o);
        }
        r.send()
    };

    // team-a's app claims to be in team-b's namespace: its data stays team-a's.
    let attack = ExportTraceServiceRequest {
        resource_spans: vec![
            spans_from(Some("billing"), "attacker", 50_000_000, 5),
            spans_from(Some("shop"), "attacker", 60_000_000, 2),
        ],
    };
    let r = post_traces(attack.encode_to_vec(), Some(token_of("team-a")), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Naming team-b in the header with team-a's token, or with no token: refused.
    let r = post_traces(
        attack.encode_to_vec(),
        Some(token_of("team-a")),
        Some("team-b"),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 403);
    let r = post_traces(attack.encode_to_vec(), None, Some("team-b"))
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    // A guessed token: refused.
    let r = post_traces(attack.encode_to_vec(), Some("token-team-b".into()), None)
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // The same over gRPC metadata.
    let mut c = TraceServiceClient::connect(gw.grpc_url()).await.unwrap();
    let mut req = tonic::Request::new(attack.clone());
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token_of("team-a")).parse().unwrap(),
    );
    req.metadata_mut()
        .insert("x-scope-orgid", "team-b".parse().unwrap());
    assert_eq!(
        c.export(req).await.unwrap_err().code(),
        tonic::Code::PermissionDenied
    );

    // Logs: a mixed batch from an agent and the same attack.
    let logs = ExportLogsServiceRequest {
        resource_logs: NAMESPACES
            .iter()
            .map(|ns| logs_from(Some(ns), "svc", &["agent-line"]))
            .collect(),
    };
    let r = http
        .post(gw.http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .body(logs.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let attack_logs = ExportLogsServiceRequest {
        resource_logs: vec![logs_from(Some("billing"), "evil", &["attacker-line"])],
    };
    let r = http
        .post(gw.http_url("/v1/logs"))
        .header("content-type", "application/x-protobuf")
        .bearer_auth(token_of("team-a"))
        .body(attack_logs.encode_to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    let expected_spans = 4 * 10 * NAMESPACES.len() * 3 + 7;
    assert!(
        eventually(Duration::from_secs(10), async || spans_seen(
            &tempo.state.received()
        )
        .len()
            >= expected_spans)
        .await,
        "got {} of {expected_spans} spans",
        spans_seen(&tempo.state.received()).len()
    );
    let seen = spans_seen(&tempo.state.received());
    assert_eq!(seen.len(), expected_spans, "duplicates or extras");
    let mut wrong = Vec::new();
    for (t, ns, origin) in &seen {
        let allowed = match origin.as_str() {
            "agent" => owner(ns),
            "attacker" => "team-a",
            _ => "none",
        };
        if t != allowed {
            wrong.push((t.clone(), ns.clone(), origin.clone()));
        }
    }
    assert!(wrong.is_empty(), "items in the wrong tenant: {wrong:?}");
    assert_eq!(
        seen.iter()
            .filter(|(t, _, o)| t == "team-b" && o == "attacker")
            .count(),
        0
    );

    assert!(
        eventually(Duration::from_secs(10), async || {
            loki.state
                .received()
                .iter()
                .map(|(_, r)| r.streams.iter().map(|s| s.entries.len()).sum::<usize>())
                .sum::<usize>()
                >= 6
        })
        .await
    );
    let mut lines = Vec::new();
    for (t, req) in loki.state.received() {
        for st in &req.streams {
            let labels = parse_labels(&st.labels).unwrap();
            let ns = labels
                .iter()
                .find(|(k, _)| k == "k8s_namespace_name")
                .map(|(_, v)| v.clone())
                .unwrap();
            for e in &st.entries {
                lines.push((t.clone(), ns.clone(), e.line.clone()));
            }
        }
    }
    assert_eq!(lines.len(), 6, "{lines:?}");
    for (t, ns, line) in &lines {
        let allowed = if line == "attacker-line" {
            "team-a"
        } else {
            owner(ns)
        };
        assert_eq!(t, allowed, "log line {line:?} from {ns} landed in {t}");
    }

    let text = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &text,
            "mop_gateway_retagged_items_total",
            &["tenant=\"team-a\"", "signal=\"Traces\""]
        ),
        5.0,
        "{text}"
    );
    assert!(
        metric_value(
            &text,
            "mop_gateway_rejected_items_total",
            &["reason=\"Forbidden\""]
        ) >= 14.0
    );
}
