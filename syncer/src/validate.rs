//! Validation: a [`Snapshot`] in, a [`Repo`] and every problem found out.
//!
//! Like rust-analyzer's parser, validation never stops at the first problem: each
//! file is parsed on its own, cross-file checks run on whatever parsed, and the
//! caller gets the full list. Only a snapshot without errors yields a `Repo`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use mop_gateway_config::{glob_match, is_valid_tenant_id};
use serde::de::DeserializeOwned;

use crate::diag::{self, Diagnostic, did_you_mean};
use crate::model::common::Loc;
use crate::model::platform::PlatformFile;
use crate::model::rules::{RuleFile, RuleGroup};
use crate::model::sampling::{PolicyKind, PolicySpec, SamplingFile};
use crate::model::tenant::TenantFile;
use crate::model::versions::{VersionsFile, floating_pin_problem};
use crate::repo::{Dashboard, Repo, RuleNamespace, Tenant};
use crate::source::Snapshot;

/// Grafana refuses dashboard uids longer than this.
pub const MAX_UID_LEN: usize = 40;

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
    Tenant { tenant: String },
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
    let parts: Vec<&str> = path.split('/').collect();
    if path.ends_with(".md") {
        return FileKind::Docs;
    }
    let yaml = |f: &str| f.ends_with(".yaml") || f.ends_with(".yml");
    match parts.as_slice() {
        ["tenants", t, "tenant.yaml"] => FileKind::Tenant {
            tenant: (*t).into(),
        },
        ["tenants", t, "sampling.yaml"] => FileKind::Sampling {
            tenant: (*t).into(),
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
            let known = ["tenant.yaml", "sampling.yaml"];
            FileKind::Unknown {
                hint: match did_you_mean(f, known) {
                    Some(k) => format!("did you mean `{k}`? MOP reads tenant.yaml and sampling.yaml in a tenant directory"),
                    None => "a tenant directory holds tenant.yaml, sampling.yaml, dashboards/<folder>/*.json and rules/{metrics,logs}/*.yaml".into(),
                },
            }
        }
        _ => FileKind::Unknown {
            hint: "a tenant directory holds tenant.yaml, sampling.yaml, dashboards/<folder>/*.json and rules/{metrics,logs}/*.yaml".into(),
        },
    }
}

#[derive(Default)]
struct TenantParts {
    spec: Option<TenantFile>,
    spec_path: String,
    sampling: Option<(String, SamplingFile)>,
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
    Dashboard(String, Dashboard),
    Rules {
        tenant: String,
        logs: bool,
        ns: RuleNamespace,
    },
    /// Tenant file that did not parse; still marks the tenant directory as present.
    TenantMarker(String, bool),
}

