use super::*;
use QueryKind::{Log, Metric};

/// Valid queries in the shapes of the Loki documentation.
const VALID: &[(&str, QueryKind)] = &[
    // Stream selectors.
    (r#"{app="mysql",name="mysql-backup"}"#, Log),
    (r#"{name=~"mysql.+"}"#, Log),
    (r#"{name!~"mysql.+", env="prod"}"#, Log),
    (r#"{name!~"mysql-\\d+", cluster="us-central1"}"#, Log),
    (r#"{app!=""}"#, Log),
    ("{app=`raw\\string`}", Log),
    // Line filters.
    (r#"{job="mysql"} |= "error""#, Log),
    (r#"{job="mysql"} |= "error" != "timeout""#, Log),
    (
        r#"{container="frontend"} |~ "(?i)error|fatal" !~ `debug\d+`"#,
        Log,
    ),
    (r#"{job="mysql"} |= "error" or "fatal" or "panic""#, Log),
    (
        r#"{app="x"} |> "<_> level=error <_>" !> "<_> debug <_>""#,
        Log,
    ),
    (r#"{job_name="myapp"} |= ip("192.168.4.5/16")"#, Log),
    (
        r#"{job_name="myapp"} != ip("192.168.4.5-192.168.4.20")"#,
        Log,
    ),
    (r#"{app="x"}|="metrics.go"|logfmt"#, Log),
    // Parsers and formatting.
    (
        r#"{container="query-frontend",namespace="loki-dev"} |= "metrics.go" | logfmt | duration > 10s and throughput_mb < 500"#,
        Log,
    ),
    (
        r#"{app="x"} | json first_server="servers[0]", ua="request.headers[\"User-Agent\"]""#,
        Log,
    ),
    (r#"{app="x"} | json | json servers"#, Log),
    (
        r#"{app="x"} | logfmt --strict --keep-empty host, status="response.status""#,
        Log,
    ),
    (
        r#"{job="x"} | regexp "(?P<method>\\w+) (?P<path>[\\w|/]+) \\((?P<status>\\d+?)\\) (?P<duration>.*)""#,
        Log,
    ),
    (
        r#"{job="nginx"} | pattern "<ip> - - <_> \"<method> <uri> <_>\" <status> <size> <_> \"<agent>\" <_>""#,
        Log,
    ),
    (r#"{job="x"} | unpack | decolorize"#, Log),
    (
        r#"{job="x"} | json | line_format "{{.query}} {{.duration}}""#,
        Log,
    ),
    (
        r#"{job="x"} | logfmt | label_format foo=bar, status="{{.status_code}}""#,
        Log,
    ),
    (
        r#"{job="x"} | logfmt | drop level, method="GET", path=~"/api.*", __error__"#,
        Log,
    ),
    (r#"{job="x"} | logfmt | keep level, method!="GET""#, Log),
    // Label filters.
    (
        r#"{job="x"} | logfmt | duration >= 20ms or (method="GET" and size <= 20KB)"#,
        Log,
    ),
    (
        r#"{job="x"} | json | status >= 500, size > 1.5MiB, latency < 1.5s, ratio == -0.5"#,
        Log,
    ),
    (
        r#"{job="x"} | logfmt | level="error" status_code!="200" | __error__="""#,
        Log,
    ),
    (
        r#"{job="x"} | logfmt | remote_addr = ip("2001:db8::1-2001:db8::8") | level =~ "err|warn""#,
        Log,
    ),
    (r#"{job="x"} | json | duration > 1h30m | bytes < 10M"#, Log),
    // Comments and parentheses.
    ("{app=\"x\"} # only app x\n  |= \"foo\" # and foo", Log),
    (r#"({app="x"} |= "a")"#, Log),
    // Range aggregations.
    (r#"count_over_time({job="mysql"}[5m])"#, Metric),
    (r#"count_over_time({app="x"} |= "a" [5m])"#, Metric),
    (r#"count_over_time({app="x"}[5m] |= "a" | json)"#, Metric),
    (r#"bytes_rate({app="x"}[30s])"#, Metric),
    (r#"sum(bytes_over_time({app="x"}[1h] offset 1d))"#, Metric),
    (r#"absent_over_time({app="x"}[100ms])"#, Metric),
    (
        r#"rate({app="x"}[1w]) * 0 + count_over_time({app="x"}[1d])"#,
        Metric,
    ),
    (
        r#"sum by (host) (rate({job="mysql"} |= "error" != "timeout" | json | duration > 10s [1m]))"#,
        Metric,
    ),
    (
        r#"avg(rate(({job="nginx"} |= "GET")[10s])) by (region)"#,
        Metric,
    ),
    (
        r#"sum by (org_id) (sum_over_time({cluster="ops-tools1",container="loki-dev"} |= "metrics.go" | logfmt | unwrap bytes_processed [1m]))"#,
        Metric,
    ),
    (
        r#"quantile_over_time(0.99, {cluster="ops-tools1",container="ingress-nginx"} | json | __error__ = "" | unwrap request_time [1m]) by (path)"#,
        Metric,
    ),
    (
        r#"avg_over_time({app="x"} | logfmt | unwrap duration(latency) | __error__="" [5m]) by (pod)"#,
        Metric,
    ),
    (
        r#"max_over_time({app="x"} | json | unwrap duration_seconds(elapsed) [5m]) without (instance)"#,
        Metric,
    ),
    (
        r#"rate({app="x"} | logfmt | unwrap bytes(size) [5m])"#,
        Metric,
    ),
    (
        r#"min_over_time({app="x"}[5m] offset -1h | logfmt | unwrap latency)"#,
        Metric,
    ),
    (
        r#"first_over_time({app="x"} | unwrap latency [5m]) by (pod)"#,
        Metric,
    ),
    (
        r#"last_over_time(({app="x"} | logfmt | unwrap latency)[5m])"#,
        Metric,
    ),
    (
        r#"stddev_over_time({app="x"} | logfmt | unwrap latency [5m])"#,
        Metric,
    ),
    (
        r#"stdvar_over_time({app="x"} | logfmt | unwrap latency [1h30m])"#,
        Metric,
    ),
    (
        r#"rate_counter({app="x"} | logfmt | unwrap requests_total [5m])"#,
        Metric,
    ),
    // Vector aggregations.
    (
        r#"topk(10, sum(rate({region="us-east1"}[5m])) by (name))"#,
        Metric,
    ),
    (r#"bottomk by (app) (3, rate({app="x"}[5m]))"#, Metric),
    (
        r#"approx_topk(5, sum by (path) (rate({app="x"}[5m])))"#,
        Metric,
    ),
    (r#"sum without (instance) (rate({app="x"}[5m]))"#, Metric),
    (r#"sort_desc(sum by (app) (rate({app="x"}[5m])))"#, Metric),
    (
        r#"count(avg by (level) (count_over_time({app="x"} | logfmt [5m]))) > bool 1"#,
        Metric,
    ),
    (r#"SUM(Rate({app="x"}[5m])) BY (app)"#, Metric),
    // Binary operations, literals, functions.
    (
        r#"sum(rate({app="foo", level="warn"}[1m])) / sum(rate({app="foo", level="error"}[1m])) * 100"#,
        Metric,
    ),
    (
        r#"sum by (job) (count_over_time({app="foo"} |= "error" [5m])) > 10 and on (job) sum by (job) (rate({app="bar"}[5m])) unless sum(rate({app="baz"}[5m]))"#,
        Metric,
    ),
    (
        r#"sum by (a) (rate({app="x"}[1m])) / ignoring(b) group_left(c) sum by (a, b) (rate({app="x"}[1m]))"#,
        Metric,
    ),
    (
        r#"rate({app="x"}[1m]) * on() group_right rate({app="y"}[1m])"#,
        Metric,
    ),
    (
        r#"label_replace(rate({job="api-server",service="a:c"} |= "err" [5m]), "foo", "$1", "service", "(.*):.*")"#,
        Metric,
    ),
    (
        r#"sum(count_over_time({app="x"}[5m])) or vector(0)"#,
        Metric,
    ),
    (r#"vector(1)"#, Metric),
    (r#"-1 * 2 ^ 3 ^ 2 + 1e3 - -.5 % 4"#, Metric),
    (r#"(((count_over_time({app="x"}[5m]))))"#, Metric),
    // Alerting-rule shapes.
    (
        r#"sum(rate({namespace="prod", container=~"api|web"} |~ `(?i)(error|exception)` [5m])) by (container) / sum(rate({namespace="prod", container=~"api|web"}[5m])) by (container) > 0.05"#,
        Metric,
    ),
    (
        r#"topk(3, sum by (path) (count_over_time({app="nginx"} | pattern `<ip> - - [<_>] "<method> <path> <_>" <status> <_>` | status >= 500 [5m])))"#,
        Metric,
    ),
    (
        r#"max_over_time({app="x"} | regexp `took (?P<took>\d+)ms` | unwrap took [5m]) by (instance) > 5000"#,
        Metric,
    ),
    (r#"count_over_time({app="x"}|="oom"[5m])>=1"#, Metric),
    (r#"sum(rate({app="x"}[1m]))by(pod)"#, Metric),
    (
        "sum by (job) (\n  count_over_time({namespace=\"tns\"} |= \"level=error\"[5m])\n/\n  count_over_time({namespace=\"tns\"}[5m])\n) * 100",
        Metric,
    ),
    (
        r#"{app="foo"} |= "bar" | json | latency >= 250ms or ( status_code < 500 and status_code > 200) | foo="bar" buzz!="blip", blop=~"boop" or fuzz==5"#,
        Log,
    ),
    (
        r#"{ foo = "bar" , ip="foo"}|logfmt|= ip("127.0.0.1")|ip="2.3.4.5"|ipaddr=ip("4.5.6.7")"#,
        Log,
    ),
    (r#"1 >= 1 > bool 1"#, Metric),
];

#[track_caller]
fn assert_invalid(query: &str, offset: usize, phrase: &str) {
    match parse(query) {
        Ok(kind) => panic!("expected an error for {query:?}, got {kind:?}"),
        Err(e) => {
            assert_eq!(e.offset, offset, "wrong offset for {query:?}: {e}");
            assert!(
                e.message.contains(phrase),
                "message for {query:?} lacks {phrase:?}: {}",
                e.message
            );
        }
    }
}

#[test]
fn valid_queries_parse_with_the_right_kind() {
    assert!(VALID.len() >= 40);
    for &(query, kind) in VALID {
        match parse(query) {
            Ok(k) => assert_eq!(k, kind, "wrong kind for {query:?}"),
            Err(e) => panic!("{query:?} was rejected: {e}"),
        }
    }
}

#[test]
fn brief_examples() {
    assert_invalid(
        r#"{app="x" |= "foo""#,
        9,
        "expected `,` or `}` in stream selector",
    );
    assert_invalid(
        r#"rate({app="x"})"#,
        14,
        r#"rate needs a range: write `rate({app="x"}[5m])`"#,
    );
    assert_invalid(
        r#"sum(rate({app="x"}[5x]))"#,
        19,
        "invalid duration `5x`: use units ms, s, m, h, d, w, y",
    );
}

#[test]
fn invalid_selectors() {
    assert_invalid("{}", 0, "at least one label matcher");
    assert_invalid(r#"{app=~".*"}"#, 0, "does not match the empty string");
    assert_invalid(
        r#"{app="", env!="prod"}"#,
        0,
        "does not match the empty string",
    );
    assert_invalid(r#"{on="x"}"#, 1, "`on` is a LogQL keyword");
    assert_invalid(r#"{"app"="x"}"#, 1, "without quotes");
    assert_invalid(r#"{app=="x"}"#, 4, "use `=` instead of `==`");
    assert_invalid(r#"{app="x",}"#, 9, "expected a label matcher after `,`");
    assert_invalid(r#"{app="x}"#, 5, "unterminated string");
    assert_invalid(r#"{app='x'}"#, 5, "single-quoted strings are not supported");
}

#[test]
fn invalid_strings_and_regexes() {
    assert_invalid(r#"{app="x"} |= "\d+""#, 14, "invalid escape `\\d`");
    assert_invalid(r#"{app="x"} |~ "(foo""#, 14, "missing closing `)`");
    assert_invalid(r#"{app="x"} |~ "(?=foo)""#, 14, "lookahead");
    assert_invalid(r#"{app="x"} |~ `(a)\1`"#, 17, "backreference");
    assert_invalid(r#"{app="x"} |~ "a**""#, 16, "nested repetition");
    assert_invalid(
        r#"{app="x"} | level=~"[z-a]""#,
        21,
        "invalid character class range",
    );
    assert_invalid(r#"{app="x"} | regexp "(\\w+)""#, 19, "named capture");
    assert_invalid(r#"{app="x"} | pattern "<a><b>""#, 24, "next to each other");
    assert_invalid(
        r#"{app="x"} | pattern "<_> foo""#,
        21,
        "at least one named capture",
    );
}

#[test]
fn invalid_pipelines() {
    assert_invalid(
        r#"{app="x"} | json | level="error" | distinct"#,
        43,
        "expected a comparison operator",
    );
    assert_invalid(
        r#"{app="x"} |= ip("300.1.1.1")"#,
        16,
        "invalid ip() pattern",
    );
    assert_invalid(
        r#"{app="x"} |~ ip("1.2.3.4")"#,
        13,
        "only be used with the `|=` and `!=`",
    );
    assert_invalid(
        r#"{app="x"} | status >= 5x"#,
        22,
        "invalid number, duration or size `5x`",
    );
    assert_invalid(
        r#"{app="x"} | status == "500""#,
        22,
        "compare strings with `=`",
    );
    assert_invalid(
        r#"{app="x"} | logfmt --bogus"#,
        19,
        "unknown parser flag `--bogus`",
    );
    assert_invalid(
        r#"{app="x"} | unwrap latency"#,
        12,
        "only allowed inside a range aggregation",
    );
    assert_invalid(
        r#"sum_over_time({app="x"} | unwrap latency | json [5m])"#,
        43,
        "only label filters",
    );
    assert_invalid(
        r#"count_over_time({app="x"} |= "a" [5m] |= "b")"#,
        38,
        "entirely before or entirely after the range",
    );
}

#[test]
fn invalid_aggregations() {
    assert_invalid(
        r#"count_over_time({app="x"} | unwrap latency [5m])"#,
        28,
        "cannot be used with `| unwrap`",
    );
    assert_invalid(
        r#"sum_over_time({app="x"}[5m])"#,
        0,
        "needs `| unwrap <label>`",
    );
    assert_invalid(
        r#"quantile_over_time({app="x"} | unwrap l [5m])"#,
        19,
        "the quantile as the first argument",
    );
    assert_invalid(
        r#"rate(5, {app="x"}[5m])"#,
        5,
        "rate does not take a parameter",
    );
    assert_invalid(
        r#"rate({app="x"}[5m]) by (a)"#,
        20,
        "rate does not support `by`/`without`",
    );
    assert_invalid(r#"rate({app="x"}[1.5m])"#, 15, "fractions are not allowed");
    assert_invalid(r#"rate({app="x"}[30m1h])"#, 15, "largest to smallest");
    assert_invalid(r#"rate(sum(rate({app="x"}[5m])))"#, 5, "no subqueries");
    assert_invalid(
        r#"count_over_time({app="x"}[5m]) offset 1h"#,
        31,
        "`offset` must directly follow",
    );
    assert_invalid(r#"sum({app="x"})"#, 4, "its argument is a log query");
    assert_invalid(
        r#"sum({app="x"}[5m])"#,
        13,
        "only allowed inside a range aggregation",
    );
    assert_invalid(
        r#"topk(rate({app="x"}[5m]))"#,
        0,
        "needs the number of series",
    );
    assert_invalid(r#"topk(0, rate({app="x"}[5m]))"#, 5, "greater than 0");
    assert_invalid(r#"topk(1.5, rate({app="x"}[5m]))"#, 5, "whole number");
    assert_invalid(
        r#"sum(5, rate({app="x"}[5m]))"#,
        4,
        "sum does not take a parameter",
    );
    assert_invalid(
        r#"sort by (a) (rate({app="x"}[5m]))"#,
        5,
        "does not support grouping",
    );
    assert_invalid(
        r#"sum by (a) (rate({app="x"}[5m])) by (b)"#,
        33,
        "already has a `by`/`without` clause",
    );
    assert_invalid(r#"increase({app="x"}[5m])"#, 0, "PromQL function");
    assert_invalid(r#"foo({app="x"})"#, 0, "unknown function `foo`");
}

#[test]
fn invalid_misc() {
    assert_invalid(
        r#"{app="x"} |= "a" or"#,
        19,
        "a quoted string after the line filter `|=`",
    );
    assert_invalid(
        r#"count_over_time((({app="x"}))[5m])"#,
        28,
        "only one pair of parentheses",
    );
    assert_invalid(r#"{app="x"} | json | distinct"#, 27, "removed from LogQL");
    assert_invalid(
        r#"sum by (a) rate({app="x"}[5m])"#,
        11,
        "after its `by`/`without` clause",
    );
    assert_invalid(
        r#"stddev({ foo = "bar" })"#,
        7,
        "its argument is a log query",
    );
    assert_invalid(r#"bool 1 > 1"#, 0, "unexpected `bool`");
    assert_invalid(r#"{app="x"} |~ "\\1""#, 13, "backreference");
    assert_invalid(
        r#"label_replace(rate({app="x"}[5m]), "a", "$1", "b", "x\\q")"#,
        51,
        "invalid escape `\\q`",
    );
    // Quoted input is clipped, so messages stay readable.
    let long = format!("{}(1)", "f".repeat(10_000));
    match parse(&long) {
        Ok(kind) => panic!("accepted as {kind:?}"),
        Err(e) => assert!(e.message.len() < 600, "{}", e.message.len()),
    }
}

#[test]
fn invalid_binary_operations() {
    assert_invalid(r#"{app="x"} + 1"#, 10, "its left side is a log query");
    assert_invalid(r#"1 + {app="x"}"#, 4, "its right side is a log query");
    assert_invalid(r#"sum(rate({app="x"}[5m])) and 1"#, 29, "number literal");
    assert_invalid(
        r#"1 * group_left rate({app="x"}[5m])"#,
        4,
        "must follow `on(...)`",
    );
    assert_invalid(
        r#"-rate({app="x"}[5m])"#,
        1,
        "a sign directly before a number",
    );
    assert_invalid(
        r#"{app="x"}[5m]"#,
        9,
        "only allowed inside a range aggregation",
    );
    assert_invalid(r#"{app="x"} foo"#, 10, "a pipeline stage");
    assert_invalid(r#"sum(rate({app="x"}[5m])"#, 23, "`)` to close sum(");
    assert_invalid("", 0, "a stream selector");
}

#[test]
fn error_display_and_size_limit() {
    let e = LogqlError::new(3, "boom");
    assert_eq!(e.to_string(), "boom (at byte 3)");
    let long = format!("{{app=\"x\"}} |= \"{}\"", "a".repeat(MAX_QUERY_BYTES));
    assert_invalid(&long, 0, "too long");
}

/// Tiny deterministic PRNG for the mutation test.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[track_caller]
fn assert_no_panic(query: &str) {
    if let Err(e) = parse(query) {
        assert!(
            e.offset <= query.len() && query.is_char_boundary(e.offset),
            "offset {} out of range for {query:?}",
            e.offset
        );
        assert!(!e.message.is_empty() && e.message.len() < 1000);
    }
}

#[test]
fn every_prefix_of_every_valid_query_is_handled() {
    for &(query, _) in VALID {
        for (i, _) in query.char_indices() {
            assert_no_panic(&query[..i]);
        }
    }
}

#[test]
fn random_mutations_are_handled() {
    const ALPHABET: &[u8] = b"{}()[]|=!~<>\"`,.#-+*/%^ \n\\0159ahmsxyzBKM_:?";
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    for _ in 0..1000 {
        let (query, _) = VALID[rng.below(VALID.len())];
        let mut bytes = query.as_bytes().to_vec();
        for _ in 0..1 + rng.below(4) {
            let at = rng.below(bytes.len() + 1);
            let byte = ALPHABET[rng.below(ALPHABET.len())];
            match rng.below(4) {
                0 if at < bytes.len() => bytes[at] = byte,
                1 => bytes.insert(at, byte),
                2 if at < bytes.len() => {
                    bytes.remove(at);
                }
                _ => {
                    let end = (at + rng.below(8)).min(bytes.len());
                    let chunk = bytes[at.min(end)..end].to_vec();
                    bytes.splice(at..at, chunk);
                }
            }
        }
        assert_no_panic(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    let n = 10_000;
    let cases = [
        format!("{}1{}", "(".repeat(n), ")".repeat(n)),
        format!("{}rate({{a=\"b\"}}[5m]){}", "sum(".repeat(n), ")".repeat(n)),
        format!("{{a=\"b\"}} | {}x=\"y\"{}", "(".repeat(n), ")".repeat(n)),
        format!("rate({}{{a=\"b\"}}[5m]{})", "(".repeat(n), ")".repeat(n)),
        format!("1{}", " ^ 1".repeat(n)),
        format!("{{a=~\"{}a{}\"}}", "(".repeat(n), ")".repeat(n)),
    ];
    for query in &cases {
        match parse(query) {
            Ok(kind) => panic!("deep query accepted as {kind:?}"),
            Err(e) => assert!(e.message.contains("too deeply"), "{}", e.message),
        }
    }
    // Reasonable nesting stays fine.
    let ok = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert_eq!(parse(&ok), Ok(Metric));
}

#[test]
fn helpers() {
    assert!(prom_duration("1h30m").is_ok());
    assert!(prom_duration("5m1h").is_err());
    assert!(go_duration("1.5s") && go_duration("-5m") && go_duration("10µs"));
    assert!(!go_duration("5d") && !go_duration("5"));
    assert!(valid_bytes("20KB") && valid_bytes("1.5MiB") && !valid_bytes("20KBB"));
    assert!(check_ip_pattern("10.0.0.0/8").is_ok());
    assert!(check_ip_pattern("10.0.0.9-10.0.0.1").is_err());
    assert!(check_ip_pattern("::1").is_ok());
    let nullable = |re: &str| check_regex_syntax(re).map(|i| i.nullable);
    assert_eq!(nullable(".*"), Ok(true));
    assert_eq!(nullable(".+"), Ok(false));
    assert_eq!(nullable("a|"), Ok(true));
    assert_eq!(nullable("(a|b)?c*"), Ok(true));
    assert_eq!(nullable("[a-z]{0,3}x"), Ok(false));
    assert_eq!(nullable(r"\Qa.b\E"), Ok(false));
    assert!(check_regex_syntax("a{2}{3}").is_err());
    assert!(check_regex_syntax("a{,3}").is_ok());
    assert!(check_regex_syntax("[[:alpha:]_-]+").is_ok());
    assert!(check_regex_syntax("(?i)foo(?-s:.)").is_ok());
    assert!(check_regex_syntax("a(?i)*").is_ok());
    assert!(check_regex_syntax("(?i)*").is_err());
    assert!(check_regex_syntax(r"[\b]").is_err());
}
