//! Mimir and Loki rulers: one rule group per resource, in the ruler namespace named
//! after its file. The body is the bare group that
//! `POST /prometheus/config/v1/rules/{namespace}` (and Loki's
//! `/loki/api/v1/rules/{namespace}`) takes
//! (<https://grafana.com/docs/mimir/latest/references/http-api/#set-rule-group>).

use super::{Builder, Kind, Result, Target};
use crate::repo::Repo;

pub(super) fn render(repo: &Repo, b: &mut Builder) -> Result<()> {
    for t in &repo.tenants {
        for (target, files) in [
            (Target::MimirRuler, &t.metric_rules),
            (Target::LokiRuler, &t.log_rules),
        ] {
            for ns in files {
                for g in &ns.file.groups {
                    b.add(
                        target,
                        Some(&t.key),
                        Kind::RuleGroup,
                        format!("{}/{}", ns.namespace, g.name.value),
                        None,
                        g,
                    )?;
                }
            }
        }
    }
    Ok(())
}
