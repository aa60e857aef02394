//! Validation the API server performs before storing an object, answered with 422.
//!
//! Names: "Object Names and IDs"
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/names/>.
//! Labels: "Labels and Selectors", section "Syntax and character set"
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#syntax-and-character-set>.
//! Deployments: selector must match the template's labels
//! <https://kubernetes.io/docs/concepts/workloads/controllers/deployment/#selector>.
//! Events (events.k8s.io/v1) required fields:
//! <https://kubernetes.io/docs/reference/kubernetes-api/cluster-resources/event-v1/>.

use serde_json::Value;

use crate::resources::{NameRule, Resource};

type Causes = Vec<(String, String)>;

fn alnum(c: u8) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit()
}

/// RFC 1123 label: at most 63 of `[a-z0-9-]`, alphanumeric at both ends.
pub fn is_dns_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// RFC 1123 subdomain: at most 253, dot-separated labels.
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns_label)
}

fn is_rfc1035_label(s: &str) -> bool {
    is_dns_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn name_error(rule: NameRule, name: &str) -> Option<String> {
    let ok = match rule {
        NameRule::Subdomain => is_dns_subdomain(name),
        NameRule::Label => is_dns_label(name),
        NameRule::Rfc1035Label => is_rfc1035_label(name),
        NameRule::PathSegment => {
            !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '%'])
        }
    };
    if ok {
        return None;
    }
    Some(match rule {
        NameRule::Subdomain => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
        ),
        NameRule::Label => format!(
            "Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
        ),
        NameRule::Rfc1035Label => format!(
            "Invalid value: \"{name}\": a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')"
        ),
        NameRule::PathSegment => format!(
            "Invalid value: \"{name}\": may not contain '/' or '%' and may not be '.' or '..'"
        ),
    })
}

/// Error for a name the resource's rule rejects (used before the object exists).
pub fn check_name(res: &Resource, name: &str) -> Option<(String, String)> {
    name_error(res.name_rule, name).map(|m| ("metadata.name".to_string(), m))
}

fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    let ok_end = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && ok_end(b[0])
        && ok_end(b[b.len() - 1])
        && b.iter()
            .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// Label key: optional DNS-subdomain prefix and `/`, then a name.
pub fn is_label_key(k: &str) -> bool {
    match k.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(k),
    }
}

pub fn is_label_value(v: &str) -> bool {
    v.is_empty() || is_label_name(v)
}

fn check_labels(labels: &Value, field: &str, causes: &mut Causes) {
    let Some(map) = labels.as_object() else {
        return;
    };
    for (k, v) in map {
        if !is_label_key(k) {
            causes.push((
                field.to_string(),
                format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
            ));
        }
        match v.as_str() {
            Some(s) if is_label_value(s) => {}
            _ => causes.push((
                field.to_string(),
                format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"),
            )),
        }
    }
}

fn required(obj: &Value, path: &[&str], causes: &mut Causes) {
    let mut v = obj;
    for p in path {
        v = &v[*p];
    }
    let missing = match v {
        Value::Null => true,
        Value::String(s) => s.is_empty(),
        _ => false,
    };
    if missing {
        causes.push((path.join("."), "Required value".into()));
    }
}

