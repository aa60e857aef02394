//! Real Redis and PostgreSQL servers with their own clients (redis-cli,
//! psql, pgbench in extended-query mode); server and client spans and the
//! db.client.operation.duration histogram received as OTLP.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{path::PathBuf, process::Command, time::Duration};

use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

fn kind(spans: &[GotSpan], system: &str, k: SpanKind) -> Vec<GotSpan> {
    spans
        .iter()
        .filter(|s| {
            s.span.kind == k as i32
                && attr_str(&s.span.attributes, "db.system.name").as_deref() == Some(system)
        })
        .cloned()
        .collect()
}

async fn wait_histogram(
    sink: &OtlpSink,
    name: &str,
    min: u64,
) -> Vec<(
    Vec<opentelemetry_proto::tonic::common::v1::KeyValue>,
    opentelemetry_proto::tonic::metrics::v1::HistogramDataPoint,
)> {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let p = sink.got.histogram(name);
        if p.iter().map(|(_, d)| d.count).sum::<u64>() >= min
            || std::time::Instant::now() > deadline
        {
            return p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_and_cli() {
    let server_bin = require("redis-server", "redis-server");
    let cli = require("redis-cli", "redis-tools");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("redis");
    let redis = Proc::spawn(
        "redis-server",
        Command::new(server_bin)
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .arg("--dir")
            .arg(&dir),
    );
    wait_listening(port, Duration::from_secs(10));
    let c = format!("{} -p {port}", cli.display());
    let go_file = dir.join("go");
    let script = format!(
        "{}{c} SET greeting hello; {c} GET greeting; {c} LPUSH greeting x; {c} DEL greeting",
        wait_for_go(&go_file)
    );
    let client = Proc::spawn("sh (redis-cli)", Command::new("sh").arg("-c").arg(&script));
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let want = ["SET", "GET", "LPUSH", "DEL"];
    let has_all = |spans: &[GotSpan], k| {
        let names: Vec<String> = kind(spans, "redis", k)
            .iter()
            .map(|s| s.span.name.clone())
            .collect();
        want.iter().all(|w| names.iter().any(|n| n == w))
    };
    let spans = sink
        .wait_spans(Duration::from_secs(15), |s| {
            has_all(s, SpanKind::Server) && has_all(s, SpanKind::Client)
        })
        .await;
    assert!(
        has_all(&spans, SpanKind::Server),
        "server spans: {:#?}",
        kind(&spans, "redis", SpanKind::Server)
    );
    assert!(
        has_all(&spans, SpanKind::Client),
        "client spans: {:#?}",
        kind(&spans, "redis", SpanKind::Client)
    );
    let server = kind(&spans, "redis", SpanKind::Server);
    let lpush = server.iter().find(|s| s.span.name == "LPUSH").unwrap();
    assert_eq!(
        attr_str(&lpush.span.attributes, "error.type").as_deref(),
        Some("WRONGTYPE")
    );
    // Debian's redis-server is a symlink to redis-check-rdb, so the
    // executable name is not a reliable check: the pid is.
    assert_eq!(
        attr_int(&lpush.resource, "process.pid"),
        Some(i64::from(redis.pid()))
    );
    let get = server.iter().find(|s| s.span.name == "GET").unwrap();
    assert!(get.span.status.is_none());
    assert!(get.span.end_time_unix_nano >= get.span.start_time_unix_nano);

    let points = wait_histogram(&sink, "db.client.operation.duration", 4).await;
    let ops: Vec<String> = points
        .iter()
        .filter_map(|(_, p)| attr_str(&p.attributes, "db.operation.name"))
        .collect();
    for w in want {
        assert!(ops.iter().any(|o| o == w), "{w} missing from {ops:?}");
    }
    agent.shutdown(Duration::from_secs(5)).await;
}

fn pg_bin(name: &str) -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path().join("bin").join(name))
                .filter(|p| p.exists())
                .collect()
        })
        .unwrap_or_default();
    versions.sort();
    versions.pop().unwrap_or_else(|| {
        panic!("PostgreSQL's {name} is not installed (Debian package `postgresql`; CI installs it via .ci/apt.d/agent.txt)")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_simple_and_extended_queries() {
    let initdb = pg_bin("initdb");
    let postgres = pg_bin("postgres");
    let pgbench = pg_bin("pgbench");
    let psql = require("psql", "postgresql-client");
    let setpriv = require("setpriv", "util-linux");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("pg");
    let data = dir.join("data");
    // PostgreSQL refuses to run as root: the cluster belongs to `postgres`.
    run_ok(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir),
    );
    let as_pg = |bin: &PathBuf| {
        let mut c = Command::new(&setpriv);
        c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
            .arg(bin);
        c
    };
    run_ok(
        as_pg(&initdb)
            .args(["-A", "trust", "-U", "postgres", "--no-sync", "-D"])
            .arg(&data),
    );
    let _server = Proc::spawn(
        "postgres",
        as_pg(&postgres)
            .arg("-D")
            .arg(&data)
            .args([
                "-p",
                &port.to_string(),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
            ])
            .arg("-k")
            .arg(&dir),
    );
    wait_listening(port, Duration::from_secs(20));

    let bench_sql = dir.join("bench.sql");
    std::fs::write(
        &bench_sql,
        "select count(*) from pg_class where relkind = 'r';\n",
    )
    .unwrap();
    let go_file = dir.join("go");
    let script = format!(
        "{wait}{psql} -h 127.0.0.1 -p {port} -U postgres -d postgres -X -q -c 'select 41 + 1' -c 'select * from no_such_table'; \
         {pgbench} -h 127.0.0.1 -p {port} -U postgres -n -M extended -t 2 -f {f} postgres",
        psql = psql.display(),
        pgbench = pgbench.display(),
        f = bench_sql.display(),
        wait = wait_for_go(&go_file),
    );
    let client = Proc::spawn(
        "sh (psql, pgbench)",
        Command::new("sh").arg("-c").arg(&script),
    );
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    cfg.services.push(mop_agent::config::ServiceRule {
        executable: Some("postgres".into()),
        service_name: Some("orders-db".into()),
        namespace: Some("team-db".into()),
        ..Default::default()
    });
    let agent = start_agent(cfg).await;
    go(&go_file);

    let ready = |s: &[GotSpan], k| {
        let q: Vec<String> = kind(s, "postgresql", k)
            .iter()
            .filter_map(|x| attr_str(&x.span.attributes, "db.query.text"))
            .collect();
        q.iter().any(|t| t == "select ? + ?")
            && q.iter().any(|t| t == "select * from no_such_table")
            && q.iter()
                .filter(|t| t.starts_with("select count(*) from pg_class where relkind = ?"))
                .count()
                >= 2
    };
    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            ready(s, SpanKind::Server) && ready(s, SpanKind::Client)
        })
        .await;
    assert!(
        ready(&spans, SpanKind::Server),
        "server spans: {:#?}",
        kind(&spans, "postgresql", SpanKind::Server)
    );
    assert!(
        ready(&spans, SpanKind::Client),
        "client spans: {:#?}",
        kind(&spans, "postgresql", SpanKind::Client)
    );
    let server = kind(&spans, "postgresql", SpanKind::Server);
    let bad = server
        .iter()
        .find(|s| {
            attr_str(&s.span.attributes, "db.query.text").as_deref()
                == Some("select * from no_such_table")
        })
        .unwrap();
    // 42P01: undefined_table.
    assert_eq!(
        attr_str(&bad.span.attributes, "db.response.status_code").as_deref(),
        Some("42P01")
    );
    assert_eq!(bad.span.name, "SELECT");
    // Backends are forked after the agent started: followed via fork.
    assert_eq!(
        attr_str(&bad.resource, "service.name").as_deref(),
        Some("orders-db")
    );
    assert_eq!(
        attr_str(&bad.resource, "k8s.namespace.name").as_deref(),
        Some("team-db")
    );

    let points = wait_histogram(&sink, "db.client.operation.duration", 4).await;
    assert!(points.iter().any(
        |(_, p)| attr_str(&p.attributes, "db.system.name").as_deref() == Some("postgresql")
            && attr_str(&p.attributes, "error.type").as_deref() == Some("42P01")
    ));
    agent.shutdown(Duration::from_secs(5)).await;
}
