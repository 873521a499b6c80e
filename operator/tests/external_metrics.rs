//! The external metrics API over real TLS on loopback, fed from a demand store, reached as the API server's
//! aggregator reaches it (its front-proxy client certificate and `X-Remote-*` headers) or with a bearer token.
//! A scripted API server answers the TokenReviews and SubjectAccessReviews: it checks each against the RBAC the
//! chart grants the operator and decides the reviews with the RBAC the chart grants the caller (deploy/).

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::client::Body;
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::{json, Value};
use support::rbac;
use tokio::sync::oneshot;

use wasmkube_operator::demand::parse::Sample;
use wasmkube_operator::demand::Demand;
use wasmkube_operator::external_metrics::authn::RequestHeader;
use wasmkube_operator::external_metrics::review::Reviewer;
use wasmkube_operator::external_metrics::{serve, Access, ServingCert, TlsSettings};

const BASE: &str = "/apis/external.metrics.k8s.io/v1beta1";
const HPA_USER: &str = "system:serviceaccount:kube-system:horizontal-pod-autoscaler";
const NOBODY_USER: &str = "system:serviceaccount:apps:nobody";
const HPA_TOKEN: &str = "hpa-token";
const NOBODY_TOKEN: &str = "nobody-token";

/// A certificate authority of the test and a client certificate it signed.
struct Pki {
    ca: CertificateDer<'static>,
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let ca = params.self_signed(&key).unwrap();
        Self { ca: ca.der().clone(), ca_pem: ca.pem(), issuer: Issuer::new(params, key) }
    }

    /// A client certificate with common name `cn` and its key.
    fn client(&self, cn: &str) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let mut params = CertificateParams::default();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap().der().clone();
        (cert, PrivateKeyDer::try_from(key.serialize_der()).unwrap())
    }
}

