//! Pins what `build` produces — every span field but the random ids, the
//! RED series and the observation — for a corpus of exchanges that covers
//! each protocol, role, scheme and the branches of the HTTP attributes
//! (query, fragment, host with and without port, identifiers in the path,
//! traceparent valid and not, status classes, body sizes, IPv4 and IPv6
//! peers). The expected text (`spans.golden`) was written by the span
//! builder before its performance work (session 25), so a rewrite of the
//! builder must reproduce it byte for byte. `MOP_UPDATE_GOLDEN=1` rewrites
//! the file; review the diff.
use std::{fmt::Write as _, net::IpAddr};

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message as _;

use super::*;
use crate::protocol::{
    Detail, Exchange,
    http1::{HttpExchange, RequestText},
    http2::H2Exchange,
    redis::RedisExchange,
    sql::SqlExchange,
};

const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

fn http_details() -> Vec<Detail> {
    let targets = [
        "/",
        "/api/items/42",
        "/a/b?x=1&y=2",
        "/o/550e8400-e29b-41d4-a716-446655440000/x#frag",
        "",
        "?q",
        "/é/7",
        "/t/aB3dEf9hIjKlMnOpQ/",
        "/blob/0123456789abcdef0123?",
        "//x//",
    ];
    let hosts = [None, Some("shop:8080"), Some("h"), Some("[::1]:80")];
    let tps = [None, Some(TP), Some("00-bad")];
    let statuses = [0u16, 200, 204, 404, 503];
    let methods = ["GET", "HEAD", "POST"];
    let mut out = Vec::new();
    // A deterministic walk through the combinations, not all of them.
    for (i, target) in targets.iter().enumerate() {
        for j in 0..6 {
            let k = i * 6 + j;
            out.push(Detail::Http(HttpExchange {
                request: RequestText::new(
                    methods[k % methods.len()],
                    target,
                    hosts[k % hosts.len()],
                    (k % 2 == 0).then_some("curl/8.5 (x86_64)"),
                    tps[k % tps.len()],
                ),
                status: statuses[k % statuses.len()],
                version: if k % 7 == 0 { "1.0" } else { "1.1" },
                request_body_size: if k % 3 == 0 { 0 } else { k as u64 * 100 },
                response_body_size: k as u64 % 4 * 1000,
            }));
        }
    }
    out
}

fn other_details() -> Vec<Detail> {
    let h2 = |path: &str, status: u16, grpc: Option<i64>, ct: Option<&str>| H2Exchange {
        method: "POST".into(),
        path: path.into(),
        authority: Some("api.example:443".into()),
        content_type: ct.map(str::to_owned),
        traceparent: Some(TP.into()),
        user_agent: Some("grpc-go/1.6".into()),
        status,
        grpc_status: grpc,
        grpc_message: grpc.filter(|c| *c != 0).map(|_| "boom".into()),
        reset: false,
    };
    let mut out = vec![
        Detail::Http2(h2("/v1/users/123", 200, None, Some("application/json"))),
        Detail::Http2(h2("/v1/users/123", 0, None, None)),
        Detail::Http2(h2("/pkg.Svc/Do", 200, Some(0), Some("application/grpc"))),
        Detail::Http2(h2("/pkg.Svc/Do", 200, Some(13), Some("application/grpc"))),
        Detail::Http2(h2(
            "/pkg.Svc/Do",
            200,
            Some(5),
            Some("application/grpc+proto"),
        )),
        Detail::Http2(h2("/pkg.Svc/Do", 0, None, Some("application/grpc"))),
        Detail::Redis(RedisExchange {
            command: "GET".into(),
            error: None,
        }),
        Detail::Redis(RedisExchange {
            command: "SET".into(),
            error: Some("WRONGTYPE".into()),
        }),
    ];
    for (q, op, err) in [
        ("SELECT * FROM t WHERE id = ?", "SELECT", None),
        ("", "", None),
        ("INSERT INTO t VALUES (?)", "INSERT", Some("23505")),
    ] {
        let e = SqlExchange {
            query: q.into(),
            operation: op.into(),
            error_code: err.map(str::to_owned),
            ..SqlExchange::default()
        };
        out.push(Detail::Postgres(e.clone()));
        out.push(Detail::MySql(e));
    }
    out
}

/// One line per case: the span with its random ids zeroed, the series and
/// the observation.
fn render() -> String {
    let peers: [IpAddr; 2] = [
        IpAddr::from([10, 1, 2, 3]),
        "2001:db8::7".parse().unwrap_or(IpAddr::from([0, 0, 0, 0])),
    ];
    let mut text = String::new();
    let mut s = Scratch::default();
    let details: Vec<Detail> = http_details().into_iter().chain(other_details()).collect();
    for (n, detail) in details.iter().enumerate() {
        for role in [Role::Server, Role::Client] {
            for tls in [false, true] {
                let peer = peers[(n + usize::from(tls)) % 2];
                let tuple = Tuple {
                    local: IpAddr::from([10, 0, 0, 1]),
                    local_port: 8080,
                    peer,
                    peer_port: 40000 + n as u16,
                    role,
                };
                let ex = Exchange {
                    start_ns: 1_000 + n as u64,
                    end_ns: 2_500_000 + n as u64 * 7,
                    detail: detail.clone(),
                };
                // Twice on one connection: the second span copies the
                // connection's attributes that the first one encoded.
                let mut conn = Vec::new();
                let mut lines = Vec::new();
                for _ in 0..2 {
                    let mut out = vec![0xee; n % 3];
                    let prefix = out.len();
                    let obs = build(
                        &ex,
                        &tuple,
                        role,
                        tls,
                        1_700_000_000_000_000_000,
                        &mut conn,
                        &mut s,
                        &mut out,
                    );
                    let bytes = &out[prefix..];
                    let mut span = Span::decode(bytes).unwrap();
                    // Field by field, the bytes are exactly prost's encoding.
                    assert_eq!(span.encode_to_vec(), bytes, "case {n}");
                    if span.parent_span_id.is_empty() {
                        span.trace_id = vec![0; 16];
                    }
                    span.span_id = vec![0; 8];
                    lines.push(format!(
                        "{n} {role:?} tls={tls}: {span:?} | series {:?} | {obs:?}",
                        SeriesKey::attrs(s.series.as_bytes())
                    ));
                }
                assert_eq!(
                    lines[0], lines[1],
                    "case {n}: the connection's cached attributes"
                );
                let _ = writeln!(text, "{}", lines[0]);
            }
        }
    }
    text
}

#[test]
fn spans_series_and_observations_match_the_golden_file() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/telemetry/spans.golden");
    let got = render();
    if std::env::var_os("MOP_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &got).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap();
    for (i, (g, w)) in got.lines().zip(want.lines()).enumerate() {
        assert_eq!(g, w, "line {}", i + 1);
    }
    assert_eq!(got.lines().count(), want.lines().count());
}
