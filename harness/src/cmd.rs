//! Running external programs with captured output and a time bound.

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use crate::error::{Error, Result};

/// What a finished program reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CmdOutput {
    /// Exit code; 128 + signal number when the program was killed by a signal.
    pub code: i32,
    /// Standard output, lossily decoded.
    pub stdout: String,
    /// Standard error, lossily decoded.
    pub stderr: String,
}

impl CmdOutput {
    /// True when the program exited with code 0.
    pub fn success(&self) -> bool {
        self.code == 0
    }

    /// Turns a non-zero exit into [`Error::CommandFailed`] naming `command`.
    pub fn check(self, command: &str) -> Result<CmdOutput> {
        if self.success() {
            Ok(self)
        } else {
            Err(Error::CommandFailed {
                command: command.to_string(),
                code: self.code,
                stderr: self.stderr.trim().to_string(),
            })
        }
    }
}

/// Shell-like rendering of a command for messages.
pub fn describe(cmd: &Command) -> String {
    let mut parts = vec![cmd.get_program().to_string_lossy().into_owned()];
    parts.extend(cmd.get_args().map(|a| a.to_string_lossy().into_owned()));
    parts.join(" ")
}

/// Exit code of a status, following the shell's 128 + signal convention.
pub fn exit_code(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(sig)) => 128 + sig,
        (None, None) => -1,
    }
}

/// Runs `cmd` to completion (stdin closed), killing it after `timeout`.
pub fn run(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let command = describe(cmd);
    tracing::debug!(%command, "running");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| Error::Spawn { program: cmd.get_program().to_string_lossy().into_owned(), source })?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let status = wait_bounded(child, timeout).ok_or_else(|| Error::Timeout { command: command.clone(), timeout })?;
    let status = status.map_err(|e| Error::io(format!("waiting for `{command}`"), e))?;
    Ok(CmdOutput { code: exit_code(status), stdout: join_reader(stdout), stderr: join_reader(stderr) })
}

/// Runs `cmd` and fails unless it exits with 0.
pub fn run_checked(cmd: &mut Command, timeout: Duration) -> Result<CmdOutput> {
    let command = describe(cmd);
    run(cmd, timeout)?.check(&command)
}

/// Waits for `child`; on timeout kills it and returns `None`.
fn wait_bounded(mut child: Child, timeout: Duration) -> Option<std::io::Result<ExitStatus>> {
    let pid = Pid::from_raw(child.id() as i32);
    let (tx, rx) = mpsc::channel();
    // A waiting thread instead of polling keeps the measured wall time exact for benchmarks.
    let waiter = thread::spawn(move || {
        let _ = tx.send(child.wait());
    });
    match rx.recv_timeout(timeout) {
        Ok(status) => {
            let _ = waiter.join();
            Some(status)
        }
        Err(_) => {
            // The child is not reaped until the waiter returns, so the pid cannot have been reused.
            let _ = kill(pid, Signal::SIGKILL);
            let _ = waiter.join();
            None
        }
    }
}

/// Reads a pipe to its end on a thread, so a chatty program never blocks on a full pipe.
fn drain<R: Read + Send + 'static>(pipe: Option<R>) -> Option<thread::JoinHandle<Vec<u8>>> {
    pipe.map(|mut p| {
        thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = p.read_to_end(&mut buf);
            buf
        })
    })
}

fn join_reader(handle: Option<thread::JoinHandle<Vec<u8>>>) -> String {
    let bytes = handle.and_then(|h| h.join().ok()).unwrap_or_default();
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captures_output_and_exit_code() {
        let out =
            run(Command::new("sh").args(["-c", "echo out; echo err >&2; exit 7"]), Duration::from_secs(10)).unwrap();
        assert_eq!(out.code, 7);
        assert_eq!(out.stdout, "out\n");
        assert_eq!(out.stderr, "err\n");
        assert!(out.check("sh").is_err());
    }

    #[test]
    fn kills_on_timeout() {
        let started = std::time::Instant::now();
        let err = run(Command::new("sh").args(["-c", "exec sleep 30"]), Duration::from_millis(200)).unwrap_err();
        assert!(matches!(err, Error::Timeout { .. }), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn signal_maps_to_128_plus() {
        let out = run(Command::new("sh").args(["-c", "kill -9 $$"]), Duration::from_secs(10)).unwrap();
        assert_eq!(out.code, 137);
    }
}