/// The API server's front-proxy settings, as in its `extension-apiserver-authentication` ConfigMap.
fn request_header(ca_pem: &str) -> RequestHeader {
    let data: BTreeMap<String, String> = [
        ("requestheader-client-ca-file", ca_pem),
        ("requestheader-allowed-names", r#"["front-proxy-client"]"#),
        ("requestheader-username-headers", r#"["X-Remote-User"]"#),
        ("requestheader-group-headers", r#"["X-Remote-Group"]"#),
        ("requestheader-extra-headers-prefix", r#"["X-Remote-Extra-"]"#),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    RequestHeader::from_config_map(&data).unwrap().unwrap()
}

/// Plays the API server for the reviews: each request must be one the chart lets the operator make; a
/// SubjectAccessReview is decided by the chart's RBAC for the ServiceAccount it names, and discovery paths are
/// open to `system:authenticated` (the `system:discovery` ClusterRole).
async fn api_server(mut handle: tower_test::mock::Handle<Request<Body>, Response<Body>>, reviews: Arc<AtomicUsize>) {
    let operator = rbac::operator();
    while let Some((req, send)) = handle.next_request().await {
        rbac::assert_allowed(&operator, &req, false);
        let path = req.uri().path().to_string();
        let bytes = req.into_body().collect_bytes().await.unwrap();
        let mut review: Value = serde_json::from_slice(&bytes).unwrap();
        reviews.fetch_add(1, Ordering::SeqCst);
        review["status"] = match path.as_str() {
            "/apis/authentication.k8s.io/v1/tokenreviews" => token_review(&review["spec"]),
            "/apis/authorization.k8s.io/v1/subjectaccessreviews" => access_review(&review["spec"]),
            other => panic!("the metrics API asked the API server for {other}"),
        };
        send.send_response(
            Response::builder().status(201).body(Body::from(serde_json::to_vec(&review).unwrap())).unwrap(),
        );
    }
}

fn token_review(spec: &Value) -> Value {
    let user = match spec["token"].as_str() {
        Some(HPA_TOKEN) => HPA_USER,
        Some(NOBODY_TOKEN) => NOBODY_USER,
        _ => return json!({"authenticated": false, "user": {}, "error": "invalid bearer token"}),
    };
    let namespace = user.split(':').nth(2).unwrap();
    json!({"authenticated": true, "user": {
        "username": user, "uid": "1234",
        "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
    }})
}

fn access_review(spec: &Value) -> Value {
    let user = spec["user"].as_str().unwrap();
    let groups: Vec<&str> = spec["groups"].as_array().unwrap().iter().map(|g| g.as_str().unwrap()).collect();
    if let Some(path) = spec["nonResourceAttributes"]["path"].as_str() {
        let allowed = groups.contains(&"system:authenticated") && (path == "/apis" || path.starts_with("/apis/"));
        return json!({"allowed": allowed});
    }
    let attributes = &spec["resourceAttributes"];
    let field = |name: &str| attributes[name].as_str().unwrap_or_default().to_string();
    let wanted = rbac::Attributes {
        verb: field("verb"),
        api_group: field("group"),
        resource: field("resource"),
        subresource: field("subresource"),
        namespace: field("namespace"),
        name: field("name"),
    };
    let allowed = match user.strip_prefix("system:serviceaccount:").and_then(|sa| sa.split_once(':')) {
        Some(("kube-system", "horizontal-pod-autoscaler")) => {
            rbac::service_account_in("kube-system", "horizontal-pod-autoscaler").allows(&wanted)
        }
        _ => false,
    };
    json!({"allowed": allowed})
}

/// How a test connects.
enum Client<'a> {
    /// No client certificate.
    Anonymous,
    /// A client certificate signed by `pki`, with common name `cn`.
    Cert(&'a Pki, &'a str),
}

struct Server {
    addr: SocketAddr,
    cert: CertificateDer<'static>,
    front_proxy: Pki,
    reviews: Arc<AtomicUsize>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(demand: Arc<Demand>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let cert = ServingCert::self_signed(&["localhost".to_string()]).unwrap();
        let front_proxy = Pki::new("front-proxy-ca");
        let tls = Arc::new(TlsSettings::new(cert.server_config(std::slice::from_ref(&front_proxy.ca)).unwrap()));
        let (mock, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let reviews = Arc::new(AtomicUsize::new(0));
        tokio::spawn(api_server(handle, reviews.clone()));
        let client = kube::Client::new(mock, "default");
        let access = Arc::new(Access::new(Some(request_header(&front_proxy.ca_pem)), Reviewer::new(client)));
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(serve(listener, tls, access, demand, async move {
            let _ = stopped.await;
        }));
        let cert = cert.cert_der().unwrap().clone();
        Self { addr, cert, front_proxy, reviews, stop: Some(stop), task }
    }

    /// A TLS connection trusting only the server's certificate, offering `alpn`.
    async fn connect(
        &self,
        alpn: &[u8],
        client: &Client<'_>,
    ) -> std::io::Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.cert.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match client {
            Client::Anonymous => builder.with_no_client_auth(),
            Client::Cert(pki, cn) => {
                let (cert, key) = pki.client(cn);
                builder.with_client_auth_cert(vec![cert], key).unwrap()
            }
        };
        config.alpn_protocols = vec![alpn.to_vec()];
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
    }

    /// GET `path` over HTTP/1.1 with `headers`; the status and the JSON body.
    async fn get_as(&self, client: &Client<'_>, headers: &[(&str, &str)], path: &str) -> (u16, Value) {
        let tls = self.connect(b"http/1.1", client).await.unwrap();
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        read(sender.send_request(request(path, headers)).await.unwrap()).await
    }

    /// GET `path` as the aggregator does for the HPA: front-proxy certificate, the HPA as `X-Remote-User`.
    async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(&Client::Cert(&self.front_proxy, "front-proxy-client"), &hpa_headers(), path).await
    }

    /// The same over HTTP/2 (what the aggregator negotiates).
    async fn get_h2(&self, path: &str) -> (u16, Value) {
        let client = Client::Cert(&self.front_proxy, "front-proxy-client");
        let tls = self.connect(b"h2", &client).await.unwrap();
        assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let (mut sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await.unwrap();
        tokio::spawn(connection);
        read(sender.send_request(request(path, &hpa_headers())).await.unwrap()).await
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.task).await.unwrap().unwrap();
    }
}

fn hpa_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Remote-User", HPA_USER),
        ("X-Remote-Group", "system:serviceaccounts"),
        ("X-Remote-Group", "system:serviceaccounts:kube-system"),
        ("X-Remote-Group", "system:authenticated"),
    ]
}

fn request(path: &str, headers: &[(&str, &str)]) -> http::Request<Empty<Bytes>> {
    let uri = format!("https://localhost{path}");
    let mut req = http::Request::get(uri);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Empty::<Bytes>::new()).unwrap()
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

const RATE: &str = "/apis/external.metrics.k8s.io/v1beta1/namespaces/apps/wasmkube_http_requests_per_second?labelSelector=wasmkube.dev%2Fapp%3Dhello";

fn assert_status(code: u16, body: &Value, want: u16, reason: &str) {
    assert_eq!(code, want, "{body}");
    assert_eq!(body["kind"], "Status", "{body}");
    assert_eq!(body["apiVersion"], "v1");
    assert_eq!(body["status"], "Failure");
    assert_eq!(body["reason"], reason, "{body}");
    assert_eq!(body["code"], want);
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
        assert_eq!(r["verbs"], json!(["get"]));
    }

    let (code, h2_list) = server.get_h2(BASE).await;
    assert_eq!((code, h2_list), (200, list.clone()), "HTTP/2 answers as HTTP/1.1 does");
    server.stop().await;
}

#[tokio::test]
async fn the_aggregators_own_discovery_needs_no_groups() {
    // Found on a real cluster: the API server's discovery of aggregated APIs comes as `system:aggregator`
    // without groups; refusing it made namespaces undeletable.
    let server = Server::start(Arc::new(Demand::default())).await;
    let client = Client::Cert(&server.front_proxy, "front-proxy-client");
    let (code, list) = server.get_as(&client, &[("X-Remote-User", "system:aggregator")], BASE).await;
    assert_eq!(code, 200, "{list}");
    server.stop().await;
}

