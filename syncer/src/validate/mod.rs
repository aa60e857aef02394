//! Validation: a [`Snapshot`] in, a [`Repo`] and every problem found out.
//!
//! Like rust-analyzer's parser, validation never stops at the first problem: each
//! file is parsed on its own, cross-file checks run on whatever parsed, and the
//! caller gets the full list. Only a snapshot without errors yields a `Repo`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::de::DeserializeOwned;

use crate::diag::{self, Diagnostic, did_you_mean};
use crate::model::alerting::{AlertingFile, PlatformAlertingFile};
use crate::model::cluster::ClusterFile;
use crate::model::common::Loc;
use crate::model::platform::PlatformFile;
use crate::model::rules::RuleFile;
use crate::model::sampling::SamplingFile;
use crate::model::tenant::TenantFile;
use crate::model::versions::VersionsFile;
use crate::repo::{Dashboard, Repo, RuleNamespace, Tenant};
use crate::source::Snapshot;

pub use crate::uid::MAX_UID_LEN;

mod alerting;
mod clusters;
mod dashboards;
pub mod gotemplate;
pub mod logql;
mod platform;
mod promql;
mod rules;
mod sampling;
mod tenants;

use alerting::{check_alerting, check_alerting_refs, check_platform_alerting};
use dashboards::parse_dashboard;
use platform::{check_platform, check_versions};
use rules::check_rule_file;
use sampling::check_sampling;
use tenants::{check_default_tenant, check_tenants};

/// What validation found.
#[derive(Debug)]
pub struct Outcome {
    /// The validated repository; `None` when there is any error.
    pub repo: Option<Repo>,
    /// Every problem, ordered by file and position.
    pub diagnostics: Vec<Diagnostic>,
}

impl Outcome {
    pub fn error_count(&self) -> usize {
        self.diagnostics.iter().filter(|d| d.is_error()).count()
    }
}

/// Which kind of config file a path is.
#[derive(Debug, Clone, PartialEq, Eq)]
enum FileKind {
    Platform,
    Versions,
    PlatformAlerting,
    Cluster { key: String },
    Tenant { tenant: String },
    Alerting { tenant: String },
    AlertTemplate { tenant: String, name: String },
    Sampling { tenant: String },
    Dashboard { tenant: String, folder: String },
    MetricRules { tenant: String },
    LogRules { tenant: String },
    Docs,
    Unknown { hint: String },
}

fn classify(path: &str) -> FileKind {
    if path == "mop.yaml" {
        return FileKind::Platform;
    }
    if path == "versions.yaml" {
        return FileKind::Versions;
    }
    if path == "alerting.yaml" {
        return FileKind::PlatformAlerting;
    }
    let parts: Vec<&str> = path.split('/').collect();
    if path.ends_with(".md") {
        return FileKind::Docs;
    }
    let yaml = |f: &str| f.ends_with(".yaml") || f.ends_with(".yml");
    match parts.as_slice() {
        ["clusters", f] if f.ends_with(".yaml") => FileKind::Cluster {
            key: f.trim_end_matches(".yaml").into(),
        },
        ["clusters", ..] => FileKind::Unknown {
            hint: "a cluster is one file, clusters/<name>.yaml (see docs/environments.md)".into(),
        },
        ["tenants", t, "tenant.yaml"] => FileKind::Tenant {
            tenant: (*t).into(),
        },
        ["tenants", t, "sampling.yaml"] => FileKind::Sampling {
            tenant: (*t).into(),
        },
        ["tenants", t, "alerting.yaml"] => FileKind::Alerting {
            tenant: (*t).into(),
        },
        ["tenants", t, "alert-templates", f] if f.ends_with(".tmpl") => FileKind::AlertTemplate {
            tenant: (*t).into(),
            name: (*f).into(),
        },
        ["tenants", t, "dashboards", folder, f] if f.ends_with(".json") => FileKind::Dashboard {
            tenant: (*t).into(),
            folder: (*folder).into(),
        },
        ["tenants", _, "dashboards", f] if f.ends_with(".json") => FileKind::Unknown {
            hint: "put dashboards in a folder directory: tenants/<tenant>/dashboards/<folder>/<name>.json (the folder becomes the Grafana folder)".into(),
        },
        ["tenants", t, "rules", "metrics", f] if yaml(f) => FileKind::MetricRules {
            tenant: (*t).into(),
        },
        ["tenants", t, "rules", "logs", f] if yaml(f) => FileKind::LogRules {
            tenant: (*t).into(),
        },
        ["tenants", _, f] if yaml(f) => {
            let known = ["tenant.yaml", "sampling.yaml", "alerting.yaml"];
            FileKind::Unknown {
                hint: match did_you_mean(f, known) {
                    Some(k) => format!("did you mean `{k}`? MOP reads tenant.yaml, sampling.yaml and alerting.yaml in a tenant directory"),
                    None => "a tenant directory holds tenant.yaml, sampling.yaml, alerting.yaml, alert-templates/*.tmpl, dashboards/<folder>/*.json and rules/{metrics,logs}/*.yaml".into(),
                },
            }
        }
        _ => FileKind::Unknown {
            hint: "a tenant directory holds tenant.yaml, sampling.yaml, alerting.yaml, alert-templates/*.tmpl, dashboards/<folder>/*.json and rules/{metrics,logs}/*.yaml".into(),
        },
    }
}

