//! `clusters/<name>.yaml`: each cluster's own checks (its sections of `mop.yaml`,
//! its tenant selector, its version pins) and the promotion rule between them.

use std::collections::{BTreeMap, BTreeSet};

use super::TenantParts;
use super::platform::check_platform_sections;
use super::tenants::is_dns_label;
use crate::diag::{Diagnostic, did_you_mean};
use crate::model::cluster::ClusterFile;
use crate::model::common::Loc;
use crate::model::platform::PlatformFile;
use crate::model::versions::{VersionsFile, floating_pin_problem};
use crate::repo::Cluster;

pub(super) fn check_clusters(
    clusters: &BTreeMap<String, ClusterFile>,
    platform: Option<&PlatformFile>,
    versions: Option<&VersionsFile>,
    tenants: &BTreeMap<String, TenantParts>,
    diags: &mut Vec<Diagnostic>,
) {
    let mut names: BTreeMap<&str, &str> = BTreeMap::new();
    for (key, spec) in clusters {
        let path = format!("clusters/{key}.yaml");
        let c = Cluster {
            key: key.clone(),
            spec: spec.clone(),
        };
        if !is_dns_label(key) {
            diags.push(
                Diagnostic::error(&path, 0, 0, format!("cluster key {key:?} (the file name) is not a DNS label"))
                    .with_hint("name the file with lower-case letters, digits and '-', e.g. clusters/prod-eu-1.yaml: the key is used in `--cluster` and output directories"),
            );
        }
        let name = spec
            .cluster
            .as_ref()
            .map_or(key.as_str(), |c| c.value.as_str());
        if let Some(first) = names.insert(name, key) {
            let at = spec.cluster.as_ref().map_or((0, 0), |l| (l.line, l.column));
            diags.push(
                Diagnostic::error(
                    &path,
                    at.0,
                    at.1,
                    format!(
                        "cluster name {:?} is also the name of clusters/{first}.yaml",
                        c.name()
                    ),
                )
                .with_hint("every cluster needs its own name"),
            );
        }
        if spec.environment.value.trim().is_empty() {
            diags.push(
                super::err_at(&path, &spec.environment, "environment is empty")
                    .with_hint("name the environment, e.g. `environment: prod`"),
            );
        }
        for (what, pin) in [
            ("agent", &spec.versions.agent),
            ("gateway", &spec.versions.gateway),
        ] {
            if let Some(pin) = pin
                && let Some(problem) = floating_pin_problem(&pin.value)
            {
                diags.push(
                    super::err_at(&path, pin, format!("versions.{what} floats: {problem}"))
                        .with_hint(
                            "pin an exact release such as 1.4.2 or a digest sha256:<64 hex digits>",
                        ),
                );
            }
        }
        check_selector(&path, spec, tenants, diags);
        let Some(shared) = platform else { continue };
        let merged = c.platform(shared);
        let file_of = |section: &str| {
            let mine = match section {
                "namespace" => spec.namespace.is_some(),
                "sync" => spec.sync.is_some(),
                "grafana" => spec.grafana.is_some(),
                "backends" => spec.backends.is_some(),
                "gateway" => spec.gateway.is_some(),
                "agent" => spec.agent.is_some(),
                _ => false,
            };
            mine.then(|| path.clone())
        };
        check_platform_sections(&merged, &file_of, diags);
        check_default_tenant_served(&c, &merged, spec.gateway.is_some(), tenants, diags);
        if merged.backends.pyroscope.is_none() && shared.backends.pyroscope.is_some() {
            for (k, t) in tenants {
                let labels = t
                    .spec
                    .as_ref()
                    .map(|s| s.labels.clone())
                    .unwrap_or_default();
                if !c.serves(k, &labels) {
                    continue;
                }
                for d in &t.dashboards {
                    if let Some((l, col)) = d.pyroscope_at {
                        diags.push(
                            Diagnostic::warning(&d.path, l, col, format!("this dashboard uses the tenant's Pyroscope datasource, but cluster {} ({path}) configures no Pyroscope backend", c.key))
                                .with_hint(format!("add backends.pyroscope to {path}, or serve this tenant elsewhere")),
                        );
                    }
                }
            }
        }
    }
    if let Some(v) = versions {
        check_promotion(clusters, v, diags);
    }
}

fn check_selector(
    path: &str,
    spec: &ClusterFile,
    tenants: &BTreeMap<String, TenantParts>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(sel) = &spec.tenants else { return };
    if sel.value.names.is_empty() && sel.value.labels.is_empty() {
        diags.push(
            super::err_at(path, sel, "`tenants` selects no tenant")
                .with_hint("list tenant directories in `names`, give `labels` to match, or leave `tenants` out to serve every tenant"),
        );
    }
    for n in &sel.value.names {
        if !tenants.contains_key(&n.value) {
            let hint = match did_you_mean(&n.value, tenants.keys().map(String::as_str)) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "name a directory under tenants/".into(),
            };
            diags.push(
                super::err_at(
                    path,
                    n,
                    format!("tenants.names: there is no tenants/{}", n.value),
                )
                .with_hint(hint),
            );
        }
    }
}

