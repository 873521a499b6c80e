//! Components named `oci://…`: pulled from their registry through the node cache, with the pod's pull
//! secrets as credentials.
//!
//! Credentials are read from the pull-secret mounts of the spec (the operator mounts every
//! `imagePullSecrets` entry at `/var/run/wasmkube/pull-secrets/<name>/`); they are handed to the
//! registry client only and never logged, cached or put into a message.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use oci_client::secrets::RegistryAuth;
use oci_spec::runtime::Spec;
use wasmkube_oci::{auth, parse_oci_ref, Puller};

use super::cache::{NodeCache, Pin};
use super::source::ComponentBytes;
use crate::runtime::LaunchError;

/// Where a pod's pull secrets are mounted (one directory per secret).
pub const PULL_SECRETS_DIR: &str = "/var/run/wasmkube/pull-secrets";
/// The key of a `kubernetes.io/dockerconfigjson` secret.
const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";
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
    pub async fn fetch(&self, reference: &str, spec: &Spec) -> Result<(ComponentBytes, Pin), LaunchError> {
        let cannot_pull =
            |e: &dyn std::fmt::Display| LaunchError::cannot_run(format!("cannot pull component {reference}: {e}"));
        let parsed = parse_oci_ref(reference).map_err(|e| cannot_pull(&e))?;
        let auth = credentials(spec, parsed.resolve_registry()).map_err(|e| cannot_pull(&e))?;
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
        Ok((ComponentBytes { digest, bytes: pulled.wasm, origin: reference.to_string() }, pin))
    }
}

/// The credentials for `registry` from the spec's pull-secret mounts; anonymous when none names it.
fn credentials(spec: &Spec, registry: &str) -> Result<RegistryAuth, wasmkube_oci::Error> {
    for file in pull_secret_files(spec) {
        if let Some(basic) = auth::from_docker_config_file(&file, registry)? {
            tracing::info!(registry, secret = %file.display(), "using pull secret");
            return Ok(basic.registry_auth());
        }
    }
    Ok(RegistryAuth::Anonymous)
}

/// Host paths of the `.dockerconfigjson` files mounted under [`PULL_SECRETS_DIR`], in spec order.
fn pull_secret_files(spec: &Spec) -> Vec<PathBuf> {
    let base = Path::new(PULL_SECRETS_DIR);
    spec.mounts()
        .iter()
        .flatten()
        .filter(|m| m.destination().starts_with(base))
        .filter_map(|m| {
            let source = m.source().as_ref()?;
            // A directory mount of the whole secret, or the key mounted as a single file.
            Some(if m.destination().ends_with(DOCKER_CONFIG_KEY) {
                source.clone()
            } else {
                source.join(DOCKER_CONFIG_KEY)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{MountBuilder, SpecBuilder};

    #[test]
    fn credentials_come_from_the_pull_secret_mount_for_that_registry() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("regcred");
        std::fs::create_dir(&secret).unwrap();
        std::fs::write(
            secret.join(".dockerconfigjson"),
            br#"{"auths":{"r.example:5000":{"username":"u","password":"pw"}}}"#,
        )
        .unwrap();
        let mounts = vec![
            MountBuilder::default().destination("/data").source(dir.path()).build().unwrap(),
            MountBuilder::default()
                .destination("/var/run/wasmkube/pull-secrets/regcred")
                .source(&secret)
                .build()
                .unwrap(),
        ];
        let spec = SpecBuilder::default().mounts(mounts).build().unwrap();
        assert_eq!(pull_secret_files(&spec), vec![secret.join(".dockerconfigjson")]);
        assert!(matches!(credentials(&spec, "r.example:5000").unwrap(), RegistryAuth::Basic(u, _) if u == "u"));
        assert!(matches!(credentials(&spec, "other.example").unwrap(), RegistryAuth::Anonymous));
    }
}
