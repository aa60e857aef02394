//! A request set shaped like what OpenTelemetry SDKs send through an agent: many
//! services and pods, each request carrying 1–4 resources (one per pod whose
//! batch the agent merged), SDK + Kubernetes resource attributes, and spans of
//! mixed kinds (HTTP server/client, database, cache, gRPC, messaging, internal)
//! with the attributes, value lengths and span names the semantic conventions
//! give each kind. Errors carry an exception event with a stack trace.
//!
//! Seeded, so every run (and every collector in a paired round) posts the same
//! bytes. The per-kind attribute sets follow the stable HTTP and database
//! semantic conventions (open-telemetry/semantic-conventions, docs/http and
//! docs/database); the resource attributes are those the Go/Java/Python SDKs and
//! the collector's k8sattributes processor set.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use prost::Message;

use super::{NAMESPACES, REQUESTS, SPANS_PER_REQUEST, kv};

fn kv_i(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
    }
}

fn hex(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"0123456789abcdef"[rng.usize(..16)]))
        .collect()
}

fn uuid(rng: &mut fastrand::Rng) -> String {
    format!(
        "{}-{}-{}-{}-{}",
        hex(rng, 8),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 4),
        hex(rng, 12)
    )
}

fn suffix(rng: &mut fastrand::Rng, n: usize) -> String {
    (0..n)
        .map(|_| char::from(b"bcdfghjklmnpqrstvwxz2456789"[rng.usize(..27)]))
        .collect()
}

#[derive(Clone, Copy)]
enum Lang {
    Go,
    Java,
    Python,
    Node,
}

struct Service {
    name: String,
    namespace: &'static str,
    lang: Lang,
    routes: Vec<(&'static str, &'static str)>,
    downstream: Vec<usize>,
    db_table: &'static str,
    pods: Vec<Resource>,
}

const WORDS: [&str; 24] = [
    "cart",
    "checkout",
    "payment",
    "shipping",
    "currency",
    "email",
    "catalog",
    "ads",
    "recommend",
    "quote",
    "fraud",
    "ledger",
    "invoice",
    "search",
    "index",
    "ranker",
    "session",
    "profile",
    "auth",
    "gateway",
    "inventory",
    "pricing",
    "reviews",
    "notify",
];

const ROUTES: [(&str, &str); 16] = [
    ("GET", "/api/v1/items/{id}"),
    ("GET", "/api/v1/items"),
    ("POST", "/api/v1/orders"),
    ("GET", "/api/v1/orders/{order_id}"),
    ("PUT", "/api/v1/carts/{cart_id}/items"),
    ("DELETE", "/api/v1/carts/{cart_id}/items/{item_id}"),
    ("GET", "/healthz"),
    ("POST", "/api/v2/payments/authorize"),
    ("GET", "/api/v2/users/{user_id}/profile"),
    ("GET", "/search"),
    ("POST", "/graphql"),
    ("GET", "/api/v1/recommendations"),
    ("PATCH", "/api/v1/users/{user_id}"),
    ("GET", "/api/v1/invoices/{invoice_id}/pdf"),
    ("POST", "/api/v1/shipments/quote"),
    ("GET", "/metrics/summary"),
];

const TABLES: [&str; 8] = [
    "orders",
    "order_items",
    "users",
    "payments",
    "invoices",
    "products",
    "carts",
    "sessions",
];

const USER_AGENTS: [&str; 4] = [
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36",
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1",
    "okhttp/4.12.0",
    "Go-http-client/1.1",
];

fn sdk_of(lang: Lang) -> (&'static str, &'static str, &'static str, &'static str) {
    // (telemetry.sdk.language, telemetry.sdk.version, process.runtime.name, version)
    match lang {
        Lang::Go => ("go", "1.28.0", "go", "go1.22.4"),
        Lang::Java => (
            "java",
            "1.39.0",
            "OpenJDK Runtime Environment",
            "21.0.3+9-LTS",
        ),
        Lang::Python => ("python", "1.25.0", "cpython", "3.12.3"),
        Lang::Node => ("nodejs", "1.25.1", "nodejs", "20.14.0"),
    }
}

fn scope_of(lang: Lang, kind: usize) -> (&'static str, &'static str) {
    match (lang, kind) {
        (Lang::Go, 0 | 1) => (
            "go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp",
            "0.53.0",
        ),
        (Lang::Go, 2) => ("github.com/XSAM/otelsql", "0.32.0"),
        (Lang::Go, 4) => (
            "go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc",
            "0.53.0",
        ),
        (Lang::Java, 0) => ("io.opentelemetry.tomcat-10.0", "2.5.0-alpha"),
        (Lang::Java, 1) => ("io.opentelemetry.okhttp-3.0", "2.5.0-alpha"),
        (Lang::Java, 2) => ("io.opentelemetry.jdbc", "2.5.0-alpha"),
        (Lang::Python, 0) => ("opentelemetry.instrumentation.flask", "0.46b0"),
        (Lang::Python, 2) => ("opentelemetry.instrumentation.psycopg2", "0.46b0"),
        (Lang::Node, 0 | 1) => ("@opentelemetry/instrumentation-http", "0.52.1"),
        (_, 3) => ("opentelemetry.instrumentation.redis", "0.46b0"),
        (_, 5) => ("io.opentelemetry.kafka-clients-2.6", "2.5.0-alpha"),
        _ => ("app", ""),
    }
}

