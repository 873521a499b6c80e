//! Reconcile against a scripted API server: each scenario lists the requests the operator must make,
//! in order, with the replies; a wrong, missing or extra request fails the test, and so does a request that the
//! chart's RBAC (deploy/) would forbid.

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use http::{Request, Response};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use kube::Client;
use serde_json::{json, Value};
use support::rbac::{self, Permissions};
use wasmkube_operator::activator::AppKey;
use wasmkube_operator::children::{ChildCache, Shelf};
use wasmkube_operator::component::ResolvedComponent;
use wasmkube_operator::controller::{error_policy, reconcile, ActivatorService, Config, Context};
use wasmkube_operator::crd::WasmApp;
use wasmkube_operator::metrics::Metrics;
use wasmkube_operator::render::{
    allocate_activator_port, render_activator_slice, render_deployment, render_hpa, render_service, ActivatorPorts,
    RenderConfig,
};
use wasmkube_operator::resolve::{BoxError, Resolver};
use wasmkube_operator::status::{desired_status, Observed, ScaleToZeroSupport};

const DIGEST: &str = "sha256:2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae";
const OLD_DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const DEPLOY: &str = "/apis/apps/v1/namespaces/apps/deployments/hello";
const SERVICE: &str = "/api/v1/namespaces/apps/services/hello";
const HPA: &str = "/apis/autoscaling/v2/namespaces/apps/horizontalpodautoscalers/hello";
const PODS: &str = "/api/v1/namespaces/apps/pods";
const STATUS: &str = "/apis/wasmkube.dev/v1alpha1/namespaces/apps/wasmapps/hello/status";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/apps/events";
const ACTIVATOR_SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/wasmkube-system/endpointslices";
const APP_SLICE: &str = "/apis/discovery.k8s.io/v1/namespaces/apps/endpointslices/hello-activator";
const ALL_SLICES: &str = "/apis/discovery.k8s.io/v1/endpointslices";

type Check = Box<dyn FnOnce(&Value) + Send>;

/// One expected request and the reply to it.
struct Step {
    method: &'static str,
    path: &'static str,
    query: Vec<&'static str>,
    check: Option<Check>,
    status: u16,
    reply: Option<Value>,
    /// The chart's RBAC refuses this request: the server answers with the API server's 403.
    forbidden: bool,
}

impl Step {
    fn new(method: &'static str, path: &'static str) -> Self {
        Self { method, path, query: Vec::new(), check: None, status: 200, reply: None, forbidden: false }
    }
    fn get(path: &'static str) -> Self {
        Self::new("GET", path)
    }
    /// A server-side apply with our field manager.
    fn apply(path: &'static str) -> Self {
        let mut s = Self::new("PATCH", path);
        s.query = vec!["fieldManager=wasmkube-operator", "force=true"];
        s
    }
    fn check(mut self, f: impl FnOnce(&Value) + Send + 'static) -> Self {
        self.check = Some(Box::new(f));
        self
    }
    fn reply(mut self, status: u16, body: Value) -> Self {
        self.status = status;
        self.reply = Some(body);
        self
    }
    fn not_found(self) -> Self {
        self.reply(404, api_status(404, "NotFound"))
    }
    /// RBAC must refuse this request; the reply is the API server's 403 for it.
    fn forbidden(mut self) -> Self {
        self.forbidden = true;
        self
    }
}

fn api_status(code: u16, reason: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": format!("scripted {reason}"), "reason": reason, "code": code})
}

/// Plays the API server: checks each request against the next step and against `rbac`, and replies. A
/// server-side apply of an object that the server does not hold (a GET of it answered 404, or it was deleted)
/// creates it, and so needs `create` as well as `patch`.
async fn verify(
    mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
    steps: Vec<Step>,
    app: Value,
    rbac: Permissions,
) {
    let mut absent = HashSet::new();
    for (i, step) in steps.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
        let (req, send) = next
            .unwrap_or_else(|_| panic!("step {i}: expected {} {}, got no request", step.method, step.path))
            .unwrap_or_else(|| panic!("step {i}: client dropped before {} {}", step.method, step.path));
        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
        let query = req.uri().query().unwrap_or_default().to_string();
        assert_eq!(
            (method.as_str(), path.as_str()),
            (step.method, step.path),
            "step {i}: unexpected request (query {query})"
        );
        for q in &step.query {
            assert!(query.contains(q), "step {i}: {method} {path}?{query} lacks {q}");
        }
        let decision = rbac::check_request(&rbac, &req, absent.contains(&path));
        let forbidden = match (decision, step.forbidden) {
            (Ok(()), false) => None,
            (Err(forbidden), true) => Some(forbidden),
            (Err(forbidden), false) => panic!("step {i}: {method} {path}?{query}: {forbidden}"),
            (Ok(()), true) => panic!("step {i}: {method} {path} should be forbidden by RBAC, but is allowed"),
        };
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        if let Some(check) = step.check {
            check(&body);
        }
        // Without a scripted reply the server answers with the object: the body, or for a status
        // apply the WasmApp with the new status.
        let (status, reply) = match (forbidden, step.reply) {
            (Some(forbidden), _) => (403, forbidden.status()),
            (None, Some(reply)) => (step.status, reply),
            (None, None) if step.path == STATUS => {
                let mut obj = app.clone();
                obj["status"] = body["status"].clone();
                (step.status, obj)
            }
            (None, None) => (step.status, body),
        };
        match (method.as_str(), status) {
            (_, 404) | ("DELETE", 200..=299) => absent.insert(path),
            (_, 200..=299) => absent.remove(&path),
            _ => false,
        };
        send.send_response(
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        );
    }
    if let Ok(Some((req, _))) = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await {
        panic!("unexpected extra request {} {}", req.method(), req.uri());
    }
}