/// Parses and checks one file on its own: the part of validation that runs in
/// parallel, one file per task.
fn parse_one(path: &str, bytes: &[u8], diags: &mut Vec<Diagnostic>) -> Parsed {
    let kind = classify(path);
    if matches!(kind, FileKind::Docs) {
        return Parsed::Nothing;
    }
    if let FileKind::Unknown { hint } = kind {
        diags.push(Diagnostic::error(path, 0, 0, "MOP does not read this file").with_hint(hint));
        return Parsed::Nothing;
    }
    let Ok(text) = std::str::from_utf8(bytes) else {
        diags.push(Diagnostic::error(path, 0, 0, "file is not valid UTF-8"));
        return Parsed::Nothing;
    };
    scan_credentials(path, text, diags);
    match kind {
        FileKind::Platform => {
            parse_yaml(path, text, diags).map_or(Parsed::Nothing, |p| Parsed::Platform(Box::new(p)))
        }
        FileKind::Versions => {
            parse_yaml(path, text, diags).map_or(Parsed::Nothing, |v| Parsed::Versions(Box::new(v)))
        }
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
        FileKind::Dashboard { tenant, folder } => {
            match parse_dashboard(path, &tenant, &folder, text, diags) {
                Some(d) => Parsed::Dashboard(tenant, d),
                None => Parsed::TenantMarker(tenant, false),
            }
        }
        FileKind::MetricRules { tenant } | FileKind::LogRules { tenant } => {
            let logs = path.contains("/rules/logs/");
            match parse_yaml::<RuleFile>(path, text, diags) {
                Some(file) => {
                    check_rule_file(path, text, &file, logs, diags);
                    let ns = RuleNamespace {
                        path: path.to_string(),
                        namespace: rule_namespace(path),
                        file,
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
}

/// What parsing one file gave: its model and its diagnostics.
type FileResult = Arc<(Parsed, Vec<Diagnostic>)>;

/// Validates a snapshot.
pub fn validate(snapshot: &Snapshot) -> Outcome {
    validate_cached(snapshot, &mut ParseCache::default())
}

/// Validates a snapshot, reusing and filling `cache` for files with a blob id.
pub fn validate_cached(snapshot: &Snapshot, cache: &mut ParseCache) -> Outcome {
    use rayon::prelude::*;

    let mut diags = Vec::new();
    let mut platform: Option<PlatformFile> = None;
    let mut versions: Option<VersionsFile> = None;
    let mut tenants: BTreeMap<String, TenantParts> = BTreeMap::new();

    let shared = &*cache;
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
                let read = match reader {
                    Ok(r) => r.read(path),
                    Err(e) => Err(crate::source::SourceError::NotInSnapshot(format!(
                        "{path} ({e})"
                    ))),
                };
                let bytes = match read {
                    Ok(b) => b,
                    Err(e) => {
                        d.push(Diagnostic::error(path, 0, 0, format!("cannot read: {e}")));
                        return (path.clone(), Arc::new((Parsed::Nothing, d)), None);
                    }
                };
                let p = parse_one(path, &bytes, &mut d);
                (path.clone(), Arc::new((p, d)), key)
            },
        )
        .collect();
    for (path, result, key) in parsed {
        if let Some(k) = key {
            cache.entries.insert(k, Arc::clone(&result));
        }
        let (p, d) = (result.0.clone(), &result.1);
        diags.extend(d.iter().cloned());
        match p {
            Parsed::Nothing => {}
            Parsed::Platform(p) => platform = Some(*p),
            Parsed::Versions(v) => versions = Some(*v),
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

    if !snapshot.contains("mop.yaml") {
        diags.push(
            Diagnostic::error("mop.yaml", 0, 0, "file is missing")
                .with_hint("every config repository has a mop.yaml at its root; start from repo-template/mop.yaml"),
        );
    }
    if !snapshot.contains("versions.yaml") {
        diags.push(
            Diagnostic::error("versions.yaml", 0, 0, "file is missing")
                .with_hint("pin the agent and gateway versions in versions.yaml; start from repo-template/versions.yaml"),
        );
    }
    if let Some(p) = &platform {
        check_platform(p, &mut diags);
    }
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
    if let Some(p) = &platform {
        check_default_tenant(p, &tenants, &mut diags);
    }

    diags.sort();
    diags.dedup();
    let has_errors = diags.iter().any(Diagnostic::is_error);
    let repo = match (has_errors, platform, versions) {
        (false, Some(platform), Some(versions)) => Some(Repo {
            revision: snapshot.revision.clone(),
            platform,
            versions,
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
                        dashboards: t.dashboards,
                        metric_rules: t.metric_rules,
                        log_rules: t.log_rules,
                    })
                })
                .collect(),
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
            let first = diag::from_yaml_error(path, &e);
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
            aho_corasick::AhoCorasick::builder()
                .kind(Some(aho_corasick::AhoCorasickKind::DFA))
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

fn check_platform(p: &PlatformFile, diags: &mut Vec<Diagnostic>) {
    let file = "mop.yaml";
    let mut urls = vec![("grafana.url", &p.grafana.url)];
    let b = &p.backends;
    for (name, backend) in [
        ("mimir", Some(&b.mimir)),
        ("loki", Some(&b.loki)),
        ("tempo", Some(&b.tempo)),
        ("pyroscope", b.pyroscope.as_ref()),
    ] {
        let Some(backend) = backend else { continue };
        urls.push((name, &backend.url));
        if let Some(u) = &backend.push_url {
            urls.push((name, u));
        }
    }
    for (what, url) in urls {
        if let Some(problem) = url_problem(&url.value) {
            diags.push(
                err_at(file, url, format!("{what}: {problem}")).with_hint(
                    "write an absolute URL such as http://mimir-nginx.monitoring.svc:80",
                ),
            );
        }
    }
    if !(0.0..=100.0).contains(&p.sync.max_prune_percent) {
        diags.push(Diagnostic::error(
            file,
            0,
            0,
            format!(
                "sync.max_prune_percent is {}, outside 0 to 100",
                p.sync.max_prune_percent
            ),
        ));
    }
    if !(1..=4096).contains(&p.agent.capture_bytes) {
        diags.push(
            Diagnostic::error(
                file,
                0,
                0,
                format!(
                    "agent.capture_bytes is {}, outside 1 to 4096",
                    p.agent.capture_bytes
                ),
            )
            .with_hint("1024 sees the headers of nearly every HTTP request"),
        );
    }
    if !is_dns_label(&p.namespace) {
        diags.push(
            Diagnostic::error(
                file,
                0,
                0,
                format!(
                    "namespace {:?} is not a valid Kubernetes namespace name",
                    p.namespace
                ),
            )
            .with_hint("use lower-case letters, digits and '-', at most 63 characters"),
        );
    }
}

fn url_problem(u: &str) -> Option<String> {
    let rest = u
        .strip_prefix("http://")
        .or_else(|| u.strip_prefix("https://"));
    match rest {
        None => Some(format!("{u:?} is not an http:// or https:// URL")),
        Some(r) if r.is_empty() || r.starts_with('/') => Some(format!("{u:?} has no host")),
        Some(r) if r.contains(char::is_whitespace) => Some(format!("{u:?} contains spaces")),
        Some(r) if r.split('/').next().is_some_and(|h| h.contains('@')) => Some(
            "URLs must not carry credentials (user:password@); use the credential fields".into(),
        ),
        Some(_) => None,
    }
}

fn check_versions(v: &VersionsFile, diags: &mut Vec<Diagnostic>) {
    let file = "versions.yaml";
    for (what, image, version) in [
        ("agent", &v.agent.image, &v.agent.version),
        ("gateway", &v.gateway.image, &v.gateway.version),
    ] {
        if let Some(problem) = floating_pin_problem(&version.value) {
            diags.push(
                err_at(file, version, format!("{what}.version floats: {problem}"))
                    .with_hint("pin an exact release such as 1.4.2 or a digest sha256:<64 hex digits>, so what runs is what the repository says"),
            );
        }
        let last = image.value.rsplit('/').next().unwrap_or("");
        if last.contains(':') || last.contains('@') || image.value.is_empty() {
            diags.push(
                err_at(
                    file,
                    image,
                    format!("{what}.image must be a repository without tag or digest"),
                )
                .with_hint("move the tag or digest into `version`"),
            );
        }
    }
    let count_or_share = |s: &str| match s.strip_suffix('%') {
        Some(p) => p.parse::<u32>().is_ok_and(|n| (1..=100).contains(&n)),
        None => s.parse::<u32>().is_ok_and(|n| n >= 1),
    };
    let mu = &v.agent.rollout.max_unavailable;
    if !count_or_share(&mu.value) {
        diags.push(
            err_at(
                file,
                mu,
                format!(
                    "agent.rollout.max_unavailable {:?} is not a count or a percentage",
                    mu.value
                ),
            )
            .with_hint(
                "write a number of nodes (\"1\") or a share (\"10%\"); 0 would block the rollout",
            ),
        );
    }
    let ms = &v.gateway.rollout.max_surge;
    if !count_or_share(&ms.value) {
        diags.push(
            err_at(
                file,
                ms,
                format!(
                    "gateway.rollout.max_surge {:?} is not a count or a percentage",
                    ms.value
                ),
            )
            .with_hint(
                "the gateway rolls with maxUnavailable 0, so it needs at least one extra pod (\"1\" or \"25%\") to make progress",
            ),
        );
    }
    for (what, t) in [
        ("agent", v.agent.rollout.health_timeout),
        ("gateway", v.gateway.rollout.health_timeout),
    ] {
        if t.millis < 1000 {
            diags.push(
                Diagnostic::error(
                    file,
                    0,
                    0,
                    format!("{what}.rollout.health_timeout must be at least 1s"),
                )
                .with_hint("a rollout needs time to start pods; 5m suits most clusters"),
            );
        }
    }
    if v.gateway.replicas == 0 {
        diags.push(
            Diagnostic::error(file, 0, 0, "gateway.replicas must be at least 1")
                .with_hint("run at least 2 replicas so a rollout keeps ingestion up"),
        );
    }
}

fn check_sampling(path: &str, s: &SamplingFile, diags: &mut Vec<Diagnostic>) {
    if s.max_traces == 0 {
        diags.push(Diagnostic::error(
            path,
            0,
            0,
            "max_traces must be at least 1",
        ));
    }
    if s.decision_wait.millis == 0 {
        diags.push(Diagnostic::error(
            path,
            0,
            0,
            "decision_wait must be longer than 0s",
        ));
    }
    let lists = std::iter::once(&s.policies).chain(s.services.values());
    for list in lists {
        let mut names: HashMap<&str, &Loc<String>> = HashMap::new();
        for p in list {
            let name = p.name();
            if let Some(first) = names.insert(name.value.as_str(), name) {
                diags.push(
                    err_at(path, name, format!("policy name {:?} is used twice in the same list", name.value))
                        .with_hint(format!("first used at line {}; policy names label the gateway's metrics, so make them unique", first.line)),
                );
            }
            check_policy_fields(path, p, diags);
            if let Some(percentage) = &p.percentage
                && !(0.0..=100.0).contains(&percentage.value)
            {
                diags.push(
                    err_at(path, percentage, format!("percentage {} is outside 0 to 100", percentage.value))
                        .with_hint("write the share of traces to keep in percent, e.g. 10 for one trace in ten"),
                );
            }
        }
    }
}

/// Each policy type takes its own fields: required ones present, foreign ones absent.
fn check_policy_fields(path: &str, p: &PolicySpec, diags: &mut Vec<Diagnostic>) {
    let kind = p.kind.value;
    let name = format!("{kind:?}").to_lowercase();
    let present = [
        ("threshold", p.threshold.is_some()),
        ("percentage", p.percentage.is_some()),
        ("key", p.key.is_some()),
        ("values", p.values.is_some()),
    ];
    let (required, allowed): (&[&str], &[&str]) = match kind {
        PolicyKind::Errors | PolicyKind::Always => (&[], &[]),
        PolicyKind::Latency => (&["threshold"], &["threshold"]),
        PolicyKind::Probabilistic => (&["percentage"], &["percentage"]),
        PolicyKind::Attribute => (&["key"], &["key", "values"]),
    };
    for r in required {
        if !present.iter().any(|(f, set)| f == r && *set) {
            diags.push(
                err_at(
                    path,
                    &p.kind,
                    format!("policy {:?} of type {name} needs `{r}`", p.name.value),
                )
                .with_hint(match *r {
                    "threshold" => "add e.g. `threshold: 500ms`",
                    "percentage" => "add e.g. `percentage: 10`",
                    _ => "add e.g. `key: http.route`",
                }),
            );
        }
    }
    for (f, set) in present {
        if set && !allowed.contains(&f) {
            diags.push(
                err_at(
                    path,
                    &p.kind,
                    format!("`{f}` does not apply to a policy of type {name}"),
                )
                .with_hint("remove it, or change `type` to the policy kind that uses it"),
            );
        }
    }
}

fn parse_dashboard(
    path: &str,
    tenant: &str,
    folder: &str,
    text: &str,
    diags: &mut Vec<Diagnostic>,
) -> Option<Dashboard> {
    // Only the top level is parsed into a map; nested values stay raw text (still
    // syntax-checked). A full tree for 10,000 dashboards costs more than all the
    // rest of validation.
    if !text.trim_start().starts_with('{') {
        diags.push(Diagnostic::error(
            path,
            1,
            1,
            "a dashboard must be a JSON object",
        ));
        return None;
    }
    let mut obj: BTreeMap<String, &serde_json::value::RawValue> = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let msg = e.to_string();
            // serde_json appends " at line L column C"; we print the position ourselves.
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            diags.push(
                Diagnostic::error(
                    path,
                    u32::try_from(e.line()).unwrap_or(0),
                    u32::try_from(e.column()).unwrap_or(0),
                    format!("invalid JSON: {msg}"),
                )
                .with_hint("dashboards are Grafana's JSON model as 'Export → JSON' writes it"),
            );
            return None;
        }
    };
    let at = |key: &str| {
        diag::json_top_level_key(text, key)
            .map(|o| diag::line_col(text, o))
            .unwrap_or((1, 1))
    };
    let mut ok = true;
    if obj.contains_key("__inputs") {
        let (l, c) = at("__inputs");
        diags.push(
            Diagnostic::error(path, l, c, "dashboard was exported 'for sharing externally': its ${DS_…} datasource inputs will not resolve")
                .with_hint("export again with 'Export for sharing externally' off, or replace the inputs with a datasource variable"),
        );
        ok = false;
    }
    let as_string = |k: &str| {
        obj.get(k)
            .and_then(|raw| serde_json::from_str::<String>(raw.get()).ok())
    };
    let uid = match as_string("uid") {
        Some(u) => {
            let (l, c) = at("uid");
            if u.is_empty() {
                diags.push(
                    Diagnostic::error(path, l, c, "dashboard uid is empty")
                        .with_hint("set a stable uid such as \"checkout-red\""),
                );
                ok = false;
            } else if u.chars().count() > MAX_UID_LEN {
                diags.push(
                    Diagnostic::error(path, l, c, format!("dashboard uid {u:?} is {} characters; Grafana allows at most {MAX_UID_LEN}", u.chars().count()))
                        .with_hint("shorten the uid; links to the dashboard use it, so pick one and keep it"),
                );
                ok = false;
            } else if !u
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                diags.push(
                    Diagnostic::error(
                        path,
                        l,
                        c,
                        format!("dashboard uid {u:?} has characters Grafana does not accept"),
                    )
                    .with_hint("use letters, digits, '-' and '_'"),
                );
                ok = false;
            }
            u
        }
        _ => {
            let (l, c) = if obj.contains_key("uid") {
                at("uid")
            } else {
                (1, 1)
            };
            diags.push(
                Diagnostic::error(path, l, c, "dashboard has no string `uid`")
                    .with_hint("set a stable uid such as \"checkout-red\": without one, Grafana makes a new dashboard on every sync"),
            );
            ok = false;
            String::new()
        }
    };
    let title = match as_string("title") {
        Some(t) if !t.trim().is_empty() => t,
        _ => {
            diags.push(
                Diagnostic::error(path, 1, 1, "dashboard has no `title`")
                    .with_hint("add \"title\": \"…\""),
            );
            ok = false;
            String::new()
        }
    };
    if !ok {
        return None;
    }
    // Instance-specific fields: Grafana assigns them, and they differ per org.
    obj.remove("id");
    obj.remove("version");
    let folder_uid = crate::render::folder_uid(tenant, folder);
    // The body Grafana takes, built once per file content and shared from here on.
    let mut body = String::with_capacity(text.len());
    body.push_str(r#"{"dashboard":{"#);
    for (i, (k, v)) in obj.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&serde_json::Value::from(k.as_str()).to_string());
        body.push(':');
        minify_json_into(v.get(), &mut body);
    }
    body.push_str(r#"},"folderUid":"#);
    body.push_str(&serde_json::Value::from(folder_uid).to_string());
    body.push('}');
    Some(Dashboard {
        path: path.to_string(),
        folder: folder.to_string(),
        uid,
        title,
        body: body.into(),
    })
}

/// Appends JSON text without the whitespace between tokens. The text is valid JSON
/// (serde_json checked it), so only strings need care; runs between whitespace are
/// copied whole, and every cut is at an ASCII byte, so at a character boundary.
fn minify_json_into(json: &str, out: &mut String) {
    let bytes = json.as_bytes();
    let (mut i, mut run) = (0, 0);
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b' ' | b'\n' | b'\r' | b'\t' => {
                out.push_str(&json[run..i]);
                i += 1;
                run = i;
            }
            _ => i += 1,
        }
    }
    out.push_str(&json[run.min(json.len())..]);
}

