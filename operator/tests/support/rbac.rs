//! The chart's RBAC as the API server applies it, for the scripted API servers of our tests: the Roles and
//! ClusterRoles that `deploy/` (the chart rendered by `scripts/chart.sh deploy`) grants a ServiceAccount, and
//! whether a request is allowed. A forbidden request is answered with the Status body the API server sends.
//!
//! Where the rules come from (kubernetes/kubernetes):
//! - request → attributes: staging/src/k8s.io/apiserver/pkg/endpoints/request/requestinfo.go (`NewRequestInfo`):
//!   `/api/v1` is the core group "", `/apis/GROUP/VERSION` a named group; `namespaces/NS/` sets the namespace;
//!   parts after it are resource/name/subresource; GET without a name is `list`, or `watch` with `?watch=` not
//!   false/0; DELETE without a name is `deletecollection`; POST create, PUT update, PATCH patch.
//! - server-side apply of an object that does not exist yet is also authorized as `create` of that name:
//!   staging/src/k8s.io/apiserver/pkg/endpoints/handlers/patch.go (`createAuthorizerAttributes`).
//! - rule matching: pkg/apis/rbac/v1/evaluation_helpers.go (`VerbMatches`, `APIGroupMatches`,
//!   `ResourceMatches` on "resource/subresource" with `*` and `*/subresource`, `ResourceNameMatches`: a rule with
//!   resourceNames matches only requests that carry one of those names) and plugin/pkg/auth/authorizer/rbac:
//!   ClusterRoleBindings grant everywhere, RoleBindings only in their own namespace.
//! - the 403 body: staging/src/k8s.io/apiserver/pkg/endpoints/handlers/responsewriters/errors.go
//!   (`forbiddenMessage`) wrapped by apimachinery's `errors.NewForbidden` (`RESOURCE.GROUP "NAME" is forbidden:`,
//!   details name/group/kind = resource).
#![allow(dead_code)]

use std::collections::HashSet;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{json, Value};

/// The namespace the chart is rendered into (scripts/chart.sh).
pub const CHART_NAMESPACE: &str = "wasmkube-system";
/// The operator's ServiceAccount in `deploy/`.
pub const OPERATOR: &str = "wasmkube-operator";
/// The node installer's ServiceAccount.
pub const INSTALLER: &str = "wasmkube-node-installer";
/// The pre-delete hook's ServiceAccount (rendered into deploy/hooks/).
pub const UNINSTALL_HOOK: &str = "wasmkube-node-installer-uninstall";

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PolicyRule {
    #[serde(default)]
    api_groups: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    resource_names: Vec<String>,
    #[serde(default)]
    verbs: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Meta {
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RoleRef {
    kind: String,
    name: String,
}

#[derive(Debug, Deserialize)]
struct Subject {
    kind: String,
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Object {
    kind: String,
    metadata: Meta,
    #[serde(default)]
    rules: Vec<PolicyRule>,
    #[serde(default)]
    role_ref: Option<RoleRef>,
    #[serde(default)]
    subjects: Vec<Subject>,
}

/// What a request asks the authorizer, after `NewRequestInfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributes {
    pub verb: String,
    pub api_group: String,
    pub resource: String,
    pub subresource: String,
    pub namespace: String,
    pub name: String,
}

impl Attributes {
    /// `resource` or `resource/subresource`, as RBAC rules name it.
    pub fn combined_resource(&self) -> String {
        if self.subresource.is_empty() {
            self.resource.clone()
        } else {
            format!("{}/{}", self.resource, self.subresource)
        }
    }

    /// The same request with another verb (server-side apply of a new object is also a `create`).
    pub fn with_verb(&self, verb: &str) -> Self {
        Self { verb: verb.to_string(), ..self.clone() }
    }
}

impl fmt::Display for Attributes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let group = if self.api_group.is_empty() { "core" } else { &self.api_group };
        write!(f, "{} {} ({group})", self.verb, self.combined_resource())?;
        if !self.name.is_empty() {
            write!(f, " {:?}", self.name)?;
        }
        if self.namespace.is_empty() {
            write!(f, " at the cluster scope")
        } else {
            write!(f, " in namespace {:?}", self.namespace)
        }
    }
}

