//! How a container names its component and where the operator puts what the shim needs to fetch it.

/// Scheme of a component the shim pulls from a registry: `oci://REGISTRY/REPO:TAG` or `…@sha256:…`.
pub const OCI_SCHEME: &str = "oci://";
/// Everything the operator mounts for the shim (never shown to the guest) lives under this directory.
pub const SHIM_MOUNTS_DIR: &str = "/var/run/wasmkube";
/// Where each of a pod's pull secrets is mounted, one directory per secret name.
pub const PULL_SECRETS_DIR: &str = "/var/run/wasmkube/pull-secrets";
/// The key of a `kubernetes.io/dockerconfigjson` secret, and the file name it is mounted as.
pub const DOCKER_CONFIG_KEY: &str = ".dockerconfigjson";

/// The reference a container command names for a registry component (`REGISTRY/REPO…` without scheme).
pub fn oci_uri(reference: &str) -> String {
    format!("{OCI_SCHEME}{reference}")
}

/// The reference without its `oci://` scheme, when the command names a registry component.
pub fn strip_oci_scheme(command: &str) -> Option<&str> {
    command.strip_prefix(OCI_SCHEME)
}

/// The mount path of pull secret `name`.
pub fn pull_secret_mount_path(name: &str) -> String {
    format!("{PULL_SECRETS_DIR}/{name}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_round_trip() {
        assert_eq!(strip_oci_scheme(&oci_uri("r.example/app:1")), Some("r.example/app:1"));
        assert_eq!(strip_oci_scheme("/app.wasm"), None);
        assert!(pull_secret_mount_path("regcred").starts_with(SHIM_MOUNTS_DIR));
    }
}
