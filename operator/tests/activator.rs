//! The activator on loopback: real TCP, small hyper backends, a recording waker, no Kubernetes. Its requests
//! to the scripted API server are checked against the operator's RBAC in deploy/ (the activator runs in the
//! operator's pod, under its ServiceAccount).

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::client::Body as KubeBody;
use serde_json::json;
use support::rbac;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use wasmkube_operator::activator::{
    self, app_from_host, backends_from_slices, original_dst, ports_from_slices, route_key_from_host,
    routes_from_services, Activator, ActivatorMetrics, ActivatorSettings, AppKey, ConnectionLimit, Outcome, ScaleWaker,
    WakeError, WakeOutcome, Waker, Woken, ACTIVATOR_SLICE_MANAGER,
};

const HOST: &str = "hello.apps.svc.cluster.local";
/// Bounds a hang; never a performance assertion.
const HANG: Duration = Duration::from_secs(30);

fn hello() -> AppKey {
    AppKey::new("apps", "hello")
}

/// A waker that records the apps it was asked to wake.
#[derive(Default)]
struct RecordingWaker {
    woken: Mutex<Vec<AppKey>>,
}

#[async_trait]
impl Waker for RecordingWaker {
    async fn wake(&self, app: &AppKey) -> Result<Woken, WakeError> {
        self.woken.lock().unwrap().push(app.clone());
        Ok(Woken::Scaled)
    }
}

impl RecordingWaker {
    fn woken(&self) -> Vec<AppKey> {
        self.woken.lock().unwrap().clone()
    }
}

/// A backend echoing the request (method, URI, `x-test`, `x-forwarded-for`, body) with its own name.
struct Backend {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
}

impl Backend {
    async fn start(name: &'static str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, mut stopped) = oneshot::channel();
        tokio::spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = &mut stopped => break,
                    accepted = listener.accept() => accepted.unwrap().0,
                };
                tokio::spawn(async move {
                    let service = service_fn(move |req| echo(name, req));
                    let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
                });
            }
            // The listener drops here: new connections are refused, open ones finish.
        });
        Self { addr, stop: Some(stop) }
    }

    /// Close the listener (open connections finish their requests).
    fn shut_down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

async fn echo(name: &'static str, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let (method, uri, test, xff, host) =
        (req.method().to_string(), req.uri().to_string(), header("x-test"), header("x-forwarded-for"), header("host"));
    let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
    let text = format!(
        "backend={name}\nmethod={method}\nuri={uri}\nhost={host}\nxff={xff}\nbody={}",
        String::from_utf8_lossy(&body)
    );
    Ok(Response::builder().header("x-echo", test).body(Full::new(Bytes::from(text))).unwrap())
}

/// A port on which nothing listens.
async fn closed_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// An activator serving on loopback; the listener lives until the test ends.
async fn start(settings: ActivatorSettings) -> (Arc<Activator>, Arc<RecordingWaker>, SocketAddr) {
    let waker = Arc::new(RecordingWaker::default());
    let activator = Activator::new(settings, waker.clone(), ActivatorMetrics::default());
    // What the Service feed would give: `apps/hello` is an app of ours (its ClusterIP is not used on loopback).
    activator.state().set_routes([("10.96.0.10:80".parse().unwrap(), hello())].into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(activator::serve(activator.clone(), listener, std::future::pending()));
    (activator, waker, addr)
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: String,
}

/// One request on a fresh connection.
async fn send(addr: SocketAddr, method: &str, path: &str, host: &str, body: &str) -> Reply {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", host)
        .header("x-test", "round-trip")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let response = tokio::time::timeout(HANG, sender.send_request(req)).await.expect("no answer").unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    Reply { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
}

async fn get(addr: SocketAddr) -> Reply {
    send(addr, "GET", "/", HOST, "").await
}

/// Wait (bounded) until `cond` holds; a synchronisation point, not a timing assertion.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + HANG;
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "gave up waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn spawn_reply(fut: impl Future<Output = Reply> + Send + 'static) -> tokio::task::JoinHandle<Reply> {
    tokio::spawn(async move { tokio::time::timeout(HANG, fut).await.expect("request hung") })
}

#[tokio::test]
async fn proxies_directly_when_a_backend_is_known() {
    let backend = Backend::start("a").await;
    let (activator, waker, addr) = start(ActivatorSettings::default()).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);

    let reply = send(addr, "POST", "/echo/path?x=1&y=two", &format!("{HOST}:80"), "the request body").await;

    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("backend=a\n"), "{}", reply.body);
    assert!(reply.body.contains("method=POST\n"), "{}", reply.body);
    assert!(reply.body.contains("uri=/echo/path?x=1&y=two\n"), "{}", reply.body);
    assert!(reply.body.contains(&format!("host={HOST}:80\n")), "{}", reply.body);
    assert!(reply.body.contains("xff=127.0.0.1\n"), "{}", reply.body);
    assert!(reply.body.ends_with("body=the request body"), "{}", reply.body);
    assert_eq!(reply.headers.get("x-echo").unwrap(), "round-trip");
    assert!(waker.woken().is_empty(), "a ready app must not be woken");
    assert_eq!(activator.metrics().requests(Some(&hello()), Outcome::Proxied), 1);
}

