//! Secrets the operator fills itself (the metrics API's certificates, the node metrics token): the chart
//! creates them empty, so the operator needs only `get` and `update` on those names. Every replica may try;
//! the write carries the resourceVersion it read, so one wins and the others use what it wrote.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::PostParams;
use kube::Api;

/// What a Secret's data should become.
pub enum Fill<T> {
    /// The data is as wanted; use `T` read from it.
    Keep(T),
    /// Write this data, then use `T`.
    Write(T, BTreeMap<String, Vec<u8>>),
}

/// Why a Secret could not be read or filled.
#[derive(Debug, thiserror::Error)]
pub enum SecretError<E: std::error::Error + 'static> {
    #[error("reading Secret {namespace}/{name} (the chart creates it)")]
    Read { namespace: String, name: String, source: kube::Error },
    #[error("writing Secret {namespace}/{name}")]
    Write { namespace: String, name: String, source: kube::Error },
    #[error("Secret {namespace}/{name} changed while it was written, and what another replica wrote is not usable")]
    Conflict { namespace: String, name: String },
    #[error(transparent)]
    Content(E),
}

/// Reads Secret `name` and, when `decide` asks for it, writes new data (compare-and-swap on the
/// resourceVersion read). After a lost race the Secret is read again and must then be kept as it is.
pub async fn read_or_fill<T, E: std::error::Error + 'static>(
    secrets: &Api<Secret>,
    name: &str,
    decide: impl Fn(&BTreeMap<String, Vec<u8>>) -> Result<Fill<T>, E>,
) -> Result<T, SecretError<E>> {
    let namespace = secrets.namespace().unwrap_or_default().to_string();
    let read = || async {
        secrets.get(name).await.map_err(|source| SecretError::Read {
            namespace: namespace.clone(),
            name: name.to_string(),
            source,
        })
    };
    let mut secret = read().await?;
    let (value, data) = match decide(&data_of(&secret)).map_err(SecretError::Content)? {
        Fill::Keep(value) => return Ok(value),
        Fill::Write(value, data) => (value, data),
    };
    secret.data = Some(data.into_iter().map(|(k, v)| (k, ByteString(v))).collect());
    match secrets.replace(name, &PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(secret = %name, "Secret filled");
            Ok(value)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => match decide(&data_of(&read().await?)) {
            Ok(Fill::Keep(theirs)) => Ok(theirs),
            _ => Err(SecretError::Conflict { namespace, name: name.to_string() }),
        },
        Err(source) => Err(SecretError::Write { namespace, name: name.to_string(), source }),
    }
}

fn data_of(secret: &Secret) -> BTreeMap<String, Vec<u8>> {
    secret.data.iter().flatten().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}
