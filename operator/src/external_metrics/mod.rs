//! The external metrics API (`external.metrics.k8s.io/v1beta1`) over HTTPS, served from the demand store
//! to the HPA through the API server's aggregation layer.
//!
//! Authentication: none in this version. The API server reaches us through an `APIService` with
//! `insecureSkipTLSVerify: true`, and we neither verify its client certificate nor delegate authorization
//! (`TokenReview`/`SubjectAccessReview`), so anyone who can reach the port can read request rates.
//! The values are per-app request counts, not secrets; a NetworkPolicy can restrict the port.

pub mod api;
pub mod tls;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;

pub use api::router;
pub use tls::{service_dns_names, ServingCert, TlsError};

use crate::demand::Demand;
use crate::net::accept_until;

/// Time a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time open connections get to finish after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Serve the API on `listener` with `cert` until `shutdown` resolves, then drain open connections.
/// Fails only when the TLS configuration cannot be built; connection errors are logged.
pub async fn serve(
    listener: TcpListener,
    cert: &ServingCert,
    demand: Arc<Demand>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), TlsError> {
    let acceptor = tokio_rustls::TlsAcceptor::from(cert.server_config()?);
    let service = TowerToHyperService::new(router(demand));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let Some((stream, peer)) = accept_until(&listener, &mut shutdown, "external metrics API").await else {
            break;
        };
        let acceptor = acceptor.clone();
        let service = service.clone();
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
            let builder = auto::Builder::new(TokioExecutor::new());
            let connection = builder.serve_connection(TokioIo::new(tls), service).into_owned();
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "external metrics API: connection ended with an error");
            }
        });
    }
    if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown()).await.is_err() {
        tracing::warn!("external metrics API: connections still open after the drain timeout");
    }
    Ok(())
}