/// Resource attributes of an API request (`None` for a non-resource path such as `/version` or discovery).
pub fn request_attributes(method: &str, path: &str, query: &str) -> Option<Attributes> {
    let mut parts: Vec<&str> = path.trim_matches('/').split('/').filter(|p| !p.is_empty()).collect();
    let api_group = match parts.first() {
        Some(&"api") if parts.len() >= 3 => {
            parts.drain(..2);
            String::new()
        }
        Some(&"apis") if parts.len() >= 4 => {
            let group = parts[1].to_string();
            parts.drain(..3);
            group
        }
        _ => return None,
    };
    let mut verb = match method {
        "POST" => "create",
        "GET" | "HEAD" => "get",
        "PUT" => "update",
        "PATCH" => "patch",
        "DELETE" => "delete",
        other => panic!("no authorizer verb for HTTP method {other}"),
    }
    .to_string();
    // The deprecated /watch/ path prefix.
    if parts.first() == Some(&"watch") {
        verb = "watch".into();
        parts.remove(0);
    }
    let mut namespace = String::new();
    if parts.first() == Some(&"namespaces") && parts.len() > 1 {
        namespace = parts[1].to_string();
        if parts.len() > 2 && !["status", "finalize"].contains(&parts[2]) {
            parts.drain(..2);
        }
    }
    let resource = parts.first().copied().unwrap_or_default().to_string();
    let name = parts.get(1).copied().unwrap_or_default().to_string();
    let subresource = parts.get(2).copied().unwrap_or_default().to_string();
    if name.is_empty() && verb == "get" {
        let watch = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "watch").map(|(_, v)| v);
        verb = match watch.as_deref().map(str::to_lowercase).as_deref() {
            None | Some("false") | Some("0") => "list",
            Some(_) => "watch",
        }
        .into();
    }
    if name.is_empty() && verb == "delete" {
        verb = "deletecollection".into();
    }
    Some(Attributes { verb, api_group, resource, subresource, namespace, name })
}

/// Whether a request is a server-side apply (the content type says so).
pub fn is_apply(content_type: Option<&str>) -> bool {
    content_type.is_some_and(|t| t.starts_with("application/apply-patch"))
}

fn rule_allows(rule: &PolicyRule, a: &Attributes) -> bool {
    let any = |list: &[String], want: &str| list.iter().any(|x| x == "*" || x == want);
    let combined = a.combined_resource();
    let resource = rule.resources.iter().any(|r| {
        r == "*"
            || *r == combined
            || (!a.subresource.is_empty() && r.strip_prefix("*/").is_some_and(|sub| sub == a.subresource))
    });
    any(&rule.verbs, &a.verb)
        && any(&rule.api_groups, &a.api_group)
        && resource
        && (rule.resource_names.is_empty() || rule.resource_names.contains(&a.name))
}

/// Roles every cluster has that the chart binds (plugin/pkg/auth/authorizer/rbac/bootstrappolicy/policy.go:
/// `system:auth-delegator`; namespace_policy.go: `extension-apiserver-authentication-reader` in kube-system).
fn bootstrap_role(kind: &str, name: &str, namespace: Option<&str>) -> Option<Vec<PolicyRule>> {
    let rule = |group: &str, resource: &str, names: &[&str], verbs: &[&str]| PolicyRule {
        api_groups: vec![group.to_string()],
        resources: vec![resource.to_string()],
        resource_names: names.iter().map(|n| n.to_string()).collect(),
        verbs: verbs.iter().map(|v| v.to_string()).collect(),
    };
    match (kind, name, namespace) {
        ("ClusterRole", "system:auth-delegator", None) => Some(vec![
            rule("authentication.k8s.io", "tokenreviews", &[], &["create"]),
            rule("authorization.k8s.io", "subjectaccessreviews", &[], &["create"]),
        ]),
        ("Role", "extension-apiserver-authentication-reader", Some("kube-system")) => {
            Some(vec![rule("", "configmaps", &["extension-apiserver-authentication"], &["get", "list", "watch"])])
        }
        _ => None,
    }
}

