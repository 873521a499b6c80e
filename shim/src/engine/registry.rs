//! Components named `oci://…`: pulled from their registry through the node cache, with the pod's pull
//! secrets as credentials.
//!
//! Credentials are read from the pull-secret mounts of the spec (the operator mounts every
//! `imagePullSecrets` entry under `wasmkube_contract::component::PULL_SECRETS_DIR`; the spec lists their
//! files); they are handed to the registry client only and never logged, cached or put into a message.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use wasmkube_oci::{auth, parse_oci_ref, Puller};

use super::cache::{NodeCache, Pin};
use super::source::ComponentBytes;
use crate::runtime::LaunchError;
/// Bound on each registry request; a registry that does not answer fails the container, not the node.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Pulls `oci://` components for the node.
pub struct RegistrySource {
    puller: Puller,
    cache: Arc<NodeCache>,
}

impl RegistrySource {
    /// Registries in `insecure_registries` are reached over plain HTTP.
    pub fn new(insecure_registries: Vec<String>, cache: Arc<NodeCache>) -> Self {
        Self { puller: Puller::new(insecure_registries, REQUEST_TIMEOUT), cache }
    }

    /// The component `reference` names, and a pin that keeps its cache entries while the task lives.
    /// `pull_secrets` are the container's `.dockerconfigjson` files.
    pub async fn fetch(&self, reference: &str, pull_secrets: &[PathBuf]) -> Result<(ComponentBytes, Pin), LaunchError> {
        let cannot_pull =
            |e: &dyn std::fmt::Display| LaunchError::cannot_run(format!("cannot pull component {reference}: {e}"));
        let parsed = parse_oci_ref(reference).map_err(|e| cannot_pull(&e))?;
        let auth = credentials(pull_secrets, parsed.resolve_registry()).map_err(|e| cannot_pull(&e))?;
        let pulled = self.puller.pull(&parsed, &auth, self.cache.as_ref()).await.map_err(|e| cannot_pull(&e))?;
        tracing::info!(
            component = %reference,
            manifest = %pulled.manifest_digest,
            layer = %pulled.layer.digest,
            size = pulled.wasm.len(),
            "component pulled"
        );
        let digest = wasmkube_oci::sha256_digest(&pulled.wasm);
        let pin = self.cache.pin(vec![pulled.manifest_digest, pulled.layer.digest, digest.clone()]);
        if let Some(why) = &pulled.fallback {
            tracing::warn!(component = %reference, reason = %why, "registry unreachable; tag started from the node cache");
        }
        let notice = pulled.fallback.map(|why| format!("wasmkube: warning: {why}"));
        Ok((ComponentBytes { digest, bytes: pulled.wasm, origin: reference.to_string(), notice }, pin))
    }
}

/// The credentials for `registry` from the first pull secret that names it; anonymous when none does.
fn credentials(pull_secrets: &[PathBuf], registry: &str) -> Result<RegistryAuth, wasmkube_oci::Error> {
    for file in pull_secrets {
        if let Some(basic) = auth::from_docker_config_file(file, registry)? {
            tracing::info!(registry, secret = %file.display(), "using pull secret");
            return Ok(basic.registry_auth());
        }
    }
    Ok(RegistryAuth::Anonymous)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_pull_secret_for_that_registry() {
        let dir = tempfile::tempdir().unwrap();
        let other = dir.path().join("other.json");
        std::fs::write(&other, br#"{"auths":{"else.example":{"username":"x","password":"y"}}}"#).unwrap();
        let secret = dir.path().join("regcred.json");
        std::fs::write(&secret, br#"{"auths":{"r.example:5000":{"username":"u","password":"pw"}}}"#).unwrap();
        let secrets = [other, secret];
        assert!(matches!(credentials(&secrets, "r.example:5000").unwrap(), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(credentials(&secrets, "other.example").unwrap(), RegistryAuth::Anonymous));
    }
}
