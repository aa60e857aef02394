//! Authentication (bearer tokens → users) and RBAC authorization, as the real API
//! server does them, for every resource the fake serves (or will serve): nothing
//! here knows a resource by name except the RBAC kinds themselves.
//!
//! Sources, in `kubernetes/kubernetes`:
//! - request attributes (verb, group, resource, subresource, name, namespace, the
//!   `list`/`watch`/`deletecollection` verbs, the name a `metadata.name` field
//!   selector gives a list or watch):
//!   `staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go`;
//! - rule evaluation (`*` wildcards, `*/subresource`, `resourceNames` never
//!   matching a request without a name, non-resource URLs with a trailing `*`):
//!   `plugin/pkg/auth/authorizer/rbac/rbac.go` (`RuleAllows`, `appliesToUser`) and
//!   `pkg/apis/rbac/v1/evaluation_helpers.go`;
//! - the 403 body: `staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go`
//!   (`forbiddenMessage`) inside `apierrors.NewForbidden`
//!   (`staging/src/k8s.io/apimachinery/pkg/api/errors/errors.go`);
//! - the bootstrap roles: `plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go`
//!   (`cluster-admin` for `system:masters`, `system:discovery` and
//!   `system:basic-user` for `system:authenticated`, `system:public-info-viewer`
//!   for everyone);
//! - escalation prevention on writes of Roles, ClusterRoles and bindings:
//!   `pkg/registry/rbac/escalation_check.go` (`EscalationAllowed`,
//!   `RoleEscalationAuthorized`, `BindingAuthorized`),
//!   `pkg/registry/rbac/validation/rule.go` (`ConfirmNoEscalation`),
//!   `pkg/registry/rbac/validation/policy_comparator.go` (`Covers`),
//!   `pkg/registry/rbac/{clusterrole,role,clusterrolebinding,rolebinding}/policybased/storage.go`.
//! - service-account users and groups:
//!   `staging/src/k8s.io/apiserver/pkg/authentication/serviceaccount/util.go`.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::resources::{RESOURCES, Resource};
use crate::server::Query;
use crate::status::ApiError;
use crate::store::State;

/// `system:masters`: the privileged group (`k8s.io/apiserver/pkg/authentication/user`
/// `SystemPrivilegedGroup`); the API server allows its members everything before
/// RBAC is asked, and lets them write any role.
pub const MASTERS: &str = "system:masters";
pub const AUTHENTICATED: &str = "system:authenticated";
pub const UNAUTHENTICATED: &str = "system:unauthenticated";
const RBAC_GROUP: &str = "rbac.authorization.k8s.io";

/// An authenticated (or anonymous) user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub groups: Vec<String>,
}

impl User {
    /// `system:serviceaccount:<ns>:<name>` in `system:serviceaccounts`,
    /// `system:serviceaccounts:<ns>` and `system:authenticated`, as a token of that
    /// ServiceAccount authenticates.
    pub fn service_account(namespace: &str, name: &str) -> Self {
        User {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            groups: vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{namespace}"),
                AUTHENTICATED.into(),
            ],
        }
    }

    /// What a kubeadm cluster's `admin.conf` authenticates as.
    pub fn admin() -> Self {
        User {
            name: "kubernetes-admin".into(),
            groups: vec![MASTERS.into(), AUTHENTICATED.into()],
        }
    }

    /// A request without credentials (`--anonymous-auth=true`, the default).
    pub fn anonymous() -> Self {
        User {
            name: "system:anonymous".into(),
            groups: vec![UNAUTHENTICATED.into()],
        }
    }

    fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == MASTERS)
    }
}

/// What the authorizer decides on: `authorizer.AttributesRecord` as
/// `requestinfo.go` fills it from a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub resource_request: bool,
    pub path: String,
    pub api_group: String,
    pub api_version: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

/// `/{api,apis}` prefixes; `api` has no group segment.
const SPECIAL_VERBS: [&str; 2] = ["proxy", "watch"];
/// Sub-resources of a namespace that do not name a resource inside it.
const NAMESPACE_SUBRESOURCES: [&str; 2] = ["status", "finalize"];

/// The `metadata.name` a field selector requires exactly, if any.
fn exact_name(selector: &str) -> Option<&str> {
    selector.split(',').find_map(|term| {
        let (k, v) = term
            .split_once("==")
            .or_else(|| term.split_once('=').filter(|(k, _)| !k.ends_with('!')))?;
        (k.trim() == "metadata.name").then_some(v.trim())
    })
}

