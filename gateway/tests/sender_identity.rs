//! Adversarial tests of sender identity, with real processes: the `mop-gateway`
//! binary verifies senders against the Kubernetes fake (pod watch, TokenReview,
//! the gateway authenticating with its own ServiceAccount token), and the Tempo
//! fake shows which tenant (`X-Scope-OrgID`) every span landed in.
//!
//! Distinct source addresses come from binding clients to 127.0.0.x (Linux routes
//! all of 127/8 to lo); the HTTP listener is an IPv6 socket on the IPv4-mapped
//! loopback, so IPv4 clients arrive as `::ffff:127.0.0.x`, and the gRPC listener
//! is on `::1` for an IPv6 client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::otlp::{kv, spans_from, spans_seen};
use common::{eventually, fakes, metric_value, tenant, write_config};
use mop_gateway_config::Identity;
use mop_kube_fake::{FakeKube, PodSpec, TokenSpec};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use prost::Message;

use mop_test_support::Proc;

fn pod(ns: &str, name: &str, node: &str, ips: &[&str], host_network: bool) -> PodSpec {
    PodSpec {
        namespace: ns.into(),
        name: name.into(),
        node: node.into(),
        ips: ips.iter().map(|s| s.to_string()).collect(),
        host_network,
    }
}

fn token(sa_ns: &str, sa: &str, pod: &str, node: &str, aud: &str, valid: Duration) -> TokenSpec {
    TokenSpec {
        namespace: sa_ns.into(),
        service_account: sa.into(),
        audiences: vec![aud.into()],
        pod: Some(pod.into()),
        node: Some(node.into()),
        valid_for: valid,
    }
}

/// A resource with `k8s.pod.name`, as the agent reports it.
fn agent_spans(ns: &str, pod: &str, origin: &str, first: u64, n: u64) -> ResourceSpans {
    let mut rs = spans_from(Some(ns), origin, first, n);
    rs.resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("k8s.pod.name", pod));
    rs
}

struct Setup {
    kube: FakeKube,
    tempo: fakes::Fake<ExportTraceServiceRequest>,
    loki: fakes::Fake<fakes::logproto::PushRequest>,
    mimir: fakes::Fake<
        opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest,
    >,
    _gw: Proc,
    http: String,
    grpc: String,
    admin: String,
    _dir: tempfile::TempDir,
}