#[tokio::test]
async fn a_held_request_is_served_once_a_backend_is_ready() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { wake_interval: Duration::from_secs(3600), ..ActivatorSettings::default() };
    let (activator, waker, addr) = start(settings).await;

    let pending = spawn_reply(get(addr));
    until("the request is held", || activator.metrics().held(&hello()) == 1).await;
    until("the app is woken", || !waker.woken().is_empty()).await;
    assert!(!pending.is_finished(), "the request must wait while there is no backend");
    activator.state().set_backends(&hello(), vec![backend.addr]);

    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    assert!(reply.body.contains("backend=a\n"), "{}", reply.body);
    assert_eq!(waker.woken(), vec![hello()]);
    assert_eq!(activator.metrics().held(&hello()), 0);
}

#[tokio::test]
async fn a_request_past_the_deadline_gets_503_with_retry_after() {
    let settings = ActivatorSettings { hold_timeout: Duration::from_millis(300), ..ActivatorSettings::default() };
    let (activator, waker, addr) = start(settings).await;

    let reply = get(addr).await;

    assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(reply.body, "wasmkube activator: no ready replica of apps/hello within 0.3s\n");
    assert_eq!(reply.headers.get("retry-after").unwrap(), "1");
    assert_eq!(activator.metrics().held(&hello()), 0);
    assert_eq!(activator.metrics().requests(Some(&hello()), Outcome::Timeout), 1);
    assert_eq!(waker.woken(), vec![hello()]);
}

#[tokio::test]
async fn the_request_beyond_the_bound_gets_503_at_once_and_the_others_are_served() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { max_held_per_app: 2, ..ActivatorSettings::default() };
    let (activator, _waker, addr) = start(settings).await;

    let first = spawn_reply(get(addr));
    let second = spawn_reply(get(addr));
    until("two requests are held", || activator.metrics().held(&hello()) == 2).await;

    let third = get(addr).await;
    assert_eq!(third.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(third.body, "wasmkube activator: 2 requests already waiting for apps/hello\n");
    assert_eq!(activator.metrics().requests(Some(&hello()), Outcome::Overflow), 1);
    assert!(!first.is_finished() && !second.is_finished(), "the held requests must still wait");

    activator.state().set_backends(&hello(), vec![backend.addr]);
    for pending in [first, second] {
        let reply = pending.await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    }
    assert_eq!(activator.metrics().held(&hello()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_is_lost_while_backends_switch_under_load() {
    let old = Backend::start("old").await;
    let new = Backend::start("new").await;
    let dead = closed_port().await;
    let settings = ActivatorSettings { retry_interval: Duration::from_millis(10), ..ActivatorSettings::default() };
    let (activator, _waker, addr) = start(settings).await;

    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..16)
        .map(|i| {
            let (stop, served) = (stop.clone(), served.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let body = format!("client {i}");
                    let reply = tokio::time::timeout(HANG, send(addr, "POST", "/load", HOST, &body)).await;
                    match reply {
                        Ok(r) if r.status == StatusCode::OK && r.body.ends_with(&format!("body={body}")) => {
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(r) => failures.push(format!("{} {}", r.status, r.body)),
                        Err(_) => failures.push("hung".to_string()),
                    }
                }
                failures
            })
        })
        .collect();

    // The scenario's steps, paced so that each phase sees traffic; nothing asserts on time.
    let phase = Duration::from_millis(650);
    tokio::time::sleep(phase).await;
    activator.state().set_backends(&hello(), vec![dead, old.addr]);
    tokio::time::sleep(phase).await;
    activator.state().set_backends(&hello(), vec![new.addr, dead]);
    let mut old = old;
    tokio::time::sleep(Duration::from_millis(50)).await;
    old.shut_down();
    tokio::time::sleep(phase).await;
    stop.store(true, Ordering::Relaxed);

    for client in clients {
        let failures = client.await.unwrap();
        assert!(failures.is_empty(), "requests failed: {failures:?}");
    }
    assert!(served.load(Ordering::Relaxed) >= 16, "every client got answers");
    assert_eq!(activator.metrics().held(&hello()), 0);
    let proxied = activator.metrics().requests(Some(&hello()), Outcome::Proxied);
    assert_eq!(proxied, served.load(Ordering::Relaxed) as u64);
}

#[tokio::test]
async fn an_unknown_host_gets_404() {
    let (activator, waker, addr) = start(ActivatorSettings::default()).await;

    for host in ["example.com", "nope.apps.svc.cluster.local", "localhost"] {
        let reply = send(addr, "GET", "/", host, "").await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{host}");
        assert!(reply.body.starts_with("wasmkube activator: no app for this request"), "{}", reply.body);
        assert!(reply.body.contains(host), "{}", reply.body);
    }
    assert_eq!(activator.metrics().requests(None, Outcome::UnknownApp), 3);
    assert!(waker.woken().is_empty());
}

#[tokio::test]
async fn a_backend_failing_after_the_request_was_sent_gives_502() {
    // A "backend" that accepts and closes at once: the connection exists, the HTTP exchange fails.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let backend = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            drop(stream);
        }
    });
    let (activator, _waker, addr) = start(ActivatorSettings::default()).await;
    activator.state().set_backends(&hello(), vec![backend]);

    let reply = get(addr).await;

    assert_eq!(reply.status, StatusCode::BAD_GATEWAY);
    assert!(reply.body.starts_with("wasmkube activator: apps/hello: request to backend 127.0.0.1:"), "{}", reply.body);
    assert_eq!(activator.metrics().requests(Some(&hello()), Outcome::BackendError), 1);
}

