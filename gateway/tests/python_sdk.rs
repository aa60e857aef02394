//! The OpenTelemetry Python SDK (a client no one here wrote) sends to the gateway
//! over gRPC and over HTTP; the strict fakes see the data under the right tenant.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::fakes::{self, parse_labels};
use common::otlp::attr;
use common::procs::run_python;
use common::{eventually, start_gateway, tenant, token_of};

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/send_otlp.py")
}

async fn sdk_traces_and_logs_arrive(protocol: &str) {
    let tempo = fakes::tempo().await;
    let loki = fakes::loki().await;
    let gw = start_gateway(
        &[
            tenant("team-a", &["shop"], true),
            tenant("team-b", &["billing"], false),
        ],
        None,
        |s| {
            s.tempo_url = Some(format!("http://{}/v1/traces", tempo.addr));
            s.loki_url = Some(format!("http://{}/loki/api/v1/push", loki.addr));
        },
    )
    .await;
    let endpoint = match protocol {
        "grpc" => gw.gw().grpc_addr().to_string(),
        _ => format!("http://{}", gw.gw().http_addr()),
    };
    let run_id = format!("{protocol}-run");
    // Anonymous client in billing; token client of team-a that claims billing too.
    let base = |ns: &str| {
        vec![
            ("PROTOCOL", protocol.to_string()),
            ("ENDPOINT", endpoint.clone()),
            ("NAMESPACE", ns.to_string()),
            ("SIGNALS", "traces,logs".to_string()),
            ("RUN_ID", run_id.clone()),
        ]
    };
    let out = run_python(&script(), &base("billing")).await;
    assert!(out.contains("traces: SpanExportResult.SUCCESS 6"), "{out}");
    let mut with_token = base("billing");
    with_token.push(("TOKEN", token_of("team-a")));
    run_python(&script(), &with_token).await;

    let spans = || {
        tempo
            .state
            .received()
            .into_iter()
            .flat_map(|(t, r)| r.resource_spans.into_iter().map(move |rs| (t.clone(), rs)))
            .flat_map(|(t, rs)| {
                rs.scope_spans.into_iter().flat_map(move |ss| {
                    ss.spans.into_iter().map({
                        let t = t.clone();
                        move |s| (t.clone(), s)
                    })
                })
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), async || spans().len() >= 12).await,
        "{}",
        spans().len()
    );
    let spans = spans();
    assert_eq!(spans.len(), 12);
    assert_eq!(spans.iter().filter(|(t, _)| t == "team-b").count(), 6);
    assert_eq!(spans.iter().filter(|(t, _)| t == "team-a").count(), 6);
    assert!(
        spans
            .iter()
            .all(|(_, s)| attr(&s.attributes, "test.run").as_deref() == Some(run_id.as_str()))
    );
    // Parent/child structure survives: 3 roots per client.
    assert_eq!(
        spans
            .iter()
            .filter(|(_, s)| s.parent_span_id.is_empty())
            .count(),
        6
    );

    let entries = || {
        loki.state
            .received()
            .into_iter()
            .flat_map(|(t, r)| r.streams.into_iter().map(move |s| (t.clone(), s)))
            .flat_map(|(t, s)| {
                let labels = parse_labels(&s.labels).unwrap();
                s.entries
                    .into_iter()
                    .map(move |e| (t.clone(), labels.clone(), e))
            })
            .collect::<Vec<_>>()
    };
    assert!(
        eventually(Duration::from_secs(10), async || entries().len() >= 8).await,
        "{}",
        entries().len()
    );
    let entries = entries();
    assert_eq!(entries.len(), 8);
    for (t, labels, e) in &entries {
        assert!(t == "team-a" || t == "team-b");
        assert!(
            e.line.starts_with("order ") && e.line.ends_with(&run_id),
            "{:?}",
            e.line
        );
        assert!(
            labels.contains(&("service_name".into(), "py-svc".into())),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("k8s_namespace_name".into(), "billing".into())),
            "{labels:?}"
        );
        assert!(
            labels.contains(&("k8s_pod_name".into(), "py-pod-0".into())),
            "{labels:?}"
        );
        assert!(
            e.structured_metadata
                .iter()
                .any(|m| m.name == "deployment_environment" && m.value == "test"),
            "{:?}",
            e.structured_metadata
        );
        assert!(
            e.structured_metadata
                .iter()
                .any(|m| m.name == "severity_text" && m.value == "INFO")
        );
    }
    assert_eq!(entries.iter().filter(|(t, _, _)| t == "team-a").count(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_grpc() {
    sdk_traces_and_logs_arrive("grpc").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_over_http() {
    sdk_traces_and_logs_arrive("http").await;
}
