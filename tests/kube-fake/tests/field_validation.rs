//! `fieldValidation` on every verb that takes a body, × Strict / Warn /
//! absent / Ignore: the status code, the `Status` reason and message, and the
//! `Warning` headers, as kubernetes' own
//! `test/integration/apiserver/field_validation_test.go` expects them
//! (handlers: `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/{create,update,patch}.go`).
//! Plain HTTP, so that the exact headers and bodies are what is checked.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use mop_kube_fake::{ADMIN_TOKEN, FakeKube};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Answer {
    status: u16,
    warnings: Vec<String>,
    body: Value,
}

impl Answer {
    fn message(&self) -> &str {
        self.body["message"].as_str().unwrap_or("")
    }
    fn reason(&self) -> &str {
        self.body["reason"].as_str().unwrap_or("")
    }
}

/// One HTTP/1.1 request, `Connection: close`, read to the end.
async fn call(fake: &FakeKube, method: &str, path: &str, content_type: &str, body: &str) -> Answer {
    let url = fake.url();
    let host = url.trim_start_matches("http://").trim_end_matches('/');
    let mut s = tokio::net::TcpStream::connect(host).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, rest) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let mut warnings = Vec::new();
    let mut chunked = false;
    for l in lines {
        let (k, v) = l.split_once(':').unwrap();
        if k.eq_ignore_ascii_case("warning") {
            warnings.push(v.trim().to_string());
        }
        if k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked") {
            chunked = true;
        }
    }
    let body = if chunked {
        let mut out = String::new();
        let mut r = rest;
        loop {
            let (size, after) = r.split_once("\r\n").unwrap();
            let n = usize::from_str_radix(size.trim(), 16).unwrap();
            if n == 0 {
                break;
            }
            out.push_str(&after[..n]);
            r = &after[n + 2..];
        }
        out
    } else {
        rest.to_string()
    };
    Answer {
        status,
        warnings,
        body: serde_json::from_str(&body).unwrap_or(Value::Null),
    }
}

/// `299 - "<text>"` for each text, `"` escaped.
fn headers(texts: &[&str]) -> Vec<String> {
    texts
        .iter()
        .map(|t| format!("299 - \"{}\"", t.replace('\\', "\\\\").replace('"', "\\\"")))
        .collect()
}

const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/app/deployments";

/// A Deployment body with the problems of field_validation_test.go's
/// `invalidBodyJSON`: a repeated `metadata.name`, unknown fields at three
/// depths, an unknown field given twice, known fields given twice.
fn invalid_json(name: &str) -> String {
    format!(
        r#"{{
  "apiVersion": "apps/v1",
  "kind": "Deployment",
  "metadata": {{"name": "{name}", "name": "{name}", "unknownMeta": "x", "labels": {{"app": "nginx"}}}},
  "spec": {{
    "unknown1": "val1",
    "unknownDupe": "valDupe",
    "unknownDupe": "valDupe2",
    "paused": true,
    "paused": false,
    "selector": {{"matchLabels": {{"app": "nginx"}}}},
    "template": {{
      "metadata": {{"labels": {{"app": "nginx"}}}},
      "spec": {{"containers": [{{"name": "nginx", "image": "nginx:latest", "unknownNested": "val1",
                               "imagePullPolicy": "Always", "imagePullPolicy": "Never"}}]}}
    }}
  }}
}}"#
    )
}

const JSON_ERRORS: &[&str] = &[
    r#"duplicate field "metadata.name""#,
    r#"unknown field "metadata.unknownMeta""#,
    r#"unknown field "spec.unknown1""#,
    r#"unknown field "spec.unknownDupe""#,
    r#"duplicate field "spec.paused""#,
    r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
    r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
];

fn invalid_yaml(name: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  name: {name}\n  unknownMeta: x\n  labels:\n    app: nginx\nspec:\n  unknown1: val1\n  unknownDupe: valDupe\n  unknownDupe: valDupe2\n  paused: true\n  paused: false\n  selector:\n    matchLabels:\n      app: nginx\n  template:\n    metadata:\n      labels:\n        app: nginx\n    spec:\n      containers:\n      - name: nginx\n        image: nginx:latest\n        unknownNested: val1\n        imagePullPolicy: Always\n        imagePullPolicy: Never\n"
    )
}