#[tokio::test]
async fn routing_falls_back_to_host_without_an_original_destination() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
    let (accepted, _) = listener.accept().await.unwrap();
    assert_eq!(original_dst(&accepted), None, "a loopback connection is not NATed");
    drop(client);

    // The same through the server: a ClusterIP route that does not match still leaves Host routing working.
    let backend = Backend::start("a").await;
    let (activator, _waker, addr) = start(ActivatorSettings::default()).await;
    activator.state().set_routes(
        [("10.96.0.10:80".parse().unwrap(), hello()), ("10.96.0.11:80".parse().unwrap(), AppKey::new("other", "app"))]
            .into(),
    );
    activator.state().set_backends(&hello(), vec![backend.addr]);
    let reply = get(addr).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
}

#[test]
fn host_names_the_app() {
    let app = Some(hello());
    assert_eq!(app_from_host("hello.apps"), app);
    assert_eq!(app_from_host("hello.apps:8080"), app);
    assert_eq!(app_from_host("hello.apps.svc"), app);
    assert_eq!(app_from_host("hello.apps.svc.cluster.local"), app);
    assert_eq!(app_from_host("hello.apps.svc.cluster.local:80"), app);
    assert_eq!(app_from_host("hello.apps.svc.cluster.local."), app);
    assert_eq!(app_from_host("hello.apps.svc.example.org"), app);
    assert_eq!(app_from_host("hello"), None);
    assert_eq!(app_from_host("hello:80"), None);
    assert_eq!(app_from_host("example.com.au"), None);
    assert_eq!(app_from_host("hello.apps.svc..local"), None);
    assert_eq!(app_from_host(".apps"), None);
    assert_eq!(app_from_host("127.0.0.1:8090"), None);
    assert_eq!(app_from_host("[::1]:8090"), None);
    assert_eq!(app_from_host(""), None);
}

fn slice(name: &str, manager: &str, port: (&str, i32), endpoints: serde_json::Value) -> EndpointSlice {
    serde_json::from_value(json!({
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": name,
            "namespace": "apps",
            "labels": {
                "kubernetes.io/service-name": "hello",
                "endpointslice.kubernetes.io/managed-by": manager,
                "app.kubernetes.io/managed-by": "wasmkube-operator",
            },
        },
        "addressType": "IPv4",
        "ports": [{ "name": port.0, "port": port.1, "protocol": "TCP" }],
        "endpoints": endpoints,
    }))
    .unwrap()
}

#[test]
fn backends_come_from_ready_endpoints_of_kubernetes_slices_only() {
    let pods = slice(
        "hello-abc",
        "endpointslice-controller.k8s.io",
        ("http", 8080),
        json!([
            { "addresses": ["10.0.0.1"], "conditions": { "ready": true } },
            { "addresses": ["10.0.0.2"] },
            { "addresses": ["10.0.0.3"], "conditions": { "ready": false, "terminating": true } },
        ]),
    );
    let activator_slice = slice(
        "hello-activator",
        ACTIVATOR_SLICE_MANAGER,
        ("http", 8090),
        json!([{ "addresses": ["10.0.9.9"], "conditions": { "ready": true } }]),
    );
    let other_port = slice(
        "hello-metrics",
        "endpointslice-controller.k8s.io",
        ("metrics", 9000),
        json!([{ "addresses": ["10.0.0.4"] }]),
    );

    let backends = backends_from_slices([&pods, &activator_slice, &other_port]);

    let expected: Vec<SocketAddr> = vec!["10.0.0.1:8080".parse().unwrap(), "10.0.0.2:8080".parse().unwrap()];
    assert_eq!(backends.len(), 1, "{backends:?}");
    assert_eq!(backends.get(&hello()), Some(&expected));
    assert!(backends_from_slices([&activator_slice]).is_empty(), "activator slices never become backends");
}

