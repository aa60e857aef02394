//! Rendering: a validated [`Repo`] in, the desired state of every target out.
//!
//! Rendering is pure and deterministic: no I/O, no clock, no randomness, and every
//! collection is ordered, so the same commit renders to byte-identical output.
//! Bodies are kept as canonical compact JSON (sorted keys) rather than trees: that
//! keeps a 10,000-dashboard repository small in memory, and makes "changed?" a string
//! comparison.

pub mod alertmanager;
mod grafana;
mod kubernetes;
mod overrides;
mod rulers;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::repo::Repo;

pub use crate::uid::folder_uid;
pub use grafana::PLATFORM_ORG;
pub use kubernetes::{
    GATEWAY_CONFIGMAP, HEALTH_TIMEOUT_ANNOTATION, MANAGED_BY, TENANT_LABEL, gateway_config,
};

/// Where a resource is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    Grafana,
    MimirRuler,
    LokiRuler,
    MimirAlertmanager,
    Kubernetes,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Grafana => "grafana",
            Target::MimirRuler => "mimir-ruler",
            Target::LokiRuler => "loki-ruler",
            Target::MimirAlertmanager => "mimir-alertmanager",
            Target::Kubernetes => "kubernetes",
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of object a resource is. The order is the apply order within a target:
/// organisations before their members, datasources and folders before dashboards,
/// namespaces and config before the workloads that read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    Org,
    OrgMember,
    Team,
    Datasource,
    Folder,
    Dashboard,
    RuleGroup,
    AlertmanagerConfig,
    Namespace,
    ServiceAccount,
    ClusterRole,
    ClusterRoleBinding,
    Role,
    RoleBinding,
    ConfigMap,
    Service,
    Deployment,
    DaemonSet,
    NetworkPolicy,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Org => "org",
            Kind::OrgMember => "org-member",
            Kind::Team => "team",
            Kind::Datasource => "datasource",
            Kind::Folder => "folder",
            Kind::Dashboard => "dashboard",
            Kind::RuleGroup => "rule-group",
            Kind::AlertmanagerConfig => "alertmanager-config",
            Kind::Namespace => "namespace",
            Kind::ServiceAccount => "service-account",
            Kind::ClusterRole => "cluster-role",
            Kind::ClusterRoleBinding => "cluster-role-binding",
            Kind::Role => "role",
            Kind::RoleBinding => "role-binding",
            Kind::ConfigMap => "config-map",
            Kind::Service => "service",
            Kind::Deployment => "deployment",
            Kind::DaemonSet => "daemon-set",
            Kind::NetworkPolicy => "network-policy",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A resource's stable identity: the same object across commits has the same id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ResourceId {
    pub target: Target,
    /// Tenant key (directory name); `None` for platform-wide objects.
    pub tenant: Option<String>,
    pub kind: Kind,
    /// Unique within target, tenant and kind: a uid, a login, `namespace/group`,
    /// or `namespace/name` for Kubernetes objects.
    pub name: String,
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.target,
            self.tenant.as_deref().unwrap_or("_platform"),
            self.kind,
            self.name
        )
    }
}

/// One object of the desired state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub id: ResourceId,
    /// Human label (dashboard or folder title), when the name is not one.
    pub title: Option<String>,
    /// Canonical compact JSON: the object as the target's API takes it. Shared, so
    /// large bodies (dashboards) are not copied between model, state and plan.
    pub body: std::sync::Arc<str>,
}

/// The desired state of every target.
#[derive(Debug, Clone, Default)]
pub struct Desired {
    pub revision: Option<String>,
    pub resources: BTreeMap<ResourceId, Resource>,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("two resources render to the same identity {0}")]
    Duplicate(String),
    #[error("cannot serialise {what}: {source}")]
    Serialise {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("cannot write {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "refusing to replace {0}: it is not empty and holds no index.json from an earlier render"
    )]
    NotARenderDir(std::path::PathBuf),
    #[error("cannot write YAML for {what}: {message}")]
    Yaml { what: String, message: String },
}

pub type Result<T, E = RenderError> = std::result::Result<T, E>;

/// Collects resources, refusing duplicate identities.
#[derive(Default)]
pub(crate) struct Builder {
    resources: BTreeMap<ResourceId, Resource>,
}

impl Builder {
    pub(crate) fn add(
        &mut self,
        target: Target,
        tenant: Option<&str>,
        kind: Kind,
        name: impl Into<String>,
        title: Option<String>,
        body: &impl Serialize,
    ) -> Result<()> {
        let id = ResourceId {
            target,
            tenant: tenant.map(str::to_string),
            kind,
            name: name.into(),
        };
        let body = serde_json::to_string(body).map_err(|source| RenderError::Serialise {
            what: id.to_string(),
            source,
        })?;
        self.add_raw(id, title, body.into())
    }

    /// Adds a body that is already canonical JSON.
    pub(crate) fn add_raw(
        &mut self,
        id: ResourceId,
        title: Option<String>,
        body: std::sync::Arc<str>,
    ) -> Result<()> {
        if self.resources.contains_key(&id) {
            return Err(RenderError::Duplicate(id.to_string()));
        }
        self.resources
            .insert(id.clone(), Resource { id, title, body });
        Ok(())
    }
}

/// Renders the desired state of every target.
pub fn render(repo: &Repo) -> Result<Desired> {
    let mut b = Builder::default();
    grafana::render(repo, &mut b)?;
    rulers::render(repo, &mut b)?;
    alertmanager::render(repo, &mut b)?;
    kubernetes::render(repo, &mut b)?;
    Ok(Desired {
        revision: repo.revision.clone(),
        resources: b.resources,
    })
}

