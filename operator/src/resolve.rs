//! Tag → digest resolution of components, behind a trait so tests can script the registry.

use std::time::Duration;

use async_trait::async_trait;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;

use crate::crd::WasmApp;
use crate::error::{message_chain, Error};
use crate::render::{parse_component, pinned_reference, unresolved_component, ResolvedComponent};
use crate::status::Problem;

/// Boxed error of a registry call.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Looks up the manifest digest a reference points at.
#[async_trait]
pub trait Resolver: Send + Sync {
    /// The `sha256:…` digest of `reference`'s manifest.
    async fn digest(&self, reference: &oci_client::Reference) -> Result<String, BoxError>;
}

/// Resolver that asks the registry with `oci-client` (anonymous access).
pub struct OciResolver {
    client: oci_client::Client,
    timeout: Duration,
}

impl OciResolver {
    /// A resolver; `insecure_registries` (`host:port`) are reached over plain HTTP.
    pub fn new(insecure_registries: Vec<String>, timeout: Duration) -> Self {
        let protocol = if insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(insecure_registries)
        };
        let client = oci_client::Client::new(ClientConfig { protocol, ..ClientConfig::default() });
        Self { client, timeout }
    }
}

#[async_trait]
impl Resolver for OciResolver {
    async fn digest(&self, reference: &oci_client::Reference) -> Result<String, BoxError> {
        let fetch = self.client.fetch_manifest_digest(reference, &RegistryAuth::Anonymous);
        match tokio::time::timeout(self.timeout, fetch).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(format!("registry did not answer within {:?}", self.timeout).into()),
        }
    }
}

/// Which reference the pods should run, and why resolution failed if it did.
///
/// A digest in the spec is used as written; a tag already resolved for the same `spec.component`
/// stays pinned (so a moved tag does not roll pods behind the user's back); otherwise the registry
/// is asked. When it cannot answer, the last good digest is kept, and only an app that never
/// resolved runs the tag (the shim resolves it), with the problem reported.
pub async fn resolve_component(
    app: &WasmApp,
    resolver: Option<&dyn Resolver>,
) -> Result<(ResolvedComponent, Option<Problem>), Error> {
    let spec_ref = parse_component(&app.spec.component)?;
    if spec_ref.digest().is_some() {
        return Ok((unresolved_component(&app.spec.component)?, None));
    }
    let Some(resolver) = resolver else {
        return Ok((unresolved_component(&app.spec.component)?, None));
    };
    let status = app.status.as_ref();
    let last_good = status.and_then(|s| {
        Some(ResolvedComponent { reference: s.resolved_component.clone()?, digest: Some(s.component_digest.clone()?) })
    });
    let same_source = status.and_then(|s| s.resolved_from.as_deref()) == Some(&app.spec.component);
    if let (true, Some(last)) = (same_source, &last_good) {
        return Ok((last.clone(), None));
    }
    match resolver.digest(&spec_ref).await {
        Ok(digest) => {
            Ok((ResolvedComponent { reference: pinned_reference(&spec_ref, &digest), digest: Some(digest) }, None))
        }
        Err(source) => {
            let err = Error::Resolve { reference: app.spec.component.clone(), source };
            let (component, consequence) = match last_good {
                Some(last) => {
                    let note = format!("pods keep running {}", last.reference);
                    (last, note)
                }
                None => (
                    unresolved_component(&app.spec.component)?,
                    "pods run the tag unpinned; the node resolves it".to_string(),
                ),
            };
            let problem = Problem::new(err.category(), format!("{}; {consequence}", message_chain(&err)));
            Ok((component, Some(problem)))
        }
    }
}
