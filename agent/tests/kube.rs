//! Pod metadata: the agent's pod watcher against a fake Kubernetes API
//! server speaking the documented list/watch wire format
//! (https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes):
//! a PodList with `metadata.resourceVersion`, then a chunked stream of
//! newline-delimited `{"type": …, "object": …}` events, an `ERROR` event with
//! a 410 Status when the resourceVersion is too old. The fake rejects
//! requests without the bearer token or the node field selector, as the
//! real API server (with RBAC scoped by node) would.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a panic is a failure report
mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use mop_agent::{
    kube::{self, ApiConfig, SharedIndex},
    process::Resolver,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};
use tokio_util::sync::CancellationToken;

const TOKEN: &str = "test-token-123";
const CID_OLD: &str = "1111111111111111111111111111111111111111111111111111111111111111";
const CID_WEB: &str = "abcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdefabcdef0123";

fn pod(name: &str, uid: &str, rv: &str, cid: &str) -> String {
    format!(
        r#"{{"kind":"Pod","apiVersion":"v1","metadata":{{"name":"{name}","namespace":"shop","uid":"{uid}","resourceVersion":"{rv}","ownerReferences":[{{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-5f7c9d8b4","uid":"rs1","controller":true}}]}},"spec":{{"nodeName":"node-a","containers":[{{"name":"web","image":"nginx"}}]}},"status":{{"phase":"Running","containerStatuses":[{{"name":"web","ready":true,"containerID":"containerd://{cid}"}}]}}}}"#
    )
}

async fn fake_api(lists: Arc<AtomicUsize>, watches: Arc<AtomicUsize>) -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = l.accept().await.unwrap();
            let (lists, watches) = (lists.clone(), watches.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut b = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    let n = s.read(&mut b).await.unwrap();
                    if n == 0 {
                        return;
                    }
                    req.extend_from_slice(&b[..n]);
                }
                let req = String::from_utf8_lossy(&req).to_string();
                let line = req.lines().next().unwrap_or_default().to_owned();
                let authed = req
                    .lines()
                    .any(|l| l.eq_ignore_ascii_case(&format!("authorization: Bearer {TOKEN}")));
                if !authed {
                    let body = r#"{"kind":"Status","apiVersion":"v1","status":"Failure","message":"Unauthorized","reason":"Unauthorized","code":401}"#;
                    let _ = s
                        .write_all(format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                    return;
                }
                assert!(
                    line.starts_with("GET /api/v1/pods?fieldSelector=spec.nodeName%3Dnode-a"),
                    "{line}"
                );
                if !line.contains("watch=1") {
                    let n = lists.fetch_add(1, Ordering::SeqCst);
                    let items = if n == 0 {
                        pod("old-1", "u-old", "90", CID_OLD)
                    } else {
                        pod("old-1", "u-old", "95", CID_OLD)
                    };
                    let rv = if n == 0 { "100" } else { "200" };
                    let body = format!(
                        r#"{{"kind":"PodList","apiVersion":"v1","metadata":{{"resourceVersion":"{rv}"}},"items":[{items}]}}"#
                    );
                    let _ = s
                        .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
                        .await;
                    return;
                }
                let n = watches.fetch_add(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").await;
                let events: Vec<String> = if n == 0 {
                    assert!(line.contains("resourceVersion=100"), "{line}");
                    vec![r#"{"type":"ERROR","object":{"kind":"Status","apiVersion":"v1","status":"Failure","message":"too old resource version: 100 (150)","reason":"Expired","code":410}}"#.to_owned()]
                } else {
                    assert!(line.contains("resourceVersion=200"), "{line}");
                    vec![
                        format!(r#"{{"type":"ADDED","object":{}}}"#, pod("web-5f7c9d8b4-x7k2p", "u-web", "201", CID_WEB)),
                        format!(r#"{{"type":"DELETED","object":{}}}"#, pod("old-1", "u-old", "202", CID_OLD)),
                        r#"{"type":"BOOKMARK","object":{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"203"}}}"#.to_owned(),
                    ]
                };
                for e in events {
                    let line = format!("{e}\n");
                    let _ = s
                        .write_all(format!("{:x}\r\n{line}\r\n", line.len()).as_bytes())
                        .await;
                }
                if n == 0 {
                    let _ = s.write_all(b"0\r\n\r\n").await;
                    return;
                }
                // Keep the watch open, as the real server does.
                tokio::time::sleep(Duration::from_secs(30)).await;
            });
        }
    });
    port
}

