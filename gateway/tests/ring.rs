//! The trace ring with real `mop-gateway` processes on loopback: every kept trace
//! arrives complete at the Tempo fake and exactly once, although each trace's
//! spans are sent to different replicas; across membership changes (3→4, 4→3,
//! 3→2), with EndpointSlices from the Kubernetes fake, and with one replica
//! SIGKILLed (only the killed replica's own traces may be incomplete).
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::otlp::{kv, resource, trace_id};
use common::{eventually, fakes, metric_value, sampling, tenant, write_config};
use mop_gateway::ring::Ring;
use mop_gateway_config::{Policy, PolicyRule, RingConfig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, status};

/// One `mop-gateway` process; killed (SIGKILL) when dropped.
struct Replica {
    child: Option<Child>,
    grpc: String,
    http: String,
    admin: String,
    ring: String,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Replica {
    fn spawn(config: &Path, tempo: &str, extra: &[String]) -> Replica {
        let mut child = Command::new(env!("CARGO_BIN_EXE_mop-gateway"))
            .arg(format!("--config={}", config.display()))
            .args([
                "--grpc-listen=127.0.0.1:0",
                "--http-listen=127.0.0.1:0",
                "--admin-listen=127.0.0.1:0",
                "--ring-listen=127.0.0.1:0",
                "--reload-interval-ms=100",
                "--sampler-tick-ms=20",
                "--batch-timeout-ms=50",
                "--ring-unreachable-ms=500",
                "--retry-initial-ms=20",
            ])
            .arg(format!("--tempo-url=http://{tempo}/v1/traces"))
            .args(extra)
            .env("RUST_LOG", "warn,mop_gateway=info")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps draining the log so the process never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["fields"]["message"] == "mop-gateway started"
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(v["fields"].clone());
                }
                // Shown with the test's output when it fails.
                if v["level"] != "INFO" || v["fields"]["message"] == "ring membership changed" {
                    eprintln!("[replica {}] {line}", std::process::id());
                }
            }
        });
        let f = rx.recv_timeout(Duration::from_secs(20)).unwrap();
        Replica {
            child: Some(child),
            grpc: format!("http://{}", f["grpc"].as_str().unwrap()),
            http: f["http"].as_str().unwrap().to_string(),
            admin: f["admin"].as_str().unwrap().to_string(),
            ring: f["ring"].as_str().unwrap().to_string(),
        }
    }

    async fn metrics(&self) -> String {
        match reqwest::get(format!("http://{}/metrics", self.admin)).await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn members(&self) -> f64 {
        metric_value(&self.metrics().await, "mop_gateway_ring_members", &[])
    }

    fn sigkill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// SIGTERM, then wait for the clean exit (flushes everything).
    fn sigterm(&mut self) {
        if let Some(mut c) = self.child.take() {
            let ok = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status()
                .unwrap();
            assert!(ok.success());
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            let status = loop {
                if let Some(st) = c.try_wait().unwrap() {
                    break st;
                }
                if std::time::Instant::now() > deadline {
                    let _ = c.kill();
                    panic!("replica {} did not exit within 30 s of SIGTERM", self.ring);
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            assert!(status.success(), "replica exited with {status}");
        }
    }
}

const SPANS_PER_TRACE: u64 = 3;

/// What each trace is, by number: 10% errors (on a child span), 10% slow (the
/// root lasts 3 s), 10% gold customers (attribute on the last span); the other
/// 70% match no policy and must be dropped whole.
fn kind(n: u64) -> u64 {
    n % 10
}
fn expected_kept(n: u64) -> bool {
    kind(n) <= 2
}

fn span_of(n: u64, k: u64) -> Span {
    let start = 1_700_000_000_000_000_000 + n * 1_000;
    let dur = if k == 0 && kind(n) == 1 {
        3_000_000_000
    } else {
        1_000_000
    };
    let mut s = Span {
        trace_id: trace_id(n),
        span_id: (k + 1).to_be_bytes().to_vec(),
        parent_span_id: if k == 0 {
            vec![]
        } else {
            1u64.to_be_bytes().to_vec()
        },
        name: format!("op-{k}"),
        start_time_unix_nano: start,
        end_time_unix_nano: start + dur,
        status: Some(Status {
            code: if k == 1 && kind(n) == 0 {
                status::StatusCode::Error as i32
            } else {
                status::StatusCode::Ok as i32
            },
            message: String::new(),
        }),
        ..Default::default()
    };
    if k == 2 && kind(n) == 2 {
        s.attributes.push(kv("customer.tier", "gold"));
    }
    s
}

/// Sends span `k` of each trace in `traces` (with `k` in `ks`) to replica
/// `(n + k) % replicas.len()`: no trace has two spans on one replica (with 3 or
/// more replicas), the way agents on different nodes send a client and a server
/// span to different replicas.
/// Whole traces: children first, roots last, as SDKs export them (a root ends
/// last), so the sampler's early decision on a root sees the whole trace.
async fn send_whole(replicas: &[&Replica], traces: std::ops::Range<u64>) {
    send(replicas, traces.clone(), &[1, 2]).await;
    send(replicas, traces, &[0]).await;
}

async fn send(replicas: &[&Replica], traces: impl Iterator<Item = u64>, ks: &[u64]) {
    let mut per: Vec<BTreeMap<u64, Vec<Span>>> = vec![BTreeMap::new(); replicas.len()];
    for n in traces {
        for &k in ks {
            per[((n + k) % replicas.len() as u64) as usize]
                .entry(k)
                .or_default()
                .push(span_of(n, k));
        }
    }
    for (r, by_service) in replicas.iter().zip(per) {
        let mut client = TraceServiceClient::connect(r.grpc.clone()).await.unwrap();
        let mut rs: Vec<ResourceSpans> = Vec::new();
        for (k, spans) in by_service {
            for chunk in spans.chunks(300) {
                rs.push(ResourceSpans {
                    resource: Some(resource(Some("shop"), &format!("svc-{k}"))),
                    scope_spans: vec![ScopeSpans {
                        spans: chunk.to_vec(),
                        ..Default::default()
                    }],
                    ..Default::default()
                });
            }
        }
        for req in rs.chunks(4) {
            // Backpressure is part of the contract: retry RESOURCE_EXHAUSTED.
            loop {
                match client
                    .export(ExportTraceServiceRequest {
                        resource_spans: req.to_vec(),
                    })
                    .await
                {
                    Ok(_) => break,
                    Err(s) if s.code() == tonic::Code::ResourceExhausted => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(s) => panic!("export to {} failed: {s}", r.grpc),
                }
            }
        }
    }
}

/// Trace number → span index → copies received.
fn received(
    tempo: &fakes::Fake<ExportTraceServiceRequest>,
) -> HashMap<Vec<u8>, BTreeMap<u64, usize>> {
    let mut out: HashMap<Vec<u8>, BTreeMap<u64, usize>> = HashMap::new();
    for (tenant, req) in tempo.state.received() {
        assert_eq!(tenant, "team-a");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let k = u64::from_be_bytes(s.span_id[..].try_into().unwrap()) - 1;
                    *out.entry(s.trace_id).or_default().entry(k).or_default() += 1;
                }
            }
        }
    }
    out
}

