//! Accepting connections until shutdown, shared by the operator's servers (activator, external metrics API).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Pause after a failed accept: errors such as EMFILE repeat at once, and spinning on them helps nobody.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// The next connection of `listener`, or `None` once `shutdown` resolved. Accept errors belong to one
/// connection (EMFILE, aborted handshakes): they are logged as `server`'s and the listener lives on.
pub async fn accept_until<S>(listener: &TcpListener, shutdown: &mut S, server: &str) -> Option<(TcpStream, SocketAddr)>
where
    S: Future<Output = ()> + Unpin,
{
    loop {
        tokio::select! {
            _ = &mut *shutdown => return None,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => return Some(accepted),
                Err(e) => {
                    tracing::warn!(error = %e, server, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                }
            },
        }
    }
}
