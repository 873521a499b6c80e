//! WebAssembly components as OCI artifacts, shared by the shim (pulls) and the `wasmkube` CLI (pushes,
//! inspects): media types, `oci://` references, registry credentials, and the rules that find the one
//! component in a manifest.
//!
//! Content is addressed by digest throughout; every blob handed out has been checked against its digest.

pub mod auth;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
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
    digest_string(sha2::Sha256::digest(bytes))
}

/// `sha256:<hex>` of everything `reader` yields, read piece by piece: a file of any size is hashed without
/// being held in memory.
pub fn sha256_digest_of_reader(mut reader: impl std::io::Read) -> std::io::Result<String> {
    use sha2::Digest;
    let mut hasher = sha2::Sha256::new();
    std::io::copy(&mut reader, &mut hasher)?;
    Ok(digest_string(hasher.finalize()))
}

fn digest_string(hash: impl AsRef<[u8]>) -> String {
    format!("sha256:{}", hex::encode(hash))
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

/// The binary format's preamble: magic, then version and layer (component model: 0x0d, layer 1).
const WASM_MAGIC: &[u8; 4] = b"\0asm";
const COMPONENT_VERSION_LAYER: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const CORE_MODULE_VERSION_LAYER: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// `None` for a component binary; otherwise what the bytes are, for a message ("… is {what}").
pub fn not_a_component(bytes: &[u8]) -> Option<String> {
    let (magic, version) = (bytes.get(..4), bytes.get(4..8));
    if magic == Some(WASM_MAGIC) && version == Some(&COMPONENT_VERSION_LAYER) {
        return None;
    }
    Some(if magic == Some(WASM_MAGIC) && version == Some(&CORE_MODULE_VERSION_LAYER) {
        "a core WebAssembly module, not a component (build for wasm32-wasip2, or wrap it with `wasm-tools component new`)"
            .to_string()
    } else {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!("not a WebAssembly component (it starts with bytes [{}], not \\0asm)", head.join(" "))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reader_hashes_to_the_digest_of_its_bytes() {
        // More than one read's worth, so the pieces must be joined in order.
        let bytes: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        assert_eq!(sha256_digest_of_reader(bytes.as_slice()).unwrap(), sha256_digest(&bytes));
        assert_eq!(
            sha256_digest_of_reader(&b""[..]).unwrap(),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }
}
