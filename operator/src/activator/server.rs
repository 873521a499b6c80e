//! The activator's listener: accepts connections, reads each socket's pre-DNAT destination, serves HTTP/1.1.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;

use super::handler::{handle, Origin};
use super::metrics::ConnectionLimit;
use super::Activator;
use crate::net::accept_until;

/// `SO_ORIGINAL_DST` (and `IP6T_SO_ORIGINAL_DST`), from linux/netfilter_ipv4.h; libc does not export it.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// Serve the activator on `listener` until `shutdown` resolves, then let the open connections finish their
/// requests (held ones included) and return; idle keep-alive connections are closed.
pub async fn serve(activator: Arc<Activator>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    serve_routed(activator, listener, None, shutdown).await;
}

/// [`serve`], for the listener of an app's activator port when `app_port` is set: its requests are for the
/// app the port belongs to, whatever their `Host`.
pub(super) async fn serve_routed(
    activator: Arc<Activator>,
    listener: TcpListener,
    app_port: Option<u16>,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    let (draining, drain) = watch::channel(false);
    let mut connections = JoinSet::new();
    let app_permits = app_port.map(|_| Arc::new(Semaphore::new(activator.settings.max_connections_per_app)));
    loop {
        // Why: a JoinSet keeps finished tasks until joined; reap them so it holds only open connections.
        while connections.try_join_next().is_some() {}
        let Some((stream, peer)) = accept_until(&listener, &mut shutdown, "activator").await else { break };
        // Why accept and close rather than stop accepting: a full listener would stall every client in the
        // backlog, while a closed connection tells this one at once (and kube-proxy's next try may find room).
        let permits = match connection_permits(&activator, app_permits.as_ref()) {
            Ok(permits) => permits,
            Err(limit) => {
                activator.metrics.count_refused(limit);
                tracing::debug!(%peer, port = app_port, ?limit, "connection bound reached; closing the connection");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let origin = Origin { peer, original_dst: original_dst(&stream), app_port };
        connections.spawn(connection(activator.clone(), stream, origin, drain.clone(), permits));
    }
    drop(listener);
    let _ = draining.send(true);
    tracing::info!(open = connections.len(), port = app_port, "activator stopped accepting connections, draining");
    while connections.join_next().await.is_some() {}
}

/// A connection's places under the bound of all listeners and, on an app's port, that port's bound.
type Permits = (OwnedSemaphorePermit, Option<OwnedSemaphorePermit>);

fn connection_permits(activator: &Activator, app: Option<&Arc<Semaphore>>) -> Result<Permits, ConnectionLimit> {
    let all = activator.connections.clone().try_acquire_owned().map_err(|_| ConnectionLimit::All)?;
    let app = match app {
        Some(app) => Some(app.clone().try_acquire_owned().map_err(|_| ConnectionLimit::App)?),
        None => None,
    };
    Ok((all, app))
}

/// Serve one connection; when draining starts, finish the request in progress and close.
async fn connection(
    activator: Arc<Activator>,
    stream: TcpStream,
    origin: Origin,
    mut drain: watch::Receiver<bool>,
    _permits: Permits,
) {
    let settings = &activator.settings;
    let mut builder = http1::Builder::new();
    // Why a timer: hyper enforces the header-read timeout only with one.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout)
        .max_header_size(settings.max_header_bytes);
    let service = service_fn({
        let activator = activator.clone();
        move |request| {
            let activator = activator.clone();
            async move { Ok::<_, std::convert::Infallible>(handle(activator, request, origin).await) }
        }
    });
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        // Why: the async block drops the watch guard before the connection is awaited again.
        () = async { let _ = drain.wait_for(|d| *d).await; } => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer = %origin.peer, error = %e, "activator connection ended with an error");
    }
}

/// The destination the client connected to before kube-proxy's DNAT, if conntrack knows one that differs from
/// the socket's own address.
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let fd = stream.as_raw_fd();
    let dst = match local {
        SocketAddr::V4(_) => {
            // SAFETY: zeroed sockaddr_in is a valid value; getsockopt writes at most `len` bytes into it.
            let mut addr: libc::sockaddr_in = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            // SAFETY: fd is an open socket owned by `stream`; the pointers refer to live locals of the right size.
            let rc = unsafe { libc::getsockopt(fd, libc::SOL_IP, SO_ORIGINAL_DST, (&raw mut addr).cast(), &mut len) };
            if rc != 0 || i32::from(addr.sin_family) != libc::AF_INET {
                return None;
            }
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(addr.sin_port)))
        }
        SocketAddr::V6(_) => {
            // SAFETY: as above, for sockaddr_in6.
            let mut addr: libc::sockaddr_in6 = unsafe { std::mem::zeroed() };
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            // SAFETY: as above.
            let rc = unsafe { libc::getsockopt(fd, libc::SOL_IPV6, SO_ORIGINAL_DST, (&raw mut addr).cast(), &mut len) };
            if rc != 0 || i32::from(addr.sin6_family) != libc::AF_INET6 {
                return None;
            }
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(addr.sin6_port), 0, 0))
        }
    };
    (dst != local).then_some(dst)
}
