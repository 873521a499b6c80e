//! The metrics API's certificates: a CA of its own, which the APIService's `caBundle` carries so the API
//! server verifies us, and a serving certificate it signs. Kept in the operator's Secret so every replica
//! serves the same chain and a restart does not change the `caBundle`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;

/// Keys of the Secret's `data`.
pub const CA_CERT_KEY: &str = "ca.crt";
/// The CA's private key.
pub const CA_KEY_KEY: &str = "ca.key";
/// The serving certificate.
pub const TLS_CERT_KEY: &str = "tls.crt";
/// The serving certificate's private key.
pub const TLS_KEY_KEY: &str = "tls.key";

/// How long a new CA is valid: long, because replacing it means patching the APIService.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a new serving certificate is valid.
const SERVING_VALIDITY: Duration = Duration::from_secs(365 * 24 * 3600);
/// A CA with less left than this is replaced (with a new serving certificate).
const CA_RENEW_BEFORE: Duration = Duration::from_secs(365 * 24 * 3600);
/// A serving certificate with less left than this is replaced (same CA).
const SERVING_RENEW_BEFORE: Duration = Duration::from_secs(60 * 24 * 3600);

/// Why certificates could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed to make a key or certificate.
    #[error("generating a certificate")]
    Generate(#[from] rcgen::Error),
    /// A PEM value does not hold what it should.
    #[error("{0} is not a valid PEM certificate or key")]
    Pem(&'static str),
    /// rustls rejected the certificate, key or settings.
    #[error("building the TLS server configuration")]
    Config(#[from] rustls::Error),
}

/// The PEM texts the Secret holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Certs {
    pub ca_cert: String,
    pub ca_key: String,
    pub tls_cert: String,
    pub tls_key: String,
}

/// What a stored set of certificates needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// Good as it is.
    None,
    /// The serving certificate is near its end or names other hosts: sign a new one with the same CA.
    Serving,
    /// The CA is near its end or unreadable: new CA and serving certificate.
    All,
}