const YAML_DUPLICATES: &[&str] = &[
    r#"line 5: key "name" already set in map"#,
    r#"line 12: key "unknownDupe" already set in map"#,
    r#"line 14: key "paused" already set in map"#,
    r#"line 28: key "imagePullPolicy" already set in map"#,
];
const YAML_UNKNOWN: &[&str] = &[
    r#"unknown field "metadata.unknownMeta""#,
    r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
    r#"unknown field "spec.unknown1""#,
    r#"unknown field "spec.unknownDupe""#,
];

fn valid(name: &str) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "Deployment",
           "metadata": {"name": name, "namespace": "app", "labels": {"app": "nginx"}},
           "spec": {"selector": {"matchLabels": {"app": "nginx"}},
                    "template": {"metadata": {"labels": {"app": "nginx"}},
                                 "spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "imagePullPolicy": "Always"}]}}}})
}

async fn fake() -> FakeKube {
    let fake = FakeKube::start().await.unwrap();
    fake.put_yaml(
        "kubectl",
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: app}\n",
    )
    .unwrap();
    fake
}

/// `?fieldValidation=` for each mode; `None` sends no parameter.
const MODES: [Option<&str>; 4] = [Some("Strict"), Some("Warn"), None, Some("Ignore")];

fn query(mode: Option<&str>) -> String {
    mode.map(|m| format!("?fieldValidation={m}"))
        .unwrap_or_default()
}

/// What Warn and an absent directive store: unknown fields dropped, the last
/// of duplicates.
fn assert_cleaned(fake: &FakeKube, name: &str) {
    let d = fake
        .get("apps/v1", "Deployment", Some("app"), name)
        .unwrap();
    assert!(d["metadata"].get("unknownMeta").is_none(), "{d:#}");
    assert!(d["spec"].get("unknown1").is_none(), "{d:#}");
    assert!(d["spec"].get("unknownDupe").is_none(), "{d:#}");
    assert_eq!(d["spec"]["paused"], json!(false));
    let c = &d["spec"]["template"]["spec"]["containers"][0];
    assert!(c.get("unknownNested").is_none(), "{d:#}");
    assert_eq!(c["imagePullPolicy"], "Never");
}

#[tokio::test]
async fn post_and_put_json_in_each_mode() {
    let fake = fake().await;
    fake.put("kubectl", valid("put")).unwrap();
    for mode in MODES {
        let name = format!("post-{}", mode.unwrap_or("absent").to_lowercase());
        let post = call(
            &fake,
            "POST",
            &format!("{DEPLOYMENTS}{}", query(mode)),
            "application/json",
            &invalid_json(&name),
        )
        .await;
        let put = call(
            &fake,
            "PUT",
            &format!("{DEPLOYMENTS}/put{}", query(mode)),
            "application/json",
            &invalid_json("put"),
        )
        .await;
        match mode {
            Some("Strict") => {
                for a in [&post, &put] {
                    assert_eq!((a.status, a.reason()), (400, "BadRequest"), "{:#}", a.body);
                    assert_eq!(
                        a.message(),
                        format!(
                            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: {}",
                            JSON_ERRORS.join(", ")
                        )
                    );
                    assert!(a.warnings.is_empty());
                }
                assert!(
                    fake.get("apps/v1", "Deployment", Some("app"), &name)
                        .is_none()
                );
            }
            Some("Ignore") => {
                assert_eq!((post.status, put.status), (201, 200), "{:#}", post.body);
                assert!(post.warnings.is_empty() && put.warnings.is_empty());
                assert_cleaned(&fake, &name);
            }
            _ => {
                // Warn, and the default when the parameter is absent.
                assert_eq!((post.status, put.status), (201, 200), "{:#}", post.body);
                assert_eq!(post.warnings, headers(JSON_ERRORS));
                assert_eq!(put.warnings, headers(JSON_ERRORS));
                assert_cleaned(&fake, &name);
                assert_cleaned(&fake, "put");
            }
        }
    }
}

