//! The external metrics API (`external.metrics.k8s.io/v1beta1`) over HTTPS, served from the demand store
//! to the HPA through the API server's aggregation layer.
//!
//! Like every aggregated API server: the APIService's `caBundle` holds our CA, so the API server verifies
//! us ([`certs`], [`setup`]); each request is authenticated by the front proxy's client certificate or a
//! TokenReview ([`authn`]) and authorized by a SubjectAccessReview ([`review`]). Only `/healthz`, `/readyz`
//! and `/livez` are open. docs/security.md has the threat model.

pub mod api;
pub mod authn;
pub mod certs;
pub mod review;
pub mod setup;

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use api::router;
pub use certs::{service_dns_names, CertError, Certs, ServingCert};

use crate::demand::Demand;
use crate::net::accept_until;
use authn::{bearer_token, common_name, RequestHeader, User};
use review::{Attributes, Reviewer};

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// Paths anyone may read, as k8s.io/apiserver leaves them open to probes.
const OPEN_PATHS: [&str; 3] = ["/healthz", "/readyz", "/livez"];

/// The TLS settings new connections get; replaced when the certificates or the front proxy's CA change.
pub struct TlsSettings(RwLock<Arc<rustls::ServerConfig>>);

impl TlsSettings {
    pub fn new(config: Arc<rustls::ServerConfig>) -> Self {
        Self(RwLock::new(config))
    }

    pub fn replace(&self, config: Arc<rustls::ServerConfig>) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = config;
    }

    fn current(&self) -> Arc<rustls::ServerConfig> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Who may read the API: the front proxy's settings and the API server's reviews.
pub struct Access {
    request_header: RwLock<Option<Arc<RequestHeader>>>,
    reviewer: Reviewer,
}

/// The common name of the client certificate a connection presented, checked by rustls against the front
/// proxy's CA.
#[derive(Clone, Debug)]
struct ClientCertName(Option<String>);

impl Access {
    pub fn new(request_header: Option<RequestHeader>, reviewer: Reviewer) -> Self {
        Self { request_header: RwLock::new(request_header.map(Arc::new)), reviewer }
    }

    /// Use new front-proxy settings (the API server's ConfigMap changed).
    pub fn set_request_header(&self, request_header: Option<RequestHeader>) {
        *self.request_header.write().unwrap_or_else(|e| e.into_inner()) = request_header.map(Arc::new);
    }

    /// The front-proxy settings in use.
    pub fn request_header(&self) -> Option<Arc<RequestHeader>> {
        self.request_header.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Who sent a request with `headers` on a connection whose client certificate has common name
    /// `cert_name`; `None`: nobody we can name (401).
    async fn user(&self, cert_name: Option<&str>, headers: &http::HeaderMap) -> Option<User> {
        if let (Some(name), Some(request_header)) = (cert_name, self.request_header()) {
            if let Some(user) = request_header.user(name, headers) {
                return Some(user);
            }
        }
        let token = bearer_token(headers)?;
        match self.reviewer.authenticate(token).await {
            Ok(user) => user,
            Err(e) => {
                tracing::warn!(error = %crate::error::message_chain(&e), "external metrics API: a token could not be reviewed");
                None
            }
        }
    }
}

/// Authenticates and authorizes every request but the probes'; answers 401 and 403 as the API server does.
async fn check_access(State(access): State<Arc<Access>>, request: Request, next: Next) -> Response {
    if OPEN_PATHS.contains(&request.uri().path()) {
        return next.run(request).await;
    }
    let cert_name = request.extensions().get::<ClientCertName>().and_then(|n| n.0.clone());
    // Why not `&request` across the await: the body is not `Sync`, the headers are.
    let Some(user) = access.user(cert_name.as_deref(), request.headers()).await else {
        return api::failure(StatusCode::UNAUTHORIZED, "Unauthorized", "Unauthorized".into(), None);
    };
    let user = user.authenticated();
    let attributes = Attributes::of(request.method(), request.uri().path());
    match access.reviewer.authorize(&user, &attributes).await {
        Ok(decision) if decision.allowed => next.run(request).await,
        Ok(decision) => {
            let (message, details) = attributes.forbidden(&user.name, &decision.reason);
            api::failure(StatusCode::FORBIDDEN, "Forbidden", message, Some(details))
        }
        Err(e) => {
            tracing::warn!(error = %crate::error::message_chain(&e), user = %user.name, "external metrics API: a request could not be authorized");
            let message = format!("Internal error occurred: {e}");
            api::failure(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", message, None)
        }
    }
}

/// Serve the API on `listener` until `shutdown` resolves, then drain open connections. Each connection gets
/// the TLS settings current when it arrives.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<TlsSettings>,
    access: Arc<Access>,
    demand: Arc<Demand>,
    shutdown: impl Future<Output = ()>,
) {
    let app = router(demand).layer(axum::middleware::from_fn_with_state(access, check_access));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = accept_until(&listener, &mut shutdown, "external metrics API").await else {
            break;
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let app = app.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "external metrics API: TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "external metrics API: TLS handshake timed out");
                    return;
                }
            };
            let cert_name =
                ClientCertName(tls.get_ref().1.peer_certificates().and_then(|c| c.first()).and_then(common_name));
            let app = app.layer(axum::Extension(cert_name));
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app)).into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "external metrics API: connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("external metrics API: connections still open after the drain timeout");
    }
}