struct Setup {
    dir: tempfile::TempDir,
    config: PathBuf,
    peers: PathBuf,
    secret: PathBuf,
    tempo: fakes::Fake<ExportTraceServiceRequest>,
}

async fn setup(decision_wait_ms: u64) -> Setup {
    let tempo = fakes::tempo().await;
    let dir = tempfile::tempdir().unwrap();
    let mut t = tenant("team-a", &["shop"], false);
    t.sampling = sampling(vec![
        Policy {
            name: "errors".into(),
            rule: PolicyRule::Errors,
        },
        Policy {
            name: "slow".into(),
            rule: PolicyRule::Latency { threshold_ms: 2000 },
        },
        Policy {
            name: "gold".into(),
            rule: PolicyRule::Attribute {
                key: "customer.tier".into(),
                values: vec!["gold".into()],
            },
        },
    ]);
    t.sampling.decision_wait_ms = decision_wait_ms;
    t.sampling.max_traces = 100_000;
    let mut cfg = write_config(dir.path(), &[t], None);
    cfg.ring = Some(RingConfig {
        service: "mop-gateway-peers".into(),
        port_name: "ring".into(),
    });
    let config = dir.path().join("gateway.json");
    std::fs::write(&config, serde_json::to_vec_pretty(&cfg).unwrap()).unwrap();
    let peers = dir.path().join("peers");
    std::fs::write(&peers, "").unwrap();
    let secret = dir.path().join("ring-secret");
    std::fs::write(&secret, "s3cr3t-ring-token\n").unwrap();
    Setup {
        dir,
        config,
        peers,
        secret,
        tempo,
    }
}