#[derive(Default)]
struct TenantParts {
    spec: Option<TenantFile>,
    spec_path: String,
    sampling: Option<(String, SamplingFile)>,
    alerting: Option<(String, AlertingFile)>,
    /// `alert-templates/<name>.tmpl`: (path, name, text).
    alert_templates: Vec<(String, String, String)>,
    dashboards: Vec<Dashboard>,
    metric_rules: Vec<RuleNamespace>,
    log_rules: Vec<RuleNamespace>,
    has_files: bool,
}

/// Validates a snapshot.
/// What one file parsed into.
#[derive(Clone)]
enum Parsed {
    Nothing,
    Platform(Box<PlatformFile>),
    Versions(Box<VersionsFile>),
    Tenant(String, Box<TenantFile>),
    Sampling(String, Box<SamplingFile>),
    Alerting(String, Box<AlertingFile>),
    PlatformAlerting(Box<PlatformAlertingFile>),
    Cluster(String, Box<ClusterFile>),
    AlertTemplate {
        tenant: String,
        name: String,
        text: String,
    },
    Dashboard(String, Dashboard),
    Rules {
        tenant: String,
        logs: bool,
        ns: RuleNamespace,
    },
    /// Tenant file that did not parse; still marks the tenant directory as present.
    TenantMarker(String, bool),
}

/// Whether a dashboard's rendered body is built: it is half of validation's memory
/// (the minified JSON of every dashboard) and a tenth of its CPU, and only render
/// reads it.
#[derive(Debug, Clone)]
pub(crate) enum Body {
    /// Build the body Grafana is sent.
    Build,
    /// Check everything, but put this text where the body would be: a caller that
    /// reads no body (`mop validate`), or one that only compares bodies and knows
    /// this file's is the same on both sides (a plan's file unchanged between its
    /// two commits, whose text names the blob: content identity, not content).
    Stand(Arc<str>),
}

