//! The one error type of image building.

use std::path::PathBuf;

/// Result of every fallible call of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong while assembling an image.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The underlying failure.
        #[source]
        source: std::io::Error,
    },
    /// An image definition cannot be turned into a valid OCI layout.
    #[error("invalid image `{image}`: {reason}")]
    Image {
        /// The image name.
        image: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A binary that must run on any Linux needs a dynamic loader.
    #[error(
        "{path} is not a static executable ({reason}); build it for x86_64-unknown-linux-musl (.cargo/config.toml)"
    )]
    NotStatic {
        /// The binary.
        path: PathBuf,
        /// What the ELF header says.
        reason: String,
    },
    /// objcopy refused a binary.
    #[error("cannot strip the debug sections of {path}: {reason}")]
    Strip {
        /// The binary.
        path: PathBuf,
        /// What objcopy said.
        reason: String,
    },
    /// A JSON document could not be written.
    #[error("JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl Error {
    /// Wraps an I/O error with what was being done.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }
}

/// Adds context to `io::Result`s.
pub(crate) trait IoContext<T> {
    /// Converts the error into [`Error::Io`] with the given context.
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::io(context(), source))
    }
}
