//! Grafana through its HTTP API
//! (<https://grafana.com/docs/grafana/latest/developers/http_api/>), as the server
//! admin over basic auth: organisations and their membership are admin APIs that
//! service-account tokens (bound to one org) cannot call
//! (<https://grafana.com/docs/grafana/latest/developers/http_api/authentication/>).
//! Everything inside an org is done with the `X-Grafana-Org-Id` header.
//!
//! What MOP owns, and so what `observe` reports (and a repository without it
//! deletes, with pruning on):
//! - the platform org (named `platform_org`) and, in it, only datasources whose
//!   uid starts with `mop-`: the platform org is shared with people who may add
//!   their own datasources, dashboards and members there;
//! - a tenant's org and, in it, every member (but the server admin MOP logs in
//!   as, which Grafana adds to every org it creates), every team and every
//!   dashboard: access and dashboards of a tenant are declared completely by the
//!   repository, so a dashboard made in the UI is drift;
//! - datasources and folders of a tenant's org whose uid starts with `mop-` (what
//!   render produces): an extra datasource or folder made by hand is left alone.
//!
//! Members are named as the repository names them (login or email); a member the
//! repository does not name (added by hand, or of a removed tenant) goes by its
//! login.
//!
//! Live objects are normalised into the shape [`Applier::canonical`] gives the
//! rendered ones: ids, versions, timestamps and Grafana's defaults are dropped.
//! `secureJsonData` is write-only (`GET` returns only `secureJsonFields`), so both
//! sides carry a hash of it in `jsonData.mopSecureJsonHash` instead, written by
//! apply alongside the secrets: a changed secret is an update, an unchanged one is
//! never re-sent.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use futures::StreamExt as _;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::{Method, RequestBuilder, StatusCode};
use serde_json::{Map, Value, json};

use super::http::{Client, RetryPolicy, check};
use super::{Applier, ApplyError, ObserveFailure, Observed, Scope};
use crate::plan::{Action, Change};
use crate::render::{Desired, Kind, Resource, ResourceId, Target, digest};

/// The `jsonData` key holding the hash of a datasource's `secureJsonData`.
pub const SECURE_HASH_KEY: &str = "mopSecureJsonHash";

/// Uids MOP gives the datasources and folders it renders.
const MOP_UID_PREFIX: &str = "mop-";

/// Everything but RFC 3986 unreserved characters is escaped in a path segment.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

fn seg(s: &str) -> String {
    utf8_percent_encode(s, SEGMENT).to_string()
}

/// The tenant a resource belongs to (`None`: the platform org).
type TenantKey = Option<String>;

/// Ids learnt by `observe` (and by creates) that apply needs to address objects.
#[derive(Debug, Default)]
struct Learnt {
    /// The revision being applied, for dashboard save messages.
    revision: Option<String>,
    orgs: HashMap<TenantKey, i64>,
    /// (tenant, member name as the repository spells it) → user id.
    users: HashMap<(TenantKey, String), i64>,
    /// (tenant, team name) → team id.
    teams: HashMap<(TenantKey, String), i64>,
    /// (tenant, uid) → the datasource's current `version`.
    datasource_versions: HashMap<(TenantKey, String), i64>,
}

impl Learnt {
    fn merge(&mut self, other: Learnt) {
        self.orgs.extend(other.orgs);
        self.users.extend(other.users);
        self.teams.extend(other.teams);
        self.datasource_versions.extend(other.datasource_versions);
    }
}

/// One tenant's read: its objects, the ids learnt, and the error that stopped it.
type TenantObservation = (TenantKey, Vec<Resource>, Learnt, Option<ApplyError>);

/// Applies the Grafana part of the desired state.
pub struct GrafanaApplier {
    client: Client,
    user: String,
    password: String,
    /// Tenants read at once during `observe`.
    concurrency: usize,
    learnt: Mutex<Learnt>,
}

