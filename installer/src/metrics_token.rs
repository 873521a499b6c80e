//! The node metrics token: the operator puts it in its Secret, the installer copies it to the node file the
//! shim checks scrapes against (`metrics_token_file` in shim.toml), and keeps the copy current.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use wasmkube_contract::node::METRICS_TOKEN_KEY;

use crate::files::{self, FileError};

/// How often the Secret is read while the operator has not filled it yet.
const WAIT_PERIOD: Duration = Duration::from_secs(2);
/// How often it is read once the token is on the node (a changed token is copied at the next read).
const SYNC_PERIOD: Duration = Duration::from_secs(60);

/// The token in Secret `namespace/name`; `None` while it is empty.
pub async fn read(client: Client, namespace: &str, name: &str) -> Result<Option<String>, kube::Error> {
    let secret = Api::<Secret>::namespaced(client, namespace).get(name).await?;
    let token = secret.data.and_then(|mut data| data.remove(METRICS_TOKEN_KEY));
    Ok(token.and_then(|t| String::from_utf8(t.0).ok()).map(|t| t.trim().to_string()).filter(|t| !t.is_empty()))
}

/// Writes `token` to `file` (owner-only) unless it holds it already; `true` when written.
pub fn write_if_changed(file: &Path, token: &str) -> Result<bool, FileError> {
    if files::read_optional(file)?.is_some_and(|current| current.trim() == token) {
        return Ok(false);
    }
    files::write_atomic(file, token.as_bytes(), 0o600)?;
    Ok(true)
}

/// Copies the token of Secret `namespace/name` to `file` now and whenever it changes, until the task is
/// dropped. Failures are logged and retried: the node runs its pods either way; only scrapes wait.
pub async fn keep_synced(client: Client, namespace: String, name: String, file: &Path) {
    loop {
        let wait = match read(client.clone(), &namespace, &name).await {
            Ok(Some(token)) => match write_if_changed(file, &token) {
                Ok(written) => {
                    if written {
                        tracing::info!(file = %file.display(), "node metrics token written");
                    }
                    SYNC_PERIOD
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot write the node metrics token");
                    WAIT_PERIOD
                }
            },
            Ok(None) => {
                tracing::info!(secret = %name, "waiting for the operator to make the node metrics token");
                WAIT_PERIOD
            }
            Err(e) => {
                tracing::warn!(secret = %name, error = %e, "cannot read the node metrics token");
                WAIT_PERIOD
            }
        };
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_file_is_owner_only_and_written_when_it_changes() -> Result<(), Box<dyn std::error::Error>> {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir()?;
        let file = dir.path().join("metrics-token");
        assert!(write_if_changed(&file, "abc")?);
        assert_eq!(std::fs::metadata(&file)?.permissions().mode() & 0o777, 0o600);
        assert!(!write_if_changed(&file, "abc")?, "unchanged: not written again");
        assert!(write_if_changed(&file, "def")?);
        assert_eq!(std::fs::read_to_string(&file)?, "def");
        Ok(())
    }
}