#[test]
fn routes_map_cluster_ips_and_ports_to_the_app() {
    let svc: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "hello", "namespace": "apps" },
        "spec": {
            "clusterIP": "10.96.0.10",
            "clusterIPs": ["10.96.0.10", "fd00::10"],
            "ports": [{ "name": "http", "port": 80, "targetPort": "http" }],
        },
    }))
    .unwrap();
    let headless: Service = serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": { "name": "headless", "namespace": "apps" },
        "spec": { "clusterIP": "None", "ports": [{ "port": 80 }] },
    }))
    .unwrap();

    let routes = routes_from_services([&svc, &headless]);

    assert_eq!(routes.len(), 2, "{routes:?}");
    assert_eq!(routes.get(&"10.96.0.10:80".parse().unwrap()), Some(&hello()));
    assert_eq!(routes.get(&"[fd00::10]:80".parse().unwrap()), Some(&hello()));
}

const SCALE_PATH: &str = "/apis/wasmkube.dev/v1alpha1/namespaces/apps/wasmapps/hello/scale";

/// The Scale the API server really sends: `spec.replicas` is omitted at 0 (Go `omitempty`), so `spec` is `{}`.
fn real_scale(replicas: i32, resource_version: &str) -> serde_json::Value {
    let spec = if replicas == 0 { json!({}) } else { json!({ "replicas": replicas }) };
    let status = if replicas == 0 {
        json!({ "replicas": 0, "selector": "app.kubernetes.io/managed-by=wasmkube-operator,app.kubernetes.io/name=hello" })
    } else {
        json!({ "replicas": replicas, "selector": "app.kubernetes.io/managed-by=wasmkube-operator,app.kubernetes.io/name=hello" })
    };
    json!({
        "kind": "Scale", "apiVersion": "autoscaling/v1",
        "metadata": { "name": "hello", "namespace": "apps", "uid": "7f3c2d1e-0000-4000-8000-000000000001",
                      "resourceVersion": resource_version, "creationTimestamp": "2026-12-01T20:00:00Z" },
        "spec": spec,
        "status": status,
    })
}

/// One scripted exchange of the scale subresource: the method, the JSON patch expected (PATCH only), the reply.
struct ScaleStep {
    method: &'static str,
    patch: Option<serde_json::Value>,
    status: u16,
    reply: serde_json::Value,
}

fn get_scale(reply: serde_json::Value) -> ScaleStep {
    ScaleStep { method: "GET", patch: None, status: 200, reply }
}

fn patch_scale(resource_version: &str, status: u16, reply: serde_json::Value) -> ScaleStep {
    let patch = json!([
        { "op": "test", "path": "/metadata/resourceVersion", "value": resource_version },
        { "op": "add", "path": "/spec/replicas", "value": 1 },
    ]);
    ScaleStep { method: "PATCH", patch: Some(patch), status, reply }
}

/// Run `wake` once against a scripted API server that expects exactly `steps`.
async fn wake_against(steps: Vec<ScaleStep>) -> Result<Woken, WakeError> {
    let (mock, mut handle) = tower_test::mock::pair::<Request<KubeBody>, Response<KubeBody>>();
    let waker = ScaleWaker::new(kube::Client::new(mock, "default"));
    let server = tokio::spawn(async move {
        for (i, step) in steps.into_iter().enumerate() {
            let (req, send) = tokio::time::timeout(HANG, handle.next_request()).await.unwrap().unwrap();
            rbac::assert_allowed(&rbac::operator(), &req, false);
            assert_eq!((req.method().as_str(), req.uri().path()), (step.method, SCALE_PATH), "step {i}");
            if let Some(patch) = step.patch {
                assert_eq!(req.headers().get("content-type").unwrap(), "application/json-patch+json");
                let body: serde_json::Value =
                    serde_json::from_slice(&req.into_body().collect_bytes().await.unwrap()).unwrap();
                assert_eq!(body, patch, "step {i}");
            }
            let reply = serde_json::to_vec(&step.reply).unwrap();
            send.send_response(Response::builder().status(step.status).body(KubeBody::from(reply)).unwrap());
        }
        let extra = tokio::time::timeout(Duration::from_millis(200), handle.next_request()).await;
        assert!(!matches!(extra, Ok(Some(_))), "unexpected extra request to the API server");
    });
    let result = waker.wake(&hello()).await;
    server.await.unwrap();
    result
}

