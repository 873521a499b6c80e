//! One request through the activator: find the app, get a connected backend (holding if need be), proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST, RETRY_AFTER};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::hold::QueueFull;
use super::metrics::Outcome;
use super::proxy::{connect_any, forward};
use super::routes::{app_from_host, route_key_from_host, AppKey};
use super::Activator;
use crate::error::message_chain;

/// Body of the activator's responses: the backend's stream, or a short text of our own.
pub type Body = BoxBody<Bytes, hyper::Error>;

/// Where a request came from and where the client sent it before any NAT.
#[derive(Clone, Copy, Debug)]
pub struct Origin {
    /// The client's address.
    pub peer: SocketAddr,
    /// The pre-DNAT destination (`SO_ORIGINAL_DST`), when the socket has one.
    pub original_dst: Option<SocketAddr>,
    /// The app port the connection came in on; `None` on the activator's main port.
    pub app_port: Option<u16>,
}

/// Serve one request.
pub async fn handle(activator: Arc<Activator>, request: Request<Incoming>, origin: Origin) -> Response<Body> {
    let Some(app) = identify(&activator, &request, origin) else {
        activator.metrics.count(None, Outcome::UnknownApp);
        let host = request.headers().get(HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
        return text(
            StatusCode::NOT_FOUND,
            format!(
                "wasmkube activator: no app for this request (Host {host:?} on {}); expected an app's activator port, or Host NAME.NAMESPACE[.svc[.DOMAIN]] or a ClusterIP\n",
                origin.app_port.map_or_else(|| "the main port".to_string(), |p| format!("port {p}, which no app uses now"))
            ),
        );
    };
    let (stream, backend) = match connected_backend(&activator, &app).await {
        Ok(connected) => connected,
        Err(refusal) => return refusal,
    };
    match forward(stream, backend, request, origin.peer.ip()).await {
        Ok(response) => {
            activator.metrics.count(Some(&app), Outcome::Proxied);
            response.map(BodyExt::boxed)
        }
        Err(e) => {
            activator.metrics.count(Some(&app), Outcome::BackendError);
            let message = message_chain(&e);
            tracing::warn!(%app, error = %message, "proxying failed");
            text(StatusCode::BAD_GATEWAY, format!("wasmkube activator: {app}: {message}\n"))
        }
    }
}

/// The app of a request: the app whose activator port it came in on (survives kube-proxy's DNAT and ingress
/// controllers that dial endpoints); else its pre-DNAT destination if that is one of our Services (only where
/// the NAT happened in the activator's own network namespace); else its `Host`, as a Service name or as a
/// ClusterIP.
fn identify(activator: &Activator, request: &Request<Incoming>, origin: Origin) -> Option<AppKey> {
    if let Some(app) = origin.app_port.and_then(|port| activator.state.app_for_port(port)) {
        return Some(app);
    }
    if let Some(app) = origin.original_dst.and_then(|dst| activator.state.route(dst)) {
        return Some(app);
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()))?;
    if let Some(app) = route_key_from_host(host).and_then(|dst| activator.state.route(dst)) {
        return Some(app);
    }
    // Why: any `a.b` host parses as an app; holding it and waking a WasmApp that does not exist helps nobody.
    app_from_host(host).filter(|app| activator.state.is_known(app))
}

/// A connection to a ready backend of `app`, holding the request until one exists; else the response to send.
async fn connected_backend(activator: &Activator, app: &AppKey) -> Result<(TcpStream, SocketAddr), Response<Body>> {
    let settings = &activator.settings;
    let deadline = Instant::now() + settings.hold_timeout;
    let mut held = None;
    loop {
        // Why: subscribe before looking, so a change between the look and the wait still wakes us.
        let mut changed = activator.state.subscribe();
        let backends = activator.state.backends_in_order(app);
        if let Some(connected) = connect_any(&backends, settings.connect_timeout).await {
            return Ok(connected);
        }
        if held.is_none() {
            match activator.queue.enter(app) {
                Ok(place) => held = Some(place),
                Err(full) => {
                    activator.metrics.count(Some(app), Outcome::Overflow);
                    let message = match full {
                        QueueFull::App(max) => {
                            format!("wasmkube activator: {max} requests already waiting for {app}\n")
                        }
                        QueueFull::Total(max) => format!("wasmkube activator: {max} requests already waiting in all\n"),
                    };
                    let mut response = text(StatusCode::SERVICE_UNAVAILABLE, message);
                    response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
                    return Err(response);
                }
            }
            tracing::debug!(%app, "holding a request until the app has a ready replica");
        }
        activator.wake(app);
        // Why: known backends that refuse are retried soon; otherwise wake again once the interval allows.
        let pause = if backends.is_empty() { settings.wake_interval } else { settings.retry_interval };
        let next = deadline.min(Instant::now() + pause);
        tokio::select! {
            _ = changed.changed() => {}
            _ = tokio::time::sleep_until(next) => {}
        }
        if Instant::now() >= deadline {
            activator.metrics.count(Some(app), Outcome::Timeout);
            let secs = settings.hold_timeout.as_secs_f64();
            let mut response = text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("wasmkube activator: no ready replica of {app} within {secs}s\n"),
            );
            response.headers_mut().insert(RETRY_AFTER, HeaderValue::from_static("1"));
            return Err(response);
        }
    }
}

/// A plain-text response of the activator's own.
pub fn text(status: StatusCode, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)).map_err(|never| match never {}).boxed());
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}
