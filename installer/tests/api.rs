//! The installer's Kubernetes API calls against a scripted API server: every request is checked (method,
//! path, content type, body) in order, and a missing or extra request fails the test, as does one that the
//! chart's RBAC (deploy/, the hook in deploy/hooks/) forbids the installer's or the uninstall hook's
//! ServiceAccount.

#[path = "../../operator/tests/support/rbac.rs"]
mod rbac;

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use kube::Client;
use rbac::Permissions;
use serde_json::{json, Value};
use wasmkube_node_installer::{label, metrics_token, rollout};

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// One expected request and the reply to it.
struct Step {
    method: &'static str,
    path: &'static str,
    content_type: Option<&'static str>,
    body: Option<Value>,
    reply: Value,
}

async fn verify(mut handle: Handle, steps: Vec<Step>, rbac: Permissions) {
    for (i, step) in steps.into_iter().enumerate() {
        let next = tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await;
        let (req, send) = next
            .unwrap_or_else(|_| panic!("step {i}: expected {} {}, got no request", step.method, step.path))
            .unwrap_or_else(|| panic!("step {i}: client dropped before {} {}", step.method, step.path));
        assert_eq!((req.method().as_str(), req.uri().path()), (step.method, step.path), "step {i}");
        rbac::assert_allowed(&rbac, &req, false);
        let content_type = req.headers().get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
        assert_eq!(content_type, step.content_type, "step {i}: content type");
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let body: Option<Value> = (!bytes.is_empty()).then(|| serde_json::from_slice(&bytes).unwrap());
        assert_eq!(body, step.body, "step {i}: body");
        send.send_response(Response::builder().body(Body::from(serde_json::to_vec(&step.reply).unwrap())).unwrap());
    }
    if let Ok(Some((req, _))) = tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await {
        panic!("unexpected extra request {} {}", req.method(), req.uri());
    }
}

fn mock() -> (Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (Client::new(service, "default"), handle)
}

fn node(labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": labels}})
}

#[tokio::test]
async fn the_label_is_set_and_removed_with_merge_patches() {
    for (ready, body, labels) in [
        (
            true,
            json!({"metadata": {"labels": {"wasmkube.dev/runtime": "ready"}}}),
            json!({"wasmkube.dev/runtime": "ready"}),
        ),
        (false, json!({"metadata": {"labels": {"wasmkube.dev/runtime": null}}}), json!({})),
    ] {
        let (client, handle) = mock();
        let server = tokio::spawn(verify(
            handle,
            vec![Step {
                method: "PATCH",
                path: "/api/v1/nodes/n1",
                content_type: Some("application/merge-patch+json"),
                body: Some(body),
                reply: node(labels),
            }],
            rbac::service_account(rbac::INSTALLER),
        ));
        label::set_label(client, "n1", ready).await.unwrap();
        server.await.unwrap();
    }
}

fn daemonset(generation: i64, observed: i64, updated: i32, ready: i32) -> Value {
    json!({"apiVersion": "apps/v1", "kind": "DaemonSet",
           "metadata": {"name": DS_NAME, "namespace": rbac::CHART_NAMESPACE, "generation": generation},
           "spec": {"selector": {"matchLabels": {"a": "b"}}, "template": {"spec": {"containers": []}}},
           "status": {"observedGeneration": observed, "desiredNumberScheduled": 2, "currentNumberScheduled": 2,
                      "numberMisscheduled": 0, "updatedNumberScheduled": updated, "numberReady": ready}})
}

/// The chart's node-installer DaemonSet, which the hook's Role names.
const DS_NAME: &str = rbac::INSTALLER;
const DS: &str = "/apis/apps/v1/namespaces/wasmkube-system/daemonsets/wasmkube-node-installer";

fn get(reply: Value) -> Step {
    Step { method: "GET", path: DS, content_type: None, body: None, reply }
}

/// The switch of the DaemonSet to uninstall mode.
fn patch_to_uninstall(reply: Value) -> Step {
    Step {
        method: "PATCH",
        path: DS,
        content_type: Some("application/strategic-merge-patch+json"),
        body: Some(rollout::mode_patch("uninstall")),
        reply,
    }
}