/// Parses and checks one file on its own: the part of validation that runs in
/// parallel, one file per task.
fn parse_one(path: &str, bytes: &[u8], body: Body, diags: &mut Vec<Diagnostic>) -> Parsed {
    let kind = classify(path);
    if matches!(kind, FileKind::Docs) {
        return Parsed::Nothing;
    }
    if let FileKind::Unknown { hint } = &kind {
        diags.push(
            Diagnostic::error(path, 0, 0, "MOP does not read this file").with_hint(hint.clone()),
        );
        return Parsed::Nothing;
    }
    let text = match std::str::from_utf8(bytes) {
        Ok(t) => t,
        Err(e) => {
            let good = e.valid_up_to();
            let (line, column) = diag::line_col(&String::from_utf8_lossy(&bytes[..good]), good);
            diags.push(
                Diagnostic::error(
                    path,
                    line,
                    column,
                    format!("file is not valid UTF-8 (byte 0x{:02X})", bytes[good]),
                )
                .with_hint("save the file as UTF-8: MOP, Grafana and the rulers read UTF-8 only (an editor's \"Reopen with encoding\" shows what it is now)"),
            );
            // Still mark the tenant as present: one problem, one error (no
            // "tenant.yaml is missing" on top of this one).
            return match kind {
                FileKind::Tenant { tenant } => Parsed::TenantMarker(tenant, true),
                FileKind::Sampling { tenant }
                | FileKind::Alerting { tenant }
                | FileKind::AlertTemplate { tenant, .. }
                | FileKind::Dashboard { tenant, .. }
                | FileKind::MetricRules { tenant }
                | FileKind::LogRules { tenant } => Parsed::TenantMarker(tenant, false),
                _ => Parsed::Nothing,
            };
        }
    };
    // YAML allows a byte order mark and the YAML reader skips it, as Prometheus'
    // does. Go's JSON reader (Grafana's import) refuses one; MOP reads the
    // dashboard without it and says so, instead of a puzzling error at 1:1.
    let text = match text.strip_prefix('\u{feff}') {
        Some(rest) if matches!(kind, FileKind::Dashboard { .. }) => {
            diags.push(
                Diagnostic::warning(path, 1, 1, "file starts with a UTF-8 byte order mark (BOM); MOP ignores it")
                    .with_hint("Grafana's own import refuses JSON with a BOM: save the file as UTF-8 without BOM"),
            );
            rest
        }
        _ => text,
    };
    scan_credentials(path, text, diags);
    match kind {
        FileKind::Platform => {
            parse_yaml(path, text, diags).map_or(Parsed::Nothing, |p| Parsed::Platform(Box::new(p)))
        }
        FileKind::Versions => {
            parse_yaml(path, text, diags).map_or(Parsed::Nothing, |v| Parsed::Versions(Box::new(v)))
        }
        FileKind::Cluster { key } => parse_yaml(path, text, diags)
            .map_or(Parsed::Nothing, |c| Parsed::Cluster(key, Box::new(c))),
        FileKind::Tenant { tenant } => match parse_yaml::<TenantFile>(path, text, diags) {
            Some(t) => Parsed::Tenant(tenant, Box::new(t)),
            None => Parsed::TenantMarker(tenant, true),
        },
        FileKind::Sampling { tenant } => match parse_yaml::<SamplingFile>(path, text, diags) {
            Some(s) => {
                check_sampling(path, &s, diags);
                Parsed::Sampling(tenant, Box::new(s))
            }
            None => Parsed::TenantMarker(tenant, false),
        },
        FileKind::Alerting { tenant } => match parse_yaml::<AlertingFile>(path, text, diags) {
            Some(a) => {
                check_alerting(path, &a, diags);
                Parsed::Alerting(tenant, Box::new(a))
            }
            None => Parsed::TenantMarker(tenant, false),
        },
        FileKind::AlertTemplate { tenant, name } => {
            // What Mimir does with the file when the configuration is posted
            // (`validateUserConfig`: `template.FromGlobs`, Go's text/template).
            match gotemplate::parse(text, gotemplate::Dialect::Alertmanager) {
                Ok(()) => Parsed::AlertTemplate {
                    tenant,
                    name,
                    text: text.to_string(),
                },
                Err(e) => {
                    let (line, column) = diag::line_col(text, e.offset);
                    diags.push(
                        Diagnostic::error(path, line, column, format!("template does not parse: {}", e.message))
                            .with_hint("this is a Go text/template, as Alertmanager reads it: `{{ define \"name\" }}…{{ end }}`, used from a receiver field as `{{ template \"name\" . }}`"),
                    );
                    Parsed::TenantMarker(tenant, false)
                }
            }
        }
        FileKind::PlatformAlerting => match parse_yaml::<PlatformAlertingFile>(path, text, diags) {
            Some(a) => {
                check_platform_alerting(path, &a, diags);
                Parsed::PlatformAlerting(Box::new(a))
            }
            None => Parsed::Nothing,
        },
        FileKind::Dashboard { tenant, folder } => {
            match parse_dashboard(path, &tenant, &folder, text, body, diags) {
                Some(d) => Parsed::Dashboard(tenant, d),
                None => Parsed::TenantMarker(tenant, false),
            }
        }
        FileKind::MetricRules { tenant } | FileKind::LogRules { tenant } => {
            let logs = path.contains("/rules/logs/");
            let file = crate::model::rules_reader::read(text)
                .or_else(|| parse_yaml::<RuleFile>(path, text, diags));
            match file {
                Some(mut file) => {
                    check_rule_file(path, text, &mut file, logs, diags);
                    let ns = RuleNamespace {
                        path: path.to_string(),
                        namespace: rule_namespace(path),
                        file: Arc::new(file),
                    };
                    Parsed::Rules { tenant, logs, ns }
                }
                None => Parsed::TenantMarker(tenant, false),
            }
        }
        FileKind::Docs | FileKind::Unknown { .. } => Parsed::Nothing,
    }
}

