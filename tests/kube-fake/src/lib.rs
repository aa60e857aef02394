//! A fake Kubernetes API server for tests, strict like the real one.
//!
//! It serves the resources the syncer renders (Namespaces, ConfigMaps, Services,
//! ServiceAccounts, Deployments, DaemonSets, ClusterRoles, ClusterRoleBindings) plus
//! Pods, Events (core/v1 and events.k8s.io/v1) and Leases, over plain HTTP on
//! `127.0.0.1`, speaking the wire format of the real API server: the same paths,
//! `Status` errors, server-side apply with field ownership and conflicts, optimistic
//! concurrency on `resourceVersion`, label selectors and watches. A simulated
//! controller rolls Deployments and DaemonSets out, crash-looping on images a test
//! marks as bad. Every request is recorded, so tests can assert on what a client sent.
//!
//! Reference: "Kubernetes API Concepts"
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/>; each module cites
//! the page it follows.
//!
//! ```no_run
//! # async fn f() -> Result<(), mop_kube_fake::Error> {
//! let kube = mop_kube_fake::FakeKube::start().await?;
//! let url = kube.url(); // point a kube::Config's cluster_url here
//! kube.mark_image_bad("registry.example/mop-agent:2.0.0");
//! assert_eq!(kube.write_requests().len(), 0);
//! # Ok(()) }
//! ```

#![forbid(unsafe_code)]

mod controller;
mod discovery;
mod fields;
mod identity;
mod rbac;
mod resources;
mod schema;
mod selector;
mod server;
mod status;
mod store;
mod strict;
mod validate;
mod watch;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::sync::{oneshot, watch as tokio_watch};

pub use crate::identity::{PodSpec, TokenSpec};
pub use crate::rbac::{Attributes, User};
pub use crate::status::ApiError;
pub use crate::store::{RecordedRequest, RolloutSettings};

/// The bearer token of the fake's administrator (`kubernetes-admin` in
/// `system:masters`, bound to `cluster-admin`), what a cluster's admin kubeconfig
/// holds: for test setup, never for the product under test.
pub const ADMIN_TOKEN: &str = "mop-kube-fake-admin-token";

/// State shared by the handlers and the simulated controller.
pub(crate) struct Inner {
    pub(crate) state: Mutex<store::State>,
    /// The latest `resourceVersion`, bumped after every stored change to wake watches.
    pub(crate) changed: tokio_watch::Sender<u64>,
    /// Bumped to end every open watch stream (`end_watches`).
    pub(crate) watch_epoch: tokio_watch::Sender<u64>,
    /// Issued ServiceAccount tokens (`identity.rs`).
    pub(crate) tokens: Mutex<identity::Registry>,
}

/// Errors of the test-facing API (not of the HTTP API, which answers `Status`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot bind the fake API server: {0}")]
    Bind(#[source] std::io::Error),
    #[error("unknown resource {api_version} {kind}: the fake does not serve it")]
    UnknownKind { api_version: String, kind: String },
    #[error("{kind} {name} not found")]
    NotFound { kind: String, name: String },
    #[error("the API rejected the write ({}): {}", .0.code, .0.body["message"])]
    Api(ApiError),
    #[error("fake state poisoned by an earlier panic")]
    Poisoned,
}

/// Options for [`FakeKube::start_with`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// When set, every request must carry `Authorization: Bearer <token>` (else
    /// 401), and that token is the admin's. Without it, [`ADMIN_TOKEN`] and the
    /// tokens of [`FakeKube::service_account_token`] authenticate, and a request
    /// without credentials is `system:anonymous`.
    pub token: Option<String>,
    pub rollout: RolloutSettings,
}

/// A running fake API server; stops when dropped.
pub struct FakeKube {
    inner: Arc<Inner>,
    addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
}

