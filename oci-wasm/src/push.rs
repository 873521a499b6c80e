//! Pushing a component as a CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`,
//! one layer `application/wasm`).

use oci_client::secrets::RegistryAuth;
use oci_client::Reference;
use serde_json::json;

use crate::pull::{registry_message, Puller};
use crate::{media, sha256_digest, Error};

/// What a push stored.
#[derive(Debug, Clone)]
pub struct Pushed {
    /// Digest of the manifest (pin deployments to `REPO@DIGEST`).
    pub manifest_digest: String,
    /// Digest of the component layer.
    pub layer_digest: String,
}

/// The config blob of the artifact.
fn config_json(layer_digest: &str) -> Vec<u8> {
    json!({ "architecture": media::WASM_ARCH, "os": "wasip2", "layerDigests": [layer_digest] }).to_string().into_bytes()
}

/// The manifest of the artifact.
pub fn artifact_manifest(wasm: &[u8], config: &[u8]) -> Vec<u8> {
    json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": media::WASM_CONFIG,
        "config": { "mediaType": media::WASM_CONFIG, "digest": sha256_digest(config), "size": config.len() },
        "layers": [{ "mediaType": media::WASM_LAYER, "digest": sha256_digest(wasm), "size": wasm.len() }],
    })
    .to_string()
    .into_bytes()
}

/// Pushes `wasm` to `reference` and returns what was stored.
pub async fn push_component(
    puller: &Puller,
    reference: &Reference,
    auth: &RegistryAuth,
    wasm: Vec<u8>,
) -> Result<Pushed, Error> {
    let client = puller.client();
    let registry = reference.resolve_registry().to_string();
    let failed = |e: oci_client::errors::OciDistributionError| Error::Registry {
        registry: registry.clone(),
        message: registry_message(&e),
    };
    let layer_digest = sha256_digest(&wasm);
    let config = config_json(&layer_digest);
    let manifest = artifact_manifest(&wasm, &config);
    let manifest_digest = sha256_digest(&manifest);
    client.store_auth_if_needed(&registry, auth).await;
    client.auth(reference, auth, oci_client::RegistryOperation::Push).await.map_err(failed)?;
    client.push_blob(reference, wasm, &layer_digest).await.map_err(failed)?;
    client.push_blob(reference, config.clone(), &sha256_digest(&config)).await.map_err(failed)?;
    let content_type = http::HeaderValue::from_static(media::OCI_MANIFEST);
    client.push_manifest_raw(reference, manifest, content_type).await.map_err(failed)?;
    Ok(Pushed { manifest_digest, layer_digest })
}