#[tokio::test]
async fn post_and_put_yaml_in_each_mode() {
    let fake = fake().await;
    fake.put("kubectl", valid("put")).unwrap();
    for mode in MODES {
        let name = format!("post-{}", mode.unwrap_or("absent").to_lowercase());
        let post = call(
            &fake,
            "POST",
            &format!("{DEPLOYMENTS}{}", query(mode)),
            "application/yaml",
            &invalid_yaml(&name),
        )
        .await;
        let put = call(
            &fake,
            "PUT",
            &format!("{DEPLOYMENTS}/put{}", query(mode)),
            "application/yaml",
            &invalid_yaml("put"),
        )
        .await;
        match mode {
            Some("Strict") => {
                for a in [&post, &put] {
                    assert_eq!((a.status, a.reason()), (400, "BadRequest"), "{:#}", a.body);
                    assert_eq!(
                        a.message(),
                        format!(
                            "Deployment in version \"v1\" cannot be handled as a Deployment: strict decoding error: yaml: unmarshal errors:\n  {}, {}",
                            YAML_DUPLICATES.join("\n  "),
                            YAML_UNKNOWN.join(", ")
                        )
                    );
                }
            }
            Some("Ignore") => {
                assert_eq!((post.status, put.status), (201, 200), "{:#}", post.body);
                assert!(post.warnings.is_empty() && put.warnings.is_empty());
                assert_cleaned(&fake, &name);
            }
            _ => {
                assert_eq!((post.status, put.status), (201, 200), "{:#}", post.body);
                let want: Vec<&str> = YAML_DUPLICATES
                    .iter()
                    .chain(YAML_UNKNOWN)
                    .copied()
                    .collect();
                assert_eq!(post.warnings, headers(&want));
                assert_eq!(put.warnings, headers(&want));
                assert_cleaned(&fake, &name);
            }
        }
    }
}

const MERGE_PATCH: &str = r#"{"spec": {"unknown1": "val1", "unknownDupe": "valDupe", "unknownDupe": "valDupe2",
  "paused": true, "paused": false,
  "template": {"spec": {"containers": [{"name": "nginx", "image": "nginx:latest", "unknownNested": "val1",
                                         "imagePullPolicy": "Always", "imagePullPolicy": "Never"}]}}}}"#;

const PATCH_ERRORS: &[&str] = &[
    r#"duplicate field "spec.unknownDupe""#,
    r#"duplicate field "spec.paused""#,
    r#"duplicate field "spec.template.spec.containers[0].imagePullPolicy""#,
    r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
    r#"unknown field "spec.unknown1""#,
    r#"unknown field "spec.unknownDupe""#,
];

const JSON_PATCH: &str = r#"[
  {"op": "add", "path": "/spec/unknown1", "value": "val1", "foo": "bar"},
  {"op": "add", "path": "/spec/unknown2", "path": "/spec/unknown3", "value": "val1"},
  {"op": "add", "path": "/spec/unknownDupe", "value": "valDupe"},
  {"op": "add", "path": "/spec/unknownDupe", "value": "valDupe2"},
  {"op": "add", "path": "/spec/paused", "value": true},
  {"op": "add", "path": "/spec/paused", "value": false},
  {"op": "add", "path": "/spec/template/spec/containers/0/unknownNested", "value": "val1"},
  {"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Always"},
  {"op": "add", "path": "/spec/template/spec/containers/0/imagePullPolicy", "value": "Never"}
]"#;

const JSON_PATCH_ERRORS: &[&str] = &[
    r#"json patch unknown field "[0].foo""#,
    r#"json patch duplicate field "[1].path""#,
    r#"unknown field "spec.template.spec.containers[0].unknownNested""#,
    r#"unknown field "spec.unknown1""#,
    r#"unknown field "spec.unknown3""#,
    r#"unknown field "spec.unknownDupe""#,
];