fn is_metric_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_' || c == b':')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b':')
}

fn is_label_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

fn check_rule_file(
    path: &str,
    text: &str,
    file: &RuleFile,
    logs: bool,
    diags: &mut Vec<Diagnostic>,
) {
    for g in &file.groups {
        check_group(path, text, g, logs, diags);
    }
}

/// Where byte `offset` of a scalar's value is in the file, for the two layouts whose
/// mapping is exact: a one-line plain or quoted scalar, and a `|` block whose lines
/// keep their indentation. Folded or multi-line flow scalars map to their start.
fn position_in_scalar(text: &str, at: &Loc<String>, offset: usize) -> (u32, u32) {
    let value = &at.value;
    let offset = offset.min(value.len());
    let line_text = text
        .lines()
        .nth(at.line.saturating_sub(1) as usize)
        .unwrap_or("");
    let first = line_text.chars().nth(at.column.saturating_sub(1) as usize);
    let before = &value[..offset];
    let col_of = |s: &str| u32::try_from(s.chars().count()).unwrap_or(0);
    if !value.trim_end_matches('\n').contains('\n') {
        let quote = u32::from(matches!(first, Some('"' | '\'')));
        // Escapes inside quotes shift columns; only map exactly when there are none.
        if quote == 0 || !line_text.contains('\\') {
            return (at.line, at.column + quote + col_of(before));
        }
        return (at.line, at.column);
    }
    // A literal block: the scalar starts at the first content line's indentation.
    let block_line_ok = value
        .lines()
        .next()
        .is_some_and(|l| line_text.trim_start() == l);
    if !block_line_ok {
        return (at.line, at.column);
    }
    let newlines = before.matches('\n').count();
    let last = before.rfind('\n').map_or(before, |p| &before[p + 1..]);
    (
        at.line + u32::try_from(newlines).unwrap_or(0),
        at.column + col_of(last),
    )
}