/// Per-file results of earlier validations, keyed by path and git blob id, so a
/// plan validates the base commit by parsing only the files the change touched.
#[derive(Default)]
pub struct ParseCache {
    entries: HashMap<(String, String), FileResult>,
    /// (path, blob id) of the files both commits of a plan have: their dashboards
    /// are held as the blob's identity, not their body (see [`ParseCache::for_plan`]).
    unchanged: HashSet<(String, String)>,
}

impl ParseCache {
    /// A cache for validating the two commits of a plan, which compares their
    /// rendered bodies only. A dashboard file the two commits share (same path,
    /// same blob) renders to the same resource with the same body on both sides
    /// (the body is a function of the path and the content alone), so the plan
    /// can never show it changed: its body is not built, and both sides hold the
    /// same text naming the blob instead. The desired states validated with this
    /// cache are for [`crate::plan::diff`] only, never for apply.
    pub fn for_plan(base: &Snapshot, head: &Snapshot) -> Self {
        let unchanged = head
            .files
            .iter()
            .filter_map(|(path, id)| {
                let id = id.as_ref()?;
                (base.files.get(path)? == &Some(id.clone())).then(|| (path.clone(), id.clone()))
            })
            .collect();
        Self {
            entries: HashMap::new(),
            unchanged,
        }
    }
}

/// What parsing one file gave: its model and its diagnostics.
type FileResult = Arc<(Parsed, Vec<Diagnostic>)>;

/// Validates a snapshot.
pub fn validate(snapshot: &Snapshot) -> Outcome {
    validate_with(snapshot, None, true)
}

/// Validates a snapshot for a caller that renders nothing (`mop validate`): the
/// same checks and diagnostics, but the repository's dashboards have empty bodies.
pub fn check(snapshot: &Snapshot) -> Outcome {
    validate_with(snapshot, None, false)
}

/// Validates a snapshot, reusing and filling `cache` for files with a blob id.
pub fn validate_cached(snapshot: &Snapshot, cache: &mut ParseCache) -> Outcome {
    validate_with(snapshot, Some(cache), true)
}