/// The permissions one ServiceAccount gets from the rendered chart.
#[derive(Debug, Clone)]
pub struct Permissions {
    user: String,
    /// Rules and the namespace they are limited to (`None`: bound by a ClusterRoleBinding).
    rules: Vec<(Option<String>, PolicyRule)>,
}

/// Why a request is refused, as the API server says it.
#[derive(Debug, Clone)]
pub struct Forbidden {
    pub user: String,
    pub attributes: Box<Attributes>,
}

impl Forbidden {
    /// The Status message of the API server's 403.
    pub fn message(&self) -> String {
        let a = &self.attributes;
        let qualified =
            if a.api_group.is_empty() { a.resource.clone() } else { format!("{}.{}", a.resource, a.api_group) };
        let object = if a.name.is_empty() { qualified } else { format!("{qualified} {:?}", a.name) };
        let scope = if a.namespace.is_empty() {
            "at the cluster scope".to_string()
        } else {
            format!("in the namespace {:?}", a.namespace)
        };
        format!(
            "{object} is forbidden: User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            self.user,
            a.verb,
            a.combined_resource(),
            a.api_group
        )
    }

    /// The body of the API server's 403.
    pub fn status(&self) -> Value {
        let a = &self.attributes;
        json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": self.message(), "reason": "Forbidden",
            "details": {"name": a.name, "group": a.api_group, "kind": a.resource},
            "code": 403,
        })
    }
}

impl fmt::Display for Forbidden {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RBAC forbids {}: {}", self.attributes, self.message())
    }
}

impl Permissions {
    /// The ServiceAccount `namespace/name` with the roles bound to it in `objects`.
    fn of(objects: &[Object], namespace: &str, name: &str) -> Self {
        let bound = |o: &Object| {
            o.subjects.iter().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == name
                    && s.namespace.as_deref().or(o.metadata.namespace.as_deref()) == Some(namespace)
            })
        };
        let role = |kind: &str, name: &str, ns: Option<&str>| {
            objects
                .iter()
                .find(|o| o.kind == kind && o.metadata.name == name && o.metadata.namespace.as_deref() == ns)
                .map(|o| o.rules.clone())
                .or_else(|| bootstrap_role(kind, name, ns))
                .unwrap_or_else(|| panic!("the chart binds {kind} {name}, which it does not render"))
        };
        let mut rules = Vec::new();
        for binding in objects.iter().filter(|o| bound(o)) {
            let role_ref = binding.role_ref.as_ref().expect("a binding has a roleRef");
            match (binding.kind.as_str(), role_ref.kind.as_str()) {
                ("ClusterRoleBinding", "ClusterRole") => {
                    rules.extend(role("ClusterRole", &role_ref.name, None).into_iter().map(|r| (None, r)))
                }
                ("RoleBinding", kind) => {
                    let ns = binding.metadata.namespace.clone().expect("a RoleBinding is namespaced");
                    let role_ns = (kind == "Role").then_some(ns.as_str());
                    rules.extend(role(kind, &role_ref.name, role_ns).into_iter().map(|r| (Some(ns.clone()), r)));
                }
                other => panic!("unexpected binding {other:?}"),
            }
        }
        Self { user: format!("system:serviceaccount:{namespace}:{name}"), rules }
    }

    /// The user name the API server sees.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// Whether RBAC allows `a`.
    pub fn allows(&self, a: &Attributes) -> bool {
        self.rules.iter().any(|(ns, rule)| ns.as_deref().is_none_or(|ns| ns == a.namespace) && rule_allows(rule, a))
    }

    /// Decides a request: `creates` says that a server-side apply makes a new object.
    pub fn check(
        &self,
        method: &str,
        path: &str,
        query: &str,
        content_type: Option<&str>,
        creates: bool,
    ) -> Result<(), Forbidden> {
        // Non-resource paths (discovery, /version) are open to every authenticated user (system:discovery).
        let Some(attributes) = request_attributes(method, path, query) else {
            return Ok(());
        };
        let mut wanted = vec![attributes.clone()];
        if creates && attributes.verb == "patch" && is_apply(content_type) {
            wanted.push(attributes.with_verb("create"));
        }
        match wanted.into_iter().find(|a| !self.allows(a)) {
            Some(attributes) => Err(Forbidden { user: self.user.clone(), attributes: Box::new(attributes) }),
            None => Ok(()),
        }
    }
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the crate sits in the workspace").to_path_buf()
}

