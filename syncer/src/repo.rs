//! The validated domain model of a config repository: what rendering reads.
//! Everything here has passed [`crate::validate`]; nothing downstream re-checks it.

use crate::model::{
    AlertingFile, PlatformAlertingFile, PlatformFile, RuleFile, SamplingFile, TenantFile,
    VersionsFile,
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