/// Without a cache, each file's result is moved into the model, not copied.
fn validate_with(snapshot: &Snapshot, mut cache: Option<&mut ParseCache>, bodies: bool) -> Outcome {
    use rayon::prelude::*;

    let mut diags = Vec::new();
    let mut platform: Option<PlatformFile> = None;
    let mut versions: Option<VersionsFile> = None;
    let mut platform_alerting: Option<PlatformAlertingFile> = None;
    let mut clusters: BTreeMap<String, ClusterFile> = BTreeMap::new();
    let mut tenants: BTreeMap<String, TenantParts> = BTreeMap::new();

    let empty = ParseCache::default();
    let shared = cache.as_deref().unwrap_or(&empty);
    type Item = (
        String,
        Arc<(Parsed, Vec<Diagnostic>)>,
        Option<(String, String)>,
    );
    let parsed: Vec<Item> = snapshot
        .files
        .par_iter()
        .map_init(
            || snapshot.reader(),
            |reader, (path, blob_id)| {
                let key = blob_id.as_ref().map(|id| (path.clone(), id.clone()));
                if let Some(hit) = key.as_ref().and_then(|k| shared.entries.get(k)) {
                    return (path.clone(), Arc::clone(hit), None);
                }
                let mut d = Vec::new();
                let body = match &key {
                    _ if !bodies => Body::Stand(Arc::from("")),
                    Some(k) if shared.unchanged.contains(k) => {
                        Body::Stand(Arc::from(format!("unchanged blob {} of {path}", k.1)))
                    }
                    _ => Body::Build,
                };
                let parsed = match reader {
                    Ok(r) => r.with_content(path, |bytes| parse_one(path, bytes, body, &mut d)),
                    Err(e) => Err(crate::source::SourceError::NotInSnapshot(format!(
                        "{path} ({e})"
                    ))),
                };
                match parsed {
                    Ok(p) => (path.clone(), Arc::new((p, d)), key),
                    Err(e) => {
                        d.push(Diagnostic::error(path, 0, 0, format!("cannot read: {e}")));
                        (path.clone(), Arc::new((Parsed::Nothing, d)), None)
                    }
                }
            },
        )
        .collect();
    for (path, result, key) in parsed {
        if let (Some(k), Some(cache)) = (key, cache.as_deref_mut()) {
            cache.entries.insert(k, Arc::clone(&result));
        }
        // Dashboard bodies and rule files are shared (`Arc`), so even the copy out
        // of a cached result is shallow.
        let (p, d) = match Arc::try_unwrap(result) {
            Ok((p, d)) => (p, d),
            Err(shared) => (shared.0.clone(), shared.1.clone()),
        };
        diags.extend(d);
        match p {
            Parsed::Nothing => {}
            Parsed::Platform(p) => platform = Some(*p),
            Parsed::Versions(v) => versions = Some(*v),
            Parsed::PlatformAlerting(a) => platform_alerting = Some(*a),
            Parsed::Cluster(key, c) => {
                clusters.insert(key, *c);
            }
            Parsed::AlertTemplate { tenant, name, text } => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                t.alert_templates.push((path, name, text));
            }
            Parsed::Alerting(tenant, a) => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                t.alerting = Some((path, *a));
            }
            Parsed::Tenant(tenant, spec) => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                t.spec_path = path;
                t.spec = Some(*spec);
            }
            Parsed::TenantMarker(tenant, is_spec) => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                if is_spec {
                    t.spec_path = path;
                }
            }
            Parsed::Sampling(tenant, s) => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                t.sampling = Some((path, *s));
            }
            Parsed::Dashboard(tenant, d) => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                t.dashboards.push(d);
            }
            Parsed::Rules { tenant, logs, ns } => {
                let t = tenants.entry(tenant).or_default();
                t.has_files = true;
                if logs {
                    t.log_rules.push(ns);
                } else {
                    t.metric_rules.push(ns);
                }
            }
        }
    }

    for (path, target) in &snapshot.links {
        diags.push(
            Diagnostic::error(path, 0, 0, format!("is a symbolic link (to {target:?}); MOP does not follow links"))
                .with_hint("replace the link with a copy of what it points to: a link resolves differently in a work tree, a git revision and the syncer's clone, and can point outside the repository"),
        );
        // The link is the problem; a "tenant.yaml is missing" on top would be noise.
        if let FileKind::Tenant { tenant } = classify(path) {
            let t = tenants.entry(tenant).or_default();
            t.has_files = true;
            t.spec_path.clone_from(path);
        }
    }
    let present = |p: &str| snapshot.contains(p) || snapshot.links.contains_key(p);
    if !present("mop.yaml") {
        diags.push(
            Diagnostic::error("mop.yaml", 0, 0, "file is missing")
                .with_hint("every config repository has a mop.yaml at its root; start from repo-template/mop.yaml"),
        );
    }
    if !present("versions.yaml") {
        diags.push(
            Diagnostic::error("versions.yaml", 0, 0, "file is missing")
                .with_hint("pin the agent and gateway versions in versions.yaml; start from repo-template/versions.yaml"),
        );
    }
    if let Some(p) = &platform {
        check_platform(p, &mut diags);
        if p.cluster.is_empty() && clusters.is_empty() {
            diags.push(
                Diagnostic::error("mop.yaml", 1, 1, "missing field `cluster`")
                    .with_hint("name the cluster (`cluster: prod-eu-1`), or describe several in clusters/<name>.yaml (docs/environments.md)"),
            );
        }
    }
    clusters::check_clusters(
        &clusters,
        platform.as_ref(),
        versions.as_ref(),
        &tenants,
        &mut diags,
    );
    if let Some(v) = &versions {
        check_versions(v, &mut diags);
    }
    for (key, t) in &tenants {
        if t.has_files && t.spec_path.is_empty() {
            diags.push(
                Diagnostic::error(format!("tenants/{key}/tenant.yaml"), 0, 0, "file is missing")
                    .with_hint("every tenant directory needs a tenant.yaml with at least `id` and `namespaces`"),
            );
        }
    }
    check_tenants(&tenants, &mut diags);
    for (key, t) in &tenants {
        if let Some((path, a)) = &t.alerting {
            check_alerting_refs(path, a, platform_alerting.as_ref(), &mut diags);
        } else if !present(&format!("tenants/{key}/alerting.yaml")) {
            // An alerting.yaml that is there but invalid has its own error; the
            // templates are not the problem then.
            for (path, _, _) in &t.alert_templates {
                diags.push(
                    Diagnostic::error(path, 0, 0, "notification template without an alerting.yaml in this tenant")
                        .with_hint("templates are sent with the tenant's Alertmanager configuration: add alerting.yaml, or remove the template"),
                );
            }
        }
    }
    if let Some(p) = &platform {
        check_default_tenant(p, &tenants, &mut diags);
        rules::check_ruler_limits(p, &tenants, &mut diags);
        if p.backends.pyroscope.is_none() {
            dashboards::check_no_pyroscope(
                tenants.values().flat_map(|t| &t.dashboards),
                &mut diags,
            );
        }
    }

    diags.sort();
    diags.dedup();
    let has_errors = diags.iter().any(Diagnostic::is_error);
    let repo = match (has_errors, platform, versions) {
        (false, Some(platform), Some(versions)) => Some(Repo {
            revision: snapshot.revision.clone(),
            platform,
            versions,
            alerting: platform_alerting,
            tenants: tenants
                .into_iter()
                .filter_map(|(key, mut t)| {
                    let spec = t.spec?;
                    t.dashboards.sort_by(|a, b| a.path.cmp(&b.path));
                    t.metric_rules.sort_by(|a, b| a.path.cmp(&b.path));
                    t.log_rules.sort_by(|a, b| a.path.cmp(&b.path));
                    Some(Tenant {
                        key,
                        spec,
                        sampling: t.sampling.map(|(_, s)| s),
                        alerting: t.alerting.map(|(_, a)| a),
                        alert_templates: t
                            .alert_templates
                            .into_iter()
                            .map(|(_, name, text)| (name, text))
                            .collect(),
                        dashboards: t.dashboards,
                        metric_rules: t.metric_rules,
                        log_rules: t.log_rules,
                    })
                })
                .collect(),
            clusters: clusters
                .into_iter()
                .map(|(key, spec)| crate::repo::Cluster { key, spec })
                .collect(),
            cluster: None,
        }),
        _ => None,
    };
    Outcome {
        repo,
        diagnostics: diags,
    }
}

