//! Sockets inside a pod's network namespace: the listener, so that `POD_IP:PORT` reaches the component,
//! and the guest's outbound connections, so that they leave from the pod's IP as a process's would.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};

use futures::future::BoxFuture;
use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;
use tokio::sync::mpsc;

use crate::spec::{NameFiles, HOSTS, RESOLV_CONF};

/// Why the listener could not be bound.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// The namespace file cannot be opened or joined.
    #[error("cannot enter the pod's network namespace {path}: {reason}")]
    Namespace { path: PathBuf, reason: String },
    /// The address cannot be bound (in use, no permission).
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    /// The namespace's runtime could not be built.
    #[error("cannot build a runtime inside the pod's network namespace: {0}")]
    Runtime(String),
    /// The helper thread could not run.
    #[error("cannot start the thread that binds in the pod's network namespace: {0}")]
    Thread(String),
    /// The pod's /etc/resolv.conf or /etc/hosts could not be put in place for name lookups.
    #[error("cannot resolve names with the pod's {file}: {reason}")]
    NameFiles { file: &'static str, reason: String },
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

/// A thread inside a network namespace driving a small tokio runtime: the sockets its tasks create
/// (connections, DNS look-ups on its blocking threads, which inherit the namespace) belong to that
/// namespace. Their I/O may be polled from any thread. The thread ends when every handle is dropped.
///
/// With the pod's name files, the thread also has a mount namespace of its own in which they are
/// `/etc/resolv.conf` and `/etc/hosts`: the C library's resolver (musl reads both at every look-up) then
/// uses the pod's nameservers, search domains and `ndots`, as a process in the pod would.
#[derive(Clone)]
pub struct NamespaceRuntime {
    jobs: mpsc::UnboundedSender<BoxFuture<'static, ()>>,
}

impl NamespaceRuntime {
    /// Starts the thread in the namespace at `netns`, resolving names with `name_files`.
    pub fn start(netns: &Path, name_files: &NameFiles) -> Result<Self, BindError> {
        let (jobs, mut queue) = mpsc::unbounded_channel::<BoxFuture<'static, ()>>();
        let (ready_tx, ready) = std::sync::mpsc::channel();
        let path = netns.to_path_buf();
        let name_files = name_files.clone();
        std::thread::Builder::new()
            .name("wasmkube-netns-out".into())
            .spawn(move || {
                let runtime = enter(&path).and_then(|()| use_name_files(&name_files)).and_then(|()| {
                    tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                        .map_err(|e| BindError::Runtime(e.to_string()))
                });
                let runtime = match runtime {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let _ = ready_tx.send(Ok(()));
                runtime.block_on(async move {
                    while let Some(job) = queue.recv().await {
                        tokio::spawn(job);
                    }
                });
            })
            .map_err(|e| BindError::Thread(e.to_string()))?;
        ready.recv().map_err(|_| BindError::Thread("the thread ended before it was ready".into()))??;
        Ok(Self { jobs })
    }

    /// Runs `job` inside the namespace; false when the runtime is gone.
    pub fn spawn(&self, job: BoxFuture<'static, ()>) -> bool {
        self.jobs.send(job).is_ok()
    }
}

fn enter(path: &Path) -> Result<(), BindError> {
    let err = |reason: String| BindError::Namespace { path: path.to_path_buf(), reason };
    let file = std::fs::File::open(path).map_err(|e| err(e.to_string()))?;
    nix::sched::setns(file, CloneFlags::CLONE_NEWNET).map_err(|e| err(e.to_string()))
}

/// Puts `files` at `/etc/resolv.conf` and `/etc/hosts` for this thread and the threads it starts, in a
/// mount namespace of their own (nothing of it reaches the host's).
fn use_name_files(files: &NameFiles) -> Result<(), BindError> {
    if files.is_empty() {
        return Ok(());
    }
    let failed = |file, e: nix::Error| BindError::NameFiles { file, reason: e.desc().to_string() };
    nix::sched::unshare(CloneFlags::CLONE_NEWNS).map_err(|e| failed("mount namespace", e))?;
    // Private first: a bind mount in a namespace that shares propagation with the host's would show there.
    mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)
        .map_err(|e| failed("mount namespace", e))?;
    for (source, target) in [(&files.resolv_conf, RESOLV_CONF), (&files.hosts, HOSTS)] {
        if let Some(source) = source {
            mount(Some(source.as_path()), target, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(|e| {
                BindError::NameFiles { file: target, reason: format!("{}: {}", source.display(), e.desc()) }
            })?;
        }
    }
    Ok(())
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

    #[tokio::test]
    async fn jobs_run_inside_the_namespace() {
        // Entering a network namespace, even one's own, takes CAP_SYS_ADMIN.
        if !wasmkube_harness::require_root() {
            return;
        }
        let own = std::fs::read_link("/proc/thread-self/ns/net").unwrap();
        let rt = NamespaceRuntime::start(Path::new("/proc/self/ns/net"), &NameFiles::default()).unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        assert!(rt.spawn(Box::pin(async move {
            let _ = tx.send(std::fs::read_link("/proc/thread-self/ns/net").unwrap());
        })));
        assert_eq!(rx.await.unwrap(), own);
        assert!(NamespaceRuntime::start(Path::new("/nonexistent/ns/net"), &NameFiles::default()).is_err());
    }

    #[test]
    fn a_missing_namespace_is_a_clear_error() {
        let err = bind_listener(Some(Path::new("/nonexistent/ns/net")), "127.0.0.1:0".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ns/net"), "{err}");
    }
}