impl Certs {
    /// A new CA and a serving certificate for `dns_names` that it signs.
    pub fn generate(dns_names: &[String], now: OffsetDateTime) -> Result<Self, CertError> {
        let ca_key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, "wasmkube-metrics-api-ca");
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        params.not_before = now - time::Duration::hours(1);
        params.not_after = now + CA_VALIDITY;
        let ca_cert = params.self_signed(&ca_key)?;
        let issuer = Issuer::new(params, ca_key);
        let (tls_cert, tls_key) = serving(dns_names, &issuer, now)?;
        Ok(Self { ca_cert: ca_cert.pem(), ca_key: issuer.key().serialize_pem(), tls_cert, tls_key })
    }

    /// The same CA with a new serving certificate for `dns_names`.
    pub fn renew_serving(&self, dns_names: &[String], now: OffsetDateTime) -> Result<Self, CertError> {
        let ca_key = KeyPair::from_pem(&self.ca_key).map_err(|_| CertError::Pem(CA_KEY_KEY))?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_cert, ca_key).map_err(|_| CertError::Pem(CA_CERT_KEY))?;
        let (tls_cert, tls_key) = serving(dns_names, &issuer, now)?;
        Ok(Self { tls_cert, tls_key, ..self.clone() })
    }

    /// Read from a Secret's data; `None` when a key is missing or not UTF-8 (an empty Secret, as the chart
    /// creates it).
    pub fn from_data(data: &BTreeMap<String, Vec<u8>>) -> Option<Self> {
        let text = |key: &str| data.get(key).and_then(|v| String::from_utf8(v.clone()).ok()).filter(|s| !s.is_empty());
        Some(Self {
            ca_cert: text(CA_CERT_KEY)?,
            ca_key: text(CA_KEY_KEY)?,
            tls_cert: text(TLS_CERT_KEY)?,
            tls_key: text(TLS_KEY_KEY)?,
        })
    }

    /// The Secret's data.
    pub fn to_data(&self) -> BTreeMap<String, Vec<u8>> {
        [
            (CA_CERT_KEY, &self.ca_cert),
            (CA_KEY_KEY, &self.ca_key),
            (TLS_CERT_KEY, &self.tls_cert),
            (TLS_KEY_KEY, &self.tls_key),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect()
    }

    /// What these certificates need at `now` to serve `dns_names`.
    pub fn renewal(&self, dns_names: &[String], now: OffsetDateTime) -> Renewal {
        let left = |pem: &str| -> Option<(Duration, Vec<String>)> {
            let der = CertificateDer::from_pem_slice(pem.as_bytes()).ok()?;
            let (_, cert) = x509_parser::parse_x509_certificate(&der).ok()?;
            let left = cert.validity().not_after.timestamp() - now.unix_timestamp();
            let names = match cert.subject_alternative_name() {
                Ok(Some(san)) => san
                    .value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        x509_parser::extensions::GeneralName::DNSName(d) => Some(d.to_string()),
                        _ => None,
                    })
                    .collect(),
                _ => Vec::new(),
            };
            Some((Duration::from_secs(u64::try_from(left).unwrap_or(0)), names))
        };
        let ca_usable = KeyPair::from_pem(&self.ca_key).is_ok();
        match left(&self.ca_cert) {
            Some((ca_left, _)) if ca_usable && ca_left >= CA_RENEW_BEFORE => {}
            _ => return Renewal::All,
        }
        match left(&self.tls_cert) {
            Some((tls_left, names)) if tls_left >= SERVING_RENEW_BEFORE && names == dns_names => Renewal::None,
            _ => Renewal::Serving,
        }
    }

    /// The serving chain and key, for rustls.
    pub fn serving_cert(&self) -> Result<ServingCert, CertError> {
        let cert =
            CertificateDer::from_pem_slice(self.tls_cert.as_bytes()).map_err(|_| CertError::Pem(TLS_CERT_KEY))?;
        let key = PrivateKeyDer::from_pem_slice(self.tls_key.as_bytes()).map_err(|_| CertError::Pem(TLS_KEY_KEY))?;
        Ok(ServingCert { chain: vec![cert], key: Arc::new(key) })
    }
}

/// A serving certificate for `dns_names` signed by `issuer`: PEM certificate and key.
fn serving(
    dns_names: &[String],
    issuer: &Issuer<'_, KeyPair>,
    now: OffsetDateTime,
) -> Result<(String, String), CertError> {
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(dns_names.to_vec())?;
    params
        .distinguished_name
        .push(DnType::CommonName, dns_names.first().map_or("wasmkube-metrics-api", String::as_str));
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    let cert = params.signed_by(&key, issuer)?;
    Ok((cert.pem(), key.serialize_pem()))
}

/// A certificate chain and its private key.
#[derive(Clone, Debug)]
pub struct ServingCert {
    chain: Vec<CertificateDer<'static>>,
    key: Arc<PrivateKeyDer<'static>>,
}

impl ServingCert {
    /// A fresh self-signed certificate for `dns_names` (tests, and clients that pin it).
    pub fn self_signed(dns_names: &[String]) -> Result<Self, CertError> {
        let certified = rcgen::generate_simple_self_signed(dns_names.to_vec())?;
        let key = PrivateKeyDer::try_from(certified.signing_key.serialize_der()).map_err(|_| CertError::Pem("key"))?;
        Ok(Self { chain: vec![certified.cert.der().clone()], key: Arc::new(key) })
    }