impl std::fmt::Debug for GrafanaApplier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No password in logs.
        f.debug_struct("GrafanaApplier")
            .field("url", &self.client.base())
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl GrafanaApplier {
    /// `url` is Grafana's base URL; `user`/`password` a server admin's.
    pub fn new(
        url: &str,
        user: impl Into<String>,
        password: impl Into<String>,
        retry: RetryPolicy,
    ) -> Result<Self, ApplyError> {
        Ok(Self {
            client: Client::new(url, retry)?,
            user: user.into(),
            password: password.into(),
            concurrency: 8,
            learnt: Mutex::new(Learnt::default()),
        })
    }

    /// How many tenants' orgs `observe` reads at once (default 8).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    fn learnt(&self) -> std::sync::MutexGuard<'_, Learnt> {
        self.learnt.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn admin(&self, method: Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, path)
            .basic_auth(&self.user, Some(&self.password))
    }

    fn in_org(&self, org: i64, method: Method, path: &str) -> RequestBuilder {
        self.admin(method, path)
            .header("X-Grafana-Org-Id", org.to_string())
    }

    /// Sends with retries; a non-2xx answer is an error quoting the server.
    async fn call(&self, req: RequestBuilder) -> Result<Value, ApplyError> {
        let resp = check(self.client.send(req).await?).await?;
        let text = resp
            .text()
            .await
            .map_err(|e| ApplyError::new(format!("cannot read Grafana's answer: {e}")))?;
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| ApplyError::new(format!("Grafana answered invalid JSON: {e}")))
    }

    fn org_of(&self, tenant: &TenantKey) -> Result<i64, ApplyError> {
        self.learnt().orgs.get(tenant).copied().ok_or_else(|| {
            ApplyError::new(format!(
                "the Grafana org of {} is neither observed nor created",
                tenant.as_deref().unwrap_or("the platform")
            ))
        })
    }

    // --- observe ---------------------------------------------------------------

    /// `GET /api/orgs/name/{name}`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/org/#get-organization-by-name>);
    /// `None` when there is no such org.
    async fn org_by_name(&self, name: &str) -> Result<Option<i64>, ApplyError> {
        let req = self.admin(Method::GET, &format!("/api/orgs/name/{}", seg(name)));
        let resp = self.client.send(req).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp).await?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| ApplyError::new(format!("GET org {name:?}: invalid answer: {e}")))?;
        v["id"]
            .as_i64()
            .map(Some)
            .ok_or_else(|| ApplyError::new(format!("GET org {name:?}: answer has no id: {v}")))
    }

    /// Reads one org (platform when `tenant` is `None`) into `out`; stops at the
    /// first failed read, keeping what was read before it.
    async fn observe_org(
        &self,
        tenant: &TenantKey,
        org_name: &str,
        old_name: Option<&str>,
        desired: &Desired,
        out: &mut Vec<Resource>,
        learnt: &mut Learnt,
    ) -> Result<(), ApplyError> {
        let mut found = self.org_by_name(org_name).await?.map(|id| (id, org_name));
        if let (None, Some(old)) = (found, old_name) {
            // Renamed in the repository: the org still has its old name.
            found = self.org_by_name(old).await?.map(|id| (id, old));
        }
        let Some((org, live_name)) = found else {
            // Not there: nothing of it exists live, which is not a failure.
            return Ok(());
        };
        learnt.orgs.insert(tenant.clone(), org);
        out.push(resource(
            tenant,
            Kind::Org,
            tenant.as_deref().unwrap_or(crate::render::PLATFORM_ORG),
            None,
            &json!({ "name": live_name }),
        ));
        if tenant.is_some() {
            self.observe_members(tenant, org, desired, out, learnt)
                .await?;
            self.observe_teams(tenant, org, desired, out, learnt)
                .await?;
        }
        self.observe_datasources(tenant, org, desired, out, learnt)
            .await?;
        if tenant.is_some() {
            self.observe_folders(tenant, org, out).await?;
            self.observe_dashboards(tenant, org, out).await?;
        }
        Ok(())
    }

    async fn observe_tenant(
        &self,
        key: TenantKey,
        org: String,
        old_name: Option<String>,
        desired: &Desired,
    ) -> TenantObservation {
        let mut out = Vec::new();
        let mut learnt = Learnt::default();
        let r = self
            .observe_org(
                &key,
                &org,
                old_name.as_deref(),
                desired,
                &mut out,
                &mut learnt,
            )
            .await;
        (key, out, learnt, r.err())
    }

    /// `GET /api/orgs/{id}/users`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/org/#get-users-in-organization>).
    async fn observe_members(
        &self,
        tenant: &TenantKey,
        org: i64,
        desired: &Desired,
        out: &mut Vec<Resource>,
        learnt: &mut Learnt,
    ) -> Result<(), ApplyError> {
        let wanted: Vec<&str> = desired_of(desired, tenant, Kind::OrgMember)
            .map(|r| r.id.name.as_str())
            .collect();
        let users = self
            .call(self.admin(Method::GET, &format!("/api/orgs/{org}/users")))
            .await?;
        for u in users.as_array().into_iter().flatten() {
            let login = u["login"].as_str().unwrap_or_default();
            let email = u["email"].as_str().unwrap_or_default();
            let name = member_name(login, email, &wanted);
            if self.is_admin(login) && !wanted.contains(&name.as_str()) {
                continue;
            }
            if let Some(id) = u["userId"].as_i64() {
                learnt.users.insert((tenant.clone(), name.clone()), id);
            }
            let body = json!({ "loginOrEmail": name, "role": u["role"] });
            out.push(resource(tenant, Kind::OrgMember, &name, None, &body));
        }
        Ok(())
    }

    fn is_admin(&self, login: &str) -> bool {
        login.eq_ignore_ascii_case(&self.user)
    }

    /// `GET /api/teams/search` and `GET /api/teams/{id}/members`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/team/>).
    async fn observe_teams(
        &self,
        tenant: &TenantKey,
        org: i64,
        desired: &Desired,
        out: &mut Vec<Resource>,
        learnt: &mut Learnt,
    ) -> Result<(), ApplyError> {
        let wanted: HashMap<&str, Vec<String>> = desired_of(desired, tenant, Kind::Team)
            .map(|r| (r.id.name.as_str(), team_members(&parse(r))))
            .collect();
        let mut teams = Vec::new();
        for page in 1.. {
            let path = format!("/api/teams/search?perpage=1000&page={page}");
            let v = self.call(self.in_org(org, Method::GET, &path)).await?;
            let batch = v["teams"].as_array().cloned().unwrap_or_default();
            let total = v["totalCount"].as_u64().unwrap_or(0);
            let empty = batch.is_empty();
            teams.extend(batch);
            if empty || teams.len() as u64 >= total {
                break;
            }
        }
        for t in teams {
            let (Some(id), Some(name)) = (t["id"].as_i64(), t["name"].as_str()) else {
                continue;
            };
            let path = format!("/api/teams/{id}/members");
            let members = self.call(self.in_org(org, Method::GET, &path)).await?;
            let want = wanted.get(name).cloned().unwrap_or_default();
            let want: Vec<&str> = want.iter().map(String::as_str).collect();
            let mut names: Vec<String> = members
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| {
                    let login = m["login"].as_str().unwrap_or_default();
                    let email = m["email"].as_str().unwrap_or_default();
                    let n = member_name(login, email, &want);
                    // Grafana may add a team's creator as its admin member.
                    (!self.is_admin(login) || want.contains(&n.as_str())).then_some(n)
                })
                .collect();
            names.sort_unstable();
            names.dedup();
            learnt.teams.insert((tenant.clone(), name.to_string()), id);
            let body = json!({ "name": name, "email": t["email"].as_str().unwrap_or_default(), "members": names });
            out.push(resource(tenant, Kind::Team, name, None, &body));
        }
        Ok(())
    }

    /// `GET /api/datasources`, then `GET /api/datasources/uid/{uid}` for each of
    /// MOP's (the list lacks `secureJsonFields` and `version`)
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/data_source/>).
    async fn observe_datasources(
        &self,
        tenant: &TenantKey,
        org: i64,
        desired: &Desired,
        out: &mut Vec<Resource>,
        learnt: &mut Learnt,
    ) -> Result<(), ApplyError> {
        let list = self
            .call(self.in_org(org, Method::GET, "/api/datasources"))
            .await?;
        let uids: Vec<String> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|d| d["uid"].as_str())
            .filter(|u| u.starts_with(MOP_UID_PREFIX))
            .map(str::to_string)
            .collect();
        for uid in uids {
            let path = format!("/api/datasources/uid/{}", seg(&uid));
            let live = self.call(self.in_org(org, Method::GET, &path)).await?;
            if let Some(v) = live["version"].as_i64() {
                learnt
                    .datasource_versions
                    .insert((tenant.clone(), uid.clone()), v);
            }
            let id = ResourceId {
                target: Target::Grafana,
                tenant: tenant.clone(),
                kind: Kind::Datasource,
                name: uid.clone(),
            };
            let wanted_secrets = desired
                .resources
                .get(&id)
                .map(|r| secret_keys(&parse(r)))
                .unwrap_or_default();
            let body = live_datasource(live, &wanted_secrets);
            out.push(resource(tenant, Kind::Datasource, &uid, None, &body));
        }
        Ok(())
    }

    /// `GET /api/folders`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/folder/#get-all-folders>).
    async fn observe_folders(
        &self,
        tenant: &TenantKey,
        org: i64,
        out: &mut Vec<Resource>,
    ) -> Result<(), ApplyError> {
        const LIMIT: usize = 1000;
        for page in 1.. {
            let path = format!("/api/folders?limit={LIMIT}&page={page}");
            let v = self.call(self.in_org(org, Method::GET, &path)).await?;
            let batch = v.as_array().cloned().unwrap_or_default();
            for f in &batch {
                let (Some(uid), Some(title)) = (f["uid"].as_str(), f["title"].as_str()) else {
                    continue;
                };
                if uid.starts_with(MOP_UID_PREFIX) {
                    let body = json!({ "uid": uid, "title": title });
                    out.push(resource(
                        tenant,
                        Kind::Folder,
                        uid,
                        Some(title.to_string()),
                        &body,
                    ));
                }
            }
            if batch.len() < LIMIT {
                break;
            }
        }
        Ok(())
    }

    /// `GET /api/search?type=dash-db`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/folder_dashboard_search/>),
    /// then `GET /api/dashboards/uid/{uid}`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/#get-dashboard-by-uid>).
    async fn observe_dashboards(
        &self,
        tenant: &TenantKey,
        org: i64,
        out: &mut Vec<Resource>,
    ) -> Result<(), ApplyError> {
        // Grafana caps `limit` at 5000.
        const LIMIT: usize = 5000;
        let mut uids = BTreeSet::new();
        for page in 1.. {
            let path = format!("/api/search?type=dash-db&limit={LIMIT}&page={page}");
            let v = self.call(self.in_org(org, Method::GET, &path)).await?;
            let batch = v.as_array().cloned().unwrap_or_default();
            uids.extend(
                batch
                    .iter()
                    .filter_map(|h| h["uid"].as_str().map(str::to_string)),
            );
            if batch.len() < LIMIT {
                break;
            }
        }
        for uid in uids {
            let path = format!("/api/dashboards/uid/{}", seg(&uid));
            let v = self.call(self.in_org(org, Method::GET, &path)).await?;
            let body = live_dashboard(&v);
            let title = v["dashboard"]["title"].as_str().map(str::to_string);
            out.push(resource(tenant, Kind::Dashboard, &uid, title, &body));
        }
        Ok(())
    }

    // --- apply -----------------------------------------------------------------

    async fn apply_org(
        &self,
        change: &Change,
        desired: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = &change.id.tenant;
        match change.action {
            Action::Create => {
                // https://grafana.com/docs/grafana/latest/developers/http_api/org/#create-organization
                // The creating admin becomes the new org's Admin.
                let body = parse_required(desired)?;
                let v = self
                    .call(self.admin(Method::POST, "/api/orgs").json(&body))
                    .await?;
                let id = v["orgId"].as_i64().ok_or_else(|| {
                    ApplyError::new(format!("POST /api/orgs answered without orgId: {v}"))
                })?;
                self.learnt().orgs.insert(tenant.clone(), id);
            }
            Action::Update => {
                // https://grafana.com/docs/grafana/latest/developers/http_api/org/#update-organization
                let body = parse_required(desired)?;
                let id = self.org_of(tenant)?;
                self.call(
                    self.admin(Method::PUT, &format!("/api/orgs/{id}"))
                        .json(&json!({ "name": body["name"] })),
                )
                .await?;
            }
            Action::Delete => {
                // https://grafana.com/docs/grafana/latest/developers/http_api/org/#delete-organization
                // Deletes everything in it too.
                let id = self.org_of(tenant)?;
                self.call(self.admin(Method::DELETE, &format!("/api/orgs/{id}")))
                    .await?;
                self.learnt().orgs.remove(tenant);
            }
        }
        Ok(())
    }

    /// <https://grafana.com/docs/grafana/latest/developers/http_api/org/#add-user-in-organization>
    /// and the update/delete user sections of the same page.
    async fn apply_member(
        &self,
        change: &Change,
        desired: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = &change.id.tenant;
        let org = self.org_of(tenant)?;
        let key = (tenant.clone(), change.id.name.clone());
        let user = || {
            self.learnt().users.get(&key).copied().ok_or_else(|| {
                ApplyError::new(format!("user {:?} was not observed", change.id.name))
            })
        };
        match change.action {
            Action::Create => {
                let body = parse_required(desired)?;
                let v = self
                    .call(
                        self.admin(Method::POST, &format!("/api/orgs/{org}/users"))
                            .json(&body),
                    )
                    .await?;
                if let Some(id) = v["userId"].as_i64() {
                    self.learnt().users.insert(key.clone(), id);
                }
            }
            Action::Update => {
                let body = parse_required(desired)?;
                let id = user()?;
                self.call(
                    self.admin(Method::PATCH, &format!("/api/orgs/{org}/users/{id}"))
                        .json(&json!({ "role": body["role"] })),
                )
                .await?;
            }
            Action::Delete => {
                let id = user()?;
                self.call(self.admin(Method::DELETE, &format!("/api/orgs/{org}/users/{id}")))
                    .await?;
            }
        }
        Ok(())
    }

    /// <https://grafana.com/docs/grafana/latest/developers/http_api/team/>: create,
    /// update, delete, and `PUT /api/teams/{id}/members` to set the members at once.
    async fn apply_team(
        &self,
        change: &Change,
        desired: Option<&Resource>,
        live: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = &change.id.tenant;
        let org = self.org_of(tenant)?;
        let key = (tenant.clone(), change.id.name.clone());
        let team = || {
            self.learnt().teams.get(&key).copied().ok_or_else(|| {
                ApplyError::new(format!("team {:?} was not observed", change.id.name))
            })
        };
        let set_members = |id: i64, members: Vec<String>| {
            self.in_org(org, Method::PUT, &format!("/api/teams/{id}/members"))
                .json(&json!({ "members": members }))
        };
        match change.action {
            Action::Create => {
                let body = parse_required(desired)?;
                let v = self
                    .call(
                        self.in_org(org, Method::POST, "/api/teams")
                            .json(&json!({ "name": body["name"], "email": body["email"] })),
                    )
                    .await?;
                let id = v["teamId"].as_i64().ok_or_else(|| {
                    ApplyError::new(format!("POST /api/teams answered without teamId: {v}"))
                })?;
                self.learnt().teams.insert(key.clone(), id);
                let members = team_members(&body);
                if !members.is_empty() {
                    self.call(set_members(id, members)).await?;
                }
            }
            Action::Update => {
                let body = parse_required(desired)?;
                let old = live.map(parse).unwrap_or(Value::Null);
                let id = team()?;
                if old["name"] != body["name"] || old["email"] != body["email"] {
                    self.call(
                        self.in_org(org, Method::PUT, &format!("/api/teams/{id}"))
                            .json(&json!({ "name": body["name"], "email": body["email"] })),
                    )
                    .await?;
                }
                let members = team_members(&body);
                if team_members(&old) != members {
                    self.call(set_members(id, members)).await?;
                }
            }
            Action::Delete => {
                let id = team()?;
                self.call(self.in_org(org, Method::DELETE, &format!("/api/teams/{id}")))
                    .await?;
            }
        }
        Ok(())
    }

    /// <https://grafana.com/docs/grafana/latest/developers/http_api/data_source/>:
    /// create, update and delete by uid.
    async fn apply_datasource(
        &self,
        change: &Change,
        desired: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let tenant = &change.id.tenant;
        let org = self.org_of(tenant)?;
        let uid = &change.id.name;
        let key = (tenant.clone(), uid.clone());
        let path = format!("/api/datasources/uid/{}", seg(uid));
        match change.action {
            Action::Create | Action::Update => {
                let mut body = datasource_write_body(&parse_required(desired)?);
                let req = if change.action == Action::Create {
                    self.in_org(org, Method::POST, "/api/datasources")
                } else {
                    // Grafana stores the sent `version` + 1 and refuses an older
                    // one (409): send the version observed.
                    if let Some(v) = self.learnt().datasource_versions.get(&key) {
                        body["version"] = json!(v);
                    }
                    self.in_org(org, Method::PUT, &path)
                };
                let v = self.call(req.json(&body)).await?;
                if let Some(version) = v["datasource"]["version"].as_i64() {
                    self.learnt().datasource_versions.insert(key, version);
                }
            }
            Action::Delete => {
                self.call(self.in_org(org, Method::DELETE, &path)).await?;
            }
        }
        Ok(())
    }

    /// <https://grafana.com/docs/grafana/latest/developers/http_api/folder/>.
    async fn apply_folder(
        &self,
        change: &Change,
        desired: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let org = self.org_of(&change.id.tenant)?;
        let path = format!("/api/folders/{}", seg(&change.id.name));
        match change.action {
            Action::Create => {
                let body = parse_required(desired)?;
                self.call(self.in_org(org, Method::POST, "/api/folders").json(&body))
                    .await?;
            }
            Action::Update => {
                let body = parse_required(desired)?;
                // The repository wins over edits made since the observe.
                let update = json!({ "title": body["title"], "overwrite": true });
                self.call(self.in_org(org, Method::PUT, &path).json(&update))
                    .await?;
            }
            Action::Delete => {
                self.call(self.in_org(org, Method::DELETE, &path)).await?;
            }
        }
        Ok(())
    }

    /// `POST /api/dashboards/db` and `DELETE /api/dashboards/uid/{uid}`
    /// (<https://grafana.com/docs/grafana/latest/developers/http_api/dashboard/>).
    async fn apply_dashboard(
        &self,
        change: &Change,
        desired: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let org = self.org_of(&change.id.tenant)?;
        match change.action {
            Action::Create | Action::Update => {
                let body = parse_required(desired)?;
                let message = match &self.learnt().revision {
                    Some(rev) => format!("mop: apply {rev}"),
                    None => "mop: apply".to_string(),
                };
                let mut dashboard = body["dashboard"].clone();
                if let Some(d) = dashboard.as_object_mut() {
                    // Instance fields of another Grafana must not address ours.
                    d.remove("id");
                    d.remove("version");
                }
                let save = json!({
                    "dashboard": dashboard,
                    // Always sent: a save without it moves the dashboard to the root.
                    "folderUid": body["folderUid"].as_str().unwrap_or_default(),
                    // The repository wins over a UI save made since the observe.
                    "overwrite": true,
                    "message": message,
                });
                self.call(
                    self.in_org(org, Method::POST, "/api/dashboards/db")
                        .json(&save),
                )
                .await?;
            }
            Action::Delete => {
                let path = format!("/api/dashboards/uid/{}", seg(&change.id.name));
                self.call(self.in_org(org, Method::DELETE, &path)).await?;
            }
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Applier for GrafanaApplier {
    fn target(&self) -> Target {
        Target::Grafana
    }

    async fn observe(&self, scope: &Scope, desired: &Desired) -> Observed {
        let mut learnt = Learnt {
            revision: desired.revision.clone(),
            ..Learnt::default()
        };
        let mut observed = Observed::default();
        let mut live = Vec::new();
        // The platform org first: when it cannot be read (Grafana down, wrong
        // credentials), nothing can, and nothing is touched.
        if let Err(e) = self
            .observe_org(
                &None,
                &scope.platform_org,
                None,
                desired,
                &mut live,
                &mut learnt,
            )
            .await
        {
            observed.failures.push(ObserveFailure {
                tenant: None,
                error: e.message,
            });
        } else {
            let todo: Vec<(TenantKey, String, Option<String>)> = scope
                .tenants
                .values()
                .map(|t| {
                    let old = scope.renamed_orgs.get(&t.key).cloned();
                    (Some(t.key.clone()), t.org.clone(), old)
                })
                .collect();
            let reads = todo
                .into_iter()
                .map(|(key, org, old)| self.observe_tenant(key, org, old, desired));
            let tenants: Vec<TenantObservation> = futures::stream::iter(reads)
                .buffer_unordered(self.concurrency)
                .collect()
                .await;
            for (key, out, l, err) in tenants {
                live.extend(out);
                learnt.merge(l);
                if let Some(e) = err {
                    observed.failures.push(ObserveFailure {
                        tenant: key,
                        error: e.message,
                    });
                }
            }
            observed.failures.sort_by(|a, b| a.tenant.cmp(&b.tenant));
        }
        observed.live = live.into_iter().map(|r| (r.id.clone(), r)).collect();
        *self.learnt() = learnt;
        observed
    }

    fn canonical(&self, desired: &Resource) -> Resource {
        let v = parse(desired);
        let v = match desired.id.kind {
            Kind::Datasource => canonical_datasource(&v),
            Kind::Dashboard => normalise_dashboard(v),
            Kind::Team => {
                let mut v = v;
                v["members"] = json!(team_members(&v));
                v
            }
            _ => v,
        };
        Resource {
            body: Arc::from(v.to_string()),
            ..desired.clone()
        }
    }

    async fn apply(
        &self,
        _scope: &Scope,
        change: &Change,
        desired: Option<&Resource>,
        live: Option<&Resource>,
    ) -> Result<(), ApplyError> {
        let r = match change.id.kind {
            Kind::Org => self.apply_org(change, desired).await,
            Kind::OrgMember => self.apply_member(change, desired).await,
            Kind::Team => self.apply_team(change, desired, live).await,
            Kind::Datasource => self.apply_datasource(change, desired).await,
            Kind::Folder => self.apply_folder(change, desired).await,
            Kind::Dashboard => self.apply_dashboard(change, desired).await,
            other => Err(ApplyError::new(format!(
                "the Grafana applier does not handle {other}"
            ))),
        };
        r.map_err(|e| {
            let verb = match change.action {
                Action::Create => "create",
                Action::Update => "update",
                Action::Delete => "delete",
            };
            ApplyError::new(format!("{verb} {}: {}", change.id, e.message))
        })
    }
}

// --- normal forms ----------------------------------------------------------------

fn resource(
    tenant: &TenantKey,
    kind: Kind,
    name: &str,
    title: Option<String>,
    body: &Value,
) -> Resource {
    Resource {
        id: ResourceId {
            target: Target::Grafana,
            tenant: tenant.clone(),
            kind,
            name: name.to_string(),
        },
        title,
        body: Arc::from(body.to_string()),
    }
}

/// The desired resources of one tenant and kind.
fn desired_of<'a>(
    desired: &'a Desired,
    tenant: &'a TenantKey,
    kind: Kind,
) -> impl Iterator<Item = &'a Resource> {
    desired.resources.values().filter(move |r| {
        r.id.target == Target::Grafana && &r.id.tenant == tenant && r.id.kind == kind
    })
}