fn check_group(path: &str, text: &str, g: &RuleGroup, logs: bool, diags: &mut Vec<Diagnostic>) {
    if g.name.value.trim().is_empty() {
        diags.push(err_at(path, &g.name, "rule group name is empty"));
    }
    let labels = g.labels.iter().flatten().map(|(k, _)| k);
    for k in labels {
        if !is_label_name(k) {
            diags.push(err_at(
                path,
                &g.name,
                format!("group label name {k:?} is not a valid label name"),
            ));
        }
    }
    for r in &g.rules {
        let kind = match (&r.alert, &r.record) {
            (Some(a), None) => {
                if a.value.trim().is_empty() {
                    diags.push(err_at(path, a, "alert name is empty"));
                }
                "alert"
            }
            (None, Some(rec)) => {
                if !is_metric_name(&rec.value) {
                    diags.push(
                        err_at(
                            path,
                            rec,
                            format!("record name {:?} is not a valid metric name", rec.value),
                        )
                        .with_hint(
                            "use letters, digits, '_' and ':', e.g. job:http_requests:rate5m",
                        ),
                    );
                }
                if r.for_.is_some() || r.keep_firing_for.is_some() || r.annotations.is_some() {
                    diags.push(
                        err_at(path, rec, "a recording rule cannot have `for`, `keep_firing_for` or `annotations`")
                            .with_hint("those belong to alerting rules (`alert:`)"),
                    );
                }
                "record"
            }
            (Some(a), Some(_)) => {
                diags.push(
                    err_at(path, a, "a rule has both `alert` and `record`")
                        .with_hint("split it into an alerting rule and a recording rule"),
                );
                continue;
            }
            (None, None) => {
                diags.push(err_at(
                    path,
                    &r.expr,
                    "a rule needs `alert` (alerting rule) or `record` (recording rule)",
                ));
                continue;
            }
        };
        for k in r.labels.iter().flatten().map(|(k, _)| k) {
            if !is_label_name(k) {
                diags.push(err_at(
                    path,
                    &r.expr,
                    format!("label name {k:?} is not a valid label name"),
                ));
            }
        }
        if logs {
            match crate::logql::parse(&r.expr.value) {
                Ok(crate::logql::QueryKind::Metric) => {}
                Ok(crate::logql::QueryKind::Log) => diags.push(
                    err_at(path, &r.expr, format!("{kind} expression is a log query; the Loki ruler evaluates metric queries only"))
                        .with_hint("turn it into a metric, e.g. sum(count_over_time({…} |= \"error\" [5m])) > 0"),
                ),
                Err(e) => {
                    let (line, column) = position_in_scalar(text, &r.expr, e.offset);
                    diags.push(
                    Diagnostic::error(path, line, column, format!("invalid LogQL: {}", e.message))
                        .with_hint("check the query in Grafana Explore against Loki; syntax: https://grafana.com/docs/loki/latest/query/"),
                    );
                }
            }
        } else if let Err(e) = promql_parser::parser::parse(&r.expr.value) {
            let e = e.trim().replace('\n', " ");
            diags.push(
                err_at(path, &r.expr, format!("invalid PromQL: {e}"))
                    .with_hint("check the query with `promtool check rules` or in Grafana Explore"),
            );
        }
    }
}

fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_namespace_pattern(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*' || b == b'?'
        })
}

fn check_tenants(tenants: &BTreeMap<String, TenantParts>, diags: &mut Vec<Diagnostic>) {
    let mut ids: HashMap<&str, (&str, &Loc<String>)> = HashMap::new();
    let mut orgs: HashMap<String, (&str, &str)> = HashMap::new();
    // (namespace or pattern, tenant key, file, location)
    let mut owned: Vec<(&str, &str, &str, &Loc<String>)> = Vec::new();
    let mut uids: HashMap<&str, &str> = HashMap::new();

    for (key, t) in tenants {
        // Dashboard uids are unique across the platform so links are never ambiguous.
        for d in &t.dashboards {
            if let Some(first) = uids.insert(d.uid.as_str(), d.path.as_str()) {
                let text_pos = (1, 1);
                diags.push(
                    Diagnostic::error(&d.path, text_pos.0, text_pos.1, format!("dashboard uid {:?} is also used by {first}", d.uid))
                        .with_hint("give each dashboard its own uid; Grafana would overwrite one with the other"),
                );
            }
        }
        for rules in [&t.metric_rules, &t.log_rules] {
            let mut groups: HashMap<&str, &str> = HashMap::new();
            for ns in rules {
                for g in &ns.file.groups {
                    if let Some(first) = groups.insert(g.name.value.as_str(), ns.path.as_str()) {
                        diags.push(
                            err_at(&ns.path, &g.name, format!("rule group {:?} is defined twice for this tenant (also in {first})", g.name.value))
                                .with_hint("rule group names must be unique per tenant; rename one"),
                        );
                    }
                }
            }
        }
        let Some(spec) = &t.spec else { continue };
        let path = t.spec_path.as_str();
        if !is_valid_tenant_id(&spec.id.value) {
            diags.push(
                err_at(
                    path,
                    &spec.id,
                    format!("tenant id {:?} is not a valid X-Scope-OrgID", spec.id.value),
                )
                .with_hint("use 1-150 characters of letters, digits and ! - _ . * ' ( )"),
            );
        }
        if let Some((first_key, _)) = ids.get(spec.id.value.as_str()) {
            diags.push(
                err_at(
                    path,
                    &spec.id,
                    format!(
                        "tenant id {:?} is also used by tenants/{first_key}",
                        spec.id.value
                    ),
                )
                .with_hint("tenant ids separate stored data; every tenant needs its own"),
            );
        } else {
            ids.insert(spec.id.value.as_str(), (key.as_str(), &spec.id));
        }
        let org = spec
            .grafana
            .org
            .as_ref()
            .map(|o| o.value.clone())
            .or_else(|| spec.display_name.clone())
            .unwrap_or_else(|| spec.id.value.clone());
        if let Some((first, _)) = orgs.get(&org.to_lowercase()) {
            diags.push(
                Diagnostic::error(
                    path,
                    spec.id.line,
                    spec.id.column,
                    format!("Grafana organisation {org:?} is also used by tenants/{first}"),
                )
                .with_hint("set grafana.org to a distinct name"),
            );
        } else {
            orgs.insert(org.to_lowercase(), (key.as_str(), path));
        }
        if spec.namespaces.is_empty() {
            diags.push(
                err_at(path, &spec.id, "tenant owns no namespaces").with_hint(
                    "list the Kubernetes namespaces whose telemetry belongs to this tenant",
                ),
            );
        }
        for ns in &spec.namespaces {
            let is_pattern = ns.value.contains(['*', '?']);
            if (is_pattern && !is_namespace_pattern(&ns.value))
                || (!is_pattern && !is_dns_label(&ns.value))
            {
                diags.push(
                    err_at(path, ns, format!("{:?} is not a valid namespace name or pattern", ns.value))
                        .with_hint("use lower-case letters, digits and '-' (at most 63), with '*' or '?' for patterns"),
                );
            }
            owned.push((ns.value.as_str(), key.as_str(), path, ns));
        }
        let mut members: HashMap<&str, &Loc<String>> = HashMap::new();
        for m in &spec.grafana.members {
            if members.insert(m.user.value.as_str(), &m.user).is_some() {
                diags.push(
                    err_at(
                        path,
                        &m.user,
                        format!("member {:?} is listed twice", m.user.value),
                    )
                    .with_hint("keep one entry with the role the user should have"),
                );
            }
        }
        let mut teams: HashMap<&str, ()> = HashMap::new();
        for team in &spec.grafana.teams {
            if teams.insert(team.name.value.as_str(), ()).is_some() {
                diags.push(err_at(
                    path,
                    &team.name,
                    format!("team {:?} is defined twice", team.name.value),
                ));
            }
            for m in &team.members {
                if !members.contains_key(m.value.as_str()) {
                    let hint = match did_you_mean(&m.value, members.keys().copied()) {
                        Some(s) => format!("did you mean {s:?}? Team members must also be organisation members"),
                        None => "add the user to grafana.members first: team members must be organisation members".into(),
                    };
                    diags.push(
                        err_at(
                            path,
                            m,
                            format!(
                                "team member {:?} is not a member of the organisation",
                                m.value
                            ),
                        )
                        .with_hint(hint),
                    );
                }
            }
        }
        if let Some((spath, s)) = &t.sampling
            && s.policies.is_empty()
        {
            diags.push(
                Diagnostic::error(spath, 0, 0, "`policies` is empty, so it is unclear whether to keep all traces or none")
                    .with_hint("to keep every trace, delete sampling.yaml or add `- {name: all, type: always}`; to keep few, add a probabilistic policy"),
            );
        }
    }

    check_namespace_ownership(&owned, diags);
}

