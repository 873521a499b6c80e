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

/// Parse `spec.component` into an OCI reference.
pub fn parse_component(component: &str) -> Result<oci_client::Reference, Error> {
    component
        .parse::<oci_client::Reference>()
        .map_err(|source| Error::InvalidComponent { reference: component.to_string(), source })
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
