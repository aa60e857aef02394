//! `tenants/<t>/tenant.yaml` and the cross-tenant checks: ids, namespaces, the
//! default tenant.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use mop_gateway_config::{glob_match, is_valid_tenant_id};

use super::{TenantParts, err_at};
use crate::diag::{Diagnostic, did_you_mean};
use crate::model::common::Loc;
use crate::model::platform::PlatformFile;

pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Grafana's slug of a title (gosimple/slug of the lower-cased title): runs of
/// other characters become one `-`. Transliteration of non-ASCII letters is not
/// reproduced.
fn title_slug(title: &str) -> String {
    let mut out = String::new();
    for c in title.chars() {
        if c.is_alphanumeric() {
            out.extend(c.to_lowercase());
        } else if !out.is_empty() && !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_end_matches('-').to_string()
}

pub(super) fn is_namespace_pattern(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*' || b == b'?'
        })
}

pub(super) fn check_tenants(tenants: &BTreeMap<String, TenantParts>, diags: &mut Vec<Diagnostic>) {
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
        // One title per folder: Grafana's dashboard store (≤ 11) refuses a second
        // dashboard whose title has the same slug in a folder (412 name-exists),
        // and with `overwrite`, which the applier sends, saves over the first.
        let mut titles: HashMap<(&str, String), &str> = HashMap::new();
        for d in &t.dashboards {
            let key = (d.folder.as_str(), title_slug(&d.title));
            if let Some(first) = titles.insert(key, d.path.as_str()) {
                diags.push(
                    Diagnostic::error(&d.path, 1, 1, format!("dashboard title {:?} is also used in folder {:?} by {first}", d.title, d.folder))
                        .with_hint("give each dashboard of a folder its own title; Grafana compares titles ignoring case and punctuation, refuses the second, or replaces the first when overwriting"),
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
pub(super) fn check_namespace_ownership(
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

pub(super) fn check_default_tenant(
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
