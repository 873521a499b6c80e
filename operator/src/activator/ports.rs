//! The app-port listeners: one listener per app's activator port, opened and closed as the port table changes.
//!
//! kube-proxy and ingress controllers dial an endpoint's address on the slice's port, so the port a connection
//! arrives on is the one thing about it that still names the app once the destination address was rewritten.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::server::serve_routed;
use super::Activator;

/// Pause before binding again a port that could not be bound (another process held it).
const BIND_RETRY: Duration = Duration::from_secs(5);

/// One open app-port listener: its stop signal and its serving task (which drains on stop).
struct Open {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Listen on `ip` at every app port of the activator's port table, following its changes, until `shutdown`
/// resolves; then stop every listener and wait for their connections (held requests included) to finish.
pub async fn serve_app_ports(activator: Arc<Activator>, ip: IpAddr, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    let mut table = activator.state().subscribe_ports();
    let mut open: BTreeMap<u16, Open> = BTreeMap::new();
    loop {
        let mut wanted: Vec<u16> = table.borrow_and_update().keys().copied().collect();
        // A port whose slice is gone still serves its app for a while (PORT_LINGER); close it after that.
        let now = Instant::now();
        let lingering = activator.state().lingering_ports();
        let next_close = lingering.iter().map(|(_, until)| *until).filter(|until| *until > now).min();
        wanted.extend(lingering.iter().filter(|(_, until)| *until > now).map(|(port, _)| *port));
        for (port, listener) in std::mem::take(&mut open) {
            if wanted.contains(&port) {
                open.insert(port, listener);
            } else {
                tracing::info!(port, "app port no longer used, closing its listener");
                let _ = listener.stop.send(true);
            }
        }
        let mut failed = false;
        let missing: Vec<u16> = wanted.into_iter().filter(|p| !open.contains_key(p)).collect();
        for port in missing {
            match TcpListener::bind(SocketAddr::new(ip, port)).await {
                Ok(listener) => {
                    tracing::info!(port, "activator listening on an app port");
                    let (stop, stopped) = watch::channel(false);
                    let task = tokio::spawn(serve_routed(activator.clone(), listener, Some(port), until(stopped)));
                    open.insert(port, Open { stop, task });
                }
                Err(e) => {
                    tracing::warn!(port, error = %e, "cannot listen on an app port; retrying");
                    failed = true;
                }
            }
        }
        let retry = async {
            match (failed, next_close) {
                (true, _) => tokio::time::sleep(BIND_RETRY).await,
                (false, Some(at)) => tokio::time::sleep_until(at.into()).await,
                (false, None) => std::future::pending::<()>().await,
            }
        };
        tokio::select! {
            () = &mut shutdown => break,
            changed = table.changed() => if changed.is_err() { break },
            () = retry => {}
        }
    }
    for listener in open.values() {
        let _ = listener.stop.send(true);
    }
    for (_, listener) in open {
        let _ = listener.task.await;
    }
}

/// Resolves once `stop` turns true (or its sender is gone).
async fn until(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