/// A scripted registry.
struct FakeRegistry {
    answer: Result<String, String>,
    calls: AtomicUsize,
}

#[async_trait]
impl Resolver for FakeRegistry {
    async fn digest(&self, _reference: &oci_client::Reference) -> Result<String, BoxError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.answer.clone().map_err(Into::into)
    }
}

fn registry(answer: Result<&str, &str>) -> Arc<FakeRegistry> {
    Arc::new(FakeRegistry { answer: answer.map(str::to_string).map_err(str::to_string), calls: AtomicUsize::new(0) })
}

fn now() -> Timestamp {
    Timestamp::from_second(1_700_000_000).unwrap()
}

fn app(spec: Value, status: Option<Value>) -> WasmApp {
    let mut obj = json!({
        "apiVersion": "wasmkube.dev/v1alpha1",
        "kind": "WasmApp",
        "metadata": {"name": "hello", "namespace": "apps", "uid": "uid-1", "generation": 2},
        "spec": spec,
    });
    if let Some(status) = status {
        obj["status"] = status;
    }
    serde_json::from_value(obj).unwrap()
}

fn pinned(digest: &str) -> ResolvedComponent {
    ResolvedComponent { reference: format!("ghcr.io/org/hello@{digest}"), digest: Some(digest.to_string()) }
}

/// The Deployment as the API server would hold it: ours plus defaults plus a status.
fn server_deployment(app: &WasmApp, component: &ResolvedComponent, available: i32) -> Value {
    let d = render_deployment(app, component, &RenderConfig::default()).unwrap();
    let mut v = serde_json::to_value(d).unwrap();
    v["metadata"]["resourceVersion"] = json!("42");
    v["metadata"]["generation"] = json!(1);
    v["spec"]["strategy"] = json!({"type": "RollingUpdate"});
    v["spec"]["template"]["spec"]["containers"][0]["terminationMessagePath"] = json!("/dev/termination-log");
    v["status"] = json!({"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                         "readyReplicas": available, "availableReplicas": available});
    v
}

fn owned_service(app: &WasmApp) -> Value {
    let mut v = serde_json::to_value(render_service(app).unwrap().unwrap()).unwrap();
    v["spec"]["clusterIP"] = json!("10.0.0.10");
    v
}

struct Run {
    result: Result<Action, wasmkube_operator::error::Error>,
    ctx: Arc<Context>,
    app: Arc<WasmApp>,
}

async fn run(app: WasmApp, resolver: Option<Arc<FakeRegistry>>, steps: Vec<Step>) -> Run {
    run_with(app, resolver, Config::default(), steps).await
}

async fn run_with(app: WasmApp, resolver: Option<Arc<FakeRegistry>>, config: Config, steps: Vec<Step>) -> Run {
    run_as(rbac::operator(), app, resolver, config, steps).await
}

/// A reconcile whose requests the API server authorizes with `rbac`.
async fn run_as(
    rbac: Permissions,
    app: WasmApp,
    resolver: Option<Arc<FakeRegistry>>,
    config: Config,
    steps: Vec<Step>,
) -> Run {
    run_cached(rbac, app, resolver, config, None, steps).await
}

/// A reconcile that reads children from `children` (the controller's watches), or from an empty cache that never
/// completes (a watch that has not listed yet).
async fn run_cached(
    rbac: Permissions,
    app: WasmApp,
    resolver: Option<Arc<FakeRegistry>>,
    config: Config,
    children: Option<ChildCache>,
    steps: Vec<Step>,
) -> Run {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(mock, "default");
    let resolver = resolver.map(|r| r as Arc<dyn Resolver>);
    let mut ctx = Context::new(client, config, Arc::new(Metrics::default()), resolver, Some("test".into()))
        .with_clock(Arc::new(now));
    if let Some(children) = children {
        ctx = ctx.with_children(children);
    }
    let ctx = Arc::new(ctx);
    let app_json = serde_json::to_value(&app).unwrap();
    let app = Arc::new(app);
    let verifier = tokio::spawn(verify(handle, steps, app_json, rbac));
    let result = tokio::time::timeout(Duration::from_secs(10), reconcile(app.clone(), ctx.clone()))
        .await
        .expect("reconcile did not finish");
    if let Err(panic) = verifier.await {
        std::panic::resume_unwind(panic.into_panic());
    }
    Run { result, ctx, app }
}

fn condition<'a>(status: &'a Value, type_: &str) -> &'a Value {
    status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == type_)
        .unwrap_or_else(|| panic!("no {type_} condition in {status}"))
}

