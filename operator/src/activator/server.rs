//! The activator's listener: accepts connections, reads each socket's pre-DNAT destination, serves HTTP/1.1.

use std::future::Future;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

use super::handler::{handle, Origin};
use super::Activator;

/// `SO_ORIGINAL_DST` (and `IP6T_SO_ORIGINAL_DST`), from linux/netfilter_ipv4.h; libc does not export it.
const SO_ORIGINAL_DST: libc::c_int = 80;

/// Serve the activator on `listener` until `shutdown` resolves; connections already open finish on their own.
pub async fn serve(activator: Arc<Activator>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Why: accept errors (EMFILE, aborted handshakes) are per connection; the listener lives on.
                    tracing::warn!(error = %e, "activator accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let origin = Origin { peer, original_dst: original_dst(&stream) };
        let activator = activator.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let activator = activator.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(activator, request, origin).await) }
            });
            if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), service).await {
                tracing::debug!(%peer, error = %e, "activator connection ended with an error");
            }
        });
    }
    tracing::info!("activator stopped accepting connections");
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