/// `path.IsValidPathSegmentName`: no `/`, `%`, and not `.` or `..`.
fn valid_path_segment(s: &str) -> bool {
    !(s == "." || s == ".." || s.contains('/') || s.contains('%'))
}

/// The request attributes of `method path?query`, as `requestinfo.go`'s
/// `NewRequestInfo` derives them.
pub fn attributes(method: &str, path: &str, query: &Query) -> Attributes {
    let mut a = Attributes {
        verb: method.to_ascii_lowercase(),
        path: path.to_string(),
        ..Attributes::default()
    };
    let parts: Vec<&str> = path
        .trim_matches('/')
        .split('/')
        .filter(|p| !p.is_empty())
        .collect();
    if parts.len() < 3 || !matches!(parts[0], "api" | "apis") {
        return a;
    }
    let mut cur: &[&str] = &parts[1..];
    if parts[0] == "apis" {
        if cur.len() < 3 {
            return a;
        }
        a.api_group = cur[0].to_string();
        cur = &cur[1..];
    }
    a.resource_request = true;
    a.api_version = cur[0].to_string();
    cur = &cur[1..];
    if SPECIAL_VERBS.contains(&cur[0]) {
        if cur.len() < 2 {
            return a;
        }
        a.verb = cur[0].to_string();
        cur = &cur[1..];
    } else {
        a.verb = match method {
            "POST" => "create",
            "GET" | "HEAD" => "get",
            "PUT" => "update",
            "PATCH" => "patch",
            "DELETE" => "delete",
            _ => "",
        }
        .to_string();
    }
    if cur[0] == "namespaces" && cur.len() > 1 {
        a.namespace = cur[1].to_string();
        if cur.len() > 2 && !NAMESPACE_SUBRESOURCES.contains(&cur[2]) {
            cur = &cur[2..];
        }
    }
    if cur.len() >= 3 && a.verb != "proxy" {
        a.subresource = cur[2].to_string();
    }
    if cur.len() >= 2 {
        a.name = cur[1].to_string();
    }
    a.resource = cur[0].to_string();
    if a.name.is_empty() && a.verb == "get" {
        a.verb = match query.get("watch").map(|w| w.to_ascii_lowercase()) {
            Some(w) if w != "false" && w != "0" => "watch",
            _ => "list",
        }
        .to_string();
        if let Some(name) = query.get("fieldSelector").and_then(|f| exact_name(f))
            && valid_path_segment(name)
        {
            a.name = name.to_string();
        }
    }
    if a.name.is_empty() && a.verb == "delete" {
        a.verb = "deletecollection".into();
    }
    a
}

/// One `PolicyRule`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
    pub resource_names: Vec<String>,
    pub non_resource_urls: Vec<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

impl Rule {
    pub fn from_json(v: &Value) -> Self {
        Rule {
            verbs: strings(&v["verbs"]),
            api_groups: strings(&v["apiGroups"]),
            resources: strings(&v["resources"]),
            resource_names: strings(&v["resourceNames"]),
            non_resource_urls: strings(&v["nonResourceURLs"]),
        }
    }

    /// `RuleAllows` (rbac.go) with the matchers of `evaluation_helpers.go`.
    pub fn allows(&self, a: &Attributes) -> bool {
        let verb = self.verbs.iter().any(|v| v == "*" || *v == a.verb);
        if !a.resource_request {
            return verb
                && self.non_resource_urls.iter().any(|u| {
                    u == "*"
                        || *u == a.path
                        || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                });
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        let group = self
            .api_groups
            .iter()
            .any(|g| g == "*" || *g == a.api_group);
        let resource = self.resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || (!a.subresource.is_empty()
                    && r.strip_prefix("*/") == Some(a.subresource.as_str()))
        });
        let name = self.resource_names.is_empty() || self.resource_names.contains(&a.name);
        verb && group && resource && name
    }

    /// `CompactString` (evaluation_helpers.go), for escalation messages: Go's `%q`
    /// of a string slice.
    fn compact(&self) -> String {
        fn q(v: &[String]) -> String {
            let inner: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
            format!("[{}]", inner.join(" "))
        }
        let mut parts = Vec::new();
        for (label, v) in [
            ("APIGroups", &self.api_groups),
            ("Resources", &self.resources),
            ("NonResourceURLs", &self.non_resource_urls),
            ("ResourceNames", &self.resource_names),
            ("Verbs", &self.verbs),
        ] {
            if !v.is_empty() {
                parts.push(format!("{label}:{}", q(v)));
            }
        }
        format!("{{{}}}", parts.join(", "))
    }
}

