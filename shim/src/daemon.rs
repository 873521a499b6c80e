//! The shim binary's entry points: `start` finds or starts the node daemon, `delete` cleans up one
//! bundle, and the daemon itself serves the Task service for every container of a containerd namespace.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::Shim;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Error, Flags, StartOpts};
use nix::fcntl::{Flock, FlockArg};

use crate::engine::NodeEngine;
use crate::pod::NodeRuntime;
use crate::runc::RuncSandboxes;
use crate::task::{ContainerdEvents, Occupancy, TaskService};

/// One daemon per containerd instance and namespace: the grouping key every task shares.
const GROUPING_KEY: &str = "wasmkube-node-daemon";
/// Fallback home of daemons when the bundle is not where containerd usually puts it.
const FALLBACK_DAEMON_ROOT: &str = "/run/wasmkube";
/// How long `start` waits for a freshly spawned daemon to serve.
const DAEMON_START_TIMEOUT: Duration = Duration::from_secs(10);
/// The daemon log is rotated once at start when it grew past this.
const LOG_ROTATE_BYTES: u64 = 16 * 1024 * 1024;

/// The shim as containerd's runtime v2 sees it.
pub struct WasmkubeShim {
    namespace: String,
    bundle: PathBuf,
    socket: String,
    occupancy: Arc<Occupancy>,
    idle_exit: OnceLock<Duration>,
}