fn event(reason: &'static str, type_: &'static str) -> Step {
    Step::new("POST", EVENTS).check(move |ev| {
        assert_eq!(ev["reason"], reason, "{ev}");
        assert_eq!(ev["type"], type_, "{ev}");
        assert_eq!(ev["regarding"]["kind"], "WasmApp");
        assert_eq!(ev["regarding"]["name"], "hello");
    })
}

#[tokio::test]
async fn new_http_app_is_resolved_applied_and_reported() {
    let app = app(json!({"component": "ghcr.io/org/hello:1.0", "http": {}}), None);
    let reg = registry(Ok(DIGEST));
    let dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY)
            .check(|b| {
                assert_eq!(b["kind"], "Deployment");
                assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-1");
                let pod = &b["spec"]["template"]["spec"];
                assert_eq!(pod["runtimeClassName"], "wasmkube");
                let c = &pod["containers"][0];
                assert_eq!(c["command"], json!([format!("oci://ghcr.io/org/hello@{DIGEST}")]));
                assert_eq!(c["image"], "registry.k8s.io/pause:3.10");
                assert_eq!(
                    c["env"],
                    json!([
                        {"name": "WASMKUBE_APP", "value": "hello"},
                        {"name": "WASMKUBE_NAMESPACE", "value": "apps"},
                        {"name": "WASMKUBE_HTTP_PORT", "value": "8080"}
                    ])
                );
                assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/");
            })
            .reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE).check(|b| {
            assert_eq!(b["kind"], "Service");
            assert_eq!(b["spec"]["ports"][0]["port"], 80);
        }),
        Step::get(PODS).reply(200, json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})),
        Step::apply(STATUS).check(|b| {
            assert_eq!(b["kind"], "WasmApp");
            let s = &b["status"];
            assert_eq!(s["observedGeneration"], 2);
            assert_eq!(s["replicas"], 1);
            assert_eq!(s["readyReplicas"], 0);
            assert_eq!(s["componentDigest"], DIGEST);
            assert_eq!(s["resolvedFrom"], "ghcr.io/org/hello:1.0");
            assert_eq!(s["resolvedComponent"], format!("ghcr.io/org/hello@{DIGEST}"));
            assert_eq!(s["url"], "http://hello.apps.svc.cluster.local");
            assert_eq!(s["selector"], "app.kubernetes.io/managed-by=wasmkube-operator,app.kubernetes.io/name=hello");
            let ready = condition(s, "Ready");
            assert_eq!((&ready["status"], &ready["reason"]), (&json!("False"), &json!("ReplicasUnavailable")));
            assert_eq!(ready["observedGeneration"], 2);
            assert_eq!(ready["lastTransitionTime"], "2023-11-14T22:13:20Z");
            assert_eq!(condition(s, "Progressing")["status"], "False");
            assert_eq!(condition(s, "Degraded")["status"], "False");
        }),
        event("ComponentResolved", "Normal"),
    ];
    let run = run(app, Some(reg.clone()), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
    assert_eq!(reg.calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn pods_are_not_listed_before_the_deployment_controller_saw_the_spec() {
    let app = app(json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}}), None);
    // The Deployment as the API server answers an apply of a new spec: generation 2, status of generation 1.
    let mut dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    dep_reply["metadata"]["generation"] = json!(2);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        Step::apply(STATUS).check(|b| {
            let ready = condition(&b["status"], "Ready");
            assert_eq!((&ready["status"], &ready["reason"]), (&json!("False"), &json!("ReplicasUnavailable")));
        }),
        event("ComponentResolved", "Normal"),
    ];
    let run = run(app, None, steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn unchanged_app_makes_no_writes() {
    let spec = json!({"component": "ghcr.io/org/hello:1.0", "http": {}});
    let bare = app(spec.clone(), None);
    let server_dep = server_deployment(&bare, &pinned(DIGEST), 1);
    let dep: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(server_dep.clone()).unwrap();
    let mut pre = bare.clone();
    pre.status = Some(wasmkube_operator::crd::WasmAppStatus {
        resolved_from: Some("ghcr.io/org/hello:1.0".into()),
        ..Default::default()
    });
    let status = desired_status(
        &pre,
        &Observed { deployment: Some(&dep), ..Default::default() },
        &pinned(DIGEST),
        &RenderConfig::default(),
        now(),
    );
    assert_eq!(condition(&serde_json::to_value(&status).unwrap(), "Ready")["status"], "True");
    let app = app(spec, Some(serde_json::to_value(&status).unwrap()));
    let reg = registry(Ok("sha256:moved"));
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).reply(200, server_dep),
        Step::get(SERVICE).reply(200, owned_service(&app)),
    ];
    let run = run(app, Some(reg.clone()), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(300)));
    assert_eq!(reg.calls.load(Ordering::SeqCst), 0, "a resolved tag is not looked up again");
}