    /// The leaf certificate (DER).
    pub fn cert_der(&self) -> Option<&CertificateDer<'static>> {
        self.chain.first()
    }

    /// The rustls server configuration (ring provider; ALPN h2 then HTTP/1.1). With `client_ca`, a client
    /// certificate is asked for and, when one is given, must chain to it; clients without one are let through
    /// to the other ways of authenticating.
    pub fn server_config(&self, client_ca: &[CertificateDer<'static>]) -> Result<Arc<rustls::ServerConfig>, CertError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let builder = if client_ca.is_empty() {
            builder.with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore::empty();
            for cert in client_ca {
                roots.add(cert.clone())?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .allow_unauthenticated()
                .build()
                .map_err(|e| rustls::Error::General(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        };
        let mut config = builder.with_single_cert(self.chain.clone(), self.key.clone_key())?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The DNS names a Service is reached by from inside the cluster; the API server's aggregator dials
/// `SERVICE.NAMESPACE.svc`.
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

    fn names() -> Vec<String> {
        service_dns_names("wasmkube-metrics-api", "wasmkube-system", "cluster.local")
    }

    #[test]
    fn names_of_a_service() {
        assert_eq!(
            names(),
            vec![
                "wasmkube-metrics-api",
                "wasmkube-metrics-api.wasmkube-system",
                "wasmkube-metrics-api.wasmkube-system.svc",
                "wasmkube-metrics-api.wasmkube-system.svc.cluster.local"
            ]
        );
    }

    #[test]
    fn generated_certs_round_trip_through_the_secret_and_need_nothing() -> Result<(), CertError> {
        let now = OffsetDateTime::now_utc();
        let certs = Certs::generate(&names(), now)?;
        let read = Certs::from_data(&certs.to_data());
        assert_eq!(read.as_ref(), Some(&certs));
        assert_eq!(certs.renewal(&names(), now), Renewal::None);
        assert!(certs.serving_cert()?.server_config(&[]).is_ok());
        Ok(())
    }

    #[test]
    fn renewal_follows_time_and_names() -> Result<(), CertError> {
        let now = OffsetDateTime::now_utc();
        let certs = Certs::generate(&names(), now)?;
        let day = time::Duration::days(1);
        assert_eq!(certs.renewal(&names(), now + day * 300), Renewal::None);
        assert_eq!(certs.renewal(&names(), now + day * 320), Renewal::Serving, "60 days before the end");
        assert_eq!(certs.renewal(&names()[..2], now), Renewal::Serving, "other names");
        assert_eq!(certs.renewal(&names(), now + day * (9 * 365 + 30)), Renewal::All, "the CA's last year");
        let broken = Certs { ca_key: "not a key".into(), ..certs.clone() };
        assert_eq!(broken.renewal(&names(), now), Renewal::All);

        let renewed = certs.renew_serving(&names(), now + day * 320)?;
        assert_eq!(renewed.ca_cert, certs.ca_cert, "the caBundle stays");
        assert_ne!(renewed.tls_cert, certs.tls_cert);
        assert_eq!(renewed.renewal(&names(), now + day * 320), Renewal::None);
        Ok(())
    }

    #[test]
    fn an_empty_secret_holds_no_certs() {
        assert_eq!(Certs::from_data(&BTreeMap::new()), None);
        let mut data = BTreeMap::new();
        data.insert(CA_CERT_KEY.to_string(), Vec::new());
        assert_eq!(Certs::from_data(&data), None);
    }

    #[test]
    fn the_serving_certificate_chains_to_the_ca() -> Result<(), Box<dyn std::error::Error>> {
        use rustls::client::danger::ServerCertVerifier as _;
        let now = OffsetDateTime::now_utc();
        let certs = Certs::generate(&names(), now)?;
        let ca = CertificateDer::from_pem_slice(certs.ca_cert.as_bytes())?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca)?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier =
            rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider).build()?;
        let serving = certs.serving_cert()?;
        let leaf = serving.cert_der().ok_or("no leaf")?;
        let name = rustls::pki_types::ServerName::try_from("wasmkube-metrics-api.wasmkube-system.svc")?;
        verifier.verify_server_cert(leaf, &[], &name, &[], rustls::pki_types::UnixTime::now())?;
        Ok(())
    }
}
