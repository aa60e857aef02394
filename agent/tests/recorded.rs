//! Parsers on byte streams recorded from real clients and servers
//! (`tests/fixtures/record.py` between curl/nginx, redis-cli/redis-server,
//! psql+pgbench/PostgreSQL 15, python grpcio client/server): as recorded,
//! re-split into tiny pieces, and with only a prefix of each chunk captured
//! (what the kernel side does), the exchanges must come out the same.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
use mop_agent::protocol::{
    ConnParser, Detail, Exchange, Segment, http1::Http1Conn, http2::Http2Conn, postgres::PgConn,
    redis::RedisConn,
};

/// (from_client, bytes) chunks per connection.
fn load(name: &str) -> Vec<Vec<(bool, Vec<u8>)>> {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let b = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (mut conns, mut cur, mut at) = (Vec::new(), Vec::new(), 0);
    while at < b.len() {
        let dir = b[at];
        let len = u32::from_be_bytes(b[at + 1..at + 5].try_into().unwrap()) as usize;
        let data = b[at + 5..at + 5 + len].to_vec();
        at += 5 + len;
        match dir {
            b'C' => cur.push((true, data)),
            b'S' => cur.push((false, data)),
            _ => conns.push(std::mem::take(&mut cur)),
        }
    }
    conns
}

#[derive(Clone, Copy)]
enum Mode {
    AsRecorded,
    /// Every chunk cut into pieces of 1..=3 bytes.
    Tiny,
    /// Only the first `n` bytes of each chunk captured.
    Prefix(usize),
}

fn replay(conn: &[(bool, Vec<u8>)], parser: &mut dyn ConnParser, mode: Mode) -> Vec<Exchange> {
    let mut out = Vec::new();
    let mut ts = 1;
    for (from_client, data) in conn {
        match mode {
            Mode::AsRecorded => parser.feed(
                *from_client,
                Segment {
                    ts_ns: ts,
                    data,
                    gap: 0,
                },
                &mut out,
            ),
            Mode::Tiny => {
                let mut rest = &data[..];
                let mut k = 0;
                while !rest.is_empty() {
                    let n = (k % 3 + 1).min(rest.len());
                    parser.feed(
                        *from_client,
                        Segment {
                            ts_ns: ts,
                            data: &rest[..n],
                            gap: 0,
                        },
                        &mut out,
                    );
                    rest = &rest[n..];
                    k += 1;
                }
            }
            Mode::Prefix(n) => {
                let n = n.min(data.len());
                let seg = Segment {
                    ts_ns: ts,
                    data: &data[..n],
                    gap: (data.len() - n) as u64,
                };
                parser.feed(*from_client, seg, &mut out);
            }
        }
        ts += 1;
    }
    parser.close(ts, &mut out);
    out
}

fn http(e: &Exchange) -> (String, String, u16, Option<String>) {
    match &e.detail {
        Detail::Http(h) => (
            h.method().to_owned(),
            h.target().to_owned(),
            h.status,
            h.traceparent().map(str::to_owned),
        ),
        d => panic!("{d:?}"),
    }
}

#[test]
fn curl_to_nginx_keep_alive() {
    let conns = load("http1-curl-nginx.bin");
    assert_eq!(conns.len(), 1);
    for mode in [Mode::AsRecorded, Mode::Tiny, Mode::Prefix(256)] {
        let got: Vec<_> = replay(&conns[0], &mut Http1Conn::default(), mode)
            .iter()
            .map(http)
            .collect();
        let tp = Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned());
        assert_eq!(
            got,
            vec![
                ("GET".into(), "/api/users/42".into(), 200, tp.clone()),
                ("GET".into(), "/index.html".into(), 200, tp.clone()),
                ("GET".into(), "/boom".into(), 502, tp),
            ]
        );
    }
}

fn redis(e: &Exchange) -> (String, Option<String>) {
    match &e.detail {
        Detail::Redis(r) => (r.command.clone(), r.error.clone()),
        d => panic!("{d:?}"),
    }
}

#[test]
fn redis_cli_to_redis_server() {
    let conns = load("redis-cli.bin");
    // redis-cli starts with COMMAND DOCS, whose reply is ~170 KB.
    for mode in [Mode::AsRecorded, Mode::Tiny, Mode::Prefix(1024)] {
        let got: Vec<_> = replay(&conns[0], &mut RedisConn::default(), mode)
            .iter()
            .map(redis)
            .collect();
        let tail: Vec<_> = got
            .iter()
            .skip_while(|(c, _)| c != "SET")
            .cloned()
            .collect();
        assert_eq!(
            tail,
            vec![
                ("SET".into(), None),
                ("GET".into(), None),
                ("LPUSH".into(), Some("WRONGTYPE".into())),
                ("DEL".into(), None)
            ],
            "all: {got:?}"
        );
        assert_eq!(got.first().map(|g| g.0.as_str()), Some("COMMAND"));
    }
}

fn pg(e: &Exchange) -> (String, Option<String>) {
    match &e.detail {
        Detail::Postgres(p) => (p.query.clone(), p.error_code.clone()),
        d => panic!("{d:?}"),
    }
}

#[test]
fn psql_and_pgbench_to_postgres() {
    let conns = load("postgres-psql-pgbench.bin");
    // psql; pgbench's connection check; pgbench's client.
    assert_eq!(conns.len(), 3);
    for mode in [Mode::AsRecorded, Mode::Tiny, Mode::Prefix(2048)] {
        let psql: Vec<_> = replay(&conns[0], &mut PgConn::default(), mode)
            .iter()
            .map(pg)
            .collect();
        assert_eq!(
            psql,
            vec![
                ("select ? + ?".into(), None),
                ("select * from no_such_table".into(), Some("42P01".into()))
            ]
        );
        // conns[1] is pgbench's connection check: startup and terminate.
        assert!(replay(&conns[1], &mut PgConn::default(), mode).is_empty());
        let bench: Vec<_> = replay(&conns[2], &mut PgConn::default(), mode)
            .iter()
            .map(pg)
            .collect();
        let ours = bench
            .iter()
            .filter(|(q, e)| {
                q.starts_with("select count(*) from pg_class where relkind = ?") && e.is_none()
            })
            .count();
        assert_eq!(ours, 2, "{bench:?}");
    }
}

#[test]
fn grpc_python_client_to_server() {
    let conns = load("grpc-python.bin");
    for mode in [Mode::AsRecorded, Mode::Tiny] {
        let got: Vec<_> = replay(&conns[0], &mut Http2Conn::default(), mode)
            .iter()
            .map(|e| match &e.detail {
                Detail::Http2(h) => (
                    h.path.clone(),
                    h.status,
                    h.grpc_status,
                    h.traceparent.is_some(),
                ),
                d => panic!("{d:?}"),
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("/demo.Greeter/Say".into(), 200, Some(0), true),
                ("/demo.Greeter/Say".into(), 200, Some(0), false),
                ("/demo.Greeter/Say".into(), 200, Some(5), false),
            ]
        );
    }
}