#[tokio::test]
async fn the_scale_waker_scales_an_app_at_zero_as_the_api_server_sends_it() {
    let mut scaled = real_scale(1, "4712");
    scaled["status"]["replicas"] = json!(0);
    let woken = wake_against(vec![get_scale(real_scale(0, "4711")), patch_scale("4711", 200, scaled)]).await;
    assert_eq!(woken.unwrap(), Woken::Scaled);
}

#[tokio::test]
async fn the_scale_waker_leaves_an_app_that_is_up_alone() {
    let woken = wake_against(vec![get_scale(real_scale(1, "4711"))]).await;
    assert_eq!(woken.unwrap(), Woken::AlreadyAwake(1));
}

#[tokio::test]
async fn the_scale_waker_reads_again_after_a_conflict() {
    let conflict = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Conflict", "code": 409,
        "message": "Operation cannot be fulfilled on wasmapps.wasmkube.dev \"hello\": the object has been modified; please apply your changes to the latest version and try again",
        "details": { "name": "hello", "group": "wasmkube.dev", "kind": "wasmapps" },
    });
    // Still at zero after the conflict: patch again against the new version.
    let woken = wake_against(vec![
        get_scale(real_scale(0, "4711")),
        patch_scale("4711", 409, conflict.clone()),
        get_scale(real_scale(0, "4713")),
        patch_scale("4713", 200, real_scale(1, "4714")),
    ])
    .await;
    assert_eq!(woken.unwrap(), Woken::Scaled);
    // Scaled up by someone else meanwhile (the HPA): nothing more to do.
    let woken = wake_against(vec![
        get_scale(real_scale(0, "4711")),
        patch_scale("4711", 409, conflict),
        get_scale(real_scale(2, "4713")),
    ])
    .await;
    assert_eq!(woken.unwrap(), Woken::AlreadyAwake(2));
}

#[tokio::test]
async fn the_scale_waker_reports_a_forbidden_read_in_words() {
    let forbidden = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "wasmapps.wasmkube.dev \"hello\" is forbidden: User \"system:serviceaccount:wasmkube-system:wasmkube-operator\" cannot get resource \"wasmapps/scale\" in API group \"wasmkube.dev\" in the namespace \"apps\"",
    });
    let err =
        wake_against(vec![ScaleStep { method: "GET", patch: None, status: 403, reply: forbidden }]).await.unwrap_err();
    let message = wasmkube_operator::error::message_chain(&err);
    assert!(message.starts_with("reading the scale of apps/hello"), "{message}");
    assert!(message.contains("cannot get resource \"wasmapps/scale\""), "{message}");
}

/// A waker that always fails, as the API server would when it is unreachable.
struct FailingWaker;

#[async_trait]
impl Waker for FailingWaker {
    async fn wake(&self, app: &AppKey) -> Result<Woken, WakeError> {
        Err(WakeError::Contended { app: app.clone(), attempts: 3 })
    }
}

#[tokio::test]
async fn every_wake_is_counted_by_outcome() {
    let (activator, _waker, addr) = start(ActivatorSettings::default()).await;
    let backend = Backend::start("a").await;
    let pending = spawn_reply(get(addr));
    until("the wake is counted", || activator.metrics().wakes(&hello(), WakeOutcome::Scaled) == 1).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);
    assert_eq!(pending.await.unwrap().status, StatusCode::OK);

    let failing = Activator::new(
        ActivatorSettings { hold_timeout: Duration::from_millis(200), ..ActivatorSettings::default() },
        Arc::new(FailingWaker),
        ActivatorMetrics::default(),
    );
    failing.state().set_routes([("10.96.0.10:80".parse().unwrap(), hello())].into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let failing_addr = listener.local_addr().unwrap();
    tokio::spawn(activator::serve(failing.clone(), listener, std::future::pending()));
    assert_eq!(get(failing_addr).await.status, StatusCode::SERVICE_UNAVAILABLE);
    until("the failed wake is counted", || failing.metrics().wakes(&hello(), WakeOutcome::Failed) == 1).await;
    assert_eq!(failing.metrics().wakes(&hello(), WakeOutcome::Scaled), 0);
}

