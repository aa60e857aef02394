//! TokenReview and running pods, driven with the real `kube` client.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client, Config};
use mop_kube_fake::{FakeKube, PodSpec, TokenSpec};

/// The admin (the fake authorizes every request with RBAC; anonymous callers
/// may neither create TokenReviews nor list pods).
fn client(fake: &FakeKube) -> Client {
    let mut config = Config::new(fake.url().parse().unwrap());
    config.auth_info.token = Some(mop_kube_fake::ADMIN_TOKEN.to_string().into());
    Client::try_from(config).unwrap()
}

async fn review(c: &Client, token: &str, audience: &str) -> Result<TokenReview, kube::Error> {
    Api::<TokenReview>::all(c.clone())
        .create(
            &PostParams::default(),
            &TokenReview {
                spec: TokenReviewSpec {
                    token: Some(token.into()),
                    audiences: Some(vec![audience.into()]),
                },
                ..Default::default()
            },
        )
        .await
}

fn agent_pod(node: &str) -> PodSpec {
    PodSpec {
        namespace: "mop-system".into(),
        name: format!("mop-agent-{node}"),
        node: node.into(),
        ips: vec!["10.0.1.5".into(), "fd00::1:5".into()],
        host_network: false,
    }
}

fn agent_token(node: &str, audiences: &[&str], valid_for: Duration) -> TokenSpec {
    TokenSpec {
        namespace: "mop-system".into(),
        service_account: "mop-agent".into(),
        audiences: audiences.iter().map(|s| s.to_string()).collect(),
        pod: Some(format!("mop-agent-{node}")),
        node: Some(node.into()),
        valid_for,
    }
}

#[tokio::test]
async fn a_bound_token_reviews_as_its_service_account_with_pod_and_node() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    fake.run_pod(agent_pod("node-a")).unwrap();
    let token = fake
        .issue_token(agent_token(
            "node-a",
            &["mop-gateway"],
            Duration::from_secs(600),
        ))
        .unwrap();
    let status = review(&c, &token, "mop-gateway")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(status.authenticated, Some(true));
    assert_eq!(status.audiences, Some(vec!["mop-gateway".to_string()]));
    let user = status.user.unwrap();
    assert_eq!(
        user.username.as_deref(),
        Some("system:serviceaccount:mop-system:mop-agent")
    );
    let extra = user.extra.unwrap();
    assert_eq!(extra["authentication.kubernetes.io/node-name"], ["node-a"]);
    assert_eq!(
        extra["authentication.kubernetes.io/pod-name"],
        ["mop-agent-node-a"]
    );
    assert_eq!(fake.token_reviews(), 1);

    // Another audience: not authenticated, no user.
    let other = review(&c, &token, "vault").await.unwrap().status.unwrap();
    assert_eq!(other.authenticated, Some(false));
    assert!(other.error.unwrap().contains("audiences"));

    // Revoked; then a fresh token whose pod is deleted.
    fake.revoke_token(&token);
    let revoked = review(&c, &token, "mop-gateway")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(revoked.authenticated, Some(false));
    let second = fake
        .issue_token(agent_token(
            "node-a",
            &["mop-gateway"],
            Duration::from_secs(600),
        ))
        .unwrap();
    fake.delete_pod("mop-system", "mop-agent-node-a").unwrap();
    let gone = review(&c, &second, "mop-gateway")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(gone.authenticated, Some(false));
}

#[tokio::test]
async fn expired_unknown_and_empty_tokens_are_refused() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    let expired = fake
        .issue_token(TokenSpec {
            pod: None,
            ..agent_token("node-a", &["mop-gateway"], Duration::ZERO)
        })
        .unwrap();
    let s = review(&c, &expired, "mop-gateway")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(s.authenticated, Some(false));
    assert!(s.error.unwrap().contains("expired"));
    let s = review(&c, "made.up.token", "mop-gateway")
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(s.authenticated, Some(false));
    match review(&c, "", "mop-gateway").await {
        Err(kube::Error::Api(e)) => {
            assert_eq!(e.code, 400);
            assert_eq!(
                e.message,
                "token is required for TokenReview in authentication"
            );
        }
        other => panic!("expected 400, got {other:?}"),
    }
    // A bound pod must exist to issue a token for it.
    assert!(
        fake.issue_token(agent_token("node-b", &["x"], Duration::from_secs(1)))
            .is_err()
    );
}

#[tokio::test]
async fn running_pods_list_with_addresses_nodes_and_host_network() {
    let fake = FakeKube::start().await.unwrap();
    let c = client(&fake);
    fake.run_pod(agent_pod("node-a")).unwrap();
    fake.run_pod(PodSpec {
        namespace: "kube-system".into(),
        name: "kube-proxy-a".into(),
        node: "node-a".into(),
        ips: vec!["192.0.2.10".into()],
        host_network: true,
    })
    .unwrap();
    let pods = Api::<Pod>::all(c)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(pods.items.len(), 2);
    let agent = pods
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("mop-agent-node-a"))
        .unwrap();
    let status = agent.status.as_ref().unwrap();
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.1.5"));
    assert_eq!(status.pod_ips.as_ref().unwrap().len(), 2);
    assert_eq!(
        agent.spec.as_ref().unwrap().node_name.as_deref(),
        Some("node-a")
    );
    let proxy = pods
        .items
        .iter()
        .find(|p| p.metadata.name.as_deref() == Some("kube-proxy-a"))
        .unwrap();
    assert_eq!(proxy.spec.as_ref().unwrap().host_network, Some(true));
}