#[tokio::test]
async fn pods_of_the_node_resolve_processes_by_container_id() {
    let (lists, watches) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let port = fake_api(lists.clone(), watches.clone()).await;
    let dir = common::temp_dir("kube");
    std::fs::write(dir.join("token"), format!("{TOKEN}\n")).unwrap();
    let index = SharedIndex::default();
    let cancel = CancellationToken::new();
    let api = ApiConfig {
        url: format!("http://127.0.0.1:{port}"),
        token_file: Some(dir.join("token")),
        ca_file: None,
        node_name: "node-a".into(),
    };
    let task = tokio::spawn(kube::run(api, index.clone(), cancel.clone()));

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let done = {
            let i = index.read().unwrap();
            i.get(CID_WEB).is_some() && i.get(CID_OLD).is_none()
        };
        if done {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "index never caught up (lists {lists:?}, watches {watches:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The 410 made the watcher relist once before watching again.
    assert_eq!(lists.load(Ordering::SeqCst), 2);
    assert_eq!(watches.load(Ordering::SeqCst), 2);

    // A process whose cgroup names the container resolves to the pod.
    let proc_root = dir.join("proc");
    let p = proc_root.join("4242");
    std::fs::create_dir_all(&p).unwrap();
    std::fs::write(
        p.join("cgroup"),
        format!("0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1.slice/cri-containerd-{CID_WEB}.scope\n"),
    )
    .unwrap();
    std::os::unix::fs::symlink("/usr/sbin/nginx", p.join("exe")).unwrap();
    std::fs::write(p.join("cmdline"), b"nginx: worker process\0").unwrap();
    let mut resolver = Resolver::new(proc_root, Vec::new()).with_pods(index.clone());
    let r = resolver.resource(4242, Some(80), "nginx");
    assert_eq!(r.namespace.as_deref(), Some("shop"));
    assert_eq!(r.service_name, "web");
    let pod = r.pod.unwrap();
    assert_eq!(pod.name, "web-5f7c9d8b4-x7k2p");
    assert_eq!(pod.workload_kind.as_deref(), Some("Deployment"));
    let attrs =
        mop_agent::telemetry::resource(&resolver.resource(4242, Some(80), "nginx"), "node-a")
            .attributes;
    assert_eq!(
        common::attr_str(&attrs, "k8s.namespace.name").as_deref(),
        Some("shop")
    );
    assert_eq!(
        common::attr_str(&attrs, "k8s.deployment.name").as_deref(),
        Some("web")
    );
    assert_eq!(
        common::attr_str(&attrs, "k8s.pod.name").as_deref(),
        Some("web-5f7c9d8b4-x7k2p")
    );

    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_rejected_token_leaves_the_index_empty() {
    let port = fake_api(Arc::default(), Arc::default()).await;
    let dir = common::temp_dir("kube-bad");
    std::fs::write(dir.join("token"), "wrong").unwrap();
    let index = SharedIndex::default();
    let cancel = CancellationToken::new();
    let api = ApiConfig {
        url: format!("http://127.0.0.1:{port}"),
        token_file: Some(dir.join("token")),
        ca_file: None,
        node_name: "node-a".into(),
    };
    let task = tokio::spawn(kube::run(api, index.clone(), cancel.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(index.read().unwrap().pods(), 0);
    cancel.cancel();
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .unwrap()
        .unwrap();
}
