//! The validated domain model of a config repository: what rendering reads.
//! Everything here has passed [`crate::validate`]; nothing downstream re-checks it.

use crate::model::{
    AlertingFile, ClusterFile, PlatformAlertingFile, PlatformFile, RuleFile, SamplingFile,
    TenantFile, VersionsFile,
};

/// A whole, valid config repository at one revision.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Commit id when read from git.
    pub revision: Option<String>,
    pub platform: PlatformFile,
    pub versions: VersionsFile,
    /// The platform's `alerting.yaml`: receivers and routes every tenant gets.
    pub alerting: Option<PlatformAlertingFile>,
    /// Ordered by directory name.
    pub tenants: Vec<Tenant>,
    /// The clusters of `clusters/<name>.yaml`, ordered by key; empty for a
    /// repository that is one cluster (`mop.yaml` alone).
    pub clusters: Vec<Cluster>,
    /// Set on the view of one cluster ([`Repo::for_cluster`]): its key.
    pub cluster: Option<String>,
}

/// One cluster of a repository that serves several: `clusters/<key>.yaml`.
#[derive(Debug, Clone)]
pub struct Cluster {
    /// File name without `.yaml`.
    pub key: String,
    pub spec: ClusterFile,
}

impl Cluster {
    pub fn path(&self) -> String {
        format!("clusters/{}.yaml", self.key)
    }

    /// The cluster's name as MOP records it.
    pub fn name(&self) -> &str {
        self.spec.cluster.as_ref().map_or(&self.key, |c| &c.value)
    }

    pub fn environment(&self) -> &str {
        &self.spec.environment.value
    }

    /// Whether this cluster serves the tenant in `tenants/<key>/` with `labels`.
    pub fn serves(&self, key: &str, labels: &std::collections::BTreeMap<String, String>) -> bool {
        let Some(sel) = &self.spec.tenants else {
            return true;
        };
        sel.value.names.iter().any(|n| n.value == key)
            || (!sel.value.labels.is_empty()
                && sel
                    .value
                    .labels
                    .iter()
                    .all(|(k, v)| labels.get(k) == Some(v)))
    }

    /// `mop.yaml` with this cluster's sections and name in place.
    pub fn platform(&self, shared: &PlatformFile) -> PlatformFile {
        let s = &self.spec;
        let mut p = shared.clone();
        p.cluster = self.name().to_string();
        if let Some(v) = &s.namespace {
            p.namespace.clone_from(v);
        }
        if let Some(v) = &s.sync {
            p.sync = v.clone();
        }
        if let Some(v) = &s.grafana {
            p.grafana = v.clone();
        }
        if let Some(v) = &s.backends {
            p.backends = v.clone();
        }
        if let Some(v) = &s.gateway {
            p.gateway = v.clone();
        }
        if let Some(v) = &s.agent {
            p.agent = v.clone();
        }
        if let Some(v) = &s.defaults {
            p.defaults = v.clone();
        }
        p
    }

    /// `versions.yaml` with this cluster's pins in place.
    pub fn versions(&self, shared: &VersionsFile) -> VersionsFile {
        let mut v = shared.clone();
        if let Some(a) = &self.spec.versions.agent {
            v.agent.version = a.clone();
        }
        if let Some(g) = &self.spec.versions.gateway {
            v.gateway.version = g.clone();
        }
        v
    }
}

impl Repo {
    /// Whether the repository declares clusters under `clusters/`.
    pub fn is_multi_cluster(&self) -> bool {
        !self.clusters.is_empty()
    }

    /// The repository as one cluster sees it: its platform settings, its version
    /// pins, only the tenants it serves. `None` when there is no such cluster.
    pub fn for_cluster(&self, key: &str) -> Option<Repo> {
        let c = self.clusters.iter().find(|c| c.key == key)?;
        Some(Repo {
            revision: self.revision.clone(),
            platform: c.platform(&self.platform),
            versions: c.versions(&self.versions),
            alerting: self.alerting.clone(),
            tenants: self
                .tenants
                .iter()
                .filter(|t| c.serves(&t.key, &t.spec.labels))
                .cloned()
                .collect(),
            clusters: Vec::new(),
            cluster: Some(c.key.clone()),
        })
    }

    /// Every cluster's view, in key order; a one-cluster repository is its own
    /// single view (key `None`).
    pub fn cluster_views(&self) -> Vec<(Option<String>, Repo)> {
        if self.clusters.is_empty() {
            return vec![(None, self.clone())];
        }
        self.clusters
            .iter()
            .filter_map(|c| Some((Some(c.key.clone()), self.for_cluster(&c.key)?)))
            .collect()
    }
}

/// One tenant: `tenants/<key>/`.
#[derive(Debug, Clone)]
pub struct Tenant {
    /// Directory name under `tenants/`.
    pub key: String,
    pub spec: TenantFile,
    /// `None` when the tenant has no `sampling.yaml` (keep every trace).
    pub sampling: Option<SamplingFile>,
    /// `None` when the tenant has no `alerting.yaml` (MOP manages no
    /// Alertmanager configuration for it).
    pub alerting: Option<AlertingFile>,
    /// Notification templates (`alert-templates/<name>.tmpl`): file name → text.
    pub alert_templates: std::collections::BTreeMap<String, String>,
    /// Ordered by path.
    pub dashboards: Vec<Dashboard>,
    /// Metric rule files (Mimir ruler), ordered by path.
    pub metric_rules: Vec<RuleNamespace>,
    /// Log rule files (Loki ruler), ordered by path.
    pub log_rules: Vec<RuleNamespace>,
}

impl Tenant {
    /// The `X-Scope-OrgID`.
    pub fn id(&self) -> &str {
        &self.spec.id.value
    }

    /// Grafana organisation name.
    pub fn org_name(&self) -> &str {
        self.spec
            .grafana
            .org
            .as_ref()
            .map(|o| o.value.as_str())
            .or(self.spec.display_name.as_deref())
            .unwrap_or(self.id())
    }
}

/// A dashboard: Grafana's JSON model with the instance-specific fields (`id`,
/// `version`) and the import-only ones (`__inputs`, `__requires`, `__elements`)
/// removed, `${…}` of `__inputs` replaced by the tenant's datasources.
#[derive(Debug, Clone)]
pub struct Dashboard {
    pub path: String,
    /// Folder directory name under `dashboards/`.
    pub folder: String,
    /// The file's `uid`, or one derived from the path when it has none
    /// ([`crate::uid::derived_dashboard_uid`]).
    pub uid: String,
    /// Line and column of the `uid` key; `None` when the uid is derived.
    pub uid_at: Option<(u32, u32)>,
    /// Trimmed, as Grafana stores it.
    pub title: String,
    /// Line and column of the `title` key.
    pub title_at: (u32, u32),
    /// Where the dashboard first uses the tenant's Pyroscope datasource, which
    /// exists only when `mop.yaml` configures a Pyroscope backend.
    pub pyroscope_at: Option<(u32, u32)>,
    /// What `POST /api/dashboards/db` takes: `{"dashboard": …, "folderUid": …}`,
    /// compact JSON with sorted keys. Shared: the same dashboard in two commits of a
    /// plan, and in the repository and its desired state, is held once.
    pub body: std::sync::Arc<str>,
}

/// One rule file: a ruler namespace holding its groups.
#[derive(Debug, Clone)]
pub struct RuleNamespace {
    pub path: String,
    /// The ruler namespace: the file name without `.yaml`.
    pub namespace: String,
    /// Shared: the same file in both commits of a plan is parsed and held once.
    pub file: std::sync::Arc<RuleFile>,
}