fn rules_of(role: &Value) -> Vec<Rule> {
    role["rules"]
        .as_array()
        .map(|rs| rs.iter().map(Rule::from_json).collect())
        .unwrap_or_default()
}

fn rbac_resource(plural: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == RBAC_GROUP && r.plural == plural)
        .copied()
}

/// `appliesToUser` (rbac.go): a ServiceAccount subject without a namespace means
/// the binding's own.
fn applies_to(user: &User, subject: &Value, namespace: &str) -> bool {
    let name = subject["name"].as_str().unwrap_or("");
    match subject["kind"].as_str() {
        Some("User") => user.name == name,
        Some("Group") => user.groups.iter().any(|g| g == name),
        Some("ServiceAccount") => {
            let ns = subject["namespace"]
                .as_str()
                .filter(|s| !s.is_empty())
                .unwrap_or(namespace);
            !ns.is_empty() && user.name == format!("system:serviceaccount:{ns}:{name}")
        }
        _ => false,
    }
}

/// The rules a role reference grants, or the error the listers give when the
/// role does not exist (`clusterrole.rbac.authorization.k8s.io "x" not found`).
fn role_rules(s: &State, role_ref: &Value, binding_ns: &str) -> Result<Vec<Rule>, String> {
    let name = role_ref["name"].as_str().unwrap_or("");
    let (plural, singular, ns) = match role_ref["kind"].as_str() {
        Some("ClusterRole") => ("clusterroles", "clusterrole", ""),
        Some("Role") => ("roles", "role", binding_ns),
        other => return Err(format!("unsupported role reference kind: {other:?}")),
    };
    let res = rbac_resource(plural).ok_or("RBAC kinds not served")?;
    s.get(&res, ns, name)
        .map(rules_of)
        .ok_or_else(|| format!("{singular}.{RBAC_GROUP} \"{name}\" not found"))
}

