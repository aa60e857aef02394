use super::*;

use http::{HeaderName, HeaderValue};

const SECRET: &[u8] = b"It's a Secret to Everybody";

// Trimmed from GitHub's "push" payload example
// (https://docs.github.com/en/webhooks/webhook-events-and-payloads#push).
const GITHUB_PUSH: &str = r#"{
  "ref": "refs/heads/main",
  "before": "6113728f27ae82c7b1a177c8d03f9e96e0adf246",
  "after": "9ce1d6e0c0e7b0f9b8f3ac3e0e5d0c1a2b3c4d5e",
  "repository": {"id": 186853002, "name": "Hello-World", "full_name": "Codertocat/Hello-World",
                 "clone_url": "https://github.com/Codertocat/Hello-World.git"},
  "pusher": {"name": "Codertocat", "email": "21031067+Codertocat@users.noreply.github.com"},
  "created": false, "deleted": false, "forced": false, "base_ref": null,
  "compare": "https://github.com/Codertocat/Hello-World/compare/6113728f27ae...9ce1d6e0c0e7",
  "commits": [], "head_commit": null
}"#;

// Trimmed from GitHub's "ping" payload.
const GITHUB_PING: &str = r#"{"zen": "Keep it logically awesome.", "hook_id": 30,
  "hook": {"type": "Repository", "id": 30, "events": ["push"], "active": true}}"#;

// Trimmed from Gitea's push example (https://docs.gitea.com/usage/webhooks).
const GITEA_PUSH: &str = r#"{
  "ref": "refs/heads/develop",
  "before": "28e1879d029cb852e4844d9c718537df08844e03",
  "after": "bffeb74224043ba2feb48d137756c8a9331c449a",
  "compare_url": "http://localhost:3000/gitea/webhooks/compare/28e1879d029cb852e4844d9c718537df08844e03...bffeb74224043ba2feb48d137756c8a9331c449a",
  "commits": [{"id": "bffeb74224043ba2feb48d137756c8a9331c449a", "message": "Webhooks Yay!",
               "timestamp": "2017-03-13T13:52:11-04:00"}],
  "repository": {"id": 140, "name": "webhooks", "full_name": "gitea/webhooks"},
  "pusher": {"id": 1, "login": "gitea"}
}"#;

// Trimmed from GitLab's "Push events" example
// (https://docs.gitlab.com/user/project/integrations/webhook_events/#push-events).
const GITLAB_PUSH: &str = r#"{
  "object_kind": "push",
  "event_name": "push",
  "before": "95790bf891e76fee5e1747ab589903a6a1f80f22",
  "after": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "ref": "refs/heads/master",
  "ref_protected": true,
  "checkout_sha": "da1560886d4f094c3e6c9ef40349f7d38b5d27d7",
  "user_id": 4, "user_name": "John Smith",
  "project_id": 15,
  "project": {"id": 15, "name": "Diaspora", "path_with_namespace": "mike/diaspora",
              "git_http_url": "http://example.com/mike/diaspora.git"},
  "commits": [],
  "total_commits_count": 4
}"#;

