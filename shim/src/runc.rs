//! Pod sandboxes delegated to `runc`: the sandbox image's pause binary runs as a real, minimal process
//! that holds the pod's namespaces, so the pod's containers can join them through `/proc/<pid>/ns/*`.
//!
//! Knows runc's command line and nothing about wasmtime or ttrpc.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use tokio::sync::watch;

use crate::runtime::{Exit, Launch, LaunchError, Signal, Usage, Workload};

/// The runc binary, found on the PATH containerd gives its shims.
const RUNC: &str = "runc";
/// Bound on one runc command (create, start, kill, delete).
const RUNC_TIMEOUT: Duration = Duration::from_secs(30);

/// File in a sandbox's bundle naming runc's state root, so `delete` can clean up after a dead daemon.
const ROOT_FILE: &str = "wasmkube-runc-root";

/// Removes the runc container of a sandbox whose daemon is gone (the `delete` subcommand): its pause
/// process was reparented to init and would otherwise outlive the pod. A no-op for other bundles.
pub fn delete_orphaned_sandbox(bundle: &Path) {
    let Ok(root) = std::fs::read_to_string(bundle.join(ROOT_FILE)) else {
        return;
    };
    let Some(id) = bundle.file_name().and_then(|n| n.to_str()) else {
        return;
    };
    tracing::info!(id, "deleting the sandbox of a daemon that is gone");
    Runc { root: PathBuf::from(root), id: id.to_string() }.delete(&bundle.join("runc.log"));
}

/// Runs sandbox containers with runc; one per daemon.
pub struct RuncSandboxes {
    /// runc's state root, private to the daemon.
    root: PathBuf,
}

impl RuncSandboxes {
    /// Keeps runc's state under `root`, and makes the daemon the reaper of the processes runc starts
    /// (runc's own process exits after `create`; its container's init would otherwise go to pid 1).
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root).map_err(|e| anyhow::anyhow!("cannot create {}: {e}", root.display()))?;
        // SAFETY: prctl with PR_SET_CHILD_SUBREAPER takes an integer argument and touches no memory.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            anyhow::bail!("cannot become a child subreaper: {}", std::io::Error::last_os_error());
        }
        Ok(Self { root })
    }

    /// `runc create`: the sandbox's process exists (and holds its namespaces) before the task reports
    /// created, as with containerd's runc shim.
    pub async fn prepare(&self, launch: Launch) -> Result<Box<dyn Workload>, LaunchError> {
        let runc = Runc { root: self.root.clone(), id: launch.id.clone() };
        let pid_file = launch.bundle.join("sandbox.pid");
        let log = launch.bundle.join("runc.log");
        let bundle = launch.bundle.clone();
        std::fs::write(bundle.join(ROOT_FILE), self.root.as_os_str().as_encoded_bytes())
            .map_err(|e| LaunchError::cannot_run(format!("cannot write {}/{ROOT_FILE}: {e}", bundle.display())))?;
        let created = {
            let runc = runc.clone();
            let (pid_file, log) = (pid_file.clone(), log.clone());
            tokio::task::spawn_blocking(move || {
                let mut cmd = runc.command(&log);
                cmd.arg("create").arg("--bundle").arg(&bundle).arg("--pid-file").arg(&pid_file).arg(&runc.id);
                run(cmd)
            })
            .await
            .map_err(|e| LaunchError::cannot_run(format!("runc create aborted: {e}")))?
        };
        if let Err(e) = created {
            return Err(LaunchError::cannot_run(format!(
                "the pod sandbox cannot be created with runc: {e}; runc log: {}",
                tail(&log)
            )));
        }
        let pid = std::fs::read_to_string(&pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .ok_or_else(|| LaunchError::cannot_run(format!("runc wrote no pid to {}", pid_file.display())))?;
        tracing::info!(id = %launch.id, pid, "pod sandbox created with runc");
        Ok(Box::new(RuncSandbox { runc, pid, log, started: false, usage: Arc::default() }))
    }
}

/// runc commands for one container.
#[derive(Clone)]
struct Runc {
    root: PathBuf,
    id: String,
}

impl Runc {
    fn command(&self, log: &Path) -> Command {
        let mut cmd = Command::new(RUNC);
        cmd.arg("--root").arg(&self.root).arg("--log").arg(log);
        // The container's init inherits these: the sandbox has no stdio, and a pipe here would keep
        // runc's caller waiting for EOF as long as the sandbox lives.
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null());
        cmd
    }

    fn kill(&self, log: &Path, signal: Signal) {
        let mut cmd = self.command(log);
        cmd.args(["kill", &self.id, &signal.0.to_string()]);
        if let Err(e) = run(cmd) {
            tracing::debug!(id = %self.id, error = %e, "runc kill (the process may be gone already)");
        }
    }

    fn delete(&self, log: &Path) {
        let mut cmd = self.command(log);
        cmd.args(["delete", "--force", &self.id]);
        if let Err(e) = run(cmd) {
            tracing::warn!(id = %self.id, error = %e, "runc delete");
        }
    }
}

/// A sandbox created by runc, started on `start` and reaped by the daemon.
struct RuncSandbox {
    runc: Runc,
    pid: u32,
    log: PathBuf,
    started: bool,
    usage: Arc<Usage>,
}

