//! Per-tenant runtime overrides for Mimir, Loki, Tempo and Pyroscope: the
//! `overrides:` file each reads from its runtime config (reloaded about every 10 s).
//!
//! Every tenant's block is rendered complete, with the platform defaults filled in:
//! Tempo replaces (does not merge) its defaults with a per-tenant block
//! (grafana/tempo#4996), so a partial block would silently zero the rest.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::model::tenant::Limits;
use crate::repo::Repo;

/// Tempo's documented defaults, used when neither the tenant nor `mop.yaml` sets a
/// value (<https://grafana.com/docs/tempo/latest/configuration/#overrides>).
const TEMPO_RATE_LIMIT_BYTES: u64 = 15_000_000;
const TEMPO_BURST_SIZE_BYTES: u64 = 20_000_000;
const TEMPO_MAX_TRACES_PER_USER: u64 = 10_000;
const TEMPO_BLOCK_RETENTION_HOURS: u64 = 336;

/// Which backend an overrides file is for.
#[derive(Debug, Clone, Copy)]
pub(super) enum Backend {
    Mimir,
    Loki,
    Tempo,
    Pyroscope,
}

fn pick<T: Clone>(tenant: &Option<T>, default: &Option<T>) -> Option<T> {
    tenant.clone().or_else(|| default.clone())
}

fn insert(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.to_string(), v);
    }
}

fn block(backend: Backend, l: &Limits, d: &Limits) -> Value {
    let mut m = Map::new();
    match backend {
        Backend::Mimir => {
            let (l, d) = (&l.metrics, &d.metrics);
            insert(
                &mut m,
                "ingestion_rate",
                pick(&l.ingestion_rate, &d.ingestion_rate).map(Value::from),
            );
            insert(
                &mut m,
                "ingestion_burst_size",
                pick(&l.ingestion_burst_size, &d.ingestion_burst_size).map(Value::from),
            );
            insert(
                &mut m,
                "max_global_series_per_user",
                pick(&l.max_global_series_per_user, &d.max_global_series_per_user).map(Value::from),
            );
            insert(
                &mut m,
                "compactor_blocks_retention_period",
                pick(&l.retention, &d.retention).map(|r| Value::from(r.to_prometheus())),
            );
            // Always rendered, with Mimir's default when nothing is set, so the
            // limits `mop validate` checks are the ones the ruler enforces even if
            // Mimir's own defaults were changed in its config.
            let (groups, rules) = l.ruler_limits(d);
            m.insert(
                "ruler_max_rule_groups_per_tenant".into(),
                Value::from(groups),
            );
            m.insert("ruler_max_rules_per_rule_group".into(), Value::from(rules));
        }
        Backend::Loki => {
            let (l, d) = (&l.logs, &d.logs);
            insert(
                &mut m,
                "ingestion_rate_mb",
                pick(&l.ingestion_rate_mb, &d.ingestion_rate_mb).map(Value::from),
            );
            insert(
                &mut m,
                "ingestion_burst_size_mb",
                pick(&l.ingestion_burst_size_mb, &d.ingestion_burst_size_mb).map(Value::from),
            );
            insert(
                &mut m,
                "max_global_streams_per_user",
                pick(
                    &l.max_global_streams_per_user,
                    &d.max_global_streams_per_user,
                )
                .map(Value::from),
            );
            insert(
                &mut m,
                "retention_period",
                pick(&l.retention, &d.retention).map(|r| Value::from(r.to_prometheus())),
            );
        }
        Backend::Tempo => {
            let (l, d) = (&l.traces, &d.traces);
            let retention = pick(&l.retention, &d.retention)
                .map(|r| r.to_go())
                .unwrap_or_else(|| format!("{TEMPO_BLOCK_RETENTION_HOURS}h"));
            // Tempo's current (nested) per-tenant format; never mixed with the legacy flat one.
            return json!({
                "ingestion": {
                    "rate_limit_bytes": pick(&l.rate_limit_bytes, &d.rate_limit_bytes).unwrap_or(TEMPO_RATE_LIMIT_BYTES),
                    "burst_size_bytes": pick(&l.burst_size_bytes, &d.burst_size_bytes).unwrap_or(TEMPO_BURST_SIZE_BYTES),
                    "max_traces_per_user": pick(&l.max_traces_per_user, &d.max_traces_per_user).unwrap_or(TEMPO_MAX_TRACES_PER_USER),
                },
                "compaction": { "block_retention": retention },
            });
        }
        Backend::Pyroscope => {
            let (l, d) = (&l.profiles, &d.profiles);
            insert(
                &mut m,
                "ingestion_rate_mb",
                pick(&l.ingestion_rate_mb, &d.ingestion_rate_mb).map(Value::from),
            );
            insert(
                &mut m,
                "ingestion_burst_size_mb",
                pick(&l.ingestion_burst_size_mb, &d.ingestion_burst_size_mb).map(Value::from),
            );
            insert(
                &mut m,
                "compactor_blocks_retention_period",
                pick(&l.retention, &d.retention).map(|r| Value::from(r.to_prometheus())),
            );
        }
    }
    Value::Object(m)
}

/// The `overrides:` document for one backend, every tenant keyed by its id.
pub(super) fn document(repo: &Repo, backend: Backend) -> Value {
    let defaults = &repo.platform.defaults;
    let tenants: BTreeMap<&str, Value> = repo
        .tenants
        .iter()
        .map(|t| (t.id(), block(backend, &t.spec.limits, defaults)))
        .collect();
    json!({ "overrides": tenants })
}