fn sign(body: &[u8], secret: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            HeaderName::from_static(k),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn github(event: &str, body: &str, secret: &[u8]) -> HeaderMap {
    headers(&[
        ("x-github-event", event),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        (
            "x-hub-signature-256",
            &format!("sha256={}", sign(body.as_bytes(), secret)),
        ),
    ])
}

fn gitea(body: &str, secret: &[u8]) -> HeaderMap {
    let sig = sign(body.as_bytes(), secret);
    // Gitea also sends GitHub-compatible headers; the Gitea ones must win.
    headers(&[
        ("x-gitea-event", "push"),
        ("x-github-event", "push"),
        ("x-gitea-signature", &sig),
    ])
}

fn gitlab(event: &str, token: &str) -> HeaderMap {
    headers(&[("x-gitlab-event", event), ("x-gitlab-token", token)])
}

#[test]
fn github_documented_test_vector() {
    // From GitHub's "Validating webhook deliveries": this secret and body give
    // this signature.
    let h = headers(&[
        ("x-github-event", "push"),
        (
            "x-hub-signature-256",
            "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
        ),
    ]);
    // Signature accepted; the body is then not a push payload.
    let err = verify_and_parse(&h, b"Hello, World!", SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::BadRequest(_)), "{err:?}");
    let err = verify_and_parse(&h, b"Hello, World?", SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
}

#[test]
fn github_push_is_parsed() {
    let ev = verify_and_parse(
        &github("push", GITHUB_PUSH, SECRET),
        GITHUB_PUSH.as_bytes(),
        SECRET,
    )
    .unwrap();
    assert_eq!(
        ev,
        WebhookEvent::Push(PushEvent {
            provider: Provider::GitHub,
            git_ref: "refs/heads/main".into(),
            after: "9ce1d6e0c0e7b0f9b8f3ac3e0e5d0c1a2b3c4d5e".into(),
            before: Some("6113728f27ae82c7b1a177c8d03f9e96e0adf246".into()),
        })
    );
    let WebhookEvent::Push(p) = ev else {
        unreachable!()
    };
    assert_eq!(p.branch(), Some("main"));
    assert!(!p.deleted());
}

#[test]
fn github_ping_is_answered_without_a_push() {
    let ev = verify_and_parse(
        &github("ping", GITHUB_PING, SECRET),
        GITHUB_PING.as_bytes(),
        SECRET,
    )
    .unwrap();
    assert_eq!(
        ev,
        WebhookEvent::Ping {
            provider: Provider::GitHub
        }
    );
    // A ping is authenticated like anything else.
    let err = verify_and_parse(
        &github("ping", GITHUB_PING, b"wrong"),
        GITHUB_PING.as_bytes(),
        SECRET,
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)));
}

#[test]
fn gitea_push_is_parsed() {
    let ev = verify_and_parse(&gitea(GITEA_PUSH, SECRET), GITEA_PUSH.as_bytes(), SECRET).unwrap();
    let WebhookEvent::Push(p) = ev else {
        panic!("expected a push, got {ev:?}")
    };
    assert_eq!(p.provider, Provider::Gitea);
    assert_eq!(p.git_ref, "refs/heads/develop");
    assert_eq!(p.after, "bffeb74224043ba2feb48d137756c8a9331c449a");
}

#[test]
fn gitlab_push_is_parsed() {
    let secret = "gitlab-shared-token";
    let ev = verify_and_parse(
        &gitlab("Push Hook", secret),
        GITLAB_PUSH.as_bytes(),
        secret.as_bytes(),
    )
    .unwrap();
    let WebhookEvent::Push(p) = ev else {
        panic!("expected a push, got {ev:?}")
    };
    assert_eq!(p.provider, Provider::GitLab);
    assert_eq!(p.branch(), Some("master"));
    assert_eq!(p.after, "da1560886d4f094c3e6c9ef40349f7d38b5d27d7");
}

#[test]
fn push_to_another_branch_is_parsed_for_the_server_to_ignore() {
    let body = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/feature/x");
    let ev = verify_and_parse(&github("push", &body, SECRET), body.as_bytes(), SECRET).unwrap();
    let WebhookEvent::Push(p) = ev else {
        panic!("expected a push, got {ev:?}")
    };
    assert_eq!(p.branch(), Some("feature/x"));

    let body = GITHUB_PUSH.replace("refs/heads/main", "refs/tags/v1.0");
    let ev = verify_and_parse(&github("push", &body, SECRET), body.as_bytes(), SECRET).unwrap();
    let WebhookEvent::Push(p) = ev else {
        panic!("expected a push, got {ev:?}")
    };
    assert_eq!(p.branch(), None, "a tag is not a branch");
}

#[test]
fn branch_deletion_is_recognised() {
    let body = GITHUB_PUSH.replace(
        "9ce1d6e0c0e7b0f9b8f3ac3e0e5d0c1a2b3c4d5e",
        "0000000000000000000000000000000000000000",
    );
    let ev = verify_and_parse(&github("push", &body, SECRET), body.as_bytes(), SECRET).unwrap();
    let WebhookEvent::Push(p) = ev else {
        panic!("expected a push, got {ev:?}")
    };
    assert!(p.deleted());
}

#[test]
fn wrong_secret_is_unauthorized_for_every_provider() {
    let cases = [
        (github("push", GITHUB_PUSH, b"not the secret"), GITHUB_PUSH),
        (gitea(GITEA_PUSH, b"not the secret"), GITEA_PUSH),
        (gitlab("Push Hook", "not the secret"), GITLAB_PUSH),
    ];
    for (h, body) in cases {
        let err = verify_and_parse(&h, body.as_bytes(), SECRET).unwrap_err();
        assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
        assert_eq!(err.status(), http::StatusCode::UNAUTHORIZED);
    }
}