/// The gateway's default tenant must be one this cluster serves: the gateway of
/// the cluster only knows those.
fn check_default_tenant_served(
    c: &Cluster,
    merged: &PlatformFile,
    own_gateway: bool,
    tenants: &BTreeMap<String, TenantParts>,
    diags: &mut Vec<Diagnostic>,
) {
    let Some(dt) = &merged.gateway.default_tenant else {
        return;
    };
    let Some((key, t)) = tenants
        .iter()
        .find(|(_, t)| t.spec.as_ref().is_some_and(|s| s.id.value == dt.value))
    else {
        // Not a tenant at all: reported for mop.yaml, or below for this file.
        if own_gateway {
            diags.push(
                super::err_at(
                    &c.path(),
                    dt,
                    format!("gateway.default_tenant {:?} is not a tenant id", dt.value),
                )
                .with_hint("name the id of a tenant under tenants/ this cluster serves"),
            );
        }
        return;
    };
    let labels = t
        .spec
        .as_ref()
        .map(|s| s.labels.clone())
        .unwrap_or_default();
    if !c.serves(key, &labels) {
        let file = if own_gateway {
            c.path()
        } else {
            "mop.yaml".into()
        };
        diags.push(
            super::err_at(
                &file,
                dt,
                format!(
                    "gateway.default_tenant {:?} is not served by cluster {} (clusters/{}.yaml)",
                    dt.value,
                    c.name(),
                    c.key
                ),
            )
            .with_hint("serve that tenant on the cluster (its `tenants`), or give the cluster its own `gateway` section with another default tenant"),
        );
    }
}

/// A version pin with the file and place it was written.
struct Pin<'a> {
    file: String,
    at: &'a Loc<String>,
}

impl std::fmt::Display for Pin<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.at.line, self.at.column)
    }
}

fn pin_of<'a>(
    spec: &'a ClusterFile,
    key: &str,
    shared: &'a VersionsFile,
    component: &str,
) -> Pin<'a> {
    let (own, base) = match component {
        "agent" => (&spec.versions.agent, &shared.agent.version),
        _ => (&spec.versions.gateway, &shared.gateway.version),
    };
    match own {
        Some(at) => Pin {
            file: format!("clusters/{key}.yaml"),
            at,
        },
        None => Pin {
            file: "versions.yaml".into(),
            at: base,
        },
    }
}

/// `promote_after`: a version may run on a cluster only once every cluster of
/// the stage before it runs that version or a newer one. Checked from the
/// repository alone, so a pull request that bumps prod before staging fails
/// review.
fn check_promotion(
    clusters: &BTreeMap<String, ClusterFile>,
    shared: &VersionsFile,
    diags: &mut Vec<Diagnostic>,
) {
    let environments: BTreeSet<&str> = clusters
        .values()
        .map(|c| c.environment.value.as_str())
        .collect();
    // Edges: a cluster → the clusters of the stage it is promoted after.
    let mut after: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (key, spec) in clusters {
        let Some(stage) = &spec.promote_after else {
            continue;
        };
        let path = format!("clusters/{key}.yaml");
        // An environment means every cluster of it (a key that is also an
        // environment's name is one of them, usually); otherwise a cluster key.
        let mut earlier: Vec<&str> = clusters
            .iter()
            .filter(|(k, c)| c.environment.value == stage.value && *k != key)
            .map(|(k, _)| k.as_str())
            .collect();
        if earlier.is_empty()
            && let Some((k, _)) = clusters.get_key_value(&stage.value)
        {
            earlier.push(k.as_str());
        }
        if stage.value == *key {
            diags.push(
                super::err_at(&path, stage, "promote_after names the cluster itself")
                    .with_hint("name the cluster or environment that gets a version first"),
            );
            continue;
        }
        if earlier.is_empty() {
            let known = clusters
                .keys()
                .map(String::as_str)
                .chain(environments.iter().copied());
            let hint = match did_you_mean(&stage.value, known) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "name a cluster (a file under clusters/) or the environment of one".into(),
            };
            diags.push(
                super::err_at(
                    &path,
                    stage,
                    format!(
                        "promote_after {:?} is neither a cluster nor an environment of one",
                        stage.value
                    ),
                )
                .with_hint(hint),
            );
            continue;
        }
        after.insert(key.as_str(), earlier.clone());
        for e in earlier {
            let Some(espec) = clusters.get(e) else {
                continue;
            };
            for component in ["agent", "gateway"] {
                let mine = pin_of(spec, key, shared, component);
                let theirs = pin_of(espec, e, shared, component);
                if let Some(why) = not_promoted(&mine.at.value, &theirs.at.value) {
                    diags.push(
                        super::err_at(
                            &mine.file,
                            mine.at,
                            format!(
                                "cluster {key} runs {component} {}, {why} than {} on cluster {e} (pinned at {theirs}), and {key} is promoted after {:?}",
                                mine.at.value, theirs.at.value, stage.value
                            ),
                        )
                        .with_hint(format!(
                            "promote in order: pin {} on {e} first (clusters/{e}.yaml), or keep {key} at {}",
                            mine.at.value, theirs.at.value
                        )),
                    );
                }
            }
        }
    }
    // A cycle would let every stage wait for another one.
    for (key, spec) in clusters {
        let Some(stage) = &spec.promote_after else {
            continue;
        };
        let mut seen = BTreeSet::new();
        let mut todo = vec![key.as_str()];
        let mut cycle = false;
        while let Some(k) = todo.pop() {
            for &e in after.get(k).map(Vec::as_slice).unwrap_or_default() {
                if e == key {
                    cycle = true;
                } else if seen.insert(e) {
                    todo.push(e);
                }
            }
        }
        if cycle {
            diags.push(
                super::err_at(
                    &format!("clusters/{key}.yaml"),
                    stage,
                    format!("promote_after {:?} makes a cycle: cluster {key} ends up promoted after itself", stage.value),
                )
                .with_hint("promotion goes one way, e.g. dev → staging → prod"),
            );
        }
    }
}

