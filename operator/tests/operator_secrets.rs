//! The Secrets the operator fills itself (the metrics API's certificates, with its CA then put into the
//! APIService's `caBundle`; the node metrics token), against a scripted API server: every request must be one the chart's RBAC lets the operator make (deploy/), and the
//! replies are the real server's (an empty Secret has no `data`, a stale write is a 409 Conflict).

mod support;

use std::time::Duration;

use http::{Request, Response};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::client::Body;
use kube::{Api, Client};
use serde_json::{json, Value};
use support::rbac;

use wasmkube_operator::demand::node_token;
use wasmkube_operator::external_metrics::certs::{service_dns_names, Certs, Renewal};
use wasmkube_operator::external_metrics::setup::{ensure_certs, publish_ca};

const NAMESPACE: &str = rbac::CHART_NAMESPACE;
const SECRET: &str = "wasmkube-metrics-api-tls";
const SECRET_PATH: &str = "/api/v1/namespaces/wasmkube-system/secrets/wasmkube-metrics-api-tls";
const API_SERVICE_PATH: &str = "/apis/apiregistration.k8s.io/v1/apiservices/v1beta1.external.metrics.k8s.io";

/// An expected request (method, path), a check of its body, and the reply (status, body).
type Step = (&'static str, &'static str, Box<dyn FnOnce(&Value) + Send>, u16, Value);

fn step(method: &'static str, path: &'static str, status: u16, reply: Value) -> Step {
    (method, path, Box::new(|_| {}), status, reply)
}

async fn scripted(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, steps: Vec<Step>) {
    let operator = rbac::operator();
    for (i, (method, path, check, status, reply)) in steps.into_iter().enumerate() {
        let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("step {i}: expected {method} {path}, got no request"))
            .unwrap();
        assert_eq!((req.method().as_str(), req.uri().path()), (method, path), "step {i}");
        rbac::assert_allowed(&operator, &req, false);
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Value = if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
        check(&body);
        send.send_response(
            Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
        );
    }
    if let Ok(Some((req, _))) = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await {
        panic!("unexpected extra request {} {}", req.method(), req.uri());
    }
}

fn scripted_client(steps: Vec<Step>) -> (Client, tokio::task::JoinHandle<()>) {
    let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(mock, "default"), tokio::spawn(scripted(handle, steps)))
}

async fn finish(server: tokio::task::JoinHandle<()>) {
    if let Err(panic) = server.await {
        std::panic::resume_unwind(panic.into_panic());
    }
}

fn names() -> Vec<String> {
    service_dns_names("wasmkube-metrics-api", NAMESPACE, "cluster.local")
}

/// The Secret as the API server returns it; `data: None` is the chart's empty Secret (the server omits it).
fn secret(resource_version: &str, certs: Option<&Certs>) -> Value {
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": SECRET, "namespace": NAMESPACE, "resourceVersion": resource_version, "uid": "u-1"},
    });
    if let Some(certs) = certs {
        let data: serde_json::Map<String, Value> = certs
            .to_data()
            .into_iter()
            .map(|(k, v)| (k, serde_json::to_value(k8s_openapi::ByteString(v)).unwrap()))
            .collect();
        secret["data"] = Value::Object(data);
    }
    secret
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
           "reason": reason, "details": {"name": SECRET, "kind": "secrets"}, "code": code})
}

fn certs_in(body: &Value) -> Certs {
    let secret: Secret = serde_json::from_value(body.clone()).unwrap();
    let data = secret.data.unwrap().into_iter().map(|(k, v)| (k, v.0)).collect();
    Certs::from_data(&data).expect("the written Secret holds all four keys")
}

#[tokio::test]
async fn the_charts_empty_secret_is_filled_once() {
    let write: Step = (
        "PUT",
        SECRET_PATH,
        Box::new(|body| {
            assert_eq!(body["metadata"]["resourceVersion"], "7", "a compare-and-swap on what was read");
            assert_eq!(certs_in(body).renewal(&names(), time::OffsetDateTime::now_utc()), Renewal::None);
        }),
        200,
        secret("8", None),
    );
    let (client, server) = scripted_client(vec![step("GET", SECRET_PATH, 200, secret("7", None)), write]);
    let certs = ensure_certs(&Api::<Secret>::namespaced(client, NAMESPACE), SECRET, &names()).await.unwrap();
    finish(server).await;
    assert_eq!(certs.renewal(&names(), time::OffsetDateTime::now_utc()), Renewal::None);

    // The next start reads them and writes nothing.
    let (client, server) = scripted_client(vec![step("GET", SECRET_PATH, 200, secret("8", Some(&certs)))]);
    let again = ensure_certs(&Api::<Secret>::namespaced(client, NAMESPACE), SECRET, &names()).await.unwrap();
    finish(server).await;
    assert_eq!(again, certs);
}

#[tokio::test]
async fn a_replica_that_loses_the_race_uses_the_winners_certificates() {
    let winner = Certs::generate(&names(), time::OffsetDateTime::now_utc()).unwrap();
    let conflict = status(
        409,
        "Conflict",
        "Operation cannot be fulfilled on secrets \"wasmkube-metrics-api-tls\": the object has been modified; please \
         apply your changes to the latest version and try again",
    );
    let (client, server) = scripted_client(vec![
        step("GET", SECRET_PATH, 200, secret("7", None)),
        step("PUT", SECRET_PATH, 409, conflict),
        step("GET", SECRET_PATH, 200, secret("8", Some(&winner))),
    ]);
    let certs = ensure_certs(&Api::<Secret>::namespaced(client, NAMESPACE), SECRET, &names()).await.unwrap();
    finish(server).await;
    assert_eq!(certs, winner);
}

