//! The serving certificate: self-signed, generated at start (the APIService skips verification).

use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Why the serving certificate or TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// Generating the self-signed certificate failed.
    #[error("generating the self-signed serving certificate")]
    Generate(#[source] rcgen::Error),
    /// rustls rejected the certificate or the protocol settings.
    #[error("building the TLS server configuration")]
    Config(#[source] rustls::Error),
}

/// A certificate and its private key.
pub struct ServingCert {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl ServingCert {
    /// A fresh self-signed certificate for `dns_names` (subject alternative names).
    pub fn self_signed(dns_names: &[String]) -> Result<Self, TlsError> {
        let certified = rcgen::generate_simple_self_signed(dns_names.to_vec()).map_err(TlsError::Generate)?;
        Ok(Self {
            cert: certified.cert.der().clone(),
            key: PrivatePkcs8KeyDer::from(certified.signing_key.serialize_der()),
        })
    }

    /// The certificate (DER), for clients that pin it.
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The rustls server configuration (ring provider; ALPN h2 then HTTP/1.1).
    pub fn server_config(&self) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(TlsError::Config)?
            .with_no_client_auth()
            .with_single_cert(vec![self.cert.clone()], PrivateKeyDer::Pkcs8(self.key.clone_key()))
            .map_err(TlsError::Config)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The DNS names a Service is reached by from inside the cluster.
pub fn service_dns_names(service: &str, namespace: &str, cluster_domain: &str) -> Vec<String> {
    vec![
        service.to_string(),
        format!("{service}.{namespace}"),
        format!("{service}.{namespace}.svc"),
        format!("{service}.{namespace}.svc.{cluster_domain}"),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_a_service() {
        assert_eq!(
            service_dns_names("wasmkube-operator", "wasmkube-system", "cluster.local"),
            vec![
                "wasmkube-operator",
                "wasmkube-operator.wasmkube-system",
                "wasmkube-operator.wasmkube-system.svc",
                "wasmkube-operator.wasmkube-system.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn certificate_makes_a_server_config() {
        let cert = ServingCert::self_signed(&["localhost".to_string()]);
        let config = cert.as_ref().map(|c| c.server_config());
        assert!(matches!(config, Ok(Ok(_))), "{:?}", config.err());
    }
}