/// Why `later` may not run after `earlier` ("newer", "not ordered"), or `None`
/// when it may. Versions compare by semantic-version precedence (a leading `v`
/// is ignored, build metadata does not count). A digest has no order: a stage may
/// pin a digest only when the stage before pins the same one (`1.2.3@sha256:…`
/// compares by the version, and equal versions must carry equal digests).
pub(crate) fn not_promoted(later: &str, earlier: &str) -> Option<&'static str> {
    if later == earlier {
        return None;
    }
    let split = |v: &str| -> (Option<semver::Version>, Option<String>, bool) {
        let (tag, digest) = match v.split_once('@') {
            Some((t, d)) => (Some(t), Some(d.to_string())),
            None if v.starts_with("sha256:") => (None, Some(v.to_string())),
            None => (Some(v), None),
        };
        let tag = tag.map(|t| t.strip_prefix('v').unwrap_or(t));
        let parsed = tag.and_then(|t| semver::Version::parse(t).ok());
        let unparsable = tag.is_some() && parsed.is_none();
        (parsed, digest, unparsable)
    };
    let (lv, ld, lbad) = split(later);
    let (ev, ed, ebad) = split(earlier);
    if lbad || ebad {
        // A floating pin is reported on its own.
        return None;
    }
    match (lv, ev) {
        (Some(l), Some(e)) => match l.cmp_precedence(&e) {
            std::cmp::Ordering::Greater => Some("newer"),
            std::cmp::Ordering::Less => None,
            std::cmp::Ordering::Equal => match (ld, ed) {
                (Some(a), Some(b)) if a != b => Some("a different digest of the same version"),
                _ => None,
            },
        },
        // A bare digest on either side: only the same digest is known to be
        // what the earlier stage ran.
        _ => match (ld, ed) {
            (Some(a), Some(b)) if a == b => None,
            _ => Some("not ordered (a digest)"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::not_promoted;

    #[test]
    fn versions_compare_by_semver_precedence() {
        assert_eq!(not_promoted("0.2.0", "0.1.0"), Some("newer"));
        assert_eq!(not_promoted("0.1.0", "0.2.0"), None);
        assert_eq!(not_promoted("v0.10.0", "0.9.0"), Some("newer"));
        assert_eq!(not_promoted("1.0.0-rc.1", "1.0.0"), None);
        assert_eq!(not_promoted("1.0.0", "1.0.0-rc.1"), Some("newer"));
        assert_eq!(not_promoted("1.0.0+b2", "1.0.0+b1"), None);
    }

    #[test]
    fn digests_follow_only_the_same_digest() {
        let a = format!("sha256:{}", "a".repeat(64));
        let b = format!("sha256:{}", "b".repeat(64));
        assert_eq!(not_promoted(&a, &a), None);
        assert!(not_promoted(&a, &b).is_some());
        assert!(not_promoted(&a, "1.0.0").is_some());
        assert!(not_promoted("1.0.0", &a).is_some());
        assert_eq!(
            not_promoted(&format!("1.0.0@{a}"), &format!("1.0.0@{b}")),
            Some("a different digest of the same version")
        );
        assert_eq!(
            not_promoted(&format!("1.0.0@{a}"), &format!("1.1.0@{b}")),
            None
        );
    }
}
