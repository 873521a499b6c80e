//! Delegated decisions: the API server says whose a bearer token is (TokenReview) and whether a user may make
//! a request (SubjectAccessReview), as `system:auth-delegator` allows. Answers are kept for a few seconds,
//! as k8s.io/apiserver's delegating authenticator and authorizer do, so the HPA's polling costs the API server
//! one review per app and period, not one per request.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::PostParams;
use kube::{Api, Client};

use super::authn::User;

/// How long a review's answer is used again.
const REVIEW_TTL: Duration = Duration::from_secs(10);
/// Answers kept at most; beyond, the cache starts over (a flood of distinct tokens must not grow memory).
const CACHE_CAPACITY: usize = 4096;

/// What a request asks the authorizer (k8s.io/apiserver `NewRequestInfo`, for this API's paths).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Attributes {
    /// A request for a resource: here a metric in a namespace.
    Resource {
        verb: String,
        group: String,
        version: String,
        namespace: String,
        resource: String,
        name: String,
        subresource: String,
    },
    /// Discovery and other paths.
    NonResource { verb: String, path: String },
}

impl Attributes {
    /// The attributes of a `method` request for `path`.
    pub fn of(method: &http::Method, path: &str) -> Self {
        let verb = match *method {
            http::Method::GET | http::Method::HEAD => "get",
            http::Method::POST => "create",
            http::Method::PUT => "update",
            http::Method::PATCH => "patch",
            http::Method::DELETE => "delete",
            _ => "",
        };
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let [apis, group, version, rest @ ..] = parts.as_slice() else {
            return Self::NonResource { verb: verb.to_string(), path: path.to_string() };
        };
        if *apis != "apis" || rest.is_empty() {
            return Self::NonResource { verb: verb.to_string(), path: path.to_string() };
        }
        let (namespace, rest) = match rest {
            ["namespaces", namespace, tail @ ..] if !tail.is_empty() => (namespace.to_string(), tail),
            _ => (String::new(), rest),
        };
        let field = |i: usize| rest.get(i).map(|s| s.to_string()).unwrap_or_default();
        let name = field(1);
        let verb = match verb {
            "get" if name.is_empty() => "list",
            "delete" if name.is_empty() => "deletecollection",
            other => other,
        };
        Self::Resource {
            verb: verb.to_string(),
            group: group.to_string(),
            version: version.to_string(),
            namespace,
            resource: field(0),
            name,
            subresource: field(2),
        }
    }

    /// The message and `details` of the API server's 403 for `user` (apiserver `forbiddenMessage` wrapped by
    /// apimachinery `NewForbidden`), with the authorizer's reason when it gave one.
    pub fn forbidden(&self, user: &str, reason: &str) -> (String, serde_json::Value) {
        let reason = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        match self {
            Self::NonResource { verb, path } => {
                (format!("forbidden: User {user:?} cannot {verb} path {path:?}{reason}"), serde_json::json!({}))
            }
            Self::Resource { verb, group, namespace, resource, name, subresource, .. } => {
                let combined =
                    if subresource.is_empty() { resource.clone() } else { format!("{resource}/{subresource}") };
                let scope = if namespace.is_empty() {
                    "at the cluster scope".to_string()
                } else {
                    format!("in the namespace {namespace:?}")
                };
                let qualified = if group.is_empty() { resource.clone() } else { format!("{resource}.{group}") };
                let object = if name.is_empty() { qualified } else { format!("{qualified} {name:?}") };
                let message = format!(
                    "{object} is forbidden: User {user:?} cannot {verb} resource {combined:?} in API group {group:?} \
                     {scope}{reason}"
                );
                let mut details = serde_json::json!({"group": group, "kind": resource});
                if !name.is_empty() {
                    details["name"] = serde_json::json!(name);
                }
                (message, details)
            }
        }
    }
}

/// The authorizer's answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// Why, in the authorizer's words (may be empty).
    pub reason: String,
}

/// Why a review could not be made.
#[derive(Debug, thiserror::Error)]
#[error("the API server did not answer the {kind}")]
pub struct ReviewError {
    kind: &'static str,
    #[source]
    source: kube::Error,
}

/// Asks the API server, through a cache.
pub struct Reviewer {
    client: Client,
    tokens: Cache<String, Option<User>>,
    decisions: Cache<(User, Attributes), Decision>,
}

impl Reviewer {
    /// Reviews through `client` (the operator's own identity, bound to `system:auth-delegator`).
    pub fn new(client: Client) -> Self {
        Self { client, tokens: Cache::default(), decisions: Cache::default() }
    }