/// Every rule that applies to `user` in `namespace` (cluster bindings always,
/// the namespace's bindings when it is not empty), with resolution errors:
/// `VisitRulesFor` in `pkg/registry/rbac/validation/rule.go`.
fn visit_rules(
    s: &State,
    user: &User,
    namespace: &str,
    mut visit: impl FnMut(&Rule) -> bool,
) -> Vec<String> {
    let mut errors = Vec::new();
    let Some(crb) = rbac_resource("clusterrolebindings") else {
        return errors;
    };
    for b in s.list(&crb, None) {
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|sub| applies_to(user, sub, "")) {
            continue;
        }
        match role_rules(s, &b["roleRef"], "") {
            Ok(rules) => {
                for r in &rules {
                    if visit(r) {
                        return errors;
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    if namespace.is_empty() {
        return errors;
    }
    let Some(rb) = rbac_resource("rolebindings") else {
        return errors;
    };
    for b in s.list(&rb, Some(namespace)) {
        let subjects = b["subjects"].as_array().cloned().unwrap_or_default();
        if !subjects.iter().any(|sub| applies_to(user, sub, namespace)) {
            continue;
        }
        match role_rules(s, &b["roleRef"], namespace) {
            Ok(rules) => {
                for r in &rules {
                    if visit(r) {
                        return errors;
                    }
                }
            }
            Err(e) => errors.push(e),
        }
    }
    errors
}

/// The authorizer chain of a kubeadm cluster (`--authorization-mode=Node,RBAC`,
/// with the privileged-group authorizer first): `Ok(())` or the reason RBAC
/// gives for having no opinion (empty unless a binding's role is missing).
pub fn authorize(s: &State, user: &User, a: &Attributes) -> Result<(), String> {
    if user.is_master() {
        return Ok(());
    }
    let mut allowed = false;
    let errors = visit_rules(s, user, &a.namespace, |r| {
        allowed = r.allows(a);
        allowed
    });
    if allowed {
        return Ok(());
    }
    Err(match errors.as_slice() {
        [] => String::new(),
        [one] => format!("RBAC: {one}"),
        many => format!("RBAC: [{}]", many.join(", ")),
    })
}

/// `forbiddenMessage` (responsewriters/errors.go).
fn forbidden_message(user: &User, a: &Attributes) -> String {
    if !a.resource_request {
        return format!("User {:?} cannot {} path {:?}", user.name, a.verb, a.path);
    }
    let mut resource = a.resource.clone();
    if !a.subresource.is_empty() {
        resource = format!("{resource}/{}", a.subresource);
    }
    if a.namespace.is_empty() {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} at the cluster scope",
            user.name, a.verb, resource, a.api_group
        )
    } else {
        format!(
            "User {:?} cannot {} resource {:?} in API group {:?} in the namespace {:?}",
            user.name, a.verb, resource, a.api_group, a.namespace
        )
    }
}

/// The 403 of a request the authorizer did not allow (`responsewriters.Forbidden`).
pub fn forbidden(user: &User, a: &Attributes, reason: &str) -> ApiError {
    let mut msg = forbidden_message(user, a);
    if !reason.is_empty() {
        msg = format!("{msg}: {reason}");
    }
    ApiError::forbidden(&a.api_group, &a.resource, &a.name, &msg)
}

/// Authorizes the `create` that a server-side apply or a PUT implies when the
/// object does not exist yet (`withAuthorization` in
/// `endpoints/handlers/{patch,update}.go`): the attributes carry the name, so a
/// `create` restricted by `resourceNames` allows it. Its 403 carries only the
/// authorizer's reason, not `forbiddenMessage`.
pub fn authorize_create_on_write(s: &State, user: &User, a: &Attributes) -> Result<(), ApiError> {
    let create = Attributes {
        verb: "create".into(),
        ..a.clone()
    };
    authorize(s, user, &create)
        .map_err(|reason| ApiError::forbidden(&a.api_group, &a.resource, &a.name, &reason))
}

/// `BreakdownRule` (validation/rule.go): one rule per group × resource × verb ×
/// name, and per URL × verb.
fn breakdown(r: &Rule) -> Vec<Rule> {
    let mut out = Vec::new();
    let one = |s: &String| vec![s.clone()];
    for g in &r.api_groups {
        for res in &r.resources {
            for v in &r.verbs {
                if r.resource_names.is_empty() {
                    out.push(Rule {
                        verbs: one(v),
                        api_groups: one(g),
                        resources: one(res),
                        ..Rule::default()
                    });
                } else {
                    for n in &r.resource_names {
                        out.push(Rule {
                            verbs: one(v),
                            api_groups: one(g),
                            resources: one(res),
                            resource_names: one(n),
                            ..Rule::default()
                        });
                    }
                }
            }
        }
    }
    for u in &r.non_resource_urls {
        for v in &r.verbs {
            out.push(Rule {
                verbs: one(v),
                non_resource_urls: one(u),
                ..Rule::default()
            });
        }
    }
    out
}

fn has(set: &[String], s: &str) -> bool {
    set.iter().any(|x| x == s)
}

fn has_all(set: &[String], want: &[String]) -> bool {
    want.iter().all(|w| has(set, w))
}

/// `ruleCovers` (policy_comparator.go).
fn rule_covers(owner: &Rule, sub: &Rule) -> bool {
    let verbs = has(&owner.verbs, "*") || has_all(&owner.verbs, &sub.verbs);
    let groups = has(&owner.api_groups, "*") || has_all(&owner.api_groups, &sub.api_groups);
    let resources = has(&owner.resources, "*")
        || has_all(&owner.resources, &sub.resources)
        || sub.resources.iter().all(|p| {
            has(&owner.resources, p)
                || p.split_once('/')
                    .is_some_and(|(_, subres)| has(&owner.resources, &format!("*/{subres}")))
        });
    let urls = sub.non_resource_urls.iter().all(|want| {
        owner
            .non_resource_urls
            .iter()
            .any(|o| o == want || o.strip_suffix('*').is_some_and(|p| want.starts_with(p)))
    });
    let names = if sub.resource_names.is_empty() {
        owner.resource_names.is_empty()
    } else {
        owner.resource_names.is_empty() || has_all(&owner.resource_names, &sub.resource_names)
    };
    verbs && groups && resources && names && urls
}

/// `CompactRules` (validation/rule.go): simple rules of one group, resource and
/// at most one name are merged by verb.
fn compact(rules: Vec<Rule>) -> Vec<Rule> {
    let mut simple: BTreeMap<(String, String, Option<String>), Rule> = BTreeMap::new();
    let mut out = Vec::new();
    for r in rules {
        if r.api_groups.len() == 1
            && r.resources.len() == 1
            && r.resource_names.len() <= 1
            && r.non_resource_urls.is_empty()
        {
            let key = (
                r.api_groups[0].clone(),
                r.resources[0].clone(),
                r.resource_names.first().cloned(),
            );
            match simple.get_mut(&key) {
                Some(e) => e.verbs.extend(r.verbs),
                None => {
                    simple.insert(key, r);
                }
            }
        } else {
            out.push(r);
        }
    }
    out.extend(simple.into_values());
    out
}

/// `ConfirmNoEscalation` (validation/rule.go): the user must already hold every
/// permission in `rules`, in `namespace` (empty for cluster roles).
fn confirm_no_escalation(
    s: &State,
    user: &User,
    namespace: &str,
    rules: &[Rule],
) -> Result<(), String> {
    let mut owner = Vec::new();
    let errors = visit_rules(s, user, namespace, |r| {
        owner.push(r.clone());
        false
    });
    let missing: Vec<Rule> = rules
        .iter()
        .flat_map(breakdown)
        .filter(|sub| !owner.iter().any(|o| rule_covers(o, sub)))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let descriptions: BTreeSet<String> = compact(missing).iter().map(Rule::compact).collect();
    let groups: Vec<String> = user.groups.iter().map(|g| format!("{g:?}")).collect();
    let mut msg = format!(
        "user {:?} (groups=[{}]) is attempting to grant RBAC permissions not currently held:\n{}",
        user.name,
        groups.join(" "),
        descriptions.into_iter().collect::<Vec<_>>().join("\n")
    );
    if !errors.is_empty() {
        msg.push_str(&format!("; resolution errors: [{}]", errors.join(", ")));
    }
    Err(msg)
}

/// Whether `new` differs from `old` only in what garbage collection writes
/// (`IsOnlyMutatingGCFields`, escalation_check.go) or in what the server
/// maintains: such writes need no escalation check (a no-op apply included).
fn only_gc_fields(old: &Value, new: &Value) -> bool {
    let strip = |v: &Value| {
        let mut v = v.clone();
        if let Some(m) = v["metadata"].as_object_mut() {
            for f in [
                "ownerReferences",
                "finalizers",
                "managedFields",
                "resourceVersion",
                "generation",
                "uid",
                "creationTimestamp",
            ] {
                m.remove(f);
            }
        }
        v
    };
    strip(old) == strip(new)
}

fn authorized(s: &State, user: &User, a: Attributes) -> bool {
    authorize(s, user, &a).is_ok()
}

/// Escalation prevention for a write of a Role, ClusterRole, RoleBinding or
/// ClusterRoleBinding by `user` (the policybased storages): a role only with
/// permissions the writer holds (or `escalate` on it), a binding only to a role
/// whose permissions the writer holds (or `bind` on it). Other resources pass.
pub fn admit_write(
    s: &State,
    user: &User,
    res: &Resource,
    old: Option<&Value>,
    new: &Value,
) -> Result<(), ApiError> {
    if res.group != RBAC_GROUP || user.is_master() {
        return Ok(());
    }
    if old.is_some_and(|o| only_gc_fields(o, new)) {
        return Ok(());
    }
    let name = new["metadata"]["name"].as_str().unwrap_or("").to_string();
    let ns = if res.namespaced {
        new["metadata"]["namespace"]
            .as_str()
            .unwrap_or("")
            .to_string()
    } else {
        String::new()
    };
    let forbidden = |msg: String| ApiError::forbidden(res.group, res.plural, &name, &msg);
    match res.plural {
        "roles" | "clusterroles" => {
            let escalate = Attributes {
                verb: "escalate".into(),
                resource_request: true,
                api_group: res.group.into(),
                api_version: "*".into(),
                resource: res.plural.into(),
                namespace: ns.clone(),
                name: name.clone(),
                ..Attributes::default()
            };
            if authorized(s, user, escalate) {
                return Ok(());
            }
            confirm_no_escalation(s, user, &ns, &rules_of(new)).map_err(forbidden)?;
            if new.get("aggregationRule").is_some_and(|a| !a.is_null()) {
                let full = [
                    Rule {
                        verbs: vec!["*".into()],
                        api_groups: vec!["*".into()],
                        resources: vec!["*".into()],
                        ..Rule::default()
                    },
                    Rule {
                        verbs: vec!["*".into()],
                        non_resource_urls: vec!["*".into()],
                        ..Rule::default()
                    },
                ];
                confirm_no_escalation(s, user, &ns, &full).map_err(|_| {
                    forbidden(
                        "must have cluster-admin privileges to use the aggregationRule".into(),
                    )
                })?;
            }
            Ok(())
        }
        "rolebindings" | "clusterrolebindings" => {
            let role_ref = &new["roleRef"];
            let role_name = role_ref["name"].as_str().unwrap_or("").to_string();
            let resource = match role_ref["kind"].as_str() {
                Some("ClusterRole") => "clusterroles",
                Some("Role") => "roles",
                _ => return Err(forbidden(String::new())),
            };
            let bind = Attributes {
                verb: "bind".into(),
                resource_request: true,
                api_group: role_ref["apiGroup"].as_str().unwrap_or("").into(),
                resource: resource.into(),
                namespace: ns.clone(),
                name: role_name.clone(),
                ..Attributes::default()
            };
            if authorized(s, user, bind) {
                return Ok(());
            }
            // A missing role is a 404 from the role getter of the registry.
            let rules = role_rules(s, role_ref, &ns).map_err(|_| {
                let r = rbac_resource(resource).unwrap_or(*res);
                ApiError::not_found(&r, &role_name)
            })?;
            confirm_no_escalation(s, user, &ns, &rules).map_err(forbidden)
        }
        _ => Ok(()),
    }
}

/// The roles and bindings a new cluster has (bootstrappolicy/policy.go), labelled
/// `kubernetes.io/bootstrapping: rbac-defaults` as there.
pub fn bootstrap_objects() -> Vec<Value> {
    let labels = json!({ "kubernetes.io/bootstrapping": "rbac-defaults" });
    let role = |name: &str, rules: Value| {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": { "name": name, "labels": labels, "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" } },
            "rules": rules,
        })
    };
    let binding = |name: &str, groups: &[&str]| {
        let subjects: Vec<Value> = groups
            .iter()
            .map(|g| json!({ "apiGroup": RBAC_GROUP, "kind": "Group", "name": g }))
            .collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": { "name": name, "labels": labels, "annotations": { "rbac.authorization.kubernetes.io/autoupdate": "true" } },
            "roleRef": { "apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": name },
            "subjects": subjects,
        })
    };
    vec![
        role(
            "cluster-admin",
            json!([
                { "apiGroups": ["*"], "resources": ["*"], "verbs": ["*"] },
                { "nonResourceURLs": ["*"], "verbs": ["*"] },
            ]),
        ),
        role(
            "system:discovery",
            json!([{ "nonResourceURLs": [
                "/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
                "/openapi", "/openapi/*", "/readyz", "/version", "/version/"
            ], "verbs": ["get"] }]),
        ),
        role(
            "system:public-info-viewer",
            json!([{ "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"], "verbs": ["get"] }]),
        ),
        role(
            "system:basic-user",
            json!([
                { "apiGroups": ["authorization.k8s.io"], "resources": ["selfsubjectaccessreviews", "selfsubjectrulesreviews"], "verbs": ["create"] },
                { "apiGroups": ["authentication.k8s.io"], "resources": ["selfsubjectreviews"], "verbs": ["create"] },
            ]),
        ),
        binding("cluster-admin", &[MASTERS]),
        binding("system:discovery", &[AUTHENTICATED]),
        binding("system:basic-user", &[AUTHENTICATED]),
        binding(
            "system:public-info-viewer",
            &[AUTHENTICATED, UNAUTHENTICATED],
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::parse_query;

    fn attrs(method: &str, url: &str) -> Attributes {
        let (path, q) = url.split_once('?').unwrap_or((url, ""));
        attributes(method, path, &parse_query(q))
    }

    #[test]
    fn request_attributes_follow_requestinfo() {
        let a = attrs("GET", "/apis/apps/v1/namespaces/mop/deployments/gw");
        assert_eq!(
            (
                a.verb.as_str(),
                a.api_group.as_str(),
                a.resource.as_str(),
                a.namespace.as_str(),
                a.name.as_str()
            ),
            ("get", "apps", "deployments", "mop", "gw")
        );
        assert_eq!(
            attrs("GET", "/apis/apps/v1/deployments?labelSelector=a%3Db").verb,
            "list"
        );
        assert_eq!(
            attrs("GET", "/apis/apps/v1/deployments?watch=true").verb,
            "watch"
        );
        assert_eq!(
            attrs("GET", "/apis/apps/v1/deployments?watch=0").verb,
            "list"
        );
        assert_eq!(
            attrs("GET", "/api/v1/watch/namespaces/a/pods/p").verb,
            "watch"
        );
        let w = attrs(
            "GET",
            "/api/v1/namespaces/mop/configmaps?watch=1&fieldSelector=metadata.name%3Dx",
        );
        assert_eq!((w.verb.as_str(), w.name.as_str()), ("watch", "x"));
        assert_eq!(
            attrs("DELETE", "/api/v1/namespaces/mop/configmaps").verb,
            "deletecollection"
        );
        // The namespace object is addressed inside itself.
        let ns = attrs("PATCH", "/api/v1/namespaces/team-a");
        assert_eq!(
            (
                ns.resource.as_str(),
                ns.name.as_str(),
                ns.namespace.as_str()
            ),
            ("namespaces", "team-a", "team-a")
        );
        let st = attrs("PUT", "/apis/apps/v1/namespaces/mop/deployments/gw/status");
        assert_eq!(st.subresource, "status");
        for p in [
            "/api",
            "/apis",
            "/api/v1",
            "/apis/apps/v1",
            "/version",
            "/openapi/v2",
        ] {
            let a = attrs("GET", p);
            assert!(!a.resource_request, "{p}");
            assert_eq!(a.verb, "get");
        }
    }

    #[test]
    fn rules_match_like_rbac() {
        let r = Rule::from_json(
            &json!({"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get", "list", "watch"]}),
        );
        assert!(r.allows(&attrs("GET", "/api/v1/namespaces/n/configmaps/a")));
        assert!(!r.allows(&attrs("GET", "/api/v1/namespaces/n/configmaps/b")));
        // resourceNames never match a request without a name...
        assert!(!r.allows(&attrs("GET", "/api/v1/namespaces/n/configmaps")));
        // ... unless a metadata.name field selector names it.
        assert!(r.allows(&attrs(
            "GET",
            "/api/v1/namespaces/n/configmaps?fieldSelector=metadata.name%3Da"
        )));
        assert!(!r.allows(&attrs("POST", "/api/v1/namespaces/n/configmaps")));
        let sub = Rule::from_json(
            &json!({"apiGroups": ["apps"], "resources": ["*/status"], "verbs": ["*"]}),
        );
        assert!(sub.allows(&attrs(
            "PUT",
            "/apis/apps/v1/namespaces/n/deployments/d/status"
        )));
        assert!(!sub.allows(&attrs("PUT", "/apis/apps/v1/namespaces/n/deployments/d")));
        let urls = Rule::from_json(&json!({"nonResourceURLs": ["/apis/*"], "verbs": ["get"]}));
        assert!(urls.allows(&attrs("GET", "/apis/apps/v1")));
        assert!(!urls.allows(&attrs("GET", "/api")));
    }

    #[test]
    fn covers_breaks_rules_down() {
        let owner = [Rule::from_json(
            &json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]}),
        )];
        let ok =
            Rule::from_json(&json!({"apiGroups": [""], "resources": ["pods"], "verbs": ["watch"]}));
        let too_much = Rule::from_json(
            &json!({"apiGroups": [""], "resources": ["pods", "secrets"], "verbs": ["get", "list"]}),
        );
        assert!(
            breakdown(&ok)
                .iter()
                .all(|s| owner.iter().any(|o| rule_covers(o, s)))
        );
        let missing: Vec<Rule> = breakdown(&too_much)
            .into_iter()
            .filter(|s| !owner.iter().any(|o| rule_covers(o, s)))
            .collect();
        let text: Vec<String> = compact(missing).iter().map(Rule::compact).collect();
        assert_eq!(
            text,
            [
                r#"{APIGroups:[""], Resources:["pods"], Verbs:["get"]}"#,
                r#"{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list"]}"#
            ]
        );
    }
}
