//! Proxying one request: connect to a backend first (so a request is never lost to a vanished pod), then
//! HTTP/1.1 with hop-by-hop headers removed and `X-Forwarded-For` added; both bodies stream.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Why a request could not be forwarded once a backend accepted the connection.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The HTTP/1.1 handshake on the new connection failed.
    #[error("HTTP handshake with backend {backend}")]
    Handshake {
        /// The backend.
        backend: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
    /// The backend failed while the request was sent or its response head read.
    #[error("request to backend {backend}")]
    Request {
        /// The backend.
        backend: SocketAddr,
        /// The cause.
        #[source]
        source: hyper::Error,
    },
}

/// Connect to the first backend that accepts within `timeout`, trying them in order.
pub async fn connect_any(backends: &[SocketAddr], timeout: Duration) -> Option<(TcpStream, SocketAddr)> {
    for &backend in backends {
        match tokio::time::timeout(timeout, TcpStream::connect(backend)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, backend));
            }
            Ok(Err(e)) => tracing::debug!(%backend, error = %e, "backend refused the connection"),
            Err(_) => tracing::debug!(%backend, "connecting to the backend timed out"),
        }
    }
    None
}

/// Send `request` on `stream` (connected to `backend`) and return the backend's streaming response.
pub async fn forward(
    stream: TcpStream,
    backend: SocketAddr,
    request: Request<Incoming>,
    client: IpAddr,
) -> Result<Response<Incoming>, ProxyError> {
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|source| ProxyError::Handshake { backend, source })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(%backend, error = %e, "backend connection ended with an error");
        }
    });
    let request = outgoing(request, client);
    let mut response = sender.send_request(request).await.map_err(|source| ProxyError::Request { backend, source })?;
    strip_hop_by_hop(response.headers_mut());
    Ok(response)
}

/// The request as the backend gets it: origin-form URI, no hop-by-hop headers, the client in `X-Forwarded-For`.
fn outgoing(request: Request<Incoming>, client: IpAddr) -> Request<Incoming> {
    let (mut parts, body) = request.into_parts();
    if parts.headers.get(HOST).is_none() {
        if let Some(authority) = parts.uri.authority() {
            if let Ok(host) = HeaderValue::from_str(authority.as_str()) {
                parts.headers.insert(HOST, host);
            }
        }
    }
    let path = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    parts.uri = path.parse::<Uri>().unwrap_or_else(|_| Uri::from_static("/"));
    parts.version = http::Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded_for(&mut parts.headers, client);
    Request::from_parts(parts, body)
}

const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

/// Remove the headers that concern one connection only (RFC 9110 §7.6.1), including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    // Why: hyper frames the body itself; a forwarded `Transfer-Encoding` would contradict its framing.
    headers.remove(http::header::TRANSFER_ENCODING);
}

/// Append the client's address to `X-Forwarded-For`.
pub fn add_forwarded_for(headers: &mut HeaderMap, client: IpAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(prior) if !prior.trim().is_empty() => format!("{prior}, {client}"),
        _ => client.to_string(),
    };
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}
