//! `oci://REGISTRY/REPO:TAG` and `oci://REGISTRY/REPO@sha256:…` references.

use oci_client::Reference;

use crate::Error;

pub use wasmkube_contract::component::OCI_SCHEME;

/// Parses `oci://…` (or a bare `REGISTRY/REPO…`) into an OCI reference; the registry must be explicit.
pub fn parse_oci_ref(reference: &str) -> Result<Reference, Error> {
    let bare = reference.strip_prefix(OCI_SCHEME).unwrap_or(reference);
    let invalid = |reason: String| Error::InvalidReference { reference: reference.to_string(), reason };
    let first = bare.split('/').next().unwrap_or_default();
    if !bare.contains('/') || !(first.contains('.') || first.contains(':') || first == "localhost") {
        return Err(invalid("expected REGISTRY/REPOSITORY with an explicit registry host".into()));
    }
    let parsed: Reference = bare.parse().map_err(|e| invalid(format!("{e}")))?;
    if let Some(digest) = parsed.digest() {
        // Lowercase only, as the OCI image spec writes sha256 digests: an uppercase one could never equal the
        // digest of the bytes, and the pull would fail later with a mismatch that hides the cause.
        let hex = digest.strip_prefix("sha256:").unwrap_or_default();
        if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(format!("digest {digest} is not sha256:<64 lowercase hex digits>")));
        }
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_digests_and_hosts_with_ports() {
        let r = parse_oci_ref("oci://127.0.0.1:5000/apps/hello:v1").unwrap();
        assert_eq!((r.registry(), r.repository(), r.tag()), ("127.0.0.1:5000", "apps/hello", Some("v1")));
        let d = format!("oci://ghcr.io/a/b@sha256:{}", "a".repeat(64));
        assert_eq!(parse_oci_ref(&d).unwrap().digest(), Some(format!("sha256:{}", "a".repeat(64)).as_str()));
    }

    #[test]
    fn registry_must_be_explicit_and_digests_complete() {
        assert!(parse_oci_ref("oci://hello:v1").is_err());
        assert!(parse_oci_ref("oci://ghcr.io/a/b@sha256:abc").is_err());
        assert!(parse_oci_ref(&format!("oci://ghcr.io/a/b@sha512:{}", "a".repeat(128))).is_err());
    }

    #[test]
    fn an_uppercase_digest_is_refused_at_once() {
        // Found by the fuzz target oci_reference (fuzz/regressions/oci_reference/uppercase-digest).
        let upper = format!("oci://ghcr.io/a/b@sha256:{}A", "a".repeat(63));
        let err = parse_oci_ref(&upper).unwrap_err().to_string();
        assert!(err.contains("lowercase"), "{err}");
    }
}
