//! Runs the Grafana, ruler and Kubernetes fakes for a config repository, so the
//! real `mop` binary can be measured against them (`benches/apply.sh`).
//!
//! `fake-platform <repo-dir>`: starts the fakes, adds every Grafana user the
//! repository names, points `<repo-dir>/mop.yaml` at the fakes (password by
//! `file:`), writes `<repo-dir>/../kubeconfig`, prints `ready`, then answers each
//! line on stdin with the requests and writes each fake has received, as JSON.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::BufRead;
use std::path::PathBuf;

use mop_fakes::grafana::FakeGrafana;
use mop_fakes::ruler::{FakeRuler, RulerApis};
use mop_kube_fake::FakeKube;

#[tokio::main]
async fn main() {
    let dir = PathBuf::from(
        std::env::args()
            .nth(1)
            .expect("usage: fake-platform <repo-dir>"),
    );
    let snap = mop_syncer::source::Snapshot::from_dir(&dir).expect("read repository");
    let repo = mop_syncer::validate::validate(&snap)
        .repo
        .expect("the repository validates");

    let grafana = FakeGrafana::start("mop-admin", "s3cret").await.unwrap();
    let mut users = std::collections::BTreeSet::new();
    for t in &repo.tenants {
        for m in &t.spec.grafana.members {
            users.insert(m.user.value.clone());
        }
        for team in &t.spec.grafana.teams {
            for m in &team.members {
                users.insert(m.value.clone());
            }
        }
    }
    for u in &users {
        grafana.add_user(u, u);
    }
    let ruler = FakeRuler::start(RulerApis::ALL).await.unwrap();
    let kube = FakeKube::start().await.unwrap();
    // What a real cluster already has: MOP's own namespace (it is installed
    // there) and the backends' (the LGTM stack runs there).
    let p = &repo.platform;
    let mut namespaces = std::collections::BTreeSet::from([p.namespace.clone()]);
    for b in [&p.backends.mimir, &p.backends.loki, &p.backends.tempo]
        .into_iter()
        .chain(p.backends.pyroscope.as_ref())
    {
        namespaces.insert(b.overrides.namespace.clone());
    }
    for ns in namespaces {
        kube.put(
            "cluster-admin",
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}),
        )
        .unwrap();
    }

    let parent = dir.canonicalize().unwrap().parent().unwrap().to_path_buf();
    let password = parent.join("grafana-password");
    std::fs::write(&password, "s3cret").unwrap();
    std::fs::write(
        parent.join("kubeconfig"),
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\nusers:\n- name: fake\n  user:\n    token: {}\n",
            kube.url(),
            // The cluster admin: this platform is for benchmarks, not for RBAC
            // (the tests run the syncer as its ServiceAccount).
            mop_kube_fake::ADMIN_TOKEN
        ),
    )
    .unwrap();
    let mop_yaml = std::fs::read_to_string(dir.join("mop.yaml")).unwrap();
    let mop_yaml = mop_yaml
        .replace(&p.grafana.url.value, &grafana.url())
        .replace(&p.backends.mimir.url.value, &ruler.url())
        .replace(&p.backends.loki.url.value, &ruler.url())
        .replace(
            "secret: { name: mop-grafana-admin, key: password }",
            &format!("file: {}", password.display()),
        );
    std::fs::write(dir.join("mop.yaml"), mop_yaml).unwrap();
    println!("ready");

    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(4);
    std::thread::spawn(move || {
        for l in std::io::stdin().lock().lines().map_while(Result::ok) {
            if tx.blocking_send(l).is_err() {
                break;
            }
        }
    });
    while rx.recv().await.is_some() {
        let report = serde_json::json!({
            "grafana": { "requests": grafana.recorder().requests().len(), "writes": grafana.recorder().writes() },
            "ruler": { "requests": ruler.recorder().requests().len(), "writes": ruler.recorder().writes() },
            "kubernetes": { "requests": kube.requests().len(), "writes": kube.write_requests().len(), "mutations": kube.mutations() },
        });
        println!("{report}");
    }
}