#[tokio::test]
async fn merge_json_and_strategic_patches_in_each_mode() {
    let fake = fake().await;
    let cases = [
        ("application/merge-patch+json", MERGE_PATCH, PATCH_ERRORS),
        (
            "application/strategic-merge-patch+json",
            MERGE_PATCH,
            PATCH_ERRORS,
        ),
        ("application/json-patch+json", JSON_PATCH, JSON_PATCH_ERRORS),
    ];
    for (ct, body, errors) in cases {
        for mode in MODES {
            let name = format!(
                "{}-{}",
                ct.trim_start_matches("application/")
                    .split('+')
                    .next()
                    .unwrap(),
                mode.unwrap_or("absent").to_lowercase()
            );
            fake.put("kubectl", valid(&name)).unwrap();
            let before = fake
                .get("apps/v1", "Deployment", Some("app"), &name)
                .unwrap();
            let a = call(
                &fake,
                "PATCH",
                &format!("{DEPLOYMENTS}/{name}{}", query(mode)),
                ct,
                body,
            )
            .await;
            match mode {
                Some("Strict") => {
                    assert_eq!(
                        (a.status, a.reason()),
                        (422, "Invalid"),
                        "{ct}: {:#}",
                        a.body
                    );
                    let m = a.message();
                    assert!(
                        m.starts_with(r#" "" is invalid: patch: Invalid value: ""#),
                        "{m}"
                    );
                    assert!(
                        m.ends_with(&format!(": strict decoding error: {}", errors.join(", "))),
                        "{ct}: {m}"
                    );
                    assert_eq!(a.body["details"]["causes"][0]["field"], "patch");
                    assert_eq!(
                        a.body["details"]["causes"][0]["reason"],
                        "FieldValueInvalid"
                    );
                    let now = fake
                        .get("apps/v1", "Deployment", Some("app"), &name)
                        .unwrap();
                    // (The controller writes `status` meanwhile.)
                    assert_eq!(
                        (&now["spec"], &now["metadata"]["managedFields"][0]),
                        (&before["spec"], &before["metadata"]["managedFields"][0]),
                        "{ct}: a refused patch changed the object"
                    );
                }
                Some("Ignore") => {
                    assert_eq!(a.status, 200, "{ct}: {:#}", a.body);
                    assert!(a.warnings.is_empty());
                    assert_cleaned(&fake, &name);
                }
                _ => {
                    assert_eq!(a.status, 200, "{ct}: {:#}", a.body);
                    assert_eq!(a.warnings, headers(errors), "{ct}");
                    assert_cleaned(&fake, &name);
                }
            }
        }
    }
}

#[tokio::test]
async fn the_value_shown_by_a_strict_patch_is_the_patched_object_or_the_patch_map() {
    let fake = fake().await;
    fake.put_yaml(
        "kubectl",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: app}\ndata: {k: v}\n",
    )
    .unwrap();
    let path = "/api/v1/namespaces/app/configmaps/c?fieldValidation=Strict";
    let merge = call(
        &fake,
        "PATCH",
        path,
        "application/merge-patch+json",
        r#"{"extra": 1}"#,
    )
    .await;
    let stored = fake.get("v1", "ConfigMap", Some("app"), "c").unwrap();
    let mut patched = stored.clone();
    patched["extra"] = json!(1);
    // Go marshals the patched map with sorted keys, compact.
    let mut keys: Vec<_> = patched.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys.first().map(String::as_str), Some("apiVersion"));
    assert!(
        merge.message().starts_with(r#" "" is invalid: patch: Invalid value: "{\"apiVersion\":\"v1\",\"data\":{\"k\":\"v\"},\"extra\":1,\"kind\":\"ConfigMap\",\"metadata\":{"#),
        "{}",
        merge.message()
    );
    assert!(
        merge
            .message()
            .ends_with(r#": strict decoding error: unknown field "extra""#)
    );
    let smp = call(
        &fake,
        "PATCH",
        path,
        "application/strategic-merge-patch+json",
        r#"{"data": {"a": "b"}, "extra": [1, "x"]}"#,
    )
    .await;
    assert_eq!(
        smp.message(),
        r#" "" is invalid: patch: Invalid value: "map[data:map[a:b] extra:[1 x]]": strict decoding error: unknown field "extra""#
    );
}

/// field_validation_test.go's `applyInvalidBody`: known fields given twice
/// (an apply's unknown fields are refused in every mode: kube_client.rs).
fn apply_body(name: &str) -> String {
    format!(
        r#"{{
"apiVersion": "apps/v1",
"kind": "Deployment",
"metadata": {{"name": "{name}", "namespace": "app", "labels": {{"app": "nginx"}}}},
"spec": {{
"paused": false,
"paused": true,
"selector": {{"matchLabels": {{"app": "nginx"}}}},
"template": {{"metadata": {{"labels": {{"app": "nginx"}}}},
"spec": {{"containers": [{{
"name": "nginx",
"image": "nginx:latest",
"imagePullPolicy": "Never",
"imagePullPolicy": "Always"
}}]}}}}
}}
}}"#
    )
}