fn services(rng: &mut fastrand::Rng) -> Vec<Service> {
    let n = 40;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let name = if i < WORDS.len() {
            WORDS[i].to_string()
        } else {
            format!(
                "{}-{}",
                WORDS[i % WORDS.len()],
                WORDS[(i * 7 + 3) % WORDS.len()]
            )
        };
        let namespace = NAMESPACES[i % NAMESPACES.len()];
        let lang = [Lang::Go, Lang::Java, Lang::Python, Lang::Node][rng.usize(..4)];
        let (sdk_lang, sdk_version, rt_name, rt_version) = sdk_of(lang);
        let routes = (0..rng.usize(2..6))
            .map(|_| ROUTES[rng.usize(..ROUTES.len())])
            .collect();
        let downstream = (0..rng.usize(0..4)).map(|_| rng.usize(..n)).collect();
        let version = format!("1.{}.{}", rng.u8(..30), rng.u8(..10));
        let deployment = name.clone();
        let rs = suffix(rng, 10);
        let pods = (0..rng.usize(1..4))
            .map(|_| {
                let pod = format!("{deployment}-{rs}-{}", suffix(rng, 5));
                let node = format!(
                    "ip-10-0-{}-{}.eu-west-1.compute.internal",
                    rng.u8(..255),
                    rng.u8(..255)
                );
                Resource {
                    attributes: vec![
                        kv("service.name", &name),
                        kv("service.namespace", namespace),
                        kv("service.version", &version),
                        kv("service.instance.id", &uuid(rng)),
                        kv("deployment.environment.name", "production"),
                        kv("telemetry.sdk.name", "opentelemetry"),
                        kv("telemetry.sdk.language", sdk_lang),
                        kv("telemetry.sdk.version", sdk_version),
                        kv("process.runtime.name", rt_name),
                        kv("process.runtime.version", rt_version),
                        kv_i("process.pid", rng.i64(1..65536)),
                        kv("host.name", &pod),
                        kv("host.arch", "amd64"),
                        kv("os.type", "linux"),
                        kv("container.id", &hex(rng, 64)),
                        kv("k8s.cluster.name", "prod-eu-west-1"),
                        kv("k8s.namespace.name", namespace),
                        kv("k8s.deployment.name", &deployment),
                        kv("k8s.pod.name", &pod),
                        kv("k8s.pod.uid", &uuid(rng)),
                        kv("k8s.node.name", &node),
                        kv("cloud.provider", "aws"),
                        kv("cloud.region", "eu-west-1"),
                    ],
                    ..Default::default()
                }
            })
            .collect();
        out.push(Service {
            name,
            namespace,
            lang,
            routes,
            downstream,
            db_table: TABLES[rng.usize(..TABLES.len())],
            pods,
        });
    }
    out
}