impl FakeKube {
    /// Starts a server on `127.0.0.1:0` with no authentication and default rollouts.
    pub async fn start() -> Result<Self, Error> {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Result<Self, Error> {
        // Off the runtime's thread: a current-thread test runtime runs the
        // client under test too.
        let _ = tokio::task::spawn_blocking(schema::preload).await;
        let mut state = store::State::new();
        state.token = opts.token;
        state.tokens.insert(
            ADMIN_TOKEN.to_string(),
            store::Credential::User(User::admin()),
        );
        state.rollout = opts.rollout;
        let rv = state.rv;
        let (changed, _) = tokio_watch::channel(rv);
        let inner = Arc::new(Inner {
            state: Mutex::new(state),
            changed,
            watch_epoch: tokio_watch::channel(0).0,
            tokens: Mutex::default(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(Error::Bind)?;
        let addr = listener.local_addr().map_err(Error::Bind)?;
        let app = axum::Router::new()
            .fallback(server::handle)
            .with_state(inner.clone());
        let (tx, rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await;
        });
        Ok(FakeKube {
            inner,
            addr,
            shutdown: Some(tx),
        })
    }

    /// `http://127.0.0.1:PORT`, the cluster URL for a client.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn state(&self) -> Result<std::sync::MutexGuard<'_, store::State>, Error> {
        self.inner.state.lock().map_err(|_| Error::Poisoned)
    }

    /// Issues a bearer token for the ServiceAccount `namespace/name` (like
    /// `kubectl create token`): requests with it authenticate as
    /// `system:serviceaccount:<namespace>:<name>` while that ServiceAccount exists,
    /// and RBAC decides what they may do.
    pub fn service_account_token(&self, namespace: &str, name: &str) -> String {
        let token = format!("sa.{namespace}.{name}.mop-kube-fake");
        if let Ok(mut s) = self.state() {
            s.tokens.insert(
                token.clone(),
                store::Credential::ServiceAccount {
                    namespace: namespace.into(),
                    name: name.into(),
                },
            );
        }
        token
    }

    /// Registers a bearer token for any user and groups (add
    /// `system:authenticated` yourself, as authenticators do).
    pub fn add_user_token(&self, token: &str, user: User) {
        if let Ok(mut s) = self.state() {
            s.tokens
                .insert(token.to_string(), store::Credential::User(user));
        }
    }

    /// Whether `user` may do what `attributes` say, as RBAC decides it now.
    pub fn can(&self, user: &User, attributes: &Attributes) -> bool {
        self.state()
            .map(|s| rbac::authorize(&s, user, attributes).is_ok())
            .unwrap_or(false)
    }

    /// Accepts only `token` (as the admin) from now on, every other credential
    /// getting 401 (a rotated or revoked credential); `None` goes back to the
    /// registered tokens.
    pub fn set_token(&self, token: Option<&str>) {
        if let Ok(mut s) = self.state() {
            s.token = token.map(str::to_string);
        }
    }

    /// Pods of workloads using this exact image crash-loop and never become ready.
    pub fn mark_image_bad(&self, image: &str) {
        if let Ok(mut s) = self.state() {
            s.bad_images.insert(image.to_string());
        }
    }

    pub fn set_rollout(&self, settings: RolloutSettings) {
        if let Ok(mut s) = self.state() {
            s.rollout = settings;
        }
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state().map(|s| s.requests.clone()).unwrap_or_default()
    }

    /// The POST, PUT, PATCH and DELETE requests received so far.
    pub fn write_requests(&self) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(RecordedRequest::is_write)
            .collect()
    }

    pub fn clear_requests(&self) {
        if let Ok(mut s) = self.state() {
            s.requests.clear();
        }
    }

    /// Stored changes caused by clients (no-op writes and the simulated controller
    /// do not count): "zero writes" means this did not move.
    pub fn mutations(&self) -> u64 {
        self.state().map(|s| s.client_mutations).unwrap_or(0)
    }

    /// Forgets the history before the current version, as etcd compaction does:
    /// a watch from an older `resourceVersion` then gets 410 Expired.
    pub fn compact(&self) {
        if let Ok(mut s) = self.state() {
            s.compacted = s.rv;
        }
    }

    /// Ends every open watch stream, as an API server restart or its watch
    /// timeout does: clients watch again from their last `resourceVersion`
    /// (and, after `compact`, get 410 Expired and must list again).
    pub fn end_watches(&self) {
        self.inner.watch_epoch.send_modify(|e| *e += 1);
    }

    /// The latest `resourceVersion` of the whole store.
    pub fn resource_version(&self) -> u64 {
        self.state().map(|s| s.rv).unwrap_or(0)
    }

    fn resource(api_version: &str, kind: &str) -> Result<resources::Resource, Error> {
        resources::by_kind(api_version, kind).ok_or_else(|| Error::UnknownKind {
            api_version: api_version.into(),
            kind: kind.into(),
        })
    }

    /// The stored object, as a GET would return it.
    pub fn get(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
    ) -> Option<Value> {
        let res = Self::resource(api_version, kind).ok()?;
        self.state()
            .ok()?
            .get(&res, namespace.unwrap_or(""), name)
            .cloned()
    }

    /// Stored objects of a kind, in one namespace or all.
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let Ok(res) = Self::resource(api_version, kind) else {
            return Vec::new();
        };
        self.state()
            .map(|s| s.list(&res, namespace).into_iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Creates or replaces an object as field manager `manager` with an update
    /// (not an apply), like `kubectl create`/`kubectl edit` would: the way to
    /// seed state a test did not apply itself, or to drift an object by hand.
    /// Counted as a client mutation; not recorded as a request.
    pub fn put(&self, manager: &str, obj: Value) -> Result<Value, Error> {
        let av = obj["apiVersion"].as_str().unwrap_or("").to_string();
        let kind = obj["kind"].as_str().unwrap_or("").to_string();
        let res = Self::resource(&av, &kind)?;
        let ns = obj["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string();
        let name = obj["metadata"]["name"].as_str().unwrap_or("").to_string();
        let mut s = self.state()?;
        if res.namespaced && !s.namespace_exists(&ns) {
            return Err(Error::Api(ApiError::namespace_not_found(&ns)));
        }
        let old = s.get(&res, &ns, &name).cloned();
        let old_view = old.as_ref().map(fields::tracked_view);
        let entries = fields::update(
            old_view.as_ref(),
            &old.as_ref().map(fields::entries).unwrap_or_default(),
            &fields::tracked_view(&obj),
            manager,
            &av,
            None,
            &store::now_rfc3339(),
        );
        let (stored, changed) = server::commit(
            &mut s,
            &res,
            old.as_ref(),
            obj,
            &entries,
            server::Mode::CLIENT,
        )
        .map_err(Error::Api)?;
        drop(s);
        if changed {
            self.inner.changed.send_replace(self.resource_version());
            if res.is_workload()
                && old.map(|o| o["metadata"]["generation"].clone())
                    != Some(stored["metadata"]["generation"].clone())
            {
                controller::kick(&self.inner, &res, &stored);
            }
        }
        Ok(stored)
    }

    /// Creates or replaces every object of a multi-document YAML stream (a
    /// manifest file) as [`FakeKube::put`] does, as the admin would with
    /// `kubectl`; returns the stored objects. Fails at the first object the API
    /// refuses or the fake does not serve.
    pub fn put_yaml(&self, manager: &str, yaml: &str) -> Result<Vec<Value>, Error> {
        let docs: Vec<Value> = serde_saphyr::from_multiple(yaml)
            .map_err(|e| Error::Api(ApiError::bad_request(format!("not YAML objects: {e}"))))?;
        docs.into_iter()
            .filter(|d| !d.is_null())
            .map(|d| self.put(manager, d))
            .collect()
    }

    /// Changes an existing object in place as `manager` (a hand edit, for drift tests).
    pub fn edit(
        &self,
        manager: &str,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        change: impl FnOnce(&mut Value),
    ) -> Result<Value, Error> {
        let mut obj = self
            .get(api_version, kind, namespace, name)
            .ok_or_else(|| Error::NotFound {
                kind: kind.into(),
                name: name.into(),
            })?;
        change(&mut obj);
        self.put(manager, obj)
    }

    /// Overwrites a workload's `status` as the controller would (for states the
    /// simulation does not produce by itself).
    pub fn set_status(
        &self,
        api_version: &str,
        kind: &str,
        namespace: Option<&str>,
        name: &str,
        status: Value,
    ) -> Result<Value, Error> {
        let res = Self::resource(api_version, kind)?;
        let mut s = self.state()?;
        let old = s
            .get(&res, namespace.unwrap_or(""), name)
            .cloned()
            .ok_or_else(|| Error::NotFound {
                kind: kind.into(),
                name: name.into(),
            })?;
        let mut obj = old.clone();
        obj["status"] = status;
        let entries = fields::entries(&old);
        let (stored, _) = server::commit(
            &mut s,
            &res,
            Some(&old),
            obj,
            &entries,
            server::Mode::CONTROLLER,
        )
        .map_err(Error::Api)?;
        let rv = s.rv;
        drop(s);
        self.inner.changed.send_replace(rv);
        Ok(stored)
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}
