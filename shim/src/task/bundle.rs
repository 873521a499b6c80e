//! The container's bundle on the host: its spec, root filesystem, stdio FIFOs and termination log.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use oci_spec::runtime::Spec;
use tokio::io::AsyncWrite;

use super::error::TaskError;

/// Reads `config.json` of a bundle.
pub fn read_spec(bundle: &Path) -> Result<Spec, TaskError> {
    let path = bundle.join("config.json");
    Spec::load(&path)
        .map_err(|e| TaskError::InvalidArgument(format!("cannot read the OCI spec {}: {e}", path.display())))
}

/// Mounts the rootfs containerd passed (if any) and returns the rootfs path; `root` is the spec's
/// `root.path`.
pub fn mount_rootfs(bundle: &Path, root: Option<&Path>, mounts: &[Mount]) -> Result<PathBuf, TaskError> {
    let target = bundle.join("rootfs");
    if mounts.is_empty() {
        // containerd passes no mounts when the rootfs is already in place (`ctr run --rootfs`).
        return Ok(match root {
            Some(root) if root.is_absolute() => root.to_path_buf(),
            Some(root) => bundle.join(root),
            None => target,
        });
    }
    std::fs::create_dir_all(&target)
        .map_err(|e| TaskError::Internal(format!("cannot create {}: {e}", target.display())))?;
    for m in mounts {
        containerd_shim::mount::mount_rootfs(Some(&m.type_), Some(&m.source), &m.options, &target).map_err(|e| {
            TaskError::Internal(format!("cannot mount the container rootfs ({}) at {}: {e}", m.type_, target.display()))
        })?;
    }
    Ok(target)
}

/// Unmounts `<bundle>/rootfs` if it is mounted; a bundle whose rootfs was never mounted is fine.
pub fn unmount_rootfs(bundle: &Path) {
    let target = bundle.join("rootfs");
    match nix::mount::umount2(&target, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => {}
        Err(e) => tracing::warn!(path = %target.display(), error = %e, "cannot unmount the container rootfs"),
    }
}

/// Opens a stdio FIFO for writing. Read-write, so that it neither waits for a reader nor fails when the
/// reader goes away (as `ctr run -d` does); output then waits in the pipe as it would for a process.
pub fn open_output(path: &str) -> Result<Option<Box<dyn AsyncWrite + Send + Sync + Unpin>>, TaskError> {
    if path.is_empty() {
        return Ok(None);
    }
    if is_fifo(path) {
        let sender = tokio::net::unix::pipe::OpenOptions::new()
            .read_write(true)
            .open_sender(path)
            .map_err(|e| TaskError::InvalidArgument(format!("cannot open the container's output {path}: {e}")))?;
        return Ok(Some(Box::new(sender)));
    }
    // containerd also accepts plain files (`ctr run --log-uri file://…`) for output.
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(strip_file_scheme(path))
        .map_err(|e| TaskError::InvalidArgument(format!("cannot open the container's output {path}: {e}")))?;
    Ok(Some(Box::new(tokio::fs::File::from_std(file))))
}

fn is_fifo(path: &str) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo())
}

fn strip_file_scheme(path: &str) -> &str {
    path.strip_prefix("file://").unwrap_or(path)
}

/// Tells the user why a container ended: on its stderr (so `kubectl logs` and `ctr` show it) and in its
/// termination-message file (so `kubectl describe pod` does).
///
/// It holds its own stderr handle from create until the exit is reported: the FIFO reader sees EOF only
/// once every writer is closed, so the message cannot arrive after the reader has gone.
pub struct ExitReporter {
    stderr: Option<std::fs::File>,
    termination_log: Option<PathBuf>,
}

impl ExitReporter {
    /// Opens the container's stderr for reporting.
    pub fn open(stderr: &str, termination_log: Option<PathBuf>) -> Result<Self, TaskError> {
        use std::os::unix::fs::OpenOptionsExt;
        let stderr = if stderr.is_empty() {
            None
        } else {
            let fifo = is_fifo(stderr);
            // Non-blocking read-write for a FIFO: a full or unread pipe must not stall the daemon.
            let file = std::fs::OpenOptions::new()
                .read(fifo)
                .write(true)
                .append(!fifo)
                .create(!fifo)
                .custom_flags(if fifo { libc::O_NONBLOCK } else { 0 })
                .open(strip_file_scheme(stderr))
                .map_err(|e| TaskError::InvalidArgument(format!("cannot open the container's stderr {stderr}: {e}")))?;
            Some(file)
        };
        Ok(Self { stderr, termination_log })
    }

    /// Reports `reason` (if any) and closes the reporter's stderr handle.
    pub fn report(self, reason: Option<&str>) {
        use std::io::Write;
        let Some(reason) = reason else { return };
        if let Some(mut stderr) = self.stderr {
            if let Err(e) = stderr.write_all(format!("wasmkube: {reason}\n").as_bytes()) {
                tracing::warn!(error = %e, "cannot write the exit reason to the container's stderr");
            }
        }
        if let Some(path) = &self.termination_log {
            if let Err(e) = std::fs::write(path, reason.as_bytes()) {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the termination message");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_reason_reaches_stderr_file_and_termination_log() {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr.log");
        let term = dir.path().join("termination-log");
        let reporter = ExitReporter::open(stderr.to_str().unwrap(), Some(term.clone())).unwrap();
        reporter.report(Some("component /x.wasm not found"));
        assert_eq!(std::fs::read_to_string(&term).unwrap(), "component /x.wasm not found");
        assert_eq!(std::fs::read_to_string(&stderr).unwrap(), "wasmkube: component /x.wasm not found\n");
    }
}