#[tokio::test]
async fn uninstall_everywhere_switches_the_daemonset_and_waits_for_every_node() {
    let (client, handle) = mock();
    let patch = patch_to_uninstall(daemonset(2, 1, 0, 2));
    let steps = vec![patch, get(daemonset(2, 1, 0, 2)), get(daemonset(2, 2, 1, 1)), get(daemonset(2, 2, 2, 2))];
    let server = tokio::spawn(verify(handle, steps, rbac::service_account(rbac::UNINSTALL_HOOK)));
    let (ns, name) = (rbac::CHART_NAMESPACE, DS_NAME);
    rollout::uninstall_everywhere(client, ns, name, Duration::from_secs(5), Duration::from_millis(1)).await.unwrap();
    server.await.unwrap();
}

#[tokio::test]
async fn uninstall_everywhere_gives_up_after_its_timeout() {
    let (client, handle) = mock();
    let patch = patch_to_uninstall(daemonset(2, 2, 1, 1));
    let steps = vec![patch, get(daemonset(2, 2, 1, 1))];
    let server = tokio::spawn(verify(handle, steps, rbac::service_account(rbac::UNINSTALL_HOOK)));
    let (ns, name) = (rbac::CHART_NAMESPACE, DS_NAME);
    let err =
        rollout::uninstall_everywhere(client, ns, name, Duration::ZERO, Duration::from_millis(1)).await.unwrap_err();
    assert!(err.to_string().contains("did not finish uninstalling within"), "{err}");
    server.await.unwrap();
}

#[test]
fn each_service_account_gets_only_what_its_job_needs() {
    let installer = rbac::service_account(rbac::INSTALLER);
    installer.check("PATCH", "/api/v1/nodes/n1", "", Some("application/merge-patch+json"), false).unwrap();
    let refused = installer.check("DELETE", "/api/v1/nodes/n1", "", None, false).unwrap_err();
    assert!(refused.message().contains(r#"cannot delete resource "nodes" in API group "" at the cluster scope"#));
    let hook = rbac::service_account(rbac::UNINSTALL_HOOK);
    hook.check("GET", DS, "", None, false).unwrap();
    // resourceNames: only the chart's DaemonSet, and only in the release namespace.
    let other = "/apis/apps/v1/namespaces/wasmkube-system/daemonsets/kube-proxy";
    assert!(hook.check("PATCH", other, "", Some("application/strategic-merge-patch+json"), false).is_err());
    let elsewhere = "/apis/apps/v1/namespaces/default/daemonsets/wasmkube-node-installer";
    assert!(hook.check("GET", elsewhere, "", None, false).is_err());
    assert!(hook.check("GET", "/apis/apps/v1/namespaces/wasmkube-system/daemonsets", "", None, false).is_err());
}

const TOKEN_SECRET: &str = "wasmkube-node-metrics-token";
const TOKEN_PATH: &str = "/api/v1/namespaces/wasmkube-system/secrets/wasmkube-node-metrics-token";

fn token_secret(data: Option<Value>) -> Value {
    let mut secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {"name": TOKEN_SECRET, "namespace": rbac::CHART_NAMESPACE, "resourceVersion": "1"}});
    if let Some(data) = data {
        secret["data"] = data;
    }
    secret
}

#[tokio::test]
async fn the_node_metrics_token_is_read_from_the_operators_secret() {
    let get_token = |reply| Step { method: "GET", path: TOKEN_PATH, content_type: None, body: None, reply };
    // Empty as the chart creates it (the server omits `data`), then filled by the operator ("abc" in base64).
    let steps = vec![get_token(token_secret(None)), get_token(token_secret(Some(json!({"token": "YWJj"}))))];
    let (client, handle) = mock();
    let server = tokio::spawn(verify(handle, steps, rbac::service_account(rbac::INSTALLER)));
    let ns = rbac::CHART_NAMESPACE;
    assert_eq!(metrics_token::read(client.clone(), ns, TOKEN_SECRET).await.unwrap(), None);
    assert_eq!(metrics_token::read(client, ns, TOKEN_SECRET).await.unwrap().as_deref(), Some("abc"));
    server.await.unwrap();

    // The installer may read that Secret and no other.
    let installer = rbac::service_account(rbac::INSTALLER);
    let other = "/api/v1/namespaces/wasmkube-system/secrets/wasmkube-metrics-api-tls";
    assert!(installer.check("GET", other, "", None, false).is_err());
    assert!(installer.check("PUT", TOKEN_PATH, "", None, false).is_err());
}
