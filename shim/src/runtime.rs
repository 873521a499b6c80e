//! The seam between the task protocol and whatever runs a container's workload.
//!
//! The protocol side hands a [`Runtime`] a [`Launch`] (what containerd asked for, with stdio already
//! opened); the runtime answers with a [`Workload`] ready to start, or a [`LaunchError`] that the task
//! reports as its container's exit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::AsyncWrite;
use tokio::sync::watch;

use crate::spec::ContainerSpec;
use crate::striped::StripedU64;

/// Where a container's stdout and stderr go (already-open writers; `None` discards).
pub struct Stdio {
    /// The container's standard output.
    pub stdout: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
    /// The container's standard error.
    pub stderr: Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>,
}

/// Everything a runtime needs to prepare one container.
pub struct Launch {
    /// The container id.
    pub id: String,
    /// The bundle directory (holds `config.json`; runc runs a sandbox from it).
    pub bundle: PathBuf,
    /// What the shim uses of the bundle's OCI spec, read once at create.
    pub spec: ContainerSpec,
    /// The container's root filesystem, mounted when the spec uses it ([`ContainerSpec::uses_rootfs`]).
    pub rootfs: PathBuf,
    /// The container's stdio.
    pub stdio: Stdio,
}

/// Why a container could not be prepared; it ends with this code and message instead of starting.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct LaunchError {
    /// The exit code the container reports (shell conventions: 127 not found, 126 cannot run).
    pub exit_code: u32,
    /// A message for the container log and the termination-message file.
    pub message: String,
}

impl LaunchError {
    /// The component (or other entry point) does not exist.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self { exit_code: 127, message: message.into() }
    }

    /// The entry point exists but cannot be run (invalid, fails to compile or link).
    pub fn cannot_run(message: impl Into<String>) -> Self {
        Self { exit_code: 126, message: message.into() }
    }
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exit {
    /// The exit code as a process would report it (128+N for signal N).
    pub code: u32,
    /// Why it ended, when that is worth telling the user (a trap, a limit).
    pub reason: Option<String>,
    /// Ended by its memory limit: containerd hears a TaskOOM event, and the kubelet says `OOMKilled`.
    pub oom_killed: bool,
}

impl Exit {
    /// A plain exit with a code and no message.
    pub fn code(code: u32) -> Self {
        Self { code, reason: None, oom_killed: false }
    }

    /// An exit the user should be told about.
    pub fn failed(code: u32, reason: impl Into<String>) -> Self {
        Self { code, reason: Some(reason.into()), oom_killed: false }
    }

    /// Ended by the memory limit, with the exit code of a kernel OOM kill (128+SIGKILL).
    pub fn out_of_memory(reason: impl Into<String>) -> Self {
        Self { code: 128 + libc::SIGKILL as u32, reason: Some(reason.into()), oom_killed: true }
    }
}

/// Resource usage of a running workload, for `stats`.
///
/// A wasi:http container's instances (one per request in flight) report here from every thread at once,
/// several times per request, so what they write is striped: one shared counter is a cache line that moves
/// between the cores on every write.
#[derive(Debug, Default)]
pub struct Usage {
    /// Bytes of linear memories and tables of the container's live instances: each adds its growth and
    /// takes its total away when it ends.
    memory: StripedU64,
    /// The highest memory seen: any one instance's, or the total at a `stats` read.
    memory_peak: AtomicU64,
    /// CPU time spent running the guest, in nanoseconds.
    cpu_nanos: StripedU64,
}

impl Usage {
    /// An instance's memory grew from `from` to `to` bytes.
    pub fn memory_grew(&self, from: u64, to: u64) {
        self.memory.add(to.saturating_sub(from));
        self.raise_peak(to);
    }

    /// An instance holding `bytes` ended.
    pub fn memory_released(&self, bytes: u64) {
        self.memory.sub(bytes);
    }

    /// Bytes the container's live instances hold now.
    pub fn memory_bytes(&self) -> u64 {
        self.memory.get()
    }

    /// The highest memory seen, the total now included.
    pub fn memory_peak_bytes(&self) -> u64 {
        self.raise_peak(self.memory_bytes());
        self.memory_peak.load(Ordering::Relaxed)
    }

    /// Adds CPU time spent in the guest.
    pub fn add_cpu_nanos(&self, nanos: u64) {
        self.cpu_nanos.add(nanos);
    }

    /// CPU time spent in the guest so far.
    pub fn cpu_nanos(&self) -> u64 {
        self.cpu_nanos.get()
    }

    fn raise_peak(&self, bytes: u64) {
        // Read first: the instances of a container reach the same sizes, so the line is seldom written.
        if self.memory_peak.load(Ordering::Relaxed) < bytes {
            self.memory_peak.fetch_max(bytes, Ordering::Relaxed);
        }
    }
}

/// A termination request, as `kill` delivers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signal(pub u32);

impl Signal {
    /// SIGTERM: stop gracefully.
    pub const TERM: Signal = Signal(libc::SIGTERM as u32);
    /// SIGKILL: stop at once.
    pub const KILL: Signal = Signal(libc::SIGKILL as u32);
}

/// Waits for a terminating signal. Neither a component (wasi:cli has no signal delivery) nor a sandbox
/// held by the daemon can catch one: any signal ends it (an instance at its next yield point).
pub async fn next_signal(signals: &mut watch::Receiver<Option<Signal>>) -> Signal {
    loop {
        if let Some(signal) = *signals.borrow_and_update() {
            return signal;
        }
        if signals.changed().await.is_err() {
            // The task side is gone: nobody can observe this instance any more.
            return Signal::KILL;
        }
    }
}

/// A prepared container, ready to start.
pub trait Workload: Send {
    /// Runs the workload until it exits or a signal arrives on `signals`.
    fn start(self: Box<Self>, signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit>;

    /// Live resource usage, updated while the workload runs.
    fn usage(&self) -> Arc<Usage>;

    /// The workload's own process, when it has one (a delegated sandbox); `None` means it runs as an
    /// instance inside the daemon, which then reports its own pid.
    fn pid(&self) -> Option<u32> {
        None
    }
}

/// Prepares containers; one per daemon, shared by all tasks.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Loads, compiles and links what the container runs: every error a user can cause surfaces here.
    async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_signal_sent_before_waiting_is_seen_and_a_dropped_sender_is_a_kill() {
        let (tx, mut rx) = watch::channel(None);
        tx.send_replace(Some(Signal::TERM));
        assert_eq!(next_signal(&mut rx).await, Signal::TERM);
        let (tx, mut rx) = watch::channel(None);
        drop(tx);
        assert_eq!(next_signal(&mut rx).await, Signal::KILL);
    }
}