/// One span of `svc`: (scope kind, span). Kinds: 0 HTTP server, 1 HTTP client,
/// 2 database, 3 cache, 4 gRPC client, 5 messaging, 6 internal.
fn span(
    rng: &mut fastrand::Rng,
    svcs: &[Service],
    svc: &Service,
    trace_id: &[u8],
    parent: Option<u64>,
    start: u64,
) -> (usize, Span) {
    let kind = if parent.is_none() {
        0
    } else {
        [1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 6, 6][rng.usize(..12)]
    };
    let (method, route) = svc.routes[rng.usize(..svc.routes.len())];
    let id = rng.u32(1..10_000_000);
    let peer = if svc.downstream.is_empty() {
        svc
    } else {
        &svcs[svc.downstream[rng.usize(..svc.downstream.len())]]
    };
    let peer_host = format!("{}.{}.svc.cluster.local", peer.name, peer.namespace);
    let error = rng.u8(..100) < 2;
    let status_code = if error {
        500
    } else {
        [200, 200, 200, 201, 204, 404][rng.usize(..6)]
    };
    let (name, span_kind, attributes) = match kind {
        0 => {
            let path = route
                .replace("{id}", &id.to_string())
                .replace("{order_id}", &uuid(rng))
                .replace("{cart_id}", &hex(rng, 24))
                .replace("{item_id}", &id.to_string())
                .replace("{user_id}", &id.to_string())
                .replace("{invoice_id}", &format!("INV-{id}"));
            let mut a = vec![
                kv("http.request.method", method),
                kv("http.route", route),
                kv("url.path", &path),
                kv("url.scheme", "http"),
                kv(
                    "server.address",
                    &format!("{}.{}.svc.cluster.local", svc.name, svc.namespace),
                ),
                kv_i("server.port", 8080),
                kv(
                    "client.address",
                    &format!("10.{}.{}.{}", rng.u8(..255), rng.u8(..255), rng.u8(..255)),
                ),
                kv("network.protocol.version", "1.1"),
                kv(
                    "user_agent.original",
                    USER_AGENTS[rng.usize(..USER_AGENTS.len())],
                ),
                kv_i("http.response.status_code", status_code),
            ];
            if rng.bool() {
                a.push(kv(
                    "url.query",
                    &format!("page={}&limit=50&sort=created_at", rng.u8(..20)),
                ));
            }
            if method != "GET" {
                a.push(kv_i("http.request.body.size", rng.i64(64..8192)));
            }
            (format!("{method} {route}"), span::SpanKind::Server, a)
        }
        1 => (
            method.to_string(),
            span::SpanKind::Client,
            vec![
                kv("http.request.method", method),
                kv(
                    "url.full",
                    &format!(
                        "http://{peer_host}:8080{}",
                        route.replace("{id}", &id.to_string())
                    ),
                ),
                kv("server.address", &peer_host),
                kv_i("server.port", 8080),
                kv(
                    "network.peer.address",
                    &format!("10.{}.{}.{}", rng.u8(..255), rng.u8(..255), rng.u8(..255)),
                ),
                kv_i("http.response.status_code", status_code),
            ],
        ),
        2 => {
            let op = ["SELECT", "SELECT", "SELECT", "INSERT", "UPDATE"][rng.usize(..5)];
            let t = svc.db_table;
            let q = match op {
                "SELECT" => format!(
                    "SELECT id, user_id, status, total_cents, currency, created_at, updated_at FROM {t} WHERE user_id = $1 AND status IN ($2, $3) ORDER BY created_at DESC LIMIT $4"
                ),
                "INSERT" => format!(
                    "INSERT INTO {t} (id, user_id, status, total_cents, currency, created_at) VALUES ($1, $2, $3, $4, $5, now())"
                ),
                _ => format!("UPDATE {t} SET status = $1, updated_at = now() WHERE id = $2"),
            };
            (
                format!("{op} {}.{t}", svc.namespace),
                span::SpanKind::Client,
                vec![
                    kv("db.system.name", "postgresql"),
                    kv("db.namespace", svc.namespace),
                    kv("db.operation.name", op),
                    kv("db.collection.name", t),
                    kv("db.query.text", &q),
                    kv(
                        "server.address",
                        &format!("pg-{}.{}.svc.cluster.local", svc.namespace, svc.namespace),
                    ),
                    kv_i("server.port", 5432),
                ],
            )
        }
        3 => {
            let op = ["GET", "SET", "HGETALL", "EXPIRE"][rng.usize(..4)];
            (
                op.to_string(),
                span::SpanKind::Client,
                vec![
                    kv("db.system.name", "redis"),
                    kv("db.operation.name", op),
                    kv("db.query.text", &format!("{op} session:{}", hex(rng, 32))),
                    kv("server.address", "redis-master.infra-eu.svc.cluster.local"),
                    kv_i("server.port", 6379),
                    kv("db.namespace", "0"),
                ],
            )
        }
        4 => {
            let method =
                ["GetCart", "Convert", "Charge", "ListProducts", "GetQuote"][rng.usize(..5)];
            let service = format!("oteldemo.{}Service", peer.name.replace('-', ""));
            (
                format!("{service}/{method}"),
                span::SpanKind::Client,
                vec![
                    kv("rpc.system", "grpc"),
                    kv("rpc.service", &service),
                    kv("rpc.method", method),
                    kv_i("rpc.grpc.status_code", if error { 13 } else { 0 }),
                    kv("server.address", &peer_host),
                    kv_i("server.port", 50051),
                ],
            )
        }
        5 => (
            format!("{}-events publish", svc.name),
            span::SpanKind::Producer,
            vec![
                kv("messaging.system", "kafka"),
                kv(
                    "messaging.destination.name",
                    &format!("{}-events", svc.name),
                ),
                kv("messaging.operation.type", "publish"),
                kv("messaging.kafka.message.key", &uuid(rng)),
                kv_i("messaging.message.body.size", rng.i64(200..4000)),
                kv(
                    "server.address",
                    "kafka-0.kafka-headless.infra-eu.svc.cluster.local",
                ),
            ],
        ),
        _ => {
            let f = [
                "compute_price",
                "render_template",
                "validate_request",
                "load_config",
            ][rng.usize(..4)];
            let mut a = vec![kv("code.function.name", f)];
            if rng.bool() {
                a.push(kv(
                    "code.file.path",
                    &format!("/app/src/{}/{f}.py", svc.name),
                ));
                a.push(kv_i("code.line.number", rng.i64(10..900)));
            }
            (f.to_string(), span::SpanKind::Internal, a)
        }
    };
    let events = if error {
        vec![span::Event {
            time_unix_nano: start + 1_000_000,
            name: "exception".into(),
            attributes: vec![
                kv("exception.type", "java.net.SocketTimeoutException"),
                kv("exception.message", &format!("Read timed out after 5000 ms calling {peer_host}")),
                kv(
                    "exception.stacktrace",
                    &"java.net.SocketTimeoutException: Read timed out\n\tat java.base/sun.nio.ch.NioSocketImpl.timedRead(NioSocketImpl.java:288)\n\tat okhttp3.internal.connection.RealCall.execute(RealCall.kt:154)\n\tat com.example.shop.client.ItemsClient.get(ItemsClient.java:42)\n"
                        .repeat(4),
                ),
            ],
            dropped_attributes_count: 0,
        }]
    } else {
        Vec::new()
    };
    let duration = match kind {
        0 => rng.u64(2_000_000..400_000_000),
        2 | 3 => rng.u64(100_000..20_000_000),
        6 => rng.u64(5_000..2_000_000),
        _ => rng.u64(1_000_000..150_000_000),
    };
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: rng.u64(..).to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        // The SDKs since 1.26 set the sampled flag and "has remote parent known" bits.
        flags: 0x101,
        name,
        kind: span_kind as i32,
        start_time_unix_nano: start,
        end_time_unix_nano: start + duration,
        attributes,
        events,
        status: Some(if error {
            Status {
                code: 2,
                message: "upstream request failed".into(),
            }
        } else {
            Status::default()
        }),
        ..Default::default()
    };
    (kind, span)
}

