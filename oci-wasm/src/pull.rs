//! Pulling a component: manifest (through an index if need be) → component layer → verified bytes.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use crate::manifest::{wasm_from_layer, Manifest};
use crate::{media, verify_digest, Error};

/// Where verified blobs are kept between pulls (the shim's node cache; nothing for the CLI).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The blob `digest`: from the store when it holds a valid copy, else from `fetch` (whose result is
    /// already verified) and then stored. Concurrent calls for one digest should share one fetch.
    async fn get_or_fetch(&self, digest: &str, fetch: BoxFuture<'_, Result<Vec<u8>, Error>>) -> Result<Vec<u8>, Error>;
}

/// A store that keeps nothing: every pull goes to the registry.
pub struct NoStore;

#[async_trait]
impl BlobStore for NoStore {
    async fn get_or_fetch(
        &self,
        _digest: &str,
        fetch: BoxFuture<'_, Result<Vec<u8>, Error>>,
    ) -> Result<Vec<u8>, Error> {
        fetch.await
    }
}

/// A pulled component and what it was found in.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// Digest of the image manifest that holds the component (after index selection).
    pub manifest_digest: String,
    /// Media type of that manifest.
    pub manifest_media_type: String,
    /// Media type of its config.
    pub config_media_type: Option<String>,
    /// The component's layer.
    pub layer: crate::manifest::Descriptor,
    /// The component bytes.
    pub wasm: Vec<u8>,
}

/// Pulls components with `oci-client`.
#[derive(Debug, Clone)]
pub struct Puller {
    insecure_registries: Vec<String>,
    timeout: Duration,
}

impl Puller {
    /// `insecure_registries` (`host:port`) are reached over plain HTTP; `timeout` bounds each request.
    pub fn new(insecure_registries: Vec<String>, timeout: Duration) -> Self {
        Self { insecure_registries, timeout }
    }

    /// A fresh client: `oci-client` keeps the first credentials it sees per registry, so a client is
    /// never shared between pulls that may carry different credentials.
    pub fn client(&self) -> oci_client::Client {
        let protocol = if self.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.insecure_registries.clone())
        };
        oci_client::Client::new(ClientConfig { protocol, ..ClientConfig::default() })
    }

    /// Pulls the component `reference` names. Digest references are served from `store` without the
    /// registry when it holds every blob; tags are always resolved by the registry.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        store: &dyn BlobStore,
    ) -> Result<Pulled, Error> {
        let client = self.client();
        let name = format!("oci://{}", reference.whole());
        let (mut bytes, mut digest) = self.manifest(&client, reference, auth, store).await?;
        let mut manifest = Manifest::parse(&bytes, &digest)?;
        let mut at = reference.clone();
        if manifest.is_index() {
            let entry = manifest.pick_platform(&name)?.digest.clone();
            at = reference.clone_with_digest(entry);
            (bytes, digest) = self.manifest(&client, &at, auth, store).await?;
            manifest = Manifest::parse(&bytes, &digest)?;
            if manifest.is_index() {
                return Err(Error::NoComponent { reference: name, reason: "an index inside an index".into() });
            }
        }
        let (layer, kind) = manifest.component_layer(&name)?;
        let blob = store.get_or_fetch(&layer.digest, Box::pin(self.blob(&client, &at, layer))).await?;
        let wasm = wasm_from_layer(blob, kind, &name)?;
        Ok(Pulled {
            manifest_digest: digest,
            manifest_media_type: manifest.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
            config_media_type: manifest.config.as_ref().map(|c| c.media_type.clone()),
            layer: layer.clone(),
            wasm,
        })
    }

    /// The manifest bytes and digest `reference` names.
    async fn manifest(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        auth: &RegistryAuth,
        store: &dyn BlobStore,
    ) -> Result<(Vec<u8>, String), Error> {
        let fetch = async {
            let pulled = client.pull_manifest_raw(reference, auth, media::MANIFESTS);
            let (bytes, digest) = self.bounded(reference, pulled).await?;
            let bytes = bytes.to_vec();
            // The registry's digest header is not trusted: the bytes must hash to the digest asked for.
            let digest = reference.digest().map(str::to_string).unwrap_or(digest);
            verify_digest(&digest, &bytes)?;
            Ok::<_, Error>((bytes, digest))
        };
        match reference.digest() {
            Some(d) => {
                let bytes = store.get_or_fetch(d, Box::pin(async { fetch.await.map(|(bytes, _)| bytes) })).await?;
                Ok((bytes, d.to_string()))
            }
            None => {
                let (bytes, digest) = fetch.await?;
                // Kept so that a later pull by this digest needs no registry.
                let stored = bytes.clone();
                store.get_or_fetch(&digest, Box::pin(async move { Ok(stored) })).await?;
                Ok((bytes, digest))
            }
        }
    }

    async fn blob(
        &self,
        client: &oci_client::Client,
        reference: &Reference,
        layer: &crate::manifest::Descriptor,
    ) -> Result<Vec<u8>, Error> {
        let descriptor = oci_client::manifest::OciDescriptor {
            media_type: layer.media_type.clone(),
            digest: layer.digest.clone(),
            size: layer.size,
            ..Default::default()
        };
        let mut bytes = Vec::with_capacity(usize::try_from(layer.size).unwrap_or(0).min(1 << 30));
        self.bounded(reference, client.pull_blob(reference, &descriptor, &mut bytes)).await?;
        verify_digest(&layer.digest, &bytes)?;
        Ok(bytes)
    }

    /// Runs a registry call within the timeout, mapping its error to one that names the registry only.
    async fn bounded<T>(
        &self,
        reference: &Reference,
        call: impl std::future::Future<Output = Result<T, oci_client::errors::OciDistributionError>>,
    ) -> Result<T, Error> {
        let registry = reference.resolve_registry().to_string();
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => Err(Error::Registry { registry, message: registry_message(&e) }),
            Err(_) => Err(Error::Timeout { registry, seconds: self.timeout.as_secs() }),
        }
    }
}

/// The error and its sources in one line (a connection refusal hides in the sources).
pub fn registry_message(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}