/// A port free on loopback right now.
async fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn each_app_port_routes_to_its_app_whatever_the_host() {
    let (a, b) = (Backend::start("a").await, Backend::start("b").await);
    let (activator, _waker, _main) = start(ActivatorSettings::default()).await;
    let other = AppKey::new("shop", "web");
    activator.state().set_backends(&hello(), vec![a.addr]);
    activator.state().set_backends(&other, vec![b.addr]);
    let (hello_port, other_port) = (free_port().await, free_port().await);
    activator.state().set_ports([(hello_port, hello()), (other_port, other.clone())].into());
    tokio::spawn(activator::serve_app_ports(activator.clone(), "127.0.0.1".parse().unwrap(), std::future::pending()));
    let hello_addr = SocketAddr::from(([127, 0, 0, 1], hello_port));
    let other_addr = SocketAddr::from(([127, 0, 0, 1], other_port));
    until("the app ports listen", || {
        std::net::TcpStream::connect(hello_addr).is_ok() && std::net::TcpStream::connect(other_addr).is_ok()
    })
    .await;

    // What an ingress controller sends (the public name), and what a client of the ClusterIP sends.
    for host in ["shop.example.com", "10.96.0.10", "10.96.0.99:80"] {
        let reply = send(hello_addr, "GET", "/x", host, "").await;
        assert_eq!(reply.status, StatusCode::OK, "{host}: {}", reply.body);
        assert!(reply.body.starts_with("backend=a\n"), "{host}: {}", reply.body);
        assert!(reply.body.contains(&format!("host={host}\n")), "the backend sees the client's Host: {}", reply.body);
    }
    let reply = send(other_addr, "GET", "/", "hello.apps.svc.cluster.local", "").await;
    assert!(reply.body.starts_with("backend=b\n"), "the port wins over the Host: {}", reply.body);

    // The other app's slice went away. kube-proxy learns of it later than we do, so the port keeps serving that
    // app for PORT_LINGER (on a real cluster a closed port refused a connection 3 ms after the switch), then closes.
    activator.state().set_ports([(hello_port, hello())].into());
    let reply = send(other_addr, "GET", "/", "shop.example.com", "").await;
    assert!(reply.body.starts_with("backend=b\n"), "a retired port still serves its app: {}", reply.body);
    let lingering = activator.state().lingering_ports();
    assert_eq!(lingering.iter().map(|(p, _)| *p).collect::<Vec<_>>(), [other_port]);
    let closes_in = lingering[0].1.saturating_duration_since(std::time::Instant::now());
    assert!(closes_in > activator::PORT_LINGER - Duration::from_secs(5) && closes_in <= activator::PORT_LINGER);
    assert_eq!(send(hello_addr, "GET", "/", "x", "").await.status, StatusCode::OK);
    // The port given back to its app stops lingering.
    activator.state().set_ports([(hello_port, hello()), (other_port, other.clone())].into());
    assert!(activator.state().lingering_ports().is_empty());
}

