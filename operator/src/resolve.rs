//! Tag → digest resolution of components, behind a trait so tests can script the registry.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use oci_client::client::{Certificate, CertificateEncoding, ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use crate::component::{parse_component, pinned_reference, unresolved_component, ResolvedComponent};
use crate::crd::WasmApp;
use crate::error::{message_chain, Error};
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

/// Why the registry client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ResolverSetupError {
    /// The configured CA bundle cannot be read or parsed.
    #[error("reading the registry CA bundle {path}")]
    CaBundle {
        /// The bundle's path.
        path: PathBuf,
        /// Read or PEM error.
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    /// The configured CA bundle holds no certificate.
    #[error("the registry CA bundle {0} holds no PEM certificate")]
    EmptyCaBundle(PathBuf),
    /// oci-client 0.18 cannot build a client on a host without a CA store (its default reqwest client).
    #[error("the registry client needs a system CA store on this host (oci-client 0.18 builds a default client that reads it)")]
    NoHostCaStore,
    /// oci-client refused the configuration.
    #[error("building the registry client")]
    Client(#[source] oci_client::errors::OciDistributionError),
}

/// The roots the resolver trusts: the bundled Mozilla roots (webpki-root-certs) and the certificates of
/// `ca_bundle`, a PEM file for registries with a private CA. Never the host's store, which the operator may
/// not have; its image carries these same roots as a CA file only because oci-client's inner reqwest client
/// insists on loading one (`wasmkube_images::catalog::CA_BUNDLE_PATH`, see [`OciResolver::new`]).
pub fn registry_roots(ca_bundle: Option<&Path>) -> Result<Vec<Certificate>, ResolverSetupError> {
    let der = |data: &[u8]| Certificate { encoding: CertificateEncoding::Der, data: data.to_vec() };
    let mut roots: Vec<Certificate> = webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().map(|c| der(c)).collect();
    if let Some(path) = ca_bundle {
        let bundle_error = |source| ResolverSetupError::CaBundle { path: path.to_path_buf(), source };
        let before = roots.len();
        for cert in CertificateDer::pem_file_iter(path).map_err(bundle_error)? {
            roots.push(der(&cert.map_err(bundle_error)?));
        }
        if roots.len() == before {
            return Err(ResolverSetupError::EmptyCaBundle(path.to_path_buf()));
        }
    }
    Ok(roots)
}

impl OciResolver {
    /// A resolver; `insecure_registries` (`host:port`) are reached over plain HTTP, TLS registries are trusted
    /// by [`registry_roots`].
    pub fn new(
        insecure_registries: Vec<String>,
        ca_bundle: Option<&Path>,
        timeout: Duration,
    ) -> Result<Self, ResolverSetupError> {
        let protocol = if insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(insecure_registries)
        };
        let config = ClientConfig { protocol, tls_certs_only: registry_roots(ca_bundle)?, ..ClientConfig::default() };
        // oci-client 0.18 also builds a default reqwest client inside `try_from`, whose platform verifier panics
        // on a host without a CA store whatever roots we pass (and `Client::new` falls back to that client):
        // turn the panic into an error the caller can survive.
        let build = std::panic::AssertUnwindSafe(|| oci_client::Client::try_from(config));
        let client = std::panic::catch_unwind(build)
            .map_err(|_| ResolverSetupError::NoHostCaStore)?
            .map_err(ResolverSetupError::Client)?;
        Ok(Self { client, timeout })
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
