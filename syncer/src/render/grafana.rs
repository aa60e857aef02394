//! Grafana: one organisation per tenant with its members, teams, datasources (each
//! carrying the tenant's `X-Scope-OrgID`, correlated traces↔logs↔metrics↔profiles),
//! folders and dashboards; and a platform organisation that sees every tenant.
//!
//! Bodies follow Grafana's HTTP API: <https://grafana.com/docs/grafana/latest/developers/http_api/>.

use serde_json::{Value, json};

use super::{Builder, Kind, ResourceId, Result, Target};
use crate::repo::{Repo, Tenant};
use crate::uid::{datasource_uid, folder_uid};

/// Datasource uids of one organisation, so correlations can point at each other.
struct DsUids {
    mimir: String,
    loki: String,
    tempo: String,
    pyroscope: Option<String>,
}

impl DsUids {
    fn for_scope(scope: &str, repo: &Repo) -> Self {
        Self {
            mimir: datasource_uid(scope, "mimir"),
            loki: datasource_uid(scope, "loki"),
            tempo: datasource_uid(scope, "tempo"),
            pyroscope: repo
                .platform
                .backends
                .pyroscope
                .as_ref()
                .map(|_| datasource_uid(scope, "pyroscope")),
        }
    }
}

pub(super) fn render(repo: &Repo, b: &mut Builder) -> Result<()> {
    let platform_org = &repo.platform.grafana.platform_org;
    // Org resources are named by tenant key (and `platform`), not by org name, so
    // renaming an org is an update of the same object, not a new org.
    b.add(
        Target::Grafana,
        None,
        Kind::Org,
        PLATFORM_ORG,
        Some(platform_org.clone()),
        &json!({ "name": platform_org }),
    )?;
    let mut all: Vec<&str> = repo.tenants.iter().map(Tenant::id).collect();
    all.sort_unstable();
    // Mimir, Loki and Tempo federate queries over tenants joined with `|`.
    let scope_header = all.join("|");
    let uids = DsUids::for_scope("platform-all", repo);
    datasources(repo, b, None, &scope_header, &uids, false)?;

    for t in &repo.tenants {
        let key = Some(t.key.as_str());
        b.add(
            Target::Grafana,
            key,
            Kind::Org,
            t.key.clone(),
            Some(t.org_name().to_string()),
            &json!({ "name": t.org_name() }),
        )?;
        for m in &t.spec.grafana.members {
            b.add(
                Target::Grafana,
                key,
                Kind::OrgMember,
                m.user.value.clone(),
                None,
                &json!({ "loginOrEmail": m.user.value, "role": m.role.as_str() }),
            )?;
        }
        for team in &t.spec.grafana.teams {
            let mut members: Vec<&str> = team.members.iter().map(|m| m.value.as_str()).collect();
            members.sort_unstable();
            b.add(
                Target::Grafana,
                key,
                Kind::Team,
                team.name.value.clone(),
                None,
                &json!({ "name": team.name.value, "email": team.email.clone().unwrap_or_default(), "members": members }),
            )?;
        }
        let uids = DsUids::for_scope(&t.key, repo);
        datasources(repo, b, key, t.id(), &uids, true)?;

        let mut folders: Vec<&str> = t.dashboards.iter().map(|d| d.folder.as_str()).collect();
        folders.dedup();
        for f in folders {
            let uid = folder_uid(&t.key, f);
            b.add(
                Target::Grafana,
                key,
                Kind::Folder,
                uid.clone(),
                Some(f.to_string()),
                &json!({ "uid": uid, "title": f }),
            )?;
        }
        for d in &t.dashboards {
            b.add_raw(
                ResourceId {
                    target: Target::Grafana,
                    tenant: Some(t.key.clone()),
                    kind: Kind::Dashboard,
                    name: d.uid.clone(),
                },
                Some(d.title.clone()),
                std::sync::Arc::clone(&d.body),
            )?;
        }
    }
    Ok(())
}

/// The name of the platform organisation's resource (tenant orgs are named by
/// their tenant key).
pub const PLATFORM_ORG: &str = "platform";