#[tokio::test]
async fn probes_need_no_credentials() {
    let server = Server::start(Arc::new(Demand::default())).await;
    for path in ["/healthz", "/readyz", "/livez"] {
        let (code, body) = server.get_as(&Client::Anonymous, &[], path).await;
        assert_ne!(code, 401, "{path}: {body}");
        assert_ne!(code, 403, "{path}: {body}");
    }
    server.stop().await;
}

#[tokio::test]
async fn without_credentials_or_with_forged_headers_it_is_401() {
    let server = Server::start(fed_demand()).await;
    let foreign = Pki::new("some-other-ca");
    type Case<'a> = (&'a str, Client<'a>, Vec<(&'a str, &'a str)>);
    let cases: [Case<'_>; 4] = [
        ("nothing", Client::Anonymous, vec![]),
        (
            "X-Remote-User without the front proxy's certificate",
            Client::Anonymous,
            vec![("X-Remote-User", "system:admin"), ("X-Remote-Group", "system:masters")],
        ),
        (
            "the front proxy's CA but another name",
            Client::Cert(&server.front_proxy, "not-the-proxy"),
            vec![("X-Remote-User", "system:admin")],
        ),
        ("an unknown token", Client::Anonymous, vec![("Authorization", "Bearer forged")]),
    ];
    for (case, client, headers) in cases {
        for path in [RATE, BASE, "/apis/external.metrics.k8s.io/v1beta1/nonsense"] {
            let (code, body) = server.get_as(&client, &headers, path).await;
            assert_status(code, &body, 401, "Unauthorized");
            assert_eq!(body["message"], "Unauthorized", "{case}");
        }
    }
    // A certificate of another CA does not get past the handshake.
    let refused = match server.connect(b"http/1.1", &Client::Cert(&foreign, "front-proxy-client")).await {
        Err(_) => true,
        // TLS 1.3: the client learns of the refusal at its first read.
        Ok(tls) => {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request(BASE, &hpa_headers())).await.is_err()
        }
    };
    assert!(refused, "a client certificate of another CA must be refused");
    server.stop().await;
}

#[tokio::test]
async fn tokens_are_reviewed_and_callers_authorized() {
    let server = Server::start(fed_demand()).await;
    let (code, list) = server.get_as(&Client::Anonymous, &[("Authorization", "Bearer hpa-token")], RATE).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["items"][0]["value"], "11000m");

    let (code, body) = server.get_as(&Client::Anonymous, &[("Authorization", "Bearer nobody-token")], RATE).await;
    assert_status(code, &body, 403, "Forbidden");
    assert_eq!(
        body["message"],
        "wasmkube_http_requests_per_second.external.metrics.k8s.io is forbidden: User \
         \"system:serviceaccount:apps:nobody\" cannot list resource \"wasmkube_http_requests_per_second\" in API \
         group \"external.metrics.k8s.io\" in the namespace \"apps\""
    );
    assert_eq!(
        body["details"],
        json!({"group": "external.metrics.k8s.io", "kind": "wasmkube_http_requests_per_second"})
    );

    // Through the front proxy the same user is refused the same way.
    let client = Client::Cert(&server.front_proxy, "front-proxy-client");
    let (code, body) = server.get_as(&client, &[("X-Remote-User", NOBODY_USER)], RATE).await;
    assert_status(code, &body, 403, "Forbidden");
    server.stop().await;
}

#[tokio::test]
async fn reviews_are_cached() {
    let server = Server::start(fed_demand()).await;
    for _ in 0..5 {
        let (code, list) = server.get_as(&Client::Anonymous, &[("Authorization", "Bearer hpa-token")], RATE).await;
        assert_eq!(code, 200, "{list}");
    }
    assert_eq!(server.reviews.load(Ordering::SeqCst), 2, "one TokenReview and one SubjectAccessReview");
    server.stop().await;
}

#[tokio::test]
async fn values_of_an_app() {
    let server = Server::start(fed_demand()).await;

    let (code, list) = server.get(RATE).await;
    assert_eq!(code, 200, "{list}");
    assert_eq!(list["kind"], "ExternalMetricValueList");
    assert_eq!(list["apiVersion"], "external.metrics.k8s.io/v1beta1");
    assert_eq!(list["metadata"], json!({}));
    let items = list["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{list}");
    assert_eq!(items[0]["metricName"], "wasmkube_http_requests_per_second");
    assert_eq!(items[0]["metricLabels"], json!({"wasmkube.dev/app": "hello"}));
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
    assert_status(code, &status, 404, "NotFound");
    assert!(status["message"].as_str().unwrap().contains("cpu_usage"), "{status}");
    server.stop().await;
}

#[tokio::test]
async fn a_missing_or_invalid_selector_is_400() {
    let server = Server::start(fed_demand()).await;
    for query in ["", "?labelSelector=tier%3Dweb", "?labelSelector=wasmkube.dev%2Fapp%21%3Dhello"] {
        let (code, status) =
            server.get(&format!("{BASE}/namespaces/apps/wasmkube_http_requests_per_second{query}")).await;
        assert_status(code, &status, 400, "BadRequest");
        assert!(status["message"].as_str().unwrap().contains("wasmkube.dev/app"), "{query}: {status}");
    }
    server.stop().await;
}