#[tokio::test]
async fn server_side_apply_with_duplicate_fields_in_each_mode() {
    let fake = fake().await;
    let dups = [
        r#"line 7: key "paused" already set in map"#,
        r#"line 14: key "imagePullPolicy" already set in map"#,
    ];
    for existing in [false, true] {
        for mode in MODES {
            let name = format!(
                "apply-{}-{}",
                if existing { "update" } else { "create" },
                mode.unwrap_or("absent").to_lowercase()
            );
            if existing {
                fake.put("kubectl", valid(&name)).unwrap();
            }
            let sep = if mode.is_some() { "&" } else { "?" };
            let a = call(
                &fake,
                "PATCH",
                &format!(
                    "{DEPLOYMENTS}/{name}{}{sep}fieldManager=mgr&force=true",
                    query(mode)
                ),
                "application/apply-patch+yaml",
                &apply_body(&name),
            )
            .await;
            match mode {
                Some("Strict") => {
                    assert_eq!((a.status, a.reason()), (400, "BadRequest"), "{:#}", a.body);
                    assert_eq!(
                        a.message(),
                        format!(
                            "error strict decoding YAML: error converting YAML to JSON: yaml: unmarshal errors:\n  {}",
                            dups.join("\n  ")
                        )
                    );
                    assert_eq!(
                        fake.get("apps/v1", "Deployment", Some("app"), &name)
                            .is_some(),
                        existing
                    );
                }
                Some("Ignore") => {
                    assert_eq!(a.status, if existing { 200 } else { 201 }, "{:#}", a.body);
                    assert!(a.warnings.is_empty());
                }
                _ => {
                    assert_eq!(a.status, if existing { 200 } else { 201 }, "{:#}", a.body);
                    assert_eq!(a.warnings, headers(&dups));
                }
            }
            if mode != Some("Strict") {
                let d = fake
                    .get("apps/v1", "Deployment", Some("app"), &name)
                    .unwrap();
                assert_eq!(d["spec"]["paused"], json!(true));
                assert_eq!(
                    d["spec"]["template"]["spec"]["containers"][0]["imagePullPolicy"],
                    "Always"
                );
            }
        }
    }
}

#[tokio::test]
async fn an_unknown_directive_is_422_for_every_verb() {
    let fake = fake().await;
    fake.put("kubectl", valid("d")).unwrap();
    let cases = [
        (
            "POST",
            DEPLOYMENTS.to_string(),
            "application/json",
            "CreateOptions",
        ),
        (
            "PUT",
            format!("{DEPLOYMENTS}/d"),
            "application/json",
            "UpdateOptions",
        ),
        (
            "PATCH",
            format!("{DEPLOYMENTS}/d"),
            "application/merge-patch+json",
            "PatchOptions",
        ),
    ];
    for (method, path, ct, kind) in cases {
        let a = call(
            &fake,
            method,
            &format!("{path}?fieldValidation=strict"),
            ct,
            &valid("d").to_string(),
        )
        .await;
        assert_eq!(
            (a.status, a.reason()),
            (422, "Invalid"),
            "{method}: {:#}",
            a.body
        );
        assert_eq!(
            a.message(),
            format!(
                r#"{kind}.meta.k8s.io "" is invalid: fieldValidation: Unsupported value: "strict": supported values: "Ignore", "Strict", "Warn""#
            )
        );
    }
}

#[tokio::test]
async fn warnings_are_deduplicated_and_quoted() {
    let fake = fake().await;
    // The same unknown field in two list items is two paths; a field both
    // unknown and repeated is one warning.
    let body = r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "q", "x\"y": 1, "x\"y": 2}}"#;
    let a = call(
        &fake,
        "POST",
        "/api/v1/namespaces/app/configmaps",
        "application/json",
        body,
    )
    .await;
    assert_eq!(a.status, 201, "{:#}", a.body);
    assert_eq!(a.warnings, [r#"299 - "unknown field \"metadata.x\\\"y\"""#]);
}
