//! Registry credentials from docker config JSON (`~/.docker/config.json`, or a Kubernetes
//! `kubernetes.io/dockerconfigjson` secret). Secrets never appear in `Debug`, errors or logs.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use base64::Engine as _;
use oci_client::secrets::RegistryAuth;
use serde::Deserialize;

use crate::Error;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Basic {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

impl fmt::Debug for Basic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Basic({}, <redacted>)", self.username)
    }
}

impl Basic {
    /// As `oci-client` wants it.
    pub fn registry_auth(&self) -> RegistryAuth {
        RegistryAuth::Basic(self.username.clone(), self.password.clone())
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, AuthEntry>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Credentials for `registry` (`host[:port]`) in a docker config JSON document, if it has any.
///
/// `source_name` names the document in errors (a path or secret name, never its content).
pub fn from_docker_config(json: &[u8], source_name: &str, registry: &str) -> Result<Option<Basic>, Error> {
    let invalid = |reason: String| Error::Credentials { source_name: source_name.to_string(), reason };
    // serde_json's message quotes no input beyond a position, so it is safe to show.
    let config: DockerConfig =
        serde_json::from_slice(json).map_err(|e| invalid(format!("not a docker config JSON document ({e})")))?;
    let Some(entry) = config.auths.iter().find(|(key, _)| registry_of_key(key) == registry).map(|(_, e)| e) else {
        return Ok(None);
    };
    if let (Some(username), Some(password)) = (&entry.username, &entry.password) {
        return Ok(Some(Basic { username: username.clone(), password: password.clone() }));
    }
    let Some(encoded) = &entry.auth else {
        return Err(invalid(format!("the entry for {registry} has neither `auth` nor `username`/`password`")));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| invalid(format!("the `auth` of {registry} is not base64")))?;
    let text = String::from_utf8(decoded).map_err(|_| invalid(format!("the `auth` of {registry} is not UTF-8")))?;
    let Some((username, password)) = text.split_once(':') else {
        return Err(invalid(format!("the `auth` of {registry} is not `user:password`")));
    };
    Ok(Some(Basic { username: username.to_string(), password: password.to_string() }))
}

/// Reads [`from_docker_config`] from a file; a missing file means no credentials.
pub fn from_docker_config_file(path: &Path, registry: &str) -> Result<Option<Basic>, Error> {
    match std::fs::read(path) {
        Ok(json) => from_docker_config(&json, &path.display().to_string(), registry),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading registry credentials {}", path.display()), e)),
    }
}

/// The docker CLI's config file: `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn docker_config_path() -> Option<std::path::PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG") {
        return Some(Path::new(&dir).join("config.json"));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".docker").join("config.json"))
}

/// `https://host:port/v1/` → `host:port`; Docker Hub's legacy key → `docker.io`.
fn registry_of_key(key: &str) -> &str {
    let bare = key.trim_start_matches("https://").trim_start_matches("http://");
    let host = bare.split('/').next().unwrap_or(bare);
    if host == "index.docker.io" {
        "docker.io"
    } else {
        host
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_auth_by_host_in_both_forms() {
        // "bob:pa:ss" — a password may hold a colon.
        let json = br#"{"auths":{"https://127.0.0.1:5000/v1/":{"auth":"Ym9iOnBhOnNz"},"ghcr.io":{"username":"u","password":"p"}}}"#;
        let b = from_docker_config(json, "s", "127.0.0.1:5000").unwrap().unwrap();
        assert_eq!((b.username.as_str(), b.password.as_str()), ("bob", "pa:ss"));
        assert_eq!(from_docker_config(json, "s", "ghcr.io").unwrap().unwrap().password, "p");
        assert!(from_docker_config(json, "s", "quay.io").unwrap().is_none());
    }

    #[test]
    fn secrets_stay_out_of_debug_and_errors() {
        let b = Basic { username: "bob".into(), password: "hunter2".into() };
        assert!(!format!("{b:?}").contains("hunter2"));
        let bad = br#"{"auths":{"r.io":{"auth":"hunter2-not-base64!"}}}"#;
        let err = from_docker_config(bad, "secret regcred", "r.io").unwrap_err().to_string();
        assert!(err.contains("secret regcred") && !err.contains("hunter2"), "{err}");
    }
}