impl Workload for RuncSandbox {
    fn start(mut self: Box<Self>, mut signals: watch::Receiver<Option<Signal>>) -> BoxFuture<'static, Exit> {
        self.started = true;
        Box::pin(async move {
            let (runc, log, pid) = (self.runc.clone(), self.log.clone(), self.pid);
            let started = tokio::task::spawn_blocking({
                let (runc, log) = (runc.clone(), log.clone());
                move || {
                    let mut cmd = runc.command(&log);
                    cmd.args(["start", &runc.id]);
                    run(cmd)
                }
            })
            .await;
            if let Err(e) = started.map_err(|e| e.to_string()).and_then(|r| r) {
                runc.delete(&log);
                return Exit::failed(126, format!("runc start of the pod sandbox failed: {e}"));
            }
            let mut reaped = tokio::spawn(reap_when_exited(pid));
            let exit = loop {
                tokio::select! {
                    status = &mut reaped => break status.unwrap_or(Exit::code(128 + libc::SIGKILL as u32)),
                    changed = signals.changed() => {
                        let signal = if changed.is_ok() { *signals.borrow_and_update() } else { None };
                        if let Some(signal) = signal {
                            let (runc, log) = (runc.clone(), log.clone());
                            let _ = tokio::task::spawn_blocking(move || runc.kill(&log, signal)).await;
                        } else if changed.is_err() {
                            // Nobody can signal any more; the process still ends when containerd kills it.
                            break reaped.await.unwrap_or(Exit::code(128 + libc::SIGKILL as u32));
                        }
                    }
                }
            };
            let _ = tokio::task::spawn_blocking(move || runc.delete(&log)).await;
            exit
        })
    }

    fn usage(&self) -> Arc<Usage> {
        self.usage.clone()
    }

    fn pid(&self) -> Option<u32> {
        Some(self.pid)
    }
}

impl Drop for RuncSandbox {
    fn drop(&mut self) {
        // Deleted before it was started: runc's init still waits in its namespaces. Blocking, but
        // bounded by RUNC_TIMEOUT and only on this rare path.
        if !self.started {
            self.runc.delete(&self.log);
        }
    }
}

/// Waits for the sandbox's process without holding a thread: a pidfd becomes readable when the process
/// exits. A blocking `waitpid` per sandbox took one of tokio's 512 blocking threads each, so the 512th pod
/// with a pause process left no thread for the next `runc create` (found by `pod-memory` at 1,000 pods).
async fn reap_when_exited(pid: u32) -> Exit {
    let watched = pidfd(pid).and_then(|fd| {
        // SAFETY: the OwnedFd moves into the AsyncFd, which alone closes it; as_raw_fd never changes.
        unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::other)
    });
    match watched {
        Ok(fd) => {
            if let Err(e) = fd.readable().await {
                tracing::warn!(%pid, error = %e, "cannot watch the sandbox process; waiting for it on a thread");
            }
        }
        // Kernels before 5.3 have no pidfd.
        Err(e) => tracing::debug!(%pid, error = %e, "no pidfd; waiting for the sandbox process on a thread"),
    }
    // Exited by now (unless the watch failed): the wait returns at once.
    tokio::task::spawn_blocking(move || reap(pid)).await.unwrap_or(Exit::code(128 + libc::SIGKILL as u32))
}

/// A pidfd of process `pid`.
fn pidfd(pid: u32) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just created and is owned by nothing else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as std::os::fd::RawFd) })
}

/// Waits for the sandbox's process (the daemon is its subreaper) and reports it like a shell would.
fn reap(pid: u32) -> Exit {
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    loop {
        match nix::sys::wait::waitpid(pid, None) {
            Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => return Exit::code(code as u32),
            Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => return Exit::code(128 + sig as u32),
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                // Not our child (e.g. the daemon was restarted): we can only notice it is gone.
                tracing::warn!(%pid, error = %e, "cannot wait for the sandbox process; polling it");
                while nix::sys::signal::kill(pid, None).is_ok() {
                    std::thread::sleep(Duration::from_millis(100));
                }
                return Exit::code(128 + libc::SIGKILL as u32);
            }
        }
    }
}

/// Runs a runc command with a bound; its error says what runc said.
fn run(mut cmd: Command) -> Result<(), String> {
    let mut child = cmd.spawn().map_err(|e| format!("cannot run {RUNC}: {e}"))?;
    let deadline = std::time::Instant::now() + RUNC_TIMEOUT;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => {
                let code = status.code().or(status.signal().map(|s| 128 + s)).unwrap_or(-1);
                return Err(format!("{cmd:?} exited with {code}"));
            }
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{cmd:?} did not finish within {RUNC_TIMEOUT:?}"));
            }
            Err(e) => return Err(format!("waiting for {cmd:?}: {e}")),
        }
    }
}

/// The last lines of runc's log, for error messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    // The children are reaped by the function under test, not through their `Child`.
    #[allow(clippy::zombie_processes)]
    #[tokio::test(flavor = "multi_thread", worker_threads = 1)]
    async fn a_process_is_reaped_with_its_exit_code_or_signal_once_it_ends() {
        let exits = std::process::Command::new("sh").args(["-c", "sleep 0.2; exit 3"]).spawn().unwrap();
        let killed = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let (exits_pid, killed_pid) = (exits.id(), killed.id());
        let waiting = tokio::spawn(reap_when_exited(exits_pid));
        assert_eq!(waiting.await.unwrap(), Exit::code(3));
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(killed_pid as i32), nix::sys::signal::Signal::SIGKILL)
            .unwrap();
        assert_eq!(reap_when_exited(killed_pid).await, Exit::code(128 + libc::SIGKILL as u32));
    }
}