#[test]
fn tampered_body_is_unauthorized() {
    let h = github("push", GITHUB_PUSH, SECRET);
    let tampered = GITHUB_PUSH.replace("refs/heads/main", "refs/heads/evil");
    let err = verify_and_parse(&h, tampered.as_bytes(), SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");

    let h = gitea(GITEA_PUSH, SECRET);
    let tampered = GITEA_PUSH.replace("bffeb742", "bffeb743");
    let err = verify_and_parse(&h, tampered.as_bytes(), SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
}

#[test]
fn missing_signature_is_unauthorized() {
    let cases = [
        headers(&[("x-github-event", "push")]),
        headers(&[("x-gitea-event", "push")]),
        headers(&[("x-gitlab-event", "Push Hook")]),
        // Only the legacy SHA-1 signature: not accepted.
        headers(&[
            ("x-github-event", "push"),
            ("x-hub-signature", "sha1=abcdef"),
        ]),
        // The signature without its `sha256=` prefix.
        headers(&[
            ("x-github-event", "push"),
            ("x-hub-signature-256", &sign(GITHUB_PUSH.as_bytes(), SECRET)),
        ]),
    ];
    for h in cases {
        let err = verify_and_parse(&h, GITHUB_PUSH.as_bytes(), SECRET).unwrap_err();
        assert!(
            matches!(err, WebhookError::Unauthorized(_)),
            "{h:?}: {err:?}"
        );
    }
}

#[test]
fn empty_configured_secret_authenticates_nothing() {
    // Signed with the empty key, which HMAC accepts: still refused.
    let h = github("push", GITHUB_PUSH, b"");
    let err = verify_and_parse(&h, GITHUB_PUSH.as_bytes(), b"").unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
    let err = verify_and_parse(&gitlab("Push Hook", ""), GITLAB_PUSH.as_bytes(), b"").unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
}

#[test]
fn errors_never_echo_the_secret_or_signature() {
    let sig = sign(GITHUB_PUSH.as_bytes(), b"attacker");
    let h = headers(&[
        ("x-github-event", "push"),
        ("x-hub-signature-256", &format!("sha256={sig}")),
    ]);
    let err = verify_and_parse(&h, GITHUB_PUSH.as_bytes(), SECRET).unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains(&sig), "{shown}");
    assert!(!shown.contains("Secret to Everybody"), "{shown}");

    let err = verify_and_parse(
        &gitlab("Push Hook", "guess"),
        GITLAB_PUSH.as_bytes(),
        SECRET,
    )
    .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("guess"), "{shown}");
}

#[test]
fn unknown_provider_or_event_is_unsupported() {
    let err = verify_and_parse(&headers(&[]), GITHUB_PUSH.as_bytes(), SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::Unsupported(_)), "{err:?}");

    let body = r#"{"action": "opened"}"#;
    let err = verify_and_parse(
        &github("pull_request", body, SECRET),
        body.as_bytes(),
        SECRET,
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Unsupported(_)), "{err:?}");

    let err = verify_and_parse(
        &gitlab("Tag Push Hook", "tok"),
        GITLAB_PUSH.as_bytes(),
        b"tok",
    )
    .unwrap_err();
    assert!(matches!(err, WebhookError::Unsupported(_)), "{err:?}");
}

#[test]
fn unsupported_event_with_a_wrong_signature_is_unauthorized_first() {
    let body = r#"{"action": "opened"}"#;
    let err =
        verify_and_parse(&github("pull_request", body, b"x"), body.as_bytes(), SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::Unauthorized(_)), "{err:?}");
}

#[test]
fn bad_json_is_bad_request() {
    let body = "{not json";
    let err = verify_and_parse(&github("push", body, SECRET), body.as_bytes(), SECRET).unwrap_err();
    assert!(matches!(err, WebhookError::BadRequest(_)), "{err:?}");
    assert_eq!(err.status(), http::StatusCode::BAD_REQUEST);

    let body = r#"{"ref": "refs/heads/main"}"#;
    let err = verify_and_parse(&gitea(body, SECRET), body.as_bytes(), SECRET).unwrap_err();
    assert!(
        matches!(err, WebhookError::BadRequest(_)),
        "missing `after`: {err:?}"
    );
}
