//! The external metrics API over real TLS on loopback, fed from a demand store. Every request is one the API
//! server lets the HPA controller make with the chart's RBAC (deploy/) before the aggregator proxies it here.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use support::rbac;
use tokio::sync::oneshot;

use wasmkube_operator::demand::parse::Sample;
use wasmkube_operator::demand::Demand;
use wasmkube_operator::external_metrics::{serve, ServingCert};

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";

struct Server {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(demand: Arc<Demand>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cert = ServingCert::self_signed(&["localhost".to_string()]).unwrap();
        let cert_der = cert.cert_der().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            serve(listener, &cert, demand, async move {
                let _ = stopped.await;
            })
            .await
            .unwrap();
        });
        Self { addr, cert: cert_der, stop: Some(stop), task }
    }

    /// A TLS connection trusting only the server's certificate, offering `alpn`.
    async fn connect(&self, alpn: &[u8]) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap()
    }

    /// GET `path` over HTTP/1.1 in TLS; the status and the JSON body.
    async fn get(&self, path: &str) -> (u16, Value) {
        let tls = self.connect(b"http/1.1").await;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        read(sender.send_request(request(path)).await.unwrap()).await
    }

    /// GET `path` over HTTP/2 in TLS (what the API server's aggregator negotiates).
    async fn get_h2(&self, path: &str) -> (u16, Value) {
        let tls = self.connect(b"h2").await;
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        read(sender.send_request(request(path)).await.unwrap()).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap();
    }
}

fn request(path: &str) -> http::Request<Empty<Bytes>> {
    let uri = format!("https://localhost{path}");
    let req = http::Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    rbac::assert_allowed(&rbac::service_account_in("kube-system", "horizontal-pod-autoscaler"), &req, false);
    req
}

async fn read(response: http::Response<hyper::body::Incoming>) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into()));
    (status, json)
}

fn sample(name: &str, labels: &[(&str, &str)], value: f64) -> Sample {
    let labels: BTreeMap<String, String> = labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Sample { name: name.into(), labels, value }
}

/// `hello` in `apps`: 100 requests in the last 10 s (10/s), 2 in flight, 1 held by the activator.
fn fed_demand() -> Arc<Demand> {
    let demand = Arc::new(Demand::default());
    let now = Instant::now();
    let pod = [("namespace", "apps"), ("wasmapp", "hello"), ("pod", "hello-1"), ("container", "app")];
    demand.record("node", &[sample("wasmkube_http_requests_total", &pod, 50.0)], now - Duration::from_secs(10));
    demand.record(
        "node",
        &[sample("wasmkube_http_requests_total", &pod, 150.0), sample("wasmkube_http_requests_in_flight", &pod, 2.0)],
        now,
    );
    demand.record(
        "operator",
        &[sample("wasmkube_activator_requests_held", &[("namespace", "apps"), ("wasmapp", "hello")], 1.0)],
        now,
    );
    demand
}

#[tokio::test]
async fn discovery() {
    let server = Server::start(Arc::new(Demand::default())).await;

    let (code, group) = server.get("/apis/external.metrics.k8s.io").await;
    assert_eq!(code, 200, "{group}");
    assert_eq!(group["kind"], "APIGroup");
    assert_eq!(group["name"], "external.metrics.k8s.io");
    assert_eq!(group["preferredVersion"]["groupVersion"], "external.metrics.k8s.io/v1beta1");

    let (code, list) = server.get(BASE).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "APIResourceList");
    assert_eq!(list["groupVersion"], "external.metrics.k8s.io/v1beta1");
    let resources = list["resources"].as_array().unwrap();
    let names: Vec<&str> = resources.iter().map(|r| r["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["wasmkube_http_requests_per_second", "wasmkube_http_requests_in_flight"]);
    for r in resources {
        assert_eq!(r["namespaced"], true);
        assert_eq!(r["kind"], "ExternalMetricValueList");
        assert_eq!(r["verbs"], serde_json::json!(["get"]));
    }

    let (code, h2_list) = server.get_h2(BASE).await;
    assert_eq!((code, h2_list), (200, list.clone()), "HTTP/2 answers as HTTP/1.1 does");

    assert_eq!(server.get("/healthz").await.0, 200);
    assert_eq!(server.get("/readyz").await.0, 200);
    server.stop().await;
}

#[tokio::test]
async fn values_of_an_app() {
    let server = Server::start(fed_demand()).await;

    let (code, list) = server
        .get(&format!(
            "{BASE}/namespaces/apps/wasmkube_http_requests_per_second?labelSelector=wasmkube.dev%2Fapp%3Dhello"
        ))
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(list["metadata"], serde_json::json!({}));
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["metricName"], "wasmkube_http_requests_per_second");
    assert_eq!(items[0]["metricLabels"], serde_json::json!({"wasmkube.dev/app": "hello"}));
    // 10 requests/s served plus 1 held.
    assert_eq!(items[0]["value"], "11000m");
    // Parsed the way Kubernetes clients parse a metav1.Time.
    let timestamp = serde_json::from_value::<Time>(items[0]["timestamp"].clone());
    assert!(timestamp.is_ok(), "{}: {timestamp:?}", items[0]["timestamp"]);

    let (code, list) = server
        .get(&format!(
            "{BASE}/namespaces/apps/wasmkube_http_requests_in_flight?labelSelector=wasmkube.dev%2Fapp%20in%20(hello)"
        ))
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["value"], "3000m", "2 in flight plus 1 held: {list}");

    // The same name in another namespace is another app.
    let (code, list) = server
        .get(&format!(
            "{BASE}/namespaces/other/wasmkube_http_requests_in_flight?labelSelector=wasmkube.dev%2Fapp%3Dhello"
        ))
        .await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["value"], "0");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_app_is_zero() {
    let server = Server::start(fed_demand()).await;
    let (code, list) = server
        .get(&format!(
            "{BASE}/namespaces/apps/wasmkube_http_requests_per_second?labelSelector=wasmkube.dev%2Fapp%3Dnobody"
        ))
        .await;
    assert_eq!(code, 200, "{list}");
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "the HPA needs a value to scale to and from zero: {list}");
    assert_eq!(items[0]["value"], "0");
    assert_eq!(items[0]["metricLabels"]["wasmkube.dev/app"], "nobody");
    server.stop().await;
}

#[tokio::test]
async fn an_unknown_metric_is_404() {
    let server = Server::start(fed_demand()).await;
    let (code, status) =
        server.get(&format!("{BASE}/namespaces/apps/cpu_usage?labelSelector=wasmkube.dev%2Fapp%3Dhello")).await;
    assert_eq!(code, 404, "{status}");
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["apiVersion"], "v1");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);
    assert!(status["message"].as_str().unwrap().contains("cpu_usage"), "{status}");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_invalid_selector_is_400() {
    let server = Server::start(fed_demand()).await;
    for query in ["", "?labelSelector=tier%3Dweb", "?labelSelector=wasmkube.dev%2Fapp%21%3Dhello"] {
        let (code, status) =
            server.get(&format!("{BASE}/namespaces/apps/wasmkube_http_requests_per_second{query}")).await;
        assert_eq!(code, 400, "{query}: {status}");
        assert_eq!(status["kind"], "Status");
        assert_eq!(status["status"], "Failure");
        assert_eq!(status["reason"], "BadRequest");
        assert_eq!(status["code"], 400);
        assert!(status["message"].as_str().unwrap().contains("wasmkube.dev/app"), "{query}: {status}");
    }
    server.stop().await;
}