/// A one-line description of a repository's size.
pub struct Summary {
    pub tenants: usize,
    pub dashboards: usize,
    pub metric_groups: usize,
    pub log_groups: usize,
}

impl Summary {
    pub fn of(repo: &Repo) -> Self {
        let groups = |f: fn(&crate::repo::Tenant) -> &Vec<crate::repo::RuleNamespace>| {
            repo.tenants
                .iter()
                .flat_map(f)
                .map(|ns| ns.file.groups.len())
                .sum()
        };
        Self {
            tenants: repo.tenants.len(),
            dashboards: repo.tenants.iter().map(|t| t.dashboards.len()).sum(),
            metric_groups: groups(|t| &t.metric_rules),
            log_groups: groups(|t| &t.log_rules),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tenants, {} dashboards, {} metric rule groups, {} log rule groups",
            self.tenants, self.dashboards, self.metric_groups, self.log_groups
        )
    }
}

/// sha256 of a body, hex: how index.json and the appliers fingerprint objects.
pub fn digest(body: &str) -> String {
    hex::encode(Sha256::digest(body.as_bytes()))
}

/// A file name for any resource name: unreserved characters kept, others %XX.
fn file_name(name: &str) -> String {
    let mut s = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.".contains(&b) {
            s.push(b as char);
        } else {
            s.push_str(&format!("%{b:02X}"));
        }
    }
    s
}

/// The file a resource is written to, relative to the output directory.
pub fn relative_path(r: &Resource) -> String {
    let ext = match r.id.target {
        Target::Grafana => "json",
        _ => "yaml",
    };
    format!(
        "{}/{}/{}/{}.{ext}",
        r.id.target,
        r.id.tenant.as_deref().unwrap_or("_platform"),
        r.id.kind,
        file_name(&r.id.name)
    )
}

/// The text written for a resource: pretty JSON for Grafana (its own format), YAML
/// for Kubernetes objects and rule groups (what `kubectl` and `promtool` read).
pub fn file_text(r: &Resource) -> Result<String> {
    let value: serde_json::Value =
        serde_json::from_str(&r.body).map_err(|source| RenderError::Serialise {
            what: r.id.to_string(),
            source,
        })?;
    match r.id.target {
        Target::Grafana => {
            let mut s =
                serde_json::to_string_pretty(&value).map_err(|source| RenderError::Serialise {
                    what: r.id.to_string(),
                    source,
                })?;
            s.push('\n');
            Ok(s)
        }
        _ => to_yaml(&value, &r.id.to_string()),
    }
}

pub(crate) fn to_yaml(value: &impl Serialize, what: &str) -> Result<String> {
    serde_saphyr::to_string(value).map_err(|e| RenderError::Yaml {
        what: what.to_string(),
        message: e.to_string(),
    })
}

/// Writes every resource as a file under `out` plus an `index.json`, replacing an
/// earlier render there. Returns the number of resources written.
/// Writes several clusters' desired states, each into `out/<cluster>/` as
/// [`write_dir`] does, and `out/clusters.json` naming them. Like `write_dir`, it
/// replaces `out` only when it is empty or an earlier render (of one cluster or
/// several). Returns each cluster's resource count.
pub fn write_cluster_dirs(
    clusters: &[(String, Desired)],
    out: &Path,
) -> Result<Vec<(String, usize)>> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Io { path, source }
    };
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty && !out.join("index.json").is_file() && !out.join("clusters.json").is_file() {
            return Err(RenderError::NotARenderDir(out.to_path_buf()));
        }
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    let mut counts = Vec::with_capacity(clusters.len());
    for (key, desired) in clusters {
        counts.push((key.clone(), write_dir(desired, &out.join(key))?));
    }
    let names: Vec<&str> = clusters.iter().map(|(k, _)| k.as_str()).collect();
    let index = serde_json::json!({ "clusters": names });
    let mut text =
        serde_json::to_string_pretty(&index).map_err(|source| RenderError::Serialise {
            what: "clusters.json".into(),
            source,
        })?;
    text.push('\n');
    let p = out.join("clusters.json");
    std::fs::write(&p, text).map_err(io(&p))?;
    Ok(counts)
}

pub fn write_dir(desired: &Desired, out: &Path) -> Result<usize> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RenderError::Io { path, source }
    };
    if out.exists() {
        let empty = std::fs::read_dir(out).map_err(io(out))?.next().is_none();
        if !empty && !out.join("index.json").is_file() {
            return Err(RenderError::NotARenderDir(out.to_path_buf()));
        }
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    let mut index = Vec::with_capacity(desired.resources.len());
    for r in desired.resources.values() {
        let rel = relative_path(r);
        let path = out.join(&rel);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io(dir))?;
        }
        std::fs::write(&path, file_text(r)?).map_err(io(&path))?;
        index.push(serde_json::json!({
            "target": r.id.target,
            "tenant": r.id.tenant,
            "kind": r.id.kind,
            "name": r.id.name,
            "file": rel,
            "sha256": digest(&r.body),
        }));
    }
    let index = serde_json::json!({
        "revision": desired.revision,
        "resources": index,
    });
    let mut text =
        serde_json::to_string_pretty(&index).map_err(|source| RenderError::Serialise {
            what: "index.json".into(),
            source,
        })?;
    text.push('\n');
    std::fs::create_dir_all(out).map_err(io(out))?;
    let p = out.join("index.json");
    std::fs::write(&p, text).map_err(io(&p))?;
    Ok(desired.resources.len())
}
