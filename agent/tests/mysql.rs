//! A real MariaDB server (Debian's `mariadb-server`) in a temporary data
//! directory, with the `mariadb` command-line client (COM_QUERY) and
//! mysql-connector-python's prepared cursor (COM_STMT_PREPARE/EXECUTE):
//! server and client spans with `db.system.name=mysql`, sanitized query
//! text, and the db.client.operation.duration histogram.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{process::Command, time::Duration};

use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

const PY_CLIENT: &str = r#"
import os, sys, time
import mysql.connector
port, go = int(sys.argv[1]), sys.argv[2]
for _ in range(600):
    if os.path.exists(go):
        break
    time.sleep(0.05)
cnx = mysql.connector.connect(host="127.0.0.1", port=port, user="root", ssl_disabled=True)
cur = cnx.cursor(prepared=True)
for i in (1, 2):
    cur.execute("SELECT name FROM shop.items WHERE id = %s", (i,))
    assert cur.fetchall()
cnx.close()
"#;

fn mysql_spans(spans: &[GotSpan], k: SpanKind) -> Vec<GotSpan> {
    spans
        .iter()
        .filter(|s| {
            s.span.kind == k as i32
                && attr_str(&s.span.attributes, "db.system.name").as_deref() == Some("mysql")
        })
        .cloned()
        .collect()
}

fn texts(spans: &[GotSpan]) -> Vec<String> {
    spans
        .iter()
        .filter_map(|s| attr_str(&s.span.attributes, "db.query.text"))
        .collect()
}

