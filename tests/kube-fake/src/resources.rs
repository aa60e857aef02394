//! The resources the fake serves, and how a request path names one of them.
//!
//! Follows "Kubernetes API Concepts", section "Resource URIs":
//! <https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-uris>
//! (`/api/v1/...` for the core group, `/apis/GROUP/VERSION/...` for the others,
//! `namespaces/NS/` before namespaced resources, the plural resource name, then the
//! object name). Name rules per resource follow "Object Names and IDs":
//! <https://kubernetes.io/docs/concepts/overview/working-with-objects/names/>.

/// Which name syntax the API server enforces for a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// RFC 1123 subdomain: most resources (ConfigMap, Deployment, Lease, …).
    Subdomain,
    /// RFC 1123 label: Namespaces.
    Label,
    /// RFC 1035 label: Services (the name becomes a DNS label that must start with a letter).
    Rfc1035Label,
    /// Path segment: RBAC objects may hold `:` and upper case, never `/`, `%`, `.` or `..`.
    PathSegment,
}

/// One served resource type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resource {
    /// API group; empty for the core group.
    pub group: &'static str,
    pub version: &'static str,
    /// Plural name used in paths.
    pub plural: &'static str,
    pub kind: &'static str,
    pub namespaced: bool,
    pub name_rule: NameRule,
}

impl Resource {
    /// `apiVersion` as written in object bodies: `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The name used in error messages: `configmaps`, `deployments.apps`.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_string()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    /// Deployments and DaemonSets: they carry `metadata.generation`, a `status`
    /// subresource the main endpoint cannot write, and are rolled out by the controller.
    pub fn is_workload(&self) -> bool {
        self.group == "apps"
    }

    pub fn is(&self, group: &str, plural: &str) -> bool {
        self.group == group && self.plural == plural
    }
}

const fn r(
    group: &'static str,
    version: &'static str,
    plural: &'static str,
    kind: &'static str,
    namespaced: bool,
    name_rule: NameRule,
) -> Resource {
    Resource {
        group,
        version,
        plural,
        kind,
        namespaced,
        name_rule,
    }
}

/// Every resource the fake knows. Anything else answers 404, as a real server does
/// for a resource it does not serve.
pub const RESOURCES: &[Resource] = &[
    r("", "v1", "namespaces", "Namespace", false, NameRule::Label),
    r(
        "",
        "v1",
        "configmaps",
        "ConfigMap",
        true,
        NameRule::Subdomain,
    ),
    r("", "v1", "secrets", "Secret", true, NameRule::Subdomain),
    r(
        "",
        "v1",
        "services",
        "Service",
        true,
        NameRule::Rfc1035Label,
    ),
    r(
        "",
        "v1",
        "serviceaccounts",
        "ServiceAccount",
        true,
        NameRule::Subdomain,
    ),
    r("", "v1", "events", "Event", true, NameRule::Subdomain),
    r("", "v1", "pods", "Pod", true, NameRule::Subdomain),
    r(
        "apps",
        "v1",
        "deployments",
        "Deployment",
        true,
        NameRule::Subdomain,
    ),
    r(
        "apps",
        "v1",
        "daemonsets",
        "DaemonSet",
        true,
        NameRule::Subdomain,
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterroles",
        "ClusterRole",
        false,
        NameRule::PathSegment,
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "clusterrolebindings",
        "ClusterRoleBinding",
        false,
        NameRule::PathSegment,
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "Role",
        true,
        NameRule::PathSegment,
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "RoleBinding",
        true,
        NameRule::PathSegment,
    ),
    r(
        "coordination.k8s.io",
        "v1",
        "leases",
        "Lease",
        true,
        NameRule::Subdomain,
    ),
    r(
        "events.k8s.io",
        "v1",
        "events",
        "Event",
        true,
        NameRule::Subdomain,
    ),
    r(
        "discovery.k8s.io",
        "v1",
        "endpointslices",
        "EndpointSlice",
        true,
        NameRule::Subdomain,
    ),
    r(
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "NetworkPolicy",
        true,
        NameRule::Subdomain,
    ),
];

/// Looks a resource up by group, version and plural.
pub fn find(group: &str, version: &str, plural: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .copied()
}

/// Looks a resource up by `apiVersion` and `kind` (for tests that seed objects).
pub fn by_kind(api_version: &str, kind: &str) -> Option<Resource> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
        .copied()
}

/// What a request path addresses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub resource: Resource,
    /// Namespace from the path; `None` for cluster-scoped resources and for lists
    /// and watches across all namespaces.
    pub namespace: Option<String>,
    /// Object name; `None` for the collection.
    pub name: Option<String>,
}

/// Parses `/api/v1/...` or `/apis/GROUP/VERSION/...`; `None` means 404.
pub fn parse_path(path: &str) -> Option<Target> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let (namespace, plural, name) = match rest {
        // `namespaces/NAME` is the Namespace object itself.
        ["namespaces"] => (None, "namespaces", None),
        ["namespaces", ns] if group.is_empty() => (None, "namespaces", Some(*ns)),
        ["namespaces", ns, plural] => (Some(*ns), *plural, None),
        ["namespaces", ns, plural, name] => (Some(*ns), *plural, Some(*name)),
        [plural] => (None, *plural, None),
        [plural, name] => (None, *plural, Some(*name)),
        _ => return None,
    };
    let resource = find(group, version, plural)?;
    if namespace.is_some() && !resource.namespaced {
        return None;
    }
    // A namespaced object is only addressed inside its namespace; lists may span all.
    if resource.namespaced && namespace.is_none() && name.is_some() {
        return None;
    }
    Some(Target {
        resource,
        namespace: namespace.map(str::to_string),
        name: name.map(str::to_string),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        let t = parse_path("/api/v1/namespaces/mop/configmaps/x").unwrap();
        assert_eq!(t.resource.kind, "ConfigMap");
        assert_eq!(t.namespace.as_deref(), Some("mop"));
        assert_eq!(t.name.as_deref(), Some("x"));
        let t = parse_path("/api/v1/namespaces/mop").unwrap();
        assert_eq!(t.resource.kind, "Namespace");
        assert_eq!(t.name.as_deref(), Some("mop"));
        let t = parse_path("/apis/apps/v1/deployments").unwrap();
        assert!(t.namespace.is_none() && t.name.is_none());
        assert!(parse_path("/apis/apps/v1/deployments/x").is_none());
        assert!(parse_path("/apis/apps/v1beta1/namespaces/a/deployments").is_none());
        assert!(parse_path("/api/v1/namespaces/a/widgets").is_none());
        assert!(
            parse_path("/apis/rbac.authorization.k8s.io/v1/namespaces/a/clusterroles").is_none()
        );
    }
}
