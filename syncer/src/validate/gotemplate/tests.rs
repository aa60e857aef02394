//! Cases checked against Go's parser (promtool 2.42 built with Go 1.19, and
//! Go's own `parse_test.go` for what changed since).

use super::*;

fn ok(t: &str) {
    if let Err(e) = parse(t, Dialect::Prometheus) {
        panic!("{t:?} should parse: {e:?}");
    }
}

fn bad(t: &str, msg: &str) {
    match parse(t, Dialect::Prometheus) {
        Ok(()) => panic!("{t:?} should not parse"),
        Err(e) => assert_eq!(e.message, msg, "{t:?}"),
    }
}

#[test]
fn accepts_what_alert_templates_use() {
    for t in [
        "plain text",
        "{{ $labels.instance }} is down",
        "{{ $value | humanize }}",
        "{{ $value | humanizePercentage }} of {{ $labels.job }}",
        "{{ printf \"%.2f\" $value }}",
        "{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}",
        "{{ range query \"up\" }}{{ .Labels.instance }} {{ .Value }}{{ end }}",
        "{{ range $i, $e := query \"up\" }}{{ if $i }}, {{ end }}{{ $e.Labels.job }}{{ end }}",
        "{{ if gt $value 0.5 }}high{{ else if gt $value 0.1 }}mid{{ else }}low{{ end }}",
        "{{- /* a comment */ -}}",
        "{{/* c */}}",
        "{{- $labels.x -}}",
        "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
        "{{ `raw {{ string` }}",
        "{{ 'a' }} {{ 1.5e3 }} {{ 0x1F }} {{ 1_000 }} {{ -1 }} {{ 1i }} {{ 0x1p-2 }}",
        "{{ (1) }} {{ (query \"up\" | first).Labels.job }}",
        "{{ nil }}",
        "{{ define \"a\" }}x{{ end }}{{ template \"a\" }}{{ template \"a\" . }}",
        "{{ block \"b\" . }}y{{ end }}",
        "{{ range query \"up\" }}{{ break }}{{ continue }}{{ end }}",
        "{{ with $x := 1 }}{{ else with 2 }}{{ end }}",
        "{{ 1 | }}",
        "{{ $externalURL }} {{ $externalLabels.cluster }} {{ $ }}",
        "{{ reReplaceAll \"(.*):.*\" \"$1\" $labels.instance }}",
        "{{ \"\\u00e9\\n\\t\\\"\" }}",
        "{{\n  $labels.instance\n}}",
        "}} {",
        "{{ toDuration 1 }} {{ now }} {{ urlUnescape \"a\" }}",
    ] {
        ok(t);
    }
}

#[test]
fn refuses_what_go_refuses() {
    bad("{{ humanise $value }}", "function \"humanise\" not defined");
    bad("{{ $lables.x }}", "undefined variable \"$lables\"");
    bad("{{ .Labels.instance }", "unexpected \"}\" in operand");
    bad("{{ $labels.x", "unclosed action");
    bad("{{ end }}", "unexpected {{end}}");
    bad("{{ else }}", "unexpected {{else}}");
    bad("{{ if true }}x", "unexpected EOF");
    bad("{{ if }}{{ end }}", "missing value for if");
    bad("{{ break }}", "{{break}} outside {{range}}");
    bad(
        "{{ range . }}{{ else }}{{ break }}{{ end }}",
        "{{break}} outside {{range}}",
    );
    bad("{{ \"x }}", "unterminated quoted string");
    bad("{{ `x }}", "unterminated raw quoted string");
    bad("{{ 'ab' }}", "malformed character constant: 'ab'");
    bad("{{ \"\\q\" }}", "invalid syntax");
    bad("{{ 1_ }}", "illegal number syntax: \"1_\"");
    bad("{{ 3x }}", "bad number syntax: \"3x\"");
    bad("{{ 1 | 2 }}", "non executable command in pipeline stage 2");
    bad("{{ (1 }}", "unclosed left paren");
    bad("{{ 1) }}", "unexpected \")\" in command");
    bad("{{ /* c */ }}", "unexpected \"/\" in command");
    bad("{{/* c */ x }}", "comment ends before closing delimiter");
    bad("{{/* c }}", "unclosed comment");
    bad("{{ \"a\".b }}", "unexpected . after term \"\\\"a\\\"\"");
    bad(
        "{{ define \"a\" }}{{ $labels }}{{ end }}",
        "undefined variable \"$labels\"",
    );
    bad(
        "{{ if 1 }}{{ define \"a\" }}{{ end }}{{ end }}",
        "unexpected <define> in command",
    );
    bad(
        "{{ range $a, $b, $c := . }}{{ end }}",
        "too many declarations in range",
    );
    bad(
        "{{ with $a, $b := . }}{{ end }}",
        "too many declarations in with",
    );
    bad(
        "{{ if 1 }}{{ else with 2 }}{{ end }}",
        "unexpected <with> in input",
    );
    bad("{{ x€ }}", "bad character U+20AC '€'");
    bad("{{ § }}", "unrecognized character in action: U+00A7");
    bad(
        "{{ $x := 1 }}{{ if 1 }}{{ $y := 2 }}{{ end }}{{ $y }}",
        "undefined variable \"$y\"",
    );
}