/// Every object in the rendered manifests: `deploy/*.yaml` and the hooks in `deploy/hooks/`.
fn rendered_objects() -> Vec<Object> {
    let mut files = Vec::new();
    for dir in ["deploy", "deploy/hooks"] {
        let Ok(entries) = std::fs::read_dir(repo_root().join(dir)) else { continue };
        files.extend(entries.map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|x| x == "yaml")));
    }
    files.sort();
    let mut objects = Vec::new();
    let kinds: HashSet<&str> = ["ClusterRole", "Role", "ClusterRoleBinding", "RoleBinding"].into();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let value = Value::deserialize(doc).unwrap();
            if value.get("kind").and_then(Value::as_str).is_some_and(|k| kinds.contains(k)) {
                objects.push(serde_json::from_value(value).unwrap_or_else(|e| panic!("{}: {e}", file.display())));
            }
        }
    }
    objects
}

/// What the rendered chart grants ServiceAccount `name` of the chart's namespace.
pub fn service_account(name: &str) -> Permissions {
    service_account_in(CHART_NAMESPACE, name)
}

/// What the rendered chart grants ServiceAccount `namespace/name` (e.g. the HPA controller's).
pub fn service_account_in(namespace: &str, name: &str) -> Permissions {
    let permissions = Permissions::of(&rendered_objects(), namespace, name);
    assert!(!permissions.rules.is_empty(), "deploy/ binds no role to ServiceAccount {namespace}/{name}");
    permissions
}

/// What the rendered chart grants the operator.
pub fn operator() -> Permissions {
    service_account(OPERATOR)
}

/// Checks one request of a scripted API server: `Err` carries the 403 body to answer with, after the test
/// has been failed by the caller or not (tests of the 403 path expect it).
pub fn check_request<B>(permissions: &Permissions, req: &http::Request<B>, creates: bool) -> Result<(), Forbidden> {
    let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    permissions.check(
        req.method().as_str(),
        req.uri().path(),
        req.uri().query().unwrap_or_default(),
        content_type,
        creates,
    )
}

/// Fails the test when RBAC forbids `req`.
pub fn assert_allowed<B>(permissions: &Permissions, req: &http::Request<B>, creates: bool) {
    if let Err(forbidden) = check_request(permissions, req, creates) {
        panic!("{} {}: {forbidden}", req.method(), req.uri());
    }
}

impl Permissions {
    /// The same permissions without `verb` on `group`/`resource`: a cluster whose role lacks a grant.
    pub fn revoke(mut self, verb: &str, group: &str, resource: &str) -> Self {
        for (_, rule) in &mut self.rules {
            if rule.api_groups.iter().any(|g| g == group) && rule.resources.iter().any(|r| r == resource) {
                rule.verbs.retain(|v| v != verb);
            }
        }
        self
    }
}
