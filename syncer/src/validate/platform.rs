//! `mop.yaml` and `versions.yaml`: endpoints, policies and version pins.

use super::err_at;
use super::tenants::is_dns_label;
use crate::diag::Diagnostic;
use crate::model::platform::PlatformFile;
use crate::model::versions::{VersionsFile, floating_pin_problem};

pub(super) fn check_platform(p: &PlatformFile, diags: &mut Vec<Diagnostic>) {
    check_platform_sections(p, &|_| Some("mop.yaml".to_string()), diags);
}

/// Checks the sections of `p` for which `file_of(section)` names the file that
/// wrote them (`mop.yaml`, or a cluster file replacing that section); sections
/// it answers `None` for are checked elsewhere.
pub(super) fn check_platform_sections(
    p: &PlatformFile,
    file_of: &dyn Fn(&str) -> Option<String>,
    diags: &mut Vec<Diagnostic>,
) {
    if let Some(file) = file_of("gateway") {
        check_gateway_ring(&file, p, diags);
    }
    let mut urls = Vec::new();
    if let Some(file) = file_of("grafana") {
        urls.push((file, "grafana.url", &p.grafana.url));
    }
    let b = &p.backends;
    for (name, backend) in [
        ("mimir", Some(&b.mimir)),
        ("loki", Some(&b.loki)),
        ("tempo", Some(&b.tempo)),
        ("pyroscope", b.pyroscope.as_ref()),
    ] {
        let (Some(backend), Some(file)) = (backend, file_of("backends")) else {
            continue;
        };
        urls.push((file.clone(), name, &backend.url));
        if let Some(u) = &backend.push_url {
            urls.push((file, name, u));
        }
    }
    for (file, what, url) in urls {
        let file = file.as_str();
        if let Some(problem) = url_problem(&url.value) {
            diags.push(
                err_at(file, url, format!("{what}: {problem}")).with_hint(
                    "write an absolute URL such as http://mimir-nginx.monitoring.svc:80",
                ),
            );
        }
    }
    if let Some(file) = file_of("sync")
        && !(0.0..=100.0).contains(&p.sync.max_prune_percent)
    {
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
    if let Some(file) = file_of("agent")
        && !(1..=4096).contains(&p.agent.capture_bytes)
    {
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
    if let Some(file) = file_of("namespace")
        && !is_dns_label(&p.namespace)
    {
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

pub(super) fn url_problem(u: &str) -> Option<String> {
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

pub(super) fn check_versions(v: &VersionsFile, diags: &mut Vec<Diagnostic>) {
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

/// `gateway.ring.service` names a Service: an RFC 1035 label (Kubernetes
/// `ValidateServiceName`, pkg/apis/core/validation/validation.go), and not the
/// gateway's own client-facing Service, which the syncer renders too.
fn check_gateway_ring(file: &str, p: &PlatformFile, diags: &mut Vec<Diagnostic>) {
    let Some(svc) = &p.gateway.ring.service else {
        return;
    };
    let name = svc.value.as_str();
    let b = name.as_bytes();
    let label = !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_lowercase()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-');
    if !label {
        diags.push(
            err_at(file, svc, format!("gateway.ring.service {name:?} is not a valid Service name"))
                .with_hint("use 1-63 lower-case letters, digits or '-', starting with a letter and not ending with '-', e.g. mop-gateway-peers"),
        );
    } else if name == "mop-gateway" {
        diags.push(
            err_at(file, svc, "gateway.ring.service must differ from the gateway's client Service `mop-gateway`")
                .with_hint("the ring needs its own headless Service; leave the field out to use mop-gateway-peers"),
        );
    }
}