fn parse_yaml<T: DeserializeOwned + schemars::JsonSchema>(
    path: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<T> {
    match serde_saphyr::from_str::<T>(text) {
        Ok(v) => Some(v),
        Err(e) => {
            let first = diag::from_yaml_error_in(path, text, &e);
            // serde stopped at the first problem; find every other unknown field.
            let schema = crate::schema::root::<T>();
            let more = crate::unknown::unknown_fields(path, text, &schema);
            diags.extend(
                more.into_iter()
                    .filter(|d| (d.line, d.column) != (first.line, first.column)),
            );
            diags.push(first);
            None
        }
    }
}

fn rule_namespace(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.trim_end_matches(".yaml")
        .trim_end_matches(".yml")
        .to_string()
}

fn err_at<T>(path: &str, at: &Loc<T>, msg: impl Into<String>) -> Diagnostic {
    Diagnostic::error(path, at.line, at.column, msg)
}

/// Credentials pasted as values anywhere in a file: provider tokens and private keys.
/// One pass over the text for every known prefix, so it costs little on large repos.
fn scan_credentials(path: &str, text: &str, diags: &mut Vec<Diagnostic>) {
    use std::sync::OnceLock;
    static PREFIXES: OnceLock<Option<aho_corasick::AhoCorasick>> = OnceLock::new();
    let Some(ac) = PREFIXES
        .get_or_init(|| {
            // Leftmost-first lets aho-corasick use its SIMD multi-prefix searcher
            // (Teddy) as a prefilter; the default (standard) kind cannot, and these
            // prefixes start with four different, common letters, so it stepped
            // the automaton through every byte: a tenth of a large validate's
            // CPU. The matches are the same: no prefix contains another, so the
            // match ending first is always the one starting first.
            aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
                .match_kind(aho_corasick::MatchKind::LeftmostFirst)
                .build(diag::CREDENTIAL_PREFIXES.iter().map(|(p, _)| *p))
                .ok()
        })
        .as_ref()
    else {
        return;
    };
    for m in ac.find_iter(text) {
        let start = m.start();
        // Only at the start of a token: `xoxb-` inside a longer word is no token.
        if start > 0 && text.as_bytes()[start - 1].is_ascii_alphanumeric() {
            continue;
        }
        let end = text[start..]
            .find(|c: char| c.is_whitespace() || "\"',:=[]{}".contains(c))
            .map_or(text.len(), |e| start + e);
        if let Some(what) = diag::looks_like_credential(&text[start..end]) {
            let (l, c) = diag::line_col(text, start);
            diags.push(
                Diagnostic::error(
                    path,
                    l,
                    c,
                    format!("inline secret: this value looks like {what}"),
                )
                .with_hint(crate::model::common::INLINE_SECRET_HINT),
            );
        }
    }
}

#[cfg(test)]
mod alerting_tests;
#[cfg(test)]
mod cluster_tests;
#[cfg(test)]
mod dashboard_tests;
#[cfg(test)]
mod tests;
