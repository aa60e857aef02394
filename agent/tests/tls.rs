//! TLS seen through the OpenSSL uprobes: real servers and clients from
//! Debian (nginx with `ssl`, curl, Python's `ssl` module) on a certificate
//! made by `openssl` for the test; the plaintext goes through the same
//! parsers and the spans say `url.scheme=https`.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{path::Path, process::Command, time::Duration};

use common::*;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;

/// A self-signed certificate and its key, in `dir`.
fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let openssl = require("openssl", "openssl");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    run_ok(
        Command::new(openssl)
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
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
    (cert, key)
}

fn spans_of(spans: &[GotSpan], kind: SpanKind, port: u16) -> Vec<GotSpan> {
    spans
        .iter()
        .filter(|s| {
            s.span.kind == kind as i32
                && attr_int(&s.span.attributes, "server.port") == Some(i64::from(port))
        })
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_https_and_curl() {
    let nginx = require("nginx", "nginx-light");
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("nginx-tls");
    let (cert, key) = self_signed(&dir);
    let d = dir.display();
    let conf = format!(
        "daemon off;\nmaster_process on;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n\
           client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;\n\
           uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{\n    listen 127.0.0.1:{port} ssl;\n\
             ssl_certificate {c};\n    ssl_certificate_key {k};\n\
             location /api/ {{ default_type text/plain; return 200 \"ok\\n\"; }}\n\
             location /boom {{ return 502; }}\n  }}\n}}\n",
        c = cert.display(),
        k = key.display(),
    );
    let conf_path = dir.join("nginx.conf");
    std::fs::write(&conf_path, conf).unwrap();
    let _server = Proc::spawn(
        "nginx",
        Command::new(nginx)
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&*dir),
    );
    wait_listening(port, Duration::from_secs(10));

    let base = format!("https://127.0.0.1:{port}");
    let go_file = dir.join("go");
    // One curl, three requests on one keep-alive TLS connection.
    let script = format!(
        "{w}{c} -sk -o /dev/null -o /dev/null -o /dev/null {base}/api/orders/1234 {base}/boom {base}/api/orders/99",
        c = curl.display(),
        w = wait_for_go(&go_file),
    );
    let client = Proc::spawn("sh (curl)", Command::new("sh").arg("-c").arg(&script));
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            spans_of(s, SpanKind::Server, port).len() >= 3
                && spans_of(s, SpanKind::Client, port).len() >= 3
        })
        .await;
    let srv = spans_of(&spans, SpanKind::Server, port);
    assert_eq!(srv.len(), 3, "server spans: {srv:#?}");
    for s in &srv {
        assert_eq!(
            attr_str(&s.span.attributes, "url.scheme").as_deref(),
            Some("https"),
            "{s:#?}"
        );
    }
    let names: Vec<_> = srv.iter().map(|s| s.span.name.as_str()).collect();
    assert_eq!(
        names
            .iter()
            .filter(|n| **n == "GET /api/orders/{id}")
            .count(),
        2,
        "{names:?}"
    );
    let boom = srv.iter().find(|s| s.span.name == "GET /boom").unwrap();
    assert_eq!(
        attr_int(&boom.span.attributes, "http.response.status_code"),
        Some(502)
    );
    assert_eq!(
        attr_str(&boom.resource, "process.executable.name").as_deref(),
        Some("nginx")
    );
    let cli = spans_of(&spans, SpanKind::Client, port);
    assert_eq!(cli.len(), 3, "client spans: {cli:#?}");
    let urls: Vec<String> = cli
        .iter()
        .filter_map(|s| attr_str(&s.span.attributes, "url.full"))
        .collect();
    assert!(
        urls.contains(&format!("{base}/api/orders/1234")),
        "{urls:?}"
    );
    assert!(urls.contains(&format!("{base}/boom")), "{urls:?}");
    // curl exits before a rescan could look at it: its spans come from the
    // library hooked for nginx, named by the task name the kernel gave.
    assert!(
        cli.iter().all(|s| {
            attr_str(&s.resource, "process.executable.name").as_deref() == Some("curl")
        })
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

/// Python's `ssl` module calls SSL_read_ex/SSL_write_ex (curl and nginx
/// call SSL_read/SSL_write).
const PY_SERVER: &str = r#"
import http.server, ssl, sys
port, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        body = b"hello\n"
        self.send_response(404 if self.path.startswith("/missing") else 200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", port), H)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"#;

const PY_CLIENT: &str = r#"
import http.client, os, ssl, sys, time
port, go = int(sys.argv[1]), sys.argv[2]
for _ in range(600):
    if os.path.exists(go):
        break
    time.sleep(0.05)
ctx = ssl._create_unverified_context()
c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
for path in ("/greet/42", "/missing/7"):
    c.request("GET", path)
    r = c.getresponse()
    r.read()
c.close()
time.sleep(3600)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ssl_server_and_client() {
    let python = require("python3", "python3");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("py-tls");
    let (cert, key) = self_signed(&dir);
    let _server = Proc::spawn(
        "python3 (ssl server)",
        Command::new(&python)
            .arg("-c")
            .arg(PY_SERVER)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key),
    );
    wait_listening(port, Duration::from_secs(10));
    let go_file = dir.join("go");
    // The client imports ssl before it waits, so it maps libssl by the
    // time the agent looks at it; it stays alive to be named from /proc.
    let client = Proc::spawn(
        "python3 (ssl client)",
        Command::new(&python)
            .arg("-c")
            .arg(PY_CLIENT)
            .arg(port.to_string())
            .arg(&go_file),
    );
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            spans_of(s, SpanKind::Server, port).len() >= 2
                && spans_of(s, SpanKind::Client, port).len() >= 2
        })
        .await;
    let srv = spans_of(&spans, SpanKind::Server, port);
    assert_eq!(srv.len(), 2, "server spans: {srv:#?}");
    let ok = srv
        .iter()
        .find(|s| s.span.name == "GET /greet/{id}")
        .unwrap_or_else(|| panic!("{srv:#?}"));
    assert_eq!(
        attr_str(&ok.span.attributes, "url.scheme").as_deref(),
        Some("https")
    );
    assert_eq!(
        attr_int(&ok.span.attributes, "http.response.status_code"),
        Some(200)
    );
    assert_eq!(
        attr_int(&ok.resource, "process.pid"),
        Some(i64::from(_server.pid()))
    );
    let missing = srv
        .iter()
        .find(|s| s.span.name == "GET /missing/{id}")
        .unwrap();
    assert_eq!(
        attr_int(&missing.span.attributes, "http.response.status_code"),
        Some(404)
    );
    let cli = spans_of(&spans, SpanKind::Client, port);
    assert_eq!(cli.len(), 2, "client spans: {cli:#?}");
    assert!(cli.iter().any(|s| {
        attr_str(&s.span.attributes, "url.full").as_deref()
            == Some(&*format!("https://127.0.0.1:{port}/greet/42"))
    }));
    assert!(
        cli.iter()
            .all(|s| attr_int(&s.resource, "process.pid") == Some(i64::from(client.pid())))
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

fn pg_bin(name: &str) -> std::path::PathBuf {
    let mut versions: Vec<std::path::PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
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

/// `sslmode=require`: the SSLRequest and its `S` answer travel in the clear,
/// everything after inside TLS. Without the uprobes the agent would see
/// the startup message no more and no span at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sslmode_require() {
    let initdb = pg_bin("initdb");
    let postgres = pg_bin("postgres");
    let psql = require("psql", "postgresql-client");
    let setpriv = require("setpriv", "util-linux");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("pg-tls");
    let data = dir.join("data");
    let (cert, key) = self_signed(&dir);
    run_ok(
        Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&*dir),
    );
    // PostgreSQL refuses a key others can read.
    run_ok(Command::new("chmod").arg("600").arg(&key));
    let as_pg = |bin: &std::path::PathBuf| {
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
    // Only TLS connections over TCP are accepted.
    std::fs::write(
        data.join("pg_hba.conf"),
        "hostssl all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
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
                "-c",
                "ssl=on",
            ])
            .arg("-c")
            .arg(format!("ssl_cert_file={}", cert.display()))
            .arg("-c")
            .arg(format!("ssl_key_file={}", key.display()))
            .arg("-k")
            .arg(&*dir),
    );
    wait_listening(port, Duration::from_secs(20));
    let go_file = dir.join("go");
    let script = format!(
        "{wait}{psql} 'host=127.0.0.1 port={port} user=postgres dbname=postgres sslmode=require' -X -q \
         -c 'select 41 + 1' -c 'select * from no_such_table'",
        psql = psql.display(),
        wait = wait_for_go(&go_file),
    );
    let client = Proc::spawn("sh (psql)", Command::new("sh").arg("-c").arg(&script));
    let mut cfg = config(&sink, &[port]);
    cfg.instrument.pids = vec![client.pid()];
    let agent = start_agent(cfg).await;
    go(&go_file);

    let pg = |s: &[GotSpan], k: SpanKind| -> Vec<GotSpan> {
        s.iter()
            .filter(|x| {
                x.span.kind == k as i32
                    && attr_str(&x.span.attributes, "db.system.name").as_deref()
                        == Some("postgresql")
            })
            .cloned()
            .collect()
    };
    let ready = |s: &[GotSpan], k| pg(s, k).len() >= 2;
    let spans = sink
        .wait_spans(Duration::from_secs(20), |s| {
            ready(s, SpanKind::Server) && ready(s, SpanKind::Client)
        })
        .await;
    for k in [SpanKind::Server, SpanKind::Client] {
        let got = pg(&spans, k);
        let texts: Vec<String> = got
            .iter()
            .filter_map(|x| attr_str(&x.span.attributes, "db.query.text"))
            .collect();
        assert_eq!(texts.len(), 2, "{k:?} spans: {got:#?}");
        // Literals replaced, as the conventions ask of non-parameterized text.
        assert!(texts.iter().any(|t| t == "select ? + ?"), "{texts:?}");
        let bad = got
            .iter()
            .find(|x| {
                attr_str(&x.span.attributes, "db.query.text").as_deref()
                    == Some("select * from no_such_table")
            })
            .unwrap_or_else(|| panic!("{texts:?}"));
        assert_eq!(
            attr_str(&bad.span.attributes, "db.response.status_code").as_deref(),
            Some("42P01")
        );
    }
    agent.shutdown(Duration::from_secs(5)).await;
}

