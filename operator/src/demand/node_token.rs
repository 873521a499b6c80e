//! The bearer token the nodes' metrics endpoints ask for. The operator makes it once, in its Secret; the node
//! installer copies it onto every node (`contract::node::METRICS_TOKEN_PATH`); the scraper sends it.

use std::fmt;
use std::io::Read;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use wasmkube_contract::node::METRICS_TOKEN_KEY;

use crate::secrets::{read_or_fill, Fill, SecretError};

/// Random bytes in a token (sent as 64 hex digits).
const TOKEN_BYTES: usize = 32;

/// A token, never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct BearerToken(Arc<str>);

impl BearerToken {
    pub fn new(token: &str) -> Self {
        Self(token.into())
    }

    /// The `Authorization` header's value.
    pub fn header_value(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for BearerToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BearerToken(…)")
    }
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
#[error("reading random bytes for the node metrics token from /dev/urandom")]
pub struct RandomError(#[source] std::io::Error);

/// The token in Secret `name`, made and written there when it has none.
pub async fn ensure(secrets: &Api<Secret>, name: &str) -> Result<BearerToken, SecretError<RandomError>> {
    read_or_fill(secrets, name, |data| {
        let current = data.get(METRICS_TOKEN_KEY).and_then(|t| std::str::from_utf8(t).ok()).map(str::trim);
        if let Some(token) = current.filter(|t| !t.is_empty()) {
            return Ok(Fill::Keep(BearerToken::new(token)));
        }
        let token = random_token()?;
        let mut data = data.clone();
        data.insert(METRICS_TOKEN_KEY.to_string(), token.as_bytes().to_vec());
        Ok(Fill::Write(BearerToken::new(&token), data))
    })
    .await
}

fn random_token() -> Result<String, RandomError> {
    let mut bytes = [0u8; TOKEN_BYTES];
    std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)).map_err(RandomError)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_hex_and_never_printed() -> Result<(), RandomError> {
        let (a, b) = (random_token()?, random_token()?);
        assert_eq!(a.len(), 2 * TOKEN_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let token = BearerToken::new(&a);
        assert!(!format!("{token:?}").contains(&a));
        assert_eq!(token.header_value(), format!("Bearer {a}"));
        Ok(())
    }
}
