//! The node's metrics endpoint: `GET /metrics` over HTTP/1.1 on the daemon's (host) network.
//!
//! It never stops workloads: an address that cannot be bound is logged and the daemon goes on without it.
//! With a token file (the chart's nodes have one), every scrape must carry `Authorization: Bearer TOKEN`:
//! the endpoint listens on the host's network, where no NetworkPolicy applies, so the token is what keeps
//! it to the operator (docs/security.md). The file is read at each scrape, so a new token needs no restart.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

use super::exposition;
use super::registry::HttpMetrics;

/// The one path served.
const METRICS_PATH: &str = "/metrics";

/// Binds `address` (`host:port`) and serves `metrics` there on the current tokio runtime, to scrapes that
/// carry the token in `token_file` when one is given; returns the bound address, `None` (after a warning)
/// when it cannot be bound.
pub async fn spawn_endpoint(
    address: &str,
    metrics: Arc<HttpMetrics>,
    token_file: Option<PathBuf>,
) -> Option<SocketAddr> {
    let listener = match tokio::net::TcpListener::bind(address).await {
        Ok(listener) => listener,
        Err(e) => {
            tracing::warn!(address, error = %e, "cannot serve the metrics endpoint; workloads run without it");
            return None;
        }
    };
    let bound = match listener.local_addr() {
        Ok(bound) => bound,
        Err(e) => {
            tracing::warn!(address, error = %e, "the metrics listener has no address; workloads run without it");
            return None;
        }
    };
    tracing::info!(address = %bound, "metrics endpoint serving {METRICS_PATH}");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "cannot accept a metrics connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let metrics = metrics.clone();
            let token_file = token_file.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (metrics, token_file) = (metrics.clone(), token_file.clone());
                    async move {
                        let refused = match &token_file {
                            Some(file) => check_token(req.headers(), file).await.err(),
                            None => None,
                        };
                        Ok::<_, Infallible>(
                            refused.unwrap_or_else(|| respond(req.method(), req.uri().path(), &metrics)),
                        )
                    }
                });
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                    tracing::debug!(%peer, error = %e, "metrics connection ended with an error");
                }
            });
        }
    });
    Some(bound)
}

/// `Ok` when `headers` carry the token in `file`; else the 401 to answer. A missing or empty file refuses
/// every scrape (the installer has not written the token yet).
async fn check_token(headers: &http::HeaderMap, file: &std::path::Path) -> Result<(), Response<Full<Bytes>>> {
    let expected = match tokio::fs::read_to_string(file).await {
        Ok(text) if !text.trim().is_empty() => text.trim().to_string(),
        Ok(_) | Err(_) => return Err(unauthorized("this node has no metrics token yet\n")),
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(given) if same_secret(given.as_bytes(), expected.as_bytes()) => Ok(()),
        _ => Err(unauthorized("a bearer token is required\n")),
    }
}

/// Equality that takes as long wherever the first difference is.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn unauthorized(body: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = StatusCode::UNAUTHORIZED;
    response.headers_mut().insert(http::header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("text/plain"));
    response
}

/// The answer to `method path`: the exposition text for `GET /metrics`, 404 for other paths.
pub fn respond(method: &Method, path: &str, metrics: &HttpMetrics) -> Response<Full<Bytes>> {
    let (status, content_type, body) = match (path, method) {
        (METRICS_PATH, &Method::GET) => {
            (StatusCode::OK, exposition::CONTENT_TYPE, exposition::render(&metrics.samples()))
        }
        (METRICS_PATH, _) => (StatusCode::METHOD_NOT_ALLOWED, "text/plain", "only GET\n".to_string()),
        _ => (StatusCode::NOT_FOUND, "text/plain", format!("not found; metrics are at {METRICS_PATH}\n")),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::ContainerLabels;
    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn only_get_metrics_is_served() {
        let metrics = HttpMetrics::default();
        let ok = respond(&Method::GET, "/metrics", &metrics);
        assert_eq!(ok.status(), StatusCode::OK);
        assert_eq!(ok.headers()[http::header::CONTENT_TYPE], exposition::CONTENT_TYPE);
        assert_eq!(respond(&Method::GET, "/", &metrics).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::GET, "/metrics/x", &metrics).status(), StatusCode::NOT_FOUND);
        assert_eq!(respond(&Method::POST, "/metrics", &metrics).status(), StatusCode::METHOD_NOT_ALLOWED);
    }

    #[tokio::test]
    async fn serves_the_registered_series_on_loopback() {
        let metrics = Arc::new(HttpMetrics::default());
        let labels = ContainerLabels { container: "web".into(), ..Default::default() };
        let registration = metrics.register("c1", labels);
        assert!(registration.series().start(&http::HeaderMap::new()));
        let addr = spawn_endpoint("127.0.0.1:0", metrics.clone(), None).await.expect("loopback binds");

        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        assert!(text.starts_with("HTTP/1.1 200"), "{text}");
        assert!(
            text.contains(r#"wasmkube_http_requests_total{namespace="",wasmapp="",pod="",container="web"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"wasmkube_http_requests_in_flight{namespace="",wasmapp="",pod="",container="web"} 1"#));
    }

    #[tokio::test]
    async fn an_address_in_use_is_a_warning_not_an_error() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = taken.local_addr().unwrap().to_string();
        assert_eq!(spawn_endpoint(&address, Arc::default(), None).await, None);
        assert_eq!(spawn_endpoint("not an address", Arc::default(), None).await, None);
    }

    async fn scrape(addr: SocketAddr, authorization: Option<&str>) -> String {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let header = authorization.map(|a| format!("Authorization: {a}\r\n")).unwrap_or_default();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: x\r\n{header}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).await.unwrap();
        text
    }

    #[tokio::test]
    async fn with_a_token_file_only_scrapes_with_that_token_are_served() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("metrics-token");
        let addr = spawn_endpoint("127.0.0.1:0", Arc::default(), Some(file.clone())).await.expect("loopback binds");

        let before = scrape(addr, Some("Bearer s3cret")).await;
        assert!(before.starts_with("HTTP/1.1 401") && before.contains("no metrics token yet"), "{before}");

        std::fs::write(&file, "s3cret\n").unwrap();
        for refused in [None, Some("Bearer wrong!"), Some("Bearer s3cre"), Some("Basic s3cret"), Some("s3cret")] {
            let text = scrape(addr, refused).await;
            assert!(text.starts_with("HTTP/1.1 401"), "{refused:?}: {text}");
            assert!(text.to_ascii_lowercase().contains("www-authenticate: bearer"), "{text}");
            assert!(!text.contains("wasmkube_http"), "{text}");
        }
        assert!(scrape(addr, Some("Bearer s3cret")).await.starts_with("HTTP/1.1 200"));

        // A new token is used at the next scrape.
        std::fs::write(&file, "rotated").unwrap();
        assert!(scrape(addr, Some("Bearer s3cret")).await.starts_with("HTTP/1.1 401"));
        assert!(scrape(addr, Some("Bearer rotated")).await.starts_with("HTTP/1.1 200"));
    }

    #[tokio::test]
    async fn the_body_is_the_exposition_text() {
        let metrics = HttpMetrics::default();
        let body = respond(&Method::GET, "/metrics", &metrics).into_body();
        let bytes = body.collect().await.unwrap().to_bytes();
        assert_eq!(bytes, exposition::render(&[]));
    }
}
