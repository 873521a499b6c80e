//! Pulling a component: manifest (through an index if need be) → component layer → verified bytes.

use std::time::Duration;

use async_trait::async_trait;
use futures::future::BoxFuture;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::Reference;

use crate::manifest::{too_large, wasm_from_layer, Manifest, MAX_COMPONENT_BYTES};
use crate::{media, verify_digest, Error};

/// Where verified blobs are kept between pulls (the shim's node cache; nothing for the CLI).
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// The blob `digest`: from the store when it holds a valid copy, else from `fetch` (whose result is
    /// already verified) and then stored. Concurrent calls for one digest should share one fetch.
    async fn get_or_fetch(&self, digest: &str, fetch: BoxFuture<'_, Result<Vec<u8>, Error>>) -> Result<Vec<u8>, Error>;

    /// The manifest digest tag `key` (`REGISTRY/REPO:TAG`) resolved to when the registry last answered.
    fn tag_digest(&self, _key: &str) -> Option<String> {
        None
    }

    /// Remembers what tag `key` resolved to, so that the tag can start when its registry is unreachable.
    fn remember_tag(&self, _key: &str, _digest: &str) {}
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
    /// Set when a tag's registry could not be reached and the digest the tag resolved to before was used
    /// instead, from the store: why, in words, for the container's log.
    pub fallback: Option<String>,
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
    /// registry when it holds every blob. Tags are resolved by the registry; only when it gives no answer
    /// (see [`Error::is_unreachable`]) does a tag start as the digest it resolved to last time, as a kubelet's
    /// `IfNotPresent` starts a cached image.
    pub async fn pull(
        &self,
        reference: &Reference,
        auth: &RegistryAuth,
        store: &dyn BlobStore,
    ) -> Result<Pulled, Error> {
        let key = tag_key(reference);
        match self.pull_at(reference, auth, store).await {
            Err(e) if e.is_unreachable() => {
                let Some(digest) = key.as_deref().and_then(|k| store.tag_digest(k)) else { return Err(e) };
                let pinned = reference.clone_with_digest(digest.clone());
                // Why `Err(e)` when the store misses a blob: the registry's silence is the cause to report.
                let Ok(mut pulled) = self.pull_at(&pinned, auth, store).await else { return Err(e) };
                pulled.fallback = Some(format!(
                    "{e}; starting oci://{} from the node cache as {digest}, the digest the tag named when the \
                     registry last answered",
                    reference.whole()
                ));
                Ok(pulled)
            }
            result => result,
        }
    }

    async fn pull_at(
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
        if u64::try_from(layer.size).unwrap_or(0) > MAX_COMPONENT_BYTES {
            return Err(too_large(&name, "the image layer is larger than", MAX_COMPONENT_BYTES));
        }
        let blob = store.get_or_fetch(&layer.digest, Box::pin(self.blob(&client, &at, layer))).await?;
        let wasm = wasm_from_layer(blob, kind, &name)?;
        Ok(Pulled {
            manifest_digest: digest,
            manifest_media_type: manifest.media_type.clone().unwrap_or_else(|| media::OCI_MANIFEST.to_string()),
            config_media_type: manifest.config.as_ref().map(|c| c.media_type.clone()),
            layer: layer.clone(),
            wasm,
            fallback: None,
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
                if let Some(key) = tag_key(reference) {
                    store.remember_tag(&key, &digest);
                }
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
            Ok(Err(e)) if no_answer(&e) => Err(Error::Unreachable { registry, message: registry_message(&e) }),
            Ok(Err(e)) => Err(Error::Registry { registry, message: registry_message(&e) }),
            Err(_) => Err(Error::Timeout { registry, seconds: self.timeout.as_secs() }),
        }
    }
}

/// `REGISTRY/REPO:TAG` of a tag reference (`None` for a digest reference, which needs no resolving).
fn tag_key(reference: &Reference) -> Option<String> {
    if reference.digest().is_some() {
        return None;
    }
    let tag = reference.tag().unwrap_or("latest");
    Some(format!("{}/{}:{tag}", reference.resolve_registry(), reference.repository()))
}

/// Whether the registry gave no answer: the connection failed or timed out, or the server failed (5xx).
fn no_answer(e: &oci_client::errors::OciDistributionError) -> bool {
    use oci_client::errors::OciDistributionError as E;
    match e {
        E::RequestError(e) => e.is_connect() || e.is_timeout() || e.is_request(),
        E::ServerError { code, .. } => *code >= 500,
        _ => false,
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;

    use super::*;
    use crate::{parse_oci_ref, sha256_digest};

    /// A store in memory that remembers tags, as the shim's node cache does on disk.
    #[derive(Default)]
    struct Memory {
        blobs: Mutex<HashMap<String, Vec<u8>>>,
        tags: Mutex<HashMap<String, String>>,
    }

    #[async_trait]
    impl BlobStore for Memory {
        async fn get_or_fetch(
            &self,
            digest: &str,
            fetch: BoxFuture<'_, Result<Vec<u8>, Error>>,
        ) -> Result<Vec<u8>, Error> {
            if let Some(bytes) = self.blobs.lock().unwrap().get(digest) {
                return Ok(bytes.clone());
            }
            let bytes = fetch.await?;
            self.blobs.lock().unwrap().insert(digest.to_string(), bytes.clone());
            Ok(bytes)
        }

        fn tag_digest(&self, key: &str) -> Option<String> {
            self.tags.lock().unwrap().get(key).cloned()
        }

        fn remember_tag(&self, key: &str, digest: &str) {
            self.tags.lock().unwrap().insert(key.to_string(), digest.to_string());
        }
    }

    /// A registry address on which nothing listens.
    fn closed_registry() -> String {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    }

    /// A store holding a one-layer wasm artifact; returns its manifest digest.
    fn stored_component(store: &Memory, wasm: &[u8]) -> String {
        let layer = sha256_digest(wasm);
        let config = b"{}".to_vec();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::OCI_MANIFEST,
            "config": {"mediaType": media::WASM_CONFIG, "digest": sha256_digest(&config), "size": config.len()},
            "layers": [{"mediaType": media::WASM_LAYER, "digest": layer, "size": wasm.len()}],
        });
        let manifest = serde_json::to_vec(&manifest).unwrap();
        let digest = sha256_digest(&manifest);
        let mut blobs = store.blobs.lock().unwrap();
        blobs.insert(layer, wasm.to_vec());
        blobs.insert(digest.clone(), manifest);
        digest
    }

    #[tokio::test]
    async fn an_unreachable_registry_starts_a_tag_it_resolved_before_from_the_store() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let registry = closed_registry();
        let puller = Puller::new(vec![registry.clone()], Duration::from_secs(5));
        let reference = parse_oci_ref(&format!("oci://{registry}/apps/hello:v1")).unwrap();
        let store = Memory::default();
        let digest = stored_component(&store, b"\0asm component bytes");

        // Never resolved on this node: the registry's silence is the error.
        let err = puller.pull(&reference, &RegistryAuth::Anonymous, &store).await.unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert!(err.to_string().starts_with(&format!("registry {registry} cannot be reached")), "{err}");

        store.remember_tag(&format!("{registry}/apps/hello:v1"), &digest);
        let pulled = puller.pull(&reference, &RegistryAuth::Anonymous, &store).await.unwrap();
        assert_eq!(pulled.manifest_digest, digest);
        assert_eq!(pulled.wasm, b"\0asm component bytes");
        let why = pulled.fallback.unwrap();
        assert!(why.contains("cannot be reached") && why.contains(&digest), "{why}");

        // Another tag of the same repository was never resolved here.
        let other = parse_oci_ref(&format!("oci://{registry}/apps/hello:v2")).unwrap();
        assert!(puller.pull(&other, &RegistryAuth::Anonymous, &store).await.unwrap_err().is_unreachable());
    }

    #[test]
    fn tag_keys_name_registry_repository_and_tag() {
        let key = |r: &str| tag_key(&parse_oci_ref(r).unwrap());
        assert_eq!(key("oci://r.example:5000/a/b:v1").as_deref(), Some("r.example:5000/a/b:v1"));
        assert_eq!(key("oci://r.example/a/b").as_deref(), Some("r.example/a/b:latest"));
        assert_eq!(key(&format!("oci://r.example/a/b@sha256:{}", "a".repeat(64))), None);
    }
}