/// mariadbd on `port` with a fresh data directory in `dir`.
fn start_mariadb(dir: &std::path::Path, port: u16, extra: &[String]) -> Proc {
    let install = require("mariadb-install-db", "mariadb-server");
    let server = require("mariadbd", "mariadb-server");
    let data = dir.join("data");
    // Temporary tables of the bootstrap go to TMPDIR, named by pid and a
    // counter: two tests bootstrapping at once in /tmp collided.
    run_ok(
        Command::new(install)
            .env("TMPDIR", dir)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .args(["--user=root", "--skip-test-db"]),
    );
    let p = Proc::spawn(
        "mariadbd",
        Command::new(server)
            .env("TMPDIR", dir)
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--port={port}"))
            .arg(format!("--socket={}", dir.join("sock").display()))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--log-error={}", dir.join("err.log").display()))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                // The test's clients log in without a password.
                "--skip-grant-tables",
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .args(extra),
    );
    wait_listening(port, Duration::from_secs(30));
    // Accepting connections is not answering queries yet on a busy machine.
    let cli = require("mariadb", "mariadb-client");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = Command::new(&cli)
            .args(["-h", "127.0.0.1", "-P", &port.to_string(), "-u", "root"])
            .args(["-e", "select 1"])
            .output()
            .unwrap();
        if out.status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "mariadbd did not answer within 30 s: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

const QUERY: &str = "select name from shop.items where id = ?";
const PREPARED: &str = "SELECT name FROM shop.items WHERE id = ?";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_queries_and_prepared_statements() {
    let cli = require("mariadb", "mariadb-client");
    let python = require("python3", "python3");
    let probe = Command::new(&python)
        .args(["-c", "import mysql.connector"])
        .output()
        .unwrap();
    assert!(
        probe.status.success(),
        "mysql-connector-python is not installed (CI installs it via .ci/pip.d/agent.txt)"
    );
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("mariadb");
    let _server = start_mariadb(&dir, port, &[]);
    let m = format!("{} -h 127.0.0.1 -P {port} -u root", cli.display());
    run_ok(Command::new("sh").arg("-c").arg(format!(
        "{m} -e \"create database shop; create table shop.items (id int primary key, name varchar(20)); \
         insert into shop.items values (1, 'apple'), (2, 'pear')\""
    )));

    let go_file = dir.join("go");
    // The command-line client stops at the failing statement: it comes last.
    let script = format!(
        "{wait}{m} -e \"select name from shop.items where id = 2; select * from shop.nope\"; \
         {py} -c '{PY_CLIENT}' {port} {go}",
        wait = wait_for_go(&go_file),
        py = python.display(),
        go = go_file.display(),
    );
    let client = Proc::spawn(
        "sh (mariadb, python)",
        Command::new("sh").arg("-c").arg(&script),
    );
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let ready = |s: &[GotSpan], k| {
        let t = texts(&mysql_spans(s, k));
        t.iter().any(|q| q == QUERY)
            && t.iter().any(|q| q == "select * from shop.nope")
            && t.iter().filter(|q| *q == PREPARED).count() >= 2
    };
    let spans = sink
        .wait_spans(Duration::from_secs(30), |s| {
            ready(s, SpanKind::Server) && ready(s, SpanKind::Client)
        })
        .await;
    for k in [SpanKind::Server, SpanKind::Client] {
        let got = mysql_spans(&spans, k);
        assert!(
            ready(&spans, k),
            "{k:?}: {:#?}\nall: {:#?}",
            texts(&got),
            spans
                .iter()
                .map(|s| (
                    s.span.name.clone(),
                    s.span.kind,
                    attr_str(&s.resource, "process.executable.name")
                ))
                .collect::<Vec<_>>()
        );
        let q = got
            .iter()
            .find(|s| attr_str(&s.span.attributes, "db.query.text").as_deref() == Some(QUERY))
            .unwrap();
        assert_eq!(q.span.name, "SELECT");
        assert_eq!(
            attr_str(&q.span.attributes, "db.operation.name").as_deref(),
            Some("SELECT")
        );
        assert!(q.span.status.is_none());
        assert!(q.span.end_time_unix_nano > q.span.start_time_unix_nano);
        let bad = got
            .iter()
            .find(|s| {
                attr_str(&s.span.attributes, "db.query.text").as_deref()
                    == Some("select * from shop.nope")
            })
            .unwrap();
        // ER_NO_SUCH_TABLE.
        assert_eq!(
            attr_str(&bad.span.attributes, "db.response.status_code").as_deref(),
            Some("1146")
        );
        assert_eq!(
            attr_str(&bad.span.attributes, "error.type").as_deref(),
            Some("1146")
        );
        // The literal-free parameterized text, once per execution.
        let executed = got
            .iter()
            .filter(|s| attr_str(&s.span.attributes, "db.query.text").as_deref() == Some(PREPARED))
            .count();
        assert_eq!(executed, 2, "{k:?}: {:#?}", texts(&got));
    }
    let server_side = mysql_spans(&spans, SpanKind::Server);
    assert!(server_side.iter().all(|s| {
        attr_str(&s.resource, "process.executable.name").as_deref() == Some("mariadbd")
    }));

    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let points = loop {
        let p = sink.got.histogram("db.client.operation.duration");
        let n: u64 = p
            .iter()
            .filter(|(_, d)| attr_str(&d.attributes, "db.system.name").as_deref() == Some("mysql"))
            .map(|(_, d)| d.count)
            .sum();
        if n >= 4 || std::time::Instant::now() > deadline {
            break p;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        points.iter().any(|(_, p)| {
            attr_str(&p.attributes, "db.system.name").as_deref() == Some("mysql")
                && attr_str(&p.attributes, "error.type").as_deref() == Some("1146")
        }),
        "{points:#?}"
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

/// MySQL's switch to TLS happens inside its handshake (SSLRequest), after
/// the greeting that identified the connection; the server only accepts
/// TLS here, so every span below came through the OpenSSL uprobes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mariadb_over_tls() {
    let cli = require("mariadb", "mariadb-client");
    let openssl = require("openssl", "openssl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("mariadb-tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-subj",
                "/CN=localhost",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&cert),
    );
    let _server = start_mariadb(
        &dir,
        port,
        &[
            format!("--ssl-cert={}", cert.display()),
            format!("--ssl-key={}", key.display()),
            "--require-secure-transport=ON".into(),
        ],
    );
    let go_file = dir.join("go");
    let script = format!(
        "{wait}{m} -h 127.0.0.1 -P {port} -u root --ssl -e \"select 41 + 1; select * from mysql.nope\"",
        wait = wait_for_go(&go_file),
        m = cli.display(),
    );
    let client = Proc::spawn(
        "sh (mariadb --ssl)",
        Command::new("sh").arg("-c").arg(&script),
    );
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let ready = |s: &[GotSpan], k| {
        let t = texts(&mysql_spans(s, k));
        t.iter().any(|q| q == "select ? + ?") && t.iter().any(|q| q == "select * from mysql.nope")
    };
    let spans = sink
        .wait_spans(Duration::from_secs(30), |s| {
            ready(s, SpanKind::Server) && ready(s, SpanKind::Client)
        })
        .await;
    for k in [SpanKind::Server, SpanKind::Client] {
        let got = mysql_spans(&spans, k);
        assert!(ready(&spans, k), "{k:?}: {:#?}", texts(&got));
        let bad = got
            .iter()
            .find(|s| {
                attr_str(&s.span.attributes, "db.query.text").as_deref()
                    == Some("select * from mysql.nope")
            })
            .unwrap();
        assert_eq!(
            attr_str(&bad.span.attributes, "db.response.status_code").as_deref(),
            Some("1146")
        );
    }
    agent.shutdown(Duration::from_secs(5)).await;
}
