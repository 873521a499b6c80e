//! `KubeTargets` against a scripted API server: the lists it makes (each allowed by the operator's RBAC in
//! deploy/) and the URLs it derives.

mod support;

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use serde_json::{json, Value};
use support::rbac;

use wasmkube_operator::demand::{DemandSettings, KubeTargets, Targets};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// Expect one GET of `path` whose query contains `label_selector`, and answer `status` with `reply`.
async fn expect_list(handle: &mut Handle, path: &str, label_selector: &str, status: u16, reply: Value) {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("expected GET {path}, got no request"))
        .unwrap_or_else(|| panic!("client dropped before GET {path}"));
    rbac::assert_allowed(&rbac::operator(), &req, false);
    assert_eq!(req.method(), "GET");
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or_default();
    let selector = form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "labelSelector").map(|(_, v)| v);
    assert_eq!(selector.as_deref(), Some(label_selector), "{path}?{query}");
    let body = Body::from(serde_json::to_vec(&reply).unwrap());
    send.send_response(Response::builder().status(status).body(body).unwrap());
}

fn pod(host_ip: &str) -> Value {
    json!({"metadata": {"name": "p", "namespace": "apps"}, "status": {"hostIP": host_ip}})
}

fn pod_list(items: Vec<Value>) -> Value {
    json!({"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": items})
}

fn slice_list(endpoints: Value) -> Value {
    json!({"kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": {},
           "items": [{"metadata": {"name": "wasmkube-activator-abc"}, "addressType": "IPv4", "endpoints": endpoints}]})
}

const POD_SELECTOR: &str = "app.kubernetes.io/managed-by=wasmkube-operator";
const SLICE_SELECTOR: &str = "kubernetes.io/service-name=wasmkube-activator";
const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/wasmkube-system/endpointslices";

#[tokio::test]
async fn nodes_of_all_namespaces_and_ready_activators() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let targets =
        KubeTargets::new(Client::new(service, "default"), None, "wasmkube-system", &DemandSettings::default());
    let server = tokio::spawn(async move {
        expect_list(
            &mut handle,
            "/api/v1/pods",
            POD_SELECTOR,
            200,
            pod_list(vec![pod("10.0.0.2"), pod("10.0.0.1"), pod("10.0.0.2")]),
        )
        .await;
        expect_list(
            &mut handle,
            SLICES,
            SLICE_SELECTOR,
            200,
            slice_list(json!([
                {"addresses": ["10.244.0.7"], "conditions": {"ready": true}},
                {"addresses": ["10.244.0.8"], "conditions": {"ready": false}},
            ])),
        )
        .await;
    });
    let urls = targets.targets().await.unwrap();
    server.await.unwrap();
    assert_eq!(
        urls,
        ["http://10.0.0.1:9464/metrics", "http://10.0.0.2:9464/metrics", "http://10.244.0.7:8080/metrics"]
    );
}

#[tokio::test]
async fn watched_namespace_only_and_errors_name_the_list() {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let settings = DemandSettings { node_metrics_port: 19464, ..DemandSettings::default() };
    let targets = KubeTargets::new(Client::new(service, "default"), Some("apps"), "wasmkube-system", &settings);
    let server = tokio::spawn(async move {
        expect_list(&mut handle, "/api/v1/namespaces/apps/pods", POD_SELECTOR, 200, pod_list(vec![pod("10.0.0.3")]))
            .await;
        let forbidden = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                               "message": "endpointslices is forbidden", "reason": "Forbidden", "code": 403});
        expect_list(&mut handle, SLICES, SLICE_SELECTOR, 403, forbidden).await;
    });
    let err = targets.targets().await.expect_err("a forbidden list fails the round");
    server.await.unwrap();
    assert!(err.to_string().contains("EndpointSlices of Service wasmkube-activator"), "{err}");
}