#[tokio::test]
async fn a_held_request_on_an_app_port_wakes_that_app() {
    let (activator, waker, _main) = start(ActivatorSettings::default()).await;
    let port = free_port().await;
    activator.state().set_ports([(port, hello())].into());
    tokio::spawn(activator::serve_app_ports(activator.clone(), "127.0.0.1".parse().unwrap(), std::future::pending()));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    until("the app port listens", || std::net::TcpStream::connect(addr).is_ok()).await;

    let pending = spawn_reply(send(addr, "GET", "/", "shop.example.com", ""));
    until("the request is held", || activator.metrics().held(&hello()) == 1).await;
    until("the app is woken", || waker.woken() == vec![hello()]).await;
    let backend = Backend::start("a").await;
    activator.state().set_backends(&hello(), vec![backend.addr]);
    assert_eq!(pending.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn a_cluster_ip_in_host_routes_on_the_main_port() {
    let backend = Backend::start("a").await;
    let (activator, _waker, addr) = start(ActivatorSettings::default()).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);
    assert_eq!(send(addr, "GET", "/", "10.96.0.10", "").await.status, StatusCode::OK);
    assert_eq!(send(addr, "GET", "/", "10.96.0.10:80", "").await.status, StatusCode::OK);
    assert_eq!(send(addr, "GET", "/", "10.96.0.10:8080", "").await.status, StatusCode::NOT_FOUND);
    assert_eq!(route_key_from_host("[fd00::10]"), Some("[fd00::10]:80".parse().unwrap()));
    assert_eq!(route_key_from_host("hello.apps"), None);
}

#[test]
fn app_ports_come_from_activator_slices_only() {
    let mine = slice("hello-activator", ACTIVATOR_SLICE_MANAGER, ("http", 20480), json!([]));
    let pods = slice("hello-abc", "endpointslice-controller.k8s.io", ("http", 8080), json!([]));
    let mut rival = slice("zz-activator", ACTIVATOR_SLICE_MANAGER, ("http", 20480), json!([]));
    rival.metadata.labels.as_mut().unwrap().insert("kubernetes.io/service-name".into(), "zz".into());
    // Two slices on one port: the app that sorts first has it, whatever the order they are listed in.
    for slices in [[&mine, &pods, &rival], [&rival, &pods, &mine]] {
        let ports = ports_from_slices(slices);
        assert_eq!(ports.len(), 1, "{ports:?}");
        assert_eq!(ports.get(&20480), Some(&hello()));
    }
}

#[tokio::test]
async fn the_kubernetes_feed_fills_routes_and_backends() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<KubeBody>, Response<KubeBody>>();
    let client = kube::Client::new(mock, "default");
    let activator =
        Activator::new(ActivatorSettings::default(), Arc::new(RecordingWaker::default()), ActivatorMetrics::default());
    let (stop, stopped) = oneshot::channel::<()>();
    let feed = tokio::spawn(activator::watch::run(client, activator.clone(), async move {
        let _ = stopped.await;
    }));

    let services = json!({
        "apiVersion": "v1", "kind": "ServiceList", "metadata": { "resourceVersion": "10" },
        "items": [{
            "metadata": { "name": "hello", "namespace": "apps", "labels": { "app.kubernetes.io/managed-by": "wasmkube-operator" } },
            "spec": { "clusterIP": "10.96.0.10", "ports": [{ "name": "http", "port": 80 }] },
        }],
    });
    let pod_slice = serde_json::to_value(slice(
        "hello-abc",
        "endpointslice-controller.k8s.io",
        ("http", 8080),
        json!([{ "addresses": ["10.0.0.1"], "conditions": { "ready": true } }]),
    ))
    .unwrap();
    let activator_slice = serde_json::to_value(slice(
        "hello-activator",
        ACTIVATOR_SLICE_MANAGER,
        ("http", 20480),
        json!([{ "addresses": ["10.0.9.9"] }]),
    ))
    .unwrap();
    let slices = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSliceList", "metadata": { "resourceVersion": "11" },
        "items": [pod_slice, activator_slice],
    });

    // Answer the two lists; keep the watches open (unanswered) so the feed keeps what it listed.
    let server = tokio::spawn(async move {
        let mut open_watches = Vec::new();
        let mut lists = 0;
        while lists < 2 || open_watches.len() < 2 {
            let (req, send) = tokio::time::timeout(HANG, handle.next_request()).await.unwrap().unwrap();
            rbac::assert_allowed(&rbac::operator(), &req, false);
            let (path, query) = (req.uri().path().to_string(), req.uri().query().unwrap_or("").to_string());
            assert!(
                query.contains("labelSelector=app.kubernetes.io%2Fmanaged-by%3Dwasmkube-operator"),
                "{path}?{query}"
            );
            if query.contains("watch=true") {
                open_watches.push(send);
                continue;
            }
            let reply = match path.as_str() {
                "/api/v1/services" => &services,
                "/apis/discovery.k8s.io/v1/endpointslices" => &slices,
                other => panic!("unexpected request {other}?{query}"),
            };
            lists += 1;
            send.send_response(Response::builder().body(KubeBody::from(serde_json::to_vec(reply).unwrap())).unwrap());
        }
        open_watches
    });

    until("routes and backends arrive", || {
        activator.state().route("10.96.0.10:80".parse().unwrap()) == Some(hello())
            && !activator.state().backends_in_order(&hello()).is_empty()
    })
    .await;
    let backend: SocketAddr = "10.0.0.1:8080".parse().unwrap();
    assert_eq!(activator.state().backends_in_order(&hello()), vec![backend], "activator slices are ignored");
    assert_eq!(activator.state().app_for_port(20480), Some(hello()), "the activator slice gives the app's port");

    let _open_watches = server.await.unwrap();
    let _ = stop.send(());
    tokio::time::timeout(HANG, feed).await.expect("the feed stops on shutdown").unwrap();
}

#[tokio::test]
async fn shutdown_lets_held_requests_finish() {
    let backend = Backend::start("a").await;
    let waker = Arc::new(RecordingWaker::default());
    let activator = Activator::new(ActivatorSettings::default(), waker, ActivatorMetrics::default());
    activator.state().set_routes([("10.96.0.10:80".parse().unwrap(), hello())].into());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let server = tokio::spawn(activator::serve(activator.clone(), listener, async move {
        let _ = stopped.await;
    }));

    let pending = spawn_reply(get(addr));
    until("the request is held", || activator.metrics().held(&hello()) == 1).await;
    let _ = stop.send(());
    until("the listener is closed", || std::net::TcpStream::connect(addr).is_err()).await;
    assert!(!server.is_finished(), "serve must wait for the held request");

    activator.state().set_backends(&hello(), vec![backend.addr]);
    let reply = pending.await.unwrap();
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.body);
    tokio::time::timeout(HANG, server).await.expect("serve returns once drained").unwrap();
}