    /// The user `token` belongs to; `None` when the API server does not accept it.
    pub async fn authenticate(&self, token: &str) -> Result<Option<User>, ReviewError> {
        if let Some(known) = self.tokens.get(token) {
            return Ok(known);
        }
        let review = TokenReview {
            spec: TokenReviewSpec { token: Some(token.to_string()), audiences: None },
            ..TokenReview::default()
        };
        let answer = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError { kind: "TokenReview", source })?;
        let user = answer.status.filter(|s| s.authenticated == Some(true)).and_then(|s| s.user).map(|u| User {
            name: u.username.unwrap_or_default(),
            uid: u.uid.unwrap_or_default(),
            groups: u.groups.unwrap_or_default(),
            extra: u.extra.unwrap_or_default(),
        });
        let user = user.filter(|u| !u.name.is_empty());
        self.tokens.put(token.to_string(), user.clone());
        Ok(user)
    }

    /// Whether `user` may make a request with `attributes`.
    pub async fn authorize(&self, user: &User, attributes: &Attributes) -> Result<Decision, ReviewError> {
        let key = (user.clone(), attributes.clone());
        if let Some(known) = self.decisions.get(&key) {
            return Ok(known);
        }
        let mut spec = SubjectAccessReviewSpec {
            user: Some(user.name.clone()),
            groups: Some(user.groups.clone()),
            extra: (!user.extra.is_empty()).then(|| user.extra.clone()),
            uid: (!user.uid.is_empty()).then(|| user.uid.clone()),
            ..SubjectAccessReviewSpec::default()
        };
        match attributes {
            Attributes::NonResource { verb, path } => {
                spec.non_resource_attributes =
                    Some(NonResourceAttributes { verb: Some(verb.clone()), path: Some(path.clone()) });
            }
            Attributes::Resource { verb, group, version, namespace, resource, name, subresource } => {
                let some = |s: &String| (!s.is_empty()).then(|| s.clone());
                spec.resource_attributes = Some(ResourceAttributes {
                    verb: Some(verb.clone()),
                    group: Some(group.clone()),
                    version: some(version),
                    namespace: some(namespace),
                    resource: some(resource),
                    name: some(name),
                    subresource: some(subresource),
                    ..ResourceAttributes::default()
                });
            }
        }
        let review = SubjectAccessReview { spec, ..SubjectAccessReview::default() };
        let answer = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await
            .map_err(|source| ReviewError { kind: "SubjectAccessReview", source })?;
        let decision = match answer.status {
            Some(s) => Decision { allowed: s.allowed && s.denied != Some(true), reason: s.reason.unwrap_or_default() },
            None => Decision { allowed: false, reason: String::new() },
        };
        self.decisions.put(key, decision.clone());
        Ok(decision)
    }
}

/// Answers kept for [`REVIEW_TTL`].
struct Cache<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Cache<K, V> {
    fn default() -> Self {
        Self { entries: Mutex::new(HashMap::new()) }
    }
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Eq + Hash + ?Sized,
    {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(key).filter(|(at, _)| at.elapsed() < REVIEW_TTL).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= CACHE_CAPACITY {
            entries.retain(|_, (at, _)| at.elapsed() < REVIEW_TTL);
            if entries.len() >= CACHE_CAPACITY {
                entries.clear();
            }
        }
        entries.insert(key, (Instant::now(), value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resource(verb: &str, namespace: &str, resource: &str, name: &str) -> Attributes {
        Attributes::Resource {
            verb: verb.into(),
            group: "external.metrics.k8s.io".into(),
            version: "v1beta1".into(),
            namespace: namespace.into(),
            resource: resource.into(),
            name: name.into(),
            subresource: String::new(),
        }
    }

    #[test]
    fn attributes_of_the_api_paths() {
        let get = http::Method::GET;
        assert_eq!(
            Attributes::of(
                &get,
                "/apis/external.metrics.k8s.io/v1beta1/namespaces/apps/wasmkube_http_requests_per_second"
            ),
            resource("list", "apps", "wasmkube_http_requests_per_second", "")
        );
        assert_eq!(
            Attributes::of(&get, "/apis/external.metrics.k8s.io/v1beta1/namespaces/apps/m/x"),
            resource("get", "apps", "m", "x")
        );
        // `namespaces` alone is the resource, as in NewRequestInfo.
        assert_eq!(
            Attributes::of(&get, "/apis/external.metrics.k8s.io/v1beta1/namespaces/apps"),
            resource("get", "", "namespaces", "apps")
        );
        for path in ["/apis", "/apis/external.metrics.k8s.io", "/apis/external.metrics.k8s.io/v1beta1", "/openapi/v2"] {
            assert_eq!(Attributes::of(&get, path), Attributes::NonResource { verb: "get".into(), path: path.into() });
        }
    }

    #[test]
    fn forbidden_messages_are_the_api_servers() {
        let (message, details) = resource("list", "apps", "wasmkube_http_requests_per_second", "")
            .forbidden("system:serviceaccount:apps:nobody", "");
        assert_eq!(
            message,
            "wasmkube_http_requests_per_second.external.metrics.k8s.io is forbidden: User \
             \"system:serviceaccount:apps:nobody\" cannot list resource \"wasmkube_http_requests_per_second\" in API \
             group \"external.metrics.k8s.io\" in the namespace \"apps\""
        );
        assert_eq!(
            details,
            serde_json::json!({"group": "external.metrics.k8s.io", "kind": "wasmkube_http_requests_per_second"})
        );
        let (message, _) =
            Attributes::of(&http::Method::GET, "/apis/external.metrics.k8s.io/v1beta1").forbidden("u", "no rule");
        assert_eq!(message, "forbidden: User \"u\" cannot get path \"/apis/external.metrics.k8s.io/v1beta1\": no rule");
    }

    #[test]
    fn cache_answers_until_it_is_full() {
        let cache: Cache<String, u32> = Cache::default();
        cache.put("a".into(), 1);
        assert_eq!(cache.get("a"), Some(1));
        for i in 0..CACHE_CAPACITY {
            cache.put(format!("k{i}"), 0);
        }
        let len = cache.entries.lock().map(|e| e.len()).unwrap_or(usize::MAX);
        assert!(len <= CACHE_CAPACITY, "{len}");
    }
}