fn header(scope: &str) -> (Value, Value) {
    (
        json!({ "httpHeaderName1": "X-Scope-OrgID" }),
        json!({ "httpHeaderValue1": scope }),
    )
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

fn datasources(
    repo: &Repo,
    b: &mut Builder,
    tenant: Option<&str>,
    scope: &str,
    uids: &DsUids,
    with_profiles: bool,
) -> Result<()> {
    let be = &repo.platform.backends;
    let (hdr, secure) = header(scope);
    let trim = |u: &str| u.trim_end_matches('/').to_string();

    let mimir = json!({
        "uid": uids.mimir,
        "name": "Mimir",
        "type": "prometheus",
        "access": "proxy",
        "url": format!("{}/prometheus", trim(&be.mimir.url.value)),
        "isDefault": true,
        "jsonData": merge(hdr.clone(), json!({
            "httpMethod": "POST",
            "prometheusType": "Mimir",
            "exemplarTraceIdDestinations": [{ "name": "trace_id", "datasourceUid": uids.tempo }],
        })),
        "secureJsonData": secure,
    });
    let loki = json!({
        "uid": uids.loki,
        "name": "Loki",
        "type": "loki",
        "access": "proxy",
        "url": trim(&be.loki.url.value),
        "isDefault": false,
        "jsonData": merge(hdr.clone(), json!({
            "derivedFields": [{
                "name": "TraceID",
                "matcherType": "regex",
                "matcherRegex": "(?:trace_id|traceID|traceId)[=:\"]+(\\w+)",
                "url": "${__value.raw}",
                "datasourceUid": uids.tempo,
            }],
        })),
        "secureJsonData": secure,
    });
    let mut tempo_json = json!({
        "tracesToLogsV2": {
            "datasourceUid": uids.loki,
            "spanStartTimeShift": "-5m",
            "spanEndTimeShift": "5m",
            "filterByTraceID": true,
            "tags": [
                { "key": "k8s.namespace.name", "value": "namespace" },
                { "key": "service.name", "value": "service_name" },
            ],
        },
        "tracesToMetrics": {
            "datasourceUid": uids.mimir,
            "spanStartTimeShift": "-5m",
            "spanEndTimeShift": "5m",
            "tags": [{ "key": "service.name", "value": "job" }],
            "queries": [
                { "name": "Request rate", "query": "sum(rate(http_server_request_duration_seconds_count{$$__tags}[5m]))" },
                { "name": "p95 latency", "query": "histogram_quantile(0.95, sum by (le) (rate(http_server_request_duration_seconds_bucket{$$__tags}[5m])))" },
            ],
        },
        "serviceMap": { "datasourceUid": uids.mimir },
        "nodeGraph": { "enabled": true },
        "lokiSearch": { "datasourceUid": uids.loki },
    });
    if let (true, Some(p)) = (with_profiles, &uids.pyroscope) {
        tempo_json = merge(
            tempo_json,
            json!({
                "tracesToProfiles": {
                    "datasourceUid": p,
                    "profileTypeId": "process_cpu:cpu:nanoseconds:cpu:nanoseconds",
                    "tags": [{ "key": "service.name", "value": "service_name" }],
                },
            }),
        );
    }
    let tempo = json!({
        "uid": uids.tempo,
        "name": "Tempo",
        "type": "tempo",
        "access": "proxy",
        "url": trim(&be.tempo.url.value),
        "isDefault": false,
        "jsonData": merge(hdr.clone(), tempo_json),
        "secureJsonData": secure,
    });
    for ds in [mimir, loki, tempo] {
        let uid = ds["uid"].as_str().unwrap_or_default().to_string();
        b.add(Target::Grafana, tenant, Kind::Datasource, uid, None, &ds)?;
    }
    // Pyroscope has no cross-tenant queries, so the platform org gets none.
    if let (true, Some(p), Some(uid)) = (with_profiles, &be.pyroscope, &uids.pyroscope) {
        let ds = json!({
            "uid": uid,
            "name": "Pyroscope",
            "type": "grafana-pyroscope-datasource",
            "access": "proxy",
            "url": trim(&p.url.value),
            "isDefault": false,
            "jsonData": hdr,
            "secureJsonData": secure,
        });
        b.add(
            Target::Grafana,
            tenant,
            Kind::Datasource,
            uid.clone(),
            None,
            &ds,
        )?;
    }
    Ok(())
}