#[tokio::test]
async fn removed_http_and_autoscaling_delete_their_children() {
    let before =
        app(json!({"component": "ghcr.io/org/hello:1.0", "http": {}, "autoscaling": {"maxReplicas": 3}}), None);
    let service = owned_service(&before);
    let hpa = serde_json::to_value(render_hpa(&before, &RenderConfig::default()).unwrap().unwrap()).unwrap();
    let status = json!({
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
        "selector": "app.kubernetes.io/managed-by=wasmkube-operator,app.kubernetes.io/name=hello",
        "resolvedFrom": "ghcr.io/org/hello:1.0", "resolvedComponent": format!("ghcr.io/org/hello@{DIGEST}"),
        "componentDigest": DIGEST, "url": "http://hello.apps.svc.cluster.local",
        "conditions": [
            {"type": "Ready", "status": "True", "reason": "Available", "message": "1/1 replicas available", "observedGeneration": 1, "lastTransitionTime": "2023-01-01T00:00:00Z"},
            {"type": "Progressing", "status": "False", "reason": "RolloutComplete", "message": "all replicas run the current spec", "observedGeneration": 1, "lastTransitionTime": "2023-01-01T00:00:00Z"},
            {"type": "Degraded", "status": "False", "reason": "AsExpected", "message": "", "observedGeneration": 1, "lastTransitionTime": "2023-01-01T00:00:00Z"}
        ]
    });
    let app = app(json!({"component": "ghcr.io/org/hello:1.0"}), Some(status));
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    let server_dep = server_deployment(&app, &pinned(DIGEST), 1);
    let steps = vec![
        Step::get(HPA).reply(200, hpa),
        Step::new("DELETE", HPA).reply(200, deleted.clone()),
        Step::get(DEPLOY).reply(200, server_dep.clone()),
        Step::get(SERVICE).reply(200, service),
        Step::new("DELETE", SERVICE).check(|b| assert_eq!(b["propagationPolicy"], "Background")).reply(200, deleted),
        Step::apply(STATUS).check(|b| {
            let s = &b["status"];
            assert!(s.get("url").is_none(), "url must go with the Service: {s}");
            assert_eq!(s["observedGeneration"], 2);
            // Unchanged condition statuses keep their transition time.
            assert_eq!(condition(s, "Ready")["lastTransitionTime"], "2023-01-01T00:00:00Z");
            assert_eq!(condition(s, "Ready")["observedGeneration"], 2);
        }),
        event("AutoscalerDeleted", "Normal"),
        event("ServiceDeleted", "Normal"),
    ];
    let run = run(app, Some(registry(Err("unused"))), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn apply_conflict_degrades_and_backs_off() {
    let app = app(json!({"component": format!("ghcr.io/org/hello@{DIGEST}")}), None);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).reply(409, api_status(409, "Conflict")),
        Step::apply(STATUS).check(|b| {
            let d = condition(&b["status"], "Degraded");
            assert_eq!(d["status"], "True");
            assert_eq!(d["reason"], "ApplyFailed");
            assert!(d["message"].as_str().unwrap().contains("applying Deployment failed"), "{d}");
            assert!(d["message"].as_str().unwrap().contains("scripted Conflict"), "{d}");
        }),
        event("ApplyFailed", "Warning"),
    ];
    let run = run(app, None, steps).await;
    let err = run.result.unwrap_err();
    assert_eq!(err.category(), "ApplyFailed");
    let first = error_policy(run.app.clone(), &err, run.ctx.clone());
    let second = error_policy(run.app.clone(), &err, run.ctx.clone());
    assert_eq!(first, Action::requeue(Duration::from_secs(5)));
    assert_eq!(second, Action::requeue(Duration::from_secs(10)));
    let metrics = run.ctx.metrics.encode().unwrap();
    assert!(metrics.contains("reconcile_failures_total{error=\"ApplyFailed\"} 1"), "{metrics}");
}

#[tokio::test]
async fn server_errors_never_panic_even_when_the_status_write_fails() {
    let app = app(json!({"component": format!("ghcr.io/org/hello@{DIGEST}")}), None);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).reply(500, api_status(500, "InternalError")),
        Step::apply(STATUS).reply(503, api_status(503, "ServiceUnavailable")),
        event("ReadFailed", "Warning"),
    ];
    let run = run(app, None, steps).await;
    assert_eq!(run.result.unwrap_err().category(), "ReadFailed");
}

