//! Leader election against a scripted API server whose requests are checked against the chart's RBAC: the
//! Role in the operator's namespace must allow reading, creating and renewing the Lease.

mod support;

use std::time::Duration;

use http::{Request, Response};
use kube::client::Body;
use serde_json::{json, Value};
use support::rbac;
use wasmkube_operator::leader::{LeaderElector, LeaseConfig};

const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/wasmkube-system/leases/wasmkube-operator";

#[tokio::test]
async fn the_lease_is_created_and_renewed_within_the_role() {
    let (mock, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let config = LeaseConfig {
        name: "wasmkube-operator".into(),
        namespace: rbac::CHART_NAMESPACE.into(),
        identity: "op-1".into(),
        lease_duration: Duration::from_secs(15),
        retry_period: Duration::from_secs(2),
    };
    let elector = LeaderElector::new(kube::Client::new(mock, "default"), config);
    let not_found = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                           "reason": "NotFound", "code": 404});
    let server = tokio::spawn(async move {
        let rbac = rbac::operator();
        let mut lease = Value::Null;
        for (method, path) in
            [("GET", LEASE), ("POST", LEASE.rsplit_once('/').unwrap().0), ("GET", LEASE), ("PUT", LEASE)]
        {
            let (req, send) =
                tokio::time::timeout(Duration::from_secs(5), handle.next_request()).await.unwrap().unwrap();
            assert_eq!((req.method().as_str(), req.uri().path()), (method, path));
            rbac::assert_allowed(&rbac, &req, false);
            let bytes = req.into_body().collect_bytes().await.unwrap();
            let (status, reply) = match method {
                "GET" if lease.is_null() => (404, not_found.clone()),
                "GET" => (200, lease.clone()),
                _ => {
                    lease = serde_json::from_slice(&bytes).unwrap();
                    lease["metadata"]["resourceVersion"] = json!("1");
                    (200, lease.clone())
                }
            };
            send.send_response(
                Response::builder().status(status).body(Body::from(serde_json::to_vec(&reply).unwrap())).unwrap(),
            );
        }
    });
    assert!(elector.try_lead().await.unwrap(), "created");
    assert!(elector.try_lead().await.unwrap(), "renewed");
    server.await.unwrap();
    // The Role is namespaced: the same Lease elsewhere is refused.
    let elsewhere = LEASE.replace("wasmkube-system", "default");
    assert!(rbac::operator().check("PUT", &elsewhere, "", None, false).is_err());
}