fn check_containers(spec: &Value, prefix: &str, causes: &mut Causes) {
    match spec["containers"].as_array() {
        Some(cs) if !cs.is_empty() => {
            for (i, c) in cs.iter().enumerate() {
                let name = c["name"].as_str().unwrap_or("");
                if !is_dns_label(name) {
                    causes.push((format!("{prefix}.containers[{i}].name"), format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'")));
                }
                if c["image"].as_str().is_none_or(str::is_empty) {
                    causes.push((
                        format!("{prefix}.containers[{i}].image"),
                        "Required value".into(),
                    ));
                }
            }
        }
        _ => causes.push((format!("{prefix}.containers"), "Required value".into())),
    }
}

/// Every problem the API server would report for this object, as `(field, message)`.
pub fn validate(res: &Resource, obj: &Value) -> Causes {
    let mut causes = Causes::new();
    let name = obj["metadata"]["name"].as_str().unwrap_or("");
    if name.is_empty() {
        causes.push((
            "metadata.name".into(),
            "Required value: name or generateName is required".into(),
        ));
    } else if let Some(c) = check_name(res, name) {
        causes.push(c);
    }
    check_labels(&obj["metadata"]["labels"], "metadata.labels", &mut causes);
    if let Some(a) = obj["metadata"]["annotations"].as_object() {
        for k in a.keys() {
            if !is_label_key(k) {
                causes.push(("metadata.annotations".into(), format!("Invalid value: \"{k}\": name part must consist of alphanumeric characters, '-', '_' or '.'")));
            }
        }
    }
    match (res.group, res.plural) {
        ("", "configmaps") => {
            for field in ["data", "binaryData"] {
                if let Some(d) = obj[field].as_object() {
                    for k in d.keys() {
                        let ok = !k.is_empty()
                            && k.len() <= 253
                            && k.bytes().all(|c| {
                                c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')
                            });
                        if !ok {
                            causes.push((field.to_string(), format!("Invalid value: \"{k}\": a valid config key must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or 'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')")));
                        }
                    }
                }
            }
        }
        ("apps", _) => {
            let spec = &obj["spec"];
            if spec["selector"].is_null() {
                causes.push(("spec.selector".into(), "Required value".into()));
            } else if let Some(ml) = spec["selector"]["matchLabels"].as_object() {
                let tl = &spec["template"]["metadata"]["labels"];
                let matches = ml.iter().all(|(k, v)| &tl[k] == v);
                if !matches {
                    causes.push((
                        "spec.template.metadata.labels".into(),
                        format!(
                            "Invalid value: {}: `selector` does not match template `labels`",
                            tl
                        ),
                    ));
                }
            }
            check_labels(
                &spec["template"]["metadata"]["labels"],
                "spec.template.metadata.labels",
                &mut causes,
            );
            check_containers(&spec["template"]["spec"], "spec.template.spec", &mut causes);
            if let Some(r) = spec["replicas"].as_i64()
                && r < 0
            {
                causes.push((
                    "spec.replicas".into(),
                    format!("Invalid value: {r}: must be greater than or equal to 0"),
                ));
            }
        }
        ("", "pods") => check_containers(&obj["spec"], "spec", &mut causes),
        ("", "services") => {
            if let Some(ports) = obj["spec"]["ports"].as_array() {
                for (i, p) in ports.iter().enumerate() {
                    match p["port"].as_i64() {
                        Some(1..=65535) => {}
                        _ => causes.push((
                            format!("spec.ports[{i}].port"),
                            format!(
                                "Invalid value: {}: must be between 1 and 65535, inclusive",
                                p["port"]
                            ),
                        )),
                    }
                }
            }
        }
        ("coordination.k8s.io", "leases") => {
            if let Some(d) = obj["spec"]["leaseDurationSeconds"].as_i64()
                && d <= 0
            {
                causes.push((
                    "spec.leaseDurationSeconds".into(),
                    format!("Invalid value: {d}: must be greater than 0"),
                ));
            }
        }
        ("events.k8s.io", "events") => {
            for f in [
                "eventTime",
                "reportingController",
                "reportingInstance",
                "action",
                "reason",
            ] {
                required(obj, &[f], &mut causes);
            }
            check_event_type(obj, &mut causes);
        }
        ("", "events") => {
            required(obj, &["involvedObject", "kind"], &mut causes);
            check_event_type(obj, &mut causes);
            let ns = obj["metadata"]["namespace"].as_str().unwrap_or("");
            if let Some(ins) = obj["involvedObject"]["namespace"].as_str()
                && !ins.is_empty()
                && ins != ns
            {
                causes.push((
                    "involvedObject.namespace".into(),
                    format!("Invalid value: \"{ins}\": does not match event.namespace"),
                ));
            }
        }
        ("discovery.k8s.io", "endpointslices") => check_endpoint_slice(obj, &mut causes),
        _ => {}
    }
    causes
}

/// `ValidateEndpointSlice` (kubernetes pkg/apis/discovery/validation/validation.go):
/// `addressType` is required and one of IPv4, IPv6, FQDN; every endpoint has 1 to
/// 100 addresses, each an IP of that type; ports are 1..=65535.
fn check_endpoint_slice(obj: &Value, causes: &mut Causes) {
    let at = obj["addressType"].as_str();
    match at {
        Some("IPv4") | Some("IPv6") | Some("FQDN") => {}
        None => causes.push(("addressType".into(), "Required value".into())),
        Some(t) => causes.push((
            "addressType".into(),
            format!("Unsupported value: \"{t}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""),
        )),
    }
    for (i, ep) in obj["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let addrs = ep["addresses"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if addrs.is_empty() || addrs.len() > 100 {
            causes.push((
                format!("endpoints[{i}].addresses"),
                "Invalid value: must contain at least 1 and at most 100 addresses".into(),
            ));
        }
        for (j, a) in addrs.iter().enumerate() {
            let a = a.as_str().unwrap_or("");
            let ok = match at {
                Some("IPv4") => a.parse::<std::net::Ipv4Addr>().is_ok(),
                Some("IPv6") => a.parse::<std::net::Ipv6Addr>().is_ok(),
                _ => true,
            };
            if !ok {
                causes.push((
                    format!("endpoints[{i}].addresses[{j}]"),
                    format!(
                        "Invalid value: \"{a}\": must be a valid {} address",
                        at.unwrap_or("")
                    ),
                ));
            }
        }
    }
    for (i, p) in obj["ports"].as_array().into_iter().flatten().enumerate() {
        if let Some(n) = p["port"].as_u64()
            && !(1..=65535).contains(&n)
        {
            causes.push((
                format!("ports[{i}].port"),
                format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
            ));
        }
    }
}

fn check_event_type(obj: &Value, causes: &mut Causes) {
    match obj["type"].as_str() {
        None | Some("Normal") | Some("Warning") => {}
        Some(t) => causes.push((
            "type".into(),
            format!("Unsupported value: \"{t}\": supported values: \"Normal\", \"Warning\""),
        )),
    }
}

/// Fields that may not change once set (checked on every update).
pub fn immutable(res: &Resource, old: &Value, new: &Value) -> Causes {
    let mut causes = Causes::new();
    if res.is_workload() && old["spec"]["selector"] != new["spec"]["selector"] {
        causes.push((
            "spec.selector".into(),
            format!(
                "Invalid value: {}: field is immutable",
                new["spec"]["selector"]
            ),
        ));
    }
    if res.is("rbac.authorization.k8s.io", "clusterrolebindings")
        && old["roleRef"] != new["roleRef"]
    {
        causes.push((
            "roleRef".into(),
            "Invalid value: cannot change roleRef".into(),
        ));
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(is_dns_subdomain("mop-gateway.v1"));
        assert!(!is_dns_subdomain("Mop"));
        assert!(!is_dns_label("a.b"));
        assert!(!is_dns_label("-a"));
        assert!(is_label_key("app.kubernetes.io/managed-by"));
        assert!(is_label_key("mop.dev/tenant"));
        assert!(!is_label_key("bad key"));
        assert!(is_label_value(""));
        assert!(!is_label_value("-x"));
    }
}
