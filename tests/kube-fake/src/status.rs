//! Error responses as `Status` objects.
//!
//! Follows "Kubernetes API Concepts" (responses are `Status` kind on error):
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/> and the API
//! conventions on status codes and reasons:
//! <https://github.com/kubernetes/community/blob/master/contributors/devel/sig-architecture/api-conventions.md#http-status-codes>.
//! Apply conflicts follow "Server-Side Apply", section "Conflicts"
//! <https://kubernetes.io/docs/reference/using-api/server-side-apply/#conflicts>, worded
//! as `k8s.io/apimachinery/pkg/util/managedfields/internal/conflict.go` words them.
//! Messages are worded like the API server's (`configmaps "x" not found`), so that
//! error handling written against the fake behaves the same against a cluster.

use serde_json::{Value, json};

use crate::resources::Resource;

/// An API error: HTTP code plus `Status` body.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Option<Value>) -> Self {
        let mut body = json!({
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        });
        if let Some(d) = details {
            body["details"] = d;
        }
        ApiError { code, body }
    }

    fn details(res: &Resource, name: &str) -> Value {
        let mut d = json!({ "name": name, "kind": res.plural });
        if !res.group.is_empty() {
            d["group"] = json!(res.group);
        }
        d
    }

    pub fn not_found(res: &Resource, name: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("{} \"{name}\" not found", res.qualified()),
            Some(Self::details(res, name)),
        )
    }

    /// 404 for a path the server does not serve at all.
    pub fn no_route() -> Self {
        Self::new(
            404,
            "NotFound",
            "the server could not find the requested resource".into(),
            Some(json!({})),
        )
    }

    pub fn namespace_not_found(ns: &str) -> Self {
        Self::new(
            404,
            "NotFound",
            format!("namespaces \"{ns}\" not found"),
            Some(json!({ "name": ns, "kind": "namespaces" })),
        )
    }

    pub fn already_exists(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "AlreadyExists",
            format!("{} \"{name}\" already exists", res.qualified()),
            Some(Self::details(res, name)),
        )
    }

    /// Optimistic-concurrency failure: the request's `resourceVersion` is stale.
    pub fn stale(res: &Resource, name: &str) -> Self {
        Self::new(
            409,
            "Conflict",
            format!(
                "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                res.qualified()
            ),
            Some(Self::details(res, name)),
        )
    }

    /// Server-side apply conflicts: `(manager as printed, field path)` pairs, worded
    /// as apimachinery's `NewConflictError` words them (one line for one conflict;
    /// grouped by manager, one `- path` per line, for several).
    pub fn apply_conflicts(conflicts: &[(String, String)]) -> Self {
        let causes: Vec<Value> = conflicts
            .iter()
            .map(|(m, f)| {
                json!({
                    "reason": "FieldManagerConflict",
                    "message": format!("conflict with {m}"),
                    "field": f,
                })
            })
            .collect();
        let message = if let [(m, f)] = conflicts {
            format!("Apply failed with 1 conflict: conflict with {m}: {f}")
        } else {
            let mut by_manager: std::collections::BTreeMap<&str, Vec<&str>> = Default::default();
            for (m, f) in conflicts {
                by_manager.entry(m).or_default().push(f);
            }
            let mut lines = Vec::new();
            for (m, fs) in by_manager {
                lines.push(format!("conflicts with {m}:"));
                lines.extend(fs.iter().map(|f| format!("- {f}")));
            }
            format!(
                "Apply failed with {} conflicts: {}",
                conflicts.len(),
                lines.join("\n")
            )
        };
        Self::new(409, "Conflict", message, Some(json!({ "causes": causes })))
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(400, "BadRequest", message.into(), None)
    }

    /// 422 with one cause per invalid field. The message names the kind
    /// qualified by its group (`Deployment.apps "x" is invalid`), as
    /// `NewInvalid` prints a `GroupKind` (apimachinery `pkg/api/errors/errors.go`).
    pub fn invalid(kind: &str, name: &str, group: &str, causes: &[(String, String)]) -> Self {
        let msgs: Vec<String> = causes.iter().map(|(f, m)| format!("{f}: {m}")).collect();
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = if msgs.len() == 1 {
            format!("{qualified} \"{name}\" is invalid: {}", msgs.join(""))
        } else {
            format!("{qualified} \"{name}\" is invalid: [{}]", msgs.join(", "))
        };
        let causes: Vec<Value> = causes
            .iter()
            .map(|(f, m)| json!({ "reason": "FieldValueInvalid", "message": m, "field": f }))
            .collect();
        let mut details = json!({ "name": name, "kind": kind, "causes": causes });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        Self::new(422, "Invalid", message, Some(details))
    }

    pub fn unsupported_media_type(got: &str) -> Self {
        Self::new(
            415,
            "UnsupportedMediaType",
            format!(
                "the body of the request was in an unknown format ({got}) - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
            ),
            None,
        )
    }

    pub fn method_not_allowed() -> Self {
        Self::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource".into(),
            None,
        )
    }

    /// `apierrors.NewForbidden` (apimachinery `pkg/api/errors/errors.go`): the
    /// message names the qualified resource and the object when there is one.
    pub fn forbidden(group: &str, resource: &str, name: &str, err: &str) -> Self {
        let qualified = if group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{group}")
        };
        let message = if group.is_empty() && resource.is_empty() {
            format!("forbidden: {err}")
        } else if name.is_empty() {
            format!("{qualified} is forbidden: {err}")
        } else {
            format!("{qualified} {name:?} is forbidden: {err}")
        };
        let mut details = serde_json::Map::new();
        for (k, v) in [("name", name), ("group", group), ("kind", resource)] {
            if !v.is_empty() {
                details.insert(k.into(), json!(v));
            }
        }
        Self::new(403, "Forbidden", message, Some(Value::Object(details)))
    }

    /// 500 for an error that is not an API status (`ErrorToAPIStatus` in
    /// apiserver `endpoints/handlers/responsewriters/status.go`: no reason).
    pub fn internal_unknown(message: String) -> Self {
        let mut e = Self::new(500, "", message, None);
        if let Some(m) = e.body.as_object_mut() {
            m.remove("reason");
        }
        e
    }

    pub fn unauthorized() -> Self {
        Self::new(401, "Unauthorized", "Unauthorized".into(), None)
    }

    /// Watch from a resourceVersion the server no longer has.
    pub fn gone(rv: u64) -> Self {
        Self::new(
            410,
            "Expired",
            format!("too old resource version: {rv}"),
            None,
        )
    }
}

/// The `Status` a successful DELETE returns for most resources.
pub fn delete_success(res: &Resource, name: &str, uid: &str) -> Value {
    let mut details = json!({ "name": name, "kind": res.plural, "uid": uid });
    if !res.group.is_empty() {
        details["group"] = json!(res.group);
    }
    json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Success",
        "details": details,
    })
}