#[tokio::test]
async fn unreachable_registry_on_first_rollout_runs_the_tag_visibly() {
    let app = app(json!({"component": "ghcr.io/org/hello:1.0"}), None);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).check(|b| {
            let c = &b["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(c["command"], json!(["oci://ghcr.io/org/hello:1.0"]));
        }),
        Step::get(SERVICE).not_found(),
        // No pods: the Deployment controller has not seen the new Deployment yet.
        Step::apply(STATUS).check(|b| {
            let d = condition(&b["status"], "Degraded");
            assert_eq!(d["status"], "True");
            assert_eq!(d["reason"], "DigestUnresolved");
            let msg = d["message"].as_str().unwrap();
            assert!(msg.contains("connection refused") && msg.contains("unpinned"), "{msg}");
            assert!(b["status"].get("componentDigest").is_none());
        }),
        event("DigestUnresolved", "Warning"),
    ];
    let run = run(app, Some(registry(Err("connection refused"))), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn unreachable_registry_keeps_the_last_good_digest() {
    let old = app(json!({"component": "ghcr.io/org/hello:1.0"}), None);
    let server_dep = server_deployment(&old, &pinned(OLD_DIGEST), 1);
    let status = json!({
        "observedGeneration": 1, "replicas": 1, "readyReplicas": 1,
        "resolvedFrom": "ghcr.io/org/hello:1.0",
        "resolvedComponent": format!("ghcr.io/org/hello@{OLD_DIGEST}"),
        "componentDigest": OLD_DIGEST,
    });
    let app = app(json!({"component": "ghcr.io/org/hello:2.0"}), Some(status));
    // No Deployment write: the pods keep the old digest instead of rolling to an unresolved tag.
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).reply(200, server_dep),
        Step::get(SERVICE).not_found(),
        Step::apply(STATUS).check(|b| {
            let s = &b["status"];
            assert_eq!(s["componentDigest"], OLD_DIGEST);
            assert_eq!(s["resolvedFrom"], "ghcr.io/org/hello:1.0");
            let d = condition(s, "Degraded");
            assert_eq!(d["reason"], "DigestUnresolved");
            assert!(
                d["message"].as_str().unwrap().contains(&format!("pods keep running ghcr.io/org/hello@{OLD_DIGEST}")),
                "{d}"
            );
        }),
        event("DigestUnresolved", "Warning"),
    ];
    let run = run(app, Some(registry(Err("no route to host"))), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(30)));
}

#[tokio::test]
async fn a_foreign_object_with_the_childs_name_is_not_taken_over() {
    let app = app(json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}}), None);
    let server_dep = server_deployment(&app, &pinned(DIGEST), 1);
    let foreign = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "apps"}, "spec": {"ports": [{"port": 80}]}});
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).reply(200, server_dep),
        Step::get(SERVICE).reply(200, foreign),
        Step::apply(STATUS).check(|b| {
            let d = condition(&b["status"], "Degraded");
            assert_eq!(d["reason"], "NameConflict");
            assert!(d["message"].as_str().unwrap().contains("Service hello already exists"), "{d}");
        }),
        event("NameConflict", "Warning"),
    ];
    let run = run(app, None, steps).await;
    assert_eq!(run.result.unwrap_err().category(), "NameConflict");
}

/// The operator's settings with the activator Service of the chart.
fn with_activator() -> Config {
    Config {
        activator: Some(ActivatorService { namespace: "wasmkube-system".into(), name: "wasmkube-activator".into() }),
        ..Config::default()
    }
}

/// The activator Service's EndpointSlices as the EndpointSlice controller writes them.
fn activator_slices(ready: &[&str]) -> Value {
    let endpoints: Vec<Value> =
        ready.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true, "serving": true}})).collect();
    json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {}, "items": [{
        "metadata": {"name": "wasmkube-activator-x7k2p", "namespace": "wasmkube-system",
                     "labels": {"kubernetes.io/service-name": "wasmkube-activator"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 8090, "protocol": "TCP"}, {"name": "metrics", "port": 8080}],
        "endpoints": endpoints,
    }]})
}

/// Every app's activator slice (cluster-wide), as the operator lists them to choose a free port.
fn list_app_ports(apps: &[(&str, &str, u16)]) -> Step {
    let items: Vec<Value> = apps
        .iter()
        .map(|(ns, name, port)| {
            json!({"metadata": {"name": format!("{name}-activator"), "namespace": ns,
                                "labels": {"kubernetes.io/service-name": name,
                                           "endpointslice.kubernetes.io/managed-by": "wasmkube.dev-activator"}},
                   "addressType": "IPv4",
                   "ports": [{"name": "http", "port": port, "protocol": "TCP"}],
                   "endpoints": [{"addresses": ["10.244.0.7"], "conditions": {"ready": true}}]})
        })
        .collect();
    let list =
        json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {}, "items": items});
    let mut step = Step::get(ALL_SLICES).reply(200, list);
    step.query = vec!["labelSelector=endpointslice.kubernetes.io%2Fmanaged-by%3Dwasmkube.dev-activator"];
    step
}

fn list_activator_slices(ready: &[&str]) -> Step {
    let mut step = Step::get(ACTIVATOR_SLICES).reply(200, activator_slices(ready));
    step.query = vec!["labelSelector=kubernetes.io%2Fservice-name%3Dwasmkube-activator"];
    step
}

/// An app its HPA has scaled to zero (the API server defaults `spec.replicas` to 1 until then).
fn idle_spec() -> Value {
    json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}, "replicas": 0,
        "autoscaling": {"minReplicas": 0, "maxReplicas": 3}})
}

