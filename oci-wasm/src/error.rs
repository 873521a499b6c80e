//! Errors of pulling, pushing and reading components. No variant carries credentials.

/// Why a component could not be pulled, pushed or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The reference is not `oci://REGISTRY/REPO[:TAG|@sha256:…]`.
    #[error("invalid component reference {reference:?}: {reason}")]
    InvalidReference { reference: String, reason: String },
    /// A digest that is not `sha256:`.
    #[error("unsupported digest {0:?}: only sha256 digests are accepted")]
    UnsupportedDigest(String),
    /// Content does not match its digest.
    #[error("content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    /// The registry refused or failed a request.
    #[error("registry {registry}: {message}")]
    Registry { registry: String, message: String },
    /// The registry could not be reached, or failed on its side (5xx): it could not say what a tag names.
    #[error("registry {registry} cannot be reached: {message}")]
    Unreachable { registry: String, message: String },
    /// The registry did not answer in time.
    #[error("registry {registry} did not answer within {seconds} s")]
    Timeout { registry: String, seconds: u64 },
    /// A manifest or config that cannot be parsed.
    #[error("invalid manifest {digest}: {reason}")]
    InvalidManifest { digest: String, reason: String },
    /// No component in what the reference names.
    #[error("{reference}: {reason}")]
    NoComponent { reference: String, reason: String },
    /// Credentials that cannot be read (never says what they are).
    #[error("registry credentials {source_name}: {reason}")]
    Credentials { source_name: String, reason: String },
    /// A local file or cache operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

impl Error {
    /// An [`Error::Io`] with context.
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io { context: context.into(), source }
    }

    /// The registry gave no answer (down, unreachable, too slow or failing on its side), as opposed to an
    /// answer such as "not found" or "unauthorized".
    pub fn is_unreachable(&self) -> bool {
        matches!(self, Error::Unreachable { .. } | Error::Timeout { .. })
    }
}