/// `capture.tls: false`: no library is hooked, TLS stays ciphertext, and no
/// span comes from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_capture_can_be_turned_off() {
    let python = require("python3", "python3");
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("py-tls-off");
    let (cert, key) = self_signed(&dir);
    let _server = Proc::spawn(
        "python3 (ssl server)",
        Command::new(&python)
            .arg("-c")
            .arg(PY_SERVER)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key),
    );
    wait_listening(port, Duration::from_secs(10));
    let mut cfg = config(&sink, &[port]);
    cfg.capture.tls = false;
    let agent = start_agent(cfg).await;
    run_ok(Command::new(&curl).args(["-sfk", &format!("https://127.0.0.1:{port}/greet/1")]));
    // Three export intervals: a span would have arrived by now.
    let spans = sink
        .wait_spans(Duration::from_millis(600), |s| {
            !spans_of(s, SpanKind::Server, port).is_empty()
        })
        .await;
    assert!(
        spans_of(&spans, SpanKind::Server, port).is_empty(),
        "{spans:#?}"
    );
    agent.shutdown(Duration::from_secs(5)).await;
}

/// A TLS server that starts after the agent: found by the rescan (its port),
/// its libssl hooked then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_server_started_after_the_agent() {
    let python = require("python3", "python3");
    let curl = require("curl", "curl");
    let sink = OtlpSink::start().await;
    let port = free_port();
    let dir = temp_dir("py-tls-late");
    let (cert, key) = self_signed(&dir);
    let agent = start_agent(config(&sink, &[port])).await;
    let _server = Proc::spawn(
        "python3 (ssl server)",
        Command::new(&python)
            .arg("-c")
            .arg(PY_SERVER)
            .arg(port.to_string())
            .arg(&cert)
            .arg(&key),
    );
    wait_listening(port, Duration::from_secs(10));
    // Requests until one is seen: the rescan runs every 200 ms here.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    while seen.is_empty() && std::time::Instant::now() < deadline {
        run_ok(Command::new(&curl).args(["-sfk", &format!("https://127.0.0.1:{port}/late/1")]));
        let spans = sink
            .wait_spans(Duration::from_millis(500), |s| {
                !spans_of(s, SpanKind::Server, port).is_empty()
            })
            .await;
        seen = spans_of(&spans, SpanKind::Server, port);
    }
    let s = seen
        .first()
        .expect("no span from a TLS server started after the agent");
    assert_eq!(s.span.name, "GET /late/{id}");
    assert_eq!(
        attr_str(&s.span.attributes, "url.scheme").as_deref(),
        Some("https")
    );
    agent.shutdown(Duration::from_secs(5)).await;
}