#[tokio::test]
async fn idle_http_app_is_scaled_to_zero_behind_the_activator() {
    let app = app(idle_spec(), None);
    let dep_reply = {
        let mut d = server_deployment(&app, &pinned(DIGEST), 0);
        d["status"] = json!({"observedGeneration": 1});
        d
    };
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::apply(HPA).check(|b| {
            assert_eq!(b["spec"]["minReplicas"], 0);
            assert_eq!(b["spec"]["metrics"][0]["external"]["metric"]["name"], "wasmkube_http_requests_per_second");
        }),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).check(|b| assert_eq!(b["spec"]["replicas"], 0)).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        list_activator_slices(&["10.244.0.7", "10.244.1.9"]),
        Step::get(APP_SLICE).not_found(),
        list_app_ports(&[("shop", "web", 20001)]),
        Step::apply(APP_SLICE).check(move |b| {
            assert_eq!(b["kind"], "EndpointSlice");
            assert_eq!(b["metadata"]["labels"]["kubernetes.io/service-name"], "hello");
            assert_eq!(b["metadata"]["labels"]["endpointslice.kubernetes.io/managed-by"], "wasmkube.dev-activator");
            assert_eq!(b["metadata"]["ownerReferences"][0]["uid"], "uid-1");
            // The app's own port, chosen clear of the other app's, named like the Service port.
            let taken = [(AppKey::new("shop", "web"), 20001)];
            let port = allocate_activator_port(&AppKey::new("apps", "hello"), None, &taken, ActivatorPorts::default());
            let port = port.unwrap();
            assert_ne!(port, 20001);
            assert_eq!(b["ports"], json!([{"name": "http", "port": port, "protocol": "TCP"}]));
            let ips: Vec<&Value> = b["endpoints"].as_array().unwrap().iter().map(|e| &e["addresses"][0]).collect();
            assert_eq!(ips, [&json!("10.244.0.7"), &json!("10.244.1.9")]);
        }),
        Step::apply(STATUS).check(|b| {
            let s = &b["status"];
            let stz = condition(s, "ScaleToZero");
            assert_eq!((&stz["status"], &stz["reason"]), (&json!("True"), &json!("Enabled")), "{stz}");
            assert_eq!(condition(s, "Ready")["reason"], "ScaledToZero");
        }),
        event("ComponentResolved", "Normal"),
    ];
    let run = run_with(app, None, with_activator(), steps).await;
    run.result.unwrap();
    assert_eq!(run.ctx.scale_to_zero_support(), ScaleToZeroSupport::Supported);
}

#[tokio::test]
async fn a_ready_pod_takes_the_traffic_back_from_the_activator() {
    let mut spec = idle_spec();
    spec["replicas"] = json!(1);
    let bare = app(spec.clone(), None);
    let hpa = serde_json::to_value(render_hpa(&bare, &RenderConfig::default()).unwrap().unwrap()).unwrap();
    let server_dep = server_deployment(&bare, &pinned(DIGEST), 1);
    let existing_slice = {
        let endpoints = wasmkube_operator::render::ActivatorEndpoints {
            address_type: "IPv4".into(),
            addresses: vec!["10.244.0.7".into()],
            port: Some(8090),
        };
        let idle = app(idle_spec(), None);
        let cfg = RenderConfig::default();
        serde_json::to_value(
            wasmkube_operator::render::render_activator_slice(&idle, &endpoints, 0, &cfg, 20480).unwrap(),
        )
        .unwrap()
    };
    let status = json!({"conditions": [{"type": "ScaleToZero", "status": "True", "reason": "Enabled",
        "message": "", "lastTransitionTime": "2023-01-01T00:00:00Z"}]});
    let app = app(spec, Some(status));
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"});
    let steps = vec![
        Step::get(HPA).reply(200, hpa),
        Step::get(DEPLOY).reply(200, server_dep),
        Step::get(SERVICE).reply(200, owned_service(&app)),
        list_activator_slices(&["10.244.0.7"]),
        Step::get(APP_SLICE).reply(200, existing_slice),
        Step::new("DELETE", APP_SLICE).reply(200, deleted),
        Step::apply(STATUS).check(|b| {
            let s = &b["status"];
            assert_eq!(condition(s, "Ready")["reason"], "Available");
            assert_eq!(condition(s, "ScaleToZero")["lastTransitionTime"], "2023-01-01T00:00:00Z");
        }),
        event("ComponentResolved", "Normal"),
    ];
    run_with(app, None, with_activator(), steps).await.result.unwrap();
}

#[tokio::test]
async fn without_the_feature_gate_the_app_keeps_one_replica_and_says_why() {
    let app = app(idle_spec(), None);
    let refused = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": "HorizontalPodAutoscaler.autoscaling \"hello\" is invalid: spec.minReplicas: Invalid value: 0: must be greater than or equal to 1",
        "reason": "Invalid", "code": 422});
    let mut dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    dep_reply["spec"]["replicas"] = json!(1);
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::apply(HPA).check(|b| assert_eq!(b["spec"]["minReplicas"], 0)).reply(422, refused),
        Step::get(HPA).not_found(),
        Step::apply(HPA).check(|b| assert_eq!(b["spec"]["minReplicas"], 1)),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).check(|b| assert_eq!(b["spec"]["replicas"], 1)).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        list_activator_slices(&["10.244.0.7"]),
        // Not scaling to zero, the app needs no activator slice.
        Step::get(APP_SLICE).not_found(),
        Step::get(PODS).reply(200, json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": []})),
        Step::apply(STATUS).check(|b| {
            let stz = condition(&b["status"], "ScaleToZero");
            assert_eq!((&stz["status"], &stz["reason"]), (&json!("False"), &json!("Unsupported")), "{stz}");
            let msg = stz["message"].as_str().unwrap();
            assert!(msg.contains("HPAScaleToZero") && msg.contains("must be greater than or equal to 1"), "{msg}");
        }),
        event("ComponentResolved", "Normal"),
    ];
    let run = run_with(app, None, with_activator(), steps).await;
    run.result.unwrap();
    assert!(matches!(run.ctx.scale_to_zero_support(), ScaleToZeroSupport::Refused(_)));
}