/// Reads until the peer closes the connection (or `HANG` passes); what it sent before closing.
async fn read_until_closed(stream: &mut TcpStream) -> Option<String> {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(HANG, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.ok().map(|()| String::from_utf8_lossy(&got).into_owned())
}

#[tokio::test]
async fn a_slow_client_loses_its_connection_after_the_header_timeout() {
    use tokio::io::AsyncWriteExt;
    let settings =
        ActivatorSettings { header_read_timeout: Duration::from_millis(300), ..ActivatorSettings::default() };
    let (_activator, _waker, addr) = start(settings).await;

    // Half a request head, then nothing: a slow-loris client.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(b"GET / HTTP/1.1\r\nHost: hello.apps").await.unwrap();
    let answer = read_until_closed(&mut slow).await.expect("the activator kept a stalled connection open");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");

    // A connection that never sends a byte is closed as well.
    let mut silent = TcpStream::connect(addr).await.unwrap();
    assert!(read_until_closed(&mut silent).await.is_some(), "the activator kept a silent connection open");
}

#[tokio::test]
async fn a_request_head_over_the_bound_gets_431() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { max_header_bytes: 4096, ..ActivatorSettings::default() };
    let (activator, _waker, addr) = start(settings).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .uri("/")
        .header("host", HOST)
        .header("x-big", "a".repeat(8192))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let response = tokio::time::timeout(HANG, sender.send_request(req)).await.expect("no answer").unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    assert_eq!(get(addr).await.status, StatusCode::OK, "a request under the bound is served");
}

#[tokio::test]
async fn the_bound_of_all_held_requests_covers_every_app() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { max_held: 1, wake_interval: Duration::from_secs(3600), ..Default::default() };
    let (activator, _waker, addr) = start(settings).await;
    let other = AppKey::new("shop", "web");
    activator.state().set_routes(
        [("10.96.0.10:80".parse().unwrap(), hello()), ("10.96.0.11:80".parse().unwrap(), other.clone())].into(),
    );

    let first = spawn_reply(get(addr));
    until("one request is held", || activator.metrics().held(&hello()) == 1).await;
    let refused = send(addr, "GET", "/", "web.shop.svc.cluster.local", "").await;
    assert_eq!(refused.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.body, "wasmkube activator: 1 requests already waiting in all\n");
    assert_eq!(refused.headers["retry-after"], "1");
    assert_eq!(activator.metrics().requests(Some(&other), Outcome::Overflow), 1);

    activator.state().set_backends(&hello(), vec![backend.addr]);
    assert_eq!(first.await.unwrap().status, StatusCode::OK);
}

#[tokio::test]
async fn connections_beyond_the_bound_are_closed_at_once() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { max_connections: 2, ..ActivatorSettings::default() };
    let (activator, _waker, addr) = start(settings).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);

    let _one = TcpStream::connect(addr).await.unwrap();
    let two = TcpStream::connect(addr).await.unwrap();
    let mut three = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut three).await.as_deref(), Some(""), "closed without an answer");
    assert_eq!(activator.metrics().refused(ConnectionLimit::All), 1);

    drop(two);
    // The server notices the close on its own schedule; a new connection is served once it has.
    let mut served = false;
    for _ in 0..100 {
        let stream = TcpStream::connect(addr).await.unwrap();
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await else {
            continue;
        };
        tokio::spawn(conn);
        let req = Request::builder().uri("/").header("host", HOST).body(Full::new(Bytes::new())).unwrap();
        if let Ok(Ok(reply)) = tokio::time::timeout(HANG, sender.send_request(req)).await {
            served = reply.status() == StatusCode::OK;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(served, "a closed connection gives its place back");
}

#[tokio::test]
async fn an_app_port_has_its_own_connection_bound() {
    let backend = Backend::start("a").await;
    let settings = ActivatorSettings { max_connections_per_app: 1, ..ActivatorSettings::default() };
    let (activator, _waker, main) = start(settings).await;
    activator.state().set_backends(&hello(), vec![backend.addr]);
    let port = free_port().await;
    activator.state().set_ports([(port, hello())].into());
    tokio::spawn(activator::serve_app_ports(activator.clone(), "127.0.0.1".parse().unwrap(), std::future::pending()));
    let addr = SocketAddr::from(([127, 0, 0, 1], port));

    // A kept-alive connection that has been served holds the port's one place (earlier tries may find the
    // listener not yet open, or the place of a try the server has not seen closed yet).
    let mut holder = None;
    for _ in 0..200 {
        if let Ok(stream) = TcpStream::connect(addr).await {
            if let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
                tokio::spawn(conn);
                let req = Request::builder().uri("/").header("host", HOST).body(Full::new(Bytes::new())).unwrap();
                if let Ok(Ok(reply)) = tokio::time::timeout(HANG, sender.send_request(req)).await {
                    assert_eq!(reply.status(), StatusCode::OK);
                    holder = Some(sender);
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(holder.is_some(), "the app port never served a request");
    let refused_before = activator.metrics().refused(ConnectionLimit::App);
    let mut second = TcpStream::connect(addr).await.unwrap();
    assert_eq!(read_until_closed(&mut second).await.as_deref(), Some(""), "the second connection is closed at once");
    assert_eq!(activator.metrics().refused(ConnectionLimit::App), refused_before + 1);
    assert_eq!(get(main).await.status, StatusCode::OK, "the main port is not bound by an app port's limit");
}