#[tokio::test]
async fn certificates_for_other_names_are_renewed_with_the_same_ca() {
    let old =
        Certs::generate(&service_dns_names("old-name", NAMESPACE, "cluster.local"), time::OffsetDateTime::now_utc())
            .unwrap();
    let ca = old.ca_cert.clone();
    let write: Step = (
        "PUT",
        SECRET_PATH,
        Box::new(move |body| assert_eq!(certs_in(body).ca_cert, ca, "the caBundle stays valid")),
        200,
        secret("8", None),
    );
    let (client, server) = scripted_client(vec![step("GET", SECRET_PATH, 200, secret("7", Some(&old))), write]);
    let certs = ensure_certs(&Api::<Secret>::namespaced(client, NAMESPACE), SECRET, &names()).await.unwrap();
    finish(server).await;
    assert_eq!(certs.ca_cert, old.ca_cert);
    assert_ne!(certs.tls_cert, old.tls_cert);
}

#[tokio::test]
async fn a_missing_secret_is_named() {
    let missing = status(404, "NotFound", "secrets \"wasmkube-metrics-api-tls\" not found");
    let (client, server) = scripted_client(vec![step("GET", SECRET_PATH, 404, missing)]);
    let err = ensure_certs(&Api::<Secret>::namespaced(client, NAMESPACE), SECRET, &names()).await.unwrap_err();
    finish(server).await;
    let text = wasmkube_operator::error::message_chain(&err);
    assert!(text.contains("wasmkube-system/wasmkube-metrics-api-tls") && text.contains("chart"), "{text}");
}

fn api_service(ca_bundle: Option<&str>, insecure: Option<bool>) -> Value {
    let mut object = json!({
        "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
        "metadata": {"name": "v1beta1.external.metrics.k8s.io", "resourceVersion": "3"},
        "spec": {"group": "external.metrics.k8s.io", "version": "v1beta1", "groupPriorityMinimum": 100,
                 "versionPriority": 100, "service": {"name": "wasmkube-metrics-api", "namespace": NAMESPACE, "port": 443}},
    });
    if let Some(ca) = ca_bundle {
        object["spec"]["caBundle"] = serde_json::to_value(k8s_openapi::ByteString(ca.as_bytes().to_vec())).unwrap();
    }
    if let Some(insecure) = insecure {
        object["spec"]["insecureSkipTLSVerify"] = json!(insecure);
    }
    object
}

#[tokio::test]
async fn the_ca_goes_into_the_api_service_once() {
    let certs = Certs::generate(&names(), time::OffsetDateTime::now_utc()).unwrap();
    let ca = certs.ca_cert.clone();
    let expected = serde_json::to_value(k8s_openapi::ByteString(ca.as_bytes().to_vec())).unwrap();
    let patch: Step = (
        "PATCH",
        API_SERVICE_PATH,
        Box::new(move |body| {
            assert_eq!(body, &json!({"spec": {"caBundle": expected, "insecureSkipTLSVerify": false}}));
        }),
        200,
        api_service(Some(&ca), Some(false)),
    );
    // An APIService left by an older chart still skips verification: the patch turns that off.
    let (client, server) =
        scripted_client(vec![step("GET", API_SERVICE_PATH, 200, api_service(None, Some(true))), patch]);
    assert!(publish_ca(&Api::<APIService>::all(client), &ca).await.unwrap());
    finish(server).await;

    let (client, server) = scripted_client(vec![step("GET", API_SERVICE_PATH, 200, api_service(Some(&ca), None))]);
    assert!(!publish_ca(&Api::<APIService>::all(client), &ca).await.unwrap(), "nothing to write");
    finish(server).await;
}

const TOKEN_SECRET: &str = "wasmkube-node-metrics-token";
const TOKEN_PATH: &str = "/api/v1/namespaces/wasmkube-system/secrets/wasmkube-node-metrics-token";

fn token_secret(resource_version: &str, token: Option<&str>) -> Value {
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": TOKEN_SECRET, "namespace": NAMESPACE, "resourceVersion": resource_version},
    });
    if let Some(token) = token {
        secret["data"] =
            json!({"token": serde_json::to_value(k8s_openapi::ByteString(token.as_bytes().to_vec())).unwrap()});
    }
    secret
}

#[tokio::test]
async fn the_node_metrics_token_is_made_once() {
    let write: Step = (
        "PUT",
        TOKEN_PATH,
        Box::new(|body| {
            assert_eq!(body["metadata"]["resourceVersion"], "4");
            let secret: Secret = serde_json::from_value(body.clone()).unwrap();
            let token = secret.data.unwrap().remove("token").unwrap().0;
            assert_eq!(token.len(), 64, "32 random bytes in hex");
        }),
        200,
        token_secret("5", None),
    );
    let (client, server) = scripted_client(vec![step("GET", TOKEN_PATH, 200, token_secret("4", None)), write]);
    let token = node_token::ensure(&Api::<Secret>::namespaced(client, NAMESPACE), TOKEN_SECRET).await.unwrap();
    finish(server).await;
    assert!(token.header_value().starts_with("Bearer "));

    let (client, server) = scripted_client(vec![step("GET", TOKEN_PATH, 200, token_secret("5", Some("kept")))]);
    let token = node_token::ensure(&Api::<Secret>::namespaced(client, NAMESPACE), TOKEN_SECRET).await.unwrap();
    finish(server).await;
    assert_eq!(token.header_value(), "Bearer kept", "a token that exists is kept");
}