#[tokio::test]
async fn no_ready_activator_is_reported_not_hidden() {
    let app = app(idle_spec(), None);
    let mut dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    dep_reply["status"] = json!({"observedGeneration": 1});
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::apply(HPA),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        list_activator_slices(&[]),
        Step::get(APP_SLICE).not_found(),
        Step::apply(STATUS).check(|b| {
            let stz = condition(&b["status"], "ScaleToZero");
            assert_eq!((&stz["status"], &stz["reason"]), (&json!("False"), &json!("ActivatorUnavailable")), "{stz}");
            assert!(stz["message"].as_str().unwrap().contains("wasmkube-system/wasmkube-activator"));
        }),
        event("ComponentResolved", "Normal"),
    ];
    run_with(app, None, with_activator(), steps).await.result.unwrap();
}

/// The API server's words for the refused apply, as the user must read them.
const FORBIDDEN_CREATE: &str = concat!(
    r#"applying Deployment failed: deployments.apps "hello" is forbidden: User "system:serviceaccount:wasmkube-system:wasmkube-operator" "#,
    r#"cannot create resource "deployments" in API group "apps" in the namespace "apps" (Forbidden, 403)"#
);

#[tokio::test]
async fn a_forbidden_apply_shows_the_api_servers_message_once() {
    // The ClusterRole as the chart had it before issue 13: patch but no create on deployments.
    let rbac = rbac::operator().revoke("create", "apps", "deployments");
    let app = app(json!({"component": format!("ghcr.io/org/hello@{DIGEST}")}), None);
    let readable = |text: &str| {
        assert_eq!(text, FORBIDDEN_CREATE);
        assert_eq!(text.matches("is forbidden").count(), 1, "{text}");
        assert!(!text.contains("Status {") && !text.contains("ApiError"), "a Debug dump: {text}");
    };
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).forbidden(),
        Step::apply(STATUS).check(move |b| {
            let d = condition(&b["status"], "Degraded");
            assert_eq!((&d["status"], &d["reason"]), (&json!("True"), &json!("ApplyFailed")), "{d}");
            readable(d["message"].as_str().unwrap());
        }),
        Step::new("POST", EVENTS).check(move |ev| {
            assert_eq!((&ev["reason"], &ev["type"]), (&json!("ApplyFailed"), &json!("Warning")), "{ev}");
            readable(ev["note"].as_str().unwrap());
        }),
    ];
    let run = run_as(rbac, app, None, Config::default(), steps).await;
    assert_eq!(run.result.unwrap_err().category(), "ApplyFailed");
}

#[test]
fn apply_of_a_new_object_needs_create_and_status_writes_need_the_status_subresource() {
    let apply = Some("application/apply-patch+yaml");
    let query = "fieldManager=wasmkube-operator&force=true";
    let rbac = rbac::operator().revoke("create", "apps", "deployments");
    rbac.check("PATCH", DEPLOY, query, apply, false).unwrap();
    let refused = rbac.check("PATCH", DEPLOY, query, apply, true).unwrap_err();
    assert_eq!(refused.attributes.verb, "create");
    assert_eq!(refused.status()["details"], json!({"name": "hello", "group": "apps", "kind": "deployments"}));
    // A merge patch of an absent object is a 404, never a create.
    rbac.check("PATCH", DEPLOY, "", Some("application/merge-patch+json"), true).unwrap();
    let rbac = rbac::operator().revoke("patch", "wasmkube.dev", "wasmapps/status");
    assert_eq!(rbac.check("PATCH", STATUS, query, apply, false).unwrap_err().attributes.resource, "wasmapps");
    rbac::operator().check("PATCH", STATUS, query, apply, false).unwrap();
}

/// An idle app whose activator slice already has a port keeps it: no list, no write.
#[tokio::test]
async fn an_existing_activator_port_is_kept() {
    let app = app(idle_spec(), None);
    let mut dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    dep_reply["status"] = json!({"observedGeneration": 1});
    let endpoints = wasmkube_operator::render::ActivatorEndpoints {
        address_type: "IPv4".into(),
        addresses: vec!["10.244.0.7".into()],
        port: Some(8090),
    };
    let cfg = RenderConfig::default();
    let existing = render_activator_slice(&app, &endpoints, 0, &cfg, 23456).unwrap().unwrap();
    let mut existing = serde_json::to_value(existing).unwrap();
    existing["metadata"]["resourceVersion"] = json!("77");
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::apply(HPA),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        list_activator_slices(&["10.244.0.7"]),
        Step::get(APP_SLICE).reply(200, existing),
        Step::apply(STATUS).check(|b| {
            assert_eq!(condition(&b["status"], "ScaleToZero")["reason"], "Enabled");
        }),
        event("ComponentResolved", "Normal"),
    ];
    run_with(app, None, with_activator(), steps).await.result.unwrap();
}