/// 200 requests of [`SPANS_PER_REQUEST`] spans, shaped like SDK traffic merged by
/// an agent (see the module comment).
pub fn requests() -> Vec<Vec<u8>> {
    let mut rng = fastrand::Rng::with_seed(13);
    let svcs = services(&mut rng);
    (0..REQUESTS)
        .map(|_| {
            let n_res = rng.usize(1..5);
            let mut left = SPANS_PER_REQUEST;
            let resource_spans = (0..n_res)
                .map(|i| {
                    let n = if i + 1 == n_res {
                        left
                    } else {
                        rng.usize(1..=left - (n_res - i - 1))
                            .min(left / 2 + 1)
                            .max(1)
                    };
                    left -= n;
                    let svc = &svcs[rng.usize(..svcs.len())];
                    let pod = svc.pods[rng.usize(..svc.pods.len())].clone();
                    // Spans of several traces, each a root server span and its children.
                    let mut by_scope: Vec<(usize, Vec<Span>)> = Vec::new();
                    let mut made = 0;
                    while made < n {
                        let trace_id: Vec<u8> = (0..16).map(|_| rng.u8(..)).collect();
                        let root_id = rng.u64(..);
                        let start = 1_700_000_000_000_000_000u64 + rng.u64(..1_000_000_000_000);
                        let per_trace = rng.usize(1..9).min(n - made);
                        for s in 0..per_trace {
                            // A batch holds whole local traces only sometimes: half
                            // of them start at a child (the root was in another batch).
                            let parent = if s == 0 && rng.bool() {
                                None
                            } else {
                                Some(root_id)
                            };
                            let (kind, sp) = span(
                                &mut rng,
                                &svcs,
                                svc,
                                &trace_id,
                                parent,
                                start + s as u64 * 1_000_000,
                            );
                            let sk = if kind == 6 { 6 } else { kind.min(5) };
                            match by_scope.iter_mut().find(|(k, _)| *k == sk) {
                                Some((_, v)) => v.push(sp),
                                None => by_scope.push((sk, vec![sp])),
                            }
                        }
                        made += per_trace;
                    }
                    let scope_spans = by_scope
                        .into_iter()
                        .map(|(k, spans)| {
                            let (name, version) = scope_of(svc.lang, k);
                            ScopeSpans {
                                scope: Some(InstrumentationScope {
                                    name: name.into(),
                                    version: version.into(),
                                    ..Default::default()
                                }),
                                spans,
                                schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                            }
                        })
                        .collect();
                    ResourceSpans {
                        resource: Some(pod),
                        scope_spans,
                        schema_url: "https://opentelemetry.io/schemas/1.26.0".into(),
                    }
                })
                .collect();
            ExportTraceServiceRequest { resource_spans }.encode_to_vec()
        })
        .collect()
}