#[async_trait]
impl Shim for WasmkubeShim {
    type T = TaskService<NodeRuntime>;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        Self {
            namespace: args.namespace.clone(),
            bundle: bundle_of(args),
            socket: args.socket.clone(),
            occupancy: Arc::default(),
            idle_exit: OnceLock::new(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        let bundle = self.bundle.clone();
        tokio::task::spawn_blocking(move || start_with(&bundle, &opts))
            .await
            .map_err(|e| Error::Other(format!("start task panicked: {e}")))?
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // Only called when the daemon is gone: the task's instance went with it, as if SIGKILLed.
        crate::runc::delete_orphaned_sandbox(&self.bundle);
        crate::task::cleanup_bundle(&self.bundle);
        Ok(DeleteResponse {
            exit_status: 128 + libc::SIGKILL as u32,
            exited_at: MessageField::some(crate::task::now_timestamp()),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        let linger = self.idle_exit.get().copied().unwrap_or_default();
        loop {
            self.occupancy.shutdown_requested().await;
            let idle = self.occupancy.snapshot();
            if idle.0 != 0 {
                continue;
            }
            // Stay warm a little: a pod that follows at once reuses the engine and compiled code.
            tokio::time::sleep(linger).await;
            if self.occupancy.snapshot() != idle {
                continue;
            }
            // Under the start lock, so that no `start` hands out this socket while the daemon goes.
            let held = tokio::task::spawn_blocking(lock_start_in_cwd).await.ok().and_then(Result::ok);
            if self.occupancy.snapshot() != idle {
                continue;
            }
            remove_socket(&self.socket);
            tracing::info!("no task for {linger:?} after the last shutdown request: the daemon exits");
            // The lock is released when the process exits, after the socket is gone.
            std::mem::forget(held);
            return;
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> Self::T {
        raise_open_files_limit();
        let (config, runtime) = match crate::config::load().map_err(anyhow::Error::from).and_then(|cfg| {
            let engine = NodeEngine::new(crate::config::engine_settings(&cfg))?;
            // The daemon runs in its home directory; runc's state for the sandboxes lives there too.
            let sandboxes = RuncSandboxes::new(std::env::current_dir()?.join("runc"))?;
            Ok((cfg, NodeRuntime::new(engine, sandboxes)))
        }) {
            Ok(ready) => ready,
            Err(e) => {
                // `start` reports this log to containerd when the daemon does not come up.
                tracing::error!("wasmkube daemon cannot start: {e:#}");
                std::process::exit(1);
            }
        };
        let _ = self.idle_exit.set(config.idle_exit());
        // Metrics never stop workloads: an address that cannot be bound is only a warning.
        match config.metrics_address() {
            Some(address) => {
                let token_file = config.metrics_token_file().map(Path::to_path_buf);
                crate::metrics::spawn_endpoint(address, runtime.engine().http_metrics(), token_file).await;
            }
            None => tracing::info!("metrics endpoint disabled (metrics_address is empty)"),
        }
        tracing::info!(namespace = %self.namespace, pid = std::process::id(), "node daemon serving");
        let events = ContainerdEvents::new(publisher, self.namespace.clone());
        TaskService::new(runtime, Box::new(events), self.occupancy.clone())
    }
}

/// `start`, without an async runtime: containerd runs it for every task, twice per pod start, and the
/// runtime's threads would cost it more than its own work (`main` calls this before it builds one).
pub fn start(flags: &Flags) -> containerd_shim::Result<String> {
    let opts = StartOpts {
        id: flags.id.clone(),
        publish_binary: flags.publish_binary.clone(),
        address: flags.address.clone(),
        ttrpc_address: std::env::var(TTRPC_ADDRESS_ENV).unwrap_or_default(),
        namespace: flags.namespace.clone(),
        debug: flags.debug,
    };
    start_with(&bundle_of(flags), &opts)
}

/// The environment variable in which containerd gives its ttrpc address.
const TTRPC_ADDRESS_ENV: &str = "TTRPC_ADDRESS";

/// The task's bundle: the `-bundle` flag, else the directory containerd runs the binary in.
fn bundle_of(flags: &Flags) -> PathBuf {
    if flags.bundle.is_empty() {
        std::env::current_dir().unwrap_or_default()
    } else {
        PathBuf::from(&flags.bundle)
    }
}

/// Finds or starts the node daemon for the task in `bundle` and records its address there.
fn start_with(bundle: &Path, opts: &StartOpts) -> containerd_shim::Result<String> {
    let address = containerd_shim::socket_address(&opts.address, &opts.namespace, GROUPING_KEY);
    let dir = daemon_dir(bundle, &opts.namespace, &address);
    let address = find_or_start_daemon(opts, &address, &dir)?;
    // containerd reads this file to reconnect to the task's shim after it restarts.
    std::fs::write(bundle.join("address"), &address)
        .map_err(|e| Error::Other(format!("cannot write {}/address: {e}", bundle.display())))?;
    Ok(address)
}

/// Lifts the daemon's soft limit on open files to the hard limit. Every container holds its stdio FIFOs and
/// every wasi:http container a listener, so a dense node (1,000 pods) needs thousands; containerd 2.x's unit
/// leaves its children the soft default of 1,024 (Go raises only its own limit).
fn raise_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed by pointer.
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max && {
            let before = limit.rlim_cur;
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 && before < limit.rlim_cur
        }
    };
    if raised {
        tracing::info!(open_files = limit.rlim_cur, "open-files limit raised to the hard limit");
    }
}

/// The daemon's home: `<containerd state>/wasmkube/<namespace>`, next to containerd's own task
/// directories, so it lives and goes with that containerd instance.
fn daemon_dir(bundle: &Path, namespace: &str, address: &str) -> PathBuf {
    // Bundles are `<state>/io.containerd.runtime.v2.task/<namespace>/<id>` on containerd 1.6 to 2.x.
    let state = bundle.parent().filter(|ns| ns.ends_with(namespace)).and_then(Path::parent).and_then(Path::parent);
    match state {
        Some(state) => state.join("wasmkube").join(namespace),
        None => Path::new(FALLBACK_DAEMON_ROOT).join(address.rsplit('/').next().unwrap_or("default")),
    }
}

fn lock_start(dir: &Path) -> containerd_shim::Result<Flock<std::fs::File>> {
    let path = dir.join("start.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Error::Other(format!("cannot open {}: {e}", path.display())))?;
    Flock::lock(file, FlockArg::LockExclusive)
        .map_err(|(_, e)| Error::Other(format!("cannot lock {}: {e}", path.display())))
}

/// The daemon runs in its own directory.
fn lock_start_in_cwd() -> containerd_shim::Result<Flock<std::fs::File>> {
    lock_start(Path::new("."))
}

/// Returns the address of a serving daemon, starting one under a lock so that concurrent `start`s
/// never race two daemons onto one socket.
fn find_or_start_daemon(opts: &StartOpts, address: &str, dir: &Path) -> containerd_shim::Result<String> {
    std::fs::create_dir_all(dir).map_err(|e| Error::Other(format!("cannot create {}: {e}", dir.display())))?;
    let _held = lock_start(dir)?;
    if daemon_serves(address) {
        return Ok(address.to_string());
    }
    spawn_daemon(opts, address, dir)?;
    if daemon_serves(address) {
        Ok(address.to_string())
    } else {
        let log = dir.join("daemon.log");
        Err(Error::Other(format!(
            "the wasmkube node daemon did not start; its log {} ends with:\n{}",
            log.display(),
            log_tail(&log)
        )))
    }
}

fn socket_path(address: &str) -> &str {
    address.strip_prefix("unix://").unwrap_or(address)
}

fn daemon_serves(address: &str) -> bool {
    std::os::unix::net::UnixStream::connect(socket_path(address)).is_ok()
}

fn remove_socket(address: &str) {
    if let Err(e) = std::fs::remove_file(socket_path(address)) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(address, error = %e, "cannot remove the daemon socket");
        }
    }
}

/// mimalloc's options for the daemon, unless the node's environment sets them (shared with the operator, which
/// sets them on itself; the reasons are in `wasmkube_contract::allocator`).
pub use wasmkube_contract::allocator::ALLOCATOR_ENV as DAEMON_ALLOCATOR_ENV;

/// Sets [`DAEMON_ALLOCATOR_ENV`] in this process for what its environment does not set: `main` calls it before
/// its first allocation, where mimalloc reserves its first arena. containerd runs `start` twice per pod start,
/// with containerd's environment, and an eagerly committed arena cost it a 2 MiB huge page to zero, a fifth of its
/// time (docs/shim.md, "Where a pod start goes"). The daemon gets the same options through its environment.
#[cfg(feature = "mimalloc")]
pub fn apply_allocator_options() {
    // Its index in mimalloc.h (v2 and v3): show_errors, show_stats, verbose, eager_commit, arena_eager_commit.
    const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
    // SAFETY: getenv only reads the environment, and no thread that could change it runs yet; mi_option_set
    // stores a number.
    unsafe {
        if libc::getenv(c"MIMALLOC_ARENA_EAGER_COMMIT".as_ptr()).is_null() {
            libmimalloc_sys::mi_option_set(MI_OPTION_ARENA_EAGER_COMMIT, 0);
        }
    }
}

/// Starts the daemon and waits until it serves: it closes its stdout once its socket listens.
fn spawn_daemon(opts: &StartOpts, address: &str, dir: &Path) -> containerd_shim::Result<()> {
    let exe = std::env::current_exe().map_err(|e| Error::Other(format!("cannot find the shim binary: {e}")))?;
    let log_path = dir.join("daemon.log");
    if std::fs::metadata(&log_path).is_ok_and(|m| m.len() > LOG_ROTATE_BYTES) {
        let _ = std::fs::rename(&log_path, dir.join("daemon.log.1"));
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .map_err(|e| Error::Other(format!("cannot open the daemon log {}: {e}", log_path.display())))?;
    let mut cmd = Command::new(exe);
    cmd.current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .args(["-namespace", &opts.namespace, "-id", GROUPING_KEY, "-address", &opts.address, "-socket", address])
        // Its own process group: signals for containerd's group must not reach the pods' daemon.
        .process_group(0);
    if opts.debug {
        cmd.arg("-debug");
    }
    cmd.envs(wasmkube_contract::allocator::missing_here());
    let mut child = cmd.spawn().map_err(|e| Error::Other(format!("cannot start the node daemon: {e}")))?;
    let pid = child.id();
    let Some(mut ready) = child.stdout.take() else {
        return Err(Error::Other("the node daemon has no stdout pipe".into()));
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = tx.send(ready.read_to_end(&mut sink));
    });
    if rx.recv_timeout(DAEMON_START_TIMEOUT).is_err() {
        let _ = child.kill();
        return Err(Error::Other(format!(
            "the node daemon (pid {pid}) did not start serving within {DAEMON_START_TIMEOUT:?}"
        )));
    }
    Ok(())
}

fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_in_process_allocator_options_are_the_daemons() {
        // `apply_allocator_options` sets exactly these; a new one needs its mimalloc option index there too.
        assert_eq!(DAEMON_ALLOCATOR_ENV, [("MIMALLOC_ARENA_EAGER_COMMIT", "0")]);
    }

    #[test]
    fn daemon_lives_in_the_containerd_state_dir() {
        let bundle = Path::new("/run/containerd/io.containerd.runtime.v2.task/k8s.io/abc123");
        assert_eq!(
            daemon_dir(bundle, "k8s.io", "unix:///run/containerd/s/ff"),
            Path::new("/run/containerd/wasmkube/k8s.io")
        );
    }

    #[test]
    fn unusual_bundles_fall_back_to_run_wasmkube() {
        let bundle = Path::new("/somewhere/else");
        assert_eq!(daemon_dir(bundle, "default", "unix:///run/containerd/s/ff"), Path::new("/run/wasmkube/ff"));
    }

    #[test]
    fn the_daemon_lifts_its_open_files_limit_to_the_hard_limit() {
        let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: as in raise_open_files_limit; the soft limit stays far above what the tests open.
        unsafe {
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            let hard = limit.rlim_max;
            limit.rlim_cur = hard / 2;
            assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
            raise_open_files_limit();
            assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
            assert_eq!(limit.rlim_cur, hard);
        }
    }
}