impl Setup {
    async fn start() -> Setup {
        // The gateway authenticates as its ServiceAccount, allowed only what the
        // syncer renders for it.
        let kube = FakeKube::start().await.unwrap();
        let gateway_token = common::kube::gateway_service_account(&kube, "mop-system");
        // Node a: the agent, a shop pod, an IPv6 shop pod, a billing host-network pod.
        // Node b: a billing pod.
        kube.run_pod(pod(
            "mop-system",
            "mop-agent-a",
            "node-a",
            &["127.0.0.20"],
            false,
        ))
        .unwrap();
        kube.run_pod(pod("shop", "web", "node-a", &["127.0.0.11"], false))
            .unwrap();
        kube.run_pod(pod("shop", "web-v6", "node-a", &["::1"], false))
            .unwrap();
        kube.run_pod(pod(
            "billing",
            "node-agent",
            "node-a",
            &["127.0.0.13"],
            true,
        ))
        .unwrap();
        kube.run_pod(pod("billing", "api", "node-b", &["127.0.0.12"], false))
            .unwrap();
        kube.run_pod(pod("billing", "old", "node-b", &["127.0.0.14"], false))
            .unwrap();

        let tempo = fakes::tempo().await;
        let loki = fakes::loki().await;
        let mimir = fakes::mimir_otlp().await;
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = write_config(
            dir.path(),
            &[
                tenant("team-a", &["shop"], false),
                tenant("team-b", &["billing"], false),
                tenant("platform", &["mop-system"], false),
            ],
            Some("platform"),
        );
        cfg.identity = Identity {
            token_review_ttl_ms: 300,
            ..Identity::default()
        };
        let path = dir.path().join("gateway.json");
        std::fs::write(&path, serde_json::to_vec(&cfg).unwrap()).unwrap();
        let token_file = dir.path().join("sa-token");
        std::fs::write(&token_file, &gateway_token).unwrap();
        let (http, grpc, admin) = (
            free_port("127.0.0.1"),
            free_port("::1"),
            free_port("127.0.0.1"),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_mop-gateway"))
            .arg(format!("--config={}", path.display()))
            .arg(format!("--http-listen=[::ffff:127.0.0.1]:{http}"))
            .arg(format!("--grpc-listen=[::1]:{grpc}"))
            .arg(format!("--admin-listen=127.0.0.1:{admin}"))
            .arg(format!("--tempo-url=http://{}/v1/traces", tempo.addr))
            .arg(format!("--loki-url=http://{}/loki/api/v1/push", loki.addr))
            .arg(format!(
                "--metrics-otlp-url=http://{}/otlp/v1/metrics",
                mimir.addr
            ))
            .arg(format!("--kubernetes={}", kube.url()))
            .arg(format!("--kubernetes-token-file={}", token_file.display()))
            .arg("--batch-timeout-ms=20")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let s = Setup {
            kube,
            tempo,
            loki,
            mimir,
            _gw: Proc::adopt(child),
            http: format!("http://127.0.0.1:{http}/v1/traces"),
            grpc: format!("http://[::1]:{grpc}"),
            admin: format!("http://127.0.0.1:{admin}"),
            _dir: dir,
        };
        let ready = format!("{}/readyz", s.admin);
        assert!(
            eventually(Duration::from_secs(20), async || {
                reqwest::get(&ready).await.is_ok_and(|r| r.status() == 200)
            })
            .await,
            "the gateway never became ready (pod index not loaded?)"
        );
        s
    }

    /// POSTs OTLP/HTTP from source address `from`; status and response.
    async fn post(
        &self,
        from: &str,
        bearer: Option<&str>,
        items: Vec<ResourceSpans>,
    ) -> (u16, Option<ExportTraceServiceResponse>) {
        let client = reqwest::Client::builder()
            .local_address(from.parse::<IpAddr>().unwrap())
            .build()
            .unwrap();
        let mut req = client
            .post(&self.http)
            .header("content-type", "application/x-protobuf")
            .body(
                ExportTraceServiceRequest {
                    resource_spans: items,
                }
                .encode_to_vec(),
            );
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.bytes().await.unwrap();
        (
            status,
            (status == 200).then(|| ExportTraceServiceResponse::decode(&body[..]).unwrap()),
        )
    }

    async fn metrics(&self) -> String {
        reqwest::get(format!("{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn rejected(&self, reason: &str) -> f64 {
        metric_value(
            &self.metrics().await,
            "mop_gateway_rejected_items_total",
            &[&format!("reason=\"{reason}\"")],
        )
    }

    /// Waits until Tempo holds `n` spans of `origin`, then returns their tenants
    /// and namespaces.
    async fn landed(&self, origin: &str, n: usize) -> Vec<(String, String)> {
        let seen = async || {
            spans_seen(&self.tempo.state.received())
                .into_iter()
                .filter(|(_, _, o)| o == origin)
                .map(|(t, ns, _)| (t, ns))
                .collect::<Vec<_>>()
        };
        assert!(
            eventually(Duration::from_secs(10), async || seen().await.len() >= n).await,
            "{origin}: expected {n} spans at Tempo, got {:?}",
            seen().await
        );
        seen().await
    }
}

fn free_port(host: &str) -> u16 {
    std::net::TcpListener::bind((host, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn partial(resp: &Option<ExportTraceServiceResponse>) -> i64 {
    resp.as_ref()
        .and_then(|r| r.partial_success.as_ref())
        .map_or(0, |p| p.rejected_spans)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_senders_are_their_pods_namespace_whatever_they_claim() {
    let s = Setup::start().await;

    // A pod of shop forges billing, in a mixed batch: everything is shop's.
    let (code, resp) = s
        .post(
            "127.0.0.11",
            None,
            vec![
                spans_from(Some("billing"), "forged", 1, 3),
                spans_from(Some("shop"), "forged", 10, 2),
                spans_from(None, "forged", 20, 1),
            ],
        )
        .await;
    assert_eq!((code, partial(&resp)), (200, 0));
    let landed = s.landed("forged", 6).await;
    assert_eq!(landed.len(), 6);
    assert!(
        landed.iter().all(|(t, ns)| t == "team-a" && ns == "shop"),
        "{landed:?}"
    );
    let m = s.metrics().await;
    assert_eq!(
        metric_value(
            &m,
            "mop_gateway_retagged_items_total",
            &["tenant=\"team-a\""]
        ),
        3.0
    );

    // IPv6: the pod at ::1 (gRPC listener) is shop's too.
    let mut c = TraceServiceClient::connect(s.grpc.clone()).await.unwrap();
    c.export(ExportTraceServiceRequest {
        resource_spans: vec![spans_from(Some("billing"), "forged-v6", 30, 2)],
    })
    .await
    .unwrap();
    let landed = s.landed("forged-v6", 2).await;
    assert!(
        landed.iter().all(|(t, ns)| t == "team-a" && ns == "shop"),
        "{landed:?}"
    );

    // A host-network pod's address is the node's: not attributable, refused.
    let (code, _) = s
        .post(
            "127.0.0.13",
            None,
            vec![spans_from(Some("billing"), "hostnet", 40, 4)],
        )
        .await;
    assert_eq!(code, 403);
    // No pod at all, and naming a tenant without its token.
    let (code, _) = s
        .post(
            "127.0.0.99",
            None,
            vec![spans_from(Some("billing"), "stranger", 50, 5)],
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(s.rejected("UnknownSource").await, 9.0);

    // An address reused after its pod is deleted: the new pod's, in either order.
    // Delete, then a new pod of billing at 127.0.0.11.
    s.kube.delete_pod("shop", "web").unwrap();
    s.kube
        .run_pod(pod("billing", "web2", "node-b", &["127.0.0.11"], false))
        .unwrap();
    // The new pod of shop at 127.0.0.14 appears before the old billing holder's
    // (late) deletion.
    s.kube
        .run_pod(pod("shop", "reuse", "node-a", &["127.0.0.14"], false))
        .unwrap();
    s.kube.delete_pod("billing", "old").unwrap();
    // Until the gateway's pod watch has delivered the move, the address is still
    // shop/web's: a request sent in that window (milliseconds; an IP-based
    // identity always has it) is shop's. So wait until the move is seen, with
    // requests of their own origin, and then check what the address sends.
    assert!(
        eventually(Duration::from_secs(10), async || {
            s.post(
                "127.0.0.11",
                None,
                vec![spans_from(Some("shop"), "wait-11", 60, 1)],
            )
            .await
            .0 == 200
                && s.landed("wait-11", 1)
                    .await
                    .iter()
                    .any(|(t, _)| t == "team-b")
        })
        .await
    );
    let (code, _) = s
        .post(
            "127.0.0.11",
            None,
            vec![spans_from(Some("shop"), "probe-11", 65, 3)],
        )
        .await;
    assert_eq!(code, 200);
    let (code, _) = s
        .post(
            "127.0.0.14",
            None,
            vec![spans_from(Some("billing"), "reused-14", 70, 3)],
        )
        .await;
    assert_eq!(code, 200);
    let landed = s.landed("reused-14", 3).await;
    assert!(
        landed.iter().all(|(t, ns)| t == "team-a" && ns == "shop"),
        "{landed:?}"
    );
    let probes = s.landed("probe-11", 3).await;
    assert!(
        probes
            .iter()
            .all(|(t, ns)| t == "team-b" && ns == "billing"),
        "once the address moved, nothing from it is shop's: {probes:?}"
    );

    // Whatever was sent, nothing of billing's origin reached billing's tenant
    // except through the reused address (after the move; while the gateway
    // waited to see it, either is right).
    for (tenant, ns, origin) in spans_seen(&s.tempo.state.received()) {
        let expected = match origin.as_str() {
            "probe-11" => "team-b",
            "wait-11" => continue,
            _ => "team-a",
        };
        assert_eq!(tenant, expected, "{origin} from namespace {ns}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_are_verified_by_token_review_and_limited_to_their_node() {
    let s = Setup::start().await;
    let agent = s
        .kube
        .issue_token(token(
            "mop-system",
            "mop-agent",
            "mop-agent-a",
            "node-a",
            "mop-gateway",
            Duration::from_secs(3600),
        ))
        .unwrap();

    // A mixed batch: shop/web is on node-a; billing/api is on node-b; billing has
    // only a host-network pod on node-a, which the agent may report for.
    let (code, resp) = s
        .post(
            "127.0.0.20",
            Some(&agent),
            vec![
                agent_spans("shop", "web", "agent-ok", 1, 4),
                agent_spans("billing", "api", "agent-foreign", 10, 3),
                spans_from(Some("billing"), "agent-ns-on-node", 20, 2),
                agent_spans("shop", "not-a-pod", "agent-foreign", 30, 1),
            ],
        )
        .await;
    assert_eq!((code, partial(&resp)), (200, 4));
    let ok = s.landed("agent-ok", 4).await;
    assert!(ok.iter().all(|(t, _)| t == "team-a"), "{ok:?}");
    let on_node = s.landed("agent-ns-on-node", 2).await;
    assert!(on_node.iter().all(|(t, _)| t == "team-b"), "{on_node:?}");
    assert_eq!(s.rejected("NotOnAgentNode").await, 4.0);
    // From another source address, the same token is the same agent (the token,
    // not the address, identifies it).
    let (code, _) = s
        .post(
            "127.0.0.77",
            Some(&agent),
            vec![agent_spans("shop", "web", "agent-ok-2", 40, 1)],
        )
        .await;
    assert_eq!(code, 200);
    s.landed("agent-ok-2", 1).await;
    let reviews = s.kube.token_reviews();
    assert!(reviews >= 1);

    // The wrong audience, an expired token, a made-up one: 401.
    s.kube
        .run_pod(pod(
            "mop-system",
            "mop-agent-b",
            "node-b",
            &["127.0.0.21"],
            false,
        ))
        .unwrap();
    let vault = s
        .kube
        .issue_token(token(
            "mop-system",
            "mop-agent",
            "mop-agent-a",
            "node-a",
            "vault",
            Duration::from_secs(3600),
        ))
        .unwrap();
    let expired = s
        .kube
        .issue_token(token(
            "mop-system",
            "mop-agent",
            "mop-agent-a",
            "node-a",
            "mop-gateway",
            Duration::ZERO,
        ))
        .unwrap();
    for bad in [
        vault.as_str(),
        expired.as_str(),
        "eyJhbGciOiJSUzI1NiJ9.e30.forged",
    ] {
        let (code, _) = s
            .post(
                "127.0.0.20",
                Some(bad),
                vec![agent_spans("shop", "web", "bad-token", 50, 2)],
            )
            .await;
        assert_eq!(code, 401, "{bad}");
    }
    assert_eq!(s.rejected("Unauthenticated").await, 6.0);

    // Another ServiceAccount's valid token (a tenant pod's): not an agent.
    let tenant_sa = s
        .kube
        .issue_token(token(
            "shop",
            "default",
            "web",
            "node-a",
            "mop-gateway",
            Duration::from_secs(3600),
        ))
        .unwrap();
    let (code, _) = s
        .post(
            "127.0.0.11",
            Some(&tenant_sa),
            vec![agent_spans("billing", "api", "not-agent", 60, 3)],
        )
        .await;
    assert_eq!(code, 403);
    assert_eq!(s.rejected("NotAgent").await, 3.0);

    // Naming a tenant with X-Scope-OrgID is refused for agents too.
    let client = reqwest::Client::new();
    let code = client
        .post(&s.http)
        .bearer_auth(&agent)
        .header("x-scope-orgid", "team-b")
        .header("content-type", "application/x-protobuf")
        .body(
            ExportTraceServiceRequest {
                resource_spans: vec![agent_spans("billing", "api", "orgid", 70, 1)],
            }
            .encode_to_vec(),
        )
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(code, 403);

    // Revoked: refused once the cached answer (300 ms here) expires; what it sent
    // until then is still the agent's own node's data. A rotated token is reviewed
    // afresh and accepted.
    s.kube.revoke_token(&agent);
    assert!(
        eventually(Duration::from_secs(5), async || {
            s.post(
                "127.0.0.20",
                Some(&agent),
                vec![agent_spans("shop", "web", "after-revoke", 80, 1)],
            )
            .await
            .0 == 401
        })
        .await
    );
    let rotated = s
        .kube
        .issue_token(token(
            "mop-system",
            "mop-agent",
            "mop-agent-a",
            "node-a",
            "mop-gateway",
            Duration::from_secs(3600),
        ))
        .unwrap();
    let (code, _) = s
        .post(
            "127.0.0.20",
            Some(&rotated),
            vec![agent_spans("shop", "web", "rotated", 90, 2)],
        )
        .await;
    assert_eq!(code, 200);
    s.landed("rotated", 2).await;

    // The agent on node-b cannot write for node-a's pods.
    let agent_b = s
        .kube
        .issue_token(token(
            "mop-system",
            "mop-agent",
            "mop-agent-b",
            "node-b",
            "mop-gateway",
            Duration::from_secs(3600),
        ))
        .unwrap();
    let (code, _) = s
        .post(
            "127.0.0.21",
            Some(&agent_b),
            vec![agent_spans("shop", "web", "b-for-a", 100, 5)],
        )
        .await;
    assert_eq!(code, 400, "all items refused");
    assert_eq!(s.rejected("NotOnAgentNode").await, 9.0);

    // Zero items in the wrong tenant.
    for (tenant, ns, origin) in spans_seen(&s.tempo.state.received()) {
        let owner = match ns.as_str() {
            "shop" => "team-a",
            "billing" => "team-b",
            _ => "platform",
        };
        assert_eq!(tenant, owner, "{origin}");
        assert!(
            ![
                "agent-foreign",
                "bad-token",
                "not-agent",
                "orgid",
                "b-for-a"
            ]
            .contains(&origin.as_str()),
            "{origin} must have been refused"
        );
    }
    // The gateway authenticated to the API server with its own token.
    assert!(s.kube.requests().iter().all(|r| r.status != 401));
}

/// Logs and metrics take the same verified path as spans: an anonymous pod of
/// `shop` claiming `billing` lands in team-a's Loki and Mimir tenants, never in
/// team-b's, and the claim is counted as retagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_namespaces_in_logs_and_metrics_land_in_the_senders_tenant() {
    use opentelemetry_proto::tonic::collector::logs::v1::ExportLogsServiceRequest;
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
    };
    let s = Setup::start().await;
    let base = s.http.trim_end_matches("/v1/traces").to_string();
    let client = reqwest::Client::builder()
        .local_address("127.0.0.11".parse::<IpAddr>().unwrap())
        .build()
        .unwrap();
    let post = async |path: &str, body: Vec<u8>| {
        client
            .post(format!("{base}{path}"))
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };

    let logs = ExportLogsServiceRequest {
        resource_logs: vec![
            common::otlp::logs_from(Some("billing"), "web", &["forged-log-1", "forged-log-2"]),
            common::otlp::logs_from(None, "web", &["unlabelled-log"]),
        ],
    };
    assert_eq!(post("/v1/logs", logs.encode_to_vec()).await, 200);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let metrics = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(common::otlp::resource(Some("billing"), "web")),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "forged_gauge".into(),
                    data: Some(metric::Data::Gauge(Gauge {
                        data_points: vec![NumberDataPoint {
                            time_unix_nano: now,
                            value: Some(number_data_point::Value::AsDouble(1.0)),
                            ..Default::default()
                        }],
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    assert_eq!(post("/v1/metrics", metrics.encode_to_vec()).await, 200);

    assert!(
        eventually(Duration::from_secs(10), async || {
            let lines: usize = s
                .loki
                .state
                .received()
                .iter()
                .flat_map(|(_, r)| &r.streams)
                .map(|st| st.entries.len())
                .sum();
            lines >= 3 && !s.mimir.state.received().is_empty()
        })
        .await,
        "logs and metrics never arrived: loki {:?}, mimir {}",
        s.loki.state.received(),
        s.mimir.state.received().len()
    );
    for (tenant, req) in s.loki.state.received() {
        assert_eq!(tenant, "team-a", "{req:?}");
        for st in &req.streams {
            assert!(!st.labels.contains("billing"), "{}", st.labels);
        }
    }
    for (tenant, req) in s.mimir.state.received() {
        assert_eq!(tenant, "team-a", "{req:?}");
    }
    let m = s.metrics().await;
    let retagged = |signal: &str| {
        metric_value(
            &m,
            "mop_gateway_retagged_items_total",
            &[&format!("signal=\"{signal}\""), "tenant=\"team-a\""],
        )
    };
    assert_eq!(retagged("Logs"), 2.0, "{m}");
    assert_eq!(retagged("Metrics"), 1.0, "{m}");
}