/// A namespace owned twice makes routing ambiguous: data could land in either tenant.
/// Exact names are looked up in a map, and patterns by their literal prefix, so a
/// thousand tenants cost thousands of lookups, not a million comparisons.
fn check_namespace_ownership(
    owned: &[(&str, &str, &str, &Loc<String>)],
    diags: &mut Vec<Diagnostic>,
) {
    let is_pattern = |n: &str| n.contains(['*', '?']);
    let mut report = |i: usize, j: usize| {
        // Report at the later entry, naming the earlier one.
        let (first, second) = if i < j { (i, j) } else { (j, i) };
        let (a, ta, _, _) = owned[first];
        let (b, tb, pb, lb) = owned[second];
        if ta == tb {
            if a == b {
                diags.push(err_at(pb, lb, format!("namespace {b:?} is listed twice")));
            }
            return;
        }
        diags.push(
            err_at(pb, lb, format!("namespace {b:?} is also owned by tenants/{ta} ({a:?})"))
                .with_hint("a namespace belongs to exactly one tenant; remove it from one of them or narrow the pattern"),
        );
    };
    let mut by_name: HashMap<&str, usize> = HashMap::new();
    let mut by_prefix: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, (name, ..)) in owned.iter().enumerate() {
        if let Some(&j) = by_name.get(name) {
            report(j, i);
        } else {
            by_name.insert(name, i);
        }
        if is_pattern(name) {
            let prefix = &name[..name.find(['*', '?']).unwrap_or(name.len())];
            by_prefix.entry(prefix).or_default().push(i);
        }
    }
    for (i, (name, ..)) in owned.iter().enumerate() {
        if is_pattern(name) {
            continue;
        }
        for k in 0..=name.len() {
            let Some(candidates) = name.get(..k).and_then(|p| by_prefix.get(p)) else {
                continue;
            };
            for &j in candidates {
                if glob_match(owned[j].0, name) {
                    report(i, j);
                }
            }
        }
    }
}

fn check_default_tenant(
    p: &PlatformFile,
    tenants: &BTreeMap<String, TenantParts>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(dt) = &p.gateway.default_tenant else {
        return;
    };
    // A tenant.yaml that did not parse is already reported, and its id is
    // unknown: checking against the rest would add a second, misleading
    // error for the same typo.
    if tenants
        .values()
        .any(|t| t.spec.is_none() && !t.spec_path.is_empty())
    {
        return;
    }
    let known: BTreeSet<&str> = tenants
        .values()
        .filter_map(|t| t.spec.as_ref().map(|s| s.id.value.as_str()))
        .collect();
    if !known.contains(dt.value.as_str()) {
        let hint = match did_you_mean(&dt.value, known.iter().copied()) {
            Some(s) => format!("did you mean {s:?}?"),
            None => "name the id of a tenant under tenants/, or remove the field to reject unknown namespaces".into(),
        };
        diags.push(
            err_at(
                "mop.yaml",
                dt,
                format!("gateway.default_tenant {:?} is not a tenant id", dt.value),
            )
            .with_hint(hint),
        );
    }
}

#[cfg(test)]
mod tests;