impl Setup {
    fn spawn_static(&self) -> Replica {
        Replica::spawn(
            &self.config,
            &self.tempo.addr.to_string(),
            &[
                format!("--peers-file={}", self.peers.display()),
                format!("--ring-secret-file={}", self.secret.display()),
            ],
        )
    }

    fn set_peers(&self, members: &[&Replica]) {
        let text: String = members.iter().map(|r| format!("{}\n", r.ring)).collect();
        // Replaced whole (rename), as a ConfigMap mount would.
        let tmp = self.dir.path().join("peers.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &self.peers).unwrap();
    }
}

async fn wait_members(replicas: &[&Replica], n: usize) {
    for r in replicas {
        assert!(
            eventually(Duration::from_secs(20), async || r.members().await
                == n as f64)
            .await,
            "replica {} never saw {n} members",
            r.ring
        );
    }
}

async fn sum_metric(replicas: &[&Replica], name: &str, labels: &[&str]) -> f64 {
    let mut total = 0.0;
    for r in replicas {
        total += metric_value(&r.metrics().await, name, labels);
    }
    total
}

/// Waits until Tempo holds `spans` spans and has been quiet for a while.
async fn settle(tempo: &fakes::Fake<ExportTraceServiceRequest>, spans: usize, timeout: Duration) {
    let count = || -> usize {
        received(tempo)
            .values()
            .map(|m| m.values().sum::<usize>())
            .sum()
    };
    let _ = eventually(timeout, async || count() >= spans).await;
    // Anything beyond (a duplicate, a dropped trace kept) would show up now.
    let mut last = count();
    loop {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let now = count();
        if now == last {
            break;
        }
        last = now;
    }
}

/// Every kept trace complete and once, exactly the expected traces kept (minus
/// `excused`, traces allowed to be incomplete or missing).
fn assert_complete(
    tempo: &fakes::Fake<ExportTraceServiceRequest>,
    traces: std::ops::Range<u64>,
    excused: &BTreeSet<u64>,
) -> usize {
    let got = received(tempo);
    let mut kept = 0;
    let mut problems = Vec::new();
    for n in traces {
        let spans = got.get(&trace_id(n));
        let duplicated = spans.is_some_and(|m| m.values().any(|c| *c > 1));
        if duplicated {
            problems.push(format!("trace {n}: duplicated spans {spans:?}"));
            continue;
        }
        if excused.contains(&n) {
            continue;
        }
        match (expected_kept(n), spans) {
            (true, Some(m)) if m.len() == SPANS_PER_TRACE as usize => kept += 1,
            (true, m) => problems.push(format!(
                "trace {n} (kind {}): kept incomplete or lost: {m:?}",
                kind(n)
            )),
            (false, None) => {}
            (false, Some(m)) => problems.push(format!("trace {n}: should be dropped, got {m:?}")),
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    kept
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn static_ring_keeps_10000_traces_whole_across_3_to_4_to_3_to_2() {
    let s = setup(4_000).await;
    let r0 = s.spawn_static();
    let r1 = s.spawn_static();
    let mut r2 = s.spawn_static();
    s.set_peers(&[&r0, &r1, &r2]);
    wait_members(&[&r0, &r1, &r2], 3).await;

    // Phase 1, 3 replicas: traces 0..4000 whole, and the children of 4000..5000,
    // whose roots come only after the ring grew (they straddle the change).
    send_whole(&[&r0, &r1, &r2], 0..4000).await;
    send(&[&r0, &r1, &r2], 4000..5000, &[1, 2]).await;
    // Let the forwarders deliver before membership moves (20 ms batches).
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3 → 4.
    let mut r3 = s.spawn_static();
    s.set_peers(&[&r0, &r1, &r2, &r3]);
    wait_members(&[&r0, &r1, &r2, &r3], 4).await;
    send(&[&r0, &r1, &r2, &r3], 4000..5000, &[0]).await;
    send_whole(&[&r0, &r1, &r2, &r3], 5000..7000).await;
    send(&[&r0, &r1, &r2, &r3], 7000..8000, &[1, 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 4 → 3: r3 leaves the ring first (it then owns nothing and hands its open
    // traces to their new owners), and only then stops.
    s.set_peers(&[&r0, &r1, &r2]);
    wait_members(&[&r0, &r1, &r2, &r3], 3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r3.sigterm();
    send(&[&r0, &r1, &r2], 7000..8000, &[0]).await;
    send(&[&r0, &r1, &r2], 8000..9000, &[1, 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 3 → 2.
    s.set_peers(&[&r0, &r1]);
    wait_members(&[&r0, &r1, &r2], 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r2.sigterm();
    send(&[&r0, &r1], 8000..9000, &[0]).await;
    send_whole(&[&r0, &r1], 9000..10_000).await;

    settle(
        &s.tempo,
        3000 * SPANS_PER_TRACE as usize,
        Duration::from_secs(90),
    )
    .await;
    let kept = assert_complete(&s.tempo, 0..10_000, &BTreeSet::new());
    assert_eq!(kept, 3000);

    let live = [&r0, &r1];
    let orphaned = sum_metric(&live, "mop_gateway_ring_orphaned_spans_total", &[]).await;
    assert_eq!(orphaned, 0.0, "no owner was ever unreachable");
    let forwarded = sum_metric(&live, "mop_gateway_ring_forwarded_spans_total", &[]).await;
    let handed = sum_metric(&live, "mop_gateway_ring_handed_off_spans_total", &[]).await;
    assert!(forwarded > 0.0, "spans were forwarded");
    eprintln!("forwarded by the two survivors: {forwarded}, handed off: {handed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_replica_loses_only_its_own_traces_and_counts_orphans() {
    let s = setup(3_000).await;
    let r0 = s.spawn_static();
    let r1 = s.spawn_static();
    let mut r2 = s.spawn_static();
    s.set_peers(&[&r0, &r1, &r2]);
    wait_members(&[&r0, &r1, &r2], 3).await;
    let ring = Ring::new([r0.ring.as_str(), r1.ring.as_str(), r2.ring.as_str()]);
    let victim = r2.ring.clone();

    // Traces 0..2000 whole; children of 2000..3000, whose roots end after the kill.
    send_whole(&[&r0, &r1, &r2], 0..2000).await;
    send(&[&r0, &r1, &r2], 2000..3000, &[1, 2]).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    r2.sigkill();
    // The peers file still names the dead replica (nobody told the survivors):
    // they must find it unreachable by themselves.
    send(&[&r0, &r1], 2000..3000, &[0]).await;
    send_whole(&[&r0, &r1], 3000..4000).await;

    // Excused: traces the dead replica owned that had spans before the kill (held
    // in its memory, gone with it). Everything else is complete and once.
    let owned_by_victim = |n: u64| {
        let id: [u8; 16] = trace_id(n)[..].try_into().unwrap();
        ring.owner(&id).unwrap().addr() == victim
    };
    let excused: BTreeSet<u64> = (0..3000).filter(|n| owned_by_victim(*n)).collect();
    let expected = (0..4000)
        .filter(|n| expected_kept(*n) && !excused.contains(n))
        .count();
    // Wait for all of them: the dead owner's traces are decided last (after
    // `--ring-unreachable-ms` of retries, then the decision wait), and a short
    // quiet spell before them must not end the wait.
    settle(
        &s.tempo,
        expected * SPANS_PER_TRACE as usize,
        Duration::from_secs(60),
    )
    .await;
    let kept = assert_complete(&s.tempo, 0..4000, &excused);
    assert_eq!(kept, expected);
    let orphaned = sum_metric(
        &[&r0, &r1],
        "mop_gateway_ring_orphaned_spans_total",
        &["reason=\"Unreachable\""],
    )
    .await;
    assert!(
        orphaned > 0.0,
        "the survivors counted the spans they could not forward"
    );
    eprintln!(
        "excused traces (owned by the killed replica): {}, kept complete: {kept}, orphaned spans: {orphaned}",
        excused.len()
    );
}

fn endpoint_slice(name: &str, ring: &str, ready: bool) -> serde_json::Value {
    let (ip, port) = ring.rsplit_once(':').unwrap();
    serde_json::json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "mop-system",
            "labels": {"kubernetes.io/service-name": "mop-gateway-peers", "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"},
        },
        "addressType": "IPv4",
        "ports": [{"name": "ring", "port": port.parse::<u16>().unwrap(), "protocol": "TCP"}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": ready, "serving": ready, "terminating": false}}],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpointslice_membership_from_the_kube_fake_is_readiness_gated() {
    let kube = mop_kube_fake::FakeKube::start().await.unwrap();
    kube.put(
        "test",
        serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "mop-system"}}),
    )
    .unwrap();
    // The replicas run as the gateway's ServiceAccount with the rules the syncer
    // renders for it: the fake enforces them.
    let gateway_token = common::kube::gateway_service_account(&kube, "mop-system");
    let s = setup(3_000).await;
    let token = s.dir.path().join("sa-token");
    std::fs::write(&token, &gateway_token).unwrap();
    let args = [
        format!("--kubernetes={}", kube.url()),
        format!("--kubernetes-token-file={}", token.display()),
        "--kubernetes-namespace=mop-system".to_string(),
        format!("--ring-secret-file={}", s.secret.display()),
    ];
    let tempo = s.tempo.addr.to_string();
    let r0 = Replica::spawn(&s.config, &tempo, &args);
    let r1 = Replica::spawn(&s.config, &tempo, &args);
    let r2 = Replica::spawn(&s.config, &tempo, &args);
    let all = [&r0, &r1, &r2];
    // r2 starts not Ready: it owns nothing and forwards everything.
    for (i, r) in all.iter().enumerate() {
        kube.put(
            "endpointslice-controller",
            endpoint_slice(&format!("mop-gateway-peers-{i}"), &r.ring, i != 2),
        )
        .unwrap();
    }
    wait_members(&all, 2).await;
    assert_eq!(
        metric_value(&r2.metrics().await, "mop_gateway_ring_owner", &[]),
        0.0
    );
    send_whole(&all, 0..1500).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    // r2 becomes Ready: a watch MODIFIED event.
    kube.put(
        "endpointslice-controller",
        endpoint_slice("mop-gateway-peers-2", &r2.ring, true),
    )
    .unwrap();
    wait_members(&all, 3).await;
    assert_eq!(
        metric_value(&r2.metrics().await, "mop_gateway_ring_owner", &[]),
        1.0
    );
    send_whole(&all, 1500..3000).await;

    settle(
        &s.tempo,
        900 * SPANS_PER_TRACE as usize,
        Duration::from_secs(60),
    )
    .await;
    let kept = assert_complete(&s.tempo, 0..3000, &BTreeSet::new());
    assert_eq!(kept, 900);
    // r2 forwarded everything while not Ready: none of phase 1 was decided there.
    let r2_received_from_peers = metric_value(
        &r2.metrics().await,
        "mop_gateway_ring_received_from_peer_spans_total",
        &[],
    );
    assert!(r2_received_from_peers > 0.0, "r2 owns traces once Ready");
    // Every EndpointSlice request came from the gateway's ServiceAccount and
    // was allowed by its Role alone.
    let slice_reqs = || {
        kube.requests()
            .into_iter()
            .filter(|r| r.path.contains("endpointslices"))
            .collect::<Vec<_>>()
    };
    let reqs = slice_reqs();
    assert!(!reqs.is_empty());
    for r in &reqs {
        assert_eq!(
            r.user, "system:serviceaccount:mop-system:mop-gateway",
            "{r:?}"
        );
        assert_eq!(r.status, 200, "{r:?}");
    }

    // Watches end after etcd compacted their history: each replica's watch from
    // its old resourceVersion gets 410 Expired and it lists again, keeping its
    // membership meanwhile; the new watch then follows changes.
    let lists = |reqs: &[mop_kube_fake::RecordedRequest]| {
        reqs.iter()
            .filter(|r| r.method == "GET" && !r.query.contains("watch=true"))
            .count()
    };
    let before = lists(&slice_reqs());
    // Another write moves the store past the slices' last version, so the
    // compaction leaves the replicas' watch position behind.
    kube.put(
        "test",
        serde_json::json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "unrelated", "namespace": "mop-system"}}),
    )
    .unwrap();
    kube.compact();
    kube.end_watches();
    assert!(
        eventually(Duration::from_secs(20), async || lists(&slice_reqs())
            >= before + all.len())
        .await,
        "every replica lists again after 410: {:?}",
        slice_reqs()
    );
    wait_members(&all, 3).await;
    kube.put(
        "endpointslice-controller",
        endpoint_slice("mop-gateway-peers-1", &r1.ring, false),
    )
    .unwrap();
    wait_members(&all, 2).await;
}

/// Trace id → span name → copies received (spans carry SDK-chosen ids).
fn received_by_name(
    tempo: &fakes::Fake<ExportTraceServiceRequest>,
) -> HashMap<String, BTreeMap<String, usize>> {
    let mut out: HashMap<String, BTreeMap<String, usize>> = HashMap::new();
    for (tenant, req) in tempo.state.received() {
        assert_eq!(tenant, "team-a");
        for rs in req.resource_spans {
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let id: String = s.trace_id.iter().map(|b| format!("{b:02x}")).collect();
                    *out.entry(id).or_default().entry(s.name).or_default() += 1;
                }
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_sdk_services_on_different_replicas_give_complete_kept_traces() {
    const TRACES: usize = 10_000;
    let s = setup(3_000).await;
    let r0 = s.spawn_static();
    let r1 = s.spawn_static();
    let r2 = s.spawn_static();
    s.set_peers(&[&r0, &r1, &r2]);
    wait_members(&[&r0, &r1, &r2], 3).await;

    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/ring_traces.py");
    let endpoints = [&r0, &r1, &r2]
        .iter()
        .map(|r| r.grpc.trim_start_matches("http://").to_string())
        .collect::<Vec<_>>()
        .join(",");
    let out = common::procs::run_python(
        &script,
        &[
            ("ENDPOINTS", endpoints),
            ("TRACES", TRACES.to_string()),
            ("NAMESPACE", "shop".into()),
        ],
    )
    .await;
    let line = out
        .lines()
        .find(|l| l.starts_with("{\"traces\""))
        .unwrap_or_else(|| panic!("no result line from the script: {out}"));
    let sent: HashMap<String, u64> = serde_json::from_value(
        serde_json::from_str::<serde_json::Value>(line).unwrap()["traces"].clone(),
    )
    .unwrap();
    assert_eq!(sent.len(), TRACES);
    let expected: BTreeSet<&String> = sent
        .iter()
        .filter(|(_, k)| **k <= 2)
        .map(|(id, _)| id)
        .collect();
    settle(&s.tempo, expected.len() * 3, Duration::from_secs(90)).await;

    let got = received_by_name(&s.tempo);
    let mut problems = Vec::new();
    for (id, spans) in &got {
        if !sent.contains_key(id) {
            problems.push(format!("trace {id} was never sent"));
        } else if spans.len() != 3 || spans.values().any(|c| *c != 1) {
            problems.push(format!(
                "trace {id} (kind {}) kept incomplete or duplicated: {spans:?}",
                sent[id]
            ));
        } else if !expected.contains(id) {
            problems.push(format!(
                "trace {id} (kind {}) matches no policy but was kept",
                sent[id]
            ));
        }
    }
    for id in &expected {
        if !got.contains_key(*id) {
            problems.push(format!(
                "trace {id} (kind {}) should be kept but is missing",
                sent[*id]
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems, first: {:?}",
        problems.len(),
        &problems[..problems.len().min(10)]
    );
    // Two thirds of each replica's spans belong to traces another replica owns.
    let forwarded = sum_metric(
        &[&r0, &r1, &r2],
        "mop_gateway_ring_received_from_peer_spans_total",
        &[],
    )
    .await;
    assert!(forwarded > 0.0, "spans crossed the ring");
    eprintln!(
        "python SDK: {TRACES} traces, {} kept complete, {forwarded} spans forwarded between replicas",
        expected.len()
    );
}

/// The request whose spans of traces `traces` (all spans of each) go to every
/// owner; with `corrupt`, the name of one span owned by a peer of `me` is not
/// UTF-8, so the whole request does not decode.
fn request_for_all_owners(
    traces: std::ops::Range<u64>,
    ring: &Ring,
    me: &str,
    corrupt: bool,
) -> Vec<u8> {
    use prost::Message;
    const MARKER: &str = "NOT-UTF-8-HERE";
    let mut spans: Vec<Span> = traces
        .clone()
        .flat_map(|n| (0..SPANS_PER_TRACE).rev().map(move |k| span_of(n, k)))
        .collect();
    if corrupt {
        let victim = spans
            .iter_mut()
            .find(|s| {
                let id: [u8; 16] = s.trace_id[..].try_into().unwrap();
                ring.owner(&id).unwrap().addr() != me
            })
            .unwrap();
        victim.name = MARKER.into();
    }
    let mut body = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource(Some("shop"), "svc-0")),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec();
    if corrupt {
        let at = body
            .windows(MARKER.len())
            .position(|w| w == MARKER.as_bytes())
            .unwrap();
        body[at] = 0xff;
    }
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_span_owned_by_a_peer_refuses_the_whole_request_with_the_full_decode_error() {
    use prost::Message;
    let s = setup(300).await;
    let r0 = s.spawn_static();
    let r1 = s.spawn_static();
    let r2 = s.spawn_static();
    s.set_peers(&[&r0, &r1, &r2]);
    wait_members(&[&r0, &r1, &r2], 3).await;
    let ring = Ring::new([r0.ring.as_str(), r1.ring.as_str(), r2.ring.as_str()]);

    let bad = request_for_all_owners(0..60, &ring, &r0.ring, true);
    let full = ExportTraceServiceRequest::decode(&bad[..])
        .unwrap_err()
        .to_string();
    // OTLP/gRPC: refused as tonic's prost codec refuses an undecodable message.
    let channel = tonic::transport::Endpoint::from_shared(r0.grpc.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let st = grpc
        .unary(
            tonic::Request::new(bytes::Bytes::from(bad.clone())),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            mop_gateway::ring::forward::RawCodec,
        )
        .await
        .unwrap_err();
    assert_eq!(st.code(), tonic::Code::Internal);
    assert_eq!(st.message(), full);
    // OTLP/HTTP: 400 with the decode error, as without the ring.
    let resp = reqwest::Client::new()
        .post(format!("http://{}/v1/traces", r0.http))
        .header("content-type", "application/x-protobuf")
        .body(bad)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let status =
        mop_gateway::receiver::http::RpcStatus::decode(resp.bytes().await.unwrap()).unwrap();
    assert_eq!(status.message, format!("cannot decode request: {full}"));

    // The same spans, well-formed: every kept trace arrives complete and once,
    // so nothing of the refused requests was kept or forwarded.
    let good = request_for_all_owners(0..60, &ring, &r0.ring, false);
    grpc.ready().await.unwrap();
    let st = grpc
        .unary(
            tonic::Request::new(bytes::Bytes::from(good)),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/opentelemetry.proto.collector.trace.v1.TraceService/Export",
            ),
            mop_gateway::ring::forward::RawCodec,
        )
        .await;
    assert!(st.is_ok(), "{st:?}");
    let expected = (0..60).filter(|n| expected_kept(*n)).count();
    settle(
        &s.tempo,
        expected * SPANS_PER_TRACE as usize,
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(assert_complete(&s.tempo, 0..60, &BTreeSet::new()), expected);
    let forwarded = sum_metric(&[&r0], "mop_gateway_ring_forwarded_spans_total", &[]).await;
    assert!(forwarded > 0.0, "r0 forwarded the spans its peers own");
}