#[test]
fn loki_declares_no_external_url() {
    assert!(parse("{{ $externalURL }}", Dialect::Prometheus).is_ok());
    let e = parse("{{ $externalURL }}", Dialect::Loki).unwrap_err();
    assert_eq!(e.message, "undefined variable \"$externalURL\"");
}

#[test]
fn errors_point_at_the_offending_token() {
    let e = parse("a {{ $labels.x }} {{ humanise 1 }}", Dialect::Prometheus).unwrap_err();
    assert_eq!(e.offset, 21);
    assert_eq!(e.unknown_function.as_deref(), Some("humanise"));
}

/// Every case above, plus more, judged by the real parser: Debian's promtool
/// (Prometheus 2.42, Go 1.19) checks the same text as a rule annotation.
/// Cases using what came later (`{{else with}}`: Go 1.23; `toDuration`, `now`,
/// `urlUnescape`: Prometheus 3) are left out: that promtool predates them.
#[test]
fn agrees_with_promtool() {
    let cases: Vec<&str> = vec![
        "plain text",
        "{{ $labels.instance }} is down",
        "{{ $value | humanize }}",
        "{{ printf \"%.2f\" $value }}",
        "{{ with query \"up\" }}{{ . | first | value | humanize }}{{ end }}",
        "{{ range $i, $e := query \"up\" }}{{ if $i }}, {{ end }}{{ $e.Labels.job }}{{ end }}",
        "{{ if gt $value 0.5 }}high{{ else if gt $value 0.1 }}mid{{ else }}low{{ end }}",
        "{{- /* a comment */ -}}",
        "{{ $x := 1 }}{{ $x = 2 }}{{ $x }}",
        "{{ `raw {{ string` }}",
        "{{ 'a' }} {{ 1.5e3 }} {{ 0x1F }} {{ 1_000 }} {{ -1 }} {{ 1i }} {{ 0x1p-2 }}",
        "{{ (1) }} {{ (query \"up\" | first).Labels.job }}",
        "{{ nil }}",
        "{{ define \"a\" }}x{{ end }}{{ template \"a\" }}{{ template \"a\" . }}",
        "{{ block \"b\" . }}y{{ end }}",
        "{{ range query \"up\" }}{{ break }}{{ continue }}{{ end }}",
        "{{ 1 | }}",
        "{{ $externalURL }} {{ $externalLabels.cluster }} {{ $ }}",
        "{{ \"\\u00e9\\n\\t\\\"\" }}",
        "{{\n  $labels.instance\n}}",
        "}} {",
        "{{ humanise $value }}",
        "{{ $lables.x }}",
        "{{ .Labels.instance }",
        "{{ $labels.x",
        "{{ end }}",
        "{{ else }}",
        "{{ if true }}x",
        "{{ if }}{{ end }}",
        "{{ break }}",
        "{{ range . }}{{ else }}{{ break }}{{ end }}",
        "{{ \"x }}",
        "{{ `x }}",
        "{{ 'ab' }}",
        "{{ \"\\q\" }}",
        "{{ 1_ }}",
        "{{ 3x }}",
        "{{ 1 | 2 }}",
        "{{ (1 }}",
        "{{ 1) }}",
        "{{ /* c */ }}",
        "{{/* c */ x }}",
        "{{/* c }}",
        "{{ \"a\".b }}",
        "{{ define \"a\" }}{{ $labels }}{{ end }}",
        "{{ if 1 }}{{ define \"a\" }}{{ end }}{{ end }}",
        "{{ range $a, $b, $c := . }}{{ end }}",
        "{{ with $a, $b := . }}{{ end }}",
        "{{ x\u{20ac} }}",
        "{{ \u{a7} }}",
        "{{ $x := 1 }}{{ if 1 }}{{ $y := 2 }}{{ end }}{{ $y }}",
        "{{ define \"a\" }}x{{ end }}{{ define \"a\" }}y{{ end }}",
        "{{ define \"a\" }} {{ end }}{{ define \"a\" }}y{{ end }}",
        "{{ 1.x }}",
        "{{ .a.b.c }}",
        "{{ $labels.a.b }}",
        "{{ - 1 }}",
        "{{ 3 - 4 }}",
        "{{ 0x }}",
        "{{ 08 }}",
        "{{ 0o17 }}",
        "{{ 0b102 }}",
        "{{ 1e }}",
        "{{ 99999999999999999999 }}",
        "{{ 1+2i }}",
        "{{ true.x }}",
        "{{ if 1 }}{{ else }}{{ else }}{{ end }}",
        "{{ range $i := . }}{{ end }}",
        "{{ range $i, := . }}{{ end }}",
        "{{ $ := 1 }}",
        "{{ printf \"%d\" (len $labels) }}",
        "{{ index $labels \"job\" }}",
        "{{ template x }}",
        "{{ block \"b\" }}y{{ end }}",
        "{{ with . }}{{ $z := 1 }}{{ end }}{{ $z }}",
        "{{ if 1 -}} x {{- end }}",
        "{{-1}}",
        "{{ a:b }}",
        "{{ $x:=1 }}",
        "{{ $x :1 }}",
        "{{ eq 1 1 | not }}",
        "{{ 'a }}",
        "{{ '\\'' }}",
        "{{ '\\x41' }}",
        "{{ \"\\x4\" }}",
        "{{ \"\\400\" }}",
        "{{ \"\\377\" }}",
        "{{ .Labels.instance | reReplaceAll \":.*\" \"\" }}",
        "{{ title \"a\" | toUpper | toLower }}",
        "{{ graphLink \"up\" }}{{ tableLink \"up\" }}{{ pathPrefix }}{{ externalURL }}",
        "{{ stripPort \"a:1\" }}{{ stripDomain \"a.b\" }}{{ toTime 1 }}{{ parseDuration \"1m\" }}",
        "{{ humanize1024 1 }}{{ humanizeDuration 1 }}{{ humanizeTimestamp 1 }}{{ sortByLabel \"a\" (query \"up\") }}",
        "{{ safeHtml \"a\" }}{{ match \"a\" \"b\" }}{{ args 1 2 }}{{ strvalue (query \"up\" | first) }}{{ label \"a\" (query \"up\" | first) }}",
        "{{ html 1 }}{{ js 1 }}{{ urlquery 1 }}{{ print 1 }}{{ println 1 }}{{ slice \"ab\" 1 }}{{ call $labels }}{{ and 1 2 }}{{ or 1 2 }}{{ ne 1 2 }}{{ lt 1 2 }}{{ le 1 2 }}{{ ge 1 2 }}",
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let mut yaml = String::from("groups:\n- name: g\n  rules:\n");
    for (i, c) in cases.iter().enumerate() {
        let quoted = serde_json::to_string(c).expect("json");
        yaml.push_str(&format!(
            "  - alert: A{i}\n    expr: up\n    annotations:\n      t: {quoted}\n"
        ));
    }
    let file = dir.path().join("t.yaml");
    std::fs::write(&file, &yaml).expect("write");
    let out = std::process::Command::new("promtool")
        .args(["check", "rules", "--lint=none"])
        .arg(&file)
        .output()
        .expect("promtool is installed (Debian package prometheus; .ci/install-deps)");
    let report =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    let mut disagreements = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let promtool_refuses = report.contains(&format!("\"A{i}\": annotation"));
        let ours = parse(c, Dialect::Prometheus);
        if promtool_refuses == ours.is_ok() {
            disagreements.push(format!(
                "{c:?}: promtool refuses={promtool_refuses}, MOP: {ours:?}"
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{}\npromtool said:\n{report}",
        disagreements.join("\n")
    );
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// The parser never panics and its offsets stay inside the text, on
        /// any input, including fragments of template syntax.
        #[test]
        fn never_panics(t in "(\\{\\{|\\}\\}|[-$. |()'\"`a-z0-9:=,/*\\n]|if |end|range |else |with |define |\u{e9}){0,40}") {
            if let Err(e) = parse(&t, Dialect::Prometheus) {
                prop_assert!(e.offset <= t.len());
                prop_assert!(t.is_char_boundary(e.offset));
            }
        }

        /// Text without `{{` is always a valid template.
        #[test]
        fn plain_text_parses(t in "[^{]*") {
            prop_assert!(parse(&t, Dialect::Prometheus).is_ok());
        }

        /// Well-formed templates built from the grammar parse.
        #[test]
        fn generated_templates_parse(parts in proptest::collection::vec(0usize..8, 0..12)) {
            let pieces = [
                "text ",
                "{{ $labels.instance }}",
                "{{ $value | humanize }}",
                "{{ if gt $value 1.0 }}a{{ else }}b{{ end }}",
                "{{ range $i, $e := query \"up\" }}{{ $e.Value }}{{ break }}{{ end }}",
                "{{- printf \"%s\" $labels.job -}}",
                "{{ with $x := 1 }}{{ $x }}{{ end }}",
                "{{/* note */}}",
            ];
            let t: String = parts.iter().map(|&i| pieces[i]).collect();
            prop_assert!(parse(&t, Dialect::Prometheus).is_ok(), "{}", t);
        }
    }
}
