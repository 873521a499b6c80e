//! Sockets bound inside a pod's network namespace, so that `POD_IP:PORT` reaches the component.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

/// Why the listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The namespace file cannot be opened or joined.
    #[error("cannot enter the pod's network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    /// The address cannot be bound (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The helper thread could not run.
    #[error("cannot start the thread that binds in the pod's network namespace: {0}")]
    Thread(String),
}

/// Binds a non-blocking TCP listener on `addr`, inside the network namespace at `netns` when given
/// (else in the daemon's own). A socket stays in the namespace it was created in, so a short-lived
/// thread enters the namespace, binds, and ends; the daemon's other threads never change namespace.
pub fn bind_listener(netns: Option<&Path>, addr: SocketAddr) -> Result<TcpListener, BindError> {
    let Some(path) = netns else { return bind(addr) };
    let path = path.to_path_buf();
    std::thread::Builder::new()
        .name("wasmkube-netns-bind".into())
        .spawn(move || {
            enter(&path)?;
            bind(addr)
        })
        .map_err(|e| BindError::Thread(e.to_string()))?
        .join()
        .map_err(|_| BindError::Thread("the thread panicked".into()))?
}

fn enter(path: &Path) -> Result<(), BindError> {
    let err = |reason: String| BindError::Namespace { path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| err(e.to_string()))
}

fn bind(addr: SocketAddr) -> Result<TcpListener, BindError> {
    let listener = TcpListener::bind(addr).map_err(|source| BindError::Bind { addr, source })?;
    // tokio takes the socket over; it must not block.
    listener.set_nonblocking(true).map_err(|source| BindError::Bind { addr, source })?;
    Ok(listener)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binds_in_the_current_namespace_without_a_path() {
        let l = bind_listener(None, "127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(l.local_addr().unwrap().port(), 0);
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let err = bind_listener(Some(Path::new("/nonexistent/ns/net")), "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns/net"), "{err}");
    }
}