/// Rendered bodies are JSON; an unparsable one becomes `null` and then differs
/// from anything live, which shows rather than hides the problem.
fn parse(r: &Resource) -> Value {
    serde_json::from_str(&r.body).unwrap_or(Value::Null)
}

fn parse_required(r: Option<&Resource>) -> Result<Value, ApplyError> {
    let r = r.ok_or_else(|| ApplyError::new("no desired body for a create or update"))?;
    serde_json::from_str(&r.body)
        .map_err(|e| ApplyError::new(format!("the desired body is not JSON: {e}")))
}

/// The name a live user goes by: as the repository spells it when it names the
/// user by login or email, else the login.
fn member_name(login: &str, email: &str, wanted: &[&str]) -> String {
    wanted
        .iter()
        .find(|w| w.eq_ignore_ascii_case(login))
        .or_else(|| {
            wanted
                .iter()
                .find(|w| !email.is_empty() && w.eq_ignore_ascii_case(email))
        })
        .map_or_else(|| login.to_string(), |w| (*w).to_string())
}

fn team_members(v: &Value) -> Vec<String> {
    let mut m: Vec<String> = v["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
    m.sort_unstable();
    m.dedup();
    m
}

fn secret_keys(v: &Value) -> BTreeSet<String> {
    v["secureJsonData"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default()
}

/// The hash of a datasource's secrets kept in `jsonData`. Salted with the uid so
/// equal secrets of two datasources do not show as equal; anyone who can read the
/// datasource can still test guesses of a weak secret against it, so secrets must
/// not be guessable (tenant ids are not secret at all).
fn secure_hash(uid: &str, secure: &Value) -> String {
    format!("sha256:{}", digest(&format!("{uid}\n{secure}")))
}

/// Datasource fields Grafana fills with a default when they are not sent; a
/// field at its default is dropped on both sides.
const DATASOURCE_DEFAULTS: [(&str, Value); 5] = [
    ("user", Value::String(String::new())),
    ("database", Value::String(String::new())),
    ("basicAuth", Value::Bool(false)),
    ("basicAuthUser", Value::String(String::new())),
    ("withCredentials", Value::Bool(false)),
];

/// The fields of a datasource MOP compares: what render sets, plus Grafana's
/// optional fields when they are not at their default (someone turned on basic
/// auth in the UI: drift). Ids, `orgId`, `version`, `readOnly`, `typeLogoUrl`,
/// `secureJsonFields` are Grafana's.
fn normalise_datasource(v: &Value) -> Value {
    let mut out = Map::new();
    for k in ["uid", "name", "type", "access", "url"] {
        out.insert(k.into(), v.get(k).cloned().unwrap_or(json!("")));
    }
    out.insert(
        "isDefault".into(),
        json!(v["isDefault"].as_bool().unwrap_or(false)),
    );
    out.insert(
        "jsonData".into(),
        match &v["jsonData"] {
            Value::Object(m) => Value::Object(m.clone()),
            _ => json!({}),
        },
    );
    for (k, default) in DATASOURCE_DEFAULTS {
        if let Some(x) = v.get(k)
            && !x.is_null()
            && *x != default
        {
            out.insert(k.into(), x.clone());
        }
    }
    Value::Object(out)
}

/// The rendered datasource with its secrets replaced by their hash.
fn canonical_datasource(v: &Value) -> Value {
    normalise_datasource(&with_secure_hash(v))
}

/// `v` with `jsonData.mopSecureJsonHash` set from its `secureJsonData` (when it
/// has secrets); `secureJsonData` is kept.
fn with_secure_hash(v: &Value) -> Value {
    let mut v = v.clone();
    let secure = v.get("secureJsonData").cloned().unwrap_or(Value::Null);
    if secure.as_object().is_some_and(|m| !m.is_empty()) {
        let hash = secure_hash(v["uid"].as_str().unwrap_or_default(), &secure);
        if !v["jsonData"].is_object() {
            v["jsonData"] = json!({});
        }
        v["jsonData"][SECURE_HASH_KEY] = json!(hash);
    }
    v
}

/// What create and update send: the rendered body with the hash of its secrets.
fn datasource_write_body(rendered: &Value) -> Value {
    with_secure_hash(rendered)
}

/// A live datasource (`GET /api/datasources/uid/{uid}`) in normal form. When a
/// secret the repository wants is not stored (lost, or the hash was copied by
/// hand), the hash is spoilt so the datasource is rewritten. Extra stored secrets
/// are not drift: an update keeps secrets it does not mention, so flagging them
/// would rewrite the datasource on every reconcile without effect.
fn live_datasource(live: Value, wanted_secrets: &BTreeSet<String>) -> Value {
    let stored: BTreeSet<String> = live["secureJsonFields"]
        .as_object()
        .map(|m| {
            m.iter()
                .filter(|(_, set)| set.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut v = normalise_datasource(&live);
    if !wanted_secrets.is_subset(&stored) && !v["jsonData"].is_null() {
        let keys: Vec<&str> = stored.iter().map(String::as_str).collect();
        v["jsonData"][SECURE_HASH_KEY] = json!(format!("stored secrets: [{}]", keys.join(",")));
    }
    v
}

/// `{dashboard, folderUid}` without the dashboard's instance fields; a missing
/// `folderUid` is the root, `""`.
fn normalise_dashboard(mut v: Value) -> Value {
    if let Some(d) = v.get_mut("dashboard").and_then(Value::as_object_mut) {
        d.remove("id");
        d.remove("version");
    }
    let folder = v["folderUid"].as_str().unwrap_or_default().to_string();
    json!({ "dashboard": v["dashboard"], "folderUid": folder })
}

/// `GET /api/dashboards/uid/{uid}`'s `{dashboard, meta}` in the rendered shape.
fn live_dashboard(v: &Value) -> Value {
    normalise_dashboard(json!({
        "dashboard": v["dashboard"],
        "folderUid": v["meta"]["folderUid"],
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ds(secret: &str) -> Value {
        json!({
            "uid": "mop-a-mimir", "name": "Mimir", "type": "prometheus", "access": "proxy",
            "url": "http://m", "isDefault": true,
            "jsonData": { "httpHeaderName1": "X-Scope-OrgID" },
            "secureJsonData": { "httpHeaderValue1": secret },
        })
    }

    #[test]
    fn live_datasource_with_grafana_fields_equals_the_canonical_rendered_one() {
        let rendered = ds("a");
        let mut live = datasource_write_body(&rendered);
        let live = live.as_object_mut().map(|m| {
            m.remove("secureJsonData");
            m.insert("id".into(), json!(7));
            m.insert("orgId".into(), json!(3));
            m.insert("version".into(), json!(4));
            m.insert("readOnly".into(), json!(false));
            m.insert("user".into(), json!(""));
            m.insert("basicAuth".into(), json!(false));
            m.insert(
                "secureJsonFields".into(),
                json!({ "httpHeaderValue1": true }),
            );
            Value::Object(m.clone())
        });
        let wanted = secret_keys(&rendered);
        let live = live_datasource(live.unwrap_or_default(), &wanted);
        assert_eq!(live, canonical_datasource(&rendered));
        assert!(
            live["jsonData"][SECURE_HASH_KEY]
                .as_str()
                .is_some_and(|h| h.starts_with("sha256:"))
        );
        // Another secret: another hash, so an update.
        assert_ne!(live, canonical_datasource(&ds("b")));
        // Basic auth turned on in the UI is drift.
        let mut on = live.clone();
        on["basicAuth"] = json!(true);
        assert_ne!(normalise_datasource(&on), canonical_datasource(&rendered));
        // A secret the repository wants that Grafana does not hold is drift.
        let lost = live_datasource(live.clone(), &BTreeSet::new());
        let lost = live_datasource(lost, &wanted);
        assert_ne!(lost, canonical_datasource(&rendered));
        // An extra secret stored by hand is not (an update could not remove it).
        let mut extra = live.clone();
        extra["secureJsonFields"] = json!({ "httpHeaderValue1": true, "password": true });
        assert_eq!(
            live_datasource(extra, &wanted),
            canonical_datasource(&rendered)
        );
    }

    #[test]
    fn dashboards_compare_without_instance_fields_and_with_their_folder() {
        let rendered = json!({ "dashboard": { "uid": "d", "title": "T", "panels": [] }, "folderUid": "mop-a-f" });
        let live = json!({
            "dashboard": { "id": 9, "uid": "d", "title": "T", "panels": [], "version": 3 },
            "meta": { "folderUid": "mop-a-f", "version": 3, "created": "x" },
        });
        assert_eq!(live_dashboard(&live), normalise_dashboard(rendered.clone()));
        let mut root = live.clone();
        root["meta"]["folderUid"] = json!("");
        assert_ne!(live_dashboard(&root), normalise_dashboard(rendered));
    }

    #[test]
    fn members_go_by_the_name_the_repository_uses() {
        let wanted = ["Li@Example.com", "sam"];
        assert_eq!(
            member_name("li", "li@example.com", &wanted),
            "Li@Example.com"
        );
        assert_eq!(member_name("SAM", "s@example.com", &wanted), "sam");
        assert_eq!(member_name("eve", "eve@example.com", &wanted), "eve");
        assert_eq!(member_name("eve", "", &[""]), "eve");
    }

    #[test]
    fn path_segments_are_percent_encoded() {
        assert_eq!(seg("Platform SRE/ä"), "Platform%20SRE%2F%C3%A4");
        assert_eq!(seg("mop-a_b.c~"), "mop-a_b.c~");
    }
}
