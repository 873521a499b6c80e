//! The one error type of the harness.

use std::path::PathBuf;
use std::time::Duration;

/// Result of every fallible harness call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while preparing or driving a node test.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file-system or process call failed.
    #[error("{context}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// The harness was asked for something it cannot set up.
    #[error("{0}")]
    Setup(String),
    /// A program could not be started at all.
    #[error("could not start `{program}`")]
    Spawn {
        /// The program name.
        program: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// A program ran and reported failure.
    #[error("`{command}` exited with {code}: {stderr}")]
    CommandFailed {
        /// The command line.
        command: String,
        /// Exit code (128 + signal when killed by a signal).
        code: i32,
        /// The program's standard error, trimmed.
        stderr: String,
    },
    /// A program did not finish in time and was killed.
    #[error("`{command}` did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command line.
        command: String,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// A state was not reached in time.
    #[error("{what} not reached within {timeout:?} (last seen: {last})")]
    Wait {
        /// The awaited state.
        what: String,
        /// The bound that was exceeded.
        timeout: Duration,
        /// What was observed last.
        last: String,
    },
    /// Required Debian packages are missing and could not be installed.
    #[error("missing packages {packages:?}: {reason}")]
    Packages {
        /// Debian package names still missing.
        packages: Vec<String>,
        /// Why they could not be installed.
        reason: String,
    },
    /// The private containerd did not come up.
    #[error("private containerd did not start: {reason}\n--- tail of {log} ---\n{log_tail}")]
    ContainerdStart {
        /// What was observed.
        reason: String,
        /// The containerd log file.
        log: PathBuf,
        /// Its last lines.
        log_tail: String,
    },
    /// An image could not be built or written.
    #[error(transparent)]
    Image(#[from] wasmkube_images::Error),
    /// A guest component could not be found or built.
    #[error("guest component `{name}`: {reason}")]
    Guest {
        /// The guest name.
        name: String,
        /// What is wrong.
        reason: String,
    },
    /// A CRI call failed (connection or gRPC status).
    #[error("CRI {call}: {reason}")]
    Cri {
        /// The CRI method, e.g. `RunPodSandbox`.
        call: String,
        /// The transport error or gRPC status.
        reason: String,
    },
    /// A JSON document could not be written or read.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Wraps an I/O error with what the harness was doing.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Adds context to `io::Result`s without closures at every call site.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}
