//! WebAssembly components as OCI artifacts, shared by the shim (pulls) and the `wasmkube` CLI (pushes,
//! inspects): media types, `oci://` references, registry credentials, and the rules that find the one
//! component in a manifest.
//!
//! Content is addressed by digest throughout; every blob handed out has been checked against its digest.

pub mod auth;
pub mod error;
pub mod manifest;
pub mod media;
pub mod pull;
pub mod push;
pub mod reference;

pub use error::Error;
pub use pull::{BlobStore, NoStore, Pulled, Puller};
pub use reference::{parse_oci_ref, OCI_SCHEME};

/// `sha256:<hex>` of `bytes`.
pub fn sha256_digest(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("sha256:{}", hex::encode(sha2::Sha256::digest(bytes)))
}

/// Checks `bytes` against `digest` (only `sha256:` digests are accepted).
pub fn verify_digest(digest: &str, bytes: &[u8]) -> Result<(), Error> {
    if !digest.starts_with("sha256:") {
        return Err(Error::UnsupportedDigest(digest.to_string()));
    }
    let actual = sha256_digest(bytes);
    if actual == digest {
        Ok(())
    } else {
        Err(Error::DigestMismatch { expected: digest.to_string(), actual })
    }
}
