//! `spec.component` as the pods run it: parsed, normalised, and pinned to a digest when resolved.

use wasmkube_contract::component::oci_uri;

use crate::error::Error;

/// The component reference the pods run, normalised and (when resolved) pinned to a digest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedComponent {
    /// Full reference without scheme, e.g. `ghcr.io/org/app@sha256:…` or `docker.io/library/app:1`.
    pub reference: String,
    /// `sha256:…` when the reference is pinned.
    pub digest: Option<String>,
}

impl ResolvedComponent {
    /// The component as the shim reads it from the container's command.
    pub fn uri(&self) -> String {
        oci_uri(&self.reference)
    }
}

/// Parse `spec.component` into an OCI reference the shim can pull.
pub fn parse_component(component: &str) -> Result<oci_client::Reference, Error> {
    use oci_client::ParseError;

    let invalid = |source| Error::InvalidComponent { reference: component.to_string(), source };
    let reference = component.parse::<oci_client::Reference>().map_err(invalid)?;
    // Why: oci-client takes a first segment without `.`, `:` or `localhost` (`MyOrg/app`) for a Docker Hub
    // repository even with capitals, which no registry has; the pods would name `docker.io/MyOrg/app`, which
    // nothing parses (found by the fuzz target wasmapp_render).
    if reference.repository().bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(invalid(ParseError::NameContainsUppercase));
    }
    // Why: the shim verifies sha256 digests only, as the lowercase hex it computes.
    if let Some(digest) = reference.digest() {
        let hex = digest.strip_prefix("sha256:").ok_or_else(|| invalid(ParseError::DigestUnsupported))?;
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(invalid(ParseError::DigestInvalidFormat));
        }
    }
    Ok(reference)
}

/// The reference the pods run when no registry was asked: digest refs are pinned as written, tags stay tags.
pub fn unresolved_component(component: &str) -> Result<ResolvedComponent, Error> {
    let reference = parse_component(component)?;
    Ok(match reference.digest() {
        Some(digest) => {
            ResolvedComponent { reference: pinned_reference(&reference, digest), digest: Some(digest.to_string()) }
        }
        None => ResolvedComponent { reference: reference.whole(), digest: None },
    })
}

/// `REGISTRY/REPO@DIGEST`: the tag is dropped because the digest alone decides the bytes.
pub fn pinned_reference(reference: &oci_client::Reference, digest: &str) -> String {
    format!("{}/{}@{}", reference.registry(), reference.repository(), digest)
}