/// With every port of the range taken, the app gets no slice and its condition says why and what to change.
#[tokio::test]
async fn a_full_port_range_is_reported_in_the_condition() {
    let app = app(idle_spec(), None);
    let mut dep_reply = server_deployment(&app, &pinned(DIGEST), 0);
    dep_reply["status"] = json!({"observedGeneration": 1});
    let config = Config { activator_ports: ActivatorPorts { first: 20000, last: 20001 }, ..with_activator() };
    let steps = vec![
        Step::get(HPA).not_found(),
        Step::apply(HPA),
        Step::get(DEPLOY).not_found(),
        Step::apply(DEPLOY).reply(200, dep_reply),
        Step::get(SERVICE).not_found(),
        Step::apply(SERVICE),
        list_activator_slices(&["10.244.0.7"]),
        Step::get(APP_SLICE).not_found(),
        list_app_ports(&[("shop", "web", 20000), ("shop", "cart", 20001)]),
        Step::apply(STATUS).check(|b| {
            let stz = condition(&b["status"], "ScaleToZero");
            assert_eq!((&stz["status"], &stz["reason"]), (&json!("False"), &json!("NoActivatorPort")), "{stz}");
            let msg = stz["message"].as_str().unwrap();
            assert!(msg.contains("all 2 activator ports (20000-20001) are in use"), "{msg}");
            assert!(msg.contains("--activator-ports"), "{msg}");
        }),
        event("ComponentResolved", "Normal"),
    ];
    run_with(app, None, config, steps).await.result.unwrap();
}

/// A child cache whose watches have listed these Deployments and Services, and no HPA.
fn listed(deployments: Vec<Value>, services: Vec<Value>) -> ChildCache {
    fn list<K>(shelf: &Shelf<K>, objects: Vec<Value>)
    where
        K: kube::Resource + serde::Serialize + serde::de::DeserializeOwned,
    {
        shelf.apply(&watcher::Event::Init);
        for obj in objects {
            shelf.apply(&watcher::Event::InitApply(serde_json::from_value(obj).unwrap()));
        }
        shelf.apply(&watcher::Event::InitDone);
    }
    let cache = ChildCache::default();
    list(&cache.deployments, deployments);
    list(&cache.services, services);
    list(&cache.hpas, Vec::new());
    cache
}

/// The status an app has once its children are as `server_deployment` shows them (Ready).
fn settled(spec: Value, dep: &Value) -> WasmApp {
    let bare = app(spec.clone(), None);
    let dep: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(dep.clone()).unwrap();
    let status = desired_status(
        &bare,
        &Observed { deployment: Some(&dep), ..Default::default() },
        &pinned(DIGEST),
        &RenderConfig::default(),
        now(),
    );
    app(spec, Some(serde_json::to_value(&status).unwrap()))
}

#[tokio::test]
async fn children_in_the_cache_are_not_read_again() {
    let spec = json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}});
    let server_dep = server_deployment(&app(spec.clone(), None), &pinned(DIGEST), 1);
    let app = settled(spec, &server_dep);
    let cache = listed(vec![server_dep], vec![owned_service(&app)]);
    // No request: the children come from the cache, no HPA is wanted or listed, the status is unchanged.
    let run = run_cached(rbac::operator(), app, None, Config::default(), Some(cache), Vec::new()).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_cached_child_that_differs_is_applied_without_a_read() {
    let spec = json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}});
    let server_dep = server_deployment(&app(spec.clone(), None), &pinned(DIGEST), 1);
    let app = settled(spec, &server_dep);
    let mut drifted = server_dep.clone();
    drifted["spec"]["template"]["spec"]["containers"][0]["command"] = json!(["oci://ghcr.io/org/other:1"]);
    let cache = listed(vec![drifted], vec![owned_service(&app)]);
    let steps = vec![Step::apply(DEPLOY)
        .check(|b| {
            let c = &b["spec"]["template"]["spec"]["containers"][0];
            assert_eq!(c["command"], json!([format!("oci://ghcr.io/org/hello@{DIGEST}")]));
        })
        .reply(200, server_dep)];
    let run = run_cached(rbac::operator(), app, None, Config::default(), Some(cache), steps).await;
    assert_eq!(run.result.unwrap(), Action::requeue(Duration::from_secs(300)));
}

#[tokio::test]
async fn a_wanted_child_missing_from_the_cache_is_still_looked_for() {
    let spec = json!({"component": format!("ghcr.io/org/hello@{DIGEST}"), "http": {}});
    let server_dep = server_deployment(&app(spec.clone(), None), &pinned(DIGEST), 1);
    let app = settled(spec, &server_dep);
    // Not in the cache (the watch sees only objects with our labels), but there: someone else's Service.
    let foreign = json!({"apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "hello", "namespace": "apps"}, "spec": {"ports": [{"port": 80}]}});
    let cache = listed(vec![server_dep], Vec::new());
    let steps = vec![
        Step::get(SERVICE).reply(200, foreign),
        Step::apply(STATUS).check(|b| assert_eq!(condition(&b["status"], "Degraded")["reason"], "NameConflict")),
        event("NameConflict", "Warning"),
    ];
    let run = run_cached(rbac::operator(), app, None, Config::default(), Some(cache), steps).await;
    assert_eq!(run.result.unwrap_err().category(), "NameConflict");
}
